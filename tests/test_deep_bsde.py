"""The deep BSDE method: batched step networks, the Y rollout with the exact Z (O(Δt) terminal mismatch),
short trainings against closed forms, reproducibility."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import deepbsde
from deepbsde.methods.deep_bsde import rollout, terminal_loss
from deepbsde.nets import StepNets
from deepbsde.paths import brownian_increments, make_generator, simulate, time_grid
from equations import BurgersType, GeometricBasketCall, HeatEquation, QuadraticGradient, ReactionDiffusion


def exact_z(problem, x, num_steps, dt):
    """Z_n = σᵀ∇u(t_n, X_n) from the closed form, shape (batch, N, m)."""
    zs = []
    for n in range(num_steps):
        t = torch.full((x.shape[0], 1), n * dt, dtype=x.dtype)
        xn = x[:, n].detach().requires_grad_(True)
        grad = torch.autograd.grad(problem.exact_solution(t, xn).sum(), xn)[0]
        zs.append(problem.sigma_transpose_times(t, xn, grad).detach())
    return torch.stack(zs, 1)


@pytest.mark.parametrize("scheme", ["euler", "heun"])
@pytest.mark.parametrize("make", [lambda: BurgersType(dim=5), lambda: ReactionDiffusion(dim=5),
                                  lambda: QuadraticGradient(dim=5), lambda: HeatEquation(dim=5)],
                         ids=["burgers", "reaction", "quadgrad", "heat"])
def test_rollout_with_exact_z_has_mismatch_of_order_dt(make, scheme):
    """E|Y_N - g(X_N)|^2 with Y_0 = u(0, x0) and Z_n = σᵀ∇u(t_n, X_n) is O(Δt): slope of log MSE
    against log N is -1 (Zhang 2004; Bouchard & Touzi 2004)."""
    problem = make()
    fine, batch = 64, 4000
    dw_fine = brownian_increments(batch, fine, problem.noise_dim, problem.horizon / fine, make_generator(3))
    x0 = problem.x0_tensor().unsqueeze(0)
    u0 = problem.exact_solution(torch.zeros(1, 1, dtype=torch.float64), x0)
    steps, mse = [], []
    for n in (8, 16, 32, 64):
        dw = dw_fine.reshape(batch, n, fine // n, -1).sum(2)
        dt = problem.horizon / n
        x = simulate(problem, dw, dt)
        z = exact_z(problem, x, n, dt)
        y = rollout(problem, u0.expand(batch, 1), z, x, dw, dt, scheme)
        steps.append(n)
        mse.append(float((y - problem.terminal(x[:, -1])).square().mean()))
    slope = np.polyfit(np.log(steps), np.log(mse), 1)[0]
    assert -1.25 < slope < -0.8, (slope, mse)


def test_heun_removes_the_driver_bias_of_euler():
    """For f = -r y (a discount) the Euler rollout from the exact Y_0 drifts by O(Δt) in mean, the Heun
    rollout by O(Δt²): with the same paths, |E[Y_N - g]| is much smaller for Heun."""
    problem = GeometricBasketCall(dim=2, rho=0.5, r=0.5)
    n, batch = 10, 20000
    dt = problem.horizon / n
    dw = brownian_increments(batch, n, problem.noise_dim, dt, make_generator(1))
    x = simulate(problem, dw, dt)
    z = exact_z(problem, x, n, dt)
    u0 = problem.reference().value
    bias = {}
    for scheme in ("euler", "heun"):
        y = rollout(problem, torch.full((batch, 1), u0, dtype=torch.float64), z, x, dw, dt, scheme)
        bias[scheme] = abs(float((y - problem.terminal(x[:, -1])).mean()))
    assert bias["heun"] < 0.2 * bias["euler"], bias


def _reference_nets(nets: StepNets, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Loop over the S networks one at a time with plain torch ops: what StepNets batches."""
    batch, num, _ = x.shape
    outs = []
    for s in range(num):
        h = x[:, s]
        layers = len(nets.weights)
        for k in range(layers + 1):
            if k > 0:
                h = h @ nets.weights[k - 1][s]
                if k == layers:
                    h = h + nets.biases[-1][s]
            width = h.shape[1]
            gamma = nets.gammas[k].view(num, width)[s]
            beta = nets.betas[k].view(num, width)[s]
            if training:
                mean, var = h.mean(0), h.var(0, unbiased=False)
            else:
                mean = getattr(nets, f"running_mean{k}").view(num, width)[s]
                var = getattr(nets, f"running_var{k}").view(num, width)[s]
            h = (h - mean) / torch.sqrt(var + nets.eps) * gamma + beta
            if 0 < k < layers:
                h = torch.relu(h)
        outs.append(h)
    return torch.stack(outs, 1)


