"""SentencePiece's tokenizer.model in both directions: reading one (its processor, its protobuf,
the GGUF token type of each piece) for conversion, and writing one from a GGUF vocabulary for
export-hf, so that a SentencePiece vocabulary survives the round trip exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from convert.errors import ConvertError

# SentencePiece ModelProto.SentencePiece.Type values -> GGUF token types (same numbers, by name).
TYPES = {
    1: gguf.TokenType.NORMAL,
    2: gguf.TokenType.UNKNOWN,
    3: gguf.TokenType.CONTROL,
    4: gguf.TokenType.USER_DEFINED,
    5: gguf.TokenType.UNUSED,
    6: gguf.TokenType.BYTE,
}
BPE = 2  # TrainerSpec.ModelType: UNIGRAM=1, BPE=2, WORD=3, CHAR=4
MODEL_TYPES = {1: "unigram", 2: "BPE", 3: "word", 4: "char"}


def load_processor(path: Path) -> Any:
    try:
        import sentencepiece
    except ImportError as e:
        raise ConvertError(
            "reading tokenizer.model needs sentencepiece: pip install sentencepiece"
        ) from e
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise ConvertError(
            f"tokenizer.model is not a SentencePiece model ({e}); re-download it"
        ) from e
    return sp


def load_proto(path: Path) -> Any | None:
    """The parsed ModelProto (piece types, model type, add_dummy_prefix), or None without
    protobuf; then the types come from the processor and the model type is not checked."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        return None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def piece_type(sp: Any, proto: Any | None, i: int) -> int:
    if proto is not None:
        return int(TYPES.get(proto.pieces[i].type, gguf.TokenType.NORMAL))
    if sp.IsUnknown(i):
        return int(gguf.TokenType.UNKNOWN)
    if sp.IsControl(i):
        return int(gguf.TokenType.CONTROL)
    if sp.IsUnused(i):
        return int(gguf.TokenType.UNUSED)
    if sp.IsByte(i):
        return int(gguf.TokenType.BYTE)
    return int(gguf.TokenType.NORMAL)


def model_bytes(vocab: Any) -> bytes | None:
    """A tokenizer.model (SentencePiece protobuf) for a GGUF vocabulary (`convert.tokenizer.Vocab`)
    of tokenizer model "llama": the same pieces, scores and types (GGUF and SentencePiece number
    the types alike), BPE with byte fallback, the GGUF's space-prefix flag. None for other
    tokenizers, or without protobuf."""
    if vocab.model != "llama" or not vocab.scores:
        return None
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:  # needs protobuf
        return None
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(vocab.tokens)
    m.trainer_spec.byte_fallback = any(t == gguf.TokenType.BYTE for t in vocab.token_types)
    for name, kind in (("unk_id", "unk"), ("bos_id", "bos"), ("eos_id", "eos"), ("pad_id", "pad")):
        setattr(m.trainer_spec, name, vocab.special_ids.get(kind, -1))
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = vocab.add_space_prefix is not False
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    for text, kind, score in zip(vocab.tokens, vocab.token_types, vocab.scores):
        if kind == gguf.TokenType.USER_DEFINED:
            # llama.cpp's converter stores user-defined pieces with real spaces (it matches them
            # in the raw text); SentencePiece matches them after escaping spaces to "▁"
            text = text.replace(" ", "\u2581")
        piece = m.pieces.add()
        piece.piece, piece.score = text, float(score)
        piece.type = int(kind) if 1 <= int(kind) <= 6 else pb.ModelProto.SentencePiece.NORMAL
    return m.SerializeToString()
