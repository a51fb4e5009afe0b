"""Render a model's chat template (Jinja, from the GGUF) in a sandbox.

A template comes from a downloaded file, so it runs in Jinja's ImmutableSandboxedEnvironment:
no attribute access to Python internals, no mutation of the messages passed in.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_llm.errors import InvalidModelError, PromptError

# Used when a GGUF carries no template (base models): ChatML, as llama.cpp falls back to.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ROLES = ("system", "user", "assistant", "tool")


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=8)
def _compile(source: str):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise InvalidModelError(f"the model's chat template does not parse: {e}") from None


# Fields of OpenAI's tool calling that templates which render tools read from a message.
TOOL_FIELDS = ("tool_calls", "tool_call_id", "name")


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Messages as a list of {"role", "content"} dicts (plus any tool-calling fields), or a
    PromptError saying what is off."""
    if not isinstance(messages, list) or not messages:
        raise PromptError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise PromptError(f"message {i} must be a dict with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise PromptError(f"message {i} has role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise PromptError(f"message {i} content must be a string")
        msg = {"role": m["role"], "content": m["content"]}
        msg.update({k: m[k] for k in TOOL_FIELDS if m.get(k) is not None})
        out.append(msg)
    if not any(m["content"].strip() or m.get("tool_calls") for m in out):
        raise PromptError("every message is empty; write something to the model")
    return out


def render(
    source: str,
    messages: list[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text the template makes of ``messages`` (and of ``tools``, when given)."""
    template = _compile(source)
    extra = {"tools": tools} if tools else {}
    try:
        return template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        )
    except _TemplateRaised as e:
        raise PromptError(f"the model's chat template rejected the messages: {e}") from None
    except TemplateError as e:
        raise InvalidModelError(f"the model's chat template failed: {e}") from None


def renders_tools(source: str | None) -> bool:
    """Whether a template renders OpenAI's ``tools`` (it reads the variable)."""
    if not source:
        return False
    from jinja2 import meta

    try:
        return "tools" in meta.find_undeclared_variables(_compile_ast(source))
    except TemplateError:
        return False


@lru_cache(maxsize=8)
def _compile_ast(source: str):
    return ImmutableSandboxedEnvironment(extensions=[loopcontrols]).parse(source)
