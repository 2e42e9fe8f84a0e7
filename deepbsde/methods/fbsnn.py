r"""Forward-backward stochastic neural networks (FBSNN; M. Raissi, "Forward-backward stochastic neural networks:
deep learning of high-dimensional partial differential equations", arXiv:1804.07010, 2018).

One network :math:`u_\theta(t, x)` stands for the whole solution. Along forward paths :math:`X_0 = x_0`,
:math:`X_{n+1} = \mathrm{step}(t_n, X_n, \Delta t, \Delta W_n)` on the grid :math:`t_n = nT/N` (the problem's
transition: Euler–Maruyama unless the problem has an exact one), set

.. math::
    Y_n = u_\theta(t_n, X_n), \qquad Z_n = \sigma(t_n, X_n)^\top \nabla_x u_\theta(t_n, X_n)

(:math:`Z` by automatic differentiation, so that :math:`Y` and :math:`Z` are tied together as
:math:`u` and its gradient are), and minimise the discrete FBSDE residual

.. math::
    L(\theta) = \mathbb E\Big[\sum_{n=0}^{N-1} \big|Y_{n+1} - Y_n + f(t_n, X_n, Y_n, Z_n)\,\Delta t
        - Z_n^\top \Delta W_n\big|^2 + \big|Y_N - g(X_N)\big|^2
        + w_{grad}\,T\,\big|Z_N - \sigma(T, X_N)^\top\nabla g(X_N)\big|^2\Big],

the expectation a mean over the batch of paths. For the exact solution the bracket of each step is the local
error of the Euler scheme of the backward equation :math:`dY = -f\,dt + Z^\top dW` (mean :math:`O(\Delta t^2)`,
mean square :math:`O(\Delta t^2)`), so the sum over steps is :math:`O(\Delta t)`: the loss of the exact solution
vanishes as the grid is refined (the tests check it). Raissi also matches the terminal gradient; here it is
compared in the units of :math:`Z` (:math:`\sigma^\top\nabla`) and weighted by the horizon, so that every term
has the units of :math:`Y^2`: with the pilot's scales below all three terms start at the size of
:math:`\operatorname{Var} g(X_T)`. Where the terminal condition has no usable gradient (autograd fails on it
or returns non-finite values on the pilot paths) the gradient term is dropped, with a note in the report;
kinks such as :math:`\max(\cdot, 0)` are fine (autograd's subgradient).

**The squared residual's bias.** For a smooth :math:`u`, Itô–Taylor gives
:math:`r_n = (\mathcal L u + f)\Delta t + \tfrac12\big(\Delta W_n^\top\sigma^\top\nabla^2u\,\sigma\Delta W_n
- \operatorname{Tr}(\sigma^\top\nabla^2u\,\sigma)\Delta t\big) + \dots` with
:math:`\mathcal L u = u_t + \tfrac12\operatorname{Tr}(\sigma\sigma^\top\nabla^2u) + \mu\cdot\nabla u`, so
:math:`\sum_n \mathbb E\,r_n^2 \approx \Delta t\int_0^T \mathbb E\big[(\mathcal L u + f)^2
+ \tfrac12|\sigma^\top\nabla^2u\,\sigma|_F^2\big]dt`: the conditional variance of the second-order term adds a
penalty on the Hessian of the same order as the PDE residual's, whatever ``N`` is, and the loss's minimiser is not
the solution away from :math:`(0, x_0)`. For the heat equation with :math:`g = |x|^2`, :math:`x_0 = 0`,
:math:`u = a(t)|x|^2 + c(t)`, the limit functional's minimiser has :math:`a(t) = (t/T)^{0.618}` instead of 1;
measured (d = 2, N = 10, 20, 40): :math:`u_\theta(T/2, \cdot)` has a relative L2 error of about 16 % on the
paths, not shrinking with ``N``, while :math:`u_\theta(0, x_0)` stays accurate (the residuals' mean telescopes).
This is Raissi's loss, and the default. ``step_loss="double_sampling"`` replaces :math:`r_n^2` by
:math:`r_n r'_n`, with :math:`r'_n` the residual of a second, independent step from the same :math:`X_n`
(:func:`sibling_residuals`); its expectation is :math:`\sum_n \mathbb E[\mathbb E[r_n | X_n]^2]`, whose
minimiser is the discrete scheme's solution (the same test: 0.5 % instead of 16 %), at about 1.5 times the cost of
a step. (The bias of Euler–Maruyama self-consistency losses is discussed by Park et al., "Integration matters for
learning PDEs with backwards SDEs", arXiv:2505.01078, 2025, who use Stratonovich–Heun integration instead.)

``scheme="trapezoid"`` replaces :math:`f_n\Delta t` by :math:`\tfrac12(f_n + f_{n+1})\Delta t` (with
:math:`f_{n+1} = f(t_{n+1}, X_{n+1}, Y_{n+1}, Z_{n+1})`, free here since :math:`u_\theta` gives
:math:`Y_{n+1}, Z_{n+1}`), which removes the first-order bias of the driver term; the martingale term stays
Itô's left point.

**Scales** (as :class:`~deepbsde.DeepBSDE` does): a :math:`Z = 0` pilot (:func:`deepbsde.estimators.pilot`)
gives a first :math:`\hat Y_0` and the spread :math:`s_y` of :math:`g(X_T)`; the network is
:math:`u_\theta(t, x) = \hat Y_0 + s_y\,\mathcal N(2t/T - 1, (x - m)/s)`, with ``m`` and ``s`` the mean and
standard deviation of the pilot paths per coordinate, ``tanh`` (or another smooth) activation and a zero last
layer, so training starts from :math:`u \equiv \hat Y_0`, :math:`Z \equiv 0`.

**Answer.** :func:`deepbsde.solve` re-estimates :math:`u(0, x_0)` on fresh paths with :math:`\hat Z =
\sigma^\top\nabla u_\theta` as a control variate (:meth:`FBSNN.control`), which gives FBSNN answers the same
error bar and verdict as the deep BSDE method's; the trained :math:`u_\theta(0, x_0)` is kept in
``Solution.extra["trained_u0"]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError, describe
from ..estimators import Control, pilot
from ..nets import MLP, _out_scale
from ..paths import brownian_increments, make_generator, simulate, time_grid
from ..problem import Problem
from ._checks import choice, integer, number, widths
from .base import Estimate, Method

__all__ = ["FBSNN", "FBSNNModel", "fbsnn_residuals", "sibling_residuals", "fbsnn_loss_terms", "terminal_gradient"]

#: u(t, x) as a function: ``t`` ``(P, 1)``, ``x`` ``(P, d)`` -> ``(P, 1)``
UFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_ACTIVATIONS = ("tanh", "silu", "softplus")


class FBSNNModel(nn.Module):
    r""":math:`u(t, x) = a + s\,\mathcal N(2t/T - 1, (x - m)/x_s)`: an :class:`~deepbsde.nets.MLP` between fixed
    affine maps (buffers, not trained), its last layer starting at zero.

    ``use_terminal_gradient`` (decided at build from the pilot) says whether the loss matches
    :math:`\nabla g`; it is fixed for the model's life, so checkpoints need not hold it.
    """

    def __init__(self, net: MLP, horizon: float, x_shift: torch.Tensor, x_scale: torch.Tensor, y_shift: float,
                 y_scale: float, x0: torch.Tensor, use_terminal_gradient: bool = True) -> None:
        super().__init__()
        self.net = net
        f64 = torch.float64
        self.horizon = float(horizon)
        x_scale = torch.where(x_scale > 0, x_scale, torch.ones_like(x_scale))
        self.register_buffer("x_shift", x_shift.to(f64).clone())
        self.register_buffer("x_scale", x_scale.to(f64).clone())
        self.register_buffer("y_shift", torch.tensor(float(y_shift), dtype=f64))
        self.register_buffer("y_scale", torch.tensor(float(y_scale), dtype=f64))
        self.register_buffer("x0", x0.to(f64).reshape(1, -1).clone())  # (1, d): u(0, x0) without a host copy
        self.use_terminal_gradient = bool(use_terminal_gradient)
        widths_ = [m.out_features for m in net.net if isinstance(m, nn.Linear)]
        # as TimeNet: wide networks' outputs move per Adam step no more than those of width 128 (mean field)
        self.out_scale = _out_scale(widths_[-2] if len(widths_) > 1 else x_shift.shape[0] + 1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``t`` ``(B, 1)`` (or a scalar tensor), ``x`` ``(B, d)`` -> ``(B, 1)``."""
        t = t.to(x.dtype)
        if t.dim() < 2:
            t = t.reshape(-1, 1).expand(x.shape[0], 1)
        tin = 2.0 * t / self.horizon - 1.0
        inp = torch.cat([tin, (x - self.x_shift) / self.x_scale], dim=1)
        return self.y_shift + self.y_scale * (self.out_scale * self.net(inp))


