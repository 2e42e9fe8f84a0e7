"""Tests of the reference calculators (equations.calculators), cross-checked against each other, against
independent computations written here, and against the values in ../shared/references.md."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.linalg import solve_banded

from deepbsde.paths import gbm_step
from deepbsde.problem import Problem
from equations.calculators import (allen_cahn_profile, allen_cahn_refinement, allen_cahn_value,
                                   black_scholes_call, default_risk_bounds, diff_rates_linear_prices,
                                   diff_rates_lower_bound, feynman_kac, geometric_basket_call, hjb_lq_monte_carlo,
                                   hjb_lq_uncontrolled, hjb_lq_value, log_expectation, ncx2_logpdf)
from equations.calculators.allen_cahn import allen_cahn_terminal, reaction_flow
from equations.calculators.bounds import DEFAULT_RISK_DEFAULTS, DIFF_RATES_DEFAULTS


# ------------------------------------------------------------------------------------------------
# Small problems for the Feynman–Kac checks
# ------------------------------------------------------------------------------------------------

class Heat(Problem):
    """u_t + (s²/2)Δu + a u + c|x|² = 0, u(T) = |x|² (a = c = 0: the heat equation of references.md §10)."""

    def __init__(self, dim: int, horizon: float, x0, s: float, a: float = 0.0, c: float = 0.0) -> None:
        super().__init__(dim, horizon, x0)
        self.s, self.a, self.c = s, a, c

    def drift(self, t, x):
        return torch.zeros_like(x)

    def diffusion(self, t, x):
        return torch.full_like(x, self.s)

    def driver(self, t, x, y, z):
        return self.a * y + self.c * (x * x).sum(1, keepdim=True)

    def terminal(self, x):
        return (x * x).sum(1, keepdim=True)


class LinearGBM(Problem):
    """Independent GBMs dX = drift X dt + vol X dW, driver -rate·y, payoff 'min' or the call spread on max."""

    def __init__(self, dim: int, horizon: float, x0, drift: float, vol: float, rate: float, payoff: str) -> None:
        super().__init__(dim, horizon, x0)
        self.drift_rate, self.vol, self.rate, self.payoff = drift, vol, rate, payoff

    def drift(self, t, x):
        return self.drift_rate * x

    def diffusion(self, t, x):
        return self.vol * x

    def driver(self, t, x, y, z):
        return -self.rate * y

    def terminal(self, x):
        if self.payoff == "min":
            return x.min(1, keepdim=True).values
        m = x.max(1, keepdim=True).values
        return torch.clamp(m - 120.0, min=0.0) - 2.0 * torch.clamp(m - 150.0, min=0.0)

    def step(self, t, x, dt, dw):
        return gbm_step(x, self.drift_rate, self.vol, dt, dw)


class CorrelatedBasket(Problem):
    """Risk-neutral correlated GBM (corr ρ), f = -r y, g = (geometric mean - K)^+ (references.md §9)."""

    noise_type = "general"

    def __init__(self, dim: int, horizon: float, x0, r: float, sigma: float, rho: float, strike: float) -> None:
        super().__init__(dim, horizon, x0)
        self.r, self.sigma, self.rho, self.strike = r, sigma, rho, strike
        corr = np.full((dim, dim), rho) + (1.0 - rho) * np.eye(dim)
        self.chol = torch.tensor(np.linalg.cholesky(corr), dtype=torch.float64)

    def drift(self, t, x):
        return self.r * x

    def diffusion(self, t, x):
        return self.sigma * x.unsqueeze(-1) * self.chol.to(x).unsqueeze(0)

    def driver(self, t, x, y, z):
        return -self.r * y

    def terminal(self, x):
        return torch.clamp(torch.exp(torch.log(x).mean(1, keepdim=True)) - self.strike, min=0.0)

    def step(self, t, x, dt, dw):
        return gbm_step(x, self.r, self.sigma, dt, dw @ self.chol.to(x).T)


class DefaultRiskNonlinear(LinearGBM):
    """The default-risk driver of references.md §3: linear only for y < 50 (Q constant there)."""

    def driver(self, t, x, y, z):
        q = torch.clamp((y - 50.0) / 20.0, 0.0, 1.0)
        intensity = 0.2 + (0.02 - 0.2) * q
        return -(1.0 / 3.0) * intensity * y - 0.02 * y


class AllenCahnLike(Heat):
    def driver(self, t, x, y, z):
        return y - y ** 3


class BlackScholesWithZ(LinearGBM):
    """Black–Scholes at rate R written under the real-world drift: f = -R y - ((μ - R)/σ) Σ z_i."""

    def driver(self, t, x, y, z):
        return -self.rate * y - (self.drift_rate - self.rate) / self.vol * z.sum(1, keepdim=True)


def within(estimate, exact: float, k: float = 4.0) -> bool:
    return abs(estimate.value - exact) <= k * estimate.stderr


# ------------------------------------------------------------------------------------------------
# HJB (references.md §2)
# ------------------------------------------------------------------------------------------------

def test_hjb_reference_values():
    assert hjb_lq_value(0.0, np.zeros(100), lam=1.0, horizon=1.0) == pytest.approx(4.590162, abs=5e-7)
    assert hjb_lq_uncontrolled(0.0, np.zeros(100), horizon=1.0) == pytest.approx(4.600226, abs=5e-7)
    # a scalar x is broadcast with dim=
    assert hjb_lq_value(0.0, 0.0, dim=100, lam=1.0, horizon=1.0) == hjb_lq_value(0.0, np.zeros(100), lam=1.0,
                                                                                 horizon=1.0)


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_hjb_quadrature_matches_plain_monte_carlo(lam):
    x = np.linspace(-0.8, 1.0, 10)
    exact = hjb_lq_value(0.2, x, lam=lam, horizon=1.0)
    estimate, stderr = hjb_lq_monte_carlo(0.2, x, lam=lam, horizon=1.0, samples=200_000, seed=7)
    assert 0.0 < stderr < 5e-3
    assert abs(estimate - exact) <= 4.0 * stderr


def test_hjb_small_lambda_tends_to_uncontrolled_mean_linearly():
    x = np.full(10, 0.3)
    mean = hjb_lq_uncontrolled(0.0, x, horizon=1.0)
    gaps = [mean - hjb_lq_value(0.0, x, lam=lam, horizon=1.0) for lam in (1e-2, 1e-3, 1e-4)]
    assert all(g > 0 for g in gaps)                       # Jensen: u < E[g] for λ > 0
    # u = E g - (λ/2) Var g + O(λ²): the gap shrinks by 10 when λ does
    assert gaps[0] / gaps[1] == pytest.approx(10.0, rel=2e-2)
    assert gaps[1] / gaps[2] == pytest.approx(10.0, rel=2e-3)
    # and (gap/λ) tends to Var(g)/2, Var computed independently by Monte Carlo
    rng = np.random.default_rng(3)
    xt = x + math.sqrt(2.0) * rng.standard_normal((200_000, 10))
    g = np.log1p((xt * xt).sum(1)) - math.log(2.0)
    assert gaps[2] / 1e-4 == pytest.approx(0.5 * g.var(), rel=2e-2)


def test_hjb_at_horizon_equals_terminal_condition():
    x = np.array([0.3, -1.2, 2.0])
    g = math.log(0.5 * (1.0 + float(x @ x)))
    assert hjb_lq_value(1.0, x, lam=3.0, horizon=1.0) == g
    assert hjb_lq_uncontrolled(1.0, x, horizon=1.0) == g
    # and is continuous up to T (huge noncentrality: the quadrature must stay accurate)
    assert hjb_lq_value(1.0 - 1e-9, x, lam=3.0, horizon=1.0) == pytest.approx(g, abs=1e-7)


@pytest.mark.parametrize("lam,x", [(100.0, 0.3), (10.0, math.sqrt(2.0)), (0.5, 2.0)])
def test_hjb_d1_against_direct_gaussian_integral(lam, x):
    """d = 1: E[(2 / (1 + (x + √2 Z)²))^λ] as a plain 1-D Gaussian integral in z, no χ² law involved."""
    def f(z):
        return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * (2.0 / (1.0 + (x + math.sqrt(2.0) * z) ** 2)) ** lam
    z0 = -x / math.sqrt(2.0)
    mass = (integrate.quad(f, -np.inf, z0, epsabs=0, epsrel=1e-13, limit=400)[0]
            + integrate.quad(f, z0, np.inf, epsabs=0, epsrel=1e-13, limit=400)[0])
    assert hjb_lq_value(0.0, [x], lam=lam, horizon=1.0) == pytest.approx(-math.log(mass) / lam, abs=1e-10)


@pytest.mark.parametrize("dim,lam", [(100, 50.0), (100, 100.0), (10000, 100.0)])
def test_hjb_large_lambda_against_scipy_chi2(dim, lam):
    """Large λ at x = 0, against scipy's own χ² density integrated by adaptive quadrature (independent code)."""
    def log_integrand(q):
        return stats.chi2.logpdf(q, dim) - lam * np.log1p(2.0 * q)
    qs = np.geomspace(1e-10, 10.0 * dim + 100, 100_001)
    peak = qs[np.argmax(log_integrand(qs))]
    top = float(log_integrand(peak))
    mass = sum(integrate.quad(lambda q: math.exp(log_integrand(q) - top), a, b, epsabs=0, epsrel=1e-12,
                              limit=500)[0] for a, b in ((0.0, peak), (peak, np.inf)))
    exact = -math.log(2.0) - (top + math.log(mass)) / lam
    assert hjb_lq_value(0.0, 0.0, dim=dim, lam=lam, horizon=1.0) == pytest.approx(exact, abs=1e-9)


