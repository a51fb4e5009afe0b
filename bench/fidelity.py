"""How faithful a quantized model is to its reference: KL divergence, top-1, perplexity, Δp.

`compare(reference, candidate, text)` runs both GGUFs (llama.cpp, F32 KV cache, flash attention
off, the same threads) over the text the way `llama-perplexity --kl-divergence` does:

- the text is tokenized with the reference's vocabulary, special tokens added (BOS), and cut into
  ``len // n_ctx`` chunks of ``n_ctx`` tokens (at least two); each chunk starts a fresh KV cache,
  its first token replaced by BOS when the vocabulary adds one;
- only the second half of each chunk is scored: the logits at positions ``n_ctx/2 .. n_ctx-2``
  predict tokens ``n_ctx/2+1 .. n_ctx-1`` (``n_ctx - 1 - n_ctx/2`` tokens per chunk);
- per scored token: KL(reference || candidate) over the whole vocabulary (float64), whether the
  two argmax tokens agree, each model's negative log-likelihood of the actual next token, and
  Δp = p_candidate(next) - p_reference(next).

Logits are streamed chunk by chunk and never held for the whole text (Gemma's vocabulary is 262k:
one 512-token chunk of logits is 0.5 GB). `cached_references()` keeps the reference's log-probs of
each chunk in a temporary file, so that comparing many candidates against one reference runs the
reference once.

This module must not import `convert` (another benchmark uses it on any GGUFs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edge_llm.errors import EdgeLLMError

GGML_TYPE_F32 = 0
PERCENTILES = {"p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
_ROWS = 16  # rows of logits turned into float64 at a time


class FidelityError(EdgeLLMError):
    """Two models that cannot be compared, or a text too short to compare them on."""


class _Threads:
    """Threads for llama.cpp: ``fixed`` when given, else the CPUs other processes leave free,
    read again before each chunk (a thread whose core is busy stalls every graph barrier)."""

    def __init__(self, fixed: int | None):
        from edge_llm.devices import CpuLoad, available_cpus, threads_for

        self.fixed, self.cpus, self.pick = fixed, available_cpus(), threads_for
        self.load = None if fixed else CpuLoad()
        self.current = fixed or threads_for(self.cpus, self.load.others_busy(wait=True))

    def apply(self, C, ctx) -> None:
        if not self.fixed:
            busy = self.load.others_busy(wait=False)
            if busy is not None:
                self.current = self.pick(self.cpus, busy)
        C.llama_set_n_threads(ctx, self.current, self.current)


class _Model:
    """One GGUF with one context: n_ctx tokens, one batch, F32 KV cache."""

    def __init__(self, path: Path, n_ctx: int, threads: _Threads):
        import llama_cpp.llama_cpp as C

        from edge_llm import backend  # noqa: F401  (routes llama.cpp's log)

        self.C, self.path = C, path
        self.ctx = self.batch = None
        mp = C.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = C.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise FidelityError(f"llama.cpp could not load {path}; is it a complete GGUF model?")
        self.vocab = C.llama_model_get_vocab(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = n_ctx
        self.threads = threads

    def open_context(self) -> None:
        C = self.C
        cp = C.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = self.n_ctx
        cp.n_seq_max = 1
        cp.n_threads = cp.n_threads_batch = self.threads.current
        cp.type_k = cp.type_v = GGML_TYPE_F32
        cp.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise FidelityError(
                f"llama.cpp could not create a context of {self.n_ctx} for {self.path}"
            )
        self.mem = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(self.n_ctx, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        from edge_llm.backend import tokenize

        return tokenize(self.vocab, text, True, False)

    def bos(self) -> int | None:
        C = self.C
        return C.llama_vocab_bos(self.vocab) if C.llama_vocab_get_add_bos(self.vocab) else None

    def logits(self, tokens: list[int], first: int, last: int) -> np.ndarray:
        """Evaluate one chunk from an empty cache; the logits of positions first..last-1 as a
        view of llama.cpp's buffer [last-first, n_vocab] (valid until the next call)."""
        C, b = self.C, self.batch
        self.threads.apply(C, self.ctx)
        C.llama_memory_clear(self.mem, True)
        for k, tok in enumerate(tokens):
            b.token[k], b.pos[k], b.n_seq_id[k] = tok, k, 1
            b.seq_id[k][0] = 0
            b.logits[k] = first <= k < last
        b.n_tokens = len(tokens)
        rc = C.llama_decode(self.ctx, b)
        if rc != 0:
            raise FidelityError(f"llama.cpp failed to evaluate a chunk of {self.path} (code {rc})")
        ptr = C.llama_get_logits(self.ctx)
        n = last - first
        return np.ctypeslib.as_array(ptr, shape=(n * self.n_vocab,)).reshape(n, self.n_vocab)

    def close(self) -> None:
        C = self.C
        if self.batch is not None:
            C.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            C.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            C.llama_model_free(self.model)
            self.model = None


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def chunk_plan(tokens: list[int], n_ctx: int, bos: int | None, max_chunks: int | None):
    """llama-perplexity's chunks: ``len // n_ctx`` of ``n_ctx`` tokens, BOS first if added."""
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


