"""Sequential against batched greedy answering of the k12 tasks: wall time, agreement, accuracy.

Why: `bench.suites.k12_math.solve` can answer one problem at a time through the runtime
(``batch = 1``) or many per llama_decode (`edge_llm.llama.batched`). Batching is only worth having
if it is faster on the same items and its accuracy is not detectably different. The host is
shared and noisy, so the two paths run side by side on the same chunks of items, taking turns
to go first; times are summed per path, and the accuracy is compared paired (McNemar).

    python -m scripts.batch_speed [--tasks k12-math k12-robust] [--batch 8] [--chunk 32]
"""

from __future__ import annotations

import argparse
import json
import time

import edge_llm
from bench import stats
from bench.suites import k12_math as K
from bench.suites import k12_robust as R
from edge_llm.registry import resolve


class _Ctx:
    def __init__(self, path, threads):
        self.path, self.threads, self._model = path, threads, None

    def model(self):
        if self._model is None:
            self._model = edge_llm.load(self.path, device="cpu", n_ctx=512, threads=self.threads)
        return self._model

    def progress(self, *_):
        pass


def problems(task: str) -> list[K.Problem]:
    """The quick suite's items (bench/suites/quick.toml)."""
    if task == "k12-math":
        return K.generate(96, 0)
    return [p for p, _ in R.generate(0, 2, 1, K.LANGUAGES, ("en",))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", nargs="+", default=["k12-math", "k12-robust"])
    ap.add_argument("--batch", type=int, default=8)  # the shipped suites' wave
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=0, help="first N items of each task (0: all)")
    a = ap.parse_args(argv)
    ctx = _Ctx(resolve(a.model), a.threads)
    mode = K.prompt_mode(ctx, "auto")
    for task in a.tasks:
        ps = problems(task)[: a.limit or None]
        seq, bat, t = [], [], {1: 0.0, a.batch: 0.0}
        for c, start in enumerate(range(0, len(ps), a.chunk)):
            part = ps[start : start + a.chunk]
            got = {}
            for b in (1, a.batch) if c % 2 == 0 else (a.batch, 1):
                ctx.model().reset()
                t0 = time.perf_counter()
                got[b] = K.solve(
                    ctx, part, shots=3, max_tokens=32, task=task, prompt_mode=mode, batch=b
                )
                t[b] += time.perf_counter() - t0
            seq += got[1]
            bat += got[a.batch]
        same = sum(x["output"] == y["output"] for x, y in zip(seq, bat))
        v = stats.paired_proportion([x["correct"] for x in seq], [y["correct"] for y in bat])
        out = {
            "task": task,
            "n": len(ps),
            "prompt": mode,
            "batch": a.batch,
            "seconds_sequential": round(t[1], 1),
            "seconds_batched": round(t[a.batch], 1),
            "speedup": round(t[1] / t[a.batch], 2),
            "same_output": same,
            "accuracy_sequential": sum(x["correct"] for x in seq) / len(seq),
            "accuracy_batched": sum(y["correct"] for y in bat) / len(bat),
            "paired": {k: v[k] for k in ("difference", "ci95", "p", "only_a", "only_b", "verdict")},
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
