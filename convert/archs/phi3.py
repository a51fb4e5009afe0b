"""Phi3ForCausalLM -> llama.cpp's `phi3`: fused qkv and gate_up projections stay fused (llama.cpp
splits them in its graph); RoPE in NeoX order, possibly over part of each head."""

from __future__ import annotations

from convert.archs import register
from convert.archs.base import LLAMA_HPARAMS, LLAMA_TENSORS, Architecture, HParam, lookup
from convert.errors import ConvertError

# the llama layout with q/k/v fused into one matrix and gate/up into another
FUSED = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
PHI3_TENSORS = {
    **{hf: gg for hf, gg in LLAMA_TENSORS.items() if not any(f in hf for f in FUSED)},
    "model.layers.{bid}.self_attn.qkv_proj.weight": "blk.{bid}.attn_qkv.weight",
    "model.layers.{bid}.mlp.gate_up_proj.weight": "blk.{bid}.ffn_up.weight",
}


def rope_and_window(config: dict) -> list[tuple[str, object]]:
    """Rotary dimensions (partial_rotary_factor), the pre-extension context, the sliding window
    (0: none). LongRoPE factor tables (the 128k models) are not converted."""
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in ("longrope", "su", "yarn"):
        raise ConvertError(
            f"this Phi-3 uses {kind} RoPE scaling (a long-context variant), which edge-llm does "
            "not convert yet; use a 4k-context Phi-3 checkpoint"
        )
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    factor = float(lookup(config, "partial_rotary_factor", default=1.0))
    original = lookup(config, "original_max_position_embeddings", default=None)
    out: list[tuple[str, object]] = [
        ("rope.dimension_count", int(factor * n_embd) // n_head),
        ("attention.sliding_window", int(config.get("sliding_window") or 0)),
    ]
    out.append(
        ("rope.scaling.original_context_length", int(original or config["max_position_embeddings"]))
    )
    return out


PHI3 = register(
    Architecture(
        hf_names=("Phi3ForCausalLM",),
        gguf_arch="phi3",
        tensors=PHI3_TENSORS,
        hparams={
            **LLAMA_HPARAMS,
            "context_length": HParam(("max_position_embeddings", "n_positions")),
        },
        optional=("output.weight",),
        extra_metadata=rope_and_window,
    )
)