def _value_and_z(problem: Problem, u: UFunction, t: torch.Tensor, x: torch.Tensor,
                 create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, ∇u, σᵀ∇u)`` at points ``t`` ``(P, 1)``, ``x`` ``(P, d)``, the gradient by autograd: kept in the graph
    (differentiable in the parameters, and in ``x`` where ``x`` requires grad) with ``create_graph``, detached
    without."""
    with torch.enable_grad():
        xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        y = u(t, xg)
        (grad,) = torch.autograd.grad(y.sum(), xg, create_graph=create_graph, allow_unused=True,
                                      materialize_grads=True)
    if not create_graph:
        y, grad = y.detach(), grad.detach()
    z = problem.sigma_transpose_times(t, xg if create_graph else x, grad)
    return y, grad, z


def fbsnn_residuals(problem: Problem, u: UFunction, x: torch.Tensor, dw: torch.Tensor, dt: float,
                    scheme: str = "euler", create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The per-step FBSNN residuals of a function ``u`` along paths ``x`` ``(B, N + 1, d)`` with increments
    ``dw`` ``(B, N, m)`` on the uniform grid of step ``dt``:

    .. math::
        r_n = Y_{n+1} - Y_n + f(t_n, X_n, Y_n, Z_n)\Delta t - Z_n^\top\Delta W_n, \quad n = 0..N-1,

    with :math:`Y_n = u(t_n, X_n)`, :math:`Z_n = \sigma^\top\nabla u(t_n, X_n)` (``"trapezoid"``: the driver term
    :math:`\tfrac12(f_n + f_{n+1})\Delta t`). ``u`` is any function ``(t (P, 1), x (P, d)) -> (P, 1)``
    differentiable in ``x``: the network, or a closed form (the tests pass ``problem.exact_solution``).

    Returns ``(r, Y, Z)``: ``(B, N, 1)``, ``(B, N + 1, 1)``, ``(B, N + 1, m)``; with ``create_graph`` they are
    differentiable in the parameters of ``u``. The driver is called once for all steps, with ``t`` of shape
    ``(B N, 1)``.
    """
    batch, points, d = x.shape
    steps = points - 1
    grid = time_grid(steps * dt, steps, dtype=x.dtype, device=x.device)
    t = grid.repeat(batch).reshape(-1, 1)  # (B (N+1), 1), path-major like x.reshape
    y, _, z = _value_and_z(problem, u, t, x.reshape(-1, d), create_graph)
    y = y.reshape(batch, points, 1)
    z = z.reshape(batch, points, -1)
    m = z.shape[-1]
    xs, ts = x[:, :-1].reshape(-1, d), t.reshape(batch, points, 1)[:, :-1].reshape(-1, 1)
    f = problem.driver(ts, xs, y[:, :-1].reshape(-1, 1), z[:, :-1].reshape(-1, m)).reshape(batch, steps, 1)
    if scheme == "trapezoid":
        xe, te = x[:, 1:].reshape(-1, d), t.reshape(batch, points, 1)[:, 1:].reshape(-1, 1)
        f_next = problem.driver(te, xe, y[:, 1:].reshape(-1, 1), z[:, 1:].reshape(-1, m)).reshape(batch, steps, 1)
        f = 0.5 * (f + f_next)
    noise = (z[:, :-1] * dw).sum(2, keepdim=True)
    r = y[:, 1:] - y[:, :-1] + f * dt - noise
    return r, y, z


