"""MiniCPMForCausalLM has no `transformers` class: its judge is llama.cpp's own
convert_hf_to_gguf.py (from the llama-cpp-python source archive that `make install` unpacks),
run on the same tiny checkpoint: the two GGUFs must hold equal tensors and equal metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_llm.fsutil import cache_dir
from tests.fixtures.tinymodels import MIXED, llama_tensors, spm_tokenizer

LLAMA_CPP_VERSION = "0.3.36"

CONFIG = dict(
    architectures=["MiniCPMForCausalLM"],
    model_type="minicpm",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    scale_emb=12,
    scale_depth=1.4,
    dim_model_base=32,
    tie_word_embeddings=True,
    torch_dtype="float32",
    bos_token_id=1,
    eos_token_id=2,
)


def llama_cpp_source() -> Path:
    """llama.cpp's tree inside the llama-cpp-python sdist (`make install` unpacks it)."""
    env = os.environ.get("LLAMA_CPP_SRC")
    root = Path(env) if env else Path.home() / ".cache/edge-llm/src"
    for base in (root, cache_dir() / "src"):
        tree = base / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"
        if (tree / "convert_hf_to_gguf.py").is_file():
            return tree
    pytest.fail(f"llama.cpp's source is not unpacked under {root}; run `make install`")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from safetensors.numpy import save_file

    from convert import convert

    src = tmp_path_factory.mktemp("minicpm")
    vocab = spm_tokenizer(src)
    cfg = {**CONFIG, "vocab_size": vocab}
    (src / "config.json").write_text(json.dumps(cfg))
    save_file(llama_tensors(cfg, vocab), str(src / "model.safetensors"))
    # outside the checkpoint: the converter refuses an output inside its source
    ours, theirs = src.parent / f"{src.name}-ours.gguf", src.parent / f"{src.name}-theirs.gguf"
    convert(src, ours, type="F32")
    r = subprocess.run(
        [
            sys.executable,
            str(llama_cpp_source() / "convert_hf_to_gguf.py"),
            str(src),
            "--outfile",
            str(theirs),
            "--outtype",
            "f32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return ours, theirs


def fields(path) -> dict:
    from gguf import GGUFReader

    out = {}
    for name, f in GGUFReader(path).fields.items():
        if name.startswith("GGUF."):
            continue
        v = f.contents()
        out[name] = (
            [round(x, 6) if isinstance(x, float) else x for x in v]
            if isinstance(v, list)
            else (round(v, 6) if isinstance(v, float) else v)
        )
    return out


def test_tensors_equal_llama_cpp_converter(both):
    from gguf import GGUFReader

    ours, theirs = (
        {t.name: (t.tensor_type, np.array(t.data)) for t in GGUFReader(p).tensors} for p in both
    )
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name][0] == theirs[name][0], name
        assert np.array_equal(ours[name][1], theirs[name][1]), name


def test_metadata_equals_llama_cpp_converter(both):
    ours, theirs = (fields(p) for p in both)
    # Descriptive keys llama.cpp derives from the folder name and its own version differ by design.
    skip = {
        "general.name",
        "general.basename",
        "general.size_label",
        "general.finetune",
        "general.type",
        "general.quantized_by",
        "general.version",
    }
    model_keys = [k for k in theirs if k not in skip]
    missing = [k for k in model_keys if k not in ours]
    assert not missing, f"keys llama.cpp writes and edge-llm does not: {missing}"
    different = {k: (ours[k], theirs[k]) for k in model_keys if ours[k] != theirs[k]}
    assert not different, {k: (str(a)[:80], str(b)[:80]) for k, (a, b) in different.items()}


def test_the_output_runs_and_tokenizes_like_sentencepiece(both):
    import sentencepiece as spm
    from llama_cpp import Llama

    ours, _ = both
    sp = spm.SentencePieceProcessor(
        model_file=str(ours.parent / ours.name.removesuffix("-ours.gguf") / "tokenizer.model")
    )
    llm = Llama(str(ours), n_ctx=128, verbose=False)
    for text in MIXED:
        assert llm.tokenize(text.encode(), add_bos=False) == sp.encode(text), text
    out = llm("The quick brown", max_tokens=4, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1
    llm.close()
