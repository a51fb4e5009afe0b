"""Fake quantization onto ggml's grids, for quantization-aware distillation.

Why: a GGUF file's quantized weights are a grid (block scales times small integer codes), and a
model trained in float and rounded afterwards loses what the rounding takes. Training the
student *on* the grid lets the optimizer move the weights (and, for the K-quants, the scales)
to where the rounded model is good. For that the forward pass must see exactly the numbers
llama.cpp will compute with, and the file must hold exactly the grid that was trained:

- Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the block scale is a function of the block's values, so the
  fake quantizer is ggml's reference quantizer (quantize_row_*_ref, which ggml_quantize_chunk
  runs when no importance matrix is given) followed by ggml's dequantizer, op for op in
  float32: same divisions, the same fp16 rounding of the stored scale, the same truncations
  and round-half-away-from-zero. Tests compare bit for bit against ggml itself.
- Q4_K, Q5_K, Q6_K: llama.cpp searches their scales heuristically, so here they are trainable
  parameters: the super-block scales d (and dmin) in log space, the 6-bit (Q6_K: 8-bit)
  sub-block scales and mins as floats rounded in the forward pass. They start from ggml's own
  quantization of the weights (its bytes unpacked), and the codes are the nearest grid point of
  the latent weight, which is how ggml's reference quantizer sets them once the scales are
  fixed, so step 0 equals llama.cpp's quantization.

Gradients: a straight-through estimator. The forward value is the exact grid value (returned
as is by an autograd function: adding ``soft - soft.detach()`` would turn ggml's -0.0 into
+0.0) and the gradient is that of ``y_soft``, the same formula with rounding replaced by
identity.

The GGUF blocks are packed from the integer codes (pack()), in ggml's block layouts; dequantizing
them with ggml gives the fake-quantized weights bit for bit (tested).
"""

from __future__ import annotations

import numpy as np

from convert.errors import ConvertError

LEGACY = {"Q8_0": 32, "Q4_0": 32, "Q4_1": 32, "Q5_0": 32, "Q5_1": 32}
KQUANTS = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256}
TRAINABLE = tuple(LEGACY) + tuple(KQUANTS)
BLOCK = {**LEGACY, **KQUANTS}
TYPE_SIZE = {
    "Q8_0": 34,
    "Q4_0": 18,
    "Q4_1": 20,
    "Q5_0": 22,
    "Q5_1": 24,
    "Q4_K": 144,
    "Q5_K": 176,
    "Q6_K": 210,
}


def check_type(name: str, cols: int, tensor: str = "") -> None:
    if name not in BLOCK:
        raise ConvertError(
            f"--quant {name}{' for ' + tensor if tensor else ''}: quantization-aware training supports "
            f"{', '.join(TRAINABLE)}"
        )
    if cols % BLOCK[name]:
        raise ConvertError(
            f"{tensor or 'a tensor'} has rows of {cols} values, which {name}'s blocks of "
            f"{BLOCK[name]} do not divide; choose a type with smaller blocks (e.g. Q8_0 or Q4_0)"
        )


def _round_away(x):
    """C's roundf: to nearest, halves away from zero (x - trunc(x) is exact)."""
    import torch

    t = torch.trunc(x)
    f = x - t
    return t + torch.where(f.abs() >= 0.5, torch.sign(f), torch.zeros_like(f))


def _inv(d):
    """``d ? 1.0f/d : 0.0f``"""
    import torch

    return torch.where(
        d != 0, 1.0 / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(d)
    )


# --- legacy types: ggml's reference quantizer, exactly ------------------------------------------


_Replace = None


def _replace(soft, exact):
    """``exact``'s values with ``soft``'s gradient."""
    global _Replace
    if _Replace is None:
        import torch

        class Replace(torch.autograd.Function):
            @staticmethod
            def forward(ctx, s, e):
                return e.clone()

            @staticmethod
            def backward(ctx, g):
                return g, None

        _Replace = Replace
    return _Replace.apply(soft, exact.detach())


