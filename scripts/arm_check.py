"""`make arm-check`: edge_llm on aarch64, under emulation, gives exactly the x86 text.

1. Cross-builds the shared libraries of the pinned llama-cpp-python's vendored llama.cpp
   (libllama.so, libggml*.so) for aarch64: armv8.2-a+dotprod (a Cortex-A55/A76 learning tablet),
   OpenMP off, no examples, tests, tools or server. Cached in ``--cache`` (default
   ~/.cache/edge-llm/arm64) under a key of the llama.cpp version and the flags.
2. Assembles an arm64 userland from Debian's arm64 packages (Python 3.11, numpy and the libraries
   they link), downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x``: no chroot.
   The pure-Python packages edge_llm needs (llama_cpp's bindings from the sdist, jinja2, markupsafe,
   diskcache, typing_extensions) go on PYTHONPATH; ``LLAMA_CPP_LIB_PATH`` names the arm64 libraries.
3. Runs edge_llm's own API under ``qemu-aarch64-static -L USERLAND``: loads the default model
   (SmolLM2-135M-Instruct, 4-bit) with ``device="learning-machine-entry"`` (the plan must say it
   fits that profile's budget), then a greedy decode of a fixed prompt; the same worker runs on x86
   with this venv's Python, and the two texts must be equal.

Prints what it checked; exit 0: all checks passed, 1: a check failed, 2: something to fix first
(a missing tool, a failed build or download), with one ``error:`` line.

    python -m scripts.arm_check                 # full check
    python -m scripts.arm_check --reduced       # cross-build + one short decode (CI)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"
DEFAULT_PROMPT = "The capital of France is"
# 12 tokens: " Paris.\n\nThe United States has a population of approximately". The 16th token is a
# near-tie (SmolLM2's logits for "1" and "2" after "approximately 3" differ by 0.09 on x86 and 0.02
# on aarch64), which the two builds' different kernels (AVX2 vs NEON dotprod rounding) can flip.
DEFAULT_TOKENS = 12
REDUCED_TOKENS = 4
DEVICE = "learning-machine-entry"
ARM_ARCH = "armv8.2-a+dotprod"
TOOLS = ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++", "qemu-aarch64-static")
DEBIAN_PACKAGES = "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static"
INSTALL_HINT = f"sudo apt-get install {DEBIAN_PACKAGES} (or: sudo make arm-deps)"
# Debian's arm64 packages that make the userland: Python 3.11 with its standard library, numpy and
# its BLAS/LAPACK, and the shared libraries they (and libllama's C++) link against.
ARM_PACKAGES = (
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libexpat1",
    "libffi8",
    "libbz2-1.0",
    "liblzma5",
    "libssl3",
    "libuuid1",
    "libcrypt1",
    "libsqlite3-0",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "python3-numpy",
    "libblas3",
    "liblapack3",
    "libgfortran5",
)
# Pure-Python packages from this venv that edge_llm and llama_cpp's bindings import.
PURE_PACKAGES = ("jinja2", "markupsafe", "diskcache", "typing_extensions.py")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_NATIVE=OFF",
    "-DGGML_OPENMP=OFF",
    f"-DGGML_CPU_ARM_ARCH={ARM_ARCH}",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
REPO = Path(__file__).resolve().parent.parent


class CheckError(Exception):
    """Something the user must fix before the check can run (one line, exit 2)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="arm_check.py", description="edge_llm on aarch64 under qemu: same text as on x86"
    )
    ap.add_argument(
        "--reduced",
        action="store_true",
        help=f"cross-build + one short decode ({REDUCED_TOKENS} tokens)",
    )
    ap.add_argument(
        "--tokens", type=int, default=None, help=f"tokens to decode (default {DEFAULT_TOKENS})"
    )
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument(
        "--model",
        default=None,
        help="GGUF path (default: the default model, SmolLM2-135M-Instruct)",
    )
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edge-llm" / "arm64")
    ap.add_argument(
        "--src",
        type=Path,
        default=None,
        help="the llama-cpp-python sdist tree (default: where make install unpacked it)",
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="build jobs")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.tokens is None:
        args.tokens = REDUCED_TOKENS if args.reduced else DEFAULT_TOKENS
    if args.tokens < 1:
        ap.error(f"--tokens must be at least 1 (got {args.tokens})")
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1 (got {args.jobs})")
    if not args.prompt.strip():
        ap.error("--prompt must not be empty")
    if args.src is None:
        args.src = (
            Path.home() / ".cache" / "edge-llm" / "src" / f"llama_cpp_python-{LLAMA_CPP_VERSION}"
        )
    return args


