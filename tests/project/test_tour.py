"""README's five-minute tour runs as written (issue 31): every command of its code blocks, in
order, in one fresh folder with its own EDGE_LLM_HOME, each checked to exit 0 and to print or
write what the README says it does.

Two things stand in for the outside world, each the real counterpart of what the tour talks to:
the Hugging Face Hub is the loopback mirror of tests/fixtures/hubmirror.py (HF_ENDPOINT; its
`bartowski/SmolLM2-135M-Instruct-GGUF` holds the default model's GGUF under the Q4_K_M name,
since no network is allowed), and "a second terminal" is this test running the tour's `curl`
while `serve` runs in the background, then pressing Ctrl-C (SIGINT) as the README says. The port
8080 is replaced by a free one (a test machine may have 8080 taken); `. .venv/bin/activate` is
replaced by putting the venv's bin first on PATH.

Judges, independent of the code under test: llama-cpp-python's own greedy decode for `run`'s
text, gguf-py's reader for what `convert` wrote (tensor types, F32), the file system for sizes
and folders, `json` for the machine-readable outputs, the README's own words for the rest.

The tour benchmarks three models on the quick suite (several minutes each on 2 cores), so the
whole tour takes about 10 minutes: it is marked `tour`, left out of `make test` and run by `make
tour` (which `.ci/run` runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures import hubmirror
from tests.fixtures.hubmirror import Mirror

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.tour


def tour_commands(readme: str) -> list[str]:
    """The shell lines of the tour's code blocks, in order (continuations joined)."""
    section = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    out = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def strip_comment(line: str) -> str:
    """The command without its trailing `# comment` (quotes respected)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line


def test_the_tour_is_read_from_the_readme():
    cmds = tour_commands((ROOT / "README.md").read_text())
    assert cmds[0] == ". .venv/bin/activate"
    assert any(c.startswith("edge-llm serve") for c in cmds)
    assert strip_comment("edge-llm chat   # /help lists") == "edge-llm chat"
    assert strip_comment("echo '#1' | x  # c") == "echo '#1' | x"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tour's folder, its environment and the Hub mirror."""
    from edge_llm.registry import resolve

    default = resolve("smollm2-135m-instruct")
    mirror = Mirror()
    mirror.add_repo(
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        {"README.md": b"# SmolLM2\n", "SmolLM2-135M-Instruct-Q4_K_M.gguf": default.read_bytes()},
    )
    server = hubmirror.start(mirror)
    folder = tmp_path_factory.mktemp("tour")
    home = folder / ".edge-llm"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "EDGE_LLM_HOME": str(home),
        "HF_ENDPOINT": mirror.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(folder / ".hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": str(ROOT),
    }
    yield {"folder": folder, "env": env, "home": home, "default": default}
    mirror.release.set()
    server.shutdown()


def sh(world, line: str, stdin: str | None = None, timeout: int = 900):
    r = subprocess.run(
        ["bash", "-c", line],
        cwd=world["folder"],
        env=world["env"],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"{line}\nexit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def greedy(model: Path, prompt: str, n: int) -> str:
    """llama-cpp-python's own greedy continuation (the judge of `run --temp 0`)."""
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=512, verbose=False, seed=0)
    out = llm.create_completion(prompt, max_tokens=n, temperature=0.0, top_k=1)
    return out["choices"][0]["text"]


def gguf_types(path: Path) -> set[str]:
    from gguf import GGUFReader

    return {t.tensor_type.name for t in GGUFReader(str(path)).tensors}


