"""An edge-cloud cascade: the device answers first and escalates to the cloud what it cannot.

    cascade = edge_llm.Cascade(
        edge_llm.load("qwen2.5-coder-0.5b"),
        cloud=CloudConfig("http://127.0.0.1:8081/v1", "qwen2.5-coder-1.5b", api_key_env="CLOUD_KEY"),
    )
    c = cascade.chat([{"role": "user", "content": "What is 12*7?"}])
    c.answered_by, c.signals, c.cloud_error

Why it exists: privacy and compute argue for answering on the device, and a small model cannot
answer everything. No runtime users know routes from the device: llama.cpp, Ollama and mlx-lm
run one model, and the published routers (RouteLLM, Hybrid LLM, FrugalGPT) sit on a server
between two cloud models. Here each request is answered by the device model; the answer's own
log-probabilities (recorded while it was generated: no second pass), optionally the agreement of
k sampled answers, and optionally a fitted router (``router.Router``) give a confidence, and an
answer below the threshold is sent to the cloud (any OpenAI-compatible endpoint, ``cloud``).

What comes back is a ``CascadeCompletion``: a ``Completion`` that also says who answered
(``answered_by``: "device" or "cloud"), the signals, and ``cloud_error`` when the cloud was asked
and failed (the device's answer is returned then: a cloud fault is never the user's error).
``local_only`` (for the cascade, or per request) means nothing leaves the device.

Streaming: the device's answer is generated whole first (its signals need every token), then
either its text is streamed out or the cloud's answer is streamed as it arrives. A device answer
therefore arrives after the device's full generation time, not token by token (see
docs/cascade.md for the trade).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_llm.cascade.cloud import CloudAnswer, CloudClient, CloudConfig, CloudError, redact
from edge_llm.cascade.router import Router, Signals, escalates, from_logprobs
from edge_llm.errors import ConfigError
from edge_llm.results import Completion, Stream, Timings, Usage

__all__ = [
    "Cascade",
    "CascadeCompletion",
    "CascadeStream",
    "CloudConfig",
    "CloudError",
    "Router",
    "Signals",
]

DEFAULT_SIGNAL = "mean_logprob"
DEFAULT_THRESHOLD = math.log(0.5)  # tokens averaging under 50% (geometric mean): escalate
HISTORY = 256  # recent confidences that ``escalate_rate`` ranks an answer among (no router)
BROKE_OFF = "\n\n[edge-llm: the cloud's answer broke off; the device's answer follows]\n\n"


@dataclass(frozen=True)
class CascadeCompletion(Completion):
    """A Completion that says who gave it and why."""

    answered_by: str = "device"  # "device" or "cloud"
    signals: Signals | None = None
    confidence: float | None = None  # the value compared with the threshold
    threshold: float | None = None
    escalate: bool = False  # the device's confidence was below the threshold
    not_sent: str | None = None  # why an answer to escalate stayed on the device
    cloud_error: str | None = None  # "kind: message" when the cloud was asked and failed
    cloud_seconds: float | None = None
    device: Completion | None = None  # the device's own answer (when the cloud gave this one)

    def cascade_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "answered_by": self.answered_by,
            "escalate": self.escalate,
            "confidence": _finite(self.confidence),
            "threshold": _finite(self.threshold),
            "signals": {
                k: _finite(v) for k, v in (self.signals.to_dict() if self.signals else {}).items()
            },
        }
        if self.not_sent:
            info["not_sent"] = self.not_sent
        if self.cloud_error:
            info["cloud_error"] = self.cloud_error
        if self.device is not None:
            info["device_usage"] = dataclasses.asdict(self.device.usage)
            info["device_text"] = self.device.text
        if self.cloud_seconds is not None:
            info["cloud_seconds"] = self.cloud_seconds
        return info

    def to_dict(self) -> dict[str, Any]:
        base = Completion(
            self.text, self.tokens, self.finish_reason, self.usage, self.timings, self.logprobs
        ).to_dict()
        return {**base, "answered_by": self.answered_by, "cascade": self.cascade_info()}


def _finite(v: Any) -> Any:
    """JSON has no infinity: an infinite or NaN number is written as null."""
    return v if not isinstance(v, float) or math.isfinite(v) else None


class CascadeStream(Stream):
    """A Stream whose ``answered_by`` is known from its first piece on (None before)."""

    answered_by: str | None = None


class Cascade:
    """A device model with a cloud behind it, with the Model API (generate, stream, chat,
    chat_stream); everything else (tokenize, n_ctx, embed, ...) is the device model's.

    The confidence of an answer is ``router``'s P(device right) when a router is given (a
    ``Router`` or the path of one fitted for this model), else the signal ``signal``. It is
    escalated when below ``threshold``; by default the router's own, or log(0.5) for the mean
    log-probability. ``escalate_rate`` instead sets the threshold for that share of answers: from
    the router's calibration quantiles, or, without a router, by ranking each answer's confidence
    among the last 256 answers' (the lowest ``escalate_rate`` of them go to the cloud).
    ``k_samples`` > 0 also samples k answers and measures their agreement with the answer
    (``answer_key`` maps an answer to what is compared, default: its whitespace-normalized text).
    """

    def __init__(
        self,
        device_model: Any,
        cloud: CloudConfig | None = None,
        *,
        router: Router | str | Path | None = None,
        signal: str = DEFAULT_SIGNAL,
        threshold: float | None = None,
        escalate_rate: float | None = None,
        k_samples: int = 0,
        sample_temperature: float = 0.7,
        answer_key: Callable[[str], Any] | None = None,
        local_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.device = device_model
        self.cloud_config = cloud
        self.local_only = local_only
        if isinstance(router, str | Path):
            from edge_llm.fsutil import sha256_file

            router = Router.load(router, sha256_file(device_model.path))
        self.router = router
        if router is None and signal not in (
            "mean_logprob",
            "min_logprob",
            "neg_entropy",
            "agreement",
        ):
            raise ConfigError(
                f"signal {signal!r} unknown; use mean_logprob, min_logprob, neg_entropy or agreement"
            )
        if signal == "agreement" and k_samples < 1:
            raise ConfigError("the agreement signal needs k_samples >= 1 sampled answers")
        if escalate_rate is not None and not 0 <= escalate_rate <= 1:
            raise ConfigError(f"the escalation rate must be in [0, 1] (got {escalate_rate})")
        if k_samples < 0:
            raise ConfigError(f"k_samples must be >= 0 (got {k_samples})")
        self.signal, self.k_samples = signal, k_samples
        self.sample_temperature = sample_temperature
        self.answer_key = answer_key or (lambda text: " ".join(text.split()).lower())
        self.escalate_rate = escalate_rate
        if threshold is None and router is not None:
            threshold = (
                router.threshold_for_rate(escalate_rate)
                if escalate_rate is not None
                else router.threshold
            )
        if threshold is None and escalate_rate is None:
            threshold = DEFAULT_THRESHOLD if signal == "mean_logprob" else None
        if threshold is None and escalate_rate is None:
            raise ConfigError(f"signal {signal!r} needs a threshold or an escalation rate")
        self.threshold = threshold
        self._history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.client = (
            CloudClient(cloud, clock=clock, sleep=sleep)
            if cloud is not None and not local_only
            else None
        )

    def __getattr__(self, name: str) -> Any:
        if name == "device":  # not set yet (during __init__)
            raise AttributeError(name)
        return getattr(self.device, name)

    def __repr__(self) -> str:
        where = self.cloud_config.base_url if self.cloud_config else "no cloud"
        return f"Cascade({self.device!r} -> {where}, local_only={self.local_only})"

    # --- the Model API ----------------------------------------------------------------------
    def generate(self, prompt: str | list[int], **sampling: Any) -> CascadeCompletion:
        return _drain(self.stream(prompt, _whole=True, **sampling))

    def chat(self, messages: list[dict[str, Any]], **sampling: Any) -> CascadeCompletion:
        return _drain(self.chat_stream(messages, _whole=True, **sampling))

    def stream(
        self,
        prompt: str | list[int],
        *,
        cancel: threading.Event | None = None,
        local_only: bool = False,
        _whole: bool = False,
        **sampling: Any,
    ) -> CascadeStream:
        """Like Model.stream. The device's answer is generated here, before this returns."""
        cancel = cancel or threading.Event()
        run = lambda **kw: self.device.stream(prompt, cancel=cancel, **kw)  # noqa: E731
        text = prompt if isinstance(prompt, str) else self.device.detokenize(list(prompt))
        body = lambda: self.client.body(prompt=text, **sampling)  # noqa: E731
        return self._respond(run, body, cancel, local_only, _whole, None, sampling)

    def chat_stream(
        self,
        messages: list[dict[str, Any]],
        *,
        cancel: threading.Event | None = None,
        tools: list[dict[str, Any]] | None = None,
        local_only: bool = False,
        _whole: bool = False,
        **sampling: Any,
    ) -> CascadeStream:
        """Like Model.chat_stream. The device's answer is generated here, before this returns."""
        cancel = cancel or threading.Event()
        run = lambda **kw: self.device.chat_stream(messages, cancel=cancel, tools=tools, **kw)  # noqa: E731
        body = lambda: self.client.body(messages=messages, **sampling)  # noqa: E731
        return self._respond(
            run, body, cancel, local_only, _whole, "tools" if tools else None, sampling
        )

    # --- the decision -----------------------------------------------------------------------
    def device_answer(
        self, run: Callable[..., Stream], sampling: dict[str, Any]
    ) -> tuple[Completion, list[str], Signals]:
        """The device's answer (its pieces as generated) and its signals."""
        asked = sampling.get("logprobs")
        s = run(**{**sampling, "logprobs": asked or 0})
        pieces = list(s)
        c = s.result
        agreement = None
        if self.k_samples and c.finish_reason != "cancelled":
            agreement = self._agreement(run, sampling, c.text)
        signals = from_logprobs(c.logprobs or (), agreement)
        if asked is None:
            c = dataclasses.replace(c, logprobs=None)
        return c, pieces, signals

    def _agreement(self, run: Callable[..., Stream], sampling: dict[str, Any], text: str) -> float:
        key = self.answer_key(text)
        seed = sampling.get("seed")
        same = 0
        for i in range(self.k_samples):
            kw = {**sampling, "temperature": self.sample_temperature, "logprobs": None}
            kw["seed"] = (seed if seed is not None else 0) + 1 + i
            same += self.answer_key(_drain(run(**kw)).text) == key
        return same / self.k_samples

    def confidence(self, signals: Signals) -> tuple[float, Signals]:
        if self.router is not None:
            p = self.router.score(signals)
            return p, dataclasses.replace(signals, router=p)
        return signals.get(self.signal), signals

    def decide(self, confidence: float) -> tuple[bool, float | None]:
        """Escalate? and the threshold used (None for a bare rate: a rank among recent answers)."""
        if self.threshold is not None:
            return escalates(confidence, self.threshold), self.threshold
        assert self.escalate_rate is not None
        self._history.append(confidence)
        below = sum(1 for x in self._history if x < confidence)
        rank = below / len(self._history)
        return rank < self.escalate_rate or math.isnan(confidence), None

    def _respond(
        self,
        run: Callable[..., Stream],
        body: Callable[[], dict],
        cancel: threading.Event,
        local_only: bool,
        whole: bool,
        special: str | None,
        sampling: dict[str, Any],
    ) -> CascadeStream:
        t0 = time.perf_counter()
        dev, pieces, signals = self.device_answer(run, sampling)
        conf, signals = self.confidence(signals)
        escalate, threshold = self.decide(conf)
        base = CascadeCompletion(
            **{f.name: getattr(dev, f.name) for f in dataclasses.fields(Completion)},
            signals=signals,
            confidence=conf,
            threshold=threshold,
            escalate=escalate,
        )
        if escalate:
            reason = _stays(self, local_only, special, sampling, dev)
            if reason:
                base = dataclasses.replace(base, not_sent=reason)
        holder: list[Completion] = []
        s = CascadeStream(iter(()), holder, cancel, list(dev.logprobs) if dev.logprobs else None)
        if not escalate or base.not_sent:
            s.answered_by = "device"  # known before the first piece
            s._gen = _device_pieces(s, pieces, base, holder)
        else:
            s._gen = self._cloud_pieces(s, body(), base, pieces, dev, whole, cancel, t0, holder)
        return s

    def _cloud_pieces(
        self,
        s: CascadeStream,
        body: dict,
        base: CascadeCompletion,
        pieces: list[str],
        dev: Completion,
        whole: bool,
        cancel: threading.Event,
        t0: float,
        holder: list[Completion],
    ) -> Iterator[str]:
        """The cloud's answer as it arrives, or the device's when the cloud fails (flagged)."""
        assert self.client is not None
        key = self.client.config.api_key()
        shown: list[str] = []
        t_cloud = time.perf_counter()
        finish, usage = "stop", {}
        try:
            if cancel.is_set():
                raise CloudError(
                    "cancelled", "the request was cancelled before the cloud was asked"
                )
            if whole:
                a: CloudAnswer = self.client.complete(body)
                shown.append(a.text)
                finish, usage = (
                    a.finish_reason,
                    {
                        "prompt_tokens": a.prompt_tokens,
                        "completion_tokens": a.completion_tokens,
                    },
                )
            else:
                gen = self.client.stream(body)
                while True:
                    if cancel.is_set():
                        gen.close()
                        finish = "cancelled"
                        break
                    try:
                        piece = next(gen)
                    except StopIteration as stop:
                        if stop.value:
                            finish, usage = stop.value
                        break
                    s.answered_by = "cloud"
                    shown.append(piece)
                    yield piece
        except GeneratorExit:  # the caller stopped reading: what was shown is the answer
            holder.append(
                dataclasses.replace(
                    base,
                    text="".join(shown),
                    finish_reason="cancelled",
                    answered_by="cloud" if shown else "device",
                )
            )
            raise
        except Exception as e:  # noqa: BLE001 - a cloud fault is never the user's error
            if isinstance(e, CloudError):
                err = f"{e.kind}: {redact(str(e), key)}"
            else:  # unforeseen: its type only (its text might quote the request)
                self.client.breaker.failure()
                err = f"internal: {type(e).__name__} while calling the cloud"
            failed = dataclasses.replace(
                base, cloud_error=err, cloud_seconds=time.perf_counter() - t_cloud
            )
            if shown:  # part of the cloud's answer is out: the device's follows it, marked
                prefix = "".join(shown) + BROKE_OFF
                yield BROKE_OFF
                failed = dataclasses.replace(failed, text=prefix + dev.text)
            yield from _device_pieces(s, pieces, failed, holder)
            return
        s.answered_by = "cloud"
        text = "".join(shown)
        if whole and text:
            yield text
        t_end = time.perf_counter()
        holder.append(
            dataclasses.replace(
                base,
                text=text,
                tokens=[],
                finish_reason=finish if finish in ("stop", "length", "cancelled") else "stop",
                usage=Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))),
                timings=Timings(
                    ttft_s=t_cloud - t0,
                    prefill_s=dev.timings.prefill_s,
                    decode_s=t_end - t_cloud,
                    prefill_tokens_per_s=0.0,
                    decode_tokens_per_s=0.0,
                ),
                logprobs=None,
                answered_by="cloud",
                cloud_seconds=t_end - t_cloud,
                device=dev,
            )
        )


def _int(v: Any) -> int:
    return v if isinstance(v, int) and v >= 0 else 0


def _stays(
    c: Cascade, local_only: bool, special: str | None, sampling: dict, dev: Completion
) -> str | None:
    """Why an answer to escalate is kept on the device (None: send it)."""
    if c.local_only or local_only:
        return "local_only"
    if c.client is None:
        return "no cloud configured"
    if dev.finish_reason == "cancelled":
        return "cancelled"
    if special or sampling.get("grammar") or sampling.get("logprobs") is not None:
        return "tools, a grammar or logprobs were asked for: the device's answer has them"
    return None


def _device_pieces(
    s: CascadeStream, pieces: list[str], c: CascadeCompletion, holder: list[Completion]
) -> Iterator[str]:
    s.answered_by = "device"
    try:
        yield from pieces
    finally:
        holder.append(c)


def _drain(s: Stream) -> Any:
    for _ in s:
        pass
    return s.result
