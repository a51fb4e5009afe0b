"""ggml's own quantizer and dequantizer on rows of floats, numpy in and numpy out.

Why its own module: the converter's size budget measures each candidate type's error with ggml's
quantize -> dequantize round trip, and quantization-aware distillation starts from ggml's own
blocks; both need libggml-base's row functions (``ggml_quantize_chunk``, a type's ``to_float``),
which llama-cpp-python does not wrap. Only this package talks to llama.cpp, so they live here as
small functions over `binding.lib()`'s one ctypes table; callers never see a pointer. Whole files
are quantized by `binding.quantize_file` (llama.cpp's quantizer), not here.

Types are ggml's enum values (``ggml_type``); a function here raises RuntimeError for what ggml
cannot do, and the caller words it for its users.
"""

from __future__ import annotations

import functools

import numpy as np

from edge_llm.llama import binding


def block_size(ggml_type: int) -> int:
    """Elements per block of the type (ggml_blck_size)."""
    return int(binding.lib().ggml_blck_size(ggml_type))


def type_size(ggml_type: int) -> int:
    """Bytes per block of the type (ggml_type_size)."""
    return int(binding.lib().ggml_type_size(ggml_type))


def requires_imatrix(ggml_type: int) -> bool:
    """Whether ggml quantizes the type only with an importance matrix."""
    return bool(binding.lib().ggml_quantize_requires_imatrix(ggml_type))


def prepare(ggml_types) -> None:
    """ggml's tables for these types (ggml_quantize_init), built once, before threads quantize
    with them at the same time."""
    lib = binding.lib()
    for t in ggml_types:
        if lib.ggml_blck_size(t) > 1:
            lib.ggml_quantize_init(t)


def quantize(w: np.ndarray, ggml_type: int, imatrix: np.ndarray | None = None) -> np.ndarray:
    """``w`` [rows, cols] quantized by ggml (ggml_quantize_chunk) as llama.cpp's quantizer writes
    it: the blocks as bytes [rows, row bytes]; ``imatrix``: the per-column importance (cols)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, cols = w.shape
    out = np.empty((rows, cols // block_size(ggml_type) * type_size(ggml_type)), dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    binding.lib().ggml_quantize_chunk(
        ggml_type,
        w.ctypes.data,
        out.ctypes.data,
        0,
        rows,
        cols,
        None if im is None else im.ctypes.data,
    )
    return out


@functools.cache
def _to_float(ggml_type: int):
    tr = binding.type_traits(ggml_type)
    if not tr.to_float:
        raise RuntimeError(f"ggml has no dequantizer for type {ggml_type}")
    return binding.TO_FLOAT(tr.to_float)


def dequantize(raw: np.ndarray, ggml_type: int, shape) -> np.ndarray:
    """ggml's dequantizer (the type traits' to_float) on packed blocks: float32 of ``shape``."""
    raw = np.ascontiguousarray(raw)
    out = np.empty(shape, dtype=np.float32)
    _to_float(ggml_type)(raw.ctypes.data, out.ctypes.data, out.size)
    return out


def roundtrip(w: np.ndarray, ggml_type: int, imatrix: np.ndarray | None = None) -> np.ndarray:
    """``w`` [rows, cols] quantized and dequantized by ggml, as llama.cpp's quantizer writes it
    and its kernels read it."""
    return dequantize(quantize(w, ggml_type, imatrix), ggml_type, np.shape(w))
