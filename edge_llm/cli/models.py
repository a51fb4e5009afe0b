"""`edge-llm models`: the models edge-llm knows by name, and whether they are installed."""

from __future__ import annotations

import json

from edge_llm.cli import options as o


def models(as_json: o.Json = False) -> None:
    """List registered models: name, installed or not, where the GGUF is, how to install it."""
    from edge_llm import registry

    default = registry.default_model()
    rows = []
    for e in registry.entries():
        path = e.local_path()
        installed = e.installed()
        rows.append(
            {
                "name": e.name,
                "default": e.name == default,
                "installed": installed,
                "path": str(path) if path else None,
                "size": path.stat().st_size if path else None,
                "description": e.description,
                "install": e.install,
                "aliases": list(e.aliases),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("name", "status", "size", "description"):
        table.add_column(col)
    for r in rows:
        if r["path"]:
            status = "installed"
        elif r["installed"]:
            status = "installed (assembled on first use)"
        else:
            status = f"not installed: {r['install']}"
        size = f"{r['size'] / 2**20:.0f} MiB" if r["size"] else ""
        name = r["name"] + (" (default)" if r["default"] else "")
        table.add_row(name, status, size, r["description"])
    Console().print(table)
