"""Knowledge density: capability per unit of inference compute, and the densing-law form.

Capability (one number per run): the mean over the capability tasks that ran (k12-math,
k12-robust, mmlu, user suites) of the chance-normalised score (score - chance) / (1 - chance), as
the Open LLM Leaderboard normalises (0 is guessing, 1 is every item right), but not clipped at 0:
a task below chance is information (60 MMLU items at 0.233 said nothing, and clipping hid that).
It carries a 95% bootstrap interval over each task's items, and the record says how it is
composed. bpb and fidelity are reported beside it, not in it.

Density (per run):
    per GFLOP   capability / (FLOPs per decoded token at the suite's context / 1e9)
    per GB      capability / (bytes read per decoded token / 1e9): what bounds decode on phones
                and tablets, where memory bandwidth is the ceiling
    per joule   capability / (joules per decoded token), only when energy was measured

Densing law, as arXiv 2412.04315 ("Densing Law of LLMs") defines it: a model's effective
parameter size is the size a reference family would need to reach its score; density = effective
/ actual parameters. The family (models trained alike at several sizes, given as data: parameters
N, training tokens D when known, the measured loss and score) gives two fits:
    loss estimation        L(N, D) = a * N^(-alpha) + b * D^(-beta)   (D known for every member)
                           L(N)    = a * N^(-alpha) + c               (otherwise)
    performance            S(L)    = d + (1 - d) / (1 + exp(gamma * (L - l)))
where L is the conditional loss of the answers given their prompts on the capability tasks (the
paper's loss: not the loss of generic text; ``mmlu``'s ``answer_loss``, nats per answer token) and
d the score's chance level. The power laws are fitted by least squares on L: for each exponent on a
grid the rest is linear and solved exactly, the best exponent is kept. The sigmoid is a straight
line in logit((S - d) / (1 - d)) against L (scores at the floor or ceiling moved half an item in).
Inversion: a score S gives L = l + ln((1 - d) / (S - d) - 1) / gamma, and N_eff solves L(N) = L
(with D = N times the family's median D/N in the two-term form). The 95% interval comes from 1000
residual-bootstrap refits of both laws, each inverting a score drawn from the target model's own
score interval, so the target's noise is in it. A fit with no more members than parameters (4 for
the +c form, 5 for the D form) or fewer than 3 distinct sizes is underdetermined and refused.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import stats
from bench.errors import BenchError
from bench.suites import CAPABILITY

# --- capability and density ----------------------------------------------------------------------
CAPABILITY_TASKS = CAPABILITY  # the suites say which tasks make capability, plus every user suite


def normalised(score: float, chance: float) -> float:
    """(score - chance) / (1 - chance), unclipped: a score below chance is negative, and says so."""
    if chance >= 1:
        return 0.0
    return (score - chance) / (1.0 - chance)


def capability_names(tasks: dict[str, dict]) -> list[str]:
    return sorted(
        t
        for t, r in tasks.items()
        if (t in CAPABILITY_TASKS or t.startswith("user:")) and "score" in r
    )


def composition(names: list[str]) -> str:
    return (
        f"mean over {', '.join(names)} of (score - chance) / (1 - chance), unclipped"
        if names
        else "no capability task ran"
    )


def capability(tasks: dict[str, dict]) -> tuple[float | None, list[str]]:
    """(capability, the tasks in it) from a record's task results; None if no capability task ran."""
    names = capability_names(tasks)
    if not names:
        return None, []
    return float(
        np.mean([normalised(tasks[t]["score"], tasks[t].get("chance", 0.0)) for t in names])
    ), names


def units(result: dict) -> np.ndarray | None:
    """A task's resampling units as rows (right, items): one row per item, or per cluster when
    its items carry one (k12-robust's variants of one problem are one unit: they share numbers)."""
    items = [x for x in result.get("items") or [] if x.get("scored", True)]
    if not items or "correct" not in items[0]:
        return None
    if "cluster" not in items[0]:
        return np.array([[float(bool(x["correct"])), 1.0] for x in items])
    groups: dict[str, list[float]] = {}
    for x in items:
        g = groups.setdefault(str(x["cluster"]), [0.0, 0.0])
        g[0] += bool(x["correct"])
        g[1] += 1
    return np.array(list(groups.values()))


