"""Request bodies: parsed strictly, checked before any of them reaches the model.

The body is parsed here rather than by FastAPI so that what Python's ``json`` would let through
but no JSON client means is refused with a 400: the non-JSON constants NaN and Infinity, a lone
surrogate (``"\\ud800"`` decodes to a string that cannot be encoded back to UTF-8, and then fails
deep inside tokenization), nesting deep enough to exhaust the recursion limit, and integers too
long to convert. Field types are strict, as in OpenAI's API ("temperature": "0.5" is an error);
ranges are OpenAI's where it has one (temperature 0-2, top_logprobs 0-20, logprobs 0-5).
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from edge_llm.server.errors import RequestError, param_name

T = TypeVar("T", bound=BaseModel)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool | None = None


class LoraChoice(BaseModel):
    """One entry of llama-server's per-request ``lora`` list: an adapter by its index in
    ``GET /lora-adapters`` and the scale to apply it at."""

    model_config = ConfigDict(extra="ignore")

    id: StrictInt
    scale: StrictFloat | StrictInt = 1.0


class _Body(BaseModel):
    """Fields shared by both generation endpoints. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
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
    lora: list[LoraChoice] | None = None  # llama-server's: the adapters for this request


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None
    name: StrictStr | None = None


class ChatCompletionRequest(_Body):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None


class CompletionRequest(_Body):
    # one text, one list of token ids, or several of either (lm-evaluation-harness sends
    # [[ids...]] and, with batch_size > 1, several lists)
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    logprobs: StrictInt | None = None
    echo: StrictBool | None = None


class TokenizeRequest(BaseModel):
    """llama-server's ``{"content", "add_special", "parse_special", "with_pieces"}`` or vLLM's
    ``{"prompt", "add_special_tokens"}`` (what lm-evaluation-harness's remote tokenizer sends)."""

    model_config = ConfigDict(extra="ignore")

    content: StrictStr | None = None
    prompt: StrictStr | None = None
    add_special: StrictBool | None = None
    add_special_tokens: StrictBool | None = None
    parse_special: StrictBool | None = None
    with_pieces: StrictBool | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: list[StrictInt]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    model: StrictStr | None = None
    encoding_format: StrictStr | None = None
    dimensions: StrictInt | None = None


FIELDS = (
    set(ChatCompletionRequest.model_fields)
    | set(CompletionRequest.model_fields)
    | set(EmbeddingRequest.model_fields)
    | set(ChatMessage.model_fields)
    | set(_StreamOptions.model_fields)
    | set(TokenizeRequest.model_fields)
    | set(DetokenizeRequest.model_fields)
    | set(LoraChoice.model_fields)
)
# What a field must be, for messages that say so (keys: field paths, list indexes as *).
EXPECTED = {
    "messages": "a list of {role, content} objects",
    "messages.*": "a {role, content} object",
    "messages.*.role": "a string",
    "messages.*.content": "a string or a list of text parts",
    "messages.*.tool_calls": "a list of tool call objects",
    "messages.*.tool_call_id": "a string",
    "messages.*.name": "a string",
    "prompt": "a string, a list of token ids, or a list of either",
    "tokens": "a list of token ids",
    "content": "a string",
    "input": "a string, a list of strings or a list of token ids",
    "model": "a string",
    "stop": "a string or a list of strings",
    "stream": "a boolean",
    **dict.fromkeys(
        ("ignore_eos", "echo", "add_special", "add_special_tokens", "parse_special", "with_pieces"),
        "a boolean",
    ),
    "stream_options": "an object",
    "stream_options.include_usage": "a boolean",
    "response_format": "an object",
    "tools": "a list of tool objects",
    "tool_choice": "a string or an object",
    "encoding_format": "a string",
    "lora": 'a list of {"id": N, "scale": X} objects',
    "lora.*": 'an {"id": N, "scale": X} object',
    "lora.*.id": "an integer",
    "lora.*.scale": "a number",
    **dict.fromkeys(("temperature", "top_p", "min_p", "repeat_penalty"), "a number"),
    **dict.fromkeys(
        ("max_tokens", "max_completion_tokens", "seed", "n", "top_k", "top_logprobs", "dimensions"),
        "an integer",
    ),
}
# "logprobs" is a boolean on chat and an integer on completions.
EXPECTED_CHAT = {**EXPECTED, "logprobs": "a boolean"}
EXPECTED_COMPLETION = {**EXPECTED, "logprobs": "an integer"}


