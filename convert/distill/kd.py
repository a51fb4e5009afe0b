"""Healing by knowledge distillation: forward KL(teacher || student) on next-token distributions
at temperature T (scaled by T^2), from the teacher's cached top-k log-probabilities plus the mass
outside them (a k+1-bin distribution, exact in the remainder: the student's mass outside the
teacher's top k is its log-sum-exp there), optionally mixed with cross-entropy on the text.

AdamW, linear warmup then cosine decay to min_lr_ratio * lr, gradient accumulation, gradient
clipping, bf16 autocast where asked. Checkpoints (model, optimizer, scheduler, RNG states, step;
the data position is the step, since the order is a function of the seed) are written
atomically every N steps; resuming from one gives the same weights as an uninterrupted run."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge_llm.fsutil import atomic_path


def kd_loss(logits, idx, t_logp, t_rest, *, temperature: float, alpha=0.0, tokens=None):
    """Mean over positions of T^2 * KL(teacher || student) on the top-k + rest partition, mixed
    with (alpha) the cross-entropy of the next token of ``tokens``. ``alpha`` may be a tensor
    [B], one weight per sequence (a domain's gold text next to general text), each sequence's
    KL and CE then being means over its positions."""
    import torch

    s = torch.log_softmax(logits.float() / temperature, dim=-1)
    s_k = s.gather(-1, idx)
    s_rest = s.scatter(-1, idx, float("-inf")).logsumexp(-1)
    p_k = t_logp.exp()
    kl = (p_k * (t_logp - s_k)).sum(-1) + t_rest.exp() * (t_rest - s_rest)
    if torch.is_tensor(alpha):
        b = logits.shape[0]
        ce = (
            torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                tokens[:, 1:].reshape(-1),
                reduction="none",
            )
            .view(b, -1)
            .mean(-1)
        )
        per = (1 - alpha) * kl.mean(-1) * temperature**2 + alpha * ce
        return per.mean()
    loss = kl.mean() * temperature**2
    if alpha > 0 and tokens is not None:
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        loss = (1 - alpha) * loss + alpha * ce
    return loss


def full_kl(student, teacher, seqs, *, device: str = "cpu", batch: int = 4) -> float:
    """Mean KL(teacher || student) over the full vocabulary (T = 1) on ``seqs`` [N, L]."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(seqs), batch):
            x = torch.as_tensor(seqs[b : b + batch]).to(device)
            lt = torch.log_softmax(teacher(x, use_cache=False).logits.float(), -1)
            ls = torch.log_softmax(student(x, use_cache=False).logits.float(), -1)
            total += (lt.exp() * (lt - ls)).sum(-1).sum().item()
            count += x.numel()
    return total / count


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _rng_state() -> dict:
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast_dtype(dtype: str, device: str):
    """None (float32) or torch.bfloat16 for autocast: 'auto' is bf16 on a CUDA device that
    supports it, else float32."""
    import torch

    if dtype == "f32":
        return None
    if dtype == "bf16":
        return torch.bfloat16
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise ConvertError(f"unknown --dtype {dtype}; choose auto, f32 or bf16")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def decoder_layers(model) -> list:
    """The repeated blocks of a Hugging Face causal LM (the first ModuleList of modules of one
    class): the units FSDP shards and gathers one at a time."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) and len({type(x) for x in m}) == 1:
            return list(m)
    return []


def fully_shard_copy(student, device: str):
    """A copy of ``student`` sharded by FSDP (PyTorch's ``fully_shard``) over the process group:
    each decoder layer its own unit, the rest (embedding, tied head, final norm) the root's. Each
    rank keeps 1/W of every parameter on ``device`` and gathers a layer's full weights only while
    it runs, so a student W times larger than one device fits. ``student`` itself moves to the
    CPU and stays unsharded: `full_state` writes the trained weights back into it."""
    import copy

    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    _, size = world()
    student.to("cpu")
    model = copy.deepcopy(student)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    mesh = init_device_mesh(kind, (size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if kind == "cuda":
        torch.cuda.synchronize()
    return model


def full_state(model, opt=None) -> tuple[dict, dict | None]:
    """The sharded model's (and optimizer's) full state, gathered to rank 0 on the CPU (every
    rank must call it; the other ranks get empty dicts). The optimizer's is keyed by parameter
    names, the form `load_full_optimizer` takes back."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    o = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=o)
    osd = get_optimizer_state_dict(model, opt, options=o) if opt is not None else None
    return msd, osd


def load_full_optimizer(model, opt, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(
        model, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
    )


def train(
    student,
    data,
    *,
    kd,
    steps: int,
    device: str,
    dtype: str,
    checkpoint: Path,
    meta: dict,
    resume: bool,
    progress=None,
    on_step=None,
    seed: int = 0,
    fsdp: bool = False,
) -> dict:
    """Run ``steps`` optimizer steps of KD on ``data`` (a data.Dataset). Returns the loss log.

    Under torch.distributed (torchrun) the model is wrapped in DistributedDataParallel (or, with
    ``fsdp``, a sharded copy trains: `fully_shard_copy`) and each of the W ranks takes its 1/W of
    every micro-batch of the one global stream (so the global batch, the data order and the mean
    gradient are those of one process); rank 0 writes the checkpoints, every rank resumes from
    them. With ``fsdp`` the trained weights are gathered back into ``student`` on rank 0."""
    import torch

    rank, size = world()
    sharded = fsdp and size > 1
    per_step = kd.batch_size * kd.grad_accum
    order = data.order(steps * per_step)
    losses: list[float] = []
    start = 0
    torch.manual_seed(seed)
    state = None
    if resume and checkpoint.is_file():
        state = _read_checkpoint(student, checkpoint, meta)
    model = _parallel(student, device, sharded, size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = _optimizer(params, kd, steps)
    if state is not None:
        _restore(model, opt, sched, state, sharded)
        start, losses = state["step"], list(state["losses"])
    cast = autocast_dtype(dtype, device)
    model.train()
    seq_tokens = data.seqs.shape[1]
    t0, done0 = time.perf_counter(), start
    for step in range(start, steps):
        total = _accumulate(model, data, order, step, kd, rank, size, device, cast)
        if kd.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, kd.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        n = step + 1
        if n % kd.checkpoint_every == 0 and n < steps:
            at = {"step": n, "position": n * per_step, "losses": losses, "meta": meta}
            _write_checkpoint(checkpoint, model, student, opt, sched, at, sharded, rank)
        if progress:
            dt = time.perf_counter() - t0
            tps = (n - done0) * per_step * seq_tokens / dt if dt > 0 else 0.0
            progress(
                "train",
                n,
                steps,
                {"loss": total, "tokens_per_s": tps, "lr": sched.get_last_lr()[0]},
            )
        if on_step:
            on_step(n, total)
    if sharded:  # the trained weights back into the unsharded student, on rank 0
        msd, _ = full_state(model)
        if rank == 0:
            student.load_state_dict(msd)
        del model, opt
    student.eval()
    dt = time.perf_counter() - t0
    return {
        "losses": losses,
        "seconds": dt,
        "start_step": start,
        "tokens_per_s": (steps - start) * per_step * seq_tokens / dt if dt > 0 else 0.0,
    }


def _read_checkpoint(student, checkpoint: Path, meta: dict) -> dict:
    """The saved training state, its weights loaded into ``student``; it must match ``meta``."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state.get("meta") != meta:
        raise ConvertError(
            f"the checkpoint {checkpoint} was made with another teacher, recipe, data or "
            "number of processes; run without --resume to start again"
        )
    student.load_state_dict(state["model"])
    return state


def _parallel(student, device: str, sharded: bool, size: int):
    """The model that trains: ``student`` itself, a sharded copy (FSDP) or a DDP wrapper."""
    if sharded:
        return fully_shard_copy(student, device)
    if size > 1:
        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [torch.device(device).index] if device.startswith("cuda") else None
        return DDP(student, device_ids=ids)
    return student


def _optimizer(params, kd, steps: int):
    """AdamW and its schedule: linear warmup, then cosine decay to kd.min_lr_ratio * lr."""
    import torch

    opt = torch.optim.AdamW(
        params, lr=kd.lr, betas=(0.9, 0.95), weight_decay=kd.weight_decay, foreach=False
    )
    warmup = int(kd.warmup * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, steps, warmup, kd.min_lr_ratio)
    )
    return opt, sched


def _restore(model, opt, sched, state: dict, sharded: bool) -> None:
    """The optimizer, schedule and RNG states of a checkpoint."""
    if sharded:
        load_full_optimizer(model, opt, state["optimizer"])
    else:
        opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])


def _accumulate(model, data, order, step: int, kd, rank: int, size: int, device: str, cast):
    """One optimizer step's gradients: kd.grad_accum micro-batches of this rank's share of the
    global stream. Returns the step's loss (the global batch's under torch.distributed)."""
    import torch

    per_step = kd.batch_size * kd.grad_accum
    local = kd.batch_size // size
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    total = 0.0
    for micro in range(kd.grad_accum):
        lo = step * per_step + micro * kd.batch_size + rank * local
        x, idx, logp, rest, alpha = data.batch(order[lo : lo + local], device)
        with torch.autocast(dev_type, dtype=cast or torch.float32, enabled=cast is not None):
            logits = model(x, use_cache=False).logits
        loss = (
            kd_loss(
                logits,
                idx,
                logp,
                rest,
                temperature=kd.temperature,
                alpha=kd.alpha if alpha is None else alpha,
                tokens=x,
            )
            / kd.grad_accum
        )
        loss.backward()
        total += loss.item()
    if size > 1:  # the logged loss is the global batch's
        t = torch.tensor([total], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        total = t.item() / size
    return total


def _write_checkpoint(checkpoint: Path, model, student, opt, sched, at: dict, sharded, rank):
    """The training state after a step (``at``: step, position, losses, meta), written atomically
    by rank 0; with ``sharded`` every rank must call this (the state is gathered)."""
    import torch

    msd, osd = full_state(model, opt) if sharded else (None, None)  # every rank
    if rank == 0:
        state = {
            "model": msd if sharded else student.state_dict(),
            "optimizer": osd if sharded else opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": _rng_state(),
            **at,
        }
        with atomic_path(checkpoint) as tmp:
            torch.save(state, tmp)


def step_seconds(
    student, *, kd, vocab: int, device: str, dtype: str, steps: int = 3, fsdp: bool = False
) -> float:
    """The measured wall time of one optimizer step (grad_accum micro-batches of KD on random
    tokens, AdamW's update included) of ``student`` as it will train (fake quantization
    included); the student's weights are restored afterwards. Under torch.distributed, the
    slowest rank's (so every rank sizes the same budget); with ``fsdp``, a sharded copy's step
    (the whole student's training state need not fit one device)."""
    import copy

    import torch

    rank, size = world()
    local = kd.batch_size // size
    saved = None
    if fsdp and size > 1:
        student = fully_shard_copy(student, device)
    else:
        saved = copy.deepcopy(student.state_dict())
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-12, foreach=False)
    g = torch.Generator().manual_seed(0)
    k = min(kd.top_k, vocab - 1)
    x = torch.randint(0, vocab, (local, kd.seq_len), generator=g).to(device)
    idx = torch.randint(0, vocab, (local, kd.seq_len, k), generator=g).to(device)
    logp = torch.full((local, kd.seq_len, k), -float(np.log(k + 1)), device=device)
    rest = logp[..., 0].clone()
    cast = autocast_dtype(dtype, device)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    student.train()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        for _ in range(kd.grad_accum):
            with torch.autocast(dev_type, dtype=cast or torch.float32, enabled=cast is not None):
                logits = student(x, use_cache=False).logits
            kd_loss(
                logits, idx, logp, rest, temperature=kd.temperature, alpha=kd.alpha, tokens=x
            ).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    if saved is not None:
        student.load_state_dict(saved)
        student.eval()
    del student, opt
    sec = min(times[1:]) if len(times) > 1 else times[0]
    if size > 1:
        t = torch.tensor([sec], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        sec = t.item()
    return sec
