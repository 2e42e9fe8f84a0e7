r"""The viscous Burgers equation in one dimension: the standard PINN benchmark (no FBSDE form)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from deepbsde.pinn_problem import Derivatives, ResidualProblem

from ._validate import positive

__all__ = ["Burgers1D"]


class Burgers1D(ResidualProblem):
    r"""Viscous Burgers equation :math:`u_t + u u_x = \nu u_{xx}` on :math:`[-1, 1]`, forward in time.

    **PDE.** :math:`u_t + u\,u_x - \nu\,u_{xx} = 0` on :math:`(0, T] \times (-1, 1)`, initial condition
    :math:`u(0, x) = -\sin(\pi x)`, Dirichlet boundary :math:`u(t, \pm 1) = 0`; :math:`\nu = 0.01/\pi`,
    :math:`T = 1`. A shock of width :math:`O(\nu)` forms at :math:`x = 0` near :math:`t = 0.3`.

    **Reference.** Cole-Hopf transform and quadrature (:func:`equations.calculators.burgers.burgers_cole_hopf`),
    cross-checked against a fine finite-difference solve; the relative L2 error is measured on Raissi et al.'s
    grid of 256 equispaced ``x`` in :math:`[-1, 1]` by 100 times :math:`t = 0, 0.01, \dots, 0.99`.

    **Source.** M. Raissi, P. Perdikaris, G. E. Karniadakis, "Physics-informed neural networks", J. Comput.
    Phys. 378 (2019) 686-707, §3.1 (continuous-time Burgers; relative L2 error 6.7e-4 with 9 layers of
    20 tanh units, 10,000 collocation points and L-BFGS); C. Basdevant et al., Computers & Fluids 14 (1986)
    23-41 (the Cole-Hopf formula).

    Parameters
    ----------
    nu:
        The viscosity :math:`\nu > 0` (default :math:`0.01/\pi`).
    horizon:
        ``T`` (default 1).
    """

    time_condition = "initial"

    def __init__(self, *, nu: float = 0.01 / math.pi, horizon: float = 1.0) -> None:
        self.nu = positive("nu", nu)
        super().__init__(dim=1, horizon=horizon, lower=-1.0, upper=1.0, x0=0.0)

    def residual(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor, derivs: Derivatives) -> torch.Tensor:
        return derivs.u_t + u * derivs.u_x - self.nu * derivs.u_xx

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.sin(math.pi * x)

    def boundary(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def reference_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The Cole-Hopf reference at the points (cached on :meth:`evaluation_grid`)."""
        from equations.calculators.burgers import burgers_cole_hopf

        grid_t, grid_x = self.evaluation_grid()
        if t.shape == grid_t.shape and torch.equal(t.detach().to(torch.float64).cpu(), grid_t) \
                and torch.equal(x.detach().to(torch.float64).cpu(), grid_x):
            return torch.from_numpy(self.reference_on_grid()).reshape(-1, 1)
        tt = t.detach().to(torch.float64).cpu().reshape(-1).numpy()
        xx = x.detach().to(torch.float64).cpu().reshape(-1).numpy()
        return torch.from_numpy(burgers_cole_hopf(tt, xx, nu=self.nu)).reshape(-1, 1)

    def evaluation_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Raissi et al.'s grid: 256 equispaced ``x`` in [-1, 1] times 100 ``t = k T / 100``, k = 0..99."""
        x = torch.linspace(-1.0, 1.0, 256, dtype=torch.float64)
        t = torch.arange(100, dtype=torch.float64) * (self.horizon / 100)
        tt, xx = torch.meshgrid(t, x, indexing="ij")
        return tt.reshape(-1, 1), xx.reshape(-1, 1)

    def reference_on_grid(self) -> np.ndarray:
        """The reference on :meth:`evaluation_grid`, shape ``(100, 256)`` (t by x), cached per ``(nu, T)``."""
        return _grid_reference(self.nu, self.horizon).copy()


@functools.cache
def _grid_reference(nu: float, horizon: float) -> np.ndarray:
    from equations.calculators.burgers import burgers_cole_hopf

    x = np.linspace(-1.0, 1.0, 256)
    t = np.arange(100) * (horizon / 100)
    return burgers_cole_hopf(t[:, None], x[None, :], nu=nu)
