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

__all__ = ["world", "local_device", "init_from_env", "barrier", "shutdown", "allreduce_gradients",
           "broadcast_module", "broadcast_floats", "gather_tensors"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, ``cuda`` (no index) means this process's own GPU, ``cuda:<LOCAL_RANK>`` (every rank
    on GPU 0 would make NCCL fail or hang); anything else is returned unchanged."""
    if (device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1
            and "LOCAL_RANK" in os.environ):
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % max(torch.cuda.device_count(), 1))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def init_from_env(device: torch.device) -> bool:
    """Initialise the default process group from torchrun's environment (``WORLD_SIZE`` > 1), with
    NCCL on CUDA and gloo on CPU. Returns whether a group is in use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def barrier(world_size: int) -> None:
    """Wait for every rank (a no-op for a single process)."""
    if world_size > 1:
        dist.barrier()


def shutdown() -> None:
    """Destroy the default process group, if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return t.cuda()
    return t


def allreduce_gradients(model: nn.Module, world_size: int) -> None:
    """Average every parameter's gradient over the ranks in place."""
    if world_size == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for group in _by_dtype(grads):
        flat = _comm_device(_flatten_dense_tensors(group))
        dist.all_reduce(flat)
        flat.div_(world_size)
        for g, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            g.copy_(synced)


def broadcast_module(model: nn.Module, world_size: int) -> None:
    """Copy rank 0's parameters and buffers (e.g. batch-norm statistics) to every rank."""
    if world_size == 1:
        return
    tensors = [t.data for t in (*model.parameters(), *model.buffers())]
    with torch.no_grad():
        for group in _by_dtype(tensors):
            flat = _comm_device(_flatten_dense_tensors(group))
            dist.broadcast(flat, src=0)
            for t, synced in zip(group, _unflatten_dense_tensors(flat, group)):
                t.copy_(synced)


def _by_dtype(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` grouped by (dtype, device), in a fixed order: flattening mixed dtypes together would
    promote them (an int64 counter would round-trip through float32)."""
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return list(groups.values())


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
