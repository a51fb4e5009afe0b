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

from edge_llm.devices import available_cpus
from edge_llm.devices.profile import DeviceProfile
from edge_llm.fsutil import atomic_path, cache_dir

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
    from edge_llm.backend import system_info

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


def _fingerprint() -> str:
    import llama_cpp

    return f"{cpu_model()}|{available_cpus()}|llama-cpp-python {llama_cpp.__version__}"


def _calibration_file() -> Path:
    return cache_dir() / "host-calibration.json"


def calibrate(model=None, threads: int | None = None) -> dict:
    """Measure this host: read bandwidth at 1..N threads, then decode and prefill of a model.

    decode efficiency = achieved decode bytes/s / measured read bytes/s (same thread count);
    cpu_gflops = prefill FLOPs/s at all threads. Cached until the CPU or llama.cpp changes.
    """
    from edge_llm.model import load
    from edge_llm.shapes import ModelShape

    n = threads or available_cpus()
    bw = {t: measure_read_bandwidth(t) for t in range(1, n + 1)}
    m = load(model, n_ctx=1024, threads=n, device="cpu")
    try:
        from edge_llm import gguf_info

        shape = ModelShape.from_info(gguf_info.read(m.path))
        prompt = m.tokenize("Edge devices read every weight once per token. " * 30)[:256]
        decode, prefill = [], []
        for _ in range(3):
            m.reset()
            r = m.generate(prompt, max_tokens=65, temperature=0, ignore_eos=True)
            decode.append(r.timings.decode_tokens_per_s)
            prefill.append(r.timings.prefill_tokens_per_s)
        decode_tps, prefill_tps = float(np.median(decode)), float(np.median(prefill))
        avg_pos = len(prompt) + 32
        achieved = decode_tps * shape.decode_bytes_per_token(avg_pos)
        result = {
            "fingerprint": _fingerprint(),
            "read_bandwidth_by_threads": {str(t): b for t, b in bw.items()},
            "decode_efficiency": achieved / bw[n],
            "cpu_gflops": prefill_tps * shape.prefill_flops_per_token(len(prompt)) / 1e9,
            "calibrated_with": str(m.path.name),
            "threads": n,
            "decode_tokens_per_s": decode_tps,
            "prefill_tokens_per_s": prefill_tps,
        }
    finally:
        m.close()
    path = _calibration_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    host_profile.cache_clear()
    return result


def cached_calibration() -> dict | None:
    try:
        data = json.loads(_calibration_file().read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("fingerprint") == _fingerprint() else None


@cache
def host_profile(calibrate_if_missing: bool = True) -> DeviceProfile:
    """This machine as a profile; runs the calibration (a few seconds) the first time."""
    from edge_llm.backend import supports_gpu_offload

    cal = cached_calibration()
    if cal is None and calibrate_if_missing:
        cal = calibrate()
    total, avail = memory_gb()
    big, little = big_little()
    n = available_cpus()
    bw = {int(k): v for k, v in (cal or {}).get("read_bandwidth_by_threads", {}).items()}
    all_bw = bw.get(n) or measure_read_bandwidth(n)
    flags = " ".join(simd_flags())
    return DeviceProfile(
        name="host",
        description=f"this machine: {cpu_model()}, {n} CPUs ({flags})",
        kind="host",
        arch=platform.machine(),
        big_cores=big,
        little_cores=little,
        ram_gb=round(total, 2),
        app_memory_gb=round(min(avail, total), 2),
        bandwidth_gbs=all_bw / 1e9,
        core_bandwidth_gbs=bw.get(1, all_bw / n) / 1e9,
        bandwidth_efficiency=min(1.0, (cal or {}).get("decode_efficiency", 0.6)),
        cpu_gflops=(cal or {}).get("cpu_gflops", 20.0 * n),
        power_w=15.0 * n,  # no sensor read here; the density benchmark reads RAPL where it can
        gpu_backend="auto" if supports_gpu_offload() else "none",
        source="detected",
    )
