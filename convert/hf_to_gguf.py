"""Hugging Face folder -> GGUF: validate everything first, then stream, then (maybe) quantize."""

from __future__ import annotations

import math
import time
from pathlib import Path

import gguf

from convert import archs, budget, quantize, recipes, validate
from convert import quantize_job as qj
from convert.archs.base import Architecture
from convert.checkpoint import Checkpoint
from convert.errors import ConvertError
from convert.imatrix import Imatrix
from convert.requantize import is_gguf, requantize
from convert.write import PlannedTensor, Progress, check_target, write_gguf
from edge_llm.fsutil import atomic_path, work_dir


def plan_tensors(ck: Checkpoint, arch: Architecture, out: quantize.OutType) -> list[PlannedTensor]:
    """Every GGUF tensor, in checkpoint order, with its type; errors for missing or extra ones."""
    planned: dict[str, PlannedTensor] = {}
    for hf_name, ref in ck.tensors.items():
        name = arch.gguf_name(hf_name)
        if name is None:
            continue
        fn = arch.transform_for(name)

        def load(hf_name=hf_name, fn=fn):
            data = ck.load(hf_name)
            return fn(data, ck.config) if fn else data

        planned[name] = PlannedTensor(
            name,
            ref.shape,
            quantize.tensor_type(out, name, ref.shape),
            load,
            ref.nbytes,
            release=lambda begin=0, end=None, hf_name=hf_name: ck.release(hf_name, begin, end),
            raw=None if fn else (lambda hf_name=hf_name: ck.raw(hf_name)),
            source_dtype=ref.dtype,
            source_name=hf_name,
        )
    missing = [n for n in arch.required(ck.config) if n not in planned]
    if missing:
        raise ConvertError(
            f"the checkpoint lacks tensor {missing[0]} ({len(missing)} missing), which "
            f"{arch.hf_names[0]} needs; the safetensors files are incomplete"
        )
    order = sorted(planned, key=_tensor_order)
    return [planned[n] for n in order]


def check_source(src: str | Path, pre: str | None = None) -> Architecture:
    """Everything `convert` checks before it writes: the folder, config.json, the safetensors
    headers and index, the tensors against the config, the tokenizer files. ConvertError if
    anything is off; the architecture otherwise."""
    from convert.tokenizer import load_vocab

    ck = Checkpoint(src)
    try:
        arch, sizes, _ = _checked_tensors(ck)
        load_vocab(ck.dir, sizes["vocab"], pre=pre)
        validate.safe_metadata(arch, ck.config)
        plan_tensors(ck, arch, quantize.intermediate(ck.dtype))
        return arch
    finally:
        ck.close()


def _checked_tensors(ck: Checkpoint) -> tuple[Architecture, dict, dict]:
    """The checkpoint's architecture, sizes (config checked) and GGUF tensor shapes (checked
    against the config)."""
    arch = archs.for_config(ck.config)
    sizes = validate.check_config(ck.config, arch)
    shapes = {}
    for hf_name, ref in ck.tensors.items():
        if (name := arch.gguf_name(hf_name)) is not None:
            shapes[name] = ref.shape
    validate.check_tensors(shapes, sizes, arch)
    return arch, sizes, shapes


def _tensor_order(name: str) -> tuple:
    if name.startswith("blk."):
        return (1, int(name.split(".")[1]), name)
    return (0 if name.startswith("token_embd") else 2, 0, name)


