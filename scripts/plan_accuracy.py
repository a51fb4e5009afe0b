"""How well does `edge-llm plan` predict speed? Predicted vs measured tokens/s on this host.

1. Calibrate the host afresh (edge_llm.devices.calibrate): read bandwidth at 1..N threads
   with a small numpy read kernel, then per-type decode and prefill costs fitted on SmolLM2
   requantized to 7 weight types and Gemma 3 requantized to 2 (llama.cpp's quantizer, pure).
2. For the shipped files, SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M (mixed types, never part of
   the fit), at 1 and 2 threads, with f16 and q8_0 KV caches: predict (the plan with the host
   profile) and measure (edge_llm, same settings), interleaved over repetitions, medians.
3. Report the bytes read per token, the bandwidth that implies, and its share of the measured
   read bandwidth (the roofline fraction).

    python -m scripts.plan_accuracy [--reps 3] [--json bench/results/plan_accuracy.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

PROMPT_TOKENS, GEN_TOKENS = 256, 64


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", type=Path, default=Path("bench/results/plan_accuracy.json"))
    ap.add_argument(
        "--busy-ok",
        action="store_true",
        help="calibrate even when other processes keep the CPUs busy (load recorded)",
    )
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    import edge_llm
    from edge_llm.devices import available_cpus, profile
    from edge_llm.devices.calibrate import calibrate

    cal = calibrate(
        edge_llm.load, progress=lambda msg: print(msg, file=sys.stderr), busy_ok=args.busy_ok
    )
    host = profile.host_profile()
    bw = {int(k): v for k, v in cal["read_bandwidth_by_threads"].items()}
    print_calibration(host, bw, cal)
    threads = [t for t in args.threads if t <= available_cpus()]
    rows = []
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        rows += compare(name, threads, args.reps, host, bw)
    print_rows(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"calibration": cal, "rows": rows}, indent=2))
    print(f"raw: {args.json}")
    return 0


def print_calibration(host, bw: dict, cal: dict) -> None:
    print(f"host: {host.description}")
    print(
        "measured read bandwidth: "
        + ", ".join(f"{t} thread(s) {b / 1e9:.1f} GB/s" for t, b in bw.items())
    )
    for t, f in cal["fit"].items():
        d, p = f["decode"], f["prefill"]
        print(
            f"fit at {t} thread(s): decode {d['layer_ms']:.3f} ms/layer + ms/MB "
            + ", ".join(f"{k} {v:.4f}" for k, v in d["per_type"].items())
            + f"; prefill {p['layer_ms']:.4f} ms/layer + ms/GFLOP "
            + ", ".join(f"{k} {v:.2f}" for k, v in p["per_type"].items())
        )
    print()


def measure(path: Path, kv: str, threads: list[int], reps: int) -> dict:
    """Decode and prefill tokens/s of each thread count, interleaved over ``reps`` repetitions."""
    import edge_llm

    models = {
        t: edge_llm.load(path, n_ctx=1024, threads=t, kv_type=kv, device="cpu") for t in threads
    }
    prompt = models[threads[0]].tokenize("Every weight is read once for every token. " * 40)[
        :PROMPT_TOKENS
    ]
    samples = {t: {"decode": [], "prefill": []} for t in threads}
    for rep in range(reps):
        for t in threads if rep % 2 == 0 else reversed(threads):
            m = models[t]
            m.reset()
            r = m.generate(prompt, max_tokens=GEN_TOKENS + 1, temperature=0, ignore_eos=True)
            samples[t]["decode"].append(r.timings.decode_tokens_per_s)
            samples[t]["prefill"].append(r.timings.prefill_tokens_per_s)
    for m in models.values():
        m.close()
    return samples


def compare(name: str, threads: list[int], reps: int, host, bw: dict) -> list[dict]:
    """A row a KV cache type and thread count: the model's measured speeds beside the plan's
    predictions."""
    from edge_llm import gguf_info
    from edge_llm.devices.plan import Config, predict
    from edge_llm.registry import resolve
    from edge_llm.shapes import ModelShape

    path = resolve(name)
    shape = ModelShape.from_info(gguf_info.read(path))
    rows = []
    for kv in ("f16", "q8_0"):
        samples = measure(path, kv, threads, reps)
        position = PROMPT_TOKENS + GEN_TOKENS // 2
        for t in threads:
            cfg = Config(threads=t, n_ctx=1024, kv_type=kv, n_batch=512, n_gpu_layers=0)
            pred_dec, pred_pre = predict(gguf_info.read(path), cfg, host, position=position)
            dec = statistics.median(samples[t]["decode"])
            pre = statistics.median(samples[t]["prefill"])
            bytes_tok = shape.decode_bytes_per_token(position, kv)
            rows.append(
                {
                    "model": name,
                    "kv": kv,
                    "threads": t,
                    "decode_measured": dec,
                    "decode_predicted": pred_dec,
                    "prefill_measured": pre,
                    "prefill_predicted": pred_pre,
                    "bytes_per_token": bytes_tok,
                    "achieved_bandwidth": dec * bytes_tok,
                    "roofline_fraction": dec * bytes_tok / bw[t],
                }
            )
    return rows


def print_rows(rows: list[dict]) -> None:
    print(
        "| model | KV | threads | decode measured | predicted | ratio | prefill measured | predicted | ratio | MB read/token | GB/s achieved | roofline fraction |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = ""
        print(
            f"| {r['model']}{mark} | {r['kv']} | {r['threads']} | {r['decode_measured']:.1f} | "
            f"{r['decode_predicted']:.1f} | {r['decode_predicted'] / r['decode_measured']:.2f} | "
            f"{r['prefill_measured']:.1f} | {r['prefill_predicted']:.1f} | "
            f"{r['prefill_predicted'] / r['prefill_measured']:.2f} | {r['bytes_per_token'] / 1e6:.1f} | "
            f"{r['achieved_bandwidth'] / 1e9:.2f} | {r['roofline_fraction']:.2f} |"
        )
    within = [
        abs(r[f"{k}_predicted"] / r[f"{k}_measured"] - 1) <= 0.2
        for r in rows
        for k in ("decode", "prefill")
    ]
    print(f"\npredictions within ±20% of measured: {sum(within)}/{len(within)}")


if __name__ == "__main__":
    sys.exit(main())