def test_batched_step_networks_equal_a_loop_of_networks():
    nets = StepNets(4, 6, (7, 5), 3, generator=make_generator(0))
    x = torch.randn(16, 4, 6, dtype=torch.float64, generator=make_generator(1))
    nets.train()
    batched = nets(x)
    assert torch.allclose(batched, _reference_nets(nets, x, True), atol=1e-12)
    # running statistics moved towards the batch statistics of the first layer input
    assert torch.allclose(nets.running_mean0.view(4, 6), 0.01 * x.mean(0), atol=1e-12)
    nets.eval()
    assert torch.allclose(nets(x), _reference_nets(nets, x, False), atol=1e-12)


def test_terminal_loss_clipping():
    d = torch.tensor([0.5, -2.0, 100.0], dtype=torch.float64)
    assert float(terminal_loss(d, None)) == pytest.approx((0.25 + 4 + 1e4) / 3)
    assert float(terminal_loss(d, 50.0)) == pytest.approx((0.25 + 4 + (100 * 100 - 2500)) / 3)


QUICK = deepbsde.TrainConfig(iterations=600, batch_size=64, lr_values=(1e-1, 1e-2, 1e-3),
                             lr_boundaries=(250, 450), log_every=100, dtype="float64")


@pytest.mark.parametrize("problem, y0_range, tol", [
    (HeatEquation(dim=5, x0=0.5), (0.0, 10.0), 0.01),
    (ReactionDiffusion(dim=5), (0.0, 3.0), 0.03),
    (GeometricBasketCall(dim=4, rho=0.5, strike=95.0), (0.0, 20.0), 0.02),
], ids=["heat", "reaction", "basket"])
def test_short_training_reaches_closed_form(problem, y0_range, tol):
    """Small-d runs of catalogue closed forms: the relative error of u0 must be below tol, set per case
    from the size of the errors that remain after 600 steps at batch 64 with N = 10: the statistical
    error of Y0 under Adam noise (about 0.5 %) plus the O(Δt) discretisation error (largest for the
    oscillating reaction-diffusion solution). A wrong sign or a z/∇u mix-up gives errors of 10 % and more."""
    method = deepbsde.DeepBSDE(num_steps=10, hidden=(16, 16), y0_range=y0_range, scheme="heun")
    sol = deepbsde.solve(problem, method, train=QUICK, seed=0, out=False, progress=False)
    assert sol.relative_error is not None and sol.relative_error < tol, (sol.u0, sol.reference)
    assert math.isfinite(sol.history[-1].loss)
    # a converged run: the trained Z removes most of the variance of g(X_T), no collapse warning
    assert sol.extra["variance_explained"] > 0.5 and not sol.run_warnings



@pytest.mark.parametrize("problem, y0_range, tol", [
    (HeatEquation(dim=5, x0=0.5), (0.0, 10.0), 0.01),
    (GeometricBasketCall(dim=4, rho=0.5, strike=95.0), (0.0, 20.0), 0.02),
], ids=["heat", "basket"])
def test_shared_network_reaches_closed_form(problem, y0_range, tol):
    """The same short runs with one network of (t, x) for all steps (``network="shared"``): same
    tolerances as the step networks, and Z trained (most of Var g(X_T) removed, no warning)."""
    method = deepbsde.DeepBSDE(num_steps=10, network="shared", hidden=(16, 16), y0_range=y0_range, scheme="heun")
    sol = deepbsde.solve(problem, method, train=QUICK, seed=0, out=False, progress=False)
    assert sol.relative_error is not None and sol.relative_error < tol, (sol.u0, sol.reference)
    assert sol.extra["variance_explained"] > 0.5 and not sol.run_warnings


