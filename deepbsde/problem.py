r"""The problem: a semilinear parabolic PDE and its forward-backward SDE.

.. math::
    u_t + \tfrac12 \operatorname{Tr}(\sigma\sigma^\top \nabla^2 u) + \mu\cdot\nabla u
        + f(t, x, u, \sigma^\top \nabla u) = 0, \qquad u(T, x) = g(x),

on :math:`[0, T) \times \mathbb{R}^d`. With :math:`dX = \mu\,dt + \sigma\,dW`, :math:`X_0 = x_0`,
:math:`W` an :math:`m`-dimensional Brownian motion, the processes :math:`Y_t = u(t, X_t)` and
:math:`Z_t = \sigma^\top \nabla u(t, X_t)` solve :math:`dY = -f(t, X, Y, Z)\,dt + Z^\top dW`,
:math:`Y_T = g(X_T)` (Pardoux & Peng 1990; Han, Jentzen & E, PNAS 2018).

**Convention.** The fourth argument of the driver is :math:`z = \sigma^\top \nabla u` (shape
``(batch, m)``), never :math:`\nabla u`. An equation written in terms of :math:`\nabla u` must convert:
for :math:`\sigma = s I`, :math:`\nabla u = z / s`.

**Shapes** (batch first, written once): ``t`` a tensor of shape ``()`` or ``(batch, 1)``; ``x``
``(batch, d)``; ``y`` ``(batch, 1)``; ``z`` ``(batch, m)``; diagonal diffusion ``(batch, d)`` (then
``m = d``); general diffusion ``(batch, d, m)``.

The problem holds only the mathematics. Time grid, batch size, seed, device and networks belong to the
method, the training configuration or the call.
"""

from __future__ import annotations

import abc
import inspect
import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

import torch

from .errors import ProblemError, describe

__all__ = ["Problem", "ProblemView", "Reference", "NoiseType", "check_problem", "Described", "describe_keywords",
           "constructor_arguments"]

NoiseType = Literal["diagonal", "general"]


@dataclass(frozen=True)
class Reference:
    """A trusted value of :math:`u(0, x_0)` and where it comes from.

    ``bounds`` is an optional ``(lower, upper)`` interval the true value must lie in (either may be
    ``None``), for problems known only through published estimates and comparison bounds.
    """

    value: float | None
    source: str
    bounds: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if self.value is None and self.bounds is None:
            raise ProblemError("Reference needs a value or bounds; received neither")


class Described:
    """``name``, :meth:`describe` and ``repr`` from the constructor call (shared by :class:`Problem` and the
    PINN-only ``ResidualProblem``).

    Every construction records the bound arguments of the outermost constructor call, defaults included
    (:func:`constructor_arguments`), so that a problem is described and identified by what it was built
    from, whatever names its class stores them under.
    """

    def __new__(cls, *args: object, **kwargs: object) -> "Described":
        obj = super().__new__(cls)
        # a subclass's own __new__ may pass on other arguments than the call's: then none are recorded
        own = cls.__new__ is Described.__new__
        try:
            obj.__dict__[_ARGUMENTS] = _bind_constructor(cls, args, kwargs) if own else None
        except AttributeError:  # a class with __slots__ and no __dict__: described by its attributes
            pass
        return obj

    @property
    def name(self) -> str:
        return type(self).__name__

    def describe(self) -> dict[str, object]:
        """The constructor keywords and their values, for run folders and reports."""
        return describe_keywords(self)

    def __repr__(self) -> str:
        items = self.describe()
        items.pop("name")
        x0 = items.get("x0")
        if isinstance(x0, list) and len(set(x0)) == 1:
            items["x0"] = x0[0]
        args = ", ".join(f"{k}={v!r}" for k, v in items.items())
        return f"{self.name}({args})"


