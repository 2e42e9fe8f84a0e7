r"""Expectations over a (noncentral) chi-square law by 1-D quadrature in log space.

For a Brownian motion :math:`W` in :math:`\mathbb R^d`, :math:`|x + s W_\tau|^2 = s^2 \tau\, Q` with

.. math::
    Q = \Big| \frac{x}{s\sqrt\tau} + \frac{W_\tau}{\sqrt\tau} \Big|^2 \sim \chi'^2_d(\lambda_{nc}),
    \qquad \lambda_{nc} = \frac{|x|^2}{s^2\tau},

so every expectation of a radial function of a Gaussian vector is a 1-D integral against the density
(Johnson, Kotz & Balakrishnan, *Continuous Univariate Distributions* vol. 2, ch. 29)

.. math::
    f(q; d, \lambda) = \tfrac12 e^{-(q+\lambda)/2} (q/\lambda)^{\nu/2} I_\nu(\sqrt{\lambda q}),
    \qquad \nu = d/2 - 1,

and :math:`f(q; d, 0) = q^{d/2-1} e^{-q/2} / (2^{d/2}\Gamma(d/2))`.

Why our own log-density: ``scipy.stats.ncx2.logpdf`` returns ``-inf`` far in the left tail for large
``d`` (e.g. ``ncx2.logpdf(1, 10000, 10000)``), exactly the region that dominates
:math:`E[(1 + cQ)^{-\lambda}]` for large :math:`\lambda`. Here

.. math::
    \log f = -\log 2 - \tfrac12(\sqrt q - \sqrt\lambda)^2 + \tfrac\nu2 \log(q/\lambda)
             + \log\big(e^{-z} I_\nu(z)\big), \qquad z = \sqrt{\lambda q},

where the exponentially scaled Bessel function is taken from ``scipy.special.ive`` for
:math:`\nu < 60` (with its power series where ``ive`` underflows) and from Debye's uniform asymptotic
expansion (DLMF 10.41.3, coefficients :math:`u_1..u_4` of DLMF 10.41.10) for :math:`\nu \ge 60`, whose
relative error is below :math:`|u_5|/\nu^5 < 10^{-9}` there. The cancellation between
:math:`-(q+\lambda)/2` and :math:`\log I_\nu(z) \approx z` is removed analytically, so the density stays
accurate even when :math:`\lambda` is huge (close to the horizon).

The integral :math:`\int e^{\psi(q)} f(q)\,dq` is computed in the variable :math:`\sigma = \ln q`, where the
integrand :math:`\exp(\sigma + \psi(e^\sigma) + \log f(e^\sigma))` is analytic and decays at both ends.
The mode is located numerically, the interval is cut where the log-integrand has dropped by 60 below its
maximum (relative mass below :math:`10^{-24}`), and the trapezoid rule (exponentially convergent for such
integrands; Trefethen & Weideman, SIAM Review 2014) is refined by doubling until two successive values
agree to :math:`10^{-13}` relative.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import optimize, special

__all__ = ["ncx2_logpdf", "log_ive", "log_expectation"]

_DEBYE_MIN_ORDER = 60.0
_CUT = 60.0          # drop of the log-integrand at which the domain is truncated
_RTOL = 1e-13        # trapezoid doubling stops when successive values agree to this


def _debye_log_ive(nu: float, z: np.ndarray) -> np.ndarray:
    r""":math:`\log(e^{-z} I_\nu(z))` by Debye's expansion (DLMF 10.41.3), ``nu >= 60``, ``z > 0``."""
    w = z / nu
    root = np.sqrt(1.0 + w * w)
    p = 1.0 / root
    p2 = p * p
    u1 = p * (3.0 - 5.0 * p2) / 24.0
    u2 = p2 * (81.0 - 462.0 * p2 + 385.0 * p2 * p2) / 1152.0
    u3 = p * p2 * (30375.0 - 369603.0 * p2 + 765765.0 * p2 ** 2 - 425425.0 * p2 ** 3) / 414720.0
    u4 = p2 * p2 * (4465125.0 - 94121676.0 * p2 + 349922430.0 * p2 ** 2 - 446185740.0 * p2 ** 3
                    + 185910725.0 * p2 ** 4) / 39813120.0
    series = 1.0 + u1 / nu + u2 / nu ** 2 + u3 / nu ** 3 + u4 / nu ** 4
    # nu*eta - z = nu*(root - w) + nu*log(w / (1 + root)), with root - w = 1 / (root + w) (no cancellation)
    return (-0.5 * np.log(2.0 * math.pi * nu) - 0.5 * np.log(root) + nu / (root + w)
            + nu * np.log(w / (1.0 + root)) + np.log(series))


