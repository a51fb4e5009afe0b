"""Every llama.cpp output type: converts, carries its file type, and llama.cpp generates from it.
Types that need an importance matrix say so."""

from __future__ import annotations

import json

import pytest
from gguf import GGUFReader
from test_convert_errors import make_checkpoint

from convert import ConvertError, convert
from convert.quantize import TYPES

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
