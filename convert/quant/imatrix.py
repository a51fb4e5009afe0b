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

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge_llm import interrupts
from edge_llm.fsutil import atomic_path
from edge_llm.llama import activations as act
from edge_llm.llama.scoring import ScoringContext, chunk_plan

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
        self.callback = act.EVAL_CALLBACK(self._callback)

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
            t = act.Tensor.from_address(ptr)
            if not self._checked:
                act.check_layout(ptr, t)
                self._checked = True
            op = act.op_name(t.op)
            if op not in ("MUL_MAT", "MUL_MAT_ID"):
                return False if ask else True
            src0 = act.Tensor.from_address(t.src[0])
            src1 = act.Tensor.from_address(t.src[1])
            wname = act.weight_name(src0.name)
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
        x = act.array(src1, src1_ptr)  # [ne3, ne2, ne1, ne0]
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
        ids_t = act.Tensor.from_address(t.src[2])
        ids = act.array_i32(ids_t, t.src[2])  # [n_tokens, n_used]
        x = act.array(src1, src1_ptr)[0]  # [n_tokens, ne1, ne0]
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


# progress(chunks_done, chunks_total)
ChunkProgress = Callable[[int, int], None]


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
    if n_ctx < MIN_ROWS:
        raise ConvertError(
            f"--ctx {n_ctx} is below {MIN_ROWS}: llama-imatrix collects nothing then"
        )
    collector = Collector(process_output=process_output, extra=extra)
    with (
        interrupts.deferred(),
        ScoringContext(  # Ctrl-C: stop llama.cpp, then raise
            model_path,
            n_ctx=n_ctx,
            threads=threads,
            eval_callback=collector.callback,
            error=ConvertError,
        ) as sc,
    ):
        tokens = sc.tokenize(text)
        if len(tokens) < 2 * n_ctx:
            raise ConvertError(
                f"the calibration text tokenizes to {len(tokens)} tokens; llama-imatrix needs at "
                f"least {2 * n_ctx} (two chunks of --ctx {n_ctx}): give a longer text or a "
                "smaller --ctx"
            )
        work = chunk_plan(tokens, n_ctx, sc.chunk_bos(), max_chunks)
        for i, chunk in enumerate(work):
            interrupts.raise_if_requested()
            try:
                sc.eval_chunk(chunk)  # logits at every position, as llama-imatrix asks
            except ConvertError:
                if collector.error is not None:
                    raise collector.error from None
                raise
            if collector.error is not None:
                raise collector.error
            if progress:
                progress(i + 1, len(work))
    if not collector.sums:
        raise ConvertError(f"no matrix multiplication of {model_path} was seen; nothing to collect")
    main = Imatrix(collector.sums, collector.counts, [dataset], len(work), n_ctx)
    if extra:
        return main, Imatrix(
            collector.extra_sums, collector.extra_counts, [dataset], len(work), n_ctx
        )
    return main


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
    main, extra = collect(
        model_path,
        text,
        n_ctx=n_ctx,
        threads=threads,
        max_chunks=max_chunks,
        dataset=dataset,
        progress=step,
        extra=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    main.write(main_path)
    if extra.sums:
        extra.write(extra_path)
    return main, extra
