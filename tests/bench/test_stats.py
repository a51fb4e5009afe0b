"""bench.stats against scipy's own implementations and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import stats
from tests.fixtures.judges import scipy_ratio_interval

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(
    "k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (12, 48), (171, 600), (3, 2000)]
)
def test_wilson_equals_scipy(k, n):
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = stats.wilson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_hand_computed():
    # 0 of 10: centre = upper / 2 = (z²/20) / (1 + z²/10); z = 1.959964 -> upper 0.27753.
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.27753, abs=1e-5)


@pytest.mark.parametrize("b,c", [(0, 0), (1, 6), (6, 1), (5, 5), (3, 12), (40, 61), (300, 360)])
def test_mcnemar_equals_scipy_binomial(b, c):
    want = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert stats.mcnemar(b, c) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_mcnemar_hand_computed():
    # b=1, c=6: P(X <= 1 | n=7, 1/2) = (1 + 7) / 128; two-sided 16/128.
    assert stats.mcnemar(1, 6) == pytest.approx(0.125, abs=1e-12)


def test_bootstrap_matches_scipy_percentile():
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.3).astype(float)
    lo, hi = stats.bootstrap_ci(lambda a: a.mean(), [x], draws=4000)
    ref = scipy_stats.bootstrap(
        (x,), np.mean, n_resamples=4000, method="percentile", random_state=np.random.default_rng(2)
    ).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.01)
    assert hi == pytest.approx(ref.high, abs=0.01)
    wl, wh = stats.wilson(int(x.sum()), len(x))
    assert lo == pytest.approx(wl, abs=0.01) and hi == pytest.approx(wh, abs=0.01)


def test_composite_bootstrap_matches_the_normal_approximation():
    # The mean of two tasks' normalised scores: its variance is the sum of the tasks' variances / 4.
    rng = np.random.default_rng(3)
    a = (rng.random(500) < 0.2).astype(float)
    b = (rng.random(800) < 0.4).astype(float)
    stat = lambda x, y: (x.mean() + (y.mean() - 0.25) / 0.75) / 2  # noqa: E731
    lo, hi = stats.bootstrap_ci(stat, [a, b], draws=4000)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b) / 0.75**2) / 2
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.08)
    assert lo < stat(a, b) < hi


def test_paired_self_comparison_is_no_difference():
    x = np.random.default_rng(4).random(200) < 0.3
    r = stats.paired_proportion(x, x)
    assert r["difference"] == 0 and r["ci95"] == [0.0, 0.0] and r["p"] == 1.0
    assert r["verdict"] == stats.SAME


def test_paired_detects_what_unpaired_cannot():
    # B is right wherever A is, plus 12 more of 300 items (4 points): the intervals of the two
    # accuracies overlap, the paired test says better.
    rng = np.random.default_rng(5)
    a = rng.random(300) < 0.3
    b = a.copy()
    b[np.flatnonzero(~a)[:12]] = True
    la, ha = stats.wilson(int(a.sum()), 300)
    lb, hb = stats.wilson(int(b.sum()), 300)
    assert lb < ha  # unpaired: overlapping
    r = stats.paired_proportion(a, b)
    assert r["only_a"] == 0 and r["only_b"] == 12
    assert r["p"] == pytest.approx(scipy_stats.binomtest(0, 12, 0.5).pvalue)
    assert r["verdict"] == stats.BETTER and r["ci95"][0] > 0
    assert stats.paired_proportion(b, a)["verdict"] == stats.WORSE


def test_verdict_and_mdd():
    assert stats.verdict(0.01, 0.05) == stats.BETTER
    assert stats.verdict(-0.05, -0.01) == stats.WORSE
    assert stats.verdict(-0.01, 0.05) == stats.SAME
    # (1.96 + 0.84) * sqrt(0.1 / 1000)
    assert stats.mdd_paired(0.1, 1000) == pytest.approx(2.8016 * 0.01, rel=1e-3)
    assert stats.mdd_from_halfwidth(0.04) == pytest.approx(
        2.8016 * math.sqrt(2) * 0.04 / 1.96, rel=1e-3
    )


def test_block_ratio_matches_scipy_paired_bootstrap_of_the_ratio():
    # Blocks of unequal size: the interval of sum(num) / sum(den), blocks drawn with replacement,
    # is scipy's paired percentile bootstrap of the same ratio statistic.
    rng = np.random.default_rng(5)
    size = rng.integers(8, 17, 300).astype(float)
    num = rng.gamma(2.0, 0.05, 300) * size
    lo, hi = stats.block_ratio_ci(num, size, draws=4000)
    ref_lo, ref_hi = scipy_ratio_interval(num, size, seed=6)
    width = ref_hi - ref_lo
    assert lo == pytest.approx(ref_lo, abs=0.1 * width)
    assert hi == pytest.approx(ref_hi, abs=0.1 * width)
    assert lo < num.sum() / size.sum() < hi


def test_blocks_widen_the_interval_of_correlated_values():
    # Values that come in runs of 16 equal ones carry 1/16 of the evidence their count suggests:
    # resampled one by one the interval is about 4x too narrow; resampled by block it is the
    # normal approximation's over the 64 block means.
    rng = np.random.default_rng(7)
    means = rng.normal(1.0, 0.5, 64)
    values = np.repeat(means, 16)
    blocks = np.repeat(np.arange(64), 16)
    ones = np.ones(len(values))
    lo_b, hi_b = stats.block_ratio_ci(
        stats.block_sums(values, blocks), stats.block_sums(ones, blocks)
    )
    lo_t, hi_t = stats.block_ratio_ci(values, ones)
    se = means.std() / math.sqrt(64)
    assert (hi_b - lo_b) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert (hi_b - lo_b) / (hi_t - lo_t) == pytest.approx(4.0, rel=0.15)
    assert stats.block_sums(values, blocks) == pytest.approx(16 * means)
