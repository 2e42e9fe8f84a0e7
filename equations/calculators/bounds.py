r"""Comparison bounds and closed forms for the financial benchmark equations.

**Comparison principle** (El Karoui, Peng & Quenez, *Math. Finance* 1997, Thm 2.2): if two Lipschitz drivers
satisfy :math:`f_1 \le f_2` everywhere (or along the solution) and :math:`g_1 \le g_2`, the BSDE solutions
satisfy :math:`Y^1 \le Y^2`, i.e. :math:`u_1 \le u_2`. Each nonlinear driver below is squeezed between
linear ones, whose solutions are discounted expectations (Feynman–Kac).

Black–Scholes with default risk (Han, Jentzen & E, PNAS 2018; references.md §3)
    :math:`dX^i = \bar\mu X^i dt + \bar\sigma X^i dW^i` (independent), :math:`g(x) = \min_i x_i`,
    :math:`f(y) = -(1-\delta) Q(y) y - R y` with :math:`Q(y) \in [\gamma^l, \gamma^h]`. Since :math:`g \ge 0`
    and :math:`f(0) = 0`, :math:`u \ge 0`; for :math:`y \ge 0`,
    :math:`-((1-\delta)\gamma^h + R) y \le f(y) \le -((1-\delta)\gamma^l + R) y`, so

    .. math::
        e^{-((1-\delta)\gamma^h + R) T} E[\min_i X^i_T] \;\le\; u(0, x_0) \;\le\;
        e^{-((1-\delta)\gamma^l + R) T} E[\min_i X^i_T],

    with the expectation under the drift :math:`\bar\mu` (the model's own measure). At the defaults
    (d = 100, x0 = 100, μ̄ = 0.02, σ̄ = 0.2, T = 1, δ = 2/3, R = 0.02, γʰ = 0.2, γˡ = 0.02):
    [55.735, 59.181], around the published 57.300.

Different rates for borrowing and lending (E, Han & Jentzen 2017; Bergman 1995; references.md §4)
    :math:`f(y, z) = -R^l y - \frac{\bar\mu - R^l}{\bar\sigma}\sum_i z_i
    + (R^b - R^l)\max(0, \frac1{\bar\sigma}\sum_i z_i - y)` is the maximum of the two linear drivers
    :math:`f_R(y, z) = -R y - \frac{\bar\mu - R}{\bar\sigma}\sum_i z_i`, :math:`R \in \{R^l, R^b\}` (the second
    is the first plus :math:`(R^b - R^l)(\frac1{\bar\sigma}\sum z_i - y)`). With :math:`z_i = \bar\sigma x_i
    \partial_i u`, :math:`f_R` turns the PDE into Black–Scholes with rate :math:`R`, so
    :math:`u \ge \max_R e^{-RT} E^R[g(X_T)]`, :math:`X` a GBM with drift :math:`R`. With
    :math:`M = \max_i X^i_T`, :math:`E[(M - K)^+] = \int_K^\infty P(M > s)\,ds` and
    :math:`P(M \le s) = \prod_i P(X^i_T \le s)`. At the defaults (d = 100, x0 = 100, μ̄ = 0.06, σ̄ = 0.2,
    T = 0.5, Rˡ = 0.04, Rᵇ = 0.06) the larger price is the one at :math:`R^b = 0.06`: 21.0932 (at
    :math:`R^l = 0.04`: 20.6568; :func:`diff_rates_linear_prices`), below the published 21.299.

All expectations over :math:`\min` and :math:`\max` of independent log-normals are 1-D integrals in
:math:`y = \ln s` of products of normal distribution functions, summed in log space
(``scipy.special.log_ndtr``) and integrated by adaptive Gauss–Kronrod quadrature (``scipy.integrate.quad``)
to 1e-12 relative.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import integrate, special

__all__ = [
    "DEFAULT_RISK_DEFAULTS", "DIFF_RATES_DEFAULTS",
    "expected_min_lognormal", "expected_max_call_lognormal",
    "default_risk_bounds", "diff_rates_linear_prices", "diff_rates_lower_bound",
    "black_scholes_call", "geometric_basket_call",
]

#: Parameters of the default-risk model (Han, Jentzen & E, PNAS 2018), used where a problem lacks them.
DEFAULT_RISK_DEFAULTS = dict(dim=100, horizon=1.0, x0=100.0, mu_bar=0.02, sigma_bar=0.2, delta=2.0 / 3.0,
                             R=0.02, gamma_h=0.2, gamma_l=0.02)
#: Parameters of the borrowing/lending model (E, Han & Jentzen 2017), used where a problem lacks them.
DIFF_RATES_DEFAULTS = dict(dim=100, horizon=0.5, x0=100.0, mu_bar=0.06, sigma_bar=0.2, r_l=0.04, r_b=0.06)

_TAIL = 40.0   # standard deviations: Φ(-40) ~ 1e-350, nothing left beyond


def _lognormal_params(x0: Sequence[float] | np.ndarray, drift: float, vol: float,
                      horizon: float) -> tuple[np.ndarray, float]:
    """Means of ln X_T per coordinate and the common standard deviation of ln X_T."""
    x = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"x0: expected positive finite prices, received {x0!r}")
    if not (math.isfinite(vol) and vol >= 0 and math.isfinite(horizon) and horizon >= 0 and math.isfinite(drift)):
        raise ValueError(f"expected finite drift, vol >= 0 and horizon >= 0, received drift={drift!r}, "
                         f"vol={vol!r}, horizon={horizon!r}")
    return np.log(x) + (drift - 0.5 * vol * vol) * horizon, vol * math.sqrt(horizon)


def _quad(fun, a: float, b: float, points: Sequence[float] = ()) -> float:
    inner = [p for p in points if a < p < b]
    value, _ = integrate.quad(fun, a, b, points=inner or None, epsabs=0.0, epsrel=1e-12, limit=500)
    return value


def expected_min_lognormal(x0: Sequence[float] | np.ndarray, drift: float, vol: float, horizon: float) -> float:
    r""":math:`E[\min_i X^i_T]` for independent :math:`dX^i = a X^i dt + b X^i dW^i`, :math:`X^i_0 = x_0^i`.

    :math:`= \int_0^\infty \prod_i P(X^i_T > s)\,ds = \int e^{y} \exp\big(\sum_i \log\Phi(\frac{m_i - y}{v})\big)\,dy`
    with :math:`m_i = \ln x^i_0 + (a - b^2/2)T`, :math:`v = b\sqrt T`. Below :math:`y_0 = \min m_i - 40 v` the
    product is 1 to rounding and the integral is :math:`e^{y_0}`.
    """
    m, v = _lognormal_params(x0, drift, vol, horizon)
    if v == 0.0:
        return float(np.exp(m).min())
    lo, hi = float(m.min()) - _TAIL * v, float(m.min()) + _TAIL * v

    def integrand(y: float) -> float:
        return math.exp(y + float(special.log_ndtr((m - y) / v).sum()))

    centre = float(m.min())
    return math.exp(lo) + _quad(integrand, lo, hi, points=(centre - 3 * v, centre, centre + 3 * v))


def expected_max_call_lognormal(x0: Sequence[float] | np.ndarray, drift: float, vol: float, horizon: float,
                                strike: float) -> float:
    r""":math:`E[(\max_i X^i_T - K)^+]` for independent geometric Brownian motions (no discounting).

    :math:`= \int_K^\infty P(\max_i X^i_T > s)\,ds = \int_{\ln K}^\infty e^{y}\big(1 - \exp\sum_i
    \log\Phi(\frac{y - m_i}{v})\big)\,dy`, the bracket computed with ``expm1`` (no cancellation).
    """
    if not (math.isfinite(strike) and strike > 0):
        raise ValueError(f"strike: expected a positive finite K, received {strike!r}")
    m, v = _lognormal_params(x0, drift, vol, horizon)
    if v == 0.0:
        return max(float(np.exp(m).max()) - strike, 0.0)
    lo = math.log(strike)
    hi = max(float(m.max()) + _TAIL * v, lo)
    if hi <= lo:
        return 0.0

    def integrand(y: float) -> float:
        return -math.exp(y) * math.expm1(float(special.log_ndtr((y - m) / v).sum()))

    centre = float(m.max())
    return _quad(integrand, lo, hi, points=(centre - 3 * v, centre, centre + 3 * v))


def _params(problem: object, defaults: dict[str, float]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, default in defaults.items():
        value = getattr(problem, key, None) if problem is not None else None
        out[key] = default if value is None else value
    dim = int(out["dim"])
    x0 = out["x0"]
    out["x0"] = np.full(dim, float(x0)) if np.ndim(x0) == 0 else np.asarray(x0, dtype=np.float64).reshape(-1)
    if out["x0"].size != dim:
        raise ValueError(f"x0: expected {dim} coordinates (dim={dim}), received {out['x0'].size}")
    return out


def default_risk_bounds(problem: object = None) -> tuple[float, float]:
    r"""``(lower, upper)`` comparison bounds on :math:`u(0, x_0)` for the Black–Scholes default-risk model.

    Reads ``dim, horizon, x0, mu_bar, sigma_bar, delta, R, gamma_h, gamma_l`` from ``problem`` (any object;
    missing attributes take the paper's values, :data:`DEFAULT_RISK_DEFAULTS`). Module docstring for the
    maths. Defaults: (55.735, 59.181).
    """
    p = _params(problem, DEFAULT_RISK_DEFAULTS)
    if not p["gamma_l"] <= p["gamma_h"]:
        raise ValueError(f"gamma_l must not exceed gamma_h, received gamma_l={p['gamma_l']}, "
                         f"gamma_h={p['gamma_h']}")
    mean_min = expected_min_lognormal(p["x0"], p["mu_bar"], p["sigma_bar"], p["horizon"])
    rate_h = (1.0 - p["delta"]) * p["gamma_h"] + p["R"]
    rate_l = (1.0 - p["delta"]) * p["gamma_l"] + p["R"]
    bounds = (math.exp(-rate_h * p["horizon"]) * mean_min, math.exp(-rate_l * p["horizon"]) * mean_min)
    return (min(bounds), max(bounds))


def _diff_rates_price(p: dict[str, object], rate: float) -> float:
    args = (p["x0"], rate, p["sigma_bar"], p["horizon"])
    payoff = expected_max_call_lognormal(*args, strike=120.0) - 2.0 * expected_max_call_lognormal(*args, strike=150.0)
    return math.exp(-rate * p["horizon"]) * payoff


def diff_rates_linear_prices(problem: object = None) -> dict[str, float]:
    r"""The two linear (Black–Scholes) prices :math:`e^{-RT}E^R[g(X_T)]` at :math:`R = R^l` and
    :math:`R = R^b`, as ``{"r_l": ..., "r_b": ...}``; both are lower bounds for the nonlinear price."""
    p = _params(problem, DIFF_RATES_DEFAULTS)
    return {"r_l": _diff_rates_price(p, float(p["r_l"])), "r_b": _diff_rates_price(p, float(p["r_b"]))}


def diff_rates_lower_bound(problem: object = None) -> float:
    r"""Comparison lower bound :math:`\max_{R \in \{R^l, R^b\}} e^{-RT} E^R[g(X_T)]` for the
    borrowing/lending model; reads ``dim, horizon, x0, mu_bar, sigma_bar, r_l, r_b`` from ``problem``
    (missing ones: :data:`DIFF_RATES_DEFAULTS`). Defaults: 21.0932 (attained at :math:`R^b`)."""
    return max(diff_rates_linear_prices(problem).values())


def black_scholes_call(S: float, K: float, r: float, sigma: float, tau: float) -> float:
    r"""Black–Scholes (1973) call: :math:`S N(d_1) - K e^{-r\tau} N(d_2)`,
    :math:`d_{1,2} = [\ln(S/K) + (r \pm \sigma^2/2)\tau] / (\sigma\sqrt\tau)`. 10.450584 at S = K = 100,
    r = 0.05, σ = 0.2, τ = 1."""
    if not (S > 0 and K > 0 and sigma >= 0 and tau >= 0):
        raise ValueError(f"black_scholes_call: expected S > 0, K > 0, sigma >= 0, tau >= 0, received "
                         f"S={S!r}, K={K!r}, sigma={sigma!r}, tau={tau!r}")
    vol = sigma * math.sqrt(tau)
    if vol == 0.0:
        return max(S - K * math.exp(-r * tau), 0.0)
    d1 = (math.log(S / K) + (r + 0.5 * sigma * sigma) * tau) / vol
    d2 = d1 - vol
    return float(S * special.ndtr(d1) - K * math.exp(-r * tau) * special.ndtr(d2))


def geometric_basket_call(t: float, x: Sequence[float] | np.ndarray | float, *, strike: float, r: float,
                          sigma: float, rho: float, horizon: float, dim: int | None = None) -> float:
    r"""Price of the call :math:`(G(X_T) - K)^+` on the geometric average :math:`G(x) = (\prod_i x_i)^{1/d}`
    under :math:`dX^i = r X^i dt + \sigma X^i dW^i`, :math:`\mathrm{corr}(W^i, W^j) = \rho` (references.md §9).

    :math:`\ln G_T = \ln G_t + (r - \sigma^2/2)\tau + \frac\sigma d \sum_i W^i_\tau` is normal with variance
    :math:`\sigma_G^2\tau`, :math:`\sigma_G^2 = \sigma^2(1 + (d-1)\rho)/d`; so :math:`G` is a log-normal asset
    with yield :math:`q_G = (\sigma^2 - \sigma_G^2)/2` and

    .. math::
        u(t, x) = G e^{-q_G\tau} N(d_1) - K e^{-r\tau} N(d_2), \quad
        d_1 = \frac{\ln(G/K) + (r - q_G + \sigma_G^2/2)\tau}{\sigma_G\sqrt\tau}, \quad d_2 = d_1 - \sigma_G\sqrt\tau.

    ``x`` is a point (``d = len(x)``) or a float broadcast to ``dim`` coordinates. d = 100, ρ = 0, K = 100,
    r = 0.05, σ = 0.2, T = 1, x = 100: 2.971854.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        if dim is None:
            raise ValueError("x: a scalar x needs dim=... (it is broadcast to every coordinate)")
        arr = np.full(int(dim), float(arr))
    arr = arr.reshape(-1)
    d = arr.size
    if d == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"x: expected positive finite prices, received {x!r}")
    if not (-1.0 / max(d - 1, 1) <= rho <= 1.0):
        raise ValueError(f"rho: expected a correlation in [-1/(d-1), 1] = [{-1.0 / max(d - 1, 1):.4g}, 1] "
                         f"(positive semi-definite), received {rho!r}")
    if not (0.0 <= t <= horizon):
        raise ValueError(f"t: expected a time in [0, T={horizon}], received {t!r}")
    tau = horizon - t
    g = math.exp(float(np.log(arr).mean()))
    var_g = sigma * sigma * (1.0 + (d - 1) * rho) / d
    q_g = 0.5 * (sigma * sigma - var_g)
    vol = math.sqrt(max(var_g, 0.0) * tau)
    if vol == 0.0:
        return max(g * math.exp(-q_g * tau) - strike * math.exp(-r * tau), 0.0)
    d1 = (math.log(g / strike) + (r - q_g + 0.5 * var_g) * tau) / vol
    d2 = d1 - vol
    return float(g * math.exp(-q_g * tau) * special.ndtr(d1) - strike * math.exp(-r * tau) * special.ndtr(d2))
