"""scripts/published_figures.py: plan's predictions against published figures (no GGUF needed)."""

import subprocess
import sys
from pathlib import Path

import pytest

from edge_llm.devices import profile
from edge_llm.shapes import ModelShape
from scripts import published_figures as pf

REPO = Path(__file__).resolve().parents[2]


def test_every_published_figure_parses_and_names_a_profile_a_model_and_a_source():
    data = pf.load_data()
    assert len(data["figures"]) == 6
    for fig in data["figures"]:
        assert pf.published_value(fig["tokens_per_s"]) > 0
        assert profile.get(fig["profile"]).arch == "arm64"
        assert fig["model"] in data["models"]
        assert fig.get("recipe", fig["quant"]) in pf.QUANT_RECIPES
        assert fig["source"].strip()
    assert pf.published_value([4.5, 4.9]) == pytest.approx(4.7)


@pytest.mark.parametrize("bad", [0, -1.0, "fast", True, [4.9, 4.5], [1.0], [0, 2.0]])
def test_a_bad_published_figure_is_refused(bad):
    with pytest.raises(ValueError):
        pf.published_value(bad)


def test_the_synthetic_tensor_table_has_the_published_parameter_counts():
    models = pf.load_data()["models"]
    # Qwen3-0.6B: 0.44B non-embedding + 0.16B embedding (its model card: 0.6B, 0.44B non-embedding)
    info = pf.synthetic_info(models["qwen3-0.6b"], "Q4_0")
    emb = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert (info.n_params - emb.n_elements) / 1e9 == pytest.approx(0.44, abs=0.01)
    assert emb.type == "Q6_K"  # the tied head, as llama.cpp's Q4_0 recipe makes it
    shape = ModelShape.from_info(info)
    assert (shape.n_layer, shape.n_head_kv, shape.head_dim_k, shape.n_vocab) == (28, 8, 128, 151936)
    assert shape.tied_output
    # Llama-3.2-3B Q4_K_M: about 2.0 GB, as its published GGUFs are
    info = pf.synthetic_info(models["llama-3.2-3b"], "Q4_K_M")
    assert 1.9e9 < info.tensor_bytes < 2.1e9
    types = {t.type for t in info.tensors}
    assert {"Q4_K", "Q6_K", "F32"} == types


def test_the_table_computes_a_prediction_and_a_ratio_for_every_row():
    table = pf.rows()
    assert len(table) == 6
    # the published figures, restated here from their sources (a range counts as its middle)
    published = {
        ("raspberry-pi-5", "qwen3-0.6b"): 27.4,
        ("raspberry-pi-5", "qwen3-1.7b"): 11.1,
        ("rockchip-rk3566", "qwen3-0.6b"): 9.8,
        ("raspberry-pi-5", "llama-3.2-3b"): (4.5 + 4.9) / 2,
        ("phone-snapdragon-8-gen-3", "llama-3.2-1b"): 50.2,
        ("learning-machine-high", "minicpm-2b"): 3.5,
    }
    assert {(r["profile"], r["model"]) for r in table} == set(published)
    for r in table:
        want = published[r["profile"], r["model"]]
        assert r["published_value"] == pytest.approx(want)
        assert r["predicted"] > 0 and r["ratio"] == pytest.approx(r["predicted"] / want)
        # tokens/s x MB/token = the bandwidth the published speed needs
        assert r["bandwidth_needed_gbs"] == pytest.approx(want * r["mb_per_token"] / 1000)
    text = pf.markdown(table)
    assert text.count("\n") == len(table) + 1 and "Rockchip RK3566 (`rockchip-rk3566`)" in text


def test_the_script_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "scripts.published_figures"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert (
        "| Raspberry Pi 5 (`raspberry-pi-5`) | qwen3-0.6b Q4_0 | llama.cpp fork | 27.4 |"
        in out.stdout
    )
    # each row's ratio column is its predicted column over the published one, up to the rounding
    # of the printed columns (ratio to 2 decimals, predicted to 1)
    rows = [
        line.split(" | ")
        for line in out.stdout.splitlines()
        if line.startswith("| ")
        and line.split(" | ")[3].replace(".", "").replace("-", "").isdigit()
    ]
    assert len(rows) == 6
    for cells in rows:
        published = [float(x) for x in cells[3].split("-")]
        published = sum(published) / len(published)
        slack = 0.005 + 0.05 / published
        assert float(cells[5]) == pytest.approx(float(cells[4]) / published, abs=slack)


def test_a_broken_data_file_is_one_line(tmp_path):
    bad = tmp_path / "figures.toml"
    bad.write_text("[[figures]]\nprofile = 'raspberry-pi-5'\n")
    out = subprocess.run(
        [sys.executable, "-m", "scripts.published_figures", "--data", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    )
