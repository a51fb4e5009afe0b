"""Progress on stderr for the long commands (convert, requantize, compare, --verify, imatrix,
pulling a split-package model).

One callback shape for all of them, the converter's ``progress(stage, n, total, done, size)``:
``n``/``total`` count the stage's own units (tensors, chunks, probes) and ``done``/``size`` its
bytes when it has any (a stage without bytes passes its counts again). The bar shows each stage
in its own unit, its bytes only when they mean something, and the elapsed time, so a long stage
is never a blank screen and never reads "0/1 tensors 0/1 bytes".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Units of the stages whose counts are not tensors.
UNITS = {
    "computing the importance matrix": "chunks",
    "probing sensitivities": "probes",
    "comparing": "chunks",
    "verifying": "steps",
    "pulling": "parts",
}
# Stages whose bytes are a transfer: the bar adds their rate (MiB/s).
RATES = ("pulling",)
# Stages that are one call into llama.cpp: no count to show, only that it is running.
OPAQUE = ("quantizing to",)


def unit(stage: str) -> str:
    for prefix, u in UNITS.items():
        if stage.startswith(prefix):
            return u
    return "tensors"


def amount(stage: str, n: int, total: int, done: int, size: int) -> str:
    """The text after the bar: "12/30 tensors, 40/120 MiB", "3/32 chunks", or "" (opaque)."""
    if stage.startswith(OPAQUE):
        return "done" if n >= total else "running"
    text = f"{n}/{total} {unit(stage)}"
    if (done, size) != (n, total) and size:
        text += f", {done / 2**20:.0f}/{size / 2**20:.0f} MiB"
    return text


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``update(stage, n, total, done=None, size=None)``; draws on stderr when enabled."""
    if not enabled:
        yield lambda *a, **k: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.speed if task.description.startswith(RATES) else None
            return Text(f"{speed / 2**20:.1f} MiB/s" if speed else "")

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        Rate(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, n: int, total: int, done: int | None = None, size: int | None = None):
        done, size = (n, total) if done is None else (done, size)
        opaque = stage.startswith(OPAQUE) and n < total
        text = amount(stage, n, total, done, size)
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=None if opaque else size, amount=text)
        bar.update(
            tasks[stage],
            completed=0 if opaque else done,
            total=None if opaque else size,
            amount=text,
        )

    with bar:
        yield update
