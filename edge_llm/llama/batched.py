"""Greedy generation for many prompts at once: one token per prompt per llama_decode.

Why: a benchmark asks a small model hundreds of short questions after the same few-shot
examples. One prompt at a time, every generated token is a one-row matmul (memory-bound: on a
135M model at 2 threads ~90 tokens/s); a batch of rows costs little more than one. Here the shared
prefix is evaluated once on sequence 0, its cells are given to the other sequences
(``llama_memory_seq_cp``), each prompt's own tail is evaluated on its sequence, and then every
unfinished sequence gets its next token in the same batch until each stops on its own.

Stop rules are `edge_llm.model.Model.stream`'s with ``temperature=0``, so the text matches what the
runtime returns: the argmax token (llama.cpp's greedy sampler takes the first maximum, as numpy's
argmax); an end-of-generation token ends it (not part of the text); a stop string cuts the text
where it begins (`edge_llm.sampling.find_stop`); ``max_tokens``; and ``done(text)``, asked as a
stream consumer would on each piece shown (the text less what might begin a stop string), which
ends it like ``Stream.cancel()``. Pieces are decoded incrementally as UTF-8, so a character split
over tokens (Chinese) comes out whole.

Numerics: the context is a `ScoringContext` with the runtime's cache settings (F16 KV cache,
flash attention as llama.cpp decides: `edge_llm.llama.backend`'s defaults), so a wave of one is the
runtime's greedy output. (An F32 cache with flash attention off, the scoring defaults, made waves
slower than one prompt at a time: attention then reads every cell of the shared cache in F32.)
Rows of one batch go through the same kernels as a single row but the matmul's blocking can
differ, so logits differ from a one-prompt run in the last bits, and a near-tie between two tokens
can flip the greedy choice; tests/runtime/test_batched.py measures how often.

`sample_continuations` is the sampling counterpart (a model's own text for distillation): many
prompts continued together, each row of a batch sampled by llama.cpp's sampler.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_llm.llama.backend import ContextConfig
from edge_llm.llama.binding import C
from edge_llm.llama.scoring import ScoringContext
from edge_llm.llama.threads import ThreadPolicy
from edge_llm.sampling import find_stop, held_back


@dataclass
class Generation:
    """One prompt's answer: its text, the generated tokens, and why it ended ("stop" for an
    end-of-generation token or a stop string, "length", "cancelled" when ``done`` said so)."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"


class _Active:
    """The state of one prompt being generated on sequence ``seq``."""

    def __init__(self, index: int, seq: int, pos: int):
        self.index, self.seq, self.pos = index, seq, pos  # pos: where the next token goes
        self.out = Generation()
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.shown = 0


