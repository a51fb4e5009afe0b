"""Options shared by several commands, declared once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

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
GpuLayers = Annotated[
    int | None,
    typer.Option(
        "--gpu-layers",
        "-ngl",
        help="Layers to offload to the GPU (-1: all; llama.cpp's count: the output layer first, "
        "then the last layers) [default: all with --device gpu or auto on a GPU, else 0]",
        show_default=False,
    ),
]
TrustBackend = Annotated[
    bool,
    typer.Option(
        "--trust-backend",
        help="Use the GPU backend without first checking it against the CPU (the check, once "
        "per model and driver, falls back to the CPU when the GPU disagrees or is slower).",
    ),
]


@dataclass(frozen=True)
class Where:
    """Where a model runs: the device options `run`, `chat` and `serve` share (see ``grouped``)."""

    device: Device = "auto"
    gpu_layers: GpuLayers = None
    trust_backend: TrustBackend = False

    def load_kwargs(self) -> dict[str, Any]:
        """What ``edge_llm.load`` takes for them."""
        return {
            "device": self.device,
            "gpu_layers": self.gpu_layers,
            "trust_backend": self.trust_backend,
        }


AUTO = Where()
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


@dataclass(frozen=True)
class Sampling:
    """The sampling options `run` and `chat` share, as one value (see ``grouped``)."""

    temperature: Temperature = None
    top_k: TopK = None
    top_p: TopP = None
    min_p: MinP = None
    repeat_penalty: RepeatPenalty = None
    seed: Seed = None


NO_SAMPLING = Sampling()  # none given: the model's defaults


def sampling(max_tokens: int | None, given: Sampling = NO_SAMPLING, **more: Any) -> dict[str, Any]:
    """Sampling keyword arguments from CLI values, dropping those not given."""
    kwargs = {"max_tokens": max_tokens, **asdict(given), **more}
    if kwargs.get("stop") == []:
        kwargs["stop"] = None
    return {k: v for k, v in kwargs.items() if v is not None}


def grouped(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with each parameter typed as an option group (a dataclass of options, such as
    ``Sampling``) spread into the group's options, in its place on the command line; the command
    gets the group back as one value. Typer has no option groups; this keeps one declaration of
    options that several commands take."""
    signature = inspect.signature(command, eval_str=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for param in signature.parameters.values():
        group = param.annotation
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            params.append(param)
            continue
        hints = get_type_hints(group, include_extras=True)
        fields = dataclasses.fields(group)
        groups[param.name] = (group, [f.name for f in fields])
        params += [
            param.replace(name=f.name, annotation=hints[f.name], default=f.default) for f in fields
        ]

    @functools.wraps(command)
    def spread(**kwargs: Any) -> Any:
        for name, (group, names) in groups.items():
            kwargs[name] = group(**{n: kwargs.pop(n) for n in names})
        return command(**kwargs)

    spread.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    spread.__annotations__ = {p.name: p.annotation for p in params}
    return spread


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


# --- quantizing: `convert`, `distill --gguf`, and `pull` of a safetensors repository -----------
# Declared here, not in convert, because `pull` takes them too and edge_llm never imports convert;
# the values mean what convert.quant.options.QuantOptions says. Each command states when an
# option applies (``context``) and what applies without it (``default``).
_QUANT: dict[str, tuple[Any, str]] = {
    "--type": (
        str | None,
        "the GGUF type (F32, F16, BF16, Q8_0 or any llama.cpp type: Q4_K_M, IQ4_XS, ...)",
    ),
    "--recipe": (
        str | None,
        "per-tensor types from a quantization recipe (a preset such as q4_k_m or q3_k_m, or a "
        "TOML file)",
    ),
    "--target-size": (
        str | None,
        "a size budget (e.g. 80MB, 300MiB): the type of each tensor is chosen to minimise the "
        "predicted KL divergence within it",
    ),
    "--target-bpw": (
        float | None,
        "a size budget in bits per weight (tensor data / parameters, as `info` reports)",
    ),
    "--imatrix": (
        str | None,
        "an importance matrix for llama.cpp's quantizer: a file (edge-llm imatrix / "
        "llama-imatrix) or 'auto' (computed on the calibration text; a size budget's default)",
    ),
    "--calibration": (Path | None, "the text for --imatrix auto and the size budget's probes"),
}


def quant_option(flag: str, context: str = "", default: str | None = None) -> Any:
    """The declaration of the quantizing option ``flag``, for a command's annotations:
    ``context`` (when it applies) goes before its help, ``default`` after it."""
    kind, text = _QUANT[flag]
    text = f"{context} {text}" if context else text
    text = text[0].upper() + text[1:] + (f" (default: {default})." if default else ".")
    return Annotated[kind, typer.Option(flag, help=text, show_default=False)]


QuantRecipe = quant_option("--recipe")
TargetSize = quant_option("--target-size")
TargetBpw = quant_option("--target-bpw")
Imatrix = quant_option("--imatrix")
Calibration = quant_option("--calibration", default="the project's bench/data/calibration.txt")
