"""Real exams, real models: the knowledge-density table of the model zoo on the real suites.

Runs ``edge-llm bench MODEL --suite SUITE`` for each model in its own process (peak RSS is each
model's own), then tabulates from the results file: GSM8K (lm-eval's flexible-extract and
strict-match), GSM-Symbolic EN/ZH with the memorisation gap, the arithmetic grid, ARC, MMLU,
k12-zh, the project's own k12 tasks where the suite has them, the composite capability with its
interval, compute per token (GFLOPs, bytes read), measured speed, peak memory, energy where the
host reports it, density; the paired verdict (`bench report --compare`) between each pair of
neighbouring models (by GFLOPs per token); the published figures beside ours, with their protocol.
Plots: capability against GFLOPs per token with 95% intervals, and the digits grid as a heat map
per model and operation.

    python -m scripts.real_exams [--suite real-quick] [--models smollm2 gemma3-270m ...]
                                 [--out bench/results/real_exams.jsonl] [--threads 2]
                                 [--plots bench/results/real_exams] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]

# Published figures, with their protocol: none of them is our protocol, so they sit beside ours
# and are not compared with them.
PUBLISHED = {
    "smollm2-135m-instruct": "GSM8K 1.4 (5-shot), MMLU cloze 29.3 (its model card; lighteval, "
    "not our 3-shot chat CoT)",
    "gemma3-270m": "no math score published (its model card reports general benchmarks only)",
    "qwen2.5-coder-0.5b": "the Qwen2.5-Coder report (arXiv 2409.12186 v3, its math-reasoning "
    "and general-language tables) gives GSM8K, MATH and MMLU for the base model, few-shot; this "
    "is the Instruct model (an AWQ-derived GGUF, 55% Q5_0 / 30% Q8_0 by bytes) asked 3-shot "
    "through its chat template: another variant and protocol. No figure is quoted: the tables "
    "could not be read offline, and the model cards list none",
    "qwen2.5-coder-1.5b": "as for the 0.5B: the report's figures are the base model's, few-shot; "
    "this is the Instruct model at Q4_K_M, chat template, 3-shot; no figure quoted",
}


def run_bench(model: str, suite: str, out: Path, threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "edge_llm", "bench", model, "--suite", suite, "-o", str(out)]
    if threads:
        cmd += ["--threads", str(threads)]
    t0, c0 = time.perf_counter(), os.times()
    p = subprocess.run(cmd, cwd=ROOT)
    c1 = os.times()
    return {
        "model": model,
        "rc": p.returncode,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(
            c1.children_user + c1.children_system - c0.children_user - c0.children_system, 1
        ),
    }


def latest(records: list[dict], suite: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        if r["suite"]["name"] != suite:
            continue
        key = r["model"]["arg"]
        if key not in out or r["date"] > out[key]["date"]:
            out[key] = r
    return out


def _f(v, fmt="{:.3f}") -> str:
    return "—" if v is None else fmt.format(v)


def _ci(v) -> str:
    return "—" if not v else f"{v[0]:.3f}-{v[1]:.3f}"


def row(r: dict) -> dict:
    t, c = r["tasks"], r["compute"]

    def score(name, key="score"):
        return t.get(name, {}).get(key)

    sym = t.get("gsm-symbolic", {})
    e = c.get("energy", {})
    return {
        "model": r["model"]["arg"],
        "gsm8k": score("gsm8k"),
        "gsm8k_ci": score("gsm8k", "ci95"),
        "gsm8k_strict": score("gsm8k", "strict_match"),
        "sym": sym,
        "arith": score("arithmetic"),
        "arc_c": score("arc-challenge"),
        "arc_e": score("arc-easy"),
        "mmlu": score("mmlu"),
        "k12_zh": score("k12-zh"),
        "k12_math": score("k12-math"),
        "cap": r.get("capability"),
        "cap_ci": r.get("capability_ci95"),
        "gflops": c["flops_per_token"] / 1e9,
        "mb_read": c["bytes_read_per_token"] / 1e6,
        "decode": c["decode_tokens_per_s"],
        "rss_mb": c["peak_rss_bytes"] / 1e6,
        "j_per_tok": e.get("joules_per_decode_token") if e.get("available") else None,
        "per_gflop": r["density"].get("per_gflop"),
    }


def _gap(sym: dict, lang: str) -> str:
    g = (sym.get("memorisation_gap") or {}).get(lang)
    if not g or g.get("gap") is None:
        return "—"
    lo, hi = g["ci95"]
    p = (g.get("mcnemar") or {}).get("p")
    return f"{g['gap']:+.3f} ({lo:+.3f} to {hi:+.3f}; McNemar p {p:.2g})"


def _sym_acc(sym: dict, lang: str) -> str:
    inst = (sym.get("instances") or {}).get(lang)
    orig = (sym.get("originals") or {}).get(lang)
    if not inst or inst.get("accuracy") is None:
        return "—"
    sd = inst.get("sd")
    spread = f" sd {sd:.3f}" if sd is not None else ""
    return f"{_f(orig and orig.get('accuracy'))} / {_f(inst['accuracy'])}{spread}"


def table(rows: list[dict]) -> str:
    head = (
        "| model | GSM8K flex (95%) | strict | GSM-Sym EN orig/inst | gap EN | GSM-Sym ZH orig/inst "
        "| gap ZH | arithmetic | ARC-C | ARC-E | MMLU | k12-zh | capability (95%) | GFLOP/tok | "
        "MB read/tok | decode tok/s | peak RSS MB | J/tok | cap/GFLOP |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for x in rows:
        s = x["sym"]
        lines.append(
            f"| {x['model']} | {_f(x['gsm8k'])} ({_ci(x['gsm8k_ci'])}) | {_f(x['gsm8k_strict'])} | "
            f"{_sym_acc(s, 'en')} | {_gap(s, 'en')} | {_sym_acc(s, 'zh')} | {_gap(s, 'zh')} | "
            f"{_f(x['arith'])} | {_f(x['arc_c'])} | {_f(x['arc_e'])} | {_f(x['mmlu'])} | "
            f"{_f(x['k12_zh'])} | {_f(x['cap'])} ({_ci(x['cap_ci'])}) | {x['gflops']:.2f} | "
            f"{x['mb_read']:.0f} | {x['decode']:.1f} | {x['rss_mb']:.0f} | "
            f"{_f(x['j_per_tok'])} | {_f(x['per_gflop'])} |"
        )
    return "\n".join(lines)


def verdicts(out: Path, records: list[dict], recs: list[dict]) -> list[str]:
    from bench.compare import compare

    lines = []
    for a, b in zip(recs, recs[1:]):
        c = compare(out, records, a["run_id"], b["run_id"])
        cap = c["tasks"].get("capability")
        if cap:
            lo, hi = cap["ci95"]
            lines.append(
                f"- {b['model']['arg']} against {a['model']['arg']}: capability "
                f"{cap['difference']:+.3f} ({lo:+.3f} to {hi:+.3f}), {cap['verdict']}"
            )
    return lines


def plots(recs: list[dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in recs:
        x = r["compute"]["flops_per_token"] / 1e9
        y, ci = r.get("capability"), r.get("capability_ci95")
        if y is None:
            continue
        err = [[y - ci[0]], [ci[1] - y]] if ci else None
        ax.errorbar([x], [y], yerr=err, fmt="o", capsize=4, label=r["model"]["arg"])
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per token")
    ax.set_ylabel("capability (chance-normalised, 95% interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    made.append(folder / "capability_vs_gflops.png")
    fig.savefig(made[-1], dpi=120)
    plt.close(fig)
    for r in recs:
        grid = r["tasks"].get("arithmetic", {}).get("grid")
        if not grid:
            continue
        fig, axes = plt.subplots(1, len(grid), figsize=(3.2 * len(grid), 3.2))
        for ax, (op, cells) in zip(np.atleast_1d(axes), grid.items()):
            rows_ = sorted({int(k.split("x")[0]) for k in cells})
            cols_ = sorted({int(k.split("x")[1]) for k in cells})
            m = np.full((len(rows_), len(cols_)), np.nan)
            for k, v in cells.items():
                a, b = map(int, k.split("x"))
                m[rows_.index(a), cols_.index(b)] = v
            ax.imshow(m, vmin=0, vmax=1, cmap="viridis", origin="lower")
            ax.set_xticks(range(len(cols_)), cols_)
            ax.set_yticks(range(len(rows_)), rows_)
            ax.set_title(op)
            ax.set_xlabel("digits of b")
            ax.set_ylabel("digits of a")
        fig.suptitle(f"{r['model']['arg']}: accuracy by digits")
        fig.tight_layout()
        made.append(folder / f"digits_{r['model']['arg']}.png")
        fig.savefig(made[-1], dpi=110)
        plt.close(fig)
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="real-quick")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/real_exams.jsonl")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--plots", type=Path, default=ROOT / "bench/results/real_exams")
    ap.add_argument("--report-only", action="store_true", help="Tabulate what the results hold.")
    args = ap.parse_args()
    from bench import store

    runs = []
    if not args.report_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for m in args.models:
            runs.append(run_bench(m, args.suite, args.out, args.threads))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    records = store.load(args.out)
    by = latest(records, args.suite)
    recs = sorted(
        (by[m] for m in args.models if m in by), key=lambda r: r["compute"]["flops_per_token"]
    )
    print(table([row(r) for r in recs]))
    print()
    print("Paired verdicts between neighbouring models (by GFLOPs per token):")
    print("\n".join(verdicts(args.out, records, recs)))
    print()
    print("Published figures (other protocols, beside ours):")
    for r in recs:
        print(f"- {r['model']['arg']}: {PUBLISHED.get(r['model']['arg'], 'none known')}")
    for p in plots(recs, args.plots):
        print(f"plot: {p}")
    for x in runs:
        print(f"run: {x['model']} wall {x['wall_s']} s, CPU {x['cpu_s']} s, exit {x['rc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
