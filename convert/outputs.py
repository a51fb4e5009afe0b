"""Where a command may write: never over or inside one of its sources, never over an existing
output unless asked.

Why: a converter often runs on someone's only copy of a checkpoint. ``convert HF -o
HF/model.safetensors`` used to replace the source weights with a GGUF and exit 0. Paths are
compared after resolving symlinks, and by device and inode, so a symlink or a hard link to a
source file (or a folder reached by two names) is caught too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from convert.errors import ConvertError
from edge_llm.fsutil import same_file_or_inside


def check_output(
    out: str | os.PathLike[str],
    sources: Iterable[str | os.PathLike[str] | None],
    *,
    force: bool = False,
    folder: bool = False,
) -> Path:
    """Refuse an output that is, or is inside, a source (or holds one), and an existing output
    without ``force`` (a folder output may exist empty). Returns ``out`` as a Path."""
    out = Path(out)
    srcs = [Path(s) for s in sources if s is not None]
    hit = same_file_or_inside(out, srcs)
    if hit is not None:
        real_out, real_src = os.path.realpath(out), os.path.realpath(hit)
        how = "is" if real_out == real_src or not Path(real_src).is_dir() else "is inside"
        raise ConvertError(
            f"the output {out} {how} the source {hit}; writing there would destroy the source, "
            "choose an output outside it"
        )
    real_out = Path(os.path.realpath(out))
    for s in srcs:
        if real_out in Path(os.path.realpath(s)).parents:
            raise ConvertError(
                f"the output {out} holds the source {s}; replacing it would destroy the source, "
                "choose another output"
            )
    if folder:
        if out.exists() and not out.is_dir():
            raise ConvertError(f"{out} exists and is a file; pass a new folder name with -o")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise ConvertError(
                f"{out} exists and is not empty; pass --force to replace it, or a new folder name"
            )
    elif out.exists() or out.is_symlink():
        if out.is_dir():
            raise ConvertError(
                f"{out} is a directory; pass a file name such as {out / 'model.gguf'}"
            )
        if not force:
            raise ConvertError(f"{out} exists; pass --force to replace it, or choose another -o")
    return out
