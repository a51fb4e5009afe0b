"""One benchmark run of one model: the suite's tasks, the compute accounting, density, a record.

Order of work (one process, one model at a time):
1. the file: SHA-256, header, counted compute (bench.compute.accounting) at the suite's context;
2. the runtime phase: peak RSS reset, edge_llm loads the model (CPU, threads following the
   host's load unless given), speed measured, generation tasks run (k12-math, k12-robust; through
   the model's chat template when it has one, unless prompt="raw"); peak RSS read;
3. the scoring phase: a scoring context (bench.lm.Scorer, logits at every position) for mmlu and
   bpb, then user suites, then fidelity against the reference;
4. capability, density, the projection onto --device, the record.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from bench import compute, density
from bench import suites as S
from bench.store import SCHEMA
from edge_llm.fsutil import sha256_file

GEN_TASKS = ("k12-math", "k12-robust", "gsm8k", "gsm-symbolic", "arithmetic", "k12-zh")
SCORE_TASKS = ("mmlu", "arc-challenge", "arc-easy", "bpb")
SCORE_CTX = 2048  # the longest MMLU question with its longest option is ~1,200 tokens


class Progress:
    """Progress on stderr: one line rewritten on a terminal, else a line at 0, 25, 50, 75, 100%."""

    def __init__(self, label: str = "", stream=None, quiet: bool = False):
        self.label, self.stream, self.quiet = label, stream or sys.stderr, quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._quarters: dict[str, int] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        if self.quiet:
            return
        msg = f"{self.label}{task} {done}/{total}"
        if self.tty:
            end = "\n" if done >= total else ""
            print(f"\r\033[K{msg}", end=end, file=self.stream, flush=True)
        else:  # at 0, at each quarter crossed (however far one call jumps), at the end
            quarter = 4 * done // max(total, 1)
            last = self._quarters.get(task, -1)
            if done == 0 or done >= total or quarter > last:
                self._quarters[task] = quarter
                print(msg, file=self.stream, flush=True)

    def note(self, msg: str) -> None:
        if not self.quiet:
            print(f"{self.label}{msg}", file=self.stream, flush=True)


class Context:
    """What a task gets: the model path, lazily loaded runtime model and scorer, progress."""

    def __init__(
        self,
        path: Path,
        base: Path,
        *,
        threads: int | None,
        reference: Path | None,
        n_ctx: int,
        progress: Progress,
        prompt: str = "auto",
        adapter: Path | None = None,
    ):
        self.path, self.base, self.threads, self.reference = path, base, threads, reference
        self.n_ctx, self._progress, self.prompt = n_ctx, progress, prompt
        # a LoRA adapter every task runs with (`bench --adapter`): the runtime model, the scorer
        # and the batched generator all apply it
        self.adapters = [(adapter, 1.0)] if adapter is not None else []
        self._model = self._scorer = None

    def model(self):
        if self._model is None:
            import edge_llm

            self._model = edge_llm.load(
                self.path,
                device="cpu",
                n_ctx=self.n_ctx,
                threads=self.threads,
                adapters={"adapter": self.adapters[0][0]} if self.adapters else None,
            )
            self._model.use("adapter" if self.adapters else None)
        return self._model

    def scorer(self):
        if self._scorer is None:
            from bench.lm import Scorer

            self._scorer = Scorer(
                self.path,
                n_ctx=max(self.n_ctx, SCORE_CTX),
                threads=self.threads,
                adapters=self.adapters,
            )
        return self._scorer

    def progress(self, task: str, done: int, total: int) -> None:
        self._progress(task, done, total)

    def close_model(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def close(self) -> None:
        self.close_model()
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None


def versions() -> dict:
    import edge_llm
    from edge_llm.llama.binding import system_info

    out = {
        "edge_llm": edge_llm.__version__,
        "llama_cpp_python": importlib.metadata.version("llama_cpp_python"),
        "llama_cpp_system": system_info().strip(),
        "python": platform.python_version(),
    }
    try:  # the checkout's commit, when edge-llm runs from one
        root = Path(edge_llm.__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if rev.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            out["edge_llm_git"] = rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def recipe(info, label: str | None) -> dict:
    s = info.summary()
    total = sum(r["bytes"] for r in s["types"].values()) or 1
    return {
        "file_type": s["file_type"],
        "bits_per_weight": round(info.bits_per_weight, 4),
        "types": {t: round(r["bytes"] / total, 4) for t, r in s["types"].items()},
        "quantize": {k: v for k, v in info.metadata.items() if k.startswith("quantize.")},
        "label": label or "",
    }


def answers_digest(result: dict) -> str | None:
    """A short hash of a task's per-item outcomes: equal digests, identical answers."""
    items = result.get("items")
    if not items:
        return None
    keys = ("id", "row", "correct", "pred", "pred_norm", "extracted")
    rows = [[it.get(k) for k in keys] for it in items]
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def project(path: Path, info, profile_name: str, cap: float | None, context: int) -> dict:
    """Projected speed and density on a device profile (edge_llm.devices.plan), labelled so."""
    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import get

    profile = get(profile_name)
    p = planning.plan(path, profile)
    c = compute.accounting(info, context, p.config.kv_type)
    joules = profile.power_w / p.decode_tokens_per_s if p.decode_tokens_per_s > 0 else None
    return {
        "label": "projected",
        "device": profile.name,
        "description": profile.description,
        "basis": p.speed_basis,
        "fits": p.fits,
        "memory_bytes": p.memory.total,
        "budget_bytes": p.budget,
        "config": asdict(p.config),
        "decode_tokens_per_s": p.decode_tokens_per_s,
        "prefill_tokens_per_s": p.prefill_tokens_per_s,
        "joules_per_token": joules,
        "joules_basis": f"power_w {profile.power_w} W of the profile / projected decode tokens/s",
        "bytes_read_per_token": c["bytes_read_per_token"],
        "density": density.metrics(cap, c, joules),
    }


