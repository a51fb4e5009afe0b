"""`edge-llm info` reads llama.cpp's GGUF parser; the `gguf` package's reader is the judge."""

import json
from collections import Counter

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


def ftype_name(value: int) -> str:
    """A llama.cpp file type's name as gguf-py spells it (MOSTLY_Q4_1 -> Q4_1)."""
    return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_")


def test_summary_facts(both, smollm2_path):
    ours, ref = both
    s = ours.summary()
    field = lambda key: ref.fields[key].contents()  # noqa: E731
    assert s["architecture"] == field("general.architecture") == "llama"
    assert s["file_size"] == smollm2_path.stat().st_size
    assert s["file_type"] == ftype_name(field("general.file_type")) == "Q4_1"
    assert s["context_length"] == field("llama.context_length")
    assert s["vocab_size"] == len(ref.fields["tokenizer.ggml.tokens"].data)
    assert s["chat_template"] is ("tokenizer.chat_template" in ref.fields) is True
    counts = Counter(t.tensor_type.name for t in ref.tensors)
    assert {k: r["tensors"] for k, r in s["types"].items()} == dict(counts)
    # bits per weight as llama.cpp defines it: tensor bytes * 8 / parameters
    assert s["bits_per_weight"] == pytest.approx(8 * ours.tensor_bytes / ours.n_params, abs=1e-4)
    assert 5.7 < s["bits_per_weight"] < 5.8


def test_gemma_info_without_parsing_its_262k_vocabulary(gemma_path):
    from llama_cpp import Llama

    info = gguf_info.read(gemma_path)
    # the judge: llama.cpp's own loader (llama-cpp-python, vocabulary only) and its metadata
    vocab = Llama(str(gemma_path), vocab_only=True, verbose=False)
    try:
        meta, n_vocab = vocab.metadata, vocab.n_vocab()
    finally:
        vocab.close()
    assert info.architecture == meta["general.architecture"] == "gemma3"
    assert info.vocab_size == n_vocab
    assert "tokenizer.ggml.tokens" not in info.metadata  # long arrays: length only
    assert info.chat_template is None and "tokenizer.chat_template" not in meta
    assert info.summary()["file_type"] == ftype_name(int(meta["general.file_type"])) == "Q4_K_M"


def test_info_cli_json_and_text(run_cli, smollm2_path, both):
    _, ref = both
    n_params = sum(int(t.n_elements) for t in ref.tensors)  # gguf-py's count
    ctx = ref.fields["llama.context_length"].contents()
    out = run_cli("info", "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["path"] == str(smollm2_path) and s["n_params"] == n_params
    assert s["context_length"] == ctx
    text = run_cli("info", "smollm2")
    assert text.returncode == 0
    for word in ("llama", f"{n_params:,}", "Q4_1", str(ctx), "chat template", "yes"):
        assert word in text.stdout


def test_tensor_data_really_is_where_the_table_says(both, smollm2_path):
    ours, ref = both
    t = next(t for t in ours.tensors if t.type == "F32")
    raw = np.fromfile(
        smollm2_path, dtype=np.float32, count=t.n_elements, offset=ours.data_offset + t.offset
    )
    r = next(x for x in ref.tensors if x.name == t.name)
    assert np.array_equal(raw, np.asarray(r.data).reshape(-1))
