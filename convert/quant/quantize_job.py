"""The quantizing half of a conversion, shared by a checkpoint (hf_to_gguf) and a GGUF (requantize).

Why its own module: both front ends end the same way (an unquantized GGUF goes through
llama.cpp's quantizer with a type, a recipe or a size budget, then the metadata saying how the
file was made is stamped in), and each of them must be able to call the other's entry point
without the two modules importing each other. `choose` checks what was asked (`QuantOptions`),
`quantize` is the one dispatch to the fixed mix, the recipe or the size budget.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from convert import gguf_edit
from convert.errors import ConvertError
from convert.outputs import check_output
from convert.quant import budget, ggml_types, quantize, recipes
from convert.quant import imatrix as imx
from convert.quant.imatrix import Imatrix
from convert.quant.options import QuantOptions, read_calibration
from convert.write import Progress


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
    # size budget: mean KLD on the calibration text of the knapsack's file and of llama.cpp's
    # mixes that fit, and which of them the file is
    budget_check: dict | None = None
    warnings: list[str] = field(default_factory=list)


def mode(opts: QuantOptions) -> str:
    given = [
        n
        for n, v in (
            ("--type", opts.type),
            ("--recipe", opts.recipe),
            ("--target-size", opts.target_size),
            ("--target-bpw", opts.target_bpw),
        )
        if v is not None
    ]
    if len(given) > 1:
        raise ConvertError(f"{given[0]} and {given[1]} exclude each other; choose one")
    if opts.recipe is not None:
        return "recipe"
    if opts.target_size is not None or opts.target_bpw is not None:
        return "budget"
    return "type"


@dataclass
class Choice:
    """What a conversion was asked to make, checked: ``mode`` ("type", "recipe" or "budget"),
    the loaded recipe, the size budget (bytes, or bits per weight), the importance matrix (read,
    or "auto"); each front end sets ``out_type`` (mode "type") once it knows the source, and
    `read_text` reads the calibration text when the choice needs it."""

    mode: str
    recipe: recipes.Recipe | None
    target: int | None
    target_bpw: float | None
    imatrix: Imatrix | str | None
    calibration: str | Path | None
    out_type: quantize.OutType | None = None
    text: str = ""
    dataset: str = ""

    def read_text(self) -> None:
        """The calibration text, for ``--imatrix auto`` and a size budget's probes."""
        if self.imatrix == "auto" or self.mode == "budget":
            self.text, self.dataset = read_calibration(self.calibration)


def choose(src, out, opts: QuantOptions, force: bool) -> Choice:
    """Check the options every front end takes (checkpoint or GGUF) and the output path (never
    over an input); a budget defaults the importance matrix to "auto"."""
    named = (p for p in (opts.imatrix, opts.recipe) if isinstance(p, str | Path))
    inputs = [src, opts.calibration, *named]
    check_output(out, [p for p in inputs if p is not None and Path(p).exists()], force=force)
    m = mode(opts)
    recipe, imatrix = opts.recipe, opts.imatrix
    rec = recipe if isinstance(recipe, recipes.Recipe) else recipes.load(recipe) if recipe else None
    target = budget.parse_size(opts.target_size) if opts.target_size is not None else None
    if opts.target_bpw is not None and not 0.5 <= float(opts.target_bpw) <= 32:
        raise ConvertError(
            f"--target-bpw {opts.target_bpw} is out of range; use e.g. 4.5 (0.5 to 32)"
        )
    if m == "budget" and imatrix is None:
        imatrix = "auto"
    if imatrix is not None and not isinstance(imatrix, Imatrix) and str(imatrix) != "auto":
        imatrix = imx.read(imatrix)
    return Choice(m, rec, target, opts.target_bpw, imatrix, opts.calibration)


AUTO_CHUNKS = 32  # chunks of 512 tokens of the calibration text for --imatrix auto


def stage(progress: Progress | None):
    if progress is None:
        return None
    return lambda stage, n, total: progress(stage, n, total, n, total)


def importance(imatrix, mid: Path, text: str, dataset: str, threads: int, progress):
    """(Imatrix or None, the output matrix's statistics or None)."""
    if imatrix is None:
        return None, None
    if isinstance(imatrix, Imatrix):
        return imatrix, None
    return imx.cached_collect(mid, text, dataset, AUTO_CHUNKS, threads, stage(progress))


def check_imatrix_names(im: Imatrix | None, shapes: list[tuple[str, tuple[int, ...]]]) -> None:
    """An importance matrix made for another model is refused: it must name some of the model's
    tensors, with their numbers of columns."""
    if im is None:
        return
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


@dataclass
class Source:
    """The GGUF llama.cpp's quantizer reads: its tensors' (name, numpy shape), its number of
    blocks, and whether its weights are already quantized (llama-quantize's --allow-requantize)."""

    path: Path
    shapes: list[tuple[str, tuple[int, ...]]]
    n_layer: int
    quantized: bool = False


