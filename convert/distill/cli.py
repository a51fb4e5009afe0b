"""`edge-llm distill`: prune a Hugging Face teacher and heal the student by knowledge distillation
(package `convert.distill`; torch and transformers come with the `distill` extra)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_llm.cli import options as o
from edge_llm.errors import ConfigError


def progress_bar():
    """A rich progress bar fed by distill's progress(stage, done, total, info)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int, info: dict) -> None:
        text = ""
        if "loss" in info:
            text = f"loss {info['loss']:.4f}  {info['tokens_per_s']:.0f} tok/s"
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, info=text)
        bar.update(tasks[stage], completed=done, total=total, info=text)

    return bar, update


# distill's own arguments and options; the command's signature names them
Teacher = Annotated[
    Path,
    typer.Argument(
        help="The teacher: a Hugging Face folder (config.json, *.safetensors, tokenizer).",
        show_default=False,
    ),
]

Output = Annotated[
    Path,
    typer.Option("--output", "-o", help="The student folder to create.", show_default=False),
]

Layers = Annotated[
    int | None,
    typer.Option(
        "--layers",
        help="Keep N decoder layers (the ones with the highest block influence), without a recipe.",
        show_default=False,
    ),
]

Texts = Annotated[
    list[Path] | None,
    typer.Option(
        "--text",
        help='Training text: a .txt or .jsonl ({"text": ...}) file (repeatable); default: the project\'s calibration corpus',
        show_default=False,
    ),
]

Tokens = Annotated[
    int | None,
    typer.Option(
        "--tokens",
        help="Training tokens; beyond the text, the teacher's own continuations fill the budget; default: the recipe's kd.tokens, else one pass over the text",
        show_default=False,
    ),
]

Steps = Annotated[
    int | None,
    typer.Option(
        "--steps",
        help="Optimizer steps instead of --tokens; 0 prunes without healing.",
        show_default=False,
    ),
]

Dtype = Annotated[
    str,
    typer.Option(
        "--dtype", help="auto (bf16 on a CUDA device that has it, else f32), f32 or bf16."
    ),
]

Seed = Annotated[int, typer.Option("--seed", help="Data order, generation and initialisation.")]

Resume = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted run from its last checkpoint (same result as uninterrupted).",
    ),
]

Gguf = Annotated[
    Path | None,
    typer.Option("--gguf", help="Also convert the student to this GGUF.", show_default=False),
]
# convert's quantizing options, declared once (edge_llm.cli.options), with what they mean here
GgufType = o.quant_option("--type", "With --gguf and no --quant:", default="F16")
TargetSize = o.quant_option(
    "--target-size",
    "Quantization-aware, instead of --quant (over the trainable types, measured on the student, "
    "then trained on):",
)

Domain = Annotated[
    str | None,
    typer.Option(
        "--domain",
        help="A targeted student: mix this domain's text (JSONL records tagged \"domain\", or the built-in k12-math corpus) with cross-entropy on its gold text, per the recipe's [domain].",
        show_default=False,
    ),
]

Minutes = Annotated[
    float | None,
    typer.Option(
        "--minutes",
        help="Train for about this many minutes: the student's step is timed first and the token budget sized from it.",
        show_default=False,
    ),
]

Fsdp = Annotated[
    bool,
    typer.Option(
        "--fsdp",
        help="Under torchrun: shard the student across the processes (PyTorch FSDP) instead of replicating it (DDP), for a student that does not fit one device.",
    ),
]


def distill(
    teacher: Teacher,
    output: Output,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--recipe",
            help="distill.toml: prune.layers/drop/keep, prune.intermediate_size, prune.kv_heads; kd.temperature, kd.alpha, kd.top_k, kd.lr, kd.batch_size, kd.seq_len, ...; data.generate, ...",
            show_default=False,
        ),
    ] = None,
    layers: Layers = None,
    text: Texts = None,
    tokens: Tokens = None,
    steps: Steps = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    dtype: Dtype = "auto",
    seed: Seed = 0,
    resume: Resume = False,
    gguf: Gguf = None,
    type: GgufType = None,
    quant: Annotated[
        str | None,
        typer.Option(
            "--quant",
            help="Quantization-aware: train the matrices on this GGUF grid (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) or a quantization recipe (Q4_K_M or a TOML file); --gguf is then packed from the trained grid.",
            show_default=False,
        ),
    ] = None,
    target_size: TargetSize = None,
    domain: Domain = None,
    minutes: Minutes = None,
    fsdp: Fsdp = False,
    threads: o.Threads = None,
    as_json: o.Json = False,
    force: o.Force = False,
) -> None:
    """Prune a teacher (depth by block influence, width by activation magnitude) and heal the student on the teacher's logits."""
    transformers = _distill_extra()
    from convert.distill import distill as run

    # edge-llm's own bar reports progress; transformers' loading bars would put lines on stderr
    # before a one-line error (e.g. a refused --resume, found after the teacher is loaded)
    transformers.utils.logging.disable_progress_bar()
    kw = dict(
        recipe=recipe,
        layers=layers,
        texts=text,
        tokens=tokens,
        steps=steps,
        device=device,
        dtype=dtype,
        seed=seed,
        resume=resume,
        threads=threads,
        gguf=gguf,
        type=type,
        quant=quant,
        target_size=target_size,
        domain=domain,
        minutes=minutes,
        force=force,
        fsdp=fsdp,
    )
    speaking = int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 speaks
    quiet = as_json or not sys.stderr.isatty() or not speaking
    result = _with_progress(run, teacher, output, kw, quiet=quiet)
    if speaking:
        _report(result, as_json)


def _distill_extra():
    """transformers, once torch and it are known to be installed."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        raise ConfigError(
            "distillation needs torch and transformers: pip install 'edge-llm[distill]'"
        ) from None
    return transformers


def _with_progress(run, teacher: Path, output: Path, kw: dict, *, quiet: bool):
    """``run`` (convert.distill.distill), feeding a progress bar on stderr unless ``quiet``."""
    bar, update = progress_bar()
    if quiet:
        return run(teacher, output, **kw)
    with bar:
        return run(teacher, output, progress=update, **kw)


def _report(result, as_json: bool) -> None:
    """The result: its summary as JSON, or a few lines for people."""
    if as_json:
        print(json.dumps(result.summary(), indent=2))
        return
    c = result.config
    print(
        f"wrote {result.path}: {result.architecture}, {c['num_hidden_layers']}/{result.teacher_layers} "
        f"layers (kept {result.kept_layers}), intermediate {c['intermediate_size']}, "
        f"heads {c['num_attention_heads']}/{c['num_key_value_heads']} kv, "
        f"{result.params_student / 1e6:.1f}M of {result.params_teacher / 1e6:.1f}M parameters"
    )
    if result.steps:
        print(
            f"healed: {result.steps} steps, {result.tokens} tokens "
            f"({result.generated_sequences} generated sequences), loss {result.loss_first:.4f} -> "
            f"{result.loss_last:.4f}, {result.tokens_per_s:.0f} tokens/s on {result.device}"
        )
    if result.quant:
        kinds = sorted(set((result.tensor_types or {}).values()))
        print(f"quantization-aware: {result.quant} ({', '.join(kinds)})")
    if result.gguf:
        print(f"wrote {result.gguf}")
    print(f"done in {result.seconds:.1f} s")
