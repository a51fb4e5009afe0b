"""What a GGUF says about itself: metadata, tensors, parameter count, bits per weight.

It reads with llama.cpp's own GGUF parser (``gguf_*`` in libggml-base, through ctypes): it reads
the header only, in milliseconds, where the ``gguf`` package's reader parses every token string
in Python (seconds for a 262k vocabulary). Writing GGUFs is the ``gguf`` package's job (convert/).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
_MAX_ARRAY_READ = 4096  # longer arrays (vocabularies) are reported by length only


# struct ggml_tensor starts {enum ggml_type type; ggml_backend_buffer * buffer; int64_t ne[4]; ...}
_PTR = ctypes.sizeof(ctypes.c_void_p)
_NE_OFFSET = (4 + _PTR - 1) // _PTR * _PTR + _PTR


def _lib() -> ctypes.CDLL:
    # imported here: reading a header needs llama.cpp, importing this module does not
    from edge_llm.llama import binding

    return binding.lib()


def _InitParams(no_alloc: bool, ctx):  # noqa: N802 - the struct's constructor
    from edge_llm.llama import binding

    return binding.GgufInitParams(no_alloc, ctx)


def type_name(ggml_type: int) -> str:
    return _lib().ggml_type_name(ggml_type).decode().upper()


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str
    n_elements: int
    n_bytes: int
    offset: int  # from the start of the data section
    shape: tuple[int, ...] = ()  # ggml order: ne[0] (the row length) first


@dataclass
class GGUFInfo:
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

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def name(self) -> str:
        """The file's own name for the model (``display_name``); the short name it is registered
        under, where it has one, comes from ``registry.model_name`` (this reader sits below the
        registry and does not consult it)."""
        return display_name(self.metadata, self.path)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Bits of tensor data per parameter, as llama.cpp reports it."""
        return 8 * self.tensor_bytes / self.n_params if self.n_params else 0.0

    @property
    def context_length(self) -> int | None:
        v = self.arch_value("context_length")
        return int(v) if v is not None else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def vocab_size(self) -> int | None:
        return self.array_lengths.get("tokenizer.ggml.tokens")

    @property
    def data_end(self) -> int:
        """Where the last tensor's data ends: the file must be at least this long."""
        return self.data_offset + max((t.offset + t.n_bytes for t in self.tensors), default=0)

    def type_histogram(self) -> dict[str, dict[str, int]]:
        """Per tensor type: how many tensors, parameters and bytes."""
        out: dict[str, dict[str, int]] = {}
        for t in self.tensors:
            row = out.setdefault(t.type, {"tensors": 0, "params": 0, "bytes": 0})
            row["tensors"] += 1
            row["params"] += t.n_elements
            row["bytes"] += t.n_bytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))

    def summary(self) -> dict[str, Any]:
        """The facts `edge-llm info` shows, JSON-ready."""
        return {
            "path": str(self.path),
            "name": self.name,
            "architecture": self.architecture,
            "file_size": self.file_size,
            "n_params": self.n_params,
            "n_tensors": len(self.tensors),
            "bits_per_weight": round(self.bits_per_weight, 4),
            "file_type": _FILE_TYPES.get(self.metadata.get("general.file_type"), None),
            "context_length": self.context_length,
            "embedding_length": self.arch_value("embedding_length"),
            "block_count": self.arch_value("block_count"),
            "head_count": self.arch_value("attention.head_count"),
            "head_count_kv": self.arch_value("attention.head_count_kv"),
            "vocab_size": self.vocab_size,
            "chat_template": self.chat_template is not None,
            "gguf_version": self.version,
            "types": self.type_histogram(),
        }


# llama_ftype values that name a whole file's quantization (general.file_type).
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}


def display_name(metadata: dict[str, Any], path: Path) -> str:
    """A model's name from its GGUF: general.basename with general.size_label and
    general.finetune (``SmolLM2-135M-Instruct``), since converters often fill general.name from a
    training-run folder ("Smollm2 135M 8k Lc100K Mix1 Ep2"); else general.name; else the file."""
    base = str(metadata.get("general.basename") or "").strip()
    if base:
        parts = [base]
        for key in ("general.size_label", "general.finetune"):
            v = str(metadata.get(key) or "").strip()
            if v and v.lower() not in base.lower():
                parts.append(v)
        return "-".join(parts)
    return str(metadata.get("general.name") or path.stem)


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


