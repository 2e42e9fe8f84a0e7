r"""The PDE residual of a :class:`~deepbsde.Problem`, built by automatic differentiation.

.. math::
    R[u](t, x) = u_t + \tfrac12 \operatorname{Tr}(\sigma\sigma^\top \nabla^2 u) + \mu\cdot\nabla u
        + f(t, x, u, \sigma^\top \nabla u).

Used by the closed-form tests of the catalogue and by the PINN method. :func:`pde_residual` computes
the trace exactly (``m`` Hessian-vector products, one per noise column; memory linear in ``d`` for
diagonal noise); :func:`pde_residual` with ``probes`` uses the unbiased randomised estimate
:math:`\operatorname{Tr}(\sigma^\top H \sigma) = \mathbb{E}[\xi^\top \sigma^\top H \sigma \xi]` with
Rademacher :math:`\xi \in \{\pm1\}^m` (Hutchinson 1989), never building the ``d × d`` Hessian.
"""

from __future__ import annotations

from typing import Callable

import torch

from .problem import Problem

__all__ = ["pde_residual", "trace_term"]

UFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _grad(out: torch.Tensor, inp: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """d(sum out)/d(inp); zeros where ``out`` does not depend on ``inp`` (e.g. the Hessian of an affine u)."""
    return torch.autograd.grad(out.sum(), inp, create_graph=create_graph, allow_unused=True,
                               materialize_grads=True)[0]


def trace_term(problem: Problem, t: torch.Tensor, x: torch.Tensor, grad_u: torch.Tensor,
               probes: int | torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    r""":math:`\tfrac12\operatorname{Tr}(\sigma\sigma^\top\nabla^2 u)` at each point, shape ``(batch, 1)``.

    ``grad_u`` must be :math:`\nabla u(t, x)` computed with ``create_graph=True`` from ``x``.
    Exact when ``probes`` is ``None``: one Hessian-vector product per noise column of σ
    (:math:`\sum_k \sigma_{\cdot k}^\top H \sigma_{\cdot k}`). Otherwise the mean over ``probes``
    Rademacher vectors ξ of :math:`(\sigma\xi)^\top H (\sigma\xi)`, an unbiased estimate: ``probes``
    is their number (drawn here from ``generator``) or the vectors themselves, a tensor of shape
    ``(P, batch, m)`` drawn by the caller (so that the randomness stays with the caller's generator).
    Memory is linear in ``d`` in every case: one vector per product, never the ``d × d`` Hessian.
    """
    m = problem.noise_dim
    batch = x.shape[0]
    total = torch.zeros(batch, 1, dtype=x.dtype, device=x.device)
    if isinstance(probes, torch.Tensor):
        if probes.dim() != 3 or tuple(probes.shape[1:]) != (batch, m) or probes.shape[0] < 1:
            raise ValueError(f"probes: expected a tensor of shape (P, batch={batch}, m={m}) with P >= 1, "
                             f"received shape {tuple(probes.shape)}")
        for xi in probes:
            total = total + _quadratic_form(problem, t, x, grad_u, xi.to(x.dtype))
        return 0.5 * total / probes.shape[0]
    if probes is None:
        for k in range(m):
            e = torch.zeros(batch, m, dtype=x.dtype, device=x.device)
            e[:, k] = 1.0
            total = total + _quadratic_form(problem, t, x, grad_u, e)
        return 0.5 * total
    for _ in range(probes):
        xi = torch.randint(0, 2, (batch, m), generator=generator, device=x.device).to(x.dtype) * 2 - 1
        total = total + _quadratic_form(problem, t, x, grad_u, xi)
    return 0.5 * total / probes


def _quadratic_form(problem: Problem, t: torch.Tensor, x: torch.Tensor, grad_u: torch.Tensor,
                    e: torch.Tensor) -> torch.Tensor:
    r""":math:`(\sigma e)^\top \nabla^2 u\, (\sigma e)` by one Hessian-vector product; σe is held
    constant in the differentiation so that derivatives of σ do not leak in."""
    v = problem.sigma_times(t, x, e)
    hv = _grad((grad_u * v.detach()).sum(1, keepdim=True), x)
    return (hv * v).sum(1, keepdim=True)


def pde_residual(problem: Problem, u: UFunction, t: torch.Tensor, x: torch.Tensor,
                 probes: int | torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The residual :math:`R[u](t, x)` of ``problem`` for a function ``u(t, x) -> (batch, 1)``.

    ``t`` has shape ``(batch, 1)`` and ``x`` ``(batch, d)``; both are detached copies made to require
    gradients here. The result keeps the graph (so it can be a training loss). ``probes``: ``None`` for
    the exact trace, else the Hutchinson probes (a count, or the ``(P, batch, m)`` vectors; see
    :func:`trace_term`).
    """
    t = t.detach().requires_grad_(True)
    x = x.detach().requires_grad_(True)
    value = u(t, x)
    u_t = _grad(value, t)
    grad_u = _grad(value, x)
    z = problem.sigma_transpose_times(t, x, grad_u)
    return (u_t + trace_term(problem, t, x, grad_u, probes, generator)
            + (problem.drift(t, x) * grad_u).sum(1, keepdim=True)
            + problem.driver(t, x, value, z))
