"""The one table of ggml tensor types: what a recipe, a size budget, the quantizer and GGUF
editing may use, and what each costs.

ggml's facts (enum value, elements and bytes per block) come from gguf-py's constants
(``GGMLQuantizationType``, ``GGML_QUANT_SIZES``), which mirror ggml.h; a type newer than the
installed gguf-py states them in its row. llama.cpp's quantizer behaviour, which gguf-py does not
describe (the fallback for rows a block does not divide, the types that need an importance
matrix), is data in ``recipes/types.toml``: one row per type. tests/convert/test_quant_tools.py checks every
row against ggml itself.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from convert.errors import ConvertError

TABLE = Path(__file__).parent / "recipes" / "types.toml"


@dataclass(frozen=True)
class TypeInfo:
    name: str
    ggml: int
    block: int
    type_size: int
    fallback: str | None
    needs_imatrix: bool

    def nbytes(self, n_elements: int) -> int:
        return n_elements // self.block * self.type_size

    def bpw(self) -> float:
        return 8 * self.type_size / self.block


def _row(name: str, row: dict) -> TypeInfo:
    if name in GGMLQuantizationType.__members__:
        q = GGMLQuantizationType[name]
        ggml, (block, size) = q.value, GGML_QUANT_SIZES[q]
        if any(k in row for k in ("id", "block", "bytes")):
            raise ConvertError(f"{TABLE}: {name} states id/block/bytes that gguf-py already knows")
    else:  # newer than gguf-py: the row says it
        ggml, block, size = int(row["id"]), int(row["block"]), int(row["bytes"])
    return TypeInfo(name, ggml, block, size, row.get("fallback"), bool(row.get("imatrix", False)))


TYPES: dict[str, TypeInfo] = {
    name: _row(name, row) for name, row in tomllib.loads(TABLE.read_text())["types"].items()
}
_BY_ID = {t.ggml: t for t in TYPES.values()}


def type_info(name: str) -> TypeInfo:
    key = str(name).upper()
    if key not in TYPES:
        raise ConvertError(f"unknown tensor type {name}; choose one of: {', '.join(TYPES)}")
    return TYPES[key]


def type_name(ggml_type: int) -> str:
    return _BY_ID[int(ggml_type)].name


def nbytes(ggml_type: int, n_elements: int) -> int:
    """Bytes of ``n_elements`` of any ggml type (ours, or any gguf-py knows)."""
    t = _BY_ID.get(int(ggml_type))
    if t is not None:
        return t.nbytes(n_elements)
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(int(ggml_type))]
    return n_elements // block * size


def fits(t: TypeInfo, ncols: int) -> bool:
    return ncols % t.block == 0


def fallback(name: str, ncols: int) -> str:
    """The type llama.cpp's quantizer actually writes for ``name`` on rows of ``ncols``
    (tensor_type_fallback): the fallback when the block does not divide the rows, F16 when
    that does not fit either."""
    t = type_info(name)
    if fits(t, ncols):
        return t.name
    if t.fallback and fits(TYPES[t.fallback], ncols):
        return t.fallback
    return "F16"
