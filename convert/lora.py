"""PEFT LoRA folder -> GGUF adapter that llama.cpp applies to its base (``--lora``,
``edge_llm.load(adapters=...)``).

Why: a LoRA adapter trained with Hugging Face PEFT (or `edge-llm adapt`) is a pair of small
matrices per adapted projection, named after the checkpoint's tensors. llama.cpp wants them named
after the GGUF's tensors, in the GGUF's layout, with the adapter's alpha in the header. The
result is the file llama.cpp's own ``convert_lora_to_gguf.py`` writes for the same folder
(tests/convert/test_lora.py compares them tensor by tensor), written with gguf-py's GGUFWriter and
the project's architecture tables (convert/archs/), whose names and layout transforms are the ones
the base was converted with.

Layout: PEFT's ``lora_A`` is ``[r, n_in]`` and ``lora_B`` ``[n_out, r]`` (numpy order), and
llama.cpp adds ``scale * alpha / r * B (A x)``. A transform of the base weight's rows (llama's
RoPE permutation of q/k) applies to B alone, since it commutes with the product; that is checked
on the data (``T(B) A == T(B A)``) rather than assumed, so a transform that is not a row
rearrangement refuses the tensor instead of writing a wrong adapter. PEFT's embedding adapters
(``lora_embedding_A/B``) are stored flipped, as llama.cpp's input layer reads them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from convert import archs
from convert.archs.base import Architecture
from convert.errors import ConvertError
from convert.outputs import check_output
from edge_llm.fsutil import atomic_path

OUT_TYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)(?:\.weight)?$")
_EMB = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_embedding_[AB])$")


@dataclass(frozen=True)
class LoraResult:
    path: Path
    architecture: str
    alpha: float
    rank: int
    tensors: int  # GGUF tensors written (two per adapted matrix)
    n_params: int
    file_size: int

    def summary(self) -> dict:
        return {**self.__dict__, "path": str(self.path)}


def read_peft(peft_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(adapter_config.json, the adapter's tensors as float32 numpy) of a PEFT folder."""
    d = Path(peft_dir)
    cfg_path = d / "adapter_config.json"
    if not d.is_dir() or not cfg_path.is_file():
        raise ConvertError(
            f"{d} is not a PEFT adapter folder (no adapter_config.json); pass the folder "
            "save_pretrained wrote (edge-llm adapt --peft DIR makes one)"
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConvertError(f"cannot read {cfg_path}: {e}") from None
    if not isinstance(cfg, dict):
        raise ConvertError(f"{cfg_path} is not a JSON object")
    weights = d / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConvertError(
            f"{d} has no adapter_model.safetensors; save the adapter with safetensors"
        )
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            tensors = {k: f.get_tensor(k).float().numpy() for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ConvertError(f"cannot read {weights}: {e}; the file is damaged") from None
    return cfg, tensors


def check_peft_config(cfg: dict, where: str) -> tuple[float, int]:
    """(alpha, r) if llama.cpp computes what PEFT computes for this adapter; else ConvertError."""
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ConvertError(
            f"{where}: peft_type is {cfg.get('peft_type')!r}; only LoRA adapters convert"
        )
    for key, why in (
        ("use_dora", "DoRA rescales the weight's columns, which llama.cpp's adapters cannot"),
        ("use_rslora", "rsLoRA scales by alpha/sqrt(r), llama.cpp by alpha/r"),
    ):
        if cfg.get(key):
            raise ConvertError(f"{where}: {key} is set: {why}; train a plain LoRA adapter")
    if cfg.get("alpha_pattern"):
        raise ConvertError(
            f"{where}: alpha_pattern gives layers their own alpha; a GGUF adapter has one alpha"
        )
    alpha, r = cfg.get("lora_alpha"), cfg.get("r")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise ConvertError(f"{where}: lora_alpha is {alpha!r}, not a number")
    if not isinstance(r, int) or r < 1:
        raise ConvertError(f"{where}: r is {r!r}, not a positive rank")
    return float(alpha), r


def base_config(base: str | Path) -> dict:
    """The base's config.json (a Hugging Face folder), or the fields the tables need from a
    GGUF base (its architecture, heads and layers)."""
    base = Path(base)
    if base.is_dir():
        p = base / "config.json"
        if not p.is_file():
            raise ConvertError(f"{base} has no config.json; pass the base model's folder or GGUF")
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConvertError(f"cannot read {p}: {e}") from None
    if base.is_file():
        from edge_llm import gguf_info
        from edge_llm.errors import InvalidModelError

        try:
            info = gguf_info.read(base)
        except InvalidModelError as e:
            raise ConvertError(str(e)) from None
        by_gguf = {a.gguf_arch: a for a in archs.registry().values()}
        arch = by_gguf.get(info.architecture)
        if arch is None:
            raise ConvertError(f"{base} is a {info.architecture} model, which edge-llm cannot map")
        heads = info.arch_value("attention.head_count")
        return {
            "architectures": [arch.hf_names[0]],
            "num_hidden_layers": info.arch_value("block_count"),
            "hidden_size": info.arch_value("embedding_length"),
            "num_attention_heads": heads,
            "num_key_value_heads": info.arch_value("attention.head_count_kv", heads),
        }
    raise ConvertError(f"--base {base} does not exist; pass the base model's folder or GGUF")


def _pairs(tensors: dict[str, np.ndarray], where: str) -> dict[str, dict[str, np.ndarray]]:
    """Checkpoint weight name -> {"A": ..., "B": ...}, in the adapter file's order."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if m := _KEY.match(key):
            out.setdefault(m["module"] + ".weight", {})[m["part"][-1]] = value
        elif m := _EMB.match(key):
            out.setdefault(m["module"] + ".weight", {})["E" + m["part"][-1]] = value
        elif key.endswith(".base_layer.weight"):
            continue
        else:
            raise ConvertError(
                f"{where}: tensor {key} is not a LoRA matrix (lora_A/lora_B); adapters that save "
                "whole layers (modules_to_save, new tokens) cannot be applied by llama.cpp"
            )
    for name, p in out.items():
        if set(p) not in ({"A", "B"}, {"EA", "EB"}):
            raise ConvertError(f"{where}: {name} has {sorted(p)} but needs both lora_A and lora_B")
    return out


def gguf_pairs(
    peft_dir: str | Path, base: str | Path
) -> tuple[Architecture, float, list[tuple[str, np.ndarray]]]:
    """(architecture, alpha, [(GGUF tensor name, float32 numpy)]) for a PEFT folder and its base."""
    cfg, tensors = read_peft(peft_dir)
    alpha, _ = check_peft_config(cfg, str(peft_dir))
    config = base_config(base)
    arch = archs.for_config(config)
    out: list[tuple[str, np.ndarray]] = []
    for hf_name, p in _pairs(tensors, str(peft_dir)).items():
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            raise ConvertError(
                f"{peft_dir} adapts lm_head, which this base ties to its embeddings; llama.cpp "
                "has no separate output matrix to adapt"
            )
        name = arch.gguf_name(hf_name)
        if name is None:
            raise ConvertError(f"{peft_dir}: {hf_name} is not a weight of the base")
        if "EA" in p:  # embedding: llama.cpp's input layer reads the pair flipped
            a, b = p["EA"].T, p["EB"]
        else:
            a, b = p["A"], p["B"]
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise ConvertError(f"{peft_dir}: {hf_name}'s lora_A and lora_B do not multiply")
            if (fn := arch.transform_for(name)) is not None:
                b = _row_transform(fn, a, b, config, name)
        out += [
            (name + ".lora_a", np.ascontiguousarray(a)),
            (name + ".lora_b", np.ascontiguousarray(b)),
        ]
    if not out:
        raise ConvertError(f"{peft_dir} holds no LoRA tensors")
    return arch, alpha, out


def _row_transform(
    fn: Callable, a: np.ndarray, b: np.ndarray, config: dict, name: str
) -> np.ndarray:
    """The base's transform applied to B, if it commutes with B A (a row rearrangement)."""
    tb = np.asarray(fn(b, config), dtype=np.float32)
    whole = np.asarray(fn(b @ a, config), dtype=np.float32)
    if tb.shape != b.shape or not np.allclose(tb @ a, whole, rtol=1e-5, atol=1e-6):
        raise ConvertError(
            f"{name}: the base's layout transform is not a row rearrangement, so the adapter "
            "cannot be carried over; adapt other projections"
        )
    return tb


def _encode(data: np.ndarray, out_type: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    qtype = OUT_TYPES[out_type][0]
    if out_type == "f32":
        return data.astype(np.float32), qtype
    if out_type == "f16":
        return data.astype(np.float16), qtype
    try:
        return gguf.quants.quantize(data.astype(np.float32), qtype), qtype
    except gguf.quants.QuantError:  # rows not a whole number of blocks: as llama.cpp's tools do
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def write_gguf_adapter(
    peft_dir: str | Path,
    base: str | Path,
    out: str | Path,
    *,
    out_type: str = "f32",
    force: bool = False,
) -> LoraResult:
    """Write the GGUF adapter of ``peft_dir`` (a PEFT LoRA folder) for ``base`` (the base's Hugging
    Face folder or GGUF) to ``out``, atomically."""
    if out_type not in OUT_TYPES:
        raise ConvertError(f"unknown --outtype {out_type}; choose {', '.join(OUT_TYPES)}")
    out = check_output(out, [peft_dir, base], force=force)
    arch, alpha, pairs = gguf_pairs(peft_dir, base)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch.gguf_arch)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        for name, data in pairs:
            enc, qtype = _encode(data, out_type)
            w.add_tensor(name, enc, raw_dtype=qtype)
        meta = gguf.Metadata.load(None, Path(peft_dir), None, w.get_total_parameter_count()[0])
        if meta.name is None:
            meta.name = Path(base).name
        meta.set_gguf_meta_model(w)
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    ranks = {d.shape[1] for n, d in pairs if n.endswith(".lora_b")}
    return LoraResult(
        path=out,
        architecture=arch.gguf_arch,
        alpha=alpha,
        rank=max(ranks),
        tensors=len(pairs),
        n_params=sum(d.size for _, d in pairs),
        file_size=out.stat().st_size,
    )
