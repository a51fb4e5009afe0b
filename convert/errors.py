"""Conversion errors a user can fix: one line, what is wrong and what to do; exit 2."""

from __future__ import annotations

from edge_llm.errors import EdgeLLMError


class ConvertError(EdgeLLMError):
    """A checkpoint, tokenizer or option the converter cannot use as it is."""
