"""`make arm-check`: edge_llm on aarch64, under emulation, gives exactly the x86 text.

1. Cross-builds the shared libraries of the pinned llama-cpp-python's vendored llama.cpp
   (libllama.so, libggml*.so) for aarch64 the way `make install` builds them for x86-64: the CPU
   backend as runtime-selected variants (GGML_BACKEND_DL, GGML_CPU_ALL_VARIANTS: armv8.0 up to
   dotprod, fp16, SVE, i8mm, SVE2), OpenMP off, no examples, tests, tools or server. Variants the
   cross compiler cannot build (armv9.2 + SME needs GCC 14; Debian 12 has 12, llama.cpp issue
   17403) are left out of the variant list of a hard-linked copy of the source. Cached in
   ``--cache`` (default ~/.cache/edge-llm/arm64) under a key of the llama.cpp version and flags.
2. Assembles an arm64 userland from Debian's arm64 packages (Python 3.11, numpy and the libraries
   they link), downloaded with ``apt-get download`` and unpacked with ``dpkg-deb -x``: no chroot.
   The pure-Python packages edge_llm needs (llama_cpp's bindings from the sdist, jinja2, markupsafe,
   diskcache, typing_extensions) go on PYTHONPATH; ``LLAMA_CPP_LIB_PATH`` names the arm64 libraries.
3. Runs edge_llm's own API under ``qemu-aarch64-static -L USERLAND`` for each emulated CPU model
   (``--cpus``; default a Cortex-A76 like the learning tablets, qemu's ``max`` with SVE2 and i8mm,
   and an armv8.0 Cortex-A53): loads the default model (SmolLM2-135M-Instruct, 4-bit) with
   ``device="learning-machine-entry"`` (the plan must say it fits that profile's budget), then a
   greedy decode of a fixed prompt; the same worker runs on x86 with this venv's Python, and the
   texts must be equal. Each run reports the CPU variant edge_llm loaded, which must be the one
   the emulated CPU's HWCAPs call for.

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
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.arm_variants import (
    HWCAP,
    HWCAP2,
    arm_variants,
    expected_variant,
    without_variants,
)

LLAMA_CPP_VERSION = "0.3.36"
DEFAULT_PROMPT = "The capital of France is"
# 12 tokens: " Paris.\n\nThe United States has a population of approximately". The 16th token is a
# near-tie (SmolLM2's logits for "1" and "2" after "approximately 3" differ by 0.09 on x86 and 0.02
# on aarch64), which the two builds' different kernels (AVX2 vs NEON dotprod rounding) can flip.
DEFAULT_TOKENS = 12
REDUCED_TOKENS = 4
DEVICE = "learning-machine-entry"
# qemu CPU models: a learning tablet's dotprod + fp16 core, everything qemu has, armv8.0 only
DEFAULT_CPUS = ("cortex-a76", "max", "cortex-a53")
REDUCED_CPUS = ("cortex-a76",)
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
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_CPU_ALL_VARIANTS=ON",
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
        "--cpus",
        default=None,
        help="qemu CPU models to run on, comma-separated (default "
        f"{','.join(DEFAULT_CPUS)}; --reduced: {','.join(REDUCED_CPUS)})",
    )
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
    if args.cpus is None:
        args.cpus = REDUCED_CPUS if args.reduced else DEFAULT_CPUS
    else:
        args.cpus = tuple(c.strip() for c in args.cpus.split(",") if c.strip())
        if not args.cpus:
            ap.error("--cpus must name at least one qemu CPU model (qemu-aarch64-static -cpu help)")
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


def build_key(src: Path, dropped: tuple[str, ...] = ()) -> str:
    flags = " ".join(CMAKE_FLAGS) + " " + src.name + " without " + ",".join(dropped)
    return hashlib.sha1(flags.encode()).hexdigest()[:12]


# --- building ------------------------------------------------------------------------------------
def _run(cmd: list[str], what: str, **kw) -> None:
    try:
        subprocess.run(cmd, check=True, **kw)
    except FileNotFoundError:
        raise CheckError(f"{what}: {cmd[0]} not found") from None
    except subprocess.CalledProcessError as e:
        raise CheckError(f"{what} failed (exit {e.returncode}): {' '.join(cmd[:6])} ...") from None


def compiler_has(march: str) -> bool:
    """Whether the cross compiler accepts ``-march=MARCH``."""
    try:
        r = subprocess.run(
            ["aarch64-linux-gnu-gcc", f"-march={march}", "-x", "c", "-c", "-", "-o", os.devnull],
            input="int x;\n",
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return False
    return r.returncode == 0


def source_tree(llama: Path, out: Path) -> tuple[Path, tuple[str, ...]]:
    """The llama.cpp tree to build and the variants left out: the source itself when the cross
    compiler builds every variant; else a hard-linked copy whose variant list lacks the SME ones."""
    if compiler_has("armv9.2-a+sme"):
        return llama, ()
    text, dropped = without_variants((llama / "ggml/src/CMakeLists.txt").read_text(), "SME")
    tree = out / "src"
    if not tree.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".src-"))
        try:
            shutil.copytree(llama, tmp / "t", copy_function=os.link, symlinks=True)
        except OSError:  # another file system: a plain copy
            shutil.rmtree(tmp / "t", ignore_errors=True)
            shutil.copytree(llama, tmp / "t", symlinks=True)
        cmake = tmp / "t/ggml/src/CMakeLists.txt"
        cmake.unlink()  # a hard link: never write through it into the unpacked sdist
        cmake.write_text(text)
        (tmp / "t").rename(tree)
        tmp.rmdir()
    return tree, dropped


def build_libs(src: Path, cache: Path, jobs: int) -> tuple[Path, bool, tuple[str, ...]]:
    """The cross-built libllama.so + libggml*.so directory, whether it was cached, and the CPU
    variants left out because the cross compiler cannot build them."""
    llama = src / "vendor" / "llama.cpp"
    if not (llama / "CMakeLists.txt").is_file():
        raise CheckError(
            f"llama.cpp source not found in {src}; run make install (it unpacks the sdist)"
        )
    dropped = (
        ()
        if compiler_has("armv9.2-a+sme")
        else without_variants((llama / "ggml/src/CMakeLists.txt").read_text(), "SME")[1]
    )
    out = cache / f"llama-{LLAMA_CPP_VERSION}-{build_key(src, dropped)}"
    lib = out / "lib"
    if (lib / ".built").is_file():
        return lib, True, dropped
    build = out / "build"
    cmake = shutil.which("cmake")
    if cmake is None:
        raise CheckError("cmake not found: sudo apt-get install cmake")
    log = out / "build.log"
    out.mkdir(parents=True, exist_ok=True)
    llama, dropped = source_tree(llama, out)
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
    if not list(tmp.glob("libggml-cpu-*.so")):
        raise CheckError(f"the cross-build made no libggml-cpu-*.so variants (log: {log})")
    (tmp / ".built").write_text(
        json.dumps({"flags": CMAKE_FLAGS, "src": str(src), "dropped": dropped}) + "\n"
    )
    if lib.exists():
        shutil.rmtree(lib)
    tmp.rename(lib)
    return lib, False, dropped


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
    import edge_llm
    from edge_llm.devices.plan import process_rss
    from edge_llm.llama.binding import cpu_kernels

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
            "cpu_variant": cpu_kernels().variant,
            "hwcaps": hwcaps(),
        }
    print("ARM_CHECK_RESULT " + json.dumps(out), flush=True)
    return 0


def hwcaps() -> list[str]:
    """The features of HWCAP/HWCAP2 that ggml's aarch64 variants need (empty elsewhere)."""
    if platform.machine() != "aarch64":
        return []
    import ctypes

    getauxval = ctypes.CDLL(None).getauxval
    getauxval.argtypes, getauxval.restype = [ctypes.c_ulong], ctypes.c_ulong
    hw, hw2 = getauxval(16), getauxval(26)  # AT_HWCAP, AT_HWCAP2
    return sorted(
        [n for n, b in HWCAP.items() if hw & b] + [n for n, b in HWCAP2.items() if hw2 & b]
    )


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


