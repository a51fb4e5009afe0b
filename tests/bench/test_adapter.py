"""`edge-llm bench MODEL --adapter A`: the model is run without and with the adapter, the two runs
are compared item by item, and the adapter's FLOPs and bytes join the compute per token.

Judges: the adapter's extra FLOPs per token are 2 x its LoRA elements and its extra bytes its
tensor bytes, both counted here from the file with gguf-py's reader; the paired difference of a
proportion task is recomputed by hand from the two runs' items; the adapter is seen by every
path the suites use (the runtime model, the batched generator, the scorer): its outputs and its
bits per byte differ from the base's.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")

from tests.conftest import cli  # noqa: E402

TEXT = "The tablet answers quickly.\n学习机回答得很快。\nprint(3 * 4)\n" * 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from convert.lora import write_gguf_adapter
    from tests.fixtures.lora import random_peft, tiny_base

    root = tmp_path_factory.mktemp("bench-adapter")
    hf, base, model = tiny_base(root / "base")
    peft_dir, _ = random_peft(model, root / "peft", seed=1, r=4, alpha=16)
    adapter = write_gguf_adapter(peft_dir, hf, root / "math.gguf").path
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    (root / "tiny.toml").write_text(
        'name = "tiny"\ncontext = 256\n'
        "[speed]\nprompt_tokens = 16\ngen_tokens = 4\nreps = 1\n"
        "[k12-math]\nn = 6\nmax_tokens = 8\nbatch = 3\nshots = 1\n"
        '[bpb]\nfile = "text.txt"\nn_ctx = 64\n'
    )
    r = cli("bench", str(base), "--adapter", str(adapter), "--suite", str(root / "tiny.toml"),
            "--json", "--quiet", "-o", str(root / "results.jsonl"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), adapter, root


def test_compute_includes_the_adapter(run):
    import gguf

    out, adapter, _ = run
    base, with_adapter = out["runs"]
    reader = gguf.GGUFReader(adapter)
    n = sum(int(t.n_elements) for t in reader.tensors)
    nbytes = sum(int(t.n_bytes) for t in reader.tensors)
    cb, ca = base["compute"], with_adapter["compute"]
    assert ca["flops_per_token"] - cb["flops_per_token"] == pytest.approx(2 * n)
    assert ca["bytes_read_per_token"] - cb["bytes_read_per_token"] == nbytes
    assert with_adapter["adapter"]["rank"] == 4 and base["adapter"] is None
    assert out["paired"][0]["flops_per_token_ratio"] == pytest.approx(
        ca["flops_per_token"] / cb["flops_per_token"]
    )


def test_the_adapter_reaches_every_path_and_the_comparison_is_paired(run):
    out, _, root = run
    base, with_adapter = out["runs"]
    paired = out["paired"][0]
    assert (paired["a"]["run_id"], paired["b"]["run_id"]) == (
        base["run_id"],
        with_adapter["run_id"],
    )
    assert "+ math" in paired["b"]["model"]
    ia, ib = ({t: r["items"] for t, r in x["tasks"].items() if "items" in r} for x in out["runs"])
    outputs = lambda items: [x["output"] for x in items["k12-math"]]  # noqa: E731
    assert outputs(ia) != outputs(ib)  # the batched generator applied it
    assert base["tasks"]["bpb"]["bpb"] != with_adapter["tasks"]["bpb"]["bpb"]  # the scorer too
    k = {x["id"]: x["correct"] for x in ia["k12-math"]}
    diff = sum(x["correct"] - k[x["id"]] for x in ib["k12-math"]) / len(ib["k12-math"])
    assert paired["tasks"]["k12-math"]["difference"] == pytest.approx(diff)
