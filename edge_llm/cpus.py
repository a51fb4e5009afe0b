"""The host's CPUs and the load other processes put on them (see edge_llm.devices for why the
runtime's threads follow that load). No dependency inside edge_llm: everything that picks threads
imports this module, the thread policy of edge_llm.llama (the bottom of the runtime) included, so
it sits below edge_llm.llama with the other plain-Python modules (ARCHITECTURE.md's layers) and
edge_llm.devices re-exports it.
"""

from __future__ import annotations

import math
import os
import time

MAX_AUTO_THREADS = 8  # decode is bandwidth-bound: more threads stop helping early
_MIN_WINDOW_S = 0.15  # shorter load windows are too coarse (/proc/stat counts in 10 ms ticks)


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
