"""Fake quantization (convert.distill.fakequant) against ggml itself: for the types whose
quantizer is deterministic rounding, fake_quantize(w) equals ggml's dequantize(quantize(w)) bit
for bit and the packed blocks equal ggml's bytes; for the K-quants, the trained grid packed into
ggml blocks dequantizes (ggml's own dequantizer) to the fake-quantized weights bit for bit, and
step 0 equals llama.cpp's own quantization."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from convert.distill import fakequant as FQ  # noqa: E402
from convert.quant import ggml_quant  # noqa: E402


def ggml_dequant(raw: np.ndarray, name: str, shape) -> np.ndarray:
    """ggml's dequantizer (its type traits' to_float) on packed blocks."""
    return ggml_quant.dequantize(raw, name, shape)


def tensors(cols: int):
    """Random matrices with what breaks a careless quantizer: ties of +max and -max, all-zero
    and constant blocks, tiny and huge magnitudes, values on exact .5 boundaries."""
    rng = np.random.default_rng(0)
    yield rng.standard_normal((8, cols)).astype(np.float32) * 0.02
    yield rng.standard_normal((4, cols)).astype(np.float32) * 30.0
    w = rng.standard_normal((6, cols)).astype(np.float32)
    w[0, :32] = 0.0
    w[1, :32] = 0.25
    w[2, :32] = np.where(np.arange(32) % 2, 1.0, -1.0)  # first-of-equal-magnitude wins
    w[3, :64] = rng.integers(-8, 8, 64) * 0.125  # already on a grid: .5 ties in x*id
    w[4] *= 1e-6
    w[5, 5] = 1e4  # one outlier
    yield w
    yield (rng.standard_t(3, (16, cols)) * 0.05).astype(np.float32)  # heavy tails


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_legacy_types_equal_ggml_bit_for_bit(name):
    for w in tensors(256):
        got = FQ.fake_quantize(torch.from_numpy(w), name).detach().numpy()
        want = ggml_quant.roundtrip(w, name, None)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name
        # the packed blocks are ggml's bytes, and ggml reads them back as the fake weights
        raw = FQ.pack(FQ.legacy_codes(torch.from_numpy(w), name), name)
        assert np.array_equal(raw, FQ._ggml_quantize(w, name))
        assert np.array_equal(ggml_dequant(raw, name, w.shape).view(np.uint32), got.view(np.uint32))


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_legacy_types_equal_gguf_py(name):
    """A second judge: gguf-py's numpy quantize/dequantize."""
    import gguf

    qt = gguf.GGMLQuantizationType[name]
    for w in tensors(128):
        want = gguf.quants.dequantize(gguf.quants.quantize(w, qt), qt)
        got = FQ.fake_quantize(torch.from_numpy(w), name).detach().numpy()
        assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("name", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quants_start_at_ggml_and_pack_to_what_was_trained(name):
    for w in tensors(512):
        wt = torch.from_numpy(w.copy())
        q = FQ.quantizer(wt, name)
        got = q(wt).detach().numpy()
        # step 0: ggml's own quantization (its scales, its rounding of the codes); equal values,
        # where a sub-block's scale underflows to 0 the sign of its zeros may differ (ggml keeps
        # stale codes there)
        assert np.array_equal(got, ggml_quant.roundtrip(w, name, None))
        # a trained state: scales, mins and weights moved; ggml's dequantizer is the judge
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            q.log_d.add_(torch.randn(q.log_d.shape, generator=g) * 0.05)
            q.sc.add_(torch.randn(q.sc.shape, generator=g) * 2)
            if name != "Q6_K":
                q.log_dmin.add_(torch.randn(q.log_dmin.shape, generator=g) * 0.05)
                q.m.add_(torch.randn(q.m.shape, generator=g) * 2)
            wt.add_(torch.randn(wt.shape, generator=g) * wt.abs().mean() * 0.3)
        got = q(wt).detach().numpy()
        raw = FQ.pack(q.codes(wt), name)
        assert raw.shape == (w.shape[0], w.shape[1] // 256 * FQ.TYPE_SIZE[name])
        back = ggml_dequant(raw, name, w.shape)
        assert np.array_equal(back.view(np.uint32), got.view(np.uint32)), name
        assert not np.array_equal(got, ggml_quant.roundtrip(w, name, None))  # it did move


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q4_K", "Q6_K"])
def test_straight_through_gradients(name):
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(4, 256, generator=g) * 0.1).requires_grad_(True)
    q = FQ.quantizer(w, name)
    x = torch.randn(3, 256, generator=g)
    y = x @ q(w).T
    y.square().sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    # within the grid's range the gradient is the float weight's: identity through the rounding
    ref = (2 * (x @ q(w).detach().T)).T @ x
    inside = w.grad != 0
    assert inside.float().mean() > 0.9
    assert torch.allclose(w.grad[inside], ref[inside], rtol=1e-4, atol=1e-6)
    for p in q.parameters():  # the K-quants' scales learn too
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_unsupported_type_and_block_errors():
    from convert.errors import ConvertError

    with pytest.raises(ConvertError, match="supports Q8_0"):
        FQ.quantizer(torch.zeros(2, 256), "Q3_K")
    with pytest.raises(ConvertError, match="rows of 64 values, which Q4_K's blocks of 256"):
        FQ.quantizer(torch.zeros(2, 64), "Q4_K")