def log_ive(nu: float, z: np.ndarray) -> np.ndarray:
    r""":math:`\log(e^{-z} I_\nu(z))` for ``nu >= -1/2`` and ``z > 0``, without underflow."""
    z = np.asarray(z, dtype=np.float64)
    if nu >= _DEBYE_MIN_ORDER:
        return _debye_log_ive(nu, z)
    large = z > 1e8   # scipy's ive returns nan from z ~ 1e10 on: Hankel expansion (DLMF 10.40.1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(special.ive(nu, np.where(large, 1.0, z)))
    if np.any(large):
        zl = z[large]
        mu = 4.0 * nu * nu
        a1 = (mu - 1.0) / (8.0 * zl)
        a2 = a1 * (mu - 9.0) / (2.0 * 8.0 * zl)
        a3 = a2 * (mu - 25.0) / (3.0 * 8.0 * zl)
        out[large] = -0.5 * np.log(2.0 * math.pi * zl) + np.log1p(-a1 + a2 - a3)
    small = ~(out > -650.0)   # ive underflowed or is subnormal: z << nu, use the power series
    if np.any(small):
        zs = z[small]
        q = 0.25 * zs * zs
        # log I_nu(z) = nu log(z/2) - lgamma(nu+1) + log(1 + q/(nu+1) + q^2/(2 (nu+1)(nu+2)) + ...)
        tail = np.log1p(q / (nu + 1.0) * (1.0 + q / (2.0 * (nu + 2.0)) * (1.0 + q / (3.0 * (nu + 3.0)))))
        out[small] = nu * np.log(0.5 * zs) - special.gammaln(nu + 1.0) + tail - zs
    return out


def ncx2_logpdf(q: np.ndarray, dim: int, nc: float) -> np.ndarray:
    r"""Log-density of the noncentral :math:`\chi^2_d(\lambda)` law at ``q > 0`` (see module docstring)."""
    q = np.asarray(q, dtype=np.float64)
    return _ncx2_logpdf_offset(1.0, np.log(q), dim, nc)


def _ncx2_logpdf_offset(q_star: float, h: np.ndarray, dim: int, nc: float) -> np.ndarray:
    r""":func:`ncx2_logpdf` at :math:`q = q_* e^h`.

    Written so that the result is a smooth function of ``h`` to rounding even when the peak is extremely
    narrow (huge ``nc``): :math:`\sqrt q - \sqrt\lambda = \sqrt{q_*}\,\mathrm{expm1}(h/2)
    + (\sqrt{q_*} - \sqrt\lambda)`, the second term a constant.
    """
    h = np.asarray(h, dtype=np.float64)
    k = float(dim)
    log_q = math.log(q_star) + h
    if nc == 0.0:
        q = q_star * np.exp(h)
        return (0.5 * k - 1.0) * log_q - 0.5 * q - 0.5 * k * math.log(2.0) - special.gammaln(0.5 * k)
    nu = 0.5 * k - 1.0
    root_star = math.sqrt(q_star)
    gap = root_star * np.expm1(0.5 * h) + (root_star - math.sqrt(nc))
    z = math.sqrt(nc) * root_star * np.exp(0.5 * h)
    return (-math.log(2.0) - 0.5 * gap * gap + 0.5 * nu * (log_q - math.log(nc)) + log_ive(nu, z))


