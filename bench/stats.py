"""Intervals and paired tests for benchmark scores: what lets a score rank two models.

A capability score from 48 items moves by 17 points between two models that are equally good; a
number without its interval cannot say which quantization to ship. So every score carries a 95%
interval, and two runs on the same items are compared item by item (paired), which detects
differences several times smaller than comparing two intervals does:

    wilson(k, n)              Wilson score interval of a proportion (right at 0/n and n/n, where the
                              normal approximation collapses to a point)
    bootstrap_ci(...)         percentile bootstrap over items (a statistic of several tasks resamples
                              each task's items on their own: the tasks are fixed, their items drawn)
    mcnemar(b, c)             exact two-sided McNemar test on the discordant pairs (the binomial test
                              of b against b + c at 1/2; exact at every count, so small ones too)
    paired_bootstrap_ci(...)  interval of a difference between two runs, resampling items jointly
    block_ratio_ci(num, den)  interval of sum(num) / sum(den) resampling blocks of neighbouring
                              values (per-token statistics of a text, whose neighbours correlate)
    verdict(lo, hi)           "better", "worse" or "no detectable difference"
    mdd(...)                  the minimum detectable difference at 95% confidence and 80% power

The resampling generator is seeded, so a report is the same each time it is made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal
Z80 = 0.8416212335729143  # its 80th percentile: one-sided power 80%
BOOTSTRAP = 2000
SEED = 0
BETTER, WORSE, SAME = "better", "worse", "no detectable difference"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (``(0, 1)`` when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def bootstrap_ci(
    stat: Callable[..., float],
    samples: Sequence[np.ndarray],
    *,
    draws: int = BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``stat(*samples)``, each sample (items along axis 0) resampled with
    replacement on its own; ``stat`` takes arrays and returns a number."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(s) for s in samples]
    if any(len(a) == 0 for a in arrays):
        return math.nan, math.nan
    idx = [rng.integers(0, len(a), size=(draws, len(a))) for a in arrays]
    vals = np.array([stat(*(a[i[d]] for a, i in zip(arrays, idx))) for d in range(draws)])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap_ci(
    stat: Callable[..., float],
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    draws: int = BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Interval of ``stat(b1 - a1, b2 - a2, ...)`` style differences: each pair (run A's and run B's
    per-item values on the same items, in the same order) is resampled with one index set, so the
    items' shared difficulty cancels. ``stat`` takes (a1, b1, a2, b2, ...). Returns (lo, hi, p), p
    the two-sided bootstrap p-value of the statistic being 0 (twice the smaller tail)."""
    rng = np.random.default_rng(seed)
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in pairs]
    for a, b in pairs:
        if len(a) != len(b):
            raise ValueError("paired samples must have the same length")
    if any(len(a) == 0 for a, _ in pairs):
        return math.nan, math.nan, math.nan
    idx = [rng.integers(0, len(a), size=(draws, len(a))) for a, _ in pairs]
    vals = np.empty(draws)
    for d in range(draws):
        args = []
        for (a, b), i in zip(pairs, idx):
            args += [a[i[d]], b[i[d]]]
        vals[d] = stat(*args)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    p = min(1.0, 2 * min(np.mean(vals <= 0), np.mean(vals >= 0)))
    return float(lo), float(hi), float(p)


def block_sums(values: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Per-block sums of ``values`` (``blocks[i]``: the block of value i, ids 0..n_blocks-1)."""
    return np.bincount(np.asarray(blocks), weights=np.asarray(values, dtype=np.float64))


def block_ratio_ci(
    num: np.ndarray,
    den: np.ndarray,
    *,
    draws: int = BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of ``sum(num) / sum(den)`` when blocks (``num[j]``, ``den[j]``: block
    j's sums) are drawn with replacement. With ``den`` the blocks' sizes this is the interval of a
    mean whose values come in correlated runs (the tokens of one passage): resampling single
    values would treat a run as independent evidence and give too narrow an interval. With
    ``num`` and ``den`` two models' sums over the same blocks, the interval of the ratio of their
    means is paired (one draw picks the same blocks for both)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if len(num) != len(den):
        raise ValueError("num and den need one sum per block each")
    if len(num) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(draws, len(num)))
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(vals, [tail, 100 - tail])
    return float(lo), float(hi)


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b items right only in run A, c right only in run B.

    Under "no difference" each discordant item is equally likely to go either way, so
    min(b, c) ~ Binomial(b + c, 1/2); p = 2 P(X <= min(b, c)), capped at 1 (1 when b + c is 0).
    """
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Summed in log space: exact enough at thousands of discordant items.
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(k + 1)
    ]
    m = max(logs)
    tail = math.exp(m) * sum(math.exp(x - m) for x in logs)
    return min(1.0, 2 * tail)


def paired_proportion(
    a: Sequence[bool], b: Sequence[bool], *, draws: int = BOOTSTRAP, seed: int = SEED
) -> dict:
    """Run B minus run A on the same items (``a[i]``, ``b[i]``: item i right?): the difference of
    accuracies with its paired-bootstrap interval, McNemar's exact p and the verdict (from p)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    diff = float(b.mean() - a.mean()) if len(a) else math.nan
    lo, hi, _ = paired_bootstrap_ci(
        lambda x, y: y.mean() - x.mean(), [(a, b)], draws=draws, seed=seed
    )
    p = mcnemar(only_a, only_b)
    word = SAME if p >= 0.05 else (BETTER if only_b > only_a else WORSE)
    n = len(a)
    return {
        "n": n,
        "difference": diff,
        "ci95": [lo, hi],
        "p": p,
        "test": "McNemar exact",
        "only_a": only_a,
        "only_b": only_b,
        "verdict": word,
        "mdd": mdd_paired((only_a + only_b) / n if n else math.nan, n),
    }


def verdict(lo: float, hi: float) -> str:
    """B against A from the interval of B - A: above 0 better, below 0 worse, else neither."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return SAME
    if lo > 0:
        return BETTER
    if hi < 0:
        return WORSE
    return SAME


def mdd_paired(discordant_rate: float, n: int) -> float:
    """Smallest accuracy difference a paired test on n items detects (95% two-sided, 80% power)
    when a fraction ``discordant_rate`` of the items differ between the runs: (z.975 + z.8) *
    sqrt(rate / n)."""
    if n <= 0 or not math.isfinite(discordant_rate):
        return math.nan
    return (Z95 + Z80) * math.sqrt(max(discordant_rate, 1.0 / n) / n)


def mdd_from_halfwidth(halfwidth: float) -> float:
    """Smallest difference between this run and another of the same precision whose item
    outcomes are independent of this one's (the least favourable pairing): (z.975 + z.8) *
    sqrt(2) * SE, SE = halfwidth / z.975. Correlated runs (two quantizations of one model) detect
    less than this."""
    return (Z95 + Z80) * math.sqrt(2) * halfwidth / Z95
