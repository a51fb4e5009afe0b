"""A GGUF vocabulary as a Hugging Face tokenizer (tokenizer.json, tokenizer_config.json): the
inverse of convert/tokenizer.py, for export-hf.

The vocabulary is the converter's own `Vocab` (read from the GGUF with `Vocab.from_gguf`); a
byte-level BPE's pre-tokenizer comes from the same table the converter decides names with
(`convert.pretokenizers.hf_pre_tokenizer`). Builders by ``tokenizer.ggml.model``: "gpt2" (byte-level
BPE with the GGUF's merges) and "llama" (SentencePiece BPE with byte fallback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gguf import TokenType

from convert import pretokenizers
from convert.errors import ConvertError
from convert.tokenizer import Vocab


def _tok():
    try:
        import tokenizers
    except ImportError:
        raise ConvertError(
            "export-hf needs the tokenizers package: pip install tokenizers safetensors"
        ) from None
    return tokenizers


def _component(node: dict) -> Any:
    """A `tokenizers` pre-tokenizer from its tokenizer.json form (`hf_pre_tokenizer`'s)."""
    pt = _tok().pre_tokenizers
    kind = node["type"]
    if kind == "Sequence":
        return pt.Sequence([_component(n) for n in node["pretokenizers"]])
    if kind == "ByteLevel":
        return pt.ByteLevel(add_prefix_space=node["add_prefix_space"], use_regex=node["use_regex"])
    if kind == "Digits":
        return pt.Digits(individual_digits=node["individual_digits"])
    if kind == "Punctuation":
        return pt.Punctuation(behavior=node["behavior"].lower())
    return pt.Split(_tok().Regex(node["pattern"]["Regex"]), behavior="isolated", invert=False)


def _vocab_dict(tokens: list[str]) -> dict[str, int]:
    """Token text -> id; the first id wins for a duplicated text (as llama.cpp's lookup)."""
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    return vocab


def _added_tokens(vocab: Vocab) -> list:
    """Control tokens become special added tokens, user-defined ones plain added tokens: both are
    split out of the raw text before the model runs, as llama.cpp's tokenizer_st_partition does."""
    tk = _tok()
    out = []
    for text, kind in zip(vocab.tokens, vocab.token_types):
        if kind in (TokenType.CONTROL, TokenType.USER_DEFINED):
            out.append(tk.AddedToken(text, special=kind == TokenType.CONTROL, normalized=False))
    return out


def bpe_tokenizer(vocab: Vocab) -> Any:
    """tokenizer.ggml.model "gpt2": byte-level BPE with the GGUF's merges."""
    tk = _tok()
    pre, ignore_merges = pretokenizers.hf_pre_tokenizer(vocab.pre or "default")
    if not vocab.merges:
        raise ConvertError("the GGUF's BPE tokenizer has no merges (tokenizer.ggml.merges)")
    merges = [tuple(m.split(" ", 1)) for m in vocab.merges]
    model = tk.models.BPE(
        vocab=_vocab_dict(vocab.tokens), merges=merges, ignore_merges=ignore_merges
    )
    tok = tk.Tokenizer(model)
    tok.pre_tokenizer = _component(pre)
    tok.decoder = tk.decoders.ByteLevel()
    return tok


def spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece's score-driven merging.

    llama.cpp's SPM tokenizer repeatedly merges the adjacent pair whose concatenation is the
    highest-scoring vocabulary piece. As a ranked merge list (what HF's SentencePiece converter
    builds): a merge a + b -> ab exists for every split of a piece ab into two pieces a and b
    that are both in the vocabulary, ranked by ab's score (highest first; ties by longer a,
    then longer b, then vocabulary order, as transformers' ``generate_merges``).
    """
    vocab = _vocab_dict(tokens)
    candidates = []
    for piece, pid in vocab.items():
        score = scores[pid]
        local = [
            (piece[:i], piece[i:])
            for i in range(1, len(piece))
            if piece[:i] in vocab and piece[i:] in vocab
        ]
        local.sort(key=lambda ab: (vocab[ab[0]], vocab[ab[1]]))
        candidates.extend((-score, -len(a), -len(b), a, b) for a, b in local)
    # a stable sort: equal keys keep the vocabulary order
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    return [(a, b) for *_, a, b in candidates]


def spm_tokenizer(vocab: Vocab) -> Any:
    """tokenizer.ggml.model "llama": SentencePiece BPE with byte fallback (Gemma, Llama 2)."""
    tk = _tok()
    if vocab.scores is None:
        raise ConvertError(
            "the GGUF's SentencePiece tokenizer has no scores (tokenizer.ggml.scores)"
        )
    unk_id = vocab.special_ids.get("unk")
    unk = vocab.tokens[unk_id] if unk_id is not None else None
    model = tk.models.BPE(
        vocab=_vocab_dict(vocab.tokens),
        merges=spm_merges(vocab.tokens, list(vocab.scores)),
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=True,
    )
    tok = tk.Tokenizer(model)
    steps = [tk.normalizers.Replace(" ", "▁")]
    decoders = [tk.decoders.Replace("▁", " "), tk.decoders.ByteFallback(), tk.decoders.Fuse()]
    if vocab.add_space_prefix is not False:
        # SentencePiece's dummy prefix (Llama 2, Mistral); Gemma has none
        steps.insert(0, tk.normalizers.Prepend("▁"))
        decoders.append(tk.decoders.Strip(content=" ", left=1, right=0))
    tok.normalizer = tk.normalizers.Sequence(steps)
    tok.decoder = tk.decoders.Sequence(decoders)
    return tok


# tokenizer.ggml.model -> builder
TOKENIZER_BUILDERS: dict[str, Callable[[Vocab], Any]] = {
    "gpt2": bpe_tokenizer,
    "llama": spm_tokenizer,
}


def build_tokenizer(vocab: Vocab, context_length: int) -> tuple[Any, dict[str, Any]]:
    """The ``tokenizers`` Tokenizer and tokenizer_config.json for a GGUF vocabulary."""
    tk = _tok()
    if vocab.model not in TOKENIZER_BUILDERS:
        raise ConvertError(
            f"the GGUF's tokenizer type {vocab.model!r} is not supported by export-hf; supported: "
            + ", ".join(sorted(TOKENIZER_BUILDERS))
        )
    tok = TOKENIZER_BUILDERS[vocab.model](vocab)
    tok.add_tokens(_added_tokens(vocab))

    text = {kind: vocab.tokens[i] for kind, i in vocab.special_ids.items()}
    bos_id, bos = vocab.special_ids.get("bos"), text.get("bos")
    eos_id, eos = vocab.special_ids.get("eos"), text.get("eos")
    add_bos = bool(vocab.add_bos) and bos is not None
    add_eos = bool(vocab.add_eos) and eos is not None
    if add_bos or add_eos:
        single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
        pair = (
            single
            + ([f"{bos}:1"] if add_bos else [])
            + ["$B:1"]
            + ([f"{eos}:1"] if add_eos else [])
        )
        specials = [(t, i) for t, i in ((bos, bos_id), (eos, eos_id)) if t is not None]
        tok.post_processor = tk.processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=specials
        )

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
    }
    for kind in ("bos", "eos", "unk", "pad"):
        if kind in text:
            config[f"{kind}_token"] = text[kind]
    if vocab.chat_template:
        config["chat_template"] = vocab.chat_template
    return tok, config
