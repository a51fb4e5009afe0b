"""Conversion errors a user can fix: one line, what is wrong and what to do; exit 2."""

from __future__ import annotations

import errno
from pathlib import Path

from edge_llm.errors import EdgeLLMError


class ConvertError(EdgeLLMError):
    """A checkpoint, tokenizer or option the converter cannot use as it is."""


def read_input(path: Path, what: str) -> bytes:
    """The bytes of a file the user named, or the one-line error (``what``: "the recipe")."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConvertError(
            f"cannot read {what} {path}: {e.strerror or e}; check the path"
        ) from None


def check_disk_full(e: OSError, name: str) -> None:
    """Raise the one-line error for a disk that filled while writing ``name``; any other
    OSError is left for the caller to re-raise."""
    if e.errno == errno.ENOSPC:
        raise ConvertError(
            f"disk full while writing {name}; free some space and run again"
        ) from None
