"""Where a model runs: CPU threads and GPU offload for a device name.

``device`` is "auto" (GPU offload when this llama.cpp build has a GPU backend, else CPU),
"cpu", "gpu", or a device profile (``edge-llm devices`` lists them; a .toml path works too): then
the context, KV-cache type, batch, threads and GPU layers are chosen to fit the profile's memory
budget (edge_llm.devices.plan).

Threads: given explicitly, they are used as given. Otherwise they adapt to the host's load.
llama.cpp's threads meet at a barrier after every operation, so a thread that loses its core to
another process stalls all the others: on a 2-CPU machine with one CPU busy elsewhere, 2 threads
decode at half the speed of 1 (scripts/runtime_overhead.py). So the runtime measures how much CPU
*other* processes use (``CpuLoad``) and runs on the CPUs they leave free, checking again before
each generation.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from edge_llm.errors import ConfigError

DEVICES = ("auto", "cpu", "gpu")
MAX_AUTO_THREADS = 8  # decode is bandwidth-bound: more threads stop helping early
_MIN_WINDOW_S = 0.15  # shorter load windows are too coarse (/proc/stat counts in 10 ms ticks)


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    threads: int
    threads_batch: int
    n_gpu_layers: int  # -1: all layers
    adaptive_threads: bool = False  # threads follow the host's load (no explicit threads given)
    # Chosen for a device profile (None: the caller's or the runtime's defaults).
    n_ctx: int | None = None
    kv_type: str | None = None
    n_batch: int | None = None
    use_mlock: bool = False
    plan: object | None = None  # the edge_llm.devices.plan.Plan behind the choice


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_for(n_cpus: int, others_busy: float | None) -> int:
    """Threads to use when other processes keep ``others_busy`` CPUs busy (None: unknown).

    A CPU counts as taken once others use more than a fifth of it: a thread that shares its core
    stalls every barrier. Unknown load: all CPUs on a machine of one or two (nothing to spare),
    else one fewer, for the rest of the system.
    """
    cap = min(n_cpus, MAX_AUTO_THREADS)
    if others_busy is None:
        return n_cpus if n_cpus <= 2 else min(n_cpus - 1, MAX_AUTO_THREADS)
    taken = max(0, math.ceil(others_busy - 0.2))
    return max(1, min(cap, n_cpus - taken))


class CpuLoad:
    """How many CPUs other processes kept busy since the last reading (Linux /proc/stat).

    Busy time of the whole machine minus this process's own CPU time, over the wall-clock window.
    Where /proc/stat cannot be read (macOS, Android apps), ``others_busy`` returns None.
    """

    def __init__(self, stat_path: str = "/proc/stat"):
        self.stat_path = stat_path
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open(self.stat_path) as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        ticks = [int(x) for x in fields[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        busy_s = (sum(ticks[:8]) - idle) / self._hz  # guest time is already in user
        t = os.times()
        return time.monotonic(), busy_s, t.user + t.system

    def others_busy(self, wait: bool = True) -> float | None:
        """CPUs busy with other processes since the last reading.

        A window shorter than 0.15 s is waited out (``wait``) or gives None (no new reading);
        None too where the load cannot be read.
        """
        if self._last is None:
            return None
        elapsed = time.monotonic() - self._last[0]
        if elapsed < _MIN_WINDOW_S:
            if not wait:
                return None
            time.sleep(_MIN_WINDOW_S - elapsed)
        now = self._sample()
        if now is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def resolve_device(
    device: str = "auto",
    *,
    threads: int | None = None,
    model_path=None,
    n_ctx: int | None = None,
    kv_type: str | None = None,
    n_batch: int | None = None,
) -> DeviceConfig:
    """Threads, GPU layers and (for a profile) context, KV type and batch for ``device``."""
    from edge_llm.llama.binding import supports_gpu_offload

    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1 (got {threads})")
    name = device or "auto"
    gpu = supports_gpu_offload()
    if name.lower() in DEVICES:
        name = name.lower()
        if name == "gpu" and not gpu:
            raise ConfigError(
                "this llama-cpp-python build has no GPU backend; use device 'cpu', or rebuild with "
                "make install LLAMA_CMAKE_ARGS=-DGGML_CUDA=ON"
            )
        layers = -1 if (name == "gpu" or (name == "auto" and gpu)) else 0
        n = threads or threads_for(available_cpus(), None)
        return DeviceConfig(name, n, n, layers, adaptive_threads=threads is None)

    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import get

    profile = get(name)
    if model_path is None:
        raise ConfigError("a device profile needs the model to plan for")
    p = planning.require_fit(
        planning.plan(
            model_path, profile, n_ctx=n_ctx, kv_type=kv_type, n_batch=n_batch,
            overhead=planning.process_rss() + 20_000_000,  # what this process holds, for real
        )
    )  # fmt: skip
    c = p.config
    adaptive = threads is None and profile.name == "host"
    n = threads or min(c.threads, available_cpus())
    layers = c.n_gpu_layers if gpu else 0
    return DeviceConfig(
        profile.name, n, n, layers, adaptive_threads=adaptive, n_ctx=c.n_ctx,
        kv_type=c.kv_type, n_batch=c.n_batch, use_mlock=c.use_mlock, plan=p,
    )  # fmt: skip