# --- pieces that run anywhere (tested on x86) --------------------------------------------------
def missing_tools(path: str | None = None) -> list[str]:
    return [t for t in TOOLS if shutil.which(t, path=path) is None]


def require_tools(path: str | None = None) -> None:
    missing = missing_tools(path)
    if missing:
        raise CheckError(
            f"{', '.join(missing)} not found: install Debian's {DEBIAN_PACKAGES}: {INSTALL_HINT}"
        )


def compare(x86: str, arm: str) -> tuple[bool, str]:
    """(equal, message) for the x86 and the aarch64 greedy texts."""
    if x86 == arm:
        return True, f"aarch64 text equals x86 text: {x86!r}"
    common = os.path.commonprefix([x86, arm])
    return False, (
        f"aarch64 text differs from x86 from character {len(common)}: x86 {x86!r}, aarch64 {arm!r}"
    )


def build_key(src: Path) -> str:
    flags = " ".join(CMAKE_FLAGS) + " " + src.name
    return hashlib.sha1(flags.encode()).hexdigest()[:12]


# --- building ------------------------------------------------------------------------------------
def _run(cmd: list[str], what: str, **kw) -> None:
    try:
        subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError:
        raise CheckError(f"{what}: {cmd[0]} not found") from None
    except subprocess.CalledProcessError as e:
        raise CheckError(f"{what} failed (exit {e.returncode}): {' '.join(cmd[:6])} ...") from None


def build_libs(src: Path, cache: Path, jobs: int) -> tuple[Path, bool]:
    """The cross-built libllama.so + libggml*.so directory, and whether it was cached."""
    llama = src / "vendor" / "llama.cpp"
    if not (llama / "CMakeLists.txt").is_file():
        raise CheckError(
            f"llama.cpp source not found in {src}; run make install (it unpacks the sdist)"
        )
    out = cache / f"llama-{LLAMA_CPP_VERSION}-{build_key(src)}"
    lib = out / "lib"
    if (lib / ".built").is_file():
        return lib, True
    build = out / "build"
    cmake = shutil.which("cmake")
    if cmake is None:
        raise CheckError("cmake not found: sudo apt-get install cmake")
    log = out / "build.log"
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        _run(
            [
                "nice",
                "-n",
                "19",
                cmake,
                "-S",
                str(llama),
                "-B",
                str(build),
                "-DCMAKE_SYSTEM_NAME=Linux",
                "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
                "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc",
                "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++",
                *CMAKE_FLAGS,
            ],
            f"cmake configure (log: {log})",
            stdout=f,
            stderr=subprocess.STDOUT,
        )
        _run(
            [
                "nice",
                "-n",
                "19",
                cmake,
                "--build",
                str(build),
                "--target",
                "llama",
                "-j",
                str(jobs),
            ],
            f"cross-build (log: {log})",
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".lib-"))
    libs = sorted(build.rglob("libllama.so*")) + sorted(build.rglob("libggml*.so*"))
    for p in libs:
        shutil.copy2(p, tmp / p.name, follow_symlinks=True)
    if not (tmp / "libllama.so").is_file():
        raise CheckError(f"the cross-build made no libllama.so (log: {log})")
    (tmp / ".built").write_text(json.dumps({"flags": CMAKE_FLAGS, "src": str(src)}) + "\n")
    if lib.exists():
        shutil.rmtree(lib)
    tmp.rename(lib)
    return lib, False


