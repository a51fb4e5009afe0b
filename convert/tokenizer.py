"""A Hugging Face tokenizer as a GGUF vocabulary, decided from the tokenizer's own definition.

``load_vocab(src_dir, vocab_size)`` reads the tokenizer files of a checkpoint folder and returns a
``Vocab`` that writes every tokenizer key llama.cpp reads:

- byte-level BPE (``tokenizer.json``, model BPE with a ByteLevel pre-tokenizer or decoder) becomes
  tokenizer model ``gpt2``. Its pre-tokenizer name (``tokenizer.ggml.pre``) comes from the splits
  tokenizer.json defines, looked up in ``pretokenizers.toml`` beside this file; llama.cpp's own
  converter instead hashes the token ids of a test string.
- SentencePiece (``tokenizer.model``) becomes tokenizer model ``llama``, pre-tokenizer
  ``default``. A tokenizer.json that is SentencePiece-style BPE (byte fallback, "▁" for spaces)
  is read from its tokenizer.model, as llama.cpp does for Llama, Mistral, Gemma and Phi-3.

Special tokens come from tokenizer_config.json (bos_token, ...), else from config.json and
generation_config.json; whether to add BOS/EOS from tokenizer.json's post-processor, else from
tokenizer_config.json; the chat template from chat_template.jinja, else tokenizer_config.json.

Things llama.cpp does not model are not checked here: a SentencePiece normalization rule other
than identity (e.g. nmt_nfkc) or remove_extra_whitespaces, an NFC normalizer on byte-level BPE,
and added tokens' lstrip/rstrip flags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from convert import spm
from convert.errors import ConvertError

# the pre-tokenizer table (pretokenizer_table is re-exported for the tests and scripts)
from convert.pretokenizers import components, decide_pre, pretokenizer_table

# Special-token kinds read from the tokenizer files, in the order they are looked up.
SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "mask")
# Kinds Vocab.write can store (gguf.GGUFWriter.add_<kind>_token_id).
WRITABLE_KINDS = (*SPECIAL_KINDS, "eot", "eom")

_SPM_ADDED_SCORE = -1000.0  # score of tokens added on top of tokenizer.model (as llama.cpp)


@dataclass
class Vocab:
    """Everything a GGUF needs about the tokenizer."""

    model: str  # "gpt2" (byte-level BPE from tokenizer.json) or "llama" (SentencePiece)
    pre: str | None  # llama.cpp pre-tokenizer name for BPE; "default" for SentencePiece
    tokens: list[str]
    scores: list[float] | None
    token_types: list[int]  # gguf.TokenType values
    merges: list[str]  # "a b" strings, BPE only
    special_ids: dict[str, int]  # among "bos", "eos", "unk", "sep", "pad", "mask", "eot"
    add_bos: bool | None
    add_eos: bool | None
    chat_template: str | None
    add_space_prefix: bool | None = None  # SentencePiece add_dummy_prefix, when known

    @classmethod
    def from_gguf(cls, values: dict[str, Any]) -> Vocab:
        """The vocabulary a GGUF's metadata (key -> value, as gguf-py reads it) describes: the
        inverse of `write`, for export-hf."""
        tokens = values.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ConvertError(
                "the GGUF has no tokenizer (tokenizer.ggml.tokens); export-hf needs one"
            )
        types = values.get("tokenizer.ggml.token_type") or [gguf.TokenType.NORMAL] * len(tokens)
        keys = {kind: getattr(gguf.Keys.Tokenizer, f"{kind.upper()}_ID") for kind in WRITABLE_KINDS}
        ids = {kind: int(values[key]) for kind, key in keys.items() if values.get(key) is not None}

        def flag(key: str) -> bool | None:
            return None if values.get(key) is None else bool(values[key])

        return cls(
            model=values.get("tokenizer.ggml.model", ""),
            pre=values.get("tokenizer.ggml.pre"),
            tokens=list(tokens),
            scores=values.get("tokenizer.ggml.scores"),
            token_types=[int(t) for t in types],
            merges=list(values.get("tokenizer.ggml.merges") or []),
            special_ids={k: i for k, i in ids.items() if 0 <= i < len(tokens)},
            add_bos=flag("tokenizer.ggml.add_bos_token"),
            add_eos=flag("tokenizer.ggml.add_eos_token"),
            chat_template=values.get("tokenizer.chat_template"),
            add_space_prefix=flag("tokenizer.ggml.add_space_prefix"),
        )

    def write(self, w: gguf.GGUFWriter) -> None:
        """Add the tokenizer keys to ``w`` (before its header is written)."""
        w.add_tokenizer_model(self.model)
        if self.pre is not None:
            w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types([int(t) for t in self.token_types])
        if self.merges:
            w.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            if kind in WRITABLE_KINDS:
                getattr(w, f"add_{kind}_token_id")(token_id)
        if self.add_bos is not None:
            w.add_add_bos_token(self.add_bos)
        if self.add_eos is not None:
            w.add_add_eos_token(self.add_eos)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            w.add_chat_template(self.chat_template)


def load_vocab(src_dir: Path, vocab_size: int, pre: str | None = None) -> Vocab:
    """The GGUF vocabulary of the tokenizer in ``src_dir``.

    ``vocab_size`` is config.json's vocab_size (embedding rows): the token list is padded to it
    with unused ``[PAD{id}]`` tokens, and a tokenizer with more tokens is an error. ``pre``
    names the llama.cpp pre-tokenizer of a byte-level BPE tokenizer instead of deciding it.
    The files are untrusted: a value of an unexpected type anywhere in them is a one-line error.
    """
    try:
        return _load_vocab(Path(src_dir), vocab_size, pre)
    except ConvertError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as e:
        what = str(e).splitlines()[0][:200] if str(e) else ""
        raise ConvertError(
            f"the tokenizer files in {src_dir} are malformed ({type(e).__name__}: {what}); "
            "re-download them"
        ) from None


def _load_vocab(src_dir: Path, vocab_size: int, pre: str | None) -> Vocab:
    files = TokenizerFiles.read(Path(src_dir))
    if tokenizer_kind(files) == "gpt2":
        vocab = bpe_vocab(files, vocab_size, pre)
    else:
        vocab = sentencepiece_vocab(files, vocab_size, pre)
    lookup = {text: i for i, text in enumerate(vocab.tokens)}
    add_bos, add_eos, template_bos = add_special_flags(files, vocab.model)
    vocab.add_bos, vocab.add_eos = add_bos, add_eos
    vocab.special_ids = special_ids(files, lookup, vocab_size, vocab.special_ids, template_bos)
    vocab.chat_template = chat_template(files)
    return vocab


# --- the files -------------------------------------------------------------------------------


@dataclass
class TokenizerFiles:
    """The tokenizer-related files of a checkpoint folder, parsed once."""

    dir: Path
    tokenizer_json: dict | None
    tokenizer_config: dict
    config: dict
    generation_config: dict
    added_tokens_json: dict
    has_model: bool  # tokenizer.model (SentencePiece) exists

    @classmethod
    def read(cls, src: Path) -> TokenizerFiles:
        if not src.is_dir():
            raise ConvertError(f"{src} is not a folder; pass the checkpoint's folder")
        tokenizer_json = _read_json(src / "tokenizer.json")
        has_model = (src / "tokenizer.model").is_file()
        if tokenizer_json is None and not has_model:
            raise ConvertError(
                f"{src} has no tokenizer.json nor tokenizer.model; add the tokenizer files "
                "from the model's repository"
            )
        return cls(
            dir=src,
            tokenizer_json=tokenizer_json,
            tokenizer_config=_read_json(src / "tokenizer_config.json") or {},
            config=_read_json(src / "config.json") or {},
            generation_config=_read_json(src / "generation_config.json") or {},
            added_tokens_json=_read_json(src / "added_tokens.json") or {},
            has_model=has_model,
        )


def _read_json(path: Path) -> dict | None:
    """A JSON object file, None when absent; ConvertError when unreadable."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"cannot read {path.name}: {e}; re-download it") from e
    except json.JSONDecodeError as e:
        raise ConvertError(
            f"{path.name} is not valid JSON ({e.msg} at line {e.lineno}); re-download it "
            "from the model's repository"
        ) from e
    if not isinstance(data, dict):
        raise ConvertError(f"{path.name} is not a JSON object; re-download it")
    return data


