r"""Regions of starting points: the deep BSDE method's *region mode* (``DeepBSDE(region=...)``).

In region mode the forward paths start from points :math:`X_0` drawn from a region instead of the one point
:math:`x_0`, and :math:`Y_0` becomes a network of :math:`X_0`: the trained :math:`u(0, \cdot)` over the whole
region, with :math:`\nabla u(0, \cdot)` by autograd (``Solution.u``, ``Solution.grad_u``). A region is a
method setting, never part of the :class:`~deepbsde.Problem`: the problem's ``x0`` stays the point where
``Solution.u0`` and its error bar are reported.

* :class:`Box` ``(lo, hi)``: :math:`X_0` uniform in :math:`\prod_i [lo_i, hi_i]` (scalars broadcast to every
  coordinate);
* :class:`Line` ``(direction, lo, hi)``: :math:`X_0 = s\,v` with :math:`s` uniform in ``[lo, hi]`` (a scalar
  direction :math:`v` means every coordinate equal to it);
* :class:`Sampler` ``(fn)``: any callable ``fn(batch, generator) -> (batch, d)`` tensor (a plain callable given
  as ``region`` is wrapped in one). It cannot be written to a config or a saved solution: ``deepbsde.load``
  then needs ``method=`` passed.

:func:`as_region` turns what a user or a config gives (a region, a callable, a ``{"type": "box", ...}`` table,
or ``None``) into a region. :class:`AtPoint` is a problem seen from another starting point (for the error bar
at any point of the region). :func:`region_errors` measures a trained solution against a reference over
region points, by duck typing (deepbsde never imports the catalogue): a problem's ``reference_at(t, x)`` /
``reference_grad_at(t, x)``, else its ``exact_solution`` (``∇u`` by autograd).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import ConfigError, describe
from .paths import make_generator
from .problem import Problem, ProblemView, Reference

__all__ = ["Region", "Box", "Line", "Sampler", "as_region", "AtPoint", "region_errors", "reference_functions"]

SamplerFunction = Callable[[int, torch.Tensor], torch.Tensor]


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, received {describe(value)}")
    return float(value)


def _numbers(where: str, value: object) -> float | tuple[float, ...]:
    """A finite number, or a non-empty sequence of them (returned as a tuple)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where}: expected a number or a non-empty list of numbers, received {describe(value)}")
        return tuple(_number(f"{where}[{i}]", v) for i, v in enumerate(value))
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return _numbers(where, [float(v) for v in value])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(where, value)
    raise ConfigError(f"{where}: expected a number or a list of numbers (one per coordinate), received "
                      f"{describe(value)}")


def _per_coordinate(where: str, value: float | tuple[float, ...], dim: int) -> tuple[float, ...]:
    if isinstance(value, tuple):
        if len(value) != dim:
            raise ConfigError(f"{where}: expected a number or {dim} numbers (one per coordinate, d = {dim}), "
                              f"received {len(value)} numbers")
        return value
    return (value,) * dim


def _plain(value: float | tuple[float, ...]) -> float | list[float]:
    return list(value) if isinstance(value, tuple) else value


