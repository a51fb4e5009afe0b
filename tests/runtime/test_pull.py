"""`edge-llm pull` against a Hugging Face Hub mirror on loopback (tests/fixtures/hubmirror.py).

The judges: the bytes the mirror serves (their SHA-256, computed here with hashlib), the mirror's
own request log (Range headers prove a resume), the converter run directly on the same checkpoint
(a pulled-and-converted model must equal a local conversion), and llama.cpp loading the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures import hubmirror
from tests.fixtures.hubmirror import Mirror

pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.fixtures.checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def ggufs(checkpoint, tmp_path_factory):
    """The tiny checkpoint as Q8_0 and F16 GGUFs (what a GGUF repository would hold)."""
    from convert import convert

    out = tmp_path_factory.mktemp("gguf")
    return {t: convert(checkpoint, out / f"tiny-{t}.gguf", type=t).path for t in ("Q8_0", "F16")}


@pytest.fixture
def mirror(checkpoint, ggufs):
    m = Mirror()
    m.add_repo(
        "tester/Tiny-GGUF",
        {"README.md": b"# tiny\n", **{p.name: p.read_bytes() for p in ggufs.values()}},
    )
    m.add_folder("tester/tiny", checkpoint)
    server = hubmirror.start(m)
    yield m
    m.release.set()
    server.shutdown()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def env_for(mirror_url: str, home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {
        "HF_ENDPOINT": mirror_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "EDGE_LLM_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(sys.path),
        **extra,
    }
    return env


def edge(mirror, home, *args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_llm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_for(mirror.url, home, **extra),
    )


def registered(home: Path) -> list[dict]:
    f = home / "models" / "store.json"
    return json.loads(f.read_text())["models"] if f.exists() else []


def one_line_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert r.returncode == code, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    # the error is one line, the last; what precedes it is progress ("pulling ...")
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert all(ln.startswith(("pulling ", "resuming ")) for ln in lines[:-1]), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_a_gguf_repository_by_quant_lists_runs_and_removes_it(mirror, home, ggufs):
    r = edge(mirror, home, "pull", "tester/Tiny-GGUF:Q8_0")
    assert r.returncode == 0, r.stderr
    (entry,) = registered(home)
    assert entry["name"] == "tiny-q8_0" and entry["quant"] == "Q8_0"
    assert entry["repo"] == "tester/Tiny-GGUF" and entry["files"] == ["tiny-Q8_0.gguf"]
    stored = Path(entry["path"])
    assert stored.parent == home / "models"
    assert sha256(stored) == sha256(ggufs["Q8_0"]) == entry["sha256"]
    assert entry["size"] == ggufs["Q8_0"].stat().st_size
    assert not list((home / "models" / ".partial").iterdir())  # nothing left half-done

    models = json.loads(edge(mirror, home, "models", "--json").stdout)
    row = next(m for m in models if m["name"] == "tiny-q8_0")
    assert row["path"] == str(stored) and row["size"] == entry["size"]
    assert row["source"] == "hf:tester/Tiny-GGUF:tiny-Q8_0.gguf"

    # llama.cpp loads it by its short name and by the reference it was pulled from
    for name in ("tiny-q8_0", "tester/Tiny-GGUF:Q8_0"):
        r = edge(mirror, home, "run", name, "-p", "hello", "-n", "3", "--temp", "0", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["model"] == str(stored)

    # pulling again does nothing
    n_gets = len(mirror.gets("tiny-Q8_0.gguf"))
    assert edge(mirror, home, "pull", "tester/Tiny-GGUF:Q8_0").returncode == 0
    assert len(mirror.gets("tiny-Q8_0.gguf")) == n_gets

    r = edge(mirror, home, "rm", "tiny-q8_0")
    assert r.returncode == 0, r.stderr
    assert registered(home) == [] and not stored.exists()
    one_line_error(edge(mirror, home, "rm", "tiny-q8_0"), 2, "no pulled model named 'tiny-q8_0'")


def test_a_gguf_repository_without_the_default_quant_asks_for_one(mirror, home):
    one_line_error(edge(mirror, home, "pull", "tester/Tiny-GGUF"), 2, "2 GGUF files", "F16, Q8_0")
    one_line_error(
        edge(mirror, home, "pull", "tester/Tiny-GGUF:Q2_K"), 2, "no GGUF file 'Q2_K'", "F16, Q8_0"
    )
    # a file name works as well as a quant name
    r = edge(mirror, home, "pull", "tester/Tiny-GGUF:tiny-F16.gguf", "--name", "mine")
    assert r.returncode == 0, r.stderr
    assert [(e["name"], e["quant"]) for e in registered(home)] == [("mine", "F16")]


def test_pull_a_safetensors_repository_converts_it_like_convert_does(
    mirror, home, checkpoint, tmp_path
):
    from convert import convert

    r = edge(mirror, home, "pull", "tester/tiny", "--type", "Q8_0")
    assert r.returncode == 0, r.stderr
    (entry,) = registered(home)
    assert entry["name"] == "tiny-q8_0" and entry["converted"] and entry["quant"] == "Q8_0"
    assert set(entry["files"]) == {p.name for p in checkpoint.iterdir()}
    local = convert(checkpoint, tmp_path / "local.gguf", type="Q8_0").path
    assert sha256(Path(entry["path"])) == sha256(local)
    assert not (home / "models" / ".staging").exists() or not any(
        (home / "models" / ".staging").iterdir()
    )
    # a quant name after the colon is the type
    r = edge(mirror, home, "pull", "tester/tiny:F16")
    assert r.returncode == 0, r.stderr
    assert {e["name"]: e["quant"] for e in registered(home)}["tiny-f16"] == "F16"


def test_a_cut_connection_resumes_where_it_stopped(mirror, home, ggufs):
    f = mirror.repos["tester/Tiny-GGUF"].files["tiny-Q8_0.gguf"]
    cut = 2 * len(f.data) // 3
    f.cut_after = cut
    r = edge(mirror, home, "pull", "tester/Tiny-GGUF:Q8_0")
    assert r.returncode == 0, r.stderr
    first, second = mirror.gets("tiny-Q8_0.gguf")  # the client keeps what it wrote (whole blocks)
    assert first is None and second.startswith("bytes=") and 0 < int(second[6:-1]) <= cut
    assert sha256(Path(registered(home)[0]["path"])) == sha256(ggufs["Q8_0"])


def test_an_interrupted_pull_resumes_in_the_next_one(mirror, home, ggufs):
    f = mirror.repos["tester/Tiny-GGUF"].files["tiny-Q8_0.gguf"]
    half = 2 * len(f.data) // 3
    f.stall_after = half
    p = subprocess.Popen(
        [sys.executable, "-m", "edge_llm", "pull", "tester/Tiny-GGUF:Q8_0"],
        env=env_for(mirror.url, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert mirror.stalled.wait(120), "the pull never started"
    time.sleep(0.5)  # let the client write what it received
    p.send_signal(signal.SIGINT)  # Ctrl-C
    p.communicate(timeout=60)
    assert p.returncode != 0
    assert registered(home) == []
    (partial,) = (home / "models" / ".partial").iterdir()
    kept = partial.stat().st_size  # what was received, in whole blocks of the client's
    assert 0 < kept <= half
    mirror.release.set()

    r = edge(mirror, home, "pull", "tester/Tiny-GGUF:Q8_0")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert mirror.gets("tiny-Q8_0.gguf")[-1] == f"bytes={kept}-"
    assert sha256(Path(registered(home)[0]["path"])) == sha256(ggufs["Q8_0"])


def test_a_checksum_mismatch_is_refused_and_nothing_is_registered(mirror, home):
    mirror.repos["tester/Tiny-GGUF"].files["tiny-Q8_0.gguf"].corrupt = True
    one_line_error(
        edge(mirror, home, "pull", "tester/Tiny-GGUF:Q8_0"),
        2,
        "failed its SHA-256 check",
        "nothing was registered",
    )
    assert registered(home) == []
    assert not list((home / "models").glob("*.gguf"))
    assert not list((home / "models" / ".partial").iterdir())


def test_missing_repositories_and_files_are_one_line_errors(mirror, home):
    one_line_error(edge(mirror, home, "pull", "tester/nope"), 2, "no repository tester/nope")
    mirror.repos["tester/Tiny-GGUF"].files["tiny-Q8_0.gguf"].missing = True
    one_line_error(
        edge(mirror, home, "pull", "tester/Tiny-GGUF:Q8_0"), 2, "has no file tiny-Q8_0.gguf"
    )
    mirror.add_repo("tester/empty", {"README.md": b"nothing here\n"})
    one_line_error(edge(mirror, home, "pull", "tester/empty"), 2, "neither GGUF files nor")
    assert registered(home) == []


def test_an_unreachable_endpoint_is_a_one_line_error(home):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run(
        [sys.executable, "-m", "edge_llm", "pull", "tester/Tiny-GGUF:Q8_0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_for(f"http://127.0.0.1:{port}", home),
    )
    one_line_error(r, 2, f"cannot reach http://127.0.0.1:{port}")


def test_a_private_repository_needs_hf_token(mirror, home, ggufs):
    mirror.add_repo("tester/private", {"m-Q8_0.gguf": ggufs["Q8_0"].read_bytes()}, token="s3cret")
    one_line_error(edge(mirror, home, "pull", "tester/private"), 2, "HF_TOKEN")
    r = edge(mirror, home, "pull", "tester/private", HF_TOKEN="s3cret")
    assert r.returncode == 0, r.stderr
    assert {auth for m, p, _, auth in mirror.log if p.startswith("/api/")} >= {"Bearer s3cret"}


def test_run_pulls_a_repository_on_first_use_only_when_allowed(mirror, home):
    one_line_error(
        edge(mirror, home, "run", "tester/Tiny-GGUF:Q8_0", "-p", "hi", "-n", "2"),
        2,
        "not in the model store yet",
        "edge-llm pull tester/Tiny-GGUF:Q8_0",
    )
    assert registered(home) == []
    r = edge(mirror, home, "run", "tester/Tiny-GGUF:Q8_0", "--yes", "-p", "hi", "-n", "2")
    assert r.returncode == 0, r.stderr
    assert [e["name"] for e in registered(home)] == ["tiny-q8_0"]


def test_run_asks_before_pulling_when_stdin_is_a_terminal(mirror, home):
    import pty

    for answer, pulled in (("n", []), ("y", ["tiny-q8_0"])):
        master, slave = pty.openpty()
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_llm",
                "run",
                "tester/Tiny-GGUF:Q8_0",
                "-p",
                "hi",
                "-n",
                "2",
                "--temp",
                "0",
            ],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(mirror.url, home),
        )
        os.close(slave)
        os.write(master, f"{answer}\n".encode())
        out, err = p.communicate(timeout=300)
        os.close(master)
        assert "is not in the model store: download" in err and "[y/N]" in err, err
        assert [e["name"] for e in registered(home)] == pulled
        assert p.returncode == (0 if pulled else 2), err


def test_a_safetensors_repository_without_the_converter_is_one_line(mirror, home):
    # as on an install without the converter: `import convert` fails
    code = (
        "import sys; sys.modules['convert'] = None; from edge_llm.cli import main; "
        "sys.argv = ['edge-llm', 'pull', 'tester/tiny']; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env_for(mirror.url, home),
    )
    one_line_error(r, 2, "safetensors checkpoint", "needs the convert package")
    assert registered(home) == [] and not (home / "models" / ".staging").exists()
