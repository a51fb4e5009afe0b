"""Commands from other packages, the way pytest and simonw/llm load plugins: an entry point in the
group ``edge_llm.commands`` names a function ``register(app)`` that adds commands to the typer
app (`convert.cli`, `bench.cli`); ``edge_llm.converter`` names the checkpoint-to-GGUF function
`pull` converts with. The runtime never imports those packages itself.
"""

from __future__ import annotations

import sys

import typer

PLUGIN_GROUP = "edge_llm.commands"


def _source_entry_points(group: str = PLUGIN_GROUP) -> list:
    """The group as the source checkout's pyproject.toml declares it: for an editable install
    made before the group existed (its metadata lists none), so a checkout works before
    ``pip install -e .`` is run again. An installed wheel has no pyproject.toml beside it."""
    import tomllib
    from importlib.metadata import EntryPoint
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        table = tomllib.loads(path.read_text())["project"]["entry-points"][group]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return []
    return [EntryPoint(name=k, value=v, group=group) for k, v in table.items()]


def entry_points_of(group: str) -> list:
    """The installed entry points of ``group`` (else the source checkout's, see above)."""
    from importlib.metadata import entry_points

    return list(entry_points(group=group)) or _source_entry_points(group)


def load_plugins(target: typer.Typer) -> list[str]:
    """Let every installed ``edge_llm.commands`` entry point register its commands; the names of
    those loaded. A plugin whose package cannot be imported is left out; one whose registration
    fails is reported in one line and skipped."""
    loaded = []
    for ep in sorted(entry_points_of(PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except ImportError:  # its package is not installed (or not importable): no commands
            continue
        try:
            register(target)
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the runtime's CLI
            print(
                f"warning: the {ep.name} commands ({ep.value}) did not load: {e}", file=sys.stderr
            )
            continue
        loaded.append(ep.name)
    return loaded
