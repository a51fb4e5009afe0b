"""The `edge-llm bench` command line that benchmark scripts run, one model a child process (as a
user runs it, so a crash or a leak in one run cannot touch the next): built here once, so that
every script asks for a run the same way and a new option is added in one place."""

from __future__ import annotations

import sys
from pathlib import Path


def bench_argv(
    model: str | Path,
    suite: str | Path,
    out: str | Path,
    *,
    device: str | None = None,
    recipe: str | None = None,
    reference: str | Path | None = None,
    reference_is: str | None = None,
    threads: int | None = None,
    quiet: bool = False,
) -> list[str]:
    """``python -m edge_llm bench MODEL --suite SUITE [...] -o OUT [...]``; options left None
    (``reference``, ``threads``: also empty or 0) are not given."""
    cmd = [sys.executable, "-m", "edge_llm", "bench", str(model), "--suite", str(suite)]
    if device is not None:
        cmd += ["--device", device]
    if recipe is not None:
        cmd += ["--recipe", recipe]
    cmd += ["-o", str(out)]
    if reference:
        cmd += ["--reference", str(reference)]
    if reference_is is not None:
        cmd += ["--reference-is", reference_is]
    if threads:
        cmd += ["--threads", str(threads)]
    if quiet:
        cmd.append("--quiet")
    return cmd
