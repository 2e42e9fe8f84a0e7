r"""Time grids, Brownian increments and forward paths.

All randomness comes from an explicit :class:`torch.Generator`; increments are drawn directly on the
generator's device in the requested dtype (no host round-trip). Shapes: increments ``(batch, N, m)``,
paths ``(batch, N + 1, d)``.

Schemes
-------
* Euler–Maruyama (the default :meth:`Problem.step`):
  :math:`X_{n+1} = X_n + \mu(t_n, X_n)\Delta t + \sigma(t_n, X_n)\Delta W_n` — strong order 1/2 in general,
  1 for additive or diagonal commutative noise only after a Milstein correction.
* Exact geometric Brownian motion (:func:`gbm_step`): for :math:`dX^i = a X^i dt + b X^i dB^i`,
  :math:`X_{n+1} = X_n \exp((a - b^2/2)\Delta t + b\,\Delta B_n)` — no discretisation bias. An Euler scheme
  with N = 40 biases the default-risk target of Han, Jentzen & E (2018) by about 0.3 %.
"""

from __future__ import annotations

import torch

from .problem import Problem

__all__ = ["time_grid", "brownian_increments", "simulate", "gbm_step", "make_generator"]


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A :class:`torch.Generator` on ``device`` seeded with ``seed`` (never the global generator)."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def time_grid(horizon: float, num_steps: int, dtype: torch.dtype = torch.float64,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """The uniform grid :math:`t_n = n T / N`, ``n = 0..N``, shape ``(N + 1,)``."""
    return torch.linspace(0.0, horizon, num_steps + 1, dtype=dtype, device=device)


def brownian_increments(batch: int, num_steps: int, noise_dim: int, dt: float, generator: torch.Generator,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Independent increments :math:`\Delta W_n \sim \mathcal N(0, \Delta t\, I_m)`, shape ``(batch, N, m)``,
    drawn on ``generator.device``."""
    dw = torch.randn(batch, num_steps, noise_dim, generator=generator, dtype=dtype, device=generator.device)
    return dw.mul_(dt ** 0.5)


def simulate(problem: Problem, dw: torch.Tensor, dt: float, x0: torch.Tensor | None = None) -> torch.Tensor:
    r"""Forward paths from ``x0`` (default ``problem.x0``) driven by the increments ``dw`` ``(batch, N, m)``,
    using ``problem.step`` (Euler–Maruyama unless the problem overrides it with an exact transition).

    Returns ``(batch, N + 1, d)``. Runs without building an autograd graph: the forward paths do not
    depend on any trainable parameter.
    """
    batch, num_steps, _ = dw.shape
    if x0 is None:
        x0 = problem.x0_tensor(dw.dtype, dw.device)
    paths = torch.empty(batch, num_steps + 1, problem.dim, dtype=dw.dtype, device=dw.device)
    paths[:, 0] = x0
    grid = time_grid(num_steps * dt, num_steps, dtype=dw.dtype, device=dw.device)
    with torch.no_grad():
        for n in range(num_steps):
            paths[:, n + 1] = problem.step(grid[n], paths[:, n], dt, dw[:, n])
    return paths


def gbm_step(x: torch.Tensor, rate: float | torch.Tensor, vol: float | torch.Tensor, dt: float,
             db: torch.Tensor) -> torch.Tensor:
    r"""Exact step of :math:`dX^i = a X^i dt + b X^i dB^i`:
    :math:`X \exp((a - b^2/2)\Delta t + b\,\Delta B)`.

    ``db`` is the increment of the (possibly correlated) driving Brownian motion per coordinate,
    shape ``(batch, d)``; each coordinate must have variance ``dt``.
    """
    return x * torch.exp((rate - 0.5 * vol * vol) * dt + vol * db)
