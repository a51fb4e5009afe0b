"""Gemma3ForCausalLM (text) <-> llama.cpp's `gemma3`.

Gemma's RMSNorm multiplies by (1 + weight); llama.cpp's multiplies by the weight, so every norm
is stored shifted by one. Sliding and global layers follow `layer_types`, written out per layer.
"""

from __future__ import annotations

import numpy as np

from convert.archs import register
from convert.archs.base import (
    LLAMA_TENSORS,
    Architecture,
    Export,
    HParam,
    Metadata,
    head_dim,
    plain,
    rope_parameters,
)
from convert.errors import ConvertError


def gemma_norm_offset(w: np.ndarray, config: dict) -> np.ndarray:
    """HF Gemma norms scale by (1 + w); llama.cpp scales by the stored weight: store 1 + w."""
    return w + 1.0


def unshift_gemma_norm(w: np.ndarray, meta: Metadata) -> np.ndarray:
    """The inverse of `gemma_norm_offset` (export-hf): subtract the 1 again."""
    return w - np.float32(1.0)


# the llama layout, with Gemma's four norms per block and q/k norms
GEMMA3_TENSORS = {
    **{hf: gg for hf, gg in LLAMA_TENSORS.items() if "post_attention_layernorm" not in hf},
    "model.layers.{bid}.self_attn.q_norm.weight": "blk.{bid}.attn_q_norm.weight",
    "model.layers.{bid}.self_attn.k_norm.weight": "blk.{bid}.attn_k_norm.weight",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.post_attention_norm.weight",
    "model.layers.{bid}.pre_feedforward_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.layers.{bid}.post_feedforward_layernorm.weight": "blk.{bid}.post_ffw_norm.weight",
}
NORMS = [g for g in GEMMA3_TENSORS.values() if g.endswith("norm.weight")]


def sliding_layers(config: dict) -> list[tuple[str, object]]:
    """Which layers use the sliding window, their RoPE base, and the checks llama.cpp needs."""
    n = int(config["num_hidden_layers"])
    types = config.get("layer_types")
    if not types:
        pattern = int(config.get("sliding_window_pattern") or 6)
        types = [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)
        ]
    scalar = config.get("query_pre_attn_scalar")
    allowed = {head_dim(config), config["hidden_size"] // config["num_attention_heads"]}
    if scalar is not None and int(scalar) not in allowed:
        raise ConvertError(
            f"query_pre_attn_scalar {scalar} is neither head_dim nor hidden/heads; llama.cpp's "
            "gemma3 graph supports only those"
        )
    if config.get("attn_logit_softcapping"):
        raise ConvertError("attn_logit_softcapping is set; llama.cpp's gemma3 graph has none")
    out: list[tuple[str, object]] = []
    if any(t == "sliding_attention" for t in types) and config.get("sliding_window"):
        out.append(("attention.sliding_window", int(config["sliding_window"])))
        out.append(("attention.sliding_window_pattern", [t == "sliding_attention" for t in types]))
        rope = config.get("rope_parameters") or {}
        local = (rope.get("sliding_attention") or {}).get("rope_theta") or config.get(
            "rope_local_base_freq", 10000.0
        )
        out.append(("rope.freq_base_swa", float(local)))
    if config.get("final_logit_softcapping"):
        out.append(("final_logit_softcapping", float(config["final_logit_softcapping"])))
    return out


def gemma3_swa_layers(meta: Metadata) -> list[bool]:
    """Which layers use sliding-window attention, as llama.cpp decides (src/models/gemma3.cpp):
    none without a sliding window; else the GGUF's pattern (a per-layer bool array or a period),
    by default 5 sliding layers then 1 global."""
    n_layer = int(meta.require("block_count"))
    if not meta.arch("attention.sliding_window"):
        return [False] * n_layer
    pattern = meta.arch("attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        return [bool(p) for p in pattern[:n_layer]]
    pattern = int(pattern)
    return [pattern == 0 or (il % pattern < pattern - 1) for il in range(n_layer)]


def gemma3_config(meta: Metadata) -> dict:
    """config.json's fields that are not one GGUF key each (export-hf): the inverse of
    `sliding_layers` and the HParams above."""
    n_layer = int(meta.require("block_count"))
    swa = gemma3_swa_layers(meta)
    theta_global = plain(meta.arch("rope.freq_base", 1_000_000.0))
    theta_local = plain(meta.arch("rope.freq_base_swa", 10000.0))  # llama.cpp's default
    # llama.cpp scales queries by 1/sqrt(head_dim), except Gemma 3 27B (62 layers), which uses
    # 1/sqrt(n_embd / n_head); HF scales by query_pre_attn_scalar ** -0.5.
    scalar = meta.n_embd // meta.n_head if n_layer == 62 else meta.head_dim
    pattern = meta.arch("attention.sliding_window_pattern", 6)
    config = {
        "num_key_value_heads": meta.n_head_kv,
        "head_dim": meta.head_dim,
        "query_pre_attn_scalar": scalar,
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": int(meta.arch("attention.sliding_window") or 0) or None,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in swa],
        "rope_parameters": {
            "full_attention": rope_parameters(meta, theta_global),
            "sliding_attention": {"rope_type": "default", "rope_theta": theta_local},
        },
        "final_logit_softcapping": plain(meta.arch("final_logit_softcapping")),
        "attn_logit_softcapping": None,  # removed in Gemma 3; llama.cpp applies none
        "attention_bias": False,
        "use_bidirectional_attention": False,
        "tie_word_embeddings": meta.tied,
        # transformers < 5 reads these
        "rope_theta": theta_global,
        "rope_local_base_freq": theta_local,
    }
    if not isinstance(pattern, list):
        config["sliding_window_pattern"] = int(pattern)
    return config


GEMMA3 = register(
    Architecture(
        hf_names=("Gemma3ForCausalLM",),
        gguf_arch="gemma3",
        tensors=GEMMA3_TENSORS,
        hparams={
            "context_length": HParam(("max_position_embeddings",), int, 131072),
            "embedding_length": HParam(("hidden_size",)),
            "block_count": HParam(("num_hidden_layers",)),
            "feed_forward_length": HParam(("intermediate_size",)),
            "attention.head_count": HParam(("num_attention_heads",)),
            "attention.head_count_kv": HParam(("num_key_value_heads",)),
            "attention.layer_norm_rms_epsilon": HParam(("rms_norm_eps",), float, 1e-6),
            "attention.key_length": HParam(("head_dim",), int, 256),
            "attention.value_length": HParam(("head_dim",), int, 256),
            "rope.freq_base": HParam(("rope_theta",), float, 1_000_000.0),
        },
        optional=("output.weight",),
        transforms=dict.fromkeys(NORMS, gemma_norm_offset),
        extra_metadata=sliding_layers,
        # every RMSNorm weight: attn/ffn/post norms, q/k norms, the final norm
        export=Export(
            model_type="gemma3_text",
            config=gemma3_config,
            transforms={"*norm.weight": unshift_gemma_norm},
        ),
    )
)