def task_interval(result: dict) -> list[float] | None:
    """95% interval of a task's score: Wilson for independent items, a bootstrap over clusters."""
    u = units(result)
    if u is None:
        return None
    if (u[:, 1] == 1).all():
        return list(stats.wilson(int(u[:, 0].sum()), len(u)))
    lo, hi = stats.bootstrap_ci(lambda x: x[:, 0].sum() / x[:, 1].sum(), [u])
    return [lo, hi]


def capability_detail(tasks: dict[str, dict]) -> dict:
    """The composite with its bootstrap interval (each task's items resampled on their own), its
    half-width, and the smallest difference from another run it can detect (stats.mdd_from_halfwidth)."""
    cap, names = capability(tasks)
    out = {
        "value": cap,
        "tasks": names,
        "composition": composition(names),
        "ci95": None,
        "halfwidth": None,
        "mdd": None,
    }
    us = [units(tasks[t]) for t in names]
    if cap is None or any(u is None for u in us):
        return out
    chances = [tasks[t].get("chance", 0.0) for t in names]

    def stat(*arrays):
        return float(
            np.mean([normalised(a[:, 0].sum() / a[:, 1].sum(), c) for a, c in zip(arrays, chances)])
        )

    lo, hi = stats.bootstrap_ci(stat, us)
    half = (hi - lo) / 2
    out.update(ci95=[lo, hi], halfwidth=half, mdd=stats.mdd_from_halfwidth(half))
    return out


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
            for j, (c2, s2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


# --- densing law -----------------------------------------------------------------------------------
DRAWS = 1000
_ALPHAS = np.linspace(0.02, 1.5, 149)
_BETAS = np.linspace(0.02, 1.5, 60)


@dataclass(frozen=True)
class Member:
    name: str
    params: float
    loss: float
    score: float
    items: int | None = None
    tokens: float | None = None  # D, training tokens


@dataclass(frozen=True)
class Family:
    name: str
    members: list[Member]
    params_kind: str  # "total" or "non_embedding": which parameter count the family gives
    score: str  # which score: "capability" or a task name ("k12-math", "mmlu", "user:NAME")
    chance: float
    source: str = ""
    loss: str = "mmlu.answer_loss"  # which loss the members' ``loss`` is
    example: bool = False  # an illustration of the format, not a reference to rely on


FAMILY_FORMAT = """\
name = "my-family"        # models trained the same way at several sizes
example = false           # true labels an illustration of the format, not a reference
score = "capability"      # which score: "capability" (the record's), or "k12-math", "mmlu", "user:NAME"
chance = 0.0              # that score's chance level (0 for capability and k12-math; 0.25 for mmlu acc_norm)
params_kind = "total"     # or "non_embedding": which parameter count is given (and compared)
loss = "mmlu.answer_loss" # the conditional loss of the answers given their prompts (nats per token)

[[model]]
name = "family-100m"
params = 100e6
tokens = 2e12             # optional: training tokens D (all members or none: the L(N, D) form)
loss = 2.31               # that loss, as edge-llm bench records it (tasks.mmlu.answer_loss)
score = 0.12              # in [0, 1]
items = 108               # optional: items behind the score (moves 0 and 1 half an item inside)
"""


def load_family(path: str | Path) -> Family:
    """A reference family from TOML (``FAMILY_FORMAT``) or JSONL (a first line {"family": {...}}
    with the same keys, then one model per line); BenchError naming the fault."""
    import json

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchError(f"cannot read reference family {path}: {e.strerror}") from None
    if path.suffix == ".jsonl":
        data: dict = {"model": []}
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise BenchError(f"reference family {path}, line {no} is not JSON") from None
            if isinstance(obj, dict) and "family" in obj:
                data.update(obj["family"])
            else:
                data["model"].append(obj)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise BenchError(f"reference family {path} is not valid TOML: {e}") from None
    kind = data.get("params_kind", "total")
    if kind not in ("total", "non_embedding"):
        raise BenchError(f'{path}: params_kind must be "total" or "non_embedding" (got {kind!r})')
    members = []
    for i, m in enumerate(data.get("model", []), 1):
        if "bpb" in m and "loss" not in m:
            raise BenchError(
                f"{path}: [[model]] {i} gives bpb; the densing law needs the conditional "
                "answer loss (loss = tasks.mmlu.answer_loss of its record)"
            )
        try:
            mem = Member(
                str(m.get("name", f"model {i}")),
                float(m["params"]),
                float(m["loss"]),
                float(m["score"]),
                m.get("items"),
                float(m["tokens"]) if m.get("tokens") is not None else None,
            )
        except KeyError as e:
            raise BenchError(
                f"{path}: [[model]] {i} lacks {e.args[0]!r} (needs params, loss, score)"
            ) from None
        except (TypeError, ValueError):
            raise BenchError(
                f"{path}: [[model]] {i}: params, tokens, loss and score must be numbers"
            ) from None
        if (
            mem.params <= 0
            or mem.loss <= 0
            or not 0 <= mem.score <= 1
            or (mem.tokens is not None and mem.tokens <= 0)
        ):
            raise BenchError(
                f"{path}: [[model]] {i}: params, tokens and loss must be > 0, score in [0, 1]"
            )
        members.append(mem)
    if members and len({m.tokens is None for m in members}) > 1:
        raise BenchError(f"{path}: give tokens for every model or for none")
    chance = float(data.get("chance", 0.0))
    if not 0 <= chance < 1:
        raise BenchError(f"{path}: chance must be in [0, 1)")
    return Family(
        str(data.get("name", path.stem)),
        members,
        kind,
        str(data.get("score", "capability")),
        chance,
        str(path),
        str(data.get("loss", "mmlu.answer_loss")),
        bool(data.get("example", False)),
    )


@dataclass(frozen=True)
class DensingFit:
    family: str
    n: int
    form: str  # "N+c" or "N+D"
    a: float
    alpha: float
    c: float  # the +c form's constant (0 in the D form)
    b: float  # the D form's coefficient and exponent (0 in the +c form)
    beta: float
    ratio: float  # the family's median D/N (the D form's inversion)
    gamma: float
    l_mid: float
    chance: float
    rmse_loss: float
    rmse_logit: float
    boot: (
        np.ndarray
    )  # (draws, 7): a, alpha, c, b, beta, gamma, l_mid refitted on resampled residuals

    def loss(self, n_params, a=None, alpha=None, c=None, b=None, beta=None):
        a, alpha = self.a if a is None else a, self.alpha if alpha is None else alpha
        c, b = self.c if c is None else c, self.b if b is None else b
        beta = self.beta if beta is None else beta
        n = np.asarray(n_params, dtype=float)
        return a * n ** (-alpha) + (b * (self.ratio * n) ** (-beta) if self.form == "N+D" else c)

    def loss_for_params(self, n_params: float) -> float:
        return float(self.loss(n_params))

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "models": self.n,
            "form": self.form,
            "a": self.a,
            "alpha": self.alpha,
            "c": self.c,
            "b": self.b,
            "beta": self.beta,
            "tokens_per_param": self.ratio if self.form == "N+D" else None,
            "gamma": self.gamma,
            "l_mid": self.l_mid,
            "chance": self.chance,
            "rmse_loss": self.rmse_loss,
            "rmse_logit_score": self.rmse_logit,
        }


