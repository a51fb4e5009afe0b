"""The CPU kernels llama.cpp runs on are the best the wheel has for this CPU, and a damaged install
degrades (one warning line) instead of crashing.

`make install` builds every CPU variant llama.cpp declares (GGML_CPU_ALL_VARIANTS) and edge_llm
loads the best one at start-up. The judge of "best" here is independent of ggml's cpuid scoring:
the variants' feature lists as the vendored ggml/src/CMakeLists.txt declares them, matched against
the flags the kernel reports in /proc/cpuinfo; the variant that needs the most of them wins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_llm.llama import binding

LLAMA_CPP_VERSION = "0.3.36"
# ggml's feature names (ggml_add_cpu_backend_variant) -> the /proc/cpuinfo flags they need
CPUINFO_FLAGS = {
    "SSE42": {"sse4_2"},
    "AVX": {"avx"},
    "F16C": {"f16c"},
    "FMA": {"fma"},
    "AVX2": {"avx2"},
    "BMI2": {"bmi2"},
    "AVX_VNNI": {"avx_vnni"},
    "AVX512": {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"},
    "AVX512_VBMI": {"avx512vbmi"},
    "AVX512_VNNI": {"avx512_vnni"},
    "AVX512_BF16": {"avx512_bf16"},
    "AMX_TILE": {"amx_tile"},
    "AMX_INT8": {"amx_int8"},
    "DOTPROD": {"asimddp"},
    "FP16_VECTOR_ARITHMETIC": {"asimdhp"},
    "SVE": {"sve"},
    "MATMUL_INT8": {"i8mm"},
    "SVE2": {"sve2"},
    "SME": {"sme"},
}


def declared_variants() -> dict[str, list[str]]:
    """Variant name -> ggml features, from the vendored llama.cpp's CMake (this machine's arch)."""
    root = Path(os.environ.get("LLAMA_CPP_SRC", Path.home() / ".cache/edge-llm/src"))
    cmake = root / f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp/ggml/src/CMakeLists.txt"
    if not cmake.is_file():
        pytest.fail(f"llama.cpp's source is not unpacked under {root}; run `make install`")
    text = cmake.read_text()
    arch = "x86" if os.uname().machine in ("x86_64", "AMD64") else "ARM"
    start = text.index(
        f'GGML_SYSTEM_ARCH STREQUAL "{arch}"', text.index("if (GGML_CPU_ALL_VARIANTS)")
    )
    block = text[start : text.index("elseif", start + 40)]
    return {
        m.group(1): m.group(2).split()
        for m in re.finditer(r"ggml_add_cpu_backend_variant\(\s*([\w.]+)([^)]*)\)", block)
    }


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def best_for(flags: set[str], available: set[str]) -> set[str]:
    """The variants among ``available`` whose features this CPU has, needing the most of them
    (several when two need as many), AMX variants aside (edge_llm does not load them)."""
    usable = {
        name: len(feats)
        for name, feats in declared_variants().items()
        if name in available
        and "AMX_INT8" not in feats
        and all(CPUINFO_FLAGS[f] <= flags for f in feats)
    }
    top = max(usable.values())
    return {name for name, n in usable.items() if n == top}


def amx_for(flags: set[str]) -> set[str]:
    """The AMX variants this CPU could run."""
    return {
        name
        for name, feats in declared_variants().items()
        if "AMX_INT8" in feats and all(CPUINFO_FLAGS[f] <= flags for f in feats)
    }


@pytest.fixture(scope="module")
def kernels():
    k = binding.cpu_kernels()
    if k.variant == "built-in":
        pytest.skip("this llama-cpp-python was built without GGML_BACKEND_DL (one CPU backend)")
    return k


def variants_in(directory: Path) -> set[str]:
    return {p.name[len("libggml-cpu-") : -len(".so")] for p in directory.glob("libggml-cpu-*.so")}


def test_the_variant_is_the_one_this_cpus_flags_call_for(kernels):
    lib = Path(kernels.directory)
    assert variants_in(lib) == set(declared_variants()), "the wheel ships every declared variant"
    assert kernels.variant in best_for(cpu_flags(), variants_in(lib))
    assert Path(kernels.library) == lib / f"libggml-cpu-{kernels.variant}.so"
    assert kernels.missing == ()
    assert set(kernels.left_out) == {f"libggml-cpu-{v}.so" for v in amx_for(cpu_flags())}
    # what the loaded library was compiled for: exactly the features its variant declares
    declared = declared_variants()[kernels.variant]
    for feat in ("AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AMX_INT8", "DOTPROD", "SVE"):
        assert (feat in kernels.features) == (feat in declared), feat


def test_info_system_and_devices_report_it(kernels, run_cli):
    r = run_cli("info", "--system", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["cpu_variant"] == kernels.variant
    assert report["cpu_library"].endswith(f"libggml-cpu-{kernels.variant}.so")
    assert any(d["name"] == "CPU" for d in report["devices"])
    # llama.cpp's own system info lists the loaded variant's features
    assert "CPU :" in report["system_info"] and "REPACK = 1" in report["system_info"]
    r = run_cli("info", "--system")
    assert r.returncode == 0 and kernels.variant in r.stdout, r.stderr
    r = run_cli("devices")
    assert r.returncode == 0, r.stderr
    assert (
        f"CPU kernels on this host: {kernels.variant} (libggml-cpu-{kernels.variant}.so" in r.stdout
    )


def _damaged_copy(tmp_path: Path, drop: set[str]) -> Path:
    """The installed llama_cpp/lib folder, copied without the libraries named in ``drop``."""
    src = Path(binding.cpu_kernels().directory)
    dst = tmp_path / "lib"
    dst.mkdir()
    for p in src.iterdir():
        if p.is_file() and p.name not in drop:
            shutil.copy2(p, dst / p.name)
    return dst


def _run_on(lib: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLAMA_CPP_LIB_PATH": str(lib)}
    return subprocess.run(
        [sys.executable, "-m", "edge_llm", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_a_missing_variant_falls_back_with_one_warning(kernels, tmp_path):
    best = kernels.variant
    lib = _damaged_copy(tmp_path, {f"libggml-cpu-{best}.so"})
    expected = best_for(cpu_flags(), variants_in(lib))
    assert best not in expected
    r = _run_on(lib, "run", "-p", "The capital of France is", "-n", "3", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "it still generates"
    warnings = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, r.stderr
    assert f"libggml-cpu-{best}.so missing from {lib}" in warnings[0]
    r = _run_on(lib, "info", "--system", "--json")
    report = json.loads(r.stdout)
    assert report["cpu_variant"] in expected
    assert f"running on CPU kernels {report['cpu_variant']} (" in warnings[0]
    assert report["missing_variants"] == [f"libggml-cpu-{best}.so"]


def test_no_cpu_variant_at_all_is_one_line_error_not_a_crash(kernels, tmp_path):
    lib = _damaged_copy(tmp_path, {f"libggml-cpu-{v}.so" for v in declared_variants()})
    r = _run_on(lib, "run", "-p", "Hello", "-n", "1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "warning" in lines[0], r.stderr  # the warning, then the error
    assert lines[1] == (
        f"error: llama.cpp has no CPU backend: no usable libggml-cpu-*.so in {lib}; "
        "reinstall with make install"
    )


# What qemu's Haswell CPU model reports through cpuid (Intel's Haswell: AVX2, FMA, F16C, BMI2; no
# AVX512, no AVX-VNNI), as /proc/cpuinfo would name it; /proc/cpuinfo itself is the host's under
# qemu-user.
HASWELL_FLAGS = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
QEMU_X86 = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")


@pytest.mark.skipif(
    QEMU_X86 is None or os.uname().machine != "x86_64",
    reason="needs qemu-user on x86-64 (make arm-deps installs qemu-user-static)",
)
def test_the_install_runs_on_a_cpu_without_avx512(kernels):
    # One emulated process (TCG is slow): llama.cpp starts, scores the variants against the
    # emulated cpuid and initialises the one it picks (its ggml_cpu_init runs under emulation).
    # A generation under emulation took over 20 minutes on the shared 2-CPU host: not a unit test.
    cmd = [
        QEMU_X86,
        "-cpu",
        "Haswell",
        sys.executable,
        "-m",
        "edge_llm",
        "info",
        "--system",
        "--json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert {report["cpu_variant"]} == best_for(HASWELL_FLAGS, variants_in(Path(kernels.directory)))
    assert report["cpu_variant"] == "haswell" and "AVX512" not in report["cpu_features"]
    assert "AVX2 = 1" in report["system_info"] and "AVX512 = 1" not in report["system_info"]


# Why edge_llm leaves the AMX variants out: loaded on their own (no edge_llm), llama.cpp's AMX
# matmul dies with SIGILL on its first prefill (GCC drops the tile configuration: every tile has
# zero rows, ggml-org/llama.cpp PR 26954). When a new pin fixes that, this test fails: then let
# ggml choose AMX again.
AMX_ALONE = """
import ctypes, sys
import llama_cpp.llama_cpp as C
lib = ctypes.CDLL(C._lib._name)
lib.ggml_backend_load.argtypes, lib.ggml_backend_load.restype = [ctypes.c_char_p], ctypes.c_void_p
assert lib.ggml_backend_load(sys.argv[1].encode())
C.llama_backend_init()
model = C.llama_model_load_from_file(sys.argv[2].encode(), C.llama_model_default_params())
cp = C.llama_context_default_params()
cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 256, 64, 64, 1, 1
ctx = C.llama_init_from_model(model, cp)
tokens = (C.llama_token * 64)(*range(1000, 1064))
print("decoded", C.llama_decode(ctx, C.llama_batch_get_one(tokens, 64)), flush=True)
"""


def test_the_amx_variant_left_out_crashes_on_its_own(kernels, smollm2_path):
    if not kernels.left_out:
        pytest.skip("no AMX variant runs on this CPU")
    amx = Path(kernels.directory) / kernels.left_out[0]
    r = subprocess.run(
        [sys.executable, "-c", AMX_ALONE, str(amx), str(smollm2_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -4, (r.returncode, r.stdout, r.stderr[-500:])  # SIGILL
    assert "decoded" not in r.stdout
