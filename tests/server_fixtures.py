"""A real uvicorn server on a free loopback port, for the server's tests (shared by them)."""

from __future__ import annotations

import socket
import threading
import time

import openai
import uvicorn

from edge_llm.server import uvicorn_server


class Running:
    """An app served by uvicorn in a background thread on a free loopback port (by `serve`'s own
    server, which stops generations when it is told to exit, with ``as_serve``)."""

    def __init__(self, app, *, as_serve: bool = False):
        self.app = app
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if as_serve:
            self.server = uvicorn_server(app, log_level="warning")
        else:
            self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def client(self, api_key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()
