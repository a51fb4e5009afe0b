"""File helpers shared by every writer: nothing half-written ever sits at a target path, and
nothing a killed writer left behind stays forever.

Why: outputs are written to a temporary file (or folder) beside the target and renamed into
place, so a crash never leaves a partial target. But a SIGKILL skips every cleanup, and a
converter's temporaries are model-sized. So each temporary is named for its target and its
writer's PID (``.NAME.edge-llm-PID-XXXXXXXX.part`` / ``.work``): the next writer into that folder
removes those whose writer is dead, and ``edge-llm clean`` finds and removes them anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

TAG = "edge-llm"
DEBRIS_RE = re.compile(
    rf"^\.(?P<name>.+)\.{TAG}-(?P<pid>\d+)-(?P<token>[0-9a-f]{{8}})\.(?P<kind>part|work)$"
)
# Folders `edge-llm clean` never descends into (they are large and hold no debris of ours).
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache"}


def temp_path(target: str | os.PathLike[str], kind: str = "part") -> Path:
    """A fresh, recognisable temporary name beside ``target``: ``.NAME.edge-llm-PID-XXXX.KIND``."""
    target = Path(target)
    return target.parent / f".{target.name}.{TAG}-{os.getpid()}-{secrets.token_hex(4)}.{kind}"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only on success.

    The temporary file lives in the target's directory so the final ``os.replace`` is atomic.
    On an exception (or SIGTERM/Ctrl-C, which the CLI turns into exceptions) the target is
    untouched and the temporary file is removed; after a SIGKILL the next writer removes it.
    """
    target = Path(target)
    sweep_stale(target.parent)
    tmp = temp_path(target)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], replace: bool = False) -> Iterator[Path]:
    """Like `atomic_path` for a folder output: a temporary folder renamed onto ``target`` on
    success, removed otherwise. ``target`` may exist as an empty folder; with ``replace``, a
    full one is moved aside (a stale ``.work`` name) and removed once the new one is in place."""
    target = Path(target)
    sweep_stale(target.parent)
    tmp = temp_path(target)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if replace and target.is_dir() and any(target.iterdir()):
            old = temp_path(target, "work")
            os.rename(target, old)
        os.replace(tmp, target)  # rename(2) also replaces an empty directory
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def work_dir(beside: str | os.PathLike[str]) -> Iterator[Path]:
    """A scratch folder beside ``beside`` (intermediates as large as the output), always removed."""
    d = temp_path(beside, "work")
    sweep_stale(d.parent)
    d.mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- debris: temporaries whose writer is dead -----------------------------------------------


@dataclass(frozen=True)
class Debris:
    path: Path
    pid: int
    alive: bool  # its writer is still running: in use, never removed
    bytes: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "pid": self.pid, "in_use": self.alive, "bytes": self.bytes}


def writer_alive(pid: int, mtime: float | None = None) -> bool:
    """Whether process ``pid`` runs and could have written something last modified at ``mtime``
    (a process started after that is a new one that reused the PID)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    if mtime is not None:
        started = _start_time(pid)
        if started is not None and started > mtime + 2:
            return False
    return True


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (Linux /proc), or None where that cannot be known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum((Path(r) / f).lstat().st_size for r, _, fs in os.walk(path) for f in fs)
        return path.lstat().st_size
    except OSError:
        return 0


def _debris_in(folder: Path) -> Iterator[Debris]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        m = DEBRIS_RE.match(e.name)
        if not m:
            continue
        p = Path(e.path)
        try:
            mtime = e.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        pid = int(m.group("pid"))
        yield Debris(p, pid, writer_alive(pid, mtime), _size(p))


def find_debris(roots: Iterable[str | os.PathLike[str]], recursive: bool = True) -> list[Debris]:
    """Every edge-llm temporary under ``roots`` (debris folders themselves are not entered)."""
    out: list[Debris] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        folders = [root]
        if recursive:
            for dirpath, dirnames, _ in os.walk(root):
                dirnames[:] = [
                    d for d in dirnames if d not in _SKIP_DIRS and not DEBRIS_RE.match(d)
                ]
                folders += [Path(dirpath) / d for d in dirnames]
        for folder in folders:
            out += _debris_in(folder)
    return sorted(set(out), key=lambda d: str(d.path))


def remove(debris: Debris) -> bool:
    """Remove one stale temporary (never one whose writer runs); True if it is gone."""
    if debris.alive:
        return False
    try:
        if debris.path.is_dir() and not debris.path.is_symlink():
            shutil.rmtree(debris.path)
        else:
            debris.path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def sweep_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer is dead; what was removed."""
    return [d.path for d in _debris_in(Path(folder)) if not d.alive and remove(d)]


def same_file_or_inside(path: Path, sources: Iterable[Path]) -> Path | None:
    """The source that ``path`` is, or lies inside, following symlinks and hard links (same
    device and inode); None when it touches none of them."""
    target = Path(os.path.realpath(path))
    target_ids = _ids_up(target)
    for src in sources:
        real = Path(os.path.realpath(src))
        if target == real or real in target.parents:
            return Path(src)
        try:
            st = os.stat(real)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in target_ids:
            return Path(src)
        if real.is_dir() and target.exists():
            # a hard link of a file inside the source folder
            try:
                tst = os.stat(target)
            except OSError:
                continue
            if not target.is_dir() and tst.st_nlink > 1 and _holds_inode(real, tst):
                return Path(src)
    return None


def _ids_up(path: Path) -> set[tuple[int, int]]:
    """(device, inode) of ``path`` (if it exists) and of each existing folder above it."""
    ids = set()
    for p in (path, *path.parents):
        with contextlib.suppress(OSError):
            st = os.stat(p)
            ids.add((st.st_dev, st.st_ino))
    return ids


def _holds_inode(folder: Path, st: os.stat_result, limit: int = 10000) -> bool:
    n = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            n += 1
            if n > limit:
                return False
            with contextlib.suppress(OSError):
                s = os.stat(Path(dirpath) / f)
                if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
                    return True
    return False


def cache_dir() -> Path:
    """Where edge-llm keeps what it builds (assembled models): $EDGE_LLM_HOME or ~/.cache/edge-llm."""
    home = os.environ.get("EDGE_LLM_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edge-llm"


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            h.update(block)
    return h.hexdigest()
