"""How much does edge_llm cost over a bare llama-cpp-python loop? (run by `make bench`)

Both sides run in one process on the same GGUF, context size, batch size and thread count:
  bare      llama_decode on a 512-token batch (prefill), then 128 x (greedy sample + llama_decode
            of one token), written here against the raw C API and nothing of edge_llm;
  edge_llm  Model.generate(the same 512 token ids, max_tokens=129, temperature=0, ignore_eos=True)
            after Model.reset(): its own prefill and decode timings.
Prefill tokens/s = 512 / (time to the logits of the last prompt token). Decode tokens/s = 128 /
(time from the first sampled token to the 129th), so both count the same 128 decode+sample steps.
Runs interleave (the order alternates each repetition); medians; ratio = edge_llm / bare, both
as the ratio of medians and as the median of the per-repetition (paired) ratios.

Then the thread choice: edge_llm with 1 thread, 2 threads and its default (threads follow the
host's load), on the idle host and with one CPU kept busy by another process (a spinning Python,
stopped at the end), interleaved the same way.

    python -m scripts.runtime_overhead [--model NAME|PATH] [--reps 7] [--threads 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

N_PROMPT, N_GEN, N_CTX, N_BATCH = 512, 128, 1024, 512


class Bare:
    """The baseline: the raw llama.cpp C API, as a llama-cpp-python user would write it."""

    def __init__(self, path: Path, threads: int):
        import llama_cpp.llama_cpp as C

        from edge_llm.llama import binding

        self.C = C
        C.llama_backend_init()
        # a wheel with runtime-selected CPU variants has no CPU backend until one is loaded (a
        # bare llama-cpp-python user must call ggml_backend_load_all too): the one edge_llm loads
        binding.cpu_kernels()
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
    def __init__(self, path: Path, threads: int | None):
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


def interleave(impls: dict, tokens: list[int], reps: int) -> tuple[dict, dict]:
    """Run each implementation reps times, alternating the order; repetition 0 is a warm-up."""
    samples = {name: {"prefill": [], "decode": []} for name in impls}
    outputs = {}
    for rep in range(reps + 1):
        order = list(impls) if rep % 2 == 0 else list(reversed(impls))
        for name in order:
            pre, dec, out = impls[name].run(tokens)
            outputs[name] = out
            if rep > 0:
                samples[name]["prefill"].append(pre)
                samples[name]["decode"].append(dec)
    for impl in impls.values():
        impl.close()
    return samples, outputs


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def overhead(path: Path, tokens: list[int], thread_counts: list[int], reps: int) -> dict:
    results = {}
    print(
        "| threads | stage | bare tok/s | edge_llm tok/s | ratio of medians | median paired ratio |"
    )
    print("|---|---|---|---|---|---|")
    for threads in thread_counts:
        samples, outputs = interleave(
            {"bare": Bare(path, threads), "edge_llm": Edge(path, threads)}, tokens, reps
        )
        results[threads] = {
            "samples": samples,
            "same_tokens": outputs["bare"] == outputs["edge_llm"],
        }
        for stage in ("prefill", "decode"):
            b, e = samples["bare"][stage], samples["edge_llm"][stage]
            paired = median([x / y for x, y in zip(e, b)])
            print(
                f"| {threads} | {stage} | {median(b):.1f} | {median(e):.1f} | {median(e) / median(b):.3f} | {paired:.3f} |"
            )
    for threads, r in results.items():
        print(
            f"threads {threads}: identical greedy tokens from bare and edge_llm: {r['same_tokens']}"
        )
    return results


def thread_choice(path: Path, tokens: list[int], reps: int) -> dict:
    from edge_llm.devices import available_cpus

    results = {}
    spin = "import time\nend = time.time() + 900\nwhile time.time() < end: pass\n"
    for condition in ("idle", "one CPU busy"):
        hog = subprocess.Popen([sys.executable, "-c", spin]) if condition != "idle" else None
        try:
            time.sleep(0.5)
            impls = {"1": Edge(path, 1), "default": Edge(path, None)}
            if available_cpus() >= 2:
                impls["2"] = Edge(path, 2)
            picked = impls["default"].m.threads
            samples, _ = interleave(impls, tokens, reps)
        finally:
            if hog:
                hog.kill()
                hog.wait()
        results[condition] = {"samples": samples, "default_picked": picked}
    print("| host | stage | 1 thread | 2 threads | default (threads it picked) | default / best |")
    print("|---|---|---|---|---|---|")
    for condition, r in results.items():
        for stage in ("prefill", "decode"):
            m = {k: median(v[stage]) for k, v in r["samples"].items()}
            best = max(m.values())
            two = f"{m['2']:.1f}" if "2" in m else "n/a"
            print(
                f"| {condition} | {stage} | {m['1']:.1f} | {two} | {m['default']:.1f} ({r['default_picked']}) | {m['default'] / best:.3f} |"
            )
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="name or .gguf path (default model if omitted)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", type=Path, default=Path("bench/results/runtime_overhead.json"))
    args = ap.parse_args()

    from edge_llm.devices import available_cpus
    from edge_llm.registry import resolve

    path = resolve(args.model)
    tokens = prompt_tokens(path)
    print(f"model {path.name}, prompt {len(tokens)} tokens, {N_GEN} generated, ctx {N_CTX}")
    print(
        f"host {platform.processor() or platform.machine()}, {available_cpus()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}, {args.reps} interleaved repetitions\n"
    )
    over = overhead(path, tokens, args.threads, args.reps)
    print()
    choice = thread_choice(path, tokens, args.reps)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    out = {"model": str(path), "reps": args.reps, "overhead": over, "thread_choice": choice}
    args.json.write_text(json.dumps(out, indent=2))
    print(f"\nraw samples: {args.json}")
    return 0 if all(r["same_tokens"] for r in over.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
