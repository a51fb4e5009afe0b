"""Quantization quality: llama.cpp's fixed mixes against edge-llm's size-budget files.

For each model (SmolLM2-135M-Instruct, Gemma 3 270M): the shipped GGUF is exported as an F32
Hugging Face folder (`export-hf`), converted back to an F32 GGUF (the reference), then

- llama.cpp's mixes Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M, Q2_K, without and with an
  importance matrix (`--imatrix auto`: the project's calibration text, 32 chunks of 512);
- edge-llm size-budget files (`--target-size`) at each mix's size (without imatrix), and at
  3.0 bits per weight (`--target-bpw`);

are each compared with the reference on the held-out bench/data/eval.txt (`bench.fidelity`:
chunks of 512, second half scored). Printed: a table (size, bits per weight, mean KLD, 99th
percentile KLD, top-1 agreement, PPL ratio, predicted KLD for budget files) and the goals; written:
bench/results/quant_quality[-degrid].json and .png (mean KLD against size, log scale).

--degrid: the shipped files are themselves quantized (SmolLM2 Q4_1 with a Q8_0 embedding, Gemma
llama.cpp's Q4_K_M mix), so their F32 exports lie on those quantization grids, and a type that
shares a tensor's grid re-quantizes it almost losslessly. --degrid adds uniform noise of half a
grid step (from each 32-weight block's range and the source type's bits; fixed seed) to every
quantized matrix of the export, giving an off-grid reference model for a fairer comparison.

    python -m scripts.quant_quality                     # both models, about 25 min on 2 CPUs
    python -m scripts.quant_quality --degrid
    python -m scripts.quant_quality --models smollm2-135m-instruct --chunks 4
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench import fidelity
from convert import convert
from edge_llm import gguf_info
from edge_llm.fsutil import cache_dir

ROOT = Path(__file__).resolve().parent.parent

MODELS = ["smollm2-135m-instruct", "gemma3-270m"]
MIXES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
LOW_BPW = 3.0
BITS = {
    "Q4_0": 4,
    "Q4_1": 4,
    "Q5_0": 5,
    "Q5_1": 5,
    "Q8_0": 8,
    "Q2_K": 2,
    "Q3_K": 3,
    "Q4_K": 4,
    "Q5_K": 5,
    "Q6_K": 6,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def degrid(hf: Path, shipped: Path, out: Path) -> Path:
    """A copy of the HF folder whose quantized matrices get half-a-step uniform noise."""
    from safetensors.numpy import load_file, save_file

    from convert import archs

    if (out / "model.safetensors").is_file():
        return out
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(hf, tmp)
    config = json.loads((hf / "config.json").read_text())
    arch = archs.for_config(config)
    types = {t.name: t.type for t in gguf_info.read(shipped).tensors}
    tensors = load_file(str(hf / "model.safetensors"))
    for i, (name, w) in enumerate(sorted(tensors.items())):
        gname = arch.gguf_name(name)
        bits = BITS.get(types.get(gname or "", ""))
        if bits is None or w.ndim != 2 or w.shape[-1] % 32:
            continue
        rng = np.random.default_rng(1000 + i)
        blocks = w.reshape(w.shape[0], -1, 32).astype(np.float32)
        step = (blocks.max(-1, keepdims=True) - blocks.min(-1, keepdims=True)) / (2**bits - 1)
        noisy = blocks + (rng.random(blocks.shape, dtype=np.float32) - 0.5) * step
        tensors[name] = noisy.reshape(w.shape).astype(w.dtype)
    save_file(tensors, str(tmp / "model.safetensors"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def prepare(model: str, work: Path, degrid_it: bool) -> tuple[Path, Path]:
    from convert.export_hf import export_hf
    from edge_llm.registry import resolve

    shipped = resolve(model)
    hf = work / "hf"
    if not (hf / "config.json").is_file():
        log(f"{model}: exporting {shipped.name} as F32")
        shutil.rmtree(hf, ignore_errors=True)
        export_hf(shipped, hf, dtype="f32")
    if degrid_it:
        hf = degrid(hf, shipped, work / "hf-degrid")
    ref = work / ("reference-degrid-f32.gguf" if degrid_it else "reference-f32.gguf")
    if not ref.is_file():
        convert(hf, ref, type="F32")
    return hf, ref


def measure(ref: Path, path: Path, text: str, chunks: int, threads: int | None) -> dict:
    info = gguf_info.read(path)
    r = fidelity.compare(ref, path, text, n_ctx=512, threads=threads, max_chunks=chunks)
    r.update(bytes=info.file_size, bpw=info.bits_per_weight)
    return r


def run_model(model: str, args, text: str) -> list[dict]:
    work = cache_dir() / "bench-quant" / model
    work.mkdir(parents=True, exist_ok=True)
    hf, ref = prepare(model, work, args.degrid)
    files = work / "candidates"
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir()
    rows: list[dict] = []

    def one(label: str, method: str, **kw) -> dict:
        path = files / f"{label}.gguf"
        t0 = time.perf_counter()
        res = convert(hf, path, threads=args.threads, **kw)
        made = time.perf_counter() - t0
        t1 = time.perf_counter()
        row = {
            "model": model,
            "file": label,
            "method": method,
            **measure(ref, path, text, args.chunks, args.threads),
        }
        row.update(convert_s=round(made, 1), measure_s=round(time.perf_counter() - t1, 1))
        if res.predicted_kld is not None:
            row["predicted_kld"] = res.predicted_kld
            row["target_bytes"] = res.target_bytes
        if res.budget_check is not None:  # which file the budget shipped: its knapsack or a rival
            row["budget_check"] = res.budget_check
        rows.append(row)
        path.unlink()
        log(
            f"{model} {label}: {row['bytes'] / 1e6:.1f} MB {row['bpw']:.2f} bpw KLD {row['mean_kld']:.5f} "
            f"top-1 {100 * row['top1']:.1f}% ({made:.0f} s + {row['measure_s']:.0f} s)"
        )
        return row

    with fidelity.cached_references():
        sizes = {}
        for mix in args.mixes:
            sizes[mix] = one(mix, "llama.cpp", type=mix)["bytes"]
            if mix != "Q8_0":  # written directly; llama.cpp's Q8_0 ignores an imatrix anyway
                one(f"{mix}+imatrix", "llama.cpp + imatrix", type=mix, imatrix="auto")
        for mix in args.mixes:
            one(f"budget@{mix}", "edge-llm budget", target_size=sizes[mix])
        try:
            one(f"budget@{LOW_BPW}bpw", "edge-llm budget", target_bpw=LOW_BPW)
        except Exception as e:  # noqa: BLE001 - the model may not get that small
            log(f"{model}: no {LOW_BPW} bpw file: {e}")
    shutil.rmtree(files, ignore_errors=True)
    return rows


def goals(rows: list[dict]) -> list[str]:
    out = []
    for model in sorted({r["model"] for r in rows}):
        by = {r["file"]: r for r in rows if r["model"] == model}
        b, q, qi = by.get("budget@Q4_K_M"), by.get("Q4_K_M"), by.get("Q4_K_M+imatrix")
        if b and q and qi:
            r1, r2 = b["mean_kld"] / q["mean_kld"], b["mean_kld"] / qi["mean_kld"]
            out.append(
                f"{model}: at Q4_K_M's size ({q['bytes'] / 1e6:.1f} MB; budget file "
                f"{b['bytes'] / 1e6:.1f} MB) KLD {b['mean_kld']:.5f} = {r1:.2f}x Q4_K_M "
                f"(goal <= 0.70: {'met' if r1 <= 0.7 else 'NOT met'}), {r2:.2f}x "
                f"Q4_K_M+imatrix (goal <= 0.85: {'met' if r2 <= 0.85 else 'NOT met'})"
            )
        low = by.get(f"budget@{LOW_BPW}bpw")
        if low:
            ok = low["top1"] >= 0.85
            out.append(
                f"{model}: at {low['bpw']:.2f} bpw top-1 {100 * low['top1']:.1f}% "
                f"(goal >= 85%: {'met' if ok else 'NOT met'})"
            )
        else:
            out.append(f"{model}: no file at {LOW_BPW} bpw (goal top-1 >= 85%: NOT met)")
    return out


def table(rows: list[dict]) -> str:
    head = "| model | file | method | MB | bpw | mean KLD | p99 KLD | top-1 % | PPL ratio | predicted KLD |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        pred = f"{r['predicted_kld']:.5f}" if "predicted_kld" in r else ""
        chosen = (r.get("budget_check") or {}).get("chosen", "budget")
        if chosen != "budget":  # a rival measured better than the knapsack's mix and shipped
            pred = f"rival shipped: {chosen}"
        lines.append(
            f"| {r['model']} | {r['file']} | {r['method']} | {r['bytes'] / 1e6:.1f} | {r['bpw']:.2f} | "
            f"{r['mean_kld']:.5f} | {r['kld_percentiles']['p99']:.4f} | {100 * r['top1']:.2f} | "
            f"{r['ppl_ratio']:.4f} | {pred} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        for method, style in (
            ("llama.cpp", "o-"),
            ("llama.cpp + imatrix", "s--"),
            ("edge-llm budget", "^-"),
        ):
            pts = sorted(
                (r["bytes"] / 1e6, r["mean_kld"], r["file"])
                for r in rows
                if r["model"] == model and r["method"] == method
            )
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], style, label=method)
            if method == "llama.cpp":
                for x, y, name in pts:
                    ax.annotate(
                        name,
                        (x, max(y, 1e-6)),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_yscale("log")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel("mean KL divergence to F32 (held-out text)")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--mixes", nargs="+", default=MIXES, help="llama.cpp mixes to compare")
    ap.add_argument("--chunks", type=int, default=4, help="eval chunks of 512 tokens per file")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--degrid", action="store_true", help="dither the exported weights off their grids"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    text = importlib.resources.files("bench").joinpath("data/eval.txt").read_text(encoding="utf-8")
    out = (
        args.out
        or ROOT / "bench" / "results" / f"quant_quality{'-degrid' if args.degrid else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict] = []
    for model in args.models:
        rows += run_model(model, args, text)
        out.write_text(
            json.dumps(
                {"rows": rows, "args": {**vars(args), "out": str(out)}}, indent=1, default=str
            )
        )
    minutes = (time.perf_counter() - start) / 60
    print(table(rows))
    print()
    for g in goals(rows):
        print(g)
    tokens = sorted({(r["model"], r["tokens"]) for r in rows})
    print(
        f"\nscored tokens per file: {', '.join(f'{m} {t}' for m, t in tokens)}; {minutes:.1f} min"
    )
    plot(rows, out.with_suffix(".png"))
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "goals": goals(rows),
                "minutes": round(minutes, 1),
                "args": {**vars(args), "out": str(out)},
            },
            indent=1,
            default=str,
        )
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
