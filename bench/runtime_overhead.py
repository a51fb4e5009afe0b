"""How much does edge_llm cost over a bare llama-cpp-python loop? (run by `make bench`)

Both sides run in one process on the same GGUF, context size, batch size and thread count:
  bare      llama_decode on a 512-token batch (prefill), then 128 x (greedy sample + llama_decode
            of one token), written here against the raw C API and nothing of edge_llm;
  edge_llm  Model.generate(the same 512 token ids, max_tokens=129, temperature=0, ignore_eos=True)
            after Model.reset(): its own prefill and decode timings.
Prefill tokens/s = 512 / (time to the logits of the last prompt token). Decode tokens/s = 128 /
(time from the first sampled token to the 129th), so both count the same 128 decode+sample steps.
Runs interleave (the order alternates each repetition); medians; ratio = edge_llm / bare.
It also compares 1 and 2 threads, and prints which the runtime picks by default.

    python bench/runtime_overhead.py [--model NAME|PATH] [--reps 7] [--threads 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

N_PROMPT, N_GEN, N_CTX, N_BATCH = 512, 128, 1024, 512


class Bare:
    """The baseline: the raw llama.cpp C API, as a llama-cpp-python user would write it."""

    def __init__(self, path: Path, threads: int):
        import llama_cpp.llama_cpp as C

        self.C = C
        C.llama_backend_init()
        mp = C.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = C.llama_model_load_from_file(str(path).encode(), mp)
        cp = C.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = N_CTX, N_BATCH, N_BATCH
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = C.llama_init_from_model(self.model, cp)
        self.smpl = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        C.llama_sampler_chain_add(self.smpl, C.llama_sampler_init_greedy())

    def run(self, tokens: list[int]) -> tuple[float, float, list[int]]:
        C = self.C
        C.llama_memory_clear(C.llama_get_memory(self.ctx), True)
        arr = (C.llama_token * len(tokens))(*tokens)
        t0 = time.perf_counter()
        assert C.llama_decode(self.ctx, C.llama_batch_get_one(arr, len(tokens))) == 0
        t1 = time.perf_counter()
        tok = C.llama_sampler_sample(self.smpl, self.ctx, -1)
        t_first = time.perf_counter()
        out = [tok]
        one = (C.llama_token * 1)()
        for _ in range(N_GEN):
            one[0] = tok
            assert C.llama_decode(self.ctx, C.llama_batch_get_one(one, 1)) == 0
            tok = C.llama_sampler_sample(self.smpl, self.ctx, -1)
            out.append(tok)
        t_end = time.perf_counter()
        return len(tokens) / (t1 - t0), N_GEN / (t_end - t_first), out

    def close(self) -> None:
        self.C.llama_sampler_free(self.smpl)
        self.C.llama_free(self.ctx)
        self.C.llama_model_free(self.model)


class Edge:
    def __init__(self, path: Path, threads: int):
        import edge_llm

        self.m = edge_llm.load(path, n_ctx=N_CTX, threads=threads, n_batch=N_BATCH, device="cpu")

    def run(self, tokens: list[int]) -> tuple[float, float, list[int]]:
        self.m.reset()
        r = self.m.generate(tokens, max_tokens=N_GEN + 1, temperature=0, ignore_eos=True)
        assert r.usage.completion_tokens == N_GEN + 1 and r.usage.cached_tokens == 0
        return r.timings.prefill_tokens_per_s, r.timings.decode_tokens_per_s, r.tokens

    def close(self) -> None:
        self.m.close()


TEXT = (
    "Edge devices run language models under tight limits: a few cores, a few gigabytes of memory "
    "shared with everything else, and a battery. The speed of decoding is bounded by how many "
    "bytes of weights must be read for every token, so a smaller, denser model answers faster. "
)


def prompt_tokens(path: Path) -> list[int]:
    import edge_llm

    text = TEXT * 40
    with edge_llm.load(path, n_ctx=N_CTX * 8, device="cpu") as m:
        return m.tokenize(text)[:N_PROMPT]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="name or .gguf path (default model if omitted)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", type=Path, default=Path("bench/results/runtime_overhead.json"))
    args = ap.parse_args()

    from edge_llm.devices import available_cpus, default_threads
    from edge_llm.registry import resolve

    path = resolve(args.model)
    tokens = prompt_tokens(path)
    print(f"model {path.name}, prompt {len(tokens)} tokens, {N_GEN} generated, ctx {N_CTX}")
    print(f"host {platform.processor() or platform.machine()}, {available_cpus()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}, {args.reps} interleaved repetitions")  # fmt: skip

    results = {}
    for threads in args.threads:
        impls = {"bare": Bare(path, threads), "edge_llm": Edge(path, threads)}
        samples = {name: {"prefill": [], "decode": []} for name in impls}
        outputs = {}
        for rep in range(args.reps + 1):  # repetition 0 warms caches and is dropped
            order = list(impls) if rep % 2 == 0 else list(reversed(impls))
            for name in order:
                pre, dec, out = impls[name].run(tokens)
                outputs[name] = out
                if rep > 0:
                    samples[name]["prefill"].append(pre)
                    samples[name]["decode"].append(dec)
        for impl in impls.values():
            impl.close()
        same = outputs["bare"] == outputs["edge_llm"]
        med = {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}
        results[threads] = {"median": med, "samples": samples, "same_tokens": same}

    print()
    print("| threads | stage | bare tok/s | edge_llm tok/s | edge_llm / bare |")
    print("|---|---|---|---|---|")
    for threads, r in results.items():
        for stage in ("prefill", "decode"):
            b, e = r["median"]["bare"][stage], r["median"]["edge_llm"][stage]
            print(f"| {threads} | {stage} | {b:.1f} | {e:.1f} | {e / b:.3f} |")
    print()
    for threads, r in results.items():
        print(f"threads {threads}: identical greedy tokens from both: {r['same_tokens']}")
    if len(results) > 1:
        print()
        print("| stage | " + " | ".join(f"{t} thread(s)" for t in results) + " | fastest |")
        print("|---|" + "---|" * (len(results) + 1))
        for stage in ("prefill", "decode"):
            vals = {t: r["median"]["edge_llm"][stage] for t, r in results.items()}
            best = max(vals, key=vals.get)
            print(f"| {stage} | " + " | ".join(f"{v:.1f}" for v in vals.values()) + f" | {best} |")
    print(f"\nthe runtime's default on this host: {default_threads()} thread(s)")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": str(path), "reps": args.reps, "results": results}, indent=2))
    print(f"raw samples: {args.json}")
    ok = all(r["same_tokens"] for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
