"""Tiny random Hugging Face checkpoints with real (locally trained) tokenizers, for the converter
tests. Nothing is downloaded: tokenizers are trained on CORPUS with `tokenizers` or
`sentencepiece`, models are random `transformers` models saved with `save_pretrained`."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS_LINES = [
    "The quick brown fox jumps over the lazy dog. Edge devices run small models.",
    "Knowledge density is capability divided by inference compute, 2024-11-23.",
    "def main(argv):\n    for i in range(10):\n        print(i * 3.14159)\n    return 0\n",
    "学习机是一种平板电脑，学生用它来学习数学和语文。今天天气很好。",
    "Numbers: 1234567 89 0.5 42 3.14159 1e-6 100% $19.99 #7 @user",
    "Emoji: 👋🏽 🇨🇳 😀 🚀 — “quotes” and ‘single’ … ellipsis",
    "   leading spaces\t\ttabs\n\n\nnew lines   trailing   ",
    "SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name;",
    "Je pense, donc je suis. Über straße naïve café. Привет мир.",
    '<html><body><p class="x">Hello, world!</p></body></html>',
]
CORPUS = CORPUS_LINES * 20

# What the tokenization tests compare on: English, Chinese, code, numbers, emoji, whitespace runs.
MIXED = [
    "Hello world! The capital of France is Paris.",
    "学习机上的小模型回答得很快。",
    "def f(x):\n    return x ** 2  # square\n",
    "1234567 + 3.14159 = 1234570.14159",
    "👋🏽 hi 🇨🇳 🚀🚀",
    "a  b\t\tc\n\n\n  d    e",
    "Mixed: café 学习 42 😀 end.",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Pre-tokenizer regexes (as the models' own tokenizer.json files define them)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def bpe_tokenizer(out: Path, pre: str = "qwen2", vocab: int = 600, specials=None) -> int:
    """Train a byte-level BPE tokenizer with the named model's pre-tokenizer; write
    tokenizer.json + tokenizer_config.json. Returns the vocabulary size."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = specials or ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    if pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre == "llama-bpe":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif pre == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        raise ValueError(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": specials[0] if pre != "qwen2" else "<|im_end|>",
                "pad_token": specials[0],
                "add_bos_token": False,
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": 2048,
            }
        )
    )
    return tok.get_vocab_size()


def spm_tokenizer(
    out: Path, vocab: int = 800, byte_fallback: bool = True, added: tuple[str, ...] = ()
) -> int:
    """Train a SentencePiece BPE model (llama/mistral style: <unk> <s> </s>, byte fallback) and
    write tokenizer.model + tokenizer_config.json, with ``added`` special tokens after the
    pieces (as Phi-3 adds <|endoftext|>, <|end|>, ...). Returns the vocabulary size."""
    import io

    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buf,
        vocab_size=vocab,
        model_type="bpe",
        byte_fallback=byte_fallback,
        character_coverage=1.0,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    size = spm.SentencePieceProcessor(model_proto=buf.getvalue()).get_piece_size()
    decoder = {
        str(size + i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                        "normalized": False, "single_word": False}
        for i, t in enumerate(added)
    }  # fmt: skip
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "added_tokens_decoder": decoder,
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": False,
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )
    return size + len(added)


def save_model(model, out: Path, dtype=None) -> Path:
    """save_pretrained as safetensors (in ``dtype`` if given), next to the tokenizer files."""
    import torch

    if dtype is not None:
        model = model.to(dtype)
    with torch.no_grad():
        model.save_pretrained(out, safe_serialization=True)
    return out


def llama_tensors(cfg: dict, vocab: int, dtype="float32") -> dict:
    """Random weights under llama names (q/k/v/o, gated MLP, norms), as numpy arrays."""
    import numpy as np

    rng = np.random.default_rng(0)
    h, f, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    t = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    for b in range(n):
        p = f"model.layers.{b}."
        t |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
              p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
              p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
              p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
              p + "mlp.down_proj.weight": (h, f)}  # fmt: skip
    return {k: (rng.standard_normal(s) * 0.1).astype(dtype) for k, s in t.items()}
