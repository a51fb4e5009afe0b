"""Running the app: a listening socket, uvicorn, and a shutdown that ends streams at once.

``serve`` stops the generations in progress when it is told to exit (Ctrl-C), so that their
streams end with an error event instead of holding the shutdown up until they finish.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from edge_llm.errors import ConfigError
from edge_llm.model import Model
from edge_llm.server.app import BODY_IDLE_S, MAX_BODY, create_app


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
    max_body: int = MAX_BODY,
    body_timeout_s: float = BODY_IDLE_S,
    on_listen: Callable[[str], None] | None = None,
    log_requests: bool = True,
    log_level: str = "warning",
) -> None:
    """Serve ``model`` until interrupted. ``on_listen`` gets the base URL once the socket listens
    (port 0 picks a free port). Each request is logged on stderr (one line) unless
    ``log_requests`` is False."""
    log = logging.getLogger("edge_llm.server")
    if log_requests and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    app = create_app(
        model,
        model_id=model_id or model.name,
        api_key=api_key,
        max_body=max_body,
        body_idle_s=body_timeout_s,
        request_log=log.info if log_requests else (lambda line: None),
    )
    server = uvicorn_server(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        server_header=False,
        access_log=False,  # our own log line has the tokens and the time
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
