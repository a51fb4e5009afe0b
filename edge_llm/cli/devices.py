"""`edge-llm devices`: the device profiles edge-llm can plan for."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edge_llm.cli import options as o


def devices(
    as_json: o.Json = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Measure this host (read bandwidth; decode and prefill cost of each weight type,"
            " about two minutes) so that `plan` predicts its speed from measurements.",
        ),
    ] = False,
) -> None:
    """List device profiles: built-in ones, yours (~/.config/edge-llm/devices/*.toml) and `host`."""
    from edge_llm.devices import detect, profile

    if calibrate:
        import sys

        detect.calibrate(progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    profiles = [detect.host_profile(), *profile.all_profiles()]
    if as_json:
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in (
        "name",
        "cores (big+little)",
        "RAM / app GB",
        "bandwidth GB/s",
        "GPU",
        "description",
    ):
        table.add_column(col)
    for p in profiles:
        gpu = (
            "none" if p.gpu_backend == "none" else f"{p.gpu_backend} {p.gpu_memory_gb:g} GB".strip()
        )
        table.add_row(
            p.name,
            f"{p.big_cores}+{p.little_cores}",
            f"{p.ram_gb:g} / {p.app_memory_gb:g}",
            f"{p.bandwidth_gbs:.1f}",
            gpu,
            p.description,
        )
    Console().print(table)
    print(
        f"your own profiles: {profile.user_dir()}/*.toml (same fields as edge_llm/devices/profiles)"
    )
