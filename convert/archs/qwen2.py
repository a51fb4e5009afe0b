"""Qwen2ForCausalLM -> llama.cpp's `qwen2`: the llama layout plus q/k/v biases; llama.cpp applies
RoPE in the NeoX (halves) order, so no permutation."""

from __future__ import annotations

from convert.archs import register
from convert.archs.base import LLAMA_HPARAMS, LLAMA_TENSORS, Architecture

QWEN2_TENSORS = {
    **LLAMA_TENSORS,
    "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
    "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
    "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
}

QWEN2 = register(
    Architecture(
        hf_names=("Qwen2ForCausalLM",),
        gguf_arch="qwen2",
        tensors=QWEN2_TENSORS,
        hparams=LLAMA_HPARAMS,
        optional=("output.weight",),
    )
)