# --- parsing ----------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def _bad_text(value: Any, path: list[Any]) -> list[Any] | None:
    """The path of the first string (key or value) that cannot be encoded as UTF-8."""
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return p
        elif isinstance(v, dict):
            for k, x in v.items():
                if _bad_text(k, p) is not None:
                    return p
                stack.append((x, [*p, k]))
        elif isinstance(v, list):
            stack.extend((x, [*p, i]) for i, x in enumerate(v))
    return None


def parse_json(raw: bytes) -> Any:
    """A JSON body, strictly: a RequestError for anything a JSON client would not send."""
    if not raw.strip():
        raise RequestError(400, "the request body is empty; send a JSON object")
    try:
        obj = json.loads(raw, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise RequestError(400, "the request body is not valid UTF-8; send UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise RequestError(
            400, f"the request body is not valid JSON: {e.msg} at character {e.pos}"
        ) from None
    except RecursionError:
        raise RequestError(400, "the request body nests too deeply; flatten it") from None
    except ValueError as e:  # NaN/Infinity, or an integer with thousands of digits
        raise RequestError(400, f"the request body is not valid JSON: {e}") from None
    bad = _bad_text(obj, [])
    if bad is not None:
        where = f"'{param_name(bad)}'" if bad else "the request body"
        raise RequestError(
            400,
            f"{where} holds invalid Unicode (a lone surrogate such as \\ud800); send valid text",
            param=param_name(bad) or None,
        )
    return obj


async def parse_body(request: Request, cls: type[T]) -> T:
    obj = parse_json(await request.body())
    if not isinstance(obj, dict):
        # RequestValidationError's handler words it ("must be a JSON object, not an array").
        raise RequestValidationError([{"loc": ("body",), "type": "dict_type"}], body=obj)
    try:
        return cls.model_validate(obj)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors, body=obj) from None


# --- ranges -----------------------------------------------------------------------------------
def check_ranges(body: _Body) -> None:
    """OpenAI's ranges for its sampling fields, finite numbers for the rest."""
    for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
        value = getattr(body, name)
        if value is not None and not math.isfinite(value):
            raise RequestError(400, f"{name} must be a finite number (got {value})", param=name)
    if body.temperature is not None and not 0 <= body.temperature <= 2:
        raise RequestError(
            400,
            f"temperature must be in [0, 2], 0 for greedy (got {body.temperature})",
            param="temperature",
        )
    if body.top_k is not None and not 0 <= body.top_k < 2**31:
        raise RequestError(400, f"top_k must be >= 0 (got {body.top_k})", param="top_k")
    if body.n is not None and body.n != 1:
        raise RequestError(
            400, f"n must be 1: this server returns one choice (got {body.n})", param="n"
        )


def chat_logprobs(body: ChatCompletionRequest) -> int | None:
    """How many top tokens to report per token (None: no logprobs), as OpenAI's chat API."""
    top = body.top_logprobs
    if top is not None and not 0 <= top <= 20:
        raise RequestError(
            400, f"top_logprobs must be in [0, 20] (got {top})", param="top_logprobs"
        )
    if not body.logprobs:
        if top:
            raise RequestError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return None
    return top or 0


def completion_logprobs(body: CompletionRequest) -> int | None:
    n = body.logprobs
    if n is not None and not 0 <= n <= 5:
        raise RequestError(400, f"logprobs must be in [0, 5] (got {n})", param="logprobs")
    return n
