"""llama.cpp's C API: llama-cpp-python's bindings, plus one ctypes binding for what they lack.

llama-cpp-python wraps libllama (`C` here). libggml-base's ``gguf_*`` (reading and editing GGUF
headers) and ``ggml_*`` (type traits, the quantizer, tensor accessors for an evaluation callback)
are not wrapped; `lib()` binds them once, with one signature table, through libllama's own handle
so that the symbols resolve in the very libggml-base llama.cpp runs on (a wheel ships
libggml-base.so and .so.0 as two files: two copies would keep two loggers and two type tables).

Importing this module only loads the shared library. `init()` (called by every function here
that needs it, and by the loaders in this package) starts llama.cpp's backends and routes its log:
the recent ERROR/WARN lines are kept to explain a failed load, and everything is printed when
EDGE_LLM_DEBUG is set.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import re
import threading
from pathlib import Path

import llama_cpp.llama_cpp as C  # noqa: N812  (the raw C API)
import numpy as np

__all__ = ["C", "init", "lib", "take_recent_errors", "tokenize", "LoadError"]

# --- logging and start-up -------------------------------------------------------------------

_LOG_LOCK = threading.Lock()
_RECENT_ERRORS: list[str] = []
_DEBUG = bool(os.environ.get("EDGE_LLM_DEBUG"))
_READY = False


@C.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    msg = text.decode("utf-8", errors="replace") if text else ""
    if _DEBUG:
        os.write(2, msg.encode())
    if level in (2, 3) and msg.strip():  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
        with _LOG_LOCK:
            _RECENT_ERRORS.append(msg.strip())
            del _RECENT_ERRORS[:-20]


def init() -> None:
    """Start llama.cpp's backends and route its log (once; cheap afterwards)."""
    global _READY
    if _READY:
        return
    with _LOG_LOCK:
        if _READY:
            return
        C.llama_log_set(_log_callback, ctypes.c_void_p(0))
        C.llama_backend_init()
        _READY = True


def take_recent_errors() -> list[str]:
    with _LOG_LOCK:
        out = list(_RECENT_ERRORS)
        _RECENT_ERRORS.clear()
    return out


def version() -> str:
    """The installed llama-cpp-python's version."""
    return importlib.metadata.version("llama_cpp_python")


def system_info() -> str:
    init()
    return C.llama_print_system_info().decode()


def supports_gpu_offload() -> bool:
    init()
    return bool(C.llama_supports_gpu_offload())


def registered_backends() -> list[str]:
    """The ggml backends this llama.cpp build registered (CPU; CUDA, Metal, Vulkan, ... when it
    was built with them), by ggml's own names."""
    init()
    handle = ctypes.CDLL(C._lib._name)  # ggml's symbols, through libllama's handle
    try:
        count, get = handle.ggml_backend_reg_count, handle.ggml_backend_reg_get
        name = handle.ggml_backend_reg_name
    except AttributeError:  # a build that does not export the registry
        return ["CPU", "GPU"] if supports_gpu_offload() else ["CPU"]
    count.restype, get.restype, name.restype = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
    get.argtypes, name.argtypes = [ctypes.c_size_t], [ctypes.c_void_p]
    return [name(get(i)).decode() for i in range(count())]


# KV-cache element types by name (ggml_type values).
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


class LoadError(Exception):
    """llama.cpp refused the file; ``details`` holds what it logged."""

    def __init__(self, message: str, details: list[str]):
        super().__init__(message)
        self.details = details


def load_model(path: str | Path, *, n_gpu_layers: int = 0, vocab_only: bool = False,
               load_mode: int | None = None):  # fmt: skip
    """A ``llama_model *`` for the GGUF at ``path`` (free it with ``C.llama_model_free``);
    LoadError with llama.cpp's log lines if it refuses."""
    init()
    mp = C.llama_model_default_params()
    mp.n_gpu_layers = n_gpu_layers
    mp.vocab_only = vocab_only
    if load_mode is not None:
        mp.load_mode = load_mode
    take_recent_errors()
    model = C.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        raise LoadError("llama.cpp could not load the model", take_recent_errors())
    return model


def tokenize(vocab, text: str, add_special: bool, parse_special: bool) -> list[int]:
    """Token ids of TEXT with a llama.cpp vocabulary (`llama_model_get_vocab`)."""
    data = text.encode("utf-8")
    cap = len(data) + 8
    buf = (C.llama_token * cap)()
    n = C.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    return list(buf[:n])


def token_to_piece(vocab, token: int, special: bool = False) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = C.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = C.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


def quantize_file(src: str | Path, dst: str | Path, ftype: int, nthread: int, *,
                  imatrix: dict[str, np.ndarray] | None = None,
                  tensor_types: dict[str, int] | None = None,
                  pure: bool = False, allow_requantize: bool = False) -> bool:  # fmt: skip
    """llama.cpp's quantizer (`llama_model_quantize`), True on success.

    ``imatrix``: per weight, the mean squared activation of each input column (what
    llama-quantize derives from an imatrix file); ``tensor_types``: a ggml type per tensor name
    (llama.cpp's tensor-type overrides, one exact-name pattern each).
    """
    from edge_llm.interrupts import run_native

    init()
    p = C.llama_model_quantize_default_params()
    p.ftype, p.nthread = ftype, nthread
    p.pure, p.allow_requantize = pure, allow_requantize
    keep = []  # the ctypes arrays must outlive the call
    if imatrix:
        entries = (C.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(sorted(imatrix.items())):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            keep += [arr, name.encode()]
            entries[i].name = keep[-1]
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(imatrix)].name = None  # terminator
        keep.append(entries)
        p.imatrix = ctypes.cast(entries, ctypes.POINTER(C.llama_model_imatrix_data))
    if tensor_types:
        overrides = (C.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (name, ggml_type) in enumerate(tensor_types.items()):
            keep.append(("^" + re.escape(name) + "$").encode())
            overrides[i].pattern = keep[-1]
            overrides[i].type = ggml_type
        overrides[len(tensor_types)].pattern = None  # terminator
        keep.append(overrides)
        p.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(C.llama_model_tensor_override))
    # on a worker thread: llama.cpp's quantizer has no progress callback to stop it, so Ctrl-C and
    # SIGTERM must reach the main thread while it runs (edge_llm.interrupts)
    rc = run_native(C.llama_model_quantize, str(src).encode(), str(dst).encode(), ctypes.byref(p))
    return rc == 0


