"""GGUF -> Hugging Face folder: the reverse of conversion.

``export_hf`` reads a GGUF (memory-mapped, with gguf-py's ``GGUFReader``), dequantizes every
tensor with gguf-py's own kernels (``gguf.quants.dequantize``), undoes the layout changes that
llama.cpp's converter made, and writes a folder that ``transformers`` loads with
``AutoModelForCausalLM`` / ``AutoTokenizer``:

    model.safetensors (or shards + model.safetensors.index.json), config.json,
    generation_config.json, tokenizer.json, tokenizer_config.json

An architecture is data (``ARCHITECTURES``): GGUF tensor names <-> HF names, GGUF metadata keys
<-> config.json fields, and the named weight transforms to undo. Adding qwen2/qwen3/mistral/phi3
means adding an ``ExportArch`` entry. Tokenizers are data too: ``TOKENIZER_BUILDERS`` by
``tokenizer.ggml.model`` and ``BPE_PRE_TOKENIZERS`` by ``tokenizer.ggml.pre``.

The weights are exactly the dequantized GGUF weights, so transformers and llama.cpp compute the
same function (up to llama.cpp's own activation rounding); the export does not recover what
quantization lost.

The folder appears atomically: everything is written into a hidden sibling directory that is
renamed onto ``out_dir`` at the end; any failure removes it and leaves nothing at ``out_dir``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import TokenType

from convert import archs as convert_archs
from convert.errors import ConvertError
from convert.outputs import check_output
from edge_llm.fsutil import atomic_dir

# progress(stage, tensors_done, tensors_total, bytes_done, bytes_total): the shape of
# convert.write.Progress, so one CLI progress bar serves both directions.
Progress = Callable[[str, int, int, int, int], None]

DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
BYTES_PER_ELEMENT = {"f32": 4, "f16": 2, "bf16": 2}
# Above this, the weights are split into model-0000i-of-0000n.safetensors shards (memory stays
# near one shard: a shard's tensors are held in memory until it is written).
MAX_SHARD_BYTES = 2 * 1024**3

# Texts llama.cpp also treats as end of generation (src/llama-vocab.cpp, special_eog_ids); the
# ones present as control tokens join eos_token_id in generation_config.json.
END_OF_TURN_TEXTS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|end|>")


# --- metadata ---------------------------------------------------------------------------------


class Metadata:
    """The GGUF's key/value metadata, with ``arch(key)`` for the ``{architecture}.`` keys."""

    def __init__(self, values: dict[str, Any], tensor_names: set[str]):
        self.values = values
        self.tensor_names = tensor_names
        self.architecture: str = values.get("general.architecture", "")

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def arch(self, key: str, default: Any = None) -> Any:
        return self.values.get(f"{self.architecture}.{key}", default)

    def require(self, key: str) -> Any:
        value = self.arch(key)
        if value is None:
            raise ConvertError(
                f"the GGUF lacks {self.architecture}.{key}; it is damaged or was not written by "
                "llama.cpp's converter"
            )
        return value

    # hyperparameters every architecture needs
    @property
    def n_head(self) -> int:
        return int(self.require("attention.head_count"))

    @property
    def n_head_kv(self) -> int:
        return int(self.arch("attention.head_count_kv", self.n_head))

    @property
    def n_embd(self) -> int:
        return int(self.require("embedding_length"))

    @property
    def head_dim(self) -> int:
        return int(self.arch("attention.key_length", self.n_embd // self.n_head))


def _plain(value: Any) -> Any:
    """A metadata value as JSON-friendly Python; float32 values in their shortest decimal form
    (1e-05, not 9.999999747378752e-06)."""
    if isinstance(value, float):
        return float(str(np.float32(value)))
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_metadata(reader: gguf.GGUFReader) -> Metadata:
    values = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        values[key] = fld.contents()
    return Metadata(values, {t.name for t in reader.tensors})


# --- weight transforms (each undoes one thing llama.cpp's converter did) ----------------------

Transform = Callable[[np.ndarray, Metadata], np.ndarray]


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation for RoPE (conversion/llama.py ``permute``).

    HF llama rotates the two halves of each head (rows i and i + d/2 form a pair); llama.cpp
    rotates adjacent rows (2i, 2i + 1). The converter interleaved each head's halves; this puts
    rows 2i back at i and rows 2i + 1 at i + d/2.
    """
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_q(w: np.ndarray, meta: Metadata) -> np.ndarray:
    return unpermute_rope_rows(w, meta.n_head)


def unpermute_k(w: np.ndarray, meta: Metadata) -> np.ndarray:
    return unpermute_rope_rows(w, meta.n_head_kv)


def unshift_gemma_norm(w: np.ndarray, meta: Metadata) -> np.ndarray:
    """Gemma3RMSNorm scales by (1 + weight); llama.cpp multiplies by the stored weight, so its
    converter stored weight + 1 (conversion/gemma.py ``norm_shift``). Subtract the 1 again."""
    return w - np.float32(1.0)


# --- config.json builders ---------------------------------------------------------------------


def _tied(meta: Metadata) -> bool:
    """No separate output.weight: the head reuses the embeddings (llama.cpp does the same)."""
    return "output.weight" not in meta.tensor_names


def _rope_parameters(meta: Metadata, theta: float, scaled: bool = True) -> dict[str, Any]:
    """HF ``rope_parameters`` for a theta, with the GGUF's linear scaling if it has any."""
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    kind = meta.arch("rope.scaling.type")
    factor = meta.arch("rope.scaling.factor")
    if scaled and kind not in (None, "none") and factor not in (None, 0.0, 1.0):
        if kind != "linear":
            raise ConvertError(
                f"the GGUF uses {kind} RoPE scaling, which export-hf cannot map back yet; "
                "only linear scaling is supported"
            )
        params = {"rope_type": "linear", "rope_theta": theta, "factor": _plain(factor)}
    return params


def llama_config(meta: Metadata) -> dict[str, Any]:
    theta = _plain(meta.arch("rope.freq_base", 10000.0))
    return {
        "num_key_value_heads": meta.n_head_kv,
        "head_dim": meta.head_dim,
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in meta.tensor_names,
        "mlp_bias": False,
        "rope_parameters": _rope_parameters(meta, theta),
        "rope_theta": theta,  # transformers < 5 reads this one
        "tie_word_embeddings": _tied(meta),
    }


def gemma3_swa_layers(meta: Metadata) -> list[bool]:
    """Which layers use sliding-window attention, as llama.cpp decides (src/models/gemma3.cpp):
    none without a sliding window; else the GGUF's pattern (a per-layer bool array or a period),
    by default 5 sliding layers then 1 global."""
    n_layer = int(meta.require("block_count"))
    if not meta.arch("attention.sliding_window"):
        return [False] * n_layer
    pattern = meta.arch("attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        return [bool(p) for p in pattern[:n_layer]]
    pattern = int(pattern)
    return [pattern == 0 or (il % pattern < pattern - 1) for il in range(n_layer)]


def gemma3_config(meta: Metadata) -> dict[str, Any]:
    n_layer = int(meta.require("block_count"))
    swa = gemma3_swa_layers(meta)
    theta_global = _plain(meta.arch("rope.freq_base", 1_000_000.0))
    theta_local = _plain(meta.arch("rope.freq_base_swa", 10000.0))  # llama.cpp's default
    # llama.cpp scales queries by 1/sqrt(head_dim), except Gemma 3 27B (62 layers), which uses
    # 1/sqrt(n_embd / n_head); HF scales by query_pre_attn_scalar ** -0.5.
    scalar = meta.n_embd // meta.n_head if n_layer == 62 else meta.head_dim
    pattern = meta.arch("attention.sliding_window_pattern", 6)
    config = {
        "num_key_value_heads": meta.n_head_kv,
        "head_dim": meta.head_dim,
        "query_pre_attn_scalar": scalar,
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": int(meta.arch("attention.sliding_window") or 0) or None,
        "layer_types": ["sliding_attention" if s else "full_attention" for s in swa],
        "rope_parameters": {
            "full_attention": _rope_parameters(meta, theta_global),
            "sliding_attention": {"rope_type": "default", "rope_theta": theta_local},
        },
        "final_logit_softcapping": _plain(meta.arch("final_logit_softcapping")),
        "attn_logit_softcapping": None,  # removed in Gemma 3; llama.cpp applies none
        "attention_bias": False,
        "use_bidirectional_attention": False,
        "tie_word_embeddings": _tied(meta),
        # transformers < 5 reads these
        "rope_theta": theta_global,
        "rope_local_base_freq": theta_local,
    }
    if not isinstance(pattern, list):
        config["sliding_window_pattern"] = int(pattern)
    return config


# --- architectures as data --------------------------------------------------------------------


# GGUF tensor name -> HF name ("{bid}" is the block number): the converter's own tables, inverted,
# so that the two directions cannot drift apart.
def _inverted(table: dict[str, str]) -> dict[str, str]:
    return {gguf_name: hf_name for hf_name, gguf_name in table.items()}


LLAMA_TENSORS = _inverted(convert_archs.registry()["LlamaForCausalLM"].tensors)
GEMMA3_TENSORS = _inverted(convert_archs.registry()["Gemma3ForCausalLM"].tensors)

# GGUF key (after "{arch}.") -> config.json field, for the plain one-to-one ones
COMMON_CONFIG = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
}


@dataclass(frozen=True)
class ExportArch:
    gguf_arch: str  # general.architecture
    hf_architecture: str  # config.json "architectures"
    model_type: str  # config.json "model_type"
    tensors: dict[str, str]  # GGUF tensor name -> HF name
    config: dict[str, str]  # GGUF key (after "{arch}.") -> config.json field
    # config.json fields that are not one key each: (metadata) -> fields
    extra_config: Callable[[Metadata], dict[str, Any]]
    # GGUF tensor name pattern ("{bid}": a block number, "*": any text) -> the transform back
    # to HF's layout, applied in float32
    transforms: dict[str, Transform] = field(default_factory=dict)

    def _patterns(self) -> list[tuple[re.Pattern, str]]:
        return [
            (re.compile(re.escape(gg).replace(r"\{bid\}", r"(?P<bid>\d+)") + "$"), hf)
            for gg, hf in self.tensors.items()
        ]

    def hf_name(self, gguf_name: str) -> str:
        for rx, hf in self._patterns():
            if m := rx.match(gguf_name):
                return hf.replace("{bid}", m.groupdict().get("bid") or "")
        raise ConvertError(
            f"tensor {gguf_name} has no Hugging Face name in export-hf's {self.gguf_arch} table; "
            "this GGUF variant is not supported yet"
        )

    def transform(self, gguf_name: str) -> Transform | None:
        for pattern, fn in self.transforms.items():
            rx = re.escape(pattern).replace(r"\{bid\}", r"\d+").replace(r"\*", r".*")
            if re.fullmatch(rx, gguf_name):
                return fn
        return None


ARCHITECTURES: dict[str, ExportArch] = {
    "llama": ExportArch(
        gguf_arch="llama",
        hf_architecture="LlamaForCausalLM",
        model_type="llama",
        tensors=LLAMA_TENSORS,
        config=COMMON_CONFIG,
        extra_config=llama_config,
        transforms={
            "blk.{bid}.attn_q.weight": unpermute_q,
            "blk.{bid}.attn_k.weight": unpermute_k,
        },
    ),
    "gemma3": ExportArch(
        gguf_arch="gemma3",
        hf_architecture="Gemma3ForCausalLM",
        model_type="gemma3_text",
        tensors=GEMMA3_TENSORS,
        config=COMMON_CONFIG,
        extra_config=gemma3_config,
        # every RMSNorm weight: attn/ffn/post norms, q/k norms, the final norm
        transforms={"*norm.weight": unshift_gemma_norm},
    ),
}


def supported() -> list[str]:
    return sorted(ARCHITECTURES)


# --- tokenizer --------------------------------------------------------------------------------


def _tok():
    try:
        import tokenizers
    except ImportError:
        raise ConvertError(
            "export-hf needs the tokenizers package: pip install tokenizers safetensors"
        ) from None
    return tokenizers


def _split(regex: str) -> Any:
    tk = _tok()
    return tk.pre_tokenizers.Split(tk.Regex(regex), behavior="isolated", invert=False)


LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_gpt2() -> Any:
    return _tok().pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _pre_digits_gpt2() -> Any:
    tk = _tok()
    return tk.pre_tokenizers.Sequence(
        [
            tk.pre_tokenizers.Digits(individual_digits=True),
            tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def _pre_regex(regex: str) -> Callable[[], Any]:
    def build() -> Any:
        tk = _tok()
        return tk.pre_tokenizers.Sequence(
            [_split(regex), tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )

    return build


# tokenizer.ggml.pre -> (HF pre-tokenizer matching llama.cpp's regexes, ignore_merges)
# (src/llama-vocab.cpp: llm_tokenizer_bpe and the pre-type switch in load()). The tests check
# "smollm" against llama.cpp; the regex entries are the tokenizer.json originals that
# llama-vocab.cpp quotes.
BPE_PRE_TOKENIZERS: dict[str, tuple[Callable[[], Any], bool]] = {
    "gpt-2": (_pre_gpt2, False),
    "phi-2": (_pre_gpt2, False),
    "smollm": (_pre_digits_gpt2, False),
    "starcoder": (_pre_digits_gpt2, False),
    "refact": (_pre_digits_gpt2, False),
    "llama-bpe": (_pre_regex(LLAMA3_REGEX), True),
    "qwen2": (_pre_regex(QWEN2_REGEX), False),
}


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str] | None


def _read_vocab(meta: Metadata) -> Vocab:
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ConvertError("the GGUF has no tokenizer (tokenizer.ggml.tokens); export-hf needs one")
    types = meta.get("tokenizer.ggml.token_type") or [TokenType.NORMAL] * len(tokens)
    return Vocab(
        tokens=list(tokens),
        types=[int(t) for t in types],
        scores=meta.get("tokenizer.ggml.scores"),
        merges=meta.get("tokenizer.ggml.merges"),
    )


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
    for text, kind in zip(vocab.tokens, vocab.types):
        if kind in (TokenType.CONTROL, TokenType.USER_DEFINED):
            out.append(tk.AddedToken(text, special=kind == TokenType.CONTROL, normalized=False))
    return out


def bpe_tokenizer(meta: Metadata, vocab: Vocab) -> Any:
    """tokenizer.ggml.model "gpt2": byte-level BPE with the GGUF's merges."""
    tk = _tok()
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in BPE_PRE_TOKENIZERS:
        raise ConvertError(
            f"the GGUF's BPE pre-tokenizer {pre!r} is not supported by export-hf; supported: "
            + ", ".join(sorted(BPE_PRE_TOKENIZERS))
        )
    if not vocab.merges:
        raise ConvertError("the GGUF's BPE tokenizer has no merges (tokenizer.ggml.merges)")
    build_pre, ignore_merges = BPE_PRE_TOKENIZERS[pre]
    merges = [tuple(m.split(" ", 1)) for m in vocab.merges]
    model = tk.models.BPE(
        vocab=_vocab_dict(vocab.tokens), merges=merges, ignore_merges=ignore_merges
    )
    tok = tk.Tokenizer(model)
    tok.pre_tokenizer = build_pre()
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


def spm_tokenizer(meta: Metadata, vocab: Vocab) -> Any:
    """tokenizer.ggml.model "llama": SentencePiece BPE with byte fallback (Gemma, Llama 2)."""
    tk = _tok()
    if vocab.scores is None:
        raise ConvertError(
            "the GGUF's SentencePiece tokenizer has no scores (tokenizer.ggml.scores)"
        )
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
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
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        # SentencePiece's dummy prefix (Llama 2, Mistral); Gemma has none
        steps.insert(0, tk.normalizers.Prepend("▁"))
        decoders.append(tk.decoders.Strip(content=" ", left=1, right=0))
    tok.normalizer = tk.normalizers.Sequence(steps)
    tok.decoder = tk.decoders.Sequence(decoders)
    return tok


# tokenizer.ggml.model -> builder
TOKENIZER_BUILDERS: dict[str, Callable[[Metadata, Vocab], Any]] = {
    "gpt2": bpe_tokenizer,
    "llama": spm_tokenizer,
}


def sentencepiece_model(meta: Metadata, vocab: Vocab) -> bytes | None:
    """A tokenizer.model (SentencePiece protobuf) for a GGUF with a SentencePiece vocabulary:
    the same pieces, scores and types (GGUF and SentencePiece number the types alike), BPE with
    byte fallback, the GGUF's space-prefix flag. Converting the folder back reads this file, so
    the vocabulary survives the round trip exactly. None for other tokenizers."""
    if meta.get("tokenizer.ggml.model") != "llama" or not vocab.scores:
        return None
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:  # needs protobuf
        return None
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(vocab.tokens)
    m.trainer_spec.byte_fallback = any(t == TokenType.BYTE for t in vocab.types)
    for name, key in (
        ("unk_id", "unknown"),
        ("bos_id", "bos"),
        ("eos_id", "eos"),
        ("pad_id", "padding"),
    ):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        setattr(m.trainer_spec, name, int(value) if value is not None else -1)
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for text, kind, score in zip(vocab.tokens, vocab.types, vocab.scores):
        if kind == TokenType.USER_DEFINED:
            # llama.cpp's converter stores user-defined pieces with real spaces (it matches them
            # in the raw text); SentencePiece matches them after escaping spaces to "▁"
            text = text.replace(" ", "\u2581")
        piece = m.pieces.add()
        piece.piece, piece.score = text, float(score)
        piece.type = int(kind) if 1 <= int(kind) <= 6 else pb.ModelProto.SentencePiece.NORMAL
    return m.SerializeToString()


def _special(meta: Metadata, vocab: Vocab, name: str) -> tuple[int | None, str | None]:
    tid = meta.get(f"tokenizer.ggml.{name}_token_id")
    if tid is None or not 0 <= int(tid) < len(vocab.tokens):
        return None, None
    return int(tid), vocab.tokens[int(tid)]


def build_tokenizer(meta: Metadata) -> tuple[Any, dict[str, Any], Vocab]:
    """The ``tokenizers`` Tokenizer and tokenizer_config.json for the GGUF's vocabulary."""
    tk = _tok()
    kind = meta.get("tokenizer.ggml.model")
    if kind not in TOKENIZER_BUILDERS:
        raise ConvertError(
            f"the GGUF's tokenizer type {kind!r} is not supported by export-hf; supported: "
            + ", ".join(sorted(TOKENIZER_BUILDERS))
        )
    vocab = _read_vocab(meta)
    tok = TOKENIZER_BUILDERS[kind](meta, vocab)
    tok.add_tokens(_added_tokens(vocab))

    bos_id, bos = _special(meta, vocab, "bos")
    eos_id, eos = _special(meta, vocab, "eos")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
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
        "model_max_length": int(meta.arch("context_length", 2048)),
    }
    for name in ("bos", "eos", "unknown", "padding"):
        _, text = _special(meta, vocab, name)
        if text is not None:
            config[{"unknown": "unk", "padding": "pad"}.get(name, name) + "_token"] = text
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return tok, config, vocab


# --- the export -------------------------------------------------------------------------------


def _open_gguf(path: Path) -> gguf.GGUFReader:
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path} does not exist; pass the path of a .gguf file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ConvertError(
            f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf"
        )
    try:
        return gguf.GGUFReader(path, "r")
    except Exception as e:  # gguf-py raises ValueError/struct errors on damaged files
        raise ConvertError(f"cannot read {path} as GGUF ({e}); the file may be truncated") from None


def _cast(name: str, data: np.ndarray, dtype: str) -> Any:
    """float32 data in the output dtype (numpy for f32/f16, torch for bf16)."""
    if dtype == "f32":
        return np.ascontiguousarray(data, dtype=np.float32)
    if dtype == "f16":
        out = np.ascontiguousarray(data, dtype=np.float16)
        if not np.isfinite(out).all():
            raise ConvertError(
                f"tensor {name} has values beyond float16's range; export with --dtype bf16 or f32"
            )
        return out
    import torch  # bf16 only: numpy has no bfloat16

    return torch.from_numpy(np.array(data, dtype=np.float32)).to(torch.bfloat16)  # a copy


def _save(tensors: dict[str, Any], path: Path, dtype: str) -> None:
    meta = {"format": "pt"}  # transformers refuses safetensors files without it
    if dtype == "bf16":
        from safetensors.torch import save_file
    else:
        from safetensors.numpy import save_file
    save_file(tensors, str(path), metadata=meta)


def _plan_shards(sizes: list[int]) -> list[int]:
    """Shard index for each tensor, in order, keeping shards under MAX_SHARD_BYTES."""
    shard, used, out = 0, 0, []
    for size in sizes:
        if used and used + size > MAX_SHARD_BYTES:
            shard, used = shard + 1, 0
        out.append(shard)
        used += size
    return out


def model_config(arch: ExportArch, meta: Metadata, dtype: str, vocab_size: int) -> dict:
    config: dict[str, Any] = {
        "architectures": [arch.hf_architecture],
        "model_type": arch.model_type,
    }
    for key, fld in arch.config.items():
        value = meta.arch(key)
        if value is not None:
            config[fld] = _plain(value)
    config["vocab_size"] = vocab_size
    config.update(arch.extra_config(meta))
    for name in ("bos", "eos", "padding"):
        tid = meta.get(f"tokenizer.ggml.{name}_token_id")
        config[{"padding": "pad"}.get(name, name) + "_token_id"] = (
            int(tid) if tid is not None else None
        )
    config["torch_dtype"] = DTYPES[dtype]
    return config


def generation_config(meta: Metadata, vocab: Vocab) -> dict[str, Any]:
    """bos/eos/pad, with eos also listing the end-of-turn control tokens llama.cpp stops at."""
    eos = meta.get("tokenizer.ggml.eos_token_id")
    eos_ids = [int(eos)] if eos is not None else []
    for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.types)):
        if kind == TokenType.CONTROL and text in END_OF_TURN_TEXTS and i not in eos_ids:
            eos_ids.append(i)
    out: dict[str, Any] = {}
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if bos is not None:
        out["bos_token_id"] = int(bos)
    if eos_ids:
        out["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    pad = meta.get("tokenizer.ggml.padding_token_id")
    if pad is not None:
        out["pad_token_id"] = int(pad)
    return out


def _publish_permissions(folder: Path) -> None:
    """mkdtemp makes a private (0700) folder: give it and its files the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_weights(
    reader: gguf.GGUFReader,
    arch: ExportArch,
    meta: Metadata,
    tmp: Path,
    dtype: str,
    progress: Progress | None,
) -> int:
    """Dequantize, transform and save every tensor; returns the vocabulary size (embedding rows)."""
    tensors = list(reader.tensors)
    hf_names = [arch.hf_name(t.name) for t in tensors]
    if "token_embd.weight" not in meta.tensor_names:
        raise ConvertError("the GGUF has no token_embd.weight; it is not a complete model")
    sizes = [int(t.n_elements) * BYTES_PER_ELEMENT[dtype] for t in tensors]
    shard_of = _plan_shards(sizes)
    n_shards = shard_of[-1] + 1 if shard_of else 1

    def shard_name(i: int) -> str:
        if n_shards == 1:
            return "model.safetensors"
        return f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"

    total, done, vocab_size = sum(sizes), 0, 0
    weight_map: dict[str, str] = {}
    pending: dict[str, Any] = {}
    for i, (t, hf) in enumerate(zip(tensors, hf_names)):
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims innermost first
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        if fn := arch.transform(t.name):
            data = fn(data, meta)
        if t.name == "token_embd.weight":
            vocab_size = shape[0]
        pending[hf] = _cast(hf, data, dtype)
        weight_map[hf] = shard_name(shard_of[i])
        done += sizes[i]
        if i + 1 == len(tensors) or shard_of[i + 1] != shard_of[i]:
            _save(pending, tmp / shard_name(shard_of[i]), dtype)
            pending = {}
        if progress:
            progress("exporting", i + 1, len(tensors), done, total)
    if n_shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(tmp / "model.safetensors.index.json", index)
    return vocab_size


def export_hf(
    gguf_path: Path,
    out_dir: Path,
    dtype: str = "f32",
    progress: Progress | None = None,
    force: bool = False,
) -> Path:
    """Write a Hugging Face folder (safetensors, config, tokenizer) for a GGUF; returns ``out_dir``.

    ``dtype`` is the weights' type in the folder: "f32" (exact), "f16" or "bf16". Raises
    ``ConvertError`` for what the user can fix: not a GGUF, an unsupported architecture or
    tokenizer, an output folder that exists and is not empty, too little disk space.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if dtype not in DTYPES:
        raise ConvertError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    check_output(out_dir, [gguf_path], force=force, folder=True)
    try:
        import safetensors  # noqa: F401
    except ImportError:
        raise ConvertError(
            "export-hf needs the safetensors package: pip install safetensors tokenizers"
        ) from None
    if dtype == "bf16":
        try:
            import torch  # noqa: F401  (numpy has no bfloat16)
        except ImportError:
            raise ConvertError(
                "--dtype bf16 needs torch (pip install torch); or use f16/f32"
            ) from None

    reader = _open_gguf(gguf_path)
    meta = _read_metadata(reader)
    arch = ARCHITECTURES.get(meta.architecture)
    if arch is None:
        raise ConvertError(
            f"{gguf_path.name} is a {meta.architecture or 'unnamed'} model, which export-hf "
            f"cannot export; supported: {', '.join(supported())}"
        )

    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    estimate = sum(int(t.n_elements) for t in reader.tensors) * BYTES_PER_ELEMENT[dtype]
    free = shutil.disk_usage(parent).free
    if free < estimate + 64 * 1024**2:
        raise ConvertError(
            f"not enough disk space for {out_dir.name}: it needs about {estimate / 1e6:.0f} MB "
            f"and {parent} has {free / 1e6:.0f} MB free"
        )

    try:
        with atomic_dir(out_dir, replace=force) as tmp:
            tokenizer, tok_config, vocab = build_tokenizer(meta)
            vocab_size = _write_weights(reader, arch, meta, tmp, dtype, progress)
            _write_json(tmp / "config.json", model_config(arch, meta, dtype, vocab_size))
            _write_json(tmp / "generation_config.json", generation_config(meta, vocab))
            tokenizer.save(str(tmp / "tokenizer.json"))
            spm_model = sentencepiece_model(meta, vocab)
            if spm_model is not None:
                (tmp / "tokenizer.model").write_bytes(spm_model)
            _write_json(tmp / "tokenizer_config.json", tok_config)
            _publish_permissions(tmp)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ConvertError(
                f"disk full while writing {out_dir.name}; free some space and run again"
            ) from None
        raise
    return out_dir
