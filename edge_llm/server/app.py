"""The OpenAI-compatible app: routes, and how each request becomes a generation.

    app = create_app(edge_llm.load(), model_id="smollm2-135m-instruct", api_key=None)

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions`` (both streaming over server-sent events or not; logprobs, JSON output
through ``response_format``, tool calls on chat; ``echo`` and several prompts: echo.py),
``POST /v1/embeddings``, and the tokenizer's routes (tokens.py). The ``model`` a request names must
be the loaded one (404 otherwise, as OpenAI answers an unknown model). A model without a chat
template is a completion model: its chat endpoint refuses with a 400 that says so, rather than
wrapping the messages in a template it was never trained on.

LoRA adapters loaded on the model (``edge-llm serve --adapter NAME=PATH``) are models too:
``GET /v1/models`` lists ``BASE:NAME`` for each, and a request picks one by that name or by
llama-server's ``lora`` field (``[{"id": 0, "scale": 1.0}]``, ids as ``GET /lora-adapters`` lists
them). The adapters are set on the model in the request's own turn, so requests that ask for
different adapters never mix.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_llm.errors import ConfigError, EdgeLLMError
from edge_llm.model import Model
from edge_llm.results import Completion, Stream, TokenLogprob
from edge_llm.sampling import SamplingParams
from edge_llm.server import cascade as cascade_hook
from edge_llm.server import echo, tokens
from edge_llm.server import formats as f
from edge_llm.server import schemas as s
from edge_llm.server.errors import RequestError, describe_validation_error, error, param_of
from edge_llm.server.jobs import (
    EventStream,
    GenerationRecord,
    Job,
    events,
    execute,
    run_locked,
    sse,
    watch_disconnect,
)
from edge_llm.server.middleware import LOG_KEY, BearerAuth, BodyGuard, RequestLog

MAX_BODY = 4 * 1024 * 1024  # bytes: a request body larger than this gets a 413
BODY_IDLE_S = 5.0  # a body that stops arriving for this long gets a 408
BODY_TOTAL_S = 60.0  # ... and so does one that takes longer than this in all
MAX_EMBEDDING_INPUTS = 256
log = logging.getLogger("edge_llm.server")


def create_app(
    model: Model,
    *,
    model_id: str,
    api_key: str | None = None,
    max_body: int = MAX_BODY,
    body_idle_s: float = BODY_IDLE_S,
    body_total_s: float = BODY_TOTAL_S,
    request_log: Callable[[str], None] | None = None,
) -> FastAPI:
    """An OpenAI-compatible app over ``model``, named ``model_id`` in its answers. With
    ``api_key``, every /v1 request needs ``Authorization: Bearer API_KEY``; /health stays open.
    Each request's log line goes to ``request_log`` (default: the "edge_llm.server" logger)."""
    from edge_llm import __version__

    app = FastAPI(
        title="edge-llm",
        version=__version__,
        description="An OpenAI-compatible server over one edge-llm model.",
        docs_url=None,
        redoc_url=None,
    )
    served = Served(model, model_id)
    app.state.model = model
    app.state.lock = served.lock
    app.state.generations = served.records
    app.state.jobs = served.jobs
    # The last added runs first: the log sees every request, the key is checked before the body.
    app.add_middleware(BodyGuard, max_body=max_body, idle_s=body_idle_s, total_s=body_total_s)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_middleware(RequestLog, log=request_log or log.info)
    _add_error_handlers(app)
    tokens.add_routes(app)
    _add_model_routes(app, served)
    _add_chat_route(app, served)
    _add_completion_route(app, served)
    _add_embedding_route(app, served)
    return app


