"""Shared fixtures: the two real models (installed by `make install`) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge_llm
from edge_llm.llama import binding
from edge_llm.registry import resolve

# llama-cpp-python's own classes (the judge of many tests) find no CPU backend in a wheel built
# with runtime-selected CPU variants until someone loads them: edge_llm does, once per process.
binding.init()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return resolve("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return resolve("gemma3-270m")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    m = edge_llm.load(smollm2_path, n_ctx=2048)
    yield m
    m.close()


@pytest.fixture(scope="session")
def llama_judge():
    """llama-cpp-python's own high-level `llama_cpp.Llama`, one per model file for the session:
    the independent judge of greedy texts, token ids and token counts (see
    tests/fixtures/judges.py). Flash attention is asked for because llama.cpp's automatic choice
    turns it on for these models on CPU (edge_llm leaves it to llama.cpp); without it close
    greedy choices could part."""
    from llama_cpp import Llama

    made: dict[str, Llama] = {}

    def get(path: Path) -> Llama:
        key = str(path)
        if key not in made:
            # one thread: the same numbers (tests/runtime/test_generate.py), and no spinning
            # thread pool fighting the host's other work over short prompts
            made[key] = Llama(
                key, n_ctx=1024, n_threads=1, n_threads_batch=1, flash_attn=True, verbose=False
            )
        return made[key]

    yield get
    for llm in made.values():
        llm.close()


@pytest.fixture
def fresh(smollm2):
    """The shared SmolLM2 with an empty KV cache."""
    smollm2.reset()
    return smollm2


def cli(
    *args: str, input: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `edge-llm ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "edge_llm", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def run_cli():
    return cli
