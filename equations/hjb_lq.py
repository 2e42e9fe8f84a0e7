r"""The Hamilton-Jacobi-Bellman equation of a linear-quadratic control problem (Han, Jentzen & E, PNAS 2018)."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from deepbsde.problem import Problem, Reference

from ._pointwise import as_points, like
from ._validate import nonnegative, positive

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

    **Sampling drift (keyword** ``pull`` **=** :math:`\kappa \ge 0`, **default 0).** The same PDE has the
    FBSDE with forward drift :math:`\mu = -\kappa x` for any :math:`\kappa`: write
    :math:`u_t + \Delta u + \mu\cdot\nabla u + f = 0` with
    :math:`f(t, x, y, z) = -\tfrac{\lambda}{2}|z|^2 + \kappa\, x\cdot z/\sqrt2` (since
    :math:`-\mu\cdot\nabla u = \kappa\, x\cdot\nabla u` and :math:`\nabla u = z/\sqrt2`). The solution and
    the reference do not change; the training paths do. The optimal control pulls :math:`X` towards 0 with
    drift :math:`-2\lambda\nabla u`; at large :math:`\lambda` the deep BSDE loss, measured on uncontrolled
    paths, bounds the error of :math:`Y_0` only up to the factor
    :math:`\sqrt{\mathbb E[L^2]} \approx \exp(\tfrac12\lambda^2\mathbb E\!\int|Z|^2dt)` of the change of
    measure between the two (about 3 at :math:`\lambda = 10`, 100 at 20, :math:`10^{19}` at 50, for
    ``d = 100``), and sampling closer to the controlled paths shrinks it.

    **Reference.** (At any point: :meth:`reference_at`, :meth:`reference_grad_at`.) Cole-Hopf: :math:`u(t, x) = -\tfrac1\lambda \ln \mathbb{E}[\exp(-\lambda g(x + \sqrt2 W_{T-t}))]
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
    pull:
        :math:`\kappa \ge 0` of the sampling drift :math:`-\kappa x` (default 0, the original FBSDE).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] = 0.0,
                 lam: float = 1.0, pull: float = 0.0) -> None:
        self.lam = positive("lam", lam)
        self.pull = nonnegative("pull", pull)
        super().__init__(dim, horizon, x0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.pull * x

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, math.sqrt(2.0))

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        r"""Exact Ornstein-Uhlenbeck transition for the drift :math:`-\kappa x`:
        :math:`e^{-\kappa\Delta t}x + \sqrt2\,c\,\Delta W` with :math:`c^2 = (1 - e^{-2\kappa\Delta t})/(2\kappa\Delta t)`
        (exact in law); the default Euler-Maruyama step, exact too, when :math:`\kappa = 0`."""
        if not self.pull:
            return super().step(t, x, dt, dw)
        decay = math.exp(-self.pull * dt)
        c = math.sqrt(-math.expm1(-2.0 * self.pull * dt) / (2.0 * self.pull * dt))
        return decay * x + (math.sqrt(2.0) * c) * dw

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        f = -0.5 * self.lam * (z * z).sum(1, keepdim=True)
        if self.pull:
            f = f + (self.pull / math.sqrt(2.0)) * (x * z).sum(1, keepdim=True)
        return f

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(0.5 * (1.0 + (x * x).sum(1, keepdim=True)))

    def reference(self) -> Reference:
        """:math:`u(0, x_0)` by the Cole-Hopf quadrature, at any keywords."""
        return Reference(_value(self.x0, self.lam, self.horizon), _SOURCE)

    # Why reference_at and not exact_solution: code that finds ``has_exact_solution`` true treats
    # exact_solution as a differentiable torch closed form (the PDE-residual tests and the PINN's residual
    # checks differentiate it twice by autograd) that is cheap on thousands of points (the PINN's L2 metric
    # at every logged step). This reference is a float64 quadrature per point (about 3 ms per distinct
    # (t, |x|), cached), not differentiable by autograd; its gradient is :meth:`reference_grad_at`.
    def reference_at(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        r""":math:`u(t, x)` at a batch of points by the Cole-Hopf quadrature
        (:func:`equations.calculators.hjb_lq.hjb_lq_value`; references.md §2): ``t`` a number or a tensor
        of shape ``()``, ``(B,)`` or ``(B, 1)``, ``x`` ``(B, d)``; returns ``(B, 1)`` in ``x``'s dtype and on
        its device (computed in float64; no autograd graph). At ``t = T`` it is ``g(x)``. The sampling
        drift ``pull`` does not change the solution."""
        from equations.calculators.hjb_lq import hjb_lq_value

        tv, xs = as_points(t, x, self.dim, self.horizon)
        out = [hjb_lq_value(float(ti), xi, lam=self.lam, horizon=self.horizon) for ti, xi in zip(tv, xs)]
        return like(x, np.asarray(out).reshape(-1, 1))

    def reference_grad_at(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla u(t, x)` (not :math:`\sigma^\top\nabla u`) at a batch of points, ``(B, d)``: ``u`` is
        radial, :math:`\nabla u = 2x\,\partial u/\partial|x|^2`, with the derivative of the Cole-Hopf
        integral in closed form (:func:`equations.calculators.hjb_lq.hjb_lq_slope`). Shapes as
        :meth:`reference_at`."""
        from equations.calculators.hjb_lq import hjb_lq_slope

        tv, xs = as_points(t, x, self.dim, self.horizon)
        slope = [hjb_lq_slope(float(ti), xi, lam=self.lam, horizon=self.horizon) for ti, xi in zip(tv, xs)]
        return like(x, 2.0 * xs * np.asarray(slope).reshape(-1, 1))


@functools.cache
def _value(x0: tuple[float, ...], lam: float, horizon: float) -> float:
    from equations.calculators.hjb_lq import hjb_lq_value

    return float(hjb_lq_value(0.0, x0, lam=lam, horizon=horizon))
