"""Hugging Face folder -> GGUF: validate everything first, then stream, then (maybe) quantize."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import gguf

from convert import archs, validate
from convert.archs.base import Architecture
from convert.checkpoint import Checkpoint
from convert.errors import ConvertError
from convert.quant import quantize
from convert.quant import quantize_job as qj
from convert.quant.options import QuantOptions
from convert.quant.requantize import is_gguf, requantize
from convert.write import PlannedTensor, Progress, check_target, write_gguf
from edge_llm.fsutil import atomic_path, work_dir

if TYPE_CHECKING:
    from convert.tokenizer import Vocab

Result = qj.Result  # what `convert` returns (``from convert import Result``)


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
    quant: QuantOptions | None = None,
    *,
    pre: str | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    force: bool = False,
    allow_nonfinite: bool = False,
    **choices,
) -> qj.Result:
    """Convert the checkpoint in ``src`` to ``out`` as ``quant`` says (`QuantOptions`: a type,
    a recipe or a size budget, an importance matrix, the calibration text), or with its fields
    as keywords: ``convert(src, out, type="Q4_K_M")``; default F16, BF16 for a bf16 checkpoint.
    A GGUF ``src`` is requantized (convert/quant/requantize.py).

    ``pre``: llama.cpp's pre-tokenizer name, when tokenizer.json does not tell it.
    ``force``: replace an existing ``out`` (never a source: an output that is, or is inside, the
    checkpoint or another input is refused).
    ``allow_nonfinite``: write weights that hold NaN or Inf; by default the first one found
    while the tensors stream is refused, naming the tensor (such a model generates nothing).
    """
    quant = QuantOptions.of(quant, **choices)
    if Path(src).is_file():  # a GGUF: requantize it
        _check_gguf_source(src, pre, allow_nonfinite)
        return requantize(src, out, quant, progress=progress, threads=threads, force=force)
    start = time.perf_counter()
    choice = qj.choose(src, out, quant, force)
    ck = Checkpoint(src)
    plan = _plan(ck, choice, quant.type, pre)
    out = Path(out).absolute()
    check_target(out, plan.estimate(choice))
    result = qj.Result(out, plan.arch.hf_names[0], choice.out_type.name, len(plan.tensors), 0, 0.0)
    finite = not allow_nonfinite
    with atomic_path(out) as tmp:
        if plan.direct:
            plan.write(tmp, progress, finite)
        else:
            with work_dir(out) as scratch:
                mid = scratch / "intermediate.gguf"
                plan.write(mid, progress, finite)
                ck.close()
                source = qj.Source(mid, [(t.name, t.shape) for t in plan.tensors], plan.n_layer)
                qj.quantize_to(choice, source, tmp, scratch, result, threads, progress)
    ck.close()
    result.bytes = out.stat().st_size
    result.seconds = time.perf_counter() - start
    return result


def _check_gguf_source(src: str | Path, pre: str | None, allow_nonfinite: bool) -> None:
    """A file to convert must be a GGUF, and takes none of the checkpoint-only options."""
    if not is_gguf(src):
        raise ConvertError(
            f"{src} is a file but not a GGUF; pass a GGUF to requantize or a Hugging Face "
            "model folder to convert"
        )
    if pre is not None:
        raise ConvertError("--pre applies to checkpoints; a GGUF already has its tokenizer")
    if allow_nonfinite:
        raise ConvertError("--allow-nonfinite applies to checkpoints, not to a GGUF")


@dataclass
class _Plan:
    """What the checkpoint becomes, checked before anything is written: the tensors (as
    ``first``: the output type when written directly, else llama.cpp's intermediate) and the
    header (metadata, vocabulary, name)."""

    arch: Architecture
    metadata: dict
    vocab: Vocab
    name: str
    n_layer: int
    first: quantize.OutType
    direct: bool  # written tensor by tensor, without llama.cpp's quantizer
    tensors: list[PlannedTensor]

    def estimate(self, choice: qj.Choice) -> int:
        """The bytes the conversion writes: the file, plus the intermediate one when there is."""
        size = sum(t.nbytes for t in self.tensors)
        if self.direct:
            return size
        if choice.mode == "type":
            return size + int(size * choice.out_type.bits / self.first.bits)
        return 2 * size

    def write(self, path: Path, progress: Progress | None, finite: bool) -> None:
        def header(w: gguf.GGUFWriter) -> None:
            w.add_name(str(Path(self.name).name))
            w.add_file_type(self.first.ftype)
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            self.vocab.write(w)

        meta, arch = self.metadata, self.arch.gguf_arch
        write_gguf(path, arch, meta, header, self.tensors, progress, finite=finite)


def _plan(ck: Checkpoint, choice: qj.Choice, type: str | None, pre: str | None) -> _Plan:
    """Check the checkpoint (tensors, config, tokenizer) against what was asked and plan the
    writing; sets ``choice.out_type`` and reads the calibration text when the choice needs it."""
    from convert.tokenizer import load_vocab

    arch, sizes, _ = _checked_tensors(ck)
    out_type = choice.out_type = quantize.resolve(type if choice.mode == "type" else None, ck.dtype)
    if choice.mode == "type":
        quantize.check_imatrix(out_type, choice.imatrix)
        if choice.imatrix is not None and out_type.direct is not None:
            raise ConvertError(
                f"--imatrix applies to types made by llama.cpp's quantizer; {out_type.name} is "
                "written directly and would ignore it"
            )
    choice.read_text()
    vocab = load_vocab(ck.dir, sizes["vocab"], pre=pre)  # vocab_size checked by check_config
    metadata = validate.safe_metadata(arch, ck.config)
    direct = choice.mode == "type" and out_type.direct is not None and choice.imatrix is None
    first = out_type if direct else quantize.intermediate(ck.dtype)
    name = ck.config.get("_name_or_path") or ck.dir.name
    n_layer = int(ck.config.get(arch.block_count_field) or 0)
    tensors = plan_tensors(ck, arch, first)
    return _Plan(arch, metadata, vocab, name, n_layer, first, direct, tensors)