def read(path: str | Path) -> GGUFInfo:
    """Parse a GGUF's header and tensor table; InvalidModelError if it is broken or truncated."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"{path} is not a file")
    check_gguf(path)
    lib = _lib()
    gctx = ctypes.c_void_p(None)  # a ggml context holding the tensors' shapes (no data)
    ctx = lib.gguf_init_from_file(str(path).encode(), _InitParams(True, ctypes.addressof(gctx)))
    if not ctx:
        raise InvalidModelError(
            f"{path} has a GGUF magic but its header does not parse (truncated or corrupt); "
            "download or convert it again"
        )
    try:
        info = _collect(lib, ctx, path, _shapes(lib, gctx.value))
    finally:
        lib.gguf_free(ctx)
        if gctx.value:
            lib.ggml_free(gctx.value)
    if info.file_size < info.data_end:
        raise InvalidModelError(
            f"{path} is truncated: its tensors need {info.data_end} bytes but the file has "
            f"{info.file_size}; download or convert it again"
        )
    return info


def _shapes(lib: ctypes.CDLL, gctx: int | None) -> list[tuple[int, ...]]:
    """Every tensor's shape (ggml order, trailing 1s dropped), in the file's tensor order."""
    out = []
    t = lib.ggml_get_first_tensor(gctx) if gctx else None
    while t:
        ne = (ctypes.c_int64 * 4).from_address(t + _NE_OFFSET)
        out.append(tuple(ne[: max(1, lib.ggml_n_dims(t))]))
        t = lib.ggml_get_next_tensor(gctx, t)
    return out


def _utf8(raw: bytes, what: str, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidModelError(
            f"{path} has a {what} that is not valid UTF-8 ({raw[:40]!r}); the file is corrupt or "
            "crafted: download or convert it again"
        ) from None


def _collect(lib: ctypes.CDLL, ctx: int, path: Path, shapes: list[tuple[int, ...]]) -> GGUFInfo:
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

    for i in range(lib.gguf_get_n_kv(ctx)):
        key = _utf8(lib.gguf_get_key(ctx, i), "metadata key", path)
        kind = lib.gguf_get_kv_type(ctx, i)
        if kind == _STR:
            metadata[key] = text(lib.gguf_get_val_str(ctx, i), key)
        elif kind == _ARR:
            n = lib.gguf_get_arr_n(ctx, i)
            array_lengths[key] = n
            elem = lib.gguf_get_arr_type(ctx, i)
            if n <= _MAX_ARRAY_READ:
                if elem == _STR:
                    metadata[key] = [text(lib.gguf_get_arr_str(ctx, i, j), key) for j in range(n)]
                elif elem in _SCALAR:
                    ptr = lib.gguf_get_arr_data(ctx, i)
                    metadata[key] = list((_SCALAR[elem] * n).from_address(ptr))
        elif kind in _SCALAR:
            metadata[key] = _SCALAR[kind].from_address(lib.gguf_get_val_data(ctx, i)).value
    tensors = []
    for i in range(lib.gguf_get_n_tensors(ctx)):
        t = lib.gguf_get_tensor_type(ctx, i)
        size = lib.gguf_get_tensor_size(ctx, i)
        tensors.append(
            TensorInfo(
                name=_utf8(lib.gguf_get_tensor_name(ctx, i), "tensor name", path),
                type=type_name(t),
                n_elements=size // lib.ggml_type_size(t) * lib.ggml_blck_size(t),
                n_bytes=size,
                offset=lib.gguf_get_tensor_offset(ctx, i),
                shape=shapes[i] if i < len(shapes) else (),
            )
        )
    return GGUFInfo(
        path=path,
        file_size=path.stat().st_size,
        version=lib.gguf_get_version(ctx),
        data_offset=lib.gguf_get_data_offset(ctx),
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
