"""Streaming GGUF writing with the gguf package.

Every tensor's name, shape and type is declared first (the GGUF header lists them), then the
tensors are read from the memory-mapped checkpoint, transformed and written one at a time, so
memory stays near the largest tensor.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from convert.errors import ConvertError, check_disk_full

# progress(stage, tensors_done, tensors_total, bytes_done, bytes_total)
Progress = Callable[[str, int, int, int, int], None]


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (rows, columns)
    type: Q
    load: Callable[[], np.ndarray]  # float32 data, transformed
    source_bytes: int
    release: Callable[..., None] | None = None  # release(begin=0, end=None): bytes written
    # the stored array (memory-mapped) and its safetensors dtype, when no transform applies: a
    # float output is then converted block by block instead of as a whole float32 copy
    raw: Callable[[], np.ndarray] | None = None
    source_dtype: str = ""
    source_name: str = ""  # the checkpoint's name for it, for messages

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.type]
        return math.prod(self.shape) // block * size


class StreamedTensor:
    """A float tensor converted and written a block of elements at a time. It offers what
    GGUFWriter.write_tensor_data uses of an array (nbytes, tofile), so memory holds a few blocks,
    never the whole tensor. Same-type blocks go from the mapped source to the file untouched;
    others are converted on a small thread pool (numpy releases the GIL) while the file is
    written in order."""

    BLOCK = 1 << 20  # elements
    AHEAD = 4  # blocks converted ahead of the writer

    def __init__(self, t: PlannedTensor, pool=None, finite: bool = False):
        self.t = t
        self.nbytes = t.nbytes
        self.pool = pool
        self.finite = finite  # refuse a NaN or Inf as its block passes

    def tofile(self, f) -> None:
        t = self.t
        flat = t.raw().reshape(-1)
        same = (t.source_dtype, t.type) in (("F32", Q.F32), ("F16", Q.F16), ("BF16", Q.BF16))
        starts = range(0, flat.size, self.BLOCK)
        blocks = (flat[b : b + self.BLOCK] for b in starts)
        if self.finite:
            blocks = (check_finite(t, blk, b, t.source_dtype) for b, blk in zip(starts, blocks))
        if not same:
            convert = functools.partial(convert_block, source=t.source_dtype, target=t.type)
            blocks = _ordered(self.pool, convert, blocks, self.AHEAD)
        for begin, block in zip(starts, blocks):
            f.write(memoryview(np.ascontiguousarray(block)).cast("B"))
            if t.release:
                end = min(begin + self.BLOCK, flat.size)
                t.release(begin * flat.itemsize, end * flat.itemsize)


_scratch = threading.local()


def check_finite(t: PlannedTensor, block: np.ndarray, begin: int, dtype: str = "F32") -> np.ndarray:
    """``block`` (elements ``begin``.. of ``t``) if every value is finite; else the one-line
    error naming the tensor. BF16 blocks are their bits: all-ones exponent is NaN or Inf."""
    if dtype == "BF16" and block.dtype == np.uint16:
        bad = (block & 0x7F80) == 0x7F80
        if not bad.any():
            return block
        values = bf16_bits_to_f32(block[bad][:1]).copy()
    else:
        bad = ~np.isfinite(block)
        if not bad.any():
            return block
        values = block[bad][:1]
    index = begin + int(np.flatnonzero(bad.reshape(-1))[0])
    what = "NaN" if np.isnan(values[0]) else ("+Inf" if values[0] > 0 else "-Inf")
    name = f"{t.source_name} ({t.name})" if t.source_name and t.source_name != t.name else t.name
    raise ConvertError(
        f"tensor {name} holds {what} at element {index:,}; the checkpoint is damaged (its model "
        "would generate nothing): get it again, or pass --allow-nonfinite to convert it anyway"
    )


def bf16_bits_to_f32(block: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) as float32: each becomes the high half of a float32 whose low half
    is zero (little-endian: the odd uint16 of each pair). Reuses a per-thread buffer."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size != 2 * block.size:
        buf = _scratch.buf = np.zeros(2 * block.size, np.uint16)
    buf[1::2] = block
    return buf.view(np.float32)


def convert_block(block: np.ndarray, source: str, target: Q) -> np.ndarray:
    """One block of source values (F32, F16, or BF16 bits) in the target float type."""
    values = bf16_bits_to_f32(block) if source == "BF16" else block
    if target == Q.F32:
        return values.astype(np.float32)
    if target == Q.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(np.asarray(values, dtype=np.float32), Q.BF16)


def _ordered(pool, fn, items, ahead: int):
    """fn over items on the pool, results in order, at most ``ahead`` in flight."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def streamable(t: PlannedTensor) -> bool:
    return t.raw is not None and t.type in (Q.F32, Q.F16, Q.BF16)


