r"""Reference values for the HJB equation of a linear-quadratic control problem (Han, Jentzen & E, PNAS 2018).

The PDE and its control problem (references.md §2):

.. math::
    u_t + \Delta u - \lambda |\nabla u|^2 = 0, \qquad u(T, x) = g(x) = \ln\tfrac12(1 + |x|^2),

the value function of :math:`dX = 2\sqrt\lambda\, m\,dt + \sqrt2\,dW`, minimise
:math:`E[\int_t^T |m_s|^2 ds + g(X_T)]`.

**Cole–Hopf.** With :math:`w = e^{-\lambda u}`: :math:`w_t = -\lambda u_t w`, :math:`\nabla w = -\lambda w\nabla u`,
:math:`\Delta w = -\lambda w \Delta u + \lambda^2 w |\nabla u|^2`, hence
:math:`w_t + \Delta w = -\lambda w (u_t + \Delta u - \lambda|\nabla u|^2) = 0`: the heat equation, so
:math:`w(t, x) = E[w(T, x + \sqrt2 W_\tau)]` with :math:`\tau = T - t` (generator of :math:`\sqrt2 W` is
:math:`\Delta`), and

.. math::
    u(t, x) = -\frac1\lambda \ln E\big[\exp(-\lambda\, g(x + \sqrt2 W_\tau))\big].

**Reduction to one dimension.** :math:`x + \sqrt2 W_\tau = \sqrt{2\tau}\,(x/\sqrt{2\tau} + W_\tau/\sqrt\tau)`, and
:math:`W_\tau/\sqrt\tau` is standard normal in :math:`\mathbb R^d`, so :math:`|x + \sqrt2 W_\tau|^2 = 2\tau Q` with
:math:`Q \sim \chi'^2_d(|x|^2 / (2\tau))`. Therefore

.. math::
    u(t, x) = -\frac1\lambda \ln E\Big[\Big(\frac{2}{1 + 2\tau Q}\Big)^\lambda\Big]
            = -\ln 2 - \frac1\lambda \ln E\big[\exp(-\lambda \ln(1 + 2\tau Q))\big],

a 1-D integral done in log space by :func:`~equations.calculators.noncentral_chi2.log_expectation` (accurate
to about 1e-12 relative for any ``d`` and any ``λ``; for large ``λ`` the integrand lives in the far left tail
of the law of ``Q``, where plain Monte Carlo is biased: references.md §2). As :math:`\lambda \to 0` the value
tends to the uncontrolled mean :math:`E[g(x + \sqrt2 W_\tau)]` (:func:`hjb_lq_uncontrolled`); Jensen's
inequality gives :math:`u \le E[g]` for every :math:`\lambda > 0`.

Values (ours, this module): d = 100, λ = 1, T = 1, x = 0: u = 4.590162 (references.md table row 2);
E[g(X_T)] = 4.600226.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from .noncentral_chi2 import log_expectation

__all__ = ["hjb_lq_value", "hjb_lq_slope", "hjb_lq_uncontrolled", "hjb_lq_monte_carlo", "hjb_lq_terminal"]


def hjb_lq_terminal(x: Sequence[float] | np.ndarray) -> float:
    r""":math:`g(x) = \ln\tfrac12(1 + |x|^2)`."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    return float(math.log1p(float(x @ x)) - math.log(2.0))


def _point(t: float, x: object, horizon: float, dim: int | None) -> tuple[float, float, int]:
    """Validate ``(t, x, horizon)``; return ``(tau, |x|^2, d)``."""
    if not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon: expected a positive finite T, received {horizon!r}")
    if not (isinstance(t, (int, float)) and math.isfinite(t) and 0.0 <= t <= horizon):
        raise ValueError(f"t: expected a time in [0, T={horizon}], received {t!r}")
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        if dim is None:
            raise ValueError("x: a scalar x is broadcast to every coordinate and needs dim=...; "
                             f"received x={x!r} and no dim")
        arr = np.full(int(dim), float(arr))
    arr = arr.reshape(-1)
    if dim is not None and arr.size != dim:
        raise ValueError(f"x: expected {dim} coordinates (dim={dim}), received {arr.size}")
    if arr.size < 1 or not np.all(np.isfinite(arr)):
        raise ValueError(f"x: expected a finite point in R^d, received {x!r}")
    return float(horizon) - float(t), float(arr @ arr), int(arr.size)


