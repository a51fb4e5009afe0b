"""Deciding whether the device's answer is good enough: signals, thresholds and a fitted router.

Why its own module: the decision is plain numbers (no model, no network), so the benchmark fits
and evaluates routers from recorded answers, and the tests check thresholds against hand-computed
cases, without loading anything.

Every signal is a *confidence*: higher means the device is more likely right, and an answer is
escalated when its confidence is below the threshold.

    mean_logprob    mean log-probability of the answer's tokens under the device model
    min_logprob     the least likely token's log-probability
    neg_entropy     minus the mean entropy (nats) of the model's distribution at each token
    agreement       the share of k extra sampled answers that agree with the answer (optional)
    router          P(device right | the signals above): a logistic regression fitted on a
                    calibration split (``fit``), saved as a small JSON file (``Router.save``)
                    versioned with the device model's sha256

Thresholds (``threshold_for_rate``, ``threshold_for_accuracy``) are chosen on calibration scores;
``Router`` keeps 101 quantiles of its calibration scores, so a target escalation rate can also be
set when a router file is loaded.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_llm.errors import ConfigError
from edge_llm.fsutil import atomic_path
from edge_llm.results import TokenLogprob

SIGNALS = ("mean_logprob", "min_logprob", "neg_entropy", "agreement")
ROUTER_FORMAT = 1
L2 = 1e-2  # ridge penalty of the logistic fit (standardized features): keeps tiny splits finite


@dataclass(frozen=True)
class Signals:
    """The device's own evidence about one answer (all confidences: higher = more sure)."""

    mean_logprob: float
    min_logprob: float
    neg_entropy: float
    n_tokens: int
    agreement: float | None = None  # None unless k sampled answers were compared
    router: float | None = None  # the fitted router's P(device right), when one is used

    def get(self, name: str) -> float:
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"signal {name!r} was not measured for this answer")
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def from_logprobs(lps: Sequence[TokenLogprob], agreement: float | None = None) -> Signals:
    """Signals of an answer from the log-probabilities the device recorded while generating it
    (no second pass). An empty answer gets the lowest confidence there is (-inf): escalate it."""
    lp = np.array([t.logprob for t in lps], dtype=np.float64)
    ent = np.array([t.entropy for t in lps if t.entropy is not None], dtype=np.float64)
    if len(lp) == 0:
        return Signals(-math.inf, -math.inf, -math.inf, 0, agreement)
    return Signals(
        mean_logprob=float(lp.mean()),
        min_logprob=float(lp.min()),
        neg_entropy=-float(ent.mean()) if len(ent) else -math.inf,
        n_tokens=len(lp),
        agreement=agreement,
    )


