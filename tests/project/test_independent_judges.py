"""Facts the project states about llama.cpp, asked of llama.cpp itself, and promises of the docs
(docs/converting.md, docs/python-api.md) that had no test.

Judges: llama-cpp-python's LLAMA_FTYPE_* constants (file types), llama.cpp's quantizer run
without an importance matrix (which file and tensor types need one), a transcript written out by
hand (a model without a chat template), the docs' wording (Phi-3 LongRoPE is refused).
"""

from __future__ import annotations

import json

import pytest

from convert import convert
from convert.quant.quantize import TYPES
from tests.fixtures.checkpoints import make_checkpoint

llama_cpp = pytest.importorskip("llama_cpp")

# rows of 256 so that every K- and IQ-quant applies to every matrix
DIMS = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
VIA_LLAMA_CPP = [t for t in TYPES.values() if t.direct is None]


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory):
    src = make_checkpoint(tmp_path_factory.mktemp("judges") / "tiny", **DIMS)
    out = src.parent / "tiny-f32.gguf"
    convert(src, out, type="F32")
    return out


@pytest.mark.parametrize("name", list(TYPES))
def test_file_types_are_llama_cpps_own_numbers(name):
    const = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
    assert TYPES[name].ftype == getattr(llama_cpp, const)


@pytest.mark.parametrize("out_type", VIA_LLAMA_CPP, ids=[t.name for t in VIA_LLAMA_CPP])
def test_needs_imatrix_is_what_llama_cpps_quantizer_enforces(f32_gguf, tmp_path, out_type):
    from edge_llm.llama.binding import quantize_file

    ok = quantize_file(f32_gguf, tmp_path / "out.gguf", out_type.ftype, 1)
    assert ok == (not out_type.needs_imatrix)


@pytest.mark.parametrize(
    "name",
    [
        "Q4_0",
        "Q4_K",
        "Q2_K",
        "IQ4_XS",
        "IQ3_S",
        "IQ3_XXS",
        "IQ2_S",
        "IQ2_XS",
        "IQ2_XXS",
        "IQ1_M",
        "IQ1_S",
    ],
)
def test_tensor_types_that_need_an_imatrix_are_those_llama_cpp_refuses(f32_gguf, tmp_path, name):
    """Every block matrix forced to the type (llama.cpp's tensor-type overrides), no imatrix."""
    from gguf import GGUFReader

    from convert.quant.ggml_types import TYPES as GGML
    from edge_llm.llama.binding import quantize_file

    t = GGML[name]
    blocks = {
        x.name: t.ggml
        for x in GGUFReader(f32_gguf).tensors
        if x.name.startswith("blk.") and len(x.shape) == 2
    }
    ok = quantize_file(f32_gguf, tmp_path / "out.gguf", TYPES["Q8_0"].ftype, 1, tensor_types=blocks)
    assert ok == (not t.needs_imatrix)


def test_a_gguf_without_a_chat_template_chats_in_a_plain_transcript(tmp_path):
    """docs/python-api.md: a GGUF without a template is a completion model; chat gives it
    `User: ...` / `Assistant:` (not ChatML tags it never learned)."""
    import edge_llm

    src = make_checkpoint(tmp_path / "tiny", **DIMS)
    cfg_path = src / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    (src / "chat_template.jinja").unlink(missing_ok=True)
    out = tmp_path / "tiny.gguf"
    convert(src, out, type="F16")
    with edge_llm.load(out, n_ctx=256, threads=1) as m:
        assert not m.has_chat_template and not m.is_chat_model
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        assert m.render_chat(messages) == "Be brief.\n\nUser: Hi\nAssistant:"


def test_phi3_longrope_is_refused_in_one_line(tmp_path, run_cli):
    import numpy as np
    from safetensors.numpy import load_file, save_file

    src = make_checkpoint(tmp_path / "phi", **DIMS)
    w = load_file(str(src / "model.safetensors"))
    for key in [k for k in w if k.endswith("self_attn.q_proj.weight")]:  # Phi-3's fused layout
        pre = key.removesuffix("q_proj.weight")
        w[pre + "qkv_proj.weight"] = np.concatenate(
            [w.pop(pre + p + "_proj.weight") for p in "qkv"]
        )
        mlp = pre.replace("self_attn.", "mlp.")
        w[mlp + "gate_up_proj.weight"] = np.concatenate(
            [w.pop(mlp + "gate_proj.weight"), w.pop(mlp + "up_proj.weight")]
        )
    save_file(w, str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        rope_scaling={"type": "longrope", "short_factor": [1.0] * 32, "long_factor": [1.0] * 32},
    )
    (src / "config.json").write_text(json.dumps(cfg))
    r = run_cli("convert", str(src), "-o", str(tmp_path / "phi.gguf"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "longrope" in lines[0]
    assert not (tmp_path / "phi.gguf").exists()
