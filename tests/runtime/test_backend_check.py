"""The GPU path without a GPU: the backend self-check, its cache, placement and plan's device memory.

Judges: scipy for the KL divergence, llama.cpp's own log format strings for placement, gguf-py for
the tensor bytes a device holds, llama-cpp-python's greedy decode for the text a fallen-back run
gives, and a stand-in GPU device whose probe is made wrong or slow on purpose (the real device
is tested on lavapipe by `make vulkan-check`: tests/gpu/test_vulkan.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from gguf import GGUFReader
from scipy.special import softmax
from scipy.stats import entropy

import edge_llm
from edge_llm.devices import plan as planning
from edge_llm.devices import selfcheck
from edge_llm.errors import ConfigError
from edge_llm.gguf_info import read as read_info
from edge_llm.llama import binding, placement
from tests.fixtures.judges import llama_cpp_greedy

FAKE_GPU = binding.Device("Vulkan0", "Stand-in GPU", "gpu", "Vulkan", 8_000_000_000, 8_000_000_000)


# --- the comparison ---------------------------------------------------------------------------------


def test_agreement_matches_scipy():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(7, 50)).astype(np.float32)
    other = ref + rng.normal(scale=0.5, size=ref.shape).astype(np.float32)
    top1, mean_kl, max_kl = selfcheck.agreement(ref, other)
    kls = [
        entropy(softmax(r.astype(np.float64)), softmax(o.astype(np.float64)))
        for r, o in zip(ref, other)
    ]
    assert mean_kl == pytest.approx(np.mean(kls), rel=1e-6)
    assert max_kl == pytest.approx(np.max(kls), rel=1e-6)
    assert top1 == np.mean(ref.argmax(1) == other.argmax(1))
    same = selfcheck.agreement(ref, ref.copy())
    assert same[0] == 1.0 and abs(same[1]) < 1e-12


def _run(seconds: float) -> selfcheck.Run:
    return selfcheck.Run(np.zeros((1, 2), np.float32), seconds, [0.0])


@pytest.mark.parametrize(
    ("top1", "kl", "cpu_s", "dev_s", "words"),
    [
        (1.0, 0.001, 1.0, 0.5, None),  # right and faster: used
        (0.94, 0.001, 1.0, 0.5, "disagrees"),  # one top token in 17 changed
        (1.0, 0.03, 1.0, 0.5, "disagrees"),  # same top tokens, distributions apart
        (1.0, 0.001, 1.0, 1.5, "slower"),
    ],
)
def test_judge_thresholds(top1, kl, cpu_s, dev_s, words):
    reason = selfcheck.judge(top1, kl, _run(cpu_s), _run(dev_s))
    assert (reason == "") if words is None else (words in reason)


# --- placement, read from llama.cpp's own log lines ------------------------------------------------------


def _log(fmt: str, *args) -> str:
    return fmt % args  # llama.cpp's printf formats, copied from its source (llama-model.cpp, ...)


def test_placement_parse_partial_offload():
    lines = [
        _log("%s: offloading output layer to GPU", "load_tensors"),
        _log("%s: offloading %d repeating layers to GPU", "load_tensors", 15),
        _log("%s: offloaded %d/%d layers to GPU", "load_tensors", 16, 31),
        _log("%s: %12s model buffer size = %8.2f MiB", "load_tensors", "CPU_Mapped", 92.10),
        _log("%s: %12s model buffer size = %8.2f MiB", "load_tensors", "Vulkan0", 52.25),
        _log("%s: %10s KV buffer size = %8.2f MiB", "llama_kv_cache", "Vulkan0", 45.0),
        _log("%s: %10s KV buffer size = %8.2f MiB", "llama_kv_cache", "CPU", 45.0),
        _log("%s: %10s compute buffer size = %8.2f MiB", "llama_context", "Vulkan0", 98.5),
        _log("%s: %10s compute buffer size = %8.2f MiB", "llama_context", "Vulkan_Host", 5.0),
    ]
    p = placement.parse(lines, n_layer=30, gpu_names=["Vulkan0"])
    assert (p.offloaded, p.device, p.first_offloaded) == (16, "Vulkan0", 15)
    assert p.device_bytes() == round(52.25 * 2**20) + round(45.0 * 2**20) + round(98.5 * 2**20)
    assert p.describe() == (
        "the input and layers 0-14 on the CPU; layers 15-29 and the output on Vulkan0"
    )
    only_output = placement.parse(
        lines[:0] + [lines[2].replace("16/31", "1/31"), lines[4]], 30, ["Vulkan0"]
    )
    assert only_output.describe() == "the input and layers 0-29 on the CPU; the output on Vulkan0"
    assert (
        placement.parse(lines, 30, gpu_names=[]).describe()
        == "all 30 layers and the output on the CPU"
    )


def test_cpu_placement_of_a_real_model(smollm2_path):
    """llama.cpp's own report of the CPU model buffer: the file's tensor bytes (gguf-py's count)."""
    m = edge_llm.load(smollm2_path, device="cpu", n_ctx=512)
    try:
        p = m.placement
    finally:
        m.close()
    assert p.offloaded == 0 and p.device is None
    tensor_bytes = sum(int(t.n_bytes) for t in GGUFReader(smollm2_path).tensors)
    assert p.buffers["CPU_Mapped"]["model"] == pytest.approx(tensor_bytes, rel=0.002)


# --- plan: what the device holds -----------------------------------------------------------------------


def test_device_weights_follow_llama_cpp_layer_order(smollm2_path):
    """Offloading N layers puts the output layer (a tied head: a copy of token_embd) and the last
    N-1 repeating layers on the device (llama-model.cpp), counted here with gguf-py."""
    info = read_info(smollm2_path)
    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(smollm2_path).tensors}
    head = (
        tensors.get("output.weight", tensors["token_embd.weight"]) + tensors["output_norm.weight"]
    )

    def blocks(first: int) -> int:
        return sum(
            v for k, v in tensors.items() if k.startswith("blk.") and int(k.split(".")[1]) >= first
        )

    assert planning.split_weights(info, 30, 0).device == 0
    assert planning.split_weights(info, 30, -1, max_tensor=1).device == 0  # nothing fits
    assert planning.split_weights(info, 30, 1).device == head
    assert planning.split_weights(info, 30, 5).device == head + blocks(26)
    assert planning.split_weights(info, 30, -1).device == head + blocks(0)
    assert planning.split_weights(info, 30, 99).device == head + blocks(0)