def check(world, cmd: str, r: subprocess.CompletedProcess) -> None:
    """What the README says each command prints or writes."""
    out, folder = r.stdout, world["folder"]
    if cmd == "edge-llm chat":  # "/help lists the chat's commands" (on stderr: stdout is replies)
        assert "/help" in r.stderr and "/exit" in r.stderr, r.stderr
    elif cmd == 'edge-llm run -p "The capital of France is" -n 16 --temp 0':
        want = greedy(world["default"], "The capital of France is", 16)
        assert want.strip() and want.strip() in out, (want, out)
    elif cmd.startswith("edge-llm run --chat") and "--json" in cmd:
        d = json.loads(out)  # "text, usage and timings as JSON"
        assert d["text"].strip() and d["usage"]["completion_tokens"] > 0
        assert d["timings"]["decode_tokens_per_s"] > 0
    elif cmd.startswith("echo ") and "edge-llm chat" in cmd:
        assert out.strip(), "the piped chat printed no reply"
    elif cmd.startswith("edge-llm plan --device learning-machine-entry"):
        # "does it fit that tablet? how fast?"
        assert re.search(r"\bfits\b|does not fit", out) and "tok/s" in out, out
    elif cmd.startswith("edge-llm pull "):  # the mirror's bytes, stored whole
        stored = [p for p in (world["home"] / "models").rglob("*.gguf")]
        want = hashlib.sha256(world["default"].read_bytes()).hexdigest()
        assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored] == [want], stored
    elif cmd.startswith("edge-llm models"):  # "paths, sizes"
        assert "smollm2-135m-instruct-q4_k_m" in out and re.search(r"\d+(\.\d+)? ?[MG]i?B", out)
    elif cmd.startswith("edge-llm run smollm2-135m-instruct-q4_k_m"):
        assert out.strip(), "no text"  # sampled (no --temp 0): any continuation
    elif cmd.startswith("edge-llm export-hf"):
        hf = folder / "smollm2-hf"
        assert (hf / "config.json").is_file() and list(hf.glob("*.safetensors"))
    elif "smollm2-f32.gguf --type F32" in cmd:
        assert gguf_types(folder / "smollm2-f32.gguf") <= {"F32"}
    elif "q4km.gguf --type Q4_K_M" in cmd:
        assert "Q4_K" in gguf_types(folder / "q4km.gguf")
    elif "--target-size 90MB" in cmd:  # "the best file within 90 MB" (MB = 10^6 bytes)
        assert (folder / "fit.gguf").stat().st_size <= 90_000_000
    elif cmd.startswith("edge-llm compare"):  # "KL divergence, top-1, PPL ratio"
        assert re.search(r"KL", out) and re.search(r"top-1", out, re.I), out
    elif cmd.startswith("edge-llm bench report --compare"):  # "better, worse or no difference"
        assert re.search(r"better|worse|no (detectable )?difference", out), out
    elif cmd.startswith("edge-llm bench report"):  # "the table, with 95% intervals"
        rows = [ln for ln in out.splitlines() if ln.startswith("| ") and "---" not in ln]
        records = (world["home"] / "bench" / "results.jsonl").read_text().splitlines()
        assert "capability 95%" in rows[0] and len(rows) - 1 == len(records), out
    elif cmd.startswith("edge-llm bench"):
        results = world["home"] / "bench" / "results.jsonl"
        assert results.is_file() and results.read_text().strip(), "no record appended"
    else:
        pytest.fail(f"the tour has a command this test does not know how to judge: {cmd}")


def serve_and_ask(world, serve: str, curl: str) -> None:
    """`serve` in the background, the tour's curl "in a second terminal", then Ctrl-C."""
    port = str(free_port())
    serve, curl = serve.replace("8080", port), curl.replace("8080", port)
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {serve}"],
        cwd=world["folder"],
        env=world["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.5)
        if shutil.which("curl"):
            reply = json.loads(sh(world, curl).stdout)
        else:  # the same request without curl
            body = re.search(r"-d '(.*)'", curl).group(1).encode()
            req = urllib.request.Request(
                re.search(r"(http://\S+)", curl).group(1),
                data=body,
                headers={"Content-Type": "application/json"},
            )
            reply = json.loads(urllib.request.urlopen(req, timeout=120).read())
        assert reply["choices"][0]["message"]["content"].strip(), reply
    finally:
        proc.send_signal(signal.SIGINT)  # "Ctrl-C stops it"
        code, err = proc.wait(timeout=60), proc.stderr.read()
    # stopped by Ctrl-C: the shell's convention, 128 + SIGINT, as llama-server and uvicorn do
    assert code == 130, err
    assert "Traceback" not in err


def test_the_readme_tour_runs_as_written(world):
    cmds = [strip_comment(c) for c in tour_commands((ROOT / "README.md").read_text())]
    assert cmds.pop(0) == ". .venv/bin/activate"  # PATH has the venv's bin first instead
    i = 0
    while i < len(cmds):
        cmd = cmds[i]
        if cmd.startswith("edge-llm serve"):
            assert cmds[i + 1].startswith("curl "), cmds[i + 1]
            serve_and_ask(world, cmd, cmds[i + 1])
            i += 2
            continue
        stdin = "/help\n" if cmd == "edge-llm chat" else None
        check(world, cmd, sh(world, cmd, stdin=stdin))
        i += 1