# --- which tokenizer -------------------------------------------------------------------------


def tokenizer_kind(files: TokenizerFiles) -> str:
    """ "gpt2" for byte-level BPE from tokenizer.json, "llama" for SentencePiece."""
    tj = files.tokenizer_json
    if tj is None:
        return "llama"
    model_type = _model_type(tj)
    if model_type == "BPE":
        if _is_byte_level(tj):
            return "gpt2"
        if files.has_model:
            return "llama"
        if _is_sentencepiece_style(tj):
            raise ConvertError(
                "tokenizer.json is a SentencePiece-style BPE (byte fallback, '▁' for spaces) "
                "and there is no tokenizer.model; add tokenizer.model from the model's repository"
            )
        raise ConvertError(
            "tokenizer.json is a BPE without a ByteLevel pre-tokenizer; only byte-level BPE "
            "(tokenizer.json) and SentencePiece (tokenizer.model) tokenizers are supported"
        )
    if model_type == "Unigram":
        raise ConvertError(
            "tokenizer.json is a Unigram tokenizer (SentencePiece unigram, as T5's), which "
            "llama.cpp's gpt2 and llama tokenizers cannot reproduce; it is not supported"
        )
    if model_type in ("WordPiece", "WordLevel"):
        raise ConvertError(
            f"tokenizer.json is a {model_type} tokenizer (BERT-style); only byte-level BPE and "
            "SentencePiece tokenizers are supported"
        )
    raise ConvertError(
        f"tokenizer.json has model type {model_type!r}; only byte-level BPE and SentencePiece "
        "tokenizers are supported"
    )


