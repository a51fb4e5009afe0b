"""Edit a GGUF's header without rewriting its tensors, with llama.cpp's own GGUF code.

- `stamp`: copy a GGUF with metadata keys added or replaced (how a file says how it was made);
  the tensor data section is copied byte for byte.
- `assemble`: a GGUF whose tensors come from several files of the same model (each tensor
  with the type and bytes it has in the file named for it), e.g. a probe in which one group of
  tensors is quantized differently from the rest.
- `planned_size`: the exact size of a file with a given header and per-tensor types.

The header is parsed, changed and serialized by llama.cpp's own GGUF code (edge_llm.llama.gguf,
like edge_llm.gguf_info), so offsets, padding and alignment are llama.cpp's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from convert.errors import ConvertError
from edge_llm.llama import gguf
from edge_llm.llama.binding import LoadError


class Header(gguf.Header):
    """A GGUF's metadata and tensor table, held by llama.cpp's gguf context (no tensor data);
    ConvertError for a file llama.cpp cannot parse or a tensor it lacks."""

    def __init__(self, path: str | Path):
        try:
            super().__init__(path)
        except LoadError:
            raise ConvertError(f"{Path(path)} is not a readable GGUF; convert it again") from None

    def tensor_id(self, name: str) -> int:
        try:
            return super().tensor_id(name)
        except KeyError:
            raise ConvertError(f"{self.path} has no tensor {name}") from None

    def data_size(self) -> int:
        """Bytes of the data section: every tensor, each padded to the alignment."""
        align = self.alignment()
        return sum(_pad(self.tensor_size(i), align) for i in range(self.n_tensors()))


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def tensor_nbytes(ggml_type: int, n_elements: int) -> int:
    from convert.quant import ggml_types

    return ggml_types.nbytes(ggml_type, n_elements)


def stamp(src: str | Path, dst: str | Path, values: dict[str, Any]) -> None:
    """Write ``dst``: ``src`` with the metadata ``values`` set (tensor data copied verbatim)."""
    src, dst = Path(src), Path(dst)
    with Header(src) as h:
        start = h.data_offset()
        for k, v in values.items():
            h.set(k, v)
        meta = h.meta_bytes()
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.write(meta)
        fin.seek(start)
        shutil.copyfileobj(fin, fout, 16 << 20)


def assemble(
    dst: str | Path,
    base: str | Path,
    sources: dict[str, Path],
    values: dict[str, Any] | None = None,
) -> None:
    """Write ``dst`` with ``base``'s metadata and tensor order, each tensor named in ``sources``
    taken (type and bytes) from that file, the others from ``base``."""
    base = Path(base)
    opened: dict[Path, Header] = {}

    def header(path: Path) -> Header:  # each file's header parsed once (a vocabulary can be MBs)
        if path not in opened:
            opened[path] = Header(path)
        return opened[path]

    try:
        with Header(base) as h:
            names = h.tensor_names()
            for name, path in sources.items():
                h.set_tensor_type(name, header(Path(path)).tensor_type(name))
            for k, v in (values or {}).items():
                h.set(k, v)
            meta, align = h.meta_bytes(), h.alignment()
            plan = []
            for name in names:
                src = header(Path(sources[name]) if name in sources else base)
                off, size = src.tensor_span(name)
                plan.append((src.path, off, size))
        files = {}
        try:
            with Path(dst).open("wb") as out:
                out.write(meta)
                for path, off, size in plan:
                    f = files.get(path) or files.setdefault(path, path.open("rb"))
                    f.seek(off)
                    _copy(f, out, size)
                    out.write(b"\0" * (_pad(size, align) - size))
        finally:
            for f in files.values():
                f.close()
    finally:
        for hd in opened.values():
            hd.close()


def _copy(fin, fout, n: int) -> None:
    while n > 0:
        chunk = fin.read(min(n, 16 << 20))
        if not chunk:
            raise ConvertError(f"{fin.name} is truncated; convert it again")
        fout.write(chunk)
        n -= len(chunk)


def planned_size(base: str | Path, types: dict[str, int], values: dict[str, Any]) -> int:
    """The exact size of ``base`` requantized to ``types`` (ggml type per tensor name) with the
    metadata ``values`` set: header plus every tensor padded to the alignment."""
    with Header(base) as h:
        for name, t in types.items():
            h.set_tensor_type(name, t)
        for k, v in values.items():
            h.set(k, v)
        return len(h.meta_bytes()) + h.data_size()
