"""llama.cpp's C API: llama-cpp-python's bindings, plus one ctypes binding for what they lack.

llama-cpp-python wraps libllama (`C` here). libggml-base's ``gguf_*`` (reading and editing GGUF
headers) and ``ggml_*`` (type traits, the quantizer, tensor accessors for an evaluation callback)
are not wrapped; `lib()` binds them once, with one signature table, through libllama's own handle
so that the symbols resolve in the very libggml-base llama.cpp runs on (a wheel ships
libggml-base.so and .so.0 as two files: two copies would keep two loggers and two type tables).

Importing this module only loads the shared library. `init()` (called by every function here
that needs it, and by the loaders in this package) starts llama.cpp's backends and routes its log:
the recent ERROR/WARN lines are kept to explain a failed load, and everything is printed when
EDGE_LLM_DEBUG is set. It also loads the CPU backend built for this CPU (see "CPU kernels" below).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import importlib.metadata
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp.llama_cpp as C  # noqa: N812  (the raw C API)
import numpy as np

from edge_llm.llama import vulkan

__all__ = ["C", "init", "lib", "take_recent_errors", "tokenize", "LoadError", "cpu_kernels"]

# --- logging and start-up -------------------------------------------------------------------

_LOG_LOCK = threading.Lock()
_RECENT_ERRORS: list[str] = []
_DEBUG = bool(os.environ.get("EDGE_LLM_DEBUG"))
_READY = False
_INIT_LOCK = threading.Lock()


_CAPTURE: list[str] | None = None  # every log text while `capture_log` runs


@C.llama_log_callback
def _log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    msg = text.decode("utf-8", errors="replace") if text else ""
    if _DEBUG:
        os.write(2, msg.encode())
    if _CAPTURE is not None:
        with _LOG_LOCK:
            if _CAPTURE is not None:
                _CAPTURE.append(msg)
    if level in (2, 3) and msg.strip():  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
        with _LOG_LOCK:
            _RECENT_ERRORS.append(msg.strip())
            del _RECENT_ERRORS[:-20]


def init() -> None:
    """Start llama.cpp's backends and route its log (once; cheap afterwards)."""
    global _READY
    if _READY:
        return
    with _INIT_LOCK:  # not the log's lock: llama.cpp logs while it starts
        if _READY:
            return
        C.llama_log_set(_log_callback, ctypes.c_void_p(0))
        C.llama_backend_init()
        _load_cpu_kernels()
        _READY = True


@contextlib.contextmanager
def capture_log():
    """Collect everything llama.cpp logs meanwhile (INFO lines too: where it put each buffer);
    yields a list that holds the lines once the block ends. One capture at a time."""
    global _CAPTURE
    lines: list[str] = []
    with _CAPTURE_LOCK:
        _CAPTURE = []
        try:
            yield lines
        finally:
            with _LOG_LOCK:
                text, _CAPTURE = "".join(_CAPTURE), None
            lines.extend(text.splitlines())


_CAPTURE_LOCK = threading.Lock()


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
    g = _bound()
    return [
        g.ggml_backend_reg_name(g.ggml_backend_reg_get(i)).decode()
        for i in range(g.ggml_backend_reg_count())
    ]


def gpu_backends() -> list[str]:
    """The registered backends that run on a device of their own (not the CPU-side CPU, BLAS or
    RPC ones): empty in a CPU-only build."""
    return [b for b in registered_backends() if b.upper() not in ("CPU", "BLAS", "RPC")]


# KV-cache element types by name (ggml_type values).
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}


class LoadError(Exception):
    """llama.cpp refused the file; ``details`` holds what it logged."""

    def __init__(self, message: str, details: list[str]):
        super().__init__(message)
        self.details = details


