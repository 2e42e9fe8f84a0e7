"""The FBSNN method (Raissi 2018).

* the FBSNN residual of a closed-form solution is the Euler scheme's local error: its sum of squares halves
  when the grid is refined twice (O(Δt)), its mean over paths vanishes up to Monte Carlo noise, the terminal
  terms are zero; a function violating the PDE, or one with the wrong terminal value, is caught;
* the double-sampling step loss is unbiased (about zero for the exact solution) and removes the squared
  residual's flattening of u between 0 and T;
* a short solve of the heat equation gets u0 within a stated tolerance, with an error bar, a gradient and
  u(t, x) at other times;
* config-file round trip with ``name = "FBSNN"``; bad settings and unsuitable problems are ConfigErrors.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from deepbsde import FBSNN, ConfigError, Problem, TrainConfig, solve
from deepbsde.configfile import build_from_config, method_registry
from deepbsde.methods.fbsnn import fbsnn_loss_terms, fbsnn_residuals, sibling_residuals
from deepbsde.paths import brownian_increments, make_generator, simulate
from equations import BlackScholesBarenblatt, Burgers1D, HeatEquation

F64 = torch.float64


def _coupled_paths(problem: Problem, batch: int, fine: int, coarse: int, seed: int = 1):
    """Paths on ``coarse`` steps whose increments are sums of those of a ``fine`` grid (coupled grids)."""
    dw_fine = brownian_increments(batch, fine, problem.noise_dim, problem.horizon / fine, make_generator(seed), F64)
    dw = dw_fine.reshape(batch, coarse, fine // coarse, -1).sum(2)
    dt = problem.horizon / coarse
    return simulate(problem, dw, dt), dw, dt


@pytest.mark.parametrize("problem", [BlackScholesBarenblatt(dim=4), HeatEquation(dim=3, sigma=0.7)],
                         ids=lambda p: p.name)
def test_exact_solution_has_euler_sized_residual(problem: Problem) -> None:
    u = problem.exact_solution
    batch = 8192
    steps_loss, mean_sum, se = {}, {}, {}
    for n in (10, 20, 40):
        x, dw, dt = _coupled_paths(problem, batch, 40, n)
        terms = fbsnn_loss_terms(problem, u, x, dw, dt, create_graph=False)
        r, y, z = fbsnn_residuals(problem, u, x, dw, dt, create_graph=False)
        assert r.shape == (batch, n, 1) and y.shape == (batch, n + 1, 1) and z.shape == (batch, n + 1, problem.noise_dim)
        scale = float(y[:, 0].abs().mean())
        # u(T, x) = g(x) and σᵀ∇u(T, x) = σᵀ∇g(x) exactly
        assert float(terms["terminal"]) <= (1e-12 * scale) ** 2
        assert float(terms["gradient"]) <= (1e-10 * scale) ** 2
        steps_loss[n] = float(terms["steps"])
        sums = r.detach().sum(1).reshape(-1)
        mean_sum[n], se[n] = float(sums.mean()), float(sums.std()) / math.sqrt(batch)
    # the residual's sum of squares is the scheme's local error summed over steps: O(Δt)
    for n in (10, 20):
        assert 1.6 < steps_loss[n] / steps_loss[2 * n] < 2.5, steps_loss
    # its mean over paths is the scheme's global error (O(Δt), tiny here) up to Monte Carlo noise
    for n in mean_sum:
        assert abs(mean_sum[n]) < 4 * se[n] + 1e-3 * scale, (mean_sum, se)

    x, dw, dt = _coupled_paths(problem, batch, 40, 20)
    exact = fbsnn_loss_terms(problem, u, x, dw, dt, create_graph=False)
    # a function that violates the PDE (by 0.1 u on every step) keeps the terminal value but not the residual's mean
    wrong_pde = lambda t, x: u(t, x) * (1 + 0.1 * (problem.horizon - t))  # noqa: E731
    terms = fbsnn_loss_terms(problem, wrong_pde, x, dw, dt, create_graph=False)
    sums = fbsnn_residuals(problem, wrong_pde, x, dw, dt, create_graph=False)[0].detach().sum(1).reshape(-1)
    assert abs(float(sums.mean())) > 20 * float(sums.std()) / math.sqrt(batch)
    assert float(terms["steps"]) > 1.05 * float(exact["steps"])
    # u + 0.1 x1 solves both PDEs (a linear function): only the terminal terms catch it
    wrong_end = lambda t, x: u(t, x) + 0.1 * x[:, :1]  # noqa: E731
    terms = fbsnn_loss_terms(problem, wrong_end, x, dw, dt, create_graph=False)
    assert float(terms["terminal"]) > 1e-3 and float(terms["gradient"]) > 1e-4


def test_residual_uses_sigma_transpose_grad() -> None:
    """z = σᵀ∇u, never ∇u: with ∇u in its place the Barenblatt driver (which divides Σz by σ_max) is wrong, and
    the residual's mean moves far outside its noise."""
    problem = BlackScholesBarenblatt(dim=4)
    x, dw, dt = _coupled_paths(problem, 8192, 20, 20)

    class GradAsZ(BlackScholesBarenblatt):
        def sigma_transpose_times(self, t, x, p):
            return p

    wrong = GradAsZ(dim=4)
    sums = fbsnn_residuals(wrong, problem.exact_solution, x, dw, dt, create_graph=False)[0].sum(1).reshape(-1)
    assert abs(float(sums.mean())) > 20 * float(sums.std()) / math.sqrt(8192)