def userland(cache: Path) -> tuple[Path, bool]:
    """An unpacked arm64 Debian userland with python3.11 and numpy, and whether it was cached."""
    root = cache / "userland"
    if (root / ".built").is_file():
        return root, True
    if (
        "arm64"
        not in subprocess.run(
            ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True
        ).stdout.split()
    ):
        if os.geteuid() != 0:
            raise CheckError(
                "apt has no arm64 architecture: run once as root "
                "dpkg --add-architecture arm64 && apt-get update"
            )
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        _run(["apt-get", "update", "-qq"], "apt-get update", stdout=subprocess.DEVNULL)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    want = [f"{p}:arm64" for p in ARM_PACKAGES]
    r = subprocess.run(["apt-get", "download", *want], cwd=debs, capture_output=True, text=True)
    if r.returncode != 0:
        if os.geteuid() == 0 and "Unable to locate" in r.stderr:
            _run(["apt-get", "update", "-qq"], "apt-get update", stdout=subprocess.DEVNULL)
            r = subprocess.run(
                ["apt-get", "download", *want], cwd=debs, capture_output=True, text=True
            )
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            raise CheckError(f"apt-get download of the arm64 packages failed: {last}")
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".userland-"))
    for deb in sorted(debs.glob("*_arm64.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg-deb -x {deb.name}")
    # What the packages' maintainer scripts would do: the BLAS/LAPACK alternatives and python3.
    multi = tmp / "usr" / "lib" / "aarch64-linux-gnu"
    for name, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        if (multi / sub / name).exists() and not (multi / name).exists():
            (multi / name).symlink_to(f"{sub}/{name}")
    (tmp / ".built").write_text("\n".join(sorted(p.name for p in debs.glob("*.deb"))) + "\n")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root, False


def pure_python(cache: Path, src: Path) -> Path:
    """llama_cpp's bindings from the sdist plus this venv's pure-Python dependencies."""
    site = cache / "pure-python"
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".pure-"))
    no_binaries = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "lib", "server")
    shutil.copytree(src / "llama_cpp", tmp / "llama_cpp", ignore=no_binaries)
    venv_site = Path(
        subprocess.check_output(
            [
                sys.executable,
                "-c",
                "import jinja2, pathlib; print(pathlib.Path(jinja2.__file__).parent.parent)",
            ],
            text=True,
        ).strip()
    )
    for name in PURE_PACKAGES:
        p = venv_site / name
        if not p.exists():
            raise CheckError(f"{name} not in {venv_site}; run make install")
        if p.is_dir():
            shutil.copytree(p, tmp / name, ignore=no_binaries)
        else:
            shutil.copy2(p, tmp / name)
    if site.exists():
        shutil.rmtree(site)
    tmp.rename(site)
    return site


