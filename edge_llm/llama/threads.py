"""The one policy for llama.cpp's CPU threads: a fixed count when given, else the CPUs other
processes leave free, read again before each long piece of work.

On a shared machine a thread whose core is busy stalls every barrier of the graph: 2 threads on a
2-CPU host with one CPU busy run several times slower than 1. The load is measured by
`edge_llm.cpus.CpuLoad` and turned into a count by `edge_llm.cpus.threads_for`; generation
(`edge_llm.model`), scoring (`edge_llm.llama.scoring`) and every benchmark or converter that runs
llama.cpp for long use this class instead of their own loop.
"""

from __future__ import annotations

from edge_llm.llama.binding import C


class ThreadPolicy:
    """``fixed`` threads, or (``adaptive``, the default when none are fixed) the free CPUs.

    ``current`` is the count to run with now; `update()` reads the load again (``wait``: wait out a
    window too short to measure, as the first reading does) and `apply(ctx)` sets the count on a
    llama.cpp context.
    """

    def __init__(
        self, fixed: int | None = None, *, adaptive: bool | None = None, start: int | None = None
    ):
        from edge_llm.cpus import CpuLoad, available_cpus, threads_for

        self.fixed = fixed
        if adaptive is None:
            adaptive = not fixed
        self._load = CpuLoad() if adaptive else None
        if self._load is not None and start is None:
            self.current = threads_for(available_cpus(), self._load.others_busy(wait=True))
        else:  # with ``start``, the first reading is the caller's `update(wait=True)`
            self.current = fixed or start or available_cpus()

    @property
    def adaptive(self) -> bool:
        return self._load is not None

    def update(self, wait: bool = False) -> int:
        """The count for the host's load now (unchanged when fixed or when nothing new is known)."""
        if self._load is not None:
            from edge_llm.cpus import available_cpus, threads_for

            busy = self._load.others_busy(wait=wait)
            if busy is not None:
                self.current = threads_for(available_cpus(), busy)
        return self.current

    def apply(self, ctx) -> int:
        """`update()`, then run the llama.cpp context ``ctx`` with that many threads."""
        n = self.update()
        C.llama_set_n_threads(ctx, n, n)
        return n
