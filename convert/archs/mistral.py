"""MistralForCausalLM -> llama.cpp's `llama` (the llama layout with a sliding window, which
Mistral 7B v0.2+ and this tiny family leave off; v0.1's 4096 window is refused, as llama.cpp's
llama graph has none)."""

from __future__ import annotations

from convert.archs import register
from convert.archs.base import LLAMA_TENSORS, Architecture
from convert.archs.llama import HPARAMS, ROPE_PERMUTATIONS
from convert.errors import ConvertError


def no_sliding_window(config: dict) -> list:
    window = config.get("sliding_window")
    if window and window < config.get("max_position_embeddings", 0):
        raise ConvertError(
            f"this Mistral uses a {window}-token sliding window, which llama.cpp's llama graph "
            "does not implement; set sliding_window to null in config.json if the model allows it"
        )
    return []


MISTRAL = register(
    Architecture(
        hf_names=("MistralForCausalLM",),
        gguf_arch="llama",
        tensors=LLAMA_TENSORS,
        hparams=HPARAMS,
        optional=("output.weight",),
        transforms=ROPE_PERMUTATIONS,
        extra_metadata=no_sliding_window,
    )
)
