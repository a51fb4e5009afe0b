"""What OpenAI's API adds around plain text: usage, logprobs, JSON output, tool calls.

JSON mode (``response_format``) and forced tool calls become GBNF grammars through llama.cpp's
own JSON-schema converter (shipped with llama-cpp-python, reached through ``edge_llm.llama.backend``),
so the sampler can only produce output that parses and validates, as in llama-server.

Tool calls use the Hermes format, ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
which the templates of Qwen 2.5/3, Hermes, SmolLM3 and others render and their models are trained
to write. A model qualifies when its own chat template reads ``tools`` and writes that tag; others
get a 400 for a request with tools (rather than tools silently dropped). With ``tool_choice``
"required" or a named function, a grammar forces a well-formed call; with "auto" the model
decides, and any ``<tool_call>`` block in its reply is parsed into ``tool_calls``.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from edge_llm.errors import PromptError
from edge_llm.llama import backend
from edge_llm.model import Model
from edge_llm.results import Completion, TokenLogprob
from edge_llm.server.errors import RequestError

TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
_TOOL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def usage(c: Completion) -> dict[str, Any]:
    u = c.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


# --- logprobs ---------------------------------------------------------------------------------
def chat_logprobs(lps: list[TokenLogprob] | tuple[TokenLogprob, ...]) -> dict[str, Any]:
    """OpenAI's chat ``choice.logprobs``."""

    def entry(token: str, raw: bytes, lp: float) -> dict[str, Any]:
        return {"token": token, "logprob": lp, "bytes": list(raw)}

    content = [
        {**entry(t.token, t.bytes, t.logprob), "top_logprobs": [entry(*x) for x in t.top]}
        for t in lps
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(
    lps: list[TokenLogprob] | tuple[TokenLogprob, ...], offset: int = 0
) -> dict[str, Any]:
    """OpenAI's legacy completions ``choice.logprobs`` (``offset``: where this text starts)."""
    offsets, at = [], offset
    for t in lps:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in lps],
        "token_logprobs": [t.logprob for t in lps],
        "top_logprobs": [{s: lp for s, _, lp in t.top} for t in lps],
        "text_offset": offsets,
    }


# --- response_format --------------------------------------------------------------------------
def response_grammar(fmt: dict[str, Any] | None) -> str | None:
    """The grammar that ``response_format`` asks for (None for plain text)."""
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return backend.json_grammar()
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise RequestError(
                400,
                "response_format.json_schema must be an object with a 'schema' object",
                param="response_format",
            )
        schema = spec.get("schema") or {"type": "object"}
        try:
            return backend.json_grammar(schema)
        except ValueError as e:
            raise RequestError(
                400,
                f"response_format.json_schema.schema cannot be turned into a grammar: {e}",
                param="response_format",
            ) from None
    raise RequestError(
        400,
        f"response_format.type must be 'text', 'json_object' or 'json_schema' (got {kind!r})",
        param="response_format",
    )


# --- tools ------------------------------------------------------------------------------------
def supports_tools(model: Model) -> bool:
    return model.supports_tools and TOOL_OPEN in model.chat_template


def _check_tool(i: int, tool: Any) -> dict[str, Any]:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or tool.get("type") != "function":
        raise RequestError(
            400, f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", param="tools"
        )
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise RequestError(400, f"tools[{i}].function.name must be a string", param="tools")
    if not isinstance(fn.get("parameters", {}), dict):
        raise RequestError(
            400, f"tools[{i}].function.parameters must be a JSON schema object", param="tools"
        )
    return tool


def tools_and_grammar(
    model: Model, tools: list[dict[str, Any]] | None, choice: str | dict[str, Any] | None
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The tools to render in the prompt and the grammar that forces a call (if any)."""
    if not tools:
        if choice not in (None, "none", "auto"):
            raise RequestError(400, "tool_choice needs a list of tools", param="tool_choice")
        return None, None
    tools = [_check_tool(i, t) for i, t in enumerate(tools)]
    if choice == "none":
        return None, None
    if not supports_tools(model):
        raise RequestError(
            400,
            "this model's chat template does not render tools (Hermes-style <tool_call>); "
            "send the request without tools or serve a model whose template has them",
            param="tools",
        )
    names = [t["function"]["name"] for t in tools]
    if choice in (None, "auto"):
        return tools, None
    if choice == "required":
        forced = tools
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in names:
            raise RequestError(
                400, f"tool_choice names {name!r}, which is not in tools", param="tool_choice"
            )
        forced = [tools[names.index(name)]]
    else:
        raise RequestError(
            400,
            "tool_choice must be 'none', 'auto', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    return tools, tool_call_grammar(forced)


def tool_call_grammar(tools: list[dict[str, Any]]) -> str:
    """A grammar for exactly one Hermes-style call of one of ``tools``."""
    alts = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema = alts[0] if len(alts) == 1 else {"anyOf": alts}
    try:
        call = backend.json_grammar(schema)
    except ValueError as e:
        raise RequestError(
            400, f"a tool's parameters cannot be turned into a grammar: {e}", param="tools"
        ) from None
    call = re.sub(r"^root ::=", "edge-llm-tool-call ::=", call, flags=re.M)
    return f'root ::= "{TOOL_OPEN}\\n" edge-llm-tool-call "\\n{TOOL_CLOSE}"\n{call}'


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The reply's text outside tool-call blocks, and the calls in OpenAI's shape."""
    calls: list[dict[str, Any]] = []
    kept, at = [], 0
    for m in _TOOL_BLOCK.finditer(text):
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        args = obj.get("arguments", obj.get("parameters", {}))
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": obj["name"],
                    "arguments": args
                    if isinstance(args, str)
                    else json.dumps(args, ensure_ascii=False),
                },
            }
        )
        kept.append(text[at : m.start()])
        at = m.end()
    if not calls:
        return text, []
    kept.append(text[at:])
    rest = "".join(kept).strip()
    return rest or None, calls


def template_message(i: int, m: Any) -> dict[str, Any]:
    """An OpenAI message as the Model's template takes it: content as one string, "developer"
    as system, tool-call arguments as objects (templates write them with ``tojson``)."""
    role = "system" if m.role == "developer" else m.role
    content = m.content
    if content is None:
        if role != "assistant":
            raise PromptError(f"message {i} ({role}) has no content")
        content = ""
    elif isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise PromptError(
                    f"message {i} has a content part of type {part.get('type')!r}; "
                    "this server takes text parts only"
                )
            texts.append(part["text"])
        content = "\n".join(texts)
    out: dict[str, Any] = {"role": role, "content": content}
    if m.tool_calls:
        calls = []
        for call in m.tool_calls:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise PromptError(f"message {i} has a tool call without a function name")
            args = fn.get("arguments", {})
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    pass
            calls.append({**call, "function": {**fn, "arguments": args}})
        out["tool_calls"] = calls
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out
