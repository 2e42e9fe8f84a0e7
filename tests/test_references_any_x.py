"""Reference u and ∇u away from x0: ``HJBLQ.reference_at`` (Cole-Hopf quadrature), ``AllenCahn.reference_at``
(radial solve), and ``equations.reference_u`` / ``reference_grad`` over the catalogue, checked against
``reference()`` at x0, the terminal condition, central differences, known formulas and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from deepbsde.drift import DriftedProblem, pull_towards_x0
from equations import (
    HJBLQ,
    AllenCahn,
    BlackScholesBarenblatt,
    Burgers1D,
    BurgersType,
    DefaultRisk,
    DiffRates,
    GeometricBasketCall,
    HeatEquation,
    QuadraticGradient,
    ReactionDiffusion,
    has_reference_at,
    reference_grad,
    reference_u,
)
from equations.calculators.hjb_lq import hjb_lq_monte_carlo, hjb_lq_uncontrolled

F64 = torch.float64


def _points(problem, n: int, seed: int = 0, spread: float = 0.5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x0 = problem.x0_tensor()
    noise = torch.randn(n, problem.dim, generator=gen, dtype=F64)
    if isinstance(problem, (GeometricBasketCall, BlackScholesBarenblatt)):
        return x0 * torch.exp(0.2 * noise)  # positive prices around x0
    return x0 + spread * noise


def _central_difference(problem, t: float, x: torch.Tensor, h: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for i in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, i] = h
        out[:, i] = ((reference_u(problem, t, x + e) - reference_u(problem, t, x - e)) / (2 * h))[:, 0]
    return out


# --- HJBLQ ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [dict(dim=5, lam=2.0), dict(dim=5, lam=2.0, x0=0.3),
                                    dict(dim=2, lam=1.0, horizon=0.5, x0=[1.0, -2.0]),
                                    dict(dim=100), dict(dim=20, lam=50.0, x0=0.1, pull=0.5)])
def test_hjb_reference_at_x0_is_reference(kwargs) -> None:
    problem = HJBLQ(**kwargs)
    x0 = problem.x0_tensor().unsqueeze(0)
    value = problem.reference_at(0.0, x0)
    assert value.shape == (1, 1) and value.dtype == F64
    assert float(value) == problem.reference().value  # the same quadrature
    assert float(reference_u(problem, torch.zeros(1, 1, dtype=F64), x0)) == problem.reference().value


def test_hjb_reference_at_shapes_dtypes_and_terminal_condition() -> None:
    problem = HJBLQ(dim=4, lam=3.0)
    x = _points(problem, 6, spread=1.0)
    for t in (problem.horizon, torch.tensor(problem.horizon), torch.full((6, 1), problem.horizon, dtype=F64)):
        torch.testing.assert_close(problem.reference_at(t, x), problem.terminal(x), rtol=1e-14, atol=1e-14)
    out = problem.reference_at(torch.full((6,), 0.25), x.float())
    assert out.shape == (6, 1) and out.dtype == torch.float32
    grad = problem.reference_grad_at(0.25, x)
    assert grad.shape == (6, 4) and grad.dtype == F64
    # t = T: the gradient of g = ln((1 + |x|^2)/2)
    torch.testing.assert_close(problem.reference_grad_at(problem.horizon, x),
                               2 * x / (1 + (x * x).sum(1, keepdim=True)), rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="t: expected times in"):
        problem.reference_at(1.5, x)
    with pytest.raises(ValueError, match=r"shape \(batch, 4\)"):
        problem.reference_at(0.0, x[:, :3])


def test_hjb_reference_is_radial_increasing_and_below_the_uncontrolled_mean() -> None:
    problem = HJBLQ(dim=3, lam=2.0)
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.6, 0.8, 0.0], [2.0, 0.0, 0.0]], dtype=F64)
    u = problem.reference_at(0.0, x)[:, 0]
    assert float(u[0]) == pytest.approx(float(u[1]), rel=1e-13) == pytest.approx(float(u[2]), rel=1e-13)
    assert float(u[3]) > float(u[0]) > float(problem.reference_at(0.0, torch.zeros(1, 3, dtype=F64)))
    # Jensen: -1/λ ln E exp(-λ g) <= E g
    mean_g = hjb_lq_uncontrolled(0.0, [2.0, 0.0, 0.0], horizon=1.0)
    assert float(u[3]) < mean_g


@pytest.mark.parametrize("kwargs, t", [(dict(dim=5, lam=2.0), 0.0), (dict(dim=2, lam=1.0), 0.6),
                                       (dict(dim=100, lam=1.0), 0.0), (dict(dim=50, lam=20.0), 0.3)])
def test_hjb_gradient_against_central_differences(kwargs, t) -> None:
    problem = HJBLQ(**kwargs)
    x = _points(problem, 2, seed=1, spread=0.4)
    grad = reference_grad(problem, t, x)
    fd = _central_difference(problem, t, x, 1e-4)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)


def test_hjb_large_lambda_and_dimension_stay_finite() -> None:
    problem = HJBLQ(dim=1000, lam=50.0)
    x = torch.full((2, 1000), 0.05, dtype=F64)
    x[1] *= 3.0
    u = problem.reference_at(0.0, x)
    grad = problem.reference_grad_at(0.0, x)
    assert bool(torch.isfinite(u).all()) and bool(torch.isfinite(grad).all())
    assert float(u[1]) > float(u[0])
    assert float(u[1]) < hjb_lq_uncontrolled(0.0, x[1].numpy(), horizon=1.0)
    assert bool((grad * x > 0).all())  # u grows with |x|


def test_hjb_reference_against_monte_carlo_off_x0() -> None:
    """The quadrature at a point away from the origin against plain Monte Carlo of the d-dimensional Gaussian
    (unbiased enough at λ = 1)."""
    problem = HJBLQ(dim=5, lam=1.0)
    point = [0.8, -0.3, 0.5, 0.0, 1.2]
    value = float(problem.reference_at(0.2, torch.tensor([point], dtype=F64)))
    estimate, stderr = hjb_lq_monte_carlo(0.2, point, lam=1.0, horizon=1.0, samples=200_000, seed=3)
    assert abs(value - estimate) < 4 * stderr


# --- Allen-Cahn ---------------------------------------------------------------------------------------

def test_allen_cahn_reference_at_agrees_with_reference_and_finite_differences() -> None:
    problem = AllenCahn(dim=5, x0=0.2)
    x0 = problem.x0_tensor().unsqueeze(0)
    assert float(problem.reference_at(0.0, x0)) == pytest.approx(problem.reference().value, rel=1e-7)
    x = _points(problem, 3, seed=2)
    torch.testing.assert_close(reference_grad(problem, 0.1, x), _central_difference(problem, 0.1, x, 1e-4),
                               rtol=1e-5, atol=1e-8)
    T = torch.tensor(problem.horizon, dtype=F64)
    torch.testing.assert_close(problem.reference_at(T, x), problem.terminal(x), rtol=1e-12, atol=1e-12)
    assert torch.equal(problem.reference_grad_at(0.0, torch.zeros(1, 5, dtype=F64)), torch.zeros(1, 5, dtype=F64))


# --- the closed forms ---------------------------------------------------------------------------------

CLOSED = [HeatEquation(dim=3, sigma=1.5), BlackScholesBarenblatt(dim=3), GeometricBasketCall(dim=3, rho=0.3),
          BurgersType(dim=3), QuadraticGradient(dim=3), ReactionDiffusion(dim=3)]


@pytest.mark.parametrize("problem", CLOSED, ids=lambda p: p.name)
def test_closed_form_reference_gradient_against_central_differences(problem) -> None:
    x = _points(problem, 4, seed=4)
    t = torch.tensor([[0.0], [0.1], [0.3], [0.5]], dtype=F64) * problem.horizon
    u = reference_u(problem, t, x)
    torch.testing.assert_close(u, problem.exact_solution(t, x), rtol=0, atol=0)
    h = 1e-5 * (1.0 + float(x.abs().max()))
    fd = torch.stack([_central_difference(problem, float(t[k]), x[k:k + 1], h)[0] for k in range(4)])
    grad = reference_grad(problem, t, x)
    assert grad.shape == (4, 3) and grad.dtype == F64
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-7)
    assert has_reference_at(problem)


def test_known_gradients() -> None:
    x = torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]], dtype=F64)
    heat = HeatEquation(dim=3, sigma=2.0)
    torch.testing.assert_close(reference_u(heat, 0.25, x), (x * x).sum(1, keepdim=True) + 4.0 * 3 * 0.75)
    torch.testing.assert_close(reference_grad(heat, 0.25, x), 2 * x)
    bsb = BlackScholesBarenblatt(dim=3)
    factor = math.exp((0.05 + 0.16) * 0.6)
    torch.testing.assert_close(reference_u(bsb, 0.4, x), factor * (x * x).sum(1, keepdim=True))
    torch.testing.assert_close(reference_grad(bsb, 0.4, x), 2 * factor * x)


@pytest.mark.parametrize("rho, expected", [(0.0, 0.0091740), (0.5, 0.0063175)])
def test_basket_delta_at_the_money(rho, expected) -> None:
    """references.md: at x = 100·1, d = 100, every coordinate of ∇u is e^{-q τ} N(d1) / d."""
    problem = GeometricBasketCall(rho=rho)
    x = problem.x0_tensor().unsqueeze(0)
    grad = reference_grad(problem, 0.0, x)
    assert grad.shape == (1, 100)
    torch.testing.assert_close(grad, torch.full_like(grad, expected), rtol=5e-5, atol=0)
    sigma_g2 = 0.04 * (1 + 99 * rho) / 100
    q = 0.5 * (0.04 - sigma_g2)
    d1 = (0.05 - q + 0.5 * sigma_g2) / math.sqrt(sigma_g2)
    assert float(grad[0, 0]) == pytest.approx(math.exp(-q) * stats.norm.cdf(d1) / 100, rel=1e-12)


# --- dispatch -----------------------------------------------------------------------------------------

def test_numpy_in_numpy_out_and_drifted_problem() -> None:
    problem = HJBLQ(dim=3, lam=2.0)
    x = np.array([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]])
    u = reference_u(problem, 0.0, x)
    grad = reference_grad(problem, 0.0, x)
    assert isinstance(u, np.ndarray) and u.shape == (2, 1) and u.dtype == np.float64
    assert isinstance(grad, np.ndarray) and grad.shape == (2, 3)
    drifted = DriftedProblem(problem, pull_towards_x0(1.0, problem.x0_tensor()))
    np.testing.assert_array_equal(reference_u(drifted, 0.0, x), u)
    np.testing.assert_array_equal(reference_grad(drifted, 0.0, x), grad)


@pytest.mark.parametrize("problem", [DefaultRisk(dim=3), DiffRates(dim=3)], ids=lambda p: p.name)
def test_no_reference_away_from_x0_is_a_clear_error(problem) -> None:
    assert not has_reference_at(problem)
    x = problem.x0_tensor().unsqueeze(0)
    with pytest.raises(NotImplementedError, match="no reference u at any point"):
        reference_u(problem, 0.0, x)
    with pytest.raises(NotImplementedError, match="no reference gradient"):
        reference_grad(problem, 0.0, x)


def test_residual_problem_reference_u_only() -> None:
    problem = Burgers1D()
    t = torch.tensor([[0.1], [0.5]], dtype=F64)
    x = torch.tensor([[0.3], [-0.7]], dtype=F64)
    torch.testing.assert_close(reference_u(problem, t, x), problem.reference_solution(t, x))
    with pytest.raises(NotImplementedError, match="gradient"):
        reference_grad(problem, t, x)
