"""Promises of `edge-llm distill` (docs/distillation.md) not covered by
tests/convert/test_distill.py: the resume refusal (a checkpoint made with another recipe) and the
remaining one-line errors (an existing output, a malformed JSONL line, widths beyond the
teacher's, --device cuda without CUDA). Each message is judged against the docs' wording: one
line, what is wrong and what to do, nothing written."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from convert.distill import distill  # noqa: E402
from convert.errors import ConvertError  # noqa: E402
from tests.fixtures.distill import fast, make_teacher, make_text  # noqa: E402


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


def one_line(e: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and all(p in msg for p in parts), msg


def test_resume_refuses_a_checkpoint_made_with_another_recipe(teacher, text, tmp_path, run_cli):
    kw = dict(layers=3, texts=[text], steps=6, seed=3)

    class Kill(Exception):
        pass

    def stop(step, loss):
        if step == 3:
            raise Kill

    with pytest.raises(Kill):
        distill(teacher, tmp_path / "cut", recipe=fast(grad_accum=2), on_step=stop, **kw)
    ckpt = tmp_path / ".cut.distill-work" / "checkpoint.pt"
    assert ckpt.is_file()
    before = ckpt.read_bytes()
    with pytest.raises(ConvertError) as e:
        distill(teacher, tmp_path / "cut", recipe=fast(grad_accum=2, lr=1e-3), resume=True, **kw)
    one_line(
        e,
        "was made with another teacher, recipe, data or number of processes",
        "run without --resume",
    )
    assert not (tmp_path / "cut").exists()
    assert ckpt.read_bytes() == before  # the refused checkpoint is left as it was
    # the same refusal from the CLI: exit 2, one line on stderr
    recipe = tmp_path / "other.toml"
    recipe.write_text(
        "[kd]\nseq_len = 32\nbatch_size = 2\ntop_k = 16\nlr = 0.001\n"
        "checkpoint_every = 2\ngrad_accum = 2\n[data]\nprompt_tokens = 8\n"
        "calibration_sequences = 8\n"
    )
    r = run_cli(
        "distill",
        str(teacher),
        "-o",
        str(tmp_path / "cut"),
        "--layers",
        "3",
        "--text",
        str(text),
        "--steps",
        "6",
        "--recipe",
        str(recipe),
        "--resume",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "run without --resume" in lines[0]
    assert not (tmp_path / "cut").exists()


def test_an_existing_output_is_refused(teacher, text, tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError) as e:
        distill(teacher, tmp_path / "s", layers=3, texts=[text], steps=1, recipe=fast())
    one_line(e, "exists", "--force")
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["keep.txt"]
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ConvertError) as e:
        distill(teacher, tmp_path / "f", layers=3, texts=[text], steps=1, recipe=fast())
    one_line(e, "exists and is a file", "-o")
    assert (tmp_path / "f").read_text() == "a file"


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "fine"}', "{not json"], ":2 is not JSON"),
        (['{"text": "fine"}', '{"txt": "x"}'], ':2 has no "text" string field'),
    ],
)
def test_a_malformed_jsonl_line_names_the_file_and_line(teacher, tmp_path, lines, message):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConvertError) as e:
        distill(teacher, tmp_path / "s", layers=3, texts=[data], steps=1, recipe=fast())
    one_line(e, str(data), message)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "prune, message",
    [
        ({"intermediate_size": 129}, "prune.intermediate_size = 129; the teacher has 128"),
        ({"kv_heads": 3}, "prune.kv_heads = 3; the teacher has 2"),
    ],
)
def test_widths_beyond_the_teachers_are_refused(teacher, text, tmp_path, prune, message):
    from convert.distill.recipe import recipe_from_dict

    r = recipe_from_dict({"kd": {"seq_len": 32, "batch_size": 2}, "prune": prune})
    with pytest.raises(ConvertError) as e:
        distill(teacher, tmp_path / "s", layers=3, texts=[text], steps=1, recipe=r)
    one_line(e, message, "choose 1..")
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_device_cuda_without_cuda_is_one_line(teacher, text, tmp_path):
    with pytest.raises(ConvertError) as e:
        distill(
            teacher, tmp_path / "s", layers=3, texts=[text], steps=1, recipe=fast(), device="cuda"
        )
    one_line(e, "--device cuda: no CUDA device", "--device cpu")
    assert not (tmp_path / "s").exists()


def test_the_summary_names_no_json_when_refused(teacher, text, tmp_path, run_cli):
    """A refused run prints no JSON summary on stdout (only the error on stderr)."""
    r = run_cli(
        "distill",
        str(teacher),
        "-o",
        str(tmp_path / "s"),
        "--layers",
        "3",
        "--text",
        str(text),
        "--tokens",
        "0",
        "--json",
    )
    assert r.returncode == 2
    assert r.stdout.strip() == "" and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.stdout)
