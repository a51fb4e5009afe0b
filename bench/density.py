"""Knowledge density: capability per unit of inference compute, and the densing-law form.

Capability (one number per run): the mean over the capability tasks that ran (k12-math, mmlu,
user suites) of the chance-normalised score max(0, (score - chance) / (1 - chance)), as the Open
LLM Leaderboard normalises: 0 is guessing, 1 is every item right. bpb and fidelity are reported
beside it, not in it.

Density (per run):
    per GFLOP   capability / (FLOPs per decoded token at the suite's context / 1e9)
    per GB      capability / (bytes read per decoded token / 1e9): what bounds decode on phones
                and tablets, where memory bandwidth is the ceiling
    per joule   capability / (joules per decoded token), only when energy was measured

Densing law (arXiv 2412.04315, "Densing Law of LLMs"): a model's effective parameter size is the
size a reference family would need to reach its score; density = effective / actual parameters.
The family (models trained alike at several sizes, which the user supplies with their parameters,
loss and score) gives two fits:
    loss vs parameters, a power law     L(N) = a * N^(-alpha)
    score vs loss, a sigmoid            S(L) = d + (1 - d) / (1 + exp(gamma * (L - l)))
with the loss measured as bits per byte on the same text (so vocabularies do not matter) and d the
score's chance level. Both are fitted by least squares in the space where they are straight
lines (log L against log N; logit((S - d) / (1 - d)) against L), which has a closed form and
exact parameter covariances; scores at the floor or ceiling are moved half an item inside it.
A model's score S then gives L = l + ln((1 - d) / (S - d) - 1) / gamma and N_eff = (L / a)^(-1/alpha).
Uncertainty: 4000 draws of the fitted parameters from their estimated (Gaussian) distribution,
each giving an N_eff; the 16th and 84th percentiles are reported (a 68% interval). With fewer than
3 distinct sizes, or a family whose scores do not rise as its loss falls, there is nothing to fit
and the fit is refused.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.errors import BenchError

MIN_FAMILY = 3
DRAWS = 4000


# --- capability and density ----------------------------------------------------------------------
def normalised(score: float, chance: float) -> float:
    if chance >= 1:
        return 0.0
    return max(0.0, (score - chance) / (1.0 - chance))


def capability(tasks: dict[str, dict]) -> tuple[float | None, list[str]]:
    """(capability, the tasks in it) from a record's task results; None if no capability task ran."""
    names = [
        t for t, r in tasks.items()
        if (t in ("k12-math", "mmlu") or t.startswith("user:")) and "score" in r
    ]  # fmt: skip
    if not names:
        return None, []
    return float(np.mean([normalised(tasks[t]["score"], tasks[t].get("chance", 0.0))
                          for t in names])), sorted(names)  # fmt: skip


