"""Knowledge density of the shipped models and SmolLM2's quantizations (run by `make bench`).

Models (each run as `edge-llm bench MODEL --suite quick --device learning-machine-entry` in its
own process, so peak RSS is each model's own):
  SmolLM2-135M-Instruct Q4_1    the shipped file
  SmolLM2-135M-Instruct F16     the shipped Q4_1 dequantized: exported to Hugging Face
                                (convert.export_hf, f32) and converted back at F16 (not the
                                original bf16 checkpoint, which is not shipped)
  SmolLM2-135M-Instruct Q4_K_M  that F16 requantized by llama.cpp's quantizer; fidelity (KL,
                                top-1) measured against the F16
  SmolLM2-135M-Instruct Q2_K    deliberately broken: the same export at Q2_K, no importance matrix
  Gemma 3 270M Q4_K_M           the shipped file
The conversions are made once into ~/.cache/edge-llm/bench-models/ (or --models-dir).

Printed: the density table with 95% intervals; each model's k12-robust table; the paired verdict
of every SmolLM2 file against the shipped Q4_1 (`edge-llm bench report --compare`); per model run,
wall time, CPU time (user + system of the child) and the host's load average around it. With
--full, the default model also runs the full suite (its wall time is the suite's cost). With
--runs 2 the list runs twice and each model's second run is compared with its first (a
deterministic model must show no detectable difference), with the spread of the speed medians.

    python -m scripts.knowledge_density [--runs 1] [--full] [--no-gemma] [--suite quick]
                                        [--out bench/results/knowledge_density.jsonl]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.bench_cmd import bench_argv

ROOT = Path(__file__).resolve().parent.parent

WHAT = {
    "F16": "the shipped Q4_1 dequantized to F16 (export-hf f32, converted at F16)",
    "Q4_K_M": "llama.cpp Q4_K_M requantized from that F16 (its fidelity is measured against it)",
    "Q2_K": "deliberately broken: Q2_K of that export without an importance matrix",
}


def conversions(models_dir: Path) -> dict[str, Path]:
    """SmolLM2's F16, Q4_K_M and Q2_K, converted once from the shipped Q4_1 via a HF export."""
    from edge_llm.registry import resolve

    out = {t: models_dir / f"smollm2-135m-instruct-{t}.gguf" for t in WHAT}
    if all(p.is_file() for p in out.values()):
        return out
    try:
        from convert import convert
        from convert.export_hf import export_hf
    except ImportError:
        print("the converter is not available: SmolLM2's conversions are left out", file=sys.stderr)
        return {}
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir) as tmp:
        hf = Path(tmp) / "SmolLM2-135M-Instruct"  # the folder name becomes general.name
        print(f"exporting SmolLM2 to {hf} (once)", file=sys.stderr)
        export_hf(resolve("smollm2-135m-instruct"), hf, dtype="f32")
        for t, path in out.items():
            if not path.is_file():
                print(f"converting to {t}: {path}", file=sys.stderr)
                convert(hf, path, type=t)
    return out


def run_one(cmd: list[str]) -> dict:
    """Run a child; its wall time, CPU time and the load average before and after."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load0, "load_after": os.getloadavg()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--suite", default="quick")
    ap.add_argument(
        "--full", action="store_true", help="also run the full suite on the default model"
    )
    ap.add_argument("--device", default="learning-machine-entry")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/knowledge_density.jsonl")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench/results/knowledge_density.png")
    ap.add_argument("--models-dir", type=Path, default=Path.home() / ".cache/edge-llm/bench-models")
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from bench import compare, report, store
    from bench.suites.k12_robust import table
    from edge_llm.registry import resolve

    conv = conversions(args.models_dir)
    plan = [("smollm2-135m-instruct", "shipped Q4_1", None, None)]
    for t in ("F16", "Q4_K_M", "Q2_K"):
        if t in conv:
            ref = (str(conv["F16"]), WHAT["F16"]) if t == "Q4_K_M" else (None, None)
            plan.append((str(conv[t]), WHAT[t], *ref))
    if not args.no_gemma:
        resolve("gemma3-270m")  # assemble it now, not inside a timed run
        plan.append(("gemma3-270m", "shipped Q4_K_M", None, None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    before = len(args.out.read_text().splitlines()) if args.out.is_file() else 0
    costs = []
    jobs = [(run, *p, args.suite) for run in range(args.runs) for p in plan]
    if args.full:
        jobs.append((0, "smollm2-135m-instruct", "shipped Q4_1", None, None, "full"))
    for run, model, label, reference, ref_is, suite in jobs:
        cmd = bench_argv(
            model,
            suite,
            args.out,
            device=args.device,
            recipe=label,
            reference=reference,
            reference_is=ref_is if reference else None,
            threads=args.threads,
        )
        print(f"\n=== run {run + 1}/{args.runs}: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
        costs.append((model, label, run, suite, run_one(cmd)))
    records = store.load(args.out)[before:]
    print("\n## Knowledge density (this invocation's runs)\n")
    print(report.markdown(report.rows(records, every=True)))
    for r in records:
        if (
            r["suite"]["name"] == args.suite
            and "k12-robust" in r["tasks"]
            and "score" in r["tasks"]["k12-robust"]
        ):
            print(f"\n### k12-robust: {report.label(r)}\n")
            print(table(r["tasks"]["k12-robust"]))
    print("\n## Paired verdicts against the shipped Q4_1 (same suite, same items)\n")
    first = [r for r in records if r["suite"]["name"] == args.suite][: len(plan)]
    base = next((r for r in first if r["model"]["arg"] == "smollm2-135m-instruct"), None)
    smollm2_files = {str(p) for p in conv.values()}  # general.name differs: match on the file
    for r in first:
        if base is None or r["model"]["arg"] not in smollm2_files:
            continue
        c = compare.compare(args.out, store.load(args.out), base["run_id"], r["run_id"])
        print(compare.markdown(c) + "\n")
    if args.runs > 1:
        print("\n## Rerun against first run (a deterministic model: no detectable difference)\n")
        runs = [r for r in records if r["suite"]["name"] == args.suite]
        for a, b in zip(runs[: len(plan)], runs[len(plan) : 2 * len(plan)]):
            c = compare.compare(args.out, store.load(args.out), a["run_id"], b["run_id"])
            verdicts = {t: v["verdict"] for t, v in c["tasks"].items()}
            dec = [a["compute"]["decode_tokens_per_s"], b["compute"]["decode_tokens_per_s"]]
            print(f"- {report.label(a)}: {verdicts}; decode tok/s {dec[0]:.1f} / {dec[1]:.1f}")
    print("\n## Cost of each run (process start to exit; CPU = user + system of the child)\n")
    print(
        "| run | model | suite | wall s | CPU s | load avg before / after |\n|---|---|---|---|---|---|"
    )
    for model, label, run, suite, c in costs:
        print(
            f"| {run + 1} | {Path(model).name} ({label}) | {suite} | {c['wall_s']:.1f} | {c['cpu_s']:.1f} | "
            f"{c['load_before']:.2f} / {c['load_after']:.2f} |"
        )
    report.plot(store.load(args.out), args.plot)
    print(f"\nplot: {args.plot}; records: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