class Served:
    """What every route shares: the model and its names, the turn lock (FIFO: waiters are woken in
    arrival order), the jobs queued or running, and the last generations."""

    def __init__(self, model: Model, model_id: str) -> None:
        self.model = model
        self.model_id = model_id
        self.lock = asyncio.Lock()
        self.records: deque[GenerationRecord] = deque(maxlen=256)
        self.jobs: set[Job] = set()  # queued or running
        self.created = int(time.time())
        self.names = {model_id, model.path.name, model.path.stem, str(model.path)}
        # LoRA adapters loaded on the model: each is also a model, "BASE:NAME" (GET /v1/models)
        self.adapter_ids = {f"{model_id}:{name}": name for name in model.adapters}

    async def parse(self, request: Request, schema: type) -> Any:
        """The request's body as ``schema``, naming this server's model (or none)."""
        body = await s.parse_body(request, schema)
        self.check_model(body.model)
        return body

    def check_model(self, name: str | None) -> None:
        if name is None or name in self.names or name in self.adapter_ids:
            return
        from edge_llm.registry import lookup

        if lookup(name) is not None:
            message = (
                f"the model {name!r} is not loaded: this server serves {self.model_id!r}; "
                f"start 'edge-llm serve {name}' to serve it"
            )
        else:
            message = (
                f"the model {name!r} does not exist; this server serves {self.model_id!r} "
                "(GET /v1/models lists it)"
            )
        raise RequestError(404, message, param="model", code="model_not_found")

    def adapters_for(self, name: str | None, lora: list[s.LoraChoice] | None) -> dict[str, float]:
        """The adapters a request asks for: llama-server's ``lora`` list if given, else the
        adapter its model name picks ("BASE:NAME"), else none (the base alone)."""
        model, adapter_ids = self.model, self.adapter_ids
        loaded = list(model.adapters)
        if lora is None:
            return (
                {adapter_ids[name]: model.adapters[adapter_ids[name]].scale}
                if name in adapter_ids
                else {}
            )
        out: dict[str, float] = {}
        for i, choice in enumerate(lora):
            if not 0 <= choice.id < len(loaded):
                raise RequestError(
                    400,
                    f"lora[{i}].id is {choice.id}; this server has {len(loaded)} adapters "
                    "(GET /lora-adapters lists them)",
                    param="lora",
                )
            out[loaded[choice.id]] = float(choice.scale)
        return out

    def with_adapters(self, chosen: dict[str, float], start: Callable[[threading.Event], Stream]):
        """``start`` run with ``chosen`` applied: in the job's turn on the model, so requests
        that ask for different adapters never see each other's."""

        def started(cancel: threading.Event) -> Stream:
            self.model.use(chosen)
            return start(cancel)

        return started

    def sampling(self, body: s._Body, max_tokens: int | None, name: str) -> dict[str, Any]:
        s.check_ranges(body)
        n_ctx = self.model.n_ctx
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
        self,
        request: Request,
        start: Callable[[threading.Event], Stream],
        *,
        endpoint: str,
        stream: bool,
        first: Callable[[], dict[str, Any]] | None,
        piece: Callable[[str, list[TokenLogprob] | None], dict[str, Any]],
        last: Callable[[Completion], dict[str, Any]],
        usage: Callable[[Completion], dict[str, Any]] | None,
        whole: Callable[[Completion], dict[str, Any]],
    ) -> Any:
        """A generation in its turn on the model: an event stream once it has started (``first``,
        each ``piece``, ``last``, ``usage``), or ``whole`` of its finished completion."""
        loop = asyncio.get_running_loop() if stream else None
        info = request.scope.setdefault(LOG_KEY, {})
        job = Job(
            self.model,
            start,
            endpoint=endpoint,
            stream=stream,
            records=self.records,
            info=info,
            loop=loop,
        )
        self.jobs.add(job)
        task = asyncio.ensure_future(execute(self.lock, job))
        task.add_done_callback(lambda _: self.jobs.discard(job))
        watcher = asyncio.ensure_future(watch_disconnect(request, job))
        try:
            if stream:
                assert job.queue is not None
                # "ready"; "error" before any text; "done" when stopped before its turn
                kind, value = await job.queue.get()
                if kind == "error":
                    await task
                    raise value
                if kind == "ready":
                    body = events(job, first() if first else None, piece, last, usage)
                    return EventStream(body, job)
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
                return error(503, job.stop_reason, type="server_error")
            return error(499, "the client disconnected; generation stopped")  # nobody reads it
        return whole(job.result)

    def envelope(self, ident: tuple[str, int], obj: str, choices: list[Any], **extra: Any) -> dict:
        cid, now = ident  # the same id and creation time in every chunk of a response
        return {
            "id": cid,
            "object": obj,
            "created": now,
            "model": self.model_id,
            "choices": choices,
            **extra,
        }

    def model_card(self, name: str | None = None) -> dict[str, Any]:
        name = self.model_id if name is None else name
        card = {"id": name, "object": "model", "created": self.created, "owned_by": "edge-llm"}
        if name in self.adapter_ids:  # as vLLM lists its LoRA modules
            path = self.model.adapters[self.adapter_ids[name]].path
            card |= {"root": str(path), "parent": self.model_id}
        return card


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape."""

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        chat = request.url.path.endswith("/chat/completions")
        expected = s.EXPECTED_CHAT if chat else s.EXPECTED_COMPLETION
        message, param = describe_validation_error(exc, s.FIELDS, expected)
        return error(400, message, param=param)

    @app.exception_handler(RequestError)
    async def _on_request(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc), param=exc.param, code=exc.code)

    @app.exception_handler(EdgeLLMError)
    async def _on_edge_llm(request: Request, exc: EdgeLLMError) -> JSONResponse:
        return error(400, str(exc), param=param_of(exc, request.url.path, s.FIELDS))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"unknown URL: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error(exc.status_code, message, type=kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}", type="server_error")


def _add_model_routes(app: FastAPI, served: Served) -> None:
    """/health, the models (the base and each adapter) and llama-server's adapter list."""

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        cards = [served.model_card(), *map(served.model_card, served.adapter_ids)]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> Any:
        served.check_model(name)
        return served.model_card(name if name in served.adapter_ids else served.model_id)

    @app.get("/lora-adapters")
    async def lora_adapters() -> list[dict[str, Any]]:
        """llama-server's list: each adapter's id (for a request's ``lora``), path and scale."""
        return [
            {"id": i, "name": a.name, "path": str(a.path), "scale": a.scale}
            for i, a in enumerate(served.model.adapters.values())
        ]


