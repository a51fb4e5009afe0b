"""The model's tokenizer over HTTP: ``/tokenize``, ``/detokenize``, ``/tokenizer_info``.

Why: a client that counts or splits tokens (lm-evaluation-harness splits every log-likelihood
request into context and continuation tokens) needs the served model's own tokenizer, and on an
offline machine it cannot fetch one from the Hugging Face Hub. llama-server and vLLM expose
theirs; both shapes are answered here, so clients of either work unchanged:

- llama-server: ``POST /tokenize {"content", "add_special"=false, "parse_special"=true,
  "with_pieces"=false}`` -> ``{"tokens": [ids]}`` (with pieces: ``[{"id", "piece"}]``, a piece
  being a string, or its bytes when they are not valid UTF-8); ``POST /detokenize {"tokens"}``
  -> ``{"content"}``.
- vLLM (what lm-eval's ``tokenizer_backend=remote`` sends, and finds by probing
  ``GET /tokenizer_info``): ``POST /tokenize {"prompt", "add_special_tokens"=true}`` ->
  ``{"tokens", "count", "max_model_len"}``; ``/detokenize`` also answers ``"prompt"``.

Special tokens written in the text are parsed (both servers do), and ``/detokenize`` writes
them back, so text -> tokens -> text round-trips. These paths are not under /v1, so the API key
guards them by name (``middleware.KEYED``), as llama-server guards every path but /health.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request

from edge_llm.model import Model
from edge_llm.server import schemas as s
from edge_llm.server.errors import RequestError


def add_routes(app: FastAPI) -> None:
    """Add the three routes to ``app``, over ``app.state.model``."""
    model: Model = app.state.model

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await s.parse_body(request, s.TokenizeRequest)
        return await anyio.to_thread.run_sync(tokenize_body, model, body)

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        body = await s.parse_body(request, s.DetokenizeRequest)
        text = await anyio.to_thread.run_sync(detokenize_ids, model, body.tokens)
        return {"content": text, "prompt": text}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        return info(model)


def tokenize_body(model: Model, body: s.TokenizeRequest) -> dict[str, Any]:
    vllm = body.content is None  # {"prompt": ...}: vLLM's request, and its defaults
    text = body.prompt if vllm else body.content
    if text is None:
        raise RequestError(
            400, "'content' is required: the text to tokenize (or 'prompt')", param="content"
        )
    add = body.add_special if body.add_special is not None else body.add_special_tokens
    if add is None:
        add = vllm
    parse = body.parse_special if body.parse_special is not None else True
    ids = model.tokenize(text, add_bos=add, special=parse)
    if body.with_pieces:
        out: dict[str, Any] = {"tokens": [{"id": t, "piece": _piece(model, t)} for t in ids]}
    else:
        out = {"tokens": ids}
    if vllm:
        out.update(count=len(ids), max_model_len=model.n_ctx)
    return out


def _piece(model: Model, token: int) -> str | list[int]:
    raw = model.token_bytes(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def detokenize_ids(model: Model, ids: list[int]) -> str:
    bad = next((t for t in ids if not 0 <= t < model.n_vocab), None)
    if bad is not None:
        raise RequestError(
            400,
            f"token id {bad} is outside the vocabulary (0..{model.n_vocab - 1})",
            param="tokens",
        )
    return model.detokenize(ids, special=True)


def info(model: Model) -> dict[str, Any]:
    """vLLM's ``/tokenizer_info``: the special tokens' text and the chat template."""

    def text(t: int | None) -> str | None:
        return model.token_text(t) if t is not None else None

    return {
        "tokenizer_class": "llama.cpp",
        "bos_token": text(model.bos_id),
        "eos_token": text(model.eos_id),
        "pad_token": None,
        "chat_template": model.chat_template if model.has_chat_template else None,
        "model_max_length": model.n_ctx,
    }
