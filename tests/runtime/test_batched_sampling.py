"""Batched sampling (edge_llm.llama.batched.sample_continuations) draws from the model's own
distribution.

Judge: llama-cpp-python's own ``Llama`` evaluates the prompt and gives the next token's logits;
their softmax at the temperature is the distribution the first sampled token must follow. Many
copies of one prompt are sampled (in waves of 128 rows), and a chi-square test (scipy) compares
the counts of the likely tokens (the rest pooled) with that distribution. The continuation's
structure (prompt kept, length, no end-of-generation token, reproducible with a seed) is checked
on the side.
"""

import numpy as np
import pytest
from scipy import stats

from edge_llm.llama.batched import sample_continuations

llama_cpp = pytest.importorskip("llama_cpp")

PROMPT = "My favourite animal is the"


@pytest.fixture(scope="module")
def judge(smollm2_path):
    llm = llama_cpp.Llama(str(smollm2_path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_first_tokens_follow_the_softmax_of_the_logits(smollm2_path, judge, temperature):
    prompt = judge.tokenize(PROMPT.encode(), add_bos=False, special=False)
    judge.reset()
    judge.eval(prompt)
    logits = np.array(judge.scores[len(prompt) - 1], dtype=np.float64) / temperature
    p = np.exp(logits - logits.max())
    p /= p.sum()
    n = 384
    out = sample_continuations(
        smollm2_path,
        [prompt] * n,
        length=len(prompt) + 1,
        temperature=temperature,
        seed=7,
        n_seq=128,
        threads=2,
    )
    firsts = np.array([o[len(prompt)] for o in out if len(o) > len(prompt)])
    assert len(firsts) >= n - int(n * p[[judge.token_eos()]].sum() * 3) - 5
    # the tokens expected at least 5 times each, the rest pooled
    likely = np.flatnonzero(p * len(firsts) >= 5)
    assert len(likely) >= 5, "the prompt should leave the next token open"
    observed = [int((firsts == t).sum()) for t in likely]
    expected = list(p[likely] * len(firsts))
    observed.append(len(firsts) - sum(observed))
    expected.append(len(firsts) - sum(expected))
    chi2, pval = stats.chisquare(observed, np.array(expected) * sum(observed) / sum(expected))
    print(f"T={temperature}: {len(likely)} likely tokens, chi2 {chi2:.1f}, p {pval:.3f}")
    assert pval > 1e-3


def test_continuations_keep_the_prompt_and_stop_at_the_length(smollm2_path, judge):
    prompts = [
        judge.tokenize(t.encode(), add_bos=False, special=False)
        for t in ("Once upon a time", "def add(a, b):", "The capital of France is", "1, 2, 3,")
    ]
    a = sample_continuations(smollm2_path, prompts, length=24, seed=3, n_seq=3, threads=2)
    b = sample_continuations(smollm2_path, prompts, length=24, seed=3, n_seq=3, threads=2)
    assert a == b  # the same seed and waves: the same samples
    for p, o in zip(prompts, a):
        assert o[: len(p)] == p and len(p) < len(o) <= 24
        assert not any(llama_cpp.llama_vocab_is_eog(judge._model.vocab, t) for t in o[len(p) :])
    c = sample_continuations(smollm2_path, prompts, length=24, seed=4, n_seq=3, threads=2)
    assert c != a
    with pytest.raises(ValueError):
        sample_continuations(smollm2_path, [prompts[0]], length=len(prompts[0]), threads=2)


def test_ban_eog_fills_every_continuation(smollm2_path, judge):
    """After a finished chat answer the model ends the turn almost surely; with the ban (llama.cpp's
    logit-bias sampler) no continuation ends early and none holds an end-of-generation token."""
    text = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\nYes."
    prompt = judge.tokenize(text.encode(), add_bos=False, special=True)
    n, length = 16, len(prompt) + 4
    free = sample_continuations(smollm2_path, [prompt] * n, length=length, seed=1, threads=2)
    assert sum(len(o) < length for o in free) >= n // 2  # most stop at the end of the turn
    banned = sample_continuations(
        smollm2_path, [prompt] * n, length=length, seed=1, ban_eog=True, threads=2
    )
    assert all(len(o) == length for o in banned)
    new = [t for o in banned for t in o[len(prompt) :]]
    assert not any(llama_cpp.llama_vocab_is_eog(judge._model.vocab, t) for t in new)
