"""Kill test (`make reliability`): random SIGKILLs across convert, quantize, imatrix and distill.

Why: a SIGKILL skips every cleanup, so it is the test of what a writer leaves on disk when the
machine, the OOM killer or a user stops it. For each kill this checks that the target is absent
or complete (never partial), that the sources' bytes are unchanged, and that the temporaries the
killed run left (named .NAME.edge-llm-PID-*) are gone after the next run into the same folder.

    python -m scripts.reliability --kills 50        # about 15 minutes on 2 CPUs

The source is SmolLM2 exported as an F16 Hugging Face folder (cached in the work folder); the
imatrix source is the shipped GGUF. Figures go to WORK/reliability.json and stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_llm.fsutil import DEBRIS_RE, cache_dir, find_debris

REPO = Path(__file__).resolve().parent.parent


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path.parent)).encode())
        with p.open("rb") as f:
            while block := f.read(16 << 20):
                h.update(block)
    return h.hexdigest()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_llm", *args]


def jobs(work: Path, src: Path, gguf: Path) -> dict[str, dict]:
    out = work / "out"
    return {
        "convert": {
            "cmd": cli("convert", str(src), "-o", str(out / "f16.gguf"), "--type", "F16"),
            "targets": [out / "f16.gguf"],
            "sources": [src],
        },
        "quantize": {
            "cmd": cli(
                "convert",
                str(src),
                "-o",
                str(out / "q4km.gguf"),
                "--type",
                "Q4_K_M",
                "--threads",
                "2",
            ),
            "targets": [out / "q4km.gguf"],
            "sources": [src],
        },
        "imatrix": {
            "cmd": cli(
                "imatrix",
                str(gguf),
                "-o",
                str(out / "im.gguf"),
                "--chunks",
                "3",
                "--ctx",
                "128",
                "--threads",
                "2",
            ),
            "targets": [out / "im.gguf"],
            "sources": [gguf],
        },
        "distill": {
            "cmd": cli(
                "distill",
                str(src),
                "-o",
                str(out / "student"),
                "--layers",
                "4",
                "--steps",
                "1",
                "--threads",
                "2",
                "--text",
                str(work / "text.txt"),
                "--gguf",
                str(out / "student.gguf"),
                "--type",
                "F16",
            ),
            "targets": [out / "student", out / "student.gguf"],
            "sources": [src],
        },
    }


def complete(target: Path) -> str | None:
    """None if ``target`` is absent or a complete output; else what is wrong with it."""
    if not target.exists():
        return None
    try:
        if target.is_dir():
            from convert.checkpoint import Checkpoint

            Checkpoint(target).close()
            if not (target / "distill.json").is_file():
                return "student folder without distill.json"
        elif target.name == "im.gguf":
            from convert.quant.imatrix import read

            read(target)
        else:
            from edge_llm import validate

            validate.check(target)
    except Exception as e:  # noqa: BLE001 - any failure to read it is a partial target
        return f"{type(e).__name__}: {e}"
    return None


def run(cmd: list[str], kill_after: float | None = None) -> tuple[int, float, int]:
    """Run ``cmd`` in its own process group; SIGKILL the group after ``kill_after`` s.
    Returns (exit code, seconds, pid)."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    err = p.stderr.read().decode(errors="replace")
    if kill_after is None and p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err[-2000:]}")
    return p.returncode, time.perf_counter() - t0, p.pid


