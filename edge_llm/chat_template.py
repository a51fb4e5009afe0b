"""Render a model's chat template (Jinja, from the GGUF) in a sandbox.

A template comes from a downloaded file, so it runs in Jinja's ImmutableSandboxedEnvironment:
no attribute access to Python internals, no mutation of the messages passed in. The sandbox
bounds what a template may run, not what it may cost: ``{{ 'x' * 10**9 }}`` asks for gigabytes,
nested loops run for hours. So rendering also has budgets: no string, list or number a template
builds may exceed the output budget (checked before the operation allocates it), the output
itself is bounded, and the template's own code may run a bounded number of lines (and seconds).
Past a budget, a one-line InvalidModelError.

A GGUF without a template is a completion (base) model. Giving it ChatML, as llama.cpp does,
makes it echo the tags it never learned (``<|im_end|>\n<|im_start|>user``) and run to the token
limit. ``chat_format`` instead gives such a model a plain transcript ("User: ...\nAssistant:")
whose stop strings end the reply where the model starts the next turn, and says so; the
terminal chat and the server both use it, so they treat base models the same way.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.compiler import CodeGenerator
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_llm.errors import InvalidModelError, PromptError

# Used when a GGUF carries no template (base models): a plain transcript, and the stop strings
# that end a reply when the model goes on to write the next turn itself.
PLAIN = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
PLAIN_STOPS = ("\nUser:", "\nAssistant:", "\nSystem:", "<|im_start|>", "<|im_end|>")

ROLES = ("system", "user", "assistant", "tool")


# Budgets of one rendering. The output may be this much beyond the messages it renders.
MAX_OUTPUT_CHARS = 1 << 20
MAX_STEPS = 2_000_000  # lines of the compiled template executed
MAX_SECONDS = 1.5
MAX_POW_BITS = 4096
_WIDE_FORMAT = re.compile(r"\d{6,}")  # a field width of a million characters or more


@dataclass(frozen=True)
class ChatFormat:
    """How a model's chat prompt is made: its own template, or the plain one for a base model."""

    source: str
    stops: tuple[str, ...]
    is_chat_model: bool

    def notice(self, name: str) -> str | None:
        """One line for the user when the model is not a chat model, else None."""
        if self.is_chat_model:
            return None
        return (
            f"note: {name} has no chat template, so it is a completion (base) model; replies use "
            "a plain 'User:/Assistant:' transcript and end where it starts the next turn "
            "(use `edge-llm run` for plain text continuation)"
        )


def chat_format(template: str | None) -> ChatFormat:
    """The chat format for a GGUF's ``tokenizer.chat_template`` (None or empty: a base model)."""
    if template and template.strip():
        return ChatFormat(template, (), True)
    return ChatFormat(PLAIN, PLAIN_STOPS, False)


def merge_stops(stop: Any, extra: tuple[str, ...]) -> tuple[str, ...]:
    """The caller's stop strings (None, a string or a sequence) plus ``extra``, deduplicated."""
    if stop is None:
        given: tuple[str, ...] = ()
    elif isinstance(stop, str):
        given = (stop,)
    else:
        given = tuple(stop)
    return tuple(dict.fromkeys(given + extra))


class _TemplateRaised(Exception):
    pass


class _OverBudget(Exception):
    pass


class _Budget:
    """The limits of one render(): size (from the messages' size), steps and time."""

    def __init__(self, input_chars: int):
        self.chars = MAX_OUTPUT_CHARS + 2 * input_chars
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def size(self, n: int, what: str) -> None:
        if n > self.chars:
            raise _OverBudget(
                f"{what} would be {n} characters or items, over the budget {self.chars}"
            )

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise _OverBudget(f"it ran more than {MAX_SECONDS} s")


class _Local(threading.local):
    budget: _Budget | None = None


_local = _Local()


def _budget() -> _Budget:
    return _local.budget or _Budget(0)


def _weight(*values: Any) -> int:
    """Characters and items reachable from ``values`` (what printing them would produce, about),
    counted only up to just past the budget: containers may share one big string many times."""
    b = _budget()
    total, stack = 0, list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, str | bytes):
            total += len(v)
        elif isinstance(v, list | tuple | dict | set | frozenset):
            total += len(v)
            stack.extend(v.items() if isinstance(v, dict) else v)
        if total > b.chars:
            return total
        if len(stack) > 65536 and len(stack) % 65536 == 0:
            b.clock()
    return total


def _check_ints(name: str, args: tuple, kwargs: dict) -> None:
    b = _budget()
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > b.chars:
            raise _OverBudget(f"{name} called with {a}, beyond the budget {b.chars}")
        if isinstance(a, str) and _WIDE_FORMAT.search(a) and "format" in name:
            raise _OverBudget(f"{name} called with a field width of a million or more")


