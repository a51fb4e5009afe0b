"""`edge-llm imatrix` and `edge-llm compare`: measuring for quantization (packages `convert`, `bench`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from edge_llm.cli import options as o

_DATA = Path(__file__).resolve().parents[2] / "bench" / "data"

Chunks = Annotated[
    int | None,
    typer.Option("--chunks", help="Use at most this many chunks (default: all)", min=1,
                 show_default=False),
]  # fmt: skip


def _model_path(model: str) -> Path:
    from edge_llm.registry import resolve

    return Path(model) if model.endswith(".gguf") or Path(model).is_file() else resolve(model)


def _read_text(path: Path, what: str) -> str:
    from edge_llm.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; pass --text FILE")
    return path.read_text(encoding="utf-8", errors="replace")


def imatrix(
    model: Annotated[
        str,
        typer.Argument(
            help="The GGUF to measure (a path or a model name), ideally unquantized (F32/F16/BF16).",
            show_default=False,
        ),
    ],
    text: Annotated[
        Path,
        typer.Option(
            "--text",
            "-f",
            help="Calibration text (default: the project's bench/data/calibration.txt)",
            show_default=False,
        ),
    ] = _DATA / "calibration.txt",
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The imatrix file to write (llama.cpp's GGUF format)."),
    ] = Path("imatrix.gguf"),
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Chunk size in tokens.", min=16)] = 512,
    chunks: Chunks = None,
    process_output: Annotated[
        bool,
        typer.Option("--process-output", help="Also collect output.weight, as llama-imatrix does."),
    ] = False,
    threads: o.Threads = None,
    as_json: o.Json = False,
    force: o.Force = False,
) -> None:
    """Compute an importance matrix (llama-imatrix's quantity and file format) over a text."""  # fmt: skip
    from convert.imatrix import collect
    from convert.outputs import check_output

    path = _model_path(model)
    check_output(output, [path, text], force=force)
    body = _read_text(text, "calibration text")
    show = not as_json and sys.stderr.isatty()

    def step(i: int, n: int) -> None:
        if show:
            print(f"\rcomputing the importance matrix: chunk {i}/{n}", end="", file=sys.stderr)

    im = collect(path, body, n_ctx=ctx, threads=threads, max_chunks=chunks,
                 process_output=process_output, dataset=text.name, progress=step)  # fmt: skip
    if show:
        print(file=sys.stderr)
    out = im.write(output)
    summary = {"path": str(out), "entries": len(im.names()), "chunks": im.chunk_count,
               "chunk_size": im.chunk_size, "tokens": im.chunk_count * im.chunk_size,
               "dataset": text.name}  # fmt: skip
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"wrote {out}: {summary['entries']} matrices, {im.chunk_count} chunks of {im.chunk_size} "
        f"tokens from {text.name}"
    )


def compare(
    reference: Annotated[
        str, typer.Argument(help="The reference GGUF (a path or a model name).", show_default=False)
    ],
    candidate: Annotated[
        str,
        typer.Argument(help="The GGUF to judge against it (same vocabulary).", show_default=False),
    ],
    text: Annotated[
        Path,
        typer.Option(
            "--text",
            "-f",
            help="Evaluation text (default: the project's held-out bench/data/eval.txt)",
            show_default=False,
        ),
    ] = _DATA / "eval.txt",
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Chunk size in tokens.", min=8)] = 512,
    chunks: Chunks = None,
    threads: o.Threads = None,
    as_json: o.Json = False,
) -> None:
    """Fidelity of CANDIDATE to REFERENCE: KL divergence, top-1 agreement, perplexities, Δp."""  # fmt: skip
    import sys
    import time

    from bench.fidelity import compare as run
    from edge_llm.cli.progress import progress_bar

    ref, cand = _model_path(reference), _model_path(candidate)
    t0 = time.perf_counter()
    with progress_bar(not as_json and sys.stderr.isatty()) as update:
        r = run(
            ref,
            cand,
            _read_text(text, "evaluation text"),
            n_ctx=ctx,
            threads=threads,
            max_chunks=chunks,
            progress=update,
        )
    r["seconds"] = round(time.perf_counter() - t0, 2)
    if as_json:
        print(
            json.dumps(
                {"reference": str(ref), "candidate": str(cand), "text": str(text), **r}, indent=2
            )
        )
        return
    p = r["kld_percentiles"]
    print(f"{cand.name} against {ref.name} on {text.name}: {r['tokens']} tokens scored in {r['chunks']} chunks of {ctx}, in {r['seconds']:.1f} s")  # fmt: skip
    print(f"  mean KLD      {r['mean_kld']:.6f}")
    print("  KLD           " + "  ".join(f"{k} {v:.5f}" for k, v in p.items()))
    print(f"  top-1 agree   {100 * r['top1']:.2f}%")
    print(f"  PPL           reference {r['ppl_reference']:.4f}  candidate {r['ppl_candidate']:.4f}  ratio {r['ppl_ratio']:.4f}")  # fmt: skip
    print(
        f"  Δp            mean {100 * r['mean_delta_p']:+.3f}%  RMS {100 * r['rms_delta_p']:.3f}%"
    )
