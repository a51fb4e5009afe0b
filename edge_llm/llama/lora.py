"""LoRA adapters in llama.cpp: load one onto a model, set a group of them on a context.

Why here: an adapter is loaded once per model (``llama_adapter_lora_init``: its tensors are
copied into the model's buffers) and then only *set* on a context (``llama_set_adapters_lora``),
which changes what the next graph computes without touching the base weights. Switching
subjects is therefore a pointer swap, not a reload. llama.cpp frees every adapter of a model when
the model is freed, so handles are never freed here (freeing one twice would crash).

Callers check the file first (``edge_llm.adapters.check``): llama.cpp trusts its shapes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

from edge_llm.llama import binding
from edge_llm.llama.binding import C, LoadError, take_recent_errors

__all__ = ["load", "set_on", "meta"]


def load(model, path: str | Path):
    """A ``llama_adapter_lora *`` for the GGUF adapter at ``path`` on ``model`` (a
    ``llama_model *``); LoadError with llama.cpp's log lines if it refuses."""
    binding.init()
    take_recent_errors()
    handle = C.llama_adapter_lora_init(model, str(path).encode())
    if not handle:
        raise LoadError("llama.cpp could not load the adapter", take_recent_errors())
    return handle


def set_on(ctx, adapters: Sequence[tuple[object, float]]) -> None:
    """Make ``adapters`` ((handle, scale) pairs) the context's whole set: an empty sequence
    clears them. llama.cpp skips the work when the set is unchanged."""
    n = len(adapters)
    if n == 0:
        rc = C.llama_set_adapters_lora(ctx, None, 0, None)
    else:
        handles = (C.llama_adapter_lora_p_ctypes * n)(*(h for h, _ in adapters))
        scales = (ctypes.c_float * n)(*(float(s) for _, s in adapters))
        rc = C.llama_set_adapters_lora(ctx, handles, n, scales)
    if rc != 0:
        raise RuntimeError(f"llama_set_adapters_lora failed with code {rc}")


def meta(handle, key: str) -> str | None:
    """One metadata value of a loaded adapter, as llama.cpp reads it (None when absent)."""
    buf = ctypes.create_string_buffer(4096)
    n = C.llama_adapter_meta_val_str(handle, key.encode(), buf, len(buf))
    return None if n < 0 else buf.value.decode("utf-8", errors="replace")
