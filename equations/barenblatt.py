r"""The Black-Scholes-Barenblatt equation in 100 dimensions (Raissi 2018; Beck, E & Jentzen 2017)."""

from __future__ import annotations

from typing import Sequence

import torch

from deepbsde.paths import gbm_step
from deepbsde.problem import Problem

from ._validate import positive, real

__all__ = ["BlackScholesBarenblatt"]


class BlackScholesBarenblatt(Problem):
    r"""Black-Scholes-Barenblatt equation with the closed-form solution :math:`e^{(r + \sigma_{\max}^2)(T-t)}|x|^2`.

    **PDE.** :math:`u_t + \tfrac12\sigma_{\max}^2 \sum_i x_i^2 \partial_{ii} u - r(u - x\cdot\nabla u) = 0`,
    :math:`u(T, x) = |x|^2` (the Barenblatt equation with its volatility fixed at
    :math:`\sigma_{\max}`, the value the convex terminal condition selects).

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma(x) = \sigma_{\max}\operatorname{diag}(x)` (diagonal noise:
    driftless geometric Brownian motion, stepped exactly), so
    :math:`z_i = \sigma_{\max} x_i \partial_i u`;
    :math:`f(t, x, y, z) = -r\big(y - \tfrac1{\sigma_{\max}}\sum_i z_i\big)`, :math:`g(x) = |x|^2`.

    **Exact solution.** :math:`u(t, x) = \exp\big((r + \sigma_{\max}^2)(T - t)\big)|x|^2`; at the
    defaults (``d = 100``, ``T = 1``, ``x0 = (1, 1/2, 1, 1/2, ...)``, ``r = 0.05``,
    :math:`\sigma_{\max} = 0.4`) :math:`u(0, x_0) = 62.5\, e^{0.21} = 77.104879`.

    **Source.** M. Raissi, "Forward-backward stochastic neural networks: deep learning of high-dimensional
    partial differential equations" (2018), section "Black-Scholes-Barenblatt Equation in 100D"; C. Beck,
    W. E, A. Jentzen, "Machine learning approximation algorithms for high-dimensional fully nonlinear
    partial differential equations and second-order backward stochastic differential equations",
    J. Nonlinear Sci. 29 (2019).

    Parameters
    ----------
    dim, horizon:
        ``d`` (default 100), ``T`` (default 1).
    x0:
        Default ``None``: :math:`(1, 1/2, 1, 1/2, \dots)`.
    r:
        Interest rate (default 0.05), any finite real.
    sigma_max:
        Volatility :math:`\sigma_{\max} > 0` (default 0.4).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] | None = None,
                 r: float = 0.05, sigma_max: float = 0.4) -> None:
        self.r = real("r", r)
        self.sigma_max = positive("sigma_max", sigma_max)
        if x0 is None and isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1:
            x0 = [1.0 if i % 2 == 0 else 0.5 for i in range(dim)]
        super().__init__(dim, horizon, x0 if x0 is not None else 0.0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.sigma_max * x

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.r * (y - z.sum(1, keepdim=True) / self.sigma_max)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(1, keepdim=True)

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.exp((self.r + self.sigma_max ** 2) * (self.horizon - t)) * (x * x).sum(1, keepdim=True)

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        """Exact step of the driftless geometric Brownian motion :math:`dX^i = \\sigma_{\\max} X^i dW^i`."""
        return gbm_step(x, 0.0, self.sigma_max, dt, dw)