def run(
    model: str,
    suite: S.Suite,
    *,
    threads: int | None = None,
    device: str | None = None,
    reference: str | None = None,
    recipe_label: str | None = None,
    family: density.Family | None = None,
    progress: Progress | None = None,
    keep_items: bool = True,
    prompt: str = "auto",
    reference_is: str | None = None,
    adapter: str | None = None,
) -> dict:
    """Benchmark one model with ``suite``; returns the record (``items`` per task if keep_items).
    ``adapter``: a LoRA adapter GGUF applied throughout; its FLOPs and bytes join the compute."""
    from edge_llm.devices import CpuLoad
    from edge_llm.registry import model_name

    clock = compute.Stopwatch()
    progress = progress or Progress()
    path, info, ref_path = _preflight(model, suite, reference, device)
    progress.label = (
        f"{model_name(path, info.metadata)} {recipe(info, None)['file_type'] or path.stem}: "
    )
    progress.note(f"{path} ({info.file_size / 1e6:.0f} MB), suite {suite.name}")
    digest = sha256_file(path)
    counted = compute.accounting(info, suite.context)
    adapter_rec = None
    if adapter is not None:
        adapter_rec, counted = _with_adapter(adapter, info, counted, progress)
    load = CpuLoad()
    load.others_busy(wait=True)
    speed_need = suite.speed["prompt_tokens"] + suite.speed["gen_tokens"] + 16
    ctx = Context(
        path,
        suite.base,
        threads=threads,
        reference=ref_path,
        n_ctx=max(1024, speed_need),
        progress=progress,
        prompt=prompt,
        adapter=Path(adapter) if adapter is not None else None,
    )
    timing, tasks, speed, peak, rss_reset = _run_tasks(ctx, suite, progress)
    busy = load.others_busy(wait=False)
    _annotate(tasks, progress)
    _add_runtime(counted, speed, peak, rss_reset)
    record = _record(
        model=model,
        suite=suite,
        path=path,
        info=info,
        digest=digest,
        recipe_label=recipe_label,
        adapter=adapter_rec,
        tasks=tasks,
        speed=speed,
        busy=busy,
        device=device,
        counted=counted,
        reference=(ref_path, reference_is),
        timing=timing,
        clock=clock,
    )
    if family is not None:
        from bench.errors import BenchError

        try:
            record["densing"] = density.densing(record, family)
        except BenchError as e:
            record["densing"] = {"family": family.name, "error": str(e)}
    if not keep_items:
        strip_items(record)
    return record


