"""Fit a model to a device: memory breakdown, the configuration chosen, predicted speed.

Memory = weights (+ llama.cpp's repacked copies) + KV cache (context x KV type) + compute buffer
(micro-batch x vocabulary logits dominate) + the runtime itself. The search prefers, in order:
the context asked for, then a smaller KV-cache type (f16 -> q8_0 -> q4_0), then a smaller
micro-batch, then a halved context, down to 256 tokens.

Speed, from the roofline: decode is bound by bytes read per token / usable bandwidth (or by
compute if that is slower); prefill by FLOPs per token / the device's matmul throughput.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_llm import gguf_info
from edge_llm.devices import measured_runs
from edge_llm.devices.profile import DeviceProfile
from edge_llm.errors import ConfigError
from edge_llm.shapes import ModelShape, matmul_flops_by_type, read_bytes_by_type

KV_TYPES = ("f16", "q8_0", "q4_0")
BATCHES = (512, 256, 128, 64)
MIN_CTX = 256
RUNTIME_OVERHEAD = 60_000_000  # the llama.cpp runtime and a small app around it, on a device
REPACK_SHARE = 0.06  # llama.cpp repacks some quantized weights for the CPU: up to this share extra


@dataclass(frozen=True)
class Config:
    threads: int
    n_ctx: int
    kv_type: str
    n_batch: int
    n_gpu_layers: int
    use_mmap: bool = True
    use_mlock: bool = False


@dataclass(frozen=True)
class Memory:
    """Host memory by part (``total``: what the budget holds) and, apart, the GPU device's."""

    weights: int
    kv_cache: int
    compute: int
    runtime: int
    device: int = 0  # on the GPU device (its own memory): offloaded weights, their KV, compute

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.runtime


@dataclass(frozen=True)
class Plan:
    model: str
    device: str
    budget: int
    config: Config
    memory: Memory
    fits: bool
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    bits_per_weight: float
    note: str = ""
    speed_basis: str = "roofline"  # or "calibration": this host's measured per-type costs
    model_key: str = ""  # the same for every file of one model (architecture, shape, params)
    # the latest `run --stats` of this very file on this host, if any, and whether the
    # prediction is off from it by more than 2x
    measured: dict | None = None
    disagrees: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["memory"]["total"] = self.memory.total
        return d


def process_rss(field: str = "VmRSS") -> int:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), in bytes.

    Read from /proc/self/status: getrusage's ru_maxrss survives exec, so a process started by a
    big parent reports the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # macOS: bytes already


def runtime_overhead(profile: DeviceProfile) -> int:
    """On this host: what the process already holds plus llama.cpp's own; elsewhere an estimate."""
    if profile.name == "host":
        return process_rss() + 20_000_000
    return RUNTIME_OVERHEAD


def _layer(name: str) -> int | None:
    """The repeating layer a tensor belongs to (``blk.7.attn_q.weight``: 7), None elsewhere."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blk" and len(parts) > 2 and parts[1].isdigit() else None


def offloaded_layers(n_layer: int, n_gpu_layers: int) -> int:
    """llama.cpp's count of layers on the GPU for ``n_gpu_layers`` (-1: all), the output
    layer included: it goes first, then the last repeating layers."""
    return n_layer + 1 if n_gpu_layers < 0 else min(n_gpu_layers, n_layer + 1)


@dataclass(frozen=True)
class Split:
    """Where llama.cpp puts a model's weights for an offload depth (`split_weights`)."""

    host: int  # tensor bytes in host memory
    device: int  # tensor bytes in the GPU's memory
    head_on_device: bool  # the output head: then the logits are computed there too