class Problem(Described, abc.ABC):
    r"""A semilinear parabolic PDE in FBSDE form.

    Subclasses implement :meth:`drift`, :meth:`diffusion`, :meth:`driver` and :meth:`terminal`, and
    may implement :meth:`exact_solution`, :meth:`reference` and :meth:`step` (an exact transition of
    the forward SDE, e.g. log-normal for geometric Brownian motion).

    Parameters
    ----------
    dim:
        Space dimension ``d`` (a positive integer).
    horizon:
        Terminal time ``T > 0``.
    x0:
        Initial point: a float broadcast to every coordinate, or a sequence of ``d`` floats.
    """

    #: ``"diagonal"``: :meth:`diffusion` returns ``(batch, d)``, ``m = d`` and σ = diag(that).
    #: ``"general"``: :meth:`diffusion` returns ``(batch, d, m)``; set :attr:`noise_dim` accordingly.
    noise_type: ClassVar[NoiseType] = "diagonal"

    def __init__(self, dim: int, horizon: float, x0: float | Sequence[float] = 0.0) -> None:
        self.dim = _check_dim(dim)
        self.horizon = _check_horizon(horizon)
        self.x0 = _check_x0(x0, self.dim)

    # --- the mathematics: to implement ---------------------------------------------------------
    @abc.abstractmethod
    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\mu(t, x)`, shape ``(batch, d)``."""

    @abc.abstractmethod
    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(t, x)`: ``(batch, d)`` for diagonal noise, ``(batch, d, m)`` for general."""

    @abc.abstractmethod
    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`f(t, x, y, z)` with ``z = σᵀ∇u`` of shape ``(batch, m)``; returns ``(batch, 1)``."""

    @abc.abstractmethod
    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`g(x)`, shape ``(batch, 1)``."""

    # --- optional ------------------------------------------------------------------------------
    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`u(t, x)`, shape ``(batch, 1)``, where a closed form is known."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form solution")

    @property
    def has_exact_solution(self) -> bool:
        return type(self).exact_solution is not Problem.exact_solution

    def reference(self) -> Reference | None:
        """The trusted value of :math:`u(0, x_0)` with its source, or ``None`` where none is known.

        The default evaluates :meth:`exact_solution` in float64 when there is one.
        """
        if not self.has_exact_solution:
            return None
        x = torch.tensor([self.x0], dtype=torch.float64)
        value = float(self.exact_solution(torch.zeros((), dtype=torch.float64), x).reshape(-1)[0])
        return Reference(value, "closed form")

    @property
    def noise_dim(self) -> int:
        """``m``, the dimension of the Brownian motion (and of ``z``). Equals ``d`` for diagonal noise; for
        general noise, ``d`` unless set (``self.noise_dim = m`` in ``__init__``, or a property of a subclass)."""
        return self.__dict__.get("_noise_dim", self.dim)

    @noise_dim.setter
    def noise_dim(self, value: int) -> None:
        # the class docstring tells users with general noise to set it; a read-only property refused that with
        # "property 'noise_dim' ... has no setter" (found writing a correlated-basket problem from the docstring)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ProblemError(f"{type(self).__name__}.noise_dim: expected a positive integer, received "
                               f"{describe(value)}")
        self.__dict__["_noise_dim"] = value

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        """One step of the forward SDE from ``(t, x)`` over ``dt`` with Brownian increment ``dw``.

        The default is Euler–Maruyama, :math:`x + \\mu\\,\\Delta t + \\sigma\\,\\Delta W`. Override with an
        exact transition where one exists (see :func:`deepbsde.paths.gbm_step`).
        """
        return x + self.drift(t, x) * dt + self.sigma_times(t, x, dw)

    # --- derived, shared by every method --------------------------------------------------------
    def sigma_times(self, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(t, x)\\,v` for ``v`` of shape ``(batch, m)``; returns ``(batch, d)``."""
        sigma = self.diffusion(t, x)
        if self.noise_type == "diagonal":
            return sigma * v
        return torch.einsum("bdm,bm->bd", sigma, v)

    def sigma_transpose_times(self, t: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """:math:`\\sigma(t, x)^\\top p` for ``p`` of shape ``(batch, d)``; returns ``(batch, m)``.

        With ``p = ∇u`` this is the ``z`` of the driver.
        """
        sigma = self.diffusion(t, x)
        if self.noise_type == "diagonal":
            return sigma * p
        return torch.einsum("bdm,bd->bm", sigma, p)

    def x0_tensor(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        """``x0`` as a tensor of shape ``(d,)``."""
        return torch.tensor(self.x0, dtype=dtype, device=device)


_ARGUMENTS = "_deepbsde_constructor_arguments"


def _bind_constructor(cls: type, args: tuple, kwargs: dict) -> dict[str, object] | None:
    """The arguments of ``cls(*args, **kwargs)`` bound to the parameters of ``cls.__init__``, defaults applied
    (``**kwargs`` flattened in); ``None`` where they do not bind (the constructor then raises itself)."""
    try:
        sig = inspect.signature(cls.__init__)
        params = list(sig.parameters.values())[1:]  # without self
        bound = sig.replace(parameters=params).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    bound.apply_defaults()
    out: dict[str, object] = {}
    for key, value in bound.arguments.items():
        kind = sig.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[key] = value
    return out


def constructor_arguments(obj: object) -> dict[str, object] | None:
    """The bound arguments of the constructor call that built ``obj`` (defaults included), or ``None``
    where they were not recorded (an object built around ``__new__``, or of a class with ``__slots__``)."""
    args = getattr(obj, "__dict__", {}).get(_ARGUMENTS)
    return dict(args) if args is not None else None


def describe_keywords(obj: object) -> dict[str, object]:
    """``{"name": class name, keyword: value, ...}`` for every argument of the constructor call that built
    ``obj`` (defaults included). Where the instance holds an attribute of the same name, its value is
    reported (the checked value, e.g. ``x0`` as ``d`` floats); otherwise the argument as passed, so that a
    class storing ``rate`` as ``self._rate`` is still described by ``rate``. Without recorded arguments:
    the constructor's parameters stored as attributes of the same name."""
    out: dict[str, object] = {"name": type(obj).__name__}
    stored = getattr(obj, "__dict__", {})
    args = constructor_arguments(obj)
    if args is None:
        keys = [k for k in inspect.signature(type(obj).__init__).parameters if k != "self" and hasattr(obj, k)]
        args = {k: getattr(obj, k) for k in keys}
    for key, value in args.items():
        value = stored.get(key, value)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


# --- validation at the boundary ------------------------------------------------------------------

def _check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ProblemError(f"dim: expected a positive integer, received {describe(dim)}")
    return dim


def _check_horizon(horizon: object) -> float:
    if isinstance(horizon, bool) or not isinstance(horizon, (int, float)):
        raise ProblemError(f"horizon: expected a positive finite number T, received {describe(horizon)}")
    if not math.isfinite(horizon) or horizon <= 0:
        raise ProblemError(f"horizon: expected a positive finite number T, received {describe(horizon)}")
    return float(horizon)


def _check_x0(x0: object, dim: int) -> tuple[float, ...]:
    if isinstance(x0, torch.Tensor):
        x0 = x0.detach().cpu().reshape(-1).tolist()
        if len(x0) == 1:
            x0 = x0[0]
    if isinstance(x0, (int, float)) and not isinstance(x0, bool):
        values = (float(x0),) * dim
    elif isinstance(x0, Sequence) and not isinstance(x0, str):
        if len(x0) != dim:
            raise ProblemError(f"x0: expected a float or a sequence of length dim={dim}, "
                               f"received a sequence of length {len(x0)}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x0):
            raise ProblemError(f"x0: expected numbers, received {describe(x0)}")
        values = tuple(float(v) for v in x0)
    else:
        raise ProblemError(f"x0: expected a float or a sequence of {dim} floats, received {describe(x0)}")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ProblemError(f"x0: expected finite values, received {values[bad[0]]} at coordinate {bad[0]}")
    return values


def check_problem(problem: object, dtype: torch.dtype = torch.float64,
                  device: torch.device | str = "cpu", batch: int = 3) -> None:
    """Call each function of ``problem`` once on a small batch at ``x0`` and check every shape.

    Raises :class:`~deepbsde.errors.ProblemError` naming the function, the shape received and the shape
    expected, or the first non-finite value. Run once by :func:`deepbsde.solve` before any training.
    """
    if not isinstance(problem, Problem):
        raise ProblemError(f"problem: expected a deepbsde.Problem, received {describe(problem)}")
    if problem.noise_type not in ("diagonal", "general"):
        raise ProblemError(f"{problem.name}.noise_type: expected 'diagonal' or 'general', "
                           f"received {problem.noise_type!r}")
    d, m = problem.dim, problem.noise_dim
    if problem.noise_type == "diagonal" and m != d:
        raise ProblemError(f"{problem.name}.noise_dim: diagonal noise needs noise_dim == dim == {d}, received {m}")
    x = problem.x0_tensor(dtype, device).expand(batch, d).clone()
    t = torch.zeros((), dtype=dtype, device=device)
    y = problem.terminal(x)
    _expect(problem, "terminal(x)", y, (batch, 1), dtype)
    _expect(problem, "drift(t, x)", problem.drift(t, x), (batch, d), dtype)
    sigma_shape = (batch, d) if problem.noise_type == "diagonal" else (batch, d, m)
    _expect(problem, "diffusion(t, x)", problem.diffusion(t, x), sigma_shape, dtype)
    z = torch.zeros(batch, m, dtype=dtype, device=device)
    _expect(problem, "driver(t, x, y, z)", problem.driver(t, x, y, z), (batch, 1), dtype)
    dw = torch.zeros(batch, m, dtype=dtype, device=device)
    _expect(problem, "step(t, x, dt, dw)", problem.step(t, x, problem.horizon, dw), (batch, d), dtype)
    if problem.has_exact_solution:
        tb = torch.zeros(batch, 1, dtype=dtype, device=device)
        _expect(problem, "exact_solution(t, x)", problem.exact_solution(tb, x), (batch, 1), dtype)


def _expect(problem: Problem, what: str, value: object, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    expect_tensor(f"{problem.name}.{what}", value, shape, dtype, where_called=" at x0")


def expect_tensor(where: str, value: object, shape: tuple[int, ...], dtype: torch.dtype,
                  where_called: str = "") -> None:
    """Raise :class:`ProblemError` naming ``where`` unless ``value`` is a finite tensor of ``shape`` and
    ``dtype``; shared by the checks of both problem types."""
    if not isinstance(value, torch.Tensor):
        raise ProblemError(f"{where}: expected a tensor of shape {shape}, received {describe(value)}")
    if tuple(value.shape) != shape:
        raise ProblemError(f"{where}: expected shape {shape} (batch={shape[0]}), received {tuple(value.shape)}")
    if value.dtype != dtype:
        raise ProblemError(f"{where}: expected dtype {dtype} (the dtype of x), received {value.dtype}")
    flat = value.detach().reshape(-1)
    bad = ~torch.isfinite(flat)
    if bool(bad.any()):
        raise ProblemError(f"{where}: returned non-finite values{where_called} (first: {flat[bad][0].item()})")


class ProblemView(Problem):
    """Another view of ``base``, the same PDE: every function and property is the base problem's until a subclass
    overrides it (a sampling drift, :class:`deepbsde.drift.DriftedProblem`; another starting point,
    :class:`deepbsde.regions.AtPoint`). ``x0`` defaults to the base's."""

    def __init__(self, base: Problem, x0: Sequence[float] | float | None = None) -> None:
        super().__init__(base.dim, base.horizon, base.x0 if x0 is None else x0)
        self.base = base
        self.noise_type = base.noise_type

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def noise_dim(self) -> int:
        return self.base.noise_dim

    def describe(self) -> dict[str, object]:
        return self.base.describe()

    def drift(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.base.drift(t, x)

    def diffusion(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.base.diffusion(t, x)

    def sigma_times(self, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.base.sigma_times(t, x, v)

    def sigma_transpose_times(self, t: torch.Tensor, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.base.sigma_transpose_times(t, x, p)

    def step(self, t: torch.Tensor, x: torch.Tensor, dt: float, dw: torch.Tensor) -> torch.Tensor:
        return self.base.step(t, x, dt, dw)

    def driver(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.base.driver(t, x, y, z)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        return self.base.terminal(x)

    def exact_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.base.exact_solution(t, x)

    @property
    def has_exact_solution(self) -> bool:
        return self.base.has_exact_solution

    def reference(self) -> Reference | None:
        return self.base.reference()
