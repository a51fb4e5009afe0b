"""Check a checkpoint's config.json against itself and against its tensors, before converting.

Why: config.json and the safetensors headers are untrusted input. A wrong type ("two" layers),
a NaN, a head count that does not divide the width, or a tensor whose shape contradicts the
config used to surface as a Python traceback, as a GGUF that llama.cpp then refused with an
unhelpful message, or as gigabytes allocated for a vocabulary of 10^12 tokens. Every hyper-
parameter the GGUF will carry is checked here for type and range, the shapes llama.cpp will
expect are derived from them and compared with the checkpoint's tensors (whose sizes the
safetensors headers already tied to the files' sizes), so nothing is sized from the config
alone and nothing llama.cpp would refuse is written.
"""

from __future__ import annotations

import math
import re
from typing import Any

from convert.archs.base import MISSING, Architecture, lookup
from convert.errors import ConvertError

MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS
MAX_CONTEXT = 1 << 24  # edge_llm.validate.MAX_CONTEXT: what the runtime accepts
MAX_WIDTH = 1 << 20
MAX_VOCAB = 1 << 24
MAX_HEADS = 1 << 12

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def _bad(message: str) -> ConvertError:
    return ConvertError(f"config.json: {message}; fix the config or re-download the checkpoint")


def _int(config: dict, key: str, lo: int, hi: int, required: bool = True) -> int | None:
    v = config.get(key)
    if v is None:
        if required:
            raise _bad(f"{key} is missing")
        return None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{key} is {v!r}, not a whole number")
    if not lo <= v <= hi:
        raise _bad(f"{key} is {v} (expected {lo} to {hi})")
    return v


def check_config(config: dict, arch: Architecture) -> dict[str, int]:
    """Types, ranges and consistency of the config's hyper-parameters; returns the derived
    sizes (hidden, heads, kv_heads, head_dim, ff, vocab, layers)."""
    names = config.get("architectures")
    if not isinstance(names, list | str) or (
        isinstance(names, list) and not all(isinstance(n, str) for n in names)
    ):
        raise _bad(f"architectures is {names!r}, not a list of class names")
    # every number: finite (NaN and Infinity parse as JSON extensions)
    for key, v in config.items():
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, float) and not math.isfinite(x):
                raise _bad(f"{key} is {x}")
    layers = _int(config, arch.block_count_field, 1, MAX_LAYERS)
    hidden = _int(config, "hidden_size", 1, MAX_WIDTH)
    heads = _int(config, "num_attention_heads", 1, MAX_HEADS)
    kv = _int(config, "num_key_value_heads", 1, MAX_HEADS, required=False) or heads
    if heads % kv:
        raise _bad(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    hd = _int(config, "head_dim", 2, 1 << 16, required=False)
    if hd is None:
        if hidden % heads:
            raise _bad(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        hd = hidden // heads
    if hd % 2:
        raise _bad(f"the head size is {hd}; rotary embeddings need an even head size")
    ff = _int(config, "intermediate_size", 1, MAX_WIDTH)
    vocab = _int(config, "vocab_size", 1, MAX_VOCAB)
    ctx = lookup(config, "max_position_embeddings", "n_positions", default=None)
    if ctx is not None:
        probe = {"max_position_embeddings": ctx}
        _int(probe, "max_position_embeddings", 1, MAX_CONTEXT)
    # the float hyper-parameters that go into the GGUF
    for key, hp in arch.hparams.items():
        if hp.kind is not float:
            continue
        v = lookup(config, *hp.fields, default=hp.default)
        if v is MISSING or v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _bad(f"{hp.fields[0]} is {v!r}, not a number")
        if "epsilon" in key and not 0 < v < 1:
            raise _bad(f"{hp.fields[0]} is {v} (expected a small positive number such as 1e-5)")
        if "freq_base" in key and v <= 0:
            raise _bad(f"{hp.fields[0]} is {v} (expected a positive number)")
    for key in ("tie_word_embeddings",):
        if key in config and not isinstance(config[key], bool):
            raise _bad(f"{key} is {config[key]!r}, not true or false")
    return {
        "layers": layers,
        "hidden": hidden,
        "heads": heads,
        "kv": kv,
        "hd": hd,
        "ff": ff,
        "vocab": vocab,
    }


def expected_shape(name: str, s: dict[str, int], fused: bool) -> tuple[int, ...] | None:
    """The shape (numpy order) llama.cpp expects of a GGUF tensor, or None if not derived here."""
    h, q, k, ff = s["hidden"], s["heads"] * s["hd"], s["kv"] * s["hd"], s["ff"]
    generic = _BLOCK.sub("", name)
    table = {
        "token_embd.weight": (s["vocab"], h),
        "output.weight": (s["vocab"], h),
        "output_norm.weight": (h,),
        "attn_norm.weight": (h,),
        "ffn_norm.weight": (h,),
        "post_attention_norm.weight": (h,),
        "post_ffw_norm.weight": (h,),
        "attn_q.weight": (q, h),
        "attn_k.weight": (k, h),
        "attn_v.weight": (k, h),
        "attn_qkv.weight": (q + 2 * k, h),
        "attn_output.weight": (h, q),
        "attn_q.bias": (q,),
        "attn_k.bias": (k,),
        "attn_v.bias": (k,),
        "attn_q_norm.weight": (s["hd"],),
        "attn_k_norm.weight": (s["hd"],),
        "ffn_gate.weight": (ff, h),
        "ffn_up.weight": (2 * ff if fused else ff, h),
        "ffn_down.weight": (h, ff),
    }
    return table.get(generic)


def check_tensors(
    shapes: dict[str, tuple[int, ...]], sizes: dict[str, int], arch: Architecture
) -> None:
    """Every GGUF tensor's shape against the config's sizes; block numbers within the layers."""
    fused = "blk.{bid}.attn_qkv.weight" in arch.tensors.values()
    for name, shape in shapes.items():
        m = _BLOCK.match(name)
        if m and int(m.group(1)) >= sizes["layers"]:
            raise ConvertError(
                f"the checkpoint has a tensor for layer {m.group(1)} ({name}) but config.json "
                f"says {sizes['layers']} layers; the config does not match the weights"
            )
        want = expected_shape(name, sizes, fused)
        if (
            want is not None
            and tuple(shape) != want
            and name in ("token_embd.weight", "output.weight")
            and tuple(shape[1:]) == want[1:]
        ):
            raise ConvertError(
                f"config.json's vocab_size {sizes['vocab']} does not match the {shape[0]} rows of "
                f"{name}; the config does not match the weights"
            )
        if want is not None and tuple(shape) != want:
            raise ConvertError(
                f"tensor {name} has shape {list(shape)} but config.json implies {list(want)}; "
                "the config does not match the weights"
            )


def safe_metadata(arch: Architecture, config: dict) -> list[tuple[str, Any]]:
    """``arch.metadata(config)`` with a malformed value as a one-line error."""
    try:
        return arch.metadata(config)
    except ConvertError:
        raise
    except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError, AttributeError) as e:
        raise _bad(f"a value is malformed ({type(e).__name__}: {e})") from None
