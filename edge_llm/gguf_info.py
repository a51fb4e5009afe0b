"""What a GGUF says about itself: metadata, tensors, parameter count, bits per weight.

The header is read and checked by llama.cpp's own GGUF parser (`edge_llm.llama.gguf`: the header
only, in milliseconds, where the ``gguf`` package's reader parses every token string in Python);
this module adds what follows from it: the model's name, its size in parameters and bits per
weight, the facts `edge-llm info` shows. Writing GGUFs is the ``gguf`` package's job (convert/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_llm.llama.gguf import Contents, TensorInfo, check_gguf, explain_load_failure
from edge_llm.llama.gguf import read as _read

# TensorInfo, check_gguf and explain_load_failure are llama.cpp's side (edge_llm.llama.gguf), and
# are imported from here by the layers above it
__all__ = ["GGUFInfo", "TensorInfo", "check_gguf", "display_name", "explain_load_failure", "read"]


class GGUFInfo(Contents):
    """A GGUF's header as llama.cpp read it (path, sizes, metadata, tensors: `Contents`) and the
    facts that follow from it."""

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def name(self) -> str:
        """The file's own name for the model (``display_name``); the short name it is registered
        under, where it has one, comes from ``registry.model_name`` (this reader sits below the
        registry and does not consult it)."""
        return display_name(self.metadata, self.path)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Bits of tensor data per parameter, as llama.cpp reports it."""
        return 8 * self.tensor_bytes / self.n_params if self.n_params else 0.0

    @property
    def context_length(self) -> int | None:
        v = self.arch_value("context_length")
        return int(v) if v is not None else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def vocab_size(self) -> int | None:
        return self.array_lengths.get("tokenizer.ggml.tokens")

    def type_histogram(self) -> dict[str, dict[str, int]]:
        """Per tensor type: how many tensors, parameters and bytes."""
        out: dict[str, dict[str, int]] = {}
        for t in self.tensors:
            row = out.setdefault(t.type, {"tensors": 0, "params": 0, "bytes": 0})
            row["tensors"] += 1
            row["params"] += t.n_elements
            row["bytes"] += t.n_bytes
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["bytes"]))

    def summary(self) -> dict[str, Any]:
        """The facts `edge-llm info` shows, JSON-ready."""
        return {
            "path": str(self.path),
            "name": self.name,
            "architecture": self.architecture,
            "file_size": self.file_size,
            "n_params": self.n_params,
            "n_tensors": len(self.tensors),
            "bits_per_weight": round(self.bits_per_weight, 4),
            "file_type": _FILE_TYPES.get(self.metadata.get("general.file_type"), None),
            "context_length": self.context_length,
            "embedding_length": self.arch_value("embedding_length"),
            "block_count": self.arch_value("block_count"),
            "head_count": self.arch_value("attention.head_count"),
            "head_count_kv": self.arch_value("attention.head_count_kv"),
            "vocab_size": self.vocab_size,
            "chat_template": self.chat_template is not None,
            "gguf_version": self.version,
            "types": self.type_histogram(),
        }


# llama_ftype values that name a whole file's quantization (general.file_type).
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}


def display_name(metadata: dict[str, Any], path: Path) -> str:
    """A model's name from its GGUF: general.basename with general.size_label and
    general.finetune (``SmolLM2-135M-Instruct``), since converters often fill general.name from a
    training-run folder ("Smollm2 135M 8k Lc100K Mix1 Ep2"); else general.name; else the file."""
    base = str(metadata.get("general.basename") or "").strip()
    if base:
        parts = [base]
        for key in ("general.size_label", "general.finetune"):
            v = str(metadata.get(key) or "").strip()
            if v and v.lower() not in base.lower():
                parts.append(v)
        return "-".join(parts)
    return str(metadata.get("general.name") or path.stem)


def read(path: str | Path) -> GGUFInfo:
    """Parse a GGUF's header and tensor table; InvalidModelError if it is broken or truncated."""
    return _read(path, GGUFInfo)
