"""An example reference family for the densing law, measured on models this machine can build.

The densing law (arXiv 2412.04315) places a model on a reference family: models trained the same
way at several sizes, each with its parameter count N, its conditional answer loss L and its score
S. edge-llm ships the format (bench/density.py, FAMILY_FORMAT) but no real reference family: a real
one is a series of checkpoints trained alike (the paper's is its own), and this project has one
model size per family. What it can build is SmolLM2-135M-Instruct with its last-ranked decoder
layers removed (`edge-llm distill --layers N --steps 0`: depth pruning by block influence, not
healed). Those five sizes make a family whose fit and inversion can be run end to end, which is
what this file is for: an illustration of the format and the procedure, labelled ``example =
true`` in the file it writes. It is not a reference: pruning without healing is not training at a
smaller size, so the effective sizes it gives say how a model compares with damaged copies of
SmolLM2, nothing about the law itself.

Score and loss come from one task, MMLU (acc_norm, chance 0.25; the loss is the conditional loss
of the right option given the question, nats per token: the record's tasks.mmlu.answer_loss), on
the suite ``bench/suites/densing_example.toml`` (the quick suite's MMLU items and more). Each
model runs as ``edge-llm bench GGUF --suite bench/suites/densing_example.toml`` in its own process.

    python -m scripts.densing_example [--layers 30 26 22 18 14] [--out bench/data/densing_example.toml]
                                      [--place gemma3-270m ...]

Prints the family, its fit, and the effective size of each ``--place`` model (default: the
shipped SmolLM2 and Gemma 3 270M) with its interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.bench_cmd import bench_argv

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "bench/suites/densing_example.toml"
FULL_DEPTH = 30  # SmolLM2-135M's decoder layers


def teacher(models_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (the shipped Q4_1 exported at f32), once."""
    from convert.export_hf import export_hf
    from edge_llm.registry import resolve

    hf = models_dir / "SmolLM2-135M-Instruct"
    if not (hf / "config.json").is_file():
        models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            print(f"exporting SmolLM2 to {hf} (once)", file=sys.stderr)
            export_hf(resolve("smollm2-135m-instruct"), Path(tmp) / "hf", dtype="f32")
            (Path(tmp) / "hf").rename(hf)
    return hf


def pruned(models_dir: Path, hf: Path, layers: int) -> Path:
    """SmolLM2 with ``layers`` decoder layers kept (block influence), not healed, at F16, once."""
    gguf = models_dir / f"smollm2-135m-pruned-{layers}.gguf"
    if not gguf.is_file():
        with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "edge_llm",
                "distill",
                str(hf),
                "-o",
                str(Path(tmp) / "student"),
                "--layers",
                str(layers),
                "--steps",
                "0",
                "--gguf",
                str(gguf),
                "--type",
                "F16",
            ]
            print(f"pruning to {layers} layers: {gguf}", file=sys.stderr)
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return gguf


def bench(model: str, label: str, results: Path) -> dict:
    """The record of ``model`` on the example suite: an earlier one from ``results`` (the same
    file, the same suite version), else a new `edge-llm bench` run appended there."""
    from bench import store

    def earlier() -> dict | None:
        for r in reversed(store.load(results) if results.is_file() else []):
            if r["model"]["arg"] == model and r["suite"]["name"] == "densing-example":
                return r
        return None

    if (r := earlier()) is not None:
        return r
    cmd = bench_argv(model, SUITE, results, recipe=label, quiet=True)
    print(f"bench {model} ({label})", file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return earlier()


def family_toml(members: list[tuple[str, dict]]) -> str:
    """The family file (bench/density.py's FAMILY_FORMAT) from the members' records."""
    lines = [
        "# An EXAMPLE reference family, not a reference: SmolLM2-135M-Instruct (the shipped Q4_1,",
        "# exported at f32) with its lowest-influence decoder layers removed and NOT healed",
        "# (`edge-llm distill --layers N --steps 0`), each converted at F16 (the full-depth row is the",
        "# same export, unpruned). Written by `python -m scripts.densing_example`; see its docstring.",
        'name = "smollm2-135m-depth-pruned (example)"',
        "example = true",
        'score = "mmlu"',
        "chance = 0.25",
        'params_kind = "total"',
        'loss = "mmlu.answer_loss"',
    ]
    for name, r in members:
        mmlu = r["tasks"]["mmlu"]
        lines += [
            "",
            "[[model]]",
            f'name = "{name}"',
            f"params = {r['compute']['params_total']}",
            f"loss = {mmlu['answer_loss']:.6f}",
            f"score = {mmlu['score']:.6f}",
            f"items = {mmlu['n']}",
            f'sha256 = "{r["model"]["sha256"]}"',
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[30, 26, 22, 18, 14])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/data/densing_example.toml")
    ap.add_argument("--models-dir", type=Path, default=Path.home() / ".cache/edge-llm/bench-models")
    ap.add_argument("--results", type=Path, default=ROOT / "bench/results/densing_example.jsonl")
    ap.add_argument("--place", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    args = ap.parse_args(argv)
    if any(not 1 <= n <= FULL_DEPTH for n in args.layers):
        ap.error(f"--layers must be between 1 and {FULL_DEPTH}")

    from bench import density

    args.results.parent.mkdir(parents=True, exist_ok=True)
    hf = teacher(args.models_dir)
    members = []
    for n in sorted(set(args.layers), reverse=True):
        path = pruned(args.models_dir, hf, n) if n < FULL_DEPTH else None
        if path is None:  # the full depth: the same export converted at F16, for like with like
            path = (
                args.models_dir / "smollm2-135m-instruct-F16.gguf"
            )  # what make bench converts too
            if not path.is_file():
                from convert import convert

                convert(hf, path, type="F16")
        label = f"SmolLM2 {n} of {FULL_DEPTH} layers, not healed"
        members.append((f"smollm2-{n}-layers", bench(str(path), label, args.results)))
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(family_toml(members))
    tmp.replace(args.out)
    fam = density.load_family(args.out)
    fit = density.fit_family(fam)
    print(f"\nfamily written to {args.out}\n")
    print("| model | params | MMLU answer loss | MMLU acc_norm |\n|---|---|---|---|")
    for m in fam.members:
        print(f"| {m.name} | {m.params / 1e6:.1f}M | {m.loss:.3f} | {m.score:.3f} |")
    print(f"\nfit: {json.dumps(fit.to_dict())}\n")
    print("| placed model | params | MMLU acc_norm [95%] | effective params [95%] | density |")
    print("|---|---|---|---|---|")
    for model in args.place:
        r = bench(model, "placed on the example family", args.results)
        d = density.densing(r, fam, fit)
        s = r["tasks"]["mmlu"]
        lo, hi = s.get("ci95", [float("nan")] * 2)
        eff = d.get("effective_params")
        ci = d.get("effective_params_95") or [None, None]
        show = lambda x: "n/a" if x is None else f"{x / 1e6:.1f}M"  # noqa: E731
        print(
            f"| {r['model']['name']} | {r['compute']['params_total'] / 1e6:.1f}M | "
            f"{s['score']:.3f} [{lo:.3f}, {hi:.3f}] | {show(eff)} [{show(ci[0])}, {show(ci[1])}] "
            f"| {d['density']:.2f} |"
            if d.get("density")
            else "| n/a |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
