"""Hugging Face folder -> GGUF: validate everything first, then stream, then (maybe) quantize."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gguf

from convert import archs, quantize
from convert.archs.base import Architecture
from convert.checkpoint import Checkpoint
from convert.errors import ConvertError
from convert.write import PlannedTensor, Progress, check_target, write_gguf
from edge_llm.fsutil import atomic_path


@dataclass
class Result:
    path: Path
    architecture: str
    type: str
    tensors: int
    bytes: int
    seconds: float


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
            release=lambda hf_name=hf_name: ck.release(hf_name),
        )  # fmt: skip
    missing = [n for n in arch.required(ck.config) if n not in planned]
    if missing:
        raise ConvertError(
            f"the checkpoint lacks tensor {missing[0]} ({len(missing)} missing), which "
            f"{arch.hf_names[0]} needs; the safetensors files are incomplete"
        )
    order = sorted(planned, key=_tensor_order)
    return [planned[n] for n in order]


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
) -> Result:
    """Convert the checkpoint in ``src`` to ``out`` at ``type`` (default F16, BF16 for bf16)."""
    from convert.tokenizer import load_vocab

    start = time.perf_counter()
    ck = Checkpoint(src)
    arch = archs.for_config(ck.config)
    out_type = quantize.resolve(type, ck.dtype)
    quantize.check_imatrix(out_type)
    vocab_size = ck.config.get("vocab_size")
    if not vocab_size:
        raise ConvertError("config.json has no vocab_size; the checkpoint's config is incomplete")
    vocab = load_vocab(ck.dir, int(vocab_size), pre=pre)
    metadata = arch.metadata(ck.config)
    out = Path(out).absolute()
    direct = out_type.direct is not None
    first = out_type if direct else quantize.intermediate(ck.dtype)
    tensors = plan_tensors(ck, arch, first)
    estimate = sum(t.nbytes for t in tensors)
    if not direct:
        estimate += int(estimate * out_type.bits / first.bits)
    check_target(out, estimate)
    name = ck.config.get("_name_or_path") or ck.dir.name

    def extra(w: gguf.GGUFWriter) -> None:
        w.add_name(str(Path(name).name))
        w.add_file_type(first.ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        vocab.write(w)

    with atomic_path(out) as tmp:
        if direct:
            write_gguf(tmp, arch.gguf_arch, metadata, extra, tensors, progress)
        else:
            fd, mid = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".f.gguf", dir=out.parent)
            os.close(fd)
            try:
                write_gguf(Path(mid), arch.gguf_arch, metadata, extra, tensors, progress)
                n, size = len(tensors), sum(t.nbytes for t in tensors)
                if progress:
                    progress(f"quantizing to {out_type.name}", 0, n, 0, size)
                quantize.llama_quantize(Path(mid), tmp, out_type, threads or os.cpu_count() or 1)
                if progress:
                    progress(f"quantizing to {out_type.name}", n, n, size, size)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(mid)
    ck.close()
    return Result(
        out,
        arch.hf_names[0],
        out_type.name,
        len(tensors),
        out.stat().st_size,
        time.perf_counter() - start,
    )
