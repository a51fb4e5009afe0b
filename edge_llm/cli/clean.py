"""`edge-llm clean`: find and remove the temporaries that killed runs left behind.

Every writer names its temporaries ``.NAME.edge-llm-PID-XXXXXXXX.part`` (or ``.work`` for scratch
folders) beside its output, and removes stale ones in that folder when it next writes there; this
command finds them anywhere. It lists by default and removes with ``--yes`` (as ``git clean -n``
/ ``-f``); a temporary whose writer still runs is shown as in use and never removed.

Interrupted pulls are not debris: what they downloaded waits in the cache's ``models/.partial``
for the same pull to resume it (``edge_llm.parts.partial_pulls``). They are listed as resumable,
and removed only with ``--partial``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edge_llm.cli import options as o


def clean(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders to search, recursively [default: the current folder and edge-llm's "
            "cache]",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Remove them (default: only list them).")
    ] = False,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="With --yes, also remove interrupted pulls (kept to resume them).",
        ),
    ] = False,
    as_json: o.Json = False,
) -> None:
    """List (or with --yes remove) temporaries left by killed conversions, quantizations and
    downloads: .NAME.edge-llm-PID-*.part files and .work folders whose writer is dead.

    edge-llm clean                 # what would be removed, and how much space it holds

    edge-llm clean --yes ~/models  # remove them under ~/models

    edge-llm clean --yes --partial # and the downloads interrupted pulls keep to resume
    """
    from edge_llm.errors import ConfigError
    from edge_llm.fsutil import cache_dir, find_debris, remove
    from edge_llm.parts import partial_pulls

    roots = paths or [Path.cwd(), cache_dir()]
    missing = [p for p in roots if paths and not p.is_dir()]
    if missing:
        raise ConfigError(f"{missing[0]} is not a folder; pass folders to search")
    found = find_debris(roots)
    removed = [d for d in found if yes and remove(d)]
    stale = [d for d in found if not d.alive]
    models = cache_dir() / "models"
    pulls = partial_pulls(models) if any(_overlaps(r, models) for r in roots) else []
    dropped = [p for p in pulls if yes and partial and p.remove()]
    if as_json:
        print(
            json.dumps(
                {
                    "debris": [d.to_dict() for d in found],
                    "stale_bytes": sum(d.bytes for d in stale),
                    "removed": [str(d.path) for d in removed],
                    "partial_pulls": [p.to_dict() for p in pulls],
                    "removed_partial_pulls": [str(p.path) for p in dropped],
                },
                indent=2,
            )
        )
        return
    for d in found:
        state = f"in use by PID {d.pid}" if d.alive else ("removed" if d in removed else "stale")
        print(f"{d.bytes / 2**20:10.1f} MiB  {state:<18} {d.path}")
    for p in pulls:
        print(f"{p.bytes / 2**20:10.1f} MiB  {_pull_state(p, p in dropped):<18} {p.path}")
    total = sum(d.bytes for d in stale) / 2**20
    if not stale:
        print("no stale temporaries found")
    elif yes:
        print(f"removed {len(removed)} of {len(stale)} stale temporaries ({total:.1f} MiB)")
    else:
        print(
            f"{len(stale)} stale temporaries ({total:.1f} MiB); `edge-llm clean --yes` removes them"
        )
    waiting = [p for p in pulls if p not in dropped and not p.in_use]
    if waiting:
        mib = sum(p.bytes for p in waiting) / 2**20
        print(
            f"{len(waiting)} interrupted pulls ({mib:.1f} MiB) wait to be resumed by pulling again; "
            "`edge-llm clean --yes --partial` removes them"
        )


def _overlaps(root: Path, models: Path) -> bool:
    """Whether searching ``root`` covers the model cache (or part of it)."""
    r, m = root.resolve(), models.resolve()
    return r == m or r in m.parents or m in r.parents


def _pull_state(p, dropped: bool) -> str:
    if dropped:
        return "removed"
    if p.in_use:
        return "pull running"
    if p.parts_in is None:
        return "resumable download"
    return f"resumable ({p.parts_in}/{p.count or '?'} parts): edge-llm pull {p.name}"
