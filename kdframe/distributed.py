"""Data parallelism under ``torchrun``; every function is a no-op in a plain (single-process) run.

``torchrun --nproc_per_node N -m kdframe.cli run CONFIG`` starts N processes with WORLD_SIZE, RANK and
LOCAL_RANK set. Each process runs the whole workflow; training and labelling split their work with
:func:`shard` (every rank gets a disjoint, contiguous piece of the same global order) and only the main
rank (rank 0) writes files. CPU tensors are reduced with gloo, CUDA tensors with NCCL; with CUDA each
rank uses ``cuda:LOCAL_RANK``. Ranks share one filesystem (one node, or a shared run directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist


def init() -> bool:
    """Join the process group if started by torchrun (idempotent); True when distributed."""
    if active():
        return True
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ or not dist.is_available():
        return False
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # so "cuda" means this rank's GPU
        backend = "cpu:gloo,cuda:nccl"  # CPU tensors (metrics) by gloo, CUDA tensors (gradients) by NCCL
    dist.init_process_group(backend)
    return True


def finish() -> None:
    if active():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """The main rank runs the block first (e.g. creating a file), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard(items: np.ndarray) -> np.ndarray:
    """This rank's contiguous piece of ``items`` (sizes differ by at most one; all of it when not distributed)."""
    return items if world_size() == 1 else np.array_split(items, world_size())[rank()]


def sum_all(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 (exactly ``values`` for one process)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_module(module: torch.nn.Module) -> None:
    """Every rank gets the main rank's parameters and buffers."""
    if active():
        for tensor in module.state_dict().values():
            if torch.is_tensor(tensor):
                dist.broadcast(tensor, 0)


def combine_gradients(params: Sequence[torch.nn.Parameter], share: float) -> None:
    """Replace every rank's gradients by ``sum_r share_r * grad_r`` (``share``: this rank's part of the global batch).

    Used instead of DistributedDataParallel: the loss differentiates forces (autograd of the energy w.r.t.
    positions with ``create_graph=True``), and DDP's gradient hooks do not support such double backward
    reliably. One all-reduce of the flattened gradients after ``backward()`` is exact and architecture-free.
    A parameter without a gradient on every rank keeps none (as in a plain run, Adam then skips it).
    """
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([torch.cat([g.reshape(-1) for g in grads]) * share, present])
    dist.all_reduce(flat)
    offset, anywhere = 0, flat[-len(params):].tolist()
    for p, found in zip(params, anywhere):
        p.grad = flat[offset:offset + p.numel()].view_as(p) if found else None
        offset += p.numel()