def split_weights(
    info: gguf_info.GGUFInfo, n_layer: int, n_gpu_layers: int, max_tensor: int = 0
) -> Split:
    """The device holds the offloaded layers and the output layer (a tied head: a copy of
    token_embd), except any weight over ``max_tensor`` bytes (0: no limit), which the backend
    leaves in host memory; the host holds the input embedding (always) and the rest."""
    n = offloaded_layers(n_layer, n_gpu_layers)
    first = n_layer + 1 - n if n > 0 else n_layer + 2
    tensors = {t.name: t for t in info.tensors}
    head = tensors.get("output.weight") or tensors.get("token_embd.weight")
    fits = (lambda t: t.n_bytes <= max_tensor) if max_tensor else (lambda t: True)
    head_on_device = n > 0 and head is not None and fits(head)
    host = device = 0
    for t in info.tensors:
        i = _layer(t.name)
        wanted = (i is not None and i >= first) or (n > 0 and t.name == "output_norm.weight")
        if t.name == "output.weight":
            wanted = head_on_device
        if wanted and fits(t):
            device += t.n_bytes
        else:
            host += t.n_bytes
    if head_on_device and "output.weight" not in tensors:
        device += head.n_bytes  # the tied head, copied to the device
    return Split(host, device, head_on_device)


def memory_for(
    shape: ModelShape,
    cfg: Config,
    profile: DeviceProfile,
    overhead: int,
    info: gguf_info.GGUFInfo | None = None,
) -> Memory:
    """Host and GPU memory for ``cfg``: the GPU holds the offloaded layers' weights and KV cache
    and the compute buffer; the host the rest, and a compute buffer of its own while some layers
    stay on the CPU (on Metal, one memory: all of it counts here)."""
    compute = shape.compute_buffer_bytes(min(cfg.n_batch, cfg.n_ctx))
    kv_all = shape.kv_bytes(cfg.n_ctx, cfg.kv_type)
    if not cfg.n_gpu_layers or profile.gpu_backend in ("none", "metal"):
        weights = int(shape.weight_bytes * (1 + REPACK_SHARE))
        return Memory(weights, kv_all, compute, overhead)
    n = offloaded_layers(shape.n_layer, cfg.n_gpu_layers)
    if info is None:  # no tensor list: the whole model on the device
        split = Split(0, shape.weight_bytes, True)
    else:
        max_tensor = int(profile.gpu_max_tensor_mb * 1e6)
        split = split_weights(info, shape.n_layer, cfg.n_gpu_layers, max_tensor)
    dev_kv = kv_all * max(0, n - 1) // max(1, shape.n_layer)
    # the logits (most of the compute buffer) are computed where the output head is
    n_ub = min(cfg.n_batch, cfg.n_ctx)
    dev_compute = compute if split.head_on_device else shape.activation_bytes(n_ub, cfg.n_ctx)
    host_compute = 0 if split.head_on_device and n > shape.n_layer else compute
    return Memory(
        int(split.host * (1 + REPACK_SHARE)),
        kv_all - dev_kv,
        host_compute,
        overhead,
        split.device + dev_kv + dev_compute,
    )


GPU_SHARE = 0.9  # of the GPU's memory a plan fills (the driver and the display keep some)
# the device memory predicted here is within 10% of what llama.cpp allocates (docs/gpu.md), so
# layers are chosen as if it were 10% more
GPU_MARGIN = 1.10


def gpu_layers(
    shape: ModelShape,
    profile: DeviceProfile,
    n_ctx: int,
    kv_type: str,
    info: gguf_info.GGUFInfo | None = None,
    n_batch: int = 512,
) -> int:
    """All layers (-1) when they fit in ``GPU_SHARE`` of the GPU's memory, else the most that do,
    counted as `memory_for` counts the device's part with ``GPU_MARGIN`` (0 without a GPU, or
    when not even the output layer fits)."""
    if profile.gpu_backend in ("none",) or profile.gpu_memory_gb <= 0:
        return -1 if profile.gpu_backend == "auto" else 0
    room = profile.gpu_memory_gb * 1e9 * GPU_SHARE

    def device(n: int) -> int:
        cfg = Config(profile.threads, n_ctx, kv_type, min(n_batch, n_ctx), n)
        return int(memory_for(shape, cfg, profile, 0, info).device * GPU_MARGIN)

    if device(-1) <= room:
        return -1
    lo, hi = 0, shape.n_layer  # the device's part grows with n: the largest n that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if device(mid) <= room else (lo, mid - 1)
    return lo


