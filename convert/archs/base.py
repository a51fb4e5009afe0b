"""What an architecture is, as data, in both directions: HF tensor names -> GGUF names, config
fields -> GGUF keys, the named weight transforms that llama.cpp's layout needs, and (`Export`) the
way back for export-hf: the config builder and the transforms that undo the layout changes.

An architecture file (llama.py, qwen2.py, ...) builds one `Architecture` and registers it under
the Hugging Face `architectures` names it handles. The GGUF -> HF tensor names are the same table
inverted, so the two directions cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convert.errors import ConvertError

Transform = Callable[[np.ndarray, dict], np.ndarray]
MISSING = object()


# --- a GGUF's metadata, for the way back ---------------------------------------------------------


class Metadata:
    """A GGUF's key/value metadata, with ``arch(key)`` for the ``{architecture}.`` keys."""

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

    @property
    def tied(self) -> bool:
        """No separate output.weight: the head reuses the embeddings (llama.cpp does the same)."""
        return "output.weight" not in self.tensor_names


def plain(value: Any) -> Any:
    """A metadata value as JSON-friendly Python; float32 values in their shortest decimal form
    (1e-05, not 9.999999747378752e-06)."""
    if isinstance(value, float):
        return float(str(np.float32(value)))
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def rope_parameters(meta: Metadata, theta: float, scaled: bool = True) -> dict[str, Any]:
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
        params = {"rope_type": "linear", "rope_theta": theta, "factor": plain(factor)}
    return params


InverseTransform = Callable[[np.ndarray, Metadata], np.ndarray]

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
class Export:
    """GGUF -> Hugging Face for one architecture (export-hf)."""

    model_type: str  # config.json "model_type"
    # config.json fields that are not one key each: (metadata) -> fields
    config: Callable[[Metadata], dict[str, Any]]
    # GGUF tensor name pattern ("{bid}": a block number, "*": any text) -> the transform back to
    # HF's layout, applied in float32
    transforms: dict[str, InverseTransform] = field(default_factory=dict)
    plain_config: dict[str, str] = field(default_factory=lambda: dict(COMMON_CONFIG))


@dataclass(frozen=True)
class HParam:
    """One GGUF hyperparameter key (written as `{arch}.{key}`) read from config.json."""

    fields: tuple[str, ...]  # config.json names, first present wins
    kind: type = int  # int -> UINT32, float -> FLOAT32, bool -> BOOL
    default: Any = MISSING  # MISSING: required; None: omitted when absent


