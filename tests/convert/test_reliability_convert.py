"""Issue 14's converter findings as regression tests: outputs that would destroy a source,
existing outputs without --force, and malformed config.json / safetensors / index / tokenizer
files that gave tracebacks or were converted into GGUFs llama.cpp refuses. Each is built here
from a tiny real checkpoint (tests/fixtures/fuzzing.py: written by safetensors and tokenizers), each gives
one line and exit code 2, and the source's hash is unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convert.errors import ConvertError
from convert.hf_to_gguf import check_source, convert
from tests.fixtures.fuzzing import (
    read_safetensors_header,
    tiny_checkpoint,
    tree_hash,
    write_safetensors_header,
)

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "edge_llm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("good") / "tiny")


@pytest.fixture
def src(good, tmp_path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(good, dst)
    return dst


# --- outputs that would destroy a source ---------------------------------------------------


def test_output_that_is_the_source_weights_is_refused(src):
    before = tree_hash(src)
    line = one_line_error(run_cli("convert", str(src), "-o", str(src / "model.safetensors")))
    assert "would destroy the source" in line
    line = one_line_error(
        run_cli("convert", str(src), "-o", str(src / "model.safetensors"), "--force")
    )
    assert "would destroy the source" in line
    assert tree_hash(src) == before


def test_output_inside_the_source_folder_is_refused(src):
    before = tree_hash(src)
    with pytest.raises(ConvertError, match="inside the source"):
        convert(src, src / "out.gguf", type="F32")
    assert tree_hash(src) == before


def test_symlink_and_hard_link_to_a_source_file_are_refused(src, tmp_path):
    before = tree_hash(src)
    link = tmp_path / "link.gguf"
    link.symlink_to(src / "model.safetensors")
    with pytest.raises(ConvertError, match="would destroy the source"):
        convert(src, link, type="F32", force=True)
    hard = tmp_path / "hard.gguf"
    os.link(src / "model.safetensors", hard)
    with pytest.raises(ConvertError, match="would destroy the source"):
        convert(src, hard, type="F32", force=True)
    folder_link = tmp_path / "alias"
    folder_link.symlink_to(src)
    with pytest.raises(ConvertError, match="inside the source"):
        convert(src, folder_link / "x.gguf", type="F32", force=True)
    assert tree_hash(src) == before


def test_existing_output_needs_force(src, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    line = one_line_error(run_cli("convert", str(src), "-o", str(out), "--type", "F32"))
    assert "exists; pass --force" in line and out.read_bytes() == b"keep me"
    r = run_cli("convert", str(src), "-o", str(out), "--type", "F32", "--force")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"GGUF"


def test_export_hf_and_imatrix_refuse_their_source(smollm2_path, tmp_path):
    copy = tmp_path / "m" / "model.gguf"
    copy.parent.mkdir()
    os.link(smollm2_path, copy) if os.stat(smollm2_path).st_dev == os.stat(
        tmp_path
    ).st_dev else shutil.copy(smollm2_path, copy)
    line = one_line_error(run_cli("export-hf", str(copy), "-o", str(copy.parent), "--force"))
    assert "holds the source" in line
    line = one_line_error(run_cli("imatrix", str(copy), "-o", str(copy), "--force"))
    assert "would destroy the source" in line
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "f").write_text("x")
    line = one_line_error(run_cli("export-hf", str(copy), "-o", str(existing)))
    assert "--force" in line and (existing / "f").read_text() == "x"
    assert copy.stat().st_size == smollm2_path.stat().st_size


def test_distill_refuses_outputs_in_its_teacher_before_any_work(src):
    pytest.importorskip("torch")
    from convert.distill import distill

    before = tree_hash(src)
    with pytest.raises(ConvertError, match="inside the source"):
        distill(src, src / "student", layers=1, steps=0)
    with pytest.raises(ConvertError, match="would destroy the source"):
        distill(src, src.parent / "student", layers=1, steps=0, gguf=src / "model.safetensors")
    assert tree_hash(src) == before


# --- malformed inputs ---------------------------------------------------------------------


def edit_config(src: Path, **changes) -> None:
    cfg = json.loads((src / "config.json").read_text())
    for k, v in changes.items():
        if v is DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (src / "config.json").write_text(json.dumps(cfg))


DELETE = object()

CONFIGS = {
    "layers_string": ({"num_hidden_layers": "two"}, "num_hidden_layers is 'two'"),
    "architectures_int": ({"architectures": [123]}, "architectures is [123]"),
    "eps_nan": ({"rms_norm_eps": float("nan")}, "rms_norm_eps is nan"),
    "hidden_list": ({"hidden_size": [32]}, "hidden_size is [32]"),
    "heads_0": ({"num_attention_heads": 0}, "num_attention_heads is 0"),
    "heads_not_dividing": (
        {"num_attention_heads": 5, "num_key_value_heads": 5},
        "not a multiple of num_attention_heads 5",
    ),
    "context_1e30": ({"max_position_embeddings": 1e30}, "max_position_embeddings"),
    "hidden_65": (
        {"hidden_size": 65, "num_attention_heads": 5, "num_key_value_heads": 5},
        "even head size",
    ),
    "kv_heads_0": ({"num_key_value_heads": 0}, "num_key_value_heads is 0"),
    "head_dim_7": ({"head_dim": 7}, "even head size"),
    "intermediate_contradicts_tensors": ({"intermediate_size": 48}, "config.json implies"),
    "layers_1e12": ({"num_hidden_layers": 10**12}, "num_hidden_layers is 1000000000000"),
    "vocab_1e12": ({"vocab_size": 10**12}, "vocab_size is 1000000000000"),
    "fewer_layers_than_tensors": ({"num_hidden_layers": 1}, "tensor for layer 1"),
    "tie_string": ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
    "theta_negative": ({"rope_theta": -1.0}, "rope_theta is -1.0"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_malformed_config_is_a_one_line_error(src, tmp_path, name):
    changes, phrase = CONFIGS[name]
    edit_config(src, **changes)
    before = tree_hash(src)
    with pytest.raises(ConvertError) as e:
        convert(src, tmp_path / "out.gguf", type="F32")
    assert phrase in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out.gguf").exists() and tree_hash(src) == before


@pytest.mark.parametrize(
    "name", ["layers_string", "heads_not_dividing", "layers_1e12", "fewer_layers_than_tensors"]
)
def test_malformed_config_cli_exit_2(src, tmp_path, name):
    edit_config(src, **CONFIGS[name][0])
    assert CONFIGS[name][1] in one_line_error(
        run_cli("convert", str(src), "-o", str(tmp_path / "o.gguf"))
    )


def edit_header(src: Path, fn) -> None:
    path = src / "model.safetensors"
    header, data = read_safetensors_header(path)
    write_safetensors_header(path, fn(header), data)


def _entry(h, name="model.layers.0.mlp.up_proj.weight"):
    return h[name]


def _set(name, key, value):
    def fn(h):
        _entry(h, name)[key] = value
        return h

    return fn


UP = "model.layers.0.mlp.up_proj.weight"
HEADERS = {
    "string_offsets": (_set(UP, "data_offsets", ["0", "8192"]), "not whole numbers"),
    "float_offsets": (
        lambda h: (_entry(h).update(data_offsets=[float(x) for x in _entry(h)["data_offsets"]]), h)[
            1
        ],
        "not whole numbers",
    ),
    "list_dtype": (_set(UP, "dtype", ["F32"]), "dtype ['F32']"),
    "negative_shape": (_set(UP, "shape", [-64, -32]), "shape [-64, -32]"),
    "three_d_shape": (_set(UP, "shape", [2, 32, 32]), "implies [64, 32]"),
    "extra_layer_tensor": (
        lambda h: {**h, "model.layers.2.mlp.up_proj.weight": dict(_entry(h))},
        "tensor for layer 2",
    ),
    "not_an_object": (lambda h: [1, 2], "not a JSON object"),
}


@pytest.mark.parametrize("name", list(HEADERS))
def test_malformed_safetensors_header_is_a_one_line_error(src, tmp_path, name):
    fn, phrase = HEADERS[name]
    edit_header(src, fn)
    with pytest.raises(ConvertError) as e:
        check_source(src)
    assert phrase in str(e.value) and "\n" not in str(e.value)
    line = one_line_error(run_cli("convert", str(src), "-o", str(tmp_path / "o.gguf")))
    assert phrase in line


def test_weights_file_that_is_a_folder(src):
    (src / "model.safetensors").unlink()
    (src / "model.safetensors").mkdir()
    with pytest.raises(ConvertError, match="is not a file"):
        check_source(src)


@pytest.fixture
def sharded(tmp_path) -> Path:
    return tiny_checkpoint(tmp_path / "sharded", shards=2)


@pytest.mark.parametrize(
    "weight_map, phrase",
    [
        (["model-00001-of-00002.safetensors"], "no weight_map object"),
        ({"model.norm.weight": 3}, "not a .safetensors file"),
        ({"model.norm.weight": "../../etc/passwd.safetensors"}, "outside the checkpoint"),
        (
            {
                "model.norm.weight": "model-00001-of-00002.safetensors",
                "x": "model-00002-of-00002.safetensors",
            },
            "does not hold it",
        ),
    ],
)
def test_malformed_index_is_a_one_line_error(sharded, weight_map, phrase):
    index = sharded / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = weight_map
    index.write_text(json.dumps(data))
    with pytest.raises(ConvertError) as e:
        check_source(sharded)
    assert phrase in str(e.value) and "\n" not in str(e.value)


def test_sharded_checkpoint_passes(sharded):
    assert check_source(sharded).gguf_arch == "llama"


def test_malformed_tokenizer_json_is_a_one_line_error(src, tmp_path):
    tj = json.loads((src / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": 5}
    (src / "tokenizer.json").write_text(json.dumps(tj))
    line = one_line_error(run_cli("convert", str(src), "-o", str(tmp_path / "o.gguf")))
    assert "tokenizer" in line


def test_a_valid_tiny_checkpoint_converts_and_loads(src, tmp_path):
    import edge_llm

    out = convert(src, tmp_path / "ok.gguf", type="F32").path
    m = edge_llm.load(out, n_ctx=64, threads=1)
    assert m.n_vocab > 0
    m.close()
