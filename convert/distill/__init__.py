"""Distillation: prune a Hugging Face teacher (depth by block influence, width by activation
magnitude) and heal the student by knowledge distillation on the teacher's logits.

from convert.distill import distill
distill("teacher-hf", "student-hf", layers=20, tokens=200_000)
"""

from convert.distill.core import DistillResult, distill
from convert.distill.recipe import Recipe, load_recipe

__all__ = ["DistillResult", "Recipe", "distill", "load_recipe"]
