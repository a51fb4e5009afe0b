"""What a newcomer hit (issue 15): base models in chat, chat's multi-line input and /set, the
token-limit notice, --ignore-eos, device names at 100 columns, model names, progress units.

Judges: llama-cpp-python's own greedy completion of a prompt written by hand (for the plain
template) and its own chat completion (the GGUF's template, for the CLI), GGUF metadata written by
hand (for names).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_llm import chat_template
from edge_llm.cli import progress
from tests.fixtures.judges import llama_cpp_chat, llama_cpp_greedy


# --- base models -------------------------------------------------------------------------------
def test_a_gguf_without_a_template_is_a_completion_model():
    base = chat_template.chat_format(None)
    assert not base.is_chat_model and "\nUser:" in base.stops
    assert "completion (base) model" in base.notice("gemma3-270m")
    assert chat_template.chat_format("{{ messages }}").is_chat_model
    assert chat_template.chat_format("{{ messages }}").notice("x") is None
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 12*7?"},
    ]
    assert chat_template.render(base.source, msgs) == (
        "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: What is 12*7?\nAssistant:"
    )
    assert chat_template.merge_stops("x", ("y", "x")) == ("x", "y")


def test_base_model_chat_ends_cleanly_without_template_tags(gemma_path, run_cli, llama_judge):
    r = run_cli(
        "run", "gemma3-270m", "--chat", "-p", "What is 12*7?", "--temp", "0", "-n", "64", "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    notices = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(notices) == 1 and "no chat template" in notices[0]
    for tag in ("<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "User:"):
        assert tag not in out["text"]
    # the judge: llama-cpp-python's greedy continuation of the transcript written by hand, cut
    # where it starts the next turn
    raw = llama_cpp_greedy(llama_judge(gemma_path), "User: What is 12*7?\nAssistant:", 64).text
    cut = min((raw.find(s) for s in chat_template.PLAIN_STOPS if s in raw), default=-1)
    assert cut != -1, f"the base model never started a new turn: {raw!r}"
    assert out["text"] == raw[:cut] and out["finish_reason"] == "stop"

    piped = run_cli("chat", "gemma3-270m", "--temp", "0", "-n", "64", input="What is 12*7?\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == raw[:cut] + "\n"
    assert "no chat template" in piped.stderr


# --- chat: multi-line input, /set, the token-limit notice ----------------------------------------
def test_chat_multiline_input_and_set(run_cli, smollm2_path, llama_judge):
    script = (
        '"""\nName three\ncolors.\n"""\n'
        "/set max_tokens 3\n"
        "/set temperature hot\n"
        "/set top_k -1\n"
        "/set\n"
        "Tell me a long story about a dragon.\n"
    )
    r = run_cli("chat", "--temp", "0", "-n", "64", input=script)
    assert r.returncode == 0, r.stderr
    api = llama_cpp_chat(
        llama_judge(smollm2_path), [{"role": "user", "content": "Name three\ncolors."}], 64
    )
    assert r.stdout.startswith(api.text + "\n"), (r.stdout, api.text)
    assert "(max_tokens = 3)" in r.stderr
    assert "error: temperature takes a number" in r.stderr
    assert "error: top_k must be >= 0" in r.stderr
    assert "max_tokens=3" in r.stderr and "temperature=0.0" in r.stderr  # /set alone lists them
    assert "(reply cut at the token limit of 3 tokens" in r.stderr
    assert r.stderr.count("reply cut") == 1 + (api.finish_reason == "length")


def test_run_ignore_eos_generates_to_the_limit(run_cli, smollm2_path, llama_judge):
    args = ("run", "--chat", "-p", "Say OK.", "--temp", "0", "--json")
    short = json.loads(run_cli(*args, "-n", "64").stdout)
    # where llama-cpp-python's own chat completion meets the end-of-generation token
    want = llama_cpp_chat(llama_judge(smollm2_path), [{"role": "user", "content": "Say OK."}], 64)
    assert want.finish_reason == "stop" and want.completion_tokens < 64
    assert (short["text"], short["finish_reason"]) == (want.text, "stop")
    assert short["usage"]["completion_tokens"] == want.completion_tokens
    long = run_cli(*args, "-n", "64", "--ignore-eos")
    assert long.returncode == 0, long.stderr
    assert json.loads(long.stdout)["usage"]["completion_tokens"] == 64


# --- discoverability -----------------------------------------------------------------------------
def test_device_names_are_never_truncated_at_100_columns(run_cli):
    from edge_llm.devices import profile

    r = run_cli("devices", env={"COLUMNS": "100"})
    assert r.returncode == 0, r.stderr
    for name in ["host", *profile.profile_files()]:
        assert any(
            line.split("│")[1].strip() == name
            for line in r.stdout.splitlines()
            if line.count("│") > 2
        ), name
    build = next(x for x in r.stdout.splitlines() if x.startswith("this llama.cpp build"))
    assert "CPU" in build.split("backends ")[1].split(";")[0].split(", ")


def test_help_shows_what_a_newcomer_looks_for(run_cli):
    bench = run_cli("bench", "--help", env={"COLUMNS": "200"})
    assert bench.returncode == 0 and "--suite" in bench.stdout and "bench report" in bench.stdout
    run = run_cli("run", "--help", env={"COLUMNS": "200"})
    assert "--ignore-eos" in run.stdout and "device profile" in run.stdout
    top = run_cli("--help", env={"COLUMNS": "200"})
    for cmd in ("pull", "rm", "serve", "models"):
        assert f" {cmd} " in top.stdout


def test_models_lists_paths_and_sizes(run_cli, smollm2_path):
    r = run_cli("models", env={"COLUMNS": "300"})
    assert r.returncode == 0, r.stderr
    assert str(smollm2_path) in r.stdout
    assert f"{smollm2_path.stat().st_size / 2**20:.0f} MiB" in r.stdout


# --- names ---------------------------------------------------------------------------------------
def test_model_names_come_from_the_registry_or_the_ggufs_own_base_name(smollm2_path, tmp_path):
    import edge_llm
    from convert import gguf_edit
    from edge_llm import gguf_info, registry

    # the registered file: its short name (registry.model_name, what Model, info and bench show)
    meta = gguf_info.read(smollm2_path).metadata
    assert registry.model_name(smollm2_path, meta) == "smollm2-135m-instruct"
    copy = tmp_path / "copy.gguf"
    gguf_edit.stamp(
        smollm2_path,
        copy,
        {
            "general.name": "Smollm2 135M 8k Lc100K Mix1 Ep2",
            "general.basename": "SmolLM2",
            "general.size_label": "135M",
            "general.finetune": "Instruct",
        },
    )
    assert gguf_info.read(copy).name == "SmolLM2-135M-Instruct"
    with edge_llm.load(copy, n_ctx=256) as m:
        assert m.name == "SmolLM2-135M-Instruct"
    plain = tmp_path / "plain.gguf"
    gguf_edit.stamp(smollm2_path, plain, {"general.name": "Plain Model"})
    # (the shipped file has no general.basename: general.name is what is left)
    meta = gguf_info.read(plain).metadata
    if "general.basename" not in meta:
        assert gguf_info.read(plain).name == "Plain Model"


# --- progress ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, text",
    [
        (("writing F16", 3, 10, 3 << 20, 10 << 20), "3/10 tensors, 3/10 MiB"),
        (("computing the importance matrix", 3, 32, 3, 32), "3/32 chunks"),
        (("quantizing to Q4_K_M", 0, 1, 0, 1), "running"),
        (("quantizing to Q4_K_M", 1, 1, 1, 1), "done"),
        (("comparing", 2, 8, 2, 8), "2/8 chunks"),
    ],
)
def test_progress_units_mean_something(call, text):
    assert progress.amount(*call) == text


def test_compare_reports_each_chunk(smollm2_path):
    from bench.fidelity import compare

    calls = []
    eval_text = (Path(__file__).parents[2] / "bench" / "data" / "eval.txt").read_text()
    r = compare(
        smollm2_path,
        smollm2_path,
        eval_text,
        n_ctx=128,
        max_chunks=3,
        progress=lambda *a: calls.append(a),
    )
    assert r["chunks"] == 3
    assert calls == [("comparing", i, 3) for i in range(4)]