def _add_chat_route(app: FastAPI, served: Served) -> None:
    """POST /v1/chat/completions."""
    model, envelope = served.model, served.envelope

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await served.parse(request, s.ChatCompletionRequest)
        kwargs, tools = _chat_options(served, body)
        messages = [f.template_message(i, m) for i, m in enumerate(body.messages)]
        kwargs.update(await cascade_hook.options(request, model))
        tracker = cascade_hook.Tracker()  # answered_by, when the model is a cascade
        cid = (f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()))

        def chunk(delta: dict[str, Any], finish: str | None = None, lps: Any = None) -> dict:
            choice = {"index": 0, "delta": delta, "logprobs": lps, "finish_reason": finish}
            return envelope(cid, "chat.completion.chunk", [choice], **tracker.fields())

        def piece(text: str, lps: list[TokenLogprob] | None) -> dict[str, Any]:
            return chunk({"content": text}, lps=f.chat_logprobs(lps) if lps is not None else None)

        def reply(c: Completion) -> tuple[dict[str, Any], str]:
            if tools:
                content, calls = f.parse_tool_calls(c.text)
                if calls:
                    return {"role": "assistant", "content": content, "tool_calls": calls}, (
                        "tool_calls"
                    )
            return {"role": "assistant", "content": c.text}, c.finish_reason

        def whole(c: Completion) -> dict[str, Any]:
            message, finish = reply(c)
            lps = f.chat_logprobs(c.logprobs) if c.logprobs is not None else None
            choice = {"index": 0, "message": message, "logprobs": lps, "finish_reason": finish}
            return envelope(cid, "chat.completion", [choice], usage=f.usage(c), **tracker.fields(c))

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        usage_chunk = lambda c: envelope(cid, "chat.completion.chunk", [], usage=f.usage(c))  # noqa: E731
        stream = bool(body.stream)
        start = tracker.wrap(
            served.with_adapters(
                served.adapters_for(body.model, body.lora),
                lambda cancel: model.chat_stream(messages, cancel=cancel, tools=tools, **kwargs),
            )
        )
        if tools and stream:
            # A tool call is known once the reply is whole: generate it, then stream it.
            answer = await served.run(
                request,
                start,
                endpoint="chat.completions",
                stream=False,
                first=None,
                piece=piece,
                last=whole,
                usage=None,
                whole=lambda c: c,
            )
            if not isinstance(answer, Completion):
                return answer
            return EventStream(_replay_tool_reply(answer, reply, chunk, usage_chunk, include_usage))
        return await served.run(
            request,
            start,
            endpoint="chat.completions",
            stream=stream,
            first=lambda: chunk({"role": "assistant", "content": ""}),
            piece=piece,
            last=lambda c: {**chunk({}, c.finish_reason), **tracker.fields(c)},
            usage=usage_chunk if include_usage else None,
            whole=whole,
        )


def _chat_options(served: Served, body: s.ChatCompletionRequest) -> tuple[dict[str, Any], Any]:
    """A chat request's generation keywords and tools, checked before it waits for the model."""
    model = served.model
    if not model.has_chat_template:
        raise RequestError(
            400,
            f"{served.model_id} has no chat template: it is a completion (base) model; "
            "send its text to /v1/completions instead",
            param="messages",
            code="model_not_chat",
        )
    max_tokens, name = body.max_completion_tokens, "max_completion_tokens"
    if max_tokens is None:
        max_tokens, name = body.max_tokens, "max_tokens"
    kwargs = served.sampling(body, max_tokens, name)
    top = s.chat_logprobs(body)
    if top is not None:
        kwargs["logprobs"] = top
    tools, forced = f.tools_and_grammar(model, body.tools, body.tool_choice)
    grammar = f.response_grammar(body.response_format)
    if grammar and forced:
        raise RequestError(
            400,
            "response_format cannot be combined with a required tool call",
            param="response_format",
        )
    if grammar or forced:
        kwargs["grammar"] = forced or grammar
    return kwargs, tools


