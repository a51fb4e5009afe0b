"""What the server adds for a cascade (``edge-llm serve --cloud``): who answered, and local-only.

Why its own module: the routes stay those of one model (a ``Cascade`` has the Model API), and
the cascade's part is two hooks in them. ``options`` reads the request's ``local_only`` field (not
in OpenAI's API: ``true`` keeps that request on the device whatever its confidence) and
``Tracker`` remembers the request's stream, so that every response object, whole or streamed
chunk, carries ``answered_by`` ("device" or "cloud") once it is known and the last one the
cascade's details (signals, confidence, ``cloud_error``). With a plain Model both add nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request

from edge_llm.server.errors import RequestError


def is_cascade(model: Any) -> bool:
    from edge_llm.cascade import Cascade

    return isinstance(model, Cascade)


async def options(request: Request, model: Any) -> dict[str, Any]:
    """Keyword arguments for the cascade's stream from the request body (``local_only``)."""
    if not is_cascade(model):
        return {}
    try:
        obj = json.loads(await request.body())  # parsed strictly before this: cannot fail here
    except ValueError:
        return {}
    value = obj.get("local_only") if isinstance(obj, dict) else None
    if value is None:
        return {}
    if not isinstance(value, bool):
        raise RequestError(400, "local_only must be a boolean", param="local_only")
    return {"local_only": value}


class Tracker:
    """Remembers the stream a request's ``start`` made; ``fields`` for each response object."""

    def __init__(self) -> None:
        self.stream: Any = None

    def wrap(self, start: Callable[..., Any]) -> Callable[..., Any]:
        def started(*args: Any, **kwargs: Any) -> Any:
            self.stream = start(*args, **kwargs)
            return self.stream

        return started

    def fields(self, completion: Any = None) -> dict[str, Any]:
        """``answered_by`` (and, given the final completion, the cascade's details)."""
        info = getattr(completion, "cascade_info", None)
        if info is not None:
            details = info()
            return {"answered_by": details["answered_by"], "cascade": details}
        who = getattr(self.stream, "answered_by", None)
        return {"answered_by": who} if who else {}
