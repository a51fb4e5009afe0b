"""The `host` profile: this machine's cores, memory, SIMD and GPU support, measured bandwidth.

Bandwidth comes from a small read kernel (numpy reductions over a buffer far larger than the
caches, one reader per thread). The decode efficiency and the prefill throughput are calibrated
once by running the default model; results are cached in the edge-llm cache folder, keyed by the
CPU, the CPU count and the llama-cpp-python version.
"""

from __future__ import annotations

import json
import os
import platform
import re
import threading
import time
from functools import cache
from pathlib import Path

import numpy as np

from edge_llm.cpus import available_cpus
from edge_llm.fsutil import cache_dir

READ_BUFFER_BYTES = 256 << 20


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def big_little(cpus: set[int] | None = None) -> tuple[int, int]:
    """(big, little) among this process's CPUs, from each core's maximum frequency."""
    cpus = cpus if cpus is not None else set(os.sched_getaffinity(0))
    freqs = {}
    for c in cpus:
        try:
            freqs[c] = int(
                Path(f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq").read_text()
            )
        except (OSError, ValueError):
            return len(cpus), 0
    top = max(freqs.values())
    big = sum(1 for f in freqs.values() if f >= 0.9 * top)
    return big, len(cpus) - big


def memory_gb() -> tuple[float, float]:
    """(total, available) RAM in GB, from /proc/meminfo."""
    info = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
    except OSError:
        return 0.0, 0.0
    return info.get("MemTotal", 0) / 1e9, info.get("MemAvailable", 0) / 1e9


def simd_flags() -> list[str]:
    from edge_llm.llama.binding import system_info

    return re.findall(r"(\w+) = 1", system_info())


def measure_read_bandwidth(
    threads: int, nbytes: int = READ_BUFFER_BYTES, repeats: int = 5
) -> float:
    """Bytes/s that ``threads`` readers pull from RAM (best of ``repeats``)."""
    buf = np.ones(nbytes // 8, dtype=np.float64)  # written once, so every page is resident
    parts = np.array_split(buf, threads)
    best = 0.0
    for _ in range(repeats):
        barrier = threading.Barrier(threads + 1)

        def reader(part: np.ndarray, barrier: threading.Barrier) -> None:
            barrier.wait()
            part.sum()  # numpy releases the GIL inside the reduction

        workers = [threading.Thread(target=reader, args=(p, barrier)) for p in parts]
        for w in workers:
            w.start()
        barrier.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        best = max(best, buf.nbytes / (time.perf_counter() - t0))
    return best


def llama_cpp_version() -> str:
    from edge_llm.llama.binding import version

    return f"llama-cpp-python {version()}"


@cache
def build_backends() -> list[str]:
    """The ggml backends the installed llama.cpp build registered: CPU, plus CUDA, Metal,
    Vulkan, ... when it was built with them (make install LLAMA_CMAKE_ARGS=...)."""
    from edge_llm.llama.binding import registered_backends

    return registered_backends()


def _fingerprint() -> str:
    from edge_llm.llama.binding import cpu_kernels, version

    # the CPU variant too: the same wheel runs other kernels when the CPU (or the install) changes
    return (
        f"{cpu_model()}|{available_cpus()}|llama-cpp-python {version()}"
        f"|cpu kernels {cpu_kernels().variant}"
    )


def _calibration_file() -> Path:
    return cache_dir() / "host-calibration.json"


BUSY_CPUS = 0.25  # other processes keeping more CPUs than this busy make a host "busy"


def host_load(seconds: float = 2.0) -> float | None:
    """CPUs kept busy by other processes over ``seconds`` (None where it cannot be read)."""
    from edge_llm.cpus import CpuLoad

    load = CpuLoad()
    time.sleep(seconds)
    return load.others_busy()


def cached_calibration() -> dict | None:
    try:
        data = json.loads(_calibration_file().read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("fingerprint") == _fingerprint() else None
