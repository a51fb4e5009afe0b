"""`plan` that a user can trust (issue 15): the device's objective among files of one model,
no choice across different models, predictions checked against measured runs, and no
calibration on a busy host.

The files of one model are SmolLM2 requantized by llama.cpp's own quantizer (F32, Q8_0, Q4_0);
the choice is checked against the rule computed here from the plans' own figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from edge_llm.devices import plan as planning
from edge_llm.devices import profile


@pytest.fixture(scope="module")
def smollm2_files(smollm2_path, tmp_path_factory):
    from convert.quant.requantize import requantize

    d = tmp_path_factory.mktemp("smollm2")
    out = {"Q4_1": smollm2_path}
    for t in ("F32", "Q8_0", "Q4_0"):
        out[t] = requantize(smollm2_path, d / f"smollm2-{t}.gguf", type=t).path
    return out


def test_among_files_of_one_model_plan_picks_the_most_capable_that_is_fast_enough(
    smollm2_files, run_cli
):
    device = profile.get("learning-machine-entry")
    plans = [planning.plan(p, device) for p in smollm2_files.values()]
    assert planning.same_model(plans)
    by = {t: p for t, p in zip(smollm2_files, plans)}
    assert by["F32"].fits and by["F32"].bits_per_weight > 30
    floor = device.min_decode_tokens_per_s
    assert by["F32"].decode_tokens_per_s < floor  # too slow to be chosen, though it fits
    fast = [p for p in plans if p.fits and p.decode_tokens_per_s >= floor]
    want = max(fast, key=lambda p: p.bits_per_weight)
    assert planning.best_fit(plans, floor) is want
    assert want is by["Q8_0"]

    args = ["plan", *map(str, smollm2_files.values()), "--device", "learning-machine-entry"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("chosen: smollm2-Q8_0.gguf")
    assert f"{want.decode_tokens_per_s:.1f} tok/s" in last and f">= {floor:g} tok/s" in last
    # a lower floor lets the F32 file win; an impossible one gives the fastest, said so
    low = json.loads(run_cli(*args, "--min-speed", "1", "--json").stdout)
    assert low["best"] == str(smollm2_files["F32"])
    high = run_cli(*args, "--min-speed", "100000")
    fastest = max(plans, key=lambda p: p.decode_tokens_per_s)
    assert f"chosen: {fastest.model.rsplit('/', 1)[-1]}, the fastest that fits" in high.stdout
    assert "none reaches 100000 tok/s" in high.stdout


def test_plan_does_not_choose_between_different_models(smollm2_path, gemma_path, run_cli):
    r = run_cli(
        "plan", str(smollm2_path), str(gemma_path), "--device", "learning-machine-entry", "--json"
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["same_model"] is False and d["best"] is None
    speeds = [p["decode_tokens_per_s"] for p in d["plans"] if p["fits"]]
    assert speeds == sorted(speeds, reverse=True)
    text = run_cli("plan", str(smollm2_path), str(gemma_path), "--device", "learning-machine-entry")
    assert text.stdout.startswith("#1 ") and "#2 " in text.stdout
    assert "different models" in text.stdout and "chosen" not in text.stdout


def test_a_prediction_far_from_a_measured_run_is_flagged(smollm2_path, run_cli, tmp_path):
    env = {"EDGE_LLM_HOME": str(tmp_path)}
    r = run_cli(
        "run",
        str(smollm2_path),
        "-p",
        "Once upon a time",
        "-n",
        "32",
        "--temp",
        "0",
        "--ignore-eos",
        "--stats",
        "--json",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    measured = json.loads(r.stdout)["timings"]["decode_tokens_per_s"]
    rows = [json.loads(x) for x in (tmp_path / "measured-runs.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["decode_tokens_per_s"] == round(measured, 2)

    plan = json.loads(run_cli("plan", str(smollm2_path), "--json", env=env).stdout)["plans"][0]
    assert plan["measured"]["decode_tokens_per_s"] == rows[0]["decode_tokens_per_s"]
    ratio = plan["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"]
    assert plan["disagrees"] == (not 0.5 <= ratio <= 2.0)

    # a later run measured 10x the prediction (a calibration taken on a busy host): flagged
    rows.append({**rows[0], "decode_tokens_per_s": plan["decode_tokens_per_s"] * 10})
    (tmp_path / "measured-runs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    text = run_cli("plan", str(smollm2_path), env=env)
    # (the host's bandwidth is measured again by each plan, so the prediction moves a little)
    off = re.search(r"PREDICTION OFF BY (\d+\.\d)x", text.stdout)
    assert off and float(off[1]) > 5 and "devices --calibrate" in text.stdout, text.stdout
    # a rewritten file does not inherit the records of the old one
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(smollm2_path.read_bytes())
    assert (
        json.loads(run_cli("plan", str(copy), "--json", env=env).stdout)["plans"][0]["measured"]
        is None
    )


def test_calibration_refuses_a_busy_host(tmp_path, monkeypatch):
    import edge_llm
    from edge_llm.devices import detect
    from edge_llm.devices.calibrate import calibrate
    from edge_llm.errors import ConfigError

    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path))
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        load = detect.host_load(1.0)
        assert load is not None and load > detect.BUSY_CPUS
        t0 = time.perf_counter()
        with pytest.raises(
            ConfigError, match=r"this host is busy: other processes kept .* --busy-ok"
        ):
            calibrate(edge_llm.load)
        assert time.perf_counter() - t0 < 10  # refused before measuring anything
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert not (tmp_path / "host-calibration.json").exists()
