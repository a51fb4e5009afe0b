"""Where a model runs: CPU threads and GPU offload for a device name.

``device`` is "auto" (GPU offload when this llama.cpp build has a GPU backend, else CPU),
"cpu" or "gpu".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from edge_llm.errors import ConfigError

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    threads: int
    threads_batch: int
    n_gpu_layers: int  # -1: all layers


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """Threads for decoding when the caller gives none.

    Decode is bound by memory bandwidth, which a few cores saturate, and a thread that loses its
    core to another process stalls every other thread at each barrier. So: every CPU on one or two
    (there is no spare to lose), otherwise leave one CPU for the rest of the system, capped at 8.
    bench/runtime_overhead.py measures 1 vs 2 threads on a 2-CPU host.
    """
    n = available_cpus()
    return n if n <= 2 else min(n - 1, 8)


def resolve_device(device: str = "auto", *, threads: int | None = None) -> DeviceConfig:
    from edge_llm.backend import supports_gpu_offload

    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1 (got {threads})")
    n = threads or default_threads()
    name = (device or "auto").lower()
    if name not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    gpu = supports_gpu_offload()
    if name == "gpu" and not gpu:
        raise ConfigError(
            "this llama-cpp-python build has no GPU backend; use device 'cpu', or rebuild with "
            "make install LLAMA_CMAKE_ARGS=-DGGML_CUDA=ON"
        )
    layers = -1 if (name == "gpu" or (name == "auto" and gpu)) else 0
    return DeviceConfig(name=name, threads=n, threads_batch=n, n_gpu_layers=layers)
