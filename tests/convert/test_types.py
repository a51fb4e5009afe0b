"""Every llama.cpp output type: converts, carries its file type, and llama.cpp generates from it.
Types that need an importance matrix say so."""

from __future__ import annotations

import json

import pytest
from gguf import GGMLQuantizationType, GGUFReader

from convert import ConvertError, convert
from convert.quant.quantize import TYPES
from tests.fixtures.checkpoints import make_checkpoint

# rows of 256 so that every K- and IQ-quant applies to every matrix
DIMS = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
PLAIN = [t for t in TYPES.values() if not t.needs_imatrix]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("quant") / "tiny", **DIMS)


@pytest.mark.parametrize("out_type", PLAIN, ids=[t.name for t in PLAIN])
def test_type_converts_and_generates(src, tmp_path, out_type):
    from llama_cpp import Llama

    out = tmp_path / f"{out_type.name}.gguf"
    convert(src, out, type=out_type.name)
    r = GGUFReader(out)
    assert int(r.fields["general.file_type"].contents()) == out_type.ftype
    types = {t.tensor_type.name for t in r.tensors if len(t.shape) > 1}
    if out_type.direct is not None:
        assert out_type.direct.name in types
    llm = Llama(str(out), n_ctx=64, verbose=False)
    text = llm("The quick", max_tokens=6, temperature=0)
    assert text["usage"]["completion_tokens"] >= 1
    llm.close()


def test_k_quant_mixes_come_from_llama_cpp(src, tmp_path):
    out = tmp_path / "q4km.gguf"
    convert(src, out, type="q4_k_m")
    types = {t.tensor_type.name for t in GGUFReader(out).tensors}
    assert "Q4_K" in types and "F32" in types  # norms stay F32
    assert [p.name for p in tmp_path.iterdir()] == ["q4km.gguf"]  # the intermediate is gone


@pytest.mark.parametrize("name", [t.name for t in TYPES.values() if t.needs_imatrix])
def test_types_that_need_an_importance_matrix_say_so(src, tmp_path, name):
    with pytest.raises(ConvertError, match="importance matrix"):
        convert(src, tmp_path / "x.gguf", type=name)
    assert not (tmp_path / "x.gguf").exists()


def write_bf16(st, tensors: dict) -> dict:
    """Rewrite a safetensors file as bf16 (numpy's safetensors API has none): the top halves."""
    import numpy as np

    bf16 = {
        k: (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        for k, v in tensors.items()
    }
    header, offset, blobs = {}, 0, []
    for k, v in bf16.items():
        header[k] = {
            "dtype": "BF16",
            "shape": list(v.shape),
            "data_offsets": [offset, offset + v.nbytes],
        }
        offset += v.nbytes
        blobs.append(v.tobytes())
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    st.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))
    return bf16


def test_bf16_source_to_f32_and_f16_in_blocks(tmp_path, monkeypatch):
    """bf16 -> F32 is exact; bf16 -> F16 rounds like numpy's float32 -> float16 cast; both made
    block by block (blocks smaller than a tensor here) on the thread pool."""
    import numpy as np
    from safetensors.numpy import load_file

    from convert import write

    monkeypatch.setattr(write.StreamedTensor, "BLOCK", 1000)
    src = make_checkpoint(tmp_path / "bf16")
    bf16 = write_bf16(src / "model.safetensors", load_file(str(src / "model.safetensors")))
    want = (bf16["model.embed_tokens.weight"].astype(np.uint32) << 16).view(np.float32)
    for kind, dtype in (("F32", np.float32), ("F16", np.float16)):
        convert(src, tmp_path / f"{kind}.gguf", type=kind)
        emb = next(
            t
            for t in GGUFReader(tmp_path / f"{kind}.gguf").tensors
            if t.name == "token_embd.weight"
        )
        got = np.array(emb.data).reshape(want.shape)
        assert got.dtype == dtype and np.array_equal(got, want.astype(dtype)), kind


def test_default_type_follows_the_source(tmp_path):
    import numpy as np
    from safetensors.numpy import load_file

    src = make_checkpoint(tmp_path / "bf16")
    st = src / "model.safetensors"
    bf16 = write_bf16(st, load_file(str(st)))
    res = convert(src, tmp_path / "out.gguf")
    assert res.type == "BF16"
    r = GGUFReader(tmp_path / "out.gguf")
    emb = next(x for x in r.tensors if x.name == "token_embd.weight")
    assert emb.tensor_type.name == "BF16"
    # bf16 -> BF16 is exact: the stored bits are the source's bits
    assert np.array_equal(
        np.array(emb.data).view(np.uint16).reshape(-1),
        bf16["model.embed_tokens.weight"].reshape(-1),
    )


# --- single-type files: every matrix is the type asked for, and close to the F32 conversion -----

