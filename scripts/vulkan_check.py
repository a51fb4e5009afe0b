"""`make vulkan-check`'s figures: llama.cpp's Vulkan backend against its CPU backend, per model and
offload depth, on whatever Vulkan device is visible (lavapipe, Mesa's software device, when there
is no GPU: GGML_VK_VISIBLE_DEVICES=0).

Speed on a software device means nothing, so only correctness is reported:
- on a fixed text, teacher-forced: the share of positions where the device's top token is the
  CPU's, and the mean and max KL(CPU || device) of the next-token distributions (nats);
- greedy decoding of prompts, token by token on each side: how many tokens agree before the
  first difference, and how close the CPU's own top two were there (a near-tie, in logits:
  numerics that differ in the last bits may pick either);
- device memory: what `plan` predicts for the configuration against what llama.cpp reports it
  allocated on the device (its model, KV and compute buffers);
- the self-check's cost (seconds, once per model, driver and depth).

    GGML_VK_VISIBLE_DEVICES=0 python -m scripts.vulkan_check [--json OUT]

Exit 0 when every figure is within the stated tolerances, 1 when one is not, 2 when there is no
Vulkan device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

MODELS = ("smollm2-135m-instruct", "gemma3-270m")
PROMPTS = (
    "The capital of France is",
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:",
    "def fibonacci(n):\n",
)
GREEDY_TOKENS = 24
NEAR_TIE = 1.0  # logits: a first difference where the CPU's top two are closer is a near-tie
MEMORY_TOLERANCE = 0.10
N_CTX = 512


@dataclass
class Greedy:
    tokens: list[int]
    gaps: list[float]  # the CPU side's top-1 minus top-2 logit at each step


def greedy(sc, prompt: list[int], n: int) -> Greedy:
    """Greedy decoding on a ScoringContext, with each step's top-two gap."""
    row = np.asarray(sc.eval_chunk(prompt)[-1], dtype=np.float64)
    tokens, gaps = [], []
    for i in range(n):
        top2 = np.partition(row, -2)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        tokens.append(int(row.argmax()))
        row = np.asarray(sc.eval([tokens[-1]], pos0=len(prompt) + i)[-1], dtype=np.float64)
    return Greedy(tokens, gaps)


def first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing token (len when none)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(path, layers: int, threads: int) -> dict:
    """Teacher-forced agreement and greedy agreement of the device at ``layers`` with the CPU."""
    from edge_llm.devices import selfcheck
    from edge_llm.llama.scoring import ScoringContext

    out: dict = {"gpu_layers": layers}
    sides = {}
    for name, n in (("cpu", 0), ("device", layers)):
        with ScoringContext(
            path, n_ctx=N_CTX, threads=threads, kv_type="f16", flash_attn=None, n_gpu_layers=n
        ) as sc:
            probe = sc.tokenize(selfcheck.PROBE, add_special=True, parse_special=False)
            logits = np.array(sc.eval_chunk(probe), dtype=np.float32)
            runs = [
                greedy(sc, sc.tokenize(p, add_special=True, parse_special=False), GREEDY_TOKENS)
                for p in PROMPTS
            ]
        sides[name] = (logits, runs)
    top1, mean_kl, max_kl = selfcheck.agreement(sides["cpu"][0], sides["device"][0])
    out.update(top1_agreement=top1, mean_kl=mean_kl, max_kl=max_kl, positions=len(sides["cpu"][0]))
    greedy_rows = []
    for prompt, cpu, dev in zip(PROMPTS, sides["cpu"][1], sides["device"][1]):
        i = first_difference(cpu.tokens, dev.tokens)
        gap = cpu.gaps[i] if i < len(cpu.tokens) else None
        greedy_rows.append(
            {
                "prompt": prompt,
                "agreeing_tokens": i,
                "of": len(cpu.tokens),
                "cpu_gap_at_difference": gap,
                "near_tie": gap is None or gap < NEAR_TIE,
            }
        )
    out["greedy"] = greedy_rows
    return out


def memory(path, layers: int, threads: int) -> dict:
    """plan's predicted device memory against what llama.cpp allocated on the device."""
    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import host_profile
    from edge_llm.gguf_info import read
    from edge_llm.model import load
    from edge_llm.shapes import ModelShape

    m = load(
        path, device="gpu", gpu_layers=layers, trust_backend=True, n_ctx=N_CTX, threads=threads
    )
    try:
        got = m.placement.device_bytes()
        cfg = planning.Config(threads, m.n_ctx, "f16", 512, layers)
    finally:
        m.close()
    info = read(path)
    mem = planning.memory_for(ModelShape.from_info(info), cfg, host_profile(), 0, info)
    return {"predicted": mem.device, "allocated": got, "ratio": mem.device / got if got else None}


def selfcheck_cost(path, device, threads: int) -> dict:
    from edge_llm.devices import selfcheck

    t0 = time.perf_counter()
    v = selfcheck.measure(path, device, -1, threads)
    return {**v.to_dict(), "wall_seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args(argv)

    from edge_llm.gguf_info import read
    from edge_llm.llama.binding import gpu_devices
    from edge_llm.registry import resolve

    gpus = [d for d in gpu_devices() if d.backend == "Vulkan"]
    if not gpus:
        print(
            "error: no Vulkan device; build with make install VULKAN=1 and, for lavapipe, set GGML_VK_VISIBLE_DEVICES=0",
            file=sys.stderr,
        )
        return 2
    report: dict = {"device": f"{gpus[0].name}: {gpus[0].description}", "models": {}}
    ok = True
    for name in args.models:
        path = resolve(name)
        n_layer = int(read(path).arch_value("block_count"))
        depths = (-1, n_layer // 2 + 1)  # all; the output layer and the second half
        rows = []
        for layers in depths:
            t0 = time.perf_counter()
            row = compare(path, layers, args.threads)
            row["memory"] = memory(path, layers, args.threads)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(json.dumps({"model": name, **row}), flush=True)
        cost = selfcheck_cost(path, gpus[0], args.threads)
        print(json.dumps({"model": name, "selfcheck": cost}), flush=True)
        report["models"][name] = {"depths": rows, "selfcheck": cost}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