def log_expectation(log_weight: Callable[[np.ndarray], np.ndarray], dim: int, nc: float) -> float:
    r""":math:`\log E[\exp(\psi(Q))]` for :math:`Q \sim \chi'^2_d(\lambda_{nc})`, ``psi = log_weight``.

    ``log_weight`` maps an array of ``q > 0`` to :math:`\psi(q)` (it must be smooth in :math:`\ln q` and
    grow slower than :math:`q/2`). The integral is done in :math:`\sigma = \ln q` as described in the
    module docstring; the result is accurate to about :math:`10^{-12}` relative.
    """
    if not (isinstance(dim, (int, np.integer)) and dim >= 1):
        raise ValueError(f"dim: expected a positive integer, received {dim!r}")
    if not (math.isfinite(nc) and nc >= 0.0):
        raise ValueError(f"nc: expected a finite noncentrality >= 0, received {nc!r}")

    def phi(s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        q = np.exp(s)
        return s + ncx2_logpdf(q, int(dim), nc) + log_weight(q)

    def phi1(s: float) -> float:
        return float(phi(np.array([s]))[0])

    # Bracket the mode: the density's bulk sits near q ~ d + nc; the weight only moves mass left.
    mean = float(dim) + nc
    spread = math.sqrt(2.0 * (float(dim) + 2.0 * nc))
    s_hi = math.log(mean + 40.0 * spread + 200.0)
    s_lo = max(math.log(mean) - 700.0, -700.0)
    grid = np.linspace(s_lo, s_hi, 4001)
    values = phi(grid)
    j = int(np.nanargmax(values))
    a, b = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
    res = optimize.minimize_scalar(lambda s: -phi1(s), bounds=(a, b), method="bounded",
                                   options={"xatol": 1e-12 * max(1.0, abs(grid[j]))})
    s_star = float(res.x) if -res.fun >= values[j] else float(grid[j])
    if not math.isfinite(phi1(s_star)):
        raise FloatingPointError(f"log_expectation: non-finite integrand at its mode (dim={dim}, nc={nc})")

    # Near the mode, work in the offset h = ln q - s_star with q = q_star e^h: q then carries full relative
    # precision however narrow the peak (rounding s itself would jitter the nodes when ln q is large).
    q_star, log_q_star = math.exp(s_star), s_star

    def phi_h(h: np.ndarray) -> np.ndarray:
        h = np.asarray(h, dtype=np.float64)
        q = q_star * np.exp(h)
        return (log_q_star + h) + _ncx2_logpdf_offset(q_star, h, int(dim), nc) + log_weight(q)

    def phi_h1(h: float) -> float:
        return float(phi_h(np.array([h]))[0])

    top = phi_h1(0.0)
    # Width of the peak from the curvature (sets the step sizes below, so a very narrow peak is resolved).
    density_width = spread / mean
    delta = min(1e-3, 1e-2 * density_width)
    curvature = -(phi_h1(delta) - 2.0 * top + phi_h1(-delta)) / (delta * delta)
    width = 1.0 / math.sqrt(curvature) if curvature > 0.0 and math.isfinite(curvature) else density_width

    def edge(direction: float) -> float:
        step = 0.5 * width
        h = 0.0
        for _ in range(400):
            h_next = h + direction * step
            if not phi_h1(h_next) > top - _CUT:   # also stops on -inf / nan far out
                return h_next
            h, step = h_next, step * 1.5
        raise FloatingPointError(f"log_expectation: integrand does not decay (dim={dim}, nc={nc})")

    left, right = edge(-1.0), edge(+1.0)
    n = max(256, int(2 ** math.ceil(math.log2(4.0 * (right - left) / width))))
    previous = None
    while True:
        h = np.linspace(left, right, n + 1)
        v = np.exp(phi_h(h) - top)
        v = np.where(np.isfinite(v), v, 0.0)
        integral = (h[1] - h[0]) * (v.sum() - 0.5 * (v[0] + v[-1]))
        if previous is not None and abs(integral - previous) <= _RTOL * integral:
            if not (integral > 0.0 and math.isfinite(integral)):
                raise FloatingPointError(f"log_expectation: integral {integral!r} (dim={dim}, nc={nc})")
            return top + math.log(integral)
        if n > 2 ** 22:
            raise FloatingPointError(f"log_expectation: trapezoid rule did not converge (dim={dim}, nc={nc}, "
                                     f"last two values {previous!r}, {integral!r})")
        previous, n = integral, 2 * n
