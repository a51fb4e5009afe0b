"""Qwen3ForCausalLM -> llama.cpp's `qwen3`: no biases, RMS norms on q and k per head, and a head
size that need not be hidden/heads (`head_dim`)."""

from __future__ import annotations

from convert.archs import register
from convert.archs.base import LLAMA_HPARAMS, LLAMA_TENSORS, Architecture, HParam

QWEN3_TENSORS = {
    **LLAMA_TENSORS,
    "model.layers.{bid}.self_attn.q_norm.weight": "blk.{bid}.attn_q_norm.weight",
    "model.layers.{bid}.self_attn.k_norm.weight": "blk.{bid}.attn_k_norm.weight",
}

QWEN3 = register(
    Architecture(
        hf_names=("Qwen3ForCausalLM",),
        gguf_arch="qwen3",
        tensors=QWEN3_TENSORS,
        hparams={
            **LLAMA_HPARAMS,
            "attention.key_length": HParam(("head_dim",), int, None),
            "attention.value_length": HParam(("head_dim",), int, None),
        },
        optional=("output.weight",),
    )
)
