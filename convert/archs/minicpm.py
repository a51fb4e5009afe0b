"""MiniCPMForCausalLM -> llama.cpp's `minicpm`: the llama layout (same q/k RoPE permutation) with
three scales muP-style training leaves in the config: the embedding is multiplied by scale_emb,
each residual branch by scale_depth / sqrt(layers), the logits by hidden / dim_model_base."""

from __future__ import annotations

from convert.archs import register
from convert.archs.base import LLAMA_HPARAMS, LLAMA_TENSORS, Architecture
from convert.archs.llama import ROPE_PERMUTATIONS


def mup_scales(config: dict) -> list[tuple[str, float]]:
    """The three muP scales, as llama.cpp's minicpm graph reads them."""
    return [
        ("embedding_scale", float(config["scale_emb"])),
        ("residual_scale", float(config["scale_depth"] / config["num_hidden_layers"] ** 0.5)),
        ("logit_scale", float(config["hidden_size"] / config["dim_model_base"])),
    ]


MINICPM = register(
    Architecture(
        hf_names=("MiniCPMForCausalLM",),
        gguf_arch="minicpm",
        tensors=LLAMA_TENSORS,
        hparams=LLAMA_HPARAMS,
        optional=("output.weight",),
        transforms=ROPE_PERMUTATIONS,
        extra_metadata=mup_scales,
    )
)