def metrics(cap: float | None, compute: dict, joules_per_token: float | None) -> dict:
    if cap is None:
        return {"per_gflop": None, "per_gb_read": None, "per_joule": None}
    return {
        "per_gflop": cap / (compute["flops_per_token"] / 1e9),
        "per_gb_read": cap / (compute["bytes_read_per_token"] / 1e9),
        "per_joule": cap / joules_per_token if joules_per_token else None,
    }


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none has cost <= and capability >= with one
    of them strictly better. Sorted by cost."""
    front = []
    for i, (c, s) in enumerate(points):
        dominated = any(
            (c2 <= c and s2 >= s) and (c2 < c or s2 > s)
            for j, (c2, s2) in enumerate(points) if j != i
        )  # fmt: skip
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


# --- densing law -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Member:
    name: str
    params: float
    loss: float
    score: float
    items: int | None = None


@dataclass(frozen=True)
class Family:
    name: str
    members: list[Member]
    params_kind: str  # "total" or "non_embedding": which parameter count the family gives
    score: str  # which score: "capability" or a task name ("k12-math", "mmlu", "user:NAME")
    chance: float
    source: str = ""


def load_family(path: str | Path) -> Family:
    """A reference family from TOML (see ``FAMILY_FORMAT``); BenchError naming the fault."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BenchError(f"cannot read reference family {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"reference family {path} is not valid TOML: {e}") from None
    kind = data.get("params_kind", "total")
    if kind not in ("total", "non_embedding"):
        raise BenchError(f"{path}: params_kind must be \"total\" or \"non_embedding\" (got {kind!r})")
    members = []
    for i, m in enumerate(data.get("model", []), 1):
        try:
            mem = Member(str(m.get("name", f"model {i}")), float(m["params"]), float(m["bpb"]),
                         float(m["score"]), m.get("items"))  # fmt: skip
        except KeyError as e:
            raise BenchError(f"{path}: [[model]] {i} lacks {e.args[0]!r} (needs params, bpb, score)") from None
        except (TypeError, ValueError):
            raise BenchError(f"{path}: [[model]] {i}: params, bpb and score must be numbers") from None
        if mem.params <= 0 or mem.loss <= 0 or not 0 <= mem.score <= 1:
            raise BenchError(f"{path}: [[model]] {i}: params and bpb must be > 0, score in [0, 1]")
        members.append(mem)
    chance = float(data.get("chance", 0.0))
    if not 0 <= chance < 1:
        raise BenchError(f"{path}: chance must be in [0, 1)")
    return Family(str(data.get("name", path.stem)), members, kind,
                  str(data.get("score", "capability")), chance, str(path))  # fmt: skip


FAMILY_FORMAT = """\
name = "my-family"        # models trained the same way at several sizes
score = "capability"      # which score: "capability" (the record's), or "k12-math", "mmlu", "user:NAME"
chance = 0.0              # that score's chance level (0 for capability and k12-math; 0.25 for mmlu acc_norm)
params_kind = "total"     # or "non_embedding": which parameter count is given (and compared)

[[model]]
name = "family-100m"
params = 100e6
bpb = 1.10                # bits per byte on the same evaluation text (edge-llm's bpb task)
score = 0.12              # in [0, 1]
items = 108               # optional: items behind the score (moves 0 and 1 half an item inside)
"""


@dataclass(frozen=True)
class DensingFit:
    family: str
    n: int
    alpha: float
    log_a: float
    gamma: float
    l_mid: float
    chance: float
    cov_power: np.ndarray  # covariance of (log_a, -alpha)
    cov_sigmoid: np.ndarray  # covariance of (b0, b1) in logit = b0 + b1 * L
    b0: float
    b1: float
    resid_power: float
    resid_sigmoid: float

    def loss_for_params(self, n_params: float) -> float:
        return math.exp(self.log_a) * n_params ** (-self.alpha)

    def to_dict(self) -> dict:
        return {"family": self.family, "models": self.n, "alpha": self.alpha,
                "a": math.exp(self.log_a), "gamma": self.gamma, "l_mid": self.l_mid,
                "chance": self.chance, "rmse_log_loss": self.resid_power,
                "rmse_logit_score": self.resid_sigmoid}  # fmt: skip


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """y = b0 + b1 x: coefficients, their covariance (residual variance, n-2 dof), RMSE."""
    X = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ beta
    dof = max(1, len(x) - 2)
    s2 = float(r @ r) / dof
    cov = s2 * np.linalg.inv(X.T @ X)
    return beta, cov, math.sqrt(float(r @ r) / len(x))