def interrupt(cmd: list[str], ready, limit: float = 600) -> dict:
    """Run ``cmd``, send Ctrl-C (SIGINT) once ``ready()`` is true; the exit code and how long
    the process took to exit after the signal."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    t0 = time.perf_counter()
    while not ready() and p.poll() is None and time.perf_counter() - t0 < limit:
        time.sleep(0.05)
    if p.poll() is not None:
        return {"interrupted": False, "code": p.returncode}
    t1 = time.perf_counter()
    os.kill(p.pid, signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return {"interrupted": True, "code": p.returncode, "exit_s": round(time.perf_counter() - t1, 3)}


HOSTILE_TEMPLATES = [
    "{{ 'x' * 10**9 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set s = 'x' * 500000 %}{{ s|replace('x', s) }}",
]


def template_budgets() -> dict:
    """Seconds until each hostile chat template is refused (the budget: within 2 s)."""
    from edge_llm import chat_template
    from edge_llm.errors import InvalidModelError

    out = {}
    for t in HOSTILE_TEMPLATES:
        t0 = time.perf_counter()
        try:
            chat_template.render(t, [{"role": "user", "content": "hi"}])
            out[t[:40]] = "rendered"
        except InvalidModelError:
            out[t[:40]] = round(time.perf_counter() - t0, 3)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--work", type=Path, default=cache_dir() / "reliability")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", default="convert,quantize,imatrix,distill")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    gguf, src = prepare(work)
    all_jobs = jobs(work, src, gguf)
    names = job_names(args.jobs, all_jobs)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    hashes = {str(s): tree_hash(s) for j in names for s in all_jobs[j]["sources"]}
    duration = uncut(all_jobs, names)
    kills, partial, left, left_bytes = kill_runs(rng, all_jobs, names, duration, args.kills, out)
    ctrl_c = ctrl_c_runs(all_jobs, names, duration, out)
    print(f"Ctrl-C: {ctrl_c}", flush=True)
    templates = template_budgets()
    print(f"hostile chat templates refused after (s): {templates}", flush=True)
    debris_after_ctrl_c = [
        str(d.path) for d in find_debris([out]) if d.pid not in {k.get("pid") for k in kills}
    ]
    after, swept_after_next = next_runs(all_jobs, names, out)
    resume_dirs = sorted(p.name for p in out.iterdir() if p.name.endswith(".distill-work"))
    unchanged = {s: tree_hash(Path(s)) == h for s, h in hashes.items()}
    report = {
        "kills": len(kills),
        "killed_mid_run": sum(k["killed"] for k in kills),
        "per_job": {n: sum(k["job"] == n for k in kills) for n in names},
        "uncut_seconds": {n: round(s, 1) for n, s in duration.items()},
        "partial_targets": partial,
        "temporaries_left_by_kills": left,
        "temporaries_left_bytes": left_bytes,
        "temporaries_after_next_runs": [str(d.path) for d in after],
        "swept_by_next_runs": swept_after_next,
        "distill_resume_folders_after": resume_dirs,
        "sources_unchanged": unchanged,
        "ctrl_c": ctrl_c,
        "hostile_template_seconds": templates,
        "temporaries_left_by_ctrl_c": debris_after_ctrl_c,
        "stray_files": sorted(p.name for p in out.iterdir() if DEBRIS_RE.match(p.name)),
    }
    (work / "reliability.json").write_text(json.dumps({**report, "details": kills}, indent=2))
    print(json.dumps(report, indent=2))
    if not passed(report):
        raise SystemExit("reliability check FAILED")
    print("reliability check passed")


def passed(report: dict) -> bool:
    """No partial target, no temporary left after the next runs or by a Ctrl-C, the sources
    unchanged, every Ctrl-C answered at once with 130, every hostile template refused fast."""
    ok = not report["partial_targets"] and not report["temporaries_after_next_runs"]
    ok = ok and all(report["sources_unchanged"].values())
    ok = ok and not report["temporaries_left_by_ctrl_c"]
    ok = ok and all(
        c.get("code") == 130 and c.get("exit_s", 9) < 1.0 for c in report["ctrl_c"].values()
    )
    return ok and all(
        isinstance(v, float) and v < 2.0 for v in report["hostile_template_seconds"].values()
    )


def prepare(work: Path) -> tuple[Path, Path]:
    """(the shipped GGUF, its F16 Hugging Face export, made once), and distill's training text."""
    from edge_llm.registry import resolve

    gguf = resolve("smollm2-135m-instruct")
    src = work / "smollm2-hf"
    if not (src / "config.json").is_file():
        print(f"exporting SmolLM2 to {src} (once)", flush=True)
        run(cli("export-hf", str(gguf), "-o", str(src), "--dtype", "f16", "--force"))
    # distill's training text: 16 KB of the calibration text keeps one run under a few minutes
    calibration = (REPO / "bench" / "data" / "calibration.txt").read_text(encoding="utf-8")
    (work / "text.txt").write_text(calibration[:16000], encoding="utf-8")
    return gguf, src


