"""ggml's own quantize -> dequantize round trip of a float matrix, callable from Python.

Why a module of its own: it is the one piece of the size budget (convert.budget) that drives
ggml's quantizer and dequantizer through the binding; the budget measures each candidate type's
error with it, and the quantization-aware-training tests judge their fake-quant grid by it.
Keeping it apart keeps convert/budget.py about choosing types, not about calling ggml.
"""

from __future__ import annotations

import functools

import numpy as np

from convert import ggml_types
from convert.errors import ConvertError
from edge_llm.llama import binding


@functools.cache
def to_float(ggml_type: int):
    """ggml's dequantizer for a type (its type traits' to_float)."""
    try:
        tr = binding.type_traits(ggml_type)
    except RuntimeError as e:
        raise ConvertError(str(e)) from None
    if not tr.to_float:
        raise ConvertError(f"ggml has no dequantizer for type {ggml_type}")
    return binding.TO_FLOAT(tr.to_float)


def roundtrip(w: np.ndarray, type_name: str, imatrix: np.ndarray | None) -> np.ndarray:
    """``w`` [rows, cols] quantized and dequantized by ggml, exactly as llama.cpp's quantizer
    writes it (``imatrix``: the per-column importance it is given) and its kernels read it."""
    if type_name == "F32":
        return w
    if type_name == "F16":
        return w.astype(np.float16).astype(np.float32)
    t = ggml_types.type_info(type_name)
    lib = binding.lib()
    if imatrix is None and lib.ggml_quantize_requires_imatrix(t.ggml):
        raise ConvertError(f"{type_name} needs an importance matrix")
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, cols = w.shape
    out = np.empty(rows * (cols // t.block) * t.type_size, dtype=np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_chunk(
        t.ggml,
        w.ctypes.data,
        out.ctypes.data,
        0,
        rows,
        cols,
        None if im is None else im.ctypes.data,
    )
    back = np.empty((rows, cols), dtype=np.float32)
    to_float(t.ggml)(out.ctypes.data, back.ctypes.data, rows * cols)
    return back
