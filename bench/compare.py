"""`bench report --compare A B`: is run B better than run A, item by item?

Two runs of one suite answered the same items, so their difference is measured on pairs: an item
both got right (or both wrong) says nothing about which model is better, only the items where they
differ do. That is why a paired test detects differences several times smaller than two
overlapping intervals suggest, and why records keep every item's outcome (bench.store).

Per task, B minus A:
    proportion tasks with independent items (k12-math, mmlu, user suites): the difference of
        accuracies, its paired-bootstrap 95% interval, McNemar's exact p; the verdict is from p;
    k12-robust, whose variants of one problem share its numbers: a paired bootstrap over problems,
        verdict from the interval;
    bpb: B's bits per byte minus A's over the same blocks of text, paired bootstrap; lower is
        better, so a negative difference is "better";
    capability: the composite's difference, every task's units resampled jointly for A and B.
The minimum detectable difference (95% confidence, 80% power) is given from the share of items on
which the two runs disagreed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench import density, stats, store
from bench.errors import BenchError


def find(records: list[dict], key: str) -> dict:
    """A record by run id (or a unique prefix of one), else the latest run of a model whose name,
    label, file, path or command-line name is ``key``."""
    by_id = [r for r in records if r.get("run_id", "").startswith(key)]
    if len(by_id) == 1:
        return by_id[0]
    if len(by_id) > 1:
        raise BenchError(f"run id {key!r} names {len(by_id)} runs; give more of it")
    from bench.report import label

    def names(r: dict) -> set[str]:
        m = r["model"]
        return {
            label(r),
            m["name"],
            m.get("file", ""),
            m.get("path", ""),
            m.get("arg", ""),
            Path(m.get("path", "") or "x").stem,
        }

    hits = [r for r in records if key in names(r)]
    if not hits:
        raise BenchError(
            f"no run in the results matches {key!r}; give a run id or a model name "
            "from `edge-llm bench report --all`"
        )
    return max(hits, key=lambda r: r["date"])


def _paired_units(ia: list[dict], ib: list[dict]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(A's units, B's units) on the items both have, aligned; clustered when the items are."""
    ia = [
        x for x in ia if x.get("scored", True)
    ]  # items outside the task's score (gsm-symbolic's originals)
    if not ia:
        return np.zeros((0, 2)), np.zeros((0, 2)), False
    clustered = "cluster" in ia[0]
    key = (lambda x: str(x["cluster"])) if clustered else (lambda x: str(x["id"]))
    bid = {str(x["id"]): x for x in ib}
    ga: dict[str, list[float]] = {}
    gb: dict[str, list[float]] = {}
    for x in ia:
        y = bid.get(str(x["id"]))
        if y is None:
            continue
        k = key(x)
        ga.setdefault(k, [0.0, 0.0])
        gb.setdefault(k, [0.0, 0.0])
        ga[k][0] += bool(x["correct"])
        gb[k][0] += bool(y["correct"])
        ga[k][1] += 1
        gb[k][1] += 1
    ks = sorted(ga)
    return (
        np.array([ga[k] for k in ks]).reshape(-1, 2),
        np.array([gb[k] for k in ks]).reshape(-1, 2),
        clustered,
    )


def _rate(u: np.ndarray) -> float:
    return float(u[:, 0].sum() / u[:, 1].sum())


def _bootstrap(a: np.ndarray, b: np.ndarray, test: str, lower_is_better=False, **head) -> dict:
    """The paired-bootstrap record of B's rate minus A's over aligned units (blocks, problems);
    ``head``: the record's first fields (n, ...)."""
    lo, hi, p = stats.paired_bootstrap_ci(lambda x, y: _rate(y) - _rate(x), [(a, b)])
    return {
        **head,
        "a": _rate(a),
        "b": _rate(b),
        "difference": _rate(b) - _rate(a),
        "ci95": [lo, hi],
        "p": p,
        "test": test,
        "verdict": stats.verdict(-hi, -lo) if lower_is_better else stats.verdict(lo, hi),
    }