def job_names(wanted: str, all_jobs: dict) -> list[str]:
    """The jobs asked for that exist (distill only where torch is installed)."""
    names = [n for n in wanted.split(",") if n in all_jobs]
    try:
        import torch  # noqa: F401
    except ImportError:
        names = [n for n in names if n != "distill"]
    return names


def clear_targets(job: dict) -> None:
    for t in job["targets"]:
        if t.is_dir():
            shutil.rmtree(t)
        elif t.exists():
            t.unlink()


def uncut(all_jobs: dict, names: list[str]) -> dict[str, float]:
    """How long each job takes uncut (the kills fall uniformly within it)."""
    duration = {}
    for n in names:
        clear_targets(all_jobs[n])
        _, secs, _ = run(all_jobs[n]["cmd"])
        duration[n] = secs
        assert all(complete(t) is None and t.exists() for t in all_jobs[n]["targets"]), n
        print(f"{n}: {secs:.1f} s uncut", flush=True)
    return duration


def kill_runs(rng: random.Random, all_jobs: dict, names, duration: dict, n_kills: int, out: Path):
    """``n_kills`` runs (the jobs in a shuffled turn) each SIGKILLed at a random time. Returns
    (each kill's record, partial targets, temporaries left, their bytes)."""
    kills, partial, left, left_bytes = [], [], 0, 0
    order = [names[i % len(names)] for i in range(n_kills)]
    rng.shuffle(order)
    for i, n in enumerate(order):
        job = all_jobs[n]
        clear_targets(job)
        at = rng.uniform(0.2, duration[n])
        code, secs, pid = run(job["cmd"], kill_after=at)
        killed = code == -signal.SIGKILL
        bad = [f"{t}: {why}" for t in job["targets"] if (why := complete(t))]
        partial += bad
        debris = [d for d in find_debris([out]) if d.pid == pid]
        left += len(debris)
        left_bytes += sum(d.bytes for d in debris)
        kills.append(
            {
                "job": n,
                "at_s": round(at, 2),
                "killed": killed,
                "debris": len(debris),
                "partial": bad,
                "pid": pid,
            }
        )
        print(
            f"[{i + 1}/{len(order)}] {n}: killed at {at:.1f} s ({'killed' if killed else f'finished, {code}'}), "
            f"{len(debris)} temporaries left, partial target: {bad or 'none'}",
            flush=True,
        )
    return kills, partial, left, left_bytes


def ctrl_c_runs(all_jobs: dict, names: list[str], duration: dict, out: Path) -> dict:
    """Ctrl-C while llama.cpp works: its quantizer (no progress callback) and the imatrix pass."""
    ctrl_c = {}
    if "quantize" in names:
        job = all_jobs["quantize"]
        clear_targets(job)

        def quantizing() -> bool:
            return any(
                (d / "quantized.gguf").exists() for d in out.glob(".q4km.gguf.edge-llm-*.work")
            )

        ctrl_c["quantize"] = interrupt(job["cmd"], quantizing)
    if "imatrix" in names:
        job = all_jobs["imatrix"]
        clear_targets(job)
        start = time.perf_counter()
        ctrl_c["imatrix"] = interrupt(
            job["cmd"], lambda: time.perf_counter() - start > 0.6 * duration["imatrix"]
        )
    return ctrl_c


def next_runs(all_jobs: dict, names: list[str], out: Path):
    """The next run of each job sweeps what the kills left in its folder. Returns (the
    temporaries still there after, how many were swept)."""
    before_next = {str(d.path) for d in find_debris([out])}
    for n in names:
        clear_targets(all_jobs[n])
        run(all_jobs[n]["cmd"])
    after = find_debris([out])
    return after, len(before_next) - len(after)


if __name__ == "__main__":
    main()