def test_solve_heat_gets_u0_with_error_bar() -> None:
    problem = HeatEquation(dim=2)  # u(0, 0) = s² d T = 2
    method = FBSNN(num_steps=10, hidden=(16, 16))
    train = TrainConfig(iterations=200, batch_size=64, valid_size=128, log_every=50, eval_paths=4096,
                        tolerance=None, dtype="float64")
    sol = solve(problem, method, train=train, out=False, seed=0)
    exact = problem.reference().value
    assert sol.method == "FBSNN"
    assert sol.u0_interval is not None and sol.u0_stderr is not None
    assert abs(sol.u0 - exact) <= 0.03 * exact  # the re-estimate: within 3 %
    assert abs(sol.extra["trained_u0"] - exact) <= 0.05 * exact  # the network's own u(0, x0): within 5 %
    assert sol.u0_interval[0] - 1e-9 <= exact <= sol.u0_interval[1] + 1e-9
    assert len(sol.grad_u0) == 2  # ∇u(0, 0) = 0
    assert max(abs(v) for v in sol.grad_u0) < 0.5
    model = sol.model
    # u(t, x) at other times and places, against |x|² + d (T - t): at t = T (the terminal term) and near x0 at
    # t = 0 within 0.1 (5 % of u0) after this short training; in between the squared residual's bias dominates
    # (test_double_sampling_removes_interior_bias)
    t = torch.tensor([[1.0], [0.0]], dtype=F64)
    x = torch.tensor([[0.5, -0.5], [0.1, 0.0]], dtype=F64)
    xg = x.clone().requires_grad_(True)
    got = method.value(model, problem, t, xg)
    assert got.shape == (2, 1)
    assert torch.allclose(got.detach(), problem.exact_solution(t, x), rtol=0.0, atol=0.1)
    (grad,) = torch.autograd.grad(got.sum(), xg)  # differentiable in x: ∇u(T, x) = 2x
    assert torch.allclose(grad[0], 2 * x[0], atol=0.25)
    with pytest.raises(ConfigError, match=r"t in \[0, T\]"):
        method.value(model, problem, torch.tensor([[1.5]], dtype=F64), x[:1])
    # the training loss went down, and the report has the loss terms
    assert sol.history.rows[-1].loss < 0.5 * sol.history.rows[0].loss
    assert {"fbsnn_steps", "fbsnn_terminal", "fbsnn_gradient"} <= set(sol.extra)


def test_double_sampling_is_unbiased_for_exact_solution() -> None:
    """E[r_n r'_n] = E[E[r_n | X_n]²]: about zero for the exact solution (where E[r_n²] is O(Δt) > 0), and
    clearly positive for a function violating the PDE."""
    problem = BlackScholesBarenblatt(dim=4)
    method = FBSNN(num_steps=20, step_loss="double_sampling")
    batch = method.sample(problem, 8192, make_generator(4), F64)
    x, dw, x_sib, dw_sib = batch
    assert x_sib.shape == (8192, 20, 4) and dw_sib.shape == (8192, 20, 4)
    dt = problem.horizon / 20

    def per_path(u):
        r, y, z = fbsnn_residuals(problem, u, x, dw, dt, create_graph=False)
        r_sib = sibling_residuals(problem, u, x, y, z, x_sib, dw_sib, dt, create_graph=False)
        prod = (r * r_sib).sum(1).reshape(-1)
        return float(prod.mean()), float(prod.std()) / math.sqrt(prod.shape[0]), float(r.square().sum(1).mean())

    mean, se, squared = per_path(problem.exact_solution)
    assert abs(mean) < 4 * se + 1e-4 * squared
    assert squared > 20 * se  # the squared residual's conditional variance, which double sampling removes
    wrong = lambda t, x: problem.exact_solution(t, x) * (1 + 0.1 * (problem.horizon - t))  # noqa: E731
    mean_w, se_w, _ = per_path(wrong)
    assert mean_w > 10 * se_w
    terms = fbsnn_loss_terms(problem, problem.exact_solution, x, dw, dt, create_graph=False, sibling=(x_sib, dw_sib))
    assert abs(float(terms["steps"]) - mean) < 1e-12 * (1 + abs(mean))


