"""convert.tokenizer: Hugging Face tokenizers -> GGUF vocabularies, judged by llama.cpp.

Real tokenizers are trained here (no hub): byte-level BPE with the `tokenizers` library in the
pre-tokenizer forms of several llama.cpp names, and a SentencePiece BPE model. Each one goes
through load_vocab into a vocab-only GGUF; llama.cpp's tokenization of a mixed corpus must equal
the Hugging Face / SentencePiece ids, and detokenizing must give the text back. The SmolLM2
GGUF shipped with the project is rebuilt as a tokenizer.json and converted back.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest

from convert.errors import ConvertError
from convert.tokenizer import Vocab, load_vocab, pretokenizer_table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

llama_cpp = pytest.importorskip("llama_cpp")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, decoders, models, normalizers, processors, trainers  # noqa: E402
from tokenizers import pre_tokenizers as pt  # noqa: E402

# --- the corpus ------------------------------------------------------------------------------

TRAIN = [
    "The quick brown fox jumps over the lazy dog. It's what they'd said, and we'll see.",
    "Hello world! Hello, World! HELLO there; isn't it nice? You're right, I've done it.",
    "Machine learning models run on edge devices: phones, laptops and small boards.",
    "Tokenizers split text into pieces before byte pair encoding merges them.",
    "MixedCASE camelCase snake_case HTTPServer XMLHttpRequest getElementById.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 1234567 3.14159 2.71828 1e-5 0x1F.",
    "Dates 2024-01-01 and 1999-12-31, prices $19.99 and €5, 50% off, 1,000,000 users.",
    "def add(a, b):\n    return a + b\n\n\nclass Model:\n    def __init__(self):\n        pass",
    "for (int i = 0; i < n; i++) {\n\tsum += x[i];\n}\nreturn sum;",
    'import json\nprint(json.dumps({"key": [1, 2, 3]}, indent=2))',
    "if x > 1 and y <= 2 or not z:\n    raise ValueError('bad value')",
    "你好，世界！今天天气很好。我们在学习自然语言处理。",
    "机器学习模型可以在手机上运行。中文和English混合在一起。",
    "日本語のテキストも少し。ひらがなとカタカナ。",
    "한국어 문장도 조금 있습니다.",
    "Emoji: 👋 👋🏽 🇨🇳 🇺🇸 🦙 🚀 ✅ 😶‍🌫️ and more 🎉🎉.",
    "Ünïcödé àéîõü ß Straße naïve café résumé Ångström.",
    "Русский текст и немного кириллицы. Ελληνικά γράμματα.",
    "Whitespace   runs\t\ttabs\n\nnew lines   and    spaces.",
    "   leading spaces and trailing spaces   ",
    '<html><body><p class="x">Some HTML &amp; entities</p></body></html>',
    "Punctuation!!! ??? ... --- === *** ''' \"\"\" ``` ~~~",
]
CORPUS = [line for _ in range(4) for line in TRAIN]

TEXTS = [
    "Hello world! It's a test, isn't it? We'll see what THEY'D say.",
    "你好，世界！今天天气很好。",
    "def f(x):\n    return x * 2\n\n\tif x > 1:\n\t\tpass\n",
    "numbers 1234567 and 3.14159, 2024-01-01; 42 0.5",
    "emoji 👋🏽 and flags 🇨🇳 🦙🦙 😶‍🌫️",
    "a  b\t\tc\n\n\n  d",
    "   leading and trailing   ",
    "Ünïcödé àéîõü ß Straße naïve café",
    "MixedCASE camelCase snake_case HTTPServer",
    "mixed 中文 and English 123 together; Русский текст",
    "unseen words: zyzzyva quixotic 9876543210",
    "a <tool_call> in the middle",
    "\n",
    " ",
    "",
]
CHAT = "<|im_start|>user\nHi there 1234<|im_end|>\n<|im_start|>assistant\n"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)

# --- Hugging Face pre-tokenizers, written as the models' tokenizer.json files have them -------

LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
QWEN35 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+"
    r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
    r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
    r"[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEEPSEEK3 = (
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n" + r"\p{L}\p{P}\p{S}]?"
    r"[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[" + "\r\n" + r"]*|\s*[" + "\r\n" + r"]+|\s+(?!\S)|\s+"
)
MINICPM5 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}+")
TEKKEN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def split(regex: str) -> pt.PreTokenizer:
    return pt.Split(Regex(regex), behavior="isolated", invert=False)


def byte_level(use_regex: bool) -> pt.PreTokenizer:
    return pt.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=use_regex)


@dataclass
class Flavor:
    """A byte-level BPE tokenizer in the form of a known model's tokenizer.json."""

    pre: list
    ignore_merges: bool = False
    nfc: bool = False
    add_bos: bool = False  # a TemplateProcessing that puts BOS first, as Llama 3's


