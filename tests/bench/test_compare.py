"""Paired comparisons of bench runs (`bench report --compare`) and chat-template prompting.

The end-to-end verdicts run the default model against itself ("no detectable difference") and
against a deliberately broken quantization of it, Q2_K requantized without an importance matrix
("worse"), on the same items.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bench import compare, stats, store
from tests.conftest import cli


def items(outcomes, prefix="x"):
    return [
        {"id": f"{prefix}{i}", "correct": bool(c), "output": str(int(c))}
        for i, c in enumerate(outcomes)
    ]


def test_compare_items_self_is_no_difference_and_a_worse_run_is_worse():
    rng = np.random.default_rng(0)
    k12 = rng.random(200) < 0.3
    mm = rng.random(300) < 0.3
    a = {"k12-math": items(k12), "mmlu": items(mm)}
    same = compare.compare_items(a, a, {"k12-math": 0.0, "mmlu": 0.25}, ["k12-math", "mmlu"])
    assert {r["verdict"] for r in same.values()} == {stats.SAME}
    assert same["capability"]["difference"] == 0
    worse_k12 = k12.copy()
    worse_k12[np.flatnonzero(k12)[:25]] = False  # 25 items lost, none gained
    b = {"k12-math": items(worse_k12), "mmlu": items(mm)}
    c = compare.compare_items(a, b, {"k12-math": 0.0, "mmlu": 0.25}, ["k12-math", "mmlu"])
    assert c["k12-math"]["verdict"] == stats.WORSE and c["k12-math"]["only_a"] == 25
    assert c["mmlu"]["verdict"] == stats.SAME
    assert c["capability"]["verdict"] == stats.WORSE
    assert c["capability"]["difference"] == pytest.approx(-25 / 200 / 2)
    # reversed: better
    assert compare.compare_items(b, a, {}, ["k12-math"])["k12-math"]["verdict"] == stats.BETTER


def test_items_pair_by_id_not_by_position():
    a = items([1, 0, 1, 0])
    b = list(reversed(items([1, 0, 1, 0])))
    c = compare.compare_items({"t": a}, {"t": b}, {}, ["t"])
    assert c["t"]["only_a"] == 0 and c["t"]["only_b"] == 0


def fake_record(name, run_id, outcomes):
    return {
        "schema": 1,
        "run_id": run_id,
        "date": f"2026-11-30T07:{run_id[-2:]}:00+00:00",
        "model": {
            "name": name,
            "file": f"{name}.gguf",
            "sha256": run_id * 4,
            "recipe": {"label": ""},
        },
        "suite": {"name": "quick", "version": "quick-1"},
        "device": {"threads": 1, "profile": None},
        "versions": {},
        "tasks": {
            "k12-math": {
                "score": float(np.mean(outcomes)),
                "chance": 0.0,
                "n": len(outcomes),
                "items": items(outcomes),
            }
        },
        "capability": float(np.mean(outcomes)),
        "capability_tasks": ["k12-math"],
        "compute": {},
        "density": {},
    }


def test_report_compare_reads_the_sidecars(tmp_path):
    out = tmp_path / "results.jsonl"
    rng = random.Random(1)
    good = [rng.random() < 0.5 for _ in range(150)]
    bad = [g and rng.random() < 0.5 for g in good]
    for rec in (fake_record("good", "run-01", good), fake_record("bad", "run-02", bad)):
        stored = store.save_items(out, rec)
        assert "items" not in stored["tasks"]["k12-math"]
        assert (tmp_path / stored["items_file"]).is_file()
        store.append(out, stored)
    r = cli("bench", "report", str(out), "--compare", "good", "bad")
    assert r.returncode == 0, r.stderr
    assert "| k12-math | 150 |" in r.stdout and "| worse |" in r.stdout
    j = json.loads(
        cli("bench", "report", str(out), "--compare", "run-02", "run-01", "--json").stdout
    )
    assert (
        j["tasks"]["k12-math"]["verdict"] == "better"
        and j["tasks"]["capability"]["verdict"] == "better"
    )
    r = cli("bench", "report", str(out), "--compare", "good", "nobody")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nobody" in r.stderr


# --- the real model --------------------------------------------------------------------------------
SUITE = """name = "paired"
context = 256
[speed]
prompt_tokens = 16
gen_tokens = 4
reps = 1
[k12-math]
n = 60
max_tokens = 24
[bpb]
file = "../data/eval.txt"
bytes = 3000
n_ctx = 512
"""


@pytest.fixture(scope="module")
def broken_q2k(smollm2_path, tmp_path_factory):
    """SmolLM2 requantized to Q2_K without an importance matrix, every tensor (``pure``: llama.cpp's
    Q2_K mix would keep SmolLM2's 576-wide rows at Q4_0, leaving it barely damaged): bits per byte
    on the evaluation text go from about 1.5 to 3."""
    import ctypes

    import llama_cpp.llama_cpp as C

    dst = tmp_path_factory.mktemp("q2k") / "smollm2-q2k-no-imatrix.gguf"
    p = C.llama_model_quantize_default_params()
    p.ftype = C.LLAMA_FTYPE_MOSTLY_Q2_K
    p.allow_requantize = True
    p.pure = True
    p.nthread = 2
    assert (
        C.llama_model_quantize(str(smollm2_path).encode(), str(dst).encode(), ctypes.byref(p)) == 0
    )
    return dst


@pytest.fixture(scope="module")
def paired_runs(smollm2_path, broken_q2k, tmp_path_factory):
    """Three runs of one suite, in this process (a bench run on a busy 2-CPU host can outlast the
    CLI helper's timeout), stored as `edge-llm bench` stores them; compared through the CLI."""
    from bench import suites
    from bench.runner import Progress, run

    d = tmp_path_factory.mktemp("paired")
    (d / "paired.toml").write_text(
        SUITE.replace("../data/eval.txt", str(suites.HERE.parent / "data" / "eval.txt"))
    )
    suite = suites.load(str(d / "paired.toml"))
    out = d / "results.jsonl"
    recs = []
    for model, label in ((smollm2_path, "a"), (smollm2_path, "b"), (broken_q2k, "broken")):
        rec = run(str(model), suite, recipe_label=label, progress=Progress(quiet=True))
        store.append(out, store.save_items(out, rec))
        recs.append(rec)
    return out, recs


def test_the_model_against_itself_shows_no_detectable_difference(paired_runs):
    out, recs = paired_runs
    r = cli(
        "bench", "report", str(out), "--compare", recs[0]["run_id"], recs[1]["run_id"], "--json"
    )
    c = json.loads(r.stdout)
    assert {t: v["verdict"] for t, v in c["tasks"].items()} == {t: stats.SAME for t in c["tasks"]}
    assert {"capability", "k12-math", "bpb"} <= set(c["tasks"])


def test_the_model_against_a_broken_quantization_is_worse(paired_runs):
    out, recs = paired_runs
    r = cli("bench", "report", str(out), "--compare", recs[0]["run_id"], recs[2]["run_id"])
    assert "| capability |" in r.stdout and "| worse |" in r.stdout, r.stdout
    c = json.loads(
        cli(
            "bench", "report", str(out), "--compare", recs[0]["run_id"], recs[2]["run_id"], "--json"
        ).stdout
    )
    assert c["tasks"]["capability"]["verdict"] == stats.WORSE, c["tasks"]
    assert c["tasks"]["capability"]["ci95"][1] < 0
    assert c["tasks"]["bpb"]["verdict"] == stats.WORSE and c["tasks"]["bpb"]["difference"] > 0
    # every record states its intervals, how capability is composed and how it was prompted
    rec = recs[0]
    assert rec["capability_ci95"][0] <= rec["capability"] <= rec["capability_ci95"][1]
    assert "unclipped" in rec["capability_composition"]
    assert rec["prompt"]["k12-math"] == "chat"  # SmolLM2-Instruct has a chat template
    lo, hi = rec["tasks"]["k12-math"]["ci95"]
    assert lo <= rec["tasks"]["k12-math"]["score"] <= hi


def test_chat_prompting_feeds_the_tokens_the_template_renders(smollm2_path, smollm2):
    """The tokens k12 feeds equal the GGUF's own template rendered by plain Jinja2 and tokenized
    by llama-cpp-python's high-level Llama (paths independent of edge_llm's)."""
    import gguf
    import jinja2
    import llama_cpp

    from bench.suites import k12_math as K

    fed = []

    class Spy:
        def __init__(self, model):
            self.m = model

        def __getattr__(self, k):
            return getattr(self.m, k)

        def stream(self, prompt, **kw):
            fed.append(list(prompt))
            return self.m.stream(prompt, **dict(kw, max_tokens=2))

    class Ctx:
        prompt = "auto"

        def model(self):
            return Spy(smollm2)

        def progress(self, *a):
            pass

    probs = K.generate(2, seed=3)
    items = K.solve(Ctx(), probs, shots=3, max_tokens=2, task="k12-math", prompt_mode="chat")
    assert len(items) == 2 and len(fed) == 2
    reader = gguf.GGUFReader(str(smollm2_path))
    f = reader.fields["tokenizer.chat_template"]
    source = bytes(f.parts[f.data[0]]).decode("utf-8")
    llm = llama_cpp.Llama(str(smollm2_path), vocab_only=True, verbose=False)
    for p, tokens in zip(sorted(probs, key=lambda p: p.language), fed):
        text = (
            jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
            .from_string(source)
            .render(
                messages=K.messages(p, 3), add_generation_prompt=True, bos_token="", eos_token=""
            )
        )
        assert p.question in text and "<|im_start|>assistant" in text
        assert tokens == llm.tokenize(text.encode(), add_bos=False, special=True)
