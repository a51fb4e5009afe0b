"""Quantization-aware distillation against llama.cpp's quantizer at the same size.

Why: llama.cpp rounds a float model once; `edge-llm distill --quant` trains the weights on the
grid they land on (convert/distill/qat.py). This benchmark asks whether that makes a better file
of the same size, on the held-out text, against the same F32 reference:

- llama.cpp's Q4_0, and Q4_0 with an importance matrix (``imatrix auto``: calibration text);
- edge-llm's size budget at Q4_0's size (``--target-size``; optional, it is the slow one);
- QAT: the teacher's matrices trained on the Q4_0 grid by top-k KD on the calibration text for
  ``--minutes`` of training (``distill --quant Q4_0 --minutes M``), the GGUF packed from the
  trained grid (the same tensor types as llama.cpp's Q4_0, so the same size).

Each is compared with the reference on bench/data/eval.txt (`bench.fidelity`: chunks of 512,
second half scored): mean KLD (with a bootstrap interval over chunks' tokens is not computed
here: the KLD percentiles and the scored-token count are reported), top-1, PPL ratio. The CPU
time each method used is recorded.

The reference is SmolLM2-135M-Instruct's shipped GGUF (Q4_1, Q8_0 embedding) exported to F32:
its matrices lie on the Q4_1 grid, which favours no Q4_0 method over another.

    python -m scripts.qat_quality --minutes 15 --chunks 8           # reduced run, ~45 min on 2 CPUs
    python -m scripts.qat_quality --minutes 120 --budget             # fuller run
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from bench import fidelity
from convert import convert
from edge_llm import gguf_info
from edge_llm.fsutil import cache_dir

ROOT = Path(__file__).resolve().parent.parent

MODEL = "smollm2-135m-instruct"
RESULTS = ROOT / "bench" / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def teacher(work: Path) -> tuple[Path, Path]:
    """The F32 Hugging Face export and its F32 GGUF (the reference), made once."""
    hf, ref = work / "hf", work / "reference-f32.gguf"
    if not (hf / "config.json").is_file():
        from convert.export_hf import export_hf
        from edge_llm.registry import resolve

        log("exporting SmolLM2 to an F32 Hugging Face folder (once)")
        export_hf(resolve(MODEL), hf, dtype="f32")
    if not ref.is_file():
        convert(hf, ref, type="F32")
    return hf, ref


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="QAT training budget")
    ap.add_argument("--chunks", type=int, default=8, help="eval chunks of 512 (None: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=5e-5, help="QAT learning rate")
    ap.add_argument("--budget", action="store_true", help="also the size budget at Q4_0's size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--methods",
        default="q4_0,imatrix,budget,qat",
        help="which rows to make now (others are kept from an earlier run's results file)",
    )
    args = ap.parse_args()
    methods = set(args.methods.split(","))
    if not args.budget:
        methods.discard("budget")
    out_json = RESULTS / "qat_quality.json"

    work = cache_dir() / "bench-qat" / MODEL
    work.mkdir(parents=True, exist_ok=True)
    hf, ref = teacher(work)
    text = (ROOT / "bench" / "data" / "eval.txt").read_text(encoding="utf-8")
    rows = []
    if out_json.is_file():  # rows of methods not made now come from the earlier run
        rows = [x for x in json.loads(out_json.read_text())["rows"] if x.get("key") not in methods]

    def save() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(
            json.dumps({"model": MODEL, "args": vars(args), "rows": rows}, indent=1, default=str)
        )

    def measure(label: str, method: str, path: Path, cpu: float, wall: float, **extra) -> None:
        r = fidelity.compare(
            ref, path, text, n_ctx=512, threads=args.threads, max_chunks=args.chunks
        )
        info = gguf_info.read(path)
        row = {
            "file": label,
            "method": method,
            "bytes": info.file_size,
            "bpw": info.bits_per_weight,
            "cpu_s": round(cpu, 1),
            "wall_s": round(wall, 1),
            **r,
            **extra,
        }
        rows.append(row)
        save()
        log(
            f"{label}: {row['bytes'] / 1e6:.1f} MB KLD {row['mean_kld']:.5f} top-1 {100 * row['top1']:.2f}% "
            f"PPL ratio {row['ppl_ratio']:.4f} ({cpu:.0f} CPU s)"
        )

    def made(key, label, method, fn, **extra):
        if key not in methods:
            return None
        c0, t0 = cpu_seconds(), time.perf_counter()
        path = fn()
        measure(
            label,
            method,
            Path(path),
            cpu_seconds() - c0,
            time.perf_counter() - t0,
            key=key,
            **extra,
        )
        return path

    with fidelity.cached_references():
        made(
            "q4_0",
            "Q4_0",
            "llama.cpp",
            lambda: convert(hf, work / "q4_0.gguf", type="Q4_0", force=True).path,
        )
        made(
            "imatrix",
            "Q4_0+imatrix",
            "llama.cpp + imatrix",
            lambda: (
                convert(hf, work / "q4_0-im.gguf", type="Q4_0", imatrix="auto", force=True).path
            ),
        )
        size = (work / "q4_0.gguf").stat().st_size
        made(
            "budget",
            "budget@Q4_0",
            "edge-llm budget",
            lambda: convert(hf, work / "budget.gguf", target_size=size, force=True).path,
        )
        from convert.distill import distill
        from convert.distill.recipe import recipe_from_dict

        r = recipe_from_dict(
            {
                "kd": {
                    "seq_len": 256,
                    "batch_size": 4,
                    "top_k": 64,
                    "lr": args.lr,
                    "warmup": 0.05,
                    "checkpoint_every": 25,
                }
            }
        )
        out = work / "qat-q4_0"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        info = {}

        def qat():
            res = distill(
                hf,
                out,
                recipe=r,
                quant="Q4_0",
                minutes=args.minutes,
                device=args.device,
                gguf=work / "qat-q4_0.gguf",
                threads=args.threads,
                force=True,
            )
            info.update(
                steps=res.steps,
                tokens=res.tokens,
                step_seconds=res.step_seconds,
                loss_first=res.loss_first,
                loss_last=res.loss_last,
            )
            return res.gguf

        made(
            "qat",
            "QAT Q4_0",
            f"edge-llm distill --quant Q4_0 ({args.minutes:g} min)",
            qat,
            qat=info,
        )
    by = {x["file"]: x for x in rows}
    base, q = by.get("Q4_0"), by.get("QAT Q4_0")
    others = [by[k] for k in ("Q4_0", "Q4_0+imatrix", "budget@Q4_0") if k in by]
    lines = [
        "| file | method | MB | bpw | mean KLD | p99 KLD | top-1 % | PPL ratio | CPU s |",
        "|" + "---|" * 9,
    ]
    for x in rows:
        lines.append(
            f"| {x['file']} | {x['method']} | {x['bytes'] / 1e6:.2f} | {x['bpw']:.2f} | {x['mean_kld']:.5f} | "
            f"{x['kld_percentiles']['p99']:.4f} | {100 * x['top1']:.2f} | {x['ppl_ratio']:.4f} | {x['cpu_s']:.0f} |"
        )
    print("\n".join(lines))
    verdict = "no verdict: a QAT row and a llama.cpp row are both needed"
    if q and others:
        best = min(others, key=lambda x: x["mean_kld"])
        ratio = q["mean_kld"] / best["mean_kld"]
        verdict = (
            f"QAT Q4_0 KLD = {ratio:.2f}x the best of llama.cpp/budget at Q4_0's size ({best['file']}); "
            f"goal <= 0.5x: {'met' if ratio <= 0.5 else 'NOT met'}"
        )
        if base:
            verdict += f"; size {q['bytes'] / base['bytes']:.3f}x llama.cpp's Q4_0"
    print(verdict)
    out_json.write_text(
        json.dumps(
            {
                "model": MODEL,
                "args": vars(args),
                "rows": rows,
                "verdict": verdict,
                "scored_tokens": (q or base or {}).get("tokens"),
            },
            indent=1,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
