"""`edge-llm plan`: will a model fit a device, how, and how fast."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edge_llm.cli import options as o


def plan(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="One or more .gguf paths or model names (several: quantizations of one model).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str,
        typer.Option("--device", "-d", help="A profile from `edge-llm devices`, or a .toml file."),
    ] = "host",
    ctx: o.Ctx = None,
    kv_type: Annotated[
        str | None,
        typer.Option("--kv-type", help="f16, q8_0 or q4_0 [default: chosen]", show_default=False),
    ] = None,
    min_speed: Annotated[
        float | None,
        typer.Option(
            "--min-speed",
            help="Among files of one model, the least decode tok/s to accept [default: the device's, 20]",
            show_default=False,
        ),
    ] = None,
    as_json: o.Json = False,
) -> None:
    """Memory breakdown, whether it fits, the configuration chosen and predicted tokens/s.

    Given several GGUFs of one model, it picks by the device's objective: the most capable file
    (most bits per weight) that fits and decodes at least --min-speed tok/s. Given different
    models, it ranks them by predicted speed and chooses none. A model that cannot fit gets an
    error naming the nearest configuration. On `host`, a prediction more than 2x off the
    latest `run --stats` of the same file is flagged.
    """
    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import get
    from edge_llm.registry import resolve

    profile = get(device)
    plans = [
        planning.plan(resolve(m), profile, n_ctx=ctx, kv_type=kv_type) for m in (models or [None])
    ]
    floor = profile.min_decode_tokens_per_s if min_speed is None else min_speed
    one_model = planning.same_model(plans)
    best = planning.best_fit(plans, floor)
    if not one_model:
        plans = planning.rank(plans)
    if as_json:
        out = {
            "device": profile.to_dict(),
            "plans": [p.to_dict() for p in plans],
            "same_model": one_model,
            "min_decode_tokens_per_s": floor,
            "best": best.model if best else None,
        }
        print(json.dumps(out, indent=2))
    else:
        for i, p in enumerate(plans):
            print((f"#{i + 1} " if not one_model else "") + render(p))
        if len(plans) > 1:
            print(choice_line(plans, best, floor, one_model))
    if len(plans) == 1:
        planning.require_fit(plans[0])  # a clear error and exit 2 when it does not fit
    elif not any(p.fits for p in plans):
        planning.require_fit(min(plans, key=lambda p: p.memory.total))


def choice_line(plans, best, floor: float, one_model: bool) -> str:
    from pathlib import Path

    if not one_model:
        return (
            "these are different models: ranked by predicted decode speed (those that fit "
            "first); plan does not choose between models, compare their capability with "
            "`edge-llm bench`"
        )
    if best is None:
        return "none of them fits"
    name = Path(best.model).name
    objective = f"objective: the most capable file that fits and decodes >= {floor:g} tok/s"
    if best.decode_tokens_per_s >= floor:
        return (
            f"chosen: {name} ({best.bits_per_weight:.2f} bits/weight, predicted "
            f"{best.decode_tokens_per_s:.1f} tok/s; {objective})"
        )
    return (
        f"chosen: {name}, the fastest that fits (predicted {best.decode_tokens_per_s:.1f} tok/s): "
        f"none reaches {floor:g} tok/s ({objective})"
    )


def render(p) -> str:
    from edge_llm.devices.plan import mb

    c, m = p.config, p.memory
    gpu = "all" if c.n_gpu_layers == -1 else str(c.n_gpu_layers)
    lines = [
        f"{p.model} on {p.device} ({p.bits_per_weight:.2f} bits/weight)",
        f"  memory: weights {mb(m.weights)} + KV cache {mb(m.kv_cache)} + compute {mb(m.compute)}"
        f" + runtime {mb(m.runtime)} = {mb(m.total)} of {mb(p.budget)}: "
        + ("fits" if p.fits else "DOES NOT FIT"),
        *(
            [
                f"  GPU memory: {mb(m.device)} (offloaded weights, their KV cache, the compute buffer)"
            ]
            if m.device
            else []
        ),
        f"  config: {c.threads} threads, context {c.n_ctx}, {c.kv_type} KV cache, batch {c.n_batch},"
        f" GPU layers {gpu}, mmap {'on' if c.use_mmap else 'off'}, mlock {'on' if c.use_mlock else 'off'}",
        f"  predicted: decode {p.decode_tokens_per_s:.1f} tok/s, prefill {p.prefill_tokens_per_s:.1f} tok/s"
        f" ({'measured costs of this host' if p.speed_basis == 'calibration' else 'roofline'})",
    ]
    if p.device == "host" and p.speed_basis == "roofline":
        lines.append(
            "  note: `edge-llm devices --calibrate` measures this host for closer speed figures"
        )
    if p.note:
        lines.append(f"  note: {p.note}")
    if p.measured:
        r = p.measured
        ratio = p.decode_tokens_per_s / r["decode_tokens_per_s"]
        lines.append(
            f"  measured: decode {r['decode_tokens_per_s']:.1f} tok/s by `run --stats` at "
            f"{r['at']} ({r['threads']} threads)"
            + (
                f": PREDICTION OFF BY {max(ratio, 1 / ratio):.1f}x; recalibrate on an idle host "
                "with `edge-llm devices --calibrate`"
                if p.disagrees
                else f" (prediction within {max(ratio, 1 / ratio):.2f}x)"
            )
        )
    return "\n".join(lines)
