"""A checkpoint with NaN or Inf weights is refused, naming the tensor (issue 32): by `convert`
and by `pull` of a safetensors repository; `--allow-nonfinite` converts it anyway.

Such a checkpoint used to convert without a word into a model that generates empty text. The
judges: the poisoned element is placed here with numpy and safetensors; gguf-py's own reader finds
it in the output of `--allow-nonfinite`; the BF16 case is checked against bit patterns computed
by hand from IEEE 754 (exponent all ones).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.checkpoints import assert_one_line_error, make_checkpoint

STREAMED = "model.layers.1.mlp.down_proj.weight"  # no transform: checked block by block
PERMUTED = "model.layers.0.self_attn.q_proj.weight"  # permuted for RoPE: checked once loaded


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def poisoned(src: Path, dst: Path, tensor: str, value: float, index: int) -> Path:
    """A copy of ``src`` whose ``tensor`` holds ``value`` at flat ``index``."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    flat = tensors[tensor].reshape(-1).copy()
    flat[index] = value
    tensors[tensor] = flat.reshape(tensors[tensor].shape)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def edge(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_llm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
    )


@pytest.mark.parametrize(
    ("tensor", "value", "type", "says"),
    [(STREAMED, np.nan, "F16", "NaN"), (PERMUTED, -np.inf, "Q8_0", "-Inf")],
)
def test_convert_refuses_a_non_finite_weight_naming_the_tensor(
    checkpoint, tmp_path, tensor, value, type, says
):
    src = poisoned(checkpoint, tmp_path / "bad", tensor, value, 37)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    r = edge("convert", str(src), "-o", str(out), "--type", type)
    assert_one_line_error(r, tensor, says, "--allow-nonfinite")
    assert list(out.parent.iterdir()) == []  # no output, no temporary left


def test_allow_nonfinite_converts_it_and_the_value_is_there(checkpoint, tmp_path):
    from gguf import GGUFReader

    src = poisoned(checkpoint, tmp_path / "bad", STREAMED, np.nan, 37)
    out = tmp_path / "m.gguf"
    r = edge("convert", str(src), "-o", str(out), "--type", "F32", "--allow-nonfinite")
    assert r.returncode == 0, r.stderr
    (t,) = [t for t in GGUFReader(out).tensors if t.name == "blk.1.ffn_down.weight"]
    data = np.asarray(t.data, dtype=np.float32).reshape(-1)
    assert np.flatnonzero(np.isnan(data)).tolist() == [37]


def test_an_honest_checkpoint_still_converts(checkpoint, tmp_path):
    r = edge("convert", str(checkpoint), "-o", str(tmp_path / "m.gguf"), "--type", "F16")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("bits", "says"),
    [(0x7FC0, "NaN"), (0x7F80, "+Inf"), (0xFF80, "-Inf"), (0xFFC1, "NaN"), (0x7F7F, None)],
)
def test_bf16_blocks_are_checked_by_their_bits(bits, says):
    from convert.errors import ConvertError
    from convert.write import PlannedTensor, check_finite

    t = PlannedTensor("blk.0.x.weight", (8,), None, lambda: None, 16, source_name="x.weight")
    block = np.full(8, 0x3F80, np.uint16)  # 1.0
    block[5] = bits  # 0x7F7F is the largest finite bfloat16
    if says is None:
        assert check_finite(t, block, 100, "BF16") is block
        return
    with pytest.raises(ConvertError) as e:
        check_finite(t, block, 100, "BF16")
    assert f"x.weight (blk.0.x.weight) holds {says} at element 105;" in str(e.value)


def test_pull_with_conversion_refuses_it_and_keeps_nothing(checkpoint, tmp_path):
    pytest.importorskip("huggingface_hub")
    from tests.fixtures import hubmirror
    from tests.fixtures.hubmirror import Mirror

    src = poisoned(checkpoint, tmp_path / "tiny", STREAMED, np.nan, 3)
    m = Mirror()
    m.add_folder("tester/tiny", src)
    server = hubmirror.start(m)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": m.url, "HF_HUB_OFFLINE": "0", "EDGE_LLM_HOME": str(home)}
    try:
        r = subprocess.run(
            [sys.executable, "-m", "edge_llm", "pull", "tester/tiny", "--type", "Q8_0"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        server.shutdown()
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and STREAMED in last and "NaN" in last, r.stderr
    assert "Traceback" not in r.stderr
    assert not (home / "models" / "store.json").exists()
    leftovers = [p for p in (home / "models").rglob("*") if p.is_file()]
    assert leftovers == [], leftovers
