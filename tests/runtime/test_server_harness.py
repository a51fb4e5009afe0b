"""What evaluation harnesses need of the server (lm-evaluation-harness's ``local-completions``
and ``local-chat-completions``): prompt log-probabilities with ``echo``, the model's tokenizer
over HTTP, and a final assistant message continued.

Judges: llama-cpp-python's own ``Llama`` on the same GGUF (``logits_all=True`` logits turned into
log-probabilities with numpy; its tokenizer; its greedy completion of a prompt written out by
hand), the official openai client, and lm-eval's own response parser and remote tokenizer where
lm-eval is installed (the bench extra).
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from llama_cpp import Llama

import edge_llm
from edge_llm.server import create_app
from tests.fixtures.server import Running

MODEL_ID = "smollm2-135m-instruct"
PROMPT = "The capital of France is Paris. The capital of Germany is"
# The judge runs with flash attention on, as llama.cpp picks it for the server's scoring context
# on a CPU (off, log-probabilities move by up to 0.1 nat: F16 accumulation); then they agree to
# about 1e-8 whatever the batch sizes. The tolerance leaves room for other CPUs' kernels.
TOL = 1e-4


@pytest.fixture(scope="module")
def model(smollm2_path):
    m = edge_llm.load(smollm2_path, n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="module")
def server(model):
    s = Running(create_app(model, model_id=MODEL_ID, api_key=None))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def judge(smollm2_path):
    j = Llama(str(smollm2_path), n_ctx=1024, logits_all=True, flash_attn=True, verbose=False)
    yield j
    j.close()


def judge_logprobs(judge: Llama, tokens: list[int]) -> np.ndarray:
    """log-softmax of llama-cpp-python's logits after each prompt token ([n, vocab])."""
    judge.reset()
    judge.eval(tokens)
    x = np.array(judge.scores[: len(tokens)], dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


# --- echo -------------------------------------------------------------------------------------
def test_echo_gives_every_prompt_tokens_logprob_as_llama_cpp_computes_it(server, judge):
    r = server.client().completions.create(
        model=MODEL_ID, prompt=PROMPT, max_tokens=0, echo=True, logprobs=3, temperature=0
    )
    c = r.choices[0]
    tokens = judge.tokenize(PROMPT.encode(), add_bos=True, special=True)
    ref = judge_logprobs(judge, tokens)
    lp = c.logprobs
    assert c.text == PROMPT and c.finish_reason == "length"
    assert "".join(lp.tokens) == PROMPT and len(lp.tokens) == len(tokens) > 5
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    got = np.array(lp.token_logprobs[1:])
    want = np.array([ref[j - 1, tokens[j]] for j in range(1, len(tokens))])
    assert np.abs(got - want).max() < TOL, np.abs(got - want).max()
    for j in range(1, len(tokens)):
        top = lp.top_logprobs[j]
        best = np.sort(ref[j - 1])[::-1][:3]
        # the three likeliest and the prompt's own token (OpenAI: up to logprobs + 1 entries)
        assert 3 <= len(top) <= 4 and lp.tokens[j] in top
        assert np.allclose(sorted(top.values(), reverse=True)[:3], best, atol=TOL)
        greedy = int(np.argmax(ref[j - 1])) == tokens[j]
        if abs(np.sort(ref[j - 1])[-1] - np.sort(ref[j - 1])[-2]) > TOL:  # not a near-tie
            assert (lp.token_logprobs[j] == max(top.values())) == greedy
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(tokens))]
    assert r.usage.prompt_tokens == len(tokens) and r.usage.completion_tokens == 0