def _logit_score(score, chance: float, items: int | None = None):
    p = (np.asarray(score, dtype=float) - chance) / (1 - chance)
    eps = 0.5 / items if items else 0.005
    p = np.clip(p, eps, 1 - eps)
    return np.log(p / (1 - p))


def _fit_power(n: np.ndarray, d: np.ndarray | None, loss: np.ndarray) -> np.ndarray:
    """(a, alpha, c, b, beta) by least squares on the loss, for every row of ``loss`` (k x members)
    at once: exponents on a grid, the two coefficients linear (exact) at each; rows with no
    admissible fit (a <= 0, or b <= 0) get nan."""
    y = np.atleast_2d(loss)
    best = np.full(len(y), np.inf)
    out = np.full((len(y), 5), np.nan)
    grid = [(al, be) for al in _ALPHAS for be in (_BETAS if d is not None else [0.0])]
    for alpha, beta in grid:
        X = np.column_stack([n ** (-alpha), d ** (-beta) if d is not None else np.ones_like(n)])
        coef = y @ np.linalg.pinv(X).T  # k x 2
        sse = ((coef @ X.T - y) ** 2).sum(axis=1)
        ok = (coef[:, 0] > 0) & ((coef[:, 1] > 0) if d is not None else True) & (sse < best)
        best[ok] = sse[ok]
        if d is None:
            out[ok] = np.column_stack(
                [
                    coef[ok, 0],
                    np.full(ok.sum(), alpha),
                    coef[ok, 1],
                    np.zeros(ok.sum()),
                    np.zeros(ok.sum()),
                ]
            )
        else:
            out[ok] = np.column_stack(
                [
                    coef[ok, 0],
                    np.full(ok.sum(), alpha),
                    np.zeros(ok.sum()),
                    coef[ok, 1],
                    np.full(ok.sum(), beta),
                ]
            )
    return out


