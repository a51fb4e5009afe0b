"""`plan`'s decode predictions against published figures from real ARM devices.

For each published figure (scripts/published_figures.toml: device, model, runtime, tokens/s,
source) the matching device profile is loaded and `plan`'s own predictor
(edge_llm.devices.plan.predict, the roofline for device profiles) prices the model. We do not
have those GGUFs: the model's tensor table is built from its published architecture (layers,
widths, heads, vocabulary) and its quantization, with llama.cpp's rules for which tensors get
which type (QUANT_RECIPES), into an in-memory GGUFInfo, which is all the predictor reads. No
tensor data, no file.

    python -m scripts.published_figures            # the markdown table
    python -m scripts.published_figures --json     # the rows as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

from edge_llm.devices import plan as planning
from edge_llm.devices import profile as profiles
from edge_llm.gguf_info import GGUFInfo, TensorInfo
from edge_llm.shapes import ModelShape

DATA = Path(__file__).resolve().parent / "published_figures.toml"

# ggml's block sizes: (elements per block, bytes per block).
TYPE_BLOCKS = {
    "F32": (1, 4),
    "F16": (1, 2),
    "Q8_0": (32, 34),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v / ffn_down get more bits in *_K_M."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _q4_0(name: str, layer: int, n_layer: int) -> str:
    # llama_tensor_get_type: the output head (token_embd when tied) becomes Q6_K; the rest Q4_0.
    return "Q6_K" if name in ("output", "token_embd") else "Q4_0"


def _q4_k_m(name: str, layer: int, n_layer: int) -> str:
    if name in ("output", "token_embd"):
        return "Q6_K"
    if name in ("attn_v", "ffn_down") and _use_more_bits(layer, n_layer):
        return "Q6_K"
    return "Q4_K"


def _int4_g32_int8_head(name: str, layer: int, n_layer: int) -> str:
    # ExecuTorch's 4-bit scheme: 4-bit groupwise (group 32) linears, 8-bit embedding and head.
    return "Q8_0" if name in ("output", "token_embd") else "Q4_0"


def _int4_g32(name: str, layer: int, n_layer: int) -> str:
    # MLC's q4f16_1: every weight, embedding included, 4 bits in groups of 32 with an f16 scale.
    return "Q4_0"


QUANT_RECIPES: dict[str, Callable[[str, int, int], str]] = {
    "Q4_0": _q4_0,
    "Q4_K_M": _q4_k_m,
    "int4-g32-int8-head": _int4_g32_int8_head,
    "int4-g32": _int4_g32,
}


def load_data(path: Path = DATA) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)


def published_value(v: float | list[float]) -> float:
    """The figure to compare with: the number, or the middle of a [low, high] range."""
    if isinstance(v, list):
        if len(v) != 2 or not all(isinstance(x, int | float) and x > 0 for x in v) or v[0] > v[1]:
            raise ValueError(f"a range must be [low, high] with 0 < low <= high (got {v!r})")
        return (v[0] + v[1]) / 2
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise ValueError(f"tokens_per_s must be a positive number or [low, high] (got {v!r})")
    return float(v)


def _tensor(name: str, ggml_type: str, n: int) -> TensorInfo:
    per_block, block_bytes = TYPE_BLOCKS[ggml_type]
    return TensorInfo(name, ggml_type, n, n // per_block * block_bytes, 0)


def synthetic_info(model: dict, recipe: str) -> GGUFInfo:
    """A GGUFInfo with ``model``'s tensor table (names, types, sizes) and metadata, no file."""
    rule = QUANT_RECIPES[recipe]
    arch, L, d = model["architecture"], model["n_layer"], model["n_embd"]
    hd, nh, nkv, ff, vocab = (
        model["head_dim"],
        model["n_head"],
        model["n_head_kv"],
        model["n_ff"],
        model["n_vocab"],
    )
    tensors = [_tensor("token_embd.weight", rule("token_embd", 0, L), vocab * d)]
    if not model.get("tied", True):
        tensors.append(_tensor("output.weight", rule("output", 0, L), vocab * d))
    tensors.append(_tensor("output_norm.weight", "F32", d))
    mats = {
        "attn_q": d * nh * hd,
        "attn_k": d * nkv * hd,
        "attn_v": d * nkv * hd,
        "attn_output": nh * hd * d,
        "ffn_gate": d * ff,
        "ffn_up": d * ff,
        "ffn_down": ff * d,
    }
    for i in range(L):
        for name, n in mats.items():
            tensors.append(_tensor(f"blk.{i}.{name}.weight", rule(name, i, L), n))
        tensors += [
            _tensor(f"blk.{i}.attn_norm.weight", "F32", d),
            _tensor(f"blk.{i}.ffn_norm.weight", "F32", d),
        ]
        if model.get("qk_norm"):
            tensors += [
                _tensor(f"blk.{i}.attn_q_norm.weight", "F32", hd),
                _tensor(f"blk.{i}.attn_k_norm.weight", "F32", hd),
            ]
    meta = {
        "general.architecture": arch,
        f"{arch}.block_count": L,
        f"{arch}.embedding_length": d,
        f"{arch}.feed_forward_length": ff,
        f"{arch}.attention.head_count": nh,
        f"{arch}.attention.head_count_kv": nkv,
        f"{arch}.attention.key_length": hd,
        f"{arch}.attention.value_length": hd,
        f"{arch}.context_length": 4096,
    }
    return GGUFInfo(
        path=Path(f"{model.get('name', arch)}.gguf"),
        file_size=0,
        version=3,
        data_offset=0,
        metadata=meta,
        array_lengths={"tokenizer.ggml.tokens": vocab},
        tensors=tensors,
    )


