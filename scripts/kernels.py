"""Does the portable install run llama.cpp as fast as a build for this very CPU? (`make bench-kernels`)

The installed wheel carries every CPU variant llama.cpp declares and edge_llm loads the best one
for the CPU at start-up. The baseline is the same llama.cpp (the pinned llama-cpp-python's
vendored tree, which `make install` unpacks) built here with ``-DGGML_NATIVE=ON`` (``-march=native``
less AMX, whose kernels crash in this llama.cpp; the backend linked in), cached in ``--cache``. Optionally a third build: ``--portable DIR``, a
``llama_cpp/lib`` folder of another wheel (e.g. the former AVX2-only default).

Each build runs in its own worker process (llama-cpp-python's bindings, pointed at that build's
libraries with LLAMA_CPP_LIB_PATH; edge_llm's backend drives it): one context per model, the same
token ids. Prefill = one 256-token batch on an empty cache; decode = 64 one-token steps on an
empty cache (llama-bench's pp256 and tg64). Every repetition asks every build for every row, the
builds' order alternating, so slow phases of a shared host hit all builds alike; reported are the
medians and native/installed ratios (ratio of medians, and the median of per-repetition ratios).

    python -m scripts.kernels [--reps 7] [--threads 1 2] [--models smollm2 gemma3] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
N_PREFILL, N_DECODE = 256, 64
REPO = Path(__file__).resolve().parent.parent
NATIVE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
# -march=native turns on AMX where the CPU has it, and this llama.cpp's AMX matmul crashes when GCC
# builds it (see docs/building-llama-cpp.md): the baseline is -march=native
# without the AMX tiles, the best this llama.cpp can do here.
if platform.machine() == "x86_64":
    NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    NATIVE_FLAGS += (f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}")


class BenchError(Exception):
    """Something to fix before the benchmark can run (one line, exit 2)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="kernels.py", description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument(
        "--portable",
        type=Path,
        default=None,
        help="also time this llama_cpp/lib folder (another wheel's libraries)",
    )
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edge-llm" / "native")
    ap.add_argument(
        "--src",
        type=Path,
        default=Path.home()
        / ".cache"
        / "edge-llm"
        / "src"
        / f"llama_cpp_python-{LLAMA_CPP_VERSION}",
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reps < 1 or min(args.threads) < 1 or args.jobs < 1:
        ap.error("--reps, --threads and --jobs must be at least 1")
    return args


# --- the native build -----------------------------------------------------------------------------
def cpu_key() -> str:
    """What a -march=native build depends on: the CPU's model and flags, and the compiler."""
    info = (
        Path("/proc/cpuinfo").read_text()
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    return hashlib.sha1(
        "\n".join(sorted(set(lines)) + cc + list(NATIVE_FLAGS)).encode()
    ).hexdigest()[:12]


def native_libs(src: Path, cache: Path, jobs: int) -> Path:
    """libllama.so + libggml*.so of the vendored llama.cpp built with -march=native (cached)."""
    llama = src / "vendor" / "llama.cpp"
    if not (llama / "CMakeLists.txt").is_file():
        raise BenchError(
            f"llama.cpp source not found in {src}; run make install (it unpacks the sdist)"
        )
    if shutil.which("cmake") is None:
        raise BenchError("cmake not found: sudo apt-get install cmake")
    out = cache / f"llama-{LLAMA_CPP_VERSION}-{cpu_key()}"
    lib = out / "lib"
    if (lib / ".built").is_file():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    build, log = out / "build", out / "build.log"
    print(
        f"building llama.cpp {LLAMA_CPP_VERSION} with -march=native (once; log: {log})", flush=True
    )
    with log.open("w") as f:
        for cmd in (
            ["cmake", "-S", str(llama), "-B", str(build), *NATIVE_FLAGS],
            ["cmake", "--build", str(build), "--target", "llama", "-j", str(jobs)],
        ):
            if subprocess.run(
                ["nice", "-n", "10", *cmd], stdout=f, stderr=subprocess.STDOUT
            ).returncode:
                raise BenchError(f"the native build failed: {' '.join(cmd[:4])} ... (log: {log})")
    tmp = out / ".lib-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for p in sorted(build.rglob("libllama.so*")) + sorted(build.rglob("libggml*.so*")):
        shutil.copy2(p, tmp / p.name, follow_symlinks=True)
    (tmp / ".built").write_text(" ".join(NATIVE_FLAGS) + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    return lib


# --- the worker: one build, all models, on request ---------------------------------------------------
def worker() -> int:
    from edge_llm.llama import backend, binding
    from edge_llm.registry import resolve

    k = binding.cpu_kernels()
    print(json.dumps({"variant": k.variant, "features": list(k.features)}), flush=True)
    contexts: dict[str, backend.Backend] = {}
    for line in sys.stdin:
        req = json.loads(line)
        b = contexts.get(req["model"])
        if b is None:
            cfg = backend.ContextConfig(
                n_ctx=512,
                n_threads=req["threads"],
                n_threads_batch=req["threads"],
                n_batch=N_PREFILL,
            )
            b = contexts[req["model"]] = backend.Backend(resolve(req["model"]), cfg)
        b.set_threads(req["threads"], req["threads"])
        ids = [(1000 + 7919 * i) % b.n_vocab for i in range(N_PREFILL)]
        b.kv_clear()
        t0 = time.perf_counter()
        if req["test"] == "prefill":
            b.decode(ids)
            n = N_PREFILL
        else:
            for t in ids[:N_DECODE]:
                b.decode([t])
            n = N_DECODE
        print(json.dumps({"tps": n / (time.perf_counter() - t0)}), flush=True)
    return 0


class Worker:
    def __init__(self, name: str, lib: Path | None):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if lib is not None:
            env["LLAMA_CPP_LIB_PATH"] = str(lib)
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        hello = self.proc.stdout.readline()
        if not hello:
            raise BenchError(f"the {name} worker did not start (exit {self.proc.wait()})")
        self.info = json.loads(hello)

    def ask(self, model: str, threads: int, test: str) -> float:
        self.proc.stdin.write(json.dumps({"model": model, "threads": threads, "test": test}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"the {self.name} worker died (exit {self.proc.wait()})")
        return json.loads(line)["tps"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def run(args: argparse.Namespace) -> dict:
    builds = {"installed": None, "native": native_libs(args.src, args.cache, args.jobs)}
    if args.portable is not None:
        if not (args.portable / "libllama.so").is_file():
            raise BenchError(f"no libllama.so in {args.portable}")
        builds["portable"] = args.portable
    workers = {name: Worker(name, lib) for name, lib in builds.items()}
    for w in workers.values():
        print(
            f"{w.name}: CPU kernels {w.info['variant']} ({' '.join(w.info['features'])})",
            flush=True,
        )
    rows = [
        (m, t, test) for m in args.models for t in args.threads for test in ("prefill", "decode")
    ]
    for row in rows:  # warm-up: load every model, fault its pages in
        for w in workers.values():
            w.ask(*row)
    tps: dict[tuple, dict[str, list[float]]] = {r: {n: [] for n in workers} for r in rows}
    order = list(workers)
    t0 = time.perf_counter()
    for rep in range(args.reps):
        for row in rows:
            for name in order if rep % 2 == 0 else order[::-1]:
                tps[row][name].append(workers[name].ask(*row))
        print(f"repetition {rep + 1}/{args.reps} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for w in workers.values():
        w.close()
    out = []
    for (model, threads, test), by in tps.items():
        med = {n: statistics.median(v) for n, v in by.items()}
        paired = [i / n for i, n in zip(by["installed"], by["native"], strict=True)]
        out.append(
            {
                "model": model,
                "threads": threads,
                "test": test,
                "median_tps": med,
                "installed_over_native": med["installed"] / med["native"],
                "median_paired_ratio": statistics.median(paired),
                "tps": by,
            }
        )
    return {
        "builds": {w.name: w.info for w in workers.values()},
        "reps": args.reps,
        "cpu": platform.processor() or platform.machine(),
        "rows": out,
    }


def report(res: dict) -> None:
    names = list(res["builds"])
    head = [
        "model",
        "threads",
        "test",
        *(f"{n} t/s" for n in names),
        "installed / native",
        "paired median",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in res["rows"]:
        cells = [
            r["model"],
            str(r["threads"]),
            f"{r['test']} {N_PREFILL if r['test'] == 'prefill' else N_DECODE}",
            *(f"{r['median_tps'][n]:.1f}" for n in names),
            f"{r['installed_over_native']:.3f}",
            f"{r['median_paired_ratio']:.3f}",
        ]
        print("| " + " | ".join(cells) + " |")
    worst = min(min(r["installed_over_native"], r["median_paired_ratio"]) for r in res["rows"])
    print(f"lowest installed/native ratio: {worst:.3f} (goal >= 0.95)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker()
    try:
        res = run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report(res)
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.rename(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
