"""GGUF to GGUF: requantize a file with llama.cpp's quantizer, with the same choices as a checkpoint.

People hold GGUFs, not only checkpoints: an F16 file from a model hub, or a Q8_0 they want
smaller for a tablet. ``convert(FILE.gguf, OUT, type=...)`` lands here. The source GGUF plays
the part that the intermediate file plays for a checkpoint (hf_to_gguf.convert): llama.cpp's
``llama_model_quantize`` reads it directly, with ``--imatrix`` (a file, or ``auto``: collected on
the source itself), a recipe, or a size budget (its sensitivity probes need unquantized weights,
so a budget needs an F32/F16/BF16 source). A source that is already quantized is requantized
only with a warning: its rounding errors add to the new ones (llama.cpp's ``--allow-requantize``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from convert import budget, quantize, recipes
from convert import quantize_job as qj
from convert.errors import ConvertError
from convert.imatrix import Imatrix
from convert.write import Progress, check_target
from edge_llm.fsutil import atomic_path, work_dir

UNQUANTIZED = ("F32", "F16", "BF16")


def is_gguf(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(4) == b"GGUF"


def requantize(
    src: str | Path,
    out: str | Path,
    type: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    imatrix: str | Path | Imatrix | None = None,
    recipe: str | Path | recipes.Recipe | None = None,
    target_size: str | int | None = None,
    target_bpw: float | None = None,
    calibration: str | Path | None = None,
    force: bool = False,
) -> qj.Result:
    """Quantize the GGUF ``src`` to ``out`` (see hf_to_gguf.convert for the options)."""
    import gguf

    from convert import imatrix as imx

    start = time.perf_counter()
    src = Path(src).absolute()
    out = Path(out).absolute()
    c = qj.choose(src, out, type, recipe, target_size, target_bpw, imatrix, calibration, force)
    mode, rec, target, imatrix = c.mode, c.recipe, c.target, c.imatrix
    if mode == "type" and type is None:
        raise ConvertError("requantizing a GGUF needs --type (or --recipe, --target-size)")
    out_type = quantize.resolve(type, "F32") if mode == "type" else None
    if out_type is not None:
        quantize.check_imatrix(out_type, imatrix)

    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    field = reader.fields.get(f"{arch}.block_count")
    n_layer = int(field.contents()) if field is not None else 0
    shapes = [(t.name, tuple(int(x) for x in reversed(t.shape))) for t in reader.tensors]
    weight_types = {
        t.tensor_type.name
        for t in reader.tensors
        if recipes.quantizable(t.name, tuple(int(x) for x in reversed(t.shape)))
    }
    n_params = sum(math.prod(s) for _, s in shapes)
    src_bytes = src.stat().st_size
    del reader
    quantized = sorted(weight_types - set(UNQUANTIZED))
    warnings = []
    if quantized:
        if mode == "budget":
            raise ConvertError(
                f"a size budget needs an unquantized source (F32, F16 or BF16); {src.name} holds "
                f"{', '.join(quantized)} weights"
            )
        warnings.append(
            f"{src.name} is already quantized ({', '.join(quantized)}); requantizing adds its "
            "rounding errors to the new ones (quantize from an F16/F32 file when you have one)"
        )
    text, dataset = (
        qj.calibration(calibration) if (imatrix == "auto" or mode == "budget") else ("", "")
    )
    bits = out_type.bits if out_type is not None else 8.5
    check_target(out, int(src_bytes * min(1.0, bits / 8)) + (1 << 20))

    result = qj.Result(out, arch, out_type.name if out_type else "", len(shapes), 0, 0.0)
    with atomic_path(out) as tmp, work_dir(out) as scratch:
        im = extra = None
        if isinstance(imatrix, Imatrix):
            im = imatrix
        elif imatrix == "auto":
            im, extra = imx.cached_collect(
                src, text, dataset, qj.AUTO_CHUNKS, threads, qj.stage(progress)
            )
        if im is not None:
            _check_names(im, shapes)
        job = qj.Job(
            src,
            scratch / "quantized.gguf",
            tmp,
            budget.threads_default(threads),
            progress,
            im,
            result,
            allow_requantize=bool(quantized),
        )
        if mode == "type":
            job.fixed_mix(out_type)
        elif mode == "recipe":
            job.recipe(rec, shapes, n_layer)
        else:
            sens = budget.analyze(src, text, im, extra, True, threads, qj.stage(progress))
            job.budget(sens, target, target_bpw, n_params, text)
    result.warnings = warnings + list(result.warnings)
    result.bytes = out.stat().st_size
    result.seconds = time.perf_counter() - start
    return result


def _check_names(im: Imatrix, shapes: list[tuple[str, tuple[int, ...]]]) -> None:
    cols = {n: s[-1] for n, s in shapes}
    known = [n for n in im.names() if n in cols]
    if not known:
        raise ConvertError(
            "the importance matrix names none of this model's tensors; it was computed for "
            "another model"
        )
    for n in known:
        if im.sums[n].shape[-1] != cols[n]:
            raise ConvertError(
                f"the importance matrix has {im.sums[n].shape[-1]} columns for {n}, the model "
                f"{cols[n]}; it was computed for another model"
            )