# --- thresholds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """Escalate an answer whose confidence is below ``value``. ``rate`` and ``accuracy``: what
    that threshold gave on the calibration scores; ``reached``: whether the target was met."""

    value: float
    rate: float
    accuracy: float | None = None
    reached: bool = True


def _cuts(scores: np.ndarray) -> list[tuple[int, float]]:
    """(k, threshold) for each k lowest scores that a threshold can separate from the rest:
    -inf (escalate none), the midpoints between distinct neighbours, +inf (escalate all)."""
    s = np.sort(scores)
    out = [(0, -math.inf)]
    for k in range(1, len(s)):
        if s[k - 1] < s[k]:
            out.append((k, float((s[k - 1] + s[k]) / 2)))
    out.append((len(s), math.inf))
    return out


def _scores(scores: Sequence[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ConfigError("calibration needs at least one score")
    if np.isnan(s).any():
        raise ConfigError("calibration scores must be numbers (one is NaN)")
    return s


def threshold_for_rate(scores: Sequence[float], rate: float) -> Threshold:
    """The threshold that escalates the share ``rate`` of ``scores`` (the lowest ones).

    k = round(rate * n) answers are escalated, the threshold lying halfway between the k-th and
    the (k+1)-th smallest score (-inf for none, +inf for all). Tied scores cannot be split: then
    the nearest k that falls between distinct scores is used (the smaller one on a tie).
    """
    if not 0 <= rate <= 1:
        raise ConfigError(f"the escalation rate must be in [0, 1] (got {rate})")
    s = _scores(scores)
    want = math.floor(rate * len(s) + 0.5)
    k, value = min(_cuts(s), key=lambda c: (abs(c[0] - want), c[0]))
    return Threshold(value, k / len(s))


def threshold_for_accuracy(
    scores: Sequence[float],
    device_correct: Sequence[bool],
    target: float,
    cloud_correct: Sequence[bool] | None = None,
) -> Threshold:
    """The lowest threshold (fewest escalations) whose cascade accuracy on the calibration items
    reaches ``target``: the device's outcome for the items kept, the cloud's for those escalated
    (``cloud_correct``; when not given the cloud is counted as right). When no threshold reaches
    it, the one with the best accuracy (the fewest escalations among equals), ``reached`` False.
    """
    if not 0 <= target <= 1:
        raise ConfigError(f"the target accuracy must be in [0, 1] (got {target})")
    s = _scores(scores)
    dev = np.asarray(device_correct, dtype=bool)
    cloud = np.ones(len(s), bool) if cloud_correct is None else np.asarray(cloud_correct, bool)
    if len(dev) != len(s) or len(cloud) != len(s):
        raise ConfigError("scores and outcomes must have one entry per calibration item")
    order = np.argsort(s, kind="stable")
    # accuracy when the k lowest are escalated: cloud on order[:k], device on order[k:]
    gain = np.concatenate([[0], np.cumsum(cloud[order].astype(int) - dev[order].astype(int))])
    acc = (dev.sum() + gain) / len(s)
    best = None
    for k, value in _cuts(s):
        if acc[k] >= target - 1e-12:
            return Threshold(value, k / len(s), float(acc[k]), True)
        if best is None or acc[k] > best.accuracy:
            best = Threshold(value, k / len(s), float(acc[k]), False)
    assert best is not None
    return best


def escalates(confidence: float, threshold: float) -> bool:
    return not confidence >= threshold  # NaN escalates too


# --- the fitted router ------------------------------------------------------------------------
def _features(rows: Sequence[Signals], names: Sequence[str]) -> np.ndarray:
    x = np.array([[r.get(n) for n in names] for r in rows], dtype=np.float64)
    return np.where(np.isfinite(x), x, np.nan)


@dataclass
class Router:
    """A logistic regression P(device right | signals), fitted with numpy (Newton's method)."""

    features: list[str]
    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    threshold: float
    target: dict[str, float] = field(default_factory=dict)  # {"rate": r} or {"accuracy": a}
    quantiles: list[float] = field(default_factory=list)  # 101 of the calibration scores
    model_sha256: str = ""
    model_name: str = ""
    n_calibration: int = 0
    created: str = ""

    def score(self, s: Signals) -> float:
        """P(device right) for one answer's signals (missing or infinite ones count as the
        calibration mean's worst case: their standardized value is clipped to -5)."""
        x = _features([s], self.features)[0]
        z = (x - np.array(self.mean)) / np.array(self.std)
        z = np.clip(np.where(np.isnan(z), -5.0, z), -5.0, 5.0)
        with np.errstate(all="ignore"):  # a crafted file's huge weights: saturate, not raise
            t = float(z @ np.array(self.weights, dtype=np.float64)) + self.bias
        if math.isnan(t):
            return 0.0  # no verdict: the least confidence (escalate)
        return 1 / (1 + math.exp(-max(-500.0, min(500.0, t))))

    def threshold_for_rate(self, rate: float) -> float:
        """The threshold escalating ``rate`` of the calibration answers (from the quantiles)."""
        if not 0 <= rate <= 1:
            raise ConfigError(f"the escalation rate must be in [0, 1] (got {rate})")
        if rate == 0:
            return -math.inf
        if rate == 1:
            return math.inf
        if len(self.quantiles) != 101:
            raise ConfigError(
                "this router file keeps no calibration quantiles: give no escalation rate (its "
                "own threshold is used) or fit it again"
            )
        return float(np.interp(rate * 100, np.arange(len(self.quantiles)), self.quantiles))

    def save(self, path: str | Path) -> None:
        data = {"format": ROUTER_FORMAT, "kind": "logistic", **asdict(self)}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, model_sha256: str | None = None) -> Router:
        """A saved router; a ConfigError when it is not one or was fitted for another model."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise ConfigError(f"cannot read router {path}: {e}; fit one with fit()") from None
        if not isinstance(data, dict) or data.get("format") != ROUTER_FORMAT:
            raise ConfigError(f"{path} is not an edge-llm router file (format {ROUTER_FORMAT})")
        try:
            r = cls(**{k: v for k, v in data.items() if k not in ("format", "kind")})
            _check(r)
            for name in ("mean", "std", "weights", "quantiles"):  # JSON ints of any size
                setattr(r, name, [float(v) for v in getattr(r, name)])
            r.bias, r.threshold = float(r.bias), float(r.threshold)
            _check(r)  # again: an integer too large for a float became inf
        except (TypeError, ValueError, OverflowError) as e:
            raise ConfigError(f"router {path} is malformed ({e}); fit it again") from None
        if model_sha256 and r.model_sha256 and r.model_sha256 != model_sha256:
            raise ConfigError(
                f"router {path} was fitted for {r.model_name or 'another model'} "
                f"(sha256 {r.model_sha256[:12]}), not this model (sha256 {model_sha256[:12]}); "
                "fit one for this model"
            )
        return r


def _check(r: Router) -> None:
    n = len(r.features)
    if n == 0 or any(f not in SIGNALS for f in r.features):
        raise ValueError(f"features must be among {', '.join(SIGNALS)}")
    if not (len(r.mean) == len(r.std) == len(r.weights) == n):
        raise ValueError("mean, std and weights need one number per feature")
    numbers = [*r.mean, *r.std, *r.weights, r.bias, r.threshold, *r.quantiles]
    if not all(isinstance(v, int | float) and math.isfinite(float(v)) for v in numbers):
        raise ValueError("its numbers must be finite")
    if any(v <= 0 for v in r.std) or (r.quantiles and len(r.quantiles) != 101):
        raise ValueError("std must be positive and quantiles 101 numbers")
    if not all(isinstance(x, str) for x in (r.model_sha256, r.model_name, r.created)):
        raise ValueError("model_sha256, model_name and created must be strings")
    if not isinstance(r.target, dict) or not isinstance(r.n_calibration, int):
        raise ValueError("target must be an object and n_calibration a whole number")


def _newton(z: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Ridge-penalized logistic regression by Newton's method; returns [weights..., bias]."""
    x = np.hstack([z, np.ones((len(z), 1))])
    w = np.zeros(x.shape[1])
    pen = np.full(x.shape[1], L2 * len(z))
    pen[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + pen * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def fit(
    rows: Sequence[Signals],
    device_correct: Sequence[bool],
    *,
    features: Sequence[str] = ("mean_logprob", "min_logprob", "neg_entropy"),
    rate: float | None = None,
    accuracy: float | None = None,
    cloud_correct: Sequence[bool] | None = None,
    model_sha256: str = "",
    model_name: str = "",
) -> Router:
    """Fit a router on a calibration split: the device's answers' signals and whether each was
    right. Its threshold is set for ``rate`` (share escalated) or ``accuracy`` (cascade
    accuracy, see ``threshold_for_accuracy``); 0.3 escalated when neither is given."""
    if rate is not None and accuracy is not None:
        raise ConfigError("give a target escalation rate or a target accuracy, not both")
    y = np.asarray(device_correct, dtype=np.float64)
    if len(rows) != len(y) or len(rows) < 2:
        raise ConfigError("fitting a router needs at least 2 answers, each with its outcome")
    x = _features(rows, features)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature never measured: all NaN
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    z = np.clip(np.nan_to_num((x - mean) / std, nan=-5.0), -5.0, 5.0)
    w = _newton(z, y)
    r = Router(
        features=list(features),
        mean=mean.tolist(),
        std=std.tolist(),
        weights=w[:-1].tolist(),
        bias=float(w[-1]),
        threshold=0.0,
        model_sha256=model_sha256,
        model_name=model_name,
        n_calibration=len(rows),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    scores = [r.score(s) for s in rows]
    r.quantiles = np.percentile(scores, np.arange(101)).tolist()
    if accuracy is not None:
        t = threshold_for_accuracy(scores, device_correct, accuracy, cloud_correct)
        r.target = {"accuracy": accuracy}
    else:
        t = threshold_for_rate(scores, 0.3 if rate is None else rate)
        r.target = {"rate": 0.3 if rate is None else rate}
    r.threshold = t.value if math.isfinite(t.value) else (1.0 if t.value > 0 else 0.0)
    return r
