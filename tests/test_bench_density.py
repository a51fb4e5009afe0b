"""Density metrics, the Pareto frontier and the densing-law fit."""

import itertools
import math

import numpy as np
import pytest

from bench import density
from bench.errors import BenchError


def test_capability_is_the_mean_chance_normalised_score_of_capability_tasks():
    tasks = {
        "k12-math": {"score": 0.5, "chance": 0.0},
        "mmlu": {"score": 0.4, "chance": 0.25},  # (0.4 - 0.25) / 0.75 = 0.2
        "user:quiz": {"score": 0.2, "chance": 0.5},  # below chance: 0
        "bpb": {"bpb": 1.2},  # not a capability
        "fidelity": {"skipped": "no reference"},
    }
    cap, names = density.capability(tasks)
    assert names == ["k12-math", "mmlu", "user:quiz"]
    assert cap == pytest.approx((0.5 + 0.2 + 0.0) / 3)
    assert density.capability({"bpb": {"bpb": 1.0}}) == (None, [])


def test_density_metrics_divide_by_the_counted_compute():
    compute = {"flops_per_token": 3e8, "bytes_read_per_token": 1.5e8}
    d = density.metrics(0.3, compute, 0.02)
    assert d == {"per_gflop": pytest.approx(1.0), "per_gb_read": pytest.approx(2.0),
                 "per_joule": pytest.approx(15.0)}  # fmt: skip
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


def synthetic_family(sizes, a=8.0, alpha=0.1, gamma=6.0, l_mid=1.0, chance=0.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    members = []
    for n in sizes:
        loss = a * n ** (-alpha) * math.exp(rng.normal(0, noise))
        score = chance + (1 - chance) / (1 + math.exp(gamma * (loss - l_mid)))
        members.append(density.Member(f"m{n:.0e}", n, loss, score))
    return density.Family("synthetic", members, "total", "capability", chance)


def test_fit_recovers_a_noiseless_family_and_inverts_it_exactly():
    fam = synthetic_family([5e7, 1.5e8, 5e8, 1.5e9, 5e9])
    fit = density.fit_family(fam)
    assert fit.alpha == pytest.approx(0.1, rel=1e-9)
    assert math.exp(fit.log_a) == pytest.approx(8.0, rel=1e-9)
    assert fit.gamma == pytest.approx(6.0, rel=1e-9) and fit.l_mid == pytest.approx(1.0, rel=1e-9)
    # A model of 300 M parameters scoring what the family's 1 B model would: density 1e9 / 3e8.
    loss = 8.0 * 1e9 ** -0.1
    score = 1 / (1 + math.exp(6.0 * (loss - 1.0)))
    r = density.effective_params(fit, score, 3e8)
    assert r["effective_params"] == pytest.approx(1e9, rel=1e-6)
    assert r["density"] == pytest.approx(1e9 / 3e8, rel=1e-6)


def test_noisy_family_gives_an_interval_around_the_truth():
    fam = synthetic_family([5e7, 1e8, 2e8, 5e8, 1e9, 2e9, 5e9], noise=0.01, seed=3)
    fit = density.fit_family(fam)
    loss = 8.0 * 1e9 ** -0.1
    score = 1 / (1 + math.exp(6.0 * (loss - 1.0)))
    r = density.effective_params(fit, score, 1e9)
    lo, hi = r["effective_params_68"]
    assert lo < r["effective_params"] < hi
    assert lo < 1.6e9 and hi > 0.6e9  # the truth (1e9) is near the interval
    assert 0.3 < r["density"] < 3


@pytest.mark.parametrize("sizes", [[1e8], [1e8, 1e9], [1e8, 1e8, 1e9, 1e9]])
def test_a_family_too_small_to_fit_is_refused(sizes):
    with pytest.raises(BenchError, match="needs at least 3 models of different sizes"):
        density.fit_family(synthetic_family(sizes))


def test_a_family_whose_scores_do_not_follow_its_loss_is_refused():
    fam = synthetic_family([1e8, 3e8, 1e9])
    flipped = [density.Member(m.name, m.params, m.loss, s.score)
               for m, s in zip(fam.members, fam.members[::-1])]  # fmt: skip
    with pytest.raises(BenchError, match="scores do not rise"):
        density.fit_family(density.Family("f", flipped, "total", "capability", 0.0))
    growing = [density.Member(m.name, m.params, 1 / m.loss, m.score) for m in fam.members]
    with pytest.raises(BenchError, match="loss does not fall"):
        density.fit_family(density.Family("g", growing, "total", "capability", 0.0))


def test_family_file_format_is_documented_and_loads(tmp_path):
    path = tmp_path / "family.toml"
    path.write_text(density.FAMILY_FORMAT)
    fam = density.load_family(path)
    assert fam.members[0].params == 100e6 and fam.members[0].items == 108
    body = density.FAMILY_FORMAT + "".join(
        f'\n[[model]]\nname = "m{i}"\nparams = {p}\nbpb = {b}\nscore = {s}\n'
        for i, (p, b, s) in enumerate([(3e8, 0.95, 0.3), (1e9, 0.85, 0.5)])
    )
    path.write_text(body)
    fit = density.fit_family(density.load_family(path))
    assert fit.n == 3 and fit.alpha > 0
    path.write_text('[[model]]\nparams = 1e8\nscore = 0.1\n')
    with pytest.raises(BenchError, match=r"\[\[model\]\] 1 lacks 'bpb'"):
        density.load_family(path)


def test_densing_uses_the_params_kind_the_family_declares():
    fam = synthetic_family([5e7, 1.5e8, 5e8, 1.5e9])
    record = {"capability": 0.5, "tasks": {}, "model": {"name": "x"},
              "compute": {"params_total": 2e8, "params_non_embedding": 1.5e8}}  # fmt: skip
    total = density.densing(record, fam)
    non_emb = density.densing(record, density.Family(*[getattr(fam, f) for f in (
        "name", "members")], "non_embedding", "capability", 0.0))  # fmt: skip
    assert total["actual_params"] == 2e8 and non_emb["actual_params"] == 1.5e8
    assert total["effective_params"] == pytest.approx(non_emb["effective_params"])
    assert total["density"] == pytest.approx(total["effective_params"] / 2e8)
    assert list(itertools.islice(total["fit"], 2)) == ["family", "models"]
