r"""An oscillating reaction-diffusion equation (E, Han & Jentzen 2017, §4.7; Gobet & Turkedjiev 2017)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from deepbsde.problem import Problem

from ._validate import real

__all__ = ["ReactionDiffusion"]


class ReactionDiffusion(Problem):
    r"""Reaction-diffusion PDE with an oscillating closed-form solution.

    **PDE.** With :math:`\lambda = 1/\sqrt d` and
    :math:`\phi(t, x) = \sin(\lambda \sum_i x_i)\, \exp(\lambda^2 d (t - T) / 2)`,

    .. math::
        u_t + \tfrac12 \Delta u + \min\{1, (u - \kappa - 1 - \phi(t, x))^2\} = 0,
        \qquad u(T, x) = 1 + \kappa + \sin(\lambda \textstyle\sum_i x_i).

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma = I_d` (diagonal noise),
    :math:`f(t, x, y, z) = \min\{1, (y - \kappa - 1 - \phi(t, x))^2\}` (independent of ``z``),
    :math:`g(x) = 1 + \kappa + \sin(\lambda \sum_i x_i)`.

    **Exact solution.** :math:`u(t, x) = 1 + \kappa + \phi(t, x)` (the driver vanishes on it);
    :math:`u(0, 0) = 1 + \kappa = 1.6` at the default :math:`\kappa = 0.6`.

    **Source.** W. E, J. Han, A. Jentzen, Commun. Math. Stat. 5 (2017), §4.7, after E. Gobet and
    P. Turkedjiev, "Adaptive importance sampling in least-squares Monte Carlo algorithms for backward
    stochastic differential equations", Stoch. Proc. Appl. 127 (2017).

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 1), ``x0`` (default 0).
    kappa:
        The level :math:`\kappa` (default 0.6), any finite real.
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] = 0.0,
                 kappa: float = 0.6) -> None:
        self.kappa = real("kappa", kappa)
        super().__init__(dim, horizon, x0)

    @property
    def frequency(self) -> float:
        r""":math:`\lambda = 1/\sqrt d`."""
        return 1.0 / math.sqrt(self.dim)

    def _oscillation(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lam = self.frequency
        return torch.sin(lam * x.sum(1, keepdim=True)) * torch.exp(0.5 * lam * lam * self.dim * (t - self.horizon))

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        gap = y - self.kappa - 1.0 - self._oscillation(t, x)
        return torch.clamp(gap * gap, max=1.0)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.kappa + torch.sin(self.frequency * x.sum(1, keepdim=True))

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.kappa + self._oscillation(t, x)