# --- the self-check through Model, with a stand-in GPU ---------------------------------------------------


@pytest.fixture
def stand_in_gpu(monkeypatch, tmp_path):
    """A GPU device llama.cpp does not have (its 'offloaded' runs are the CPU's), with its own
    Vulkan driver manifest and library, a fresh verdict cache, and a record of probe runs."""
    monkeypatch.setenv("EDGE_LLM_HOME", str(tmp_path / "home"))
    lib = tmp_path / "libvulkan_standin.so"
    lib.write_bytes(b"driver v1")
    manifest = tmp_path / "standin_icd.json"
    manifest.write_text(json.dumps({"ICD": {"library_path": str(lib), "api_version": "1.3.0"}}))
    monkeypatch.setenv("VK_DRIVER_FILES", str(manifest))
    monkeypatch.setattr(binding, "gpu_devices", lambda: [FAKE_GPU])
    calls: list[int] = []
    real = selfcheck._run

    def run(path, n_gpu_layers, threads, *, corrupt=0.0, slow=1.0):
        calls.append(n_gpu_layers)
        r = real(path, n_gpu_layers, threads)
        if n_gpu_layers == 0:
            return r
        noise = np.random.default_rng(1).normal(scale=corrupt, size=r.logits.shape)
        # the stand-in is as fast as the CPU unless made slow: a little faster, to be used
        return selfcheck.Run(
            r.logits + noise.astype(np.float32),
            r.prefill_s * slow * 0.5,
            [s * slow * 0.5 for s in r.decode_s],
        )

    state = {"corrupt": 0.0, "slow": 1.0}
    monkeypatch.setattr(
        selfcheck,
        "_run",
        lambda p, n, t: run(p, n, t, corrupt=state["corrupt"], slow=state["slow"]),
    )
    return {"calls": calls, "state": state, "lib": lib}


