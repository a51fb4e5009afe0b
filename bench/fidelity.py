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

Each statistic carries a 95% interval: the scored tokens of a chunk come in runs that agree with
each other (a passage the candidate finds hard stays hard for a while), so the tokens are resampled
in blocks of ``BLOCK`` neighbours within a chunk (`bench.stats.block_ratio_ci`), not one by one.
`paired(a, b)` compares two candidates scored against one reference on the same tokens: the ratio
of their mean KLDs and the difference of their top-1 rates, each with a paired interval.

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

from bench import stats
from edge_llm.errors import EdgeLLMError
from edge_llm.llama.scoring import ScoringContext, chunk_plan, log_softmax
from edge_llm.llama.threads import ThreadPolicy

__all__ = ["compare", "paired", "cached_references", "chunk_plan", "summarize", "FidelityError"]
PERCENTILES = {"p90": 90.0, "p95": 95.0, "p99": 99.0, "p99.9": 99.9}
_ROWS = 16  # rows of logits turned into float64 at a time
BLOCK = 16  # neighbouring scored tokens resampled together for the intervals


class FidelityError(EdgeLLMError):
    """Two models that cannot be compared, or a text too short to compare them on."""


class _Model(ScoringContext):
    """One GGUF with one context: n_ctx tokens, one batch, F32 KV cache (opened on first use)."""

    def __init__(self, path: Path, n_ctx: int, threads: ThreadPolicy):
        super().__init__(path, n_ctx=n_ctx, threads=threads, error=FidelityError)
        self.n_ctx = n_ctx

    def logits(self, tokens: list[int], first: int, last: int) -> np.ndarray:
        """Evaluate one chunk from an empty cache; the logits of positions first..last-1 as a
        view of llama.cpp's buffer [last-first, n_vocab] (valid until the next call)."""
        return self.eval_chunk(tokens, first, last)


