"""An OpenAI-compatible HTTP server over one loaded ``Model``: ``edge-llm serve``.

    app = create_app(edge_llm.load(), model_id="smollm2-135m-instruct", api_key=None)
    serve(model, host="127.0.0.1", port=8080, api_key=None, model_id="smollm2-135m-instruct")

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions`` (both streaming over server-sent events or not).

A Model holds one KV cache, so it serves one request at a time: requests wait their turn on an
asyncio lock (first come, first served) and each generation runs in a worker thread, leaving the
event loop free to accept connections and answer ``/health``. A client that disconnects stops its
generation: the worker checks a ``threading.Event`` between pieces of text, and the request sets
it when its client goes. ``serve`` stops the generations in progress when it is told to exit
(Ctrl-C), so their streams end at once. Every generation, finished or stopped, is recorded in
``app.state.generations`` (newest last).

Needs the ``serve`` extra: ``pip install 'edge-llm[serve]'`` (FastAPI and uvicorn).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from edge_llm.errors import ConfigError, EdgeLLMError, PromptError
from edge_llm.model import Completion, Model, Stream
from edge_llm.sampling import SamplingParams

_POLL_S = 0.1  # how often a non-streaming request checks whether its client is still there


# --- request bodies ---------------------------------------------------------------------------
class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool | None = None


class _Body(BaseModel):
    """Fields shared by both endpoints. Unknown fields are ignored; known ones are type-checked
    strictly ("temperature": "0.5" is an error, as in OpenAI's API)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None  # accepted and ignored: this server has one model
    max_tokens: StrictInt | None = None
    temperature: StrictFloat | None = None
    top_p: StrictFloat | None = None
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool | None = None
    stream_options: _StreamOptions | None = None
    n: StrictInt | None = None
    # Not in OpenAI's API; llama.cpp's server takes them too.
    top_k: StrictInt | None = None
    min_p: StrictFloat | None = None
    repeat_penalty: StrictFloat | None = None
    ignore_eos: StrictBool | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = None


class CompletionRequest(_Body):
    prompt: StrictStr | list[StrictStr] | list[StrictInt]


_FIELDS = (
    set(ChatCompletionRequest.model_fields)
    | set(CompletionRequest.model_fields)
    | set(ChatMessage.model_fields)
    | set(_StreamOptions.model_fields)
)
# What a field must be, for messages that say so (keys: field paths, list indexes as *).
_EXPECTED = {
    "messages": "a list of {role, content} objects",
    "messages.*": "a {role, content} object",
    "messages.*.role": "a string",
    "messages.*.content": "a string or a list of text parts",
    "prompt": "a string (or a list of token ids)",
    "model": "a string",
    "stop": "a string or a list of strings",
    "stream": "a boolean",
    "ignore_eos": "a boolean",
    "stream_options": "an object",
    "stream_options.include_usage": "a boolean",
    **dict.fromkeys(("temperature", "top_p", "min_p", "repeat_penalty"), "a number"),
    **dict.fromkeys(("max_tokens", "max_completion_tokens", "seed", "n", "top_k"), "an integer"),
}


# --- errors -----------------------------------------------------------------------------------
def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    type: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _lookup(body: Any, path: list[Any]) -> Any:
    for p in path:
        try:
            body = body[p]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _param_name(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable line (and the OpenAI ``param``) for pydantic's errors about a request body."""
    errors = exc.errors()
    if not errors:
        return "the request is invalid", None
    e = errors[0]
    if e.get("type") == "json_invalid":
        where = e["loc"][-1] if isinstance(e["loc"][-1], int) else None
        at = f" at character {where}" if where is not None else ""
        detail = e.get("ctx", {}).get("error", "it does not parse")
        return f"the request body is not valid JSON: {detail}{at}", None
    # Keep the field names and list indexes; drop "body" and pydantic's union-branch labels.
    path = [p for p in e["loc"][1:] if isinstance(p, int) or p in _FIELDS]
    if not path:
        if isinstance(exc.body, bytes | str) or exc.body is None:
            return (
                "the request body must be a JSON object sent with Content-Type: application/json",
                None,
            )
        return f"the request body must be a JSON object, not {_json_type(exc.body)}", None
    param = _param_name(path)
    if e.get("type") == "missing":
        return f"'{param}' is required", param
    key = ".".join("*" if isinstance(p, int) else p for p in path)
    expected = _EXPECTED.get(key)
    value = _lookup(exc.body, path)
    if expected is None:
        return f"invalid '{param}': {e.get('msg', 'wrong value')}", param
    shown = json.dumps(value, ensure_ascii=False)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return (
        f"invalid type for '{param}': expected {expected}, got {_json_type(value)} ({shown})",
        param,
    )


def _param_of(exc: EdgeLLMError, path: str) -> str | None:
    if isinstance(exc, PromptError):
        return "messages" if path.endswith("/chat/completions") else "prompt"
    if isinstance(exc, ConfigError):
        word = str(exc).split(" ", 1)[0]
        return word if word in _FIELDS else None
    return None


# --- generation -------------------------------------------------------------------------------
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


def _model_lock(model: Model) -> threading.Lock:
    with _model_locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.Lock()
        return lock


class _Job:
    """One request's generation. ``run`` executes in a worker thread; everything else on the
    event loop. With a ``loop``, it reports ("ready" | "piece" | "error" | "done", value) events
    to ``queue`` as they happen (streaming)."""

    def __init__(
        self,
        model: Model,
        start: Callable[[threading.Event], Stream],
        *,
        endpoint: str,
        stream: bool,
        records: deque[GenerationRecord],
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.model = model
        self.start = start
        self.endpoint = endpoint
        self.streaming = stream
        self.records = records
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

    def run(self) -> None:
        """Generate, checking ``cancel`` before each piece. Never raises: errors go to ``error``."""
        t0 = time.perf_counter()
        parts: list[str] = []
        with _model_lock(self.model):
            stream: Stream | None = None
            try:
                # validates and tokenizes (errors here are the client's); ``cancel`` also stops
                # a long prefill between batches
                stream = self.start(self.cancel)
                self._emit("ready")
                while not self.cancel.is_set():
                    try:
                        piece = next(stream)
                    except StopIteration:
                        if stream.result.finish_reason != "cancelled":
                            self.result = stream.result
                        break
                    parts.append(piece)
                    self._emit("piece", piece)
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


async def _execute(lock: asyncio.Lock, job: _Job) -> None:
    """Wait for the model (FIFO), then run the job in a worker thread. Cancelling this waits for
    the thread to finish, so the lock is never released while the model is still busy."""
    async with lock:
        await anyio.to_thread.run_sync(job.run)


async def _watch_disconnect(request: Request, job: _Job) -> None:
    while not job.cancel.is_set():
        if await request.is_disconnected():
            job.cancel.set()
            return
        await asyncio.sleep(_POLL_S)


def _usage(c: Completion) -> dict[str, Any]:
    u = c.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _error_event(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, EdgeLLMError):
        message, kind = str(exc), "invalid_request_error"
    elif isinstance(exc, RuntimeError) and str(exc):
        message, kind = str(exc), "server_error"
    else:
        message, kind = f"the generation failed: {type(exc).__name__}", "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def _events(
    job: _Job,
    first: dict[str, Any] | None,
    piece: Callable[[str], dict[str, Any]],
    last: Callable[[Completion], dict[str, Any]],
    usage: Callable[[Completion], dict[str, Any]] | None,
) -> AsyncIterator[str]:
    """The SSE body. Closed or cancelled when the client goes, which stops the generation."""
    assert job.queue is not None
    try:
        if first is not None:
            yield _sse(first)
        while True:
            kind, value = await job.queue.get()
            if kind == "piece":
                yield _sse(piece(value))
            elif kind == "error":
                yield _sse(_error_event(value))
                break
            elif kind == "done":
                if value is not None:
                    yield _sse(last(value))
                    if usage is not None:
                        yield _sse(usage(value))
                elif job.stop_reason is not None:
                    yield _sse(_error_event(RuntimeError(job.stop_reason)))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()


class _EventStream(StreamingResponse):
    """Server-sent events whose generation stops however the response ends (even if its body
    never started)."""

    def __init__(self, content: AsyncIterator[str], job: _Job):
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
            self._job.cancel.set()


# --- auth -------------------------------------------------------------------------------------
class _BearerAuth:
    """Every /v1 request must carry ``Authorization: Bearer KEY``; checked before the body is read."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            if not auth or scheme.lower() != b"bearer":
                message = "no API key: send the header 'Authorization: Bearer YOUR_KEY'"
            elif not hmac.compare_digest(token.strip(), self.key):
                message = "incorrect API key"
            else:
                await self.app(scope, receive, send)
                return
            response = _error(
                401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- the app ----------------------------------------------------------------------------------
def create_app(model: Model, *, model_id: str, api_key: str | None = None) -> FastAPI:
    """An OpenAI-compatible app over ``model``, named ``model_id`` in its answers. With
    ``api_key``, every /v1 request needs ``Authorization: Bearer API_KEY``; /health stays open."""
    from edge_llm import __version__

    app = FastAPI(
        title="edge-llm",
        version=__version__,
        description="An OpenAI-compatible server over one edge-llm model.",
        docs_url=None,
        redoc_url=None,
    )
    lock = asyncio.Lock()  # FIFO: waiters are woken in arrival order
    records: deque[GenerationRecord] = deque(maxlen=256)
    jobs: set[_Job] = set()  # queued or running
    created = int(time.time())
    app.state.model = model
    app.state.model_id = model_id
    app.state.lock = lock
    app.state.generations = records
    app.state.jobs = jobs
    if api_key:
        app.add_middleware(_BearerAuth, api_key=api_key)

    # Errors, all in OpenAI's shape.
    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation_error(exc)
        return _error(400, message, param=param)

    @app.exception_handler(EdgeLLMError)
    async def _on_edge_llm(request: Request, exc: EdgeLLMError) -> JSONResponse:
        return _error(400, str(exc), param=_param_of(exc, request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"unknown URL: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _error(exc.status_code, message, type=kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}", type="server_error")

    # Routes.
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    def model_card() -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "edge-llm"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> Any:
        if name != model_id:
            return _error(404, f"no model {name!r}; this server has {model_id!r}", param="model")
        return model_card()

    def sampling(body: _Body, max_tokens: int | None, name: str) -> dict[str, Any]:
        if body.n is not None and body.n != 1:
            raise ConfigError(f"n must be 1: this server returns one choice (got {body.n})")
        n_ctx = model.n_ctx
        if max_tokens is None:
            max_tokens = n_ctx  # as OpenAI: until the end of generation or of the context
        elif max_tokens < 1:
            raise ConfigError(f"{name} must be at least 1 (got {max_tokens})")
        elif max_tokens > n_ctx:
            raise ConfigError(
                f"{name} must be at most the context, {n_ctx} tokens, prompt included "
                f"(got {max_tokens})"
            )
        stop = body.stop if body.stop != [] else None
        kwargs = {
            "max_tokens": max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
            "stop": stop,
            "top_k": body.top_k,
            "min_p": body.min_p,
            "repeat_penalty": body.repeat_penalty,
            "ignore_eos": body.ignore_eos,
        }
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            SamplingParams.from_kwargs(**kwargs)  # range errors now, before waiting for the model
        except ConfigError as e:
            # SamplingParams says "max_tokens" where the request said max_completion_tokens.
            raise ConfigError(str(e).replace("max_tokens", name, 1)) from None
        return kwargs

    async def run(
        request: Request,
        start: Callable[[threading.Event], Stream],
        *,
        endpoint: str,
        stream: bool,
        first: Callable[[], dict[str, Any]] | None,
        piece: Callable[[str], dict[str, Any]],
        last: Callable[[Completion], dict[str, Any]],
        usage: Callable[[Completion], dict[str, Any]] | None,
        whole: Callable[[Completion], dict[str, Any]],
    ) -> Any:
        loop = asyncio.get_running_loop() if stream else None
        job = _Job(model, start, endpoint=endpoint, stream=stream, records=records, loop=loop)
        jobs.add(job)
        task = asyncio.ensure_future(_execute(lock, job))
        task.add_done_callback(lambda _: jobs.discard(job))
        watcher = asyncio.ensure_future(_watch_disconnect(request, job))
        try:
            if stream:
                assert job.queue is not None
                kind, value = await job.queue.get()  # "ready", or "error" before any text
                if kind == "error":
                    await task
                    raise value
                events = _events(job, first() if first else None, piece, last, usage)
                return _EventStream(events, job)
            await task
        except BaseException:
            job.cancel.set()
            raise
        finally:
            watcher.cancel()
        if job.error is not None:
            raise job.error
        if job.result is None:
            if job.stop_reason is not None:
                return _error(503, job.stop_reason, type="server_error")
            return _error(499, "the client disconnected; generation stopped")  # nobody reads it
        return whole(job.result)

    def envelope(ident: tuple[str, int], obj: str, choices: list[Any], **extra: Any) -> dict:
        cid, now = ident  # the same id and creation time in every chunk of a response
        return {"id": cid, "object": obj, "created": now, "model": model_id,
                "choices": choices, **extra}  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Any:
        max_tokens, name = body.max_completion_tokens, "max_completion_tokens"
        if max_tokens is None:
            max_tokens, name = body.max_tokens, "max_tokens"
        kwargs = sampling(body, max_tokens, name)
        messages = [_message(i, m) for i, m in enumerate(body.messages)]
        cid = (f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()))

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return envelope(cid, "chat.completion.chunk", [choice])

        def whole(c: Completion) -> dict[str, Any]:
            choice = {"index": 0, "message": c.message, "logprobs": None,
                      "finish_reason": c.finish_reason}  # fmt: skip
            return envelope(cid, "chat.completion", [choice], usage=_usage(c))

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await run(
            request,
            lambda cancel: model.chat_stream(messages, cancel=cancel, **kwargs),
            endpoint="chat.completions",
            stream=bool(body.stream),
            first=lambda: chunk({"role": "assistant", "content": ""}),
            piece=lambda text: chunk({"content": text}),
            last=lambda c: chunk({}, c.finish_reason),
            usage=(lambda c: envelope(cid, "chat.completion.chunk", [], usage=_usage(c)))
            if include_usage
            else None,
            whole=whole,
        )

    @app.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest) -> Any:
        kwargs = sampling(body, body.max_tokens, "max_tokens")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise PromptError(
                    f"prompt holds {len(prompt)} strings; this server completes one per request"
                )
            prompt = prompt[0]
        cid = (f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time()))

        def chunk(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
            return envelope(cid, "text_completion", [choice], **extra)

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await run(
            request,
            lambda cancel: model.stream(prompt, cancel=cancel, **kwargs),
            endpoint="completions",
            stream=bool(body.stream),
            first=None,
            piece=chunk,
            last=lambda c: chunk("", c.finish_reason),
            usage=(lambda c: envelope(cid, "text_completion", [], usage=_usage(c)))
            if include_usage
            else None,
            whole=lambda c: chunk(c.text, c.finish_reason, usage=_usage(c)),
        )

    return app


def _message(i: int, m: ChatMessage) -> dict[str, str]:
    """An OpenAI message as the Model takes it: content as one string, "developer" as system."""
    role = "system" if m.role == "developer" else m.role
    content = m.content
    if content is None:
        if role != "assistant":
            raise PromptError(f"message {i} ({role}) has no content")
        content = ""
    elif isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise PromptError(
                    f"message {i} has a content part of type {part.get('type')!r}; "
                    "this server takes text parts only"
                )
            texts.append(part["text"])
        content = "\n".join(texts)
    return {"role": role, "content": content}


# --- running it -------------------------------------------------------------------------------
def stop_generations(app: FastAPI, reason: str = "the server is shutting down") -> int:
    """Stop every queued and running generation of ``app``; their clients get an error saying
    ``reason``. Returns how many there were."""
    jobs = list(app.state.jobs)
    for job in jobs:
        job.stop_reason = reason
        job.cancel.set()
    return len(jobs)


def uvicorn_server(app: FastAPI, **config: Any) -> Any:
    """A ``uvicorn.Server`` for ``app`` (``config``: uvicorn.Config's options) that, when told to
    exit, first stops the generations in progress, so that their streams end at once instead of
    holding the shutdown up until they finish."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            stop_generations(app)
            await super().shutdown(sockets=sockets)

    return _Server(uvicorn.Config(app, **config))


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a ConfigError saying why there cannot be one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"cannot use host {host!r}: {e.strerror}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port (or --host)"
        ) from None
    return sock


def serve(
    model: Model,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    model_id: str | None = None,
    *,
    on_listen: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve ``model`` until interrupted. ``on_listen`` gets the base URL once the socket listens
    (port 0 picks a free port)."""
    app = create_app(model, model_id=model_id or model.name, api_key=api_key)
    server = uvicorn_server(
        app, log_level=log_level, timeout_graceful_shutdown=5, server_header=False
    )
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    if on_listen is not None:
        on_listen(f"http://{shown_host}:{bound_port}/v1")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
