"""Importance matrix: for every weight matrix, the per-input-column sum of squared activations.

The quantity is the one llama.cpp's `llama-imatrix` collects, computed here in-process on
llama.cpp's own forward pass: a `cb_eval` callback sees every matrix multiplication of the graph
and, for `blk.*` weights (and `output.weight` with ``process_output``), adds the squares of its
input's columns. The rules are llama-imatrix's:

- the text is tokenized with the model's special tokens added (BOS) and split into
  ``len // n_ctx`` chunks of ``n_ctx`` tokens (at least two are needed); each chunk starts a fresh
  KV cache and, when the vocabulary adds a BOS, its first token is replaced by BOS;
- every position of a chunk requests logits, so the last layer processes every token;
- multiplications whose input has fewer than 16 rows or is not F32 are skipped;
- ``counts`` is the number of input rows (tokens) summed, per expert matrix.

The KV cache is F32 and flash attention off (llama-imatrix uses llama.cpp's defaults, an F16
cache; the difference is rounding). The file format is llama.cpp's imatrix GGUF (``general.type
= imatrix``, ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size``, and per weight
``NAME.in_sum2`` [nmat, ncols] and ``NAME.counts`` [nmat, 1], both F32), which
`llama-quantize --imatrix` and `llama-imatrix --in-file` read. The legacy ``.dat`` format is read
too. What llama-quantize uses is ``in_sum2 / counts``: the mean squared activation per column.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge_llm import interrupts
from edge_llm.fsutil import atomic_path

MIN_ROWS = 16  # llama-imatrix ignores multiplications of fewer rows ("small batches")
GGML_TYPE_F32 = 0


@dataclass
class Imatrix:
    """Per weight: ``sums`` [nmat, ncols] (float64 while collecting) and ``counts`` [nmat]."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0

    def names(self) -> list[str]:
        return sorted(self.sums)

    def mean(self, name: str) -> np.ndarray:
        """What llama-quantize passes to the quantizer: in_sum2 / count per matrix, flattened
        (1.0 for a matrix that saw no token, as llama-quantize does)."""
        sums, counts = self.sums[name], self.counts[name].astype(np.float64)
        out = np.ones_like(sums, dtype=np.float64)
        seen = counts > 0
        out[seen] = sums[seen] / counts[seen, None]
        return out.astype(np.float32).reshape(-1)

    def means(self) -> dict[str, np.ndarray]:
        return {n: self.mean(n) for n in self.names()}

    def subset(self, names) -> Imatrix:
        keep = [n for n in self.names() if n in set(names)]
        return Imatrix(
            {n: self.sums[n] for n in keep},
            {n: self.counts[n] for n in keep},
            list(self.datasets),
            self.chunk_count,
            self.chunk_size,
        )

    def digest(self) -> str:
        h = hashlib.sha256()
        for n in self.names():
            h.update(n.encode())
            h.update(np.ascontiguousarray(self.sums[n], dtype=np.float32).tobytes())
            h.update(np.ascontiguousarray(self.counts[n], dtype=np.float32).tobytes())
        return h.hexdigest()[:16]

    # --- llama.cpp's imatrix GGUF --------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        """Write llama.cpp's imatrix GGUF (atomically)."""
        import gguf

        path = Path(path).absolute()
        if not path.parent.is_dir():
            raise ConvertError(f"cannot write {path}: folder {path.parent} does not exist")
        with atomic_path(path) as tmp:
            w = gguf.GGUFWriter(tmp, "imatrix")
            # llama-imatrix writes no general.architecture; the gguf package adds one by default
            w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)
            w.add_type("imatrix")
            w.add_array("imatrix.datasets", list(self.datasets) or ["unknown"])
            w.add_uint32("imatrix.chunk_count", int(self.chunk_count))
            w.add_uint32("imatrix.chunk_size", int(self.chunk_size))
            for n in self.names():
                sums = np.asarray(self.sums[n], dtype=np.float32)
                counts = np.asarray(self.counts[n], dtype=np.float32).reshape(-1, 1)
                w.add_tensor(
                    f"{n}.in_sum2", np.ascontiguousarray(sums.reshape(counts.shape[0], -1))
                )
                w.add_tensor(f"{n}.counts", np.ascontiguousarray(counts))
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
        return path


