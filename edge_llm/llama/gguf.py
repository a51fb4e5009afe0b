"""GGUF headers through llama.cpp's own GGUF code: read, checked and edited.

Why here: edge_llm/llama/ is the only code that talks to llama.cpp. llama.cpp's parser (``gguf_*``
in libggml-base, bound in `binding`'s signature table) reads a header in milliseconds, where the
``gguf`` package's reader parses every token string in Python (seconds for a 262k vocabulary),
and serializes an edited header with llama.cpp's own offsets, padding and alignment.

- `Header`: one file's gguf context, its metadata and tensor table (no tensor data), to read or
  to edit (convert/gguf_edit.py writes an edited one in front of the tensor data);
- `read`: a header read whole and checked (`Contents`; edge_llm.gguf_info adds the facts derived
  from it); `explain_load_failure`: one line on why llama.cpp refused a file, which needs it;
- `type_name`: ggml's name of a type (its sizes are `quant`'s).

Writing whole GGUFs is the ``gguf`` package's job (convert/).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge_llm.errors import InvalidModelError

GGUF_MAGIC = b"GGUF"

# enum gguf_type
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR = {
    _U8: ctypes.c_uint8,
    _I8: ctypes.c_int8,
    _U16: ctypes.c_uint16,
    _I16: ctypes.c_int16,
    _U32: ctypes.c_uint32,
    _I32: ctypes.c_int32,
    _F32: ctypes.c_float,
    _BOOL: ctypes.c_bool,
    _U64: ctypes.c_uint64,
    _I64: ctypes.c_int64,
    _F64: ctypes.c_double,
}
MAX_ARRAY_READ = 4096  # longer arrays (vocabularies) are reported by length only


def _binding():
    # imported on first use: importing this module (and edge_llm.gguf_info, and so `edge-llm
    # --help`) does not load llama.cpp
    from edge_llm.llama import binding

    return binding


def type_name(ggml_type: int) -> str:
    return _binding().lib().ggml_type_name(ggml_type).decode().upper()


# --- one file's header --------------------------------------------------------------------------


class Header:
    """A GGUF's metadata and tensor table, held by llama.cpp's gguf context (no tensor data).

    LoadError if llama.cpp cannot parse it. ``shapes``: also have llama.cpp build its ggml
    context of the tensors (as a loader does), for `shapes()`. Tensors are named by their names
    in the edits; `tensor_id` raises KeyError for a name the file lacks (a subclass raises its own
    error).
    """

    def __init__(self, path: str | Path, *, shapes: bool = False):
        b = _binding()
        self.path = Path(path)
        self._lib = b.lib()
        self._gctx = ctypes.c_void_p(None)  # a ggml context holding the tensors (no data)
        params = b.GgufInitParams(True, ctypes.addressof(self._gctx) if shapes else None)
        self._ctx = self._lib.gguf_init_from_file(str(self.path).encode(), params)
        if not self._ctx:
            raise b.LoadError(f"llama.cpp could not parse the GGUF header of {self.path}", [])

    def close(self) -> None:
        if self._ctx:
            self._lib.gguf_free(self._ctx)
            self._ctx = None
        if self._gctx.value:
            self._lib.ggml_free(self._gctx.value)
            self._gctx.value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the file ------------------------------------------------------------------------------
    def version(self) -> int:
        return self._lib.gguf_get_version(self._ctx)

    def alignment(self) -> int:
        return int(self._lib.gguf_get_alignment(self._ctx))

    def data_offset(self) -> int:
        """Where the data section starts in the file (as parsed, before any edit)."""
        return self._lib.gguf_get_data_offset(self._ctx)

    # --- metadata ------------------------------------------------------------------------------
    def entries(self, max_array: int = MAX_ARRAY_READ):
        """Each metadata key as (key, value, length), in the file's order: the key as bytes; the
        value as bytes (a string), a number or bool, a list of either (an array of at most
        ``max_array`` elements), or None (a longer array, an array of arrays, an unknown type);
        ``length``: an array's element count (None for a single value)."""
        lib, ctx = self._lib, self._ctx
        for i in range(lib.gguf_get_n_kv(ctx)):
            key = lib.gguf_get_key(ctx, i)
            kind = lib.gguf_get_kv_type(ctx, i)
            if kind == _STR:
                yield key, lib.gguf_get_val_str(ctx, i), None
            elif kind == _ARR:
                n = lib.gguf_get_arr_n(ctx, i)
                elem, value = lib.gguf_get_arr_type(ctx, i), None
                if n <= max_array:
                    if elem == _STR:
                        value = [lib.gguf_get_arr_str(ctx, i, j) for j in range(n)]
                    elif elem in _SCALAR:
                        ptr = lib.gguf_get_arr_data(ctx, i)
                        value = list((_SCALAR[elem] * n).from_address(ptr))
                yield key, value, n
            elif kind in _SCALAR:
                yield key, _SCALAR[kind].from_address(lib.gguf_get_val_data(ctx, i)).value, None
            else:
                yield key, None, None

    def set(self, key: str, value: Any) -> None:
        """Add or replace a key: str, bool, int (u32, or u64 when large; i32 if negative),
        float (f32), or a list of str."""
        k, lib, ctx = key.encode(), self._lib, self._ctx
        if isinstance(value, bool):
            lib.gguf_set_val_bool(ctx, k, value)
        elif isinstance(value, int):
            if value < 0:
                lib.gguf_set_val_i32(ctx, k, value)
            elif value < 2**32:
                lib.gguf_set_val_u32(ctx, k, value)
            else:
                lib.gguf_set_val_u64(ctx, k, value)
        elif isinstance(value, float):
            lib.gguf_set_val_f32(ctx, k, value)
        elif isinstance(value, str):
            lib.gguf_set_val_str(ctx, k, value.encode())
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            arr = (ctypes.c_char_p * max(len(value), 1))(*[v.encode() for v in value])
            lib.gguf_set_arr_str(ctx, k, arr, len(value))
        else:
            raise TypeError(f"no GGUF metadata type for {key}={value!r}")

    def meta_bytes(self) -> bytes:
        """The header as llama.cpp serializes it (edits included), up to the data section."""
        n = self._lib.gguf_get_meta_size(self._ctx)
        buf = ctypes.create_string_buffer(n)
        self._lib.gguf_get_meta_data(self._ctx, buf)
        return buf.raw[:n]

    # --- tensors -------------------------------------------------------------------------------
    def n_tensors(self) -> int:
        return self._lib.gguf_get_n_tensors(self._ctx)

    def tensor_name(self, i: int) -> bytes:
        return self._lib.gguf_get_tensor_name(self._ctx, i)

    def tensor_names(self) -> list[str]:
        return [self.tensor_name(i).decode() for i in range(self.n_tensors())]

    def tensor_id(self, name: str) -> int:
        i = self._lib.gguf_find_tensor(self._ctx, name.encode())
        if i < 0:
            raise KeyError(name)
        return i

    def tensor_type(self, tensor: str | int) -> int:
        """The ggml type of a tensor (by name or index)."""
        i = self.tensor_id(tensor) if isinstance(tensor, str) else tensor
        return self._lib.gguf_get_tensor_type(self._ctx, i)

    def tensor_offset(self, i: int) -> int:
        """Where tensor ``i``'s data starts, from the start of the data section."""
        return self._lib.gguf_get_tensor_offset(self._ctx, i)

    def tensor_size(self, i: int) -> int:
        return self._lib.gguf_get_tensor_size(self._ctx, i)

    def tensor_span(self, name: str) -> tuple[int, int]:
        """(absolute file offset, size in bytes) of a tensor's data."""
        i = self.tensor_id(name)
        return self.data_offset() + self.tensor_offset(i), self.tensor_size(i)

    def set_tensor_type(self, name: str, ggml_type: int) -> None:
        self.tensor_id(name)
        self._lib.gguf_set_tensor_type(self._ctx, name.encode(), int(ggml_type))

    def shapes(self) -> list[tuple[int, ...]]:
        """Every tensor's shape (ggml order: ne[0], the row length, first; trailing 1s dropped, as
        ggml_n_dims counts them), in the file's tensor order; needs ``shapes=True``."""
        lib, out = self._lib, []
        t = lib.ggml_get_first_tensor(self._gctx.value) if self._gctx.value else None
        while t:
            ne = lib.gguf_get_tensor_ne(self._ctx, len(out))
            out.append(tuple(ne[: max(1, lib.ggml_n_dims(t))]))
            t = lib.ggml_get_next_tensor(self._gctx.value, t)
        return out


