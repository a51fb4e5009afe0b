"""The LoRA training loop: PEFT's LoRA on a frozen base, AdamW, cosine schedule, masked loss,
checkpoints that resume to the same weights, progress in steps, tokens/s and time left.

Why its own loop (not transformers' Trainer): a resumed run must reach the very weights of an
uninterrupted one (tests/convert/test_adapt.py), which needs the data order fixed by the seed, the
RNG states saved with the optimizer, and nothing random in the step (no dropout); and the time
budget (``--minutes``) is turned into a number of steps before the schedule is built, so a
resumed run keeps the schedule it started with. Under ``torchrun`` each rank takes its share of
every batch and DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.adapt.data import collate
from convert.distill.kd import _rng_state, _set_rng_state, lr_factor, world
from convert.errors import ConvertError
from edge_llm.fsutil import atomic_path


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch: int = 8
    lr: float = 2e-4
    warmup: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    seed: int = 0


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    start_step: int = 0
    tokens: int = 0  # label tokens trained on in this run
    seconds: float = 0.0


def lora_targets(model) -> list[str]:
    """The attention and MLP projections of a decoder: every nn.Linear inside its layers."""
    import torch

    from convert.distill.kd import decoder_layers

    names = set()
    for layer in decoder_layers(model):
        for name, mod in layer.named_modules():
            if isinstance(mod, torch.nn.Linear):
                names.add(name.rsplit(".", 1)[-1])
    if not names:
        raise ConvertError("found no projections to adapt in this model's decoder layers")
    return sorted(names)


def masked_loss(model, x, mask, y):
    """Mean cross-entropy of the next token over the labelled positions (labels -100 are not
    counted): what the reply costs, the prompt free."""
    import torch

    logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1), ignore_index=-100
    )


def order(n_examples: int, n_needed: int, seed: int) -> np.ndarray:
    """Example indices for the whole run: shuffled epochs, fixed by the seed."""
    rng = np.random.default_rng(seed)
    epochs = -(-n_needed // n_examples)
    return np.concatenate([rng.permutation(n_examples) for _ in range(epochs)])[:n_needed]


def batch_at(rows, idx: np.ndarray, step: int, cfg: TrainConfig, pad: int):
    import torch

    rank, size = world()
    take = idx[step * cfg.batch : (step + 1) * cfg.batch][rank::size]
    x, mask, y = collate([rows[i] for i in take], pad)
    return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(y)


def train(
    model, rows, cfg: TrainConfig, *, pad: int, checkpoint: Path, meta: dict, progress=None
) -> TrainLog:
    """``cfg.steps`` AdamW steps on ``model`` (a PeftModel: only the LoRA matrices train) over
    ``rows`` ((ids, labels) pairs); resumes from ``checkpoint`` when its ``meta`` matches."""
    import torch

    rank, size = world()
    if cfg.batch % size:
        raise ConvertError(f"--batch {cfg.batch} does not split over {size} processes")
    torch.manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    warmup = int(cfg.warmup * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.steps, warmup, cfg.min_lr_ratio)
    )
    log = TrainLog()
    if checkpoint.is_file():
        log = _resume(model, opt, sched, checkpoint, meta)
    net = model
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model)
    idx = order(len(rows), cfg.steps * cfg.batch, cfg.seed)
    model.train()
    t0 = time.perf_counter()
    for step in range(log.start_step, cfg.steps):
        x, mask, y = batch_at(rows, idx, step, cfg, pad)
        loss = masked_loss(net, x, mask, y)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        value = _global(loss.item(), size)
        log.losses.append(value)
        log.tokens += int((y[:, 1:] != -100).sum()) * size
        n = step + 1
        if n % cfg.checkpoint_every == 0 and n < cfg.steps and rank == 0:
            _save(model, opt, sched, checkpoint, n, log, meta)
        if progress:
            dt = time.perf_counter() - t0
            done = n - log.start_step
            progress("train", n, cfg.steps, {
                "loss": value,
                "tokens_per_s": log.tokens / dt if dt > 0 else 0.0,
                "eta_s": dt / done * (cfg.steps - n) if done else math.nan,
                "lr": sched.get_last_lr()[0],
            })  # fmt: skip
    model.eval()
    log.seconds = time.perf_counter() - t0
    return log


def _global(value: float, size: int) -> float:
    if size == 1:
        return value
    import torch

    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.item() / size


def _trainable(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _save(model, opt, sched, path: Path, step: int, log: TrainLog, meta: dict) -> None:
    import torch

    state = {
        "lora": _trainable(model),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": _rng_state(),
        "step": step,
        "losses": log.losses,
        "meta": meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(model, opt, sched, path: Path, meta: dict) -> TrainLog:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint: say so, start again
        raise ConvertError(
            f"cannot read the checkpoint {path} ({type(e).__name__}); pass --restart"
        ) from None
    if state.get("meta") != meta:
        raise ConvertError(
            f"the checkpoint {path} was made with another base, data or settings; pass --restart "
            "to start again"
        )
    with torch.no_grad():
        named = dict(model.named_parameters())
        for k, v in state["lora"].items():
            named[k].copy_(v)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return TrainLog(losses=list(state["losses"]), start_step=int(state["step"]))


def step_seconds(model, rows, cfg: TrainConfig, pad: int) -> float:
    """Seconds one optimizer step takes here: a forward and backward pass on the run's first
    batch (padded as training pads it), timed after a warm-up pass (gradients dropped, weights
    untouched), plus 10% for the optimizer's step and clipping."""
    import torch

    first = order(len(rows), cfg.batch, cfg.seed)
    x, mask, y = (torch.from_numpy(a) for a in collate([rows[i] for i in first], pad))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        masked_loss(model, x, mask, y).backward()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    return times[-1] * 1.1
