r"""Reference :math:`u` and :math:`\nabla u` at any points, one entry point for the whole catalogue.

``Problem.reference()`` gives the trusted :math:`u(0, x_0)` only. To compare a trained solution away from
:math:`x_0` (``deepbsde.Solution.u``, ``grad_u``), use

* :func:`reference_u` ``(problem, t, x)``: :math:`u(t, x)`, shape ``(B, 1)``;
* :func:`reference_grad` ``(problem, t, x)``: :math:`\nabla u(t, x)` (the gradient, not
  :math:`z = \sigma^\top\nabla u`), shape ``(B, d)``;
* :func:`has_reference_at` ``(problem)``: whether they work for ``problem``.

Where they come from, in this order:

1. a problem's own ``reference_at(t, x)`` / ``reference_grad_at(t, x)``: numerical references that are not
   differentiable torch closed forms (:class:`~equations.HJBLQ`: Cole-Hopf quadrature, with the derivative
   of the integral in closed form; :class:`~equations.AllenCahn`: the radial 1-D solve and its spline);
2. ``exact_solution`` (heat, Black-Scholes-Barenblatt, geometric basket, Burgers type, quadratic gradient,
   reaction-diffusion, and any user problem with one): evaluated in float64, :math:`\nabla u` by autograd;
3. a :class:`deepbsde.ResidualProblem`'s ``reference_solution`` (``u`` only).

A :class:`deepbsde.drift.DriftedProblem` (a sampling drift: the same PDE) uses its base problem's. Where there
is none (:class:`~equations.DefaultRisk`, :class:`~equations.DiffRates`: published values at ``x0`` only)
both raise ``NotImplementedError`` saying so.

``t`` is a number or a tensor of shape ``()``, ``(B,)`` or ``(B, 1)`` in ``[0, T]``; ``x`` a tensor
``(B, d)`` (results in its dtype and on its device, computed in float64) or a NumPy array ``(B, d)``
(results as float64 arrays). No autograd graph is returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deepbsde.drift import DriftedProblem
from deepbsde.pinn_problem import ResidualProblem
from deepbsde.problem import Problem

__all__ = ["reference_u", "reference_grad", "has_reference_at"]


def _base(problem: Any) -> Any:
    while isinstance(problem, DriftedProblem):
        problem = problem.base
    return problem


def _kind(problem: Any) -> str | None:
    """``"pointwise"``, ``"exact"``, ``"residual"`` or ``None`` (see the module docstring)."""
    if callable(getattr(problem, "reference_at", None)):
        return "pointwise"
    if isinstance(problem, Problem) and problem.has_exact_solution:
        return "exact"
    if isinstance(problem, ResidualProblem) and problem.has_reference_solution:
        return "residual"
    return None


def has_reference_at(problem: Problem | ResidualProblem) -> bool:
    """Whether :func:`reference_u` works for ``problem`` (:func:`reference_grad` too, except for a
    ResidualProblem, which gives ``u`` only)."""
    return _kind(_base(problem)) is not None


def _none(problem: Any, what: str) -> NotImplementedError:
    name = getattr(problem, "name", type(problem).__name__)
    return NotImplementedError(
        f"{name}: no reference {what} at any point (no exact_solution, reference_at or reference_solution); "
        f"its only reference is problem.reference() at x0")


def _inputs(problem: Any, t: Any, x: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(t (B, 1) float64, x as given or from NumPy, was_numpy)``, after checking shapes and the time range."""
    numpy_in = isinstance(x, np.ndarray)
    if numpy_in:
        x = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != problem.dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a tensor or array of shape (batch, {problem.dim}), received {shape}")
    batch = x.shape[0]
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.asarray(t, dtype=np.float64))
    if isinstance(t, torch.Tensor):
        tv = t.detach().to(device=x.device, dtype=torch.float64).reshape(-1, 1)
        if tv.shape[0] == 1:
            tv = tv.expand(batch, 1)
        if tv.shape[0] != batch:
            raise ValueError(f"t: expected a number or a tensor of shape (), ({batch},) or ({batch}, 1), received "
                             f"shape {tuple(t.shape)}")
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        tv = torch.full((batch, 1), float(t), dtype=torch.float64, device=x.device)
    else:
        raise ValueError(f"t: expected a number or a tensor, received {type(t).__name__}")
    horizon = problem.horizon
    if batch and not (bool(torch.isfinite(tv).all()) and float(tv.min()) >= 0.0 and float(tv.max()) <= horizon):
        raise ValueError(f"t: expected times in [0, T={horizon}], received values in "
                         f"[{float(tv.min())}, {float(tv.max())}]")
    return tv, x, numpy_in


def _out(value: torch.Tensor, x: torch.Tensor, numpy_in: bool) -> torch.Tensor | np.ndarray:
    value = value.detach()
    if numpy_in:
        return value.to("cpu", torch.float64).numpy()
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return value.to(device=x.device, dtype=dtype)


def reference_u(problem: Problem | ResidualProblem, t: Any, x: Any) -> torch.Tensor | np.ndarray:
    """The reference :math:`u(t, x)` at a batch of points, shape ``(B, 1)`` (module docstring)."""
    base = _base(problem)
    kind = _kind(base)
    if kind is None:
        raise _none(base, "u")
    tv, xv, numpy_in = _inputs(base, t, x)
    x64 = xv.detach().to(torch.float64)
    if kind == "pointwise":
        value = base.reference_at(tv, x64)
    elif kind == "exact":
        value = base.exact_solution(tv, x64)
    else:
        value = base.reference_solution(tv, x64)
    return _out(value.reshape(-1, 1), xv, numpy_in)


def reference_grad(problem: Problem | ResidualProblem, t: Any, x: Any) -> torch.Tensor | np.ndarray:
    r"""The reference :math:`\nabla u(t, x)` (not :math:`\sigma^\top\nabla u`) at a batch of points, shape
    ``(B, d)`` (module docstring): autograd on ``exact_solution``, or the problem's ``reference_grad_at``."""
    base = _base(problem)
    kind = _kind(base)
    if kind is None or kind == "residual":
        raise _none(base, "gradient")
    tv, xv, numpy_in = _inputs(base, t, x)
    x64 = xv.detach().to(torch.float64)
    if kind == "pointwise":
        grad_at = getattr(base, "reference_grad_at", None)
        if not callable(grad_at):
            raise _none(base, "gradient")
        grad = grad_at(tv, x64)
    else:
        xg = x64.clone().requires_grad_(True)
        with torch.enable_grad():
            u = base.exact_solution(tv, xg)
            (grad,) = torch.autograd.grad(u.sum(), xg)
    return _out(grad.reshape(x64.shape), xv, numpy_in)
