"""Errors a user can fix. Each message is one line: what is wrong, then what to do.

The CLI prints these without a traceback and exits with ``exit_code``; an app catches
``EdgeLLMError`` to handle them all.
"""

from __future__ import annotations


class EdgeLLMError(Exception):
    r"""Bad input or a missing resource: something the user can fix.

    The message is kept to one line even when it quotes the input (a key named "a\nb" in a
    crafted file): line breaks in it are written as \n.
    """

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str) and ("\n" in args[0] or "\r" in args[0]):
            one = args[0].replace("\r", "\\r").replace("\n", "\\n")
            args = (one, *args[1:])
        super().__init__(*args)


class ModelNotFoundError(EdgeLLMError):
    """The model argument names no file or known model, or the model is not installed."""


class InvalidModelError(EdgeLLMError):
    """The file exists but is not a GGUF that llama.cpp can load."""


class PromptError(EdgeLLMError):
    """The prompt or the messages cannot be run (empty, too long for the context, malformed)."""


class ConfigError(EdgeLLMError):
    """An option is out of range (threads, context, sampling, device)."""


class InvalidAdapterError(EdgeLLMError):
    """An adapter file that is not a LoRA adapter llama.cpp can apply to the loaded base
    (not a GGUF, truncated, not an adapter, or built for another architecture or shape)."""
