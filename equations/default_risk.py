r"""Black-Scholes pricing with default risk in 100 dimensions (Han, Jentzen & E, PNAS 2018)."""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from deepbsde.errors import ProblemError, describe
from deepbsde.paths import gbm_step
from deepbsde.problem import Problem, Reference

from ._keys import at_defaults, keywords
from ._validate import in_interval, nonnegative, positive, positive_x0, real

__all__ = ["DefaultRisk"]

_PUBLISHED = 57.300
_PUBLISHED_SOURCE = "published (multilevel Picard, E, Hutzenthaler, Jentzen & Kruse)"


class DefaultRisk(Problem):
    r"""Black-Scholes equation with default risk: a nonlinear, nonsmooth pricing PDE.

    **Model.** ``d`` independent geometric Brownian motions
    :math:`dX^i = \bar\mu X^i dt + \bar\sigma X^i dW^i`; the claim pays :math:`g(x) = \min_i x_i` at ``T``
    unless the issuer defaults first, at an intensity :math:`Q(y)` that depends on the current value:
    :math:`Q(y) = \gamma^h` for :math:`y < v^h`, :math:`\gamma^l` for :math:`y \ge v^l`, linear in between.
    A fraction :math:`\delta` is recovered at default; ``R`` is the interest rate.

    **PDE.** :math:`u_t + \tfrac12 \bar\sigma^2 \sum_i x_i^2 \partial_{ii} u + \bar\mu\, x\cdot\nabla u
    - (1 - \delta) Q(u) u - R u = 0`, :math:`u(T, x) = \min_i x_i`.

    **FBSDE.** :math:`\mu(x) = \bar\mu x`, :math:`\sigma(x) = \bar\sigma \operatorname{diag}(x)`
    (diagonal noise), :math:`f(t, x, y, z) = -(1 - \delta) Q(y) y - R y`, :math:`g(x) = \min_i x_i`.
    The forward SDE is stepped exactly (log-normal): an Euler scheme with ``N = 40`` biases the target by
    about 0.3 %.

    **Reference.** No closed form. Published :math:`u(0, x_0) \approx 57.300` (multilevel Picard) at the
    defaults. Comparison bounds from :mod:`equations.calculators.bounds`: the driver lies between the
    linear drivers with :math:`Q \equiv \gamma^h` and :math:`Q \equiv \gamma^l`, so ``u`` lies between
    the two linear prices :math:`e^{-((1-\delta)\gamma + R)T}\,\mathbb{E}[\min_i X^i_T]`,
    [55.735, 59.181] at the defaults.

    **Source.** J. Han, A. Jentzen, W. E, PNAS 115 (2018), 8505-8510, section "Black-Scholes Equation
    with Default Risk"; reference value from W. E, M. Hutzenthaler, A. Jentzen, T. Kruse, "On multilevel
    Picard numerical approximations for high-dimensional nonlinear parabolic PDEs and high-dimensional
    nonlinear BSDEs" (2016).

    Parameters
    ----------
    dim, horizon, x0:
        ``d`` (default 100), ``T`` (default 1), ``x0 > 0`` (default 100 in every coordinate).
    delta:
        Recovery fraction :math:`\delta \in [0, 1]` (default 2/3).
    R:
        Interest rate (default 0.02), any finite real.
    gamma_h, gamma_l:
        Default intensities below :math:`v^h` and above :math:`v^l`, :math:`0 \le \gamma^l \le \gamma^h`
        (defaults 0.2, 0.02).
    v_h, v_l:
        Value thresholds, :math:`v^h < v^l` (defaults 50, 70).
    mu_bar, sigma_bar:
        Drift (default 0.02, any finite real) and volatility (> 0, default 0.2) of each asset.
    """

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] = 100.0,
                 delta: float = 2.0 / 3.0, R: float = 0.02, gamma_h: float = 0.2, gamma_l: float = 0.02,
                 v_h: float = 50.0, v_l: float = 70.0, mu_bar: float = 0.02, sigma_bar: float = 0.2) -> None:
        self.delta = in_interval("delta", delta, 0.0, 1.0, closed_low=True, closed_high=True,
                                 why="the recovery fraction")
        self.R = real("R", R)
        self.gamma_h = nonnegative("gamma_h", gamma_h)
        self.gamma_l = nonnegative("gamma_l", gamma_l)
        if self.gamma_l > self.gamma_h:
            raise ProblemError(f"gamma_l: expected an intensity <= gamma_h = {self.gamma_h!r} (default is likelier "
                               f"at low values), received {describe(gamma_l)}")
        self.v_h = real("v_h", v_h)
        self.v_l = real("v_l", v_l)
        if not self.v_h < self.v_l:
            raise ProblemError(f"v_l: expected a number > v_h = {self.v_h!r}, received {describe(v_l)}")
        self.mu_bar = real("mu_bar", mu_bar)
        self.sigma_bar = positive("sigma_bar", sigma_bar)
        super().__init__(dim, horizon, x0)
        positive_x0(self.x0)

    def intensity(self, y: torch.Tensor) -> torch.Tensor:
        r"""The default intensity :math:`Q(y)`: :math:`\gamma^h` below :math:`v^h`, :math:`\gamma^l` from
        :math:`v^l` on, linear in between."""
        weight = torch.clamp((y - self.v_h) / (self.v_l - self.v_h), 0.0, 1.0)
        return self.gamma_h + (self.gamma_l - self.gamma_h) * weight

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.mu_bar * x

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.sigma_bar * x

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -(1.0 - self.delta) * self.intensity(y) * y - self.R * y

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return x.min(1, keepdim=True).values

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        """Exact log-normal step of the independent geometric Brownian motions."""
        return gbm_step(x, self.mu_bar, self.sigma_bar, dt, dw)

    def reference(self) -> Reference:
        """The published value with the comparison bounds at the defaults; the bounds alone elsewhere."""
        return _reference(keywords(self))


@functools.cache
def _reference(key: tuple[tuple[str, object], ...]) -> Reference:
    from equations.calculators.bounds import default_risk_bounds

    problem = DefaultRisk(**dict(key))
    lower, upper = default_risk_bounds(problem)
    bounds = (float(lower), float(upper))
    if at_defaults(problem):
        return Reference(_PUBLISHED, _PUBLISHED_SOURCE, bounds=bounds)
    return Reference(None, "comparison bounds (linear prices at the extreme default intensities)", bounds=bounds)
