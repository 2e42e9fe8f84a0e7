"""Batches of points ``(t, x)`` as float64 NumPy arrays, for the reference calculators that work point by point."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_points", "like"]


def as_points(t: object, x: torch.Tensor, dim: int, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """``t`` (a number, or a tensor of shape ``()``, ``(B,)`` or ``(B, 1)``) and ``x`` ``(B, d)`` as float64
    arrays ``(B,)`` and ``(B, d)``; raises ``ValueError`` naming what is wrong (a wrong ``d``, a time outside
    ``[0, T]``, a non-finite coordinate)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a tensor of shape (batch, {dim}), received {shape}")
    xs = x.detach().to("cpu", torch.float64).numpy()
    batch = xs.shape[0]
    if isinstance(t, torch.Tensor):
        tv = t.detach().to("cpu", torch.float64).reshape(-1).numpy()
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        tv = np.array([float(t)])
    else:
        raise ValueError(f"t: expected a number or a tensor of shape (), (batch,) or (batch, 1), received "
                         f"{type(t).__name__}")
    if tv.size == 1:
        tv = np.full(batch, tv[0])
    if tv.shape != (batch,):
        raise ValueError(f"t: expected a number or a tensor of shape (), ({batch},) or ({batch}, 1), received "
                         f"shape {tuple(t.shape)}")
    if not (np.all(np.isfinite(tv)) and np.all(tv >= 0.0) and np.all(tv <= horizon)):
        raise ValueError(f"t: expected times in [0, T={horizon}], received values in [{tv.min()}, {tv.max()}]")
    if not np.all(np.isfinite(xs)):
        raise ValueError("x: expected finite coordinates")
    return tv, xs


def like(x: torch.Tensor, values: np.ndarray) -> torch.Tensor:
    """``values`` as a tensor in ``x``'s dtype (float64 where ``x`` is not floating) and on its device."""
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(device=x.device, dtype=dtype)