def _check_call(name: str, target: Any, args: tuple, kwargs: dict) -> None:
    """Refuse a call whose result would exceed the budget, before it runs."""
    _check_ints(name, args, kwargs)
    b = _budget()
    b.size(_weight(target, *args, *kwargs.values()), f"the input of {name}")
    if name.endswith("replace") and len(args) >= 2:
        s, old, new = target, args[0], args[1]
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
            b.size(len(s) + (s.count(old) if old else len(s) + 1) * len(new), "replace()")
    if "format" in name and isinstance(target, str) and _WIDE_FORMAT.search(target):
        raise _OverBudget(f"{name} with a field width of a million or more")


def _bounded_filter(name: str, f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        vals = [a for a in args if not hasattr(a, "environment")]  # not the context/environment
        _check_call(f"filter {name}", vals[0] if vals else None, tuple(vals[1:]), kwargs)
        out = f(*args, **kwargs)
        _budget().size(_weight(out), f"filter {name}'s result")
        return out

    return wrapper


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` before it is turned into text."""
    _budget().size(_weight(value), "an output expression")
    return value


class _Codegen(CodeGenerator):
    """``a ~ b`` joins its operands as text: route it through a size check first."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with sizes checked before an operator or call allocates."""

    intercepted_binops = frozenset(["*", "**", "+"])
    code_generator_class = _Codegen

    def checked_concat(self, items: tuple) -> str:
        _budget().size(_weight(*items), "a ~ concatenation")
        return "".join(map(str, items))

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        b = _budget()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and isinstance(seq, str | list | tuple):
                    b.size(_weight(seq) * max(n, 0), "a repeated string or list")
        elif operator == "+":
            b.size(_weight(left, right), "a concatenation")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > MAX_POW_BITS:
                raise _OverBudget(f"{left} ** {right} is too large a number")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805
        name = getattr(__obj, "__name__", "a function")
        bound = getattr(__obj, "__self__", None)  # str.format arrives wrapped by the sandbox
        if bound is None:
            bound = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        _check_call(name, bound, args, kwargs)
        out = super().call(__context, __obj, *args, **kwargs)
        _budget().size(_weight(out), f"{name}()'s result")
        return out


@lru_cache(maxsize=8)
def _compile(source: str):
    env = _BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], finalize=_finalize
    )
    env.filters = {n: _bounded_filter(n, f) for n, f in env.filters.items()}
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
    """The prompt text the template makes of ``messages`` (and of ``tools``, when given),
    within the rendering budgets."""
    template = _compile(source)
    extra = {"tools": tools} if tools else {}
    size = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    size += len(json.dumps(tools, default=str)) if tools else 0
    budget = _Budget(size + len(bos_token) + len(eos_token))
    previous = _local.budget, sys.gettrace()
    _local.budget = budget
    sys.settrace(_tracer(budget))
    try:
        parts, n = [], 0
        for piece in template.generate(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            **extra,
        ):
            n += len(piece)
            budget.size(n, "the rendered prompt")
            parts.append(piece)
        return "".join(parts)
    except _TemplateRaised as e:
        raise PromptError(f"the model's chat template rejected the messages: {e}") from None
    except _OverBudget as e:
        raise InvalidModelError(
            f"the model's chat template went over its budget: {e}; the template is broken or "
            "hostile, use a model with a sane template"
        ) from None
    except (
        TemplateError,
        RecursionError,
        MemoryError,
        ArithmeticError,
        TypeError,
        ValueError,
        AttributeError,
        LookupError,
    ) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidModelError(f"the model's chat template failed: {reason}") from None
    finally:
        sys.settrace(previous[1])
        _local.budget = previous[0]


def continue_final(rendered: str, content: str) -> str | None:
    """``rendered`` (a conversation rendered without the generation prompt) cut right after the
    last occurrence of its final message's ``content``, so that the model continues that message:
    transformers' ``continue_final_message`` (which vLLM and lm-evaluation-harness use), step for
    step, including its care for templates that strip the message. None when the text is not
    there (or is only whitespace)."""
    core = content.strip()
    at = rendered.rfind(core) if core else -1
    if at < 0:
        return None
    if rendered[at : at + len(content.lstrip())] == content:
        return rendered[: at + len(content.lstrip())]  # the template kept the spacing
    return rendered[: at + len(core)]


def _tracer(budget: _Budget):
    """A trace function counting the lines the compiled template runs (its frames only)."""

    def local(frame, event, arg):
        if event == "line":
            budget.steps += 1
            if budget.steps > MAX_STEPS:
                raise _OverBudget(f"it ran more than {MAX_STEPS} steps")
            if budget.steps % 1024 == 0:
                budget.clock()
        return local

    def trace(frame, event, arg):
        return local if frame.f_code.co_filename == "<template>" else None

    return trace


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
