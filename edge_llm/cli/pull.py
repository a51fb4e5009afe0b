"""`edge-llm pull` and `edge-llm rm`: fetch models from the Hugging Face Hub into the store.

The store itself (downloads, resume, checksums, registry) is ``edge_llm.store``; this module adds
the command line, the question asked before `run`/`chat`/`serve` pull a repository on first use,
and the converter for safetensors repositories, which comes from the ``convert`` package (the CLI
may import a command's package inside that command; the runtime never does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_llm.cli import options as o

Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Pull a Hub repository on first use without asking."),
]


def _converter():
    """The checkpoint-to-GGUF function the ``edge_llm.converter`` entry point names (the convert
    package's `convert`: the runtime never imports it), or None when it is not installed."""
    from edge_llm.cli.plugins import entry_points_of

    for ep in entry_points_of("edge_llm.converter"):
        try:
            return ep.load()
        except ImportError:
            return None
    return None


def pull(
    reference: Annotated[
        str,
        typer.Argument(
            help="A Hub repository, OWNER/NAME[:QUANT_OR_FILE]: a GGUF repository gives the chosen file (default Q4_K_M), a safetensors one is converted.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Short name to register it under [default: from the repository and quant]",
            show_default=False,
        ),
    ] = None,
    type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="For a safetensors repository: the GGUF type (Q4_K_M, Q8_0, F16, ...) [default: Q4_K_M]",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="For a safetensors repository: per-tensor types from a recipe (a preset or a TOML file).",
            show_default=False,
        ),
    ] = None,
    target_size: Annotated[
        str | None,
        typer.Option(
            "--target-size",
            help="For a safetensors repository: a size budget (e.g. 80MB).",
            show_default=False,
        ),
    ] = None,
    imatrix: Annotated[
        str | None,
        typer.Option(
            "--imatrix",
            help="For a safetensors repository: an importance matrix file or 'auto'.",
            show_default=False,
        ),
    ] = None,
    require_checksum: Annotated[
        bool,
        typer.Option(
            "--require-checksum",
            help="Refuse files the hub gives no checksum for (some mirrors give none; they are kept as unverified otherwise).",
        ),
    ] = False,
    allow_nonfinite: Annotated[
        bool,
        typer.Option(
            "--allow-nonfinite",
            help="For a safetensors repository: convert weights that hold NaN or Inf instead of refusing them.",
        ),
    ] = False,
    as_json: o.Json = False,
) -> None:
    """Download a model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN) into the store.

    edge-llm pull bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M

    edge-llm pull HuggingFaceTB/SmolLM2-135M-Instruct --type Q8_0

    A cut download resumes when the same pull is run again; every file is checked against the
    hub's SHA-256 before it is kept (a hub that gives none is said so, and the model is marked
    unverified). Every hub is treated as hostile: see docs/pull.md.
    """
    from edge_llm import store

    entry = _pull(
        reference,
        name=name,
        convert_options={
            "type": type,
            "recipe": recipe,
            "target_size": target_size,
            "imatrix": imatrix,
            "allow_nonfinite": allow_nonfinite or None,
        },
        require_checksum=require_checksum,
    )
    if as_json:
        print(json.dumps(entry.to_dict(), indent=2))
        return
    unverified = ", unverified" if entry.verified is False else ""
    print(
        f"pulled {entry.source} as {entry.name} ({entry.quant}, {store.human_size(entry.size)}"
        f"{unverified}) -> {entry.path}"
    )


def _pull(
    reference: str,
    *,
    name: str | None = None,
    convert_options=None,
    plan=None,
    require_checksum: bool = False,
):
    from edge_llm import store

    opts = {k: v for k, v in (convert_options or {}).items() if v is not None}
    if opts.get("target_size") and opts.get("imatrix") is None:
        opts["imatrix"] = "auto"
    plan = plan or store.plan_pull(reference)
    converter = _converter() if plan["kind"] == "checkpoint" else None
    if plan["kind"] == "gguf" and opts:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in opts)
        raise _bad(
            f"{flags} apply to safetensors repositories; {plan['repo']} has GGUF files (choose one with :QUANT)"
        )
    return store.pull(
        reference,
        name=name,
        converter=converter,
        convert_options=opts,
        plan=plan,
        require_checksum=require_checksum,
    )


def _bad(message: str):
    from edge_llm.errors import EdgeLLMError

    return EdgeLLMError(message)


def rm(
    name: Annotated[
        str,
        typer.Argument(help="A pulled model's name (see `edge-llm models`).", show_default=False),
    ],
) -> None:
    """Remove a pulled model: its file and its entry in the store."""
    from edge_llm import registry, store

    builtin = registry.lookup(name)
    if builtin is not None:
        raise _bad(
            f"{builtin.name} comes with the Python package {builtin.package}, not the store; "
            f"remove it with: pip uninstall {builtin.package}"
        )
    entry = store.remove(name)
    print(f"removed {entry.name} ({store.human_size(entry.size)}, {entry.path})")


def ensure_model(model: str | None, yes: bool) -> str | None:
    """The model argument for ``load``: a Hub repository not in the store yet is pulled first,
    after asking (unless ``yes``); anything else passes through unchanged."""
    from edge_llm import registry, store

    if model is None or registry.lookup(model) is not None or not store.is_reference(model):
        return model
    if Path(model).expanduser().exists() or store.find(model) is not None:
        return model
    plan = store.plan_pull(model)
    what = "download and convert" if plan["kind"] == "checkpoint" else "download"
    if not yes:
        if sys.stdin is None or not sys.stdin.isatty():
            raise registry.NotPulledError(model) from None
        print(
            f"{model} is not in the model store: {what} {store.human_size(plan['bytes'])} from {store.where()}? [y/N] ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if input().strip().lower() not in ("y", "yes"):
            raise registry.NotPulledError(model)
    entry = _pull(model, plan=plan)
    print(f"pulled {entry.source} as {entry.name} -> {entry.path}", file=sys.stderr)
    return str(entry.path)
