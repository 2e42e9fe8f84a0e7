r"""A Burgers-type equation with a logistic closed-form solution (E, Han & Jentzen 2017, §4.5)."""

from __future__ import annotations

from typing import Sequence

import torch

from deepbsde.problem import Problem

__all__ = ["BurgersType"]


class BurgersType(Problem):
    r"""Burgers-type PDE with the closed-form solution :math:`u = s/(1+s)`, :math:`s = e^{t + \bar x}`.

    **PDE.** With :math:`\bar x = \tfrac1d \sum_i x_i`,

    .. math::
        u_t + \tfrac{d^2}{2}\Delta u + \Big(u - \tfrac{2 + d}{2d}\Big)\, d \sum_i \partial_i u = 0,
        \qquad u(T, x) = \frac{e^{T + \bar x}}{1 + e^{T + \bar x}}.

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma = d\, I_d` (diagonal noise), so
    :math:`z = \sigma^\top\nabla u = d\,\nabla u`;
    :math:`f(t, x, y, z) = \big(y - \tfrac{2 + d}{2d}\big) \sum_i z_i`; :math:`g(x) = e^{T+\bar x}/(1+e^{T+\bar x})`.

    **Exact solution.** :math:`u(t, x) = s/(1 + s)`, :math:`s = \exp(t + \bar x)`; at ``x0 = 0``,
    :math:`u(0, x_0) = 1/2` in every dimension.

    **Source.** W. E, J. Han, A. Jentzen, "Deep learning-based numerical methods for high-dimensional
    parabolic partial differential equations and backward stochastic differential equations",
    Commun. Math. Stat. 5 (2017), §4.5.

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 0.2), ``x0`` (default 0).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 0.2, x0: float | Sequence[float] = 0.0) -> None:
        super().__init__(dim, horizon, x0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float(self.dim))

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        d = self.dim
        return (y - (2.0 + d) / (2.0 * d)) * z.sum(1, keepdim=True)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.horizon + x.mean(1, keepdim=True))

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # s / (1 + s) with s = exp(a) is the logistic function of a: stable for large |a|.
        return torch.sigmoid(t + x.mean(1, keepdim=True))
