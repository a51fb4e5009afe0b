"""k12-robust's variants, the benchmark/training template split, and its robustness summary."""

from __future__ import annotations

import json
import re
import tomllib
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pytest

from bench.suites import k12_math as K
from bench.suites import k12_robust as R

NUM = re.compile(r"\d+(?:\.\d+)?")


def dump(pairs) -> bytes:
    return json.dumps(
        [[p.id, p.language, p.question, p.answer_text, m] for p, m in pairs], ensure_ascii=False
    ).encode()


@pytest.fixture(scope="module")
def variants():
    return R.generate(seed=0, sets=3, grid=2)


def test_same_seed_gives_byte_identical_items(variants):
    assert dump(R.generate(seed=0, sets=3, grid=2)) == dump(variants)
    assert dump(R.generate(seed=1, sets=3, grid=2)) != dump(variants)


def families(pairs):
    out = defaultdict(dict)
    for p, m in pairs:
        if m["variant"] != "grid":
            out[(m["cluster"], p.language)][m["variant"]] = (p, m)
    return out


def test_variants_of_one_problem_share_the_answer_and_differ_in_surface(variants):
    fam = families(variants)
    seen = set()
    for vs in fam.values():
        if "base" not in vs:
            continue
        base, bm = vs["base"]
        t = next(t for t in K.load()[0] if t.id == bm["template"])
        for kind in ("names", "reorder", "distractor"):
            if kind in vs:
                p, _ = vs[kind]
                seen.add(kind)
                assert p.answer == base.answer, (kind, p.question)
                assert p.question != base.question
                # The answer logic is the template's: recomputing it from the numbers in the base
                # question is what the variant's answer is too (checked through the template).
                assert p.answer == K.evaluate(
                    t.answer, K.draw(t, __import__("random").Random(f"k12-robust:0:{t.id}:0"))
                )
        if "names" in vs:  # same numbers, other name or object
            p, _ = vs["names"]
            assert sorted(NUM.findall(p.question)) == sorted(NUM.findall(base.question))
        if "reorder" in vs:  # the same words, the question first
            p, _ = vs["reorder"]
            strip = lambda q: sorted(re.sub(r"[\s。，]", "", q))  # noqa: E731
            assert strip(p.question) == strip(base.question)
            assert p.question.startswith(re.split(r"(?<=[.。，])\s*", base.question)[-1])
    assert seen == {"names", "reorder", "distractor"}
    # numbers: other instantiation sets of one template change the numbers, the template stays
    sets = defaultdict(set)
    for p, m in variants:
        if m["variant"] in ("base", "numbers") and p.language == "en":
            sets[m["template"]].add(p.question)
    assert sum(len(v) > 1 for v in sets.values()) >= len(sets) - 2


def test_distractor_sentences_never_change_the_answer(variants):
    fam = families(variants)
    n = 0
    for vs in fam.values():
        if "distractor" not in vs:
            continue
        base, _ = vs["base"]
        p, m = vs["distractor"]
        sent = m["distractor"]
        assert NUM.search(sent), sent  # it holds a number
        assert sent in p.question
        assert p.answer == base.answer
        # Taking the sentence out gives the base problem back (up to the joining space or stop).
        rest = p.question.replace(sent, "")
        assert re.sub(r"[\s。，]", "", rest) == re.sub(r"[\s。，]", "", base.question)
        n += 1
    assert n == 2 * len(R.split()["benchmark"])


def test_english_and_chinese_items_are_translations_of_the_same_numbers(variants):
    by = defaultdict(dict)
    for p, m in variants:
        by[(m["cluster"], m["variant"])][p.language] = p
    assert by
    for key, langs in by.items():
        en, zh = langs["en"], langs["zh"]
        assert en.answer == zh.answer, key
        assert sorted(NUM.findall(en.question)) == sorted(NUM.findall(zh.question)), (
            en.question,
            zh.question,
        )


def test_the_digits_grid_is_exact_and_has_the_digits_it_says(variants):
    grid = [(p, m) for p, m in variants if m["variant"] == "grid" and p.language == "en"]
    assert len(grid) == 4 * 4 * 4 * 2
    ops = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "×": lambda a, b: a * b,
        "÷": lambda a, b: Fraction(a, b),
    }
    for p, m in grid:
        a, sym, b = re.fullmatch(r"What is (\d+) (\S) (\d+)\?", p.question).groups()
        a, b = int(a), int(b)
        assert p.answer == ops[sym](a, b)
        d1, d2 = (int(x) for x in m["cell"].split()[1].split("x"))
        if sym == "÷":  # quotient digits x divisor digits, whole quotient
            assert len(str(a // b)) == d1 and len(str(b)) == d2 and a % b == 0
        else:
            assert len(str(a)) == d1 and len(str(b)) == d2


def test_template_split_is_disjoint_and_covers_the_benchmark():
    data = tomllib.loads(R.SPLIT.read_text(encoding="utf-8"))
    bench = data["benchmark"]["templates"]
    train = data["training"]["templates"]
    assert len(set(bench)) == len(bench) and not set(bench) & set(train)
    ids = [t.id for t in K.load()[0]]
    assert sorted(ids) == sorted(bench)  # every template k12-math draws from is a benchmark one
    texts = {t.text["en"] for t in K.load()[0]} | {t.text["zh"] for t in K.load()[0]}
    train_ids = []
    for f in data["training"].get("files", []):
        raw = tomllib.loads((R.SPLIT.parent / f).read_text(encoding="utf-8"))
        for t in raw.get("template", []):
            train_ids.append(t["id"])
            assert t["en"] not in texts and t["zh"] not in texts, t["id"]
    assert sorted(train_ids) == sorted(train)


def test_overlapping_split_is_refused(tmp_path):
    p = tmp_path / "split.toml"
    text = R.SPLIT.read_text(encoding="utf-8")
    head, train = text.split("\n[training]\n", 1)
    p.write_text(
        head + "\n[training]\n" + train.replace("templates = [", 'templates = ["g1-sum", ', 1),
        encoding="utf-8",
    )
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="g1-sum are both benchmark and training"):
        R.split(Path(p))


def test_summary_counts_paired_flips_and_robustness():
    items = []
    # 4 problems (clusters), each base + distractor in en; base right on 3, distractor flips 2
    for i, (b, d) in enumerate([(1, 0), (1, 0), (1, 1), (0, 0)]):
        for v, ok in (("base", b), ("distractor", d)):
            items.append(
                {
                    "id": f"{i}-{v}",
                    "cluster": f"t{i}/0",
                    "language": "en",
                    "variant": v,
                    "set": 0,
                    "correct": bool(ok),
                }
            )
    s = R.summarise(items)
    assert s["base"] == 0.75 and s["all_variants"] == 0.5
    assert s["robustness"] == pytest.approx(0.5 / 0.75)
    d = s["distractor"]
    assert d["right_to_wrong"] == 2 and d["wrong_to_right"] == 0 and d["change"] == -0.5
    assert d["p"] == pytest.approx(0.5)  # McNemar exact, 2 discordant pairs both one way