def test_hjb_plain_monte_carlo_is_biased_at_large_lambda():
    """references.md §2: at λ = 50 the plain estimator is far off (rare samples dominate)."""
    exact = hjb_lq_value(0.0, 0.0, dim=100, lam=50.0, horizon=1.0)
    estimate, stderr = hjb_lq_monte_carlo(0.0, 0.0, dim=100, lam=50.0, horizon=1.0, samples=20_000, seed=1)
    assert estimate - exact > 10 * stderr


def test_ncx2_logpdf_matches_scipy_and_stays_finite_in_far_tails():
    for dim, nc in [(1, 3.0), (2, 0.5), (10, 7.0), (100, 50.0), (150, 20.0), (100, 0.0)]:
        q = np.geomspace(1e-3, 5 * (dim + nc) + 100, 40)
        ours = ncx2_logpdf(q, dim, nc)
        ref = stats.ncx2.logpdf(q, dim, nc) if nc > 0 else stats.chi2.logpdf(q, dim)
        ok = ref > -600
        np.testing.assert_allclose(ours[ok], ref[ok], rtol=1e-9, atol=1e-9)
    # scipy gives -inf here; ours is finite and the density integrates to 1 and has mean d + nc
    assert np.isfinite(ncx2_logpdf(np.array([1.0]), 10000, 10000.0)).all()
    for dim, nc in [(10000, 10000.0), (3, 1e6), (1, 1e12)]:
        assert log_expectation(lambda q: np.zeros_like(q), dim, nc) == pytest.approx(0.0, abs=1e-10)
        assert math.exp(log_expectation(np.log, dim, nc)) == pytest.approx(dim + nc, rel=1e-10)


