r"""Option pricing with different interest rates for borrowing and lending (E, Han & Jentzen 2017; Bergman 1995)."""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from deepbsde.errors import ProblemError, describe
from deepbsde.paths import gbm_step
from deepbsde.problem import Problem, Reference

from ._keys import at_defaults, keywords
from ._validate import positive, positive_x0, real

__all__ = ["DiffRates"]

_PUBLISHED = 21.299
_PUBLISHED_SOURCE = "published (multilevel Picard)"


class DiffRates(Problem):
    r"""Pricing PDE with a borrowing rate :math:`R^b` above the lending rate :math:`R^l`.

    **Model.** ``d`` independent geometric Brownian motions
    :math:`dX^i = \bar\mu X^i dt + \bar\sigma X^i dW^i`; the replicating portfolio lends at :math:`R^l`
    and borrows at :math:`R^b \ge R^l`. The claim is a call spread on the maximum,
    :math:`g(x) = (\max_i x_i - 120)^+ - 2(\max_i x_i - 150)^+`.

    **FBSDE.** :math:`\mu(x) = \bar\mu x`, :math:`\sigma(x) = \bar\sigma \operatorname{diag}(x)` (diagonal
    noise), so :math:`z_i = \bar\sigma x_i \partial_i u` and :math:`\tfrac1{\bar\sigma}\sum_i z_i = x\cdot\nabla u`;

    .. math::
        f(t, x, y, z) = -R^l y - \frac{\bar\mu - R^l}{\bar\sigma}\sum_i z_i
            + (R^b - R^l)\max\Big(0, \frac1{\bar\sigma}\sum_i z_i - y\Big).

    The PDE is :math:`u_t + \tfrac12\bar\sigma^2\sum_i x_i^2\partial_{ii}u + \bar\mu\,x\cdot\nabla u
    + f(t, x, u, \sigma^\top\nabla u) = 0`, :math:`u(T, x) = g(x)`: Black-Scholes at rate :math:`R^l` where
    :math:`u \ge x\cdot\nabla u`, at rate :math:`R^b` where :math:`u < x\cdot\nabla u`. The forward SDE is
    stepped exactly (log-normal).

    **Reference.** No closed form. Published :math:`u(0, x_0) \approx 21.299` (multilevel Picard) at the
    defaults. Since :math:`\max(0, w) \ge 0` and :math:`\ge w`, the driver dominates both linear drivers
    (rate :math:`R^l` and rate :math:`R^b`), so by comparison ``u`` is at least the larger of the two
    Black-Scholes prices (:mod:`equations.calculators.bounds`): 21.0932 at the defaults.

    **Source.** W. E, J. Han, A. Jentzen, Commun. Math. Stat. 5 (2017), section "Pricing of European
    financial derivatives with different interest rates for borrowing and lending", after Y. Z. Bergman,
    "Option pricing with differential interest rates", Rev. Financ. Stud. 8 (1995).

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 0.5), ``x0 > 0`` (default 100 in every coordinate).
    mu_bar, sigma_bar:
        Drift (default 0.06, any finite real) and volatility (> 0, default 0.2) of each asset.
    r_l, r_b:
        Lending and borrowing rates, :math:`R^b \ge R^l` (defaults 0.04, 0.06).
    """

    def __init__(self, *, dim: int = 100, horizon: float = 0.5, x0: float | Sequence[float] = 100.0,
                 mu_bar: float = 0.06, sigma_bar: float = 0.2, r_l: float = 0.04, r_b: float = 0.06) -> None:
        self.mu_bar = real("mu_bar", mu_bar)
        self.sigma_bar = positive("sigma_bar", sigma_bar)
        self.r_l = real("r_l", r_l)
        self.r_b = real("r_b", r_b)
        if self.r_b < self.r_l:
            raise ProblemError(f"r_b: expected a borrowing rate >= r_l = {self.r_l!r}, received {describe(r_b)}")
        super().__init__(dim, horizon, x0)
        positive_x0(self.x0)

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.mu_bar * x

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.sigma_bar * x

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        zsum = z.sum(1, keepdim=True)
        return (-self.r_l * y - (self.mu_bar - self.r_l) / self.sigma_bar * zsum
                + (self.r_b - self.r_l) * torch.clamp(zsum / self.sigma_bar - y, min=0.0))

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        top = x.max(1, keepdim=True).values
        return torch.clamp(top - 120.0, min=0.0) - 2.0 * torch.clamp(top - 150.0, min=0.0)

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        """Exact log-normal step of the independent geometric Brownian motions."""
        return gbm_step(x, self.mu_bar, self.sigma_bar, dt, dw)

    def reference(self) -> Reference:
        """The published value with the comparison lower bound at the defaults; the bound alone elsewhere."""
        return _reference(keywords(self))


@functools.cache
def _reference(key: tuple[tuple[str, object], ...]) -> Reference:
    from equations.calculators.bounds import diff_rates_lower_bound

    problem = DiffRates(**dict(key))
    bounds = (float(diff_rates_lower_bound(problem)), None)
    if at_defaults(problem):
        return Reference(_PUBLISHED, _PUBLISHED_SOURCE, bounds=bounds)
    return Reference(None, "comparison bound (the larger linear price, at rate r_l or r_b)", bounds=bounds)