FLAVORS = {
    "gpt-2": Flavor([byte_level(True)]),
    "llama-bpe": Flavor([split(LLAMA3), byte_level(False)], ignore_merges=True, add_bos=True),
    "smaug-bpe": Flavor([split(LLAMA3), byte_level(False)]),
    "qwen2": Flavor([split(QWEN2), byte_level(False)], nfc=True),
    "qwen35": Flavor([split(QWEN35), byte_level(False)]),
    "smollm": Flavor([pt.Digits(individual_digits=True), byte_level(True)]),
    "deepseek-coder": Flavor(
        [split("[\r\n]"), split(r"\s?\p{L}+"), split(r"\s?\p{P}+"), split("[一-龥ࠀ-一가-\ud7ff]+")]
        + [pt.Digits(individual_digits=True), byte_level(False)]
    ),
    "deepseek-v3": Flavor(
        [split(r"\p{N}{1,3}"), split("[一-龥぀-ゟ゠-ヿ]+"), split(DEEPSEEK3), byte_level(False)]
    ),
    "gpt-4o": Flavor([split(GPT4O), byte_level(False)]),
    "minicpm5": Flavor(
        [split(r"\p{N}{1,3}"), split(MINICPM5), byte_level(False)], ignore_merges=True
    ),
    "tekken": Flavor([split(TEKKEN), byte_level(False)], ignore_merges=True),
    "falcon": Flavor(
        [pt.Punctuation("contiguous"), byte_level(True), pt.Digits(individual_digits=False)]
        + [split("[0-9][0-9][0-9]")]
    ),
}


def train_bpe(flavor: Flavor, vocab_size: int = 1500) -> tokenizers.Tokenizer:
    tk = tokenizers.Tokenizer(models.BPE(ignore_merges=flavor.ignore_merges))
    if flavor.nfc:
        tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pt.Sequence(flavor.pre)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pt.ByteLevel.alphabet(),
        max_token_length=16,  # bytes: llama-cpp-python detokenizes with a 32-byte buffer
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS, trainer)
    tk.add_tokens([tokenizers.AddedToken("<tool_call>", special=False, normalized=False)])
    if flavor.add_bos:
        bos = tk.token_to_id("<|begin_of_text|>")
        tk.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single="<|begin_of_text|> $A",
                    pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                    special_tokens=[("<|begin_of_text|>", bos)],
                ),
            ]
        )
    return tk