def read(path: str | Path) -> Imatrix:
    """Read an imatrix written by llama-imatrix (GGUF, or the legacy .dat) or by `write`."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"imatrix file {path} does not exist; make one with `edge-llm imatrix`")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _read_gguf(path)
    return _read_legacy(path)


def _read_gguf(path: Path) -> Imatrix:
    import gguf

    try:
        r = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ConvertError(
            f"{path} is not a readable imatrix GGUF ({e}); compute it again"
        ) from None

    def field_value(key, default=None):
        f = r.fields.get(key)
        return f.contents() if f is not None else default

    if field_value("general.type") not in ("imatrix", None):
        raise ConvertError(
            f"{path} is a GGUF of type {field_value('general.type')!r}, not an imatrix; pass the "
            "file written by `edge-llm imatrix` or llama-imatrix"
        )
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors}
    out = Imatrix(
        datasets=list(field_value("imatrix.datasets", []) or []),
        chunk_count=int(field_value("imatrix.chunk_count", 0)),
        chunk_size=int(field_value("imatrix.chunk_size", 0)),
    )
    for key, data in tensors.items():
        if not key.endswith(".in_sum2"):
            continue
        name = key[: -len(".in_sum2")]
        counts = tensors.get(f"{name}.counts")
        if counts is None:
            raise ConvertError(f"{path} has sums but no counts for {name}; the file is damaged")
        counts = counts.reshape(-1)
        out.sums[name] = data.astype(np.float64).reshape(counts.size, -1)
        out.counts[name] = np.rint(counts).astype(np.int64)
    if not out.sums:
        raise ConvertError(f"{path} holds no importance data; compute it again")
    return out


def _read_legacy(path: Path) -> Imatrix:
    """llama.cpp's old .dat: per entry (sum/count)*ncall and ncall; kept as sums/counts so that
    ``mean`` gives the same values llama-quantize derives."""
    data = path.read_bytes()
    try:
        (n,) = struct.unpack_from("<i", data, 0)
        pos, out = 4, Imatrix()
        if n < 1:
            raise ValueError
        for _ in range(n):
            (ln,) = struct.unpack_from("<i", data, pos)
            name = data[pos + 4 : pos + 4 + ln].decode()
            pos += 4 + ln
            ncall, nval = struct.unpack_from("<ii", data, pos)
            pos += 8
            vals = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float64)
            pos += 4 * nval
            out.sums[name] = vals.reshape(1, -1)
            out.counts[name] = np.array([max(ncall, 0)], dtype=np.int64)
        if pos + 4 <= len(data):
            (out.chunk_count,) = struct.unpack_from("<i", data, pos)
            if pos + 8 <= len(data):
                (ln,) = struct.unpack_from("<i", data, pos + 4)
                if ln > 0:
                    out.datasets = [data[pos + 8 : pos + 8 + ln].decode(errors="replace")]
    except (struct.error, ValueError, UnicodeDecodeError):
        raise ConvertError(
            f"{path} is neither an imatrix GGUF nor llama.cpp's legacy .dat; compute it again"
        ) from None
    return out


# --- ggml's tensor, as this llama.cpp build lays it out -----------------------------------------


class _Tensor(ctypes.Structure):
    """struct ggml_tensor (ggml.h of the vendored llama.cpp); checked against ggml's own
    accessors before the first use (`_check_layout`)."""

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


@functools.cache
def _ggml() -> ctypes.CDLL:
    # through libllama's handle, so the symbols are those of the libggml llama.cpp runs on
    from edge_llm import backend

    lib = ctypes.CDLL(backend.C._lib._name)
    sig = {
        "ggml_op_name": ([ctypes.c_int], ctypes.c_char_p),
        "ggml_get_name": ([ctypes.c_void_p], ctypes.c_void_p),
        "ggml_get_data": ([ctypes.c_void_p], ctypes.c_void_p),
        "ggml_nbytes": ([ctypes.c_void_p], ctypes.c_size_t),
        "ggml_nrows": ([ctypes.c_void_p], ctypes.c_int64),
        "ggml_backend_buffer_is_host": ([ctypes.c_void_p], ctypes.c_bool),
        "ggml_backend_tensor_get": (
            [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t],
            None,
        ),
    }
    for name, (args, res) in sig.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    return lib


def _check_layout(ptr: int, t: _Tensor) -> None:
    lib = _ggml()
    name_at = ptr + _Tensor.name.offset
    ok = lib.ggml_get_name(ptr) == name_at and (lib.ggml_get_data(ptr) or 0) == (t.data or 0)
    if ok and t.ne[0] > 0:
        ok = lib.ggml_nrows(ptr) == t.ne[1] * t.ne[2] * t.ne[3]
    if not ok:
        raise ConvertError(
            "this llama.cpp build lays out ggml_tensor differently from the one edge-llm was "
            "written for; reinstall the pinned llama-cpp-python (make install)"
        )


def _array(t: _Tensor, ptr: int) -> np.ndarray:
    """An F32 tensor's data as a numpy array [ne3, ne2, ne1, ne0] (a copy)."""
    lib = _ggml()
    shape = tuple(int(t.ne[i]) for i in (3, 2, 1, 0))
    strides = tuple(int(t.nb[i]) for i in (3, 2, 1, 0))
    extent = sum((n - 1) * s for n, s in zip(shape, strides)) + 4
    if lib.ggml_backend_buffer_is_host(t.buffer):
        raw = (ctypes.c_char * extent).from_address(t.data)
        base = np.frombuffer(raw, dtype=np.uint8)
    else:  # a GPU buffer: copy it out (llama-imatrix does the same)
        nbytes = lib.ggml_nbytes(ptr)
        base = np.empty(max(nbytes, extent), dtype=np.uint8)
        lib.ggml_backend_tensor_get(ptr, base.ctypes.data, 0, nbytes)
    view = np.lib.stride_tricks.as_strided(base.view(np.float32)[:1], shape, strides)
    return np.array(view, dtype=np.float32)


