"""`edge-llm bench report`: results records as a markdown table, a Pareto plot and a history plot.

The table has one row per (model file, recipe label, suite version, projected device): the latest
run, with how many runs there were. The plot (one PNG, three panels): capability against GFLOPs
per token and against GB read per token, each with its Pareto frontier (no other model is both
cheaper and more capable) drawn and its models marked; and density (capability per GB read) of
each model over its runs, in date order.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import density
from bench.errors import BenchError

# The real exams' tasks: a score and an interval column each, when a record has them.
EXAM_TASKS = ("gsm8k", "gsm-symbolic", "arithmetic", "k12-zh", "arc-challenge", "arc-easy")


def label(r: dict) -> str:
    m = r["model"]
    rec = m.get("recipe", {})
    text = f"{m['name']} {rec.get('file_type') or m['file']}"
    if r.get("adapter"):  # `bench --adapter`: the base with a LoRA adapter applied
        text += f" + {r['adapter']['name']}"
    return f"{text} [{rec['label']}]" if rec.get("label") else text


def group_key(r: dict) -> tuple:
    m = r["model"]
    return (
        m["sha256"],
        (r.get("adapter") or {}).get("sha256", ""),
        m.get("recipe", {}).get("label", ""),
        r["suite"]["version"],
        r["device"].get("profile"),
    )


def latest(records: list[dict]) -> list[tuple[dict, int]]:
    """(latest record, number of runs) per group, in order of first appearance."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(group_key(r), []).append(r)
    return [(max(rs, key=lambda r: r["date"]), len(rs)) for rs in groups.values()]