class BatchedGreedy:
    """A GGUF loaded for batched greedy generation (see the module docstring).

    ``n_seq``: prompts generated together (a wave); ``n_ctx``: KV cells for a whole wave (the
    shared prefix once, then each prompt's tail and answer); ``threads``: a count or None (follow
    the host's load); ``kv_type`` and ``flash_attn``: the cache (default: the runtime's).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_seq: int = 16,
        n_ctx: int = 4096,
        n_batch: int = 512,
        threads: int | ThreadPolicy | None = None,
        kv_type: str = ContextConfig.kv_type,
        flash_attn: bool | None = ContextConfig.flash_attn,
        error: type[Exception] | None = None,
        adapters=(),
    ):
        self.sc = ScoringContext(
            path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_seq=max(n_seq, 2),
            threads=threads,
            kv_type=kv_type,
            flash_attn=flash_attn,
            error=error,
            adapters=adapters,
        )
        self.n_seq = n_seq
        self._prefix: list[int] = []  # tokens whose cells sequence 0 holds, from position 0

    def close(self) -> None:
        self.sc.close()

    def __enter__(self) -> BatchedGreedy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        done: Callable[[str], bool] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Greedy continuations of ``prompts`` (token ids), in order. Prompts are taken in waves
        of consecutive prompts (put those sharing a prefix next to each other); ``progress(k)``
        is told how many are finished after each wave."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1 (got {max_tokens})")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("a prompt has no tokens")
        self.sc.open()
        out: list[Generation] = [Generation() for _ in prompts]
        for wave in self._waves(prompts, max_tokens):
            self._run_wave(prompts, wave, max_tokens, tuple(stop), done, out)
            if progress is not None:
                progress(wave[-1] + 1)
        return out

    # --- internals --------------------------------------------------------------------------
    def _waves(self, prompts: Sequence[Sequence[int]], max_tokens: int) -> list[list[int]]:
        """Consecutive prompts, at most ``n_seq`` a wave, as many as the cells hold."""
        waves: list[list[int]] = []
        wave: list[int] = []
        lcp = 0
        for i, p in enumerate(prompts):
            if len(p) + max_tokens > self.sc.n_ctx:
                raise ValueError(
                    f"prompt {i} ({len(p)} tokens) and {max_tokens} more exceed the "
                    f"context of {self.sc.n_ctx}"
                )
            if wave:
                new_lcp = min(_common(prompts[wave[0]], p), lcp, len(p) - 1)
                cells = new_lcp + sum(len(prompts[j]) - new_lcp + max_tokens for j in wave + [i])
                if len(wave) < self.n_seq and cells <= self.sc.n_ctx:
                    wave.append(i)
                    lcp = new_lcp
                    continue
                waves.append(wave)
            wave, lcp = [i], len(p) - 1
        if wave:
            waves.append(wave)
        return waves

    def _run_wave(self, prompts, wave, max_tokens, stop, done, out) -> None:
        sc = self.sc
        sc.adapt_threads()
        firsts = [list(prompts[i]) for i in wave]
        # the shared part: all prompts' common prefix (less one token each, whose logits are
        # wanted), or a lone prompt whole (one batch, as a one-prompt runtime prefills it)
        alone = len(firsts) == 1
        n = len(firsts[0]) if alone else min(min(len(p) - 1 for p in firsts), _common_all(firsts))
        shared = firsts[0][:n]
        keep = min(_common(self._prefix, shared), n - 1 if alone else n)
        for s in range(1, self.n_seq):
            sc.seq_rm(s)
        if not sc.seq_rm(0, keep, -1):
            sc.clear()
            keep = 0
        first_tokens: list[int] = []
        for a in range(keep, n, sc.n_batch):  # the shared prefix, once, on sequence 0
            part = shared[a : a + sc.n_batch]
            last = [alone and a + k == n - 1 for k in range(len(part))]
            rows = sc.eval_entries(part, range(a, a + len(part)), [0] * len(part), last)
            first_tokens = np.argmax(rows, axis=1).tolist() if alone else []
        self._prefix = list(shared)
        for s in range(1, len(wave)):
            sc.seq_cp(0, s, 0, n)
        # each prompt's tail on its own sequence; the logits of its last token
        entries = [
            (t, n + k, s, k == len(p) - n - 1)
            for s, p in enumerate(firsts)
            for k, t in enumerate(p[n:])
        ]
        for a in range(0, len(entries), sc.n_batch):
            part = entries[a : a + sc.n_batch]
            rows = sc.eval_entries(*zip(*part))
            first_tokens.extend(np.argmax(rows, axis=1).tolist())
        # rows come in entry order: sequence s's tail ends before s + 1's
        active = [_Active(i, s, len(firsts[s])) for s, i in enumerate(wave)]
        nexts = first_tokens
        while active:
            going, toks = [], []
            for st, tok in zip(active, nexts):
                if self._step(st, tok, max_tokens, stop, done):
                    going.append(st)
                    toks.append(tok)
                else:
                    out[st.index] = st.out
            if not going:
                break
            rows = sc.eval_entries(
                toks, [st.pos for st in going], [st.seq for st in going], [True] * len(going)
            )
            nexts = np.argmax(rows, axis=1).tolist()
            for st in going:
                st.pos += 1
            active = going
        sc.seq_rm(0, n, -1)

    def reset(self) -> None:
        """Forget the cached prefix (the next wave evaluates its prompts from the start)."""
        self.sc.clear()
        self._prefix = []

    def _step(self, st: _Active, tok: int, max_tokens: int, stop, done) -> bool:
        """Take ``tok`` as ``st``'s next token, as Model.stream does; False when it has ended."""
        g = st.out
        if self.sc.is_eog(tok):
            g.finish_reason = "stop"
            g.text += st.utf8.decode(b"", final=True)
            return False
        g.tokens.append(tok)
        g.text += st.utf8.decode(self.sc.token_to_piece(tok))
        cut = find_stop(g.text, stop, st.shown) if stop else None
        if cut is not None:
            g.text = g.text[:cut]
            g.finish_reason = "stop"
            return False
        ready = len(g.text) - (held_back(g.text, stop) if stop else 0)
        cancelled = False
        if ready > st.shown:
            st.shown = ready
            cancelled = done is not None and done(g.text[:ready])
        if len(g.tokens) == max_tokens:
            g.text += st.utf8.decode(b"", final=True)
            return False
        if cancelled:  # the stream's consumer cancelled: the text as it stands
            g.finish_reason = "cancelled"
            return False
        return True


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    return len(os.path.commonprefix([list(a), list(b)]))


