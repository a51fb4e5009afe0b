"""`edge-llm serve`: an OpenAI-compatible HTTP server over one model."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from edge_llm.cli import cloud as c
from edge_llm.cli import options as o
from edge_llm.cli.pull import Yes

# serve's own options (the model's and the cloud's are shared: options.py, cloud.py)
Host = Annotated[
    str,
    typer.Option(
        "--host",
        help="Address to listen on. The default answers this machine only; 0.0.0.0 exposes "
        "the server to the network (set --api-key then).",
    ),
]
Port = Annotated[
    int, typer.Option("--port", min=0, max=65535, help="TCP port (0 picks a free one).")
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="EDGE_LLM_API_KEY",
        help="Require 'Authorization: Bearer KEY' on every /v1 request (/health stays open). "
        "The environment variable keeps the key out of the process list.",
        show_default=False,
    ),
]
MaxBody = Annotated[
    str,
    typer.Option(
        "--max-body",
        help="Largest request body accepted (bytes, or with KB/MB); larger ones get a 413.",
    ),
]
BodyTimeout = Annotated[
    float,
    typer.Option(
        "--body-timeout",
        min=0.1,
        help="Seconds a request body may stall before the request gets a 408.",
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet",
        help="No request log (otherwise one line per request on stderr: method, path, "
        "status, tokens, ms).",
    ),
]
Isolate = Annotated[
    bool | None,
    typer.Option(
        "--isolate/--no-isolate",
        help="Load the model once in a child process first, so a malformed file that makes "
        "llama.cpp abort is an error, not a dead server [default: on for a .gguf path, off "
        "for an installed model name].",
        show_default=False,
    ),
]


@o.grouped
def serve(
    model: o.Model = None,
    where: o.Where = o.AUTO,
    yes: Yes = False,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    adapter: o.Adapters = None,
    host: Host = "127.0.0.1",
    port: Port = 8080,
    api_key: ApiKey = None,
    max_body: MaxBody = "4MB",
    body_timeout: BodyTimeout = 5.0,
    quiet: Quiet = False,
    isolate: Isolate = None,
    cloud: c.Options = c.DEVICE_ONLY,
) -> None:
    """Serve a model over HTTP with OpenAI's API until Ctrl-C; any OpenAI client can use it.

    Endpoints: /v1/chat/completions and /v1/completions (both stream with "stream": true; logprobs; JSON output with response_format; tool calls for models whose template has them), /v1/embeddings (mean-pooled unless the model declares its pooling; L2-normalized), /v1/models, /health. Requests take turns on the one model, first come first served. With --cloud, answers the model is unsure of are escalated to that endpoint; every response says who answered ("answered_by"), and a request with "local_only": true never leaves this machine.

    edge-llm serve --port 8080

    EDGE_LLM_API_KEY=KEY edge-llm serve gemma3-270m --host 0.0.0.0

    LoRA adapters (--adapter NAME=PATH, repeatable) are served beside the base: /v1/models lists MODEL:NAME for each, and a request picks one by that model name or by llama-server's "lora" field ([{"id": 0, "scale": 1.0}], ids from /lora-adapters). The base loads once; requests take turns, each with its own adapter.

    edge-llm serve --adapter math=math.gguf --adapter zh=zh.gguf
    """
    _check_extra()
    limit = _size(max_body)

    from edge_llm.cli.pull import ensure_model
    from edge_llm.server import serve as run_server

    model = ensure_model(model, yes)
    model_id = _model_id(model)
    m = cloud.wrap(_load(model, where, ctx, threads, isolate, adapter))
    run_server(
        m,
        host=host,
        port=port,
        api_key=api_key,
        model_id=model_id,
        max_body=limit,
        body_timeout_s=body_timeout,
        on_listen=lambda url: _listening(url, m, model_id, api_key, cloud),
        log_requests=not quiet,
    )


def _check_extra() -> None:
    """The server's packages are an extra: say how to install them."""
    from edge_llm.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("the server needs its extra: pip install 'edge-llm[serve]'") from None


def _load(model: str | None, where: o.Where, ctx, threads, isolate: bool | None, adapter) -> Any:
    """The model with its --adapter list loaded (none applied: each request picks its own)."""
    from edge_llm.model import load
    from edge_llm.registry import looks_like_path

    if isolate is None:
        isolate = model is not None and looks_like_path(model)
    return load(
        model,
        n_ctx=ctx,
        threads=threads,
        isolate=isolate,
        adapters=o.adapters(adapter),
        **where.load_kwargs(),
    )


def _model_id(model: str | None) -> str:
    """The name the server answers to: the model's registry or store name, or a file's stem."""
    from edge_llm.registry import default_model, looks_like_path, lookup

    if model is None:
        return default_model()
    if looks_like_path(model):
        return model.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf")
    from edge_llm import store

    entry, pulled = lookup(model), store.find(model)
    return entry.name if entry else pulled.name if pulled else model


def _listening(url: str, m, model_id: str, api_key: str | None, cloud: c.Options) -> None:
    """The line saying the server is up, and where."""
    key = ", API key required" if api_key else ""
    if cloud.cloud and not cloud.local_only:
        key += f", escalating to {cloud.cloud_model} at {cloud.cloud}"
    extra = "".join(f" + {model_id}:{name}" for name in m.adapters)
    placement = getattr(m, "placement", None)
    on = f", {placement.describe()}" if placement is not None and placement.offloaded else ""
    print(
        f"edge-llm: serving {model_id}{extra} at {url} (OpenAI API, context {m.n_ctx}{key}{on}); "
        "Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )


def _size(text: str) -> int:
    """Bytes from "4194304", "512KB" or "4MB" (KB = 1024 bytes)."""
    from edge_llm.errors import ConfigError

    t = text.strip().upper().removesuffix("B")
    scale = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(t[-1:], 1)
    try:
        n = int(float(t[:-1] if scale > 1 else t) * scale)
    except (ValueError, OverflowError):
        n = 0
    if n < 1024:
        raise ConfigError(f"--max-body {text!r} is not a size of at least 1KB; e.g. 4MB or 65536")
    return n
