"""Targeted students (convert.distill.domain, distill --domain): the built-in K-12 training
corpus is disjoint from the benchmark's templates and correct by construction (judged by the
benchmark's own answer reader and by recomputing every written equation), tagged JSONL, the
domain mix lowering the CE on held-out gold solutions, and --minutes."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from convert.distill import domain as DM
from convert.errors import ConvertError

SUITES = Path(__file__).resolve().parents[2] / "bench" / "suites"


def benchmark_templates() -> list[dict]:
    """Every [[template]] of the benchmark's K-12 data files (k12-math; k12-robust draws from the
    same file; any other k12 file in bench/suites too)."""
    out = []
    for p in sorted(SUITES.glob("k12*.toml")):
        data = tomllib.loads(p.read_text(encoding="utf-8"))
        if p.name == "k12_split.toml":
            continue
        out += data.get("template", [])
    assert out, "no benchmark templates found"
    return out


def skeleton(text: str) -> str:
    """A template's wording without its numbers and names: placeholders and digits erased."""
    return re.sub(r"\s+", " ", re.sub(r"\{[^}]*\}|\d+", "#", text)).strip().lower()


def test_training_templates_are_disjoint_from_the_benchmarks():
    bench = benchmark_templates()
    train, _, _ = DM.k12_templates()
    ids = [t.id for t in train]
    assert len(ids) == len(set(ids))
    for lang in ("en", "zh"):
        theirs = {skeleton(t[lang]) for t in bench}
        for t in train:
            assert skeleton(t.template.text[lang]) not in theirs, (t.id, lang)
    # drawn questions: none of 2000 training questions is one of 2000 benchmark questions
    from bench.suites import k12_math

    asked = {p.question for p in k12_math.generate(2000, seed=0)}
    drawn = {p["question"] for p in DM.k12_problems(2000, seed=0)}
    assert not asked & drawn
    # the split file, where the benchmark names its templates (issue 13), lists none of ours
    split = SUITES / "k12_split.toml"
    if split.is_file():
        data = tomllib.loads(split.read_text(encoding="utf-8"))
        assert not set(data.get("benchmark", {}).get("templates", [])) & set(ids)
        assert sorted(data["training"]["templates"]) == sorted(ids)  # and names exactly ours


_CHAIN = re.compile(r"[\d./%+\-×÷() ]+(?:=[\d./%+\-×÷() ]+)+")


def test_worked_solutions_are_correct_by_construction():
    from bench.suites import answers
    from bench.suites import k12_math as K

    problems = DM.k12_problems(600, seed=3)
    assert {p["language"] for p in problems} == {"en", "zh"}
    assert {p["grade"] for p in problems} == set(K.GRADES)
    checked = 0
    for p in problems:
        # the benchmark's own answer reader finds the true answer in the solution
        assert answers.extract(p["solution"]) == answers.parse(p["answer"]), p
        # every equation chain written in the working is true (evaluated exactly, x% = x/100)
        for chain in _CHAIN.findall(p["solution"]):
            sides = [
                re.sub(r"(\d+(?:\.\d+)?)%", r"(\1/100)", x).replace("×", "*").replace("÷", "/")
                for x in chain.strip().rstrip(".").split("=")
            ]
            values = {K.evaluate(x, {}) for x in sides}
            assert len(values) == 1, (p["solution"], chain)
            checked += 1
        # the layout is the benchmark's prompt layout
        assert p["text"].split("\n")[1].startswith(("Answer:", "解答："))
    assert checked > 500
    assert DM.k12_problems(5, seed=3) == problems[:5]  # deterministic


def test_tagged_jsonl(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"text": "general words"},
                {"text": "1 + 1 = 2", "domain": "k12-math"},
                {"text": "  "},
            ]
        )
    )
    docs = DM.read_tagged([f])
    assert [(d.text, d.domain) for d in docs] == [
        ("general words", None),
        ("1 + 1 = 2", "k12-math"),
    ]
    f.write_text(json.dumps({"text": "x", "domain": 3}))
    with pytest.raises(ConvertError, match='"domain" must be a string'):
        DM.read_tagged([f])


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from tests.fixtures.distill import make_teacher

    return make_teacher(tmp_path_factory, num_hidden_layers=2, initializer_range=0.02)


def gold_ce(model_dir, problems) -> float:
    """Mean next-token cross-entropy of a model on problems' text (question and solution)."""
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    m = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for p in problems:
            ids = torch.tensor([tok(p["text"], add_special_tokens=False)["input_ids"]])
            lg = m(ids).logits[0, :-1]
            tot += torch.nn.functional.cross_entropy(lg, ids[0, 1:], reduction="sum").item()
            n += ids.shape[1] - 1
    return tot / n


def test_domain_mix_teaches_the_gold_solutions(teacher, tmp_path, monkeypatch):
    from convert.distill import distill
    from convert.distill.recipe import recipe_from_dict
    from tests.fixtures.tinymodels import CORPUS_LINES

    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)
    text = tmp_path / "general.txt"
    text.write_text("\n".join(CORPUS_LINES * 6))
    r = {
        "kd": {"seq_len": 32, "batch_size": 4, "top_k": 16, "lr": 3e-3, "warmup": 0.1},
        "domain": {"fraction": 0.5, "ce_weight": 0.9},
    }
    kw = dict(texts=[text], steps=30, recipe=recipe_from_dict(r))
    dom = distill(teacher, tmp_path / "dom", domain="k12-math", **kw)
    distill(teacher, tmp_path / "kd", **kw)  # the same steps, KD only
    assert dom.domain_sequences == 60  # fraction 0.5 of 30 steps x 4 sequences
    held_out = DM.k12_problems(24, seed=99)  # other draws than training's (seed 0)
    assert gold_ce(tmp_path / "dom", held_out) < 0.8 * gold_ce(tmp_path / "kd", held_out)
    # a tagged record supplies the domain instead of the built-in corpus
    tagged = tmp_path / "mine.jsonl"
    tagged.write_text(
        "\n".join(json.dumps({"text": p["text"], "domain": "k12-math"}) for p in held_out)
    )
    res = distill(
        teacher,
        tmp_path / "tag",
        domain="k12-math",
        texts=[text, tagged],
        steps=2,
        recipe=recipe_from_dict(r),
    )
    assert res.domain_sequences > 0
    with pytest.raises(ConvertError, match="--domain poetry: no record"):
        distill(teacher, tmp_path / "x", domain="poetry", texts=[text], steps=1)


def test_minutes_size_the_budget_from_the_measured_step(teacher, tmp_path, monkeypatch):
    from convert.distill import distill
    from convert.distill.recipe import recipe_from_dict
    from tests.fixtures.tinymodels import CORPUS_LINES

    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path / "home"))
    text = tmp_path / "general.txt"
    text.write_text("\n".join(CORPUS_LINES * 6))
    r = recipe_from_dict({"kd": {"seq_len": 32, "batch_size": 2, "top_k": 8}})
    res = distill(teacher, tmp_path / "s", texts=[text], minutes=0.05, recipe=r)
    assert res.step_seconds and res.step_seconds > 0
    assert res.steps == max(1, int(0.05 * 60 / res.step_seconds))
    with pytest.raises(ConvertError, match="--minutes 1.0: .*not with --tokens or --steps"):
        distill(teacher, tmp_path / "t", texts=[text], minutes=1.0, steps=3)