# --- a header read whole and checked ----------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    n_elements: int
    n_bytes: int
    offset: int  # from the start of the data section
    shape: tuple[int, ...] = ()  # ggml order: ne[0] (the row length) first


@dataclass
class Contents:
    """What a GGUF's header holds, read by llama.cpp and checked (`read`)."""

    path: Path
    file_size: int
    version: int
    data_offset: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]  # every array-valued key -> its length
    tensors: list[TensorInfo] = field(default_factory=list)
    # keys whose string value (or an element of a string array read) is not valid UTF-8; the
    # value itself is kept with U+FFFD in place of the bad bytes
    bad_utf8: list[str] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def data_end(self) -> int:
        """Where the last tensor's data ends: the file must be at least this long."""
        return self.data_offset + max((t.offset + t.n_bytes for t in self.tensors), default=0)


K = TypeVar("K", bound=Contents)


def check_gguf(path: str | Path) -> None:
    """Raise InvalidModelError unless ``path`` starts like a GGUF file."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise InvalidModelError(
            f"{path} is not a GGUF file (it starts with {head!r}, not b'GGUF'); pass a .gguf "
            "model, or convert a Hugging Face checkpoint to GGUF first"
        )


def read(path: str | Path, kind: type[K] = Contents) -> K:
    """Parse a GGUF's header and tensor table into ``kind`` (`Contents` or a subclass);
    InvalidModelError if it is broken or truncated."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"{path} is not a file")
    check_gguf(path)
    try:
        header = Header(path, shapes=True)
    except _binding().LoadError:
        raise InvalidModelError(
            f"{path} has a GGUF magic but its header does not parse (truncated or corrupt); "
            "download or convert it again"
        ) from None
    with header:
        info = _collect(header, path, kind)
    if info.file_size < info.data_end:
        raise InvalidModelError(
            f"{path} is truncated: its tensors need {info.data_end} bytes but the file has "
            f"{info.file_size}; download or convert it again"
        )
    return info


