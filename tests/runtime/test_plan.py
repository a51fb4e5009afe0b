"""Device profiles, the memory plan, auto-configuration and the budget holding for real."""

import json
import re
import subprocess
import sys
import textwrap

import pytest

import edge_llm
from edge_llm import gguf_info
from edge_llm.devices import plan as planning
from edge_llm.devices import profile
from edge_llm.errors import ConfigError
from edge_llm.shapes import ModelShape

BUILTIN = [
    "desktop-x86",
    "laptop-gpu-8gb",
    "apple-m2",
    "raspberry-pi-5",
    "phone-snapdragon-8-gen-3",
    "learning-machine-entry",
    "learning-machine-mid",
    "learning-machine-high",
]

TINY = dict(
    name="tiny",
    description="t",
    big_cores=2,
    little_cores=0,
    ram_gb=2.0,
    app_memory_gb=0.3,
    bandwidth_gbs=10.0,
    cpu_gflops=20.0,
    power_w=3.0,
)


def write_profile(tmp_path, **fields):
    data = {**TINY, **fields}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items() if v is not None)
    path = tmp_path / f"{data['name']}.toml"
    path.write_text(body + "\n")
    return path


def test_every_builtin_profile_loads_and_validates():
    names = [p.name for p in profile.all_profiles()]
    assert names == sorted(BUILTIN) or set(BUILTIN) <= set(names)
    lm = profile.get("learning-machine-entry")
    assert (lm.big_cores, lm.little_cores, lm.ram_gb) == (2, 6, 4.0)
    assert lm.threads == 2  # big cores only on big.LITTLE
    assert profile.get("learning-machine-mid").ram_gb == 6.0
    assert profile.get("learning-machine-high").ram_gb == 8.0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"ram_gb": None}, "missing field(s) ram_gb"),
        ({"bandwidth_gbs": -5.0}, "bandwidth_gbs must not be negative"),
        ({"cpu_gflops": 0.0}, "cpu_gflops must be greater than 0"),
        ({"big_cores": 1.5}, "big_cores must be a whole number"),
        ({"ram_gb": "lots"}, "ram_gb must be a number"),
        ({"app_memory_gb": 3.0}, "exceeds ram_gb"),
        ({"gpu_backend": "cuda"}, "needs gpu_memory_gb"),
        ({"gpu_backend": "tpu"}, "gpu_backend 'tpu' unknown"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_a_bad_profile_gets_a_clear_error(tmp_path, fields, message):
    path = write_profile(tmp_path, **fields)
    with pytest.raises(ConfigError, match=re.escape(message)):
        profile.load_file(path)


def test_bad_profile_from_the_cli(tmp_path, run_cli):
    path = write_profile(tmp_path, ram_gb=None)
    out = run_cli("plan", "--device", str(path))
    assert (
        out.returncode == 2
        and "missing field(s) ram_gb" in out.stderr
        and "Traceback" not in out.stderr
    )
    out = run_cli("run", "-p", "hi", "--device", "learning-machine-ultra")
    assert out.returncode == 2 and "unknown device 'learning-machine-ultra'" in out.stderr


def test_user_profiles_are_listed(tmp_path, monkeypatch, run_cli):
    (tmp_path / "devices").mkdir()
    write_profile(tmp_path / "devices", name="my-tablet")
    out = run_cli("devices", "--json", env={"EDGE_LLM_CONFIG": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    names = [p["name"] for p in json.loads(out.stdout)]
    assert names[0] == "host" and "my-tablet" in names and set(BUILTIN) <= set(names)


def test_shape_arithmetic_by_hand(smollm2_path):
    s = ModelShape.from_info(gguf_info.read(smollm2_path))
    assert (s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.head_dim_k, s.n_vocab) == (
        30,
        576,
        9,
        3,
        64,
        49152,
    )
    assert s.tied_output  # SmolLM2 has no output.weight: the head reuses token_embd
    # per layer: q 576x576, k 576x192, v 576x192, o 576x576, gate/up/down 576x1536 each
    per_layer = 576 * 576 * 2 + 576 * 192 * 2 + 576 * 1536 * 3
    assert s.matmul_params == 30 * per_layer + 49152 * 576
    assert s.kv_bytes(2048, "f16") == 30 * 2048 * 3 * (64 + 64) * 2  # llama.cpp logs 45.00 MiB
    assert s.flops_per_token(0) == 2 * s.matmul_params


@pytest.mark.parametrize(
    "model, n_ubatch",
    [("smollm2", 512), ("smollm2", 128), ("gemma3-270m", 512), ("gemma3-270m", 256)],
)
def test_compute_buffer_estimate_against_llama_cpp(model, n_ubatch):
    """The estimate is never below llama.cpp's own 'CPU compute buffer size' and at most 10% above."""
    from edge_llm.registry import resolve

    code = f"import edge_llm; edge_llm.load({model!r}, n_ctx=1024, n_batch={n_ubatch}, threads=1)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "EDGE_LLM_DEBUG": "1"},
        timeout=120,
    )
    found = re.findall(r"CPU compute buffer size = +([\d.]+) MiB", out.stderr)
    assert found, out.stderr[-2000:]
    llama_cpp_mib = float(found[-1])
    s = ModelShape.from_info(gguf_info.read(resolve(model)))
    est = s.compute_buffer_bytes(n_ubatch) / 2**20
    assert llama_cpp_mib <= est <= llama_cpp_mib * 1.10


def test_a_tiny_budget_gets_a_smaller_context_and_a_quantized_kv_cache(smollm2_path):
    roomy = planning.plan(smollm2_path, profile.from_dict({**TINY, "app_memory_gb": 1.0}, "t"))
    assert roomy.fits and (roomy.config.n_ctx, roomy.config.kv_type, roomy.config.n_batch) == (
        4096,
        "f16",
        512,
    )
    tight = planning.plan(smollm2_path, profile.from_dict({**TINY, "app_memory_gb": 0.19}, "t"))
    assert tight.fits and tight.memory.total <= 190_000_000
    assert tight.config.n_ctx < 4096 and tight.config.kv_type != "f16"
    assert "reduced from context 4096" in tight.note


def test_does_not_fit_names_the_nearest_configuration(gemma_path, run_cli, tmp_path):
    p = planning.plan(gemma_path, profile.get("learning-machine-entry"), budget=250_000_000)
    assert not p.fits
    with pytest.raises(
        ConfigError,
        match=r"does not fit .*even at context 256, q4_0 KV cache and batch 64 it needs",
    ):
        planning.require_fit(p)
    path = write_profile(tmp_path, name="small", app_memory_gb=0.25)
    out = run_cli("plan", "gemma3-270m", "--device", str(path))
    assert (
        out.returncode == 2 and "does not fit small" in out.stderr and "Traceback" not in out.stderr
    )
    assert "DOES NOT FIT" in out.stdout


def test_plan_cli_plans_each_model_and_chooses_none_across_models(
    smollm2_path, gemma_path, run_cli, tmp_path
):
    path = write_profile(tmp_path, name="small", app_memory_gb=0.5)
    out = run_cli("plan", str(smollm2_path), str(gemma_path), "--device", str(path), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    fits = {p["model"]: p["fits"] for p in d["plans"]}
    assert fits == {str(smollm2_path): True, str(gemma_path): True}
    # different models: ranked, not chosen between (tests/runtime/test_plan_choice.py: files of one model)
    assert d["best"] is None and d["same_model"] is False
    text = run_cli("plan", "--device", "learning-machine-entry")
    assert text.returncode == 0 and "fits" in text.stdout and "predicted: decode" in text.stdout


def test_load_on_a_profile_applies_its_configuration(smollm2_path):
    # In a fresh process: the plan counts what the process already holds against the budget,
    # and this test process may hold torch and other models by now.
    code = textwrap.dedent(f"""
        import edge_llm
        with edge_llm.load({str(smollm2_path)!r}, device="learning-machine-entry") as m:
            p = m.device.plan
            assert p.fits and m.n_ctx == p.config.n_ctx and m.threads == min(2, p.config.threads)
            print(repr(m.generate("The capital of France is", max_tokens=3, temperature=0).text))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == repr(" Paris.\n")


def test_load_refuses_what_does_not_fit(gemma_path, tmp_path):
    path = write_profile(tmp_path, app_memory_gb=0.2)
    with pytest.raises(ConfigError, match="does not fit"):
        edge_llm.load(gemma_path, device=str(path))


@pytest.mark.parametrize("budget_gb", [0.3, 0.22])
def test_peak_rss_stays_within_the_budget(smollm2_path, tmp_path, budget_gb):
    """In a fresh process: load with a profile's budget, generate, read the peak RSS."""
    from edge_llm.llama.binding import registered_backends

    if budget_gb < 0.3 and set(registered_backends()) - {"CPU"}:
        # a GPU build's process holds the GPU stack too (the Vulkan loader and every installed
        # driver: about 60 MB here), so SmolLM2 no longer fits 220 MB: plan says so (and is
        # right); the 300 MB case still runs
        pytest.skip("the 220 MB budget is sized for the CPU-only build")
    path = write_profile(tmp_path, app_memory_gb=budget_gb)
    code = textwrap.dedent(f"""
        import edge_llm
        from edge_llm.devices.plan import process_rss
        m = edge_llm.load({str(smollm2_path)!r}, device={str(path)!r})
        r = m.generate("Once upon a time " * 20, max_tokens=64, temperature=0, ignore_eos=True)
        print(process_rss("VmHWM"), m.device.plan.memory.total, m.n_ctx, m.device.kv_type)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    peak, planned, n_ctx, kv = out.stdout.split()
    assert int(peak) <= budget_gb * 1e9, f"peak RSS {int(peak) / 1e6:.0f} MB over {budget_gb} GB"
    assert int(planned) <= budget_gb * 1e9


def test_calibration_fit_recovers_known_costs():
    from edge_llm.devices.calibrate import _fit

    truth = {"Q4_0": 0.11, "Q8_0": 0.07, "F32": 0.002}
    rows = []
    for n_layer, amounts in [
        (30, {"Q4_0": 80, "F32": 3}),
        (30, {"Q8_0": 140, "F32": 3}),
        (18, {"Q8_0": 280, "F32": 1}),
        (18, {"Q4_0": 150, "F32": 1}),
        (30, {"Q4_0": 40, "Q8_0": 60, "F32": 2}),
    ]:
        ms = 0.08 * n_layer + sum(truth[t] * a for t, a in amounts.items())
        rows.append((n_layer, amounts, ms))
    fit = _fit(rows)
    assert fit["layer_ms"] == pytest.approx(0.08, rel=1e-6)
    for t, cost in truth.items():
        assert fit["per_type"][t] == pytest.approx(cost, rel=1e-6)


def test_calibrated_prediction_prices_each_weight_type(smollm2_path):
    # 0.1 ms per MB of every tensor type, nothing per layer, a bandwidth so high the KV cache is
    # free: decode time is 0.1 ms x the file's tensor megabytes (SmolLM2 ties its output head).
    info = gguf_info.read(smollm2_path)
    types = {t.type for t in info.tensors}
    stage = {"layer_ms": 0.0, "per_type": dict.fromkeys(types, 0.1)}
    host = profile.DeviceProfile(
        **{**TINY, "bandwidth_gbs": 1e9, "core_bandwidth_gbs": 1e9},
        calibration={"2": {"decode": stage, "prefill": stage}},
    )
    cfg = planning.Config(threads=2, n_ctx=1024, kv_type="f16", n_batch=512, n_gpu_layers=0)
    decode, prefill = planning.predict(info, cfg, host)
    total_mb = sum(t.n_bytes for t in info.tensors) / 1e6
    assert 1000 / decode == pytest.approx(0.1 * total_mb, rel=1e-3)
    # one thread: the costs measured at two threads, scaled up
    decode1, _ = planning.predict(info, planning.Config(**{**cfg.__dict__, "threads": 1}), host)
    assert decode1 == pytest.approx(decode / 2, rel=1e-3)
