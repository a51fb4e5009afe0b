"""`edge-llm devices`: the device profiles edge-llm can plan for."""

from __future__ import annotations

import dataclasses
import json
import sys
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
    check: Annotated[
        str | None,
        typer.Option(
            "--check",
            metavar="MODEL",
            help="Check this host's GPU backend against the CPU on MODEL (top-1 agreement, KL"
            " divergence, speed) and show the verdict runs use; cached per model file and driver.",
            show_default=False,
        ),
    ] = None,
    gpu_layers: o.GpuLayers = None,
    recheck: Annotated[
        bool, typer.Option("--recheck", help="With --check: measure again, not from the cache.")
    ] = False,
) -> None:
    """List device profiles: built-in ones, yours (~/.config/edge-llm/devices/*.toml) and `host`,
    and the devices this llama.cpp build can run on."""
    from edge_llm.devices import detect, profile

    if check is not None:
        return _check(check, gpu_layers, recheck, as_json)

    if calibrate:
        _calibrate(busy_ok)
    profiles = [profile.host_profile(), *profile.all_profiles()]
    if as_json:
        rows = [p.to_dict() for p in profiles]
        rows[0]["build_backends"] = detect.build_backends()  # the host: what this build runs on
        rows[0]["llama_devices"] = [dataclasses.asdict(d) for d in _llama_devices()]
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
    from edge_llm.llama.binding import gpu_backends

    backends = detect.build_backends()
    gpu = gpu_backends()
    print(
        f"this llama.cpp build ({detect.llama_cpp_version()}): backends "
        f"{', '.join(backends) or 'CPU'}"
        + ("" if gpu else "; no GPU backend (docs/gpu.md: make install VULKAN=1)")
    )
    _print_llama_devices(bool(gpu))
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


def _llama_devices() -> list:
    from edge_llm.llama.binding import devices

    return devices()


def _print_llama_devices(gpu_backend: bool) -> None:
    """The devices llama.cpp sees, with their memory; says so when a GPU backend found none."""
    rows = _llama_devices()
    for d in rows:
        print(
            f"device {d.name} ({d.type}): {d.description}, memory {d.memory_total / 1e9:.1f} GB "
            f"({d.memory_free / 1e9:.1f} GB free)"
        )
    if gpu_backend and not any(d.offloads for d in rows):
        from edge_llm.devices import gpu_absent

        print(gpu_absent())


def _check(model: str, gpu_layers: int | None, recheck: bool, as_json: bool) -> None:
    """`devices --check MODEL`: the self-check's verdict (edge_llm.devices.selfcheck)."""
    from edge_llm.devices import available_cpus, gpu_absent, selfcheck, threads_for
    from edge_llm.errors import ConfigError
    from edge_llm.llama.binding import gpu_devices

    path = o.model_path(model)
    if not path.is_file():
        raise ConfigError(
            f"{model}: no such model file; pass a .gguf or a name from edge-llm models"
        )
    gpus = gpu_devices()
    if not gpus:
        raise ConfigError(gpu_absent())
    layers = -1 if gpu_layers is None else gpu_layers
    if layers == 0:
        raise ConfigError("--gpu-layers 0 checks nothing; give a count or -1 (all)")
    v = None if recheck else selfcheck.cached(path, gpus[0], layers)
    if v is None:
        print(f"checking {gpus[0].name} against the CPU on {path.name}...", file=sys.stderr)
        threads = threads_for(available_cpus(), None)
        v = selfcheck.check(path, gpus[0], layers, threads, recheck=True)
    if as_json:
        print(json.dumps(v.to_dict(), indent=2))
        return
    verdict = "used" if v.ok else f"not used: {v.reason}"
    print(f"{v.device} ({v.description}) for {path.name}, {layers} GPU layers: {verdict}")
    print(f"  {v.summary()}")
    print(
        f"  checked {v.checked_at} in {v.check_seconds:.1f} s"
        + (" (cached verdict)" if v.cached else "")
        + f"; max KL {v.max_kl:.2g}; thresholds: top-1 >= {selfcheck.TOP1_MIN:.0%}, mean KL <= "
        f"{selfcheck.KL_MAX} nats, not slower than the CPU"
    )


def _calibrate(busy_ok: bool) -> None:
    """`devices --calibrate`: measure this host, saying how busy it was meanwhile."""
    from edge_llm.devices import detect
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
