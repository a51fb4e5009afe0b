"""Running distill() under torchrun: process-group setup, barriers, and the teacher's top-k
computed in shards across ranks and joined by rank 0.

Why a module of its own: these are the only parts of distillation that know about several
processes; convert/distill/core.py keeps the single pipeline (read, prune, prepare data, train,
save) and calls these where ranks have to meet. With WORLD_SIZE 1 each is a no-op or the plain
single-process computation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convert.distill import data as D


def init_distributed(device: str):
    """torch.distributed from torchrun's environment (WORLD_SIZE > 1): gloo on CPU, NCCL on
    CUDA (each rank on its LOCAL_RANK's GPU). Returns (rank, size, device, initialised here)."""
    import torch
    import torch.distributed as dist

    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1, device, False
    mine = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        mine = True
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return dist.get_rank(), dist.get_world_size(), device, mine


def barrier(size: int) -> None:
    if size > 1:
        import torch.distributed as dist

        dist.barrier()


def teacher_topk_sharded(
    teacher, seqs, tpath: Path, *, k, kd, dev, rank: int, size: int, progress
) -> None:
    """The teacher's top-k over ``seqs`` into the cache folder ``tpath``: each rank computes
    its shard (every size-th sequence), rank 0 joins them."""
    if size == 1:
        top = D.teacher_topk(
            teacher,
            seqs,
            k=k,
            temperature=kd.temperature,
            batch=kd.batch_size,
            device=dev,
            progress=progress,
        )
        D.save_topk(tpath, top)
        return
    part = tpath.parent / f"{tpath.name}.part{rank}of{size}.npz"
    top = D.teacher_topk(
        teacher,
        seqs[rank::size],
        k=k,
        temperature=kd.temperature,
        batch=max(1, kd.batch_size // size),
        device=dev,
        progress=progress,
    )
    D.save_npz(part, **top)
    barrier(size)
    if rank == 0:
        n, length = seqs.shape
        full = {
            "idx": np.zeros((n, length, k), np.int32),
            "logp": np.zeros((n, length, k), np.float32),
            "rest": np.zeros((n, length), np.float32),
        }
        parts = [tpath.parent / f"{tpath.name}.part{r}of{size}.npz" for r in range(size)]
        for r, pth in enumerate(parts):
            with np.load(pth) as z:
                for name in full:
                    full[name][r::size] = z[name]
        D.save_topk(tpath, full)
        for pth in parts:
            pth.unlink(missing_ok=True)
    barrier(size)