def predict_row(fig: dict, models: dict, position: int | None = None) -> dict:
    """One figure: the profile's predicted decode tokens/s and the ratio to the published one."""
    prof = profiles.get(fig["profile"])
    recipe = fig.get("recipe", fig["quant"])
    if recipe not in QUANT_RECIPES:
        raise ValueError(
            f"unknown quantization recipe {recipe!r}; known: {', '.join(QUANT_RECIPES)}"
        )
    model = models[fig["model"]]
    info = synthetic_info(model, recipe)
    shape = ModelShape.from_info(info)
    position = int(fig.get("position", 64)) if position is None else position
    cfg = planning.Config(prof.threads, 4096, "f16", 512, 0)
    decode, _ = planning.predict(info, cfg, prof, position=position)
    published = published_value(fig["tokens_per_s"])
    read = shape.decode_bytes_per_token(position, "f16")
    return {
        "device": fig["device"],
        "profile": prof.name,
        "model": fig["model"],
        "quant": fig["quant"],
        "runtime": fig["runtime"],
        "published": fig["tokens_per_s"],
        "published_value": published,
        "predicted": decode,
        "ratio": decode / published,
        "mb_per_token": read / 1e6,
        "bits_per_weight": info.bits_per_weight,
        "bandwidth_needed_gbs": published * read / 1e9,  # what the published speed reads
        "peak_bandwidth_gbs": prof.bandwidth_gbs,
        "source": fig["source"],
    }


def rows(data: dict | None = None, position: int | None = None) -> list[dict]:
    data = data or load_data()
    return [predict_row(f, data["models"], position) for f in data["figures"]]


def _fmt_published(v: float | list[float]) -> str:
    return f"{v[0]}-{v[1]}" if isinstance(v, list) else f"{v}"


def markdown(table: list[dict]) -> str:
    out = [
        "| device | model | runtime | published tok/s | predicted tok/s | predicted / published "
        "| MB read/token | bandwidth the published speed implies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        short_quant = r["quant"].split(" (")[0]
        out.append(
            f"| {r['device']} (`{r['profile']}`) | {r['model']} {short_quant} | {r['runtime']} "
            f"| {_fmt_published(r['published'])} | {r['predicted']:.1f} | {r['ratio']:.2f} "
            f"| {r['mb_per_token']:.0f} | {r['bandwidth_needed_gbs']:.1f} GB/s "
            f"({r['bandwidth_needed_gbs'] / r['peak_bandwidth_gbs']:.0%} of peak) |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="the rows as JSON")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--position",
        type=int,
        default=None,
        help="context position of the decoded tokens (default: each figure's own)",
    )
    args = ap.parse_args(argv)
    if args.position is not None and args.position < 0:
        ap.error(f"--position must not be negative (got {args.position})")
    try:
        table = rows(load_data(args.data), args.position)
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as e:
        print(f"error: {args.data}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    print(markdown(table))
    inside = sum(0.7 <= r["ratio"] <= 1.3 for r in table)
    print(f"\n{inside} of {len(table)} ratios within 0.7-1.3.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
