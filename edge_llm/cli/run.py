"""`edge-llm run`: one prompt in, one completion out."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from edge_llm.cli import cloud as c
from edge_llm.cli import options as o
from edge_llm.cli.pull import Yes
from edge_llm.cli.report import format_stats, length_notice


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
    temperature: o.Temperature = None,
    top_k: o.TopK = None,
    top_p: o.TopP = None,
    min_p: o.MinP = None,
    repeat_penalty: o.RepeatPenalty = None,
    seed: o.Seed = None,
    stop: o.Stop = None,
    ignore_eos: o.IgnoreEos = False,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    device: o.Device = "auto",
    adapter: o.Adapters = None,
    yes: Yes = False,
    as_json: o.Json = False,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print usage and speed to stderr.")
    ] = False,
    cloud: c.Cloud = None,
    cloud_model: c.CloudModel = None,
    cloud_key_env: c.CloudKeyEnv = c.DEFAULT_KEY_ENV,
    escalate_rate: c.EscalateRate = None,
    router: c.RouterFile = None,
    local_only: c.LocalOnly = False,
    cloud_timeout: c.CloudTimeout = 30.0,
) -> None:
    """Complete one prompt (raw text by default; --chat for instruct models) and print the text.

    edge-llm run -p "The capital of France is" -n 16 --temp 0

    echo "What is 12*7?" | edge-llm run --chat

    edge-llm run --chat --adapter math=k12-math.gguf -p "What is 12*7?"
    """
    from edge_llm.errors import PromptError
    from edge_llm.model import load

    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise PromptError("no prompt: pass one with -p TEXT or pipe it on stdin")
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise PromptError("the prompt is empty; pass some text with -p TEXT or on stdin")
    params = o.sampling(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        seed=seed,
        stop=stop,
        ignore_eos=ignore_eos or None,
    )
    from edge_llm.cli.pull import ensure_model

    model = ensure_model(model, yes)
    chosen = o.adapters(adapter)
    m = load(model, device=device, n_ctx=ctx, threads=threads, adapters=chosen)
    m.use({name: scale for name, (_, scale) in chosen.items()})  # every --adapter at once
    m = c.wrap(
        m, cloud, cloud_model, cloud_key_env, escalate_rate, router, local_only, cloud_timeout
    )
    if chat:
        if m.chat_format.notice(m.name):
            print(m.chat_format.notice(m.name), file=sys.stderr)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        stream = m.chat_stream(messages, **params)
    else:
        stream = m.stream(prompt, **params)
    if as_json:
        for _ in stream:
            pass
        out = {"model": str(m.path), **stream.result.to_dict()}
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
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
    if stats:
        from edge_llm.devices import measured_runs

        print(format_stats(stream.result), file=sys.stderr)
        if getattr(stream.result, "answered_by", "device") == "device":  # not the cloud's speed
            measured_runs.record(m.path, stream.result, m.threads, m.n_ctx)  # plan checks it
