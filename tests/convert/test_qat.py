"""Quantization-aware distillation (edge-llm distill --quant) on tiny random llama teachers:
what is written is what was trained (ggml's dequantizer is the judge), llama.cpp's logits on the
file equal the fake-quantized torch model's within llama.cpp's own matmul tolerance, QAT at Q4_0
beats converting the teacher straight to Q4_0 (KL through llama.cpp), resume == uninterrupted,
and a recipe's mix is llama.cpp's own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.distill import fast as shared_fast
from tests.fixtures.distill import make_teacher, make_text
from tests.fixtures.tinymodels import MIXED

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from convert import convert  # noqa: E402
from convert.distill import distill  # noqa: E402
from convert.errors import ConvertError  # noqa: E402
from convert.quant import ggml_quant, recipes  # noqa: E402

SMALL = dict(num_hidden_layers=3)  # over the shared teacher's configuration
WIDE = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    initializer_range=0.05,
)


@pytest.fixture(autouse=True)
def _isolate(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_teacher(tmp_path_factory, "teacher", **SMALL)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    return make_teacher(tmp_path_factory, "wide", **WIDE)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return make_text(tmp_path_factory)


def fast(**kd):
    return shared_fast(**({"batch_size": 4, "top_k": 32, "lr": 1e-3} | kd))


def gguf_tensors(path) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (type, float32 values) of every tensor, dequantized by ggml's own to_float."""
    import gguf

    out = {}
    for t in gguf.GGUFReader(path).tensors:
        name = t.tensor_type.name
        shape = tuple(int(x) for x in reversed(t.shape))
        if name in ("F32", "F16"):
            out[t.name] = (name, np.asarray(t.data, dtype=np.float32).reshape(shape))
            continue
        out[t.name] = (name, ggml_quant.dequantize(t.data, name, shape))
    return out


def llama_logits(path, seqs) -> list[np.ndarray]:
    from llama_cpp import Llama

    llm = Llama(
        str(path), n_ctx=128, logits_all=True, n_threads=1, verbose=False, type_k=0, type_v=0
    )
    try:
        out = []
        for ids in seqs:
            llm.reset()
            llm.eval(list(ids))
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float64))
        return out
    finally:
        llm.close()


def token_seqs(model_dir) -> list[list[int]]:
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    return [tok(t, add_special_tokens=False)["input_ids"][:48] for t in MIXED]


def torch_logits(model_dir, seqs) -> list[np.ndarray]:
    m = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [m(torch.tensor([ids])).logits[0].double().numpy() for ids in seqs]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    tot, n = 0.0, 0
    for a, b in zip(ref, got):
        la, lb = log_softmax(a), log_softmax(b)
        tot += (np.exp(la) * (la - lb)).sum()
        n += len(a)
    return tot / n


def nmse(ref, got) -> float:
    """llama.cpp's test-backend-ops error measure: sum (got - ref)^2 / sum ref^2."""
    a, b = np.concatenate(ref), np.concatenate(got)
    return float(((a - b) ** 2).sum() / (a**2).sum())


@pytest.mark.parametrize("quant", ["Q4_0", "Q5_1"])
def test_written_grid_is_the_trained_grid_and_llama_cpp_agrees(teacher, text, tmp_path, quant):
    res = distill(
        teacher,
        tmp_path / "s",
        texts=[text],
        steps=4,
        recipe=fast(),
        quant=quant,
        gguf=tmp_path / "s.gguf",
    )
    assert set(res.tensor_types.values()) == {quant, "Q8_0"}  # tied 64-wide embedding: Q6_K -> Q8_0
    # dequantizing the file gives the student folder's (fake-quantized) weights bit for bit; the
    # F32 conversion of the folder applies the converter's own permutations
    convert(tmp_path / "s", tmp_path / "f32.gguf", type="F32")
    q, f = gguf_tensors(res.gguf), gguf_tensors(tmp_path / "f32.gguf")
    assert q.keys() == f.keys()
    for name, (t, vals) in q.items():
        assert t == res.tensor_types.get(name, "F32"), name
        assert np.array_equal(vals.view(np.uint32), f[name][1].view(np.uint32)), name
    # llama.cpp computes with it what torch computed
    seqs = token_seqs(tmp_path / "s")
    ref, got = torch_logits(tmp_path / "s", seqs), llama_logits(res.gguf, seqs)
    # llama.cpp multiplies quantized weights with 8-bit quantized activations, so its logits differ
    # from torch's by that rounding, compounded over the layers: as much as on a file llama.cpp
    # quantized itself from the same (on-grid) weights, and little in absolute terms
    own = convert(tmp_path / "s", tmp_path / "own.gguf", type=quant).path
    assert nmse(ref, got) <= 1.05 * nmse(ref, llama_logits(own, seqs)) + 1e-6
    assert nmse(ref, got) < 2e-3
    agree = np.mean(np.concatenate([a.argmax(-1) == b.argmax(-1) for a, b in zip(ref, got)]))
    assert agree > 0.95
    assert recipes.read_metadata(res.gguf)["types"] == res.tensor_types


def test_qat_at_q4_0_beats_converting_the_teacher_straight_to_q4_0(teacher, text, tmp_path):
    res = distill(
        teacher,
        tmp_path / "s",
        texts=[text],
        steps=40,
        recipe=fast(),
        quant="Q4_0",
        gguf=tmp_path / "qat.gguf",
    )
    ptq = convert(teacher, tmp_path / "ptq.gguf", type="Q4_0").path
    seqs = token_seqs(teacher)
    ref = torch_logits(teacher, seqs)
    kl_qat, kl_ptq = kl(ref, llama_logits(res.gguf, seqs)), kl(ref, llama_logits(ptq, seqs))
    assert kl_qat < kl_ptq, (kl_qat, kl_ptq)
    # the same types, the same size: the gain is the trained grid's, not more bits
    assert res.gguf.stat().st_size <= ptq.stat().st_size * 1.01
    types = {n: t for n, (t, _) in gguf_tensors(ptq).items()}
    assert all(types[n] == t for n, t in res.tensor_types.items())


def test_k_quant_resume_equals_uninterrupted(wide, text, tmp_path):
    from safetensors.torch import load_file

    kw = dict(texts=[text], steps=5, recipe=fast(batch_size=2), seed=2, quant="Q4_K")
    full = distill(wide, tmp_path / "full", gguf=tmp_path / "full.gguf", **kw)

    class Kill(Exception):
        pass

    def stop(step, loss):
        if step == 3:
            raise Kill

    with pytest.raises(Kill):
        distill(wide, tmp_path / "cut", on_step=stop, **kw)
    res = distill(wide, tmp_path / "cut", resume=True, gguf=tmp_path / "cut.gguf", **kw)
    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "cut" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x, y = (
        gguf_tensors(tmp_path / "full.gguf"),
        gguf_tensors(tmp_path / "cut.gguf"),
    )  # (names differ)
    assert all(x[n][0] == y[n][0] and np.array_equal(x[n][1], y[n][1]) for n in x)
    assert np.allclose(full.losses, res.losses, atol=1e-6)
    assert set(res.tensor_types.values()) == {"Q4_K", "Q6_K"}  # Q6_K: the tied output matrix


def test_a_recipe_mix_gives_llama_cpps_own_types(wide, text, tmp_path):
    res = distill(
        wide,
        tmp_path / "s",
        texts=[text],
        steps=1,
        recipe=fast(batch_size=2),
        quant="Q4_K_M",
        gguf=tmp_path / "s.gguf",
    )
    mine = {n: t for n, (t, _) in gguf_tensors(res.gguf).items()}
    theirs = {
        n: t
        for n, (t, _) in gguf_tensors(
            convert(tmp_path / "s", tmp_path / "ll.gguf", type="Q4_K_M").path
        ).items()
    }
    assert mine == theirs
    assert "Q6_K" in mine.values() and "Q4_K" in mine.values()


def test_a_size_budget_mix_is_trained_and_fits(wide, text, tmp_path):
    q4 = convert(wide, tmp_path / "q4.gguf", type="Q4_0").path.stat().st_size
    q8 = convert(wide, tmp_path / "q8.gguf", type="Q8_0").path.stat().st_size
    target = (q4 + q8) // 2
    res = distill(
        wide,
        tmp_path / "s",
        texts=[text],
        steps=2,
        recipe=fast(batch_size=2),
        target_size=target,
        gguf=tmp_path / "s.gguf",
    )
    kinds = set(res.tensor_types.values())
    assert len(kinds) > 1 and kinds <= {
        "Q8_0",
        "Q6_K",
        "Q5_K",
        "Q5_1",
        "Q5_0",
        "Q4_K",
        "Q4_1",
        "Q4_0",
    }
    assert q4 < res.gguf.stat().st_size <= target
    convert(tmp_path / "s", tmp_path / "f32.gguf", type="F32")
    q, f = gguf_tensors(res.gguf), gguf_tensors(tmp_path / "f32.gguf")
    assert all(
        np.array_equal(v.view(np.uint32), f[n][1].view(np.uint32)) for n, (_, v) in q.items()
    )
    with pytest.raises(ConvertError, match="give --quant or --target-size, not both"):
        distill(wide, tmp_path / "x", texts=[text], steps=1, quant="Q4_0", target_size=target)


def test_bad_quant_arguments(teacher, wide, text, tmp_path):
    with pytest.raises(ConvertError, match="--quant Q9_9: give a type"):
        distill(teacher, tmp_path / "s", texts=[text], steps=1, quant="Q9_9")
    with pytest.raises(
        ConvertError, match="--quant Q3_K_M gives .* type Q3_K, which quantization-aware"
    ):
        distill(wide, tmp_path / "s", texts=[text], steps=1, recipe=fast(), quant="Q3_K_M")
    # rows that a 256-block does not divide take llama.cpp's fallback, as llama.cpp's quantizer does
    res = distill(teacher, tmp_path / "k", texts=[text], steps=0, recipe=fast(), quant="Q4_K")
    assert set(res.tensor_types.values()) == {"Q5_0", "Q8_0"}
    with pytest.raises(ConvertError, match="--type applies without --quant"):
        distill(
            teacher,
            tmp_path / "s",
            texts=[text],
            steps=1,
            quant="Q4_0",
            gguf=tmp_path / "x.gguf",
            type="Q8_0",
        )


def test_cli_quant(teacher, text, tmp_path, run_cli):
    recipe = tmp_path / "distill.toml"
    recipe.write_text("[kd]\nseq_len = 32\nbatch_size = 2\ntop_k = 8\n")
    env = {"EDGE_LLM_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    out = run_cli(
        "distill",
        str(teacher),
        "-o",
        str(tmp_path / "s"),
        "--recipe",
        str(recipe),
        "--text",
        str(text),
        "--steps",
        "2",
        "--quant",
        "Q8_0",
        "--gguf",
        str(tmp_path / "s.gguf"),
        "--json",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["quant"] == "Q8_0" and set(summary["tensor_types"].values()) == {"Q8_0"}
    from edge_llm import gguf_info

    assert (
        gguf_info.read(tmp_path / "s.gguf").metadata["general.file_type"] == 7
    )  # LLAMA_FTYPE_MOSTLY_Q8_0
