"""The cloud side of a cascade: any OpenAI-compatible endpoint, called so that it cannot hurt.

Why its own module: the cloud is the one part of the runtime that talks to another machine, so
everything that can go wrong there is handled in one place and turned into a ``CloudError``
(which the cascade answers with the device's own answer, flagged): a timeout, a refused
connection, 429 and 5xx (retried a bounded number of times with exponential backoff, honouring
Retry-After up to a bound), a body that is not the JSON OpenAI sends, or one larger than
``max_body`` (read in pieces and abandoned past the cap). The whole escalation, retries and
waits included, fits in ``timeout_s``. After ``breaker_failures`` failed escalations in a row a
circuit breaker stops calling for ``breaker_cooldown_s`` (and says so once in the log).

The API key is read from the environment variable ``api_key_env`` when a call is made; it is
never stored on an object, and every message built from what the server sent is passed through
``redact`` first, so it appears in no log line, record or error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from edge_llm.errors import ConfigError

log = logging.getLogger("edge_llm.cascade")
RETRIED_STATUS = {429, 500, 502, 503, 504}
# Sampling options OpenAI's API takes (llama.cpp's extras would be refused by some clouds).
FORWARDED = ("max_tokens", "temperature", "top_p", "seed", "stop")


@dataclass(frozen=True)
class CloudConfig:
    """Where the cloud is and how hard to try. ``api_key_env`` names the environment variable
    holding the key (no key is sent when it is None or unset)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 30.0  # the whole escalation: every attempt and wait included
    retries: int = 2  # extra attempts after a timeout, a refused connection, 429 or 5xx
    backoff_s: float = 0.5  # first wait; doubled each retry
    max_retry_after_s: float = 5.0  # a longer Retry-After is not waited for: the call fails
    max_body: int = 4 * 1024 * 1024  # bytes of a response read at most
    breaker_failures: int = 3  # failed escalations in a row that open the circuit
    breaker_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if not re.match(r"^https?://[^\s/]+", self.base_url or ""):
            raise ConfigError(
                f"the cloud URL must start with http:// or https:// (got {self.base_url!r}); "
                "e.g. --cloud http://127.0.0.1:8081/v1"
            )
        if not self.model:
            raise ConfigError("the cloud needs a model name: --cloud-model NAME")
        for name in ("timeout_s", "max_retry_after_s", "breaker_cooldown_s"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"{name} must be a positive number (got {getattr(self, name)})")
        if self.retries < 0 or self.backoff_s < 0 or self.breaker_failures < 1:
            raise ConfigError("retries and backoff must be >= 0, breaker_failures >= 1")
        if self.max_body < 1024:
            raise ConfigError(f"max_body must be at least 1024 bytes (got {self.max_body})")
        if self.api_key_env is not None and not re.match(
            r"^[A-Za-z_][A-Za-z0-9_]*$", self.api_key_env
        ):
            raise ConfigError(
                "--cloud-key-env takes the NAME of an environment variable, not a key "
                "(got something that is not a variable name)"
            )

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class CloudError(Exception):
    """The cloud gave no usable answer. ``kind``: timeout, connection, rate_limited, server_error,
    http_error, malformed, oversized, stream_broken or circuit_open."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CloudAnswer:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    attempts: int


def redact(text: str, key: str | None) -> str:
    """``text`` on one line, without the key, at most 300 characters."""
    if key:
        text = text.replace(key, "***")
    text = " ".join(str(text).split())
    return text[:300]


class Breaker:
    """Closed: calls go through. After ``failures`` failures in a row: open for ``cooldown_s``
    (calls refused at once), then one call is let through (half-open): its success closes the
    circuit, its failure opens it again. ``clock`` is injectable (tests)."""

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ):
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.in_a_row = 0
        self.open_until: float | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.open_until is not None and self.clock() < self.open_until

    def allow(self) -> bool:
        with self._lock:
            return not self.is_open

    def success(self) -> None:
        with self._lock:
            if self.open_until is not None:
                log.warning("edge-llm cascade: the cloud answers again; escalation resumed")
            self.in_a_row, self.open_until = 0, None

    def failure(self) -> None:
        with self._lock:
            self.in_a_row += 1
            half_open = self.open_until is not None
            if half_open or self.in_a_row >= self.failures:
                if not half_open:  # said once per outage, not at each retry of the half-open call
                    log.warning(
                        "edge-llm cascade: the cloud failed %d times in a row; answering on the "
                        "device only for %.0f s",
                        self.in_a_row,
                        self.cooldown_s,
                    )
                self.open_until = self.clock() + self.cooldown_s


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class CloudClient:
    """Calls the cloud's /chat/completions and /completions (whole or streamed)."""

    def __init__(
        self,
        config: CloudConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ):
        self.config = config
        self.clock, self.sleep = clock, sleep
        self.breaker = Breaker(config.breaker_failures, config.breaker_cooldown_s, clock)
        self._transport = transport

    # --- requests ---------------------------------------------------------------------------
    def body(
        self, *, messages: list[dict] | None = None, prompt: str | None = None, **sampling: Any
    ) -> dict:
        out: dict[str, Any] = {"model": self.config.model}
        if messages is not None:
            out["messages"] = [
                {"role": m["role"], "content": m.get("content") or ""} for m in messages
            ]
        else:
            out["prompt"] = prompt
        for k in FORWARDED:
            v = sampling.get(k)
            if v is not None:
                out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def complete(self, body: dict) -> CloudAnswer:
        """A whole answer; CloudError after the bounded retries (or at once when the circuit is
        open)."""
        t0 = self.clock()
        path = "/chat/completions" if "messages" in body else "/completions"
        data, attempts = self._call(path, {**body, "stream": False}, t0)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if "messages" in body else choice["text"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            usage = data.get("usage") or {}
            answer = CloudAnswer(
                text,
                str(choice.get("finish_reason") or "stop"),
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                self.clock() - t0,
                attempts,
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError):
            self.breaker.failure()
            raise CloudError("malformed", "the cloud's answer is not OpenAI's JSON shape") from None
        self.breaker.success()
        return answer

    def _client(self, timeout: float) -> httpx.Client:
        key = self.config.api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if key and not (key.isascii() and key.isprintable()):
            raise CloudError(
                "config", f"the key in ${self.config.api_key_env} is not a valid header value"
            )
        return httpx.Client(
            base_url=self.config.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=self._transport,
            follow_redirects=False,
        )

    def _call(self, path: str, body: dict, t0: float) -> tuple[dict, int]:
        """POST with bounded retries; the parsed JSON body and the number of attempts."""
        if not self.breaker.allow():
            raise CloudError(
                "circuit_open", "the cloud failed repeatedly; not trying it for a while"
            )
        attempt, last = 0, CloudError("timeout", "no attempt fitted in the time allowed")
        while True:
            left = self.config.timeout_s - (self.clock() - t0)
            if left <= 0.01:
                break
            attempt += 1
            try:
                return self._once(path, body, left), attempt
            except _Retry as r:
                last = r.error
                wait = self.config.backoff_s * 2 ** (attempt - 1)
                if r.after is not None:
                    if r.after > self.config.max_retry_after_s:
                        last = CloudError(
                            r.error.kind,
                            f"{r.error} and asked to retry after {r.after:.0f} s "
                            f"(more than {self.config.max_retry_after_s:.0f} s)",
                        )
                        break
                    wait = max(wait, r.after)
                if attempt > self.config.retries:
                    break
                left = self.config.timeout_s - (self.clock() - t0)
                if wait >= left:
                    break
                self.sleep(wait)
            except CloudError as e:
                last = e
                break
        self.breaker.failure()
        raise last

    def _once(self, path: str, body: dict, timeout: float) -> dict:
        key = self.config.api_key()
        try:
            with self._client(timeout) as client:
                with client.stream("POST", path, json=body) as r:
                    raw = _read_capped(r, self.config.max_body, self.clock() + timeout, self.clock)
                    status, headers = r.status_code, r.headers
        except httpx.TimeoutException:
            raise _Retry(
                CloudError("timeout", f"the cloud did not answer within {timeout:.1f} s")
            ) from None
        except httpx.TransportError as e:
            what = redact(type(e).__name__ + (f": {e}" if str(e) else ""), key)
            raise _Retry(CloudError("connection", f"cannot reach the cloud ({what})")) from None
        if status in RETRIED_STATUS:
            kind = "rate_limited" if status == 429 else "server_error"
            after = _retry_after(headers.get("retry-after"), time.time())
            raise _Retry(CloudError(kind, f"the cloud answered HTTP {status}"), after)
        if status >= 400:
            raise CloudError(
                "http_error", f"the cloud answered HTTP {status}: {_message(raw, key)}"
            )
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise CloudError("malformed", "the cloud's answer is not JSON") from None
        if not isinstance(data, dict):
            raise CloudError("malformed", "the cloud's answer is not a JSON object")
        return data

    # --- streaming --------------------------------------------------------------------------
    def stream(self, body: dict) -> Iterator[str]:
        """Text pieces of a streamed answer. Faults before the first piece raise CloudError
        (after the bounded retries); a fault after it raises CloudError("stream_broken")."""
        if not self.breaker.allow():
            raise CloudError(
                "circuit_open", "the cloud failed repeatedly; not trying it for a while"
            )
        t0 = self.clock()
        chat = "messages" in body
        path = "/chat/completions" if chat else "/completions"
        return self._pieces(self._open_stream(path, {**body, "stream": True}, t0), chat)

    def _open_stream(self, path: str, body: dict, t0: float) -> Iterator[dict]:
        """The streamed events, opened with the same retries as a whole call: a generator that
        has already read its first event (so a fault before it is raised here)."""
        gen = self._events(path, body, t0)
        try:
            first = next(gen)
        except StopIteration:
            self.breaker.failure()
            raise CloudError("malformed", "the cloud's stream ended before any answer") from None
        except CloudError:
            self.breaker.failure()
            raise

        def chained() -> Iterator[dict]:
            yield first
            yield from gen

        return chained()

    def _events(self, path: str, body: dict, t0: float) -> Iterator[dict]:
        attempt = 0
        while True:
            attempt += 1
            left = self.config.timeout_s - (self.clock() - t0)
            if left <= 0.01:
                raise CloudError("timeout", "the cloud did not answer in the time allowed")
            try:
                yield from self._stream_once(path, body, left, t0)
                return
            except _Retry as r:
                wait = self.config.backoff_s * 2 ** (attempt - 1)
                if r.after is not None:
                    if r.after > self.config.max_retry_after_s:
                        raise CloudError(
                            r.error.kind, f"{r.error} and asked to retry after {r.after:.0f} s"
                        ) from None
                    wait = max(wait, r.after)
                if attempt > self.config.retries or wait >= self.config.timeout_s - (
                    self.clock() - t0
                ):
                    raise r.error from None
                self.sleep(wait)

    def _stream_once(self, path: str, body: dict, timeout: float, t0: float) -> Iterator[dict]:
        key = self.config.api_key()
        deadline = t0 + self.config.timeout_s
        started = False
        try:
            with self._client(timeout) as client, client.stream("POST", path, json=body) as r:
                if r.status_code in RETRIED_STATUS:
                    kind = "rate_limited" if r.status_code == 429 else "server_error"
                    after = _retry_after(r.headers.get("retry-after"), time.time())
                    raise _Retry(
                        CloudError(kind, f"the cloud answered HTTP {r.status_code}"), after
                    )
                if r.status_code >= 400:
                    raw = _read_capped(r, 65536, deadline, self.clock)
                    raise CloudError(
                        "http_error",
                        f"the cloud answered HTTP {r.status_code}: {_message(raw, key)}",
                    )
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.config.max_body:
                    raise CloudError(
                        "oversized",
                        f"the cloud's answer is {declared} bytes (more than {self.config.max_body})",
                    )
                for line in _lines(r, self.config.max_body):
                    if self.clock() > deadline:
                        raise CloudError("timeout", "the cloud's stream ran past the time allowed")
                    line = line.strip()
                    if not line or line.startswith(":") or not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        event = json.loads(payload)
                    except (ValueError, RecursionError):
                        raise CloudError(
                            "malformed", "the cloud's stream holds an event that is not JSON"
                        ) from None
                    if not isinstance(event, dict):
                        raise CloudError(
                            "malformed", "the cloud's stream holds an event that is not an object"
                        )
                    started = True
                    yield event
        except httpx.TimeoutException:
            err = CloudError("timeout", "the cloud did not answer in the time allowed")
            if started:
                raise err from None
            raise _Retry(err) from None
        except httpx.TransportError as e:
            what = redact(type(e).__name__ + (f": {e}" if str(e) else ""), key)
            err = CloudError("connection", f"cannot reach the cloud ({what})")
            if started:
                raise err from None
            raise _Retry(err) from None

    def _pieces(self, events: Iterator[dict], chat: bool) -> Iterator[str]:
        """Text pieces; the generator's return value is (finish_reason, usage dict)."""
        finish, usage = "stop", {}
        try:
            for ev in events:
                if isinstance(ev.get("usage"), dict):
                    usage = ev["usage"]
                if "error" in ev:
                    raise CloudError(
                        "stream_broken", "the cloud's stream ended with an error event"
                    )
                choices = ev.get("choices") or []
                if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                    continue
                c = choices[0]
                delta = c.get("delta")
                if chat:
                    text = delta.get("content") if isinstance(delta, dict) else None
                else:
                    text = c.get("text")
                if c.get("finish_reason"):
                    finish = str(c["finish_reason"])
                if isinstance(text, str) and text:
                    yield text
        except CloudError:
            self.breaker.failure()
            raise
        self.breaker.success()
        return finish, usage


class _Retry(Exception):
    def __init__(self, error: CloudError, after: float | None = None):
        self.error, self.after = error, after


def _read_capped(r: httpx.Response, cap: int, deadline: float, clock: Callable[[], float]) -> bytes:
    """The response body, or CloudError("oversized") past ``cap`` bytes (a declared length
    above it is refused before reading)."""
    declared = r.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise CloudError("oversized", f"the cloud's answer is {declared} bytes (more than {cap})")
    out = bytearray()
    for chunk in r.iter_bytes():
        out += chunk
        if len(out) > cap:
            raise CloudError("oversized", f"the cloud's answer passed {cap} bytes")
        if clock() > deadline:
            raise httpx.ReadTimeout("the body took too long")
    return bytes(out)


def _lines(r: httpx.Response, cap: int) -> Iterator[str]:
    """The lines of a streamed body; CloudError("oversized") once it passes ``cap`` bytes (a
    line that never ends included)."""
    buf, n = b"", 0
    for chunk in r.iter_bytes():
        n += len(chunk)
        if n > cap:
            raise CloudError("oversized", f"the cloud's stream passed {cap} bytes")
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            yield line.decode("utf-8", errors="replace")
    if buf:
        yield buf.decode("utf-8", errors="replace")


def _message(raw: bytes, key: str | None) -> str:
    """The error message an OpenAI-style error body carries (redacted), or a note that it has none."""
    try:
        data = json.loads(raw)
        msg = data["error"]["message"] if isinstance(data.get("error"), dict) else data.get("error")
    except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
        msg = None
    return redact(str(msg), key) if msg else "(no message)"
