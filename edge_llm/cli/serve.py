"""`edge-llm serve`: an OpenAI-compatible HTTP server over one model."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from edge_llm.cli import options as o


def serve(
    model: o.Model = None,
    device: o.Device = "auto",
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. The default answers this machine only; 0.0.0.0 exposes "
            "the server to the network (set --api-key then).",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port (0 picks a free one).")
    ] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="EDGE_LLM_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every /v1 request (/health stays open). "
            "The environment variable keeps the key out of the process list.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP with OpenAI's API until Ctrl-C; any OpenAI client can use it.

    Endpoints: /v1/chat/completions and /v1/completions (both stream with "stream": true), /v1/models, /health. Requests take turns on the one model, first come first served.

    edge-llm serve --port 8080

    EDGE_LLM_API_KEY=KEY edge-llm serve gemma3-270m --host 0.0.0.0
    """
    from edge_llm.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("the server needs its extra: pip install 'edge-llm[serve]'") from None

    from edge_llm.model import load
    from edge_llm.registry import default_model, looks_like_path, lookup
    from edge_llm.server import serve as run_server

    if model is None:
        model_id = default_model()
    elif looks_like_path(model):
        model_id = model.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".gguf")
    else:
        entry = lookup(model)
        model_id = entry.name if entry else model
    m = load(model, device=device, n_ctx=ctx, threads=threads)

    def listening(url: str) -> None:
        key = ", API key required" if api_key else ""
        print(
            f"edge-llm: serving {model_id} at {url} (OpenAI API, context {m.n_ctx}{key}); "
            "Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )

    run_server(m, host=host, port=port, api_key=api_key, model_id=model_id, on_listen=listening)