def run_arm(
    args: argparse.Namespace, model: str, root: Path, lib: Path, site: Path, cpu: str
) -> dict:
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
        "-cpu",
        cpu,
        "-L",
        str(root),
        str(root / "usr/bin/python3.11"),
        *worker_cmd(args, model),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return _result(proc, f"aarch64 (qemu -cpu {cpu})")


def check(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    require_tools()
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        from edge_llm.registry import resolve

        args.model = str(resolve("smollm2-135m-instruct"))
    t = time.perf_counter()
    lib, cached, dropped = build_libs(args.src, args.cache, args.jobs)
    built = {p.name[len("libggml-cpu-") : -len(".so")] for p in lib.glob("libggml-cpu-*.so")}
    variants = arm_variants((args.src / "vendor/llama.cpp/ggml/src/CMakeLists.txt").read_text())
    left_out = f"; left out (the cross compiler lacks SME): {', '.join(dropped)}" if dropped else ""
    print(
        f"[build] {'cached' if cached else 'cross-built'} llama.cpp {LLAMA_CPP_VERSION} for "
        f"aarch64 (CPU variants chosen at run time, OpenMP off) in {time.perf_counter() - t:.0f} s: "
        f"{lib}; variants {', '.join(sorted(built))}{left_out}"
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
    ok = True
    for cpu in args.cpus:
        t = time.perf_counter()
        arm = run_arm(args, args.model, root, lib, site, cpu)
        print(
            f"[aarch64] {arm['machine']} under qemu-aarch64-static -cpu {cpu} "
            f"({' '.join(arm['hwcaps']) or 'armv8.0'}): CPU kernels {arm['cpu_variant']}, "
            f"load {arm['load_s']} s, {args.tokens} tokens {arm['decode_s']} s: {arm['text']!r}"
        )
        if arm["machine"] != "aarch64":
            ok = False
            print(f"FAIL: the emulated run reports machine {arm['machine']!r}, not aarch64")
        want = expected_variant(variants, built, set(arm["hwcaps"]))
        if arm["cpu_variant"] == want:
            print(f"ok: {cpu} runs the {want} kernels, the best built variant its HWCAPs allow")
        else:
            ok = False
            print(f"FAIL: {cpu} runs the {arm['cpu_variant']} kernels; its HWCAPs call for {want}")
        same, msg = compare(x86["text"], arm["text"])
        print(("ok: " if same else "FAIL: ") + f"{cpu}: " + msg)
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