def _weight_name(raw: bytes) -> str:
    """Strip a backend's decoration: ``CUDA0#blk.0.attn_k.weight#0`` -> ``blk.0.attn_k.weight``."""
    name = raw.decode(errors="replace")
    if "#" in name:
        name = name.split("#")[1]
    return name


class Collector:
    """The cb_eval callback: llama-imatrix's collection rules, sums kept in float64.

    ``extra`` also collects the output matrix's input under the name of the weight it multiplies
    (``output.weight``, or ``token_embd.weight`` for tied embeddings), which the size-budget
    sensitivity needs; those entries are kept apart (`extra_sums`) and are not part of the file
    unless ``process_output`` asks for ``output.weight`` as llama-imatrix does.
    """

    def __init__(self, process_output: bool = False, extra: bool = False):
        self.process_output = process_output
        self.extra = extra
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.extra_sums: dict[str, np.ndarray] = {}
        self.extra_counts: dict[str, np.ndarray] = {}
        self.error: BaseException | None = None
        self._checked = False
        self._ops: dict[int, str] = {}
        self.callback = _EVAL_CALLBACK(self._callback)

    def _op(self, op: int) -> str:
        name = self._ops.get(op)
        if name is None:
            name = self._ops[op] = _ggml().ggml_op_name(op).decode()
        return name

    def _wanted(self, wname: str) -> bool:
        if wname.startswith("blk."):
            return True
        if wname == "output.weight" and self.process_output:
            return True
        return self.extra and wname in ("output.weight", "token_embd.weight")

    def _callback(self, ptr, ask, _user) -> bool:
        try:
            if self.error is not None:
                return False
            interrupts.raise_if_requested()  # Ctrl-C or SIGTERM: returning false stops the graph
            t = _Tensor.from_address(ptr)
            if not self._checked:
                _check_layout(ptr, t)
                self._checked = True
            op = self._op(t.op)
            if op not in ("MUL_MAT", "MUL_MAT_ID"):
                return False if ask else True
            src0 = _Tensor.from_address(t.src[0])
            src1 = _Tensor.from_address(t.src[1])
            wname = _weight_name(src0.name)
            if ask:
                if op == "MUL_MAT_ID":
                    return True
                if src1.ne[1] < MIN_ROWS or src1.type != GGML_TYPE_F32:
                    return False
                return self._wanted(wname)
            if not self._wanted(wname):
                return True
            blk = wname.startswith("blk.") or (self.process_output and wname == "output.weight")
            sums, counts = (self.sums, self.counts) if blk else (self.extra_sums, self.extra_counts)
            if op == "MUL_MAT_ID":
                self._collect_experts(t, src0, src1, wname, t.src[1], sums, counts)
            else:
                self._collect_dense(src0, src1, wname, t.src[1], sums, counts)
            return True
        except BaseException as e:  # noqa: BLE001 - never let an exception cross into C
            self.error = e
            return False

    def _collect_dense(self, src0, src1, wname, src1_ptr, sums, counts) -> None:
        x = _array(src1, src1_ptr)  # [ne3, ne2, ne1, ne0]
        n_mat = int(src0.ne[2] * src0.ne[3])
        ne0 = x.shape[-1]
        acc = sums.get(wname)
        if acc is None:
            acc = sums[wname] = np.zeros((n_mat, ne0), dtype=np.float64)
            counts[wname] = np.zeros(1, dtype=np.int64)
        elif acc.shape != (n_mat, ne0):
            raise ConvertError(
                f"inconsistent activation size for {wname}: {acc.shape} vs {(n_mat, ne0)}"
            )
        sq = np.square(x, dtype=np.float64).sum(axis=2)  # [ne3, ne2, ne0]
        for i3 in range(x.shape[0]):
            for i2 in range(x.shape[1]):
                mat = (i3 % int(src0.ne[3])) * int(src0.ne[2]) + (i2 % int(src0.ne[2]))
                acc[mat] += sq[i3, i2]
        if not np.isfinite(acc).all():
            raise ConvertError(f"non-finite activations in {wname}; the model produces NaN/inf")
        counts[wname] += (x.shape[0] * x.shape[1] * x.shape[2]) // n_mat

    def _collect_experts(self, t, src0, src1, wname, src1_ptr, sums, counts) -> None:
        ids_t = _Tensor.from_address(t.src[2])
        ids = _array_i32(ids_t, t.src[2])  # [n_tokens, n_used]
        x = _array(src1, src1_ptr)[0]  # [n_tokens, ne1, ne0]
        n_as, ne0 = int(src0.ne[2]), x.shape[-1]
        acc = sums.get(wname)
        if acc is None:
            acc = sums[wname] = np.zeros((n_as, ne0), dtype=np.float64)
            counts[wname] = np.zeros(n_as, dtype=np.int64)
        n_tokens, n_ids = ids.shape
        for idx in range(n_ids):
            rows = x[:, idx % x.shape[1], :].astype(np.float64) ** 2
            np.add.at(acc, ids[:, idx], rows)
            np.add.at(counts[wname], ids[:, idx], 1)
        if not np.isfinite(acc).all():
            raise ConvertError(f"non-finite activations in {wname}; the model produces NaN/inf")


