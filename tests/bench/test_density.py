"""Density metrics, the Pareto frontier and the densing-law fit."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import density
from bench.errors import BenchError


def test_capability_is_the_mean_chance_normalised_score_of_capability_tasks():
    tasks = {
        "k12-math": {"score": 0.5, "chance": 0.0},
        "mmlu": {"score": 0.4, "chance": 0.25},  # (0.4 - 0.25) / 0.75 = 0.2
        "user:quiz": {"score": 0.2, "chance": 0.5},  # below chance: (0.2 - 0.5) / 0.5 = -0.6, kept
        "bpb": {"bpb": 1.2},  # not a capability
        "fidelity": {"skipped": "no reference"},
    }
    cap, names = density.capability(tasks)
    assert names == ["k12-math", "mmlu", "user:quiz"]
    assert cap == pytest.approx((0.5 + 0.2 - 0.6) / 3)
    assert density.capability({"bpb": {"bpb": 1.0}}) == (None, [])


def test_capability_interval_is_a_bootstrap_over_each_tasks_items():
    # 30/100 right at chance 0 and 40/80 at chance 0.25: the normal approximation of the composite
    # mean's interval, (sum of each normalised score's variance) / 4, is the bootstrap's judge.
    tasks = {
        "k12-math": {
            "score": 0.3,
            "chance": 0.0,
            "items": [{"correct": i < 30} for i in range(100)],
        },
        "mmlu": {"score": 0.5, "chance": 0.25, "items": [{"correct": i < 40} for i in range(80)]},
    }
    d = density.capability_detail(tasks)
    cap = (0.3 + (0.5 - 0.25) / 0.75) / 2
    assert d["value"] == pytest.approx(cap)
    se = math.sqrt(0.3 * 0.7 / 100 + 0.5 * 0.5 / 80 / 0.75**2) / 2
    assert d["halfwidth"] == pytest.approx(1.96 * se, rel=0.1)
    assert d["ci95"][0] < cap < d["ci95"][1]
    assert "unclipped" in d["composition"] and "k12-math, mmlu" in d["composition"]
    # a task's own interval: Wilson for independent items
    from bench import stats

    assert density.task_interval(tasks["k12-math"]) == list(stats.wilson(30, 100))


def test_density_metrics_divide_by_the_counted_compute():
    compute = {"flops_per_token": 3e8, "bytes_read_per_token": 1.5e8}
    d = density.metrics(0.3, compute, 0.02)
    assert d == {
        "per_gflop": pytest.approx(1.0),
        "per_gb_read": pytest.approx(2.0),
        "per_joule": pytest.approx(15.0),
    }
    assert density.metrics(0.3, compute, None)["per_joule"] is None


def test_pareto_front_matches_brute_force_dominance():
    rng = np.random.default_rng(1)
    pts = [(float(c), float(s)) for c, s in zip(rng.integers(1, 9, 40), rng.integers(0, 9, 40))]
    front = density.pareto_front(pts)
    for i, (c, s) in enumerate(pts):
        beaten = any(c2 <= c and s2 >= s and (c2, s2) != (c, s) for c2, s2 in pts)
        assert (i in front) == (not beaten)
    assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)
    assert density.pareto_front([(1.0, 0.1), (2.0, 0.5), (3.0, 0.4)]) == [0, 1]


def synthetic_family(
    sizes,
    a=400.0,
    alpha=0.3,
    c=1.2,
    gamma=4.0,
    l_mid=2.6,
    chance=0.0,
    noise=0.0,
    seed=0,
    tokens_per_param=None,
    b=0.0,
    beta=0.0,
):
    """A family on known laws: L = a N^-alpha + c (or + b D^-beta), S = sigmoid(gamma (l_mid - L))."""
    rng = np.random.default_rng(seed)
    members = []
    for i, n in enumerate(sizes):
        d = None if tokens_per_param is None else n * tokens_per_param[i % len(tokens_per_param)]
        loss = a * n ** (-alpha) + (c if d is None else b * d ** (-beta)) + rng.normal(0, noise)
        score = chance + (1 - chance) / (1 + math.exp(gamma * (loss - l_mid)))
        members.append(density.Member(f"m{n:.0e}", n, loss, score, None, d))
    return density.Family("synthetic", members, "total", "capability", chance)


def truth_score(n, a=400.0, alpha=0.3, c=1.2, gamma=4.0, l_mid=2.6):
    return 1 / (1 + math.exp(gamma * (a * n ** (-alpha) + c - l_mid)))


def test_fit_recovers_a_noiseless_family_and_inverts_it():
    fam = synthetic_family([2e7, 5e7, 1.5e8, 5e8, 1.5e9, 5e9])
    fit = density.fit_family(fam)
    assert fit.form == "N+c"
    assert fit.alpha == pytest.approx(0.3, abs=0.006)
    assert fit.c == pytest.approx(1.2, abs=0.02) and fit.a == pytest.approx(400.0, rel=0.1)
    assert fit.gamma == pytest.approx(4.0, rel=1e-6) and fit.l_mid == pytest.approx(2.6, rel=1e-6)
    # A 300 M model scoring what the family's 1 B model does: density about 1e9 / 3e8.
    r = density.effective_params(fit, truth_score(1e9), 3e8)
    assert r["effective_params"] == pytest.approx(1e9, rel=0.05)
    assert r["density"] == pytest.approx(1e9 / 3e8, rel=0.05)


def test_noisy_family_interval_holds_the_truth_and_the_targets_own_noise_widens_it():
    fam = synthetic_family([2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9, 5e9], noise=0.02, seed=3)
    fit = density.fit_family(fam)
    alphas = fit.boot[:, 1]
    lo, hi = np.percentile(alphas, [2.5, 97.5])
    assert lo <= 0.3 <= hi  # the known exponent is inside its bootstrap interval
    score = truth_score(1e9)
    r = density.effective_params(fit, score, 1e9)
    lo, hi = r["effective_params_95"]
    assert lo < 1e9 < hi
    wide = density.effective_params(fit, score, 1e9, score_ci95=[score - 0.05, score + 0.05])
    wlo, whi = wide["effective_params_95"]
    assert wide["includes_score_interval"] and wlo < lo and whi > hi


def test_the_two_term_form_with_training_tokens():
    # L = a N^-alpha + b D^-beta with D = N x (10 or 40): two token budgets per size pin beta.
    sizes = [3e7, 3e7, 1e8, 1e8, 3e8, 3e8, 1e9, 1e9]
    fam = synthetic_family(sizes, a=400.0, alpha=0.3, b=400.0, beta=0.25, tokens_per_param=[10, 40])
    fit = density.fit_family(fam)
    assert fit.form == "N+D"
    assert fit.alpha == pytest.approx(0.3, abs=0.03) and fit.beta == pytest.approx(0.25, abs=0.05)
    assert fit.ratio == pytest.approx(25.0)


@pytest.mark.parametrize("sizes", [[1e8], [1e8, 3e8, 1e9], [1e8, 1e8, 1e9, 1e9, 1e9]])
def test_an_underdetermined_family_is_refused(sizes):
    with pytest.raises(BenchError, match="needs at least 4 models of at least 3 sizes") as e:
        density.fit_family(synthetic_family(sizes))
    assert "\n" not in str(e.value)
    with pytest.raises(BenchError, match="needs at least 5 models"):
        density.fit_family(synthetic_family([1e8, 3e8, 1e9, 3e9], tokens_per_param=[20]))


def test_a_family_whose_scores_do_not_follow_its_loss_is_refused():
    fam = synthetic_family([1e8, 3e8, 1e9, 3e9])
    flipped = [
        density.Member(m.name, m.params, m.loss, s.score)
        for m, s in zip(fam.members, fam.members[::-1])
    ]
    with pytest.raises(BenchError, match="scores do not rise"):
        density.fit_family(density.Family("f", flipped, "total", "capability", 0.0))
    growing = [density.Member(m.name, m.params, 1 / m.loss, m.score) for m in fam.members]
    with pytest.raises(BenchError, match="loss does not fall"):
        density.fit_family(density.Family("g", growing, "total", "capability", 0.0))


SHIPPED_EXAMPLE = Path(density.__file__).parent / "data" / "densing_example.toml"


def read_by_tomllib(text: str) -> tuple[tuple, list[tuple]]:
    """The judge of `load_family`: the family file as tomllib reads it, in the documented keys
    (the family's name, example, score, chance, params_kind, loss; each model's name, params,
    loss, score, items, tokens), with the defaults FAMILY_FORMAT states for optional ones."""
    import tomllib

    d = tomllib.loads(text)
    head = (
        d["name"],
        d.get("example", False),
        d.get("score", "capability"),
        d.get("chance", 0.0),
        d.get("params_kind", "total"),
        d.get("loss", "mmlu.answer_loss"),
    )
    models = [
        (m["name"], m["params"], m["loss"], m["score"], m.get("items"), m.get("tokens"))
        for m in d["model"]
    ]
    return head, models


def as_read(fam) -> tuple[tuple, list[tuple]]:
    head = (fam.name, fam.example, fam.score, fam.chance, fam.params_kind, fam.loss)
    return head, [(m.name, m.params, m.loss, m.score, m.items, m.tokens) for m in fam.members]


@pytest.mark.parametrize("source", ["FAMILY_FORMAT", "shipped example"])
def test_family_files_load_as_tomllib_reads_them(tmp_path, source):
    # the documented format (every key given, defaults stated) and the file that
    # scripts/densing_example.py writes in it (non-default example, score and chance)
    text = density.FAMILY_FORMAT if source == "FAMILY_FORMAT" else SHIPPED_EXAMPLE.read_text()
    path = tmp_path / "family.toml"
    path.write_text(text)
    assert as_read(density.load_family(path)) == read_by_tomllib(text)


def test_the_shipped_example_uses_only_keys_the_format_documents():
    import tomllib

    doc = tomllib.loads(density.FAMILY_FORMAT)
    shipped = tomllib.loads(SHIPPED_EXAMPLE.read_text())
    assert set(shipped) == set(doc)
    # sha256: which file each row measured (provenance, not read by the fit)
    assert {k for m in shipped["model"] for k in m} - set(doc["model"][0]) == {"sha256"}


def test_jsonl_families_load_as_the_toml_form_and_bad_rows_are_named(tmp_path):
    # the same family as JSONL (a first line {"family": {...}}, then one model per line) loads
    # as its TOML form does, as tomllib reads that
    head = {"name": "j", "example": True, "score": "mmlu", "chance": 0.25}
    rows = [
        {"name": f"m{i}", "params": p, "loss": 3 - i * 0.2, "score": 0.3 + 0.1 * i}
        for i, p in enumerate([1e8, 2e8, 4e8, 8e8])
    ]
    jl = tmp_path / "family.jsonl"
    jl.write_text("".join(json.dumps(x) + "\n" for x in [{"family": head}, *rows]))
    toml = "".join(f"{k} = {json.dumps(v)}\n" for k, v in head.items()) + "".join(
        "\n[[model]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in r.items()) for r in rows
    )
    fam = density.load_family(jl)
    assert as_read(fam) == read_by_tomllib(toml)
    assert density.fit_family(fam).n == 4
    path = tmp_path / "family.toml"
    path.write_text("[[model]]\nparams = 1e8\nbpb = 1.1\nscore = 0.1\n")
    with pytest.raises(BenchError, match="conditional answer loss"):
        density.load_family(path)
    path.write_text("[[model]]\nparams = 1e8\nscore = 0.1\n")
    with pytest.raises(BenchError, match=r"\[\[model\]\] 1 lacks 'loss'"):
        density.load_family(path)


def test_densing_uses_the_params_kind_the_family_declares():
    fam = synthetic_family([5e7, 1.5e8, 5e8, 1.5e9])
    record = {
        "capability": 0.5,
        "tasks": {},
        "model": {"name": "x"},
        "compute": {"params_total": 2e8, "params_non_embedding": 1.5e8},
    }
    total = density.densing(record, fam)
    non_emb = density.densing(
        record,
        density.Family(
            *[getattr(fam, f) for f in ("name", "members")], "non_embedding", "capability", 0.0
        ),
    )
    assert total["actual_params"] == 2e8 and non_emb["actual_params"] == 1.5e8
    assert total["effective_params"] == pytest.approx(non_emb["effective_params"])
    assert total["density"] == pytest.approx(total["effective_params"] / 2e8)
    assert list(itertools.islice(total["fit"], 2)) == ["family", "models"]


def test_the_shipped_example_family_is_labelled_an_example_and_fits():
    # bench/data/densing_example.toml, written by scripts/densing_example.py from measured runs:
    # a family the fit accepts (five sizes, more models than parameters), marked as an example
    # so `bench` never presents an effective size on it as a reference.
    fam = density.load_family(SHIPPED_EXAMPLE)
    assert fam.example and fam.score == "mmlu" and fam.chance == 0.25
    sizes = sorted(m.params for m in fam.members)
    assert len(set(sizes)) == 5 and sizes[-1] > 1.5 * sizes[0]
    losses = [m.loss for m in sorted(fam.members, key=lambda m: m.params)]
    assert losses == sorted(losses, reverse=True)  # the pruned copies lose more
    fit = density.fit_family(fam)
    assert fit.n == 5 and fit.form == "N+c"
