"""scripts/arm_check.py, the pieces that run on x86 without emulation or a cross-compiler."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import arm_check

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_options(tmp_path):
    a = arm_check.parse_args([])
    assert (a.reduced, a.tokens, a.prompt) == (
        False,
        arm_check.DEFAULT_TOKENS,
        arm_check.DEFAULT_PROMPT,
    )
    assert a.cache == Path.home() / ".cache" / "edge-llm" / "arm64" and a.jobs >= 1
    assert a.src.name == f"llama_cpp_python-{arm_check.LLAMA_CPP_VERSION}"
    assert arm_check.parse_args(["--reduced"]).tokens == arm_check.REDUCED_TOKENS
    assert (
        a.cpus == arm_check.DEFAULT_CPUS
        and arm_check.parse_args(["--reduced"]).cpus == arm_check.REDUCED_CPUS
    )
    assert arm_check.parse_args(["--cpus", "max, cortex-a53"]).cpus == ("max", "cortex-a53")
    a = arm_check.parse_args(
        ["--reduced", "--tokens", "7", "--prompt", "Hi", "--cache", str(tmp_path), "--jobs", "3"]
    )
    assert (a.tokens, a.prompt, a.cache, a.jobs) == (7, "Hi", tmp_path, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tokens", "0"], "--tokens must be at least 1"),
        (["--tokens", "x"], "invalid int value"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--prompt", " "], "--prompt must not be empty"),
        (["--cpus", ","], "--cpus must name at least one qemu CPU model"),
        (["--colour"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        arm_check.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_equal_texts_pass():
    ok, msg = arm_check.compare(" Paris.", " Paris.")
    assert ok and msg == "aarch64 text equals x86 text: ' Paris.'"


def test_differing_texts_fail_and_say_where():
    ok, msg = arm_check.compare(" Paris is 321", " Paris is 311")
    assert not ok
    assert (
        msg
        == "aarch64 text differs from x86 from character 11: x86 ' Paris is 321', aarch64 ' Paris is 311'"
    )
    ok, msg = arm_check.compare(" Paris", "")
    assert not ok and "from character 0" in msg


def test_tools_found_on_a_path_that_has_them(tmp_path):
    for tool in arm_check.TOOLS:
        exe = tmp_path / tool
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    assert arm_check.missing_tools(str(tmp_path)) == []
    (tmp_path / "qemu-aarch64-static").unlink()
    assert arm_check.missing_tools(str(tmp_path)) == ["qemu-aarch64-static"]


def test_missing_cross_compiler_or_qemu_is_one_clear_line(tmp_path):
    # A PATH with python only: no aarch64-linux-gnu-gcc/g++, no qemu-aarch64-static.
    (tmp_path / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(tmp_path)}
    out = subprocess.run(
        [
            str(tmp_path / "python"),
            "-m",
            "scripts.arm_check",
            "--reduced",
            "--cache",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "aarch64-linux-gnu-gcc, aarch64-linux-gnu-g++, qemu-aarch64-static not found" in lines[0]
    assert "gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static" in lines[0]
    assert "apt-get install" in lines[0]
    assert not (tmp_path / "c").exists()  # nothing built or written


def test_the_build_key_follows_the_flags_and_the_source(tmp_path):
    a = arm_check.build_key(tmp_path / "llama_cpp_python-0.3.36")
    assert a == arm_check.build_key(tmp_path / "llama_cpp_python-0.3.36")
    assert a != arm_check.build_key(tmp_path / "llama_cpp_python-0.3.37")
    assert a != arm_check.build_key(tmp_path / "llama_cpp_python-0.3.36", ("armv9.2_1",))
    assert (
        "-DGGML_BACKEND_DL=ON" in arm_check.CMAKE_FLAGS
        and "-DGGML_CPU_ALL_VARIANTS=ON" in arm_check.CMAKE_FLAGS
    )
    assert (
        "-DGGML_OPENMP=OFF" in arm_check.CMAKE_FLAGS
        and "-DBUILD_SHARED_LIBS=ON" in arm_check.CMAKE_FLAGS
    )


def _vendored_cmake() -> str:
    path = arm_check.parse_args([]).src / "vendor/llama.cpp/ggml/src/CMakeLists.txt"
    if not path.is_file():
        pytest.fail(f"{path} not found; run make install (it unpacks the sdist)")
    return path.read_text()


def test_the_linux_aarch64_variants_are_read_from_llama_cpps_cmake():
    v = arm_check.arm_variants(_vendored_cmake())
    assert v["armv8.0_1"] == [] and v["armv8.2_1"] == ["DOTPROD"]
    assert v["armv8.6_1"] == ["DOTPROD", "FP16_VECTOR_ARITHMETIC", "SVE", "MATMUL_INT8"]
    assert "SME" in v["armv9.2_1"] and not any(n.startswith(("android", "apple")) for n in v)


def test_sme_variants_leave_the_list_when_the_compiler_lacks_sme():
    text = _vendored_cmake()
    patched, dropped = arm_check.without_variants(text, "SME")
    assert dropped == ("armv9.2_1", "armv9.2_2")
    v = arm_check.arm_variants(patched)
    assert sorted(v) == [
        "armv8.0_1",
        "armv8.2_1",
        "armv8.2_2",
        "armv8.2_3",
        "armv8.6_1",
        "armv8.6_2",
    ]
    # only those lines changed: Android's and Apple's lists (other OS branches) are untouched
    assert "ggml_add_cpu_backend_variant(apple_m4" in patched
    assert len(patched.splitlines()) == len(text.splitlines())


def test_the_expected_variant_is_the_best_the_hwcaps_allow():
    v = arm_check.arm_variants(_vendored_cmake())
    built = set(v) - {"armv9.2_1", "armv9.2_2"}
    # Cortex-A53: plain armv8.0; Cortex-A76: dotprod + fp16; qemu max: SVE2, i8mm (and SME, not built)
    assert arm_check.expected_variant(v, built, set()) == "armv8.0_1"
    assert arm_check.expected_variant(v, built, {"asimddp", "asimdhp"}) == "armv8.2_2"
    everything = {"asimddp", "asimdhp", "sve", "sve2", "i8mm", "sme"}
    assert arm_check.expected_variant(v, built, everything) == "armv8.6_2"
    assert arm_check.expected_variant(v, set(v), everything) == "armv9.2_2"
    assert (
        arm_check.expected_variant(v, built - {"armv8.2_2"}, {"asimddp", "asimdhp"}) == "armv8.2_1"
    )


def test_a_missing_llama_source_is_a_clear_error(tmp_path):
    with pytest.raises(arm_check.CheckError, match="llama.cpp source not found"):
        arm_check.build_libs(tmp_path / "nowhere", tmp_path / "cache", 1)