def legacy_codes(w, name: str) -> dict:
    """ggml's quantize_row_{name}_ref of ``w`` [rows, cols] (float32): the stored fp16 scale
    ``d`` (and min ``m``) per block of 32, and the unsigned codes ``q`` [rows, blocks, 32]."""
    import torch

    with torch.no_grad():
        x = w.detach().float().reshape(w.shape[0], -1, 32)
        m = None
        if name == "Q8_0":
            amax = x.abs().amax(-1, keepdim=True)
            d = amax / 127
            q = _round_away(x * _inv(d)) + 128  # stored as int8; offset to unsigned here
        elif name in ("Q4_0", "Q5_0"):
            # the value of largest magnitude, the first one on ties (strict < in ggml)
            i = x.abs().argmax(-1, keepdim=True)
            mx = x.gather(-1, i)
            half = 8 if name == "Q4_0" else 16
            d = mx / -half
            q = torch.trunc(x * _inv(d) + (half + 0.5)).clamp(0, 2 * half - 1)
        else:  # Q4_1, Q5_1
            mn, mx = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
            top = 15 if name == "Q4_1" else 31
            d = (mx - mn) / top
            q = torch.trunc((x - mn) * _inv(d) + 0.5).clamp(0, top)
            m = mn.half()
        return {"d": d.half(), "m": m, "q": q.to(torch.uint8)}


def legacy_dequant(c: dict, name: str):
    """ggml's dequantize_row_{name}: float32 [rows, blocks, 32]."""
    d = c["d"].float()
    q = c["q"].float()
    if name == "Q8_0":
        return (q - 128) * d
    if name == "Q4_0":
        return (q - 8) * d
    if name == "Q5_0":
        return (q - 16) * d
    return q * d + c["m"].float()


def fake_legacy(w, name: str):
    """dequantize(quantize(w)) as ggml computes it, with a straight-through gradient."""
    y = legacy_dequant(legacy_codes(w, name), name).reshape(w.shape)
    return _replace(w, y)


# --- K-quants: trainable scales --------------------------------------------------------------


def _ste_round(x):
    return x + (x.round() - x).detach()


def _fp16(x):
    """Round to fp16 and back, with an identity gradient."""
    return x + (x.half().float() - x).detach()


def _ggml_quantize(w: np.ndarray, name: str) -> np.ndarray:
    """ggml's own quantization of ``w`` [rows, cols] (ggml_quantize_chunk, no importance), as
    bytes [rows, row_bytes]."""
    from convert.quant.ggml_types import type_info
    from edge_llm.llama import quant as ggml

    return ggml.quantize(w, type_info(name).ggml)


def unpack_k(raw: np.ndarray, name: str) -> dict:
    """ggml K-quant blocks [rows, n * size] -> d, dmin [rows, n] (float32 of the fp16), sub-block
    scales and mins [rows, n * subs] (integers as float32)."""
    rows = raw.shape[0]
    b = raw.reshape(rows, -1, TYPE_SIZE[name])
    if name == "Q6_K":
        sc = b[..., 192:208].view(np.int8).astype(np.float32)
        d = b[..., 208:210].copy().view(np.float16)[..., 0].astype(np.float32)
        return {"d": d, "sc": sc.reshape(rows, -1)}
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    dmin = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    q = b[..., 4:16].astype(np.int32)
    sc = np.empty(b.shape[:2] + (8,), np.float32)
    mn = np.empty(b.shape[:2] + (8,), np.float32)
    for j in range(8):  # get_scale_min_k4
        if j < 4:
            sc[..., j] = q[..., j] & 63
            mn[..., j] = q[..., j + 4] & 63
        else:
            sc[..., j] = (q[..., j + 4] & 0xF) | ((q[..., j - 4] >> 6) << 4)
            mn[..., j] = (q[..., j + 4] >> 4) | ((q[..., j] >> 6) << 4)
    return {"d": d, "dmin": dmin, "sc": sc.reshape(rows, -1), "m": mn.reshape(rows, -1)}


