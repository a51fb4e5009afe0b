"""LlamaForCausalLM (SmolLM2 is one) -> llama.cpp's `llama`."""

from __future__ import annotations

import numpy as np

from convert.archs import register
from convert.archs.base import LLAMA_HPARAMS, LLAMA_TENSORS, Architecture, HParam


def permute_for_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF llama rotates the two halves of each head's q/k rows; llama.cpp rotates adjacent pairs.

    Within each head, row i of the first half and row i of the second half become rows 2i, 2i+1.
    """
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_q(w: np.ndarray, config: dict) -> np.ndarray:
    return permute_for_rope(w, config["num_attention_heads"])


def permute_k(w: np.ndarray, config: dict) -> np.ndarray:
    n_kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    return permute_for_rope(w, n_kv)


ROPE_PERMUTATIONS = {
    "blk.{bid}.attn_q.weight": permute_q,
    "blk.{bid}.attn_k.weight": permute_k,
}

HPARAMS = {
    **LLAMA_HPARAMS,
    "rope.dimension_count": HParam(("head_dim",), int, None),
    "attention.key_length": HParam(("head_dim",), int, None),
    "attention.value_length": HParam(("head_dim",), int, None),
    "vocab_size": HParam(("vocab_size",)),
}

LLAMA = register(
    Architecture(
        hf_names=("LlamaForCausalLM",),
        gguf_arch="llama",
        tensors=LLAMA_TENSORS,
        hparams=HPARAMS,
        optional=("output.weight",),
        transforms=ROPE_PERMUTATIONS,
    )
)