def test_hjb_rejects_bad_input():
    with pytest.raises(ValueError, match="lam"):
        hjb_lq_value(0.0, [0.0], lam=0.0, horizon=1.0)
    with pytest.raises(ValueError, match="t: expected"):
        hjb_lq_value(2.0, [0.0], lam=1.0, horizon=1.0)
    with pytest.raises(ValueError, match="dim"):
        hjb_lq_value(0.0, 0.0, lam=1.0, horizon=1.0)


# ------------------------------------------------------------------------------------------------
# Allen–Cahn (references.md §1)
# ------------------------------------------------------------------------------------------------

def test_allen_cahn_reference_value():
    value = allen_cahn_value(0.0, 0.0, dim=100, horizon=0.3)
    assert value == pytest.approx(0.052781, abs=1e-6)
    assert abs(value - 0.052802) > 1.5e-5   # the published branching-diffusion value is not ours


def test_allen_cahn_refinement_is_second_order():
    rows = allen_cahn_refinement(0.0, 0.0, dim=100, horizon=0.3, levels=5, points=250, steps=125)
    ratios = [row.ratio for row in rows[2:]]
    assert all(3.8 < r < 4.2 for r in ratios), ratios
    # default accuracy: within 1e-6 relative of the Richardson extrapolation of the finest pair
    extrapolated = rows[-1].value + rows[-1].change / 3.0
    assert allen_cahn_value(0.0, 0.0, dim=100, horizon=0.3) == pytest.approx(extrapolated, rel=1e-6)


@pytest.mark.parametrize("dim", [1000, 10000])
def test_allen_cahn_refinement_large_dimension(dim):
    """The r = 0 closure is stiff (eigenvalues ~ 2d/h²): convergence must stay clean at large d."""
    rows = allen_cahn_refinement(0.0, 0.0, dim=dim, horizon=0.3, levels=4, points=500, steps=250)
    assert all(3.5 < row.ratio < 4.5 for row in rows[2:]), [row.ratio for row in rows]