def _check_vocab(ref: _Model, cand: _Model, text: str, tokens: list[int]) -> None:
    if ref.n_vocab != cand.n_vocab:
        raise FidelityError(
            f"the models have different vocabularies ({ref.n_vocab} vs {cand.n_vocab} tokens): "
            f"{cand.path.name} is not a quantization of {ref.path.name}"
        )
    if cand.tokenize(text) != tokens or ref.bos() != cand.bos():
        raise FidelityError(
            f"the models' vocabularies tokenize the text differently: {cand.path.name} is not a "
            f"quantization of {ref.path.name}"
        )


# --- the reference's log-probs, optionally kept for the next comparison ---------------------------

_CACHE: dict | None = None  # {"dir": Path, "key": str, "chunks": [path, ...]}


@contextlib.contextmanager
def cached_references() -> Iterator[None]:
    """Within this block, `compare` runs a reference over a text once and keeps its per-chunk
    log-probs in a temporary folder (float32; 0.25 GB per 512-token chunk for a 262k vocabulary);
    the folder is removed on exit."""
    global _CACHE
    prev = _CACHE
    tmp = Path(tempfile.mkdtemp(prefix="edge-llm-fidelity-"))
    _CACHE = {"dir": tmp, "key": None, "chunks": []}
    try:
        yield
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _CACHE = prev


def _reference_key(path: Path, text: str, n_ctx: int, n_chunks: int) -> str:
    st = path.stat()
    h = hashlib.sha256()
    h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{n_ctx}|{n_chunks}|".encode())
    h.update(text.encode())
    return h.hexdigest()