def compare_items(
    a_items: dict[str, list[dict]],
    b_items: dict[str, list[dict]],
    chances: dict[str, float],
    cap_tasks: list[str],
) -> dict:
    """Per-task and composite paired differences (B - A) from two runs' per-item results."""
    out: dict[str, dict] = {}
    pairs, used = [], []
    for task in sorted(set(a_items) & set(b_items)):
        ia, ib = a_items[task], b_items[task]
        if not ia or not ib:
            continue
        if "bits" in ia[0]:  # bpb blocks
            bid = {x["id"]: x for x in ib}
            common = [(x, bid[x["id"]]) for x in ia if x["id"] in bid]
            if len(common) < 2:
                continue
            a = np.array([[x["bits"], x["bytes"]] for x, _ in common])
            b = np.array([[y["bits"], y["bytes"]] for _, y in common])
            r = _bootstrap(
                a, b, "paired bootstrap over blocks", lower_is_better=True, n=len(common)
            )
            out[task] = {**r, "lower_is_better": True}
            continue
        if "correct" not in ia[0]:
            continue
        a, b, clustered = _paired_units(ia, ib)
        if len(a) == 0:
            continue
        if clustered:
            n_items = int(a[:, 1].sum())
            r = _bootstrap(a, b, "paired bootstrap over problems", n=n_items, clusters=len(a))
            disc = sum(bool(x["correct"]) != bool(y["correct"]) for x, y in _aligned(ia, ib))
            out[task] = {**r, "mdd": stats.mdd_paired(disc / n_items, n_items)}
        else:
            r = stats.paired_proportion(a[:, 0] > 0, b[:, 0] > 0)
            out[task] = {**r, "a": _rate(a), "b": _rate(b)}
        if task in cap_tasks:
            pairs.append((a, b))
            used.append(task)
    if used:
        cs = [chances.get(t, 0.0) for t in used]

        def stat(*arrs):
            xa = [density.normalised(_rate(arrs[2 * i]), c) for i, c in enumerate(cs)]
            xb = [density.normalised(_rate(arrs[2 * i + 1]), c) for i, c in enumerate(cs)]
            return float(np.mean(xb) - np.mean(xa))

        args = [u for pr in pairs for u in pr]
        diff = stat(*args)
        lo, hi, p = stats.paired_bootstrap_ci(stat, pairs)
        out["capability"] = {
            "tasks": used,
            "difference": diff,
            "ci95": [lo, hi],
            "p": p,
            "test": "paired bootstrap over each task's items",
            "verdict": stats.verdict(lo, hi),
            "mdd": stats.Z80 / stats.Z95 * (hi - lo) / 2 + (hi - lo) / 2
            if math.isfinite(hi - lo)
            else None,
        }
    return out


def _aligned(ia: list[dict], ib: list[dict]):
    bid = {str(x["id"]): x for x in ib}
    return [(x, bid[str(x["id"])]) for x in ia if str(x["id"]) in bid]


def compare(results: str | Path, records: list[dict], a_key: str, b_key: str) -> dict:
    a, b = find(records, a_key), find(records, b_key)
    if a["suite"]["version"] != b["suite"]["version"]:
        raise BenchError(
            f"{a_key} ran suite {a['suite']['version']} and {b_key} ran "
            f"{b['suite']['version']}; compare two runs of the same suite"
        )
    ia, ib = store.load_items(results, a), store.load_items(results, b)
    chances = {t: r.get("chance", 0.0) for t, r in a["tasks"].items()}
    cap_tasks = a.get("capability_tasks") or []
    from bench.report import label

    return {
        "a": {"run_id": a.get("run_id"), "model": label(a), "capability": a.get("capability")},
        "b": {"run_id": b.get("run_id"), "model": label(b), "capability": b.get("capability")},
        "suite": a["suite"]["version"],
        "tasks": compare_items(ia, ib, chances, cap_tasks),
    }


def markdown(c: dict) -> str:
    lines = [
        f"B = {c['b']['model']} ({c['b']['run_id']}) against A = {c['a']['model']} "
        f"({c['a']['run_id']}), suite {c['suite']}",
        "",
        "| task | items | A | B | B - A | 95% interval | p | test | verdict for B | min. detectable |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [t for t in c["tasks"] if t != "capability"] + (
        ["capability"] if "capability" in c["tasks"] else []
    )
    for t in order:
        r = c["tasks"][t]
        lo, hi = r["ci95"]
        a = "—" if "a" not in r else f"{r['a']:.3f}"
        b = "—" if "b" not in r else f"{r['b']:.3f}"
        mdd = r.get("mdd")
        n = r.get("n", "—") if t != "capability" else "+".join(r["tasks"])
        lines.append(
            f"| {t} | {n} | {a} | {b} | {r['difference']:+.3f} | {lo:+.3f} to {hi:+.3f} | "
            f"{r['p']:.3g} | {r['test']} | {r['verdict']} | "
            f"{'—' if mdd is None or not math.isfinite(mdd) else f'{mdd:.3f}'} |"
        )
    return "\n".join(lines)