def _logit_score(score: float, chance: float, items: int | None) -> float:
    p = (score - chance) / (1 - chance)
    eps = 0.5 / items if items else 0.005
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def fit_family(family: Family) -> DensingFit:
    """The two fits; BenchError when the family is too small or its scores do not follow its loss."""
    m = family.members
    sizes = {x.params for x in m}
    if len(m) < MIN_FAMILY or len(sizes) < MIN_FAMILY:
        raise BenchError(
            f"reference family {family.name} has {len(sizes)} distinct size(s); the densing-law fit "
            f"needs at least {MIN_FAMILY} models of different sizes (two parameters per fit plus one "
            "to estimate their uncertainty); add models to the family"
        )
    logn = np.log([x.params for x in m])
    logl = np.log([x.loss for x in m])
    beta_p, cov_p, rmse_p = _ols(logn, logl)
    alpha = -float(beta_p[1])
    if alpha <= 0:
        raise BenchError(
            f"reference family {family.name}: its loss does not fall as parameters grow "
            f"(fitted exponent {-alpha:.3f}); a power law cannot be fitted"
        )
    loss = np.array([x.loss for x in m])
    y = np.array([_logit_score(x.score, family.chance, x.items) for x in m])
    beta_s, cov_s, rmse_s = _ols(loss, y)
    if float(beta_s[1]) >= 0:
        raise BenchError(
            f"reference family {family.name}: its scores do not rise as its loss falls; a sigmoid "
            "cannot be fitted (are the scores all at chance? use a task the family can do)"
        )
    gamma = -float(beta_s[1])
    return DensingFit(family.name, len(m), alpha, float(beta_p[0]), gamma, float(beta_s[0]) / gamma,
                      family.chance, cov_p, cov_s, float(beta_s[0]), float(beta_s[1]), rmse_p,
                      rmse_s)  # fmt: skip


def _effective(log_a, neg_alpha, b0, b1, score, chance, items=None):
    """Vectorised: effective parameters for a score, from fit parameters (arrays allowed)."""
    y = _logit_score(score, chance, items)
    loss = (y - b0) / b1  # the loss the family would need for this score
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.exp((np.log(loss) - log_a) / neg_alpha), loss


def effective_params(fit: DensingFit, score: float, actual: float, items: int | None = None,
                     seed: int = 0) -> dict:  # fmt: skip
    """Effective parameter size for ``score``, density = effective / ``actual``, 68% interval."""
    n_eff, loss = _effective(fit.log_a, -fit.alpha, fit.b0, fit.b1, score, fit.chance, items)
    rng = np.random.default_rng(seed)
    p = rng.multivariate_normal([fit.log_a, -fit.alpha], fit.cov_power, DRAWS)
    s = rng.multivariate_normal([fit.b0, fit.b1], fit.cov_sigmoid, DRAWS)
    ok = (p[:, 1] < 0) & (s[:, 1] < 0)
    draws, _ = _effective(p[ok, 0], p[ok, 1], s[ok, 0], s[ok, 1], score, fit.chance, items)
    draws = draws[np.isfinite(draws) & (draws > 0)]
    lo, hi = (np.percentile(draws, [16, 84]) if len(draws) > DRAWS // 2 else (math.nan, math.nan))
    at_floor = score <= fit.chance
    return {
        "effective_params": float(n_eff) if math.isfinite(n_eff) and n_eff > 0 else None,
        "actual_params": actual,
        "density": float(n_eff / actual) if math.isfinite(n_eff) and n_eff > 0 else None,
        "density_68": [float(lo / actual), float(hi / actual)] if math.isfinite(lo) else None,
        "effective_params_68": [float(lo), float(hi)] if math.isfinite(lo) else None,
        "loss_for_score": float(loss) if math.isfinite(loss) else None,
        "note": "score at or below chance: the effective size is an upper bound" if at_floor else "",
        "fit": fit.to_dict(),
    }


def densing(record: dict, family: Family, fit: DensingFit | None = None) -> dict:
    """The densing-law columns of one result record against ``family``."""
    fit = fit or fit_family(family)
    if family.score == "capability":
        score = record.get("capability")
        items = None
    else:
        r = record.get("tasks", {}).get(family.score, {})
        score, items = r.get("score"), r.get("n")
    if score is None:
        raise BenchError(
            f"record of {record['model']['name']} has no {family.score!r} score to place on family "
            f"{family.name}; run a suite with that task"
        )
    c = record["compute"]
    actual = c["params_total"] if family.params_kind == "total" else c["params_non_embedding"]
    return {"family": family.name, "score": family.score, "params_kind": family.params_kind,
            **effective_params(fit, score, actual, items)}  # fmt: skip
