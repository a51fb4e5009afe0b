"""Log-likelihood scoring and bits per byte equal direct computations from llama.cpp's logits.

The direct side is written here against llama.cpp's raw C API: decode one token at a time from an
empty cache, take that position's logits, log-softmax them in float64 numpy. The scorer under
test decodes with batches, reuses the context's KV cache across options and reduces each batch's
logits itself; with its batch set to one token both run the same kernels, so they must agree to
rounding, and with its default batch to llama.cpp's batch-size numerics.
"""

import math

import llama_cpp.llama_cpp as C
import numpy as np
import pytest

from bench.lm import Scorer
from bench.suites import bpb, mmlu

TEXT = (
    "The learning tablet answers in a second. 学习机上的模型回答得很快。\n"
    "def area(w, h):\n    return w * h  # 3 x 4 = 12\n"
)


class Direct:
    """One token per llama_decode, logits of that token, log-softmax in numpy."""

    def __init__(self, path):
        mp = C.llama_model_default_params()
        self.model = C.llama_model_load_from_file(str(path).encode(), mp)
        cp = C.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = 512, 1, 1
        cp.n_threads = cp.n_threads_batch = 1
        self.ctx = C.llama_init_from_model(self.model, cp)
        self.n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(self.model))

    def logprobs(self, tokens):
        """Row j: log-softmax of the logits after tokens[:j+1]."""
        C.llama_memory_clear(C.llama_get_memory(self.ctx), True)
        rows = []
        for t in tokens:
            arr = (C.llama_token * 1)(t)
            assert C.llama_decode(self.ctx, C.llama_batch_get_one(arr, 1)) == 0
            x = np.ctypeslib.as_array(C.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            x = x.astype(np.float64)
            rows.append(x - (x.max() + np.log(np.exp(x - x.max()).sum())))
        return np.array(rows)

    def close(self):
        C.llama_free(self.ctx)
        C.llama_model_free(self.model)


@pytest.fixture(scope="module")
def direct(smollm2_path):
    d = Direct(smollm2_path)
    yield d
    d.close()


@pytest.fixture(scope="module")
def exact(smollm2_path):
    """The scorer with one-token batches: the same kernels as the direct computation."""
    s = Scorer(smollm2_path, n_ctx=512, threads=1, n_batch=1)
    yield s
    s.close()


@pytest.fixture(scope="module")
def batched(smollm2_path):
    s = Scorer(smollm2_path, n_ctx=512, threads=1)
    yield s
    s.close()


CONTEXT = "The following are questions (with answers) about geography.\n\nQuestion: What is the capital of France?\nAnswer:"
CHOICES = ["Paris", "Berlin", "the city of Rome", "Madrid"]


def direct_loglik(direct, scorer, context, continuation):
    ctx, cont = mmlu.split_tokens(scorer, context, continuation)
    seq = ctx + cont
    lp = direct.logprobs(seq[:-1])
    return sum(lp[len(ctx) - 1 + i, t] for i, t in enumerate(cont))


def test_option_logliks_equal_the_direct_computation(direct, exact):
    conts = [" " + c for c in CHOICES]
    got = mmlu.score_choices(exact, CONTEXT, conts, [len(c) for c in CHOICES])
    want = [direct_loglik(direct, exact, CONTEXT, c) for c in conts]
    np.testing.assert_allclose(got["loglik"], want, rtol=0, atol=1e-6)
    # acc: the highest log-likelihood; acc_norm: the highest per character of the option text.
    assert got["pred"] == int(np.argmax(want))
    assert got["pred_norm"] == int(np.argmax([w / len(c) for w, c in zip(want, CHOICES)]))
    assert got["pred"] == 0  # SmolLM2 knows this one
    # Options scored in another order (the KV cache cut back between them) give the same values.
    again = mmlu.score_choices(exact, CONTEXT, conts[::-1], [len(c) for c in CHOICES[::-1]])
    np.testing.assert_allclose(again["loglik"][::-1], got["loglik"], rtol=0, atol=1e-9)


def test_batched_scoring_agrees_within_batch_numerics(direct, batched):
    conts = [" " + c for c in CHOICES]
    got = mmlu.score_choices(batched, CONTEXT, conts, [len(c) for c in CHOICES])
    want = [direct_loglik(direct, batched, CONTEXT, c) for c in conts]
    # Different batch sizes run different matmul kernels (quantized activations): small drift.
    np.testing.assert_allclose(got["loglik"], want, rtol=0, atol=0.3)
    assert got["pred"] == int(np.argmax(want))


def test_context_and_continuation_split_as_lm_eval_does(batched):
    ctx, cont = mmlu.split_tokens(batched, "Question: 2+2?\nAnswer:", " 4")
    assert batched.tokenize("Question: 2+2?\nAnswer: 4") == ctx + cont
    assert ctx == batched.tokenize("Question: 2+2?\nAnswer:")


def test_bits_per_byte_equals_the_direct_computation(direct, exact):
    r = bpb.bits_per_byte(exact, [TEXT], n_ctx=512)
    tokens = [bpb.prefix_token(exact)] + exact.tokenize(TEXT, add_bos=False)
    lp = direct.logprobs(tokens[:-1])
    nll = -sum(lp[j, tokens[j + 1]] for j in range(len(tokens) - 1))
    want = nll / math.log(2) / len(TEXT.encode("utf-8"))
    assert r["bpb"] == pytest.approx(want, rel=1e-9)
    assert r["bytes"] == len(TEXT.encode("utf-8")) and r["tokens"] == len(tokens) - 1
    assert 0.3 < r["bpb"] < 4  # a real model on real text, not a degenerate number


def test_windows_predict_every_token_once_each_after_one_token_of_context():
    tokens = list(range(1000, 1100))
    ws = bpb.windows(tokens, 16)
    assert all(2 <= len(w) <= 16 for w in ws)
    assert [t for w in ws for t in w[1:]] == tokens[1:]
    assert all(ws[i + 1][0] == ws[i][-1] for i in range(len(ws) - 1))


def test_windowed_bpb_is_close_to_one_window(batched):
    one = bpb.bits_per_byte(batched, [TEXT * 3], n_ctx=512)
    short = bpb.bits_per_byte(batched, [TEXT * 3], n_ctx=24)
    assert one["tokens"] == short["tokens"] and one["bytes"] == short["bytes"]
    assert short["bpb"] > one["bpb"]  # less context per token: a higher loss


def test_excerpts_spread_over_the_file_in_whole_lines():
    text = "".join(f"line {i:03d} " + "x" * 40 + "\n" for i in range(400))
    parts = bpb.excerpts(text, 4000)
    assert len(parts) == 8
    assert all(p.endswith("\n") and p in text for p in parts)
    size = sum(len(p.encode()) for p in parts)
    assert 3000 <= size <= 4000
    firsts = [int(p[5:8]) for p in parts]
    assert firsts == sorted(firsts) and firsts[0] == 0 and firsts[-1] >= 300
    assert bpb.excerpts(text, 0) == [text]


def test_a_context_longer_than_the_window_keeps_its_end(smollm2_path):
    long = "Some background. " * 100 + CONTEXT  # ~330 tokens; the window is llama.cpp's least, 256
    conts = [" " + c for c in CHOICES]
    with Scorer(smollm2_path, n_ctx=64, threads=1) as s:
        n_ctx = s.n_ctx
        r = mmlu.score_choices(s, long, conts, [len(c) for c in CHOICES])
        ctx, _ = mmlu.split_tokens(s, long, conts[0])
        splits = [mmlu.split_tokens(s, long, c)[1] for c in conts]
        keep = ctx[-(n_ctx - max(len(c) for c in splits)) :]
        s.reset()  # the same call on the kept tokens, from an empty cache
        want = [float(lp.sum()) for lp in s.continuations(keep, splits)]
    assert r["truncated"] is True and len(ctx) > n_ctx and keep[-5:] == ctx[-5:]
    assert r["loglik"] == want