def _check_lam(lam: object) -> float:
    if isinstance(lam, bool) or not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam: expected a positive finite λ, received {lam!r}")
    return float(lam)


@functools.lru_cache(maxsize=1024)
def _value(tau: float, r2: float, dim: int, lam: float) -> float:
    if tau == 0.0:  # g(x) = ln(½(1 + |x|²)), written as HJBLQ.terminal writes it (the same bits)
        return math.log(0.5 * (1.0 + r2))
    c = 2.0 * tau
    log_mean = log_expectation(lambda q: -lam * np.log1p(c * q), dim, r2 / c)
    return -math.log(2.0) - log_mean / lam


@functools.lru_cache(maxsize=1024)
def _slope(tau: float, r2: float, dim: int, lam: float) -> float:
    if tau == 0.0:
        return 1.0 / (1.0 + r2)
    c = 2.0 * tau
    log_weight = lambda q: -lam * np.log1p(c * q)  # noqa: E731
    log_k = log_expectation(log_weight, dim, r2 / c)
    log_k2 = log_expectation(log_weight, dim + 2, r2 / c)
    return -math.expm1(log_k2 - log_k) / (2.0 * lam * c)


@functools.lru_cache(maxsize=1024)
def _uncontrolled(tau: float, r2: float, dim: int) -> float:
    if tau == 0.0:  # g(x) = ln(½(1 + |x|²)), written as HJBLQ.terminal writes it (the same bits)
        return math.log(0.5 * (1.0 + r2))
    c = 2.0 * tau
    # ln(1 + cq) > 0 for q > 0, so log E[ln(1 + cQ)] is a log-expectation of exp(ln ln(1 + cQ)).
    with np.errstate(divide="ignore"):
        log_mean = log_expectation(lambda q: np.log(np.log1p(c * q)), dim, r2 / c)
    return math.exp(log_mean) - math.log(2.0)


def hjb_lq_value(t: float, x: Sequence[float] | np.ndarray | float, *, lam: float, horizon: float,
                 dim: int | None = None) -> float:
    r""":math:`u(t, x)` of :math:`u_t + \Delta u - \lambda|\nabla u|^2 = 0`, :math:`u(T) = \ln\frac12(1+|x|^2)`.

    Cole–Hopf and a 1-D noncentral-:math:`\chi^2` quadrature (module docstring). ``x`` is a point of
    :math:`\mathbb R^d` (``d = len(x)``), or a float broadcast to ``dim`` coordinates. Accurate to about
    1e-12 relative for d = 1 .. 10⁵ and λ = 0.01 .. 100 (and beyond; below λ ≈ 1e-6 the absolute error grows
    like 1e-13/λ, use :func:`hjb_lq_uncontrolled` there). At ``t = T`` returns ``g(x)``.
    Results are cached on ``(T - t, |x|², d, λ)``.
    """
    tau, r2, d = _point(t, x, horizon, dim)
    return _value(tau, r2, d, _check_lam(lam))


