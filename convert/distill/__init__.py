"""Distillation: prune a Hugging Face teacher (depth by block influence, width by activation
magnitude) and heal the student by knowledge distillation on the teacher's logits.

from convert.distill import distill
distill("teacher-hf", "student-hf", layers=20, tokens=200_000)
"""

__all__ = ["DistillResult", "Recipe", "distill", "load_recipe"]

_LAZY = {"DistillResult": "core", "distill": "core", "Recipe": "recipe", "load_recipe": "recipe"}


def __getattr__(name: str):
    # loaded on first use: `edge-llm --help` imports convert.distill.cli, not torch's helpers
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"convert.distill.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'convert.distill' has no attribute {name!r}")
