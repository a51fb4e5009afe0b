"""LlamaForCausalLM (SmolLM2 is one) <-> llama.cpp's `llama`."""

from __future__ import annotations

import numpy as np

from convert.archs import register
from convert.archs.base import (
    LLAMA_HPARAMS,
    LLAMA_TENSORS,
    Architecture,
    Export,
    HParam,
    Metadata,
    plain,
    rope_parameters,
)


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


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_for_rope` (export-hf): rows 2i back at i and 2i + 1 at i + d/2."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_q(w: np.ndarray, meta: Metadata) -> np.ndarray:
    return unpermute_rope_rows(w, meta.n_head)


def unpermute_k(w: np.ndarray, meta: Metadata) -> np.ndarray:
    return unpermute_rope_rows(w, meta.n_head_kv)


def llama_config(meta: Metadata) -> dict:
    """config.json's fields that are not one GGUF key each (export-hf)."""
    theta = plain(meta.arch("rope.freq_base", 10000.0))
    return {
        "num_key_value_heads": meta.n_head_kv,
        "head_dim": meta.head_dim,
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in meta.tensor_names,
        "mlp_bias": False,
        "rope_parameters": rope_parameters(meta, theta),
        "rope_theta": theta,  # transformers < 5 reads this one
        "tie_word_embeddings": meta.tied,
    }


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
        export=Export(
            model_type="llama",
            config=llama_config,
            transforms={
                "blk.{bid}.attn_q.weight": unpermute_q,
                "blk.{bid}.attn_k.weight": unpermute_k,
            },
        ),
    )
)