# --- the worker: edge_llm's API, run by either interpreter ---------------------------------------
def worker(args: argparse.Namespace) -> int:
    import platform

    import edge_llm
    from edge_llm.devices.plan import process_rss

    t0 = time.perf_counter()
    with edge_llm.load(args.model, device=DEVICE) as m:
        loaded = time.perf_counter() - t0
        p = m.device.plan
        c = m.generate(args.prompt, max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
        out = {
            "machine": platform.machine(),
            "text": c.text,
            "load_s": round(loaded, 2),
            "decode_s": round(time.perf_counter() - t0 - loaded, 2),
            "fits": bool(p and p.fits),
            "planned_bytes": p.memory.total if p else None,
            "budget_bytes": p.budget if p else None,
            "threads": m.threads,
            "n_ctx": m.n_ctx,
            "vmhwm_bytes": process_rss("VmHWM"),
        }
    print("ARM_CHECK_RESULT " + json.dumps(out), flush=True)
    return 0


def _result(proc: subprocess.CompletedProcess, where: str) -> dict:
    for line in proc.stdout.splitlines():
        if line.startswith("ARM_CHECK_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise CheckError(f"the {where} run failed (exit {proc.returncode}): {tail}")


def worker_cmd(args: argparse.Namespace, model: str) -> list[str]:
    return [
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        model,
        "--prompt",
        args.prompt,
        "--tokens",
        str(args.tokens),
    ]


def run_x86(args: argparse.Namespace, model: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, *worker_cmd(args, model)], capture_output=True, text=True, env=env
    )
    return _result(proc, "x86")


def run_arm(args: argparse.Namespace, model: str, root: Path, lib: Path, site: Path) -> dict:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "VIRTUAL_ENV"))
    }
    env.update(
        QEMU_LD_PREFIX=str(root),
        PYTHONHOME=str(root / "usr"),
        PYTHONPATH=os.pathsep.join(
            [str(REPO), str(site), str(root / "usr/lib/python3/dist-packages")]
        ),
        PYTHONDONTWRITEBYTECODE="1",
        LLAMA_CPP_LIB_PATH=str(lib),
        LD_LIBRARY_PATH="/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu",  # paths inside -L
    )
    cmd = [
        "qemu-aarch64-static",
        "-L",
        str(root),
        str(root / "usr/bin/python3.11"),
        *worker_cmd(args, model),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return _result(proc, "aarch64 (qemu)")


def check(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    require_tools()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from edge_llm.registry import resolve

        args.model = str(resolve("smollm2-135m-instruct"))
    t = time.perf_counter()
    lib, cached = build_libs(args.src, args.cache, args.jobs)
    names = ", ".join(sorted(p.name for p in lib.glob("*.so")))
    print(
        f"[build] {'cached' if cached else 'cross-built'} llama.cpp {LLAMA_CPP_VERSION} for "
        f"aarch64 ({ARM_ARCH}, OpenMP off) in {time.perf_counter() - t:.0f} s: {lib} ({names})"
    )
    t = time.perf_counter()
    root, cached = userland(args.cache)
    site = pure_python(args.cache, args.src)
    print(
        f"[userland] {'cached' if cached else 'assembled'} arm64 Debian userland (python3.11, "
        f"numpy) in {time.perf_counter() - t:.0f} s: {root}"
    )
    t = time.perf_counter()
    x86 = run_x86(args, args.model)
    print(
        f"[x86] {x86['machine']}: {args.tokens} greedy tokens in {time.perf_counter() - t:.1f} s: "
        f"{x86['text']!r}"
    )
    t = time.perf_counter()
    arm = run_arm(args, args.model, root, lib, site)
    print(
        f"[aarch64] {arm['machine']} under qemu-aarch64-static: load {arm['load_s']} s, "
        f"{args.tokens} tokens {arm['decode_s']} s: {arm['text']!r}"
    )
    ok = True
    if arm["machine"] != "aarch64":
        ok = False
        print(f"FAIL: the emulated run reports machine {arm['machine']!r}, not aarch64")
    same, msg = compare(x86["text"], arm["text"])
    print(("ok: " if same else "FAIL: ") + msg)
    ok &= same
    mb = 1e6
    budget_msg = (
        f"{Path(args.model).name} on {DEVICE}: plan {arm['planned_bytes'] / mb:.0f} MB "
        f"(context {arm['n_ctx']}, {arm['threads']} threads) within the {arm['budget_bytes'] / mb:.0f} MB "
        f"budget; peak RSS of the emulator process {arm['vmhwm_bytes'] / mb:.0f} MB"
    )
    if arm["fits"] and arm["planned_bytes"] <= arm["budget_bytes"]:
        print("ok: " + budget_msg)
    else:
        ok = False
        print("FAIL: does not fit: " + budget_msg)
    print(
        f"{'passed' if ok else 'FAILED'} in {time.perf_counter() - t_start:.0f} s "
        f"({'reduced' if args.reduced else 'full'} check)"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    try:
        return check(args)
    except CheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