def save_bpe(tk: tokenizers.Tokenizer, folder: Path, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tk.save(str(folder / "tokenizer.json"))
    config = {
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": True},
        "unk_token": "<|endoftext|>",
        "chat_template": TEMPLATE,
        **(config or {}),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def vocab_gguf(vocab: Vocab, path: Path) -> Path:
    """A vocab-only GGUF: the llama hyperparameters llama.cpp reads, then the vocabulary."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    vocab.write(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def load_llama(path: Path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def llama_ids(llm, text: str, special: bool = False, add_bos: bool = False) -> list[int]:
    return llm.tokenize(text.encode(), add_bos=add_bos, special=special)


# --- byte-level BPE: decision and tokenization ----------------------------------------------


@pytest.fixture(scope="module", params=list(FLAVORS))
def bpe(request, tmp_path_factory):
    """(flavor name, HF tokenizer, Vocab, llama.cpp vocab-only model) per flavor."""
    name = request.param
    tk = train_bpe(FLAVORS[name])
    bos = "<|begin_of_text|>" if FLAVORS[name].add_bos else "<|im_start|>"
    folder = save_bpe(tk, tmp_path_factory.mktemp(name), {"bos_token": bos})
    vocab = load_vocab(folder, tk.get_vocab_size() + 7)  # 7 rows of padding
    llm = load_llama(vocab_gguf(vocab, folder / "vocab.gguf"))
    yield name, tk, vocab, llm
    llm.close()


def test_bpe_decides_the_pre_tokenizer(bpe):
    name, tk, vocab, _ = bpe
    assert vocab.model == "gpt2"
    assert vocab.pre == name
    assert vocab.scores is None
    assert len(vocab.merges) > 500


def test_bpe_tokenizes_as_hugging_face(bpe):
    _, tk, _, llm = bpe
    for text in TEXTS:
        assert llama_ids(llm, text) == tk.encode(text, add_special_tokens=False).ids, text


def test_bpe_detokenizes_to_the_text(bpe):
    _, tk, _, llm = bpe
    for text in TEXTS:
        ids = tk.encode(text, add_special_tokens=False).ids
        assert llm.detokenize(ids).decode() == text == tk.decode(ids), text


def test_bpe_special_tokens(bpe):
    name, tk, vocab, llm = bpe
    assert llama_ids(llm, CHAT, special=True) == tk.encode(CHAT, add_special_tokens=False).ids
    hf_with_specials = tk.encode(TEXTS[0], add_special_tokens=True).ids
    assert llama_ids(llm, TEXTS[0], add_bos=True) == hf_with_specials
    assert vocab.add_bos is FLAVORS[name].add_bos and vocab.add_eos is False
    ids = {text: tk.token_to_id(text) for text in SPECIALS + ["<tool_call>"]}
    bos = "<|begin_of_text|>" if FLAVORS[name].add_bos else "<|im_start|>"
    assert vocab.special_ids["bos"] == ids[bos] == llm.token_bos()
    assert vocab.special_ids["eos"] == ids["<|im_end|>"] == llm.token_eos()
    assert vocab.special_ids["unk"] == ids["<|endoftext|>"]
    control, user = gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED
    assert all(vocab.token_types[ids[t]] == control for t in SPECIALS)
    assert vocab.token_types[ids["<tool_call>"]] == user
    assert vocab.chat_template == TEMPLATE


def test_bpe_pads_to_vocab_size(bpe):
    _, tk, vocab, llm = bpe
    n = tk.get_vocab_size()
    assert len(vocab.tokens) == len(vocab.token_types) == n + 7 == llm.n_vocab()
    assert vocab.tokens[n:] == [f"[PAD{i}]" for i in range(n, n + 7)]
    assert set(vocab.token_types[n:]) == {gguf.TokenType.UNUSED}


# --- the real SmolLM2 vocabulary, rebuilt as a tokenizer.json ---------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The shipped SmolLM2 GGUF's vocabulary as a SmolLM2-style tokenizer.json folder."""
    from edge_llm.errors import EdgeLLMError
    from edge_llm.registry import resolve

    try:
        path = resolve(None)
    except EdgeLLMError as e:
        pytest.skip(f"SmolLM2 is not installed: {e}")
    fields = gguf.GGUFReader(path).fields
    orig = {k: fields[f"tokenizer.{k}"].contents() for k in ("ggml.tokens", "ggml.token_type")}
    orig["ggml.merges"] = fields["tokenizer.ggml.merges"].contents()
    orig["chat_template"] = fields["tokenizer.chat_template"].contents()
    tokens, types = orig["ggml.tokens"], orig["ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == gguf.TokenType.NORMAL}
    merges = [tuple(m.split(" ", 1)) for m in orig["ggml.merges"]]
    tk = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pt.Sequence([pt.Digits(individual_digits=True), byte_level(True)])
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    data = json.loads(tk.to_str())
    data["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": False, "special": True}
        for i, t in enumerate(tokens)
        if types[i] == gguf.TokenType.CONTROL
    ]
    folder = tmp_path_factory.mktemp("smollm2")
    (folder / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    config = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
        "clean_up_tokenization_spaces": False,
        "chat_template": orig["chat_template"],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path, folder, orig


def test_smollm2_vocab_equals_the_shipped_gguf(smollm2):
    _, folder, orig = smollm2
    vocab = load_vocab(folder, 49152)
    assert (vocab.model, vocab.pre) == ("gpt2", "smollm")
    assert vocab.tokens == orig["ggml.tokens"]
    assert vocab.token_types == orig["ggml.token_type"]
    assert vocab.merges == orig["ggml.merges"]
    assert vocab.special_ids == {"bos": 1, "eos": 2, "unk": 0, "pad": 2}
    assert (vocab.add_bos, vocab.add_eos) == (False, False)
    assert vocab.chat_template == orig["chat_template"]


def test_smollm2_tokenizes_as_the_shipped_gguf(smollm2, tmp_path):
    path, folder, _ = smollm2
    vocab = load_vocab(folder, 49152)
    ours, theirs = load_llama(vocab_gguf(vocab, tmp_path / "v.gguf")), load_llama(path)
    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    try:
        for text in [*TEXTS, *TRAIN]:
            ids = llama_ids(theirs, text)
            assert llama_ids(ours, text) == ids == hf.encode(text, add_special_tokens=False).ids
            assert ours.detokenize(ids).decode() == text
        assert llama_ids(ours, CHAT, special=True) == llama_ids(theirs, CHAT, special=True)
        assert (ours.token_bos(), ours.token_eos()) == (theirs.token_bos(), theirs.token_eos())
    finally:
        ours.close()
        theirs.close()


# --- SentencePiece -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    """A SentencePiece BPE model with byte fallback (Llama-style settings) and its GGUF."""
    sentencepiece = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([line.replace("\n", " ") for line in CORPUS]),
        model_writer=model,
        vocab_size=1000,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        user_defined_symbols=["<tool>"],
        hard_vocab_limit=False,
        num_threads=1,
    )
    folder = tmp_path_factory.mktemp("spm")
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.vocab_size()
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            "1": {"content": "<s>", "special": True},
            str(n): {"content": "<|im_start|>", "special": True},
            str(n + 1): {"content": "<|im_end|>", "special": True},
        },
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, n + 1]}))
    (folder / "chat_template.jinja").write_text(TEMPLATE, encoding="utf-8")
    vocab = load_vocab(folder, n + 4)
    llm = load_llama(vocab_gguf(vocab, folder / "vocab.gguf"))
    yield sp, vocab, llm
    llm.close()


