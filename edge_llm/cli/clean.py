"""`edge-llm clean`: find and remove the temporaries that killed runs left behind.

Every writer names its temporaries ``.NAME.edge-llm-PID-XXXXXXXX.part`` (or ``.work`` for scratch
folders) beside its output, and removes stale ones in that folder when it next writes there; this
command finds them anywhere. It lists by default and removes with ``--yes`` (as ``git clean -n``
/ ``-f``); a temporary whose writer still runs is shown as in use and never removed.
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
    as_json: o.Json = False,
) -> None:
    """List (or with --yes remove) temporaries left by killed conversions, quantizations and
    downloads: .NAME.edge-llm-PID-*.part files and .work folders whose writer is dead.

    edge-llm clean                 # what would be removed, and how much space it holds

    edge-llm clean --yes ~/models  # remove them under ~/models
    """
    from edge_llm.errors import ConfigError
    from edge_llm.fsutil import cache_dir, find_debris, remove

    roots = paths or [Path.cwd(), cache_dir()]
    missing = [p for p in roots if paths and not p.is_dir()]
    if missing:
        raise ConfigError(f"{missing[0]} is not a folder; pass folders to search")
    found = find_debris(roots)
    removed = [d for d in found if yes and remove(d)]
    stale = [d for d in found if not d.alive]
    if as_json:
        print(
            json.dumps(
                {
                    "debris": [d.to_dict() for d in found],
                    "stale_bytes": sum(d.bytes for d in stale),
                    "removed": [str(d.path) for d in removed],
                },
                indent=2,
            )
        )
        return
    for d in found:
        state = f"in use by PID {d.pid}" if d.alive else ("removed" if d in removed else "stale")
        print(f"{d.bytes / 2**20:10.1f} MiB  {state:<18} {d.path}")
    total = sum(d.bytes for d in stale) / 2**20
    if not stale:
        print("no stale temporaries found")
    elif yes:
        print(f"removed {len(removed)} of {len(stale)} stale temporaries ({total:.1f} MiB)")
    else:
        print(
            f"{len(stale)} stale temporaries ({total:.1f} MiB); `edge-llm clean --yes` removes them"
        )
