"""The aarch64 CPU variants of llama.cpp's CPU backend, and which one a CPU gets.

`make arm-check` cross-builds every Linux aarch64 variant llama.cpp declares (ggml/src/CMakeLists.txt,
``ggml_add_cpu_backend_variant``) and checks that an emulated CPU loads the one ggml's scoring
should pick: the built variant whose features the CPU's HWCAPs all have, needing the most of
them. Kept apart from arm_check.py so the rule reads on its own (and is tested on x86).
"""

from __future__ import annotations

import re

VARIANT_RE = re.compile(r"^\s*ggml_add_cpu_backend_variant\(\s*([\w.]+)([^)]*)\)", re.M)


def arm_variants(cmake_text: str) -> dict[str, list[str]]:
    """The Linux aarch64 CPU variants llama.cpp declares (ggml/src/CMakeLists.txt): name -> features."""
    start = cmake_text.index(
        'GGML_SYSTEM_ARCH STREQUAL "ARM"', cmake_text.index("GGML_CPU_ALL_VARIANTS)")
    )
    block = cmake_text[start : cmake_text.index("elseif", start + 40)]
    return {m.group(1): m.group(2).split() for m in VARIANT_RE.finditer(block)}


def without_variants(cmake_text: str, feature: str) -> tuple[str, tuple[str, ...]]:
    """The CMake text without the Linux aarch64 variants that need ``feature``, and their names."""
    linux = arm_variants(cmake_text)
    dropped = []

    def drop(m: re.Match) -> str:
        if m.group(1) in linux and feature in m.group(2).split():
            dropped.append(m.group(1))
            return f"# {m.group(0).strip()}  (edge-llm arm-check: the cross compiler lacks it)"
        return m.group(0)

    return VARIANT_RE.sub(drop, cmake_text), tuple(dropped)


# HWCAP bits (linux/arch/arm64/include/uapi/asm/hwcap.h) of the features ggml's variants need,
# named as the kernel names them in /proc/cpuinfo.
HWCAP = {"asimdhp": 1 << 10, "asimddp": 1 << 20, "sve": 1 << 22}
HWCAP2 = {"sve2": 1 << 1, "i8mm": 1 << 13, "sme": 1 << 23}
FEATURE_HWCAP = {
    "DOTPROD": "asimddp",
    "FP16_VECTOR_ARITHMETIC": "asimdhp",
    "SVE": "sve",
    "MATMUL_INT8": "i8mm",
    "SVE2": "sve2",
    "SME": "sme",
}


def expected_variant(
    variants: dict[str, list[str]], built: set[str], hwcaps: set[str]
) -> str | None:
    """The built variant whose features the CPU has, needing the most of them (ggml's choice)."""
    usable = [
        (len(f), name)
        for name, f in variants.items()
        if name in built and all(FEATURE_HWCAP[x] in hwcaps for x in f)
    ]
    return max(usable)[1] if usable else None
