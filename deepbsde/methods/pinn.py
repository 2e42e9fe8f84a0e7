r"""Physics-informed neural networks (Raissi, Perdikaris & Karniadakis, J. Comput. Phys. 378, 2019;
Sirignano & Spiliopoulos, "DGM", J. Comput. Phys. 375, 2018).

A network :math:`u_\theta(t, x)` is trained on the composite loss

.. math::
    L(\theta) = w_{res}\,\overline{R[u_\theta](t_i, x_i)^2}
        + w_{term}\,\overline{(u_\theta(T, x_j) - g(x_j))^2}
        + w_{init}\,\overline{(u_\theta(0, x_j) - u_0(x_j))^2}
        + w_{bc}\,\overline{(u_\theta(t_k, x_k) - b(t_k, x_k))^2},

each bar a mean over its own random points, and only the terms the problem has. For a
:class:`~deepbsde.Problem` (the same object the deep BSDE method gets) the residual is built from
:math:`\mu, \sigma, f` by :func:`deepbsde.residual.pde_residual`:
:math:`R[u] = u_t + \tfrac12\operatorname{Tr}(\sigma\sigma^\top\nabla^2u) + \mu\cdot\nabla u + f(t, x, u, \sigma^\top\nabla u)`,
with the trace exact (one Hessian-vector product per noise column) or estimated by Hutchinson's
:math:`\mathbb E[\xi^\top\sigma^\top H\sigma\xi]` with Rademacher ξ (memory linear in ``d``, never the
``d × d`` Hessian). For a :class:`~deepbsde.ResidualProblem` the residual, the initial or terminal
condition and the Dirichlet boundary come from the problem.

Options:

* collocation points: uniform in a box (``"box"``), scrambled Sobol points in the same box (``"sobol"``), or
  points of simulated forward paths of the problem's SDE (``"paths"``, where the FBSDE lives);
* adaptive loss weights by learning-rate annealing (Wang, Teng & Perdikaris, SIAM J. Sci. Comput. 43, 2021,
  Algorithm 1; arXiv:2001.04536, 2020): every ``adapt_every`` steps
  :math:`\hat\lambda_i = \max_\theta|\nabla_\theta w_{res}L_{res}| / \overline{|\nabla_\theta L_i|}` and
  :math:`\lambda_i \leftarrow (1 - \alpha)\lambda_i + \alpha\hat\lambda_i`;
* residual-based adaptive refinement (RAR; Lu, Meng, Mao & Karniadakis, SIAM Review 63, 2021): every
  ``rar_every`` steps the ``rar_points`` fresh collocation points of largest :math:`|R|` join a persistent set
  that is added to every later batch (up to ``rar_max`` points);
* Adam (the loop of :func:`deepbsde.solve`) followed by ``lbfgs_iterations`` of L-BFGS on one fixed batch
  (:meth:`PINN.finetune`), the standard recipe of Raissi et al.

All randomness comes from the generator passed to :meth:`PINN.sample` (and to :meth:`PINN.build` for
the initialisation); the state that training changes (loss weights, RAR points, step counter) lives in
the model, so checkpoints and rollbacks restore it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError, describe
from ..estimators import Control, driver_structure, end_point_scheme
from ..nets import MLP
from ..paths import brownian_increments, make_generator, simulate
from ..pinn_problem import Derivatives, ResidualProblem
from ..problem import Problem
from ..residual import pde_residual
from ._checks import choice, integer, number, widths
from .base import Estimate, Method

__all__ = ["PINN", "PINNModel", "PINNBatch"]

#: ``trace="auto"`` uses the exact trace up to this many noise dimensions, Hutchinson's estimate above.
AUTO_EXACT_MAX_DIM = 10
#: paths are simulated this many at a time (``sampler="paths"``), so that only one point of each is kept
_PATH_CHUNK = 256

_ACTIVATIONS = ("tanh", "relu", "silu", "softplus")
#: under the control's measure (``control_measure``), this share of the points comes from controlled paths
CONTROLLED_SHARE = 0.9


class PINNModel(nn.Module):
    r""":math:`u(t, x) = a + s\,\mathcal N((t - t_c)/t_s, (x - x_c)/x_s)`, an MLP between fixed affine maps.

    The input map sends the sampling region to about :math:`[-1, 1]^{1+d}`, the output map sends the
    network's O(1) outputs to the scale of the time condition. Buffers also hold the training state of the
    PINN options: the loss weights ``(res, condition, boundary)`` and the RAR points; the step counter and
    the number of RAR points in use are the module's extra state.
    """

    def __init__(self, net: MLP, t_center: float, t_scale: float, x_center: torch.Tensor, x_scale: torch.Tensor,
                 out_offset: float, out_scale: float, weights: Sequence[float], rar_capacity: int,
                 x0: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        f64 = torch.float64
        self.register_buffer("t_center", torch.tensor(t_center, dtype=f64))
        self.register_buffer("t_scale", torch.tensor(t_scale, dtype=f64))
        self.register_buffer("x_center", x_center.to(f64).clone())
        self.register_buffer("x_scale", x_scale.to(f64).clone())
        self.register_buffer("out_offset", torch.tensor(out_offset, dtype=f64))
        self.register_buffer("out_scale", torch.tensor(out_scale, dtype=f64))
        self.register_buffer("loss_weights", torch.tensor(list(weights), dtype=f64))
        self.register_buffer("rar_store", torch.zeros(rar_capacity, 1 + x_center.shape[0], dtype=f64))
        self.register_buffer("x0", x0.to(f64).reshape(1, -1).clone())  # (1, d): u(0, x0) without a host copy
        self.updates = 0
        self.rar_count = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``t`` ``(batch, 1)``, ``x`` ``(batch, d)`` -> ``(batch, 1)``."""
        inp = torch.cat([(t - self.t_center) / self.t_scale, (x - self.x_center) / self.x_scale], dim=1)
        return self.out_offset + self.out_scale * self.net(inp)

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.updates, self.rar_count], dtype=torch.int64)

    def set_extra_state(self, state: Any) -> None:
        values = state.tolist() if isinstance(state, torch.Tensor) else list(state)
        self.updates, self.rar_count = int(values[0]), int(values[1])

    def rar(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The RAR points in use: ``t`` ``(n, 1)`` and ``x`` ``(n, d)``."""
        store = self.rar_store[:self.rar_count]
        return store[:, :1], store[:, 1:]


@dataclasses.dataclass
class PINNBatch:
    """One batch of PINN training points (``None`` where the problem has no such term).

    ``t`` ``(n, 1)``, ``x`` ``(n, d)``: interior collocation points; ``x_cond`` ``(n_c, d)``: points of
    the time condition (at ``t = T`` or ``t = 0``); ``t_bc``, ``x_bc``: boundary points; ``probes``
    ``(P, n + rar_max, m)``: Rademacher vectors of the Hutchinson trace. ``controlled``: under the control's
    measure (:attr:`PINN.control_measure`), ``(dw, idx, n_cond)`` for the points still to be drawn on paths that
    the model steers: the increments ``(B, N, m)``, one grid index ``< N`` per path, and how many of the paths
    also give a time-condition point (their end); :meth:`PINN.materialise` adds those points to the batch.
    """

    t: torch.Tensor
    x: torch.Tensor
    x_cond: torch.Tensor
    t_bc: torch.Tensor | None = None
    x_bc: torch.Tensor | None = None
    probes: torch.Tensor | None = None
    controlled: tuple[torch.Tensor, torch.Tensor, int] | None = None


@dataclasses.dataclass(frozen=True)
class PINN(Method):
    """The PINN solver's settings.

    Parameters
    ----------
    hidden, activation:
        Hidden widths and activation (``"tanh"``, ``"relu"``, ``"silu"``, ``"softplus"``) of the MLP
        :math:`(t, x) \\mapsto u`. Second derivatives of ``relu`` vanish: use a smooth activation.
    trace:
        ``"exact"`` (``m`` Hessian-vector products), ``"hutchinson"`` (``probes`` of them, unbiased) or
        ``"auto"`` (exact for ``m <= 10``). Only for a :class:`~deepbsde.Problem`.
    probes:
        Rademacher probes per point for the Hutchinson estimate.
    sampler:
        ``"auto"`` (the default: ``"paths"`` for a :class:`~deepbsde.Problem`, ``"box"`` for a
        :class:`~deepbsde.ResidualProblem`), ``"box"`` (uniform), ``"sobol"`` (scrambled Sobol, seeded from the
        generator) or ``"paths"`` (points of forward paths of the SDE; a :class:`~deepbsde.Problem` only). For a
        terminal-value problem on all of R^d a box around x0 leaves the solution undetermined near its edges,
        and the paths are where u(0, x0) is decided: with a box of half-width 1 the PINN missed a basket call at
        x0 = 100 entirely.
    control_measure:
        ``"auto"`` (the default): with the ``"paths"`` sampler, where the driver depends on ``z`` other than
        affinely (HJB, Burgers-type, different rates; probed at :meth:`build`), 90 % of the collocation and terminal
        points come from paths under the measure the current network induces through the driver (the drift
        :math:`\\sigma\\,\\partial_z f(t, X, u_\\theta, \\sigma^\\top\\nabla u_\\theta)`, as the deep BSDE method's
        ``control_measure``), the rest from the problem's own SDE, and the error bar's re-estimate runs under that
        measure too (its bias then second order in the control's error: a user's LQ problem, d = 5, g = 2|x|²,
        f = −|z|²/2, went from 5.3 % off with ±220 % to 0.46 % with ±4 %, the trained u being 0.36 % off). The value
        at x0 is decided along the optimally controlled paths, which can run where the uncontrolled ones seldom go:
        HJB at d = 10, λ = 10 pulls them towards the minimum of ``g`` at the origin (:math:`|X_T| \\approx 1.2` on
        the trained deep BSDE control's paths, against 4.5 for the uncontrolled ones). Measured there (seed 0,
        defaults): 66 % off without it (interval ±23 %, missing), 8.3 % with it (interval ±22 %, covering); at
        λ = 1, 0.30 % (±2.5 %) and 0.060 % (±0.37 %); with half the points controlled and the re-estimate on plain
        paths, 15.9 %. Drawing the controlled paths costs ``path_steps`` gradient evaluations of the network a step:
        a training step took 1.6-2.5 times as long at d = 10 and 100. ``"plain"``: never; ``"controlled"``: always
        (with the ``"paths"`` sampler).
    half_width:
        For a :class:`~deepbsde.Problem` the box is :math:`x_0 + [-h, h]^d`, ``t`` in ``[0, T]``; a
        :class:`~deepbsde.ResidualProblem` brings its own box.
    path_steps:
        Time steps of the simulated paths (``sampler="paths"``); the points are ``(t_n, X_n)`` at one
        uniformly drawn grid index ``n < N`` per path, the terminal points :math:`X_N`.
    condition_fraction, boundary_fraction:
        Points for the time condition and on the boundary, as fractions of the batch size.
    w_res, w_term, w_init, w_bc:
        Weights of the residual, terminal-condition, initial-condition and boundary terms (the starting values
        when ``weighting="adaptive"``).
    weighting:
        ``"fixed"`` or ``"adaptive"`` (learning-rate annealing, Wang, Teng & Perdikaris 2020).
    adapt_every, adapt_alpha:
        Update period ``K`` and moving-average factor α (0.9 in the paper) of the adaptive weights.
    rar_every, rar_points, rar_max:
        Residual-based adaptive refinement: every ``rar_every`` steps (``0``: off) add the ``rar_points``
        fresh collocation points with the largest residual, up to ``rar_max`` in all.
    lbfgs_iterations, lbfgs_history:
        L-BFGS iterations (strong-Wolfe line search) after the Adam loop on one fixed batch (``0``: none), and
        its memory.
    eval_points:
        Points (drawn by the sampler from a fixed seed) where the relative L2 error against a closed-form
        solution is measured for a :class:`~deepbsde.Problem`; a ResidualProblem uses its evaluation grid.
    """

    hidden: tuple[int, ...] = (64, 64, 64)
    activation: str = "tanh"
    trace: str = "auto"
    probes: int = 4
    sampler: str = "auto"
    control_measure: str = "auto"
    half_width: float = 1.0
    path_steps: int = 20
    condition_fraction: float = 0.25
    boundary_fraction: float = 0.25
    w_res: float = 1.0
    w_term: float = 1.0
    w_init: float = 1.0
    w_bc: float = 1.0
    weighting: str = "fixed"
    adapt_every: int = 10
    adapt_alpha: float = 0.9
    rar_every: int = 0
    rar_points: int = 10
    rar_max: int = 1000
    lbfgs_iterations: int = 0
    lbfgs_history: int = 50
    eval_points: int = 4096
    name: str = dataclasses.field(default="PINN", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", widths("hidden", self.hidden))
        choice("activation", self.activation, _ACTIVATIONS)
        choice("trace", self.trace, ("auto", "exact", "hutchinson"))
        choice("sampler", self.sampler, ("auto", "box", "sobol", "paths"))
        choice("control_measure", self.control_measure, ("auto", "plain", "controlled"))
        choice("weighting", self.weighting, ("fixed", "adaptive"))
        integer("probes", self.probes, 1)
        integer("path_steps", self.path_steps, 1)
        integer("adapt_every", self.adapt_every, 1)
        integer("rar_every", self.rar_every, 0)
        integer("rar_points", self.rar_points, 1)
        integer("rar_max", self.rar_max, 1)
        integer("lbfgs_iterations", self.lbfgs_iterations, 0)
        integer("lbfgs_history", self.lbfgs_history, 1)
        integer("eval_points", self.eval_points, 1)
        number("half_width", self.half_width, positive=True)
        for name in ("condition_fraction", "boundary_fraction"):
            value = getattr(self, name)
            number(name, value, positive=True)
            if value > 1:
                raise ConfigError(f"method.{name}: expected a number in (0, 1], received {describe(value)}")
        for name in ("w_res", "w_term", "w_init", "w_bc"):
            number(name, getattr(self, name), positive=True)
        number("adapt_alpha", self.adapt_alpha, positive=True)
        if self.adapt_alpha > 1:
            raise ConfigError(f"method.adapt_alpha: expected a number in (0, 1], received {describe(self.adapt_alpha)}")

    # --- the Method interface --------------------------------------------------------------------
    def check(self, problem: Problem | ResidualProblem) -> None:
        if not isinstance(problem, (Problem, ResidualProblem)):
            raise ConfigError(f"method PINN: needs a deepbsde.Problem or a deepbsde.ResidualProblem, "
                              f"received {describe(problem)}")
        if isinstance(problem, ResidualProblem):
            if self.sampler == "paths":
                raise ConfigError(f"method.sampler: 'paths' needs the forward SDE of a deepbsde.Problem; "
                                  f"{problem.name} is a ResidualProblem: use 'box' or 'sobol'")
            if self.trace == "hutchinson":
                raise ConfigError(f"method.trace: 'hutchinson' applies to a deepbsde.Problem; {problem.name} "
                                  f"computes its own residual (use Derivatives.hvp there): use 'auto'")
        if self.control_measure == "controlled" and self.sampler_for(problem) != "paths":
            raise ConfigError(f"method.control_measure: 'controlled' draws points on controlled paths and needs "
                              f"the 'paths' sampler (a deepbsde.Problem), received sampler "
                              f"{self.sampler_for(problem)!r}: use sampler = 'paths' or control_measure = 'auto'")

    def sampler_for(self, problem: Problem | ResidualProblem) -> str:
        """The sampler in use: ``sampler``, with ``"auto"`` resolved for ``problem``."""
        if self.sampler != "auto":
            return self.sampler
        return "box" if isinstance(problem, ResidualProblem) else "paths"

    def trace_for(self, problem: Problem | ResidualProblem) -> str:
        """``"exact"`` or ``"hutchinson"`` (``"none"`` for a ResidualProblem)."""
        if isinstance(problem, ResidualProblem):
            return "none"
        if self.trace == "auto":
            return "exact" if problem.noise_dim <= AUTO_EXACT_MAX_DIM else "hutchinson"
        return self.trace

    def build(self, problem: Problem | ResidualProblem, generator: torch.Generator) -> PINNModel:
        d = problem.dim
        net = MLP(1 + d, self.hidden, 1, generator=generator, activation=self.activation)
        horizon = problem.horizon
        _, x, x_cond, _, _ = self._points(problem, 256, 1.0, generator, torch.float64)
        if isinstance(problem, ResidualProblem):
            lo, hi = problem.bounds_tensor()
            x_center, x_scale = 0.5 * (lo + hi), 0.5 * (hi - lo)
        elif self.sampler_for(problem) == "paths":
            x_center = x.mean(0)
            x_scale = x.std(0).clamp_min(1e-3 * (1.0 + float(x_center.abs().max())))
        else:
            x_center = problem.x0_tensor()
            x_scale = torch.full((d,), self.half_width, dtype=torch.float64)
        cond = _condition(problem, x_cond)
        self._keep("_decisions", problem, self._decide(problem, x, cond))
        offset = float(cond.mean())
        scale = float(cond.std()) if cond.numel() > 1 else 0.0
        scale = max(scale, 1e-2 * max(1.0, abs(offset)))
        weights = (self.w_res, self.w_init if _is_initial(problem) else self.w_term, self.w_bc)
        capacity = self.rar_max if self.rar_every else 0
        return PINNModel(net, 0.5 * horizon, 0.5 * horizon, x_center, x_scale, offset, scale, weights, capacity,
                         problem.x0_tensor())

    def sample(self, problem: Problem | ResidualProblem, batch_size: int, generator: torch.Generator,
               dtype: torch.dtype) -> PINNBatch:
        n_cond = max(1, round(self.condition_fraction * batch_size))
        n_ctl = cond_ctl = 0
        if self.controlled(problem) and batch_size > 1:  # these points are left to materialise()
            n_ctl, cond_ctl = int(batch_size * CONTROLLED_SHARE), int(n_cond * CONTROLLED_SHARE)
        n_plain = batch_size - n_ctl
        t, x, x_cond, t_bc, x_bc = self._points(problem, n_plain, (n_cond - cond_ctl) / n_plain, generator, dtype)
        controlled = None
        if n_ctl:
            dt = problem.horizon / self.path_steps
            dw = brownian_increments(max(n_ctl, cond_ctl), self.path_steps, problem.noise_dim, dt, generator, dtype)
            idx = torch.randint(0, self.path_steps, (n_ctl,), generator=generator, device=generator.device)
            controlled = (dw, idx, cond_ctl)
        probes = None
        if self.trace_for(problem) == "hutchinson":
            extra = self.rar_max if self.rar_every else 0
            probes = torch.randint(0, 2, (self.probes, batch_size + extra, problem.noise_dim), generator=generator,
                                   device=generator.device).to(dtype).mul_(2).sub_(1)
        return PINNBatch(t, x, x_cond, t_bc, x_bc, probes, controlled)

    def controlled(self, problem: Problem | ResidualProblem) -> bool:
        """Whether 90 % of the points come from paths under the control's measure (decided at :meth:`build`;
        see ``control_measure``)."""
        return bool(self._kept("_decisions", problem, default=False))

    def _decide(self, problem: Problem | ResidualProblem, x: torch.Tensor, cond: torch.Tensor) -> bool:
        """``control_measure`` resolved for ``problem``: ``"auto"`` probes the driver at the pilot points ``x``
        (its own generator, so that every other draw of the run stays as it was)."""
        if not isinstance(problem, Problem) or self.sampler_for(problem) != "paths" or self.control_measure == "plain":
            return False
        if self.control_measure == "controlled":
            return True
        times = (torch.rand(x.shape[0], 1, generator=make_generator(7), dtype=x.dtype) * problem.horizon).to(x.device)
        scale = max(float(cond.std()) if cond.numel() > 1 else 0.0, 1e-2 * max(1.0, float(cond.abs().mean())))
        structure = driver_structure(problem, x, times, scale, make_generator(8))
        return structure.depends_on_z and not structure.affine_in_z

    def materialise(self, model: PINNModel, problem: Problem | ResidualProblem, batch: PINNBatch) -> PINNBatch:
        r"""``batch`` with its controlled part drawn: paths from :math:`x_0` under the drift
        :math:`\sigma\,\partial_z f` at the model's :math:`(u_\theta, \sigma^\top\nabla u_\theta)`
        (:func:`~deepbsde.methods.deep_bsde.controlled_paths`, no graph), one point per path at its grid index
        and the ends of the first ``n_cond`` paths, appended to the plain points. Drawn anew at every call, so
        they follow the model as it trains."""
        if batch.controlled is None or not isinstance(problem, Problem):
            return batch
        from .deep_bsde import controlled_paths

        dw, idx, n_cond = batch.controlled
        steps = dw.shape[1]
        dt = problem.horizon / steps
        with torch.no_grad():
            y0 = float(self.u0_tensor(model, problem))
        paths, _ = controlled_paths(problem, _z_step(model, problem), y0, dw, dt)
        paths = paths.detach()
        x = paths[torch.arange(idx.shape[0], device=dw.device), idx]
        t = (idx.to(dw.dtype) * dt).unsqueeze(1)
        return dataclasses.replace(batch, t=torch.cat([batch.t, t]), x=torch.cat([batch.x, x]),
                                   x_cond=torch.cat([batch.x_cond, paths[:n_cond, -1]]), controlled=None)

    def loss(self, model: PINNModel, problem: Problem | ResidualProblem, batch: PINNBatch) -> torch.Tensor:
        training = torch.is_grad_enabled() and model.training
        batch = self.materialise(model, problem, batch)
        with torch.enable_grad():
            parts, residual = self._parts(model, problem, batch)
            if training:
                self._adapt(model, parts)
            total = _weighted(model, parts)
        if training:
            self._refine(model, batch, residual)
            model.updates += 1
            return total
        return total.detach()

    def u0_tensor(self, model: PINNModel, problem: Problem | ResidualProblem) -> torch.Tensor:
        """:math:`u_\\theta(0, x_0)` on the model's device: no host round-trip (``x0`` is a buffer)."""
        x0 = model.x0
        with torch.no_grad():
            return model(torch.zeros(1, 1, dtype=x0.dtype, device=x0.device), x0).reshape(())

    def estimate(self, model: PINNModel, problem: Problem | ResidualProblem) -> Estimate:
        ref = model.x_center
        x0 = problem.x0_tensor(ref.dtype, ref.device).unsqueeze(0).requires_grad_(True)
        with torch.enable_grad():
            u = model(torch.zeros(1, 1, dtype=ref.dtype, device=ref.device), x0)
            (grad,) = torch.autograd.grad(u.sum(), x0)
        return Estimate(float(u.detach().reshape(())), tuple(float(v) for v in grad[0].cpu()))

    #: the error bar's gradient: the trained σᵀ∇u(0, x0) with its likelihood-ratio correction (the pathwise one
    #: would need third derivatives of the network)
    gradient_estimator = "likelihood_ratio"

    def control(self, model: PINNModel, problem: Problem | ResidualProblem) -> Control | None:
        r"""The trained :math:`u_\theta` as a control for the error bar: :math:`\hat Y_0 = u_\theta(0, x_0)` and
        :math:`\hat Z = \sigma^\top\nabla u_\theta` along fresh paths on a grid of ``path_steps`` steps
        (Heun's scheme), so that a PINN answer gets the same re-estimate and interval as the deep BSDE one;
        ``None`` for a :class:`~deepbsde.ResidualProblem` (no FBSDE form)."""
        if not isinstance(problem, Problem):
            return None

        def z_at(x: torch.Tensor, num_steps: int) -> torch.Tensor:
            batch, _, d = x.shape
            times = torch.linspace(0.0, problem.horizon, num_steps + 1, dtype=x.dtype, device=x.device)[:-1]
            xs = x[:, :-1].reshape(-1, d)
            ts = times.repeat(batch).reshape(-1, 1)
            keep = x.requires_grad
            with torch.enable_grad():
                xg = xs if keep else xs.detach().requires_grad_(True)
                u = model(ts, xg)
                (grad,) = torch.autograd.grad(u.sum(), xg, create_graph=keep)
            z = problem.sigma_transpose_times(ts, xs, grad)
            return z.reshape(batch, num_steps, -1) if keep else z.detach().reshape(batch, num_steps, -1)

        # Heun's scheme, without its corrector on the last step where the driver is singular at t = T (found as
        # a user: QuadraticGradient d = 1, the trained u 0.19 % off, its re-estimate 33 % off with ±2000)
        scheme = self._kept("_schemes", problem, lambda: end_point_scheme(problem, self.path_steps))
        # under the control's measure (where the points were drawn there) the re-estimate's bias is second order
        # in the control's error, not first: a user's LQ problem (d = 5, g = 2|x|^2, f = -|z|^2/2) re-estimated
        # 5.3 % off with +-220 % on the plain paths while the trained u was 0.36 % off
        z_step = _z_step(model, problem) if self.controlled(problem) else None
        return Control(float(self.u0_tensor(model, problem)), z_at, self.path_steps, scheme, z_step=z_step)

    def trained_z0(self, model: PINNModel, problem: Problem | ResidualProblem) -> torch.Tensor | None:
        if not isinstance(problem, Problem):
            return None
        ref = model.x_center
        x0 = problem.x0_tensor(ref.dtype, ref.device).unsqueeze(0).requires_grad_(True)
        t0 = torch.zeros(1, 1, dtype=ref.dtype, device=ref.device)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(t0, x0).sum(), x0)
        return problem.sigma_transpose_times(torch.zeros((), dtype=ref.dtype, device=ref.device), x0.detach(),
                                             grad)[0].detach()

    def value(self, model: PINNModel, problem: Problem | ResidualProblem, t: torch.Tensor,
              x: torch.Tensor) -> torch.Tensor:
        """The trained :math:`u_\\theta(t, x)`, ``(B, 1)``, differentiable in ``x``: the network is a function
        of ``(t, x)``, so any ``t`` in ``[0, T]`` works (outside the sampled region it extrapolates)."""
        return model(t, x)

    def evaluate(self, model: PINNModel, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The trained :math:`u_\\theta(t, x)` at ``t`` ``(n, 1)``, ``x`` ``(n, d)``: float64 on the CPU, ``(n, 1)``."""
        ref = model.x_center
        with torch.no_grad():
            out = [model(t[i:i + 8192].to(ref.device, ref.dtype), x[i:i + 8192].to(ref.device, ref.dtype))
                   for i in range(0, t.shape[0], 8192)]
        return torch.cat(out).to(torch.float64).cpu()

    def metrics(self, model: PINNModel, problem: Problem | ResidualProblem) -> dict[str, float]:
        """The relative L2 error :math:`\\|u_\\theta - u\\|_2 / \\|u\\|_2` on the reference points (the
        problem's evaluation grid, or ``eval_points`` sampler points from a fixed seed against the closed
        form); empty where the problem has no reference solution."""
        ref_points = _reference_points(self, model, problem)
        if ref_points is None:
            return {}
        t, x, ref = ref_points
        with torch.no_grad():
            pred = torch.cat([model(t[i:i + 8192], x[i:i + 8192]) for i in range(0, t.shape[0], 8192)])
        err = torch.linalg.vector_norm(pred.to(torch.float64) - ref) / torch.linalg.vector_norm(ref)
        return {"l2_relative_error": float(err)}

    def report(self, model: PINNModel, problem: Problem | ResidualProblem) -> dict[str, Any]:
        out: dict[str, Any] = {"pinn_trace": self.trace_for(problem)}
        if self.trace_for(problem) == "hutchinson":
            out["pinn_probes"] = self.probes
        if self.weighting == "adaptive":
            out["pinn_loss_weights"] = [float(w) for w in model.loss_weights]
        if self.rar_every:
            out["pinn_rar_points"] = model.rar_count
        metrics = self.metrics(model, problem)
        if metrics:
            out.update(metrics)
            points = _reference_points(self, model, problem)
            out["l2_points"] = int(points[0].shape[0])
        return out

    def finetune(self, model: PINNModel, problem: Problem | ResidualProblem, *, generator: torch.Generator,
                 dtype: torch.dtype, batch_size: int, log_every: int,
                 callback: Callable[[int, float], None]) -> dict[str, Any] | None:
        r"""``lbfgs_iterations`` of L-BFGS (strong-Wolfe line search, history ``lbfgs_history``) on one batch
        of ``batch_size`` points drawn from ``generator``, with the loss weights frozen and no refinement.

        ``callback(iterations_done, loss)`` is called every ``log_every`` iterations and at the end.
        Stops early when L-BFGS converges (no progress within a chunk). A non-finite loss restores the
        state before the failing chunk and stops, with a warning. Returns figures for the summary.
        """
        if not self.lbfgs_iterations:
            return None
        # one fixed batch: its controlled points are drawn once, so that the line search sees one objective
        batch = self.materialise(model, problem, self.sample(problem, batch_size, generator, dtype))
        params = [p for p in model.parameters() if p.requires_grad]
        chunk = max(1, min(log_every, self.lbfgs_iterations))
        optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=chunk, max_eval=chunk * 5 // 4 + 1,
                                      history_size=self.lbfgs_history, tolerance_grad=1e-12,
                                      tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            parts, _ = self._parts(model, problem, batch)
            total = _weighted(model, parts)
            total.backward()
            return total

        model.train()
        done, warnings = 0, []
        loss_value = float("nan")
        while done < self.lbfgs_iterations:
            saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
            group = optimizer.param_groups[0]
            group["max_iter"] = min(chunk, self.lbfgs_iterations - done)
            group["max_eval"] = group["max_iter"] * 5 // 4 + 1
            before = optimizer.state[params[0]].get("n_iter", 0) if params[0] in optimizer.state else 0
            optimizer.step(closure)
            after = optimizer.state[params[0]].get("n_iter", 0)
            loss_value = self._total(model, problem, batch)
            if not math.isfinite(loss_value):
                model.load_state_dict(saved)
                warnings.append(f"L-BFGS: non-finite loss after {done + (after - before)} iterations; "
                                f"kept the state after {done} iterations")
                break
            done += after - before
            callback(done, loss_value)
            if after - before < group["max_iter"]:
                break  # converged (gradient or change below tolerance) or line search stalled
        out: dict[str, Any] = {"lbfgs_iterations_run": done, "lbfgs_final_loss": loss_value}
        if warnings:
            out["warnings"] = warnings
        return out

    # --- internals --------------------------------------------------------------------------------
    def _total(self, model: PINNModel, problem: Problem | ResidualProblem, batch: PINNBatch) -> float:
        """The weighted loss on ``batch`` as a float, without side effects."""
        batch = self.materialise(model, problem, batch)
        with torch.enable_grad():
            parts, _ = self._parts(model, problem, batch)
            return float(_weighted(model, parts).detach())

    def _points(self, problem: Problem | ResidualProblem, n: int, cond_fraction: float, generator: torch.Generator,
                dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``(t, x, x_cond, t_bc, x_bc)`` drawn by the sampler on ``generator.device``."""
        dev = generator.device
        d = problem.dim
        n_cond = max(1, round(cond_fraction * n))
        horizon = problem.horizon
        if isinstance(problem, ResidualProblem):
            lo, hi = problem.bounds_tensor(dtype, dev)
            u = self._unit(n, 1 + d, generator, dtype)
            t, x = horizon * u[:, :1], lo + (hi - lo) * u[:, 1:]
            x_cond = lo + (hi - lo) * self._unit(n_cond, d, generator, dtype)
            t_bc = x_bc = None
            if problem.has_boundary:
                n_bc = max(2, round(self.boundary_fraction * n))
                ub = self._unit(n_bc, 1 + d, generator, dtype)
                t_bc, x_bc = horizon * ub[:, :1], lo + (hi - lo) * ub[:, 1:]
                face = torch.randint(0, 2 * d, (n_bc,), generator=generator, device=dev)
                rows = torch.arange(n_bc, device=dev)
                coord = face // 2
                x_bc[rows, coord] = torch.where(face % 2 == 0, lo[coord], hi[coord])
            return t, x, x_cond, t_bc, x_bc
        x0 = problem.x0_tensor(dtype, dev)
        if self.sampler_for(problem) == "paths":
            steps = self.path_steps
            dt = horizon / steps
            total = max(n, n_cond)
            idx = torch.randint(0, steps, (total,), generator=generator, device=dev)  # t_n, n < N: the PDE holds on [0, T)
            picked, last = [], []
            for start in range(0, total, _PATH_CHUNK):  # chunks bound the memory of stored paths
                size = min(_PATH_CHUNK, total - start)
                dw = brownian_increments(size, steps, problem.noise_dim, dt, generator, dtype)
                paths = simulate(problem, dw, dt)
                picked.append(paths[torch.arange(size, device=dev), idx[start:start + size]])
                if start < n_cond:
                    last.append(paths[:n_cond - start, -1].clone())  # a copy: a view would keep all paths alive
            x, x_cond = torch.cat(picked)[:n], torch.cat(last)[:n_cond]
            t = (idx[:n].to(dtype) * dt).unsqueeze(1)
            return t, x, x_cond, None, None
        u = self._unit(n, 1 + d, generator, dtype)
        t = horizon * u[:, :1]
        x = x0 + self.half_width * (2 * u[:, 1:] - 1)
        x_cond = x0 + self.half_width * (2 * self._unit(n_cond, d, generator, dtype) - 1)
        return t, x, x_cond, None, None

    def _unit(self, n: int, k: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """``n`` points of :math:`[0, 1)^k`: uniform, or scrambled Sobol with a seed drawn from ``generator``."""
        if self.sampler == "sobol":
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
            engine = torch.quasirandom.SobolEngine(k, scramble=True, seed=seed)
            return engine.draw(n, dtype=torch.float64).to(device=generator.device, dtype=dtype)
        return torch.rand(n, k, generator=generator, device=generator.device, dtype=dtype)

    def _parts(self, model: PINNModel, problem: Problem | ResidualProblem,
               batch: PINNBatch) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The unweighted loss terms ``[L_res, L_cond(, L_bc)]`` and the residual at the fresh points."""
        n = batch.t.shape[0]
        t, x = batch.t, batch.x
        if model.rar_count:
            rt, rx = model.rar()
            t = torch.cat([t, rt.to(t.dtype)])
            x = torch.cat([x, rx.to(x.dtype)])
        if isinstance(problem, ResidualProblem):
            tg = t.detach().requires_grad_(True)
            xg = x.detach().requires_grad_(True)
            value = model(tg, xg)
            residual = problem.residual(tg, xg, value, Derivatives(value, tg, xg))
            t_cond = problem.condition_time
        else:
            probes = batch.probes[:, :t.shape[0]] if batch.probes is not None else None
            residual = pde_residual(problem, model, t, x, probes)
            t_cond = problem.horizon
        parts = [residual.square().mean()]
        tc = torch.full((batch.x_cond.shape[0], 1), t_cond, dtype=batch.x_cond.dtype, device=batch.x_cond.device)
        parts.append((model(tc, batch.x_cond) - _condition(problem, batch.x_cond)).square().mean())
        if batch.x_bc is not None:
            parts.append((model(batch.t_bc, batch.x_bc) - problem.boundary(batch.t_bc, batch.x_bc)).square().mean())
        return parts, residual[:n]

    def _adapt(self, model: PINNModel, parts: list[torch.Tensor]) -> None:
        """Learning-rate annealing of the condition and boundary weights (Wang, Teng & Perdikaris 2020)."""
        if self.weighting != "adaptive" or model.updates % self.adapt_every:
            return
        params = [p for p in model.parameters() if p.requires_grad]

        def grads(term: torch.Tensor) -> torch.Tensor:
            gs = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            return torch.cat([g.reshape(-1) for g in gs if g is not None])

        res_max = grads(self.w_res * parts[0]).abs().max()
        with torch.no_grad():
            for k in range(1, len(parts)):
                mean = grads(parts[k]).abs().mean()
                lam_hat = res_max / mean.clamp_min(torch.finfo(mean.dtype).tiny)
                w = model.loss_weights[k]
                model.loss_weights[k] = (1 - self.adapt_alpha) * w + self.adapt_alpha * lam_hat.to(w.dtype)

    def _refine(self, model: PINNModel, batch: PINNBatch, residual: torch.Tensor) -> None:
        """RAR: store the fresh points of largest |residual| every ``rar_every`` steps."""
        if not self.rar_every or model.updates % self.rar_every or model.rar_count >= self.rar_max:
            return
        k = min(self.rar_points, self.rar_max - model.rar_count, residual.shape[0])
        with torch.no_grad():
            idx = residual.detach().abs().reshape(-1).topk(k).indices
            new = torch.cat([batch.t[idx], batch.x[idx]], dim=1)
            model.rar_store[model.rar_count:model.rar_count + k] = new.to(model.rar_store.dtype)
        model.rar_count += k


def _z_step(model: PINNModel, problem: Problem) -> Callable[[int, torch.Tensor, int], torch.Tensor]:
    r"""``z_step(n, x, N)``: :math:`\sigma^\top\nabla u_\theta(t_n, x)` at the ``n``-th time of a uniform grid of
    ``N`` steps, ``(B, m)``, without a graph (the control one step at a time, for controlled paths)."""

    def z_step(n: int, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        t0 = torch.full((), n * problem.horizon / num_steps, dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(t0.expand(x.shape[0], 1), xg).sum(), xg)
        return problem.sigma_transpose_times(t0, x.detach(), grad).detach()

    return z_step


def _weighted(model: PINNModel, parts: list[torch.Tensor]) -> torch.Tensor:
    """:math:`\\sum_k w_k L_k` with the model's current loss weights."""
    weights = model.loss_weights.to(parts[0].dtype)
    total = weights[0] * parts[0]
    for k in range(1, len(parts)):
        total = total + weights[k] * parts[k]
    return total


def _is_initial(problem: Problem | ResidualProblem) -> bool:
    return isinstance(problem, ResidualProblem) and problem.time_condition == "initial"


def _condition(problem: Problem | ResidualProblem, x: torch.Tensor) -> torch.Tensor:
    return problem.condition(x) if isinstance(problem, ResidualProblem) else problem.terminal(x)


def _reference_points(method: PINN, model: PINNModel,
                      problem: Problem | ResidualProblem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(t, x, u_ref)`` on the model's device, computed once per model and problem."""
    cache = model.__dict__.setdefault("_reference_cache", {})
    ref = model.x_center
    key = (id(problem), ref.device, ref.dtype)
    if key in cache:
        return cache[key]
    if isinstance(problem, ResidualProblem):
        if not problem.has_reference_solution:
            return None
        t, x = problem.evaluation_grid()
        u = problem.reference_solution(t, x)
    else:
        if not problem.has_exact_solution:
            return None
        t, x, _, _, _ = method._points(problem, method.eval_points, 1 / method.eval_points,
                                       make_generator(20200101), torch.float64)
        u = problem.exact_solution(t, x)
    out = (t.to(ref.device, ref.dtype), x.to(ref.device, ref.dtype), u.to(ref.device, torch.float64))
    cache.clear()
    cache[key] = out
    return out