# Output types named after one ggml type (llama.cpp's *_S/_M/_L and Q2_K are mixes by design).
SINGLE = [
    t.name
    for t in TYPES.values()
    if not t.needs_imatrix and t.name in GGMLQuantizationType.__members__ and t.name != "Q2_K"
]
# Mean KL(F32 || type) per scored token on the tiny random model below, stated here (about 10x
# what was measured in Nov 2026: F16 4e-9, BF16 2e-7, Q8_0 3e-6, Q6_K 2e-5, Q5_x 7e-5,
# Q4_x/IQ4_x 3e-4, IQ3_S 9e-4, TQx_0 1.4e-2 -- random weights are not ternary).
KL_BOUND = {
    "F32": 0.0,
    "F16": 1e-7,
    "BF16": 3e-6,
    "Q8_0": 3e-5,
    "Q6_K": 2e-4,
    "Q5_0": 7e-4,
    "Q5_1": 7e-4,
    "Q4_0": 3e-3,
    "Q4_1": 3e-3,
    "IQ4_NL": 3e-3,
    "IQ4_XS": 3e-3,
    "IQ3_S": 1e-2,
    "TQ1_0": 0.15,
    "TQ2_0": 0.15,
}


def llama_cpp_types(src_gguf, dst, ftype: int, pure: bool) -> dict[str, str]:
    """Ask llama.cpp itself (llama-cpp-python's `llama_model_quantize`, not edge_llm's binding)
    which ggml type it gives each tensor of ``src_gguf`` for ``ftype``."""
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.pure = ftype, 1, pure
    rc = llama_cpp.llama_model_quantize(str(src_gguf).encode(), str(dst).encode(), p)
    assert rc == 0
    return {t.name: t.tensor_type.name for t in GGUFReader(dst).tensors}


@pytest.fixture(scope="module")
def f32(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("f32") / "F32.gguf"
    convert(src, out, type="F32")
    return out


@pytest.mark.parametrize("name", SINGLE)
def test_single_type_matrices_and_kl_against_f32(src, f32, tmp_path, name):
    """Every 2-D weight of the blocks is the asked ggml type (rows of 256 fit every block size);
    the whole per-tensor map is llama-quantize's own (its default keeps the output matrix, here the
    tied embedding, at Q6_K); and the model stays within KL_BOUND of the F32 conversion."""
    from bench.fidelity import compare
    from tests.fixtures.tinymodels import CORPUS_LINES

    out = tmp_path / f"{name}.gguf"
    convert(src, out, type=name)
    got = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    for t in GGUFReader(out).tensors:
        if len(t.shape) > 1 and t.name.startswith("blk."):
            assert t.tensor_type.name == name, t.name
    if name not in ("F32", "F16", "BF16", "Q8_0"):  # the ones not written by the gguf package
        assert got == llama_cpp_types(f32, tmp_path / "judge.gguf", TYPES[name].ftype, False)
    r = compare(f32, out, " ".join(CORPUS_LINES), n_ctx=32)
    assert r["tokens"] > 100
    assert r["mean_kld"] <= KL_BOUND[name], r["mean_kld"]
    if name != "F32":
        assert r["mean_kld"] > 0  # the two files really differ: the comparison can see it


@pytest.fixture(scope="module")
def odd_rows(tmp_path_factory):
    """Rows of 160: a multiple of 32 (Q4_0 .. Q8_0, IQ4_NL blocks) but not of 256 (K, IQ4_XS,
    TQ blocks), so llama.cpp must fall back to another type for those."""
    d = tmp_path_factory.mktemp("odd")
    src = make_checkpoint(
        d / "tiny",
        hidden_size=160,
        intermediate_size=320,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    convert(src, d / "F32.gguf", type="F32")
    return src, d / "F32.gguf"


@pytest.mark.parametrize("name", ["Q6_K", "IQ4_XS", "TQ2_0", "Q4_0"])
def test_rows_not_divisible_by_the_block_take_llama_cpp_fallback(odd_rows, tmp_path, name):
    """Where a row does not hold whole blocks, the type is llama.cpp's fallback: asked directly
    with `pure` (so only the fallback rule changes types); every matrix's rows hold whole blocks."""
    from gguf import GGML_QUANT_SIZES

    src, f32 = odd_rows
    out = tmp_path / f"{name}.gguf"
    convert(src, out, type=name)
    pure = llama_cpp_types(f32, tmp_path / "pure.gguf", TYPES[name].ftype, True)
    asked = GGML_QUANT_SIZES[GGMLQuantizationType[name]][0]
    fell_back = 0
    for t in GGUFReader(out).tensors:
        if len(t.shape) < 2:
            continue
        block = GGML_QUANT_SIZES[t.tensor_type][0]
        assert int(t.shape[0]) % block == 0, t.name
        if int(t.shape[0]) % asked == 0 and t.name.startswith("blk."):
            assert t.tensor_type.name == name, t.name
        elif t.name.startswith("blk."):
            assert t.tensor_type.name != name and t.tensor_type.name == pure[t.name], t.name
            fell_back += 1
    assert fell_back > 0 if asked > 160 else fell_back == 0
