"""Each architecture: a tiny random `transformers` model with a real tokenizer, converted at F32;
llama.cpp's logits must equal transformers' and its tokenization must equal the tokenizer's.

Tolerance: both sides compute in float32 (F32 weights and, in the test, an F32 KV cache), so they
differ only by summation order; logits of these models are O(1-10) and we require a max absolute
difference below 1e-4 and identical top-1 at every position. (With llama.cpp's default F16 KV
cache the difference grows to ~1e-2.)
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.tinymodels import MIXED

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.fixtures.archs import CASES, build  # noqa: E402  (needs torch)

PROMPTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def main(argv):\n    for i in range(10):",
    "学习机是一种平板电脑 1234567",
]
TOLERANCE = 1e-4


class Judge:
    """The tokenizer's own implementation: sentencepiece for tokenizer.model, HF `tokenizers`
    for tokenizer.json."""

    def __init__(self, folder):
        if (folder / "tokenizer.model").exists():
            import sentencepiece

            self.sp = sentencepiece.SentencePieceProcessor(
                model_file=str(folder / "tokenizer.model")
            )
        else:
            from tokenizers import Tokenizer

            self.sp, self.hf = None, Tokenizer.from_file(str(folder / "tokenizer.json"))

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        if self.sp is not None:
            return {"input_ids": self.sp.encode(text)}
        return {"input_ids": self.hf.encode(text, add_special_tokens=add_special_tokens).ids}


@pytest.fixture(scope="module", params=list(CASES))
def converted(request, tmp_path_factory):
    from llama_cpp import Llama

    from convert import convert

    src = tmp_path_factory.mktemp(request.param.replace("ForCausalLM", "").lower())
    model = build(request.param, src)
    out = src.parent / f"{src.name}-f32.gguf"  # the converter refuses an output inside its source
    convert(src, out, type="F32")
    llm = Llama(
        str(out), n_ctx=256, logits_all=True, n_threads=2, verbose=False, type_k=0, type_v=0
    )
    tok = Judge(src)
    yield request.param, model, tok, llm
    llm.close()


def test_logits_equal_transformers(converted):
    case, model, tok, llm = converted
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"][:48]
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()
        llm.reset()
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
        assert got.shape == ref.shape
        diff = np.abs(got - ref).max()
        assert diff < TOLERANCE, f"{case}: max |llama.cpp - transformers| = {diff:.2e} on {text!r}"
        assert (got.argmax(-1) == ref.argmax(-1)).all(), case


def test_tokenization_equals_the_tokenizer(converted):
    case, _, tok, llm = converted
    for text in MIXED:
        want = tok(text, add_special_tokens=False)["input_ids"]
        got = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert got == want, f"{case}: {text!r}"
