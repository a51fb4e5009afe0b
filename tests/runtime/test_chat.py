"""Chat: the template the runtime renders and feeds, the sandbox, and the chat command.

Judges: the template written out by hand, and llama-cpp-python's own `Llama` (its tokenizer,
and `create_chat_completion`: its own Jinja rendering of the GGUF's template, decoded greedily).
"""

import pytest
from jinja2.exceptions import SecurityError  # noqa: F401  (the sandbox's own error type)

from edge_llm import chat_template
from edge_llm.errors import InvalidModelError, PromptError
from tests.fixtures.judges import llama_cpp_chat

TWO_TURNS = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
    {"role": "user", "content": "What is 12*7?"},
]
# SmolLM2-Instruct's template, written out by hand (it adds a default system message).
BY_HAND = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello! How can I help you today?<|im_end|>\n"
    "<|im_start|>user\nWhat is 12*7?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
IM_START, IM_END = 1, 2  # SmolLM2's special token ids


def test_chat_feeds_the_tokens_of_the_template_rendered_by_hand(fresh, smollm2_path, llama_judge):
    judge = llama_judge(smollm2_path)
    expected = judge.tokenize(BY_HAND.encode(), add_bos=False, special=True)
    assert fresh.render_chat(TWO_TURNS) == BY_HAND
    fed = fresh.chat_tokens(TWO_TURNS)
    assert fed == expected
    # the markers are single special tokens, not text split into pieces
    assert fed[0] == IM_START and fed.count(IM_START) == 5 and fed.count(IM_END) == 4
    reply = fresh.chat(TWO_TURNS, max_tokens=24, temperature=0)
    assert reply.usage.prompt_tokens == len(expected)
    want = llama_cpp_chat(judge, TWO_TURNS, 24)
    assert want.prompt_tokens == len(expected)  # the judge renders the same prompt
    assert (reply.text, reply.finish_reason) == (want.text, want.finish_reason)
    assert reply.usage.completion_tokens == want.completion_tokens
    fresh.reset()
    assert fresh.generate(expected, max_tokens=24, temperature=0).text == reply.text
    assert reply.message == {"role": "assistant", "content": reply.text}


def test_a_system_message_replaces_the_default_one(fresh):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert fresh.render_chat(msgs) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_templates_run_in_a_sandbox():
    msgs = [{"role": "user", "content": "x"}]
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(InvalidModelError, match="chat template failed"):
        chat_template.render(escape, msgs)
    mutate = "{% set _ = messages.append({'role': 'user', 'content': 'injected'}) %}ok"
    with pytest.raises(InvalidModelError, match="chat template failed"):
        chat_template.render(mutate, msgs)


def test_template_raise_exception_is_a_prompt_error():
    src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
    with pytest.raises(PromptError, match="first must be user"):
        chat_template.render(src, [{"role": "assistant", "content": "x"}])


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"content": "x"}], "'role' and 'content'"),
        ([{"role": "wizard", "content": "x"}], "role 'wizard'"),
        ([{"role": "user", "content": 5}], "content must be a string"),
        ([{"role": "user", "content": "  "}], "empty"),
    ],
)
def test_malformed_messages_are_prompt_errors(fresh, messages, fragment):
    with pytest.raises(PromptError, match=fragment):
        fresh.chat(messages)


def test_second_turn_prefills_only_the_new_tokens(fresh):
    msgs = [{"role": "user", "content": "Name a color."}]
    first = fresh.chat(msgs, max_tokens=16, temperature=0)
    msgs += [first.message, {"role": "user", "content": "Another one?"}]
    second = fresh.chat(msgs, max_tokens=16, temperature=0)
    # everything up to the end of the first reply is still in the KV cache
    assert (
        second.usage.cached_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens - 1
    )
    assert second.usage.prompt_tokens - second.usage.cached_tokens < 20


def test_chat_reads_stdin_lines_when_piped(run_cli, smollm2_path, llama_judge):
    out = run_cli("chat", "--temp", "0", "-n", "24", input="Name three colors.\n")
    assert out.returncode == 0, out.stderr
    want = llama_cpp_chat(
        llama_judge(smollm2_path), [{"role": "user", "content": "Name three colors."}], 24
    )
    assert want.text.strip()
    assert out.stdout == want.text + "\n"
    assert out.stderr == ""  # no banner or prompt when piped


def test_chat_commands_when_piped(run_cli, smollm2_path, llama_judge):
    script = "/system You answer in one word.\nCapital of France?\n/stats\n/reset\n/nope\n/exit\n/stats\n"
    out = run_cli("chat", "--temp", "0", "-n", "8", input=script)
    assert out.returncode == 0, out.stderr
    assert "system message set" in out.stderr
    # the one reply: the model's own under that system message, as llama-cpp-python chats
    turns = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]
    want = llama_cpp_chat(llama_judge(smollm2_path), turns, 8)
    assert out.stdout == want.text + "\n"
    # /stats: that reply's count and finish reason
    assert f"generated {want.completion_tokens} tokens" in out.stderr
    assert want.finish_reason == "stop" and "finish: stop" in out.stderr
    assert "conversation cleared" in out.stderr
    assert "unknown command /nope" in out.stderr
    assert out.stderr.count("finish:") == 1  # nothing after /exit ran
