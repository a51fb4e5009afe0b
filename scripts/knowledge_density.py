"""Knowledge density of the shipped models and SmolLM2's conversions (run by `make bench`).

Models (each run as `edge-llm bench MODEL --suite quick --device learning-machine-entry` in its
own process, so peak RSS is each model's own):
  SmolLM2-135M-Instruct Q4_1    the shipped file
  SmolLM2-135M-Instruct F16     the shipped file exported to Hugging Face (convert.export_hf, f32)
                                and converted back at F16: the Q4_1 weights, dequantized
  SmolLM2-135M-Instruct Q4_K_M  the same export requantized by llama.cpp's quantizer; its fidelity
                                (KL, top-1) is measured against the F16
  Gemma 3 270M Q4_K_M           the shipped file
The conversions are made once into ~/.cache/edge-llm/bench-models/ (or --models-dir).

With --runs N the whole list runs N times (interleaved: every model, then every model again) and a
noise table compares the runs: capability and per-item answers (identical with a fixed seed), and
the spread of the decode and prefill medians.

    python -m scripts.knowledge_density [--runs 1] [--out bench/results/knowledge_density.jsonl]
                                      [--plot bench/results/knowledge_density.png] [--no-gemma]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def conversions(models_dir: Path) -> dict[str, Path]:
    """SmolLM2's F16 and Q4_K_M, converted once from the shipped Q4_1 via a HF export."""
    from edge_llm.registry import resolve

    out = {t: models_dir / f"smollm2-135m-instruct-{t}.gguf" for t in ("F16", "Q4_K_M")}
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--device", default="learning-machine-entry")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/knowledge_density.jsonl")
    ap.add_argument("--plot", type=Path, default=ROOT / "bench/results/knowledge_density.png")
    ap.add_argument("--models-dir", type=Path,
                    default=Path.home() / ".cache/edge-llm/bench-models")  # fmt: skip
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from bench import report, store
    from edge_llm.registry import resolve

    conv = conversions(args.models_dir)
    plan = [("smollm2-135m-instruct", "shipped", None)]
    if conv:
        plan += [(str(conv["F16"]), "export-hf+convert F16", None),
                 (str(conv["Q4_K_M"]), "export-hf+convert Q4_K_M", str(conv["F16"]))]  # fmt: skip
    if not args.no_gemma:
        resolve("gemma3-270m")  # assemble it now, not inside a timed run
        plan.append(("gemma3-270m", "shipped", None))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    before = len(args.out.read_text().splitlines()) if args.out.is_file() else 0
    walls = []
    for run in range(args.runs):
        for model, label, reference in plan:
            cmd = [sys.executable, "-m", "edge_llm", "bench", model, "--suite", args.suite,
                   "--device", args.device, "--recipe", label, "-o", str(args.out)]  # fmt: skip
            if reference:
                cmd += ["--reference", reference]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            print(f"\n=== run {run + 1}/{args.runs}: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT)
            walls.append((model, label, run, time.perf_counter() - t0))
    records = store.load(args.out)[before:]
    print("\n## Knowledge density (this invocation's runs)\n")
    print(report.markdown(report.rows(records, every=True)))
    print("\nwall time per model run (process start to exit, model load and suite included):")
    for model, label, run, wall in walls:
        print(f"  run {run + 1}  {Path(model).name:<40} {label:<26} {wall:6.1f} s")
    if args.runs > 1:
        print("\n## Noise between runs\n")
        print(noise(records))
    report.plot(store.load(args.out), args.plot)
    print(f"\nplot: {args.plot}; records: {args.out}")
    return 0


def noise(records: list[dict]) -> str:
    """Per model: capability and answers identical across runs? Spread of the speed medians."""
    from bench.report import group_key, label

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(group_key(r), []).append(r)
    lines = ["| model | runs | capability | answers identical | decode tok/s per run | decode max/min | "
             "prefill tok/s per run | prefill max/min | threads |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for rs in groups.values():
        caps = {json.dumps(r["capability"]) for r in rs}
        digests = {json.dumps({t: v.get("answers_digest") for t, v in r["tasks"].items()}, sort_keys=True)
                   for r in rs}  # fmt: skip
        dec = [r["compute"]["decode_tokens_per_s"] for r in rs]
        pre = [r["compute"]["prefill_tokens_per_s"] for r in rs]
        capa = " / ".join("—" if r["capability"] is None else f"{r['capability']:.3f}" for r in rs)
        lines.append(
            f"| {label(rs[0])} | {len(rs)} | {capa}"
            f"{' (same)' if len(caps) == 1 else ' (DIFFER)'} | {'yes' if len(digests) == 1 else 'NO'} | "
            f"{' / '.join(f'{x:.1f}' for x in dec)} | {max(dec) / min(dec):.3f} | "
            f"{' / '.join(f'{x:.1f}' for x in pre)} | {max(pre) / min(pre):.3f} | "
            f"{' / '.join(str(r['device']['threads']) for r in rs)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
