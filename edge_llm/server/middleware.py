"""What every request passes before a handler sees it: the request log, the API key, the body guard.

They are plain ASGI middleware, so they act before FastAPI reads anything: a wrong key is
refused before the body is read, an oversized body before it is buffered (from its
Content-Length when it declares one; the rest is read and discarded, within bounds, so that
every client hears the 413), a body that is not sent as JSON gets a 415, and a body that stops
arriving (shorter than its Content-Length, or trickled) is answered with a 408 instead of
holding a connection and a worker open. The log writes one line per request when its response ends: method, path,
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
            response = error(
                401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


DRAIN_MAX = 64 << 20  # bytes past the limit read and thrown away so the client hears its 413


class BodyGuard:
    """Reads a request's whole body before the app sees it: at most ``max_body`` bytes (413
    past it), each piece within ``idle_s`` of the last and all of it within ``total_s`` (408
    otherwise); a body that is not JSON by its Content-Type gets a 415, as OpenAI's API answers.
    The app then gets the body in one message.

    Before a 413 the rest of the body is read and discarded (up to `DRAIN_MAX` bytes, within the
    same time limits): a server that answers and closes while the client is still sending makes
    the kernel reset the connection, and a client that writes its whole body before reading
    (Python's http.client) then sees the reset, never the 413."""

    def __init__(self, app: ASGIApp, max_body: int, idle_s: float, total_s: float):
        self.app = app
        self.max_body = max_body
        self.idle_s = idle_s
        self.total_s = total_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        size = 0
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await self._refuse(400, "Content-Length is not a number", scope, send)
                return
        deadline = asyncio.get_running_loop().time() + self.total_s
        if size > self.max_body:
            if size <= self.max_body + DRAIN_MAX:
                await self._drain(receive, deadline, 0)
            await self._refuse(413, self._too_big(), scope, send)
            return
        got = await self._read(receive, deadline)
        if isinstance(got, tuple):  # (status, message) or a client that left
            if got[0]:
                await self._refuse(*got, scope, send)
            return
        if got and not _is_json(headers.get(b"content-type")):
            shown = headers.get(b"content-type", b"none").decode("latin-1")[:60]
            message = (
                f"the request body must be JSON sent with 'Content-Type: application/json' "
                f"(this one came as {shown!r})"
            )
            await self._refuse(415, message, scope, send, close=False)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": got, "more_body": False}
            return await receive()  # after the body: disconnect notices

        await self.app(scope, replay, send)

    def _too_big(self) -> str:
        return (
            f"the request body is larger than the server's limit of {self.max_body:,} bytes; "
            "send less (or start the server with a larger --max-body)"
        )

    async def _read(self, receive: Receive, deadline: float) -> bytes | tuple[int, str]:
        """The whole body, or the refusal: (status, message); (0, "") when the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._next(receive, deadline)
            if message is None:
                return 408, self._slow(size)
            if message["type"] == "http.disconnect":
                return 0, ""  # the client went before its body was in: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                if message.get("more_body", False):
                    await self._drain(receive, deadline, size)
                return 413, self._too_big()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _drain(self, receive: Receive, deadline: float, size: int) -> None:
        """Read and discard the rest of the body, up to `DRAIN_MAX` more bytes or the time
        limits, whichever comes first."""
        limit = size + DRAIN_MAX
        while size <= limit:
            message = await self._next(receive, deadline)
            if message is None or message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _next(self, receive: Receive, deadline: float) -> Message | None:
        wait = min(self.idle_s, deadline - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(receive(), timeout=max(wait, 0.0))
        except TimeoutError:
            return None

    def _slow(self, size: int) -> str:
        return (
            f"the request body did not arrive in time ({size:,} bytes in, none for "
            f"{self.idle_s:g} s or over {self.total_s:g} s in all); send it whole"
        )

    @staticmethod
    async def _refuse(
        status: int, message: str, scope: Scope, send: Send, close: bool = True
    ) -> None:
        headers = {"Connection": "close"} if close else None

        async def nothing() -> Message:  # the body was read (or given up on) already
            return {"type": "http.disconnect"}

        await error(status, message, headers=headers)(scope, nothing, send)


def _is_json(content_type: bytes | None) -> bool:
    """application/json, or a JSON-based type (application/...+json); parameters allowed."""
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )
