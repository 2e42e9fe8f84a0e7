r"""The Hamilton-Jacobi-Bellman equation of a linear-quadratic control problem (Han, Jentzen & E, PNAS 2018)."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from deepbsde.problem import Problem, Reference

from ._validate import positive

__all__ = ["HJBLQ"]

_SOURCE = "Cole-Hopf formula, 1-D noncentral chi-square quadrature"


class HJBLQ(Problem):
    r"""HJB equation :math:`u_t + \Delta u - \lambda|\nabla u|^2 = 0` of a linear-quadratic control problem.

    **Control problem.** :math:`dX = 2\sqrt\lambda\, m_t\,dt + \sqrt2\,dW`; minimise
    :math:`\mathbb{E}[\int_t^T |m_s|^2 ds + g(X_T)]`. The value function solves

    .. math::
        u_t + \Delta u - \lambda |\nabla u|^2 = 0, \qquad u(T, x) = g(x) = \ln\big(\tfrac12(1 + |x|^2)\big),

    and the optimal control is :math:`m^* = -\sqrt\lambda\,\nabla u`.

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma = \sqrt2\, I_d` (diagonal noise), so
    :math:`z = \sqrt2\,\nabla u` and :math:`|z|^2 = 2|\nabla u|^2`;
    :math:`f(t, x, y, z) = -\tfrac{\lambda}{2}|z|^2`; :math:`g(x) = \ln(\tfrac12(1 + |x|^2))`.

    **Reference.** Cole-Hopf: :math:`u(t, x) = -\tfrac1\lambda \ln \mathbb{E}[\exp(-\lambda g(x + \sqrt2 W_{T-t}))]
    = -\tfrac1\lambda \ln \mathbb{E}[(2/(1 + 2(T - t)Q))^\lambda]` with
    :math:`Q \sim \chi^2_d(|x|^2/(2(T - t)))` noncentral, a 1-D integral
    (:mod:`equations.calculators.hjb_lq`); :math:`u(0, 0) = 4.590162` at ``d = 100``, ``T = 1``,
    :math:`\lambda = 1`. The uncontrolled :math:`\mathbb{E}[g(X_T)] = 4.600226` is only 0.2 % away at
    :math:`\lambda = 1`: test larger :math:`\lambda` too.

    **Source.** J. Han, A. Jentzen, W. E, PNAS 115 (2018), 8505-8510, section "Hamilton-Jacobi-Bellman
    (HJB) Equation".

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 1), ``x0`` (default 0).
    lam:
        The control cost weight :math:`\lambda > 0` (default 1).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] = 0.0,
                 lam: float = 1.0) -> None:
        self.lam = positive("lam", lam)
        super().__init__(dim, horizon, x0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, math.sqrt(2.0))

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * self.lam * (z * z).sum(1, keepdim=True)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(0.5 * (1.0 + (x * x).sum(1, keepdim=True)))

    def reference(self) -> Reference:
        """:math:`u(0, x_0)` by the Cole-Hopf quadrature, at any keywords."""
        return Reference(_value(self.x0, self.lam, self.horizon), _SOURCE)


@functools.cache
def _value(x0: tuple[float, ...], lam: float, horizon: float) -> float:
    from equations.calculators.hjb_lq import hjb_lq_value

    return float(hjb_lq_value(0.0, x0, lam=lam, horizon=horizon))
