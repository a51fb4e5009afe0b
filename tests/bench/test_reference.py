"""`edge-llm bench MODEL --reference REF --reference-is WHAT` (docs/benchmark.md): the
fidelity task runs against the reference and the record says what the reference is. Judged by
hand-computed cases: a model against itself has KL 0, top-1 agreement 1 and perplexity ratio 1;
the scored token count is chunks x (n_ctx - 1 - n_ctx/2), as llama-perplexity scores them."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli

N_CTX, CHUNKS = 32, 2


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("suite")
    (d / "text.txt").write_text(
        "The tablet answers quickly. Edge devices run small models offline.\n" * 12,
        encoding="utf-8",
    )
    (d / "fid.toml").write_text(
        'name = "fid"\ncontext = 64\n'
        "[speed]\nprompt_tokens = 8\ngen_tokens = 2\nreps = 1\n"
        f'[fidelity]\nfile = "text.txt"\nn_ctx = {N_CTX}\nmax_chunks = {CHUNKS}\n'
    )
    return d


def bench(suite, model, reference, what):
    r = cli(
        "bench",
        str(model),
        "--suite",
        str(suite / "fid.toml"),
        "-o",
        str(suite / "results.jsonl"),
        "--reference",
        str(reference),
        "--reference-is",
        what,
        "--threads",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_bench_reference_against_itself_and_another_quantization(suite, smollm2_path, tmp_path):
    rec = bench(suite, smollm2_path, smollm2_path, "the same file")
    f = rec["tasks"]["fidelity"]
    assert f["tokens"] == CHUNKS * (N_CTX - 1 - N_CTX // 2) and f["chunks"] == CHUNKS
    assert f["mean_kld"] == pytest.approx(0, abs=1e-9) and f["top1"] == 1.0
    assert f["ppl_ratio"] == pytest.approx(1.0, abs=1e-9)
    # the record says what the reference is, and which file (its SHA-256 is the model's own here)
    assert rec["reference"]["what"] == "the same file"
    assert rec["reference"]["sha256"] == rec["model"]["sha256"]

    from convert.quant.requantize import requantize

    q8 = requantize(smollm2_path, tmp_path / "smollm2-q8_0.gguf", type="Q8_0").path
    rec = bench(suite, smollm2_path, q8, "Q4_1 requantized to Q8_0")
    f = rec["tasks"]["fidelity"]
    assert f["tokens"] == CHUNKS * (N_CTX - 1 - N_CTX // 2)
    assert 0 < f["mean_kld"] < 1 and f["ppl_ratio"] != 1.0
    assert rec["reference"]["what"] == "Q4_1 requantized to Q8_0"
    assert rec["reference"]["path"] == str(q8)
    assert rec["reference"]["sha256"] != rec["model"]["sha256"]
    assert len((suite / "results.jsonl").read_text().splitlines()) == 2