def test_token_id_prompts_as_lm_eval_sends_them(server, model, judge):
    """lm-eval's loglikelihood request: [[ids], [ids]], echo, logprobs 1, max_tokens 1."""
    texts = [PROMPT, "One, two, three, four"]
    ids = [judge.tokenize(t.encode(), add_bos=True, special=True) for t in texts]
    body = {
        "model": MODEL_ID,
        "prompt": ids,
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    out = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    assert [c["index"] for c in out["choices"]] == [0, 1]
    for c, toks, text in zip(out["choices"], ids, texts):
        lp = c["logprobs"]
        ref = judge_logprobs(judge, toks)
        next_token = model.generate(toks, max_tokens=1, temperature=0)
        assert c["text"] == text + next_token.text
        assert len(lp["token_logprobs"]) == len(toks) + 1  # the prompt, then the generated token
        got = np.array(lp["token_logprobs"][1 : len(toks)])
        want = np.array([ref[j - 1, toks[j]] for j in range(1, len(toks))])
        assert np.abs(got - want).max() < TOL
        assert lp["token_logprobs"][-1] == pytest.approx(ref[-1, next_token.tokens[0]], abs=TOL)
    # lm-eval's own parser: the continuation (after 5 context tokens) sums to the judge's
    lm_eval = pytest.importorskip("lm_eval.models.openai_completions")
    parsed = lm_eval.LocalCompletionsAPI.parse_logprobs(out, ids, [5, 3])
    for (ll, _), toks, ctx in zip(parsed, ids, [5, 3]):
        ref = judge_logprobs(judge, toks)
        assert ll == pytest.approx(
            sum(ref[j - 1, toks[j]] for j in range(ctx, len(toks))), abs=TOL * len(toks)
        )


def test_a_prompt_whose_next_token_is_eos_still_ends_with_a_generated_entry(server, judge):
    """lm-eval drops the last entry as the generated token: when the model's next token ends
    the text, that entry must still be there (for EOS), or the continuation loses its last
    token. This prompt's greedy next token is <|im_end|> (checked against the judge)."""
    text = "<|im_start|>user\nSay OK.<|im_end|>\n<|im_start|>assistant\nOK."
    toks = judge.tokenize(text.encode(), add_bos=True, special=True)
    ref = judge_logprobs(judge, [*toks, judge.token_eos()])
    assert int(np.argmax(ref[len(toks) - 1])) == judge.token_eos()
    body = {"prompt": [toks], "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
    out = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    lp = out["choices"][0]["logprobs"]
    assert out["choices"][0]["finish_reason"] == "stop" and out["choices"][0]["text"] == text
    assert len(lp["token_logprobs"]) == len(toks) + 1
    assert lp["token_logprobs"][-1] == pytest.approx(ref[-2, judge.token_eos()], abs=TOL)
    lm_eval = pytest.importorskip("lm_eval.models.openai_completions")
    [(ll, greedy)] = lm_eval.LocalCompletionsAPI.parse_logprobs(out, [toks], [len(toks) - 2])
    assert ll == pytest.approx(ref[-4, toks[-2]] + ref[-3, toks[-1]], abs=TOL)


def test_echo_of_a_one_token_prompt_and_without_logprobs(server, judge):
    tok = judge.tokenize(b"Hello", add_bos=True, special=True)
    assert len(tok) == 1
    body = {"prompt": tok, "echo": True, "logprobs": 2, "max_tokens": 0}
    c = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    assert c["text"] == "Hello" and c["logprobs"]["token_logprobs"] == [None]
    assert c["logprobs"]["tokens"] == ["Hello"] and c["logprobs"]["text_offset"] == [0]
    body = {"prompt": "Hello", "echo": True, "max_tokens": 0}
    c = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    assert c["text"] == "Hello" and c["logprobs"] is None


def test_echo_refuses_what_it_cannot_do(server):
    post = lambda body: httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)  # noqa: E731
    r = post({"prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 0, "stream": True})
    assert r.status_code == 400 and "stream" in r.json()["error"]["message"]
    r = post({"prompt": [[1, 2]] * 65, "echo": True, "max_tokens": 0})
    assert r.status_code == 400 and "at most 64" in r.json()["error"]["message"]
    r = post({"prompt": [[5, 10**9]], "echo": True, "logprobs": 1, "max_tokens": 0})
    assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]["message"]
    r = post({"prompt": PROMPT, "max_tokens": 0})  # without echo there is nothing to return
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


# --- /tokenize, /detokenize -------------------------------------------------------------------
TEXTS = [
    "Hello, world!",
    "naïve café, 東京 and 🙂: bytes split across tokens",
    "<|im_start|>user\nHi<|im_end|>\n",
    "  leading spaces and\ttabs\n\nnewlines  ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokenize_and_detokenize_round_trip_as_llama_cpp_tokenizes(server, judge, text):
    post = lambda path, body: httpx.post(f"{server.url}{path}", json=body, timeout=30).json()  # noqa: E731
    want = judge.tokenize(text.encode(), add_bos=False, special=True)
    got = post("/tokenize", {"content": text})["tokens"]
    assert got == want
    plain = post("/tokenize", {"content": text, "parse_special": False})["tokens"]
    assert plain == judge.tokenize(text.encode(), add_bos=False, special=False)
    assert post("/detokenize", {"tokens": got})["content"] == text
    assert text == judge.detokenize(want, special=True).decode()
    pieces = post("/tokenize", {"content": text, "with_pieces": True})["tokens"]
    assert [p["id"] for p in pieces] == want
    raw = b"".join(
        bytes(p["piece"]) if isinstance(p["piece"], list) else p["piece"].encode() for p in pieces
    )
    assert raw == text.encode()
    # vLLM's shape (lm-eval's remote tokenizer)
    v = post("/tokenize", {"prompt": text, "add_special_tokens": False})
    assert v["tokens"] == want and v["count"] == len(want)
    assert post("/detokenize", {"tokens": want})["prompt"] == text


def test_tokenizer_info_and_lm_evals_remote_tokenizer(server, judge):
    info = httpx.get(f"{server.url}/tokenizer_info", timeout=30).json()
    assert info["eos_token"] == judge.detokenize([judge.token_eos()], special=True).decode()
    assert "<|im_start|>" in info["chat_template"]
    utils = pytest.importorskip("lm_eval.utils")
    assert utils.check_remote_tokenizer_support(f"{server.url}/v1/completions")
    tok = utils.RemoteTokenizer(f"{server.url}/v1/completions")
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == judge.tokenize(text.encode(), add_bos=False, special=True)
        assert tok.decode(ids) == text
    assert tok.eos_token_id == judge.token_eos()


def test_tokenize_refuses_bad_input(server):
    post = lambda path, body: httpx.post(f"{server.url}{path}", json=body, timeout=30)  # noqa: E731
    r = post("/tokenize", {"add_special": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "content"
    r = post("/detokenize", {"tokens": [1, -3]})
    assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]["message"]
    r = post("/detokenize", {"tokens": "12"})
    assert r.status_code == 400 and "list of token ids" in r.json()["error"]["message"]


def test_the_api_key_guards_the_tokenizer_routes(model):
    s = Running(create_app(model, model_id=MODEL_ID, api_key="secret"))
    try:
        assert httpx.post(f"{s.url}/tokenize", json={"content": "hi"}).status_code == 401
        assert httpx.get(f"{s.url}/tokenizer_info").status_code == 401
        ok = httpx.post(
            f"{s.url}/tokenize", json={"content": "hi"}, headers={"Authorization": "Bearer secret"}
        )
        assert ok.status_code == 200 and ok.json()["tokens"]
    finally:
        s.stop()


# --- a final assistant message is continued ---------------------------------------------------
SYSTEM = "You are a helpful assistant."
QUESTION = "What is the capital of France?"
PREFIX = "The capital of France is"


def test_a_trailing_assistant_message_is_continued(server, judge):
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": PREFIX},
    ]
    r = server.client().chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=8, temperature=0
    )
    # by hand: SmolLM2's ChatML, the assistant's turn left open after its text
    by_hand = (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
        f"<|im_start|>assistant\n{PREFIX}"
    )
    judge.reset()
    want = judge.create_completion(by_hand, max_tokens=8, temperature=0)
    assert r.choices[0].message.content == want["choices"][0]["text"]
    assert r.usage.prompt_tokens == len(judge.tokenize(by_hand.encode(), special=True))
    # and not a new turn: the same conversation without the prefix answers from the start
    fresh = server.client().chat.completions.create(
        model=MODEL_ID, messages=messages[:2], max_tokens=8, temperature=0
    )
    assert fresh.usage.prompt_tokens == len(
        judge.tokenize(by_hand.removesuffix(PREFIX).encode(), special=True)
    )


CONTENTS = ["The capital of France is", "The answer is ", " Well,", "", "Paris. Paris"]


@pytest.mark.parametrize("content", CONTENTS)
def test_the_continued_prompt_is_transformers_continue_final_message(model, content):
    """Judge: transformers' own chat-template rendering with ``continue_final_message`` (what
    lm-eval and vLLM use), on the model's template."""
    render = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": content},
    ]
    [want], _ = render([messages], chat_template=model.chat_template, continue_final_message=True)
    assert model.detokenize(model.chat_tokens(messages), special=True) == want


TRIMMING = (  # a template that strips each message, as some do
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize("content", ["The answer is ", "  spaced  ", "x"])
def test_continue_final_follows_transformers_on_a_template_that_trims(content):
    from edge_llm import chat_template

    render = pytest.importorskip("transformers.utils.chat_template_utils").render_jinja_template
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": content}]
    [want], _ = render([messages], chat_template=TRIMMING, continue_final_message=True)
    whole = chat_template.render(TRIMMING, messages, add_generation_prompt=False)
    assert chat_template.continue_final(whole, content) == want