def convert(
    src: str | Path,
    out: str | Path,
    type: str | None = None,
    pre: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    imatrix: str | Path | Imatrix | None = None,
    recipe: str | Path | recipes.Recipe | None = None,
    target_size: str | int | None = None,
    target_bpw: float | None = None,
    calibration: str | Path | None = None,
    force: bool = False,
    allow_nonfinite: bool = False,
) -> qj.Result:
    """Convert the checkpoint in ``src`` to ``out`` at ``type`` (default F16, BF16 for bf16).

    ``imatrix``: an importance-matrix file (llama.cpp's GGUF or .dat), ``"auto"`` (computed here
    on the calibration text), or an `Imatrix`; used by llama.cpp's quantizer.
    ``recipe``: a preset name or TOML file (convert/recipes.py) instead of ``type``.
    ``target_size`` (bytes, or "80MB") or ``target_bpw``: choose a type per tensor to minimise
    the predicted KL divergence within that size (convert/budget.py); needs activation
    statistics, so the importance matrix defaults to ``"auto"``.
    ``calibration``: the text for ``"auto"`` and the budget's probes (default: the project's
    bench/data/calibration.txt).
    ``force``: replace an existing ``out`` (never a source: an output that is, or is inside, the
    checkpoint or another input is refused).
    ``allow_nonfinite``: write weights that hold NaN or Inf; by default the first one found
    while the tensors stream is refused, naming the tensor (such a model generates nothing).
    """
    from convert.tokenizer import load_vocab

    if Path(src).is_file():  # a GGUF: requantize it (convert/requantize.py)
        if not is_gguf(src):
            raise ConvertError(
                f"{src} is a file but not a GGUF; pass a GGUF to requantize or a Hugging Face "
                "model folder to convert"
            )
        if pre is not None:
            raise ConvertError("--pre applies to checkpoints; a GGUF already has its tokenizer")
        if allow_nonfinite:
            raise ConvertError("--allow-nonfinite applies to checkpoints, not to a GGUF")
        return requantize(
            src,
            out,
            type=type,
            progress=progress,
            threads=threads,
            imatrix=imatrix,
            recipe=recipe,
            target_size=target_size,
            target_bpw=target_bpw,
            calibration=calibration,
            force=force,
        )
    start = time.perf_counter()
    c = qj.choose(src, out, type, recipe, target_size, target_bpw, imatrix, calibration, force)
    mode, rec, target, imatrix = c.mode, c.recipe, c.target, c.imatrix
    ck = Checkpoint(src)
    arch, sizes, shapes = _checked_tensors(ck)
    out_type = quantize.resolve(type if mode == "type" else None, ck.dtype)
    if mode == "type":
        quantize.check_imatrix(out_type, imatrix)
        if imatrix is not None and out_type.direct is not None:
            raise ConvertError(
                f"--imatrix applies to types made by llama.cpp's quantizer; {out_type.name} is "
                "written directly and would ignore it"
            )
    text, dataset = (
        qj.calibration(calibration) if (imatrix == "auto" or mode == "budget") else ("", "")
    )
    vocab_size = ck.config.get("vocab_size")
    if not vocab_size:
        raise ConvertError("config.json has no vocab_size; the checkpoint's config is incomplete")
    vocab = load_vocab(ck.dir, int(vocab_size), pre=pre)
    metadata = validate.safe_metadata(arch, ck.config)
    out = Path(out).absolute()
    direct = mode == "type" and out_type.direct is not None and imatrix is None
    first = out_type if direct else quantize.intermediate(ck.dtype)
    tensors = plan_tensors(ck, arch, first)
    estimate = sum(t.nbytes for t in tensors)
    if not direct:
        estimate += int(estimate * out_type.bits / first.bits) if mode == "type" else estimate
    check_target(out, estimate)
    name = ck.config.get("_name_or_path") or ck.dir.name

    def extra(w: gguf.GGUFWriter) -> None:
        w.add_name(str(Path(name).name))
        w.add_file_type(first.ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.write(w)

    result = qj.Result(out, arch.hf_names[0], out_type.name, len(tensors), 0, 0.0)
    finite = not allow_nonfinite
    with atomic_path(out) as tmp:
        if direct:
            write_gguf(tmp, arch.gguf_arch, metadata, extra, tensors, progress, finite=finite)
        else:
            with work_dir(out) as scratch:
                mid = scratch / "intermediate.gguf"
                write_gguf(mid, arch.gguf_arch, metadata, extra, tensors, progress, finite=finite)
                ck.close()
                im, im_extra = qj.importance(imatrix, mid, text, dataset, threads, progress)
                _check_imatrix_names(im, tensors)
                shapes = [(t.name, t.shape) for t in tensors]
                n_layer = int(ck.config.get(arch.block_count_field) or 0)
                qthreads = budget.threads_default(threads)
                job = qj.Job(mid, scratch / "quantized.gguf", tmp, qthreads, progress, im, result)
                if mode == "type":
                    job.fixed_mix(out_type)
                elif mode == "recipe":
                    job.recipe(rec, shapes, n_layer)
                else:
                    sens = budget.analyze(
                        mid, text, im, im_extra, True, threads, qj.stage(progress)
                    )
                    n_params = sum(math.prod(s) for _, s in shapes)
                    job.budget(sens, target, target_bpw, n_params, text)
    ck.close()
    result.bytes = out.stat().st_size
    result.seconds = time.perf_counter() - start
    return result


def _check_imatrix_names(im: Imatrix | None, tensors: list[PlannedTensor]) -> None:
    if im is None:
        return
    cols = {t.name: t.shape[-1] for t in tensors}
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
