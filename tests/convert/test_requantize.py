"""`edge-llm convert FILE.gguf -o OUT.gguf --type T`: requantizing a GGUF with llama.cpp's quantizer.

The judges: the checkpoint converted straight to the same type (llama.cpp's quantizer fed the
same F32 weights must give the same tensor bytes), gguf-py's own dequantizer (the requantized
weights stay close to the source), and the GGUF's tensor types as gguf-py reads them.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.fixtures.checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def f32(checkpoint, tmp_path_factory):
    from convert import convert

    return convert(checkpoint, tmp_path_factory.mktemp("f32") / "tiny-F32.gguf", type="F32").path


def tensors(path):
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, bytes(t.data.tobytes())) for t in r.tensors}


def dequantized(path):
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(path)
    return {t.name: dequantize(t.data, t.tensor_type).reshape(-1) for t in r.tensors}


def test_requantizing_an_f32_gguf_equals_converting_the_checkpoint(
    checkpoint, f32, tmp_path, run_cli
):
    from convert import convert

    out = tmp_path / "tiny-Q4_0.gguf"
    r = run_cli("convert", str(f32), "-o", str(out), "--type", "Q4_0")
    assert r.returncode == 0, r.stderr
    assert "Q4_0" in r.stdout and str(out) in r.stdout
    direct = convert(checkpoint, tmp_path / "direct-Q4_0.gguf", type="Q4_0").path
    got, want = tensors(out), tensors(direct)
    assert got == want  # same types, same bytes
    assert {t for n, (t, _) in got.items() if n.endswith("_proj.weight") or ".attn_" in n} >= {
        "Q4_0"
    }
    # and close to the source, by gguf-py's dequantizer: Q4_0's error on N(0, 0.1) weights
    src, deq = dequantized(f32), dequantized(out)
    for name in src:
        err = np.sqrt(np.mean((src[name] - deq[name]) ** 2))
        assert err <= 0.02, (name, err)


def test_requantizing_with_a_recipe_and_an_imatrix_file(f32, tmp_path, run_cli):
    im = tmp_path / "tiny.imatrix"
    r = run_cli("imatrix", str(f32), "-o", str(im), "--chunks", "4")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "tiny-recipe.gguf"
    r = run_cli("convert", str(f32), "-o", str(out), "--recipe", "q4_k_m", "--imatrix", str(im))
    assert r.returncode == 0, r.stderr
    import gguf
    import llama_cpp

    reader = gguf.GGUFReader(out)
    keys = set(reader.fields)
    assert any(k.startswith("edge_llm.recipe") for k in keys), sorted(keys)
    # the imatrix llama.cpp was given, as gguf-py reads that file: its entries and chunks
    im_file = gguf.GGUFReader(im)
    entries = [t for t in im_file.tensors if t.name.endswith(".in_sum2")]
    assert reader.fields["quantize.imatrix.entries_count"].contents() == len(entries) > 0
    assert (
        reader.fields["quantize.imatrix.chunks_count"].contents()
        == im_file.fields["imatrix.chunk_count"].contents()
        == 4
    )
    # the q4_k_m preset's types: llama.cpp's own Q4_K_M of the same file, by llama-cpp-python
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 1
    own = tmp_path / "llama-Q4_K_M.gguf"
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(own).encode(), params) == 0
    want = {n: t for n, (t, _) in tensors(own).items()}
    assert {n: t for n, (t, _) in tensors(out).items()} == want
    assert len(set(want.values())) >= 2  # a mix


def test_a_quantized_source_is_requantized_with_a_warning(f32, tmp_path, run_cli):
    q8 = tmp_path / "tiny-Q8_0.gguf"
    assert run_cli("convert", str(f32), "-o", str(q8), "--type", "Q8_0").returncode == 0
    out = tmp_path / "tiny-Q4_0.gguf"
    r = run_cli("convert", str(q8), "-o", str(out), "--type", "Q4_0")
    assert r.returncode == 0, r.stderr
    assert "warning: tiny-Q8_0.gguf is already quantized (Q8_0)" in r.stderr
    assert {t for n, (t, _) in tensors(out).items() if n.startswith("blk.")} >= {"Q4_0"}
    # a size budget needs unquantized weights to measure against
    r = run_cli("convert", str(q8), "-o", str(tmp_path / "b.gguf"), "--target-size", "50KB")
    assert r.returncode == 2 and "needs an unquantized source" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_requantize_inputs_are_one_line_errors(f32, tmp_path, run_cli):
    notgguf = tmp_path / "notes.gguf"
    notgguf.write_text("hello")
    cases = [
        (("convert", str(notgguf), "-o", str(tmp_path / "o.gguf"), "--type", "Q4_0"), "not a GGUF"),
        (("convert", str(f32), "-o", str(tmp_path / "o.gguf")), "needs --type"),
        (("convert", str(f32), "-o", str(f32), "--type", "Q4_0"), "is the source"),
        (
            ("convert", str(f32), "-o", str(tmp_path / "o.gguf"), "--type", "Q4_0", "--verify"),
            "edge-llm compare",
        ),
    ]
    for args, needle in cases:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, r.stderr)
    assert not (tmp_path / "o.gguf").exists()


def test_a_size_budget_on_an_f32_gguf_matches_the_checkpoints(checkpoint, f32, tmp_path):
    from convert import convert

    target = 120_000
    got = convert(f32, tmp_path / "budget.gguf", target_size=target)
    want = convert(checkpoint, tmp_path / "direct.gguf", target_size=target)
    assert got.bytes <= target and got.tensor_types == want.tensor_types
    assert tensors(got.path) == tensors(want.path)
