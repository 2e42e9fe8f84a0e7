r"""PDEs stated by their residual, for the PINN method only: :class:`ResidualProblem`.

Some equations have no FBSDE form (Burgers' equation in the physical direction of time, conservation laws,
problems on a bounded domain). A :class:`ResidualProblem` states such an equation the way a PINN needs
it (Raissi, Perdikaris & Karniadakis, J. Comput. Phys. 378, 2019):

.. math::
    \mathcal R[u](t, x) = 0 \ \text{on}\ (0, T) \times \Omega, \qquad
    u(0, x) = u_0(x)\ \text{(or } u(T, x) = g(x)\text{)}, \qquad u(t, x) = b(t, x)\ \text{on}\ \partial\Omega,

with :math:`\Omega = \prod_i [a_i, b_i]` a box. The residual receives the network's value and a
:class:`Derivatives` object that computes :math:`u_t`, :math:`\nabla u`, the Hessian diagonal and
Hessian-vector products by automatic differentiation only when asked (so a first-order equation pays for no
second derivative).

**Shapes** as in :mod:`deepbsde.problem`: ``t`` ``(batch, 1)``, ``x`` ``(batch, d)``, values ``(batch, 1)``.
The problem holds only the mathematics: the collocation points, their number and the network belong to the
method (:class:`deepbsde.methods.pinn.PINN`).
"""

from __future__ import annotations

import abc
from typing import ClassVar, Literal, Sequence

import torch

from .errors import ProblemError, describe
from .problem import Described, Reference, _check_dim, _check_horizon, _check_x0, expect_tensor

__all__ = ["ResidualProblem", "Derivatives", "check_residual_problem"]

TimeCondition = Literal["initial", "terminal"]


