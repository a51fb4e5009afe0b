"""GGUF -> Hugging Face folder: the reverse of conversion.

``export_hf`` reads a GGUF (memory-mapped, with gguf-py's ``GGUFReader``), dequantizes every
tensor with gguf-py's own kernels (``gguf.quants.dequantize``), undoes the layout changes that
llama.cpp's converter made, and writes a folder that ``transformers`` loads with
``AutoModelForCausalLM`` / ``AutoTokenizer``:

    model.safetensors (or shards + model.safetensors.index.json), config.json,
    generation_config.json, tokenizer.json, tokenizer_config.json

This module is the generic writing only. What an architecture needs on the way back (the GGUF ->
HF tensor names, the config.json builder, the transforms to undo) lives in its file in
convert/archs/ beside the way there (`Architecture.export`); adding qwen2/qwen3/mistral/phi3 means
giving their files an `Export`. The tokenizer is the converter's own `Vocab`, written out by
convert/hf_tokenizer.py from the same pre-tokenizer table the converter reads.

The weights are exactly the dequantized GGUF weights, so transformers and llama.cpp compute the
same function (up to llama.cpp's own activation rounding); the export does not recover what
quantization lost.

The folder appears atomically: everything is written into a hidden sibling directory that is
renamed onto ``out_dir`` at the end; any failure removes it and leaves nothing at ``out_dir``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import TokenType

from convert import archs as convert_archs
from convert import spm
from convert.archs.base import Architecture, Metadata, plain
from convert.errors import ConvertError, check_disk_full
from convert.hf_tokenizer import build_tokenizer
from convert.outputs import check_output
from convert.tokenizer import Vocab
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


def _read_metadata(reader: gguf.GGUFReader) -> Metadata:
    values = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        values[key] = fld.contents()
    return Metadata(values, {t.name for t in reader.tensors})


def architectures() -> dict[str, Architecture]:
    """general.architecture -> the architecture file that knows the way back."""
    return {a.gguf_arch: a for a in convert_archs.registry().values() if a.export is not None}


def supported() -> list[str]:
    return sorted(architectures())


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


def model_config(
    arch: Architecture, meta: Metadata, vocab: Vocab, dtype: str, vocab_size: int
) -> dict:
    config: dict[str, Any] = {
        "architectures": [arch.hf_names[0]],
        "model_type": arch.export.model_type,
    }
    for key, fld in arch.export.plain_config.items():
        value = meta.arch(key)
        if value is not None:
            config[fld] = plain(value)
    config["vocab_size"] = vocab_size
    config.update(arch.export.config(meta))
    for kind in ("bos", "eos", "pad"):
        config[f"{kind}_token_id"] = vocab.special_ids.get(kind)
    config["torch_dtype"] = DTYPES[dtype]
    return config


def generation_config(vocab: Vocab) -> dict[str, Any]:
    """bos/eos/pad, with eos also listing the end-of-turn control tokens llama.cpp stops at."""
    eos = vocab.special_ids.get("eos")
    eos_ids = [eos] if eos is not None else []
    for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.token_types)):
        if kind == TokenType.CONTROL and text in END_OF_TURN_TEXTS and i not in eos_ids:
            eos_ids.append(i)
    out: dict[str, Any] = {}
    if "bos" in vocab.special_ids:
        out["bos_token_id"] = vocab.special_ids["bos"]
    if eos_ids:
        out["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if "pad" in vocab.special_ids:
        out["pad_token_id"] = vocab.special_ids["pad"]
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
    arch: Architecture,
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
        if fn := arch.inverse_transform(t.name):
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
    arch = architectures().get(meta.architecture)
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
            vocab = Vocab.from_gguf(meta.values)
            context = int(meta.arch("context_length", 2048))
            tokenizer, tok_config = build_tokenizer(vocab, context)
            vocab_size = _write_weights(reader, arch, meta, tmp, dtype, progress)
            config = model_config(arch, meta, vocab, dtype, vocab_size)
            _write_json(tmp / "config.json", config)
            _write_json(tmp / "generation_config.json", generation_config(vocab))
            tokenizer.save(str(tmp / "tokenizer.json"))
            spm_model = spm.model_bytes(vocab)
            if spm_model is not None:
                (tmp / "tokenizer.model").write_bytes(spm_model)
            _write_json(tmp / "tokenizer_config.json", tok_config)
            _publish_permissions(tmp)
    except OSError as e:
        check_disk_full(e, out_dir.name)
        raise
    return out_dir
