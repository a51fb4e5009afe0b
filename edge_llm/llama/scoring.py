"""A model loaded for scoring: logits at any position, not just the last one.

Generation (`edge_llm.llama.backend`) asks llama.cpp for the last position's logits; scoring
(perplexity, KL divergence between two quantizations, multiple-choice log-likelihood, bits per
byte, importance matrices, size-budget probes) needs them at many positions and owns the batch
itself. `ScoringContext` is the one place that does this: it loads a GGUF, opens a context (by
default as llama-perplexity and llama-imatrix do: F32 KV cache, flash attention off, one batch of
the whole context), evaluates token batches on any sequence and position, returns logits as a view
of llama.cpp's buffer, reduces them (`log_softmax`, `target_logprobs`, `top_k`), can run an
evaluation callback on every tensor of the graph (`edge_llm.llama.activations`), and frees
everything.

Shared prefixes: `continuations(prefix, options)` evaluates the prefix once and scores each option
after it. Sequentially (the cache cut back to the prefix between options: the same cells, so the
same numerics whatever the order), or with ``parallel=True`` in one batch: the prefix's cells are
given to one sequence per option (``llama_memory_seq_cp``, no copy in a unified KV cache) and all
options' tokens are evaluated together, each on its own sequence.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_llm.llama import binding, gguf, lora
from edge_llm.llama.binding import KV_TYPES, C, LoadError
from edge_llm.llama.threads import ThreadPolicy

# --- reductions of logits -----------------------------------------------------------------------


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (a new array)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def logsumexp_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(logits))) in float64: what a row's log-softmax subtracts."""
    m = logits.max(axis=1)
    return m.astype(np.float64) + np.log(np.exp(logits - m[:, None]).sum(axis=1, dtype=np.float64))


def target_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row-wise log_softmax(logits)[i, targets[i]], without materialising the full log-softmax."""
    lse = logsumexp_rows(logits)
    return logits[np.arange(len(targets)), targets].astype(np.float64) - lse


def top_k_rows(logits: np.ndarray, k: int, lse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` likeliest tokens: (ids [rows, k], log-probs [rows, k]), best first;
    ``lse``: the rows' `logsumexp_rows`. The log-probs are computed exactly as
    `target_logprobs` computes them, so a token's value is the same float in both."""
    k = min(k, logits.shape[1])
    idx = np.argpartition(logits, -k, axis=1)[:, -k:]
    vals = np.take_along_axis(logits, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float64) - lse[:, None]
    return idx, vals