def _common_all(seqs: list[list[int]]) -> int:
    return len(os.path.commonprefix([list(x) for x in seqs]))


def sample_continuations(
    path: str | Path,
    prompts: Sequence[Sequence[int]],
    *,
    length: int,
    temperature: float = 1.0,
    seed: int = 0,
    n_seq: int = 64,
    ban_eog: bool = False,
    threads: int | ThreadPolicy | None = None,
    progress: Callable[[int], None] | None = None,
    error: type[Exception] | None = None,
) -> list[list[int]]:
    """Each prompt (token ids) continued by sampling until it holds ``length`` tokens, or until
    it samples an end-of-generation token (not kept): the prompt's tokens and its continuation.
    ``ban_eog``: end-of-generation tokens get a logit of -inf (llama.cpp's logit-bias sampler),
    so every continuation is ``length`` tokens long.

    Why: text drawn from a model's own distribution (training data for distillation) is needed by
    the hundred thousand tokens. Here ``n_seq`` prompts are decoded together, one row each per
    batch, each sequence in its own KV cache (a cache shared by all would make every row attend
    over every sequence's cells: 2-4x slower at 256 tokens): SmolLM2-135M F32, 64 rows, 266
    tokens/s on two cores, 3.8x transformers' ``generate`` side by side. The sampler is
    llama.cpp's (temperature, then ``dist`` with ``seed``), called on each row of the batch in
    sequence order, so a run is reproducible on one machine; rows of one batch can round
    differently from a lone row (see the module docstring), so other batch sizes give other
    samples from the same distribution. ``progress(k)``: prompts finished so far."""
    if length < 1 or temperature <= 0:
        raise ValueError("length and temperature must be positive")
    if any(not 0 < len(p) < length for p in prompts):
        raise ValueError(f"every prompt needs 1 to {length - 1} tokens")
    sc = ScoringContext(
        path,
        n_ctx=max(n_seq, 2) * length,
        n_batch=max(512, n_seq),
        n_seq=max(n_seq, 2),
        threads=threads,
        kv_type=ContextConfig.kv_type,
        flash_attn=ContextConfig.flash_attn,
        error=error,
        kv_unified=False,  # a cache per sequence: attention over its own cells only
    )
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    if ban_eog:
        eog = [t for t in range(sc.n_vocab) if sc.is_eog(t)]
        bias = (C.llama_logit_bias * len(eog))(*[(t, -float("inf")) for t in eog])
        C.llama_sampler_chain_add(
            chain, C.llama_sampler_init_logit_bias(sc.n_vocab, len(eog), bias)
        )
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(temperature))
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(seed))
    out: list[list[int]] = [list(p) for p in prompts]
    try:
        with sc:
            for w in range(0, len(prompts), n_seq):
                wave = list(range(w, min(w + n_seq, len(prompts))))
                sc.clear()
                sc.adapt_threads()
                # the prompts, each on its own sequence; a token sampled after each one's last
                entries = [
                    (t, k, s, k == len(out[i]) - 1)
                    for s, i in enumerate(wave)
                    for k, t in enumerate(out[i])
                ]
                nexts: list[int] = []
                for a in range(0, len(entries), sc.n_batch):
                    part = entries[a : a + sc.n_batch]
                    sc.eval_entries(*zip(*part))
                    nexts += [
                        C.llama_sampler_sample(chain, sc.ctx, j) for j, e in enumerate(part) if e[3]
                    ]
                alive = list(range(len(wave)))
                while alive:
                    going = []
                    for s, t in zip(alive, nexts):
                        seq = out[wave[s]]
                        if sc.is_eog(t):
                            continue
                        seq.append(t)
                        if len(seq) < length:
                            going.append(s)
                    alive = going
                    if not alive:
                        break
                    sc.eval_entries(
                        [out[wave[s]][-1] for s in alive],
                        [len(out[wave[s]]) - 1 for s in alive],
                        alive,
                        [True] * len(alive),
                    )
                    nexts = [C.llama_sampler_sample(chain, sc.ctx, j) for j in range(len(alive))]
                if progress is not None:
                    progress(wave[-1] + 1)
    finally:
        C.llama_sampler_free(chain)
    return out
