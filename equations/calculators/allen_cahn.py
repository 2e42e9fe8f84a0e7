r"""Reference values for the Allen–Cahn equation (Han, Jentzen & E, PNAS 2018) by a radial 1-D PDE solve.

.. math::
    u_t + \Delta u + u - u^3 = 0 \ \text{on}\ [0, T) \times \mathbb R^d, \qquad
    u(T, x) = g(x) = \frac{1}{2 + 0.4|x|^2}.

The data are radial, the equation is rotation invariant and its solution is unique, so
:math:`u(t, x) = v(T - t, |x|)` where, in the time to maturity :math:`s = T - t`,

.. math::
    v_s = v_{rr} + \frac{d-1}{r} v_r + v - v^3, \qquad v(0, r) = \frac{1}{2 + 0.4 r^2}, \qquad v_r(s, 0) = 0.

At :math:`r = 0` the radial Laplacian is :math:`d\, v_{rr}` (l'Hôpital, since :math:`v_r(s,0) = 0`).

**Scheme.** Uniform grid :math:`r_i = i h`, :math:`i = 0..n`, :math:`h = R/n`; second-order central differences
:math:`v_{rr} + \frac{d-1}{r_i}\frac{v_{i+1} - v_{i-1}}{2h}` for :math:`i \ge 1` and the symmetric closure
:math:`2d (v_1 - v_0)/h^2` at :math:`r = 0` (ghost node :math:`v_{-1} = v_1`). Time: Strang splitting
(Strang 1968) of half a step of the reaction :math:`v' = v - v^3`, solved exactly,

.. math::
    v \mapsto \frac{v\, e^{\tau}}{\sqrt{1 + v^2 (e^{2\tau} - 1)}}

(from :math:`(v^{-2})' = 2 - 2 v^{-2}`), a Crank–Nicolson step of the diffusion, and another half reaction
step. The first two Crank–Nicolson steps are replaced by four implicit-Euler half-steps (Rannacher 1984):
the discrete operator has eigenvalues of size :math:`2d/h^2` near :math:`r = 0`, which Crank–Nicolson
does not damp; without the start-up the error is erratic for :math:`d \gtrsim 10^3`. The scheme is second
order in :math:`h` and :math:`\Delta t` (:func:`allen_cahn_refinement` shows the ratio 4 per halving).

**Far boundary.** At :math:`r = R` we impose the reaction flow of :math:`g(R)` (the solution with the
diffusion switched off, which is what the equation does where :math:`g` is flat). Why the choice of
:math:`R` does not matter: the true solution and the computed one both lie in :math:`[0, 1]`
(comparison principle: 0 and 1 are solutions, :math:`0 < g \le 1/2`). Their difference :math:`w` solves a
linear equation :math:`w_s = \Delta w + c\, w` with :math:`c = 1 - (v^2 + v\tilde v + \tilde v^2) \le 1`,
so by Feynman–Kac :math:`|w(s, r_0)| \le e^{s}\, P(\sup_{\sigma \le s} |x_0 + \sqrt2 W_\sigma| \ge R)` with
:math:`|x_0| = r_0`. By the triangle inequality and Doob's maximal inequality for the submartingale
:math:`e^{\theta |W_\sigma|^2}` this probability is at most the Chernoff bound of
:math:`\chi^2_d`: :math:`\exp(-\tfrac d2 (u - 1 - \ln u))` with :math:`(R - r_0)^2 = 2 s d u`. We take the
:math:`u > 1` that makes it :math:`10^{-14} e^{-s}`, so the boundary contributes below :math:`10^{-14}`.
For d = 100, T = 0.3 this gives R = 12.5 (the mass of :math:`|\sqrt2 W_T|` sits near
:math:`\sqrt{2dT} = 7.7`).

Value (ours, this module): d = 100, T = 0.3, u(0, 0) = 0.05278136 (references.md row 1; the published
0.052802 from a branching-diffusion estimate is 0.04 % high). With the default grid the relative error is
about 1.4e-7 there (error estimated from the refinement study); the solve takes about 0.2 s and
is cached.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.linalg.lapack import dgttrf, dgttrs

__all__ = ["allen_cahn_value", "allen_cahn_profile", "allen_cahn_grid", "allen_cahn_refinement",
           "allen_cahn_terminal", "reaction_flow", "domain_radius", "Refinement",
           "DEFAULT_POINTS", "DEFAULT_STEPS"]

DEFAULT_POINTS = 4000
DEFAULT_STEPS = 2000
_BOUNDARY_EPS = 1e-14
_RANNACHER_STEPS = 2


def allen_cahn_terminal(r: np.ndarray | float) -> np.ndarray:
    r""":math:`g = 1 / (2 + 0.4 r^2)` as a function of :math:`r = |x|`."""
    r = np.asarray(r, dtype=np.float64)
    return 1.0 / (2.0 + 0.4 * r * r)


def reaction_flow(v: np.ndarray, tau: float) -> np.ndarray:
    r"""Exact flow of :math:`v' = v - v^3` over a time ``tau``: :math:`v e^\tau / \sqrt{1 + v^2(e^{2\tau} - 1)}`."""
    v = np.asarray(v, dtype=np.float64)
    return v * math.exp(tau) / np.sqrt(1.0 + v * v * math.expm1(2.0 * tau))


def domain_radius(dim: int, tau: float, r_max: float = 0.0, eps: float = _BOUNDARY_EPS) -> float:
    r"""Far-boundary radius :math:`R = r_{max} + \sqrt{2\tau d u}` with
    :math:`\exp(-\frac d2(u - 1 - \ln u)) = \varepsilon e^{-\tau}` (module docstring)."""
    target = math.log(1.0 / eps) + tau
    # the left side grows monotonically in u > 1: bisection in log u (to a relative 1e-14; scipy's brentq gave
    # the same radius, and its import cost more than the whole solve)
    lo, hi = 1e-12, math.log(1e9)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        u = math.exp(mid)
        if 0.5 * dim * (u - 1.0 - mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-14:
            break
    u = math.exp(0.5 * (lo + hi))
    return float(r_max) + math.sqrt(2.0 * tau * dim * u)


def _check(dim: object, horizon: object, t: object, points: object, steps: object) -> float:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim: expected a positive integer, received {dim!r}")
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)) or not (
            math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon: expected a positive finite T, received {horizon!r}")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and 0.0 <= t <= horizon):
        raise ValueError(f"t: expected a time in [0, T={horizon}], received {t!r}")
    for name, value, low in (("points", points, 8), ("steps", steps, 2 * _RANNACHER_STEPS)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, received {value!r}")
    return float(horizon) - float(t)


@functools.lru_cache(maxsize=64)
def _solve(tau: float, dim: int, r_max: float, points: int, steps: int,
           reaction: bool) -> tuple[np.ndarray, np.ndarray]:
    n = points
    big_r = domain_radius(dim, tau, r_max)
    h = big_r / n
    r = np.arange(n + 1) * h
    v = allen_cahn_terminal(r)
    if tau == 0.0:
        return _frozen(r), _frozen(v)
    # Operator L on nodes 0..n-1 (node n is the Dirichlet boundary): sub-, main and super-diagonal.
    lower = np.zeros(n)      # coefficient of v_{i-1} in row i, rows 1..n (row n: boundary, zero)
    main = np.zeros(n + 1)
    upper = np.zeros(n)      # coefficient of v_{i+1} in row i, rows 0..n-1
    main[0], upper[0] = -2.0 * dim / h ** 2, 2.0 * dim / h ** 2
    i = np.arange(1, n)
    drift = (dim - 1) / (2.0 * r[i] * h)
    lower[i - 1] = 1.0 / h ** 2 - drift
    main[i] = -2.0 / h ** 2
    upper[i] = 1.0 / h ** 2 + drift

    def factor(theta: float) -> tuple:
        """LU factors of I - theta L (identity row for the boundary node)."""
        dl, d, du = -theta * lower, 1.0 - theta * main, -theta * upper
        d[n] = 1.0
        factors = dgttrf(dl, d, du)
        if factors[-1] != 0:
            raise FloatingPointError(f"allen_cahn: tridiagonal factorisation failed (info={factors[-1]})")
        return factors[:5]

    def explicit(w: np.ndarray, theta: float) -> np.ndarray:
        out = w.copy()
        out[:n] += theta * (main[:n] * w[:n] + upper * w[1:])
        out[1:n] += theta * lower[:n - 1] * w[:n - 1]
        return out

    dt = tau / steps
    crank_nicolson = factor(0.5 * dt)
    implicit_half = factor(0.5 * dt)   # implicit Euler over dt/2 has the same matrix I - (dt/2) L
    half = 0.5 * dt
    for k in range(steps):
        if reaction:
            v = reaction_flow(v, half)
        if k < _RANNACHER_STEPS:
            v = dgttrs(*implicit_half, v)[0]
            v = dgttrs(*implicit_half, v)[0]
        else:
            v = dgttrs(*crank_nicolson, explicit(v, half))[0]
        if reaction:
            v = reaction_flow(v, half)
    return _frozen(r), _frozen(v)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def allen_cahn_grid(t: float = 0.0, *, dim: int, horizon: float, r_max: float = 0.0,
                    points: int = DEFAULT_POINTS, steps: int = DEFAULT_STEPS,
                    reaction: bool = True) -> tuple[np.ndarray, np.ndarray]:
    r"""The grid ``r`` (from 0 to the far boundary :math:`R`, ``points + 1`` nodes) and ``v(T - t, r)``.

    ``r_max`` is the largest radius the caller needs; the far boundary is placed beyond it (module
    docstring). ``reaction=False`` solves the heat equation :math:`v_s = v_{rr} + \frac{d-1}{r} v_r` with the
    same scheme, for verification against :math:`E[g(x + \sqrt2 W_{T-t})]`. Cached; read-only arrays.
    """
    tau = _check(dim, horizon, t, points, steps)
    if not (math.isfinite(r_max) and r_max >= 0.0):
        raise ValueError(f"r_max: expected a radius >= 0, received {r_max!r}")
    return _solve(tau, int(dim), float(r_max), int(points), int(steps), bool(reaction))


def allen_cahn_profile(t: float, radii: Sequence[float] | np.ndarray | float, *, dim: int, horizon: float,
                       points: int = DEFAULT_POINTS, steps: int = DEFAULT_STEPS,
                       reaction: bool = True) -> np.ndarray:
    r""":math:`u(t, x)` for :math:`|x|` in ``radii`` (an array of the same shape), by one radial solve.

    Between grid nodes the profile is interpolated by a cubic spline with :math:`v_r(0) = 0` (error
    :math:`O(h^4)`, below the scheme's :math:`O(h^2)`).
    """
    radii_arr = np.asarray(radii, dtype=np.float64)
    if radii_arr.size == 0 or not np.all(np.isfinite(radii_arr)) or np.any(radii_arr < 0):
        raise ValueError(f"radii: expected finite radii >= 0, received {radii!r}")
    r, v = allen_cahn_grid(t, dim=dim, horizon=horizon, r_max=float(radii_arr.max()), points=points,
                           steps=steps, reaction=reaction)
    on_origin = radii_arr == 0.0
    if on_origin.all():  # the grid's first node: no spline (importing scipy.interpolate took longer than the solve)
        return np.full(radii_arr.shape, v[0])
    from scipy import interpolate

    spline = interpolate.CubicSpline(r, v, bc_type=((1, 0.0), "not-a-knot"))
    return np.where(on_origin, v[0], spline(radii_arr))


@functools.lru_cache(maxsize=256)
def _value(t: float, horizon: float, radius: float, dim: int, points: int, steps: int) -> float:
    return float(allen_cahn_profile(t, radius, dim=dim, horizon=horizon, points=points, steps=steps))


def allen_cahn_value(t: float, radius: float, *, dim: int, horizon: float,
                     points: int = DEFAULT_POINTS, steps: int = DEFAULT_STEPS) -> float:
    r""":math:`u(t, x)` at :math:`|x| = ` ``radius`` for :math:`u_t + \Delta u + u - u^3 = 0`,
    :math:`u(T) = 1/(2 + 0.4|x|^2)`, in dimension ``dim`` (radial solve, module docstring; cached).

    d = 100, T = 0.3, t = 0, radius 0 gives 0.0527814 (references.md row 1).
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (
            math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius: expected a finite |x| >= 0, received {radius!r}")
    _check(dim, horizon, t, points, steps)
    return _value(float(t), float(horizon), float(radius), int(dim), int(points), int(steps))


@dataclass(frozen=True)
class Refinement:
    """One level of a grid-refinement study: grid sizes, the value, and the change from the level before."""

    points: int
    steps: int
    value: float
    change: float | None
    ratio: float | None   # previous change / this change: about 4 for a second-order scheme


def allen_cahn_refinement(t: float = 0.0, radius: float = 0.0, *, dim: int, horizon: float, levels: int = 5,
                          points: int = 250, steps: int = 125) -> list[Refinement]:
    """Values at successive refinements, halving ``h`` and ``Δt`` together at each level.

    For a second-order scheme the changes shrink by about 4 per level (``ratio``), and the last change over
    3 estimates the error of the last value (Richardson).
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels: expected an integer >= 2, received {levels!r}")
    out: list[Refinement] = []
    for level in range(levels):
        n, m = points * 2 ** level, steps * 2 ** level
        value = allen_cahn_value(t, radius, dim=dim, horizon=horizon, points=n, steps=m)
        change = None if not out else value - out[-1].value
        ratio = None
        if change is not None and out[-1].change is not None and change != 0.0:
            ratio = out[-1].change / change
        out.append(Refinement(n, m, value, change, ratio))
    return out
