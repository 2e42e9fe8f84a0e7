r"""A sampling drift: the same PDE, with the forward paths drawn elsewhere.

For any :math:`b(t, x)`, the PDE :math:`u_t + \tfrac12\operatorname{Tr}(\sigma\sigma^\top\nabla^2u) + \mu\cdot\nabla u
+ f(t, x, u, \sigma^\top\nabla u) = 0` is also

.. math::
    u_t + \tfrac12\operatorname{Tr}(\sigma\sigma^\top\nabla^2u) + (\mu + b)\cdot\nabla u
    + \big[f(t, x, u, z) - (\sigma^{-1}b)\cdot z\big]_{z = \sigma^\top\nabla u} = 0,

since :math:`b\cdot\nabla u = (\sigma^{-1}b)\cdot\sigma^\top\nabla u`. So the deep BSDE method may draw its paths
from :math:`dX = (\mu + b)\,dt + \sigma\,dW` with the driver :math:`f - (\sigma^{-1}b)^\top z` and solve the same
PDE. It helps where the loss, measured on the uncontrolled paths, does not identify :math:`Y_0` well: for
HJB equations at large λ the optimally controlled paths are pulled towards the minimum of ``g``, and
:math:`b = -\kappa(x - x_0)` draws the training paths there (benchmarks/results.md, "Hard regimes").

:class:`DriftedProblem` is that problem, for any :class:`~deepbsde.Problem`; ``DeepBSDE(sampling_drift=...)``
uses it. A step is the problem's own step (exact where it has one) plus :math:`b\,\Delta t`, first order in
the extra drift.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import ConfigError, describe
from .problem import Problem, ProblemView

__all__ = ["DriftedProblem", "pull_towards_x0"]

DriftFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pull_towards_x0(kappa: float, x0: torch.Tensor) -> DriftFunction:
    """:math:`b(t, x) = -\\kappa (x - x_0)`: mean reversion towards the starting point at rate κ."""

    def b(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -kappa * (x - x0.to(x.dtype).to(x.device))

    return b


class DriftedProblem(ProblemView):
    """``problem`` with the sampling drift ``b`` added to its forward SDE and subtracted from its driver (the
    same PDE; see the module docstring). ``b(t, x)`` returns ``(batch, d)``."""

    def __init__(self, problem: Problem, b: DriftFunction) -> None:
        if not isinstance(problem, Problem):
            raise ConfigError(f"sampling_drift: needs a deepbsde.Problem, received {describe(problem)}")
        super().__init__(problem)
        self.b = b

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.base.drift(t, x) + self.b(t, x)

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        return self.base.step(t, x, dt, dw) + self.b(t, x) * dt

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.base.driver(t, x, y, z) - (self._sigma_inverse_b(t, x) * z).sum(1, keepdim=True)

    def _sigma_inverse_b(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma^{-1} b` (least squares for general noise), ``(batch, m)``."""
        b = self.b(t, x)
        sigma = self.base.diffusion(t, x)
        if self.base.noise_type == "diagonal":
            return b / sigma
        return torch.linalg.lstsq(sigma, b.unsqueeze(2)).solution.squeeze(2)