def _model_type(tj: dict) -> str:
    model = tj.get("model")
    if not isinstance(model, dict):
        raise ConvertError(
            "tokenizer.json has no model; re-download it from the model's repository"
        )
    model_type = model.get("type")
    if model_type is None and "merges" in model:
        return "BPE"  # files written before tokenizers recorded the type
    return str(model_type)


def _is_byte_level(tj: dict) -> bool:
    parts = [*components(tj.get("pre_tokenizer")), *components(tj.get("decoder"))]
    return any(c.get("type") == "ByteLevel" for c in parts)


def _is_sentencepiece_style(tj: dict) -> bool:
    """BPE over "▁"-for-space text with byte fallback, as converted SentencePiece models are."""
    if tj["model"].get("byte_fallback"):
        return True
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        for c in components(tj.get(key)):
            if c.get("type") == "Metaspace" or "▁" in json.dumps(c, ensure_ascii=False):
                return True
    return False


# --- byte-level BPE --------------------------------------------------------------------------


def bpe_vocab(files: TokenizerFiles, vocab_size: int, pre: str | None) -> Vocab:
    """Tokens, types and merges of a byte-level BPE tokenizer.json, and its pre-tokenizer."""
    tj = files.tokenizer_json
    assert tj is not None
    model = tj["model"]
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ConvertError("tokenizer.json model.vocab is not a token -> id map; re-download it")
    texts: dict[int, str] = {i: text for text, i in vocab.items()}
    types = dict.fromkeys(texts, gguf.TokenType.NORMAL)
    for token_id, text, special in added_tokens(files):
        texts[token_id] = text
        types[token_id] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    tokens, token_types = _token_list(texts, types, vocab_size)
    return Vocab(
        model="gpt2",
        pre=decide_pre(tj, pre),
        tokens=tokens,
        scores=None,
        token_types=token_types,
        merges=bpe_merges(model.get("merges")),
        special_ids={},
        add_bos=None,
        add_eos=None,
        chat_template=None,
    )


def added_tokens(files: TokenizerFiles) -> list[tuple[int, str, bool]]:
    """(id, text, special) of the added tokens: added_tokens.json, then tokenizer.json's
    added_tokens, then tokenizer_config.json's added_tokens_decoder (a later one wins)."""
    found: dict[int, tuple[str, bool]] = {}
    for text, token_id in files.added_tokens_json.items():
        if isinstance(token_id, int):
            found[token_id] = (text, False)
    for entry in (files.tokenizer_json or {}).get("added_tokens") or []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), int):
            found[entry["id"]] = (str(entry.get("content", "")), bool(entry.get("special")))
    decoder = files.tokenizer_config.get("added_tokens_decoder") or {}
    for key, entry in decoder.items():
        if isinstance(entry, dict) and str(key).isdigit():
            found[int(key)] = (str(entry.get("content", "")), bool(entry.get("special")))
    return [(i, text, special) for i, (text, special) in sorted(found.items())]