def _f(x, fmt: str = "{:.3f}", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return fmt.format(x)


def rows(
    records: list[dict], family: density.Family | None = None, every: bool = False
) -> list[dict]:
    """One dict per table row (JSON-ready)."""
    fit = density.fit_family(family) if family else None
    chosen = [(r, 1) for r in records] if every else latest(records)
    out = []
    for r, n in chosen:
        c, d, t = r["compute"], r["density"], r["tasks"]
        e = c.get("energy", {})
        row = {
            "model": label(r),
            "sha256": r["model"]["sha256"][:12],
            "suite": r["suite"]["version"],
            "date": r["date"],
            "runs": n,
            "threads": r["device"].get("threads"),
            "capability": r.get("capability"),
            "capability_ci95": r.get("capability_ci95"),
            "capability_composition": r.get("capability_composition"),
            "capability_mdd": r.get("capability_mdd"),
            "k12_math": t.get("k12-math", {}).get("score"),
            "k12_math_ci95": t.get("k12-math", {}).get("ci95"),
            "k12_robust": t.get("k12-robust", {}).get("score"),
            "k12_robust_ci95": t.get("k12-robust", {}).get("ci95"),
            "robustness": t.get("k12-robust", {}).get("robustness"),
            **{
                f"{name.replace('-', '_')}{suffix}": t.get(name, {}).get(key)
                for name in EXAM_TASKS
                for suffix, key in (("", "score"), ("_ci95", "ci95"))
            },
            "gsm8k_strict": t.get("gsm8k", {}).get("strict_match"),
            "mmlu_acc_norm": t.get("mmlu", {}).get("acc_norm"),
            "mmlu_ci95": t.get("mmlu", {}).get("ci95"),
            "bpb": t.get("bpb", {}).get("bpb"),
            "bpb_ci95": t.get("bpb", {}).get("ci95"),
            "kld": t.get("fidelity", {}).get("mean_kld"),
            "params_total": c["params_total"],
            "params_non_embedding": c["params_non_embedding"],
            "gflops_per_token": c["flops_per_token"] / 1e9,
            "mb_read_per_token": c["bytes_read_per_token"] / 1e6,
            "kv_kb_per_token": c["kv_bytes_per_token"] / 1e3,
            "prefill_tokens_per_s": c["prefill_tokens_per_s"],
            "decode_tokens_per_s": c["decode_tokens_per_s"],
            "ttft_ms": c["ttft_s"] * 1e3,
            "peak_rss_mb": c["peak_rss_bytes"] / 1e6,
            "joules_per_token": e.get("joules_per_decode_token") if e.get("available") else None,
            "per_gflop": d.get("per_gflop"),
            "per_gb_read": d.get("per_gb_read"),
            "per_joule": d.get("per_joule"),
        }
        p = r.get("projected")
        if p:
            row.update(
                projected_device=p["device"],
                projected_decode_tokens_per_s=p["decode_tokens_per_s"],
                projected_per_joule=p["density"].get("per_joule"),
                projected_fits=p["fits"],
            )
        if fit is not None:
            try:
                dn = density.densing(r, family, fit)
                row.update(
                    effective_params=dn["effective_params"],
                    densing=dn["density"],
                    densing_95=dn["density_95"],
                )
            except BenchError:
                row.update(effective_params=None, densing=None, densing_95=None)
        out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    cols = [
        ("model", "model", "{}"),
        ("suite", "suite", "{}"),
        ("runs", "runs", "{}"),
        ("capability", "capability", "{:.3f}"),
        ("capability_ci95", "capability 95%", "{}"),
        ("k12_math", "k12-math", "{:.3f}"),
        ("k12_math_ci95", "k12-math 95%", "{}"),
        ("mmlu_acc_norm", "mmlu acc_norm", "{:.3f}"),
        ("mmlu_ci95", "mmlu 95%", "{}"),
        ("bpb", "bpb", "{:.3f}"),
        ("bpb_ci95", "bpb 95%", "{}"),
        ("gflops_per_token", "GFLOP/tok", "{:.3f}"),
        ("mb_read_per_token", "MB read/tok", "{:.1f}"),
        ("kv_kb_per_token", "KV KB/tok", "{:.1f}"),
        ("prefill_tokens_per_s", "prefill tok/s", "{:.1f}"),
        ("decode_tokens_per_s", "decode tok/s", "{:.1f}"),
        ("ttft_ms", "TTFT ms", "{:.0f}"),
        ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
        ("joules_per_token", "J/tok", "{:.3f}"),
        ("per_gflop", "cap/GFLOP", "{:.3f}"),
        ("per_gb_read", "cap/GB read", "{:.3f}"),
        ("per_joule", "cap/J", "{:.3f}"),
    ]
    if any(r.get("k12_robust") is not None for r in table):
        cols[7:7] = [
            ("k12_robust", "k12-robust", "{:.3f}"),
            ("k12_robust_ci95", "k12-robust 95%", "{}"),
            ("robustness", "robustness", "{:.2f}"),
        ]
    at = cols.index(("mmlu_acc_norm", "mmlu acc_norm", "{:.3f}"))
    for name in reversed(EXAM_TASKS):
        key = name.replace("-", "_")
        if any(r.get(key) is not None for r in table):
            extra = [(key, name, "{:.3f}"), (f"{key}_ci95", f"{name} 95%", "{}")]
            if name == "gsm8k":
                extra.insert(1, ("gsm8k_strict", "gsm8k strict", "{:.3f}"))
            cols[at:at] = extra
    if any("kld" in r and r["kld"] is not None for r in table):
        cols.insert(cols.index(("bpb_ci95", "bpb 95%", "{}")) + 1, ("kld", "KLD", "{:.4f}"))
    if any("projected_device" in r for r in table):
        cols += [
            ("projected_device", "device (projected)", "{}"),
            ("projected_decode_tokens_per_s", "decode tok/s (projected)", "{:.1f}"),
            ("projected_per_joule", "cap/J (projected)", "{:.3f}"),
        ]
    if any("densing" in r for r in table):
        cols += [
            ("effective_params", "N_eff (M)", "{:.1f}"),
            ("densing", "N_eff/N", "{:.2f}"),
            ("densing_95", "N_eff/N 95%", "{}"),
        ]
    head = "| " + " | ".join(h for _, h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in table:
        cells = []
        for key, _, fmt in cols:
            v = r.get(key)
            if key == "joules_per_token" and v is None:
                cells.append("unavailable")
            elif key == "effective_params" and v is not None:
                cells.append(f"{v / 1e6:.1f}")
            elif key.endswith("_ci95"):
                cells.append(f"{v[0]:.3f} to {v[1]:.3f}" if v else "—")
            elif key == "densing_95" and v:
                cells.append(f"{v[0]:.2f}-{v[1]:.2f}")
            else:
                cells.append(_f(v, fmt))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: list[dict], out: str | Path) -> Path:
    """Pareto and history plots in one PNG, written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(
            "--plot needs matplotlib; install it with: pip install matplotlib"
        ) from None
    from edge_llm.fsutil import atomic_path

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise BenchError(f"--plot writes a PNG; name the file .png (got {out.name})")
    if not out.parent.is_dir():
        raise BenchError(f"cannot write {out}: folder {out.parent} does not exist")
    table = [(r, label(r)) for r, _ in latest(records) if r.get("capability") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    for ax, key, xlabel in (
        (axes[0], "flops_per_token", "GFLOPs per token (at the suite's context)"),
        (axes[1], "bytes_read_per_token", "GB read per decoded token"),
    ):
        pts = [(r["compute"][key] / 1e9, r["capability"]) for r, _ in table]
        front = set(density.pareto_front(pts))
        at: dict[tuple[float, float], list[str]] = {}  # models on one point share one label
        for (x, y), (_, name) in zip(pts, table):
            at.setdefault((round(x, 9), round(y, 9)), []).append(name)
        for i, (x, y) in enumerate(pts):
            on = i in front
            ax.scatter(
                [x],
                [y],
                s=60 if on else 30,
                marker="o" if on else "x",
                color="C3" if on else "C0",
                zorder=3,
            )
        xmax = max((x for x, _ in pts), default=1) or 1
        ymax = max((y for _, y in pts), default=1) or 1
        placed: list[tuple[float, float]] = []
        for (x, y), names in sorted(at.items()):
            # Labels of nearby points step down so they do not print over each other.
            near = sum(abs(x - px) / xmax < 0.25 and abs(y - py) / ymax < 0.08 for px, py in placed)
            placed.append((x, y))
            ax.annotate(
                "\n".join(names),
                (x, y),
                textcoords="offset points",
                xytext=(6, 4 - 11 * near * len(names)),
                fontsize=7,
                va="bottom",
            )
        fr = sorted(pts[i] for i in front)
        if fr:
            xs, ys = zip(*fr)
            ax.step(xs, ys, where="post", color="C3", lw=1.2, label="Pareto frontier (red dots)")
            ax.legend(loc="lower right", fontsize=8)
        xs = [x for x, _ in pts]
        if xs and max(xs) / max(min(xs), 1e-12) > 8:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, max(xs, default=1) * 1.35)
        ax.set_ylim(0, max([y for _, y in pts], default=0) * 1.25 or 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("capability (chance-normalised)")
        ax.grid(alpha=0.3)
    axes[0].set_title("capability vs compute")
    axes[1].set_title("capability vs memory traffic")
    ax = axes[2]
    series: dict[str, list[tuple[str, float]]] = {}
    for r in sorted(records, key=lambda r: r["date"]):
        v = r["density"].get("per_gb_read")
        if v is not None:
            series.setdefault(label(r), []).append((r["date"], v))
    for name, pts in series.items():
        ax.plot(range(1, len(pts) + 1), [v for _, v in pts], marker="o", label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("run (in date order)")
    ax.set_ylabel("capability per GB read per token")
    ax.set_title("density over runs")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
