"""Results records: one JSON object per line, appended by every run, read by `bench report`.

A record holds what was measured and everything needed to say what it was measured on: the model
file (path, SHA-256, size, recipe), the suite (name and version), the device, edge-llm's and
llama.cpp's versions, and the date. Appending is one ``os.write`` of a whole line to a file opened
with O_APPEND, so concurrent runs never interleave and a killed run leaves no partial line.

Every item's id, outcome and output stay too, so that two runs can be compared item by item
later (``bench report --compare``): not in the results file, which stays small enough to read at a
glance, but in a gzip-compressed JSON sidecar per run, ``<results stem>.items/<run_id>.json.gz``
next to it, written to a temporary file and renamed into place; the record names it
(``items_file``, relative to the results file's folder).
"""

from __future__ import annotations

import gzip
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
    return (
        (Path(data) if data else Path.home() / ".local" / "share")
        / "edge-llm"
        / "bench"
        / "results.jsonl"
    )


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
        raise BenchError(
            f"cannot write results to {path}: {e.strerror}; pick another -o path"
        ) from None
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
        raise BenchError(
            f"no results file at {path}; run `edge-llm bench MODEL` first (or pass the file)"
        )
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
                warn(
                    f"{path}:{no} has schema {rec['schema']}, newer than this edge-llm ({SCHEMA}); skipped"
                )
                continue
            records.append(rec)
    if not records:
        raise BenchError(f"{path} holds no edge-llm bench records")
    return records


def items_dir(results: str | Path) -> Path:
    results = Path(results)
    return results.with_name(results.stem + ".items")


def save_items(results: str | Path, record: dict) -> dict:
    """Write ``record``'s per-item results to its sidecar; return the record without them, naming
    the sidecar. A record without a run id or items is returned as it is, less its items."""
    from edge_llm.fsutil import atomic_path

    items = {t: r["items"] for t, r in record["tasks"].items() if r.get("items")}
    out = json.loads(json.dumps(record))
    for r in out["tasks"].values():
        r.pop("items", None)
    if not items or "run_id" not in record:
        return out
    folder = items_dir(results)
    path = folder / f"{record['run_id']}.json.gz"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
                json.dump({"run_id": record["run_id"], "tasks": items}, f, ensure_ascii=False)
    except OSError as e:
        raise BenchError(
            f"cannot write the per-item results to {path}: {e.strerror}; pick another -o path"
        ) from None
    out["items_file"] = str(path.relative_to(Path(results).parent))
    return out


def load_items(results: str | Path, record: dict) -> dict[str, list[dict]]:
    """The per-item results of a record ({task: items}); BenchError when its sidecar is gone."""
    name = record.get("items_file")
    if not name:
        raise BenchError(
            f"run {record.get('run_id', record['date'])} of {record['model']['name']} "
            "kept no per-item results (it predates them); rerun it to compare"
        )
    path = Path(results).parent / name
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)["tasks"]
    except FileNotFoundError:
        raise BenchError(
            f"the per-item results {path} of run {record['run_id']} are missing; "
            "keep the .items folder next to the results file"
        ) from None
    except (OSError, EOFError, json.JSONDecodeError, KeyError):
        raise BenchError(f"the per-item results {path} are damaged; rerun that model") from None
