"""What a conversion is asked to quantize to, as one object, and where its calibration text is.

Why its own module: a checkpoint (convert.hf_to_gguf) and a GGUF (convert.quant.requantize) take
the same quantizing choices, and so do `pull` and the scripts through them; one `QuantOptions`
carries them, instead of the same parameter list written out twice. It imports nothing heavy:
`edge-llm --help` imports convert.cli, which finds the default calibration text here.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from convert.errors import ConvertError

if TYPE_CHECKING:
    from convert.quant.imatrix import Imatrix
    from convert.quant.recipes import Recipe


@dataclass(frozen=True)
class QuantOptions:
    """``type``: a file type (F16, Q4_K_M, ...; default F16, BF16 for a bf16 checkpoint);
    ``recipe``: a preset name, a TOML file or a `Recipe`, instead of ``type``;
    ``target_size`` (bytes, or "80MB") or ``target_bpw``: a size budget, instead of both: a type
    per tensor chosen to minimise the predicted KL divergence within it (convert/quant/budget.py);
    ``imatrix``: an importance-matrix file (llama.cpp's GGUF or .dat), ``"auto"`` (computed on the
    calibration text; a budget's default) or an `Imatrix`, used by llama.cpp's quantizer;
    ``calibration``: the text for ``"auto"`` and the budget's probes (default: `calibration_path`).
    """

    type: str | None = None
    recipe: str | Path | Recipe | None = None
    target_size: str | int | None = None
    target_bpw: float | None = None
    imatrix: str | Path | Imatrix | None = None
    calibration: str | Path | None = None

    @classmethod
    def of(cls, options: QuantOptions | None = None, **given) -> QuantOptions:
        """``options`` with the fields named in ``given`` set (``convert(src, out, type=...)``)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise TypeError(
                f"unknown quantizing option {unknown[0]!r}; options: {', '.join(names)}"
            )
        return replace(options or cls(), **given)


def calibration_path(path: str | Path | None = None) -> Path:
    """``path``, or the project's calibration text: bench/data/calibration.txt, packaged with the
    benchmark's texts (held apart from its evaluation text)."""
    if path:
        return Path(path)
    return Path(str(importlib.resources.files("bench").joinpath("data/calibration.txt")))


def read_calibration(path: str | Path | None = None) -> tuple[str, str]:
    """The calibration text (``path``, or the project's) and its file name (the dataset name an
    importance matrix records)."""
    p = calibration_path(path)
    if not p.is_file():
        raise ConvertError(
            f"calibration text {p} does not exist; pass --calibration FILE (a few hundred KB of "
            "text like the model's use)"
        )
    return p.read_text(encoding="utf-8", errors="replace"), p.name