def _array_i32(t: _Tensor, ptr: int) -> np.ndarray:
    lib = _ggml()
    n1, n0 = int(t.ne[1]), int(t.ne[0])
    nbytes = lib.ggml_nbytes(ptr)
    buf = np.empty(nbytes, dtype=np.uint8)
    lib.ggml_backend_tensor_get(ptr, buf.ctypes.data, 0, nbytes)
    view = np.lib.stride_tricks.as_strided(
        buf.view(np.int32)[:1], (n1, n0), (int(t.nb[1]), int(t.nb[0]))
    )
    return np.array(view)


_EVAL_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)


class Threads:
    """llama.cpp's thread count for a long run of chunks: ``fixed`` when given, else the CPUs
    other processes leave free, read again before each chunk (edge_llm.devices): on a shared
    machine a thread whose core is busy stalls every barrier of the graph."""

    def __init__(self, fixed: int | None):
        from edge_llm.devices import CpuLoad, available_cpus, threads_for

        self.fixed, self._cpus, self._for = fixed, available_cpus(), threads_for
        self.load = None if fixed else CpuLoad()
        self.current = fixed or threads_for(self._cpus, self.load.others_busy(wait=True))

    def now(self) -> int:
        if not self.fixed:
            busy = self.load.others_busy(wait=False)
            if busy is not None:
                self.current = self._for(self._cpus, busy)
        return self.current

    def apply(self, ctx) -> None:
        import llama_cpp.llama_cpp as C

        n = self.now()
        C.llama_set_n_threads(ctx, n, n)


