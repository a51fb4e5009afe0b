"""A Hugging Face checkpoint folder: config, safetensors shards (memory-mapped), validation.

The safetensors header is read and checked here (not trusted): every tensor's dtype must be one we
convert, its byte range must lie inside the file and match its shape. Tensors are memory-mapped,
so reading one costs that tensor, never the model. Pickle checkpoints are refused: loading one
runs code.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import ConvertError

# safetensors dtype -> (numpy storage dtype, bytes per element)
DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "consolidated*.pth")
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are: file, offset from the start of the file, dtype, shape."""

    name: str
    file: Path
    dtype: str  # "F32" | "F16" | "BF16"
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) to float32: they are the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path: Path) -> dict[str, TensorRef]:
    """Parse and validate one .safetensors file's header."""
    if not path.is_file():
        raise ConvertError(
            f"{path} is not a file; the checkpoint's weights must be safetensors files"
        )
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConvertError(f"{path.name} is not a safetensors file (shorter than its header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise ConvertError(
                f"{path.name}: safetensors header length {n} runs past the end of the file "
                f"({size} bytes); the file is truncated or not safetensors"
            )
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ConvertError(f"{path.name}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path.name}: safetensors header is not a JSON object")
    base = 8 + n
    refs = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
            begin, end = offsets
        except (KeyError, TypeError, ValueError):
            raise ConvertError(f"{path.name}: tensor {name} has a malformed header entry") from None
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ConvertError(
                f"{path.name}: tensor {name} has dtype {dtype if isinstance(dtype, str) else repr(dtype)}; edge-llm converts F32, F16 and "
                "BF16 checkpoints (save the model in one of those)"
            )
        if not isinstance(shape, list) or not all(_whole(d) and d >= 0 for d in shape):
            raise ConvertError(
                f"{path.name}: tensor {name} has shape {shape!r}, not a list of sizes; the header "
                "is corrupt"
            )
        if len(shape) > 4:
            raise ConvertError(
                f"{path.name}: tensor {name} has {len(shape)} dimensions (at most 4)"
            )
        if not (_whole(begin) and _whole(end)):
            raise ConvertError(
                f"{path.name}: tensor {name} has data offsets {offsets!r}, not whole numbers; "
                "the header is corrupt"
            )
        shape = tuple(shape)
        if not (0 <= begin <= end) or base + end > size:
            raise ConvertError(
                f"{path.name}: tensor {name} claims bytes {begin}..{end} but the data section "
                f"holds {size - base}; the file is truncated or its header is wrong"
            )
        expect = math.prod(shape) * DTYPES[dtype][1]
        if end - begin != expect:
            raise ConvertError(
                f"{path.name}: tensor {name} is {dtype} {list(shape)} ({expect} bytes) but its "
                f"header gives it {end - begin} bytes"
            )
        refs[name] = TensorRef(name, path, dtype, shape, base + begin, end - begin)
    return refs


def _weight_map(index: Path) -> dict[str, str]:
    """An index file's tensor -> shard map, checked: names plain file names in the folder."""
    if not index.is_file():
        raise ConvertError(f"{index} is not a file; the index is damaged")
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConvertError(f"{index.name} is not valid JSON ({e}); re-download it") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ConvertError(f"{index.name} has no weight_map object; the index is damaged")
    for name, file in weight_map.items():
        if not isinstance(file, str) or not file.endswith(".safetensors"):
            raise ConvertError(
                f"{index.name} maps {name} to {file!r}, not a .safetensors file; the index is damaged"
            )
        if "/" in file or "\\" in file or file.startswith("."):
            raise ConvertError(
                f"{index.name} maps {name} to {file!r}, outside the checkpoint folder; refusing it"
            )
    return weight_map


