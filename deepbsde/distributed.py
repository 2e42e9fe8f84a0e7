"""Data-parallel training over ``torch.distributed`` (launched by ``torchrun``).

Each rank simulates its own paths from a rank-derived seed; after every backward pass the gradients are
averaged with one ``all_reduce`` over a flat buffer (what DistributedDataParallel does, without requiring
the loss to go through a module's ``forward``). Rank 0 alone writes the run folder. When no process group
is initialised every function here is a no-op for a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ["world", "init_from_env", "allreduce_gradients", "broadcast_module", "broadcast_floats",
           "gather_tensors"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: torch.device) -> bool:
    """Initialise the default process group from torchrun's environment (``WORLD_SIZE`` > 1), with
    NCCL on CUDA and gloo on CPU. Returns whether a group is in use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return t.cuda()
    return t


def allreduce_gradients(model: nn.Module, world_size: int) -> None:
    """Average every parameter's gradient over the ranks in place."""
    if world_size == 1:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(world_size)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def broadcast_module(model: nn.Module, world_size: int) -> None:
    """Copy rank 0's parameters and buffers (e.g. batch-norm statistics) to every rank."""
    if world_size == 1:
        return
    tensors = [*model.parameters(), *model.buffers()]
    with torch.no_grad():
        flat = _flatten_dense_tensors([t.data for t in tensors])
        dist.broadcast(flat, src=0)
        for t, synced in zip(tensors, _unflatten_dense_tensors(flat, [t.data for t in tensors])):
            t.data.copy_(synced)


def broadcast_floats(values: list[float], world_size: int, device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (so that every rank takes the same decisions)."""
    if world_size == 1:
        return values
    t = _comm_device(torch.tensor(values, dtype=torch.float64, device=device))
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def gather_tensors(t: torch.Tensor, world_size: int) -> list[torch.Tensor]:
    """Every rank's ``t`` (same shape on each), in rank order, on every rank."""
    if world_size == 1:
        return [t]
    t = _comm_device(t)
    out = [torch.empty_like(t) for _ in range(world_size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]