def _add_completion_route(app: FastAPI, served: Served) -> None:
    """POST /v1/completions (echo and several prompts: echo.py)."""
    model, envelope = served.model, served.envelope

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await served.parse(request, s.CompletionRequest)
        cid = (f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time()))
        prompts = echo.prompts(body.prompt)
        if body.echo or len(prompts) > 1:  # as lm-evaluation-harness sends them (echo.py)
            return await echo.complete(
                request, body, prompts, app.state, served.sampling, envelope, cid
            )
        kwargs = served.sampling(body, body.max_tokens, "max_tokens")
        n_top = s.completion_logprobs(body)
        if n_top is not None:
            kwargs["logprobs"] = n_top
        prompt = prompts[0]
        kwargs.update(await cascade_hook.options(request, model))
        tracker = cascade_hook.Tracker()  # answered_by, when the model is a cascade
        offset = [0]  # where the next piece starts in the completion's text

        def chunk(text: str, finish: str | None = None, lps: Any = None, **extra: Any) -> dict:
            choice = {"text": text, "index": 0, "logprobs": lps, "finish_reason": finish}
            return envelope(cid, "text_completion", [choice], **{**tracker.fields(), **extra})

        def piece(text: str, lps: list[TokenLogprob] | None) -> dict[str, Any]:
            shown = f.completion_logprobs(lps, offset[0]) if lps is not None else None
            offset[0] += len(text)
            return chunk(text, lps=shown)

        def whole(c: Completion) -> dict[str, Any]:
            lps = f.completion_logprobs(c.logprobs) if c.logprobs is not None else None
            return chunk(c.text, c.finish_reason, lps=lps, usage=f.usage(c), **tracker.fields(c))

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await served.run(
            request,
            tracker.wrap(
                served.with_adapters(
                    served.adapters_for(body.model, body.lora),
                    lambda cancel: model.stream(prompt, cancel=cancel, **kwargs),
                )
            ),
            endpoint="completions",
            stream=bool(body.stream),
            first=None,
            piece=piece,
            last=lambda c: chunk("", c.finish_reason, **tracker.fields(c)),
            usage=(lambda c: envelope(cid, "text_completion", [], usage=f.usage(c)))
            if include_usage
            else None,
            whole=whole,
        )


def _add_embedding_route(app: FastAPI, served: Served) -> None:
    """POST /v1/embeddings."""
    model = served.model

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        body = await served.parse(request, s.EmbeddingRequest)
        inputs = _embedding_inputs(body)
        fmt = body.encoding_format or "float"
        if fmt not in ("float", "base64"):
            raise RequestError(
                400,
                f"encoding_format must be 'float' or 'base64' (got {fmt!r})",
                param="encoding_format",
            )

        chosen = served.adapters_for(body.model, None)

        def work() -> tuple[list[Any], int]:
            model.use(chosen)
            vectors = [model.embed(x) for x in inputs]
            n = sum(len(model.tokenize(x)) if isinstance(x, str) else len(x) for x in inputs)
            return vectors, n

        vectors, n_tokens = await run_locked(served.lock, model, work)
        request.scope.setdefault(LOG_KEY, {})["tokens"] = (n_tokens, 0)
        if body.dimensions is not None and body.dimensions != len(vectors[0]):
            raise RequestError(
                400,
                f"dimensions must be this model's {len(vectors[0])} (got {body.dimensions})",
                param="dimensions",
            )
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                if fmt == "base64"
                else v.tolist(),
            }
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": served.model_id,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }


def _embedding_inputs(body: s.EmbeddingRequest) -> list[Any]:
    """The texts (or token-id lists) to embed, at least one and none empty."""
    inputs: list[Any] = [body.input] if isinstance(body.input, str) else list(body.input)
    if inputs and isinstance(inputs[0], int):
        inputs = [inputs]  # one input given as token ids
    if not inputs:
        raise RequestError(400, "input is empty; give at least one text", param="input")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise RequestError(
            400,
            f"input holds {len(inputs)} texts; send at most {MAX_EMBEDDING_INPUTS} per request",
            param="input",
        )
    for i, x in enumerate(inputs):
        if not (x.strip() if isinstance(x, str) else x):
            raise RequestError(400, f"input[{i}] is empty", param="input")
    return inputs


async def _replay_tool_reply(
    c: Completion,
    reply: Callable[[Completion], tuple[dict[str, Any], str]],
    chunk: Callable[..., dict[str, Any]],
    usage_chunk: Callable[[Completion], dict[str, Any]],
    include_usage: bool,
) -> Any:
    """A finished chat reply (which may hold tool calls) as OpenAI streams one."""
    message, finish = reply(c)
    yield sse(chunk({"role": "assistant", "content": ""}))
    if message.get("content"):
        yield sse(chunk({"content": message["content"]}))
    for i, call in enumerate(message.get("tool_calls", [])):
        yield sse(chunk({"tool_calls": [{"index": i, **call}]}))
    yield sse(chunk({}, finish))
    if include_usage:
        yield sse(usage_chunk(c))
    yield "data: [DONE]\n\n"