def _preflight(model: str, suite: S.Suite, reference: str | None, device: str | None):
    """(path, header, reference path): what would fail the run, refused before it starts."""
    from edge_llm import validate
    from edge_llm.registry import looks_like_path, resolve

    path = resolve(model)
    info = validate.check(path)  # what would make llama.cpp abort, refused up front
    if looks_like_path(model):  # a file edge-llm did not install: let a child crash on it first
        validate.probe(path)
    ref_path = resolve(reference) if reference else None
    if device:  # a bad profile fails now, not after the run
        from edge_llm.devices.profile import get

        get(device)
    for task in suite.tasks:
        S.check_options(suite, task, suite.tasks[task])
    return path, info, ref_path


def _with_adapter(adapter: str, info, counted: dict, progress: Progress):
    """(the adapter's record, the compute with its FLOPs and bytes); a wrong adapter is refused
    now, not after the run."""
    from edge_llm import adapters

    a = adapters.check(adapter, info)
    rec = {**a.summary(), "sha256": sha256_file(a.path)}
    progress.label = f"{progress.label[:-2]} + {a.name}: "
    return rec, compute.with_adapter(counted, a)


def _timed(timing: dict, key: str, fn, *args):
    """``fn(*args)``, its wall seconds recorded as ``timing[key]``."""
    t0 = time.perf_counter()
    out = fn(*args)
    timing[key] = round(time.perf_counter() - t0, 3)
    return out


def _run_tasks(ctx: Context, suite: S.Suite, progress: Progress):
    """The runtime phase (load, speed, generation tasks; peak RSS), then the scoring phase.
    Returns (timing, task results, speed, peak RSS, whether the peak was reset first)."""
    timing, tasks = {}, {}
    try:
        # --- the runtime phase: what an app holds and does ------------------------------------
        rss_reset = compute.reset_peak_rss()
        _timed(timing, "load_s", ctx.model)
        progress("speed", 0, suite.speed["reps"])
        speed = _timed(timing, "speed_s", lambda: compute.measure_speed(ctx.model(), **suite.speed))
        progress("speed", suite.speed["reps"], suite.speed["reps"])
        for task in GEN_TASKS:
            if task in suite.tasks:
                tasks[task] = _timed(timing, f"{task}_s", S.run_task, suite, task, ctx)
        peak = compute.peak_rss()
        ctx.close_model()
        # --- the scoring phase ------------------------------------------------------------------
        for task in SCORE_TASKS:
            if task in suite.tasks:
                tasks[task] = _timed(timing, f"{task}_s", S.run_task, suite, task, ctx)
        for upath in suite.users:
            from bench.suites import user

            t0 = time.perf_counter()
            r = user.run(ctx, upath)
            tasks[f"user:{r['name']}"] = r
            timing[f"user:{r['name']}_s"] = round(time.perf_counter() - t0, 3)
        ctx.close()
        if "fidelity" in suite.tasks:
            tasks["fidelity"] = _timed(timing, "fidelity_s", S.run_task, suite, "fidelity", ctx)
    finally:
        ctx.close()
    return timing, tasks, speed, peak, rss_reset


def _annotate(tasks: dict, progress: Progress) -> None:
    """Each task's answers digest and interval; a skipped one said."""
    for name, r in tasks.items():
        if "skipped" in r:
            progress.note(f"{name} skipped: {r['skipped']}")
        else:
            r["answers_digest"] = answers_digest(r)
            if "score" in r and "ci95" not in r:
                r["ci95"] = density.task_interval(r)


