"""distill under torchrun: two gloo processes on this CPU give the weights one process gives for
the same global batch and seed (float tolerance), and a run interrupted under torchrun resumes
across ranks to the same weights; all of them equal an independent plain PyTorch loop's
(tests/fixtures/distill_reference.py). torchrun (torch.distributed.run) coordinates the processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.distill_reference import assert_matches, reference_run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
# RUNNER's recipe [kd], seed and steps (the reference loop reads the same)
KD = {
    "seq_len": 32,
    "batch_size": 4,
    "grad_accum": 2,
    "top_k": 16,
    "lr": 3e-3,
    "checkpoint_every": 2,
}
SEED, STEPS = 5, 6

RUNNER = """
import os, sys
sys.path.insert(0, {root!r})
from convert.distill import distill
from convert.distill.recipe import recipe_from_dict
stop = int(os.environ.get("STOP_AT", "0"))
def on_step(n, loss):
    if stop and n == stop:
        raise SystemExit(3)
r = recipe_from_dict({{"kd": {kd!r}}})
minutes = float(os.environ.get("MINUTES") or 0) or None
distill(sys.argv[1], sys.argv[2], texts=[sys.argv[3]], steps=None if minutes else {steps},
        minutes=minutes, recipe=r, seed={seed}, layers=2,
        quant=os.environ.get("QUANT") or None, resume=bool(os.environ.get("RESUME")), on_step=on_step,
        fsdp=bool(os.environ.get("FSDP")))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path, nproc: int, out: Path, teacher, text, **env):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(root=str(ROOT), kd=KD, seed=SEED, steps=STEPS))
    # a cache per output: the two-process run computes its teacher top-k in shards itself
    e = {
        **os.environ,
        "EDGE_LLM_HOME": str(tmp_path / f"home-{out.name}"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    args = [str(script), str(teacher), str(out), str(text)]
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_port()),
            *args,
        ]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from tests.fixtures.distill import make_teacher

    return make_teacher(tmp_path_factory, num_hidden_layers=3)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    from tests.fixtures.tinymodels import CORPUS_LINES

    p = tmp_path_factory.mktemp("text") / "train.txt"
    p.write_text("\n".join(CORPUS_LINES * 6))
    return p


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def logged(folder: Path) -> tuple[list[int], list[float]]:
    """(the kept layers, the step losses) a run's distill.json records."""
    d = json.loads((folder / "distill.json").read_text())
    return d["kept_layers"], d["losses"]


@pytest.fixture(scope="module")
def reference(teacher, text):
    """The independent judge of RUNNER's run: the plain PyTorch loop's weights and losses for
    the kept layers (computed once per set of kept layers)."""
    from convert.distill.recipe import recipe_from_dict

    done = {}

    def get(keep: list[int]):
        if tuple(keep) not in done:
            kd = recipe_from_dict({"kd": dict(KD)}).kd
            done[tuple(keep)] = reference_run(
                teacher, text, kd=kd, steps=STEPS, seed=SEED, keep=keep
            )
        return done[tuple(keep)]

    return get


def assert_all_match_the_reference(reference, tmp_path: Path, names: list[str]) -> None:
    keep, _ = logged(tmp_path / names[0])
    ref = reference(keep)
    for name in names:
        kept, losses = logged(tmp_path / name)
        assert kept == keep, name
        assert_matches(weights(tmp_path / name), losses, ref, name)


def test_two_gloo_processes_equal_one_and_resume_across_ranks(teacher, text, tmp_path, reference):
    one = run(tmp_path, 1, tmp_path / "one", teacher, text)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(tmp_path, 2, tmp_path / "two", teacher, text)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    # interrupted after step 3 on both ranks (checkpoint at 2), resumed under torchrun
    cut = run(tmp_path, 2, tmp_path / "cut", teacher, text, STOP_AT="3")
    assert cut.returncode != 0 and not (tmp_path / "cut").exists()
    assert (tmp_path / ".cut.distill-work" / "checkpoint.pt").is_file()
    res = run(tmp_path, 2, tmp_path / "cut", teacher, text, RESUME="1")
    assert res.returncode == 0, res.stderr[-2000:]
    c = weights(tmp_path / "cut")
    for k in b:
        assert torch.allclose(b[k], c[k], atol=1e-6, rtol=0), k
    # not only each other: one process, two and the resumed two equal the independent loop
    assert_all_match_the_reference(reference, tmp_path, ["one", "two", "cut"])


@pytest.mark.parametrize("quant", ["", "Q4_0"])
def test_fsdp_shards_the_student_and_equals_one_process(teacher, text, tmp_path, quant, reference):
    # --fsdp: the student is sharded over the two ranks (PyTorch's fully_shard) instead of
    # replicated; the same global batch and seed still give one process's weights, with or
    # without fake quantization, and an interrupted sharded run resumes to the same weights.
    one = run(tmp_path, 1, tmp_path / "one", teacher, text, QUANT=quant)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run(tmp_path, 2, tmp_path / "two", teacher, text, QUANT=quant, FSDP="1")
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    cut = run(tmp_path, 2, tmp_path / "cut", teacher, text, QUANT=quant, FSDP="1", STOP_AT="3")
    assert cut.returncode != 0 and not (tmp_path / "cut").exists()
    state = torch.load(
        tmp_path / ".cut.distill-work" / "checkpoint.pt", map_location="cpu", weights_only=False
    )
    assert state["meta"]["fsdp"] is True and state["step"] == 2
    # gathered from the shards: full tensors, the optimizer's state keyed by parameter name
    from torch.distributed.tensor import DTensor

    assert not any(isinstance(v, DTensor) for v in state["model"].values())
    emb = [k for k in state["model"] if k.startswith("model.embed_tokens.")]
    assert emb and state["model"][emb[0]].shape == a["model.embed_tokens.weight"].shape
    assert all(isinstance(k, str) for k in state["optimizer"]["state"])
    res = run(tmp_path, 2, tmp_path / "cut", teacher, text, QUANT=quant, FSDP="1", RESUME="1")
    assert res.returncode == 0, res.stderr[-2000:]
    c = weights(tmp_path / "cut")
    for k in b:
        assert torch.allclose(b[k], c[k], atol=1e-6, rtol=0), k
    if not quant:  # the independent loop has no fake quantization (QAT's grid is the project's)
        assert_all_match_the_reference(reference, tmp_path, ["one", "two", "cut"])
    # a wall-clock budget times a sharded step (the whole student's training state is never
    # built on one device)
    timed = run(
        tmp_path, 2, tmp_path / "timed", teacher, text, QUANT=quant, FSDP="1", MINUTES="0.02"
    )
    assert timed.returncode == 0, timed.stderr[-2000:]
    assert (tmp_path / "timed" / "model.safetensors").is_file()
