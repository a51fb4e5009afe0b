"""Results records: one JSON object per line, appended by every run, read by `bench report`.

A record holds what was measured and everything needed to say what it was measured on: the model
file (path, SHA-256, size, recipe), the suite (name and version), the device, edge-llm's and
llama.cpp's versions, and the date. Appending is one ``os.write`` of a whole line to a file opened
with O_APPEND, so concurrent runs never interleave and a killed run leaves no partial line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bench.errors import BenchError

SCHEMA = 1
REQUIRED = ("schema", "date", "model", "suite", "device", "versions", "tasks", "compute", "density")


def default_path() -> Path:
    """$EDGE_LLM_HOME/bench/results.jsonl, else $XDG_DATA_HOME (~/.local/share)/edge-llm/bench/results.jsonl."""
    home = os.environ.get("EDGE_LLM_HOME")
    if home:
        return Path(home) / "bench" / "results.jsonl"
    data = os.environ.get("XDG_DATA_HOME")
    return (Path(data) if data else Path.home() / ".local" / "share") / "edge-llm" / "bench" / "results.jsonl"


def append(path: str | Path, record: dict) -> Path:
    path = Path(path)
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise BenchError(f"cannot write results to {path}: {e.strerror}; pick another -o path") from None
    try:
        n = os.write(fd, line)
    finally:
        os.close(fd)
    if n != len(line):
        raise BenchError(f"short write to {path} ({n} of {len(line)} bytes); the disk may be full")
    return path


def load(path: str | Path, warn=None) -> list[dict]:
    """Every valid record in ``path``, in file order. A malformed line is skipped with a warning
    naming it (one bad line must not hide the history); no valid record at all is an error."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"no results file at {path}; run `edge-llm bench MODEL` first (or pass the file)")
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    records = []
    with path.open(encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                warn(f"{path}:{no} is not a JSON record; skipped")
                continue
            if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
                warn(f"{path}:{no} is not an edge-llm bench record; skipped")
                continue
            if rec["schema"] > SCHEMA:
                warn(f"{path}:{no} has schema {rec['schema']}, newer than this edge-llm ({SCHEMA}); skipped")
                continue
            records.append(rec)
    if not records:
        raise BenchError(f"{path} holds no edge-llm bench records")
    return records