def _add_runtime(counted: dict, speed: dict, peak, rss_reset: bool) -> None:
    """The measured speed, energy and peak memory, beside the counted compute."""
    counted.update(
        prefill_tokens_per_s=speed["prefill_tokens_per_s"],
        decode_tokens_per_s=speed["decode_tokens_per_s"],
        ttft_s=speed["ttft_s"],
        ttft_prompt_tokens=speed["prompt_tokens"],
        peak_rss_bytes=peak,
        peak_rss_scope=(
            "load, prefill and decode (peak reset before loading)"
            if rss_reset
            else "the whole process since it started (peak RSS could not be reset)"
        ),
        energy=speed["energy"],
        speed=speed,
    )


def _record(
    *,
    model: str,
    suite: S.Suite,
    path: Path,
    info,
    digest: str,
    recipe_label: str | None,
    adapter: dict | None,
    tasks: dict,
    speed: dict,
    busy,
    device: str | None,
    counted: dict,
    reference: tuple[Path | None, str | None],
    timing: dict,
    clock,
) -> dict:
    """The run's record (bench.store's schema); ``timing`` gets the total at the end."""
    ran = [t for t, r in tasks.items() if "skipped" not in r]
    detail = density.capability_detail(tasks)
    cap, cap_tasks = detail["value"], detail["tasks"]
    energy = speed["energy"]
    ref_path, reference_is = reference
    now = datetime.now(UTC)
    return {
        "schema": SCHEMA,
        "run_id": f"{now:%Y%m%dT%H%M%S}-{digest[:8]}-{secrets.token_hex(2)}",
        "date": now.isoformat(timespec="seconds"),
        "model": {
            "name": info.name,
            "arg": model,
            "path": str(path),
            "file": path.name,
            "sha256": digest,
            "size": info.file_size,
            "architecture": info.architecture,
            "recipe": recipe(info, recipe_label),
        },
        "adapter": adapter,
        "suite": {
            "name": suite.name,
            "version": S.version(suite, ran),
            "context": suite.context,
            "tasks": ran,
            "skipped": {t: r["skipped"] for t, r in tasks.items() if "skipped" in r},
        },
        "device": {
            "host": compute.host(),
            "threads": speed["threads"],
            "others_busy_cpus": None if busy is None else round(busy, 2),
            "profile": device,
        },
        "versions": versions(),
        "tasks": tasks,
        "capability": cap,
        "capability_tasks": cap_tasks,
        "capability_ci95": detail["ci95"],
        "capability_composition": detail["composition"],
        # The smallest capability difference to another run of this suite that a paired test is
        # sure (80% power) to detect when the two runs' item outcomes are independent; runs of
        # related models (quantizations of one) detect smaller ones (bench report --compare).
        "capability_mdd": detail["mdd"],
        "compute": counted,
        "density": density.metrics(
            cap, counted, energy.get("joules_per_decode_token") if energy["available"] else None
        ),
        "projected": project(path, info, device, cap, suite.context) if device else None,
        # How generation tasks were asked: "chat" (the model's chat template, examples as turns)
        # or "raw" (plain few-shot text); log-likelihood tasks (mmlu) are always cloze text.
        "prompt": {t: r["prompt"] for t, r in tasks.items() if "prompt" in r},
        "reference": describe_reference(ref_path, reference_is) if ref_path else None,
        "timing": {**timing, "total_s": clock()},
    }


def describe_reference(path: Path, what: str | None) -> dict:
    """The fidelity reference: its file, hash and what it is. ``what`` is the caller's word (a
    file cannot say it is "the shipped Q4_1 dequantized to F16"); without it, what the GGUF says."""
    from edge_llm import gguf_info

    info = gguf_info.read(path)
    said = what or (
        f"{recipe(info, None)['file_type'] or 'unknown type'} GGUF of {info.name} "
        "(its origin not stated: pass --reference-is)"
    )
    return {"path": str(path), "sha256": sha256_file(path), "what": said}


def strip_items(record: dict) -> dict:
    for r in record["tasks"].values():
        r.pop("items", None)
    return record
