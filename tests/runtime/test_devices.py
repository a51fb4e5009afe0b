"""Device resolution and the thread count that follows the host's load."""

import subprocess
import sys
import time

import pytest

import edge_llm
from edge_llm.devices import CpuLoad, available_cpus, resolve_device, threads_for
from edge_llm.errors import ConfigError


@pytest.mark.parametrize(
    "n_cpus, busy, expected",
    [
        (2, 0.0, 2),
        (2, 0.1, 2),
        (2, 0.5, 1),
        (2, 1.0, 1),
        (2, 2.0, 1),
        (2, None, 2),
        (1, 0.0, 1),
        (1, None, 1),
        (4, 0.0, 4),
        (4, 1.0, 3),
        (4, 1.3, 2),
        (4, None, 3),
        (16, 0.0, 8),
        (16, None, 8),
        (16, 12.0, 4),
    ],
)
def test_threads_for_load(n_cpus, busy, expected):
    assert threads_for(n_cpus, busy) == expected


def _stat(busy_ticks: int, idle_ticks: int) -> str:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    return f"cpu  {busy_ticks} 0 0 {idle_ticks} 0 0 0 0 0 0\ncpu0 ...\n"


def test_cpu_load_counts_other_processes_busy_time(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text(_stat(1000, 1000))
    clock = iter([100.0, 101.0, 101.0, 102.0, 102.0, 102.05])  # two reads per reading
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    load = CpuLoad(str(stat))
    hz = load._hz
    stat.write_text(_stat(1000 + hz, 1000 + hz))  # one CPU-second busy in one second
    assert load.others_busy() == pytest.approx(1.0, abs=0.05)  # (our own time is ~0)
    stat.write_text(_stat(1000 + hz, 1000 + 3 * hz))  # then idle
    assert load.others_busy() == pytest.approx(0.0, abs=0.05)
    assert load.others_busy(wait=False) is None  # 0.05 s is too short a window: no reading


def test_cpu_load_unreadable_is_unknown(tmp_path):
    assert CpuLoad(str(tmp_path / "missing")).others_busy() is None


def test_explicit_threads_are_used_as_given(smollm2_path):
    d = resolve_device("cpu", threads=3)
    assert (d.threads, d.adaptive_threads, d.n_gpu_layers) == (3, False, 0)
    with edge_llm.load(smollm2_path, threads=1, n_ctx=256) as m:
        assert m.threads == 1


def test_unknown_device_and_missing_gpu():
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("npu")
    from edge_llm.llama.binding import gpu_devices, registered_backends

    if not gpu_devices():  # a CPU build, or a GPU backend that found no device: said which
        gpu_build = set(registered_backends()) - {"CPU", "BLAS", "RPC"}
        said = "found no GPU device" if gpu_build else "no GPU backend"
        with pytest.raises(ConfigError, match=said):
            resolve_device("gpu")


@pytest.mark.skipif(available_cpus() < 2, reason="needs two CPUs to load one")
def test_a_busy_host_gets_fewer_threads(smollm2_path):
    """With every CPU but one kept busy by other processes, the runtime picks one thread."""
    spin = "import time\nend = time.time() + 60\nwhile time.time() < end: pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(available_cpus() - 1)]
    try:
        time.sleep(0.3)
        with edge_llm.load(smollm2_path, n_ctx=256) as m:
            assert m.threads == 1
            r = m.generate("The capital of France is", max_tokens=4, temperature=0)
            assert r.text.startswith(" Paris")
            assert m.threads == 1
    finally:
        for h in hogs:
            h.kill()
            h.wait()
