r"""Monte Carlo reference values by the Feynman–Kac formula, for any problem with a linear driver.

If the driver is affine in :math:`y` and does not depend on :math:`z`,
:math:`f(t, x, y, z) = a(t, x)\, y + b(t, x)`, the PDE
:math:`u_t + \tfrac12\mathrm{Tr}(\sigma\sigma^\top\nabla^2 u) + \mu\cdot\nabla u + a u + b = 0`, :math:`u(T) = g`
is linear and (Feynman–Kac; Karatzas & Shreve, *Brownian Motion and Stochastic Calculus*, Thm 5.7.6)

.. math::
    u(t, x) = E\Big[e^{\int_t^T a(s, X_s) ds}\, g(X_T)
              + \int_t^T e^{\int_t^s a(r, X_r) dr}\, b(s, X_s)\, ds \,\Big|\, X_t = x\Big],

with :math:`dX = \mu\,dt + \sigma\,dW`. :func:`feynman_kac` simulates :math:`X` with the problem's own
:meth:`~deepbsde.Problem.step` (exact where the problem provides an exact transition, Euler–Maruyama
otherwise) on ``steps`` uniform steps, in float64 with a seeded :class:`torch.Generator`, in batches to
bound memory, and integrates in time by the trapezoid rule (:math:`A_{n+1} = A_n + \frac{\Delta t}2(a_n +
a_{n+1})`, likewise for the :math:`b` term), exact when :math:`a` and :math:`b` are constant. The
confidence interval is the normal one, :math:`\hat u \pm z_{(1+c)/2}\, \hat s/\sqrt n`; it covers the
Monte Carlo error only, not the time-discretisation bias of an Euler scheme for :math:`X`.

Linearity is detected, not assumed: on the first batch, at every time step and at the simulated states,
the driver is evaluated at :math:`y = 0, 1, 2` and at a random :math:`y` of the size of the payoff (so a
driver that is linear only near 0, like the default-risk intensity, is caught), with :math:`z = 0`, and at
a random :math:`z`; a mismatch beyond rounding raises :class:`ValueError` naming the problem.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from scipy import special

from deepbsde.problem import Problem, check_problem

__all__ = ["MonteCarloEstimate", "feynman_kac"]

logger = logging.getLogger(__name__)

_RTOL = 1e-9   # tolerance of the linearity checks, relative to the size of the driver values compared
_MEMORY_ELEMENTS = 2 ** 21   # floats per (batch, d) tensor


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A Monte Carlo estimate with its standard error and a normal confidence interval."""

    value: float
    stderr: float
    ci_low: float
    ci_high: float
    samples: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return (f"{self.value:.6g} ± {self.stderr:.2g} (stderr; {100 * self.confidence:g}% CI "
                f"[{self.ci_low:.6g}, {self.ci_high:.6g}], n={self.samples})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _start(problem: Problem, x: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if x is None:
        return problem.x0_tensor(dtype, device)
    point = torch.as_tensor(x, dtype=dtype).reshape(-1).to(device)
    if point.numel() == 1 and problem.dim > 1:
        point = point.expand(problem.dim).clone()
    if point.numel() != problem.dim:
        raise ValueError(f"x: expected a float or {problem.dim} coordinates (dim of {problem.name}), "
                         f"received {point.numel()} values")
    if not bool(torch.isfinite(point).all()):
        raise ValueError(f"x: expected finite coordinates, received {x!r}")
    return point


def feynman_kac(problem: Problem, *, samples: int = 100_000, steps: int = 100, seed: int = 0, t: float = 0.0,
                x: Sequence[float] | float | None = None, confidence: float = 0.95, batch: int | None = None,
                device: torch.device | str = "cpu") -> MonteCarloEstimate:
    r"""Estimate :math:`u(t, x)` (default :math:`u(0, x_0)`) by the Feynman–Kac formula (module docstring).

    Parameters
    ----------
    problem:
        Any :class:`deepbsde.Problem` whose driver is :math:`a(t,x) y + b(t,x)`; anything else raises
        :class:`ValueError`.
    samples, steps:
        Number of paths and of uniform time steps on :math:`[t, T]`.
    seed:
        Seed of the :class:`torch.Generator` (the global generator is never touched). The same seed and
        batch size give the same numbers.
    t, x:
        The point; ``x`` is ``None`` (the problem's ``x0``), a float (broadcast) or ``dim`` coordinates.
    confidence:
        Level of the normal confidence interval, in (0, 1).
    batch:
        Paths simulated at once (default: about 2M floats per ``(batch, d)`` tensor).
    device:
        Where to simulate; float64 throughout.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem: expected a deepbsde.Problem, received {type(problem).__name__}")
    if not _is_int(samples) or samples < 2:
        raise ValueError(f"samples: expected an integer >= 2, received {samples!r}")
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, received {steps!r}")
    if not _is_int(seed):
        raise ValueError(f"seed: expected an integer, received {seed!r}")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (0.0 <= t < problem.horizon):
        raise ValueError(f"t: expected a time in [0, T={problem.horizon}), received {t!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a level in (0, 1), received {confidence!r}")
    width = max(problem.dim, problem.noise_dim)
    if batch is None:
        batch = max(1, min(samples, _MEMORY_ELEMENTS // width))
    elif not _is_int(batch) or batch < 1:
        raise ValueError(f"batch: expected a positive integer, received {batch!r}")
    dtype = torch.float64
    device = torch.device(device)
    check_problem(problem, dtype=dtype, device=device)
    start = _start(problem, x, dtype, device)

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    checker = torch.Generator(device=device)    # a separate stream: the checks never shift the samples
    checker.manual_seed(seed + 0x5EED)

    dt = (problem.horizon - float(t)) / steps
    count, mean, m2 = 0, 0.0, 0.0
    first = True
    with torch.no_grad():
        while count < samples:
            n = min(batch, samples - count)
            y = _batch(problem, start, float(t), dt, steps, n, generator, checker if first else None)
            # Chan et al. (1979): merge this batch's mean and sum of squared deviations into the totals.
            b_mean = float(y.mean())
            b_m2 = float(((y - b_mean) ** 2).sum())
            total = count + n
            delta = b_mean - mean
            mean += delta * n / total
            m2 += b_m2 + delta * delta * count * n / total
            count = total
            first = False
    stderr = math.sqrt(m2 / (count - 1) / count)
    quantile = float(special.ndtri(0.5 + 0.5 * confidence))
    logger.debug("feynman_kac(%s): %.8g ± %.2g from %d paths, %d steps", problem.name, mean, stderr, count, steps)
    return MonteCarloEstimate(mean, stderr, mean - quantile * stderr, mean + quantile * stderr, count,
                              float(confidence))


def _batch(problem: Problem, start: torch.Tensor, t0: float, dt: float, steps: int, n: int,
           generator: torch.Generator, checker: torch.Generator | None) -> torch.Tensor:
    """Samples of the Feynman–Kac functional for ``n`` paths; checks linearity when ``checker`` is given."""
    dtype, device = start.dtype, start.device
    x = start.expand(n, problem.dim).clone()
    zeros_y = torch.zeros(n, 1, dtype=dtype, device=device)
    ones_y = torch.ones(n, 1, dtype=dtype, device=device)
    zeros_z = torch.zeros(n, problem.noise_dim, dtype=dtype, device=device)
    exponent = torch.zeros(n, 1, dtype=dtype, device=device)     # A_n = ∫_t^{t_n} a ds
    running = torch.zeros(n, 1, dtype=dtype, device=device)      # ∫_t^{t_n} e^{A_s} b ds
    a_prev = b_prev = None
    for k in range(steps + 1):
        tk = torch.tensor(t0 + k * dt, dtype=dtype, device=device)
        f0 = problem.driver(tk, x, zeros_y, zeros_z)
        f1 = problem.driver(tk, x, ones_y, zeros_z)
        a, b = f1 - f0, f0
        if checker is not None:
            _check_linear(problem, tk, x, f0, f1, zeros_z, checker)
        if a_prev is not None:
            new_exponent = exponent + 0.5 * dt * (a_prev + a)
            running = running + 0.5 * dt * (torch.exp(exponent) * b_prev + torch.exp(new_exponent) * b)
            exponent = new_exponent
        a_prev, b_prev = a, b
        if k < steps:
            dw = torch.randn(n, problem.noise_dim, generator=generator, dtype=dtype, device=device)
            x = problem.step(tk, x, dt, dw.mul_(math.sqrt(dt)))
    return (torch.exp(exponent) * problem.terminal(x) + running).reshape(-1)


def _check_linear(problem: Problem, tk: torch.Tensor, x: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor,
                  zeros_z: torch.Tensor, checker: torch.Generator) -> None:
    n = x.shape[0]
    dtype, device = x.dtype, x.device
    a = f1 - f0
    scale = 3.0 * (1.0 + problem.terminal(x).abs())
    u = torch.rand(n, 1, generator=checker, dtype=dtype, device=device)
    y_values = [torch.full((n, 1), 2.0, dtype=dtype, device=device), (2.0 * u - 1.0) * scale]
    when = f"t={float(tk):.4g}"
    for y in y_values:
        f = problem.driver(tk, x, y, zeros_z)
        expected = a * y + f0
        gap = (f - expected).abs()
        tol = _RTOL * (1.0 + f.abs() + (a * y).abs() + f0.abs())
        bad = gap > tol
        if bool(bad.any()):
            i = int(bad.reshape(-1).nonzero()[0])
            raise ValueError(
                f"feynman_kac: the driver of {problem.name} is not linear in y (at {when}, sample {i}: "
                f"f(y=0)={float(f0[i]):.6g}, f(y=1)={float(f1[i]):.6g}, but f(y={float(y[i]):.6g})={float(f[i]):.6g} "
                f"instead of {float(expected[i]):.6g}). The Feynman–Kac formula needs f = a(t,x) y + b(t,x); "
                f"solve a nonlinear equation with deepbsde.solve instead.")
    z = torch.randn(n, problem.noise_dim, generator=checker, dtype=dtype, device=device) * scale
    ones_y = torch.ones(n, 1, dtype=dtype, device=device)
    f = problem.driver(tk, x, ones_y, z)
    gap = (f - f1).abs()
    bad = gap > _RTOL * (1.0 + f.abs() + f1.abs())
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0])
        raise ValueError(
            f"feynman_kac: the driver of {problem.name} depends on z = σᵀ∇u (at {when}, sample {i}: "
            f"f(y=1, z=0)={float(f1[i]):.6g} but f(y=1, z=random)={float(f[i]):.6g}). The Feynman–Kac formula "
            f"needs a driver a(t,x) y + b(t,x) without z; use deepbsde.solve instead.")
