"""PEFT LoRA folder -> GGUF adapter (convert/lora.py), judged twice:

1. llama.cpp's own ``convert_lora_to_gguf.py`` (the vendored one `make install` unpacks) on the
   same PEFT folder writes the same file: equal metadata (every key and value, adapter.type,
   adapter.lora.alpha and general.* included) and equal tensors (names, order, types, shapes,
   bytes).
2. llama.cpp applying the adapter to the base (llama-cpp-python's ``Llama(lora_path=...)``) gives
   the logits of transformers + PEFT with the adapter merged into the weights.
   Tolerance: both in float32 (F32 weights and KV cache); llama.cpp adds ``s B (A x)`` where the
   merged model multiplies by ``W + s B A``, so they differ by summation order only. Logits are
   O(1-10); we require max |difference| < 1e-4 and the same top-1 at every position (as the
   architecture tests do for the bases alone).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.convert.test_minicpm import llama_cpp_source  # noqa: E402
from tests.fixtures.lora import merged, random_peft, tiny_base  # noqa: E402

TOLERANCE = 1e-4
PROMPT_IDS = [5, 17, 42, 99, 3, 250, 77, 8, 123, 64, 31, 200]


@pytest.fixture(scope="module", params=["LlamaForCausalLM", "Qwen2ForCausalLM"])
def adapted(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param.lower())
    hf, base_gguf, model = tiny_base(root / "base", request.param)
    peft_dir, peft_model = random_peft(model, root / "peft", seed=1, r=4, alpha=8)
    return request.param, hf, base_gguf, peft_dir, peft_model


def theirs(peft_dir, base, out, outtype: str):
    r = subprocess.run(
        [
            sys.executable,
            str(llama_cpp_source() / "convert_lora_to_gguf.py"),
            str(peft_dir),
            "--base",
            str(base),
            "--outfile",
            str(out),
            "--outtype",
            outtype,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items()}


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
def test_equals_llama_cpps_converter(adapted, outtype, tmp_path):
    import gguf

    from convert.lora import write_gguf_adapter

    _, hf, _, peft_dir, _ = adapted
    ours = write_gguf_adapter(peft_dir, hf, tmp_path / "ours.gguf", out_type=outtype).path
    ref = theirs(peft_dir, hf, tmp_path / "theirs.gguf", outtype)
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    fa, fb = _fields(a), _fields(b)
    assert fa == fb
    assert fa["general.type"] == "adapter" and fa["adapter.type"] == "lora"
    assert fa["adapter.lora.alpha"] == 8.0
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert len(a.tensors) == 2 * 7 * 2  # q k v o gate up down, 2 layers, lora_a + lora_b
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type, ta.name
        assert list(ta.shape) == list(tb.shape), ta.name
        assert np.array_equal(np.asarray(ta.data), np.asarray(tb.data)), ta.name


def test_llama_cpp_applies_it_as_peft_merged(adapted, tmp_path):
    from llama_cpp import Llama

    from convert.lora import write_gguf_adapter

    case, hf, base_gguf, peft_dir, peft_model = adapted
    adapter = write_gguf_adapter(peft_dir, hf, tmp_path / "a.gguf").path
    with torch.no_grad():
        ref = merged(peft_model)(torch.tensor([PROMPT_IDS])).logits[0].float().numpy()
        base = peft_model.get_base_model()
        with peft_model.disable_adapter():
            plain = base(torch.tensor([PROMPT_IDS])).logits[0].float().numpy()
    llm = Llama(
        str(base_gguf),
        lora_path=str(adapter),
        n_ctx=64,
        logits_all=True,
        n_threads=2,
        verbose=False,
        type_k=0,
        type_v=0,
    )
    try:
        llm.eval(PROMPT_IDS)
        got = np.array(llm.scores[: len(PROMPT_IDS)])
    finally:
        llm.close()
    assert np.abs(ref - plain).max() > 0.1, "the adapter must change the logits"
    diff = np.abs(got - ref).max()
    assert diff < TOLERANCE, f"{case}: max |llama.cpp + adapter - merged| = {diff:.2e}"
    assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_cli_convert_lora(adapted, tmp_path, run_cli):
    import gguf

    _, hf, base_gguf, peft_dir, _ = adapted
    out = tmp_path / "cli.gguf"
    r = run_cli(
        "convert", "--lora", str(peft_dir), "--base", str(base_gguf), "-o", str(out), "--json"
    )
    assert r.returncode == 0, r.stderr
    ref = theirs(peft_dir, hf, tmp_path / "theirs.gguf", "f32")
    a, b = gguf.GGUFReader(out), gguf.GGUFReader(ref)
    # a GGUF base gives the same tensors as its Hugging Face folder (general.name aside)
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert ta.name == tb.name and np.array_equal(np.asarray(ta.data), np.asarray(tb.data))
    r = run_cli("convert", "--lora", str(peft_dir), "--base", str(hf), "-o", str(out))
    assert r.returncode == 2 and "exists" in r.stderr


def test_refuses_what_llama_cpp_would_apply_wrongly(adapted, tmp_path):
    import json
    import shutil

    from convert.errors import ConvertError
    from convert.lora import write_gguf_adapter

    _, hf, _, peft_dir, _ = adapted
    for key, value, needle in (
        ("use_rslora", True, "rsLoRA"),
        ("use_dora", True, "DoRA"),
        ("alpha_pattern", {"q_proj": 4}, "alpha_pattern"),
    ):
        d = tmp_path / key
        shutil.copytree(peft_dir, d)
        cfg = json.loads((d / "adapter_config.json").read_text())
        (d / "adapter_config.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(ConvertError, match=needle):
            write_gguf_adapter(d, hf, tmp_path / f"{key}.gguf")
        assert not (tmp_path / f"{key}.gguf").exists()
