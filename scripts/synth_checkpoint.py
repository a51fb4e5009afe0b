"""The synthetic 1.17 B-parameter llama checkpoint scripts/convert_speed.py converts ("synth-1b").

Why a module of its own: making the checkpoint (a LlamaForCausalLM config, random bf16 weights in
~2 GB safetensors shards with a hand-made header and model.safetensors.index.json, written one
64 MiB chunk at a time) has nothing to do with timing converters; convert_speed.py only asks for
the folder. The folder is reused when it already holds a complete checkpoint (a .complete marker).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

SYNTH_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}


def synth_tensors(c: dict) -> list[tuple[str, tuple[int, ...]]]:
    """HF names and shapes of a LlamaForCausalLM, in the order save_pretrained writes them."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    out = [("model.embed_tokens.weight", (v, h))]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def write_bf16_tensor(f, rng: np.random.Generator, shape: tuple[int, ...], chunk: int) -> None:
    """Random bf16 bits (float32 truncated to its top half), written in chunks of ``chunk``."""
    n = math.prod(shape)
    norm = len(shape) == 1
    for start in range(0, n, chunk):
        x = rng.standard_normal(min(chunk, n - start), dtype=np.float32)
        x *= 0.1 if norm else 0.02
        if norm:
            x += 1.0
        (x.view(np.uint32) >> 16).astype(np.uint16).tofile(f)


def make_synth_1b(dst: Path, shard_bytes: int = 2_000_000_000, seed: int = 0) -> Path:
    """The synthetic llama checkpoint (reused when ``dst`` already holds a complete one)."""
    done = dst / ".complete"
    if done.is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    tensors = synth_tensors(SYNTH_CONFIG)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in tensors:
        nbytes = math.prod(shape) * 2
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        off = 0
        for name, shape in shard:
            nbytes = math.prod(shape) * 2
            header[name] = {
                "dtype": "BF16",
                "shape": list(shape),
                "data_offsets": [off, off + nbytes],
            }
            off += nbytes
            weight_map[name] = fname
        total += off
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(dst / fname, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for _, shape in shard:
                write_bf16_tensor(f, rng, shape, chunk=1 << 24)
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    (dst / "config.json").write_text(json.dumps(SYNTH_CONFIG, indent=2))
    done.touch()
    return dst