def encode(t: PlannedTensor, data: np.ndarray) -> np.ndarray:
    """float32 data as the bytes of its GGUF type (gguf's own quantizers)."""
    if data.shape != t.shape:
        raise ConvertError(
            f"tensor {t.name} has shape {list(data.shape)}, expected {list(t.shape)}"
        )
    if t.type == Q.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if t.type == Q.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), t.type)


def check_target(path: Path, estimate: int) -> None:
    """Refuse early what would fail late: a missing or read-only folder, too little space."""
    parent = path.parent
    if not parent.is_dir():
        raise ConvertError(f"cannot write {path}: folder {parent} does not exist")
    if path.is_dir():
        raise ConvertError(f"{path} is a directory; pass a file name such as {path / 'model.gguf'}")
    probe = parent / f".{path.name}.probe"
    try:
        probe.touch()
        probe.unlink()
    except OSError:
        raise ConvertError(
            f"cannot write to {parent} (permission denied); choose another -o"
        ) from None
    free = shutil.disk_usage(parent).free
    if free < estimate:
        raise ConvertError(
            f"not enough disk space for {path.name}: it needs about {estimate / 1e6:.0f} MB and "
            f"{parent} has {free / 1e6:.0f} MB free"
        )


def write_gguf(
    path: Path,
    arch: str,
    metadata: Iterable[tuple[str, Any]],
    write_extra: Callable[[gguf.GGUFWriter], None],
    tensors: list[PlannedTensor],
    progress: Progress | None = None,
    stage: str = "converting",
    finite: bool = False,
) -> None:
    """Write the GGUF at ``path`` (the caller makes it atomic). ``finite``: refuse a tensor
    that holds NaN or Inf, checked block by block as it streams (`check_finite`)."""
    w = gguf.GGUFWriter(path, arch)
    pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)))
    try:
        for key, value in metadata:
            vtype = _value_type(value)
            sub = _value_type(value[0]) if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(f"{arch}.{key}", value, vtype, sub_type=sub)
        write_extra(w)
        for t in tensors:
            if t.type in (Q.F32, Q.F16):
                dtype = np.float32 if t.type == Q.F32 else np.float16
                w.add_tensor_info(t.name, t.shape, np.dtype(dtype), t.nbytes)
            elif t.type == Q.BF16:
                w.add_tensor_info(t.name, t.shape, np.dtype(np.uint16), t.nbytes, raw_dtype=t.type)
            else:
                byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.type)
                w.add_tensor_info(
                    t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.type
                )
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = sum(t.source_bytes for t in tensors)
        done = 0
        for i, t in enumerate(tensors):
            if streamable(t):
                data = StreamedTensor(t, pool, finite)
            else:
                loaded = t.load()
                data = encode(t, check_finite(t, loaded, 0) if finite else loaded)
            w.write_tensor_data(data)
            if t.release:
                t.release()
            done += t.source_bytes
            if progress:
                progress(stage, i + 1, len(tensors), done, total)
    except OSError as e:
        check_disk_full(e, path.name)
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        w.close()


def _value_type(value: Any) -> gguf.GGUFValueType:
    if isinstance(value, bool):
        return gguf.GGUFValueType.BOOL
    if isinstance(value, int):
        return gguf.GGUFValueType.UINT32 if value >= 0 else gguf.GGUFValueType.INT32
    if isinstance(value, float):
        return gguf.GGUFValueType.FLOAT32
    if isinstance(value, str):
        return gguf.GGUFValueType.STRING
    if isinstance(value, list | tuple):
        return gguf.GGUFValueType.ARRAY
    raise TypeError(f"no GGUF type for {value!r}")