def load_model(
    path: str | Path,
    *,
    n_gpu_layers: int = 0,
    vocab_only: bool = False,
    load_mode: int | None = None,
):
    """A ``llama_model *`` for the GGUF at ``path`` (free it with `free_model`);
    LoadError with llama.cpp's log lines if it refuses.

    ``n_gpu_layers`` 0 keeps the model off every other device: llama.cpp would otherwise still
    hand a GPU the big matrix products of a prompt (its "op offload"), so a CPU run would not be
    one."""
    init()
    if _CPU_KERNELS is not None and _CPU_KERNELS.variant is None:
        from edge_llm.errors import EdgeLLMError

        raise EdgeLLMError(
            f"llama.cpp has no CPU backend: no usable libggml-cpu-*.so in "
            f"{_CPU_KERNELS.directory}; reinstall with make install"
        )
    mp = C.llama_model_default_params()
    mp.n_gpu_layers = n_gpu_layers
    mp.vocab_only = vocab_only
    if load_mode is not None:
        mp.load_mode = load_mode
    no_devices = (ctypes.c_void_p * 1)()  # a NULL-terminated list of none: the CPU alone
    if n_gpu_layers == 0:
        mp.devices = ctypes.addressof(no_devices)
    take_recent_errors()
    model = C.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        raise LoadError("llama.cpp could not load the model", take_recent_errors())
    return model


def free_model(model) -> None:
    """Free a ``llama_model *`` that `load_model` returned."""
    C.llama_model_free(model)


def free(owner) -> None:
    """Free ``owner.ctx`` (a llama_context) and ``owner.model`` (a llama_model) where set, context
    first, and clear them (safe to call twice)."""
    if getattr(owner, "ctx", None):
        C.llama_free(owner.ctx)
        owner.ctx = None
    if getattr(owner, "model", None):
        C.llama_model_free(owner.model)
        owner.model = None


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


def quantize_file(
    src: str | Path,
    dst: str | Path,
    ftype: int,
    nthread: int,
    *,
    imatrix: dict[str, np.ndarray] | None = None,
    tensor_types: dict[str, int] | None = None,
    pure: bool = False,
    allow_requantize: bool = False,
) -> bool:
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

    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


# bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data)
EVAL_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)
# void (*ggml_to_float_t)(const void * x, float * y, int64_t k)
TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

_p, _s, _i64, _sz, _int = (
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_int64,
    ctypes.c_size_t,
    ctypes.c_int,
)
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
    "gguf_get_tensor_ne": ([_p, _i64], ctypes.POINTER(_i64)),  # int64_t[GGML_MAX_DIMS]
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
    # ggml-backend.h: the backend registry, dynamically loaded backends, devices
    "ggml_backend_load_all_from_path": ([_s], None),
    "ggml_backend_reg_count": ([], _sz),
    "ggml_backend_reg_get": ([_sz], _p),
    "ggml_backend_reg_name": ([_p], _s),
    "ggml_backend_reg_get_proc_address": ([_p, _s], _p),
    "ggml_backend_dev_count": ([], _sz),
    "ggml_backend_dev_get": ([_sz], _p),
    "ggml_backend_dev_name": ([_p], _s),
    "ggml_backend_dev_description": ([_p], _s),
    "ggml_backend_dev_type": ([_p], _int),
    "ggml_backend_dev_memory": ([_p, ctypes.POINTER(_sz), ctypes.POINTER(_sz)], None),
    "ggml_backend_dev_backend_reg": ([_p], _p),
}


@functools.cache
def _bound() -> ctypes.CDLL:
    handle = ctypes.CDLL(C._lib._name)
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(handle, name)
        fn.argtypes, fn.restype = args, res
    return handle


def lib() -> ctypes.CDLL:
    """libggml-base's functions (those in the signature table above), through libllama."""
    init()
    return _bound()


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


# --- CPU kernels --------------------------------------------------------------------------------
# `make install` builds llama.cpp with GGML_BACKEND_DL and GGML_CPU_ALL_VARIANTS: the CPU backend
# is one libggml-cpu-<variant>.so per micro-architecture (haswell, skylakex, icelake, zen4,
# sapphirerapids...; armv8.2_1, armv8.6_1...) next to libllama.so, and none is registered until
# someone loads them. llama.cpp's own tools call ggml_backend_load_all(); the pinned
# llama-cpp-python does not (abetlen/llama-cpp-python#2069: a load fails with "no backends are
# loaded"), so init() does, before anything touches a model. ggml scores each variant against the
# CPU it runs on (cpuid, HWCAP) and keeps the best one; a build without GGML_BACKEND_DL has its CPU
# backend linked in, and then there is nothing to load.
#
# One exception: variants with AMX. The pinned llama.cpp's AMX matmul, compiled by GCC, dies with
# SIGILL on its first tile load: GCC drops the stores that fill the tile configuration before
# ldtilecfg, so every tile has zero rows (ggml-org/llama.cpp PR 26954). So ggml chooses among the
# other variants (sapphirerapids' AVX512 kernels are zen4's): its loader is pointed at a folder of
# links to the backend libraries without the AMX ones.


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