# progress(chunks_done, chunks_total)
ChunkProgress = Callable[[int, int], None]


def tokenize(model, text: str) -> list[int]:
    """The text as llama-imatrix and llama-perplexity tokenize it: special tokens added (BOS),
    special-token text not parsed."""
    import llama_cpp.llama_cpp as C

    from edge_llm.backend import tokenize as tokenize_vocab

    return tokenize_vocab(C.llama_model_get_vocab(model), text, True, False)


def chunks(tokens: list[int], n_ctx: int, bos: int | None, max_chunks: int | None = None):
    """llama-imatrix's chunking: ``len // n_ctx`` chunks of ``n_ctx`` tokens, each starting with
    BOS when the vocabulary adds one (the chunk's first token is replaced, not shifted)."""
    n = len(tokens) // n_ctx
    if max_chunks is not None:
        n = min(n, max_chunks)
    out = []
    for i in range(n):
        c = list(tokens[i * n_ctx : (i + 1) * n_ctx])
        if bos is not None:
            c[0] = bos
        out.append(c)
    return out


def collect(
    model_path: str | Path,
    text: str,
    n_ctx: int = 512,
    threads: int | None = None,
    max_chunks: int | None = None,
    process_output: bool = False,
    dataset: str = "text",
    progress: ChunkProgress | None = None,
    extra: bool = False,
) -> Imatrix | tuple[Imatrix, Imatrix]:
    """The importance matrix of the GGUF at ``model_path`` over ``text``.

    With ``extra``, also returns the output matrix's statistics (see `Collector`) as a second
    Imatrix.
    """
    import llama_cpp.llama_cpp as C

    from edge_llm import backend  # noqa: F401  (routes llama.cpp's log)

    if n_ctx < MIN_ROWS:
        raise ConvertError(
            f"--ctx {n_ctx} is below {MIN_ROWS}: llama-imatrix collects nothing then"
        )
    model_path = Path(model_path)
    mp = C.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = C.llama_model_load_from_file(str(model_path).encode(), mp)
    if not model:
        raise ConvertError(f"llama.cpp could not load {model_path}; is it a complete GGUF model?")
    collector = Collector(process_output=process_output, extra=extra)
    ctx = batch = None
    try:
        vocab = C.llama_model_get_vocab(model)
        tokens = tokenize(model, text)
        if len(tokens) < 2 * n_ctx:
            raise ConvertError(
                f"the calibration text tokenizes to {len(tokens)} tokens; llama-imatrix needs at "
                f"least {2 * n_ctx} (two chunks of --ctx {n_ctx}): give a longer text or a "
                "smaller --ctx"
            )
        bos = C.llama_vocab_bos(vocab) if C.llama_vocab_get_add_bos(vocab) else None
        work = chunks(tokens, n_ctx, bos, max_chunks)
        cp = C.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_seq_max = 1
        pool = Threads(threads)
        cp.n_threads = cp.n_threads_batch = pool.current
        cp.type_k = cp.type_v = GGML_TYPE_F32
        cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.cb_eval = collector.callback
        cp.cb_eval_user_data = None
        cp.no_perf = True
        ctx = C.llama_init_from_model(model, cp)
        if not ctx:
            raise ConvertError(f"llama.cpp could not create a context of {n_ctx} for {model_path}")
        mem = C.llama_get_memory(ctx)
        batch = C.llama_batch_init(n_ctx, 0, 1)
        for i, chunk in enumerate(work):
            interrupts.raise_if_requested()
            pool.apply(ctx)
            C.llama_memory_clear(mem, True)
            _fill(batch, chunk, lambda pos: True)
            rc = C.llama_decode(ctx, batch)
            if collector.error is not None:
                raise collector.error
            if rc != 0:
                raise ConvertError(f"llama.cpp failed to evaluate chunk {i + 1} (code {rc})")
            if progress:
                progress(i + 1, len(work))
    finally:
        if batch is not None:
            C.llama_batch_free(batch)
        if ctx:
            C.llama_free(ctx)
        C.llama_model_free(model)
    if not collector.sums:
        raise ConvertError(f"no matrix multiplication of {model_path} was seen; nothing to collect")
    main = Imatrix(collector.sums, collector.counts, [dataset], len(work), n_ctx)
    if extra:
        return main, Imatrix(
            collector.extra_sums, collector.extra_counts, [dataset], len(work), n_ctx
        )
    return main