def terminal_gradient(problem: Problem, x: torch.Tensor) -> torch.Tensor | None:
    r""":math:`\sigma(T, x)^\top\nabla g(x)` ``(B, m)`` by autograd (no graph), or ``None`` where autograd cannot
    differentiate ``g`` or gives non-finite values."""
    try:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            g = problem.terminal(xg)
            if not g.requires_grad:
                # g built outside autograd (e.g. from numpy): no gradient to match, unless it is constant
                return None
            (grad,) = torch.autograd.grad(g.sum(), xg, allow_unused=True, materialize_grads=True)
    except RuntimeError:
        return None
    if not bool(torch.isfinite(grad).all()):
        return None
    t = torch.full((x.shape[0], 1), problem.horizon, dtype=x.dtype, device=x.device)
    return problem.sigma_transpose_times(t, x, grad.detach())


def sibling_residuals(problem: Problem, u: UFunction, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                      x_sib: torch.Tensor, dw_sib: torch.Tensor, dt: float, scheme: str = "euler",
                      create_graph: bool = True) -> torch.Tensor:
    r"""The residuals :math:`r'_n` of one more step from every :math:`X_n` of the paths ``x`` ``(B, N + 1, d)``, to
    :math:`X'_{n+1}` ``x_sib`` ``(B, N, d)`` with independent increments ``dw_sib`` ``(B, N, m)``, given the
    :math:`Y_n, Z_n` of :func:`fbsnn_residuals`: :math:`r'_n = u(t_{n+1}, X'_{n+1}) - Y_n + f_n\Delta t -
    Z_n^\top\Delta W'_n` (``"trapezoid"``: with the driver's mean over both ends). Returns ``(B, N, 1)``.

    Given :math:`X_n`, :math:`r_n` and :math:`r'_n` are independent with the same law, so
    :math:`\mathbb E[r_n r'_n] = \mathbb E\big[\mathbb E[r_n \mid X_n]^2\big]`: the product has the conditional
    mean's square as its expectation, without the conditional variance that :math:`r_n^2` adds (double
    sampling)."""
    batch, points, d = x.shape
    steps = points - 1
    m = z.shape[-1]
    grid = time_grid(steps * dt, steps, dtype=x.dtype, device=x.device)
    ts = grid[:-1].repeat(batch).reshape(-1, 1)
    te = grid[1:].repeat(batch).reshape(-1, 1)
    xe = x_sib.reshape(-1, d)
    y_n, z_n = y[:, :-1].reshape(-1, 1), z[:, :-1].reshape(-1, m)
    f = problem.driver(ts, x[:, :-1].reshape(-1, d), y_n, z_n)
    if scheme == "trapezoid":
        y_e, _, z_e = _value_and_z(problem, u, te, xe, create_graph)
        f = 0.5 * (f + problem.driver(te, xe, y_e, z_e))
    elif create_graph:
        y_e = u(te, xe)
    else:
        with torch.no_grad():
            y_e = u(te, xe)
    r = y_e - y_n + f * dt - (z_n * dw_sib.reshape(-1, m)).sum(1, keepdim=True)
    return r.reshape(batch, steps, 1)


