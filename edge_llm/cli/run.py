"""`edge-llm run`: one prompt in, one completion out."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from edge_llm.cli import cloud as c
from edge_llm.cli import options as o
from edge_llm.cli.pull import Yes
from edge_llm.cli.report import format_stats, length_notice


@o.grouped
def run(
    model: o.Model = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt", "-p", help="The prompt; read from stdin when not given.", show_default=False
        ),
    ] = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat", help="Send the prompt as a user message through the model's chat template."
        ),
    ] = False,
    system: Annotated[
        str | None,
        typer.Option("--system", help="System message (with --chat).", show_default=False),
    ] = None,
    max_tokens: o.MaxTokens = None,
    sampling: o.Sampling = o.NO_SAMPLING,
    stop: o.Stop = None,
    ignore_eos: o.IgnoreEos = False,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    where: o.Where = o.AUTO,
    adapter: o.Adapters = None,
    yes: Yes = False,
    as_json: o.Json = False,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print usage and speed to stderr.")
    ] = False,
    cloud: c.Options = c.DEVICE_ONLY,
) -> None:
    """Complete one prompt (raw text by default; --chat for instruct models) and print the text.

    edge-llm run -p "The capital of France is" -n 16 --temp 0

    echo "What is 12*7?" | edge-llm run --chat

    edge-llm run --chat --adapter math=k12-math.gguf -p "What is 12*7?"
    """
    prompt = _prompt(prompt)
    params = o.sampling(max_tokens, sampling, stop=stop, ignore_eos=ignore_eos or None)
    m = cloud.wrap(_load(model, yes, where, ctx, threads, adapter))
    stream = _start(m, prompt, params, chat, system)
    if as_json:
        _print_json(m, stream)
    else:
        _print_text(m, stream, params, chat)
    if stats:
        _report_stats(m, stream)


def _prompt(prompt: str | None) -> str:
    """The prompt given, else stdin's; never empty."""
    from edge_llm.errors import PromptError

    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise PromptError("no prompt: pass one with -p TEXT or pipe it on stdin")
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise PromptError("the prompt is empty; pass some text with -p TEXT or on stdin")
    return prompt


def _load(model: str | None, yes: bool, where: o.Where, ctx, threads, adapter) -> Any:
    """The model (pulled first if need be) with every --adapter applied at once."""
    from edge_llm.cli.pull import ensure_model
    from edge_llm.model import load

    model = ensure_model(model, yes)
    chosen = o.adapters(adapter)
    m = load(model, n_ctx=ctx, threads=threads, adapters=chosen, **where.load_kwargs())
    m.use({name: scale for name, (_, scale) in chosen.items()})
    return m


def _start(m: Any, prompt: str, params: dict[str, Any], chat: bool, system: str | None) -> Any:
    """The completion's stream: of the raw prompt, or with --chat of it as a user message."""
    if not chat:
        return m.stream(prompt, **params)
    if m.chat_format.notice(m.name):
        print(m.chat_format.notice(m.name), file=sys.stderr)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return m.chat_stream(messages, **params)


def _print_json(m: Any, stream: Any) -> None:
    for _ in stream:
        pass
    out = {"model": str(m.path), **stream.result.to_dict()}
    print(json.dumps(out, ensure_ascii=False, indent=2))


def _print_text(m: Any, stream: Any, params: dict[str, Any], chat: bool) -> None:
    """The text as it comes; then who answered, and why a chat reply stopped short."""
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    c.note(stream.result)
    if chat and stream.result.finish_reason == "length":
        n = params.get("max_tokens", 256)
        print(
            length_notice(stream.result, n, m.n_ctx).replace("/set max_tokens N or ", ""),
            file=sys.stderr,
        )


def _report_stats(m: Any, stream: Any) -> None:
    from edge_llm.devices import measured_runs

    print(format_stats(stream.result), file=sys.stderr)
    if getattr(stream.result, "answered_by", "device") == "device":  # not the cloud's speed
        measured_runs.record(m.path, stream.result, m.threads, m.n_ctx)  # plan checks it
