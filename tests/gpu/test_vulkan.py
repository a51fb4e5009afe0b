"""The GPU path on a real Vulkan device: lavapipe (Mesa's conformant software Vulkan) when the host
has no GPU. Run by `make vulkan-check` (the Vulkan build, GGML_VK_VISIBLE_DEVICES=0); skipped
without a Vulkan device, and left out of `make test` (marker ``vulkan``: minutes on lavapipe).

The judge of every figure is llama.cpp's own CPU backend on the same file, loaded with no other
device (so not even its prompt products go to the GPU), and for the device list Vulkan's own
``vulkaninfo``. Stated tolerances (docs/gpu.md): top-1 agreement >= 95% and mean KL <= 0.02 nats
on the probe text (the self-check's thresholds); greedy decoding equal to the CPU's up to the
first step where the CPU's own top two logits are closer than 1.0 (a near-tie that numerics
differing in the last bits may break either way); plan's device memory within 10% of what the
backend allocated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openai
import pytest

import edge_llm
from edge_llm.devices import selfcheck
from edge_llm.llama import binding
from scripts import vulkan_check as vc

pytestmark = pytest.mark.vulkan


def _vulkan() -> list[binding.Device]:
    return [d for d in binding.gpu_devices() if d.backend == "Vulkan"]


if not _vulkan():
    pytest.skip(
        "no Vulkan device: make vulkan-check (make install VULKAN=1, GGML_VK_VISIBLE_DEVICES=0)",
        allow_module_level=True,
    )

VK = _vulkan()[0]
_COMPARED: dict = {}


def _layers(path, depth: str) -> int:
    from edge_llm.gguf_info import read

    return -1 if depth == "all" else int(read(path).arch_value("block_count")) // 2 + 1


@pytest.mark.parametrize("depth", ["all", "half"])
@pytest.mark.parametrize("model", ["smollm2_path", "gemma_path"])
def test_offloaded_model_agrees_with_cpu(model, depth, request):
    path = request.getfixturevalue(model)
    layers = _layers(path, depth)
    row = _COMPARED.setdefault((model, depth), vc.compare(path, layers, threads=2))
    assert row["top1_agreement"] >= selfcheck.TOP1_MIN, row
    assert row["mean_kl"] <= selfcheck.KL_MAX, row
    for g in row["greedy"]:
        assert g["agreeing_tokens"] == g["of"] or g["cpu_gap_at_difference"] < vc.NEAR_TIE, g


@pytest.mark.parametrize("depth", ["all", "half"])
@pytest.mark.parametrize("model", ["smollm2_path", "gemma_path"])
def test_plan_predicts_device_memory(model, depth, request):
    path = request.getfixturevalue(model)
    m = vc.memory(path, _layers(path, depth), threads=2)
    assert m["allocated"] > 0
    assert abs(m["ratio"] - 1) <= vc.MEMORY_TOLERANCE, m


@pytest.mark.parametrize(("model", "gpu_gb"), [("smollm2_path", 0.2), ("gemma_path", 0.1)])
def test_plan_chooses_layers_that_fit_the_gpu(model, gpu_gb, request):
    """A GPU too small for the whole model: plan offloads part of it, and what llama.cpp then
    allocates on the device fits the share of GPU memory plan fills."""
    import dataclasses

    from edge_llm.devices import plan as planning
    from edge_llm.devices.profile import host_profile

    path = request.getfixturevalue(model)
    profile = dataclasses.replace(host_profile(), gpu_memory_gb=gpu_gb)
    p = planning.plan(path, profile, n_ctx=512, n_batch=512)
    layers = p.config.n_gpu_layers
    assert layers > 0
    m = edge_llm.load(path, device="gpu", gpu_layers=layers, trust_backend=True, n_ctx=512)
    try:
        got = m.placement
    finally:
        m.close()
    assert got.offloaded == layers and got.offloaded < got.n_layer + 1  # partial
    assert got.device_bytes() <= gpu_gb * 1e9 * planning.GPU_SHARE


def test_placement_says_which_layers_run_where(smollm2_path, run_cli):
    env = {"GGML_VK_VISIBLE_DEVICES": "0"}
    r = run_cli(
        "info", "--system", str(smollm2_path), "--device", "gpu", "--gpu-layers", "16",
        "--trust-backend", "--json", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)["placement"]
    assert (p["offloaded"], p["device"], p["first_offloaded_layer"]) == (16, VK.name, 15)
    assert p["buffers"][VK.name]["model"] > 0 and p["buffers"]["CPU_Mapped"]["model"] > 0


def test_devices_lists_the_vulkan_device_with_its_memory(run_cli):
    r = run_cli("devices", env={"GGML_VK_VISIBLE_DEVICES": "0"})
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(f"device {VK.name}"))
    assert VK.description in line and re.search(r"memory \d+\.\d GB", line)
    if shutil.which("vulkaninfo"):  # Vulkan's own list names the same device
        names = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True).stdout
        assert f"deviceName         = {VK.description}" in names


def test_selfcheck_on_lavapipe_falls_back_and_is_cached(
    smollm2_path, tmp_path, monkeypatch, capsys
):
    """lavapipe agrees with the CPU but is far slower: the run uses the CPU and says so once per
    run; the second run reuses the verdict (no probe: well under the probe's own time)."""
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path))
    t0 = time.perf_counter()
    m = edge_llm.load(smollm2_path, n_ctx=512)
    first = time.perf_counter() - t0
    m.close()
    v = m.backend_verdict
    assert not v.ok and "slower" in v.reason and v.top1_agreement >= selfcheck.TOP1_MIN
    assert m.device.n_gpu_layers == 0 and m.placement.offloaded == 0
    t0 = time.perf_counter()
    m = edge_llm.load(smollm2_path, n_ctx=512)
    again = time.perf_counter() - t0
    m.close()
    assert m.backend_verdict.cached and again < v.check_seconds / 2 < first
    notices = [x for x in capsys.readouterr().err.splitlines() if x.startswith("edge-llm: not")]
    assert len(notices) == 2 and VK.name in notices[0]


