"""Generations in worker threads, one at a time per model, stopped when their client goes.

A Model holds one KV cache, so it serves one request at a time: requests wait their turn on an
asyncio lock (first come, first served) and each generation runs in a worker thread, leaving the
event loop free to accept connections and answer ``/health``. A client that disconnects stops its
generation: the worker checks a ``threading.Event`` between pieces of text, and the request sets
it when its client goes. Every generation, finished or stopped, is recorded in
``app.state.generations`` (newest last).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from edge_llm.model import Model
from edge_llm.results import Completion, Stream, TokenLogprob
from edge_llm.server.errors import error_event

_POLL_S = 0.1  # how often a non-streaming request checks whether its client is still there


@dataclass(frozen=True)
class GenerationRecord:
    """One generation the server ran, finished or stopped (``app.state.generations``)."""

    endpoint: str  # "chat.completions" or "completions"
    stream: bool
    finish_reason: str  # "stop", "length", "cancelled" (the client went away) or "error"
    prompt_tokens: int | None  # None when it did not finish
    completion_tokens: int  # when cancelled: the tokens made before it stopped
    seconds: float


# One generation at a time per Model, even when several apps (or event loops) share it.
_model_locks: weakref.WeakKeyDictionary[Model, threading.Lock] = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()


def model_lock(model: Model) -> threading.Lock:
    with _model_locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.Lock()
        return lock


class Job:
    """One request's generation. ``run`` executes in a worker thread; everything else on the
    event loop. With a ``loop``, it reports ("ready" | "piece" | "error" | "done", value) events
    to ``queue`` as they happen (streaming); a piece comes with the logprobs of the tokens
    generated since the previous one (when asked for)."""

    def __init__(
        self,
        model: Model,
        start: Callable[[threading.Event], Stream],
        *,
        endpoint: str,
        stream: bool,
        records: deque[GenerationRecord],
        info: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.model = model
        self.start = start
        self.endpoint = endpoint
        self.streaming = stream
        self.records = records
        self.info = info  # the request's log entry: tokens go there
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] | None = asyncio.Queue() if loop else None
        self.cancel = threading.Event()
        self.stop_reason: str | None = None  # set when the server, not the client, stops it
        self.result: Completion | None = None
        self.error: BaseException | None = None

    def _emit(self, kind: str, value: Any = None) -> None:
        if self.loop is None or self.queue is None:
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancel.set()

    def skip(self) -> None:
        """Stopped before its turn came (its client went, or the server is stopping): record it
        and tell the request, without touching the model."""
        self.info["tokens"] = (None, 0)
        self.records.append(
            GenerationRecord(self.endpoint, self.streaming, "cancelled", None, 0, 0.0)
        )
        self._emit("done", None)

    def run(self) -> None:
        """Generate, checking ``cancel`` before each piece. Never raises: errors go to ``error``."""
        t0 = time.perf_counter()
        with model_lock(self.model):
            stream: Stream | None = None
            try:
                # validates and tokenizes (errors here are the client's); ``cancel`` also stops
                # a long prefill between batches
                stream = self.start(self.cancel)
                self._emit("ready")
                sent = 0
                while not self.cancel.is_set():
                    try:
                        piece = next(stream)
                    except StopIteration:
                        if stream.result.finish_reason != "cancelled":
                            self.result = stream.result
                        break
                    lps: list[TokenLogprob] | None = None
                    if stream.logprobs is not None:
                        lps = stream.logprobs[sent:]
                        sent += len(lps)
                    self._emit("piece", (piece, lps))
            except Exception as e:
                self.error = e
            finally:
                if stream is not None:
                    stream.close()  # in the thread that iterated it
            if self.result is not None:
                u = self.result.usage
                finish, prompt_tokens, completion_tokens = (
                    self.result.finish_reason,
                    u.prompt_tokens,
                    u.completion_tokens,
                )
            else:
                partial = _partial_result(stream)
                completion_tokens = partial.usage.completion_tokens if partial else 0
                finish = "error" if self.error is not None else "cancelled"
                prompt_tokens = None
        self.info["tokens"] = (prompt_tokens, completion_tokens)
        self.records.append(
            GenerationRecord(
                endpoint=self.endpoint,
                stream=self.streaming,
                finish_reason=finish,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                seconds=time.perf_counter() - t0,
            )
        )
        if self.error is not None:
            self._emit("error", self.error)
        else:
            self._emit("done", self.result)


def _partial_result(stream: Stream | None) -> Completion | None:
    """What a stopped stream made before it stopped (None if it never started)."""
    try:
        return stream.result if stream is not None else None
    except RuntimeError:
        return None


async def execute(lock: asyncio.Lock, job: Job) -> None:
    """Wait for the model (FIFO), then run the job in a worker thread. Cancelling this waits for
    the thread to finish, so the lock is never released while the model is still busy."""
    async with lock:
        if job.cancel.is_set():
            job.skip()  # at once: a queue of stopped requests must not hold a shutdown up
        else:
            await anyio.to_thread.run_sync(job.run)


async def run_locked(lock: asyncio.Lock, model: Model, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` (short work on the model, e.g. embeddings) in its turn, in a worker thread."""

    def locked() -> Any:
        with model_lock(model):
            return fn()

    async with lock:
        return await anyio.to_thread.run_sync(locked)


async def watch_disconnect(request: Request, job: Job) -> None:
    while not job.cancel.is_set():
        if await request.is_disconnected():
            job.cancel.set()
            return
        await asyncio.sleep(_POLL_S)


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def events(
    job: Job,
    first: dict[str, Any] | None,
    piece: Callable[[str, list[TokenLogprob] | None], dict[str, Any]],
    last: Callable[[Completion], dict[str, Any]],
    usage: Callable[[Completion], dict[str, Any]] | None,
) -> AsyncIterator[str]:
    """The SSE body. Closed or cancelled when the client goes, which stops the generation."""
    assert job.queue is not None
    try:
        if first is not None:
            yield sse(first)
        while True:
            kind, value = await job.queue.get()
            if kind == "piece":
                yield sse(piece(*value))
            elif kind == "error":
                yield sse(error_event(value))
                break
            elif kind == "done":
                if value is not None:
                    yield sse(last(value))
                    if usage is not None:
                        yield sse(usage(value))
                elif job.stop_reason is not None:
                    yield sse(error_event(RuntimeError(job.stop_reason)))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()


class EventStream(StreamingResponse):
    """Server-sent events whose generation stops however the response ends (even if its body
    never started)."""

    def __init__(self, content: AsyncIterator[str], job: Job | None = None):
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._job = job

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._job is not None:
                self._job.cancel.set()
