r"""The identity of a problem: what a checkpoint, a run folder or a cache must match to be the same problem.

:func:`problem_identity` returns a JSON-representable dict of three parts:

* ``class``: ``"module:qualname"`` of the problem's class;
* ``arguments``: the bound arguments of the constructor call that built it, defaults included (recorded by
  :class:`deepbsde.problem.Described` at construction; an instance attribute of the same name gives the
  checked value), so that a class storing ``rate`` as ``self._rate`` is still told apart by ``rate``;
* ``behaviour``: a SHA-256 hash of the problem's functions evaluated in float64 on the CPU at a fixed probe
  batch derived from ``x0`` and ``d`` alone (no random numbers): for a :class:`~deepbsde.Problem`
  :math:`\mu, \sigma, f, g` and one forward step at :math:`t = 0` and :math:`t = T/2`; for a
  :class:`~deepbsde.ResidualProblem` its time condition, boundary values and residual (of the smooth test
  function :math:`\sin(t + \sum_i x_i)`). Values are rounded to 10 significant digits of each output's
  largest entry before hashing, so that last-bit differences between machines do not change the hash.

The behaviour catches what the arguments miss (state changed after construction, an argument that is a
function); the arguments catch what the probe batch misses. A problem that can be identified by neither
(constructor arguments that are not JSON-representable or were not recorded, and functions that fail in
float64) is refused with :class:`~deepbsde.errors.ProblemError`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from .errors import ProblemError, describe
from .pinn_problem import Derivatives, ResidualProblem
from .problem import Problem, constructor_arguments

__all__ = ["problem_identity", "behaviour_fingerprint"]

_PROBES = 4          # rows of the probe batch
_DIGITS = 10         # significant digits kept (relative to each output's largest entry) before hashing
_F64 = torch.float64


class _Unrepresentable(Exception):
    """A value with no JSON form."""


def problem_identity(problem: Problem | ResidualProblem) -> dict[str, Any]:
    """``{"class", "arguments", "behaviour"}`` identifying ``problem`` (see the module docstring).

    ``arguments`` maps each constructor argument to a JSON value (tuples as lists, tensors and arrays as
    nested lists); ``behaviour`` is a hex digest, or ``None`` where the functions could not be evaluated in
    float64. Raises :class:`~deepbsde.errors.ProblemError` when the problem cannot be identified.
    """
    if not isinstance(problem, (Problem, ResidualProblem)):
        raise ProblemError(f"problem: expected a deepbsde.Problem or deepbsde.ResidualProblem, "
                           f"received {describe(problem)}")
    cls = type(problem)
    recorded = constructor_arguments(problem) is not None
    arguments, unrepresentable = _json_arguments(problem.describe())
    try:
        behaviour, failure = behaviour_fingerprint(problem), None
    except Exception as exc:  # user code: any failure only means there is no behaviour fingerprint
        behaviour, failure = None, f"{type(exc).__name__}: {exc}"
    if behaviour is None and (unrepresentable or not recorded):
        what = (f"its constructor argument(s) {', '.join(repr(k) for k in unrepresentable)} are not "
                f"JSON-representable" if unrepresentable else "its constructor arguments were not recorded "
                "(built without calling the class, or a __new__ that drops them)")
        raise ProblemError(f"{problem.name}: cannot identify this problem: {what}, and its functions could not "
                           f"be evaluated in float64 on the probe batch ({failure}). Expected constructor "
                           f"arguments of JSON types (numbers, strings, booleans, lists, dicts) or functions "
                           f"that accept float64 tensors.")
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "arguments": arguments, "behaviour": behaviour}


def behaviour_fingerprint(problem: Problem | ResidualProblem) -> str:
    """The SHA-256 hex digest of ``problem``'s functions on the probe batch (float64, CPU). Raises whatever
    the problem's functions raise."""
    parts: list[str] = [type(problem).__qualname__, f"dim={problem.dim}", f"horizon={problem.horizon!r}"]
    with torch.no_grad():
        x = _probe_points(problem)
    if isinstance(problem, ResidualProblem):
        parts.append(f"time_condition={problem.time_condition}")
        parts += [f"lower={list(problem.lower)!r}", f"upper={list(problem.upper)!r}"]
        outputs = _residual_outputs(problem, x)
    else:
        parts += [f"noise_type={problem.noise_type}", f"noise_dim={problem.noise_dim}"]
        with torch.no_grad():
            outputs = _fbsde_outputs(problem, x)
    for name, value in outputs:
        parts.append(f"{name}:{_rounded(name, value)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _probe_points(problem: Problem | ResidualProblem) -> torch.Tensor:
    """``(4, d)``: ``x0`` and three points ``x0 + 0.1 (1 + |x0_i|) sin(1 + 7k + 3i)`` (no randomness)."""
    x0 = problem.x0_tensor(_F64)
    k = torch.arange(_PROBES, dtype=_F64).reshape(-1, 1)
    i = torch.arange(problem.dim, dtype=_F64).reshape(1, -1)
    offsets = 0.1 * (1.0 + x0.abs()) * torch.sin(1.0 + 7.0 * k + 3.0 * i)
    offsets[0] = 0.0
    return x0 + offsets


def _fixed(rows: int, cols: int, phase: float, scale: float) -> torch.Tensor:
    """A fixed ``(rows, cols)`` tensor ``scale * cos(phase + 5k + 3j)``."""
    k = torch.arange(rows, dtype=_F64).reshape(-1, 1)
    j = torch.arange(cols, dtype=_F64).reshape(1, -1)
    return scale * torch.cos(phase + 5.0 * k + 3.0 * j)


def _fbsde_outputs(problem: Problem, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """μ, σ, f, g and one step of the forward SDE at ``t = 0`` and ``t = T/2``."""
    m = problem.noise_dim
    y = problem.terminal(x.clone())
    z = _fixed(x.shape[0], m, 2.0, 0.05)
    dw = _fixed(x.shape[0], m, 1.0, 0.1)
    out = [("terminal", y)]
    for t_value in (0.0, 0.5 * problem.horizon):
        t = torch.tensor(t_value, dtype=_F64)
        out += [(f"drift@{t_value!r}", problem.drift(t, x.clone())),
                (f"diffusion@{t_value!r}", problem.diffusion(t, x.clone())),
                (f"driver@{t_value!r}", problem.driver(t, x.clone(), y.clone(), z.clone())),
                (f"step@{t_value!r}", problem.step(t, x.clone(), 0.25 * problem.horizon, dw.clone()))]
    return out


def _residual_outputs(problem: ResidualProblem, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The time condition, the boundary values (on the face ``x_1 = a_1``) and the residual of
    ``u = sin(t + Σx)`` at ``t = 0`` and ``t = T/2``."""
    with torch.no_grad():
        out = [("condition", problem.condition(x.clone()))]
    for t_value in (0.0, 0.5 * problem.horizon):
        t = torch.full((x.shape[0], 1), t_value, dtype=_F64)
        if problem.has_boundary:
            xb = x.clone()
            xb[:, 0] = problem.lower[0]
            with torch.no_grad():
                out.append((f"boundary@{t_value!r}", problem.boundary(t.clone(), xb)))
        tg = t.clone().requires_grad_(True)
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            value = torch.sin(tg + xg.sum(1, keepdim=True))
            res = problem.residual(tg, xg, value, Derivatives(value, tg, xg))
        out.append((f"residual@{t_value!r}", res))
    return out


def _rounded(name: str, value: object) -> str:
    """``value`` as text: its shape, the largest finite magnitude to 12 digits, and every entry relative to
    it rounded to 10 decimals (``-0`` written as ``0``)."""
    if not isinstance(value, torch.Tensor):
        raise ProblemError(f"{name}: expected a tensor, received {describe(value)}")
    flat = value.detach().to("cpu", _F64).reshape(-1)
    finite = flat[torch.isfinite(flat)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    scale = scale if scale > 0 else 1.0
    entries = [repr(round(v / scale, _DIGITS) + 0.0) if math.isfinite(v) else repr(v) for v in flat.tolist()]
    return f"{tuple(value.shape)} {scale:.12e} " + ",".join(entries)


def _json_arguments(described: dict[str, object]) -> tuple[dict[str, Any], list[str]]:
    """The described arguments (without ``name``) as JSON values, and the names of those that have none
    (recorded as ``{"unrepresentable": type name}``)."""
    out: dict[str, Any] = {}
    bad: list[str] = []
    for key, value in described.items():
        if key == "name":
            continue
        try:
            out[key] = _to_json(value)
        except _Unrepresentable:
            out[key] = {"unrepresentable": f"{type(value).__module__}.{type(value).__qualname__}"}
            bad.append(key)
    return out, bad


def _to_json(value: object) -> Any:
    """A JSON form of ``value`` (non-finite floats as the strings ``'inf'``, ``'-inf'``, ``'nan'``), or
    :class:`_Unrepresentable`."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, torch.Tensor):
        return _to_json(value.detach().cpu().tolist())
    if hasattr(value, "tolist") and type(value).__module__.startswith("numpy"):
        return _to_json(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v) for k, v in value.items()}
    raise _Unrepresentable(type(value).__name__)
