"""`edge-llm devices`: the device profiles edge-llm can plan for."""

from __future__ import annotations

import json
from pathlib import Path
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
    busy_ok: Annotated[
        bool,
        typer.Option(
            "--busy-ok",
            help="Calibrate even when other processes keep the CPUs busy (the load is recorded).",
        ),
    ] = False,
) -> None:
    """List device profiles: built-in ones, yours (~/.config/edge-llm/devices/*.toml) and `host`."""
    from edge_llm.devices import detect, profile

    if calibrate:
        import sys

        from edge_llm.devices.calibrate import calibrate as run_calibration
        from edge_llm.model import load

        cal = run_calibration(
            load, progress=lambda msg: print(msg, file=sys.stderr, flush=True), busy_ok=busy_ok
        )
        busy = max(cal.get("load_before") or 0, cal.get("load_during_max") or 0)
        print(
            f"calibrated in {cal['seconds']:.0f} s"
            + (
                f"; other processes kept up to {busy:.1f} CPUs busy meanwhile, so the figures "
                "are pessimistic"
                if busy > detect.BUSY_CPUS
                else ""
            ),
            file=sys.stderr,
        )
    profiles = [profile.host_profile(), *profile.all_profiles()]
    if as_json:
        rows = [p.to_dict() for p in profiles]
        rows[0]["build_backends"] = detect.build_backends()  # the host: what this build runs on
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    # the names are what --device takes: never truncated; the other columns wrap instead
    table.add_column("name", no_wrap=True, min_width=max(len(p.name) for p in profiles))
    for col in ("cores (big+little)", "RAM / app GB", "bandwidth GB/s", "GPU"):
        table.add_column(col, overflow="fold")
    table.add_column("description", overflow="fold", ratio=1)
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
    backends = detect.build_backends()
    gpu = [b for b in backends if b.upper() not in ("CPU", "BLAS", "RPC")]
    print(
        f"this llama.cpp build ({detect.llama_cpp_version()}): backends "
        f"{', '.join(backends) or 'CPU'}"
        + ("" if gpu else "; no GPU backend (see docs/building-llama-cpp.md: LLAMA_CMAKE_ARGS)")
    )
    from edge_llm.llama.binding import cpu_kernels

    k = cpu_kernels()
    print(
        f"llama.cpp's CPU kernels on this host: {k.variant or 'none'}"
        + (f" ({Path(k.library).name}, chosen for this CPU at run time)" if k.library else "")
        + "; details: edge-llm info --system"
    )
    print(
        f"your own profiles: {profile.user_dir()}/*.toml (same fields as edge_llm/devices/profiles)"
    )
