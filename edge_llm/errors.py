"""Errors a user can fix. Each message is one line: what is wrong, then what to do.

The CLI prints these without a traceback and exits with ``exit_code``; an app catches
``EdgeLLMError`` to handle them all.
"""

from __future__ import annotations


class EdgeLLMError(Exception):
    """Bad input or a missing resource: something the user can fix."""

    exit_code = 2


class ModelNotFoundError(EdgeLLMError):
    """The model argument names no file or known model, or the model is not installed."""


class InvalidModelError(EdgeLLMError):
    """The file exists but is not a GGUF that llama.cpp can load."""


class PromptError(EdgeLLMError):
    """The prompt or the messages cannot be run (empty, too long for the context, malformed)."""


class ConfigError(EdgeLLMError):
    """An option is out of range (threads, context, sampling, device)."""
