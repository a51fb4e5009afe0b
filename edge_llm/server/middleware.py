"""What every request passes before a handler sees it: the request log, the API key, the body guard.

They are plain ASGI middleware, so they act before FastAPI reads anything: a wrong key is
refused before the body is read, an oversized body before it is buffered (from its
Content-Length when it declares one), and a body that stops arriving (shorter than its
Content-Length, or trickled) is answered with a 408 instead of holding a connection and a
worker open. The log writes one line per request when its response ends: method, path,
status, tokens (prompt+completion) and milliseconds.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_llm.server.errors import error

LOG_KEY = "edge_llm.log"  # the scope entry where handlers leave what the log line reports
KEYED = ("/tokenize", "/detokenize", "/tokenizer_info")  # outside /v1, but need the key too


class RequestLog:
    def __init__(self, app: ASGIApp, log: Callable[[str], None]):
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        scope[LOG_KEY] = info
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except BaseException:
            if not status:
                status.append(500)
            raise
        finally:
            ms = (time.perf_counter() - t0) * 1000
            prompt, completion = info.get("tokens", (None, None))
            tokens = f"{prompt if prompt is not None else '-'}+{completion or 0}"
            path = scope.get("path", "")
            if not path.isprintable():
                path = path.encode("unicode_escape").decode()
            shown = status[0] if status else "-"
            self.log(f"{scope['method']} {path} {shown} tokens={tokens} ms={ms:.0f}")


class BearerAuth:
    """Every /v1 request (and KEYED's) must carry ``Authorization: Bearer KEY``; checked before
    the body is read."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/") or path in KEYED):
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
            response = error(
                401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyGuard:
    """Reads a request's whole body before the app sees it: at most ``max_body`` bytes (413
    past it), each piece within ``idle_s`` of the last and all of it within ``total_s`` (408
    otherwise). The app then gets the body in one message."""

    def __init__(self, app: ASGIApp, max_body: int, idle_s: float, total_s: float):
        self.app = app
        self.max_body = max_body
        self.idle_s = idle_s
        self.total_s = total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        close = {"Connection": "close"}  # the rest of the body is never read
        too_big = (
            f"the request body is larger than the server's limit of {self.max_body:,} bytes; "
            "send less (or start the server with a larger --max-body)"
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error(400, "Content-Length is not a number", headers=close)(
                    scope, receive, send
                )
                return
            if size > self.max_body:
                await error(413, too_big, headers=close)(scope, receive, send)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_s
        chunks: list[bytes] = []
        size = 0
        while True:
            wait = min(self.idle_s, deadline - loop.time())
            try:
                message = await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
            except TimeoutError:
                slow = (
                    f"the request body did not arrive in time ({size:,} bytes in, none for "
                    f"{self.idle_s:g} s or over {self.total_s:g} s in all); send it whole"
                )
                await error(408, slow, headers=close)(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return  # the client went before its body was in: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await error(413, too_big, headers=close)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)