@dataclass(frozen=True)
class Architecture:
    hf_names: tuple[str, ...]
    gguf_arch: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    # HF tensor name -> GGUF tensor name; "{bid}" stands for the block number
    tensors: dict[str, str]
    hparams: dict[str, HParam]
    # GGUF tensors that may be absent (biases, an untied head); the rest are required
    optional: tuple[str, ...] = ()
    # HF tensors to skip (buffers saved by some versions, e.g. rotary inv_freq)
    ignore: tuple[str, ...] = (r".*\.rotary_emb\.inv_freq",)
    # GGUF tensor name -> transform(tensor, config); applied in float32
    transforms: dict[str, Transform] = field(default_factory=dict)
    # metadata that is not a plain config field: (config) -> [(key, value)]
    extra_metadata: Callable[[dict], list[tuple[str, Any]]] | None = None
    block_count_field: str = "num_hidden_layers"
    export: Export | None = None  # the way back, for the architectures export-hf supports

    # --- name mapping -------------------------------------------------------------------------
    def _patterns(self) -> list[tuple[re.Pattern, str]]:
        out = []
        for hf, gg in self.tensors.items():
            rx = re.escape(hf).replace(r"\{bid\}", r"(?P<bid>\d+)")
            out.append((re.compile(rx + "$"), gg))
        return out

    def gguf_name(self, hf_name: str) -> str | None:
        """The GGUF name for a checkpoint tensor; None for one to skip; error for an unknown one."""
        if any(re.fullmatch(p, hf_name) for p in self.ignore):
            return None
        for rx, gg in self._patterns():
            m = rx.match(hf_name)
            if m:
                return gg.replace("{bid}", m.group("bid")) if "bid" in rx.groupindex else gg
        raise ConvertError(
            f"checkpoint tensor {hf_name} is not part of {self.hf_names[0]} as edge-llm knows it; "
            "is config.json's `architectures` right?"
        )

    def required(self, config: dict) -> list[str]:
        """Every GGUF tensor this config must provide."""
        n = int(config[self.block_count_field])
        out = []
        for gg in self.tensors.values():
            if gg in self.optional:
                continue
            out += [gg.replace("{bid}", str(b)) for b in range(n)] if "{bid}" in gg else [gg]
        return out

    def transform_for(self, gguf_name: str) -> Transform | None:
        generic = re.sub(r"^blk\.\d+\.", "blk.{bid}.", gguf_name)
        return self.transforms.get(generic)

    # --- the way back (export-hf) --------------------------------------------------------------
    def hf_name(self, gguf_name: str) -> str:
        """The checkpoint name of a GGUF tensor: the tensor table read backwards."""
        for hf, gg in self.tensors.items():
            rx = re.escape(gg).replace(r"\{bid\}", r"(?P<bid>\d+)")
            if m := re.fullmatch(rx, gguf_name):
                return hf.replace("{bid}", m.groupdict().get("bid") or "")
        raise ConvertError(
            f"tensor {gguf_name} has no Hugging Face name in export-hf's {self.gguf_arch} table; "
            "this GGUF variant is not supported yet"
        )

    def inverse_transform(self, gguf_name: str) -> InverseTransform | None:
        for pattern, fn in (self.export.transforms if self.export else {}).items():
            rx = re.escape(pattern).replace(r"\{bid\}", r"\d+").replace(r"\*", r".*")
            if re.fullmatch(rx, gguf_name):
                return fn
        return None

    # --- metadata -----------------------------------------------------------------------------
    def metadata(self, config: dict) -> list[tuple[str, Any]]:
        """(key, value) pairs, keys without the `{arch}.` prefix, values typed by `kind`."""
        out = []
        for key, hp in self.hparams.items():
            value = lookup(config, *hp.fields, default=hp.default)
            if value is MISSING:
                raise ConvertError(
                    f"config.json has none of {', '.join(hp.fields)}, which {self.hf_names[0]} needs"
                )
            if value is None:
                continue
            out.append((key, hp.kind(value)))
        if self.extra_metadata:
            out += self.extra_metadata(config)
        return out


def lookup(config: dict, *names: str, default: Any = MISSING) -> Any:
    """A config value by any of its names: top level first, then the RoPE tables (newer
    transformers move rope_theta into `rope_parameters`, per layer type for some models)."""
    for name in names:
        if config.get(name) is not None:
            return config[name]
    for table in ("rope_parameters", "rope_scaling"):
        rope = config.get(table)
        if not isinstance(rope, dict):
            continue
        if isinstance(rope.get("full_attention"), dict):
            rope = rope["full_attention"]
        for name in names:
            if rope.get(name) is not None:
                return rope[name]
    return default


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


# HF names shared by the llama family (decoder blocks with q/k/v/o and a gated MLP)
LLAMA_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    "model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
}

# GGUF keys shared by the llama family
LLAMA_HPARAMS = {
    "context_length": HParam(("max_position_embeddings",)),
    "embedding_length": HParam(("hidden_size",)),
    "block_count": HParam(("num_hidden_layers",)),
    "feed_forward_length": HParam(("intermediate_size",)),
    "attention.head_count": HParam(("num_attention_heads",)),
    "attention.head_count_kv": HParam(("num_key_value_heads", "num_attention_heads")),
    "attention.layer_norm_rms_epsilon": HParam(("rms_norm_eps",), float),
    "rope.freq_base": HParam(("rope_theta",), float, 10000.0),
}
