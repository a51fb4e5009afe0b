"""Log-probabilities from llama.cpp's logits at every position: what log-likelihood scoring
(multiple choice) and bits per byte need, and what the runtime's ``Model`` does not expose (it
asks llama.cpp for the last position's logits only).

``Scorer`` owns one llama.cpp context through ``edge_llm.backend`` (the runtime's loader, so
loading errors read the same) and feeds it batches whose every token requests logits. Each batch's
logits are reduced to log-probabilities of the tokens that follow at once (a row of Gemma 3's
262k-entry vocabulary is 1 MB), so memory stays at one batch of logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEFAULT_BATCH = 128  # the logits of a batch: 128 x 262k x 4 B = 134 MB for Gemma 3


class Scorer:
    """A model loaded for scoring: ``logprobs(tokens)``, ``continuations(context, options)``."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 1024,
        threads: int | None = None,
        n_batch: int = DEFAULT_BATCH,
    ):
        import llama_cpp.llama_cpp as C  # noqa: N812

        from edge_llm import backend, gguf_info
        from edge_llm.devices import CpuLoad, available_cpus, threads_for
        from edge_llm.errors import InvalidModelError

        self.C = C
        self.path = Path(path)
        gguf_info.check_gguf(self.path)
        # Threads follow the host's load unless given, as the runtime's do (a thread that shares
        # its core with another process stalls every barrier: 2 threads on a 2-CPU host with one
        # CPU busy run several times slower than 1).
        self._load = None if threads else CpuLoad()
        busy = self._load.others_busy(wait=True) if self._load else None
        n = threads or threads_for(available_cpus(), busy)
        cfg = backend.ContextConfig(
            n_ctx=n_ctx, n_threads=n, n_threads_batch=n, n_batch=n_batch, kv_type="f16"
        )
        try:
            self.b = backend.Backend(self.path, cfg)
        except backend.LoadError as e:
            raise InvalidModelError(gguf_info.explain_load_failure(self.path, e.details)) from None
        self.threads = n
        # llama.cpp caps the batch at the context asked for (before rounding the context up).
        self.n_batch = int(C.llama_n_batch(self.b.ctx))
        self.n_ctx = self.b.n_ctx
        self.n_vocab = self.b.n_vocab
        self._batch = C.llama_batch_init(self.n_batch, 0, 1)
        self._cache: list[int] = []  # tokens whose K/V are in the cache

    # --- tokens -----------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return self.b.tokenize(text, add_special=add_bos and self.b.add_bos(), parse_special=False)

    def piece(self, token: int) -> bytes:
        return self.b.token_to_piece(token)

    @property
    def bos(self) -> int | None:
        t = self.b.bos()
        return t if t >= 0 else None

    # --- evaluation -------------------------------------------------------------------------
    def _decode(self, tokens: list[int], pos0: int, targets: list[int] | None) -> np.ndarray:
        """Decode ``tokens`` at positions pos0.. ; if ``targets`` (one per token), return
        log P(targets[i] | ..tokens[i]) for every i (else only the cache is filled)."""
        C, batch = self.C, self._batch
        out = np.empty(len(tokens) if targets is not None else 0, dtype=np.float64)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            n = len(chunk)
            batch.n_tokens = n
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos0 + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = targets is not None or (start + i == len(tokens) - 1)
            rc = C.llama_decode(self.b.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc}")
            if targets is not None:
                ptr = C.llama_get_logits(self.b.ctx)
                logits = np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab))
                tgt = np.asarray(targets[start : start + n])
                out[start : start + n] = _target_logprobs(logits, tgt)
        return out

    def _last_logprobs(self) -> np.ndarray:
        return _log_softmax(self.b.logits())

    def adapt_threads(self) -> None:
        """Run on the CPUs other processes leave free now (no-op with explicit threads)."""
        if self._load is None:
            return
        from edge_llm.devices import available_cpus, threads_for

        busy = self._load.others_busy(wait=False)
        if busy is None:
            return
        n = threads_for(available_cpus(), busy)
        if n != self.threads:
            self.b.set_threads(n, n)
            self.threads = n

    def reset(self) -> None:
        self.b.kv_clear()
        self._cache = []

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        """log P(tokens[j] | tokens[:j]) for j = 1 .. len(tokens)-1, from an empty cache."""
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx}")
        self.adapt_threads()
        self.reset()
        lp = self._decode(tokens[:-1], 0, tokens[1:])
        self._cache = list(tokens[:-1])
        return lp

    def continuations(self, context: list[int], options: list[list[int]]) -> list[np.ndarray]:
        """Per-token log-probabilities of each option's tokens after ``context``.

        The context is decoded once (reusing the cache's common prefix with the previous call);
        each option is then decoded after it, the cache cut back to the context between options.
        """
        longest = max(len(o) for o in options)
        if len(context) + longest > self.n_ctx:
            raise ValueError(
                f"context {len(context)} + option {longest} tokens exceed the context {self.n_ctx}"
            )
        self.adapt_threads()
        keep = 0
        for a, b in zip(self._cache, context[:-1]):
            if a != b:
                break
            keep += 1
        C = self.C
        if not C.llama_memory_seq_rm(self.b.mem, 0, keep, -1):
            self.b.kv_clear()
            keep = 0
        self._decode(context[keep:], keep, None)  # logits of the last context token only
        self._cache = list(context)
        first = self._last_logprobs()
        n = len(context)
        out = []
        for opt in options:
            if not opt:
                raise ValueError("an option has no tokens")
            C.llama_memory_seq_rm(self.b.mem, 0, n, -1)
            rest = self._decode(opt[:-1], n, opt[1:]) if len(opt) > 1 else np.empty(0)
            out.append(np.concatenate([[first[opt[0]]], rest]))
        C.llama_memory_seq_rm(self.b.mem, 0, n, -1)
        return out

    def close(self) -> None:
        if self._batch is not None:
            self.C.llama_batch_free(self._batch)
            self._batch = None
        self.b.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def _target_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row-wise log_softmax(logits)[i, targets[i]], without materialising the full log-softmax."""
    m = logits.max(axis=1)
    lse = m.astype(np.float64) + np.log(np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64))
    return logits[np.arange(len(targets)), targets].astype(np.float64) - lse
