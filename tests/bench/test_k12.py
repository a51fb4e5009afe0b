"""k12-math: the generator is deterministic and its answers right; answers are read in EN and ZH."""

import json
import re
import subprocess
import sys
from fractions import Fraction

import pytest

from bench.errors import BenchError
from bench.suites import answers, k12_math


def test_same_seed_same_problems_in_any_process_and_other_seeds_differ():
    a = k12_math.generate(36, seed=7)
    assert a == k12_math.generate(36, seed=7)
    # Another interpreter with another hash seed draws the very same problems.
    code = (
        "import json; from bench.suites import k12_math\n"
        "print(json.dumps([[p.id, p.question, str(p.answer)] for p in k12_math.generate(36, seed=7)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        check=True,
    )
    assert json.loads(out.stdout) == [[p.id, p.question, str(p.answer)] for p in a]
    b = k12_math.generate(36, seed=8)
    assert [p.question for p in a] != [p.question for p in b]
    # A prefix of a longer run is the shorter run: adding problems never changes earlier ones.
    assert k12_math.generate(12, seed=7) == a[:12]


def test_problems_are_balanced_over_grades_and_languages():
    ps = k12_math.generate(48, seed=0)
    for g in range(1, 7):
        for lang in ("en", "zh"):
            assert sum(p.grade == g and p.language == lang for p in ps) == 4
    zh = [p for p in ps if p.language == "zh"]
    assert all(re.search(r"[\u4e00-\u9fff]", p.question) for p in zh)
    assert all(not re.search(r"[\u4e00-\u9fff]", p.question) for p in ps if p.language == "en")
    assert not any("{" in p.question for p in ps)  # every placeholder filled


def _ints(text):
    return [int(x) for x in re.findall(r"\d+", text)]


def _check(p):
    """The answer recomputed from the question's own text, independently of the templates."""
    q, n = p.question, _ints(p.question)
    if m := re.fullmatch(r"(?:What is )?(\d+) ([-+×]) (\d+)(?:\?| 等于多少？)", q):
        a, op, b = int(m[1]), m[2], int(m[3])
        return {"+": a + b, "-": a - b, "×": a * b}[op]
    if m := re.fullmatch(r"(?:What is )?(\d+)/(\d+) \+ (\d+)/(\d+)(?:\?| 等于多少？)", q):
        return Fraction(int(m[1]), int(m[2])) + Fraction(int(m[3]), int(m[4]))
    if m := re.fullmatch(r"(?:What is )?(\d+\.\d) × (\d)(?:\?| 等于多少？)", q):
        return Fraction(m[1]) * int(m[2])
    if p.kind == "add":
        return sum(n)
    if p.kind == "subtract":
        return n[0] - n[1]
    if p.kind == "multiply":
        return n[0] * n[1]
    if p.kind == "divide":
        return Fraction(n[0], n[1])
    if p.kind == "two-step":
        return 50 - n[0] * n[1]
    if p.kind == "perimeter":
        return 2 * (n[0] + n[1])
    if p.kind in ("rate", "area") and p.grade == 4:
        return n[0] * n[1]
    if p.kind == "area":
        return Fraction(n[0] * n[1], 2)
    if p.kind == "average":
        return Fraction(sum(n[:3]), 3)
    if p.kind == "ratio":
        a, b, total = n[:3]
        return Fraction(total * b, a + b)
    if p.kind == "speed":
        return Fraction(n[0], n[1]) if p.language == "en" else Fraction(n[1], n[0])
    if p.kind == "fraction-of":
        total, a, b = n[:3]
        return Fraction(total * a, b)
    if p.kind == "percent":
        return Fraction(n[0] * (100 - n[1]), 100)
    if p.kind == "negative":
        return n[0] - n[1]
    if p.kind == "decimals":
        return sum(Fraction(x) for x in re.findall(r"\d+(?:\.\d+)?", q))
    raise AssertionError(f"no check for {p.kind}: {q}")


def test_every_answer_matches_a_computation_from_the_question_text():
    ps = k12_math.generate(600, seed=3)
    kinds = {p.kind for p in ps}
    assert len(kinds) >= 14
    for p in ps:
        assert _check(p) == p.answer, (p.question, p.answer)
    assert any(p.answer.denominator != 1 for p in ps)  # decimals and fractions occur
    assert any(p.answer < 0 for p in ps)  # so do negative answers