def test_wrong_backend_falls_back_to_cpu(stand_in_gpu, smollm2_path, llama_judge, capsys):
    stand_in_gpu["state"]["corrupt"] = 3.0  # the 'offloaded' output, corrupted
    m = edge_llm.load(smollm2_path, n_ctx=512)
    try:
        assert m.device.n_gpu_layers == 0
        v = m.backend_verdict
        assert not v.ok and "disagrees" in v.reason and v.top1_agreement < selfcheck.TOP1_MIN
        text = m.generate("The capital of France is", max_tokens=12, temperature=0).text
    finally:
        m.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-llm: not running") and "on the CPU" in err[0]
    assert text == llama_cpp_greedy(llama_judge(smollm2_path), "The capital of France is", 12).text


def test_slow_backend_falls_back_and_verdict_is_cached(stand_in_gpu, smollm2_path, capsys):
    stand_in_gpu["state"]["slow"] = 10.0
    m = edge_llm.load(smollm2_path, n_ctx=512)
    m.close()
    assert m.device.n_gpu_layers == 0 and "slower" in m.backend_verdict.reason
    assert stand_in_gpu["calls"] == [0, -1]  # one probe: the CPU, then the device
    m = edge_llm.load(smollm2_path, n_ctx=512)  # the verdict is reused: no probe
    m.close()
    assert stand_in_gpu["calls"] == [0, -1] and m.backend_verdict.cached
    assert m.device.n_gpu_layers == 0
    assert len([x for x in capsys.readouterr().err.splitlines() if "not running" in x]) == 2


def test_good_backend_is_used_and_trust_skips_the_check(stand_in_gpu, smollm2_path, capsys):
    m = edge_llm.load(smollm2_path, n_ctx=512)
    m.close()
    v = m.backend_verdict
    assert v.ok and v.top1_agreement == 1.0 and m.device.n_gpu_layers == -1
    assert capsys.readouterr().err == ""
    m = edge_llm.load(smollm2_path, n_ctx=512, trust_backend=True, gpu_layers=4)
    m.close()
    assert m.backend_verdict is None and m.device.n_gpu_layers == 4
    assert stand_in_gpu["calls"] == [0, -1]


def test_cache_invalidated_by_model_file_and_driver(
    stand_in_gpu, smollm2_path, gemma_path, tmp_path
):
    model = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, model)
    calls = stand_in_gpu["calls"]
    threads = 1
    first = selfcheck.check(model, FAKE_GPU, -1, threads)
    assert not first.cached and calls == [0, -1]
    os.utime(model, (time.time() + 5, time.time() + 5))  # touched, same bytes: same verdict
    assert selfcheck.check(model, FAKE_GPU, -1, threads).cached and len(calls) == 2
    shutil.copyfile(gemma_path, model)  # another file at the same path: probed again
    again = selfcheck.check(model, FAKE_GPU, -1, threads)
    assert not again.cached and len(calls) == 4 and again.model_sha256 != first.model_sha256
    assert selfcheck.check(model, FAKE_GPU, -1, threads).cached and len(calls) == 4
    stand_in_gpu["lib"].write_bytes(b"driver v2, a little longer")  # the driver upgraded
    after = selfcheck.check(model, FAKE_GPU, -1, threads)
    assert not after.cached and len(calls) == 6 and after.driver != again.driver
    assert selfcheck.check(model, FAKE_GPU, 8, threads).cached is False  # another depth


# --- no GPU: as before, and said -------------------------------------------------------------------------


def test_without_gpu_device_gpu_is_refused_in_one_line(run_cli):
    """No GPU device (a CPU build; or a Vulkan build whose only device is a CPU-type one, which
    llama.cpp leaves out unless GGML_VK_VISIBLE_DEVICES names it): said in one line, exit 2."""
    hidden = {"GGML_VK_VISIBLE_DEVICES": ""}
    for args in (
        ["run", "-p", "hi", "--device", "gpu"],
        ["run", "-p", "hi", "--gpu-layers", "4"],
        ["devices", "--check", "smollm2-135m-instruct"],
    ):
        r = run_cli(*args, env=hidden)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "no GPU backend" in lines[0] or "found no GPU device" in lines[0]
    r = run_cli("devices", env=hidden)
    assert r.returncode == 0
    assert "no GPU backend" in r.stdout or "found no GPU device" in r.stdout
    with pytest.raises(ConfigError, match="drop it"):
        edge_llm.load(None, device="cpu", gpu_layers=3)