class _Feature(ctypes.Structure):  # struct ggml_backend_feature
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


@dataclass(frozen=True)
class CpuKernels:
    """The CPU backend llama.cpp runs on in this process."""

    variant: str | None  # "zen4", "haswell", "armv8.2_1"...; "built-in"; None: no CPU backend
    library: str | None  # the libggml-cpu-*.so loaded (None for a built-in backend)
    features: tuple[str, ...]  # what that build was compiled for: "AVX2", "AVX512", "SVE_CNT=16"
    directory: str  # where the variants were looked for (libllama's folder)
    missing: tuple[str, ...] = ()  # variant libraries the installed wheel lists, not found
    left_out: tuple[str, ...] = ()  # variants this CPU could run that are not loaded (AMX)


_CPU_KERNELS: CpuKernels | None = None


def _library_of(address: int) -> str | None:
    """The shared library that holds ``address`` (dladdr)."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except AttributeError:  # glibc < 2.34 keeps it in libdl
        dladdr = ctypes.CDLL("libdl.so.2").dladdr
    dladdr.argtypes, dladdr.restype = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)], ctypes.c_int
    info = _DlInfo()
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def _features(reg: int) -> list[str]:
    """What a CPU backend was compiled for (its ggml_backend_get_features)."""
    get = _bound().ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if not get:
        return []
    f = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(get)(reg)
    out, i = [], 0
    while f[i].name:
        name, value = f[i].name.decode(), (f[i].value or b"").decode()
        out.append(name if value == "1" else f"{name}={value}")
        i += 1
    return out


def _installed_variants() -> set[str]:
    """The libggml-cpu-*.so files the installed llama-cpp-python wheel put in llama_cpp/lib."""
    try:
        files = importlib.metadata.files("llama_cpp_python") or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {f.name for f in files if f.name.startswith("libggml-cpu-") and f.name.endswith(".so")}


def _amx_variants(directory: Path) -> list[str]:
    """The CPU variants in DIRECTORY that this CPU runs (ggml's own score > 0) and that use AMX."""
    out = []
    for path in sorted(directory.glob("libggml-cpu-*.so")):
        try:
            variant = ctypes.CDLL(str(path))
            score, init_fn = variant.ggml_backend_score, variant.ggml_backend_init
        except (OSError, AttributeError):
            continue  # ggml's loader skips it too
        init_fn.restype = ctypes.c_void_p
        if score() > 0 and "AMX_INT8" in _features(init_fn()):
            out.append(path.name)
    return out


def _cpu_reg():
    g = _bound()
    for i in range(g.ggml_backend_reg_count()):
        reg = g.ggml_backend_reg_get(i)
        if g.ggml_backend_reg_name(reg) == b"CPU":
            return reg
    return None


def _load_cpu_kernels() -> None:
    global _CPU_KERNELS
    g = _bound()
    directory = Path(C._lib._name).resolve().parent
    missing: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    reg = _cpu_reg()
    if reg is None:  # a GGML_BACKEND_DL build: load the best variant (and any GPU backend) here
        left_out = tuple(_amx_variants(directory))
        with tempfile.TemporaryDirectory(prefix="edge-llm-backends-") as view:
            for p in directory.glob("libggml-*.so"):
                if p.name not in left_out:
                    os.symlink(p, Path(view) / p.name)
            g.ggml_backend_load_all_from_path(os.fsencode(view))
        reg = _cpu_reg()
        present = {p.name for p in directory.glob("libggml-cpu-*.so")}
        missing = tuple(sorted(_installed_variants() - present))
    variant = library = None
    features: list[str] = []
    if reg is not None:
        features = _features(reg)
        get = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
        name = Path(_library_of(get) or "").name if get else ""
        if name.startswith("libggml-cpu-") and name.endswith(".so"):
            variant, library = name[len("libggml-cpu-") : -len(".so")], str(directory / name)
        else:
            variant = "built-in"
    _CPU_KERNELS = CpuKernels(variant, library, tuple(features), str(directory), missing, left_out)
    if missing:
        print(
            f"edge-llm: warning: {', '.join(missing)} missing from {directory}; running on CPU "
            f"kernels {variant or 'none'} (reinstall with make install)",
            file=sys.stderr,
        )


def cpu_kernels() -> CpuKernels:
    """The CPU variant llama.cpp runs on here (loaded by init())."""
    init()
    assert _CPU_KERNELS is not None
    return _CPU_KERNELS


DEVICE_TYPES = ("cpu", "gpu", "igpu", "accel", "meta")  # enum ggml_backend_dev_type, in order


@dataclass(frozen=True)
class Device:
    """A device llama.cpp can run on (ggml_backend_dev_*)."""

    name: str  # "CPU", "Vulkan0", "CUDA0"...
    description: str  # "llvmpipe (LLVM 15.0.6, 256 bits)", the CPU's model name...
    type: str  # one of DEVICE_TYPES
    backend: str  # the backend that registered it: "CPU", "Vulkan"...
    memory_free: int  # bytes, as the device reports them
    memory_total: int
    # from the driver itself where edge_llm can ask it (Vulkan: edge_llm.llama.vulkan), else
    # "" and 0: the driver's version, and the largest weight the backend takes (bigger ones
    # stay in host memory)
    driver: str = ""
    max_tensor_bytes: int = 0

    @property
    def offloads(self) -> bool:
        """Whether model layers can go to it (a GPU, integrated or not)."""
        return self.type in ("gpu", "igpu")


def devices() -> list[Device]:
    """Every device llama.cpp can run on here, in its own order."""
    g = lib()
    out = []
    for i in range(g.ggml_backend_dev_count()):
        d = g.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        g.ggml_backend_dev_memory(d, ctypes.byref(free), ctypes.byref(total))
        kind = g.ggml_backend_dev_type(d)
        description = g.ggml_backend_dev_description(d).decode(errors="replace")
        backend = g.ggml_backend_reg_name(g.ggml_backend_dev_backend_reg(d)).decode()
        vk = vulkan.describe(description) if backend == "Vulkan" else None
        out.append(
            Device(
                name=g.ggml_backend_dev_name(d).decode(),
                description=description,
                type=DEVICE_TYPES[kind] if 0 <= kind < len(DEVICE_TYPES) else str(kind),
                backend=backend,
                memory_free=free.value,
                memory_total=total.value,
                driver=f"{vk.vendor_id:#x}:{vk.device_id:#x} driver {vk.driver_version} "
                f"Vulkan {vk.api_version}"
                if vk
                else "",
                max_tensor_bytes=vk.max_storage_buffer_range if vk else 0,
            )
        )
    return out


def gpu_devices() -> list[Device]:
    """The devices model layers can be offloaded to (none: the CPU runs everything)."""
    return [d for d in devices() if d.offloads]


def backend_library(backend: str) -> str | None:
    """The shared library of a dynamically loaded backend ("Vulkan": .../libggml-vulkan.so)."""
    g = lib()
    for i in range(g.ggml_backend_reg_count()):
        reg = g.ggml_backend_reg_get(i)
        if g.ggml_backend_reg_name(reg).decode() == backend:
            return _library_of(reg)  # a backend's registry entry is a static inside its library
    return None


def system_report() -> dict:
    """What llama.cpp runs on here: the build, the CPU variant chosen, the devices."""
    k = cpu_kernels()
    return {
        "llama_cpp_python": version(),
        "cpu_variant": k.variant,
        "cpu_library": k.library,
        "cpu_features": list(k.features),
        "library_dir": k.directory,
        "missing_variants": list(k.missing),
        "left_out_variants": list(k.left_out),
        "devices": [dataclasses.asdict(d) for d in devices()],
        "system_info": system_info().strip(),
    }