class Checkpoint:
    """A Hugging Face model folder, validated up front; tensors are read lazily."""

    def __init__(self, src: str | Path):
        self.dir = Path(src)
        if not self.dir.is_dir():
            raise ConvertError(f"{self.dir} is not a directory; pass a Hugging Face model folder")
        self.config = self._config()
        self.tensors = self._tensors()
        self._maps: dict[Path, mmap.mmap] = {}

    def _config(self) -> dict:
        path = self.dir / "config.json"
        if not path.is_file():
            raise ConvertError(
                f"{self.dir} has no config.json; pass the folder of a Hugging Face model "
                "(config.json, *.safetensors, tokenizer files)"
            )
        try:
            config = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ConvertError(f"{path} is not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise ConvertError(f"{path} is not a JSON object")
        return config

    def _files(self) -> list[Path]:
        index = self.dir / "model.safetensors.index.json"
        if index.exists():
            weight_map = _weight_map(index)
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (self.dir / f).is_file()]
            if missing:
                raise ConvertError(
                    f"shard {missing[0]} is named in {index.name} but absent from {self.dir}; "
                    "download every shard"
                )
            self._index = weight_map
            return [self.dir / f for f in files]
        files = sorted(self.dir.glob("*.safetensors"))
        folders = [f for f in files if not f.is_file()]
        if folders:
            raise ConvertError(
                f"{folders[0]} is not a file; the checkpoint's weights must be safetensors files"
            )
        if files:
            return files
        pickles = [p.name for pat in PICKLE_PATTERNS for p in self.dir.glob(pat)]
        if pickles:
            raise ConvertError(
                f"{pickles[0]} is a pickle checkpoint, which edge-llm will not load (loading one "
                "runs code); save the model as safetensors first (save_pretrained(..., "
                "safe_serialization=True))"
            )
        raise ConvertError(f"{self.dir} holds no *.safetensors weights")

    def _tensors(self) -> dict[str, TensorRef]:
        out: dict[str, TensorRef] = {}
        self._index: dict[str, str] | None = None
        for f in self._files():
            refs = read_header(f)
            dup = next((n for n in refs if n in out), None)
            if dup is not None:
                raise ConvertError(
                    f"tensor {dup} is in both {out[dup].file.name} and {f.name}; the shards overlap"
                )
            out.update(refs)
        if self._index is not None:
            for name, file in self._index.items():
                if name not in out or out[name].file.name != file:
                    raise ConvertError(
                        f"model.safetensors.index.json puts {name} in {file}, but that shard does "
                        "not hold it; the index does not match the shards"
                    )
        return out

    @property
    def dtype(self) -> str:
        """The dtype most of the weights are stored in (by bytes): F32, F16 or BF16."""
        total: dict[str, int] = {}
        for t in self.tensors.values():
            total[t.dtype] = total.get(t.dtype, 0) + t.nbytes
        return max(total, key=total.get) if total else "F32"

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def _map(self, file: Path) -> mmap.mmap:
        if file not in self._maps:
            with open(file, "rb") as f:
                self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[file]

    def raw(self, name: str) -> np.ndarray:
        """The tensor as stored (a read-only memory-mapped view; BF16 as uint16)."""
        ref = self.tensors[name]
        storage, size = DTYPES[ref.dtype]
        flat = np.frombuffer(self._map(ref.file), storage, ref.nbytes // size, ref.offset)
        return flat.reshape(ref.shape)

    def release(self, name: str, begin: int = 0, end: int | None = None) -> None:
        """Drop the tensor's pages (bytes ``begin``..``end`` of it) from this process once they
        are written: mapped pages that were read count in the resident set, and a model's worth
        of them would make memory grow with the model instead of one block of one tensor."""
        ref = self.tensors[name]
        m = self._maps.get(ref.file)
        if m is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = ref.offset + begin
        last = ref.offset + (ref.nbytes if end is None else end)
        first -= first % mmap.PAGESIZE
        if last > first:
            m.madvise(mmap.MADV_DONTNEED, first, last - first)

    def load(self, name: str) -> np.ndarray:
        """The tensor as float32 (a copy for F16/BF16; a read-only view for F32)."""
        ref = self.tensors[name]
        raw = self.raw(name)
        if ref.dtype == "BF16":
            return bf16_to_f32(raw)
        return raw.astype(np.float32, copy=False)

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view of it is still alive somewhere; the GC will close it
                pass
        self._maps.clear()