def test_spm_vocab(spm):
    sp, vocab, _ = spm
    n = sp.vocab_size()
    assert (vocab.model, vocab.pre, vocab.merges) == ("llama", "default", [])
    assert vocab.tokens[:n] == [sp.id_to_piece(i) for i in range(n)]
    assert vocab.scores[:n] == pytest.approx([sp.get_score(i) for i in range(n)])
    types = gguf.TokenType
    assert vocab.token_types[:3] == [types.UNKNOWN, types.CONTROL, types.CONTROL]
    assert vocab.token_types[sp.piece_to_id("<0x0A>")] == types.BYTE
    assert vocab.token_types[sp.piece_to_id("<tool>")] == types.USER_DEFINED
    assert vocab.tokens[n:] == ["<|im_start|>", "<|im_end|>", f"[PAD{n + 2}]", f"[PAD{n + 3}]"]
    assert vocab.token_types[n:] == [types.CONTROL, types.CONTROL, types.UNUSED, types.UNUSED]
    assert vocab.special_ids == {"bos": 1, "eos": 2, "unk": 0, "eot": n + 1}
    assert (vocab.add_bos, vocab.add_eos, vocab.add_space_prefix) == (True, False, True)
    assert vocab.chat_template == TEMPLATE


def test_spm_tokenizes_as_sentencepiece(spm):
    sp, _, llm = spm
    for text in TEXTS:
        ids = sp.encode(text)
        assert llama_ids(llm, text) == ids, text
        assert llama_ids(llm, text, add_bos=True) == [sp.bos_id(), *ids], text
        assert llm.detokenize([sp.bos_id(), *ids]).decode() == text == sp.decode(ids), text
    # A user-defined piece is split out of the text; llama.cpp then prefixes the rest with a
    # space (as legacy Llama tokenizers do), which sentencepiece itself does not.
    assert sp.piece_to_id("<tool>") in llama_ids(llm, "a <tool> here")
    im_start = llama_ids(llm, "<|im_start|>user", special=True)[0]
    assert im_start == sp.vocab_size()