def fbsnn_loss_terms(problem: Problem, u: UFunction, x: torch.Tensor, dw: torch.Tensor, dt: float,
                     scheme: str = "euler", terminal_grad: bool = True, create_graph: bool = True,
                     sibling: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    r"""The three FBSNN loss terms of ``u`` on a batch, each a 0-dim tensor (means over paths):
    ``"steps"`` :math:`\overline{\sum_n r_n^2}`, ``"terminal"`` :math:`\overline{(Y_N - g(X_N))^2}` and
    ``"gradient"`` :math:`T\,\overline{|Z_N - \sigma^\top\nabla g(X_N)|^2}` (zero without ``terminal_grad``), plus
    ``"mean_sum"`` :math:`\overline{\sum_n r_n}` (a diagnostic: for the exact solution it is the scheme's global
    error, :math:`O(\Delta t)`, up to Monte Carlo noise).

    With ``sibling`` ``(x_sib, dw_sib)`` (:func:`sibling_residuals`), ``"steps"`` is the double-sampling
    :math:`\overline{\sum_n r_n r'_n}` instead (unbiased for :math:`\sum_n\mathbb E[\mathbb E[r_n|X_n]^2]`;
    a single batch's value may be negative)."""
    r, y, z = fbsnn_residuals(problem, u, x, dw, dt, scheme, create_graph)
    x_end = x[:, -1]
    if sibling is not None:
        r_sib = sibling_residuals(problem, u, x, y, z, sibling[0], sibling[1], dt, scheme, create_graph)
        steps = (r * r_sib).sum(1).mean()
    else:
        steps = r.square().sum(1).mean()
    out = {"steps": steps, "terminal": (y[:, -1] - problem.terminal(x_end)).square().mean(),
           "mean_sum": r.sum(1).mean()}
    zero = out["terminal"] * 0.0
    out["gradient"] = zero
    if terminal_grad:
        zg = terminal_gradient(problem, x_end)
        if zg is not None:
            horizon = dt * dw.shape[1]
            out["gradient"] = horizon * (z[:, -1] - zg.to(z.dtype)).square().sum(1).mean()
    return out


@dataclasses.dataclass(frozen=True)
class FBSNN(Method):
    r"""The FBSNN solver's settings (Raissi 2018); every one has a default that needs no tuning.

    Parameters
    ----------
    num_steps:
        Number ``N`` of time steps of the training paths (default 20; Raissi used 50). The loss of the exact
        solution is :math:`O(T/N)`, and so is the bias of the trained :math:`u_\theta(0, x_0)`; the cost of a
        training step grows linearly with ``N``. The re-estimate of :func:`deepbsde.solve` measures the
        time-step bias on a grid twice as fine and puts it into the error bar.
    hidden:
        Hidden widths of the network :math:`(t, x) \mapsto u`; ``None`` (the default) gives three layers of
        width ``min(d + 10, 256)``. (Raissi used four layers of 256.)
    activation:
        ``"tanh"`` (the default), ``"silu"`` or ``"softplus"``: smooth, since :math:`Z` is the network's gradient
        and training differentiates it once more.
    w_grad:
        Weight of the terminal-gradient term :math:`T|Z_N - \sigma^\top\nabla g(X_N)|^2` (default 1; 0 drops
        it).
    scheme:
        ``"euler"`` (the default, Raissi's) or ``"trapezoid"``: the driver term of the residual (see the module
        docstring).
    step_loss:
        ``"squared"`` (the default, Raissi's): :math:`\sum_n r_n^2`; ``"double_sampling"``:
        :math:`\sum_n r_n r'_n` with a second, independent step from every :math:`X_n`, which removes the squared
        residual's Hessian penalty (see the module docstring) for about 1.5 times the cost. Its batch values can be
        negative (it estimates a sum of squares without bias, not from above).
    pilot_paths:
        Paths of the :math:`Z = 0` pilot simulation that sets the output shift and scale and the input
        standardisation.
    """

    num_steps: int = 20
    hidden: tuple[int, ...] | None = None
    activation: str = "tanh"
    w_grad: float = 1.0
    scheme: str = "euler"
    step_loss: str = "squared"
    pilot_paths: int = 1024
    name: str = dataclasses.field(default="FBSNN", init=False, repr=False)

    #: the error bar's gradient: σ^{-T} of the trained Z0 with its likelihood-ratio correction (the pathwise one
    #: would differentiate the network's gradient along every fresh path)
    gradient_estimator = "likelihood_ratio"

    def __post_init__(self) -> None:
        integer("num_steps", self.num_steps, 1)
        integer("pilot_paths", self.pilot_paths, 2)
        if self.hidden is not None:
            object.__setattr__(self, "hidden", widths("hidden", self.hidden))
        choice("activation", self.activation, _ACTIVATIONS)
        choice("scheme", self.scheme, ("euler", "trapezoid"))
        choice("step_loss", self.step_loss, ("squared", "double_sampling"))
        number("w_grad", self.w_grad)
        if self.w_grad < 0:
            raise ConfigError(f"method.w_grad: expected a finite number >= 0 (0 drops the terminal-gradient "
                              f"term), received {describe(self.w_grad)}")

    # --- the Method interface --------------------------------------------------------------------
    def check(self, problem: Problem) -> None:
        if not isinstance(problem, Problem):
            raise ConfigError(f"method FBSNN: needs a deepbsde.Problem in FBSDE form (drift, diffusion, driver, "
                              f"terminal), received {describe(problem)}; a PDE stated by its residual "
                              f"(deepbsde.ResidualProblem) has no forward SDE to simulate: use the PINN method")

    def hidden_for(self, problem: Problem) -> tuple[int, ...]:
        """The hidden widths in use: ``hidden``, or three layers of ``min(d + 10, 256)``."""
        width = min(problem.dim + 10, 256)
        return self.hidden if self.hidden is not None else (width, width, width)

    def memory_estimate(self, problem: Problem, batch_size: int, valid_size: int, dtype: torch.dtype) -> float:
        """Bytes for the parameters with Adam's state, one training batch with the activations of the network, its
        gradient and the graph of that gradient (kept for the second differentiation), the validation batch and
        the pilot paths (an estimate, for refusing runs that cannot fit)."""
        d, m, n = problem.dim, problem.noise_dim, self.num_steps
        w = list(self.hidden_for(problem))
        size = torch.empty((), dtype=dtype).element_size()
        layer_widths = [d + 1, *w, 1]
        params = sum(a * b + b for a, b in zip(layer_widths[:-1], layer_widths[1:]))
        param_bytes = params * (8 + 4 * size)
        per_point = 2 * d + 2 * m + 6 * sum(w)  # paths, increments, gradient, Z; forward and gradient graphs
        if self.step_loss == "double_sampling":  # the sibling step: its point, increment and forward pass
            per_point += d + m + (6 if self.scheme == "trapezoid" else 2) * sum(w)
        train_bytes = 2 * batch_size * (n + 1) * per_point * size
        valid_bytes = valid_size * (n + 1) * per_point * size
        pilot_bytes = 2 * self.pilot_paths * (n + 1) * (d + m) * 8
        return float(param_bytes + train_bytes + valid_bytes + pilot_bytes + 4e8)

    def build(self, problem: Problem, generator: torch.Generator) -> FBSNNModel:
        pil, x = pilot(problem, self.num_steps, self.pilot_paths, generator, torch.float64)
        d = problem.dim
        points = x.reshape(-1, d)
        shift = points.mean(0)
        scale = points.std(0).clamp_min(1e-3 * (1.0 + float(shift.abs().max())))
        net = MLP(1 + d, self.hidden_for(problem), 1, generator=generator, activation=self.activation)
        with torch.no_grad():
            net.net[-1].weight.zero_()  # u starts at the pilot's Y0, Z at 0 (as the deep BSDE's TimeNet)
        use_grad = self.w_grad > 0 and terminal_gradient(problem, x[:, -1]) is not None
        return FBSNNModel(net, problem.horizon, shift, scale, pil.y0, pil.y_scale, problem.x0_tensor(), use_grad)

    def sample(self, problem: Problem, batch_size: int, generator: torch.Generator,
               dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``(x, dw)``: paths ``(B, N + 1, d)`` and their increments ``(B, N, m)``; with
        ``step_loss="double_sampling"`` also ``(x_sib, dw_sib)``: from every :math:`X_n` one more step
        :math:`X'_{n+1}` ``(B, N, d)`` on independent increments ``(B, N, m)``."""
        dt = problem.horizon / self.num_steps
        dw = brownian_increments(batch_size, self.num_steps, problem.noise_dim, dt, generator, dtype)
        x = simulate(problem, dw, dt)
        if self.step_loss == "squared":
            return x, dw
        dw_sib = brownian_increments(batch_size, self.num_steps, problem.noise_dim, dt, generator, dtype)
        d, m = problem.dim, problem.noise_dim
        t = time_grid(problem.horizon, self.num_steps, dtype=dtype, device=dw.device)[:-1]
        with torch.no_grad():
            x_sib = problem.step(t.repeat(batch_size).reshape(-1, 1), x[:, :-1].reshape(-1, d), dt,
                                 dw_sib.reshape(-1, m)).reshape(batch_size, self.num_steps, d)
        return x, dw, x_sib, dw_sib

    def terms(self, model: FBSNNModel, problem: Problem, batch: tuple[torch.Tensor, ...],
              create_graph: bool = True) -> dict[str, torch.Tensor]:
        """The loss terms of :func:`fbsnn_loss_terms` for ``model`` on ``batch``."""
        x, dw = batch[0], batch[1]
        sibling = (batch[2], batch[3]) if len(batch) == 4 else None
        return fbsnn_loss_terms(problem, model, x, dw, problem.horizon / self.num_steps, self.scheme,
                                model.use_terminal_gradient, create_graph, sibling)

    def loss(self, model: FBSNNModel, problem: Problem, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        training = torch.is_grad_enabled()
        with torch.enable_grad():
            parts = self.terms(model, problem, batch, create_graph=training)
            total = parts["steps"] + parts["terminal"] + self.w_grad * parts["gradient"]
        return total if training else total.detach()

    def u0_tensor(self, model: FBSNNModel, problem: Problem) -> torch.Tensor:
        """:math:`u_\\theta(0, x_0)` on the model's device: no host round-trip (``x0`` is a buffer)."""
        x0 = model.x0
        with torch.no_grad():
            return model(torch.zeros(1, 1, dtype=x0.dtype, device=x0.device), x0).reshape(())

    def _at_x0(self, model: FBSNNModel, problem: Problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ref = model.x_shift
        x0 = problem.x0_tensor(ref.dtype, ref.device).unsqueeze(0)
        t0 = torch.zeros(1, 1, dtype=ref.dtype, device=ref.device)
        y, grad, z = _value_and_z(problem, model, t0, x0, create_graph=False)
        return y.detach(), grad.detach(), z.detach()

    def estimate(self, model: FBSNNModel, problem: Problem) -> Estimate:
        y, grad, _ = self._at_x0(model, problem)
        return Estimate(float(y.reshape(())), tuple(float(v) for v in grad[0].to(torch.float64).cpu()))

    def trained_z0(self, model: FBSNNModel, problem: Problem) -> torch.Tensor:
        return self._at_x0(model, problem)[2][0]

    def value(self, model: FBSNNModel, problem: Problem, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """:math:`u_\\theta(t, x)` ``(B, 1)`` for any ``t`` in ``[0, T]`` (the network is trained on the whole
        grid), differentiable in ``x``; ``t`` outside ``[0, T]`` is a :class:`~deepbsde.errors.ConfigError`."""
        horizon = problem.horizon
        tol = 1e-9 * horizon
        if t.numel() and (float(t.min()) < -tol or float(t.max()) > horizon + tol):
            raise ConfigError(f"t: FBSNN gives u(t, x) for t in [0, T] = [0, {horizon:g}], received t in "
                              f"[{float(t.min()):g}, {float(t.max()):g}]")
        return model(t, x)

    def evaluate(self, model: FBSNNModel, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The trained :math:`u_\\theta(t, x)` at ``t`` ``(n, 1)``, ``x`` ``(n, d)``: float64 on the CPU, ``(n, 1)``
        (``deepbsde.compare`` draws its slice with it)."""
        ref = model.x_shift
        with torch.no_grad():
            out = [model(t[i:i + 8192].to(ref.device, ref.dtype), x[i:i + 8192].to(ref.device, ref.dtype))
                   for i in range(0, t.shape[0], 8192)]
        return torch.cat(out).to(torch.float64).cpu()

    def control(self, model: FBSNNModel, problem: Problem) -> Control:
        r"""The trained :math:`u_\theta` as a control for the error bar: :math:`\hat Y_0 = u_\theta(0, x_0)`,
        :math:`\hat Z = \sigma^\top\nabla u_\theta` along any paths (on the training grid of ``num_steps`` steps
        and the re-estimate's finer one), Heun's scheme for the re-estimate, and the control one step at a time
        so that, for a driver nonlinear in ``z``, the re-estimate runs under the measure the control induces
        (its bias then second order in :math:`\hat Z - Z`)."""

        def z_at(x: torch.Tensor, num_steps: int) -> torch.Tensor:
            batch, _, d = x.shape
            times = torch.linspace(0.0, problem.horizon, num_steps + 1, dtype=x.dtype, device=x.device)[:-1]
            xs = x[:, :-1].reshape(-1, d)
            ts = times.repeat(batch).reshape(-1, 1)
            keep = x.requires_grad
            _, _, z = _value_and_z(problem, model, ts, xs, create_graph=keep)
            z = z.reshape(batch, num_steps, -1)
            return z if keep else z.detach()

        def z_step(n: int, x: torch.Tensor, num_steps: int) -> torch.Tensor:
            t = torch.full((x.shape[0], 1), n * problem.horizon / num_steps, dtype=x.dtype, device=x.device)
            return _value_and_z(problem, model, t, x, create_graph=False)[2].detach()

        return Control(float(self.u0_tensor(model, problem)), z_at, self.num_steps, "heun", None, z_step)

    def report(self, model: FBSNNModel, problem: Problem, samples: int = 1024) -> dict[str, Any]:
        """The loss terms on a fresh batch (fixed seed) against :math:`\\operatorname{Var} g(X_T)`:
        ``fbsnn_steps``, ``fbsnn_terminal``, ``fbsnn_gradient`` and ``variance_explained`` =
        ``1 - (steps + terminal) / Var g``; a note where the terminal gradient is not matched."""
        param = next(model.parameters())
        gen = make_generator(20240607, param.device)
        batch = self.sample(problem, samples, gen, param.dtype)
        was_training = model.training
        model.eval()
        parts = {k: float(v.detach()) for k, v in self.terms(model, problem, batch, create_graph=False).items()}
        model.train(was_training)
        var_g = float(problem.terminal(batch[0][:, -1]).var())
        out: dict[str, Any] = {"fbsnn_steps": parts["steps"], "fbsnn_terminal": parts["terminal"],
                               "fbsnn_gradient": parts["gradient"], "terminal_var": var_g}
        if var_g > 0:
            out["variance_explained"] = 1.0 - (parts["steps"] + parts["terminal"]) / var_g
        warnings = []
        if self.w_grad > 0 and not model.use_terminal_gradient:
            warnings.append(f"FBSNN: the terminal condition of {problem.name} has no usable gradient (autograd "
                            f"failed or gave non-finite values on the pilot paths); the terminal-gradient term "
                            f"was dropped")
        if var_g > 0 and parts["steps"] + parts["terminal"] > 1.1 * var_g:
            warnings.append(f"not converged: the FBSNN residual {parts['steps'] + parts['terminal']:.3e} is above "
                            f"Var g(X_T) = {var_g:.3e}; the trained u is not a solution (lower the learning rate "
                            f"or train longer)")
        if warnings:
            out["warnings"] = warnings
        return out