def top_k(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of a row of logits or log-probs: (token ids, values), best first."""
    k = min(k, row.shape[-1])
    idx = np.argpartition(row, -k)[-k:]
    idx = idx[np.argsort(-row[idx], kind="stable")]
    return idx, row[idx]


def chunk_plan(tokens: Sequence[int], n_ctx: int, bos: int | None, max_chunks: int | None = None):
    """llama-perplexity's and llama-imatrix's chunks: ``len // n_ctx`` chunks of ``n_ctx`` tokens,
    each starting with BOS when the vocabulary adds one (the first token replaced, not shifted)."""
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


def tokenize_file(path: str | Path, text: str, error: type[Exception] | None = None):
    """(tokens, chunk BOS or None) of ``text`` with the GGUF's vocabulary alone (no weights
    loaded), tokenized as llama-perplexity does: special tokens added, their text not parsed."""
    from edge_llm.errors import InvalidModelError

    try:
        model = binding.load_model(path, vocab_only=True)
    except LoadError as e:
        raise (error or InvalidModelError)(
            gguf.explain_load_failure(Path(path), e.details)
        ) from None
    try:
        vocab = C.llama_model_get_vocab(model)
        bos = C.llama_vocab_bos(vocab) if C.llama_vocab_get_add_bos(vocab) else None
        return binding.tokenize(vocab, text, True, False), bos
    finally:
        C.llama_model_free(model)


# --- the context --------------------------------------------------------------------------------


class ScoringContext:
    """One GGUF and one llama.cpp context for scoring.

    ``n_ctx`` cells of KV cache; ``n_batch`` tokens per evaluation (default: the context);
    ``n_seq`` sequences (more than one: a unified KV cache, for `continuations(parallel=True)`);
    ``threads``: a count, None (follow the host's load) or a shared `ThreadPolicy`; ``kv_type``
    and ``flash_attn`` (None: llama.cpp's defaults); ``eval_callback``: a
    `binding.EVAL_CALLBACK` run on every tensor of the graph; ``error``: the exception type that
    reports a file llama.cpp refuses; ``kv_unified=False``: with several sequences, each its own
    cache of ``n_ctx / n_seq`` cells, so a token attends over its sequence's cells only, not
    every sequence's (what independent sequences want; None: unified when ``n_seq > 1``, which
    shared prefixes need); ``adapters``: LoRA adapters ((path, scale) pairs) applied to every
    evaluation; ``n_gpu_layers``: layers offloaded to a GPU device (default none: the CPU
    alone, the reference every other backend is judged against). The context opens on first use (or `open()`), so that two
    models can be loaded and checked before either allocates its cache.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 512,
        n_batch: int | None = None,
        n_seq: int = 1,
        threads: int | ThreadPolicy | None = None,
        kv_type: str | None = "f32",
        flash_attn: bool | None = False,
        eval_callback=None,
        error: type[Exception] | None = None,
        kv_unified: bool | None = None,
        adapters: Sequence[tuple[str | Path, float]] = (),
        n_gpu_layers: int = 0,
    ):
        from edge_llm.errors import InvalidModelError

        self.path = Path(path)
        self.error = error or InvalidModelError
        self.model = self.ctx = self.batch = None
        self.threads = threads if isinstance(threads, ThreadPolicy) else ThreadPolicy(threads)
        self._params = (n_ctx, n_batch or n_ctx, n_seq, kv_type, flash_attn, eval_callback)
        self._unified = n_seq > 1 if kv_unified is None else kv_unified
        try:
            self.model = binding.load_model(self.path, n_gpu_layers=n_gpu_layers)
        except LoadError as e:
            raise self.error(gguf.explain_load_failure(self.path, e.details)) from None
        self.vocab = C.llama_model_get_vocab(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        # LoRA adapters (checked by the caller: edge_llm.adapters.check), applied on open()
        self._adapters = []
        for apath, scale in adapters:
            try:
                self._adapters.append((lora.load(self.model, apath), float(scale)))
            except LoadError as e:
                self.close()
                raise self.error(
                    f"llama.cpp could not load adapter {apath}: {e.details[-1:]}"
                ) from None
        self.n_ctx, self.n_batch, self.n_seq = n_ctx, n_batch or n_ctx, n_seq
        self._cache: list[int] = []  # tokens whose K/V are in sequence 0, from position 0

    # --- set-up and tear-down -----------------------------------------------------------------
    def open(self) -> ScoringContext:
        if self.ctx:
            return self
        n_ctx, n_batch, n_seq, kv_type, flash_attn, callback = self._params
        cp = C.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_batch, n_batch
        cp.n_seq_max = n_seq
        cp.kv_unified = self._unified
        cp.n_outputs_max = max(n_batch, n_seq)  # llama.cpp reserves one output per sequence
        cp.n_threads = cp.n_threads_batch = self.threads.current
        if kv_type is not None:
            cp.type_k = cp.type_v = KV_TYPES[kv_type]
        if flash_attn is not None:
            cp.flash_attn_type = (
                C.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else C.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        if callback is not None:
            cp.cb_eval, cp.cb_eval_user_data = callback, None
        cp.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise self.error(f"llama.cpp could not create a context of {n_ctx} for {self.path}")
        if self._adapters:
            lora.set_on(self.ctx, self._adapters)
        self.mem = C.llama_get_memory(self.ctx)
        # llama.cpp rounds the context up and caps the batch at the context asked for
        self.n_ctx = int(C.llama_n_ctx(self.ctx))
        self.n_batch = int(C.llama_n_batch(self.ctx))
        self.batch = C.llama_batch_init(self.n_batch, 0, n_seq)
        return self

    def close(self) -> None:
        if self.batch is not None:
            C.llama_batch_free(self.batch)
            self.batch = None
        binding.free(self)

    def __enter__(self) -> ScoringContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    # --- vocabulary ---------------------------------------------------------------------------
    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        return binding.tokenize(self.vocab, text, add_special, parse_special)

    def token_to_piece(self, token: int, special: bool = False) -> bytes:
        return binding.token_to_piece(self.vocab, token, special)

    def add_bos(self) -> bool:
        return bool(C.llama_vocab_get_add_bos(self.vocab))

    def bos_token(self) -> int | None:
        t = C.llama_vocab_bos(self.vocab)
        return t if t >= 0 else None

    def eos(self) -> int:
        return C.llama_vocab_eos(self.vocab)

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends a generation (EOS, EOT, <|im_end|>...)."""
        return bool(C.llama_vocab_is_eog(self.vocab, token))

    def chunk_bos(self) -> int | None:
        """The token a chunk starts with (`chunk_plan`): BOS when the vocabulary adds one."""
        return C.llama_vocab_bos(self.vocab) if self.add_bos() else None

    # --- the KV cache -------------------------------------------------------------------------
    def clear(self) -> None:
        self.open()
        C.llama_memory_clear(self.mem, True)
        self._cache = []

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        """Drop sequence ``seq``'s positions [p0, p1) (-1: open ends); False if it cannot."""
        return bool(C.llama_memory_seq_rm(self.open().mem, seq, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Give sequence ``dst`` the cells of ``src`` in [p0, p1)."""
        C.llama_memory_seq_cp(self.open().mem, src, dst, p0, p1)

    def adapt_threads(self) -> int:
        """Run on the threads the policy picks now (see `ThreadPolicy`)."""
        return self.threads.apply(self.open().ctx)

    # --- evaluation ---------------------------------------------------------------------------
    def eval_entries(
        self, tokens: Sequence[int], pos: Sequence[int], seq: Sequence[int], want: Sequence[bool]
    ) -> np.ndarray:
        """Evaluate one batch (at most ``n_batch`` tokens): token i at position ``pos[i]`` of
        sequence ``seq[i]``; the logits of the tokens with ``want[i]``, in order, as a view
        [n_wanted, n_vocab] of llama.cpp's buffer (valid until the next evaluation)."""
        self.open()
        b, n = self.batch, len(tokens)
        if n > self.n_batch:
            raise ValueError(f"{n} tokens do not fit a batch of {self.n_batch}")
        n_out = 0
        for k in range(n):
            b.token[k], b.pos[k], b.n_seq_id[k] = tokens[k], pos[k], 1
            b.seq_id[k][0] = seq[k]
            b.logits[k] = bool(want[k])
            n_out += bool(want[k])
        b.n_tokens = n
        rc = C.llama_decode(self.ctx, b)
        if rc != 0:
            raise self.error(
                f"llama.cpp failed to evaluate a batch of {self.path.name} (code {rc})"
            )
        if n_out == 0:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        ptr = C.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out * self.n_vocab,)).reshape(n_out, -1)

    def eval(
        self,
        tokens: Sequence[int],
        *,
        pos0: int = 0,
        seq: int = 0,
        first: int | None = None,
        last: int | None = None,
    ) -> np.ndarray:
        """Evaluate ``tokens`` (one batch) at positions pos0.. of ``seq``; the logits of tokens
        ``first .. last-1`` (default: the last token only) as a view [rows, n_vocab]."""
        n = len(tokens)
        if first is None:
            first, last = n - 1, n
        last = n if last is None else last
        return self.eval_entries(
            tokens, range(pos0, pos0 + n), [seq] * n, [first <= k < last for k in range(n)]
        )

    def eval_chunk(self, tokens: Sequence[int], first: int = 0, last: int | None = None):
        """One chunk from an empty cache (threads adapted first): the logits of tokens
        ``first .. last-1`` (default: all) as a view [rows, n_vocab]."""
        self.adapt_threads()
        self.clear()
        return self.eval(tokens, first=first, last=len(tokens) if last is None else last)

    def target_logprobs(
        self, tokens: Sequence[int], targets: Sequence[int] | None, *, pos0: int = 0, seq: int = 0
    ) -> np.ndarray:
        """Evaluate ``tokens`` (any number, ``n_batch`` at a time) at positions pos0.. of
        ``seq``; with ``targets`` (one per token), log P(targets[i] | ..tokens[i]) for every i,
        else nothing (only the cache is filled, and the last token's logits requested)."""
        out = np.empty(len(tokens) if targets is not None else 0, dtype=np.float64)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            n = len(chunk)
            if targets is None:
                last = start + n == len(tokens)
                self.eval_entries(
                    chunk,
                    range(pos0 + start, pos0 + start + n),
                    [seq] * n,
                    [last and k == n - 1 for k in range(n)],
                )
                continue
            logits = self.eval_entries(
                chunk, range(pos0 + start, pos0 + start + n), [seq] * n, [True] * n
            )
            out[start : start + n] = target_logprobs(logits, np.asarray(targets[start : start + n]))
        return out

    def prompt_logprobs(
        self, tokens: Sequence[int], top_n: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every prompt token's log-probability given the ones before it, from an empty cache:
        for j = 1 .. len(tokens)-1, log P(tokens[j] | tokens[:j]) and the ``top_n`` likeliest
        tokens at j (ids [n-1, top_n], log-probs, best first). What an OpenAI-style ``echo``
        returns for a prompt; one batch of logits in memory at a time."""
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx}")
        self.adapt_threads()
        self.clear()
        n = len(tokens) - 1
        lp = np.empty(max(n, 0), dtype=np.float64)
        ids = np.empty((max(n, 0), top_n), dtype=np.int64)
        vals = np.empty((max(n, 0), top_n), dtype=np.float64)
        for start in range(0, max(n, 0), self.n_batch):
            k = min(self.n_batch, n - start)
            logits = self.eval_entries(
                tokens[start : start + k], range(start, start + k), [0] * k, [True] * k
            )
            lse = logsumexp_rows(logits)
            targets = np.asarray(tokens[start + 1 : start + 1 + k])
            lp[start : start + k] = logits[np.arange(k), targets].astype(np.float64) - lse
            if top_n:
                ids[start : start + k], vals[start : start + k] = top_k_rows(logits, top_n, lse)
        self._cache = list(tokens[:-1])
        return lp, ids, vals

    def last_logprobs(self) -> np.ndarray:
        """Log-probs after the last evaluated token (that requested logits)."""
        ptr = C.llama_get_logits_ith(self.ctx, -1)
        return log_softmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)))

    def logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        """log P(tokens[j] | tokens[:j]) for j = 1 .. len(tokens)-1, from an empty cache."""
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit the context of {self.n_ctx}")
        self.adapt_threads()
        self.clear()
        lp = self.target_logprobs(tokens[:-1], tokens[1:])
        self._cache = list(tokens[:-1])
        return lp

    def prefix(self, tokens: Sequence[int]) -> np.ndarray:
        """Make ``tokens`` the content of sequence 0 (reusing the cached common prefix) and
        return the log-probs of the next token."""
        self.adapt_threads()
        keep = len(os.path.commonprefix([list(self._cache), list(tokens[:-1])]))
        if not self.seq_rm(0, keep, -1):
            self.clear()
            keep = 0
        self.target_logprobs(tokens[keep:], None, pos0=keep)
        self._cache = list(tokens)
        return self.last_logprobs()

    def continuations(
        self, prefix: Sequence[int], options: Sequence[Sequence[int]], parallel: bool = False
    ) -> list[np.ndarray]:
        """Per-token log-probabilities of each option's tokens after ``prefix``.

        The prefix is evaluated once (reusing the cache's common prefix with the previous call).
        Sequentially, each option is then evaluated after it on sequence 0, the cache cut back to
        the prefix between options; with ``parallel`` (needs ``n_seq`` > 1), options share
        batches, option j on sequence 1 + j % (n_seq - 1), which starts as a copy of the prefix.
        """
        if any(not o for o in options):
            raise ValueError("an option has no tokens")
        longest = max(len(o) for o in options)
        if len(prefix) + longest > self.n_ctx:
            raise ValueError(
                f"context {len(prefix)} + option {longest} tokens exceed the context {self.n_ctx}"
            )
        first = self.prefix(prefix)
        n = len(prefix)
        if parallel and self.n_seq > 1:
            rest = self._parallel(n, options)
        else:
            rest = []
            for opt in options:
                self.seq_rm(0, n, -1)
                rest.append(self.target_logprobs(opt[:-1], opt[1:], pos0=n))
            self.seq_rm(0, n, -1)
        return [np.concatenate([[first[o[0]]], r]) for o, r in zip(options, rest)]

    def _parallel(self, n: int, options: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Options after the n-token prefix of sequence 0, many per batch (see `continuations`)."""
        out: list[np.ndarray] = [np.empty(0)] * len(options)
        room = self.n_ctx - n  # cells left for the options' tokens
        group: list[int] = []
        used = 0
        todo = [i for i, o in enumerate(options) if len(o) > 1]
        for i in todo + [None]:
            size = len(options[i]) - 1 if i is not None else 0
            if i is None or len(group) == self.n_seq - 1 or used + size > room:
                self._run_group(n, options, group, out)
                group, used = [], 0
            if i is not None:
                group.append(i)
                used += size
        return out

    def _run_group(self, n: int, options, group: list[int], out: list[np.ndarray]) -> None:
        if not group:
            return
        entries = []  # (token, pos, seq, target, option)
        for j, i in enumerate(group):
            s = 1 + j
            self.seq_rm(s)
            self.seq_cp(0, s)
            opt = options[i]
            entries += [(t, n + k, s, opt[k + 1], i) for k, t in enumerate(opt[:-1])]
        vals = np.empty(len(entries), dtype=np.float64)
        for a in range(0, len(entries), self.n_batch):
            part = entries[a : a + self.n_batch]
            logits = self.eval_entries(
                [e[0] for e in part], [e[1] for e in part], [e[2] for e in part], [True] * len(part)
            )
            vals[a : a + len(part)] = target_logprobs(logits, np.array([e[3] for e in part]))
        for j, i in enumerate(group):
            out[i] = vals[[k for k, e in enumerate(entries) if e[4] == i]]
            self.seq_rm(1 + j)