def _make_kquant_module():
    import torch

    class KQuant(torch.nn.Module):
        """Trainable K-quant grid for one weight [rows, cols]: log d (and log dmin) per
        super-block of 256, sub-block scales (and mins) per 32 (Q6_K: 16) as floats."""

        def __init__(self, w, name: str):
            super().__init__()
            self.name = name
            self.sub = 16 if name == "Q6_K" else 32
            self.nmax = {"Q4_K": 15, "Q5_K": 31, "Q6_K": 63}[name]
            rows, cols = w.shape
            p = unpack_k(_ggml_quantize(w.detach().float().cpu().numpy(), name), name)
            d, sc = p["d"], p["sc"]
            dev = w.device
            f = lambda a: torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)).to(dev))  # noqa: E731
            with np.errstate(divide="ignore"):  # a zero scale stays exactly zero: log 0 = -inf
                self.log_d = f(np.log(np.abs(d)).astype(np.float32))
                # Q6_K's d may be negative (its sub-block scales then reach -128): the sign is kept
                self.register_buffer(
                    "d_sign",
                    torch.from_numpy(np.where(d < 0, -1.0, 1.0).astype(np.float32)).to(dev),
                )
                self.sc = f(sc.astype(np.float32))
                if name != "Q6_K":
                    self.log_dmin = f(np.log(np.abs(p["dmin"])).astype(np.float32))
                    self.m = f(p["m"].astype(np.float32))
            self.shape = (rows, cols)

        def _scales(self):
            """Exact (no-grad) and surrogate per-sub-block scale and min, [rows, subs, 1]."""
            per = 256 // self.sub
            d_s = _fp16(self.d_sign * self.log_d.exp()).repeat_interleave(per, dim=1)
            lo, hi = (-128, 127) if self.name == "Q6_K" else (0, 63)
            sc_s = _ste_round(self.sc.clamp(lo, hi))
            d1_s = d_s * sc_s
            m1_s = None
            if self.name != "Q6_K":
                dm_s = _fp16(self.log_dmin.exp()).repeat_interleave(per, dim=1)
                m1_s = dm_s * _ste_round(self.m.clamp(0, 63))
            return d1_s.unsqueeze(-1), None if m1_s is None else m1_s.unsqueeze(-1)

        def codes(self, w) -> dict:
            """The integer grid: fp16 d (dmin), sub-block scales (mins), codes [rows, subs, sub]."""
            with torch.no_grad():
                rows = w.shape[0]
                per = 256 // self.sub
                d = (self.d_sign * self.log_d.exp()).half()
                lo, hi = (-128, 127) if self.name == "Q6_K" else (0, 63)
                sc = (
                    self.sc.clamp(lo, hi).round() + 0.0
                )  # -0.0 -> 0: the stored integer has no sign of zero
                d1 = (d.float().repeat_interleave(per, dim=1) * sc).unsqueeze(-1)
                x = w.detach().float().reshape(rows, -1, self.sub)
                out = {"d": d, "sc": sc}
                safe = torch.where(d1 != 0, d1, torch.ones_like(d1))
                if self.name == "Q6_K":
                    q = torch.round(x / safe).clamp(-32, 31) + 32
                    q = torch.where(d1 != 0, q, torch.zeros_like(q))  # ggml's zeroed block
                else:
                    dmin = self.log_dmin.exp().half()
                    m = self.m.clamp(0, 63).round() + 0.0
                    m1 = (dmin.float().repeat_interleave(per, dim=1) * m).unsqueeze(-1)
                    q = torch.round((x + m1) / safe).clamp(0, self.nmax) * (d1 != 0)
                    out |= {"dmin": dmin, "m": m}
                out["q"] = q.to(torch.uint8)
                return out

        def dequant(self, c: dict):
            """ggml's dequantize_row_{q4,q5,q6}_K on the codes, float32 [rows, subs, sub]."""
            per = 256 // self.sub
            d1 = (c["d"].float().repeat_interleave(per, dim=1) * c["sc"]).unsqueeze(-1)
            if self.name == "Q6_K":
                return d1 * (c["q"].float() - 32)
            m1 = (c["dmin"].float().repeat_interleave(per, dim=1) * c["m"]).unsqueeze(-1)
            return d1 * c["q"].float() - m1

        def forward(self, w):
            rows = w.shape[0]
            y = self.dequant(self.codes(w)).reshape(w.shape)
            d1_s, m1_s = self._scales()
            x = w.reshape(rows, -1, self.sub)
            den = torch.where(d1_s.detach() != 0, d1_s, torch.ones_like(d1_s))  # no 0/0 in backward
            if m1_s is None:
                q_s = _ste_round(x / den).clamp(-32, 31)
                soft = d1_s * q_s
            else:
                q_s = _ste_round((x + m1_s) / den).clamp(0, self.nmax)
                soft = d1_s * q_s - m1_s
            soft = soft.reshape(w.shape)
            return _replace(soft, y)

    return KQuant


_KQuant = None


def kquant_module(w, name: str):
    global _KQuant
    if _KQuant is None:
        _KQuant = _make_kquant_module()
    return _KQuant(w, name)


