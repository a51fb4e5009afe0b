"""`edge-llm adapt`: a LoRA adapter for one subject, trained on a frozen base (convert.adapt)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_llm.cli import options as o


def adapt(
    model: Annotated[
        str,
        typer.Argument(
            help="The base: a GGUF (path or model name; trained against its own weights, "
            "dequantized and frozen) or a Hugging Face folder.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The GGUF adapter to write.", show_default=False)
    ],
    domain: Annotated[
        str,
        typer.Option(
            "--domain",
            help="k12-math (English and Chinese worked problems), k12-zh (Chinese only), or a "
            'JSONL of {"messages": [...]} or {"prompt": ..., "completion": ...} records.',
        ),
    ] = "k12-math",
    rank: Annotated[int, typer.Option("--rank", min=1, help="LoRA rank.")] = 16,
    alpha: Annotated[float, typer.Option("--alpha", help="LoRA alpha (scale alpha/rank).")] = 32.0,
    steps: Annotated[
        int | None,
        typer.Option("--steps", min=1, help="Optimizer steps [default: 200].", show_default=False),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            "--minutes",
            help="Train for about this long: the steps that fit, measured on this machine.",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Examples per step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, cosine).")] = 2e-4,
    max_len: Annotated[int, typer.Option("--max-len", help="Tokens per example, at most.")] = 384,
    seed: Annotated[int, typer.Option("--seed", help="Data order and initialisation.")] = 0,
    outtype: Annotated[
        str, typer.Option("--outtype", help="The adapter's tensor type: f32, f16, bf16 or q8_0.")
    ] = "f16",
    peft: Annotated[
        Path | None,
        typer.Option(
            "--peft",
            help="Also write the PEFT folder (for Hugging Face users).",
            show_default=False,
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore a checkpoint left by a stopped run.")
    ] = False,
    as_json: o.Json = False,
    force: o.Force = False,
) -> None:
    """Train a LoRA adapter (attention and MLP projections) for one subject; a stopped run resumes.

    edge-llm adapt smollm2-135m-instruct --domain k12-math -o k12-math.gguf --minutes 20

    edge-llm chat --adapter math=k12-math.gguf
    """
    from convert.adapt import adapt as run
    from convert.distill.cli import progress_bar

    use_bar = sys.stderr.isatty() and not as_json  # else a line every 10% (logs, scripts)
    bar, update = progress_bar()
    with bar if use_bar else _nothing():
        result = run(
            model, output, domain=domain, rank=rank, alpha=alpha, steps=steps, minutes=minutes,
            batch=batch, lr=lr, max_len=max_len, seed=seed, out_type=outtype.lower(),
            peft_dir=peft, restart=restart, force=force,
            progress=update if use_bar else _lines(),
        )  # fmt: skip
    if result is None:  # another rank than 0 under torchrun: rank 0 reports
        return
    if as_json:
        print(json.dumps(result.summary(), indent=2))
        return
    share = result.adapter_bytes / result.base_bytes if result.base_bytes else math.nan
    resumed = f", resumed at step {result.start_step}" if result.start_step else ""
    print(
        f"wrote {result.path}: rank {result.rank}, {result.adapter_bytes / 2**20:.1f} MiB "
        f"({share:.1%} of the base); {result.steps} steps on {result.examples} examples{resumed}, "
        f"loss {result.loss_first:.3f} -> {result.loss_last:.3f}, "
        f"{result.tokens_per_s:.0f} tokens/s, {result.seconds / 60:.1f} min"
    )


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _lines():
    """Progress as a line every 10% on stderr (a log, not a terminal)."""
    last = {}

    def update(stage: str, done: int, total: int, info: dict) -> None:
        tenth = done * 10 // max(total, 1)
        if last.get(stage) == tenth and done != total:
            return
        last[stage] = tenth
        extra = ""
        if "loss" in info:
            eta = info.get("eta_s", math.nan)
            extra = (
                f" loss {info['loss']:.4f}, {info['tokens_per_s']:.0f} tokens/s, "
                f"ETA {eta / 60:.1f} min"
                if eta == eta
                else f" loss {info['loss']:.4f}"
            )
        unit = "step " if stage == "train" else ""
        print(f"{stage}: {unit}{done}/{total}{extra}", file=sys.stderr, flush=True)

    return update
