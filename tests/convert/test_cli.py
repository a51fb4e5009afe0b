"""`edge-llm convert` and `edge-llm export-hf` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.checkpoints import assert_one_line_error, make_checkpoint


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_checkpoint(
        tmp_path_factory.mktemp("cli") / "tiny",
        hidden_size=256,
        intermediate_size=512,
        num_key_value_heads=2,
    )


def test_convert_verify_f32_is_exact(src, tmp_path, run_cli):
    pytest.importorskip("transformers")
    r = run_cli(
        "convert", str(src), "-o", str(tmp_path / "f32.gguf"), "--type", "F32", "--verify", "--json"
    )
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)["verify"]
    assert v["reference"].startswith("transformers")
    assert v["top1_agreement"] == 1.0 and v["mean_kl"] < 1e-6 and v["positions"] > 40


def test_convert_verify_q4_k_m_reports_the_loss(src, tmp_path, run_cli):
    pytest.importorskip("transformers")
    r = run_cli(
        "convert", str(src), "-o", str(tmp_path / "q4.gguf"), "--type", "Q4_K_M", "--verify"
    )
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("verify against transformers float32 (source): top-1 agreement")
    top1 = float(line.split("agreement ")[1].split(",")[0])
    kl = float(line.split("mean KL ")[1].split()[0])
    assert 0.5 < top1 <= 1.0 and 0 < kl < 0.5, line


def test_export_hf_of_a_conversion_gives_back_the_source_tensors(src, tmp_path, run_cli):
    """tiny checkpoint -> convert F32 -> export-hf: every tensor equal to the source's, which
    checks the RoPE permutation and its inverse and every name in both tables."""
    from safetensors.numpy import load_file

    gguf_path = tmp_path / "f32.gguf"
    assert run_cli("convert", str(src), "-o", str(gguf_path), "--type", "F32").returncode == 0
    r = run_cli("export-hf", str(gguf_path), "-o", str(tmp_path / "hf"))
    assert r.returncode == 0, r.stderr
    back = load_file(str(tmp_path / "hf" / "model.safetensors"))
    orig = load_file(str(src / "model.safetensors"))
    back.pop("lm_head.weight", None)  # tied: some writers repeat it
    assert back.keys() == orig.keys()
    for k in orig:
        assert np.array_equal(back[k], orig[k]), k


def test_export_hf_bad_input(tmp_path, run_cli, smollm2_path):
    r = run_cli("export-hf", str(smollm2_path), "-o", str(tmp_path / "x"), "--dtype", "f8")
    assert_one_line_error(r, "f32, f16 or bf16")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    r = run_cli("export-hf", str(smollm2_path), "-o", str(tmp_path / "full"))
    assert_one_line_error(r)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_help_lists_the_types(run_cli):
    r = run_cli("convert", "--help")
    assert r.returncode == 0 and "Q4_K_M" in r.stdout and "--verify" in r.stdout
