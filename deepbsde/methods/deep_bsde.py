r"""The deep BSDE method (E, Han & Jentzen, Commun. Math. Stat. 2017; Han, Jentzen & E, PNAS 2018).

On the grid :math:`t_n = nT/N` with increments :math:`\Delta W_n` and forward paths :math:`X_n`,

.. math::
    Y_0 = \theta_y, \quad Z_0 = \theta_z, \quad Z_n = s\,\mathcal N_n(X_n)\ (1 \le n < N),\\
    Y_{n+1} = Y_n - f(t_n, X_n, Y_n, Z_n)\,\Delta t + Z_n^\top \Delta W_n,

and training minimises :math:`\mathbb E\,\ell(Y_N - g(X_N))`, with :math:`\ell(\delta) = \delta^2` or the
original's clipped version :math:`\ell(\delta) = \delta^2` for :math:`|\delta| < c`,
:math:`2c|\delta| - c^2` beyond. Here :math:`Z_n` approximates :math:`\sigma^\top\nabla u(t_n, X_n)`
(the convention of the whole library). The output scale ``s`` defaults to ``1/d``: the original code
divides every subnetwork's output by the dimension without saying so; here it is a named parameter.

``network="shared"`` replaces the ``N - 1`` step networks by one network :math:`Z_n = s\,\mathcal N(t_n, X_n)`
(:class:`~deepbsde.nets.TimeNet`; the "merged" network of Chan-Wah-Ng et al., J. Sci. Comput. 2019). Every
step's samples then train the same parameters; at d = 100 this is what lets :math:`Z` be learnt at all, with
a batch of 256 or more (benchmarks/results.md, "Hard regimes").
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, describe
from ..nets import MLP, StepNets, TimeNet
from ..regions import AtPoint, as_region, region_errors
from ..estimators import Control, Pilot, pilot, singular_at_horizon
from ..paths import brownian_increments, make_generator, simulate, time_grid
from ..problem import Problem
from ._checks import choice, integer, interval, number, positive_or_none, widths
from .base import Estimate, Method

__all__ = ["DeepBSDE", "DeepBSDEModel", "RegionModel", "rollout", "terminal_loss"]



class DeepBSDEModel(nn.Module):
    r"""Trainable :math:`Y_0`, :math:`Z_0` (shape ``(m,)``) and the step networks (or the shared one).

    Every trainable number is a fixed affine map of an O(1) parameter, so that one Adam step (which moves a
    parameter by about the learning rate whatever the loss's scale) moves :math:`Y_0` by a fixed fraction of
    the spread of :math:`g(X_T)` and :math:`Z` by a fixed fraction of its typical size:
    :math:`Y_0 = a + s_y	heta_y`, :math:`Z_0 = s_0	heta_z`, :math:`Z_n = s_z\mathcal N(t_n, X_n)`.
    """

    def __init__(self, y0: torch.Tensor, z0: torch.Tensor, nets: StepNets | TimeNet, z_scale: float,
                 y_shift: float = 0.0, y_scale: float = 1.0, z0_scale: float = 1.0) -> None:
        super().__init__()
        self.y0_param = nn.Parameter(y0)
        self.z0_param = nn.Parameter(z0)
        self.nets = nets
        self.z_scale = float(z_scale)
        self.y_shift, self.y_scale, self.z0_scale = float(y_shift), float(y_scale), float(z0_scale)

    @property
    def y0(self) -> torch.Tensor:
        """:math:`Y_0`, shape ``(1,)``."""
        return self.y_shift + self.y_scale * self.y0_param

    def set_y0(self, value: float) -> None:
        """Set :math:`Y_0` to ``value`` (through its parameter)."""
        with torch.no_grad():
            self.y0_param.fill_((value - self.y_shift) / self.y_scale)

    @property
    def z0(self) -> torch.Tensor:
        """:math:`Z_0`, shape ``(m,)``."""
        return self.z0_scale * self.z0_param

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`Y_0` ``(batch, 1)`` and :math:`Z_0..Z_{N-1}` ``(batch, N, m)`` along paths ``x``
        ``(batch, N+1, d)``: all step networks in one batched evaluation."""
        batch = x.shape[0]
        z0v = self.z0
        y0 = self.y0.expand(batch, 1)
        z0 = z0v.expand(batch, 1, z0v.shape[0])
        if x.shape[1] <= 2:
            return y0, z0
        return y0, torch.cat([z0, self.nets(x[:, 1:-1, :]) * self.z_scale], dim=1)

    def z_step(self, n: int, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        r""":math:`\hat Z_n` ``(B, m)`` at the ``n``-th time of a uniform grid of ``num_steps`` steps, at points
        ``x`` ``(B, d)`` (the shared network only; ``n = 0`` is the trained :math:`Z_0`)."""
        if n == 0:
            return self.z0.expand(x.shape[0], self.z0_param.shape[0])
        if not isinstance(self.nets, TimeNet):
            raise ValueError("controlled paths need network='shared' (a network of (t, x))")
        t = torch.full((1,), n * self.nets.horizon / num_steps, dtype=x.dtype, device=x.device)
        return self.nets.at(t, x.unsqueeze(1))[:, 0] * self.z_scale

    def z_at(self, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        r""":math:`\hat Z_0..\hat Z_{S-1}` ``(B, S, m)`` along paths ``x`` ``(B, S+1, d)`` on a uniform grid of
        ``S`` steps: the shared network at those times; the step networks only on their own grid or one
        ``r`` times finer (each held constant over its step)."""
        batch, m = x.shape[0], self.z0_param.shape[0]
        z0 = self.z0.expand(batch, 1, m)
        if isinstance(self.nets, TimeNet):
            horizon = self.nets.horizon
            times = torch.linspace(0.0, horizon, num_steps + 1, dtype=x.dtype, device=x.device)[1:-1]
            if num_steps <= 1:
                return z0
            return torch.cat([z0, self.nets.at(times, x[:, 1:-1, :]) * self.z_scale], dim=1)
        return _per_step_z(self.nets, z0, x, num_steps, self.z_scale)


_LOG = logging.getLogger("deepbsde")


def _per_step_z(nets: StepNets, z0: torch.Tensor, x: torch.Tensor, num_steps: int, z_scale: float) -> torch.Tensor:
    """:math:`Z` ``(B, num_steps, m)`` along paths ``x`` ``(B, num_steps + 1, d)`` from ``z0`` ``(B, 1, m)`` and the
    per-step networks, each trained network held over ``num_steps / (S + 1)`` steps of a finer grid."""
    batch, _, m = z0.shape
    trained = nets.num_nets + 1
    if num_steps % trained:
        raise ValueError(f"per-step networks: {num_steps} steps is not a multiple of the {trained} trained ones")
    r = num_steps // trained
    if trained == 1:
        return z0.expand(batch, num_steps, m)
    z = torch.cat([z0, nets(x[:, r:-1:r, :][:, : trained - 1]) * z_scale], dim=1)
    return z.repeat_interleave(r, dim=1)


class RegionModel(nn.Module):
    r"""Region mode's model: :math:`Y_0` and :math:`Z_0` are functions of the starting point :math:`X_0`.

    :math:`Y_0(x) = a + s_y\,[\mathcal N_y(\xi) + (b^\top\xi + \tfrac12\xi^\top Q\xi)/d]`, :math:`\xi = (x - m)/s`,
    with a small tanh network :math:`\mathcal N_y` (last layer starting at zero) plus a second-order polynomial
    (:math:`b`, symmetric :math:`Q`, starting at zero), so that training starts from the pilot's
    :math:`Y_0 = a` everywhere, with the same pilot scales as point mode's :class:`DeepBSDEModel`; the input
    shift ``m`` and scale ``s`` (per coordinate, fixed buffers) are the mean and spread of region samples.
    The polynomial is there for the gradient: a tanh network of width d + 10 fitted to the gradient of
    :math:`|x|^2` on :math:`[-1, 1]^{100}` directly (no noise) was still 12 % off after 3000 steps, while the
    polynomial carries any smooth :math:`u` to second order about the centre of the region, leaving the
    network the rest. The ``1/d`` keeps the move of one Adam step (each entry by about the learning rate) of
    the order of point mode's. :math:`Z_0(x)` is the shared network of
    ``(t, x)`` at ``t = 0``, or, with the per-step networks, :math:`s_0\,\mathcal N_z((x - m)/s)`, a network of
    its own. ``forward``, ``z_step`` and ``z_at`` are those of :class:`DeepBSDEModel` with these in place of the
    constants.
    """

    def __init__(self, y_net: MLP, z0_net: MLP | None, nets: StepNets | TimeNet, z_scale: float,
                 y_shift: float, y_scale: float, z0_scale: float, x_shift: torch.Tensor,
                 x_scale: torch.Tensor) -> None:
        super().__init__()
        self.y_net = y_net
        d = x_shift.shape[0]
        #: the second-order part of Y0 (see the class docstring), starting at zero
        self.y_linear = nn.Parameter(torch.zeros(d, dtype=torch.float64))
        self.y_quadratic = nn.Parameter(torch.zeros(d, d, dtype=torch.float64))
        self.z0_net = z0_net
        self.nets = nets
        self.z_scale = float(z_scale)
        self.y_shift, self.y_scale, self.z0_scale = float(y_shift), float(y_scale), float(z0_scale)
        x_scale = torch.where(x_scale > 0, x_scale, torch.ones_like(x_scale))
        self.register_buffer("x_shift", x_shift.to(torch.float64))
        self.register_buffer("x_scale", x_scale.to(torch.float64))

    def _normal(self, x0: torch.Tensor) -> torch.Tensor:
        return (x0 - self.x_shift.to(x0.dtype)) / self.x_scale.to(x0.dtype)

    def y0_at(self, x0: torch.Tensor) -> torch.Tensor:
        """:math:`Y_0(x_0)` ``(B, 1)`` at starting points ``x0`` ``(B, d)`` (differentiable in ``x0``)."""
        xn = self._normal(x0)
        d = xn.shape[1]
        q = 0.5 * (self.y_quadratic + self.y_quadratic.T)
        second = (xn @ self.y_linear.to(xn.dtype) + 0.5 * ((xn @ q.to(xn.dtype)) * xn).sum(1)) / d
        return self.y_shift + self.y_scale * (self.y_net(xn) + second.unsqueeze(1))

    def z0_at(self, x0: torch.Tensor) -> torch.Tensor:
        """:math:`Z_0(x_0)` ``(B, m)`` at starting points ``x0`` ``(B, d)``."""
        if self.z0_net is not None:
            return self.z0_scale * self.z0_net(self._normal(x0))
        t = torch.zeros(1, dtype=x0.dtype, device=x0.device)
        return self.nets.at(t, x0.unsqueeze(1))[:, 0] * self.z_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`Y_0(X_0)` ``(batch, 1)`` and :math:`Z_0..Z_{N-1}` ``(batch, N, m)`` along paths ``x``
        ``(batch, N+1, d)``."""
        y0 = self.y0_at(x[:, 0])
        if isinstance(self.nets, TimeNet):
            steps = x.shape[1] - 1
            times = torch.linspace(0.0, self.nets.horizon, steps + 1, dtype=x.dtype, device=x.device)[:-1]
            return y0, self.nets.at(times, x[:, :-1, :]) * self.z_scale
        z0 = self.z0_at(x[:, 0]).unsqueeze(1)
        if x.shape[1] <= 2:
            return y0, z0
        return y0, torch.cat([z0, self.nets(x[:, 1:-1, :]) * self.z_scale], dim=1)

    def z_step(self, n: int, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        r""":math:`\hat Z_n` ``(B, m)`` at the ``n``-th time of a uniform grid of ``num_steps`` steps (as
        :meth:`DeepBSDEModel.z_step`; ``n = 0`` is :math:`Z_0(x)`)."""
        if n == 0:
            return self.z0_at(x)
        if not isinstance(self.nets, TimeNet):
            raise ValueError("controlled paths need network='shared' (a network of (t, x))")
        t = torch.full((1,), n * self.nets.horizon / num_steps, dtype=x.dtype, device=x.device)
        return self.nets.at(t, x.unsqueeze(1))[:, 0] * self.z_scale

    def z_at(self, x: torch.Tensor, num_steps: int) -> torch.Tensor:
        r""":math:`\hat Z_0..\hat Z_{S-1}` ``(B, S, m)`` along paths ``x`` ``(B, S+1, d)`` (as
        :meth:`DeepBSDEModel.z_at`, with :math:`Z_0(X_0)`)."""
        if isinstance(self.nets, TimeNet):
            times = torch.linspace(0.0, self.nets.horizon, num_steps + 1, dtype=x.dtype, device=x.device)[:-1]
            return self.nets.at(times, x[:, :-1, :]) * self.z_scale
        z0 = self.z0_at(x[:, 0]).unsqueeze(1)
        return _per_step_z(self.nets, z0, x, num_steps, self.z_scale)


def rollout(problem: Problem, y0: torch.Tensor, z: torch.Tensor, x: torch.Tensor, dw: torch.Tensor, dt: float,
            scheme: str = "euler", beta: torch.Tensor | None = None) -> torch.Tensor:
    r"""Roll :math:`Y` forward from ``y0`` ``(batch, 1)`` with ``z`` ``(batch, N, m)`` (:math:`Z_0..Z_{N-1}`)
    along paths ``x`` ``(batch, N+1, d)`` and increments ``dw`` ``(batch, N, m)``; returns :math:`Y_N`.

    ``"euler"``: :math:`Y_{n+1} = Y_n - f(t_n, X_n, Y_n, Z_n)\Delta t + Z_n^\top\Delta W_n` (the original).
    ``"heun"``: the same predictor, then the trapezoidal corrector
    :math:`Y_{n+1} = Y_n - \tfrac12[f(t_n, X_n, Y_n, Z_n) + f(t_{n+1}, X_{n+1}, \tilde Y_{n+1}, Z_{n+1})]\Delta t
    + Z_n^\top\Delta W_n` (with :math:`Z_N := Z_{N-1}`), which removes the O(Δt) bias that the explicit
    driver term leaves in :math:`Y_0` (e.g. about +0.23 % for Allen–Cahn with N = 20).
    ``"heun-open"``: Heun on every step but the last, which takes the predictor: the driver is never evaluated at
    :math:`t = T` (for drivers singular there; one step of Euler adds an :math:`O(\Delta t^2)` error, the order of
    Heun's own). :meth:`DeepBSDE.scheme_for` chooses it.

    ``beta`` ``(batch, N, m)``: paths drawn under the extra drift :math:`\sigma\beta_n` on each step (see
    :func:`controlled_paths`); the driver is then :math:`f - \beta_n^\top z` on step ``n``.
    """
    num_steps = dw.shape[1]
    grid = time_grid(num_steps * dt, num_steps, dtype=x.dtype, device=x.device)
    # unbind once: N views whose backward is one stack, instead of N selects each scattering into zeros
    noise = (z * dw).sum(2, keepdim=True).unbind(1)  # Z_n . dW_n for every n at once
    ts, xs, zs = grid.unbind(0), x.unbind(1), z.unbind(1)
    bs = beta.unbind(1) if beta is not None else None
    y = y0
    for n in range(num_steps):
        f_n = problem.driver(ts[n], xs[n], y, zs[n])
        if bs is not None:
            f_n = f_n - (bs[n] * zs[n]).sum(1, keepdim=True)
        base = y + noise[n]
        y_next = base - f_n * dt
        if scheme == "heun" or (scheme == "heun-open" and n + 1 < num_steps):
            z_next = zs[n + 1] if n + 1 < num_steps else zs[n]
            f_next = problem.driver(ts[n + 1], xs[n + 1], y_next, z_next)
            if bs is not None:
                f_next = f_next - (bs[n] * z_next).sum(1, keepdim=True)
            y_next = base - (f_n + f_next) * (0.5 * dt)
        y = y_next
    return y


def controlled_paths(problem: Problem, z_step, y0: float | torch.Tensor, dw: torch.Tensor, dt: float,
                     x0: torch.Tensor | None = None, differentiable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Forward paths under the measure that the control :math:`\hat Z` induces through the driver, and the
    coefficients :math:`\beta_n = \partial_z f(t_n, X_n, Y_n, \hat Z_n)` (no autograd graph): on each step
    :math:`X_{n+1} = \mathrm{step}(X_n) + \sigma(X_n)\beta_n\Delta t` and
    :math:`Y_{n+1} = Y_n - (f - \beta_n^\top\hat Z_n)\Delta t + \hat Z_n^\top\Delta W_n`.

    Under it the driver :math:`f - \beta_n^\top z` has zero slope in ``z`` at the control (Girsanov, as in
    :mod:`deepbsde.drift`, with a drift chosen by the control): the loss constrains :math:`Y_0` on the paths
    the optimally controlled process visits, and the re-estimate's bias from an imperfect :math:`\hat Z` is
    of second order. For HJB's :math:`f = -\lambda|z|^2/2` the drift is :math:`-\lambda\sigma\hat Z`, the
    feedback control's. ``z_step(n, x_n, N)`` gives :math:`\hat Z_n` ``(B, m)``. ``y0``: a number, or
    ``(B, 1)`` per path (region mode, with ``x0`` ``(B, d)``). ``differentiable``: keep the graph, so that the
    paths and the coefficients can be differentiated in an ``x0`` that requires grad (the error bar's pathwise
    gradient under this measure).
    """
    batch, steps, m = dw.shape
    grid = time_grid(steps * dt, steps, dtype=dw.dtype, device=dw.device)
    x = problem.x0_tensor(dw.dtype, dw.device).expand(batch, problem.dim) if x0 is None else x0
    xs, betas = [x], []
    if isinstance(y0, torch.Tensor) and y0.numel() > 1:
        y = (y0 if differentiable else y0.detach()).to(dw.dtype).reshape(batch, 1)
    else:
        y = torch.full((batch, 1), float(y0), dtype=dw.dtype, device=dw.device)
    with torch.set_grad_enabled(differentiable):
        for n in range(steps):
            z = z_step(n, x, steps).to(dw.dtype)
            zg = z if differentiable and z.requires_grad else z.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                f = problem.driver(grid[n], x, y, zg)
                # a driver free of z (and of anything that needs grad) gives an output without a graph
                (b,) = (torch.autograd.grad(f.sum(), zg, allow_unused=True, create_graph=differentiable)
                        if f.requires_grad else (None,))
            b = torch.zeros_like(z) if b is None else (b if differentiable else b.detach())
            if not differentiable:
                f = f.detach()
            y = y - (f - (b * z).sum(1, keepdim=True)) * dt + (z * dw[:, n]).sum(1, keepdim=True)
            x = problem.step(grid[n], x, dt, dw[:, n]) + problem.sigma_times(grid[n], x, b) * dt
            xs.append(x)
            betas.append(b)
    return torch.stack(xs, 1), torch.stack(betas, 1)


def terminal_loss(mismatch: torch.Tensor, clip: float | None) -> torch.Tensor:
    r"""Mean of :math:`\delta^2`, or of the original's Huber-like clipped square when ``clip`` is set."""
    if clip is None:
        return mismatch.square().mean()
    a = mismatch.abs()
    return torch.where(a < clip, a.square(), 2 * clip * a - clip * clip).mean()


@dataclasses.dataclass(frozen=True)
class DeepBSDE(Method):
    r"""The deep BSDE solver's settings. Every one has a default that needs no tuning; each stays available as
    an override.

    Parameters
    ----------
    num_steps:
        Number ``N`` of time steps of the scheme.
    network:
        ``"shared"`` (the default: one tanh network of ``(t, x)`` for all steps, :class:`~deepbsde.nets.TimeNet`,
        its inputs standardised by the statistics of pilot paths and its output layer starting at zero) or
        ``"per_step"`` (the original: one batch-normalised ReLU network per time step,
        :class:`~deepbsde.nets.StepNets`). At d = 100 the per-step networks do not learn Z on most of the
        catalogue (benchmarks/results.md); the shared one does.
    hidden:
        Hidden widths of the network(s); ``None`` gives two layers of width ``min(d + 10, 512)`` (the
        original's ``d + 10``, capped so that d = 1000 stays affordable on a CPU).
    y0_range, z0_range:
        ``None`` (the default): :math:`Y_0` starts at the pilot's :math:`Z = 0` estimate and moves in units of
        the spread of :math:`g(X_T)`, :math:`Z_0` starts at zero in units of the pilot's typical :math:`|Z|`
        (:func:`deepbsde.estimators.pilot`). A range ``(lo, hi)``: :math:`Y_0` (each entry of :math:`Z_0`) is
        drawn uniformly in it and moves in absolute units, as in the original code.
    batch_norm:
        Batch normalisation in the step networks, as in the original (``network="per_step"`` only).
    clip:
        The original's loss clipping threshold (it used 50); ``None`` (the default) for the plain square.
    z_scale:
        Factor applied to the network's output. ``None`` (the default): the pilot's typical size of one
        coordinate of :math:`Z`, :math:`\sqrt{\operatorname{Var} g(X_T) / (T m)}`; ``"1/d"``: the original
        code's undocumented choice; or a positive number.
    scheme:
        ``"heun"`` (the default; trapezoidal driver term) or ``"euler"`` (the original): see :func:`rollout`.
        Where the driver is singular at ``t = T`` on the pilot's paths
        (:func:`deepbsde.estimators.singular_at_horizon`), ``"heun"`` skips the corrector on the last step
        (``"heun-open"``, :meth:`scheme_for`): QuadraticGradient at d = 1 went from 269 % off to 0.31 % (0.11 %
        after grid refinement).
    pilot_paths:
        Paths of the :math:`Z = 0` pilot simulation that sets the starting values and scales.
    control_measure:
        ``"auto"`` (the default): where the driver depends on ``z`` other than affinely (HJB, Burgers-type,
        different rates) and the network is shared, draw the training paths under the measure the current
        control induces (:func:`controlled_paths`: the drift :math:`\sigma\,\partial_z f(\hat Z)`, the driver
        :math:`f - \partial_z f(\hat Z)\cdot z`; the same PDE), which keeps the loss informative about
        :math:`Y_0` when the optimal control moves the paths far (HJB at d = 10, λ = 10 ended 74 % off without
        it); ``"plain"``: never; ``"controlled"``: always (shared network only).
    sampling_drift:
        κ ≥ 0: draw the training paths with the extra drift :math:`b = -\kappa(x - x_0)` and subtract
        :math:`(\sigma^{-1}b)\cdot z` from the driver, the same PDE (:mod:`deepbsde.drift`); any problem can use
        it. 0 (the default): none. It helps HJB equations at large λ, whose optimally controlled paths stay
        near the minimum of g (``hjb_lq_lam20.toml`` uses the same drift through ``HJBLQ(pull=0.5)`` under the
        control's measure, ``hjb_lq_lam50.toml`` through ``HJBLQ(pull=2.5)`` with ``control_measure="plain"``).
    region:
        ``None`` (the default): point mode, every path starts at the problem's ``x0``. A region
        (:mod:`deepbsde.regions`: ``Box(lo, hi)``, ``Line(direction, lo, hi)``, a callable
        ``sampler(batch, generator) -> (batch, d)``, or a config's table ``{"type": "box", "lo": -1, "hi": 1}``):
        region mode, every path starts at its own :math:`X_0` drawn from the region (from the sampling
        generator), :math:`Y_0` is a small tanh network of :math:`X_0` and :math:`Z_0` the shared network at
        ``t = 0`` (a small network of :math:`X_0` for per-step networks) (:class:`RegionModel`); the pilot
        runs from region samples. ``Solution.u`` and ``grad_u`` then give :math:`u(0, x)` and
        :math:`\nabla u(0, x)` over the region, ``Solution.u_interval`` the error bar at any point, and
        ``Solution.u0`` stays the re-estimate at the problem's ``x0``. Train the whole budget
        (``train.tolerance = 0``: the stopping rule watches the error bar at ``x0`` only) and with a longer phase
        at the middle learning rate than the default schedule's (``lr_boundaries = [1000, 3000]`` for 4000
        steps), as the shipped ``equations/configs/*_region.toml`` do: heat on :math:`[-1, 1]^{100}` then ends
        with :math:`\nabla u` 3.3 % off (relative L2), against 7.3 % with the default schedule.
    region_consistency:
        Region mode with the shared network: the weight ``c`` of the term
        :math:`c\,T\,\mathbb E|\sigma^\top\nabla_x Y_0(X_0) - \hat Z_0(X_0)|^2` added to the loss, which pulls the
        gradient of the :math:`Y_0` network towards the shared network's :math:`Z` at ``t = 0`` (learnt from every
        time step's increments, so better identified than the slope of a regression on :math:`X_0`); 0: none.
    linear_part:
        ``True`` (the default): the shared network's output gets a linear map of the same standardised
        :math:`(t, x)` added to it, starting at zero (:class:`~deepbsde.nets.TimeNet` ``linear``). Across the
        catalogue :math:`Z` is close to linear in :math:`x` near the paths (heat: constant in t, linear in x;
        Allen-Cahn, Barenblatt, HJB: nearly so), and the tanh layers alone learn that slowly. Measured on the main
        job (Allen-Cahn, d = 100, seed 0): the trained Z explained 72 % of Var g(X_T) after 200 steps with it,
        21 % after 500 without, so the error bar needed 10,240 paths instead of 26,624 and the run stopped after
        200 steps instead of 500 (4.3 s against 10.6 s). ``False``: the tanh network alone (network="shared").
    rare_event:
        ``"auto"`` (the default): point mode checks, before the pilot, whether :math:`g(X_T)` departs from its
        typical value on only a sliver of the paths (a far out-of-the-money payoff; effective share of the
        weights :math:`|g - \operatorname{median} g|` below 2 %). If so, 90 % of every batch of paths (training,
        pilot, error bar) is drawn under a constant shift θ of the Brownian motion chosen by cross-entropy
        (:func:`deepbsde.drift.rare_event_shift`), and the error bar's re-estimate weights every path by
        :math:`dP/dM \le 10` for that mixture (:func:`~deepbsde.drift.mixture_increments`). The training loss stays
        unweighted: on a shifted path, :math:`Z\cdot\Delta W = Z\cdot\Delta\tilde W + \theta\cdot Z\,\Delta t`, the
        same PDE's BSDE under the shifted measure, with the same solution. Measured on the basket call at
        d = 100, ρ = 0, K = 110 (u = 3.0e-4, about 0.05 % of paths in the money): without it 26 % off with a
        ±67 % error bar (3 seeds). ``"off"``: never.
    refine_grid:
        ``True`` (the default): where the error bar's time-step part (the re-estimate on ``2N`` steps against
        ``N``, less 1.96 of its standard errors) exceeds half of ``train.tolerance`` and the run did not reach
        the tolerance, :func:`deepbsde.solve` trains once more on a grid 2 or 4 times as fine (4 where that part
        exceeds the whole tolerance), warm-started from the first run's shared network (a function of
        ``(t, x)``, so it carries over to any grid), for as much work as the first run took (its steps times
        ``N / N'``, at least 500), and returns that run's answer; the first one's stays in its folder's
        ``grid-N`` subfolder and in ``Solution.extra["refined_from"]``. Measured on HJBLQ at d = 1, λ = 1
        (u = −0.0874, seed 0): 1.38 % off on the default 20 steps (time-step part 1.0 % of u net of its noise),
        0.19 % after 1000 more steps on 80. Shared network, point mode, one process only; ``False``: never (a time budget,
        ``train.max_seconds``, that ended the first run also rules it out).
    """

    num_steps: int = 20
    network: str = "shared"
    hidden: tuple[int, ...] | None = None
    y0_range: tuple[float, float] | None = None
    z0_range: tuple[float, float] | None = None
    batch_norm: bool = True
    clip: float | None = None
    z_scale: float | str | None = None
    scheme: str = "heun"
    pilot_paths: int = 1024
    sampling_drift: float = 0.0
    control_measure: str = "auto"
    region: Any = None
    region_consistency: float = 1.0
    linear_part: bool = True
    rare_event: str = "auto"
    refine_grid: bool = True
    name: str = dataclasses.field(default="DeepBSDE", init=False, repr=False)

    def __post_init__(self) -> None:
        integer("num_steps", self.num_steps, 1)
        integer("pilot_paths", self.pilot_paths, 2)
        number("sampling_drift", self.sampling_drift)
        if self.sampling_drift < 0:
            raise ConfigError(f"method.sampling_drift: expected a finite number >= 0 (the rate κ of the pull "
                              f"towards x0), received {describe(self.sampling_drift)}")
        choice("network", self.network, ("per_step", "shared"))
        if self.hidden is not None:
            object.__setattr__(self, "hidden", widths("hidden", self.hidden))
        if self.y0_range is not None:
            object.__setattr__(self, "y0_range", interval("y0_range", self.y0_range))
        if self.z0_range is not None:
            object.__setattr__(self, "z0_range", interval("z0_range", self.z0_range))
        positive_or_none("clip", self.clip)
        choice("scheme", self.scheme, ("euler", "heun"))
        choice("control_measure", self.control_measure, ("auto", "plain", "controlled"))
        choice("rare_event", self.rare_event, ("auto", "off"))
        if self.control_measure == "controlled" and self.network != "shared":
            raise ConfigError("method.control_measure: 'controlled' needs network = 'shared' (a network of "
                              f"(t, x)), received network = {self.network!r}")
        if isinstance(self.z_scale, str):
            if self.z_scale != "1/d":
                raise ConfigError(f"method.z_scale: expected a positive number, '1/d' or none, "
                                  f"received {describe(self.z_scale)}")
        else:
            positive_or_none("z_scale", self.z_scale)
        if not isinstance(self.refine_grid, bool):
            raise ConfigError(f"method.refine_grid: expected true or false, received {describe(self.refine_grid)}")
        if not isinstance(self.linear_part, bool):
            raise ConfigError(f"method.linear_part: expected true or false, received {describe(self.linear_part)}")
        object.__setattr__(self, "region", as_region(self.region))
        number("region_consistency", self.region_consistency)
        if self.region_consistency < 0:
            raise ConfigError(f"method.region_consistency: expected a finite number >= 0, received "
                              f"{describe(self.region_consistency)}")

    def check(self, problem: Problem) -> None:
        if not isinstance(problem, Problem):
            raise ConfigError(f"method DeepBSDE: needs a deepbsde.Problem (drift, diffusion, driver, terminal), "
                              f"received {describe(problem)}")
        if self.region is not None:
            self.region.check(problem.dim)

    def describe(self) -> dict[str, Any]:
        """The settings (:meth:`Method.describe`), the region as its description, and no ``region`` entry in
        point mode (so that point mode's description, and the checkpoints and saved solutions keyed by it,
        are those of the versions without regions)."""
        out = super().describe()
        if self.refine_grid:  # the default: descriptions (and checkpoints keyed by them) as before it existed
            out.pop("refine_grid", None)
        if self.region is None:
            out.pop("region", None)
            out.pop("region_consistency", None)
        else:
            out["region"] = self.region.describe()
        return out

    def hidden_for(self, problem: Problem) -> tuple[int, ...]:
        width = min(problem.dim + 10, 512)
        return self.hidden if self.hidden is not None else (width, width)

    def memory_estimate(self, problem: Problem, batch_size: int, valid_size: int, dtype: torch.dtype) -> float:
        """Bytes for the parameters with Adam's state, one training batch with its autograd activations, the
        validation batch, the pilot paths and the error bar's chunks (an estimate, for refusing runs that
        cannot fit)."""
        d, m, n = problem.dim, problem.noise_dim, self.num_steps
        w = list(self.hidden_for(problem))
        size = torch.empty((), dtype=dtype).element_size()
        widths = [d + 1, *w, m]
        per_net = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
        params = per_net * (1 if self.network == "shared" else max(n - 1, 1)) + m + 1
        if self.region is not None:  # the Y0 network and its second-order part, and Z0's network (per-step)
            params += per_net + d * d + d + (per_net if self.network != "shared" else d * m + m)
        param_bytes = params * (8 + 4 * size)  # float64 at initialisation, then value, grad and Adam's moments
        act = n * (d + 3 * m + 3 * sum(w))  # per path: paths, increments, Z, and the layers' activations
        train_bytes = 2 * batch_size * act * size
        valid_bytes = valid_size * act * size
        pilot_bytes = 2 * self.pilot_paths * (n + 1) * (d + m) * 8
        return float(param_bytes + train_bytes + valid_bytes + pilot_bytes + 4e8)

    def view(self, problem: Problem) -> Problem:
        """The problem the method trains on: ``problem`` itself, or its :class:`~deepbsde.drift.DriftedProblem`
        with this method's ``sampling_drift`` (made once per problem object)."""
        if not self.sampling_drift:
            return problem
        from ..drift import DriftedProblem, pull_towards_x0

        return self._kept("_views", problem, lambda: DriftedProblem(
            problem, pull_towards_x0(self.sampling_drift, problem.x0_tensor(torch.float64))))

    def noise_shift(self, problem: Problem) -> torch.Tensor | None:
        """θ ``(m,)`` float64 where 90 % of every batch of paths of ``problem`` is drawn with the Brownian motion
        shifted by :math:`\theta t` (``rare_event``, :func:`~deepbsde.drift.mixture_increments`), else ``None``;
        decided once per problem object (a fixed generator: the same for every seed)."""
        if self.rare_event != "auto" or self.region is not None:
            return None
        return self._kept("_shifts", problem, lambda: self._find_shift(problem))[0]

    def _find_shift(self, problem: Problem) -> tuple[torch.Tensor | None, dict | None]:
        """``(θ, info)`` of :func:`~deepbsde.drift.rare_event_shift` for ``problem``, or ``(None, None)``."""
        from ..drift import rare_event_shift

        found = rare_event_shift(self.view(problem), self.num_steps, make_generator(90210))
        if found is None:
            return None, None
        _LOG.info("rare payoff (effective share %.2g of the paths): paths drawn under a noise shift "
                  "|θ| = %.3g, estimates weighted by dP/dM (effective share %.2g)",
                  found[1]["share"], found[1]["theta_norm"], found[1]["shifted_share"])
        return found[0], found[1]

    def rare_event_info(self, problem: Problem) -> dict | None:
        """What :meth:`noise_shift` found for ``problem``: ``None``, or the effective shares and :math:`|\theta|`."""
        return self._kept("_shifts", problem, default=(None, None))[1]

    def pilot(self, problem: Problem, generator: torch.Generator) -> tuple[Pilot, torch.Tensor]:
        """The :math:`Z = 0` pilot on this method's grid (float64, CPU), and its paths (in region mode from
        region points drawn first from ``generator``)."""
        x0 = None
        if self.region is not None:
            x0 = self.region.sample(self.pilot_paths, problem.dim, generator, torch.float64)
        return pilot(self.view(problem), self.num_steps, self.pilot_paths, generator, torch.float64, x0=x0,
                     noise_shift=self.noise_shift(problem))

    def scheme_for(self, problem: Problem) -> str:
        """The scheme this method rolls ``problem`` with: ``scheme``, or ``"heun-open"`` where :meth:`build` found
        the driver singular at ``t = T`` (:func:`deepbsde.estimators.singular_at_horizon`)."""
        return self._built(problem, (False, self.scheme))[1]

    def controlled(self, problem: Problem) -> bool:
        """Whether this method draws its paths under the control's measure for ``problem`` (decided at
        :meth:`build` from the pilot's probe of the driver)."""
        return self._built(problem, (False, self.scheme))[0]

    def _built(self, problem: Problem, default: tuple[bool, str]) -> tuple[bool, str]:
        """What :meth:`build` decided for ``problem`` (the control's measure, the scheme), else ``default``."""
        return self._kept("_decisions", problem, default=default)

    def build(self, problem: Problem, generator: torch.Generator) -> DeepBSDEModel:
        pil, x = self.pilot(problem, generator)
        nonlinear_z = pil.structure.depends_on_z and not pil.structure.affine_in_z
        on = self.network == "shared" and (self.control_measure == "controlled"
                                           or (self.control_measure == "auto" and nonlinear_z))
        open_end = self.scheme == "heun" and singular_at_horizon(self.view(problem), x)
        if open_end:
            _LOG.info("the driver is singular at t = T on the pilot's paths: Heun's corrector skips the last step")
        self._keep("_decisions", problem, (on, "heun-open" if open_end else self.scheme))
        m = problem.noise_dim
        if self.y0_range is None:
            y_shift, y_scale, y0 = pil.y0, pil.y_scale, torch.zeros(1, dtype=torch.float64)
        else:
            lo, hi = self.y0_range
            y_shift, y_scale = 0.0, 1.0
            y0 = lo + (hi - lo) * torch.rand(1, generator=generator, dtype=torch.float64)
        if self.z0_range is None:
            z0_scale, z0 = pil.z_scale, torch.zeros(m, dtype=torch.float64)
        else:
            zlo, zhi = self.z0_range
            z0_scale = 1.0
            z0 = zlo + (zhi - zlo) * torch.rand(m, generator=generator, dtype=torch.float64)
        if self.region is not None:
            return self._build_region(problem, pil, x, generator)
        nets: StepNets | TimeNet
        if self.network == "shared":
            # fixed input standardisation from the pilot paths
            inner = x[:, 1:-1, :].reshape(-1, problem.dim) if self.num_steps > 1 else x[:, :1, :].reshape(-1, problem.dim)
            times = time_grid(problem.horizon, self.num_steps, dtype=torch.float64)[1:-1]
            nets = TimeNet(times, problem.horizon, inner.mean(0), inner.std(0), self.hidden_for(problem),
                           m, generator=generator, linear=self.linear_part)
        else:
            nets = StepNets(max(self.num_steps - 1, 0), problem.dim, self.hidden_for(problem), m,
                            batch_norm=self.batch_norm, generator=generator)
        if self.z_scale is None:
            scale = pil.z_scale
        elif self.z_scale == "1/d":
            scale = 1.0 / problem.dim
        else:
            scale = float(self.z_scale)
        return DeepBSDEModel(y0, z0, nets, scale, y_shift, y_scale, z0_scale)

    def _build_region(self, problem: Problem, pil: Pilot, x: torch.Tensor, generator: torch.Generator) -> RegionModel:
        """Region mode's :class:`RegionModel`: the pilot's scales as in point mode, the networks' inputs
        standardised by the pilot paths (the starting points included)."""
        if self.y0_range is not None or self.z0_range is not None:
            raise ConfigError("method.region: y0_range and z0_range set a constant Y0 or Z0; in region mode both "
                              "are networks of x0 (leave y0_range and z0_range unset)")
        m, d = problem.noise_dim, problem.dim
        hidden = self.hidden_for(problem)
        start = x[:, 0, :]
        y_net = MLP(d, hidden, 1, generator=generator, activation="tanh")
        with torch.no_grad():
            y_net.net[-1].weight.zero_()
        z0_net = None
        nets: StepNets | TimeNet
        if self.network == "shared":
            inner = x[:, :-1, :].reshape(-1, d)
            times = time_grid(problem.horizon, self.num_steps, dtype=torch.float64)[1:-1]
            nets = TimeNet(times, problem.horizon, inner.mean(0), inner.std(0), hidden, m, generator=generator,
                           linear=self.linear_part)
        else:
            nets = StepNets(max(self.num_steps - 1, 0), d, hidden, m, batch_norm=self.batch_norm,
                            generator=generator)
            z0_net = MLP(d, hidden, m, generator=generator, activation="tanh")
            with torch.no_grad():
                z0_net.net[-1].weight.zero_()
        if self.z_scale is None:
            scale = pil.z_scale
        elif self.z_scale == "1/d":
            scale = 1.0 / d
        else:
            scale = float(self.z_scale)
        return RegionModel(y_net, z0_net, nets, scale, pil.y0, pil.y_scale, pil.z_scale, start.mean(0), start.std(0))

    def sample(self, problem: Problem, batch_size: int, generator: torch.Generator,
               dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Point mode: ``(paths, dw)`` (under a rare payoff's noise shift, :meth:`noise_shift`, 90 % of the
        increments shifted: the training loss needs no weights, see :meth:`loss`); region mode: ``(paths, dw, x0)``,
        the starting points drawn first. Under
        the control's measure the paths depend on the model: then ``paths`` is empty, and drawn in
        :meth:`loss`."""
        dt = problem.horizon / self.num_steps
        x0 = None
        if self.region is not None:
            x0 = self.region.sample(batch_size, problem.dim, generator, dtype)
        dw = brownian_increments(batch_size, self.num_steps, problem.noise_dim, dt, generator, dtype)
        theta = self.noise_shift(problem)
        if theta is not None:  # 90 % of the paths with W = W~ + θt
            from ..drift import mixture_increments

            dw = mixture_increments(dw, theta, dt, generator)[0]
        if self.controlled(problem):  # the paths depend on the model: drawn in loss()
            x = torch.empty(0, dtype=dtype, device=dw.device)
        else:
            x = simulate(self.view(problem), dw, dt, x0)
        return (x, dw) if x0 is None else (x, dw, x0)

    def _paths(self, model: DeepBSDEModel | RegionModel, problem: Problem,
               batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(x, dw, beta)``: the batch's paths, simulated now under the control's measure where it applies."""
        x, dw = batch[0], batch[1]
        if x.numel():
            return x, dw, None
        if len(batch) > 2:  # region mode: from the batch's starting points, Y0 per path
            x0 = batch[2]
            with torch.no_grad():
                y0 = model.y0_at(x0)
            x, beta = controlled_paths(self.view(problem), model.z_step, y0, dw, problem.horizon / self.num_steps,
                                       x0=x0)
            return x, dw, beta
        x, beta = controlled_paths(self.view(problem), model.z_step, float(model.y0.detach()[0]), dw,
                                   problem.horizon / self.num_steps)
        return x, dw, beta

    def loss(self, model: DeepBSDEModel | RegionModel, problem: Problem, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, dw, beta = self._paths(model, problem, batch)
        if isinstance(model, RegionModel) and self.network == "shared" and self.region_consistency > 0:
            return self._region_loss(model, problem, x, dw, beta)
        y0, z = model(x)
        y_terminal = rollout(self.view(problem), y0, z, x, dw, problem.horizon / self.num_steps,
                             self.scheme_for(problem), beta)
        # under a rare payoff's noise shift, unweighted: on a shifted path Z.dW = Z.dW~ + θ.Z dt, the same PDE's
        # BSDE under the shifted measure (driver f - θ.z), with the same minimiser (Y0, Z); the error bar's
        # re-estimate weights instead
        return terminal_loss(y_terminal - problem.terminal(x[:, -1]), self.clip)

    def _region_loss(self, model: RegionModel, problem: Problem, x: torch.Tensor, dw: torch.Tensor,
                     beta: torch.Tensor | None) -> torch.Tensor:
        r"""Region mode's loss: the terminal mismatch plus the consistency term
        :math:`c\,T\,\mathbb E|\sigma^	op
abla_x Y_0(X_0) - \hat Z_0(X_0)|^2` (``c`` = ``region_consistency``,
        :math:`\hat Z_0` not differentiated)."""
        view = self.view(problem)
        x0 = x[:, 0].detach().requires_grad_(True)
        training = torch.is_grad_enabled()
        with torch.enable_grad():  # the validation runs without a graph; the gradient of Y0 needs one
            y0 = model.y0_at(x0)
            (grad,) = torch.autograd.grad(y0.sum(), x0, create_graph=training)
        _, z = model(x)
        y_terminal = rollout(view, y0, z, x, dw, problem.horizon / self.num_steps, self.scheme_for(problem), beta)
        mismatch = terminal_loss(y_terminal - problem.terminal(x[:, -1]), self.clip)
        t0 = torch.zeros((), dtype=x.dtype, device=x.device)
        zeta = view.sigma_transpose_times(t0, x0.detach(), grad)
        consistency = (zeta - z[:, 0].detach()).square().sum(1).mean()
        return mismatch + self.region_consistency * problem.horizon * consistency

    def report(self, model: DeepBSDEModel, problem: Problem, samples: int = 1024) -> dict[str, object]:
        r"""Diagnostics on a fresh batch (fixed seed), comparing the trained :math:`Z` with :math:`Z = 0`.

        ``terminal_mse`` is :math:`E|Y_N - g(X_N)|^2` with the trained model, ``terminal_mse_z0`` the same
        with :math:`Z \equiv 0` and the same :math:`Y_0`, ``variance_explained`` is
        ``1 - terminal_mse / Var g(X_N)``. A trained :math:`Z` removes most of the variance. Two failures
        are flagged with a warning, never hidden: the collapse to :math:`Z \approx 0` (both mismatches
        about equal; :math:`Y_0` then learns an uncontrolled average, as reported in the original project's
        issue tracker), and step networks that add noise instead of removing it (``terminal_mse`` above
        ``terminal_mse_z0``); :math:`Y_0` then stays reliable only where the driver is close to linear in
        :math:`y` and does not depend on :math:`z`. A third is flagged when neither fires: a mismatch above
        :math:`\operatorname{Var} g(X_N)` (the trained :math:`Y_0, Z` do worse than a constant; seen when
        :math:`Z` and :math:`Y_0` move together to a wrong point, e.g. the shared network at too large a step).
        """
        param = next(model.parameters())
        gen = make_generator(20240607, param.device)
        dt = problem.horizon / self.num_steps
        was_training = model.training
        model.eval()
        with torch.no_grad():
            x, dw, beta = self._paths(model, problem, self.sample(problem, samples, gen, param.dtype))
            y0, z = model(x)
            g = problem.terminal(x[:, -1])
            view = self.view(problem)
            # under a rare payoff's noise shift: the moments on the shifted paths, those the training sees
            mse = float((rollout(view, y0, z, x, dw, dt, self.scheme_for(problem), beta) - g).square().mean())
            mse0 = float((rollout(view, y0, torch.zeros_like(z), x, dw, dt, self.scheme_for(problem), beta)
                          - g).square().mean())
        model.train(was_training)
        g_mean = float(g.mean())
        var_g = float(g.var())
        out: dict[str, object] = {"terminal_mse": mse, "terminal_mse_z0": mse0, "terminal_mean": g_mean,
                                  "terminal_var": var_g}
        if var_g > 0:
            out["variance_explained"] = 1.0 - mse / var_g
        info = self.rare_event_info(problem)
        if info is not None:  # the terminal statistics above are then the shifted measure's
            out["rare_event_shift"] = info
        if var_g > 0 and mse > 0.9 * mse0 and mse < 1.1 * mse0:
            out["warnings"] = [
                f"collapse: the trained Z does no better than Z = 0 (terminal mismatch {mse:.3e} against "
                f"{mse0:.3e}); u0 = {float(y0[0, 0].detach()):.6g} may be an uncontrolled average "
                f"(E g(X_T) ~ {g_mean:.6g}) rather than the solution"]
        elif var_g > 0 and mse >= 1.1 * mse0:
            out["warnings"] = [
                f"the step networks have not learnt Z: the terminal mismatch {mse:.3e} is {mse / mse0:.1f} times "
                f"that of Z = 0 ({mse0:.3e}); u0 is reliable only where the driver is close to linear in y "
                f"and independent of z"]
        elif var_g > 0 and mse > 1.1 * var_g:
            out["warnings"] = [
                f"not converged: the terminal mismatch {mse:.3e} is {mse / var_g:.1f} times Var g(X_T) = "
                f"{var_g:.3e}, worse than the constant E g(X_T) ~ {g_mean:.6g}; the trained Y0, Z are "
                f"not a solution (lower the learning rate or z_scale, or raise the batch size)"]
        return out

    def divergence_hint(self, problem: Problem) -> str:
        r"""Overrides of the pilot's scales, and the control's measure, are what most often make a run diverge:
        ``hjb_lq_lam20.toml`` with ``z_scale = 1`` blew up at step 250 under the control's measure, whose drift
        :math:`-\lambda\sigma\hat Z` grows with the untrained Z; with the defaults it ends 0.24 % off."""
        hints = []
        overrides = [name for name in ("z_scale", "y0_range", "z0_range") if getattr(self, name) is not None]
        if overrides:
            hints.append("remove the override(s) method." + ", method.".join(overrides)
                         + " (the defaults take them from a pilot simulation)")
        if self.controlled(problem):
            hints.append("set method.control_measure = 'plain' (the training paths follow the control's drift, "
                         "which a large Z makes violent)")
        return ("Or " + "; or ".join(hints) + ".") if hints else ""

    def control(self, model: DeepBSDEModel | RegionModel, problem: Problem) -> Control:
        """The trained :math:`Y_0` and :math:`Z` as a control for the error bar (:mod:`deepbsde.estimators`);
        in region mode :math:`Y_0` at the problem's ``x0``."""
        view = self.view(problem)
        if isinstance(model, RegionModel):
            with torch.no_grad():
                y0 = float(model.y0_at(_point(model, problem))[0, 0])
        else:
            y0 = float(model.y0.detach()[0])
        return Control(y0, model.z_at, self.num_steps, self.scheme_for(problem),
                       view if view is not problem else None,
                       model.z_step if self.controlled(problem) else None, self.noise_shift(problem))

    def trained_z0(self, model: DeepBSDEModel | RegionModel, problem: Problem) -> torch.Tensor:
        if isinstance(model, RegionModel):
            with torch.no_grad():
                return model.z0_at(_point(model, problem))[0]
        return model.z0.detach()

    def u0_tensor(self, model: DeepBSDEModel | RegionModel, problem: Problem) -> torch.Tensor:
        if isinstance(model, RegionModel):
            with torch.no_grad():
                return model.y0_at(_point(model, problem))[0, 0]
        return model.y0.detach()[0]

    def value(self, model: DeepBSDEModel | RegionModel, problem: Problem, t: torch.Tensor,
              x: torch.Tensor) -> torch.Tensor:
        """Region mode: the trained :math:`Y_0(x) = u(0, x)` ``(B, 1)``, differentiable in ``x`` (its gradient is
        ∇u, not σᵀ∇u); :class:`~deepbsde.errors.ConfigError` for ``t != 0``. Point mode gives u(0, x0) only."""
        if not isinstance(model, RegionModel):
            raise NotImplementedError("point mode learns u(0, x0) only; DeepBSDE(region=...) learns u(0, x) over a "
                                      "region (deepbsde.regions)")
        if bool((t != 0).any()):
            raise ConfigError(f"DeepBSDE (region mode) learns u at t = 0 only, received t = {float(t.reshape(-1)[0])}")
        return model.y0_at(x)

    def u_interval(self, model: RegionModel, problem: Problem, points: torch.Tensor, paths: int = 4096,
                   seed: int = 0, refine: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Region mode's error bar at any points ``(P, d)`` (float64): at each point, the re-estimate of
        :func:`deepbsde.estimators.evaluate` on ``paths`` fresh paths from that point (the problem with its
        ``x0`` replaced, :class:`~deepbsde.regions.AtPoint`) with the trained control (:math:`\hat Y_0` and
        :math:`\hat Z_0` at the point). Returns ``(lo, hi, u)``, each ``(P,)`` float64: the 95 % interval and
        the re-estimate."""
        from ..estimators import evaluate

        if not isinstance(model, RegionModel):
            raise ConfigError("u_interval: needs region mode (DeepBSDE(region=...)); in point mode the error bar "
                              "is u0_interval, at x0")
        param = next(model.parameters())
        view = self.view(problem)
        structure = pilot(view, self.num_steps, 256, make_generator(seed, "cpu"))[0].structure
        lo, hi, mid = [], [], []
        was_training = model.training
        model.eval()
        try:
            for point in points.to(torch.float64):
                at = AtPoint(view, point.tolist())
                x0 = point.to(param.dtype).to(param.device).unsqueeze(0)
                with torch.no_grad():
                    y0, z0 = float(model.y0_at(x0)[0, 0]), model.z0_at(x0)[0]
                control = Control(y0, model.z_at, self.num_steps, self.scheme_for(problem), None,
                                  model.z_step if self.controlled(problem) else None)
                ev = evaluate(at, control, z0, paths, seed, param.dtype, param.device, structure, refine=refine,
                              gradient="none")
                lo.append(ev.interval[0])
                hi.append(ev.interval[1])
                mid.append(ev.u0)
        finally:
            model.train(was_training)
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return as_tensor(lo), as_tensor(hi), as_tensor(mid)

    def region_report(self, model: RegionModel, problem: Problem, points: int = 4096, seed: int = 0) -> dict[str, Any]:
        r"""Relative L2 errors of the trained :math:`u(0, \cdot)` and :math:`\nabla u(0, \cdot)` over ``points``
        region points against the problem's reference where it gives one at any point
        (:func:`deepbsde.regions.region_errors`); ``{}`` in point mode or without a reference."""
        if self.region is None or not isinstance(model, RegionModel):
            return {}
        param = next(model.parameters())

        def value(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            us, grads = [], []
            for chunk in x.split(8192):
                xg = chunk.to(device=param.device, dtype=param.dtype).requires_grad_(True)
                with torch.enable_grad():
                    y = model.y0_at(xg)
                    (g,) = torch.autograd.grad(y.sum(), xg)
                us.append(y.detach().to("cpu", torch.float64))
                grads.append(g.detach().to("cpu", torch.float64))
            return torch.cat(us), torch.cat(grads)

        was_training = model.training
        model.eval()
        try:
            return region_errors(value, problem, self.region, points, seed)
        finally:
            model.train(was_training)

    def estimate(self, model: DeepBSDEModel | RegionModel, problem: Problem) -> Estimate:
        if isinstance(model, RegionModel):  # u and its gradient (∇u, by autograd) at x0
            x0 = _point(model, problem).clone().requires_grad_(True)
            with torch.enable_grad():
                y = model.y0_at(x0)
                (g,) = torch.autograd.grad(y.sum(), x0)
            return Estimate(float(y.detach()[0, 0]), tuple(float(v) for v in g[0]))
        u0 = float(model.y0.detach()[0])
        z0 = model.z0.detach().to(torch.float64).cpu()
        x0 = problem.x0_tensor(torch.float64).unsqueeze(0)
        sigma = problem.diffusion(torch.zeros((), dtype=torch.float64), x0)[0]
        if problem.noise_type == "diagonal":
            if bool((sigma == 0).any()):
                return Estimate(u0, None, "σ(0, x0) has a zero diagonal entry: ∇u(0, x0) is not identified by Z0 = σᵀ∇u")
            grad = z0 / sigma
        else:
            grad = torch.linalg.lstsq(sigma.T, z0.unsqueeze(1)).solution.squeeze(1)
            if int(torch.linalg.matrix_rank(sigma)) < problem.dim:
                return Estimate(u0, None, "σ(0, x0) has rank < d: ∇u(0, x0) is not identified by Z0 = σᵀ∇u")
        return Estimate(u0, tuple(float(v) for v in grad))


def _point(model: nn.Module, problem: Problem) -> torch.Tensor:
    """The problem's ``x0`` as ``(1, d)`` on the model's device, in its dtype."""
    param = next(model.parameters())
    return problem.x0_tensor(param.dtype, param.device).unsqueeze(0)
