"""Every error the server answers, in OpenAI's shape, with one line that says what is wrong.

OpenAI's clients read ``{"error": {"message", "type", "param", "code"}}`` and raise a typed
exception by status (400 BadRequestError, 404 NotFoundError, ...); keeping that shape for every
failure, including the ones FastAPI and the body guard produce, is what makes those clients show
our message instead of a generic one.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edge_llm.errors import ConfigError, EdgeLLMError, PromptError


class RequestError(Exception):
    """A request the server refuses: an HTTP status and one line for the client."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


def error_body(
    message: str,
    *,
    param: str | None = None,
    type: str = "invalid_request_error",
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    type: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, param=param, type=type, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def json_type(value: Any) -> str:
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


def param_name(path: list[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def describe_validation_error(
    exc: RequestValidationError, fields: set[str], expected: dict[str, str]
) -> tuple[str, str | None]:
    """One readable line (and the OpenAI ``param``) for pydantic's errors about a request body.
    ``fields``: the field names requests have; ``expected``: what a field must be, by path."""
    errors = exc.errors()
    if not errors:
        return "the request is invalid", None
    e = errors[0]
    # Keep the field names and list indexes; drop "body" and pydantic's union-branch labels.
    path = [p for p in e["loc"][1:] if isinstance(p, int) or p in fields]
    if not path:
        return f"the request body must be a JSON object, not {json_type(exc.body)}", None
    param = param_name(path)
    if e.get("type") == "missing":
        return f"'{param}' is required", param
    key = ".".join("*" if isinstance(p, int) else p for p in path)
    want = expected.get(key)
    value = _lookup(exc.body, path)
    if want is None:
        return f"invalid '{param}': {e.get('msg', 'wrong value')}", param
    shown = json.dumps(value, ensure_ascii=False)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"invalid type for '{param}': expected {want}, got {json_type(value)} ({shown})", param


def param_of(exc: EdgeLLMError, path: str, fields: set[str]) -> str | None:
    """The request field an EdgeLLMError from the model layer is about, when it is clear."""
    if isinstance(exc, PromptError):
        if path.endswith("/chat/completions"):
            return "messages"
        return "input" if path.endswith("/embeddings") else "prompt"
    if isinstance(exc, ConfigError):
        word = str(exc).split(" ", 1)[0]
        return word if word in fields else None
    return None


def error_event(exc: BaseException) -> dict[str, Any]:
    """The error a stream ends with when its generation fails after the first byte was sent."""
    if isinstance(exc, EdgeLLMError):
        message, kind = str(exc), "invalid_request_error"
    elif isinstance(exc, RuntimeError) and str(exc):
        message, kind = str(exc), "server_error"
    else:
        message, kind = f"the generation failed: {type(exc).__name__}", "server_error"
    return error_body(message, type=kind)