def test_selfcheck_rejects_a_corrupted_backend(smollm2_path, tmp_path, monkeypatch):
    """The offloaded output made wrong (noise on the device's logits): the check says it
    disagrees, whatever its speed."""
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path))
    real = selfcheck._run

    def corrupted(path, n_gpu_layers, threads):
        r = real(path, n_gpu_layers, threads)
        if n_gpu_layers == 0:
            return r
        noise = np.random.default_rng(0).normal(scale=2.0, size=r.logits.shape)
        return selfcheck.Run(r.logits + noise.astype(np.float32), 0.0, [1e-6])

    monkeypatch.setattr(selfcheck, "_run", corrupted)
    v = selfcheck.check(smollm2_path, VK, -1, threads=2)
    assert not v.ok and "disagrees" in v.reason and v.mean_kl > selfcheck.KL_MAX


def test_driver_identity_follows_the_icd_files(tmp_path, monkeypatch):
    """A different Vulkan driver (another ICD manifest and library) is another identity, and an
    upgraded library file changes it again."""
    system = selfcheck.driver_identity(VK)
    manifests = sorted(p for d in selfcheck.VULKAN_ICD_DIRS for p in Path(d).glob("lvp_icd*.json"))
    if not manifests:
        pytest.skip("no lavapipe ICD manifest in the standard folders")
    icd = json.loads(manifests[0].read_text())
    lib = tmp_path / "libvulkan_lvp_copy.so"
    shutil.copyfile(icd["ICD"]["library_path"], lib)
    icd["ICD"]["library_path"] = str(lib)
    manifest = tmp_path / "lvp_copy.json"
    manifest.write_text(json.dumps(icd))
    monkeypatch.setenv("VK_DRIVER_FILES", str(manifest))
    copied = selfcheck.driver_identity(VK)
    assert copied != system
    with lib.open("ab") as f:
        f.write(b"\0")
    assert selfcheck.driver_identity(VK) not in (system, copied)


def test_server_runs_on_the_vulkan_device(smollm2_path, tmp_path):
    """`edge-llm serve --device gpu` on lavapipe: says where its layers run, answers through the
    OpenAI client with the offloaded model's greedy text."""
    prompt, n = "The capital of France is", 8
    m = edge_llm.load(smollm2_path, device="gpu", trust_backend=True, n_ctx=512)
    try:
        want = m.generate(prompt, max_tokens=n, temperature=0).text
    finally:
        m.close()
    log = tmp_path / "serve.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_llm", "serve", str(smollm2_path), "--port", "0",
             "--ctx", "512", "--device", "gpu", "--trust-backend"],
            stdout=subprocess.DEVNULL, stderr=f,
            env={**os.environ, "GGML_VK_VISIBLE_DEVICES": "0"},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (url := re.search(r"at (http://\S+/v1)", log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"layers 0-29 and the output on {VK.name}" in log.read_text()
        client = openai.OpenAI(base_url=url.group(1), api_key="none", max_retries=0, timeout=120)
        served = client.models.list().data[0].id
        r = client.completions.create(model=served, prompt=prompt, max_tokens=n, temperature=0)
        assert r.choices[0].text == want
    finally:
        proc.terminate()
        proc.wait(timeout=30)
