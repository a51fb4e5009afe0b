"""The converter's bad inputs, each a one-line error with exit 2, and its atomicity: a failed or
killed conversion leaves nothing at the target and never touches the source."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.checkpoints import assert_one_line_error, make_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("good") / "tiny")


def copy_of(good, tmp_path):
    import shutil

    dst = tmp_path / "src"
    shutil.copytree(good, dst)
    return dst


def digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def rewrite_header(path, mutate):
    """Rewrite a safetensors header through ``mutate(header) -> header`` (same data section)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = mutate(json.loads(data[8 : 8 + n]))
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_a_good_tiny_checkpoint_converts_and_leaves_the_source_alone(good, tmp_path, run_cli):
    before = digest(good)
    out = tmp_path / "tiny.gguf"
    r = run_cli("convert", str(good), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["type"] == "F16"  # f32 source: default F16
    assert out.is_file() and digest(good) == before
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]  # no temporary left behind


def test_sharded_checkpoint_equals_the_single_file_one(good, tmp_path):
    from gguf import GGUFReader

    from convert import convert

    sharded = make_checkpoint(tmp_path / "sharded", shards=3)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    convert(good, a, type="F32")
    convert(sharded, b, type="F32")
    ta = {t.name: np.array(t.data) for t in GGUFReader(a).tensors}
    tb = {t.name: np.array(t.data) for t in GGUFReader(b).tensors}
    assert ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)


@pytest.mark.parametrize(
    "breakage, needles",
    [
        ("no-config", ["no config.json"]),
        ("unknown-arch", ["FooForCausalLM", "LlamaForCausalLM", "Qwen3ForCausalLM"]),
        ("offset-past-end", ["truncated or its header is wrong"]),
        ("wrong-dtype", ["dtype I64"]),
        ("shape-mismatch", ["header gives it"]),
        ("header-too-long", ["runs past the end"]),
        ("missing-tensor", ["lacks tensor blk.1.ffn_down.weight"]),
        ("missing-shard", ["named in model.safetensors.index.json but absent"]),
        ("pickle", ["pickle checkpoint", "safetensors"]),
        ("no-tokenizer", ["tokenizer"]),
        ("vocab-too-small", ["vocab_size"]),
    ],
)
def test_bad_checkpoints_get_one_line_errors(good, tmp_path, run_cli, breakage, needles):
    src = copy_of(good, tmp_path)
    st = src / "model.safetensors"
    cfg = json.loads((src / "config.json").read_text())
    if breakage == "no-config":
        (src / "config.json").unlink()
    elif breakage == "unknown-arch":
        cfg["architectures"] = ["FooForCausalLM"]
    elif breakage == "offset-past-end":
        rewrite_header(
            st,
            lambda h: (
                h | {"model.norm.weight": {**h["model.norm.weight"], "data_offsets": [0, 10**9]}}
            ),
        )
    elif breakage == "wrong-dtype":
        rewrite_header(
            st, lambda h: h | {"model.norm.weight": {**h["model.norm.weight"], "dtype": "I64"}}
        )
    elif breakage == "shape-mismatch":
        rewrite_header(
            st, lambda h: h | {"model.norm.weight": {**h["model.norm.weight"], "shape": [7]}}
        )
    elif breakage == "header-too-long":
        data = st.read_bytes()
        st.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    elif breakage == "missing-tensor":
        from safetensors.numpy import load_file, save_file

        t = load_file(str(st))
        del t["model.layers.1.mlp.down_proj.weight"]
        save_file(t, str(st))
    elif breakage == "missing-shard":
        make_checkpoint(src, shards=2)
        st.unlink()
        (src / "model-00002-of-00002.safetensors").unlink()
    elif breakage == "pickle":
        st.unlink()
        (src / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    elif breakage == "no-tokenizer":
        (src / "tokenizer.json").unlink()
    elif breakage == "vocab-too-small":
        cfg["vocab_size"] = 100
    if breakage in ("unknown-arch", "vocab-too-small"):
        (src / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out.gguf"
    r = run_cli("convert", str(src), "-o", str(out))
    assert_one_line_error(r, *needles)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unwritable_output_and_bad_options(good, tmp_path, run_cli):
    r = run_cli("convert", str(good), "-o", str(tmp_path / "nope" / "x.gguf"))
    assert_one_line_error(r, "does not exist")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    # root writes through permissions: then use a folder no one can create files in
    target = ro if not os.access(ro, os.W_OK) else Path("/proc")
    try:
        r = run_cli("convert", str(good), "-o", str(target / "x.gguf"))
        assert_one_line_error(r, "cannot write")
    finally:
        ro.chmod(0o700)


def test_unknown_type_and_imatrix_types(good, tmp_path, run_cli):
    r = run_cli("convert", str(good), "-o", str(tmp_path / "x.gguf"), "--type", "Q9_Z")
    assert_one_line_error(r, "unknown --type Q9_Z", "Q4_K_M")
    r = run_cli("convert", str(good), "-o", str(tmp_path / "x.gguf"), "--type", "IQ2_XXS")
    assert_one_line_error(r, "importance matrix")
    assert not (tmp_path / "x.gguf").exists()


def test_disk_full_is_reported_and_leaves_nothing(good, tmp_path, monkeypatch):
    """Both the early check (free space below the estimate) and ENOSPC in the middle."""
    import errno
    import shutil

    import gguf

    from convert import ConvertError, convert

    out = tmp_path / "x.gguf"
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ConvertError, match="not enough disk space"):
        convert(good, out)
    monkeypatch.undo()
    calls = []

    def full(self, tensor, *a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tensor, *a, **k)

    real = gguf.GGUFWriter.write_tensor_data
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full)
    with pytest.raises(ConvertError, match="disk full"):
        convert(good, out)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_conversion_leaves_nothing_at_the_target(tmp_path):
    # big enough to take a moment: ~40 MB of f32
    src = make_checkpoint(
        tmp_path / "big",
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    out = tmp_path / "out.gguf"
    p = subprocess.Popen(
        [sys.executable, "-m", "edge_llm", "convert", str(src), "-o", str(out), "--type", "F32"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.endswith(".part") for p in tmp_path.iterdir()):
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists()