def test_shared_network_standardises_its_inputs_and_sees_time():
    """TimeNet's fixed input shift and scale are the pilot paths' mean and spread (a coordinate with no
    spread gets scale 1), the time input is t/T, training starts from Z = 0, and one network gives different
    Z at different times."""
    problem = GeometricBasketCall(dim=3)  # X ~ 100: unscaled inputs would saturate tanh
    method = deepbsde.DeepBSDE(num_steps=6, network="shared", hidden=(8,))
    model = method.build(problem, make_generator(0))
    nets = model.nets
    x, _ = method.sample(problem, 4096, make_generator(1), torch.float64)
    inner = x[:, 1:-1].reshape(-1, 3)
    assert torch.allclose(nets.shift, inner.mean(0), rtol=0.01)
    assert torch.allclose(nets.scale, inner.std(0), rtol=0.05)
    assert torch.allclose(nets.times.flatten(), torch.tensor([1, 2, 3, 4, 5], dtype=torch.float64) / 6)
    same_x = x[:1, 1:2].expand(1, 5, 3)  # one point presented at all five times
    assert torch.equal(nets(same_x), torch.zeros(1, 5, problem.noise_dim, dtype=torch.float64))  # Z = 0 at start
    with torch.no_grad():
        nets.net.net[-1].weight.normal_(generator=make_generator(2))
    z = nets(same_x)
    assert z.shape == (1, 5, problem.noise_dim) and not torch.allclose(z[0, 0], z[0, -1])
    from deepbsde.nets import TimeNet
    flat = TimeNet(torch.tensor([0.5]), 1.0, torch.zeros(2), torch.tensor([0.0, 2.0]), (4,), 2,
                   generator=make_generator(0))
    assert flat.scale.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="built for 1 times"):
        flat(torch.zeros(3, 2, 2, dtype=torch.float64))


def test_collapse_and_noisy_step_networks_are_flagged():
    """The report compares the trained Z with Z = 0: Z forced to 0 is a collapse; step networks whose
    output is large noise do worse than Z = 0. Both give a warning; the summary carries the figures."""
    from equations import HJBLQ

    problem = HJBLQ(dim=5, lam=20.0)
    method = deepbsde.DeepBSDE(num_steps=5, hidden=(8, 8), network="per_step", z_scale="1/d")
    model = method.build(problem, make_generator(0))
    with torch.no_grad():
        model.z0_param.zero_()
        model.nets.gammas[-1].zero_()
        model.nets.betas[-1].zero_()
    collapsed = method.report(model, problem)
    assert collapsed["terminal_mse"] == pytest.approx(collapsed["terminal_mse_z0"])
    assert any(w.startswith("collapse") for w in collapsed["warnings"])
    with torch.no_grad():
        model.nets.gammas[-1].fill_(50.0)
    noisy = method.report(model, problem)
    assert noisy["terminal_mse"] > 1.1 * noisy["terminal_mse_z0"]
    assert any("not learnt Z" in w for w in noisy["warnings"])
    # Y0 far from E g(X_T), Z = 0: worse than the constant E g, whatever Z = 0 does with the same Y0
    with torch.no_grad():
        model.nets.gammas[-1].zero_()
    model.set_y0(-3.0)
    wrong = method.report(model, problem)
    assert wrong["terminal_mse"] > 10 * wrong["terminal_var"]
    assert wrong["terminal_mse"] == pytest.approx(wrong["terminal_mse_z0"])  # the collapse test fires first
    model.z0_param.data.fill_(0.3 / model.z0_scale)  # Z0 != 0: now mse differs from the Z = 0 rollout ...
    with torch.no_grad():
        model.nets.betas[-1].fill_(1.6)  # Z = 0.32: the driver 10|Z|^2 lifts Y towards g; below mse0, above Var g
    off = method.report(model, problem)
    assert off["terminal_var"] * 1.1 < off["terminal_mse"] < 0.9 * off["terminal_mse_z0"], off
    assert any(w.startswith("not converged") for w in off["warnings"])