def hjb_lq_slope(t: float, x: Sequence[float] | np.ndarray | float, *, lam: float, horizon: float,
                 dim: int | None = None) -> float:
    r""":math:`\partial u / \partial(|x|^2)` at ``(t, x)`` (``u`` of :func:`hjb_lq_value` depends on ``x`` only
    through :math:`|x|^2`), so that :math:`\nabla u(t, x) = 2x\,\partial u/\partial(|x|^2)`.

    With :math:`c = 2\tau`, :math:`h(q) = (1 + cq)^{-\lambda}` and :math:`E_k = E[h(Q_k)]`,
    :math:`Q_k \sim \chi'^2_k(|x|^2/c)`: the noncentral density satisfies
    :math:`\partial_\nu f(q; k, \nu) = \tfrac12 (f(q; k+2, \nu) - f(q; k, \nu))` (differentiate its Poisson
    mixture of central densities term by term), hence

    .. math::
        \frac{\partial u}{\partial |x|^2} = -\frac{1}{\lambda}\,\frac{\partial_{|x|^2} E_d}{E_d}
            = -\frac{1}{2\lambda c}\Big(\frac{E_{d+2}}{E_d} - 1\Big),

    two log-expectations of the same quadrature (their difference taken with ``expm1``; absolute error about
    1e-12 in the ratio). At ``t = T``: :math:`g'(r^2) = 1/(1 + |x|^2)`. Cached like :func:`hjb_lq_value`.
    """
    tau, r2, d = _point(t, x, horizon, dim)
    return _slope(tau, r2, d, _check_lam(lam))


def hjb_lq_uncontrolled(t: float, x: Sequence[float] | np.ndarray | float, *, horizon: float,
                        dim: int | None = None) -> float:
    r""":math:`E[g(x + \sqrt2 W_{T-t})]`, the :math:`\lambda \to 0` limit of :func:`hjb_lq_value`.

    Equal to :math:`E[\ln(1 + 2\tau Q)] - \ln 2` with :math:`Q \sim \chi'^2_d(|x|^2/(2\tau))`, by the same
    quadrature. At d = 100, T = 1, x = 0: 4.600226.
    """
    tau, r2, d = _point(t, x, horizon, dim)
    return _uncontrolled(tau, r2, d)


def hjb_lq_monte_carlo(t: float, x: Sequence[float] | np.ndarray | float, *, lam: float, horizon: float,
                       samples: int = 100_000, seed: int = 0, dim: int | None = None,
                       batch: int | None = None) -> tuple[float, float]:
    r"""Plain Monte Carlo estimate of the Cole–Hopf formula, for cross-checks: ``(estimate, stderr)``.

    Draws :math:`X = x + \sqrt{2\tau}\,\xi`, :math:`\xi \sim N(0, I_d)` (the full d-dimensional Gaussian, so the
    :math:`\chi^2` reduction is checked too), and returns :math:`-\frac1\lambda \ln \overline{w}` with
    :math:`w = e^{-\lambda g(X)}` (computed with a shift so nothing overflows), and the delta-method
    standard error :math:`s_w / (\lambda\, \overline w \sqrt n)`. The estimator has an :math:`O(1/n)` bias
    (Jensen) and for large λ the weights are dominated by rare samples: trust it only where the
    effective sample size is large (λ of order 1 or less).
    """
    tau, _, d = _point(t, x, horizon, dim)
    lam = _check_lam(lam)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples: expected an integer >= 2, received {samples!r}")
    point = np.asarray(x, dtype=np.float64)
    point = np.full(d, float(point)) if point.ndim == 0 else point.reshape(-1)
    rng = np.random.default_rng(seed)
    batch = batch or max(1, min(samples, 4_000_000 // d))
    log_w = np.empty(samples)
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        xt = point + math.sqrt(2.0 * tau) * rng.standard_normal((n, d))
        g = np.log1p(np.einsum("ij,ij->i", xt, xt)) - math.log(2.0)
        log_w[done:done + n] = -lam * g
        done += n
    shift = float(log_w.max())
    w = np.exp(log_w - shift)
    mean = float(w.mean())
    std = float(w.std(ddof=1))
    estimate = -(math.log(mean) + shift) / lam
    stderr = std / (lam * mean * math.sqrt(samples))
    return estimate, stderr