def _token_list(
    texts: dict[int, str], types: dict[int, int], vocab_size: int
) -> tuple[list[str], list[int]]:
    """Dense lists of vocab_size tokens: holes become unused [PAD{id}] tokens."""
    n_tokens = max(texts, default=-1) + 1
    if n_tokens > vocab_size:
        raise ConvertError(
            f"tokenizer has {n_tokens} tokens but config.json vocab_size is {vocab_size}: the "
            "tokenizer files do not belong to this checkpoint (or config.json is wrong)"
        )
    if min(texts, default=0) < 0:
        raise ConvertError(f"tokenizer has a negative token id {min(texts)}; re-download it")
    tokens = [texts.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    token_types = [int(types.get(i, gguf.TokenType.UNUSED)) for i in range(vocab_size)]
    _check_unique(tokens)
    return tokens, token_types


def _check_unique(tokens: list[str]) -> None:
    """llama.cpp maps token text -> id, so a text may appear only once."""
    seen: dict[str, int] = {}
    for i, text in enumerate(tokens):
        if text in seen:
            raise ConvertError(
                f"tokenizer has token {text!r} at ids {seen[text]} and {i}; llama.cpp needs "
                "each token text once"
            )
        seen[text] = i


def bpe_merges(merges: Any) -> list[str]:
    """tokenizer.json merges ("a b" strings, or [a, b] pairs since tokenizers 0.20) as "a b"."""
    if merges is None:
        return []
    if not isinstance(merges, list):
        raise ConvertError("tokenizer.json model.merges is not a list; re-download it")
    out = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
            if any(" " in part for part in merge):
                raise ConvertError(
                    f"tokenizer.json merge {merge!r} has a space inside a token, which GGUF's "
                    "'a b' merges cannot hold"
                )
            out.append(f"{merge[0]} {merge[1]}")
        else:
            raise ConvertError(f"tokenizer.json has a merge of unknown form: {merge!r}")
    return out


# --- SentencePiece ---------------------------------------------------------------------------


def sentencepiece_vocab(files: TokenizerFiles, vocab_size: int, pre: str | None) -> Vocab:
    """Pieces, scores and types of tokenizer.model, with the added tokens on top."""
    if pre is not None and pre != "default":
        raise ConvertError(
            f"--pre {pre} applies to byte-level BPE tokenizers; this one is SentencePiece "
            "(tokenizer.model), whose pre-tokenizer is always 'default'"
        )
    path = files.dir / "tokenizer.model"
    if not path.is_file():
        raise ConvertError(
            f"{files.dir} has no tokenizer.model; add it from the model's repository"
        )
    sp = spm.load_processor(path)
    proto = spm.load_proto(path)
    if proto is not None and proto.trainer_spec.model_type != spm.BPE:
        kind = spm.MODEL_TYPES.get(proto.trainer_spec.model_type, "unknown")
        raise ConvertError(
            f"tokenizer.model is a SentencePiece {kind} model; llama.cpp's SentencePiece "
            "tokenizer reproduces only BPE models, so it is not supported"
        )
    texts: dict[int, str] = {}
    scores: dict[int, float] = {}
    types: dict[int, int] = {}
    for i in range(sp.vocab_size()):
        texts[i] = sp.IdToPiece(i)
        scores[i] = sp.GetScore(i)
        types[i] = spm.piece_type(sp, proto, i)
    for token_id, text, special in added_tokens(files):
        if texts.get(token_id) == text and types[token_id] != gguf.TokenType.NORMAL:
            continue  # tokenizer.model already marks it (e.g. <s> CONTROL, <unk> UNKNOWN)
        texts[token_id] = text
        scores[token_id] = _SPM_ADDED_SCORE
        types[token_id] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    for i, token_type in types.items():
        if token_type == gguf.TokenType.USER_DEFINED:
            texts[i] = texts[i].replace("▁", " ")  # llama.cpp matches them in the raw text
    tokens, token_types = _token_list(texts, types, vocab_size)
    defaults = {
        "bos": sp.bos_id(),
        "eos": sp.eos_id(),
        "unk": sp.unk_id(),
        "pad": sp.pad_id(),
    }
    return Vocab(
        model="llama",
        pre="default",
        tokens=tokens,
        scores=[scores.get(i, _SPM_ADDED_SCORE) for i in range(vocab_size)],
        token_types=token_types,
        merges=[],
        special_ids={k: v for k, v in defaults.items() if 0 <= v < vocab_size},
        add_bos=None,
        add_eos=None,
        chat_template=None,
        add_space_prefix=(
            bool(proto.normalizer_spec.add_dummy_prefix) if proto is not None else None
        ),
    )


# --- special tokens, flags, chat template ----------------------------------------------------


def special_ids(
    files: TokenizerFiles,
    lookup: dict[str, int],
    vocab_size: int,
    defaults: dict[str, int],
    template_bos: str | None,
) -> dict[str, int]:
    """Special-token ids: tokenizer_config.json's tokens, else config.json's and
    generation_config.json's ids, else the post-processor's first token (bos) and the
    tokenizer's own defaults; plus an end-of-turn token when eos_token_id lists one."""
    ids: dict[str, int] = {}
    cfg = files.tokenizer_config
    for kind in SPECIAL_KINDS:
        text = _token_text(cfg.get(f"{kind}_token"))
        if text is not None and text in lookup:
            ids[kind] = lookup[text]
    cls_text = _token_text(cfg.get("cls_token"))
    if "bos" not in ids and cls_text in lookup:
        ids["bos"] = lookup[cls_text]
    for source in _id_sources(files):
        for kind in SPECIAL_KINDS:
            first = _id_list(source.get(f"{kind}_token_id"), vocab_size)[:1]
            if kind not in ids and first:
                ids[kind] = first[0]
    if "bos" not in ids and template_bos in lookup:
        ids["bos"] = lookup[template_bos]
    for kind, token_id in defaults.items():
        ids.setdefault(kind, token_id)
    eot = end_of_turn_id(files, lookup, vocab_size, ids.get("eos"))
    if eot is not None:
        ids["eot"] = eot
    return ids


def end_of_turn_id(
    files: TokenizerFiles, lookup: dict[str, int], vocab_size: int, eos: int | None
) -> int | None:
    """A chat end-of-turn token listed among several eos_token_id values, besides eos."""
    eot_ids = {lookup[t] for t in pretokenizer_table()["eot_tokens"] if t in lookup}
    for source in _id_sources(files):
        for token_id in _id_list(source.get("eos_token_id"), vocab_size):
            if token_id != eos and token_id in eot_ids:
                return token_id
    return None


def _id_sources(files: TokenizerFiles) -> list[dict]:
    """config.json (and its text_config, for multimodal checkpoints), generation_config.json."""
    text_config = files.config.get("text_config")
    sources = [files.config, text_config if isinstance(text_config, dict) else {}]
    return [*sources, files.generation_config]


def _id_list(value: Any, vocab_size: int) -> list[int]:
    """A token id or list of ids from a config, keeping those inside the vocabulary."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if type(v) is int and 0 <= v < vocab_size]


def _token_text(value: Any) -> str | None:
    """A tokenizer_config.json token: a string, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def add_special_flags(
    files: TokenizerFiles, model: str
) -> tuple[bool | None, bool | None, str | None]:
    """(add_bos, add_eos, the post-processor's leading special token).

    tokenizer.json's post-processor decides when it adds tokens (transformers then ignores
    tokenizer_config.json's add_bos_token / add_eos_token); else those flags; else what the
    tokenizer does by default: nothing for tokenizer.json, BOS for a SentencePiece (Llama)
    tokenizer.
    """
    decided = _post_processor_flags((files.tokenizer_json or {}).get("post_processor"))
    cfg = files.tokenizer_config
    template_bos = None
    if decided is not None:
        add_bos, add_eos, template_bos = decided
        bos = _token_text(cfg.get("bos_token"))
        if add_bos and bos is not None and template_bos != bos:
            add_bos = False  # it adds another token than BOS, which llama.cpp cannot
        return add_bos, add_eos, template_bos
    default_bos = model == "llama" and files.tokenizer_json is None
    add_bos = cfg.get("add_bos_token")
    add_eos = cfg.get("add_eos_token")
    return (
        add_bos if isinstance(add_bos, bool) else default_bos,
        add_eos if isinstance(add_eos, bool) else False,
        None,
    )


def _post_processor_flags(node: Any) -> tuple[bool, bool, str | None] | None:
    """What a post-processor adds around one sequence: (bos?, eos?, leading token), or None
    when it adds nothing decisive (none, or ByteLevel only)."""
    for c in components(node):
        kind = c.get("type")
        if kind == "TemplateProcessing":
            single = c.get("single") or []
            first = single[0].get("SpecialToken", {}).get("id") if single else None
            last = single[-1].get("SpecialToken", {}).get("id") if len(single) > 1 else None
            return first is not None, last is not None, first
        if kind in ("RobertaProcessing", "BertProcessing"):
            cls = c.get("cls")
            return True, True, cls[0] if isinstance(cls, list) and cls else None
    return None


def chat_template(files: TokenizerFiles) -> str | None:
    """chat_template.jinja (as transformers prefers it), else tokenizer_config.json's
    chat_template (a string, or a list of {name, template}: "default"), else
    chat_template.json."""
    jinja = files.dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = files.tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if isinstance(template, str):
        return template
    template_json = _read_json(files.dir / "chat_template.json") or {}
    template = template_json.get("chat_template")
    return template if isinstance(template, str) else None