def test_allen_cahn_heat_part_against_chi2_quadrature():
    """Without the reaction the radial solve is E[g(x + √2 W_T)] = E[1/(2 + 0.8 T Q)], Q ~ χ'²_d(|x|²/2T)."""
    for dim, horizon in [(100, 0.3), (10, 1.0)]:
        radii = np.array([0.0, 3.0, 8.0])
        numeric = allen_cahn_profile(0.0, radii, dim=dim, horizon=horizon, reaction=False)
        c = 2.0 * horizon
        exact = [math.exp(log_expectation(lambda q: -np.log(2.0 + 0.4 * c * q), dim, r * r / c)) for r in radii]
        np.testing.assert_allclose(numeric, exact, rtol=1e-6)


def _cn_line(values, h, dt, steps, react):
    """Crank–Nicolson + Strang on a uniform line for w_s = w_xx + reaction; the end nodes are Dirichlet
    nodes that evolve by the reaction only."""
    m = values.size - 2
    k = 0.5 * dt / h ** 2
    ab = np.zeros((3, m))
    ab[0, 1:], ab[1, :], ab[2, :-1] = -k, 1.0 + 2.0 * k, -k
    w = values.copy()
    for _ in range(steps):
        w = react(w, 0.5 * dt)
        rhs = w[1:-1] + k * (w[2:] - 2.0 * w[1:-1] + w[:-2])
        rhs[0] += k * w[0]
        rhs[-1] += k * w[-1]
        w = np.concatenate([[w[0]], solve_banded((1, 1), ab, rhs), [w[-1]]])
        w = react(w, 0.5 * dt)
    return w


def _line_d1(horizon, half_width, n, steps):
    x = np.linspace(-half_width, half_width, 2 * n + 1)
    w = _cn_line(allen_cahn_terminal(x), x[1] - x[0], horizon / steps, steps, reaction_flow)
    return x[n:], w[n:]


def _w_form_d3(horizon, radius, n, steps):
    """d = 3 through w = r v: (r v)_rr = r (v_rr + (2/r) v_r), so w_s = w_rr + r F(w/r), w(0) = 0."""
    r = np.linspace(0.0, radius, n + 1)

    def react(w, tau):
        out = w.copy()
        out[1:] = r[1:] * reaction_flow(w[1:] / r[1:], tau)
        return out

    w = _cn_line(r * allen_cahn_terminal(r), r[1], horizon / steps, steps, react)
    return r[1:], w[1:] / r[1:]


