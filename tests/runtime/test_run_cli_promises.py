"""Promises of `edge-llm run` (docs/cli.md) (stdin prompt, --chat with --system, --stats) judged by
llama-cpp-python's own `Llama` (greedy, the same GGUF, its own Jinja rendering of the GGUF's chat
template) and by hand-written expectations."""

from __future__ import annotations

import json
import re

import pytest

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def judge(smollm2_path):
    from llama_cpp import Llama

    # llama.cpp's automatic choice turns flash attention on for this model on CPU (edge_llm leaves
    # it to llama.cpp); the judge asks for it, or close greedy choices differ (~0.1 nat here)
    llm = Llama(str(smollm2_path), n_ctx=512, n_threads=2, flash_attn=True, verbose=False)
    yield llm
    llm.close()


def test_run_reads_the_prompt_from_stdin(run_cli, judge):
    r = run_cli("run", "-n", "12", "--temp", "0", input=PROMPT + "\n")
    assert r.returncode == 0, r.stderr
    judge.reset()
    want = judge(PROMPT + "\n", max_tokens=12, temperature=0)["choices"][0]["text"]
    assert r.stdout == want + "\n"
    # and the same as -p with the same text
    assert run_cli("run", "-p", PROMPT + "\n", "-n", "12", "--temp", "0").stdout == r.stdout


def test_run_chat_with_a_system_prompt_uses_the_models_template(run_cli, judge):
    system, user = "You answer in French.", "What is the capital of Italy?"
    r = run_cli(
        "run", "--chat", "--system", system, "-p", user, "-n", "24", "--temp", "0", "--json"
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    judge.reset()
    want = judge.create_chat_completion(
        [{"role": "system", "content": system}, {"role": "user", "content": user}],
        max_tokens=24,
        temperature=0,
    )
    assert got["text"] == want["choices"][0]["message"]["content"]
    assert got["usage"]["prompt_tokens"] == want["usage"]["prompt_tokens"]
    assert got["usage"]["completion_tokens"] == want["usage"]["completion_tokens"]
    # without --system the template's own default system turn is used (SmolLM2 has one): the
    # prompt is another one, again as llama-cpp-python renders it
    plain = json.loads(run_cli("run", "--chat", "-p", user, "-n", "1", "--json").stdout)
    judge.reset()
    alone = judge.create_chat_completion([{"role": "user", "content": user}], max_tokens=1)
    assert plain["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"]
    assert plain["usage"]["prompt_tokens"] != got["usage"]["prompt_tokens"]


def test_run_stats_prints_usage_and_speed_to_stderr_only(run_cli, tmp_path):
    env = {"EDGE_LLM_HOME": str(tmp_path / "home")}
    args = ("run", "-p", PROMPT, "-n", "8", "--temp", "0")
    plain = run_cli(*args, env=env)
    r = run_cli(*args, "--stats", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain.stdout  # stdout keeps only the text
    line = r.stderr.strip().splitlines()[-1]
    m = re.fullmatch(
        r"prompt (\d+) tokens, ([\d.]+) tok/s \| generated (\d+) tokens, "
        r"([\d.]+) tok/s \| first token (\d+) ms \| finish: (\w+)",
        line,
    )
    assert m, line
    # hand count: "The capital of France is" is 5 SmolLM2 tokens; 8 asked for, no stop
    assert (int(m[1]), int(m[3]), m[6]) == (5, 8, "length")
    assert float(m[2]) > 0 and float(m[4]) > 0 and int(m[5]) > 0
    assert "tok/s" not in plain.stderr
