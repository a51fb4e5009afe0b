"""Sampling options, validated once, shared by the API, the CLI and (later) the server."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from edge_llm.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1 = off
    min_p: float = 0.05  # 0 = off
    repeat_penalty: float = 1.0  # 1 = off
    repeat_last_n: int = 64
    seed: int | None = None  # None = a fresh random seed each call
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep going past end-of-generation tokens (benchmarks)
    grammar: str | None = None  # a GBNF grammar the output must follow (llama.cpp's sampler)
    logprobs: int | None = None  # record each token's log-probability and this many top ones

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
            value = getattr(self, name)
            if not math.isfinite(value):
                bad(f"{name} must be a finite number (got {value})")
        if self.max_tokens < 1:
            bad(f"max_tokens must be at least 1 (got {self.max_tokens})")
        if self.temperature < 0:
            bad(f"temperature must be >= 0, 0 for greedy (got {self.temperature})")
        if not 0 <= self.top_k < 2**31:
            bad(f"top_k must be >= 0, 0 to turn it off (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            bad(f"top_p must be in (0, 1], 1 to turn it off (got {self.top_p})")
        if not 0 <= self.min_p <= 1:
            bad(f"min_p must be in [0, 1], 0 to turn it off (got {self.min_p})")
        if self.repeat_penalty <= 0:
            bad(f"repeat_penalty must be > 0, 1 to turn it off (got {self.repeat_penalty})")
        if not 0 <= self.repeat_last_n < 2**31:
            bad(f"repeat_last_n must be >= 0 (got {self.repeat_last_n})")
        if self.seed is not None and not 0 <= self.seed < 2**32 - 1:
            bad(f"seed must be in [0, 2**32 - 2] (got {self.seed})")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            bad(f"logprobs must be in [0, 20] top tokens (got {self.logprobs})")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        if any(not s for s in self.stop):
            bad("stop strings must not be empty")

    @classmethod
    def from_kwargs(cls, **kwargs) -> SamplingParams:
        """Build from keyword arguments, ignoring None values; unknown names are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ConfigError(
                f"unknown sampling option(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return cls(**{k: v for k, v in kwargs.items() if v is not None})


def find_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    """Index of the earliest stop string in ``text`` that ends after ``start``, or None."""
    best = None
    for s in stops:
        i = text.find(s, max(0, start - len(s) + 1))
        if i != -1 and (best is None or i < best):
            best = i
    return best


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might begin a stop string (so must not be shown yet)."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), n, -1):
            if text.endswith(s[:k]):
                n = k
                break
    return n