def _utf8(raw: bytes, what: str, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModelError(
            f"{path} has a {what} that is not valid UTF-8 ({raw[:40]!r}); the file is corrupt or "
            "crafted: download or convert it again"
        ) from None


def _collect(h: Header, path: Path, kind: type[K]) -> K:
    from edge_llm.llama import quant

    shapes = h.shapes()
    metadata: dict[str, Any] = {}
    array_lengths: dict[str, int] = {}
    bad: list[str] = []

    def text(raw: bytes, key: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if key not in bad:
                bad.append(key)
            return raw.decode("utf-8", errors="replace")

    for raw_key, value, length in h.entries(MAX_ARRAY_READ):
        key = _utf8(raw_key, "metadata key", path)
        if length is not None:
            array_lengths[key] = length
        if isinstance(value, bytes):
            value = text(value, key)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [text(v, key) for v in value]
        if value is not None:
            metadata[key] = value
    tensors = []
    for i in range(h.n_tensors()):
        t = h.tensor_type(i)
        size = h.tensor_size(i)
        tensors.append(
            TensorInfo(
                name=_utf8(h.tensor_name(i), "tensor name", path),
                type=type_name(t),
                n_elements=size // quant.type_size(t) * quant.block_size(t),
                n_bytes=size,
                offset=h.tensor_offset(i),
                shape=shapes[i] if i < len(shapes) else (),
            )
        )
    return kind(
        path=path,
        file_size=path.stat().st_size,
        version=h.version(),
        data_offset=h.data_offset(),
        metadata=metadata,
        array_lengths=array_lengths,
        tensors=tensors,
        bad_utf8=bad,
    )


def explain_load_failure(path: Path, llama_log: list[str]) -> str:
    """One line on why llama.cpp refused ``path``, from the file itself and llama.cpp's log."""
    try:
        info = read(path)
    except InvalidModelError as e:
        return str(e)
    reason = next((line for line in reversed(llama_log) if "error" in line.lower()), None)
    reason = reason or (llama_log[-1] if llama_log else "no reason given")
    arch = info.architecture
    return (
        f"llama.cpp could not load {path} (architecture '{arch}'): {reason.strip()}; "
        "check that this llama-cpp-python supports the architecture, or convert the model again"
    )
