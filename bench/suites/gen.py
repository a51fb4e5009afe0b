"""Greedy answers to chat conversations, batched: what every exam task that generates asks for.

GSM8K, GSM-Symbolic, k12-zh and the arithmetic grid all ask a model questions and read the
number in its reply. They share this one path so that they are asked the same way: through the
model's own chat template (a model without one gets a plain ``Question:``/``Answer:`` transcript,
as lm-evaluation-harness asks base models), greedy, and several questions decoded together by
`edge_llm.llama.batched.BatchedGreedy`, whose answers are the runtime's greedy answers up to the
kernels' rounding (tests/runtime/test_batched.py measures how often a near-tie flips). ``batch=1``
goes through the runtime's ``Model.stream`` instead, one question at a time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bench.errors import BenchError

RAW_STOP = ("\nQuestion:", "\n\nQuestion")


def raw_prompt(conversation: Sequence[dict]) -> str:
    """A conversation as plain text for a model without a chat template."""
    out = []
    for m in conversation:
        if m["role"] == "system":
            out.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            out.append(f"Question: {m['content']}\n")
        else:
            out.append(f"Answer: {m['content']}\n\n")
    return "".join(out) + "Answer:"


def prompts(ctx, conversations: Sequence[Sequence[dict]]) -> tuple[list, tuple[str, ...], str]:
    """(prompt per conversation, stop strings, "chat" or "raw") for ``ctx``'s model."""
    model = ctx.model()
    mode = getattr(ctx, "prompt", "auto")
    if mode not in ("auto", "chat", "raw"):
        raise BenchError(f"prompt must be auto, chat or raw (got {mode!r})")
    if mode == "auto":
        mode = "chat" if model.has_chat_template else "raw"
    if mode == "chat":
        return [model.chat_tokens(list(c)) for c in conversations], (), mode
    return [raw_prompt(c) for c in conversations], RAW_STOP, mode


def answer(
    ctx,
    conversations: Sequence[Sequence[dict]],
    *,
    max_tokens: int,
    batch: int,
    task: str,
    done: re.Pattern | None = None,
) -> list[str]:
    """Greedy replies to ``conversations``, in order. ``done`` ends a reply when it matches (a
    stream consumer's cancel); ``ctx.progress(task, k, n)`` is told as replies finish."""
    if batch < 1:
        raise BenchError(f"{task}: batch must be at least 1 (got {batch})")
    if max_tokens < 1:
        raise BenchError(f"{task}: max_tokens must be at least 1 (got {max_tokens})")
    if not conversations:
        return []
    ps, stop, _ = prompts(ctx, conversations)
    return greedy(ctx, ps, max_tokens=max_tokens, stop=stop, batch=batch, task=task, done=done)


def greedy(
    ctx,
    prompts: Sequence,
    *,
    max_tokens: int,
    stop: Sequence[str],
    batch: int,
    task: str,
    done: re.Pattern | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (text or token ids), in order: ``batch`` at a time
    through BatchedGreedy, or one at a time through the runtime's ``Model.stream`` (batch 1)."""
    model = ctx.model()
    finished = (lambda text: done.search(text) is not None) if done is not None else None
    if batch == 1:
        texts = []
        for k, p in enumerate(prompts, 1):
            texts.append(_one(model, p, max_tokens, stop, finished))
            ctx.progress(task, k, len(prompts))
        return texts
    from edge_llm.llama.batched import BatchedGreedy

    tokens = [model.tokenize(p) if isinstance(p, str) else p for p in prompts]
    longest = max((len(t) for t in tokens), default=0)
    n_ctx = -(-(longest + batch * (max_tokens + 96)) // 256) * 256
    adapters = getattr(ctx, "adapters", ())  # `bench --adapter`: the same adapter as the model's
    with BatchedGreedy(
        ctx.path, n_seq=batch, n_ctx=n_ctx, threads=ctx.threads, adapters=adapters
    ) as g:
        out = g.generate(
            tokens,
            max_tokens=max_tokens,
            stop=stop,
            done=finished,
            progress=lambda k: ctx.progress(task, k, len(prompts)),
        )
    return [x.text for x in out]


def _one(model, prompt, max_tokens: int, stop, finished) -> str:
    s = model.stream(prompt, max_tokens=max_tokens, temperature=0, stop=list(stop))
    text = ""
    for piece in s:
        text += piece
        if finished is not None and finished(text):
            s.cancel()
    return s.result.text
