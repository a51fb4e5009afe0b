"""What a generation returns: ``Completion`` (text, usage, timings, log-probabilities) and ``Stream``.

Why its own module: these are plain values that the server, the CLI and benchmark code read
without needing a loaded model, and ``model.py`` (which makes them) stays about running llama.cpp.
They are re-exported by ``edge_llm`` and ``edge_llm.model``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (not prefilled again)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    ttft_s: float  # call start to the first generated token
    prefill_s: float
    decode_s: float  # first generated token to the last
    prefill_tokens_per_s: float
    decode_tokens_per_s: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token with its log-probability under the model (the raw distribution,
    before sampling's filters) and the most likely tokens at that step, best first."""

    token: str
    bytes: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()
    entropy: float | None = None  # of the whole distribution at that step (nats)


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (end of generation or a stop string), "length" or "cancelled"
    usage: Usage
    timings: Timings
    logprobs: tuple[TokenLogprob, ...] | None = None  # when asked for (``logprobs=N``)

    @property
    def message(self) -> dict[str, str]:
        return {"role": "assistant", "content": self.text}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["usage"]["total_tokens"] = self.usage.total_tokens
        del d["tokens"]
        if self.logprobs is None:
            del d["logprobs"]
        else:
            d["logprobs"] = [
                {
                    "token": t.token,
                    "logprob": t.logprob,
                    "top": [{"token": s, "logprob": lp} for s, _, lp in t.top],
                }
                for t in self.logprobs
            ]
        return d

    def __str__(self) -> str:
        return self.text


class Stream:
    """Text pieces as they are generated. After the last piece, ``result`` holds the Completion.

    Stopping early ends the generation: ``close()`` (or leaving a ``for`` loop) from the thread
    that iterates, or ``cancel()`` from any thread, which also interrupts a long prefill between
    batches. ``result`` then has ``finish_reason`` "cancelled" and the tokens made so far.
    """

    def __init__(
        self,
        gen: Iterator[str],
        holder: list[Completion],
        cancel: threading.Event,
        logprobs: list[TokenLogprob] | None = None,
    ):
        self._gen = gen
        self._holder = holder
        self._cancel = cancel
        # With ``logprobs=N``: one entry per token generated so far (it may run ahead of the
        # text yielded, which holds back what could start a stop string).
        self.logprobs = logprobs

    def cancel(self) -> None:
        """Stop the generation at the next check (safe to call from any thread)."""
        self._cancel.set()

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> str:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    @property
    def result(self) -> Completion:
        if not self._holder:
            raise RuntimeError("the stream has not finished; iterate it to the end first")
        return self._holder[0]

    @property
    def text(self) -> str:
        return self.result.text
