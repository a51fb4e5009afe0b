"""The scoring context against judges outside it.

- Shared-prefix scoring (the prefix evaluated once, the options after it, sequentially or in one
  batch on sequences copied from the prefix) against the plain log-likelihood of each whole
  sequence computed by llama-cpp-python's high-level ``Llama`` (``logits_all``), log-softmax in
  numpy. With one-token batches and an F32 KV cache on both sides the kernels are the same, so
  only the KV cache's cell layout differs: agreement to float32 rounding. (With an F16 cache the
  attention's kernel follows the number of cells in use, and a token after other options' cells
  can move by ~0.005 nats; the same holds for batch sizes.)
- The reductions against scipy (log-softmax) and a full sort (top-k).
"""

import numpy as np
import pytest

from edge_llm.llama.scoring import ScoringContext, chunk_plan, log_softmax, target_logprobs, top_k

llama_cpp = pytest.importorskip("llama_cpp")

PREFIX = "Question: Which planet is known as the red planet?\nAnswer:"
OPTIONS = [" Mars", " Venus", " the planet Jupiter", " Saturn", " Mercury, the smallest", " Earth"]


@pytest.fixture(scope="module")
def judge(smollm2_path):
    llm = llama_cpp.Llama(
        str(smollm2_path),
        n_ctx=512,
        n_batch=1,
        n_ubatch=1,
        n_threads=1,
        logits_all=True,
        flash_attn=False,
        type_k=0,
        type_v=0,
        verbose=False,
    )
    yield llm
    llm.close()


def plain_loglik(llm, prefix: list[int], option: list[int]) -> list[float]:
    """log P(option[i] | prefix + option[:i]) from one evaluation of the whole sequence."""
    llm.reset()
    seq = prefix + option
    llm.eval(seq)
    scores = np.asarray(llm.scores[: len(seq)], dtype=np.float64)
    rows = scores[len(prefix) - 1 : len(seq) - 1]
    lp = rows - (
        rows.max(-1, keepdims=True)
        + np.log(np.exp(rows - rows.max(-1, keepdims=True)).sum(-1, keepdims=True))
    )
    return [lp[i, t] for i, t in enumerate(option)]


def tokens_of(sc, judge):
    prefix = sc.tokenize(PREFIX)
    options = [sc.tokenize(o, add_special=False) for o in OPTIONS]
    assert prefix == judge.tokenize(PREFIX.encode(), add_bos=True, special=False)
    return prefix, options


@pytest.mark.parametrize("parallel", [False, True])
def test_shared_prefix_scores_equal_whole_sequence_logliks(smollm2_path, judge, parallel):
    # three sequences for six options: two rounds of two copies; one-token batches: options
    # longer than a batch span several
    with ScoringContext(smollm2_path, n_ctx=512, n_batch=1, n_seq=3, threads=1) as sc:
        prefix, options = tokens_of(sc, judge)
        assert max(len(o) for o in options) >= 3
        got = sc.continuations(prefix, options, parallel=parallel)
        # the prefix stays in the cache and is reused: a second call gives the same values
        again = sc.continuations(prefix, options[::-1], parallel=parallel)[::-1]
    for opt, g, a in zip(options, got, again):
        want = plain_loglik(judge, prefix, opt)
        assert len(g) == len(opt)
        np.testing.assert_allclose(g, want, rtol=0, atol=2e-4)
        np.testing.assert_allclose(a, g, rtol=0, atol=2e-4)
    assert int(np.argmax([g.sum() for g in got])) == 0  # SmolLM2 knows Mars


def test_parallel_batches_agree_with_sequential_at_full_batch_size(smollm2_path):
    with ScoringContext(smollm2_path, n_ctx=512, n_seq=7, threads=1) as sc:
        prefix = sc.tokenize(PREFIX)
        options = [sc.tokenize(o, add_special=False) for o in OPTIONS]
        seq = sc.continuations(prefix, options)
        par = sc.continuations(prefix, options, parallel=True)
    for s, p in zip(seq, par):
        np.testing.assert_allclose(p, s, rtol=0, atol=0.05)
    assert np.argmax([s.sum() for s in seq]) == np.argmax([p.sum() for p in par])


def test_continuations_refuse_what_does_not_fit(smollm2_path):
    with ScoringContext(smollm2_path, n_ctx=256, threads=1) as sc:
        with pytest.raises(ValueError, match="exceed the context"):
            sc.continuations([1] * 250, [[2] * 10])
        with pytest.raises(ValueError, match="no tokens"):
            sc.continuations([1, 2], [[3], []])


def test_reductions_against_scipy_and_a_full_sort():
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(0)
    x = rng.normal(scale=8, size=(5, 1000)).astype(np.float32)
    np.testing.assert_allclose(
        log_softmax(x), special.log_softmax(x.astype(np.float64), axis=-1), rtol=0, atol=1e-12
    )
    t = rng.integers(0, 1000, size=5)
    want = special.log_softmax(x.astype(np.float64), axis=-1)[np.arange(5), t]
    np.testing.assert_allclose(target_logprobs(x, t), want, rtol=0, atol=1e-6)
    ids, vals = top_k(x[0], 7)
    order = sorted(range(1000), key=lambda i: -x[0, i])[:7]
    assert list(ids) == order and list(vals) == [x[0, i] for i in order]


def test_chunks_are_llama_perplexitys():
    tokens = list(range(100, 1100))
    cs = chunk_plan(tokens, 256, bos=1)
    assert len(cs) == 3  # 1000 // 256: the tail is dropped
    assert all(len(c) == 256 and c[0] == 1 for c in cs)
    assert [c[1:] for c in cs] == [tokens[i * 256 + 1 : (i + 1) * 256] for i in range(3)]
    assert chunk_plan(tokens, 256, None, max_chunks=2)[1] == tokens[256:512]
