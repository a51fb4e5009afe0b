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
    as_json: o.Json = False,
) -> None:
    """Memory breakdown, whether it fits, the configuration chosen and predicted tokens/s.

    Given several GGUFs of one model, it names the best quantization that fits (most bits per weight).
    A model that cannot fit gets an error naming the nearest configuration.
    """
    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import get
    from edge_llm.registry import resolve

    profile = get(device)
    plans = [
        planning.plan(resolve(m), profile, n_ctx=ctx, kv_type=kv_type) for m in (models or [None])
    ]
    best = planning.best_fit(plans)
    if as_json:
        out = {"device": profile.to_dict(), "plans": [p.to_dict() for p in plans],
               "best": best.model if best else None}  # fmt: skip
        print(json.dumps(out, indent=2))
    else:
        for p in plans:
            print(render(p))
        if len(plans) > 1:
            print(f"best that fits: {best.model}" if best else "none of them fits")
    if len(plans) == 1:
        planning.require_fit(plans[0])  # a clear error and exit 2 when it does not fit
    elif best is None:
        planning.require_fit(min(plans, key=lambda p: p.memory.total))


def render(p) -> str:
    from edge_llm.devices.plan import mb

    c, m = p.config, p.memory
    gpu = "all" if c.n_gpu_layers == -1 else str(c.n_gpu_layers)
    lines = [
        f"{p.model} on {p.device} ({p.bits_per_weight:.2f} bits/weight)",
        f"  memory: weights {mb(m.weights)} + KV cache {mb(m.kv_cache)} + compute {mb(m.compute)}"
        f" + runtime {mb(m.runtime)} = {mb(m.total)} of {mb(p.budget)}: "
        + ("fits" if p.fits else "DOES NOT FIT"),
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
    return "\n".join(lines)