def quantize_to(
    choice: Choice, source: Source, target: Path, scratch: Path, result: Result, threads, progress
) -> None:
    """The one dispatch both front ends end with: the importance matrix (given, or collected on
    ``source``), checked against its tensors; then the fixed mix, the recipe or the size budget
    quantized from ``source`` into ``target`` (``scratch``: a folder for the work files)."""
    im, extra = importance(
        choice.imatrix, source.path, choice.text, choice.dataset, threads, progress
    )
    check_imatrix_names(im, source.shapes)
    job = Job(
        source.path,
        scratch / "quantized.gguf",
        target,
        budget.threads_default(threads),
        progress,
        im,
        result,
        allow_requantize=source.quantized,
    )
    if choice.mode == "type":
        job.fixed_mix(choice.out_type)
    elif choice.mode == "recipe":
        job.recipe(choice.recipe, source.shapes, source.n_layer)
    else:
        sens = budget.analyze(source.path, choice.text, im, extra, True, threads, stage(progress))
        n_params = sum(math.prod(s) for _, s in source.shapes)
        job.budget(sens, choice.target, choice.target_bpw, n_params, choice.text)


class Job:
    """The quantizing half of a conversion: llama.cpp quantizes the intermediate to ``q``,
    then the metadata saying how the file was made is stamped into ``target``."""

    def __init__(
        self, mid, q, target, threads, progress, im, result: Result, allow_requantize=False
    ):
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

    def _quantize(self, **kw) -> None:
        """llama.cpp's quantizer from the intermediate file to ``self.q`` with the job's threads,
        importance matrix and requantize rule (``kw``: the type, or per-tensor types)."""
        quantize.llama_quantize(
            self.mid,
            self.q,
            threads=self.threads,
            imatrix=self.means,
            allow_requantize=self.allow_requantize,
            **kw,
        )

    def _run(self, label: str, values: dict, **kw) -> None:
        if self.progress:
            self.progress(f"quantizing to {label}", 0, 1, 0, 1)
        self._quantize(**kw)
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
        values = {
            **recipes.metadata(rec, res.types),
            **self._imatrix_keys(),
            "general.file_type": rec.ftype,
        }
        self._run(rec.name, values, out=None, types=res.types, ftype=quantizing_ftype(rec.ftype))
        self.result.type, self.result.recipe = rec.name, rec.name
        self.result.tensor_types, self.result.warnings = res.types, res.warnings()

    def budget(
        self, sens, target: int | None, bpw: float | None, n_params: int, text: str | None = None
    ) -> None:
        """Allocate, check the exact size, quantize; shrink and redo if llama.cpp's file came
        out larger than planned (it should not). With ``text`` (the calibration text), the file
        is then measured against llama.cpp's largest mixes that fit (`versus_mixes`)."""
        label = f"{target / 1e6:.1f} MB" if target is not None else f"{bpw:g} bpw"
        minimum = budget.minimum_bytes(sens) + sens.fixed_bytes
        if target is not None:
            data = target - sens.fixed_bytes - header_bytes(self.mid)
        else:
            data = int(float(bpw) * n_params / 8) - sens.fixed_bytes
        for _ in range(6):
            try:
                types = budget.allocate(sens, data)
            except ValueError:
                need = minimum + (header_bytes(self.mid) if target is not None else 0)
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
            rec = recipes.explicit(
                f"budget-{label.replace(' ', '')}",
                types,
                f"size budget {label}: predicted mean KLD {predicted:.4g}",
            )
            ftype = dominant_ftype(sens, types)
            values = {
                **recipes.metadata(rec, types),
                **self._imatrix_keys(),
                "general.file_type": ftype,
                "edge_llm.budget.target": label,
                "edge_llm.budget.predicted_kld": float(predicted),
            }
            ggml_ids = {n: ggml_types.TYPES[t].ggml for n, t in types.items()}
            if target is not None:
                size = gguf_edit.planned_size(self.mid, ggml_ids, values)
                if size > target:
                    data -= size - target
                    continue
            self._run(label, values, out=None, types=types, ftype=quantizing_ftype(ftype))
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
        if text is not None:
            limit = target
            if limit is None:  # a bpw budget bounds the tensor data; the file has the rest too
                limit = r.target_bytes + sens.fixed_bytes + header_bytes(self.mid)
            self.versus_mixes(sens, text, limit, label, n_params)

    def versus_mixes(self, sens, text: str, limit: int, label: str, n_params: int) -> None:
        """The knapsack's choice rests on a predicted KL divergence, a lower bound that loosens
        as files shrink, so it can lose to a plain file of the same size. So the budget file is
        measured against llama.cpp's ``MIX_RIVALS`` largest mixes that fit ``limit`` and the
        largest uniform file that fits (every matrix, the embedding too, at one candidate type,
        as llama.cpp falls back where its blocks do not divide the rows), each as it would be
        written (same importance matrix, metadata stamped): mean KLD to the unquantized model on
        the end of the calibration text (as the sensitivity probes are); the file becomes the
        best of them."""
        r = self.result
        ev = budget.evaluator(self.mid, text, self.threads)
        ev.set_reference(self.mid)
        measured = {"budget": ev.kld(self.target)}
        best_file = self.q.with_name("rival-best.gguf")
        rival = self.q.with_name("rival.gguf")

        def try_rival(name: str, stampings: list[dict], **how) -> int | None:
            """Make rival ``name`` (llama_quantize's ``how``), written with the first of
            ``stampings`` that fits ({}: as llama.cpp wrote it); measure it and keep it when
            best. Its size, or None when llama.cpp cannot make it."""
            if self.progress:
                self.progress(f"measuring {name} against the budget", 0, 1, 0, 1)
            try:
                self._quantize(**how)
            except ConvertError:  # a rival llama.cpp cannot make here is no rival
                self.q.unlink(missing_ok=True)
                return None
            for values in stampings:
                if values:
                    gguf_edit.stamp(self.q, rival, values)
                else:
                    shutil.copyfile(self.q, rival)
                if rival.stat().st_size <= limit:
                    break
            self.q.unlink()
            size = rival.stat().st_size
            if size <= limit:
                measured[name] = ev.kld(rival)
                if measured[name] == min(measured.values()):
                    os.replace(rival, best_file)
            rival.unlink(missing_ok=True)
            return size

        keys = self._imatrix_keys()
        fitting = tries = 0
        scale = None  # the smallest real size / nominal size of the mixes made so far
        for name in budget.rival_mixes(n_params, int(1.5 * limit), self.im is not None):
            if fitting == MIX_RIVALS or tries == MIX_TRIES:
                break
            nominal = n_params * quantize.TYPES[name].bits / 8
            if scale is not None and nominal * scale > 1.02 * limit:
                continue
            tries += 1
            # as llama-quantize writes it with its imatrix keys, plus where it came from, when
            # that still fits; a budget of exactly llama.cpp's file size has room for neither
            said = {"edge_llm.budget.target": label, "edge_llm.budget.chosen": f"llama.cpp {name}"}
            size = try_rival(name, [{**keys, **said}, keys, {}], out=quantize.TYPES[name])
            if size is not None:
                scale = size / nominal if scale is None else min(scale, size / nominal)
                fitting += size <= limit
        uniform = budget.uniform_rival(sens, limit - header_bytes(self.mid) - sens.fixed_bytes)
        if uniform is not None:
            name, types = uniform
            rec = recipes.explicit(name, types, f"size budget {label}: every matrix {name[8:]}")
            ftype = dominant_ftype(sens, types)
            values = {
                **recipes.metadata(rec, types),
                **keys,
                "edge_llm.budget.target": label,
                "edge_llm.budget.chosen": name,
                "general.file_type": ftype,
            }
            try_rival(name, [values], out=None, types=types, ftype=quantizing_ftype(ftype))
        best = min(measured, key=measured.get)
        r.budget_check = {"measured_kld": measured, "chosen": best}
        if best == "budget":
            best_file.unlink(missing_ok=True)
            return
        os.replace(best_file, self.target)
        r.type, r.recipe, r.predicted_kld = f"budget {label}: {best}", best, None
        r.tensor_types = uniform[1] if uniform is not None and best == uniform[0] else None
        what = best if best.startswith("uniform") else f"llama.cpp's {best}"
        r.warnings.append(
            f"size budget {label}: {what} measured closer to the model than the "
            f"knapsack's mix on the calibration text (mean KLD {measured[best]:.4g} against "
            f"{measured['budget']:.4g}), so the file is {best}"
        )


MIX_RIVALS = 2  # llama.cpp's mixes measured against a budget file: the largest that fit
MIX_TRIES = 6  # at most this many quantized to find them (nominal sizes underestimate mixes)


def header_bytes(path: Path) -> int:
    with gguf_edit.Header(path) as h:
        return len(h.meta_bytes()) + 64 * 1024  # room for the recipe keys; checked exactly later


def quantizing_ftype(ftype: int) -> int:
    """llama.cpp applies per-tensor types only when the file type's default is quantized; the
    recorded general.file_type is stamped afterwards."""
    return ftype if ftype not in (0, 1, 32) else quantize.TYPES["Q8_0"].ftype


def dominant_ftype(sens, types: dict[str, str]) -> int:
    """The file type named after the type holding most of the bytes (that names one)."""
    by = {r.name: r for r in sens.tensors}
    weight: dict[str, int] = {}
    for n, t in types.items():
        weight[t] = weight.get(t, 0) + ggml_types.TYPES[t].nbytes(by[n].n)
    for t in sorted(weight, key=weight.get, reverse=True):
        if recipes.ftype_for(t) is not None:
            return recipes.ftype_for(t)
    return quantize.TYPES["Q8_0"].ftype
