"""Compute accounting: a tiny model's counts equal a hand count; energy is measured or unavailable."""

import mmap
from pathlib import Path

import gguf
import numpy as np
import pytest

import edge_llm
from bench import compute
from edge_llm import gguf_info


def write_tiny(path, tied: bool):
    """A 2-layer llama GGUF: embedding 16, 4 heads of 4, 2 KV heads, feed-forward 40, vocab 32."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_embedding_length(16)
    w.add_feed_forward_length(40)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(64)
    z = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731  (rows = outputs)
    w.add_tensor("token_embd.weight", z(32, 16))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_norm.weight", z(16))
        w.add_tensor(f"blk.{i}.attn_q.weight", z(16, 16))
        w.add_tensor(f"blk.{i}.attn_k.weight", z(8, 16))
        w.add_tensor(f"blk.{i}.attn_v.weight", z(8, 16))
        w.add_tensor(f"blk.{i}.attn_output.weight", z(16, 16))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", z(16))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", z(40, 16))
        w.add_tensor(f"blk.{i}.ffn_up.weight", z(40, 16))
        w.add_tensor(f"blk.{i}.ffn_down.weight", z(16, 40))
    w.add_tensor("output_norm.weight", z(16))
    if not tied:
        w.add_tensor("output.weight", z(32, 16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_model_counts_equal_a_hand_count(tmp_path, tied):
    info = gguf_info.read(write_tiny(tmp_path / "tiny.gguf", tied))
    got = compute.accounting(info, context=10)
    # By hand. Per layer: q 16x16 + k 8x16 + v 8x16 + o 16x16 = 768; gate, up, down 3 x 40x16 = 1920.
    per_layer = 16 * 16 + 8 * 16 + 8 * 16 + 16 * 16 + 3 * 40 * 16
    assert per_layer == 2688
    head = 32 * 16  # the output head multiplies every token (tied: token_embd serves as it)
    matmul = 2 * per_layer + head
    # Attention at position 10: per layer and head, Q.K (4 dims) and scores.V (4 dims), 2 FLOPs each.
    attention = 2 * 2 * 4 * (4 + 4) * 10
    assert got["flops_per_token"] == 2 * matmul + attention == 11776 + 1280
    assert got["flops_attention_per_token"] == 1280
    norms = 2 * 2 * 16 + 16
    embeddings = 32 * 16 * (1 if tied else 2)
    assert got["params_total"] == 2 * per_layer + norms + embeddings
    assert got["params_embedding"] == embeddings
    assert got["params_non_embedding"] == 2 * per_layer + norms == 5456
    # Bytes read per decoded token (F32): every weight once, but an untied input embedding only
    # one row; plus the KV cache up to position 10 (f16: 2 layers x 2 KV heads x (4 + 4) x 2 B).
    weights = 4 * got["params_total"]
    read = weights - (0 if tied else 4 * (32 * 16 - 16))
    assert got["weight_bytes_read_per_token"] == read
    assert got["kv_bytes_per_token"] == 2 * 2 * (4 + 4) * 2 == 64
    assert got["bytes_read_per_token"] == read + 64 * 10


def test_smollm2_counts_from_its_published_shape(smollm2_path):
    # SmolLM2-135M: 30 layers, hidden 576, 9 heads (64 dims), 3 KV heads, FFN 1536, vocab 49152, tied.
    got = compute.accounting(gguf_info.read(smollm2_path), context=512)
    layer = 576 * 576 * 2 + 2 * (3 * 64) * 576 + 3 * 576 * 1536
    assert got["flops_per_token"] == 2 * (30 * layer + 49152 * 576) + 2 * 30 * 9 * 128 * 512
    assert got["params_embedding"] == 49152 * 576
    assert got["kv_bytes_per_token"] == 30 * 3 * 128 * 2


def fake_rapl(root, energy_uj, max_uj=1_000_000, readable=True):
    z = root / "intel-rapl:0"
    z.mkdir(parents=True)
    (z / "name").write_text("package-0\n")
    (z / "energy_uj").write_text(f"{energy_uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    core = root / "intel-rapl:0" / "intel-rapl:0:0"  # a subzone inside the package: not added
    core.mkdir()
    (core / "name").write_text("core\n")
    (core / "energy_uj").write_text("5\n")
    dram = root / "intel-rapl:0:1"  # powercap lists subzones at the top level too
    dram.mkdir()
    (dram / "name").write_text("dram\n")
    (dram / "energy_uj").write_text("100\n")
    (dram / "max_energy_range_uj").write_text("1000\n")
    if not readable:
        (z / "energy_uj").chmod(0)
    return root


def test_no_rapl_means_energy_unavailable(tmp_path, smollm2):
    rapl = compute.Rapl(tmp_path / "no-powercap")
    assert not rapl.available and "no RAPL" in rapl.reason
    smollm2.reset()
    s = compute.measure_speed(smollm2, prompt_tokens=16, gen_tokens=4, reps=1, rapl=rapl)
    assert s["energy"] == {"available": False, "reason": rapl.reason}
    assert s["decode_tokens_per_s"] > 0 and s["prefill_tokens_per_s"] > 0 and s["ttft_s"] > 0
    from bench import density

    assert (
        density.metrics(0.5, compute.accounting(gguf_info.read(smollm2.path)), None)["per_joule"]
        is None
    )


def test_rapl_counters_are_read_summed_and_unwrapped(tmp_path):
    root = fake_rapl(tmp_path / "powercap", 999_000)
    rapl = compute.Rapl(root)
    assert rapl.available and [z.path.name for z in rapl.zones] == [
        "intel-rapl:0",
        "intel-rapl:0:1",
    ]
    start = rapl.read()
    assert start == [999_000, 100]
    (root / "intel-rapl:0" / "energy_uj").write_text("4000\n")  # wrapped past 1,000,000
    (root / "intel-rapl:0:1" / "energy_uj").write_text("600\n")
    end = rapl.read()
    assert rapl.joules(start, end) == pytest.approx((1_000_000 - 999_000 + 4000 + 500) / 1e6)


def test_rapl_with_a_real_window_gives_joules_per_token(tmp_path, smollm2):
    # A counter that advances 1000 uJ every time it is read: energy per token is then exact.
    root = fake_rapl(tmp_path / "powercap", 0)
    rapl = compute.Rapl(root)
    counter = {"n": 0}

    def read():
        counter["n"] += 1000
        return [counter["n"], 0]

    rapl.read = read
    smollm2.reset()
    s = compute.measure_speed(smollm2, prompt_tokens=20, gen_tokens=5, reps=1, rapl=rapl)
    e = s["energy"]
    assert e["available"] and e["joules_per_prefill_token"] == pytest.approx(0.001 / 20)
    assert e["joules_per_decode_token"] == pytest.approx(0.001 / 5)


def test_unreadable_rapl_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    # Recent kernels make energy_uj root-only; as root here, refuse the read the same way.
    root = fake_rapl(tmp_path / "powercap", 0)
    real = Path.read_text

    def read_text(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", read_text)
    rapl = compute.Rapl(root)
    assert not rapl.available and "not readable" in rapl.reason


def test_peak_rss_resets_and_then_sees_a_new_allocation():
    if not compute.reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    base = compute.peak_rss()
    # 200 MB of fresh anonymous pages, each touched: a malloc'd block could reuse pages a
    # long-lived test process already has resident (its RSS would not grow)
    block = mmap.mmap(-1, 200_000_000)
    np.frombuffer(block, dtype=np.uint8)[::4096] = 1
    assert compute.peak_rss() >= base + 150_000_000
    block.close()
    assert compute.reset_peak_rss()
    assert compute.peak_rss() < base + 100_000_000


def test_model_load_shows_in_the_peak(smollm2_path):
    if not compute.reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    before = compute.rss()
    with edge_llm.load(smollm2_path, n_ctx=512, threads=1) as m:
        m.generate("Hello", max_tokens=2, temperature=0)
        assert compute.peak_rss() > before + 50_000_000  # weights are ~100 MB
