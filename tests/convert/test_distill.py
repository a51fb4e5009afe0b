"""Distillation (convert.distill) on a tiny random llama teacher: the pruned student's shape,
block influence, KD lowering the KL, resume == uninterrupted == an independent plain PyTorch loop
(tests/fixtures/distill_reference.py), GGUF logits, one-line errors, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.distill import fast, make_teacher, make_text
from tests.fixtures.distill_reference import assert_matches, reference_run
from tests.fixtures.tinymodels import CORPUS_LINES

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from convert.distill import distill, load_recipe  # noqa: E402
from convert.errors import ConvertError  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_teacher(tmp_path_factory)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return make_text(tmp_path_factory)


def test_depth_and_width_pruning_give_a_loadable_student(teacher, text, tmp_path):
    r = fast()
    r.prune.intermediate_size = 96
    r.prune.kv_heads = 1
    res = distill(teacher, tmp_path / "s", recipe=r, layers=3, texts=[text], steps=0)
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["intermediate_size"]) == (3, 96)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (2, 1, 16)
    assert len(res.kept_layers) == 3 and res.kept_layers == sorted(res.kept_layers)
    m = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    sd = m.state_dict()
    assert sd["model.layers.2.mlp.gate_proj.weight"].shape == (96, 64)
    assert sd["model.layers.2.mlp.down_proj.weight"].shape == (64, 96)
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (32, 64)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (16, 64)
    assert sd["model.layers.0.self_attn.o_proj.weight"].shape == (64, 32)
    assert "model.layers.3.mlp.up_proj.weight" not in sd
    assert (tmp_path / "s" / "tokenizer.json").is_file()
    with torch.no_grad():
        assert torch.isfinite(m(torch.tensor([[1, 2, 3, 4]])).logits).all()
    # depth-only pruning copies the kept layers exactly
    distill(teacher, tmp_path / "d", layers=3, texts=[text], steps=0, recipe=fast())
    t = transformers.AutoModelForCausalLM.from_pretrained(teacher).state_dict()
    d = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "d").state_dict()
    keep = json.loads((tmp_path / "d" / "distill.json").read_text())["kept_layers"]
    for j, i in enumerate(keep):
        assert torch.equal(
            d[f"model.layers.{j}.self_attn.q_proj.weight"],
            t[f"model.layers.{i}.self_attn.q_proj.weight"],
        )


def test_block_influence_equals_an_independent_computation(teacher, text, tmp_path):
    from convert.distill import data as D

    res = distill(teacher, tmp_path / "s", layers=2, texts=[text], steps=0, recipe=fast())
    tok = D.load_tokenizer(teacher)
    seqs = D.chunk(D.tokenize(tok, D.read_documents([text])), 32)[:8]
    model = transformers.AutoModelForCausalLM.from_pretrained(teacher).eval()
    # run the decoder layers by hand: embeddings, rotary, causal mask; compare in/out
    x = torch.from_numpy(seqs)
    with torch.no_grad():
        h = model.model.embed_tokens(x)
        pos = torch.arange(x.shape[1])[None]
        rope = model.model.rotary_emb(h, pos)
        mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1)[None, None]
        want = []
        for layer in model.model.layers:
            out = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=rope)
            out = out[0] if isinstance(out, tuple) else out
            cos = torch.nn.functional.cosine_similarity(h, out, dim=-1)
            want.append(1 - cos.mean().item())
            h = out
    assert np.allclose(res.block_influence, want, atol=1e-5)
    assert res.kept_layers == sorted(np.argsort(want)[-2:].tolist())


def test_kd_steps_lower_the_kl_to_the_teacher(teacher, text, tmp_path):
    from convert.distill import data as D
    from convert.distill.kd import full_kl

    tok = D.load_tokenizer(teacher)
    seqs = D.chunk(D.tokenize(tok, D.read_documents([text])), 32)[:8]
    t = transformers.AutoModelForCausalLM.from_pretrained(teacher).eval()
    r = fast(batch_size=8, lr=1e-3, top_k=64)
    distill(teacher, tmp_path / "a", layers=3, texts=[text], steps=0, recipe=r)
    res = distill(teacher, tmp_path / "b", layers=3, texts=[text], steps=30, recipe=r)
    a = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "a").eval()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "b").eval()
    before, after = full_kl(a, t, seqs), full_kl(b, t, seqs)
    # a random teacher is a hard target for 3 of its 5 layers; 30 steps take ~20% off (0.59 -> 0.47)
    assert after < 0.9 * before, (before, after)
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    assert res.cache and res.steps == 30 and res.tokens == 30 * 8 * 32


def test_topk_loss_equals_full_kl_when_k_covers_the_vocabulary():
    from convert.distill.kd import kd_loss

    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 5, 40, generator=g), torch.randn(2, 5, 40, generator=g)
    for temp in (1.0, 2.0):
        lt, ls = torch.log_softmax(t / temp, -1), torch.log_softmax(s / temp, -1)
        full = (lt.exp() * (lt - ls)).sum(-1).mean() * temp**2
        # k = 39: one token left in the remainder, which must be exact
        top, idx = lt.topk(39, -1)
        rest = lt.scatter(-1, idx, float("-inf")).logsumexp(-1)
        got = kd_loss(s, idx, top, rest, temperature=temp)
        assert abs(got.item() - full.item()) < 1e-5
        # smaller k: the k+1-bin KL is a lower bound of the full KL (data processing)
        top, idx = lt.topk(8, -1)
        rest = lt.scatter(-1, idx, float("-inf")).logsumexp(-1)
        assert kd_loss(s, idx, top, rest, temperature=temp).item() <= full.item() + 1e-6


def test_resume_after_an_interruption_matches_the_uninterrupted_run(teacher, text, tmp_path):
    from safetensors.torch import load_file

    kw = dict(layers=3, texts=[text], steps=6, recipe=fast(grad_accum=2), seed=3)
    distill(teacher, tmp_path / "full", **kw)

    class Kill(Exception):
        pass

    def stop(step, loss):
        if step == 3:
            raise Kill

    with pytest.raises(Kill):
        distill(teacher, tmp_path / "cut", on_step=stop, **kw)
    assert not (tmp_path / "cut").exists()  # nothing at the target
    assert (tmp_path / ".cut.distill-work" / "checkpoint.pt").is_file()
    res = distill(teacher, tmp_path / "cut", resume=True, **kw)
    assert not (tmp_path / ".cut.distill-work").exists()
    a = load_file(tmp_path / "full" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    full = json.loads((tmp_path / "full" / "distill.json").read_text())["losses"]
    assert np.allclose(full, res.losses, atol=1e-6)
    # both equal the independent judge: a plain PyTorch loop over the same teacher, text, recipe
    # and seed from the kept layers (not only each other: a step wrong the same way would pass)
    ref = reference_run(teacher, text, kd=kw["recipe"].kd, steps=6, seed=3, keep=res.kept_layers)
    assert_matches(a, full, ref, "uninterrupted")
    assert_matches(b, res.losses, ref, "resumed")


def test_generated_continuations_fill_a_budget_beyond_the_corpus(teacher, tmp_path):
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(json.dumps({"text": line}) for line in CORPUS_LINES[:4] * 3))
    r = fast()
    r.data.generate = True  # off by default
    res = distill(teacher, tmp_path / "s", layers=4, texts=[short], tokens=64 * 12, recipe=r)
    assert res.generated_sequences > 0 and res.corpus_sequences > 0
    assert res.corpus_sequences + res.generated_sequences == res.steps * 2
    # on the CPU llama.cpp sampled them, from the teacher converted to an F32 GGUF: full-length
    # sequences that start with a corpus sequence's first prompt_tokens, no end-of-text inside
    from convert.distill import data as D

    store = D.store_dir()
    assert list(store.glob("teacher-*-f32.gguf"))
    (gen_file,) = store.glob("gen-*.npz")
    gen = np.load(gen_file)["seqs"]
    tok = D.load_tokenizer(teacher)
    corpus = D.chunk(D.tokenize(tok, D.read_documents([short])), 32)
    assert gen.shape == (res.generated_sequences, 32)
    firsts = {tuple(c[:8]) for c in corpus}
    assert all(tuple(g[:8]) in firsts for g in gen)
    eos = tok.eos_token_id
    assert eos is None or not (gen[:, 8:] == eos).any()
    assert len({tuple(g[8:]) for g in gen}) > 1  # sampled, not one greedy continuation


def test_student_converts_and_llama_cpp_logits_match_transformers(teacher, text, tmp_path):
    from llama_cpp import Llama

    r = fast()
    r.prune.intermediate_size = 96
    r.prune.kv_heads = 1
    res = distill(
        teacher,
        tmp_path / "s",
        recipe=r,
        layers=3,
        texts=[text],
        steps=2,
        gguf=tmp_path / "s.gguf",
        type="F32",
    )
    assert res.gguf == tmp_path / "s.gguf"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "s").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "s")
    llm = Llama(
        str(res.gguf), n_ctx=128, logits_all=True, n_threads=1, verbose=False, type_k=0, type_v=0
    )
    try:
        for prompt in ("The quick brown fox jumps over the lazy dog.", "def main(argv):\n    for"):
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                ref = model(torch.tensor([ids])).logits[0].numpy()
            llm.reset()
            llm.eval(ids)
            got = np.array(llm.scores[: len(ids)])
            assert np.abs(got - ref).max() < 1e-4
            assert (got.argmax(-1) == ref.argmax(-1)).all()
    finally:
        llm.close()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=9), "--layers 9: the teacher has 5 layers"),
        (dict(recipe="drop6"), "prune.drop = 6 leaves -1 of the teacher's 5 layers"),
        (dict(tokens=0), "--tokens 0: give a positive number"),
        (dict(texts=["/nonexistent/x.txt"]), "cannot read the text file /nonexistent/x.txt"),
        (dict(texts=["binary"]), "is not UTF-8 text"),
        (dict(texts=["empty"]), "no text in"),
    ],
)
def test_bad_input_gives_one_line_errors(teacher, tmp_path, kwargs, message):
    if kwargs.get("recipe") == "drop6":
        (tmp_path / "r.toml").write_text("[prune]\ndrop = 6\n")
        kwargs["recipe"] = tmp_path / "r.toml"
    for name, data in (("binary", b"\xff\xfe\x00bad"), ("empty", b"  \n")):
        if kwargs.get("texts") == [name]:
            (tmp_path / name).write_bytes(data)
            kwargs["texts"] = [tmp_path / name]
    with pytest.raises(ConvertError) as e:
        distill(teacher, tmp_path / "s", steps=1, **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


def test_teacher_without_config_and_bad_recipes(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(ConvertError, match="has no config.json"):
        distill(tmp_path / "t", tmp_path / "s")
    (tmp_path / "r.toml").write_text("[kd]\nlearning_rate = 1\n")
    with pytest.raises(ConvertError, match="unknown key kd.learning_rate"):
        load_recipe(tmp_path / "r.toml")
    with pytest.raises(ConvertError, match="cannot read the recipe"):
        load_recipe(tmp_path / "missing.toml")


def test_cli_end_to_end(teacher, text, tmp_path, run_cli):
    recipe = tmp_path / "distill.toml"
    recipe.write_text("[kd]\nseq_len = 32\nbatch_size = 2\ntop_k = 8\n[data]\nprompt_tokens = 8\n")
    env = {"EDGE_LLM_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    out = run_cli(
        "distill",
        str(teacher),
        "-o",
        str(tmp_path / "s"),
        "--layers",
        "3",
        "--recipe",
        str(recipe),
        "--text",
        str(text),
        "--steps",
        "2",
        "--gguf",
        str(tmp_path / "s.gguf"),
        "--type",
        "F32",
        "--json",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["config"]["num_hidden_layers"] == 3 and summary["steps"] == 2
    assert (tmp_path / "s.gguf").is_file()
    bad = run_cli("distill", str(teacher), "-o", str(tmp_path / "t"), "--layers", "40", env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --layers 40: the teacher has 5 layers; keep between 1 and 5"
    ]
