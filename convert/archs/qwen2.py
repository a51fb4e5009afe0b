"""Qwen2ForCausalLM <-> llama.cpp's `qwen2`: the llama layout plus q/k/v biases; llama.cpp applies
RoPE in the NeoX (halves) order, so no permutation either way."""

from __future__ import annotations

from convert.archs import register
from convert.archs.base import (
    LLAMA_HPARAMS,
    LLAMA_TENSORS,
    Architecture,
    Export,
    Metadata,
    plain,
    rope_parameters,
)

QWEN2_TENSORS = {
    **LLAMA_TENSORS,
    "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
    "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
    "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
}


def qwen2_config(meta: Metadata) -> dict:
    """config.json's fields that are not one GGUF key each (export-hf)."""
    theta = plain(meta.arch("rope.freq_base", 1000000.0))
    return {
        "num_key_value_heads": meta.n_head_kv,
        "hidden_act": "silu",
        "rope_parameters": rope_parameters(meta, theta),
        "rope_theta": theta,  # transformers < 5 reads this one
        "tie_word_embeddings": meta.tied,
        "use_sliding_window": False,
    }


QWEN2 = register(
    Architecture(
        hf_names=("Qwen2ForCausalLM",),
        gguf_arch="qwen2",
        tensors=QWEN2_TENSORS,
        hparams=LLAMA_HPARAMS,
        optional=("output.weight",),
        export=Export(model_type="qwen2", config=qwen2_config),
    )
)