@pytest.mark.parametrize("dim", [1, 3])
def test_allen_cahn_radial_solve_against_plain_line_solves(dim):
    """d = 1: a plain Crank–Nicolson solve on the symmetric line [-12, 12]; d = 3: the 1-D equation for
    w = r v, which has no singular term. Different grids and boundaries: the radial values at r ≤ 3 agree
    to O(h²) and the gap shrinks by ~4 when the grids are refined."""
    gaps = []
    for n, steps in [(500, 250), (1000, 500)]:
        r, v = (_line_d1 if dim == 1 else _w_form_d3)(0.3, 12.0, n, steps)
        keep = (r <= 3.0 + 1e-12) & (np.arange(r.size) % (n // 20) == (0 if dim == 1 else n // 20 - 1))
        radial = allen_cahn_profile(0.0, r[keep], dim=dim, horizon=0.3, points=n, steps=steps)
        gaps.append(float(np.abs(radial - v[keep]).max()))
    assert gaps[1] < 1e-6
    assert 3.0 < gaps[0] / gaps[1] < 5.0, gaps


def test_allen_cahn_at_horizon_is_terminal_and_flow_is_exact():
    assert allen_cahn_value(0.3, 2.0, dim=100, horizon=0.3) == pytest.approx(1.0 / (2.0 + 0.4 * 4.0), rel=1e-12)
    # the reaction flow solves v' = v - v³ (compare with a fine ODE solve)
    sol = integrate.solve_ivp(lambda s, v: v - v ** 3, (0.0, 0.7), [0.3], rtol=1e-12, atol=1e-14)
    assert float(reaction_flow(np.array(0.3), 0.7)) == pytest.approx(sol.y[0, -1], rel=1e-10)


# ------------------------------------------------------------------------------------------------
# Bounds and closed forms (references.md §3, §4, §9)
# ------------------------------------------------------------------------------------------------

def test_default_risk_bounds_reference():
    lower, upper = default_risk_bounds()
    assert lower == pytest.approx(55.735, abs=1e-3)
    assert upper == pytest.approx(59.181, abs=1e-3)
    assert lower < 57.300 < upper      # the published multilevel-Picard value


def test_default_risk_bounds_against_feynman_kac_on_the_linear_problems():
    x0 = (90.0, 95.0, 100.0, 105.0, 110.0)
    params = SimpleNamespace(**{**DEFAULT_RISK_DEFAULTS, "dim": 5, "x0": x0})
    lower, upper = default_risk_bounds(params)
    p = params
    for gamma, bound in ((p.gamma_h, lower), (p.gamma_l, upper)):
        rate = (1.0 - p.delta) * gamma + p.R
        problem = LinearGBM(5, p.horizon, x0, p.mu_bar, p.sigma_bar, rate, "min")
        estimate = feynman_kac(problem, samples=100_000, steps=1, seed=11)   # exact GBM step
        assert within(estimate, bound), (estimate, bound)


def test_diff_rates_lower_bound_reference():
    prices = diff_rates_linear_prices()
    assert diff_rates_lower_bound() == pytest.approx(21.0932, abs=1e-4)
    assert prices["r_b"] == diff_rates_lower_bound() > prices["r_l"]
    assert diff_rates_lower_bound() < 21.299       # the published multilevel-Picard value


def test_diff_rates_linear_prices_against_feynman_kac():
    params = SimpleNamespace(**{**DIFF_RATES_DEFAULTS, "dim": 5, "x0": (100.0, 110.0, 105.0, 95.0, 120.0)})
    prices = diff_rates_linear_prices(params)
    for key in ("r_l", "r_b"):
        rate = getattr(params, key)
        problem = LinearGBM(5, params.horizon, params.x0, rate, params.sigma_bar, rate, "max_spread")
        estimate = feynman_kac(problem, samples=100_000, steps=1, seed=5)
        assert within(estimate, prices[key]), (key, estimate, prices[key])


def test_black_scholes_and_geometric_basket_closed_forms():
    assert black_scholes_call(100.0, 100.0, 0.05, 0.2, 1.0) == pytest.approx(10.450584, abs=5e-7)
    assert geometric_basket_call(0.0, 100.0, dim=100, strike=100.0, r=0.05, sigma=0.2, rho=0.0,
                                 horizon=1.0) == pytest.approx(2.971854, abs=5e-7)
    # d = 1 is Black–Scholes whatever ρ; ρ = 1 makes every coordinate the same asset
    for rho in (0.0, 0.7):
        assert geometric_basket_call(0.25, [90.0], strike=100.0, r=0.03, sigma=0.3, rho=rho, horizon=1.0) == \
            pytest.approx(black_scholes_call(90.0, 100.0, 0.03, 0.3, 0.75), rel=1e-13)
    assert geometric_basket_call(0.0, 80.0, dim=7, strike=100.0, r=0.03, sigma=0.3, rho=1.0, horizon=2.0) == \
        pytest.approx(black_scholes_call(80.0, 100.0, 0.03, 0.3, 2.0), rel=1e-12)


def test_geometric_basket_against_feynman_kac_correlated():
    x0 = (95.0, 100.0, 108.0)
    problem = CorrelatedBasket(3, 1.0, x0, r=0.05, sigma=0.25, rho=0.5, strike=100.0)
    exact = geometric_basket_call(0.0, x0, strike=100.0, r=0.05, sigma=0.25, rho=0.5, horizon=1.0)
    estimate = feynman_kac(problem, samples=200_000, steps=2, seed=3)
    assert within(estimate, exact), (estimate, exact)
    # and from an interior point (t, x)
    exact = geometric_basket_call(0.4, [110.0, 90.0, 100.0], strike=100.0, r=0.05, sigma=0.25, rho=0.5,
                                  horizon=1.0)
    estimate = feynman_kac(problem, samples=100_000, steps=1, seed=4, t=0.4, x=[110.0, 90.0, 100.0])
    assert within(estimate, exact), (estimate, exact)


# ------------------------------------------------------------------------------------------------
# Feynman–Kac Monte Carlo
# ------------------------------------------------------------------------------------------------

def test_feynman_kac_heat_equation():
    """references.md §10: E|x + s W_T|² = |x|² + s² d T."""
    problem = Heat(dim=5, horizon=1.0, x0=(0.5, -1.0, 0.0, 2.0, 0.3), s=math.sqrt(2.0))
    exact = sum(v * v for v in problem.x0) + 2.0 * 5 * 1.0
    estimate = feynman_kac(problem, samples=100_000, steps=4, seed=0)
    assert within(estimate, exact), (estimate, exact)
    assert estimate.ci_low < estimate.value < estimate.ci_high
    assert estimate.ci_high - estimate.value == pytest.approx(1.959964 * estimate.stderr, rel=1e-6)
    # same seed, same numbers; another seed, other numbers
    assert feynman_kac(problem, samples=100_000, steps=4, seed=0) == estimate
    assert feynman_kac(problem, samples=100_000, steps=4, seed=1).value != estimate.value
    # batching changes nothing in distribution: smaller batches stay within the error
    batched = feynman_kac(problem, samples=100_000, steps=4, seed=0, batch=7_000)
    assert batched.samples == 100_000 and within(batched, exact)


def test_feynman_kac_discount_and_source_terms():
    """f = a y + c|x|²: u(0, x) = e^{aT}(|x|² + s²dT) + ∫_0^T e^{as} c (|x|² + s² d s) ds."""
    a, c, s, d, horizon = -0.7, 0.4, 1.0, 3, 1.5
    x0 = (0.5, -0.2, 1.0)
    r2 = sum(v * v for v in x0)
    i0 = (math.exp(a * horizon) - 1.0) / a                                   # ∫ e^{as} ds
    i1 = (math.exp(a * horizon) * (a * horizon - 1.0) + 1.0) / (a * a)       # ∫ s e^{as} ds
    exact = math.exp(a * horizon) * (r2 + s * s * d * horizon) + c * (r2 * i0 + s * s * d * i1)
    problem = Heat(dim=d, horizon=horizon, x0=x0, s=s, a=a, c=c)
    estimate = feynman_kac(problem, samples=100_000, steps=50, seed=2)
    assert within(estimate, exact), (estimate, exact)


def test_feynman_kac_rejects_nonlinear_drivers():
    with pytest.raises(ValueError, match=r"AllenCahnLike is not linear in y"):
        feynman_kac(AllenCahnLike(dim=3, horizon=1.0, x0=0.0, s=1.0), samples=100, steps=2)
    # linear at y = 0, 1, 2 but not at the size of the payoff (Q(y) changes between 50 and 70)
    with pytest.raises(ValueError, match=r"DefaultRiskNonlinear is not linear in y"):
        feynman_kac(DefaultRiskNonlinear(5, 1.0, 100.0, 0.02, 0.2, 0.0, "min"), samples=100, steps=2)
    with pytest.raises(ValueError, match=r"BlackScholesWithZ depends on z"):
        feynman_kac(BlackScholesWithZ(5, 0.5, 100.0, 0.06, 0.2, 0.04, "max_spread"), samples=100, steps=2)


def test_feynman_kac_rejects_bad_arguments():
    problem = Heat(dim=2, horizon=1.0, x0=0.0, s=1.0)
    with pytest.raises(ValueError, match="samples"):
        feynman_kac(problem, samples=1)
    with pytest.raises(ValueError, match="t: expected"):
        feynman_kac(problem, t=1.0)
    with pytest.raises(ValueError, match="x: expected"):
        feynman_kac(problem, x=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="deepbsde.Problem"):
        feynman_kac(object())


def test_log_ive_branches_are_where_the_docstring_says():
    """The module docstring names the order where scipy's ive gives way to Debye's expansion (it once said
    40 while the code switches at 60); both branches agree with mpmath on either side of the switch."""
    import re

    mpmath = pytest.importorskip("mpmath")
    from equations.calculators import noncentral_chi2

    stated = {float(v) for v in re.findall(r"\\nu (?:<|\\ge) (\d+)", noncentral_chi2.__doc__)}
    assert stated == {noncentral_chi2._DEBYE_MIN_ORDER}
    mpmath.mp.dps = 30
    z = np.array([1e-2, 1.0, 30.0, 300.0, 3e4])
    for nu in (40.0, 45.0, 59.5, 60.0, 80.0):
        got = noncentral_chi2.log_ive(nu, z)
        exact = [float(mpmath.log(mpmath.besseli(nu, v)) - v) for v in z]
        assert np.allclose(got, exact, rtol=1e-12, atol=1e-12), (nu, got, exact)