def test_spm_preferred_over_a_sentencepiece_style_tokenizer_json(spm, tmp_path):
    sp, vocab, _ = spm
    (tmp_path / "tokenizer.model").write_bytes(sp.serialized_model_proto())
    spm_json = {
        "added_tokens": [{"id": 1, "content": "<s>", "special": True}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Replace"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A"}}],
        },
        "model": {"type": "BPE", "byte_fallback": True, "vocab": {"<unk>": 0}, "merges": []},
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(spm_json), encoding="utf-8")
    got = load_vocab(tmp_path, sp.vocab_size())
    assert (got.model, got.tokens) == ("llama", vocab.tokens[: sp.vocab_size()])
    assert (got.add_bos, got.add_eos) == (True, False)  # from the post-processor
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(ConvertError, match="SentencePiece-style.*add tokenizer.model"):
        load_vocab(tmp_path, sp.vocab_size())


def test_spm_errors(spm, tmp_path):
    sp, _, _ = spm
    (tmp_path / "tokenizer.model").write_bytes(sp.serialized_model_proto())
    with pytest.raises(ConvertError, match="--pre qwen2 applies to byte-level BPE"):
        load_vocab(tmp_path, sp.vocab_size(), pre="qwen2")
    assert load_vocab(tmp_path, sp.vocab_size(), pre="default").pre == "default"
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ConvertError, match="tokenizer.model is not a SentencePiece model"):
        load_vocab(tmp_path, sp.vocab_size())


# --- the other decisions, without llama.cpp ---------------------------------------------------


@pytest.fixture(scope="module")
def small_tokenizer():
    return train_bpe(Flavor([byte_level(True)]), vocab_size=400)


def folder_with(tmp_path: Path, tk, *, pre=None, model_extra=None, config=None) -> Path:
    data = json.loads(tk.to_str())
    if pre is not None:
        data["pre_tokenizer"] = pre
    data["model"].update(model_extra or {})
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return tmp_path


def test_missing_tokenizer_files(tmp_path):
    with pytest.raises(ConvertError, match="no tokenizer.json nor tokenizer.model.*repository"):
        load_vocab(tmp_path, 100)


def test_more_tokens_than_vocab_size(tmp_path, small_tokenizer):
    folder = folder_with(tmp_path, small_tokenizer)
    n = small_tokenizer.get_vocab_size()
    with pytest.raises(
        ConvertError, match=f"tokenizer has {n} tokens but config.json vocab_size is 100"
    ):
        load_vocab(folder, 100)


def test_unknown_split_regex_asks_for_pre(tmp_path, small_tokenizer):
    regex = r"\w+|[^\w\s]+"
    pre = json.loads(pt.Sequence([split(regex), byte_level(False)]).__getstate__())
    folder = folder_with(tmp_path, small_tokenizer, pre=pre)
    n = small_tokenizer.get_vocab_size()
    with pytest.raises(ConvertError) as e:
        load_vocab(folder, n)
    message = str(e.value)
    assert f"splits ['{regex}']" in message and "--pre NAME" in message and "gpt-2" in message
    assert "\n" not in message
    assert load_vocab(folder, n, pre="llama-bpe").pre == "llama-bpe"
    assert load_vocab(folder, n, pre="starcoder").pre == "starcoder"  # an alias in the table
    with pytest.raises(ConvertError, match="unknown pre-tokenizer 'nonsense'"):
        load_vocab(folder, n, pre="nonsense")