def _fill(batch, tokens: list[int], want_logits) -> int:
    """Put one sequence's tokens in ``batch`` (positions 0..n-1, sequence 0); returns how many
    positions request logits."""
    n_out = 0
    for k, tok in enumerate(tokens):
        batch.token[k] = tok
        batch.pos[k] = k
        batch.n_seq_id[k] = 1
        batch.seq_id[k][0] = 0
        out = bool(want_logits(k))
        batch.logits[k] = out
        n_out += out
    batch.n_tokens = len(tokens)
    return n_out


def cached_collect(
    model_path: Path,
    text: str,
    dataset: str,
    max_chunks: int | None,
    threads: int | None,
    progress: Callable[[str, int, int], None] | None = None,
    n_ctx: int = 512,
) -> tuple[Imatrix, Imatrix]:
    """`collect` with the output matrix's statistics, cached by the model file's content, the
    text and the settings (~/.cache/edge-llm/imatrix), since a size budget and its comparisons
    reuse one model's importance matrix many times."""
    from edge_llm.fsutil import cache_dir

    h = hashlib.sha256()
    with Path(model_path).open("rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    h.update(f"|{n_ctx}|{max_chunks}|{dataset}|".encode())
    h.update(text.encode())
    folder = cache_dir() / "imatrix"
    main_path, extra_path = (
        folder / f"{h.hexdigest()[:24]}.gguf",
        folder / f"{h.hexdigest()[:24]}.out.gguf",
    )
    if main_path.is_file() and extra_path.is_file():
        try:
            return read(main_path), read(extra_path)
        except ConvertError:
            pass
    step = (lambda i, n: progress("computing the importance matrix", i, n)) if progress else None
    main, extra = collect(model_path, text, n_ctx=n_ctx, threads=threads, max_chunks=max_chunks,
                          dataset=dataset, progress=step, extra=True)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    main.write(main_path)
    if extra.sums:
        extra.write(extra_path)
    return main, extra
