"""Batched greedy generation (edge_llm.llama.batched) against llama-cpp-python's own ``Llama``.

The judge evaluates each prompt in one batch and then one token per ``eval``, argmax in numpy,
with the runtime's cache (F16 KV, flash attention on: what llama.cpp's "auto" picks on a CPU). A
wave of one prompt goes through the same kernels, so it must equal the judge token for token. In a wave of many, each step's tokens are
rows of one matmul, and llama.cpp's CPU kernels round a multi-row product differently from a
one-row one (measured on SmolLM2 Q4_1: up to ~0.65 in a logit for the same prompt evaluated in
one batch or token by token; evaluating the last token alone or among other sequences' rows gives
bit-identical logits). So exact equality is not guaranteed there: the first token (from the
prompt's batch) is always the judge's, and where the two paths part it is at a near-tie of the
judge's logits. The agreement rate is printed (pytest -s).
"""

import numpy as np
import pytest

from bench.suites import k12_math as K
from edge_llm.llama.batched import BatchedGreedy

llama_cpp = pytest.importorskip("llama_cpp")

MAX = 24


@pytest.fixture(scope="module")
def judge(smollm2_path):
    llm = llama_cpp.Llama(
        str(smollm2_path),
        n_ctx=1024,
        n_batch=512,
        n_threads=2,
        flash_attn=True,
        type_k=1,
        type_v=1,
        verbose=False,
    )
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def gen(smollm2_path):
    with BatchedGreedy(smollm2_path, n_seq=8, n_ctx=2048, threads=2) as g:
        yield g


@pytest.fixture(scope="module")
def prompts(judge):
    """k12 few-shot prompts in English and Chinese (raw text, sharing each language's prefix)."""
    ps = K.generate(12, 0)
    ps = sorted(ps, key=lambda p: p.language)
    return [judge.tokenize(K.prompt(p, 3).encode(), add_bos=True, special=True) for p in ps]


def greedy(llm, prompt: list[int], max_tokens: int) -> tuple[list[int], list[np.ndarray]]:
    """The judge's greedy tokens (stopping at end-of-generation) and the logits it chose from."""
    llm.reset()
    llm.eval(prompt)
    out, rows = [], []
    for _ in range(max_tokens):
        ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        row = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)
        tok = int(np.argmax(row))
        rows.append(row)
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(tok)
        if len(out) < max_tokens:
            llm.eval([tok])
    return out, rows


def test_a_wave_of_one_is_the_judges_greedy_output_token_for_token(gen, judge, prompts):
    for p in prompts[:4] + prompts[-4:]:
        gen.reset()
        (got,) = gen.generate([p], max_tokens=MAX)
        want, _ = greedy(judge, p, MAX)
        assert got.tokens == want
        assert got.text == judge.detokenize(want).decode("utf-8", errors="replace")


def test_a_wave_of_many_parts_from_the_judge_only_at_near_ties(gen, judge, prompts):
    gen.reset()
    got = gen.generate(prompts, max_tokens=MAX)
    same, gaps = 0, []
    for p, g in zip(prompts, got):
        want, rows = greedy(judge, p, MAX)
        assert g.tokens[0] == want[0]  # the prompt's own batch: identical logits
        if g.tokens == want:
            same += 1
            continue
        k = next(i for i, (a, b) in enumerate(zip(g.tokens, want)) if a != b)
        gaps.append(rows[k][want[k]] - rows[k][g.tokens[k]])
    print(f"batched = one-by-one on {same}/{len(prompts)} prompts; parting gaps {gaps}")
    assert all(0 <= x < 1.0 for x in gaps)


def test_stop_string_cuts_the_text_where_the_newline_begins(gen, judge, prompts):
    gen.reset()
    (g,) = gen.generate([prompts[0]], max_tokens=MAX, stop=["\n"])
    want, _ = greedy(judge, prompts[0], MAX)
    full = judge.detokenize(want).decode()
    assert "\n" in full  # the model writes a line and goes on
    assert g.finish_reason == "stop" and "\n" not in g.text
    assert g.text == full[: full.index("\n")]
    assert g.tokens == want[: len(g.tokens)] and "\n" in judge.detokenize(g.tokens).decode()


def test_max_tokens_and_end_of_generation(gen, judge, smollm2_path):
    chat = judge.tokenize(
        b"<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n",
        add_bos=False,
        special=True,
    )
    gen.reset()
    short, full = gen.generate([chat, chat], max_tokens=2), gen.generate([chat], max_tokens=MAX)
    assert [len(x.tokens) for x in short] == [2, 2]
    assert {x.finish_reason for x in short} == {"length"}
    want, _ = greedy(judge, chat, MAX)
    assert len(want) < MAX  # the judge met <|im_end|>
    assert full[0].finish_reason == "stop" and full[0].tokens == want
    assert "<|im_end|>" not in full[0].text


def test_done_predicate_stops_each_sequence_on_its_own(gen, judge, prompts):
    def done(text: str) -> bool:
        return K._DONE.search(text) is not None

    gen.reset()
    got = gen.generate(prompts[:6], max_tokens=32, done=done)
    assert any(g.finish_reason == "cancelled" for g in got)
    for g in got:
        text = judge.detokenize(g.tokens).decode("utf-8", errors="replace")
        if g.finish_reason == "cancelled":
            assert g.text == text and done(text)
            assert not done(judge.detokenize(g.tokens[:-1]).decode("utf-8", errors="replace"))
        else:
            assert not done(g.text)


def test_chinese_output_is_whole_characters(gen, judge, prompts):
    zh = prompts[-1]
    gen.reset()
    (g,) = gen.generate([zh], max_tokens=MAX)
    assert any("\u4e00" <= c <= "\u9fff" for c in g.text)
    assert "\ufffd" not in g.text
    assert g.text == judge.detokenize(g.tokens).decode("utf-8")