def _make_legacy_module():
    import torch

    class Legacy(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def codes(self, w) -> dict:
            return legacy_codes(w, self.name)

        def dequant(self, c):
            return legacy_dequant(c, self.name)

        def forward(self, w):
            return fake_legacy(w, self.name)

    return Legacy


_Legacy = None


def quantizer(w, name: str):
    """The parametrization module that puts ``w`` on ``name``'s grid."""
    global _Legacy
    check_type(name, w.shape[-1])
    if name in KQUANTS:
        return kquant_module(w, name)
    if _Legacy is None:
        _Legacy = _make_legacy_module()
    return _Legacy(name)


def fake_quantize(w, name: str):
    """``w`` on ``name``'s grid (a one-off: K-quants start from ggml's scales)."""
    return quantizer(w, name)(w)


# --- packing the ggml blocks ---------------------------------------------------------------------


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _half_bytes(h) -> np.ndarray:
    """fp16 tensor [..., n] -> uint8 [..., n, 2] (little-endian)."""
    return np.ascontiguousarray(_np(h)).view(np.uint8).reshape(*h.shape, 2)


def _nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ((lo & 0xF) | ((hi & 0xF) << 4)).astype(np.uint8)


def pack(c: dict, name: str) -> np.ndarray:
    """The ggml blocks of codes ``c`` (legacy_codes / KQuant.codes): uint8 [rows, row_bytes]."""
    q = _np(c["q"]).astype(np.uint32)
    rows = q.shape[0]
    if name in LEGACY:
        nb = q.shape[1]
        parts = [_half_bytes(c["d"]).reshape(rows, nb, 2)]
        if name in ("Q4_1", "Q5_1"):
            parts.append(_half_bytes(c["m"]).reshape(rows, nb, 2))
        if name == "Q8_0":
            parts.append((q.astype(np.int32) - 128).astype(np.int8).view(np.uint8))
        else:
            if name in ("Q5_0", "Q5_1"):
                bits = ((q >> 4) & 1) << np.arange(32, dtype=np.uint32)
                qh = np.bitwise_or.reduce(bits, axis=-1).astype("<u4")
                parts.append(qh[..., None].view(np.uint8))
            parts.append(_nibbles(q[..., :16], q[..., 16:]))
        return np.concatenate(parts, axis=-1).reshape(rows, -1)
    n = q.shape[1] * q.shape[2] // 256
    L = q.reshape(rows, n, 256)
    sc = _np(c["sc"]).reshape(rows, n, -1)
    if name == "Q6_K":
        ql = np.empty((rows, n, 128), np.uint8)
        qh = np.empty((rows, n, 64), np.uint8)
        for h in range(2):  # two halves of 128 values
            Lh = L[..., 128 * h : 128 * h + 128]
            a, b, c3, c4 = (Lh[..., 32 * k : 32 * k + 32] for k in range(4))
            ql[..., 64 * h : 64 * h + 32] = _nibbles(a, c3)
            ql[..., 64 * h + 32 : 64 * h + 64] = _nibbles(b, c4)
            qh[..., 32 * h : 32 * h + 32] = (
                (a >> 4) | ((b >> 4) << 2) | ((c3 >> 4) << 4) | ((c4 >> 4) << 6)
            ).astype(np.uint8)
        scales = sc.astype(np.int8).view(np.uint8)
        d = _half_bytes(c["d"]).reshape(rows, n, 2)
        return np.concatenate([ql, qh, scales, d], axis=-1).reshape(rows, -1)
    ls = sc.astype(np.uint8)
    lm = _np(c["m"]).reshape(rows, n, 8).astype(np.uint8)
    s = np.zeros((rows, n, 12), np.uint8)
    for j in range(8):
        if j < 4:
            s[..., j] = ls[..., j]
            s[..., j + 4] = lm[..., j]
        else:
            s[..., j + 4] = (ls[..., j] & 0xF) | ((lm[..., j] & 0xF) << 4)
            s[..., j - 4] |= (ls[..., j] >> 4) << 6
            s[..., j] |= (lm[..., j] >> 4) << 6
    head = [_half_bytes(c["d"]).reshape(rows, n, 2), _half_bytes(c["dmin"]).reshape(rows, n, 2), s]
    qs = np.empty((rows, n, 128), np.uint8)
    qhb = np.zeros((rows, n, 32), np.uint8)
    for k in range(4):  # 64 values per step: 32 low nibbles, 32 high
        lo, hi = L[..., 64 * k : 64 * k + 32], L[..., 64 * k + 32 : 64 * k + 64]
        if name == "Q5_K":
            qhb |= (((lo >> 4) & 1) << (2 * k)).astype(np.uint8)
            qhb |= (((hi >> 4) & 1) << (2 * k + 1)).astype(np.uint8)
        qs[..., 32 * k : 32 * k + 32] = _nibbles(lo, hi)
    body = [qhb, qs] if name == "Q5_K" else [qs]
    return np.concatenate(head + body, axis=-1).reshape(rows, -1)