def _fit_sigmoid(loss: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    X = np.column_stack([np.ones_like(loss), loss])
    (b0, b1), *_ = np.linalg.lstsq(X, y, rcond=None)
    if b1 >= 0:
        raise BenchError(
            "the family's scores do not rise as its loss falls; a sigmoid cannot be fitted "
            "(are the scores all at chance? use a task the family can do)"
        )
    return -float(b1), float(b0) / -float(b1)  # gamma, l_mid: logit = gamma * (l_mid - L)


def fit_family(family: Family, seed: int = 0) -> DensingFit:
    """Both laws and their bootstrap; BenchError (one line) when underdetermined or not monotone."""
    m = family.members
    with_d = bool(m) and all(x.tokens is not None for x in m)
    n_par = 4 if with_d else 3
    sizes = {x.params for x in m}
    if len(m) <= n_par or len(sizes) < 3:
        raise BenchError(
            f"reference family {family.name} has {len(m)} model(s) of {len(sizes)} size(s); the "
            f"{'L = a*N^-alpha + b*D^-beta' if with_d else 'L = a*N^-alpha + c'} fit has {n_par} "
            f"parameters and needs at least {n_par + 1} models of at least 3 sizes; add models to the family"
        )
    n = np.array([x.params for x in m])
    d = np.array([x.tokens for x in m]) if with_d else None
    loss = np.array([x.loss for x in m])
    try:
        a, alpha, c, b, beta = _fit_power(n, d, loss)[0]
        if not math.isfinite(a):
            raise BenchError(
                "its loss does not fall as parameters grow; a power law cannot be fitted"
            )
        y = np.array([_logit_score(x.score, family.chance, x.items) for x in m])
        gamma, l_mid = _fit_sigmoid(loss, y)
    except BenchError as e:
        raise BenchError(f"reference family {family.name}: {e}") from None
    ratio = float(np.median(d / n)) if with_d else 0.0
    fitted_l = a * n ** (-alpha) + (b * d ** (-beta) if with_d else c)
    fitted_y = gamma * (l_mid - loss)
    rl, ry = loss - fitted_l, y - fitted_y
    # Residual bootstrap: refit both laws on the fitted values plus resampled residuals (rescaled
    # for the degrees of freedom the fit used).
    rng = np.random.default_rng(seed)
    rl_s = rl * math.sqrt(len(m) / (len(m) - n_par))
    ry_s = ry * math.sqrt(len(m) / max(1, len(m) - 2))
    powers = _fit_power(n, d, fitted_l + rl_s[rng.integers(0, len(m), (DRAWS, len(m)))])
    ys = fitted_y + ry_s[rng.integers(0, len(m), (DRAWS, len(m)))]
    X = np.column_stack([np.ones_like(loss), loss])
    sig = ys @ np.linalg.pinv(X).T  # intercept, slope per draw
    keep = np.isfinite(powers[:, 0]) & (sig[:, 1] < 0)
    boot = np.column_stack([powers, -sig[:, 1], sig[:, 0] / -sig[:, 1]])[keep]
    return DensingFit(
        family.name,
        len(m),
        "N+D" if with_d else "N+c",
        a,
        alpha,
        c,
        b,
        beta,
        ratio,
        gamma,
        l_mid,
        family.chance,
        float(np.sqrt(np.mean(rl**2))),
        float(np.sqrt(np.mean(ry**2))),
        boot,
    )


def _invert(fit: DensingFit, score: float, items, a, alpha, c, b, beta, gamma, l_mid) -> float:
    """N_eff for ``score`` under one set of parameters (nan when the loss is out of the law's reach)."""
    target = l_mid - float(_logit_score(score, fit.chance, items)) / gamma
    if fit.form == "N+c":
        if target <= c:
            return math.nan
        return float(((target - c) / a) ** (-1 / alpha))
    f = lambda ln: a * math.exp(-alpha * ln) + b * (fit.ratio * math.exp(ln)) ** (-beta) - target  # noqa: E731
    lo, hi = math.log(1e3), math.log(1e15)
    if f(lo) < 0 or f(hi) > 0:
        return math.nan
    for _ in range(100):  # the loss falls with N: bisection on log N
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return math.exp((lo + hi) / 2)


def effective_params(
    fit: DensingFit,
    score: float,
    actual: float,
    items: int | None = None,
    score_ci95: list[float] | None = None,
    seed: int = 0,
) -> dict:
    """Effective parameter size for ``score``, density = effective / ``actual``, 95% interval
    from the fits' bootstrap and the score's own interval (a normal with its half-width / 1.96)."""
    n_eff = _invert(
        fit, score, items, fit.a, fit.alpha, fit.c, fit.b, fit.beta, fit.gamma, fit.l_mid
    )
    rng = np.random.default_rng(seed)
    se = (score_ci95[1] - score_ci95[0]) / 2 / 1.959964 if score_ci95 else 0.0
    draws = []
    for row in fit.boot:
        s = float(np.clip(score + rng.normal(0, se), 0, 1)) if se else score
        draws.append(_invert(fit, s, items, *row))
    draws_a = np.array([x for x in draws if math.isfinite(x) and x > 0])
    ok = len(draws_a) > len(fit.boot) // 2
    lo, hi = np.percentile(draws_a, [2.5, 97.5]) if ok else (math.nan, math.nan)
    good = math.isfinite(n_eff) and n_eff > 0
    return {
        "effective_params": n_eff if good else None,
        "actual_params": actual,
        "density": n_eff / actual if good else None,
        "density_95": [float(lo / actual), float(hi / actual)] if ok else None,
        "effective_params_95": [float(lo), float(hi)] if ok else None,
        "includes_score_interval": bool(score_ci95),
        "loss_for_score": float(fit.l_mid - _logit_score(score, fit.chance, items) / fit.gamma),
        "note": "score at or below chance: the effective size is an upper bound"
        if score <= fit.chance
        else "",
        "fit": fit.to_dict(),
    }


def densing(record: dict, family: Family, fit: DensingFit | None = None) -> dict:
    """The densing-law columns of one result record against ``family``."""
    fit = fit or fit_family(family)
    if family.score == "capability":
        score, items, ci = record.get("capability"), None, record.get("capability_ci95")
    else:
        r = record.get("tasks", {}).get(family.score, {})
        score, items, ci = r.get("score"), r.get("n"), r.get("ci95")
    if score is None:
        raise BenchError(
            f"record of {record['model']['name']} has no {family.score!r} score to place on family "
            f"{family.name}; run a suite with that task"
        )
    c = record["compute"]
    actual = c["params_total"] if family.params_kind == "total" else c["params_non_embedding"]
    return {
        "family": family.name,
        "example_family": family.example,
        "score": family.score,
        "params_kind": family.params_kind,
        **effective_params(fit, score, actual, items, ci),
    }
