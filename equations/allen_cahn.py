r"""The Allen-Cahn equation in 100 dimensions (Han, Jentzen & E, PNAS 2018)."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch

from deepbsde.problem import Problem, Reference

__all__ = ["AllenCahn"]

_SOURCE = "radial 1-D PDE solve (Crank-Nicolson with exact reaction flow)"


class AllenCahn(Problem):
    r"""Allen-Cahn equation :math:`u_t + \Delta u + u - u^3 = 0`, :math:`u(T, x) = 1/(2 + 0.4|x|^2)`.

    **PDE.** :math:`u_t + \Delta u + u - u^3 = 0` on :math:`[0, T) \times \mathbb{R}^d`,
    :math:`u(T, x) = 1 / (2 + 0.4 |x|^2)`.

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma = \sqrt2\, I_d` (diagonal noise),
    :math:`f(t, x, y, z) = y - y^3` (independent of ``z``), :math:`g(x) = 1/(2 + 0.4|x|^2)`.

    **Reference.** No closed form (at any point: :meth:`reference_at`, :meth:`reference_grad_at`). The solution is radial, :math:`u(t, x) = v(t, |x|)` with
    :math:`v_t + v_{rr} + \tfrac{d-1}{r} v_r + v - v^3 = 0`; a 1-D Crank-Nicolson solve in ``r`` with the
    exact reaction flow :math:`v \mapsto v e^\tau / \sqrt{1 + v^2(e^{2\tau} - 1)}`
    (:mod:`equations.calculators.allen_cahn`) gives :math:`u(0, 0) = 0.052781` at ``d = 100``,
    ``T = 0.3``. The published 0.052802 (a branching-diffusion estimate) is about 0.04 % high.

    **Source.** J. Han, A. Jentzen, W. E, "Solving high-dimensional partial differential equations using
    deep learning", PNAS 115 (2018), 8505-8510, section "Allen-Cahn Equation".

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 0.3), ``x0`` (default 0).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 0.3, x0: float | Sequence[float] = 0.0) -> None:
        super().__init__(dim, horizon, x0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, math.sqrt(2.0))

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return y - y ** 3

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 / (2.0 + 0.4 * (x * x).sum(1, keepdim=True))

    def reference(self) -> Reference:
        """:math:`u(0, x_0)` from the radial 1-D solve, at any ``dim``, ``horizon`` and ``x0``."""
        radius = math.sqrt(sum(v * v for v in self.x0))
        return Reference(_value(self.dim, self.horizon, radius), _SOURCE)

    # reference_at, not exact_solution: see HJBLQ (a numerical solve, not a differentiable closed form)
    def reference_at(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """:math:`u(t, x)` at a batch of points from the radial 1-D solve (one solve per distinct ``t``, cached;
        a cubic spline in ``r`` between its nodes): ``t`` a number or a tensor of shape ``()``, ``(B,)`` or
        ``(B, 1)``, ``x`` ``(B, d)``; returns ``(B, 1)`` in ``x``'s dtype and on its device (float64 inside,
        no autograd graph). Second order in the grid, as :meth:`reference`."""
        return self._radial(t, x, derivative=False)

    def reference_grad_at(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla u(t, x) = v_r(t, |x|)\, x / |x|` (0 at the origin) at a batch of points, ``(B, d)``,
        with :math:`v_r` the derivative of the spline of :meth:`reference_at`."""
        return self._radial(t, x, derivative=True)

    def _radial(self, t: torch.Tensor | float, x: torch.Tensor, derivative: bool) -> torch.Tensor:
        import numpy as np
        from scipy import interpolate

        from equations.calculators.allen_cahn import allen_cahn_grid

        from ._pointwise import as_points, like

        tv, xs = as_points(t, x, self.dim, self.horizon)
        radii = np.sqrt(np.einsum("ij,ij->i", xs, xs))
        out = np.empty(xs.shape if derivative else (xs.shape[0], 1))
        for time in np.unique(tv):
            rows = tv == time
            # the far boundary lies beyond the largest radius asked for: rounded up, so that batches share a solve
            r_max = float(math.ceil(radii[rows].max()))
            r, v = allen_cahn_grid(float(time), dim=self.dim, horizon=self.horizon, r_max=r_max)
            spline = interpolate.CubicSpline(r, v, bc_type=((1, 0.0), "not-a-knot"))
            if not derivative:
                out[rows, 0] = spline(radii[rows])
                continue
            slope = spline(radii[rows], 1)
            rad = radii[rows]
            unit = np.divide(xs[rows], rad[:, None], out=np.zeros_like(xs[rows]), where=rad[:, None] > 0)
            out[rows] = slope[:, None] * unit
        return like(x, out)


@functools.cache
def _value(dim: int, horizon: float, radius: float) -> float:
    from equations.calculators.allen_cahn import allen_cahn_value

    return float(allen_cahn_value(0.0, radius, dim=dim, horizon=horizon))