# --- libggml-base: what llama-cpp-python does not wrap -----------------------------------------


class GgufInitParams(ctypes.Structure):
    """struct gguf_init_params."""

    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


class Tensor(ctypes.Structure):
    """struct ggml_tensor (ggml.h of the vendored llama.cpp); `activations.check_layout` checks it
    against ggml's own accessors before the first use."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class TypeTraits(ctypes.Structure):
    """struct ggml_type_traits (ggml.h); `type_traits` checks it against ggml_blck_size and
    ggml_type_size."""

    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]  # fmt: skip


# bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data)
EVAL_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)
# void (*ggml_to_float_t)(const void * x, float * y, int64_t k)
TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

_p, _s, _i64, _sz, _int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64, ctypes.c_size_t, ctypes.c_int
_SIGNATURES = {
    # gguf.h: headers
    "gguf_init_from_file": ([_s, GgufInitParams], _p),
    "gguf_free": ([_p], None),
    "gguf_get_version": ([_p], ctypes.c_uint32),
    "gguf_get_alignment": ([_p], _sz),
    "gguf_get_data_offset": ([_p], _sz),
    "gguf_get_meta_size": ([_p], _sz),
    "gguf_get_meta_data": ([_p, _p], None),
    "gguf_get_n_kv": ([_p], _i64),
    "gguf_get_key": ([_p, _i64], _s),
    "gguf_get_kv_type": ([_p, _i64], _int),
    "gguf_get_arr_type": ([_p, _i64], _int),
    "gguf_get_arr_n": ([_p, _i64], _sz),
    "gguf_get_arr_data": ([_p, _i64], _p),
    "gguf_get_arr_str": ([_p, _i64, _sz], _s),
    "gguf_get_val_data": ([_p, _i64], _p),
    "gguf_get_val_str": ([_p, _i64], _s),
    "gguf_get_n_tensors": ([_p], _i64),
    "gguf_find_tensor": ([_p, _s], _i64),
    "gguf_get_tensor_name": ([_p, _i64], _s),
    "gguf_get_tensor_type": ([_p, _i64], _int),
    "gguf_get_tensor_offset": ([_p, _i64], _sz),
    "gguf_get_tensor_size": ([_p, _i64], _sz),
    "gguf_set_tensor_type": ([_p, _s, _int], None),
    "gguf_set_val_str": ([_p, _s, _s], None),
    "gguf_set_val_u32": ([_p, _s, ctypes.c_uint32], None),
    "gguf_set_val_u64": ([_p, _s, ctypes.c_uint64], None),
    "gguf_set_val_i32": ([_p, _s, ctypes.c_int32], None),
    "gguf_set_val_f32": ([_p, _s, ctypes.c_float], None),
    "gguf_set_val_bool": ([_p, _s, ctypes.c_bool], None),
    "gguf_set_arr_str": ([_p, _s, ctypes.POINTER(ctypes.c_char_p), _sz], None),
    # ggml.h: types and the quantizer
    "ggml_type_name": ([_int], _s),
    "ggml_blck_size": ([_int], _i64),
    "ggml_type_size": ([_int], _sz),
    "ggml_get_type_traits": ([_int], ctypes.POINTER(TypeTraits)),
    "ggml_quantize_init": ([_int], None),
    "ggml_quantize_requires_imatrix": ([_int], ctypes.c_bool),
    "ggml_quantize_chunk": ([_int, _p, _p, _i64, _i64, _i64, _p], _sz),
    # ggml.h / ggml-backend.h: tensors seen by an evaluation callback
    "ggml_get_first_tensor": ([_p], _p),
    "ggml_get_next_tensor": ([_p, _p], _p),
    "ggml_n_dims": ([_p], _int),
    "ggml_free": ([_p], None),
    "ggml_op_name": ([_int], _s),
    "ggml_get_name": ([_p], _p),  # an address: ctypes.string_at() reads the name
    "ggml_get_data": ([_p], _p),
    "ggml_nbytes": ([_p], _sz),
    "ggml_nrows": ([_p], _i64),
    "ggml_backend_buffer_is_host": ([_p], ctypes.c_bool),
    "ggml_backend_tensor_get": ([_p, _p, _sz, _sz], None),
}


@functools.cache
def lib() -> ctypes.CDLL:
    """libggml-base's functions (those in the signature table above), through libllama."""
    init()
    handle = ctypes.CDLL(C._lib._name)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.argtypes, fn.restype = args, res
    return handle


@functools.cache
def type_traits(ggml_type: int) -> TypeTraits:
    """ggml's traits of a type, checked against its accessors (the struct layout is ours)."""
    g = lib()
    tr = g.ggml_get_type_traits(ggml_type).contents
    if tr.blck_size != g.ggml_blck_size(ggml_type) or tr.type_size != g.ggml_type_size(ggml_type):
        raise RuntimeError(
            "this llama.cpp build lays out ggml_type_traits differently from the one edge-llm was "
            "written for; reinstall the pinned llama-cpp-python (make install)"
        )
    return tr
