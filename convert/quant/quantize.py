"""Output types: which ones the gguf package writes directly and which go through llama.cpp.

F32, F16, BF16 and Q8_0 are written tensor by tensor with the `gguf` package. Every other
llama.cpp file type is made by `llama_model_quantize` (llama-cpp-python) from an intermediate
F32/F16/BF16 file; llama.cpp chooses the per-tensor mix of the *_S/_M/_L types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q

from convert.errors import ConvertError


@dataclass(frozen=True)
class OutType:
    name: str
    ftype: int  # llama.cpp's LLAMA_FTYPE_* (general.file_type)
    direct: Q | None = None  # the tensor type when written directly; None: via llama.cpp
    needs_imatrix: bool = False
    bits: float = 0.0  # bits per weight, for size estimates


# name: (llama_ftype, direct ggml type, needs an importance matrix, ~bits per weight)
TABLE = {
    "F32": (0, Q.F32, False, 32),
    "F16": (1, Q.F16, False, 16),
    "BF16": (32, Q.BF16, False, 16),
    "Q8_0": (7, Q.Q8_0, False, 8.5),
    "Q4_0": (2, None, False, 4.5),
    "Q4_1": (3, None, False, 5.0),
    "Q5_0": (8, None, False, 5.5),
    "Q5_1": (9, None, False, 6.0),
    "Q2_K": (10, None, False, 3.0),
    "Q2_K_S": (21, None, True, 2.9),
    "Q3_K_S": (11, None, False, 3.5),
    "Q3_K_M": (12, None, False, 3.9),
    "Q3_K_L": (13, None, False, 4.3),
    "Q4_K_S": (14, None, False, 4.6),
    "Q4_K_M": (15, None, False, 4.9),
    "Q5_K_S": (16, None, False, 5.5),
    "Q5_K_M": (17, None, False, 5.7),
    "Q6_K": (18, None, False, 6.6),
    "IQ1_S": (24, None, True, 1.6),
    "IQ1_M": (31, None, True, 1.8),
    "IQ2_XXS": (19, None, True, 2.1),
    "IQ2_XS": (20, None, True, 2.3),
    "IQ2_S": (28, None, True, 2.5),
    "IQ2_M": (29, None, True, 2.7),
    "IQ3_XXS": (23, None, True, 3.1),
    "IQ3_XS": (22, None, True, 3.3),
    "IQ3_S": (26, None, False, 3.4),
    "IQ3_M": (27, None, False, 3.7),
    "IQ4_NL": (25, None, False, 4.5),
    "IQ4_XS": (30, None, False, 4.3),
    "TQ1_0": (36, None, False, 1.7),
    "TQ2_0": (37, None, False, 2.1),
}
ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M", "FP16": "F16", "FP32": "F32"}
TYPES = {n: OutType(n, f, d, i, b) for n, (f, d, i, b) in TABLE.items()}


def resolve(name: str | None, source_dtype: str) -> OutType:
    """The output type for ``--type`` (default: F16, or BF16 for a bf16 checkpoint)."""
    if name is None:
        return TYPES["BF16" if source_dtype == "BF16" else "F16"]
    key = name.upper().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in TYPES:
        raise ConvertError(f"unknown --type {name}; choose one of: {', '.join(TYPES)}")
    return TYPES[key]


def intermediate(source_dtype: str) -> OutType:
    """What llama.cpp quantizes from: the checkpoint's own precision, so nothing is rounded twice."""
    return TYPES[{"BF16": "BF16", "F16": "F16"}.get(source_dtype, "F32")]


def tensor_type(out: OutType, name: str, shape: tuple[int, ...]) -> Q:
    """The type of one tensor in a directly written file: vectors (norms, biases) stay F32, as
    llama.cpp expects; rows that Q8_0 blocks of 32 do not divide fall back to F16."""
    if len(shape) < 2 or out.direct in (None, Q.F32):
        return Q.F32
    if out.direct == Q.Q8_0 and shape[-1] % 32:
        return Q.F16
    return out.direct


def check_imatrix(out: OutType, imatrix=None) -> None:
    if out.needs_imatrix and imatrix is None:
        raise ConvertError(
            f"{out.name} needs an importance matrix (llama.cpp refuses it without one); "
            "choose a type without IQ1/IQ2/IQ3_XXS/IQ3_XS/Q2_K_S, e.g. Q4_K_M or IQ4_XS"
        )


def llama_quantize(
    src: Path,
    dst: Path,
    out: OutType | None,
    threads: int,
    imatrix: dict[str, np.ndarray] | None = None,
    types: dict[str, str] | None = None,
    ftype: int | None = None,
    allow_requantize: bool = False,
) -> None:
    """Quantize ``src`` (a GGUF) to ``dst`` with llama.cpp.

    ``imatrix``: per weight, the mean squared activation of each input column (what
    llama-quantize derives from an imatrix file: in_sum2 / counts); ``types``: an explicit
    ggml type per tensor (llama.cpp's tensor-type overrides, one exact-name pattern each), for
    recipes and size budgets; ``ftype``: the file type to run llama.cpp with (default
    ``out.ftype``); ``allow_requantize``: ``src`` is already quantized (llama-quantize's
    --allow-requantize).
    """
    from convert.quant.ggml_types import TYPES as GGML
    from edge_llm.llama import binding

    if out is not None:
        check_imatrix(out, imatrix)
    ok = binding.quantize_file(
        src,
        dst,
        ftype if ftype is not None else out.ftype,
        threads,
        imatrix=imatrix,
        tensor_types={n: GGML[t].ggml for n, t in (types or {}).items()},
        allow_requantize=allow_requantize,
    )
    name = out.name if out is not None else "the requested types"
    if not ok:
        raise ConvertError(f"llama.cpp could not quantize to {name} (see its log above)")
