"""Every bad input: one line that says what is wrong and what to do, exit code 2, no traceback."""

import pytest

import edge_llm
from edge_llm.errors import ConfigError, InvalidModelError, ModelNotFoundError, PromptError


def assert_user_error(out, *fragments):
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def broken(tmp_path_factory, smollm2_path):
    d = tmp_path_factory.mktemp("broken")
    data = smollm2_path.read_bytes()
    (d / "notes.gguf").write_text("these are my notes, not a model\n")
    (d / "half.gguf").write_bytes(data[: len(data) // 2])
    (d / "header.gguf").write_bytes(data[:200])
    (d / "empty.gguf").write_bytes(b"")
    return d


def test_missing_file(run_cli, tmp_path):
    out = run_cli("run", str(tmp_path / "nope.gguf"), "-p", "hi")
    assert_user_error(out, "model file not found", "nope.gguf", "edge-llm models")
    with pytest.raises(ModelNotFoundError):
        edge_llm.load(tmp_path / "nope.gguf")


def test_a_directory_is_not_a_model(run_cli, tmp_path):
    assert_user_error(run_cli("run", str(tmp_path), "-p", "hi"), "is a directory")


@pytest.mark.parametrize("name", ["notes.gguf", "empty.gguf"])
def test_file_that_is_not_gguf(run_cli, broken, name):
    out = run_cli("run", str(broken / name), "-p", "hi")
    assert_user_error(out, "is not a GGUF file", "convert")
    with pytest.raises(InvalidModelError, match="not a GGUF file"):
        edge_llm.load(broken / name)


def test_truncated_gguf(run_cli, broken, smollm2_path):
    size = smollm2_path.stat().st_size
    out = run_cli("run", str(broken / "half.gguf"), "-p", "hi")
    assert_user_error(out, "is truncated", f"need {size} bytes", f"has {size // 2}", "again")
    assert_user_error(run_cli("info", str(broken / "half.gguf")), "is truncated")
    with pytest.raises(InvalidModelError, match="truncated"):
        edge_llm.load(broken / "half.gguf")


def test_gguf_cut_inside_its_header(run_cli, broken):
    out = run_cli("run", str(broken / "header.gguf"), "-p", "hi")
    assert_user_error(out, "header does not parse", "again")


def test_unknown_model_name(run_cli):
    out = run_cli("run", "llama-9000", "-p", "hi")
    assert_user_error(out, "unknown model 'llama-9000'", "smollm2-135m-instruct", "gemma3-270m")
    with pytest.raises(ModelNotFoundError):
        edge_llm.load("llama-9000")


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt(run_cli, fresh, prompt):
    assert_user_error(run_cli("run", "-p", prompt), "prompt is empty")
    with pytest.raises(PromptError, match="empty"):
        fresh.generate(prompt)
    with pytest.raises(PromptError, match="empty"):
        fresh.generate([])


def test_no_prompt_at_all(run_cli):
    assert_user_error(run_cli("run", input=""), "prompt is empty")


def test_prompt_longer_than_the_context(run_cli, fresh):
    long = "word " * 3000
    out = run_cli("run", "-p", long, "--ctx", "512")
    assert_user_error(out, "the context holds 512", "--ctx", "8192")
    with pytest.raises(PromptError, match="context holds 2048"):
        fresh.generate(long)


def test_out_of_vocabulary_token_ids(fresh):
    with pytest.raises(PromptError, match="outside the vocabulary"):
        fresh.generate([1, 2, 10**9])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--top-p", "2"], "top_p"),
        (["--temp", "-1"], "temperature"),
        (["-n", "0"], "max_tokens"),
        (["--threads", "0"], "threads"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--ctx", "4"], "n_ctx"),
    ],
)
def test_options_out_of_range(run_cli, args, fragment):
    assert_user_error(run_cli("run", "-p", "hi", *args), fragment)


def test_bad_options_through_the_api(fresh, smollm2_path):
    with pytest.raises(ConfigError, match="unknown sampling option"):
        fresh.generate("hi", temprature=0.5)
    with pytest.raises(ConfigError, match="kv_type"):
        edge_llm.load(smollm2_path, kv_type="q3")


def test_chat_with_a_too_long_message_fails_cleanly_when_piped(run_cli):
    out = run_cli("chat", "--ctx", "256", input="word " * 1000 + "\n")
    assert_user_error(out, "context holds 256")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--no-such-option"], "No such option: --no-such-option"),
        (["bench", "run", "--out", "x"], "No such option: --out"),
        (["run", "--max-tokens", "abc", "hi"], "Invalid value for '--max-tokens'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_click_messages_not_tracebacks(run_cli, args, fragment):
    # Typer from 0.17 on vendors click (typer._click): its usage errors are not click's classes,
    # and main() once let them through as a traceback with exit 1.
    out = run_cli(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert f"Error: {fragment}" in out.stderr