def compare(
    reference: str | os.PathLike,
    candidate: str | os.PathLike,
    text: str,
    n_ctx: int = 512,
    threads: int | None = None,
    max_chunks: int | None = None,
) -> dict:
    """Fidelity of ``candidate`` to ``reference`` (two GGUFs with the same vocabulary) on ``text``.

    Returns mean_kld, kld_percentiles (median, p90, p95, p99, p99.9, max), top1 (fraction of
    scored tokens whose argmax agrees), ppl_reference, ppl_candidate, ppl_ratio, mean_delta_p,
    rms_delta_p, tokens (scored) and chunks.
    """
    reference, candidate = Path(reference), Path(candidate)
    for p in (reference, candidate):
        if not p.is_file():
            raise FidelityError(f"{p} does not exist; pass two GGUF files")
    if n_ctx < 8:
        raise FidelityError(f"--ctx {n_ctx} is too small; use 512 (llama-perplexity's default)")
    threads = _Threads(threads)
    ref = _Model(reference, n_ctx, threads)
    cand = None
    try:
        cand = _Model(candidate, n_ctx, threads)
        tokens = ref.tokenize(text)
        _check_vocab(ref, cand, text, tokens)
        if len(tokens) < 2 * n_ctx:
            raise FidelityError(
                f"the text tokenizes to {len(tokens)} tokens; comparing with a context of {n_ctx} "
                f"needs at least {2 * n_ctx}: give a longer text or a smaller --ctx"
            )
        chunks = chunk_plan(tokens, n_ctx, ref.bos(), max_chunks)
        first, last = n_ctx // 2, n_ctx - 1
        ref_rows = _reference_rows(ref, chunks, first, last, text)
        cand.open_context()
        kld, same, nll_ref, nll_cand, dp = [], 0, [], [], []
        for ci, chunk in enumerate(chunks):
            lr_all = ref_rows(ci)
            lc_raw = cand.logits(chunk, first, last)
            nxt = np.asarray(chunk[first + 1 : last + 1])
            for r0 in range(0, last - first, _ROWS):
                r1 = min(r0 + _ROWS, last - first)
                lr = np.asarray(lr_all[r0:r1], dtype=np.float64)
                # both sides as float32 log-probs (the reference is kept so): identical
                # models give exactly 0
                lc = _log_softmax(lc_raw[r0:r1]).astype(np.float32).astype(np.float64)
                kld.append((np.exp(lr) * (lr - lc)).sum(axis=-1))
                same += int((lr.argmax(-1) == lc_raw[r0:r1].argmax(-1)).sum())
                idx = np.arange(r1 - r0)
                nr, nc = -lr[idx, nxt[r0:r1]], -lc[idx, nxt[r0:r1]]
                nll_ref.append(nr)
                nll_cand.append(nc)
                dp.append(np.exp(-nc) - np.exp(-nr))
    finally:
        ref.close()
        if cand is not None:
            cand.close()
    return summarize(
        np.concatenate(kld), same, np.concatenate(nll_ref), np.concatenate(nll_cand),
        np.concatenate(dp), len(chunks),
    )  # fmt: skip


def _reference_rows(ref: _Model, chunks, first: int, last: int, text: str):
    """A function chunk index -> the reference's log-probs of the scored rows [rows, n_vocab]
    (computed now and kept, or read back from `cached_references`' folder)."""
    cache = _CACHE
    key = _reference_key(ref.path, text, ref.n_ctx, len(chunks)) if cache else None
    if cache and cache["key"] == key:
        return lambda i: np.load(cache["chunks"][i], mmap_mode="r")
    ref.open_context()
    stored = []
    for i, chunk in enumerate(chunks):
        raw = ref.logits(chunk, first, last)
        rows = np.empty(raw.shape, dtype=np.float32)
        for r0 in range(0, raw.shape[0], _ROWS):
            rows[r0 : r0 + _ROWS] = _log_softmax(raw[r0 : r0 + _ROWS])
        if cache:
            p = cache["dir"] / f"ref-{i}.npy"
            np.save(p, rows)
            stored.append(p)
        else:
            stored.append(rows)
    if cache:
        cache["key"], cache["chunks"] = key, stored
        return lambda i: np.load(stored[i], mmap_mode="r")
    return lambda i: stored[i]


def summarize(kld, same, nll_ref, nll_cand, dp, chunks) -> dict:
    """The statistics llama-perplexity --kl-divergence prints, from per-token values."""
    n = int(kld.size)
    pct = {"median": float(np.median(kld))}
    pct.update({k: float(np.percentile(kld, q)) for k, q in PERCENTILES.items()})
    pct["max"] = float(kld.max())
    ppl_r, ppl_c = float(np.exp(nll_ref.mean())), float(np.exp(nll_cand.mean()))
    return {
        "mean_kld": float(kld.mean()),
        "kld_percentiles": pct,
        "top1": same / n,
        "ppl_reference": ppl_r,
        "ppl_candidate": ppl_c,
        "ppl_ratio": float(np.exp(nll_cand.mean() - nll_ref.mean())),
        "mean_delta_p": float(dp.mean()),
        "rms_delta_p": float(np.sqrt((dp**2).mean())),
        "tokens": n,
        "chunks": int(chunks),
    }
