r"""The heat equation with a quadratic terminal condition: the simplest closed-form test problem."""

from __future__ import annotations

from typing import Sequence

import torch

from deepbsde.problem import Problem

from ._validate import positive

__all__ = ["HeatEquation"]


class HeatEquation(Problem):
    r"""Heat equation :math:`u_t + \tfrac{s^2}{2}\Delta u = 0`, :math:`u(T, x) = |x|^2`.

    **PDE.** :math:`u_t + \tfrac12 s^2 \Delta u = 0` on :math:`[0, T) \times \mathbb{R}^d`,
    :math:`u(T, x) = |x|^2`.

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma = s I_d` (diagonal noise), :math:`f(t, x, y, z) = 0`,
    :math:`g(x) = |x|^2`.

    **Exact solution.** :math:`u(t, x) = |x|^2 + s^2 d (T - t)`; at the defaults (``d = 100``,
    ``T = 1``, ``x0 = 0``) :math:`u(0, x_0) = 100` for ``s = 1`` and ``200`` for ``s = √2``.

    **Source.** Textbook (Itô's formula for :math:`|X_T|^2`); ``shared/references.md`` §10.

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 1), ``x0`` (default 0).
    sigma:
        The scalar volatility ``s > 0`` (default 1): :math:`\sigma = s I`.
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] = 0.0,
                 sigma: float = 1.0) -> None:
        self.sigma = positive("sigma", sigma)
        super().__init__(dim, horizon, x0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.sigma)

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(y)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(1, keepdim=True)

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(1, keepdim=True) + self.sigma ** 2 * self.dim * (self.horizon - t)