def test_double_sampling_removes_interior_bias() -> None:
    """The squared residual penalises the Hessian (module docstring of deepbsde.methods.fbsnn): on the heat equation
    with g = |x|² it flattens u(T/2, ·) by about 16 % in relative L2, whatever N; double sampling does not."""
    problem = HeatEquation(dim=2)
    train = TrainConfig(iterations=500, batch_size=128, valid_size=128, log_every=100, eval_paths=2048,
                        tolerance=None, dtype="float64")
    x = 0.5 ** 0.5 * torch.randn(512, 2, generator=make_generator(5), dtype=F64)  # X_{T/2} from x0 = 0
    t = torch.full((512, 1), 0.5, dtype=F64)
    exact = problem.exact_solution(t, x)
    errors = {}
    for step_loss in ("squared", "double_sampling"):
        method = FBSNN(num_steps=10, hidden=(16, 16), step_loss=step_loss)
        sol = solve(problem, method, train=train, out=False, seed=0)
        value = method.value(sol.model, problem, t, x).detach()
        errors[step_loss] = float((value - exact).norm() / exact.norm())
        assert abs(sol.extra["trained_u0"] - 2.0) < 0.05 * 2.0
    assert errors["double_sampling"] < 0.08, errors
    assert errors["squared"] > 0.1, errors


def test_control_and_estimate_agree() -> None:
    problem = BlackScholesBarenblatt(dim=3)
    method = FBSNN(num_steps=5, hidden=(8,))
    model = method.build(problem, make_generator(0))
    with torch.no_grad():  # a non-trivial network
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=make_generator(3), dtype=F64))
    est = method.estimate(model, problem)
    z0 = method.trained_z0(model, problem)
    sigma = problem.diffusion(torch.zeros(()), problem.x0_tensor().unsqueeze(0))[0]
    assert torch.allclose(z0, sigma * torch.tensor(est.grad_u0, dtype=F64))
    control = method.control(model, problem)
    assert control.y0 == pytest.approx(est.u0)
    x = problem.x0_tensor().expand(4, 6, 3).clone()
    z = control.z_at(x, 5)
    assert z.shape == (4, 5, 3) and torch.allclose(z[:, 0], z0.expand(4, 3))
    assert torch.allclose(control.z_step(0, x[:, 0], 5), z0.expand(4, 3))


def test_config_file_round_trip() -> None:
    assert method_registry()["FBSNN"] is FBSNN
    config = {"equation": {"name": "HeatEquation", "dim": 3},
              "method": {"name": "FBSNN", "num_steps": 8, "hidden": [12, 12], "activation": "silu",
                         "w_grad": 0.5, "scheme": "trapezoid", "step_loss": "double_sampling"},
              "train": {"iterations": 5, "seed": 2}}
    problem, method, train, seed = build_from_config(config)
    assert isinstance(method, FBSNN) and seed == 2 and train.iterations == 5
    assert method == FBSNN(num_steps=8, hidden=(12, 12), activation="silu", w_grad=0.5, scheme="trapezoid",
                           step_loss="double_sampling")
    described = method.describe()
    assert described.pop("name") == "FBSNN"
    again = build_from_config({**config, "method": {"name": "FBSNN", **described}})[1]
    assert again == method
    assert {f.name for f in dataclasses.fields(FBSNN) if f.init} == set(described)


@pytest.mark.parametrize("key, value, message", [
    ("num_steps", 0, "method.num_steps: expected a positive integer"),
    ("num_steps", 2.5, "num_steps"),
    ("hidden", [0, 4], "method.hidden: expected a non-empty list of positive integers"),
    ("activation", "relu", "method.activation: expected one of"),
    ("scheme", "heun", "method.scheme: expected one of 'euler', 'trapezoid'"),
    ("w_grad", -1.0, "method.w_grad: expected a finite number >= 0"),
    ("step_loss", "mean", "method.step_loss: expected one of 'squared', 'double_sampling'"),
    ("pilot_paths", 1, "method.pilot_paths"),
    ("bogus", 1, "unknown key 'bogus'"),
])
def test_config_file_rejects_bad_values(key: str, value: object, message: str) -> None:
    config = {"equation": {"name": "HeatEquation", "dim": 2}, "method": {"name": "FBSNN", key: value}, "train": {}}
    with pytest.raises(ConfigError, match=message):
        build_from_config(config)


def test_refuses_problem_without_fbsde_form() -> None:
    with pytest.raises(ConfigError, match="FBSNN: needs a deepbsde.Problem.*received.*Burgers1D"):
        solve(Burgers1D(), FBSNN(), train=TrainConfig(iterations=1), out=False)