def _gpu_speed(cfg: Config, profile: DeviceProfile) -> bool:
    """Whether speed is predicted from the GPU's figures: layers offloaded to a GPU whose speed
    the profile states (a detected GPU of unknown speed: the CPU's figures)."""
    return (
        cfg.n_gpu_layers != 0
        and profile.gpu_backend not in ("none", "auto")
        and profile.gpu_bandwidth_gbs > 0
    )


def predict(
    info: gguf_info.GGUFInfo,
    cfg: Config,
    profile: DeviceProfile,
    position: int | None = None,
) -> tuple[float, float]:
    """(decode, prefill) tokens/s for ``cfg`` on ``profile`` at a context ``position`` (default
    512, a short chat). With the host's calibration: its measured per-type costs; otherwise the
    roofline."""
    shape = ModelShape.from_info(info)
    position = min(cfg.n_ctx, 512) if position is None else position
    gpu = _gpu_speed(cfg, profile)
    fit = None if gpu else _fit_for(profile.calibration, cfg.threads)
    if fit is not None:
        raw_bw = min(profile.bandwidth_gbs, profile.core_bandwidth_gbs * cfg.threads) * 1e9
        kv_ms = 1000 * shape.kv_bytes_per_token(cfg.kv_type) * position / raw_bw
        mb = {k: v / 1e6 for k, v in read_bytes_by_type(info).items()}
        decode_ms = _apply(fit["decode"], shape.n_layer, mb) + kv_ms
        gflop = {k: v / 1e9 for k, v in matmul_flops_by_type(info, max(1, position)).items()}
        gflop["attention"] = shape.attention_flops(position // 2) / 1e9
        prefill_ms = _apply(fit["prefill"], shape.n_layer, gflop)
        return 1000 / decode_ms, 1000 / prefill_ms
    bw = (
        profile.gpu_bandwidth_gbs * 1e9 * profile.bandwidth_efficiency
        if gpu
        else profile.bandwidth_for(cfg.threads)
    )
    flops_s = profile.gpu_gflops * 1e9 if gpu else profile.gflops_for(cfg.threads) * 1e9
    t_mem = shape.decode_bytes_per_token(position, cfg.kv_type) / bw
    t_compute = shape.flops_per_token(position) / flops_s
    decode = 1.0 / max(t_mem, t_compute)
    prefill = flops_s / shape.prefill_flops_per_token(max(1, position))
    return decode, prefill


def _fit_for(calibration: dict | None, threads: int) -> dict | None:
    """The calibrated costs at ``threads`` (the nearest measured count, costs scaled by threads)."""
    if not calibration:
        return None
    counts = sorted(int(k) for k in calibration)
    near = min(counts, key=lambda k: (abs(k - threads), k))
    fit = calibration[str(near)]
    if near == threads:
        return fit
    scale = near / threads
    return {
        stage: {
            "layer_ms": f["layer_ms"],
            "per_type": {k: v * scale for k, v in f["per_type"].items()},
        }
        for stage, f in fit.items()
    }


def _apply(fit: dict, n_layer: int, amounts: dict[str, float]) -> float:
    """layer_ms * n_layer + each amount times its type's cost (types never measured: the median)."""
    costs = [v for v in fit["per_type"].values() if v > 0]
    fallback = sorted(costs)[len(costs) // 2] if costs else 0.0
    per_type = fit["per_type"]
    return fit["layer_ms"] * n_layer + sum(
        a * (per_type.get(t) or fallback) for t, a in amounts.items()
    )


def plan(
    model: str | Path,
    profile: DeviceProfile,
    *,
    n_ctx: int | None = None,
    kv_type: str | None = None,
    n_batch: int | None = None,
    budget: int | None = None,
    overhead: int | None = None,
) -> Plan:
    """The best configuration of ``model`` on ``profile`` (fits=False: the nearest there is)."""
    info = gguf_info.read(model)
    shape = ModelShape.from_info(info)
    budget = budget or profile.budget_bytes
    want_ctx = n_ctx or min(4096, shape.n_ctx_train)
    overhead = runtime_overhead(profile) if overhead is None else overhead
    candidates = []
    ctx = want_ctx
    while True:
        for kv in (kv_type,) if kv_type else KV_TYPES:
            for b in (n_batch,) if n_batch else BATCHES:
                layers = gpu_layers(shape, profile, ctx, kv, info, b)
                cfg = Config(profile.threads, ctx, kv, min(b, ctx), layers, True, profile.mlock)
                candidates.append((cfg, memory_for(shape, cfg, profile, overhead, info)))
        if n_ctx or ctx <= MIN_CTX:
            break
        ctx = max(MIN_CTX, ctx // 2)
    fitting = [(c, m) for c, m in candidates if m.total <= budget]
    fits = bool(fitting)
    cfg, mem = fitting[0] if fits else min(candidates, key=lambda cm: cm[1].total)
    decode, prefill = predict(info, cfg, profile)
    gpu = _gpu_speed(cfg, profile)
    basis = "calibration" if profile.calibration and not gpu else "roofline"
    first, first_mem = candidates[0]
    note = ""
    if fits and (cfg.n_ctx, cfg.kv_type, cfg.n_batch) != (
        first.n_ctx,
        first.kv_type,
        first.n_batch,
    ):
        note = (
            f"reduced from context {first.n_ctx}, {first.kv_type} KV, batch {first.n_batch} "
            f"({mb(first_mem.total)}) to fit {mb(budget)}"
        )
    measured = measured_runs.latest(Path(model)) if profile.name == "host" else None
    disagrees = False
    if measured and measured.get("decode_tokens_per_s") and decode > 0:
        ratio = decode / measured["decode_tokens_per_s"]
        disagrees = not 0.5 <= ratio <= 2.0
    return Plan(
        model=str(model),
        model_key=f"{info.architecture}:{shape.n_layer}x{shape.n_embd}:{info.n_params}",
        measured=measured,
        disagrees=disagrees,
        device=profile.name,
        budget=budget,
        config=cfg,
        memory=mem,
        fits=fits,
        decode_tokens_per_s=decode,
        prefill_tokens_per_s=prefill,
        bits_per_weight=info.bits_per_weight,
        note=note,
        speed_basis=basis,
    )


def require_fit(p: Plan) -> Plan:
    """The plan, or a ConfigError naming the nearest configuration and what it needs."""
    if p.fits:
        return p
    c = p.config
    raise ConfigError(
        f"{Path(p.model).name} does not fit {p.device}: even at context {c.n_ctx}, {c.kv_type} KV "
        f"cache and batch {c.n_batch} it needs {mb(p.memory.total)} (weights {mb(p.memory.weights)}) "
        f"but the budget is {mb(p.budget)}; use a smaller quantization or model "
        f"(about {mb(p.budget - p.memory.total + p.memory.weights)} of weights would fit)"
    )


def same_model(plans: list[Plan]) -> bool:
    """Whether the plans are files of one model (quantizations of the same weights)."""
    return len({p.model_key for p in plans}) <= 1


def best_fit(plans: list[Plan], min_decode: float = 0.0) -> Plan | None:
    """Of several files of one model, the device's objective: the most capable (most bits per
    weight) that fits and decodes at least ``min_decode`` tok/s; when none is that fast, the
    fastest that fits. None when nothing fits, or when the files are of different models (a
    plan does not choose between models: rank them instead)."""
    if not same_model(plans):
        return None
    fitting = [p for p in plans if p.fits]
    if not fitting:
        return None
    fast = [p for p in fitting if p.decode_tokens_per_s >= min_decode]
    if fast:
        return max(fast, key=lambda p: p.bits_per_weight)
    return max(fitting, key=lambda p: p.decode_tokens_per_s)


def rank(plans: list[Plan]) -> list[Plan]:
    """Plans of different models, those that fit first, then by predicted decode speed."""
    return sorted(plans, key=lambda p: (not p.fits, -p.decode_tokens_per_s))


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"
