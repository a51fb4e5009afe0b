"""Architectures, one file each, registered by their Hugging Face `architectures` name."""

from __future__ import annotations

import importlib

from convert.archs.base import Architecture
from convert.errors import ConvertError

MODULES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "minicpm")
_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    for name in arch.hf_names:
        _REGISTRY[name] = arch
    return arch


def registry() -> dict[str, Architecture]:
    # every module, even when one was imported directly (and registered itself) before
    for m in MODULES:
        importlib.import_module(f"convert.archs.{m}")
    return _REGISTRY


def supported() -> list[str]:
    return sorted(registry())


def for_config(config: dict) -> Architecture:
    """The architecture config.json names, or a clear error listing the supported ones."""
    names = config.get("architectures") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConvertError(
            f"config.json: architectures is {names!r}, not a list of class names such as "
            '["LlamaForCausalLM"]; fix the config or re-download the checkpoint'
        )
    for name in names:
        if name in registry():
            return registry()[name]
    found = ", ".join(names) if names else "no `architectures` entry"
    raise ConvertError(
        f"config.json names {found}, which edge-llm cannot convert; supported: "
        + ", ".join(supported())
    )