def test_gradient_of_heat_equation():
    """∇u(0, x0) = 2 x0 for u = |x|^2 + d(T - t): recovered from Z_0 = σᵀ∇u."""
    problem = HeatEquation(dim=3, x0=[0.5, -1.0, 1.5], sigma=0.7)
    method = deepbsde.DeepBSDE(num_steps=10, hidden=(16, 16), y0_range=(0.0, 10.0))
    sol = deepbsde.solve(problem, method, train=QUICK, seed=1, out=False, progress=False)
    grad = np.array(sol.grad_u0)
    assert np.allclose(grad, [1.0, -2.0, 3.0], atol=0.15), grad


def test_one_seed_one_history():
    problem = HeatEquation(dim=3)
    method = deepbsde.DeepBSDE(num_steps=5, hidden=(8, 8), y0_range=(0.0, 5.0))
    train = deepbsde.TrainConfig(iterations=60, log_every=20, lr_values=(1e-2,))
    runs = [deepbsde.solve(problem, method, train=train, seed=s, out=False, progress=False) for s in (4, 4, 5)]
    keys = ("step", "loss", "train_loss", "u0", "lr")
    hist = [np.array([[getattr(r, k) for k in keys] for r in run.history]) for run in runs]
    assert np.array_equal(hist[0], hist[1], equal_nan=True)  # train_loss is NaN at step 0: nothing trained yet
    assert runs[0].u0 == runs[1].u0
    assert not np.array_equal(hist[0], hist[2], equal_nan=True)


class _InfiniteAtHorizon(HeatEquation):
    """The heat equation with a driver that is not finite at t = T (and zero before)."""

    def driver(self, t, x, y, z):
        at_end = torch.as_tensor(t, dtype=x.dtype) >= self.horizon
        return torch.where(at_end, torch.full_like(y, math.inf), torch.zeros_like(y))


def test_heun_open_never_evaluates_the_driver_at_the_horizon():
    """"heun-open" is Heun on every step but the last, where it keeps the predictor: with a driver infinite at
    t = T it gives Euler's (here exact, the driver being 0 before T) Y_N, where plain Heun gives inf."""
    problem = _InfiniteAtHorizon(dim=2, horizon=1.0)
    n, batch = 5, 8
    dt = problem.horizon / n
    dw = brownian_increments(batch, n, 2, dt, make_generator(0))
    x = simulate(problem, dw, dt)
    y0, z = torch.zeros(batch, 1, dtype=torch.float64), torch.ones(batch, n, 2, dtype=torch.float64)
    assert not torch.isfinite(rollout(problem, y0, z, x, dw, dt, "heun")).all()
    expected = rollout(problem, y0, z, x, dw, dt, "euler")
    assert torch.equal(rollout(problem, y0, z, x, dw, dt, "heun-open"), expected)


@pytest.mark.parametrize("dim, singular", [(1, True), (2, False), (10, False), (100, False)])
def test_a_driver_singular_at_the_horizon_is_found_on_the_pilot(dim, singular):
    """QuadraticGradient's driver grows like (T - t + |x|^2/d)^(alpha - 2): at d = 1 the pilot's end points come
    close enough to 0 for f(T, x) to dwarf f(T - dt, x) (Heun's corrector there ended a run 269 % off); from d = 2
    on |x|^2/d stays away from 0, as for every catalogue case."""
    from deepbsde.estimators import singular_at_horizon

    method = deepbsde.DeepBSDE()
    problem = QuadraticGradient(dim=dim)
    _, x = method.pilot(problem, make_generator(0))
    assert singular_at_horizon(problem, x) is singular
    model = method.build(problem, make_generator(0))
    assert method.scheme_for(problem) == ("heun-open" if singular else "heun") and model is not None