class Region(abc.ABC):
    """Where the starting points :math:`X_0` of region mode are drawn from."""

    #: the name in configs and descriptions ("box", "line", "sampler")
    kind: str = "region"

    @abc.abstractmethod
    def check(self, dim: int) -> None:
        """Raise :class:`~deepbsde.errors.ConfigError` if this region does not fit dimension ``dim``."""

    @abc.abstractmethod
    def sample(self, batch: int, dim: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``batch`` points ``(batch, dim)`` drawn from ``generator``, on its device, in ``dtype``."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (``{"type": ..., ...}``), what a config's ``[region]`` table holds."""


@dataclasses.dataclass(frozen=True)
class Box(Region):
    """:math:`X_0` uniform in the box :math:`\\prod_i [lo_i, hi_i]`; ``lo``, ``hi`` numbers (every coordinate)
    or sequences of ``d`` numbers, with ``lo <= hi`` everywhere."""

    lo: float | tuple[float, ...]
    hi: float | tuple[float, ...]
    kind = "box"

    def __post_init__(self) -> None:
        lo, hi = _numbers("region.lo", self.lo), _numbers("region.hi", self.hi)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        if isinstance(lo, tuple) and isinstance(hi, tuple) and len(lo) != len(hi):
            raise ConfigError(f"region (box): lo has {len(lo)} numbers and hi {len(hi)}; expected the same count "
                              f"(one per coordinate), or a number for either")
        n = max(len(lo) if isinstance(lo, tuple) else 1, len(hi) if isinstance(hi, tuple) else 1)
        los, his = _per_coordinate("region.lo", lo, n), _per_coordinate("region.hi", hi, n)
        bad = [i for i in range(n) if los[i] > his[i]]
        if bad:
            i = bad[0]
            where = f" in coordinate {i}" if n > 1 else ""
            raise ConfigError(f"region (box): expected lo <= hi, received lo = {los[i]:g} > hi = {his[i]:g}{where}")

    def check(self, dim: int) -> None:
        _per_coordinate("region.lo", self.lo, dim)
        _per_coordinate("region.hi", self.hi, dim)

    def bounds(self, dim: int, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.tensor(_per_coordinate("region.lo", self.lo, dim), dtype=dtype, device=device)
        hi = torch.tensor(_per_coordinate("region.hi", self.hi, dim), dtype=dtype, device=device)
        return lo, hi

    def sample(self, batch: int, dim: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        lo, hi = self.bounds(dim, dtype, generator.device)
        u = torch.rand(batch, dim, generator=generator, dtype=dtype, device=generator.device)
        return lo + (hi - lo) * u

    def describe(self) -> dict[str, Any]:
        return {"type": "box", "lo": _plain(self.lo), "hi": _plain(self.hi)}


@dataclasses.dataclass(frozen=True)
class Line(Region):
    """:math:`X_0 = s\\,v` with :math:`s` uniform in ``[lo, hi]``: ``direction`` :math:`v` a number (every
    coordinate equal to it) or ``d`` numbers, not all zero."""

    direction: float | tuple[float, ...]
    lo: float
    hi: float
    kind = "line"

    def __post_init__(self) -> None:
        direction = _numbers("region.direction", self.direction)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "lo", _number("region.lo", self.lo))
        object.__setattr__(self, "hi", _number("region.hi", self.hi))
        if self.lo > self.hi:
            raise ConfigError(f"region (line): expected lo <= hi (the range of s in x0 = s * direction), "
                              f"received lo = {self.lo:g} > hi = {self.hi:g}")
        values = direction if isinstance(direction, tuple) else (direction,)
        if all(v == 0 for v in values):
            raise ConfigError(f"region.direction: expected a direction with a non-zero coordinate, received "
                              f"{describe(_plain(direction))}")

    def check(self, dim: int) -> None:
        _per_coordinate("region.direction", self.direction, dim)

    def vector(self, dim: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.tensor(_per_coordinate("region.direction", self.direction, dim), dtype=dtype, device=device)

    def sample(self, batch: int, dim: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        s = self.lo + (self.hi - self.lo) * torch.rand(batch, 1, generator=generator, dtype=dtype,
                                                       device=generator.device)
        return s * self.vector(dim, dtype, generator.device)

    def describe(self) -> dict[str, Any]:
        return {"type": "line", "direction": _plain(self.direction), "lo": self.lo, "hi": self.hi}


@dataclasses.dataclass(frozen=True)
class Sampler(Region):
    """A user's sampler ``fn(batch, generator) -> (batch, d)`` tensor (drawing its random numbers from
    ``generator`` keeps runs reproducible). It is called once at :meth:`check` on a small batch to check its
    output; it cannot be saved in a config or a saved solution."""

    fn: SamplerFunction
    kind = "sampler"

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"region: expected a callable sampler(batch, generator) -> (batch, d) tensor, "
                              f"received {describe(self.fn)}")

    @property
    def label(self) -> str:
        fn = self.fn
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"

    def _call(self, batch: int, dim: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        try:
            out = self.fn(batch, generator)
        except Exception as exc:
            raise ConfigError(f"region: the sampler {self.label} failed on sampler({batch}, generator): "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(out, torch.Tensor):
            raise ConfigError(f"region: the sampler {self.label} must return a torch tensor of shape "
                              f"({batch}, {dim}), received {describe(out)}")
        if tuple(out.shape) != (batch, dim):
            raise ConfigError(f"region: the sampler {self.label} returned shape {tuple(out.shape)} for "
                              f"sampler({batch}, generator); expected ({batch}, {dim}) (batch, d)")
        out = out.detach().to(device=generator.device, dtype=dtype)
        if not bool(torch.isfinite(out).all()):
            raise ConfigError(f"region: the sampler {self.label} returned non-finite points")
        return out

    def check(self, dim: int) -> None:
        self._call(4, dim, make_generator(0), torch.float64)

    def sample(self, batch: int, dim: int, generator: torch.Generator,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self._call(batch, dim, generator, dtype)

    def describe(self) -> dict[str, Any]:
        return {"type": "sampler", "sampler": self.label}


_TYPES = {"box": (Box, ("lo", "hi")), "line": (Line, ("direction", "lo", "hi"))}


def as_region(value: Any) -> Region | None:
    """``None``, a :class:`Region`, a callable sampler, or a table ``{"type": "box", "lo": ..., "hi": ...}`` /
    ``{"type": "line", "direction": ..., "lo": ..., "hi": ...}`` (a config's ``[region]``) as a region."""
    if value is None or isinstance(value, Region):
        return value
    if isinstance(value, Mapping):
        table = dict(value)
        kind = table.pop("type", None)
        if kind == "sampler":
            raise ConfigError(f"region: {table.get('sampler', 'a user sampler')} is a user's callable, which a "
                              f"config or a saved solution cannot hold; pass the method with its sampler: "
                              f"deepbsde.load(dir, method=DeepBSDE(region=sampler, ...))")
        if kind not in _TYPES:
            raise ConfigError(f"region.type: expected 'box' or 'line', received {describe(kind)}")
        cls, keys = _TYPES[kind]
        unknown = sorted(set(table) - set(keys))
        missing = [k for k in keys if k not in table]
        if unknown:
            raise ConfigError(f"region ({kind}): unknown key {unknown[0]!r}; expected: {', '.join(keys)}")
        if missing:
            raise ConfigError(f"region ({kind}): missing {', '.join(missing)}; expected: {', '.join(keys)}")
        return cls(**table)
    if callable(value):
        return Sampler(value)
    raise ConfigError(f"region: expected deepbsde.regions.Box(lo, hi), Line(direction, lo, hi), a callable "
                      f"sampler(batch, generator) -> (batch, d), a table with type = 'box' or 'line', or None, "
                      f"received {describe(value)}")


class AtPoint(ProblemView):
    """``problem`` started from another point ``x0`` (``(d,)``): every function is the problem's, only ``x0``
    differs (the error bar at any point of a region runs on it)."""

    def __init__(self, problem: Problem, x0: Sequence[float]) -> None:
        super().__init__(problem, [float(v) for v in x0])

    def describe(self) -> dict[str, object]:
        return dict(self.base.describe(), x0=list(self.x0))

    def reference(self) -> Reference | None:
        return None


# --- errors over a region ---------------------------------------------------------------------------------

def reference_functions(problem: Any) -> tuple[Callable | None, Callable | None]:
    """``(u, grad)``: the problem's reference :math:`u(t, x)` ``(B, 1)`` and :math:`\\nabla u(t, x)` ``(B, d)``
    at any points (float64, ``t`` ``(B, 1)``), or ``None`` for either where the problem gives none. Duck typing:
    ``reference_at`` / ``reference_grad_at`` first, then ``exact_solution`` (gradient by autograd); a problem
    view with a ``base`` (a sampling drift) uses its base's."""
    while isinstance(getattr(problem, "base", None), Problem):
        problem = problem.base
    at = getattr(problem, "reference_at", None)
    if callable(at):
        grad_at = getattr(problem, "reference_grad_at", None)
        return at, grad_at if callable(grad_at) else None
    if isinstance(problem, Problem) and problem.has_exact_solution:
        def grad(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            xg = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(problem.exact_solution(t, xg).sum(), xg)
            return g
        return problem.exact_solution, grad
    return None, None


def _relative_l2(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    den = float(reference.square().sum())
    num = float((estimate - reference).square().sum())
    return math.sqrt(num / den) if den > 0 else math.sqrt(num / max(reference.numel(), 1))


def region_errors(value: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], problem: Problem,
                  region: Region, points: int = 4096, seed: int = 0) -> dict[str, Any]:
    r"""Relative L2 errors of a trained :math:`u(0, \cdot)` and :math:`\nabla u(0, \cdot)` over ``points``
    region points drawn with ``seed``, against the problem's reference (:func:`reference_functions`).

    ``value(x)`` gives the trained ``(u (B, 1), grad u (B, d))`` at float64 points ``x`` ``(B, d)``. Returns
    ``region_points``, ``region_rel_l2`` (:math:`\|\hat u - u\|_2 / \|u\|_2` over the points),
    ``region_grad_rel_l2`` (the same for the gradient, summed over coordinates) and
    ``region_mean_grad_rel_l2`` (for the mean over coordinates of the gradient: on a line along the diagonal,
    the mean delta), each where a reference exists; an empty dict where there is none."""
    ref_u, ref_grad = reference_functions(problem)
    if ref_u is None:
        return {}
    x = region.sample(points, problem.dim, make_generator(seed), torch.float64)
    t = torch.zeros(points, 1, dtype=torch.float64)
    u_hat, grad_hat = value(x)
    u_hat, grad_hat = u_hat.detach().to("cpu", torch.float64).reshape(-1), grad_hat.detach().to("cpu", torch.float64)
    out: dict[str, Any] = {"region_points": points}
    with torch.no_grad():
        u = torch.as_tensor(ref_u(t, x)).to(torch.float64).reshape(-1)
    out["region_rel_l2"] = _relative_l2(u_hat, u)
    if ref_grad is not None:
        grad = torch.as_tensor(ref_grad(t, x)).to(torch.float64).reshape(points, problem.dim)
        out["region_grad_rel_l2"] = _relative_l2(grad_hat, grad)
        out["region_mean_grad_rel_l2"] = _relative_l2(grad_hat.mean(1), grad.mean(1))
    return out