def test_ignore_merges_decides_between_names(tmp_path, small_tokenizer):
    pre = json.loads(pt.Sequence([split(LLAMA3), byte_level(False)]).__getstate__())
    n = small_tokenizer.get_vocab_size()
    with_flag = folder_with(
        tmp_path / "a", small_tokenizer, pre=pre, model_extra={"ignore_merges": True}
    )
    assert load_vocab(with_flag, n).pre == "llama-bpe"
    without = folder_with(tmp_path / "b", small_tokenizer, pre=pre)
    assert load_vocab(without, n).pre == "smaug-bpe"
    unknown = json.loads(pt.Sequence([split(LLAMA3.replace("{1,3}", "{1,2}"))]).__getstate__())
    folder = folder_with(tmp_path / "c", small_tokenizer, pre=unknown)
    with pytest.raises(ConvertError, match="matches no llama.cpp pre-tokenizer"):
        load_vocab(folder, n)


def test_unsupported_normalizer_and_model_types(tmp_path, small_tokenizer):
    n = small_tokenizer.get_vocab_size()
    data = json.loads(small_tokenizer.to_str())
    data["normalizer"] = {"type": "Lowercase"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConvertError, match="normalizer Lowercase"):
        load_vocab(tmp_path, n)
    assert load_vocab(tmp_path, n, pre="gpt-2").pre == "gpt-2"
    for model_type, word in [("WordPiece", "WordPiece"), ("Unigram", "Unigram")]:
        data["model"] = {"type": model_type, "vocab": {"a": 0}}
        (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ConvertError, match=f"{word}.*not supported|{word} tokenizer"):
            load_vocab(tmp_path, n)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConvertError, match="tokenizer.json is not valid JSON"):
        load_vocab(tmp_path, n)


def test_merges_as_strings_or_pairs(tmp_path, small_tokenizer):
    n = small_tokenizer.get_vocab_size()
    data = json.loads(small_tokenizer.to_str())
    pairs = data["model"]["merges"]
    assert isinstance(pairs[0], list)  # what tokenizers writes today
    as_pairs = load_vocab(folder_with(tmp_path / "a", small_tokenizer), n).merges
    data["model"]["merges"] = [f"{a} {b}" for a, b in pairs]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_vocab(tmp_path / "b", n).merges == as_pairs == [f"{a} {b}" for a, b in pairs]


def test_sparse_added_token_ids_are_padded(tmp_path, small_tokenizer):
    n = small_tokenizer.get_vocab_size()
    data = json.loads(small_tokenizer.to_str())
    data["added_tokens"].append({"id": n + 3, "content": "<extra>", "special": False})
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    vocab = load_vocab(tmp_path, n + 5)
    assert vocab.tokens[n : n + 5] == [
        f"[PAD{n}]",
        f"[PAD{n + 1}]",
        f"[PAD{n + 2}]",
        "<extra>",
        f"[PAD{n + 4}]",
    ]
    assert vocab.token_types[n + 3] == gguf.TokenType.USER_DEFINED


def test_special_ids_from_configs(tmp_path, small_tokenizer):
    n = small_tokenizer.get_vocab_size()
    ids = {t: small_tokenizer.token_to_id(t) for t in SPECIALS}
    templates = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    folder = folder_with(tmp_path, small_tokenizer, config={"chat_template": templates})
    (folder / "config.json").write_text(
        json.dumps(
            {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": 99999, "pad_token_id": None}
        )
    )
    eos = [ids["<|endoftext|>"], ids["<|im_end|>"]]
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    vocab = load_vocab(folder, n)
    assert vocab.special_ids == {
        "bos": ids["<|endoftext|>"],
        "eos": ids["<|endoftext|>"],
        "eot": ids["<|im_end|>"],
    }
    assert vocab.chat_template == "D"


def test_table_is_consistent():
    table = pretokenizer_table()
    forms = [(tuple(e["regexes"]), e["ignore_merges"]) for e in table["pre"]]
    assert len(forms) == len(set(forms)), "two entries with the same form"
    names = [n for e in table["pre"] for n in [e["name"], *e["also"]]]
    assert len(names) == len(set(names)) and set(names) <= set(table["known"])
    for regex in table["regex"].values():
        Regex(regex)  # compiles in Hugging Face's regex engine
    for name in ["gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-llm", "deepseek-coder"]:
        assert name in [e["name"] for e in table["pre"]]
