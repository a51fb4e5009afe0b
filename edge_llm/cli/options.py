"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[
    str | None,
    typer.Argument(
        help="A .gguf path or a model name (see `edge-llm models`); default: smollm2-135m-instruct.",
        show_default=False,
    ),
]
Ctx = Annotated[
    int | None,
    typer.Option(
        "--ctx",
        "-c",
        help="Context length in tokens [default: 4096, capped at the model's]",
        show_default=False,
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads", "-t", help="CPU threads [default: chosen for this host]", show_default=False
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto, cpu, gpu, or a device profile from `edge-llm devices` (e.g. "
        "learning-machine-entry: its memory budget and threads) or a .toml file.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Force = Annotated[
    bool,
    typer.Option("--force", help="Replace an existing output (never one of the sources)."),
]

MaxTokens = Annotated[
    int | None,
    typer.Option("--max-tokens", "-n", help="Most tokens to generate.", show_default=False),
]
Temperature = Annotated[
    float | None,
    typer.Option("--temperature", "--temp", help="0 = greedy [default: 0.8]", show_default=False),
]
TopK = Annotated[
    int | None, typer.Option("--top-k", help="[default: 40, 0 = off]", show_default=False)
]
TopP = Annotated[
    float | None, typer.Option("--top-p", help="[default: 0.95, 1 = off]", show_default=False)
]
MinP = Annotated[
    float | None, typer.Option("--min-p", help="[default: 0.05, 0 = off]", show_default=False)
]
RepeatPenalty = Annotated[
    float | None, typer.Option("--repeat-penalty", help="[default: 1.0 = off]", show_default=False)
]
Seed = Annotated[
    int | None,
    typer.Option("--seed", help="Fixed seed for reproducible sampling.", show_default=False),
]
IgnoreEos = Annotated[
    bool,
    typer.Option(
        "--ignore-eos",
        help="Keep generating past end-of-generation tokens, to --max-tokens (for benchmarks).",
    ),
]
Stop = Annotated[
    list[str] | None,
    typer.Option("--stop", help="Stop at this string (repeatable).", show_default=False),
]


def sampling(**kwargs):
    """Sampling keyword arguments from CLI values, dropping those not given."""
    if kwargs.get("stop") == []:
        kwargs["stop"] = None
    return {k: v for k, v in kwargs.items() if v is not None}


Adapters = Annotated[
    list[str] | None,
    typer.Option(
        "--adapter",
        help="A LoRA adapter GGUF for this model, NAME=PATH (NAME=PATH@SCALE for a scale other "
        "than 1); repeatable. Checked against the model first; loaded once.",
        show_default=False,
    ),
]


def adapters(specs: list[str] | None) -> dict[str, tuple[Path, float]]:
    """--adapter values as ``edge_llm.load(adapters=...)`` takes them."""
    from edge_llm.adapters import parse_spec
    from edge_llm.errors import InvalidAdapterError

    out: dict[str, tuple[Path, float]] = {}
    for spec in specs or []:
        name, path, scale = parse_spec(spec)
        if name in out:
            raise InvalidAdapterError(f"--adapter {name} is given twice; give each a new NAME")
        out[name] = (path, scale)
    return out


Chunks = Annotated[
    int | None,
    typer.Option(
        "--chunks", help="Use at most this many chunks (default: all)", min=1, show_default=False
    ),
]


def model_path(model: str) -> Path:
    from edge_llm.registry import resolve

    return Path(model) if model.endswith(".gguf") or Path(model).is_file() else resolve(model)


def read_text(path: Path, what: str) -> str:
    from edge_llm.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; pass --text FILE")
    return path.read_text(encoding="utf-8", errors="replace")