def _check_vocab(ref: _Model, cand: _Model, text: str, tokens: list[int]) -> None:
    if ref.n_vocab != cand.n_vocab:
        raise FidelityError(
            f"the models have different vocabularies ({ref.n_vocab} vs {cand.n_vocab} tokens): "
            f"{cand.path.name} is not a quantization of {ref.path.name}"
        )
    if cand.tokenize(text) != tokens or ref.chunk_bos() != cand.chunk_bos():
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
    progress=None,
    per_token: bool = False,
) -> dict:
    """Fidelity of ``candidate`` to ``reference`` (two GGUFs with the same vocabulary) on ``text``.

    ``progress(stage, n, total)``: called as each chunk is scored (a full comparison takes minutes).

    Returns mean_kld, kld_percentiles (median, p90, p95, p99, p99.9, max), top1 (fraction of
    scored tokens whose argmax agrees), ppl_reference, ppl_candidate, ppl_ratio, mean_delta_p,
    rms_delta_p, tokens (scored) and chunks; mean_kld_ci95, top1_ci95 and ppl_ratio_ci95 (block
    bootstrap). ``per_token``: also "per_token", the arrays `paired` takes.
    """
    reference, candidate = Path(reference), Path(candidate)
    for p in (reference, candidate):
        if not p.is_file():
            raise FidelityError(f"{p} does not exist; pass two GGUF files")
    if n_ctx < 8:
        raise FidelityError(f"--ctx {n_ctx} is too small; use 512 (llama-perplexity's default)")
    threads = ThreadPolicy(threads)
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
        chunks = chunk_plan(tokens, n_ctx, ref.chunk_bos(), max_chunks)
        first, last = n_ctx // 2, n_ctx - 1
        ref_rows = _reference_rows(ref, chunks, first, last, text)
        cand.open()
        kld, same, nll_ref, nll_cand, dp, blocks = [], [], [], [], [], []
        n_rows = last - first
        for ci, chunk in enumerate(chunks):
            # blocks never straddle two chunks: each chunk starts a fresh context
            blocks.append(ci * -(-n_rows // BLOCK) + np.arange(n_rows) // BLOCK)
            if progress:
                progress("comparing", ci, len(chunks))
            lr_all = ref_rows(ci)
            lc_raw = cand.logits(chunk, first, last)
            nxt = np.asarray(chunk[first + 1 : last + 1])
            for r0 in range(0, last - first, _ROWS):
                r1 = min(r0 + _ROWS, last - first)
                lr = np.asarray(lr_all[r0:r1], dtype=np.float64)
                # both sides as float32 log-probs (the reference is kept so): identical
                # models give exactly 0
                lc = log_softmax(lc_raw[r0:r1]).astype(np.float32).astype(np.float64)
                kld.append((np.exp(lr) * (lr - lc)).sum(axis=-1))
                same.append(lr.argmax(-1) == lc_raw[r0:r1].argmax(-1))
                idx = np.arange(r1 - r0)
                nr, nc = -lr[idx, nxt[r0:r1]], -lc[idx, nxt[r0:r1]]
                nll_ref.append(nr)
                nll_cand.append(nc)
                dp.append(np.exp(-nc) - np.exp(-nr))
        if progress:
            progress("comparing", len(chunks), len(chunks))
    finally:
        ref.close()
        if cand is not None:
            cand.close()
    arrays = {
        "kld": np.concatenate(kld),
        "top1": np.concatenate(same),
        "nll_ref": np.concatenate(nll_ref),
        "nll_cand": np.concatenate(nll_cand),
        "block": np.concatenate(blocks),
    }
    out = summarize(
        arrays["kld"],
        int(arrays["top1"].sum()),
        arrays["nll_ref"],
        arrays["nll_cand"],
        np.concatenate(dp),
        len(chunks),
        blocks=arrays["block"],
        top1=arrays["top1"],
    )
    if per_token:
        out["per_token"] = arrays
    return out


def _reference_rows(ref: _Model, chunks, first: int, last: int, text: str):
    """A function chunk index -> the reference's log-probs of the scored rows [rows, n_vocab]
    (computed now and kept, or read back from `cached_references`' folder)."""
    cache = _CACHE
    key = _reference_key(ref.path, text, ref.n_ctx, len(chunks)) if cache else None
    if cache and cache["key"] == key:
        return lambda i: np.load(cache["chunks"][i], mmap_mode="r")
    ref.open()
    stored = []
    for i, chunk in enumerate(chunks):
        raw = ref.logits(chunk, first, last)
        rows = np.empty(raw.shape, dtype=np.float32)
        for r0 in range(0, raw.shape[0], _ROWS):
            rows[r0 : r0 + _ROWS] = log_softmax(raw[r0 : r0 + _ROWS])
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


def summarize(kld, same, nll_ref, nll_cand, dp, chunks, blocks=None, top1=None) -> dict:
    """The statistics llama-perplexity --kl-divergence prints, from per-token values; with
    ``blocks`` (each token's block id) and ``top1`` (each token's agreement), their intervals."""
    n = int(kld.size)
    pct = {"median": float(np.median(kld))}
    pct.update({k: float(np.percentile(kld, q)) for k, q in PERCENTILES.items()})
    pct["max"] = float(kld.max())
    ppl_r, ppl_c = float(np.exp(nll_ref.mean())), float(np.exp(nll_cand.mean()))
    out = {
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
    if blocks is not None and top1 is not None:
        size = stats.block_sums(np.ones(n), blocks)
        out["mean_kld_ci95"] = list(stats.block_ratio_ci(stats.block_sums(kld, blocks), size))
        out["top1_ci95"] = list(stats.block_ratio_ci(stats.block_sums(top1, blocks), size))
        lo, hi = stats.block_ratio_ci(stats.block_sums(nll_cand - nll_ref, blocks), size)
        out["ppl_ratio_ci95"] = [float(np.exp(lo)), float(np.exp(hi))]
        out["interval"] = f"95%, bootstrap over blocks of {BLOCK} neighbouring tokens"
    return out


def paired(a: dict, b: dict) -> dict:
    """Candidate B against candidate A, both `compare`d with ``per_token=True`` against the same
    reference on the same text: B's mean KLD as a fraction of A's and the difference of their
    top-1 rates (B - A), each with a paired block-bootstrap interval, and a verdict on the KLD
    ("better" when B's KLD is lower with the whole interval below 1)."""
    ta, tb = a["per_token"], b["per_token"]
    if len(ta["kld"]) != len(tb["kld"]) or not np.array_equal(ta["block"], tb["block"]):
        raise FidelityError(
            "the two comparisons scored different tokens; compare both against one reference "
            "on one text with the same --ctx and --chunks"
        )
    blocks = ta["block"]
    ka, kb = stats.block_sums(ta["kld"], blocks), stats.block_sums(tb["kld"], blocks)
    lo, hi = stats.block_ratio_ci(kb, ka)
    size = stats.block_sums(np.ones(len(blocks)), blocks)
    d = stats.block_sums(tb["top1"].astype(float) - ta["top1"].astype(float), blocks)
    dlo, dhi = stats.block_ratio_ci(d, size)
    word = stats.verdict(1 - hi, 1 - lo)  # KLD ratio below 1: B is closer to the reference
    return {
        "kld_ratio": float(kb.sum() / ka.sum()),
        "kld_ratio_ci95": [lo, hi],
        "top1_difference": float(d.sum() / size.sum()),
        "top1_difference_ci95": [dlo, dhi],
        "tokens": int(len(blocks)),
        "verdict": word,
    }
