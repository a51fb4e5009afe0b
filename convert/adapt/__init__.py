"""LoRA adapters for one subject on a frozen base (`edge-llm adapt`): data.py (examples, prompt
masking), train.py (the loop, checkpoints), core.py (`adapt`: base, data, train, write). Imported
lazily so that `edge-llm --help` does not load torch."""

from __future__ import annotations

__all__ = ["adapt", "AdaptResult"]


def __getattr__(name: str):
    if name in __all__:
        from convert.adapt import core

        return getattr(core, name)
    raise AttributeError(name)
