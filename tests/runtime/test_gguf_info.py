"""`edge-llm info` reads llama.cpp's GGUF parser; the `gguf` package's reader is the judge."""

import json

import gguf
import numpy as np
import pytest

from edge_llm import gguf_info


@pytest.fixture(scope="module")
def both(smollm2_path):
    return gguf_info.read(smollm2_path), gguf.GGUFReader(smollm2_path)


def test_tensors_match_the_gguf_package(both):
    ours, ref = both
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert a.type == b.tensor_type.name
        assert a.n_elements == int(b.n_elements)
        assert a.n_bytes == int(b.n_bytes)
        assert ours.data_offset + a.offset == b.data_offset
    assert ours.n_params == sum(int(t.n_elements) for t in ref.tensors) == 134_515_008


def test_metadata_matches_the_gguf_package(both):
    ours, ref = both
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's own pseudo-fields (version, counts)
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert ours.array_lengths[key] == len(field.data)
            continue
        value = field.contents()
        if isinstance(value, float):
            assert ours.metadata[key] == pytest.approx(value, rel=1e-6)
        else:
            assert ours.metadata[key] == value, key


def test_summary_facts(both, smollm2_path):
    ours, _ = both
    s = ours.summary()
    assert s["architecture"] == "llama"
    assert s["file_size"] == smollm2_path.stat().st_size
    assert s["file_type"] == "Q4_1"
    assert s["context_length"] == 8192 and s["vocab_size"] == 49152 and s["chat_template"]
    assert s["types"]["Q4_1"]["tensors"] == 210
    assert sum(r["tensors"] for r in s["types"].values()) == 272
    # bits per weight as llama.cpp defines it: tensor bytes * 8 / parameters
    assert s["bits_per_weight"] == pytest.approx(8 * ours.tensor_bytes / ours.n_params, abs=1e-4)
    assert 5.7 < s["bits_per_weight"] < 5.8


def test_gemma_info_without_parsing_its_262k_vocabulary(gemma_path):
    info = gguf_info.read(gemma_path)
    assert info.architecture == "gemma3"
    assert info.vocab_size == 262144
    assert "tokenizer.ggml.tokens" not in info.metadata  # long arrays: length only
    assert info.chat_template is None
    assert info.summary()["file_type"] == "Q4_K_M"


def test_info_cli_json_and_text(run_cli, smollm2_path):
    out = run_cli("info", "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["path"] == str(smollm2_path) and s["n_params"] == 134_515_008
    text = run_cli("info", "smollm2")
    assert text.returncode == 0
    for word in ("llama", "134,515,008", "Q4_1", "8192", "chat template", "yes"):
        assert word in text.stdout


def test_tensor_data_really_is_where_the_table_says(both, smollm2_path):
    ours, ref = both
    t = next(t for t in ours.tensors if t.type == "F32")
    raw = np.fromfile(
        smollm2_path, dtype=np.float32, count=t.n_elements, offset=ours.data_offset + t.offset
    )
    r = next(x for x in ref.tensors if x.name == t.name)
    assert np.array_equal(raw, np.asarray(r.data).reshape(-1))
