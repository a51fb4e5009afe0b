"""Hugging Face folder -> GGUF: validate everything first, then stream, then (maybe) quantize."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from convert import archs, budget, ggml_types, gguf_edit, quantize, recipes, validate
from convert import imatrix as imx
from convert.archs.base import Architecture
from convert.checkpoint import Checkpoint
from convert.errors import ConvertError
from convert.imatrix import Imatrix
from convert.outputs import check_output
from convert.write import PlannedTensor, Progress, check_target, write_gguf
from edge_llm.fsutil import atomic_path, work_dir


@dataclass
class Result:
    path: Path
    architecture: str
    type: str
    tensors: int
    bytes: int
    seconds: float
    tensor_types: dict[str, str] | None = None  # recipe / size budget: the type of each matrix
    recipe: str | None = None
    imatrix: str | None = None  # where the importance matrix came from
    target_bytes: int | None = None  # size budget
    predicted_kld: float | None = None  # size budget: the sensitivity model's prediction
    warnings: list[str] = field(default_factory=list)


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
            name, ref.shape, quantize.tensor_type(out, name, ref.shape), load, ref.nbytes,
            release=lambda begin=0, end=None, hf_name=hf_name: ck.release(hf_name, begin, end),
            raw=None if fn else (lambda hf_name=hf_name: ck.raw(hf_name)),
            source_dtype=ref.dtype,
        )  # fmt: skip
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
        arch = archs.for_config(ck.config)
        sizes = validate.check_config(ck.config, arch)
        shapes = {}
        for hf_name, ref in ck.tensors.items():
            if (name := arch.gguf_name(hf_name)) is not None:
                shapes[name] = ref.shape
        validate.check_tensors(shapes, sizes, arch)
        load_vocab(ck.dir, sizes["vocab"], pre=pre)
        validate.safe_metadata(arch, ck.config)
        plan_tensors(ck, arch, quantize.intermediate(ck.dtype))
        return arch
    finally:
        ck.close()


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
) -> Result:
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
    """
    from convert.tokenizer import load_vocab

    if Path(src).is_file():  # a GGUF: requantize it (convert/requantize.py)
        from convert.requantize import is_gguf, requantize

        if not is_gguf(src):
            raise ConvertError(
                f"{src} is a file but not a GGUF; pass a GGUF to requantize or a Hugging Face "
                "model folder to convert"
            )
        if pre is not None:
            raise ConvertError("--pre applies to checkpoints; a GGUF already has its tokenizer")
        return requantize(src, out, type=type, progress=progress, threads=threads,
                          imatrix=imatrix, recipe=recipe, target_size=target_size,
                          target_bpw=target_bpw, calibration=calibration, force=force)  # fmt: skip
    start = time.perf_counter()
    inputs = [src, calibration, *(p for p in (imatrix, recipe) if isinstance(p, str | Path))]
    check_output(out, [p for p in inputs if p is not None and Path(p).exists()], force=force)
    mode = _mode(type, recipe, target_size, target_bpw)
    rec = recipe if isinstance(recipe, recipes.Recipe) else recipes.load(recipe) if recipe else None
    target = budget.parse_size(target_size) if target_size is not None else None
    if target_bpw is not None and not 0.5 <= float(target_bpw) <= 32:
        raise ConvertError(f"--target-bpw {target_bpw} is out of range; use e.g. 4.5 (0.5 to 32)")
    if mode == "budget" and imatrix is None:
        imatrix = "auto"
    if imatrix is not None and not isinstance(imatrix, Imatrix) and str(imatrix) != "auto":
        imatrix = imx.read(imatrix)
    ck = Checkpoint(src)
    arch = archs.for_config(ck.config)
    sizes = validate.check_config(ck.config, arch)
    shapes = {}
    for hf_name, ref in ck.tensors.items():
        if (name := arch.gguf_name(hf_name)) is not None:
            shapes[name] = ref.shape
    validate.check_tensors(shapes, sizes, arch)
    out_type = quantize.resolve(type if mode == "type" else None, ck.dtype)
    if mode == "type":
        quantize.check_imatrix(out_type, imatrix)
        if imatrix is not None and out_type.direct is not None:
            raise ConvertError(
                f"--imatrix applies to types made by llama.cpp's quantizer; {out_type.name} is "
                "written directly and would ignore it"
            )
    text, dataset = (
        _calibration(calibration) if (imatrix == "auto" or mode == "budget") else ("", "")
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

    result = Result(out, arch.hf_names[0], out_type.name, len(tensors), 0, 0.0)
    with atomic_path(out) as tmp:
        if direct:
            write_gguf(tmp, arch.gguf_arch, metadata, extra, tensors, progress)
        else:
            with work_dir(out) as scratch:
                mid = scratch / "intermediate.gguf"
                write_gguf(mid, arch.gguf_arch, metadata, extra, tensors, progress)
                ck.close()
                im, im_extra = _importance(imatrix, mid, text, dataset, threads, progress)
                _check_imatrix_names(im, tensors)
                shapes = [(t.name, t.shape) for t in tensors]
                n_layer = int(ck.config.get(arch.block_count_field) or 0)
                qthreads = budget.threads_default(threads)
                job = _Job(mid, scratch / "quantized.gguf", tmp, qthreads, progress, im, result)
                if mode == "type":
                    job.fixed_mix(out_type)
                elif mode == "recipe":
                    job.recipe(rec, shapes, n_layer)
                else:
                    sens = budget.analyze(mid, text, im, im_extra, True, threads, _stage(progress))
                    n_params = sum(math.prod(s) for _, s in shapes)
                    job.budget(sens, target, target_bpw, n_params)
    ck.close()
    result.bytes = out.stat().st_size
    result.seconds = time.perf_counter() - start
    return result


def _mode(type, recipe, target_size, target_bpw) -> str:
    given = [n for n, v in (("--type", type), ("--recipe", recipe), ("--target-size", target_size),
                            ("--target-bpw", target_bpw)) if v is not None]  # fmt: skip
    if len(given) > 1:
        raise ConvertError(f"{given[0]} and {given[1]} exclude each other; choose one")
    if recipe is not None:
        return "recipe"
    if target_size is not None or target_bpw is not None:
        return "budget"
    return "type"


DEFAULT_CALIBRATION = Path(__file__).resolve().parent.parent / "bench" / "data" / "calibration.txt"
AUTO_CHUNKS = 32  # chunks of 512 tokens of the calibration text for --imatrix auto


def _calibration(path: str | Path | None) -> tuple[str, str]:
    p = Path(path) if path else DEFAULT_CALIBRATION
    if not p.is_file():
        raise ConvertError(
            f"calibration text {p} does not exist; pass --calibration FILE (a few hundred KB of "
            "text like the model's use)"
        )
    return p.read_text(encoding="utf-8", errors="replace"), p.name


def _stage(progress: Progress | None):
    if progress is None:
        return None
    return lambda stage, n, total: progress(stage, n, total, n, total)


def _importance(imatrix, mid: Path, text: str, dataset: str, threads: int, progress):
    """(Imatrix or None, the output matrix's statistics or None)."""
    if imatrix is None:
        return None, None
    if isinstance(imatrix, Imatrix):
        return imatrix, None
    return imx.cached_collect(mid, text, dataset, AUTO_CHUNKS, threads, _stage(progress))


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


class _Job:
    """The quantizing half of a conversion: llama.cpp quantizes the intermediate to ``q``,
    then the metadata saying how the file was made is stamped into ``target``."""

    def __init__(self, mid, q, target, threads, progress, im, result: Result, allow_requantize=False):
        self.mid, self.q, self.target, self.threads = mid, q, target, threads
        self.allow_requantize = allow_requantize  # mid is already quantized (requantize.py)
        self.progress, self.im, self.result = progress, im, result
        self.means = im.means() if im is not None else None
        if im is not None:
            result.imatrix = f"{', '.join(im.datasets) or 'unknown text'}, {im.chunk_count} chunks of {im.chunk_size}"

    def _imatrix_keys(self) -> dict:
        im = self.im
        if im is None:
            return {}
        return {
            "quantize.imatrix.file": im.datasets[0] if im.datasets else "imatrix",
            "quantize.imatrix.dataset": im.datasets[0] if im.datasets else "unknown",
            "quantize.imatrix.entries_count": len(im.names()),
            "quantize.imatrix.chunks_count": int(im.chunk_count),
        }

    def _run(self, label: str, values: dict, **kw) -> None:
        if self.progress:
            self.progress(f"quantizing to {label}", 0, 1, 0, 1)
        quantize.llama_quantize(self.mid, self.q, threads=self.threads, imatrix=self.means,
                                allow_requantize=self.allow_requantize, **kw)  # fmt: skip
        if values:
            gguf_edit.stamp(self.q, self.target, values)
            self.q.unlink()
        else:
            os.replace(self.q, self.target)
        if self.progress:
            self.progress(f"quantizing to {label}", 1, 1, 1, 1)

    def fixed_mix(self, out_type: quantize.OutType) -> None:
        self._run(out_type.name, self._imatrix_keys(), out=out_type)

    def recipe(self, rec: recipes.Recipe, shapes, n_layer: int) -> None:
        res = recipes.resolve(rec, shapes, n_layer)
        recipes.check_imatrix(res.types, self.im is not None)
        values = {**recipes.metadata(rec, res.types), **self._imatrix_keys(),
                  "general.file_type": rec.ftype}  # fmt: skip
        self._run(rec.name, values, out=None, types=res.types, ftype=_quantizing_ftype(rec.ftype))
        self.result.type, self.result.recipe = rec.name, rec.name
        self.result.tensor_types, self.result.warnings = res.types, res.warnings()

    def budget(self, sens, target: int | None, bpw: float | None, n_params: int) -> None:
        """Allocate, check the exact size, quantize; shrink and redo if llama.cpp's file came
        out larger than planned (it should not)."""
        label = f"{target / 1e6:.1f} MB" if target is not None else f"{bpw:g} bpw"
        minimum = budget.minimum_bytes(sens) + sens.fixed_bytes
        if target is not None:
            data = target - sens.fixed_bytes - _header_bytes(self.mid)
        else:
            data = int(float(bpw) * n_params / 8) - sens.fixed_bytes
        for _ in range(6):
            try:
                types = budget.allocate(sens, data)
            except ValueError:
                need = minimum + (_header_bytes(self.mid) if target is not None else 0)
                what = (
                    f"{need / 1e6:.1f} MB"
                    if target is not None
                    else f"{8 * need / n_params:.2f} bpw"
                )
                raise ConvertError(
                    f"the budget {label} is below the smallest this model can be quantized to "
                    f"({what}, every matrix at its smallest candidate type); raise it"
                ) from None
            predicted = sens.predict(types)
            rec = recipes.explicit(f"budget-{label.replace(' ', '')}", types,
                                   f"size budget {label}: predicted mean KLD {predicted:.4g}")  # fmt: skip
            ftype = _dominant_ftype(sens, types)
            values = {**recipes.metadata(rec, types), **self._imatrix_keys(),
                      "general.file_type": ftype,
                      "edge_llm.budget.target": label,
                      "edge_llm.budget.predicted_kld": float(predicted)}  # fmt: skip
            ggml_ids = {n: ggml_types.TYPES[t].ggml for n, t in types.items()}
            if target is not None:
                size = gguf_edit.planned_size(self.mid, ggml_ids, values)
                if size > target:
                    data -= size - target
                    continue
            self._run(label, values, out=None, types=types, ftype=_quantizing_ftype(ftype))
            actual = self.target.stat().st_size
            if target is not None and actual > target:
                data -= actual - target
                continue
            break
        else:
            raise ConvertError(f"could not fit the budget {label}; raise it a little")
        r = self.result
        r.type, r.recipe, r.tensor_types = f"budget {label}", rec.name, types
        r.target_bytes = target if target is not None else int(float(bpw) * n_params / 8)
        r.predicted_kld = predicted


def _header_bytes(path: Path) -> int:
    with gguf_edit.Header(path) as h:
        return len(h.meta_bytes()) + 64 * 1024  # room for the recipe keys; checked exactly later


def _quantizing_ftype(ftype: int) -> int:
    """llama.cpp applies per-tensor types only when the file type's default is quantized; the
    recorded general.file_type is stamped afterwards."""
    return ftype if ftype not in (0, 1, 32) else quantize.TYPES["Q8_0"].ftype


def _dominant_ftype(sens, types: dict[str, str]) -> int:
    """The file type named after the type holding most of the bytes (that names one)."""
    by = {r.name: r for r in sens.tensors}
    weight: dict[str, int] = {}
    for n, t in types.items():
        weight[t] = weight.get(t, 0) + ggml_types.TYPES[t].nbytes(by[n].n)
    for t in sorted(weight, key=weight.get, reverse=True):
        if recipes.ftype_for(t) is not None:
            return recipes.ftype_for(t)
    return quantize.TYPES["Q8_0"].ftype
