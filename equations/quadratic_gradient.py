r"""A PDE with quadratically growing derivatives (E, Han & Jentzen 2017, §4.6)."""

from __future__ import annotations

from typing import Sequence

import torch

from deepbsde.problem import Problem

from ._validate import positive

__all__ = ["QuadraticGradient"]


class QuadraticGradient(Problem):
    r"""PDE with a quadratic gradient term and the closed-form solution :math:`\sin(b^\alpha)`.

    **PDE.** With :math:`b(t, x) = T - t + |x|^2/d`, :math:`\psi = \sin(b^\alpha)`,
    :math:`D = \alpha b^{\alpha-1}\cos(b^\alpha)` and
    :math:`D' = \alpha(\alpha-1) b^{\alpha-2}\cos(b^\alpha) - \alpha^2 b^{2\alpha-2}\sin(b^\alpha)`
    (the first two derivatives of :math:`b \mapsto \sin(b^\alpha)`),

    .. math::
        u_t + \tfrac12\Delta u + |\nabla u|^2 - \frac{4 D^2 |x|^2}{d^2} + D
            - \tfrac12\Big(2D + \frac{4|x|^2 D'}{d^2}\Big) = 0, \qquad u(T, x) = \sin\big((|x|^2/d)^\alpha\big).

    **FBSDE.** :math:`\mu = 0`, :math:`\sigma = I_d` (diagonal noise, so :math:`z = \nabla u`),
    :math:`f(t, x, y, z) = |z|^2 - 4D^2|x|^2/d^2 + D - \tfrac12(2D + 4|x|^2 D'/d^2)`,
    :math:`g(x) = \sin((|x|^2/d)^\alpha)`.

    **Exact solution.** :math:`u = \psi(t, x) = \sin\big((T - t + |x|^2/d)^\alpha\big)`;
    :math:`u(0, 0) = \sin(1) \approx 0.8414709848` at ``T = 1``. The derivatives grow like
    :math:`b^{\alpha - 2}` as :math:`b \to 0` (near ``t = T``, ``x = 0``).

    **Source.** W. E, J. Han, A. Jentzen, Commun. Math. Stat. 5 (2017), §4.6.

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 1), ``x0`` (default 0).
    alpha:
        The exponent :math:`\alpha > 0` (default 0.4).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] = 0.0,
                 alpha: float = 0.4) -> None:
        self.alpha = positive("alpha", alpha)
        super().__init__(dim, horizon, x0)

    def _b(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.horizon - t + (x * x).sum(1, keepdim=True) / self.dim

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        a, d = self.alpha, self.dim
        b = self._b(t, x)
        ba = b ** a
        cos, sin = torch.cos(ba), torch.sin(ba)
        D = a * b ** (a - 1.0) * cos
        D1 = a * (a - 1.0) * b ** (a - 2.0) * cos - a * a * b ** (2.0 * a - 2.0) * sin
        x2 = (x * x).sum(1, keepdim=True)
        return ((z * z).sum(1, keepdim=True) - 4.0 * D * D * x2 / d ** 2 + D
                - 0.5 * (2.0 * D + 4.0 * x2 * D1 / d ** 2))

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(((x * x).sum(1, keepdim=True) / self.dim) ** self.alpha)

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self._b(t, x) ** self.alpha)