def test_few_shot_prompt_is_in_the_problem_language():
    en, zh = k12_math.generate(2, seed=0)
    pe, pz = k12_math.prompt(en, 3), k12_math.prompt(zh, 3)
    assert pe.count("Question: ") == 4 and pe.endswith(f"Question: {en.question}\nAnswer:")
    assert pz.count("问题：") == 4 and pz.endswith(f"问题：{zh.question}\n解答：")
    assert "The answer is 8." in pe and "答案是8。" in pz
    assert k12_math.prompt(en, 0) == f"Question: {en.question}\nAnswer:"


@pytest.mark.parametrize(
    "text, want",
    [
        ("5 + 3 = 8. The answer is 8.", "8"),
        ("The answer is 42", "42"),
        ("the final answer is 7.", "7"),
        ("Answer: 12", "12"),
        ("42.0", "42"),
        ("It is 1/2.", "1/2"),
        ("The answer is 0.5.", "1/2"),
        ("The answer is 2/4.", "1/2"),
        ("The answer is 1,234.", "1234"),
        ("They paid $1,234,567 in total", "1234567"),
        ("The answer is -3.", "-3"),
        ("15 - 7 = 8", "8"),  # a minus between numbers is subtraction
        ("The answer is 3 1/2.", "7/2"),
        ("\\frac{3}{4}", "3/4"),
        ("The answer is 42. Question: 7 + 1", "42"),  # the marker wins over later numbers
        ("I think 3, 4 or maybe 5", "5"),  # no marker: the last number
        ("答案是42", "42"),
        ("5 + 3 = 8。答案是8。", "8"),
        ("答案：１２", "12"),  # full-width digits
        ("答案为3.5元", "7/2"),
        ("答：一共有15个苹果", "15"),
        ("所以小明有24个。", "24"),
        ("答案是2分之1", "1/2"),
        ("答案是-3°C", "-3"),
        ("夜里的气温是−5°C", "-5"),  # a typographic minus sign
        ("答案是1,000", "1000"),
    ],
)
def test_answer_extraction(text, want):
    assert answers.extract(text) == answers.parse(want)


@pytest.mark.parametrize("text", ["no number here", "答案是多少？", ""])
def test_no_answer_is_none_and_never_correct(text):
    assert answers.extract(text) is None
    assert not answers.is_correct(text, "0")


def test_answers_compare_exactly():
    assert answers.is_correct("The answer is 42.0", 42)
    assert answers.is_correct("答案是0.75", "3/4")
    assert not answers.is_correct("The answer is 0.33", "1/3")  # no rounding
    assert not answers.is_correct("The answer is 41", 42)
    assert [answers.show(Fraction(x)) for x in ("7", "13/4", "2/3", "-1/2")] == [
        "7",
        "3.25",
        "2/3",
        "-0.5",
    ]


def test_a_bad_template_file_is_refused_with_the_template_named(tmp_path):
    good = k12_math.DATA.read_text(encoding="utf-8")
    bad = good.replace('en = "What is {a} + {b}?"', 'en = "What is {a} + {c}?"', 1)
    path = tmp_path / "k12.toml"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(BenchError, match=r"template 3 \(en\) uses undefined c"):
        k12_math.load(path)
    path.write_text(
        good.replace(
            'vars = { a = "10..19", b = "1..9" }', 'vars = { a = "10..19", b = "a+1..9" }', 1
        ),
        encoding="utf-8",
    )
    with pytest.raises(BenchError, match="template 2: range 'a\\+1..9' of b is empty"):
        k12_math.load(path)


def test_batched_solve_keeps_the_item_records(smollm2_path, smollm2):
    """solve(batch=4) answers through edge_llm.llama.batched: the same records, item for item
    (ids, fields, the answer read from its own output); the outputs themselves are compared
    with the sequential path in tests/runtime/test_batched.py and scripts/batch_speed.py."""

    class Ctx:
        path, threads = smollm2_path, 2

        def model(self):
            return smollm2

        def progress(self, *_):
            pass

    problems = k12_math.generate(6, 0)
    one = k12_math.solve(
        Ctx(), problems, shots=3, max_tokens=8, task="k12-math", prompt_mode="chat"
    )
    four = k12_math.solve(
        Ctx(), problems, shots=3, max_tokens=8, task="k12-math", prompt_mode="chat", batch=4
    )
    assert [x["id"] for x in four] == [p.id for p in problems] == [x["id"] for x in one]
    assert all(set(a) == set(b) for a, b in zip(one, four))
    for x in four:
        got = answers.extract(x["output"])
        assert x["extracted"] == (None if got is None else answers.show(got))
    with pytest.raises(BenchError, match="batch must be at least 1"):
        k12_math.solve(Ctx(), problems, shots=3, max_tokens=8, task="k12-math", batch=0)
