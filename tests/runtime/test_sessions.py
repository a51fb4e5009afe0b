"""Sessions: KV reuse across turns, system-prompt snapshots, save and restore."""

import pytest

import edge_llm
from edge_llm.errors import ConfigError
from tests.fixtures.judges import llama_cpp_chat

SYSTEM = {
    "role": "system",
    "content": "You are a careful tutor for primary school students. "
    "Answer in one short sentence and check your arithmetic twice.",
}


def test_turn_n_prefills_only_its_new_tokens(fresh):
    msgs = [SYSTEM, {"role": "user", "content": "What is 3+4?"}]
    first = fresh.chat(msgs, max_tokens=12, temperature=0)
    msgs += [first.message, {"role": "user", "content": "And 5+6?"}]
    second = fresh.chat(msgs, max_tokens=12, temperature=0)
    prefilled = second.usage.prompt_tokens - second.usage.cached_tokens
    new_turn = (
        len(fresh.chat_tokens(msgs))
        - len(fresh.chat_tokens(msgs[:2]))
        - first.usage.completion_tokens
    )
    assert (
        prefilled <= new_turn + 2
    )  # the new user turn (and the end-of-turn marker), not the history
    assert second.usage.cached_tokens >= first.usage.prompt_tokens


def test_a_repeated_system_prompt_is_not_prefilled_again(smollm2_path, llama_judge):
    with edge_llm.load(smollm2_path, n_ctx=1024) as m:
        a = m.chat(
            [SYSTEM, {"role": "user", "content": "What is 3+4?"}], max_tokens=8, temperature=0
        )
        m.chat(
            [{"role": "user", "content": "Name a fruit."}], max_tokens=8, temperature=0
        )  # evicts it
        c = m.chat(
            [SYSTEM, {"role": "user", "content": "What is 5+6?"}], max_tokens=8, temperature=0
        )
        n_system = m._system_prefix(
            [SYSTEM, {"role": "user", "content": "x"}],
            m.chat_tokens([SYSTEM, {"role": "user", "content": "x"}]),
        )
        # judge: SmolLM2's ChatML system turn written out by hand, tokenized by llama-cpp-python
        from llama_cpp import Llama

        vocab = Llama(str(smollm2_path), vocab_only=True, verbose=False)
        turn = f"<|im_start|>system\n{SYSTEM['content']}<|im_end|>\n"
        want = len(vocab.tokenize(turn.encode(), add_bos=False, special=True))
        vocab.close()
        assert n_system == want
        assert a.usage.cached_tokens == 0 and n_system > 20
        assert c.usage.cached_tokens == want
        # the reply after a reused system prefix: llama-cpp-python's own, from scratch
        want = llama_cpp_chat(
            llama_judge(smollm2_path), [SYSTEM, {"role": "user", "content": "What is 5+6?"}], 8
        )
        assert c.text == want.text


def test_save_and_restore_gives_the_same_continuation(smollm2_path, tmp_path, llama_judge):
    msgs = [SYSTEM, {"role": "user", "content": "What is 5+6?"}]
    with edge_llm.load(smollm2_path, n_ctx=1024) as m:
        r = m.chat(msgs, max_tokens=12, temperature=0)
        m.save_session(tmp_path / "s.session", messages=msgs + [r.message])
        follow = msgs + [r.message, {"role": "user", "content": "And 7+1?"}]
        original = m.chat(follow, max_tokens=12, temperature=0)
    with edge_llm.load(smollm2_path, n_ctx=1024) as m2:
        header = m2.load_session(tmp_path / "s.session")
        assert header["messages"][-1] == r.message
        restored = m2.chat(follow, max_tokens=12, temperature=0)
    assert restored.text == original.text
    # and both are the model's own reply, as llama-cpp-python renders and decodes it from scratch
    want = llama_cpp_chat(llama_judge(smollm2_path), follow, 12)
    assert (original.text, original.usage.prompt_tokens) == (want.text, want.prompt_tokens)
    assert restored.usage.cached_tokens == original.usage.cached_tokens > len(header["tokens"]) - 2
    assert not list(tmp_path.glob("*.part"))  # written atomically


def test_a_session_from_another_model_is_refused(smollm2_path, gemma_path, tmp_path):
    with edge_llm.load(smollm2_path, n_ctx=256) as m:
        m.generate("hello", max_tokens=2, temperature=0)
        m.save_session(tmp_path / "s.session")
    with edge_llm.load(gemma_path, n_ctx=256) as g:
        with pytest.raises(ConfigError, match="saved with SmolLM2"):
            g.load_session(tmp_path / "s.session")
        (tmp_path / "junk").write_bytes(b"not a session")
        with pytest.raises(ConfigError, match="not an edge-llm session"):
            g.load_session(tmp_path / "junk")


def test_chat_save_and_load_commands(run_cli, tmp_path):
    f = tmp_path / "chat.session"
    out = run_cli("chat", "--temp", "0", "-n", "8", input=f"My name is Ada.\n/save {f}\n")
    assert out.returncode == 0 and f.exists() and "saved 2 messages" in out.stderr
    out = run_cli("chat", "--temp", "0", "-n", "8", input=f"/load {f}\n/stats\n")
    assert out.returncode == 0 and "loaded 2 messages" in out.stderr
