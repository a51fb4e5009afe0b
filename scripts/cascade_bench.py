"""`make bench-cascade`: what an edge-cloud cascade buys, per router signal, with intervals.

For each item (the project's k12-math items as 3-shot raw prompts, and the real exams' GSM8K
items asked as ``bench`` asks them: the chat template with 3 worked examples as earlier turns) the
device model answers through ``edge_llm.Cascade`` (greedy; its signals recorded from its own
generation) and the cloud model answers the same prompt through its OpenAI-compatible endpoint.
The cloud is started here on loopback: llama.cpp's own ``llama-server``, built once from the
vendored source of the pinned llama-cpp-python into ~/.cache/edge-llm/llama-server (outside the
repository), or ``edge-llm serve`` when that source is absent (``--engine`` says which; the
results record it). From these paired outcomes, for every router:

    curve     capability against the share of requests escalated, 0-100% (the k least
              confident answers escalated, k = 0..n), with a bootstrap interval at each 10%
    random    escalates a random share: the straight line between device-only and cloud-only
    oracle    escalates exactly the answers the device gets wrong and the cloud gets right
    APGR      RouteLLM's (arXiv 2406.18665) average performance gap recovered: the area under
              PGR(c) = (acc(c) - acc_device) / (acc_cloud - acc_device) for c from 0 to 100%
              of calls (RouteLLM's integral; the random router's is 0.5)
    CPT(x%)   RouteLLM's call-performance threshold: the least share of cloud calls whose PGR
              reaches x%

Routers: each signal of edge_llm.cascade.router (mean_logprob, min_logprob, neg_entropy, and
agreement with --k-samples) and the fitted logistic router, cross-fitted on two folds (each half
scored by a router fitted on the other half). Also: device and cloud tokens (and FLOPs, 2 x
parameters x tokens), latency p50/p95 for answers kept on the device and escalated ones, and the
paired difference between the best router and random at 30% escalated. ``--kill-test N`` runs N
items through the cascade at 50% escalation and kills the cloud halfway: every request must still
be answered.

    python -m scripts.cascade_bench smollm2-135m-instruct gemma3-270m --k12 48
    python -m scripts.cascade_bench qwen2.5-coder-0.5b qwen2.5-coder-1.5b --k12 40 --gsm8k 40 --k-samples 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench import stats
from bench.suites import answers, k12_math
from edge_llm.cascade import Cascade, CloudConfig
from edge_llm.cascade.cloud import CloudClient, CloudError
from edge_llm.cascade.router import SIGNALS, Signals, fit
from edge_llm.fsutil import atomic_path, cache_dir

LLAMA_CPP_VERSION = "0.3.36"
GRID = [i / 10 for i in range(1, 11)]  # the curve is reported at 0%, 10%, ..., 100% of calls


# --- the cloud, on loopback -------------------------------------------------------------------
def llama_server_binary(build: bool = True) -> Path | None:
    """llama.cpp's llama-server built from the vendored source (once), or None without it."""
    root = cache_dir() / "llama-server"
    binary = root / "bin" / "llama-server"
    if binary.is_file():
        return binary
    src = cache_dir() / "src" / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"
    if not build or not (src / "CMakeLists.txt").is_file():
        return None
    out = root / "build"
    print(f"building llama-server from {src} into {root} (once; minutes)", file=sys.stderr)
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_CURL=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DGGML_NATIVE=ON",
    ]
    subprocess.run(
        ["cmake", "-S", str(src), "-B", str(out), *flags], check=True, stdout=subprocess.DEVNULL
    )
    jobs = str(os.cpu_count() or 2)
    subprocess.run(
        ["cmake", "--build", str(out), "--target", "llama-server", "-j", jobs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    built = next(out.rglob("llama-server"))
    binary.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(binary) as tmp:
        shutil.copy2(built, tmp)
    return binary


def start_cloud(
    model: str, engine: str, ctx: int, threads: int, log: Path
) -> tuple[subprocess.Popen, str, str]:
    """(process, base URL ending in /v1, engine used)."""
    from edge_llm.registry import resolve

    path = resolve(model)
    binary = None
    if engine in ("auto", "llama-server"):
        try:
            binary = llama_server_binary()
        except (subprocess.CalledProcessError, OSError, StopIteration) as e:
            if engine == "llama-server":
                raise SystemExit(f"error: building llama-server failed ({e})") from None
            print(
                f"note: building llama-server failed ({e}); edge-llm serve instead", file=sys.stderr
            )
    if engine == "llama-server" and binary is None:
        raise SystemExit("error: no llama.cpp source to build llama-server from; run make install")
    f = log.open("w")
    if binary is not None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [
            str(binary),
            "-m",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-c",
            str(ctx),
            "-t",
            str(threads),
            "--alias",
            model,
            "-np",
            "1",
        ]
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        _wait(proc, lambda: _healthy(url), log)
        return proc, url + "/v1", "llama-server"
    cmd = [
        sys.executable,
        "-m",
        "edge_llm",
        "serve",
        model,
        "--port",
        "0",
        "--ctx",
        str(ctx),
        "--threads",
        str(threads),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
    found: list[str] = []

    def up() -> bool:
        m = re.search(r"at (http://\S+/v1)", log.read_text())
        if m:
            found.append(m.group(1))
        return bool(m)

    _wait(proc, up, log)
    return proc, found[0], "edge-llm serve"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(proc: subprocess.Popen, ready, log: Path, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise SystemExit(f"error: the cloud server exited: {log.read_text()[-2000:]}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("error: the cloud server did not start within 300 s")


# --- items ------------------------------------------------------------------------------------
def load_items(n_k12: int, n_gsm8k: int, shots: int) -> list[dict]:
    """Prompts with their scorers: {suite, id, prompt, stop, max_tokens, correct(text)}."""
    items = []
    for p in k12_math.generate(n_k12, seed=0):
        items.append(
            {
                "suite": "k12",
                "id": p.id,
                "prompt": k12_math.prompt(p, shots),
                "stop": ["\n"],
                "max_tokens": 32,
                "correct": lambda text, a=p.answer: answers.extract(text) == a,
                "answer_key": answers.extract,
            }
        )
    if n_gsm8k:
        from bench.suites import gsm8k

        # the real exams' GSM8K as bench asks it: the model's chat template, `shots` worked
        # examples as earlier turns, the same items (gsm8k.pick) and lm-eval's scoring
        for it in gsm8k.pick(n_gsm8k, seed=0):
            items.append(
                {
                    "suite": "gsm8k",
                    "id": f"gsm8k-{it['id']}",
                    "messages": gsm8k.conversation(it["question"], shots),
                    "stop": [],
                    "max_tokens": 256,
                    "correct": lambda text, ref=it["answer"]: gsm8k.exact_match(
                        gsm8k.flexible_extract(text), ref
                    ),
                    "answer_key": lambda text: gsm8k.normalise(gsm8k.flexible_extract(text)),
                }
            )
    return items


def answer(cascade: Cascade, it: dict, **sampling: Any) -> Any:
    """The cascade's greedy answer to an item: a chat (``messages``) or a raw prompt. Sampled
    answers (the agreement signal) agree when their final answers do, as the item's scorer reads
    them (self-consistency), not when their whole texts do: two right chains of thought are
    rarely the same text."""
    cascade.answer_key = it["answer_key"]
    kw = {"max_tokens": it["max_tokens"], "temperature": 0, "stop": it["stop"], **sampling}
    if "messages" in it:
        return cascade.chat(it["messages"], **kw)
    return cascade.generate(it["prompt"], **kw)


def item_key(it: dict) -> str:
    """What makes two items' cloud answers interchangeable: the prompt and how it is generated."""
    text = json.dumps([it.get("prompt"), it.get("messages"), it["max_tokens"], it["stop"]])
    return hashlib.sha256(text.encode()).hexdigest()


def reusable_cloud(path: Path | None, cloud: str) -> dict[str, dict]:
    """The cloud's answers of an earlier result for the same cloud model, by item key (a second
    device measured against the same cloud need not ask it again: greedy, so the same text)."""
    if path is None:
        return {}
    old = json.loads(path.read_text())
    if old.get("cloud") != cloud:
        raise SystemExit(f"error: {path} holds {old.get('cloud')}'s answers, not {cloud}'s")
    return {r["key"]: r for r in old["items"] if "key" in r}


def ask_cloud(client: CloudClient, it: dict, reuse: dict[str, dict]) -> tuple[str, float, int]:
    """(text, seconds, tokens) of the cloud's answer, from ``reuse`` when it holds the item."""
    old = reuse.get(item_key(it))
    if old is not None:
        return old["cloud_text"], old["cloud_s"], old["cloud_tokens"]
    try:
        ask = {"messages": it["messages"]} if "messages" in it else {"prompt": it["prompt"]}
        a = client.complete(
            client.body(**ask, max_tokens=it["max_tokens"], temperature=0, stop=it["stop"], seed=0)
        )
    except CloudError as e:
        raise SystemExit(f"error: the cloud failed during the benchmark: {e}") from None
    return a.text, a.seconds, a.prompt_tokens + a.completion_tokens


def run_items(
    cascade: Cascade,
    client: CloudClient,
    items: list[dict],
    k: int,
    meter: Any,
    reuse: dict[str, dict] | None = None,
) -> list[dict]:
    """Each item answered by the device (with its signals and, where the host has a meter
    (bench.energy), the joules spent while it answered) and by the cloud (or its earlier answer
    from ``reuse``: see reusable_cloud)."""
    rows = []
    for i, it in enumerate(items, 1):
        e0 = meter.read() if meter.available else None
        t0 = time.perf_counter()
        d = answer(cascade, it, seed=0)
        device_s = time.perf_counter() - t0
        joules = meter.joules(e0, meter.read()) if meter.available else None
        cloud_text, cloud_s, cloud_tokens = ask_cloud(client, it, reuse or {})
        rows.append(
            {
                "suite": it["suite"],
                "id": it["id"],
                "key": item_key(it),
                "device_text": d.text,
                "cloud_text": cloud_text,
                "device_correct": bool(it["correct"](d.text)),
                "cloud_correct": bool(it["correct"](cloud_text)),
                "signals": d.signals.to_dict(),
                "device_tokens": d.usage.prompt_tokens + d.usage.completion_tokens,
                "cloud_tokens": cloud_tokens,
                "device_s": device_s,
                "device_joules": joules,
                "cloud_s": cloud_s,
            }
        )
        if i % 10 == 0 or i == len(items):
            dev = np.mean([r["device_correct"] for r in rows])
            cl = np.mean([r["cloud_correct"] for r in rows])
            print(f"  {i}/{len(items)} items: device {dev:.2f}, cloud {cl:.2f}", file=sys.stderr)
    return rows


# --- analysis (pure) --------------------------------------------------------------------------
def curve(scores: np.ndarray, dev: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """Accuracy with the k least confident answers escalated, k = 0..n."""
    order = np.argsort(scores, kind="stable")
    gain = np.concatenate([[0], np.cumsum(cloud[order].astype(float) - dev[order].astype(float))])
    return (dev.sum() + gain) / len(dev)


def oracle_curve(dev: np.ndarray, cloud: np.ndarray) -> np.ndarray:
    """Escalating first exactly what the device gets wrong and the cloud right."""
    helped = int(np.sum(~dev.astype(bool) & cloud.astype(bool)))
    k = np.arange(len(dev) + 1)
    return (dev.sum() + np.minimum(k, helped)) / len(dev)


def at_share(acc: np.ndarray, c: float) -> float:
    """The curve (k = 0..n) at share c of calls, linear between its points."""
    n = len(acc) - 1
    return float(np.interp(c * n, np.arange(n + 1), acc))


def pgr(acc: float, weak: float, strong: float) -> float:
    return (acc - weak) / (strong - weak) if strong != weak else math.nan


def apgr(acc: np.ndarray) -> float:
    """RouteLLM's APGR: the area under PGR against the share of calls to the strong model, 0 to
    1 (exact for the piecewise-linear curve through k/n, k = 0..n: trapezoids)."""
    weak, strong = acc[0], acc[-1]
    if strong == weak:
        return math.nan
    x = np.arange(len(acc)) / (len(acc) - 1)
    y = (np.asarray(acc) - weak) / (strong - weak)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))


def cpt(acc: np.ndarray, x: float) -> float:
    """RouteLLM's CPT(x): the least share of calls (k/n) whose PGR reaches x."""
    weak, strong = acc[0], acc[-1]
    if strong <= weak:
        return math.nan
    n = len(acc) - 1
    for k in range(n + 1):
        if pgr(acc[k], weak, strong) >= x - 1e-12:
            return k / n
    return 1.0


def router_scores(rows: list[dict], name: str, k: int) -> np.ndarray:
    """Each item's confidence under router ``name`` (the logistic one cross-fitted on 2 folds)."""
    sig = [Signals(**r["signals"]) for r in rows]
    if name != "router":
        return np.array([s.get(name) for s in sig])
    features = [f for f in SIGNALS if f != "agreement" or k]
    out = np.empty(len(rows))
    folds = np.arange(len(rows)) % 2
    dev = np.array([r["device_correct"] for r in rows])
    for f in (0, 1):
        train, test = folds != f, folds == f
        if len(set(dev[train])) < 2:  # one class only: no router to fit; the mean signal
            out[test] = [s.mean_logprob for s, t in zip(sig, test) if t]
            continue
        r = fit([s for s, t in zip(sig, train) if t], dev[train], features=features)
        out[test] = [r.score(s) for s, t in zip(sig, test) if t]
    return out


def summarize(rows: list[dict], k: int, params: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """Every router's figures on ``rows``; ``params``: the device's and the cloud's parameter
    counts (FLOPs per token taken as 2 x parameters, the forward pass's multiply-adds)."""
    dev = np.array([r["device_correct"] for r in rows], dtype=bool)
    cloud = np.array([r["cloud_correct"] for r in rows], dtype=bool)
    n = len(rows)
    names = [s for s in SIGNALS if s != "agreement" or k] + ["router"]
    out: dict[str, Any] = {
        "n": n,
        "device_accuracy": float(dev.mean()),
        "cloud_accuracy": float(cloud.mean()),
        "device_ci": list(stats.wilson(int(dev.sum()), n)),
        "cloud_ci": list(stats.wilson(int(cloud.sum()), n)),
        "oracle": _stats_of(oracle_curve(dev, cloud)),
        "random": {
            "curve": [float(dev.mean() + c * (cloud.mean() - dev.mean())) for c in [0.0, *GRID]],
            "apgr": 0.5 if cloud.mean() != dev.mean() else math.nan,
        },
        "routers": {},
    }
    for name in names:
        s = router_scores(rows, name, k)
        acc = curve(s, dev, cloud)
        res = _stats_of(acc)
        data = np.column_stack([s, dev, cloud])
        res["apgr_ci"], res["apgr_undefined_draws"] = _apgr_ci(data)
        res["grid_ci"] = [
            list(
                stats.bootstrap_ci(
                    lambda d, c=c: at_share(curve(d[:, 0], d[:, 1], d[:, 2]), c), [data], draws=500
                )
            )
            for c in [0.0, *GRID]
        ]
        res["vs_random_at_30"] = _vs_random(s, dev, cloud, 0.3)
        res["of_cloud_at_50"] = _of_cloud(s, dev, cloud, 0.5)
        res["share_for_95pct_of_cloud"] = _share_for(acc, 0.95 * cloud.mean())
        res["cost_at_30"] = _costs(rows, s, 0.3)
        out["routers"][name] = res
    best = max(
        out["routers"],
        key=lambda r: out["routers"][r]["apgr"] if math.isfinite(out["routers"][r]["apgr"]) else -9,
    )
    out["best"] = best
    out["latency"] = {
        "device_p50_s": float(np.percentile([r["device_s"] for r in rows], 50)),
        "device_p95_s": float(np.percentile([r["device_s"] for r in rows], 95)),
        "escalated_p50_s": float(np.percentile([r["device_s"] + r["cloud_s"] for r in rows], 50)),
        "escalated_p95_s": float(np.percentile([r["device_s"] + r["cloud_s"] for r in rows], 95)),
    }
    out["tokens"] = {
        "device_per_item": float(np.mean([r["device_tokens"] for r in rows])),
        "cloud_per_escalated_item": float(np.mean([r["cloud_tokens"] for r in rows])),
    }
    joules = [r.get("device_joules") for r in rows]
    out["device_joules_per_item"] = (
        float(np.mean(joules)) if joules and all(j is not None for j in joules) else None
    )
    out["flops"] = {
        "device_per_item": 2 * params[0] * out["tokens"]["device_per_item"],
        "cloud_per_escalated_item": 2 * params[1] * out["tokens"]["cloud_per_escalated_item"],
    }
    return out


def _apgr_ci(data: np.ndarray, draws: int = 1000) -> tuple[list[float], int]:
    """Percentile bootstrap of APGR over items (bench.stats' seed and level). A draw whose
    device and cloud accuracies are equal has no gap to recover (APGR undefined): such draws
    are left out and counted."""
    rng = np.random.default_rng(stats.SEED)
    idx = rng.integers(0, len(data), size=(draws, len(data)))
    vals = np.array([_apgr_of(data[i]) for i in idx])
    ok = vals[np.isfinite(vals)]
    if len(ok) < draws / 2:
        return [math.nan, math.nan], int(draws - len(ok))
    return np.percentile(ok, [2.5, 97.5]).tolist(), int(draws - len(ok))


def _apgr_of(d: np.ndarray) -> float:
    return apgr(curve(d[:, 0], d[:, 1].astype(bool), d[:, 2].astype(bool)))


def _stats_of(acc: np.ndarray) -> dict[str, Any]:
    return {
        "curve": [at_share(acc, c) for c in [0.0, *GRID]],
        "apgr": apgr(acc),
        "cpt50": cpt(acc, 0.5),
        "cpt80": cpt(acc, 0.8),
    }


def _vs_random(s: np.ndarray, dev: np.ndarray, cloud: np.ndarray, share: float) -> dict[str, Any]:
    """Paired: per item, the router's outcome at ``share`` escalated against the random router's
    expected outcome (share x cloud + (1 - share) x device)."""
    routed = np.where(_escalated(s, share), cloud, dev).astype(float)
    rand = share * cloud + (1 - share) * dev
    lo, hi, p = stats.paired_bootstrap_ci(lambda a, b: b.mean() - a.mean(), [(rand, routed)])
    return {"difference": float(routed.mean() - rand.mean()), "ci95": [lo, hi], "p": p}


def _escalated(s: np.ndarray, share: float) -> np.ndarray:
    """Which items a router escalates at ``share``: the round(share x n) least confident."""
    up = np.zeros(len(s), bool)
    up[np.argsort(s, kind="stable")[: round(share * len(s))]] = True
    return up


def _of_cloud(s: np.ndarray, dev: np.ndarray, cloud: np.ndarray, share: float) -> dict[str, Any]:
    """The cascade's accuracy at ``share`` escalated as a fraction of cloud-only accuracy, with a
    paired bootstrap interval (per item: the cascade's outcome and the cloud's, resampled
    together; the routing decisions fixed; a draw in which the cloud gets nothing right has no
    fraction and is left out)."""
    routed = np.where(_escalated(s, share), cloud, dev).astype(float)
    c = cloud.astype(float)
    if c.sum() == 0:
        return {"fraction": math.nan, "ci95": [math.nan, math.nan]}

    rng = np.random.default_rng(stats.SEED)
    idx = rng.integers(0, len(c), size=(stats.BOOTSTRAP, len(c)))
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = routed[idx].mean(axis=1) / c[idx].mean(axis=1)
    lo, hi = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
    return {"fraction": float(routed.mean() / c.mean()), "ci95": [lo, hi]}


def _share_for(acc: np.ndarray, target: float) -> float:
    """The least share of requests escalated (k/n) whose accuracy reaches ``target``."""
    n = len(acc) - 1
    for k in range(n + 1):
        if acc[k] >= target - 1e-12:
            return k / n
    return math.nan


def _costs(rows: list[dict], s: np.ndarray, share: float) -> dict[str, Any]:
    up = set(np.flatnonzero(_escalated(s, share)).tolist())
    return {
        "device_tokens": int(sum(r["device_tokens"] for r in rows)),
        "cloud_tokens": int(sum(r["cloud_tokens"] for i, r in enumerate(rows) if i in up)),
        "kept_p50_s": _pct([r["device_s"] for i, r in enumerate(rows) if i not in up], 50),
        "kept_p95_s": _pct([r["device_s"] for i, r in enumerate(rows) if i not in up], 95),
        "escalated_p50_s": _pct(
            [r["device_s"] + r["cloud_s"] for i, r in enumerate(rows) if i in up], 50
        ),
        "escalated_p95_s": _pct(
            [r["device_s"] + r["cloud_s"] for i, r in enumerate(rows) if i in up], 95
        ),
    }


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def _n_params(model: str) -> int:
    from edge_llm import gguf_info
    from edge_llm.registry import resolve

    return gguf_info.read(resolve(model)).n_params


# --- the kill test ----------------------------------------------------------------------------
def kill_test(cascade: Cascade, proc: subprocess.Popen, items: list[dict]) -> dict[str, Any]:
    """Items through the cascade (half escalated by rank) with the cloud killed halfway."""
    answered, flagged, by_cloud = 0, 0, 0
    for i, it in enumerate(items):
        if i == len(items) // 2:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        r = answer(cascade, it)
        answered += bool(r.text is not None)
        flagged += r.cloud_error is not None
        by_cloud += r.answered_by == "cloud"
    return {"items": len(items), "answered": answered, "by_cloud": by_cloud, "cloud_error": flagged}


# --- report -----------------------------------------------------------------------------------
def table(name: str, s: dict[str, Any]) -> str:
    lines = [
        f"### {name}: n={s['n']}, device {s['device_accuracy']:.3f} "
        f"[{s['device_ci'][0]:.2f}, {s['device_ci'][1]:.2f}], cloud {s['cloud_accuracy']:.3f} "
        f"[{s['cloud_ci'][0]:.2f}, {s['cloud_ci'][1]:.2f}]",
        "",
        "| router | acc@10% | acc@30% | acc@50% | APGR [95% CI] | CPT(50%) | CPT(80%) | vs random @30% [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, r: dict[str, Any]) -> str:
        c = r["curve"]
        ci = r.get("apgr_ci")
        ap = f"{r['apgr']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        vs = r.get("vs_random_at_30")
        v = f"{vs['difference']:+.3f} [{vs['ci95'][0]:+.2f}, {vs['ci95'][1]:+.2f}]" if vs else ""
        f = lambda x: "" if x is None or not math.isfinite(x) else f"{x:.0%}"  # noqa: E731
        return f"| {label} | {c[1]:.3f} | {c[3]:.3f} | {c[5]:.3f} | {ap} | {f(r.get('cpt50'))} | {f(r.get('cpt80'))} | {v} |"

    for label, r in s["routers"].items():
        lines.append(row(label, r))
    lines.append(row("random", {**s["random"], "cpt50": 0.5, "cpt80": 0.8}))
    lines.append(row("oracle", s["oracle"]))
    if s["cloud_accuracy"] <= s["device_accuracy"]:
        lines += [
            "",
            "note: the cloud is not more accurate than the device on these items: there is no gap "
            "to recover, so APGR and CPT (RouteLLM's, which assume a stronger cloud) say nothing.",
        ]
    b = s["routers"][s["best"]]
    oc = b.get("of_cloud_at_50")
    if oc and math.isfinite(oc["fraction"]):
        need = b.get("share_for_95pct_of_cloud", math.nan)
        lines += [
            "",
            f"best router by APGR ({s['best']}): at 50% escalated, {oc['fraction']:.1%} of "
            f"cloud-only accuracy [{oc['ci95'][0]:.1%}, {oc['ci95'][1]:.1%}] (paired bootstrap); "
            + (
                f"95% of cloud-only accuracy reached at {need:.0%} escalated."
                if math.isfinite(need)
                else "95% of cloud-only accuracy not reached."
            ),
        ]
    lat = s["latency"]
    lines += [
        "",
        f"latency: on the device p50 {lat['device_p50_s']:.2f} s, p95 {lat['device_p95_s']:.2f} s; "
        f"escalated (device + cloud) p50 {lat['escalated_p50_s']:.2f} s, p95 {lat['escalated_p95_s']:.2f} s. "
        f"tokens: {s['tokens']['device_per_item']:.0f} per item on the device, "
        f"{s['tokens']['cloud_per_escalated_item']:.0f} per escalated item in the cloud "
        f"({s['flops']['device_per_item']:.2e} and {s['flops']['cloud_per_escalated_item']:.2e} "
        "FLOPs, 2 x parameters x tokens). device energy: "
        + (
            f"{s['device_joules_per_item']:.1f} J per item (the whole package's meter)."
            if s.get("device_joules_per_item") is not None
            else "not reported by this host."
        ),
    ]
    return "\n".join(lines)


def plot(groups: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    x = [0.0, *GRID]
    for ax, (name, s) in zip(axes[0], groups.items()):
        for label, r in s["routers"].items():
            ci = np.array(r["grid_ci"])
            line = ax.plot(x, r["curve"], marker="o", ms=3, label=f"{label} (APGR {r['apgr']:.2f})")
            ax.fill_between(x, ci[:, 0], ci[:, 1], color=line[0].get_color(), alpha=0.08)
        ax.plot(x, s["random"]["curve"], "k--", label="random")
        ax.plot(x, s["oracle"]["curve"], "k:", label="oracle")
        ax.set_xlabel("share of requests escalated to the cloud")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name} (n={s['n']})")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------
def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the items on the device and in the cloud (and the kill test): the result's rows."""
    import edge_llm

    items = load_items(args.k12, args.gsm8k, args.shots)
    device = edge_llm.load(args.device, threads=args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    # a SIGTERM (kill, a CI timeout) unwinds like Ctrl-C, so the `finally` below stops the cloud
    # server this script started instead of leaving it running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = args.out / "cascade-cloud.log"
    proc, url, engine = start_cloud(args.cloud, args.engine, 4096, args.threads, log)
    result: dict[str, Any] = {
        "device": args.device,
        "cloud": args.cloud,
        "engine": engine,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "command": " ".join(["python -m scripts.cascade_bench", *sys.argv[1:]]),
        "k_samples": args.k_samples,
        "params": [_n_params(args.device), _n_params(args.cloud)],
    }
    try:
        print(f"cloud: {args.cloud} by {engine} at {url}; device: {device.name}", file=sys.stderr)
        client = CloudClient(CloudConfig(url, args.cloud, timeout_s=600, retries=1))
        probe = Cascade(device, threshold=-math.inf, k_samples=args.k_samples)
        t0 = time.time()
        from bench.energy import detect

        meter = detect()
        result["energy_meter"] = meter.source if meter.available else f"none: {meter.reason}"
        if hasattr(meter, "start"):  # a sampled meter's thread (bench.compute does the same)
            meter.start()
        try:
            reuse = reusable_cloud(args.reuse_cloud, args.cloud)
            result["items"] = run_items(probe, client, items, args.k_samples, meter, reuse)
            result["cloud_reused"] = sum(r["key"] in reuse for r in result["items"])
        finally:
            if hasattr(meter, "stop"):
                meter.stop()
        result["seconds"] = time.time() - t0
        if args.save_router:
            save_router(result["items"], device, args.save_router)
        if args.kill_test:
            cfg = CloudConfig(url, args.cloud, timeout_s=60, retries=1, breaker_cooldown_s=600)
            c = Cascade(device, cfg, escalate_rate=0.5)
            result["kill_test"] = kill_test(c, proc, items[: args.kill_test])
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    return result


def save_router(rows: list[dict], device: Any, path: Path) -> None:
    from edge_llm.fsutil import sha256_file

    sig = [Signals(**r["signals"]) for r in rows]
    r = fit(
        sig,
        [r["device_correct"] for r in rows],
        rate=0.3,
        model_sha256=sha256_file(device.path),
        model_name=device.name,
    )
    r.save(path)


def analyze(result: dict[str, Any]) -> None:
    """The figures of every group (all items, and each suite when there are several)."""
    rows = result["items"]
    groups = {"all": rows}
    suites = sorted({r["suite"] for r in rows})
    if len(suites) > 1:
        groups |= {s: [r for r in rows if r["suite"] == s] for s in suites}
    result["groups"] = {
        name: summarize(g, result["k_samples"], tuple(result["params"]))
        for name, g in groups.items()
    }
    for name, g in result["groups"].items():
        print(table(name, g) + "\n")
    if "kill_test" in result:
        print(f"kill test: {result['kill_test']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("device", nargs="?", help="the device model (a name or .gguf)")
    ap.add_argument(
        "cloud", nargs="?", help="the cloud model (a name or .gguf), served on loopback"
    )
    ap.add_argument("--k12", type=int, default=48, help="k12-math items (default 48)")
    ap.add_argument(
        "--gsm8k", type=int, default=0, help="GSM8K items (the real exams' data: make data)"
    )
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--k-samples", type=int, default=0, help="sampled answers (agreement signal)")
    ap.add_argument("--engine", choices=("auto", "llama-server", "edge-llm"), default="auto")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument(
        "--kill-test", type=int, default=0, metavar="N", help="N items, cloud killed halfway"
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--plot", type=Path, help="write the curves as a PNG here")
    ap.add_argument("--save-router", type=Path, help="fit a router on all items and save it")
    ap.add_argument("--analyze", type=Path, help="recompute the figures of a saved result JSON")
    ap.add_argument(
        "--reuse-cloud",
        type=Path,
        metavar="RESULT",
        help="take the cloud's answers from an earlier result with the same cloud model",
    )
    args = ap.parse_args()
    if args.analyze:
        result = json.loads(args.analyze.read_text())
    elif not (args.device and args.cloud):
        ap.error("give the device and the cloud model (or --analyze FILE)")
    else:
        result = measure(args)
    analyze(result)
    out = args.analyze or args.out / f"cascade-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    if args.plot:
        title = f"device {result['device']}, cloud {result['cloud']} ({result['engine']})"
        plot(result["groups"], args.plot, title)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