class Derivatives:
    r"""Derivatives of :math:`u` at the points ``(t, x)``, computed lazily by autograd and cached.

    Every derivative keeps its graph (``create_graph=True``), so a residual built from them can be a
    training loss. ``t`` and ``x`` must require gradients and ``value = u(t, x)`` must depend on them.
    """

    def __init__(self, value: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> None:
        self.u = value
        self.t = t
        self.x = x
        self._u_t: torch.Tensor | None = None
        self._u_x: torch.Tensor | None = None
        self._u_xx: torch.Tensor | None = None

    def _grad(self, out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(out.sum(), inp, create_graph=True, allow_unused=True)
        return torch.zeros_like(inp) if g is None else g

    def _first(self) -> None:
        """``u_t`` and ``∇u`` together: one backward pass gives both."""
        g_t, g_x = torch.autograd.grad(self.u.sum(), (self.t, self.x), create_graph=True, allow_unused=True)
        self._u_t = torch.zeros_like(self.t) if g_t is None else g_t
        self._u_x = torch.zeros_like(self.x) if g_x is None else g_x

    @property
    def u_t(self) -> torch.Tensor:
        r""":math:`\partial_t u`, shape ``(batch, 1)``."""
        if self._u_t is None:
            self._first()
        return self._u_t

    @property
    def u_x(self) -> torch.Tensor:
        r""":math:`\nabla_x u`, shape ``(batch, d)``."""
        if self._u_x is None:
            self._first()
        return self._u_x

    @property
    def u_xx(self) -> torch.Tensor:
        r"""The Hessian diagonal :math:`(\partial^2_{x_i x_i} u)_i`, shape ``(batch, d)``: ``d`` backward
        passes (use :meth:`hvp` with random probes for a Laplacian estimate at large ``d``)."""
        if self._u_xx is None:
            grad = self.u_x
            cols = [self._grad(grad[:, i:i + 1], self.x)[:, i:i + 1] for i in range(self.x.shape[1])]
            self._u_xx = torch.cat(cols, dim=1)
        return self._u_xx

    @property
    def laplacian(self) -> torch.Tensor:
        r""":math:`\Delta u`, shape ``(batch, 1)``."""
        return self.u_xx.sum(1, keepdim=True)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        r"""The Hessian-vector product :math:`\nabla^2 u\, v` for ``v`` of shape ``(batch, d)`` (held
        constant), shape ``(batch, d)``: one backward pass, no ``d × d`` matrix."""
        return self._grad((self.u_x * v.detach()).sum(1, keepdim=True), self.x)


class ResidualProblem(Described, abc.ABC):
    r"""A PDE on :math:`[0, T] \times \prod_i [a_i, b_i]` given by its residual, for the PINN method.

    Subclasses set :attr:`time_condition` and implement :meth:`residual` and :meth:`condition`; they may
    implement :meth:`boundary` (Dirichlet values on the whole boundary of the box), :meth:`reference_solution`
    (a trusted solution at any points) with :meth:`evaluation_grid` (where the relative L2 error is
    measured) and :meth:`reference` (a trusted :math:`u(0, x_0)`).

    Parameters
    ----------
    dim:
        Space dimension ``d``.
    horizon:
        ``T > 0``.
    lower, upper:
        The box :math:`\prod_i [a_i, b_i]`: floats broadcast to every coordinate, or sequences of ``d``.
    x0:
        The point at which :func:`deepbsde.solve` reports :math:`u(0, x_0)`; default the box's centre.
    """

    #: ``"initial"``: :meth:`condition` is :math:`u(0, x)` (forward equations such as Burgers');
    #: ``"terminal"``: it is :math:`u(T, x)` (backward equations such as those of :class:`~deepbsde.Problem`).
    time_condition: ClassVar[TimeCondition] = "initial"

    def __init__(self, dim: int, horizon: float, lower: float | Sequence[float], upper: float | Sequence[float],
                 x0: float | Sequence[float] | None = None) -> None:
        self.dim = _check_dim(dim)
        self.horizon = _check_horizon(horizon)
        lo = _check_x0(lower, self.dim)
        hi = _check_x0(upper, self.dim)
        bad = [i for i in range(self.dim) if not lo[i] < hi[i]]
        if bad:
            raise ProblemError(f"lower, upper: expected lower < upper in every coordinate, received "
                               f"{lo[bad[0]]} >= {hi[bad[0]]} at coordinate {bad[0]}")
        self.lower, self.upper = lo, hi
        if x0 is None:
            x0 = tuple(0.5 * (a + b) for a, b in zip(lo, hi))
        self.x0 = _check_x0(x0, self.dim)
        outside = [i for i in range(self.dim) if not lo[i] <= self.x0[i] <= hi[i]]
        if outside:
            raise ProblemError(f"x0: expected a point of the box, received {self.x0[outside[0]]} outside "
                               f"[{lo[outside[0]]}, {hi[outside[0]]}] at coordinate {outside[0]}")

    # --- the mathematics: to implement ---------------------------------------------------------
    @abc.abstractmethod
    def residual(self, t: torch.Tensor, x: torch.Tensor, u: torch.Tensor, derivs: Derivatives) -> torch.Tensor:
        r""":math:`\mathcal R[u](t, x)`, shape ``(batch, 1)``; ``u`` is the value ``(batch, 1)`` and ``derivs``
        gives :math:`u_t`, :math:`\nabla u`, the Hessian diagonal and Hessian-vector products."""

    @abc.abstractmethod
    def condition(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`u(0, x)` (``time_condition == "initial"``) or :math:`u(T, x)` (``"terminal"``), ``(batch, 1)``."""

    # --- optional ------------------------------------------------------------------------------
    def boundary(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r"""Dirichlet values :math:`u(t, x)` for ``x`` on the boundary of the box, ``(batch, 1)``."""
        raise NotImplementedError(f"{type(self).__name__} has no Dirichlet boundary condition")

    @property
    def has_boundary(self) -> bool:
        return type(self).boundary is not ResidualProblem.boundary

    def reference_solution(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r"""A trusted :math:`u(t, x)` (float64, ``(batch, 1)``), where one is known."""
        raise NotImplementedError(f"{type(self).__name__} has no reference solution")

    @property
    def has_reference_solution(self) -> bool:
        return type(self).reference_solution is not ResidualProblem.reference_solution

    def evaluation_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The points ``(t, x)`` (float64, shapes ``(n, 1)`` and ``(n, d)``) where the relative L2 error
        against :meth:`reference_solution` is measured. The default is a tensor grid of 101 times and
        ``max(2, round(4096 ** (1/d)))`` nodes per coordinate, at most 2**16 points."""
        per_axis = max(2, int(round(4096 ** (1.0 / self.dim))))
        while per_axis > 2 and 101 * per_axis ** self.dim > 2 ** 16:
            per_axis -= 1
        axes = [torch.linspace(a, b, per_axis, dtype=torch.float64) for a, b in zip(self.lower, self.upper)]
        times = torch.linspace(0.0, self.horizon, 101, dtype=torch.float64)
        mesh = torch.meshgrid(times, *axes, indexing="ij")
        points = torch.stack([m.reshape(-1) for m in mesh], dim=1)
        return points[:, :1], points[:, 1:]

    def reference(self) -> Reference | None:
        """A trusted :math:`u(0, x_0)` with its source; ``None`` by default."""
        return None

    # --- derived --------------------------------------------------------------------------------
    def x0_tensor(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        """``x0`` as a tensor of shape ``(d,)``."""
        return torch.tensor(self.x0, dtype=dtype, device=device)

    def bounds_tensor(self, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` as tensors of shape ``(d,)``."""
        return (torch.tensor(self.lower, dtype=dtype, device=device),
                torch.tensor(self.upper, dtype=dtype, device=device))

    @property
    def condition_time(self) -> float:
        """``0`` for an initial condition, ``T`` for a terminal one."""
        return 0.0 if self.time_condition == "initial" else self.horizon

    def check(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> None:
        """Check this problem's functions once (see :func:`check_residual_problem`)."""
        check_residual_problem(self, dtype, device)


def check_residual_problem(problem: object, dtype: torch.dtype = torch.float64,
                           device: torch.device | str = "cpu", batch: int = 3) -> None:
    """Call each function of ``problem`` once on a small batch and check every shape, dtype and value.

    The residual is called with the smooth test function :math:`u = \\sin(t + \\sum_i x_i)` so that every
    derivative it asks for exists. Raises :class:`~deepbsde.errors.ProblemError` naming the function.
    """
    if not isinstance(problem, ResidualProblem):
        raise ProblemError(f"problem: expected a deepbsde.ResidualProblem, received {describe(problem)}")
    if problem.time_condition not in ("initial", "terminal"):
        raise ProblemError(f"{problem.name}.time_condition: expected 'initial' or 'terminal', "
                           f"received {problem.time_condition!r}")
    d = problem.dim
    x = problem.x0_tensor(dtype, device).expand(batch, d).clone()
    t = torch.full((batch, 1), 0.5 * problem.horizon, dtype=dtype, device=device)
    _expect(problem, "condition(x)", problem.condition(x), (batch, 1), dtype)
    if problem.has_boundary:
        lo, _ = problem.bounds_tensor(dtype, device)
        xb = x.clone()
        xb[:, 0] = lo[0]
        _expect(problem, "boundary(t, x)", problem.boundary(t, xb), (batch, 1), dtype)
    tg = t.clone().requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    value = torch.sin(tg + xg.sum(1, keepdim=True))
    with torch.enable_grad():
        res = problem.residual(tg, xg, value, Derivatives(value, tg, xg))
    _expect(problem, "residual(t, x, u, derivs)", res, (batch, 1), dtype)
    if problem.has_reference_solution:
        tr, xr = t.to(torch.float64).cpu(), x.to(torch.float64).cpu()
        _expect(problem, "reference_solution(t, x)", problem.reference_solution(tr, xr), (batch, 1), torch.float64)
        grid_t, grid_x = problem.evaluation_grid()
        if grid_t.dim() != 2 or grid_t.shape[1] != 1 or tuple(grid_x.shape) != (grid_t.shape[0], d):
            raise ProblemError(f"{problem.name}.evaluation_grid(): expected t (n, 1) and x (n, {d}), received "
                               f"{tuple(grid_t.shape)} and {tuple(grid_x.shape)}")


def _expect(problem: ResidualProblem, what: str, value: object, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    expect_tensor(f"{problem.name}.{what}", value, shape, dtype)

