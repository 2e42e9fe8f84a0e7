r"""A call on the geometric average of correlated geometric Brownian motions: a closed-form pricing test."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from deepbsde.errors import ProblemError, describe
from deepbsde.paths import gbm_step
from deepbsde.problem import Problem

from ._validate import positive, positive_x0, real

__all__ = ["GeometricBasketCall"]


class GeometricBasketCall(Problem):
    r"""European call on the geometric mean of ``d`` correlated geometric Brownian motions.

    **Model.** :math:`dX^i = r X^i dt + \sigma X^i dB^i` with :math:`\operatorname{corr}(B^i, B^j) = \rho`
    for :math:`i \ne j`; the claim pays :math:`g(x) = (G(x) - K)^+` at ``T``, with
    :math:`G(x) = (\prod_i x_i)^{1/d} = \exp(\tfrac1d \sum_i \ln x_i)`.

    **PDE.** :math:`u_t + \tfrac12 \sigma^2 \sum_{i,j} C_{ij} x_i x_j \partial_{ij} u + r\,x\cdot\nabla u
    - r u = 0`, :math:`C = (1 - \rho) I + \rho\,\mathbf 1\mathbf 1^\top`.

    **FBSDE.** :math:`\mu(x) = r x`; general noise :math:`\sigma(x) = \sigma \operatorname{diag}(x) A` with
    :math:`AA^\top = C`, so that :math:`B = AW` for a standard ``m``-dimensional ``W``:

    * :math:`\rho \ge 0`: ``m = d + 1``, :math:`A = [\sqrt{1-\rho}\, I_d \mid \sqrt\rho\,\mathbf 1]`
      (an independent part plus one common factor);
    * :math:`\rho < 0`: ``m = d``, the symmetric square root
      :math:`A = \sqrt{1-\rho}\, I_d + \tfrac{\sqrt{1 + (d-1)\rho} - \sqrt{1-\rho}}{d}\,\mathbf 1\mathbf 1^\top`.

    Either way :math:`\sigma v` and :math:`\sigma^\top p` cost :math:`O(d)` per sample
    (:meth:`sigma_times`, :meth:`sigma_transpose_times`); only :meth:`diffusion` builds the
    ``(batch, d, m)`` matrix. :math:`f(t, x, y, z) = -r y`; :math:`g(x) = (G(x) - K)^+`. The forward SDE is
    stepped exactly: :math:`\Delta B = A\,\Delta W`, then the log-normal step.

    **Exact solution.** :math:`\ln G(X)` is a Brownian motion with drift, so ``u`` is a Black-Scholes price
    with volatility :math:`\sigma_G` and dividend yield :math:`q_G`: with
    :math:`\sigma_G^2 = \sigma^2(1 + (d-1)\rho)/d`, :math:`q_G = \tfrac12(\sigma^2 - \sigma_G^2)`,
    :math:`\tau = T - t`,

    .. math::
        u(t, x) = G e^{-q_G\tau} N(d_1) - K e^{-r\tau} N(d_2), \quad
        d_1 = \frac{\ln(G/K) + (r - q_G + \tfrac12\sigma_G^2)\tau}{\sigma_G\sqrt\tau}, \quad
        d_2 = d_1 - \sigma_G\sqrt\tau.

    ``d = 1`` gives Black-Scholes (10.450584 at ``S = K = 100``, ``r = 0.05``, ``σ = 0.2``, ``T = 1``);
    the defaults (``d = 100``, :math:`\rho = 0`) give 2.971854. With :math:`\rho = 0` the effective
    volatility is only :math:`\sigma/\sqrt d`: use :math:`\rho > 0` for a demanding test.

    **Source.** The geometric-average basket formula (Kemna & Vorst 1990 for the analogous geometric Asian
    option); ``shared/references.md`` §9.

    Parameters
    ----------
    dim, horizon:
        ``d`` (default 100), ``T`` (default 1).
    x0:
        Default ``None``: ``s0`` in every coordinate; every coordinate must be ``> 0``.
    s0:
        Spot price ``> 0`` used when ``x0`` is ``None`` (default 100).
    strike:
        ``K > 0`` (default 100).
    r:
        Interest rate (default 0.05), any finite real.
    sigma:
        Volatility :math:`\sigma > 0` of each asset (default 0.2).
    rho:
        Pairwise correlation, :math:`-1/(d-1) < \rho < 1` (:math:`-1 < \rho < 1` when ``d = 1``; default 0).
    """

    noise_type = "general"

    def __init__(self, *, dim: int = 100, horizon: float = 1.0, x0: float | Sequence[float] | None = None,
                 s0: float = 100.0, strike: float = 100.0, r: float = 0.05, sigma: float = 0.2,
                 rho: float = 0.0) -> None:
        self.s0 = positive("s0", s0)
        self.strike = positive("strike", strike)
        self.r = real("r", r)
        self.sigma = positive("sigma", sigma)
        super().__init__(dim, horizon, self.s0 if x0 is None else x0)
        positive_x0(self.x0)
        self.rho = _check_rho(rho, self.dim)

    # --- the correlation factor A (B = A W) ----------------------------------------------------
    @property
    def noise_dim(self) -> int:
        return self.dim + 1 if self.rho >= 0 else self.dim

    def _coefficients(self) -> tuple[float, float]:
        """``(a, c)``: for ρ ≥ 0, A = [a I | c 1]; for ρ < 0, A = a I + c 11ᵀ."""
        a = math.sqrt(1.0 - self.rho)
        if self.rho >= 0:
            return a, math.sqrt(self.rho)
        return a, (math.sqrt(1.0 + (self.dim - 1) * self.rho) - a) / self.dim

    def correlate(self, w: torch.Tensor) -> torch.Tensor:
        """:math:`A w`: ``(batch, m)`` independent increments to ``(batch, d)`` correlated ones."""
        a, c = self._coefficients()
        if self.rho >= 0:
            return a * w[:, :self.dim] + c * w[:, self.dim:]
        return a * w + c * w.sum(1, keepdim=True)

    def correlate_transpose(self, p: torch.Tensor) -> torch.Tensor:
        """:math:`A^\\top p`: ``(batch, d)`` to ``(batch, m)``."""
        a, c = self._coefficients()
        if self.rho >= 0:
            return torch.cat([a * p, c * p.sum(1, keepdim=True)], dim=1)
        return a * p + c * p.sum(1, keepdim=True)

    def factor(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        """The matrix ``A``, shape ``(d, m)``."""
        a, c = self._coefficients()
        eye = torch.eye(self.dim, dtype=dtype, device=device)
        ones = torch.ones(self.dim, 1, dtype=dtype, device=device)
        if self.rho >= 0:
            return torch.cat([a * eye, c * ones], dim=1)
        return a * eye + c * ones * ones.T

    # --- the mathematics -----------------------------------------------------------------------
    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.r * x

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.sigma * x).unsqueeze(2) * self.factor(x.dtype, x.device)

    def sigma_times(self, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(x) v = \\sigma\\, x \\odot (A v)` in :math:`O(d)`."""
        return self.sigma * x * self.correlate(v)

    def sigma_transpose_times(self, t: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(x)^\\top p = A^\\top(\\sigma\\, x \\odot p)` in :math:`O(d)`."""
        return self.correlate_transpose(self.sigma * x * p)

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.r * y

    def geometric_mean(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`G(x) = \\exp(\\tfrac1d\\sum_i \\ln x_i)`, shape ``(batch, 1)``."""
        return torch.exp(torch.log(x).mean(1, keepdim=True))

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.geometric_mean(x) - self.strike, min=0.0)

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        var_g = self.sigma ** 2 * (1.0 + (self.dim - 1) * self.rho) / self.dim
        vol_g = math.sqrt(var_g)
        q_g = 0.5 * (self.sigma ** 2 - var_g)
        log_g = torch.log(x).mean(1, keepdim=True)
        tau = self.horizon - t
        alive = tau > 0
        tau = torch.where(alive, tau, torch.ones_like(tau))  # keeps the unused branch (and its gradient) finite
        root = vol_g * torch.sqrt(tau)
        d1 = (log_g - math.log(self.strike) + (self.r - q_g + 0.5 * var_g) * tau) / root
        d2 = d1 - root
        price = (torch.exp(log_g - q_g * tau) * torch.special.ndtr(d1)
                 - self.strike * torch.exp(-self.r * tau) * torch.special.ndtr(d2))
        return torch.where(alive, price, self.terminal(x))

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        """Exact log-normal step with the correlated increments :math:`\\Delta B = A\\,\\Delta W`."""
        return gbm_step(x, self.r, self.sigma, dt, self.correlate(dw))


def _check_rho(rho: object, dim: int) -> float:
    low = -1.0 / (dim - 1) if dim > 1 else -1.0
    text = f"(-1/(d-1), 1) = ({low:.6g}, 1) for dim={dim}" if dim > 1 else "(-1, 1)"
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho):
        raise ProblemError(f"rho: expected a finite correlation in {text}, received {describe(rho)}")
    if not low < rho < 1:
        raise ProblemError(f"rho: expected a correlation in {text} (a positive definite correlation "
                           f"matrix), received {describe(rho)}")
    return float(rho)
