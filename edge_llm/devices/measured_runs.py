"""Measured speeds of real runs on this host, kept so that `plan` can check its predictions.

A prediction is only as good as the calibration behind it: one taken on a busy host predicted
4.8 tok/s where `run --stats` then measured 90.7, and nothing said so. ``run --stats`` therefore
records what it measured for the file it ran (``record``), and `plan` on ``host`` shows the
latest record of the same file beside its prediction, flagging a disagreement of more than 2x.

One JSON line per run in ``$EDGE_LLM_HOME/measured-runs.jsonl``. A file is identified by its
resolved path, size and modification time, so a rewritten file does not inherit old records.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from edge_llm.fsutil import cache_dir

MIN_TOKENS = 8  # fewer generated tokens measure the first-token latency, not decode speed
KEEP = 500  # records kept (the oldest are dropped)


def _file() -> Path:
    return cache_dir() / "measured-runs.jsonl"


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"file": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}


def record(path: str | Path, completion, threads: int, n_ctx: int) -> bool:
    """Append a run's measured speeds (a ``Completion``); False when too short to measure."""
    u, t = completion.usage, completion.timings
    if u.completion_tokens < MIN_TOKENS or t.decode_tokens_per_s <= 0:
        return False
    row = {
        **_identity(Path(path)),
        "threads": threads,
        "n_ctx": n_ctx,
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "decode_tokens_per_s": round(t.decode_tokens_per_s, 2),
        "prefill_tokens_per_s": round(t.prefill_tokens_per_s, 2),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    f = _file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        lines = f.read_text().splitlines() if f.exists() else []
        lines = (lines + [json.dumps(row)])[-KEEP:]
        tmp = f.with_name(f".{f.name}.{os.getpid()}")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, f)
    except OSError:
        return False  # a read-only home must not fail the run itself
    return True


def latest(path: str | Path) -> dict | None:
    """The most recent record of this very file, or None."""
    f = _file()
    try:
        ident = _identity(Path(path))
        lines = f.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if all(row.get(k) == v for k, v in ident.items()):
            return row
    return None
