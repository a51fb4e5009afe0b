"""ggml's own quantize -> dequantize round trip of a float matrix, by tensor-type name.

Why a module of its own: it is the one piece of the size budget (convert.quant.budget) that
drives ggml's quantizer and dequantizer; the budget measures each candidate type's error with it,
and the quantization-aware-training tests judge their fake-quant grid by it. The C calls are
edge_llm.llama.quant's (only edge_llm.llama talks to llama.cpp); this module adds the type table's
names, the unquantized shortcuts and the converter's error type.
"""

from __future__ import annotations

import numpy as np

from convert.errors import ConvertError
from convert.quant import ggml_types
from edge_llm.llama import quant as ggml


def roundtrip(w: np.ndarray, type_name: str, imatrix: np.ndarray | None) -> np.ndarray:
    """``w`` [rows, cols] quantized and dequantized by ggml, exactly as llama.cpp's quantizer
    writes it (``imatrix``: the per-column importance it is given) and its kernels read it."""
    if type_name == "F32":
        return w
    if type_name == "F16":
        return w.astype(np.float16).astype(np.float32)
    t = ggml_types.type_info(type_name)
    if imatrix is None and ggml.requires_imatrix(t.ggml):
        raise ConvertError(f"{type_name} needs an importance matrix")
    try:
        return ggml.roundtrip(w, t.ggml, imatrix)
    except RuntimeError as e:  # a type ggml cannot dequantize, or a build laid out differently
        raise ConvertError(str(e)) from None


def dequantize(raw: np.ndarray, type_name: str, shape) -> np.ndarray:
    """ggml's dequantizer on packed blocks of ``type_name``: float32 of ``shape``."""
    try:
        return ggml.dequantize(raw, ggml_types.type_info(type_name).ggml, shape)
    except RuntimeError as e:
        raise ConvertError(str(e)) from None
