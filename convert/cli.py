"""The converter's commands: `edge-llm convert`, `export-hf`, `imatrix` and `distill`.

They join the one `edge-llm` CLI as a plugin: pyproject.toml declares `register` in the entry-point
group ``edge_llm.commands``, and `edge_llm.cli` calls it; the runtime package never imports
`convert`. Heavy imports happen inside the commands, so ``edge-llm --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_llm.cli import options as o

# the quantizing options are declared once, in edge_llm.cli.options (`pull` takes them too)
QuantType = o.quant_option("--type", default="F16, BF16 for a bf16 checkpoint")


def convert(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The GGUF to write.", show_default=False)
    ],
    src: Annotated[
        Path | None,
        typer.Argument(
            help="A Hugging Face model folder (config.json, *.safetensors, tokenizer), or a GGUF to requantize (none with --lora).",
            show_default=False,
        ),
    ] = None,
    type: QuantType = None,
    pre: Annotated[
        str | None,
        typer.Option(
            "--pre",
            help="llama.cpp pre-tokenizer name, when edge-llm cannot tell it from tokenizer.json.",
            show_default=False,
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Compare the output with a reference on a few prompts (top-1 agreement, KL divergence).",
        ),
    ] = False,
    imatrix: o.Imatrix = None,
    recipe: o.QuantRecipe = None,
    target_size: o.TargetSize = None,
    target_bpw: o.TargetBpw = None,
    calibration: o.Calibration = None,
    allow_nonfinite: Annotated[
        bool,
        typer.Option(
            "--allow-nonfinite",
            help="Convert a checkpoint whose weights hold NaN or Inf (refused by default: such a model generates nothing useful).",
        ),
    ] = False,
    threads: o.Threads = None,
    lora: Annotated[
        Path | None,
        typer.Option(
            "--lora",
            help="Convert a PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to a GGUF adapter for --base, as llama.cpp's convert_lora_to_gguf.py does.",
            show_default=False,
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="With --lora: the base model the adapter was trained on (its Hugging Face folder or GGUF).",
            show_default=False,
        ),
    ] = None,
    outtype: Annotated[
        str,
        typer.Option(
            "--outtype", help="With --lora: the adapter's tensor type: f32, f16, bf16 or q8_0."
        ),
    ] = "f32",
    as_json: o.Json = False,
    force: o.Force = False,
) -> None:
    """Convert a Hugging Face checkpoint to GGUF, or requantize a GGUF: --type, --recipe, or a size budget.

    A PEFT LoRA adapter: edge-llm convert --lora ADAPTER_DIR --base BASE -o adapter.gguf
    """
    from convert.errors import ConvertError
    from convert.quant.options import QuantOptions

    if lora is not None or src is None:
        _convert_lora(src, lora, base, output, outtype, as_json, force)
        return
    if verify and src.is_file():
        raise ConvertError(
            f"--verify compares with a checkpoint; for a GGUF run `edge-llm compare {src} {output}`"
        )
    quant = QuantOptions(
        type=type,
        recipe=recipe,
        target_size=target_size,
        target_bpw=target_bpw,
        imatrix=imatrix,
        calibration=calibration,
    )
    quiet = as_json or not sys.stderr.isatty()
    result = _run_convert(src, output, quant, pre, threads, force, allow_nonfinite, quiet)
    summary = _summary(result)
    if verify:
        summary["verify"] = _verify(src, result, threads, quiet)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _print_result(result, summary.get("verify"))


def _run_convert(src, output, quant, pre, threads, force, allow_nonfinite, quiet):
    """The conversion, with a progress bar unless ``quiet``; its warnings on stderr."""
    from convert import convert as run
    from edge_llm.cli.progress import progress_bar

    with progress_bar(not quiet) as update:
        result = run(
            src,
            output,
            quant,
            pre=pre,
            progress=update,
            threads=threads,
            force=force,
            allow_nonfinite=allow_nonfinite,
        )
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return result


def _summary(result) -> dict:
    """What `convert --json` prints: the file, and how it was made when that is not plain."""
    summary = {
        "path": str(result.path),
        "architecture": result.architecture,
        "type": result.type,
        "tensors": result.tensors,
        "bytes": result.bytes,
        "seconds": round(result.seconds, 2),
    }
    for key in ("recipe", "imatrix", "target_bytes", "predicted_kld", "budget_check"):
        if getattr(result, key) is not None:
            summary[key] = getattr(result, key)
    if result.warnings:
        summary["warnings"] = result.warnings
    return summary


def _verify(src, result, threads, quiet) -> dict:
    """--verify: the output against the checkpoint (top-1 agreement, KL divergence), timed."""
    import time

    from convert.verify import verify as check

    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    out = check(src, result.path, threads=threads, progress=say)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _print_result(result, verified: dict | None) -> None:
    print(
        f"wrote {result.path} ({result.architecture}, {result.type}, {result.tensors} tensors, "
        f"{result.bytes / 2**20:.1f} MiB) in {result.seconds:.1f} s"
    )
    if result.predicted_kld is not None:
        print(
            f"size budget {result.target_bytes} bytes: {result.bytes} used, predicted mean KLD "
            f"{result.predicted_kld:.4g} (measure it with `edge-llm compare`)"
        )
    if result.budget_check:
        name = lambda k: "knapsack mix" if k == "budget" else k  # noqa: E731
        m = result.budget_check["measured_kld"]
        print(
            "measured on the calibration text (mean KLD): "
            + ", ".join(f"{name(k)} {v:.4g}" for k, v in m.items())
            + f"; kept: {name(result.budget_check['chosen'])}"
        )
    if verified:
        v = verified
        print(
            f"verify against {v['reference']}: top-1 agreement {v['top1_agreement']:.4f}, "
            f"mean KL {v['mean_kl']:.3g} over {v['positions']} positions, in {v['seconds']:.1f} s "
            f"({result.seconds + v['seconds']:.1f} s in all)"
        )


def _convert_lora(src, lora, base, output, outtype, as_json, force) -> None:
    from convert.errors import ConvertError
    from convert.lora import write_gguf_adapter

    if lora is None:
        raise ConvertError("give the checkpoint to convert, or --lora ADAPTER_DIR --base BASE")
    if src is not None:
        raise ConvertError(
            "--lora converts an adapter: drop the positional SRC (the base is --base)"
        )
    if base is None:
        raise ConvertError("--lora needs --base: the base model's Hugging Face folder or GGUF")
    result = write_gguf_adapter(lora, base, output, out_type=outtype.lower(), force=force)
    if as_json:
        print(json.dumps(result.summary(), indent=2))
        return
    print(
        f"wrote {result.path} (LoRA adapter for {result.architecture}: rank {result.rank}, "
        f"alpha {result.alpha:g}, {result.tensors} tensors, {result.file_size / 2**20:.2f} MiB)"
    )


def export_hf(
    model: Annotated[
        str,
        typer.Argument(
            help="The GGUF to export: a path or a model name (see `edge-llm models`).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The folder to create.", show_default=False)
    ],
    dtype: Annotated[str, typer.Option("--dtype", help="f32, f16 or bf16.")] = "f32",
    force: o.Force = False,
) -> None:
    """Export a GGUF as a Hugging Face folder (dequantized weights, config, tokenizer)."""
    from convert.errors import ConvertError
    from convert.export_hf import export_hf as run
    from edge_llm.registry import resolve

    if dtype.lower() not in ("f32", "f16", "bf16"):
        raise ConvertError(f"unknown --dtype {dtype}; choose f32, f16 or bf16")
    path = Path(model) if Path(model).suffix == ".gguf" else resolve(model)
    out = run(path, output, dtype=dtype.lower(), force=force)
    print(f"wrote {out}")


def imatrix(
    model: Annotated[
        str,
        typer.Argument(
            help="The GGUF to measure (a path or a model name), ideally unquantized (F32/F16/BF16).",
            show_default=False,
        ),
    ],
    text: Annotated[
        Path | None,
        typer.Option(
            "--text",
            "-f",
            help="Calibration text (default: the project's bench/data/calibration.txt)",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The imatrix file to write (llama.cpp's GGUF format)."),
    ] = Path("imatrix.gguf"),
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Chunk size in tokens.", min=16)] = 512,
    chunks: o.Chunks = None,
    process_output: Annotated[
        bool,
        typer.Option("--process-output", help="Also collect output.weight, as llama-imatrix does."),
    ] = False,
    threads: o.Threads = None,
    as_json: o.Json = False,
    force: o.Force = False,
) -> None:
    """Compute an importance matrix (llama-imatrix's quantity and file format) over a text."""
    from convert.outputs import check_output
    from convert.quant.imatrix import collect
    from convert.quant.options import calibration_path

    path = o.model_path(model)
    text = calibration_path(text)
    check_output(output, [path, text], force=force)
    body = o.read_text(text, "calibration text")
    show = not as_json and sys.stderr.isatty()

    def step(i: int, n: int) -> None:
        if show:
            print(f"\rcomputing the importance matrix: chunk {i}/{n}", end="", file=sys.stderr)

    im = collect(
        path,
        body,
        n_ctx=ctx,
        threads=threads,
        max_chunks=chunks,
        process_output=process_output,
        dataset=text.name,
        progress=step,
    )
    if show:
        print(file=sys.stderr)
    out = im.write(output)
    summary = {
        "path": str(out),
        "entries": len(im.names()),
        "chunks": im.chunk_count,
        "chunk_size": im.chunk_size,
        "tokens": im.chunk_count * im.chunk_size,
        "dataset": text.name,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"wrote {out}: {summary['entries']} matrices, {im.chunk_count} chunks of {im.chunk_size} "
        f"tokens from {text.name}"
    )


def register(app: typer.Typer) -> None:
    """Add the converter's commands to the `edge-llm` app (the ``edge_llm.commands`` entry point)."""
    from convert.adapt.cli import adapt
    from convert.distill.cli import distill

    app.command("adapt")(adapt)
    app.command("convert")(convert)
    app.command("export-hf")(export_hf)
    app.command("imatrix")(imatrix)
    app.command("distill")(distill)
