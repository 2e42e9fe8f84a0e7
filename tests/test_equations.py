"""One shared check over every catalogue equation, then what each equation's maths adds.

* shapes, dtypes and keyword round trip (``check_problem``) for every class at d in {2, 5} and the default;
* closed forms (and manufactured solutions of the same PDE where there is no closed form) substituted into
  the PDE by autograd: the residual vanishes to rounding, and a deliberately wrong driver (sign flipped, or
  fed ``grad u`` instead of ``z = sigma^T grad u``) makes it large;
* the exact log-normal steps of the GBM equations: deterministic values and Monte Carlo moments with a
  seeded generator;
* reference values at the defaults against ``shared/references.md`` and at other keywords against
  independent scipy quadratures and Monte Carlo;
* every bad model keyword raises ``ProblemError`` naming the field.
"""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import equations
from deepbsde.errors import ProblemError
from deepbsde.problem import Problem, Reference, check_problem
from deepbsde.residual import pde_residual
from equations import (
    CATALOGUE,
    HJBLQ,
    AllenCahn,
    BlackScholesBarenblatt,
    BurgersType,
    DefaultRisk,
    DiffRates,
    GeometricBasketCall,
    HeatEquation,
    QuadraticGradient,
    ReactionDiffusion,
)

F64 = torch.float64
GBM = (DefaultRisk, DiffRates, BlackScholesBarenblatt, GeometricBasketCall)


def _kwargs(problem: Problem) -> dict[str, object]:
    out = problem.describe()
    out.pop("name")
    return out


def _id(problem: Problem) -> str:
    extra = {k: v for k, v in _kwargs(problem).items() if k not in ("dim", "horizon", "x0", "s0")}
    default = _kwargs(type(problem)(dim=problem.dim))
    changed = ",".join(f"{k}={v:g}" for k, v in extra.items() if v != default[k])
    return f"{problem.name}-d{problem.dim}" + (f"-{changed}" if changed else "")


PROBLEMS = [cls(dim=d) for cls in CATALOGUE for d in (2, 5, 100)] + [
    BlackScholesBarenblatt(dim=5, r=0.1, sigma_max=0.3, x0=[0.5, 1.5, 2.0, 1.0, 0.7]),
    GeometricBasketCall(dim=1),
    GeometricBasketCall(dim=5, rho=0.5, strike=90.0),
    GeometricBasketCall(dim=5, rho=-0.2, sigma=0.3),
    HeatEquation(dim=5, sigma=math.sqrt(2.0)),
    HJBLQ(dim=5, lam=2.0),
    HJBLQ(dim=5, lam=2.0, pull=0.7),  # the sampling drift: drift -pull x, driver + pull x.z/sqrt 2, same PDE
    QuadraticGradient(dim=5, alpha=0.7),
    ReactionDiffusion(dim=5, kappa=-0.3),
    DefaultRisk(dim=5, R=0.03, delta=0.5),
]
SMALL = [p for p in PROBLEMS if p.dim <= 5]


def test_catalogue_lists_every_class_once() -> None:
    assert len(CATALOGUE) == 10 and len(set(CATALOGUE)) == 10
    for cls in CATALOGUE:
        assert issubclass(cls, Problem) and getattr(equations, cls.__name__) is cls
        assert cls.__doc__ and cls.__doc__.strip().splitlines()[0].strip()
        assert "Source" in cls.__doc__


# --- the shared check -----------------------------------------------------------------------------

@pytest.mark.parametrize("problem", PROBLEMS, ids=_id)
def test_shared_check(problem: Problem) -> None:
    check_problem(problem)
    check_problem(problem, dtype=torch.float32)
    # every constructor keyword is stored under its own name: rebuilding from describe() is the identity
    rebuilt = type(problem)(**_kwargs(problem))
    assert _kwargs(rebuilt) == _kwargs(problem)
    # t of shape () and (batch, 1) agree
    gen = torch.Generator().manual_seed(0)
    t, x = _points(problem, 7, gen)
    t0 = torch.tensor(0.3 * problem.horizon, dtype=F64)
    tb = t0.expand(7, 1)
    y = torch.rand(7, 1, generator=gen, dtype=F64)
    z = torch.randn(7, problem.noise_dim, generator=gen, dtype=F64) * 0.1
    for fn in (problem.drift, problem.diffusion) + ((problem.exact_solution,) if problem.has_exact_solution else ()):
        torch.testing.assert_close(fn(t0, x), fn(tb, x), rtol=1e-15, atol=0)
    torch.testing.assert_close(problem.driver(t0, x, y, z), problem.driver(tb, x, y, z), rtol=1e-15, atol=0)
    # sigma v and sigma^T p agree with the matrix from diffusion()
    sigma = problem.diffusion(t0, x)
    v = torch.randn(7, problem.noise_dim, generator=gen, dtype=F64)
    p = torch.randn(7, problem.dim, generator=gen, dtype=F64)
    if problem.noise_type == "diagonal":
        full = torch.diag_embed(sigma)
    else:
        full = sigma
    torch.testing.assert_close(problem.sigma_times(t0, x, v), torch.einsum("bdm,bm->bd", full, v))
    torch.testing.assert_close(problem.sigma_transpose_times(t0, x, p), torch.einsum("bdm,bd->bm", full, p))


@pytest.mark.parametrize("cls", CATALOGUE, ids=lambda c: c.__name__)
def test_default_keywords(cls: type[Problem]) -> None:
    problem = cls()
    assert problem.dim == 100
    expected_t = {AllenCahn: 0.3, DiffRates: 0.5, BurgersType: 0.2}.get(cls, 1.0)
    assert problem.horizon == expected_t
    if cls is BlackScholesBarenblatt:
        assert problem.x0 == (1.0, 0.5) * 50
    elif cls in (DefaultRisk, DiffRates, GeometricBasketCall):
        assert problem.x0 == (100.0,) * 100
    else:
        assert problem.x0 == (0.0,) * 100


# --- the PDE residual of known solutions ------------------------------------------------------------

def _points(problem: Problem, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points: t uniform on [0, 0.9 T] (batch, 1); x around x0 (multiplicatively, positive, for GBM)."""
    t = 0.9 * problem.horizon * torch.rand(n, 1, generator=gen, dtype=F64)
    x0 = problem.x0_tensor(F64)
    u = 2 * torch.rand(n, problem.dim, generator=gen, dtype=F64) - 1
    x = x0 * torch.exp(0.2 * u) if isinstance(problem, GBM) else x0 + u
    return t, x


def _solutions(problem: Problem) -> dict[str, object]:
    """Functions u(t, x) that solve the problem's PDE (not always with its terminal condition)."""
    d, T = problem.dim, problem.horizon
    out: dict[str, object] = {}
    if problem.has_exact_solution:
        out["exact"] = problem.exact_solution
    if isinstance(problem, AllenCahn):
        # the stationary kink tanh(a.x / sqrt 2), |a| = 1: u'' + u - u^3 = 0
        out["kink"] = lambda t, x: torch.tanh(x.sum(1, keepdim=True) / math.sqrt(2 * d)) + 0 * t
    if isinstance(problem, HJBLQ):
        lam = problem.lam
        # Cole-Hopf of the heat solution w = |x|^2 + 2d(T - t) + 1 of w_t + Laplace w = 0
        out["cole-hopf"] = lambda t, x: -torch.log((x * x).sum(1, keepdim=True) + 2 * d * (T - t) + 1) / lam
    # (Manufactured solutions are kept nonlinear in x: pde_residual needs a Hessian that depends on x.)
    w = torch.linspace(0.5, 1.5, d, dtype=F64)
    w = w / (100 * w.sum())  # sum_i w_i x_i^2 is about 100 at x = 100
    if isinstance(problem, DefaultRisk):
        # where Q is constant the PDE is linear: u = c (w.x^2) exp((sigma^2 + 2 mu - k)(T - t)),
        # k = (1 - delta) gamma + R; c keeps u below v_h (Q = gamma_h) or above v_l (Q = gamma_l)
        for name, gamma, c in (("quadratic, Q = gamma_h", problem.gamma_h, 0.25),
                               ("quadratic, Q = gamma_l", problem.gamma_l, 1.5)):
            rate = problem.sigma_bar ** 2 + 2 * problem.mu_bar - (1 - problem.delta) * gamma - problem.R
            out[name] = (lambda t, x, c=c, rate=rate:
                         c * (x * x * w).sum(1, keepdim=True) * torch.exp(rate * (T - t)))
    if isinstance(problem, DiffRates):
        # Black-Scholes at rate r solves u = e^{(sigma^2 + r)(T-t)} (w.x^2) - K e^{-r(T-t)}. With K > 0,
        # x.grad u > u: the borrowing regime (rate r_b); with the signs flipped, x.grad u < u: lending (r_l)
        s2, r_b, r_l = problem.sigma_bar ** 2, problem.r_b, problem.r_l
        out["borrowing"] = lambda t, x: (0.3 * (x * x * w).sum(1, keepdim=True) * torch.exp((s2 + r_b) * (T - t))
                                         - 20 * torch.exp(-r_b * (T - t)))
        out["lending"] = lambda t, x: (20 * torch.exp(-r_l * (T - t))
                                       - 0.3 * (x * x * w).sum(1, keepdim=True) * torch.exp((s2 + r_l) * (T - t)))
    return out


SOLUTION_CASES = [(p, name) for p in PROBLEMS for name in _solutions(p)]


def _residual(problem: Problem, u, n: int = 64, seed: int = 1) -> tuple[float, float]:
    """max |R[u]| at n random points, and the scale 1 + max |u| it is measured against."""
    gen = torch.Generator().manual_seed(seed)
    t, x = _points(problem, n, gen)
    res = pde_residual(problem, u, t, x).detach()
    assert res.shape == (n, 1) and res.dtype == F64
    return float(res.abs().max()), 1.0 + float(u(t, x).detach().abs().max())


@pytest.mark.parametrize("problem, name", SOLUTION_CASES, ids=lambda v: _id(v) if isinstance(v, Problem) else v)
def test_known_solution_has_zero_residual(problem: Problem, name: str) -> None:
    residual, scale = _residual(problem, _solutions(problem)[name])
    assert residual <= 1e-9 * scale, f"{name}: max |residual| {residual:.3e} at scale {scale:.3e}"


def _wrong(problem: Problem, how: str) -> Problem:
    """The same problem with a deliberately wrong driver."""
    cls = type(problem)
    if how == "sign":
        def driver(self, t, x, y, z):
            return -cls.driver(self, t, x, y, z)
    else:  # fed grad u where z = sigma^T grad u is expected
        def driver(self, t, x, y, z):
            return cls.driver(self, t, x, y, z / self.diffusion(t, x))
    return type(f"Wrong{cls.__name__}", (cls,), {"driver": driver})(**_kwargs(problem))


def _driver_matters(problem: Problem, u) -> bool:
    gen = torch.Generator().manual_seed(1)
    t, x = _points(problem, 64, gen)
    x.requires_grad_(True)
    value = u(t, x)
    grad = torch.autograd.grad(value.sum(), x)[0]
    f = problem.driver(t, x, value, problem.sigma_transpose_times(t, x, grad))
    return float(f.detach().abs().max()) > 1e-3


SIGN_CASES = [(p, n) for p, n in SOLUTION_CASES if _driver_matters(p, _solutions(p)[n])]
Z_CASES = [(p, n) for p, n in SOLUTION_CASES
           if isinstance(p, (BurgersType, BlackScholesBarenblatt, HJBLQ, DiffRates))]


def test_wrong_driver_cases_cover_the_catalogue() -> None:
    covered = {type(p) for p, _ in SIGN_CASES}
    # the heat equation has f = 0 and the reaction-diffusion driver vanishes on its solution
    assert covered == set(CATALOGUE) - {HeatEquation, ReactionDiffusion}
    assert {type(p) for p, _ in Z_CASES} == {BurgersType, BlackScholesBarenblatt, HJBLQ, DiffRates}


@pytest.mark.parametrize("problem, name", SIGN_CASES, ids=lambda v: _id(v) if isinstance(v, Problem) else v)
def test_flipped_driver_sign_is_caught(problem: Problem, name: str) -> None:
    residual, scale = _residual(_wrong(problem, "sign"), _solutions(problem)[name])
    assert residual > 1e-4 * scale


@pytest.mark.parametrize("problem, name", Z_CASES, ids=lambda v: _id(v) if isinstance(v, Problem) else v)
def test_grad_u_instead_of_z_is_caught(problem: Problem, name: str) -> None:
    residual, scale = _residual(_wrong(problem, "grad"), _solutions(problem)[name])
    assert residual > 1e-4 * scale


@pytest.mark.parametrize("problem", [p for p in SMALL if p.has_exact_solution], ids=_id)
def test_perturbed_solution_is_caught(problem: Problem) -> None:
    T = problem.horizon
    residual, scale = _residual(problem, lambda t, x: problem.exact_solution(t, x) + 0.1 * (T - t))
    assert residual > 1e-3 * scale


@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p.has_exact_solution], ids=_id)
def test_exact_solution_meets_terminal_condition(problem: Problem) -> None:
    gen = torch.Generator().manual_seed(2)
    _, x = _points(problem, 64, gen)
    g = problem.terminal(x)
    T = torch.tensor(problem.horizon, dtype=F64)
    torch.testing.assert_close(problem.exact_solution(T, x), g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(problem.exact_solution(T.expand(64, 1), x), g, rtol=1e-12, atol=1e-12)


def test_basket_solution_is_smooth_up_to_maturity() -> None:
    problem = GeometricBasketCall(dim=3, rho=0.4)
    x = torch.full((4, 3), 100.0, dtype=F64, requires_grad=True)
    t = torch.full((4, 1), problem.horizon, dtype=F64)
    grad = torch.autograd.grad(problem.exact_solution(t, x).sum(), x)[0]
    assert bool(torch.isfinite(grad).all())


# --- drivers checked at single points -------------------------------------------------------------

def test_default_risk_intensity_is_piecewise_linear() -> None:
    problem = DefaultRisk(dim=2)
    y = torch.tensor([[40.0], [50.0], [60.0], [70.0], [80.0]], dtype=F64)
    q = torch.tensor([[0.2], [0.2], [0.11], [0.02], [0.02]], dtype=F64)
    torch.testing.assert_close(problem.intensity(y), q)
    x = torch.full((5, 2), 100.0, dtype=F64)
    z = torch.zeros(5, 2, dtype=F64)
    torch.testing.assert_close(problem.driver(torch.zeros((), dtype=F64), x, y, z), -(1 / 3) * q * y - 0.02 * y)


def test_diff_rates_terminal_is_a_call_spread_on_the_maximum() -> None:
    problem = DiffRates(dim=3)
    x = torch.tensor([[100.0, 110.0, 90.0], [130.0, 1.0, 2.0], [1.0, 160.0, 2.0], [200.0, 3.0, 4.0]], dtype=F64)
    torch.testing.assert_close(problem.terminal(x), torch.tensor([[0.0], [10.0], [20.0], [-20.0]], dtype=F64))


# --- exact steps of the geometric Brownian motions --------------------------------------------------

STEP_PROBLEMS = [p for p in SMALL if isinstance(p, GBM)]


def _rate_and_vol(problem: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate a = mu_i / x_i and b^2 = (sigma sigma^T)_ii / x_i^2, read from drift and diffusion."""
    t = torch.zeros((), dtype=F64)
    sigma = problem.diffusion(t, x)
    var = sigma ** 2 if problem.noise_type == "diagonal" else (sigma ** 2).sum(2)
    return problem.drift(t, x) / x, var / x ** 2


@pytest.mark.parametrize("problem", STEP_PROBLEMS, ids=_id)
def test_gbm_step_is_exact_lognormal(problem: Problem) -> None:
    dt = 0.37
    gen = torch.Generator().manual_seed(3)
    _, x = _points(problem, 1, gen)
    a, b2 = _rate_and_vol(problem, x)
    t = torch.zeros((), dtype=F64)
    # with no noise the step is the deterministic part of the log-normal solution (Euler would give 1 + a dt)
    zero = torch.zeros(1, problem.noise_dim, dtype=F64)
    torch.testing.assert_close(problem.step(t, x, dt, zero), x * torch.exp((a - 0.5 * b2) * dt), rtol=1e-14, atol=0)
    # Monte Carlo moments: E[X] = x e^{a dt}, E[X^2] = x^2 e^{(2a + b^2) dt}, log-increments N((a - b^2/2) dt, b^2 dt)
    n = 40_000
    dw = torch.randn(n, problem.noise_dim, generator=gen, dtype=F64) * math.sqrt(dt)
    xs = problem.step(t, x.expand(n, -1), dt, dw)
    for power, expected in ((1, x * torch.exp(a * dt)), (2, x * x * torch.exp((2 * a + b2) * dt))):
        sample = xs ** power
        err = sample.std(0) / math.sqrt(n)
        assert bool(((sample.mean(0) - expected[0]).abs() < 4.5 * err).all()), (power, sample.mean(0), expected)
    logs = torch.log(xs / x)
    cov = torch.cov(logs.T).reshape(problem.dim, problem.dim)
    rho = getattr(problem, "rho", 0.0)
    expected_cov = torch.sqrt(b2.T * b2) * dt * (rho + (1 - rho) * torch.eye(problem.dim, dtype=F64))
    # standard error of a sample covariance of normals: sqrt((s_ii s_jj + s_ij^2) / n)
    se = torch.sqrt((torch.diag(expected_cov)[:, None] * torch.diag(expected_cov)[None] + expected_cov ** 2) / n)
    assert bool(((cov - expected_cov).abs() < 4.5 * se).all())


def test_basket_correlation_factor() -> None:
    for rho, m in ((0.5, 6), (0.0, 6), (-0.2, 5)):
        problem = GeometricBasketCall(dim=5, rho=rho)
        assert problem.noise_dim == m
        a = problem.factor()
        torch.testing.assert_close(a @ a.T, (1 - rho) * torch.eye(5, dtype=F64) + rho * torch.ones(5, 5, dtype=F64))


# --- reference values -------------------------------------------------------------------------------

@pytest.mark.parametrize("problem, value", [
    (BlackScholesBarenblatt(), 77.104879),
    (BurgersType(), 0.5),
    (BurgersType(dim=7), 0.5),
    (ReactionDiffusion(), 1.6),
    (QuadraticGradient(), math.sin(1.0)),
    (GeometricBasketCall(), 2.971854),
    (GeometricBasketCall(dim=1), 10.450584),
    (HeatEquation(), 100.0),
    (HeatEquation(sigma=math.sqrt(2.0)), 200.0),
], ids=lambda v: _id(v) if isinstance(v, Problem) else f"{v:g}")
def test_closed_form_references(problem: Problem, value: float) -> None:
    ref = problem.reference()
    assert ref.source == "closed form"
    assert ref.value == pytest.approx(value, abs=5e-7, rel=1e-9)


def _basket_by_quadrature(d: int, s0: float, strike: float, r: float, sigma: float, rho: float, T: float) -> float:
    """e^{-rT} E[(G_T - K)^+] with ln G_T ~ N(ln s0 + (r - sigma^2/2) T, sigma^2 T (1 + (d-1) rho) / d)."""
    mean = math.log(s0) + (r - 0.5 * sigma ** 2) * T
    sd = sigma * math.sqrt(T * (1 + (d - 1) * rho) / d)
    integrand = lambda v: (math.exp(v) - strike) * stats.norm.pdf(v, mean, sd)
    value, _ = integrate.quad(integrand, math.log(strike), mean + 12 * sd, epsabs=1e-12, epsrel=1e-12)
    return math.exp(-r * T) * value


@pytest.mark.parametrize("kwargs", [dict(dim=5, rho=0.5, strike=90.0), dict(dim=5, rho=-0.2, sigma=0.3),
                                    dict(dim=100, rho=0.3, strike=110.0, r=0.02, horizon=2.0)],
                         ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_basket_against_quadrature_and_monte_carlo(kwargs: dict) -> None:
    problem = GeometricBasketCall(**kwargs)
    expected = _basket_by_quadrature(problem.dim, problem.s0, problem.strike, problem.r, problem.sigma,
                                     problem.rho, problem.horizon)
    assert problem.reference().value == pytest.approx(expected, rel=1e-9, abs=1e-10)
    # Monte Carlo through the problem's own exact step and payoff: one step over [0, T]
    gen = torch.Generator().manual_seed(4)
    n, T = 20_000, problem.horizon
    dw = torch.randn(n, problem.noise_dim, generator=gen, dtype=F64) * math.sqrt(T)
    x = problem.step(torch.zeros((), dtype=F64), problem.x0_tensor().expand(n, -1), T, dw)
    payoff = math.exp(-problem.r * T) * problem.terminal(x)
    assert abs(float(payoff.mean()) - expected) < 4.5 * float(payoff.std()) / math.sqrt(n)


def test_allen_cahn_reference() -> None:
    ref = AllenCahn().reference()
    assert ref.value == pytest.approx(0.052781, rel=1e-5)
    assert ref.source == "radial 1-D PDE solve (Crank-Nicolson with exact reaction flow)"


def test_allen_cahn_reference_passes_the_radius(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plumbing alone, with a stand-in calculator: t = 0, radius |x0|, dim and horizon."""
    from equations import allen_cahn

    calls = []
    fake = types.ModuleType("equations.calculators.allen_cahn")
    fake.allen_cahn_value = lambda t, radius, *, dim, horizon: calls.append((t, radius, dim, horizon)) or 0.125
    monkeypatch.setitem(sys.modules, "equations.calculators.allen_cahn", fake)
    allen_cahn._value.cache_clear()
    try:
        ref = AllenCahn(dim=3, horizon=0.17, x0=[0.3, 0.0, -0.4]).reference()
        again = AllenCahn(dim=3, horizon=0.17, x0=[0.3, 0.0, -0.4]).reference()
    finally:
        allen_cahn._value.cache_clear()
    assert ref.value == again.value == 0.125
    assert len(calls) == 1  # cached
    t, radius, dim, horizon = calls[0]
    assert (t, dim, horizon) == (0.0, 3, 0.17) and radius == pytest.approx(0.5, rel=1e-15)


def _hjb_by_quadrature(dim: int, x0: float, lam: float, T: float) -> float:
    """-(1/lam) ln E[(2 / (1 + 2 T Q))^lam], Q ~ noncentral chi^2_dim(|x0|^2 / (2T)) (Cole-Hopf)."""
    nc = dim * x0 ** 2 / (2 * T)
    law = stats.ncx2(dim, nc) if nc > 0 else stats.chi2(dim)
    integrand = lambda q: (2 / (1 + 2 * T * q)) ** lam * law.pdf(q)
    mean, sd = dim + nc, math.sqrt(2 * (dim + 2 * nc))
    lo, hi = max(0.0, mean - 15 * sd), mean + 25 * sd
    head, _ = integrate.quad(integrand, 0.0, lo, epsabs=0, epsrel=1e-12, limit=200) if lo > 0 else (0.0, 0)
    body, _ = integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=200, points=[mean])
    return -math.log(head + body) / lam


def test_hjb_reference_at_defaults() -> None:
    ref = HJBLQ().reference()
    assert ref.value == pytest.approx(4.590162, rel=1e-6)
    assert ref.source == "Cole-Hopf formula, 1-D noncentral chi-square quadrature"


@pytest.mark.parametrize("kwargs", [dict(lam=2.0), dict(lam=30.0), dict(dim=10, x0=0.5, lam=2.0, horizon=0.7)],
                         ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_hjb_reference_at_other_keywords(kwargs: dict) -> None:
    problem = HJBLQ(**kwargs)
    expected = _hjb_by_quadrature(problem.dim, problem.x0[0], problem.lam, problem.horizon)
    assert problem.reference().value == pytest.approx(expected, rel=1e-7)


def _expected_min(dim: int, x0: float, mu: float, sigma: float, T: float) -> float:
    """E[min_i X^i_T] for independent GBMs from x0: the integral of P(X_T > s)^dim over s > 0."""
    m, s = math.log(x0) + (mu - 0.5 * sigma ** 2) * T, sigma * math.sqrt(T)
    survival = lambda v: stats.norm.sf((math.log(v) - m) / s) ** dim if v > 0 else 1.0
    centre = math.exp(m)
    return sum(integrate.quad(survival, lo, hi, epsabs=1e-12, epsrel=1e-12, limit=200)[0]
               for lo, hi in ((0.0, centre), (centre, centre * math.exp(15 * s))))


def _default_risk_bounds(problem: DefaultRisk) -> tuple[float, float]:
    e = _expected_min(problem.dim, problem.x0[0], problem.mu_bar, problem.sigma_bar, problem.horizon)
    rates = [(1 - problem.delta) * g + problem.R for g in (problem.gamma_h, problem.gamma_l)]
    prices = [math.exp(-k * problem.horizon) * e for k in rates]
    return min(prices), max(prices)


def test_default_risk_reference_at_defaults() -> None:
    ref = DefaultRisk().reference()
    assert ref.value == 57.300 and "published" in ref.source
    lower, upper = ref.bounds
    assert lower == pytest.approx(55.735, abs=5e-4) and upper == pytest.approx(59.181, abs=5e-4)
    assert (lower, upper) == pytest.approx(_default_risk_bounds(DefaultRisk()), rel=1e-6)
    assert lower < ref.value < upper


def test_default_risk_reference_at_other_keywords() -> None:
    problem = DefaultRisk(dim=5, R=0.03, delta=0.5)
    ref = problem.reference()
    assert ref.value is None and ref.bounds is not None
    assert ref.bounds == pytest.approx(_default_risk_bounds(problem), rel=1e-6)


def _max_call_spread(dim: int, x0: float, r: float, sigma: float, T: float) -> float:
    """e^{-rT} E[(M - 120)^+ - 2 (M - 150)^+], M the maximum of dim independent GBMs with drift r."""
    m, s = math.log(x0) + (r - 0.5 * sigma ** 2) * T, sigma * math.sqrt(T)
    exceed = lambda v: 1.0 - stats.norm.cdf((math.log(v) - m) / s) ** dim
    call = lambda k: integrate.quad(exceed, k, math.exp(m + 15 * s), epsabs=1e-12, epsrel=1e-12, limit=200)[0]
    return math.exp(-r * T) * (call(120.0) - 2 * call(150.0))


def _diff_rates_lower(problem: DiffRates) -> float:
    return max(_max_call_spread(problem.dim, problem.x0[0], rate, problem.sigma_bar, problem.horizon)
               for rate in (problem.r_l, problem.r_b))


def test_diff_rates_reference_at_defaults() -> None:
    ref = DiffRates().reference()
    assert ref.value == 21.299 and "published" in ref.source
    lower, upper = ref.bounds
    assert upper is None
    assert lower == pytest.approx(21.0932, abs=5e-5)
    assert lower == pytest.approx(_diff_rates_lower(DiffRates()), rel=1e-6)
    assert lower < ref.value


def test_diff_rates_reference_at_other_keywords() -> None:
    problem = DiffRates(dim=10, r_b=0.1, horizon=1.0)
    ref = problem.reference()
    assert ref.value is None and ref.bounds[1] is None
    assert ref.bounds[0] == pytest.approx(_diff_rates_lower(problem), rel=1e-6)


def test_reference_without_calculator_value_is_rejected() -> None:
    with pytest.raises(ProblemError):
        Reference(None, "nothing")


# --- bad keywords -----------------------------------------------------------------------------------

BAD = [
    (HJBLQ, dict(lam=0.0), "lam"), (HJBLQ, dict(lam=-1.0), "lam"), (HJBLQ, dict(lam=float("nan")), "lam"),
    (HJBLQ, dict(pull=-0.5), "pull"),
    (HJBLQ, dict(lam="1"), "lam"),
    (HeatEquation, dict(sigma=0.0), "sigma"), (HeatEquation, dict(sigma=-2.0), "sigma"),
    (BlackScholesBarenblatt, dict(sigma_max=0.0), "sigma_max"), (BlackScholesBarenblatt, dict(r=float("inf")), "r"),
    (BlackScholesBarenblatt, dict(dim=3, x0=[1.0, 2.0]), "x0"),
    (QuadraticGradient, dict(alpha=0.0), "alpha"), (QuadraticGradient, dict(alpha=True), "alpha"),
    (ReactionDiffusion, dict(kappa=float("nan")), "kappa"), (ReactionDiffusion, dict(kappa=None), "kappa"),
    (DefaultRisk, dict(delta=1.5), "delta"), (DefaultRisk, dict(delta=-0.1), "delta"),
    (DefaultRisk, dict(gamma_h=-0.2), "gamma_h"), (DefaultRisk, dict(gamma_l=-0.01), "gamma_l"),
    (DefaultRisk, dict(gamma_l=0.3), "gamma_l"),
    (DefaultRisk, dict(v_l=40.0), "v_l"), (DefaultRisk, dict(sigma_bar=0.0), "sigma_bar"),
    (DefaultRisk, dict(R=float("nan")), "R"), (DefaultRisk, dict(mu_bar="0.02"), "mu_bar"),
    (DefaultRisk, dict(v_h=float("inf")), "v_h"),
    (DefaultRisk, dict(dim=2, x0=[100.0, -1.0]), "x0"), (DefaultRisk, dict(x0=0.0), "x0"),
    (DiffRates, dict(sigma_bar=-0.2), "sigma_bar"), (DiffRates, dict(r_b=0.03), "r_b"),
    (DiffRates, dict(r_l=float("nan")), "r_l"), (DiffRates, dict(mu_bar=float("inf")), "mu_bar"),
    (DiffRates, dict(x0=-100.0), "x0"),
    (GeometricBasketCall, dict(strike=0.0), "strike"), (GeometricBasketCall, dict(strike=-90.0), "strike"),
    (GeometricBasketCall, dict(sigma=0.0), "sigma"), (GeometricBasketCall, dict(s0=-100.0), "s0"),
    (GeometricBasketCall, dict(rho=1.0), "rho"), (GeometricBasketCall, dict(rho=1.5), "rho"),
    (GeometricBasketCall, dict(dim=3, rho=-0.5), "rho"), (GeometricBasketCall, dict(rho=-0.02), "rho"),
    (GeometricBasketCall, dict(rho=float("nan")), "rho"), (GeometricBasketCall, dict(r="0.05"), "r"),
    (GeometricBasketCall, dict(dim=2, x0=[100.0, 0.0]), "x0"),
    (AllenCahn, dict(dim=0), "dim"), (BurgersType, dict(horizon=-1.0), "horizon"),
]


@pytest.mark.parametrize("cls, kwargs, field", BAD,
                         ids=[f"{c.__name__}-{k}" for c, kw, k in BAD])
def test_bad_keyword_is_rejected(cls: type[Problem], kwargs: dict, field: str) -> None:
    with pytest.raises(ProblemError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert "expected" in message and "received" in message
    value = kwargs[field]
    if not isinstance(value, list):
        assert repr(value) in message, message


def test_edge_keywords_are_accepted() -> None:
    GeometricBasketCall(dim=3, rho=-0.49)
    GeometricBasketCall(dim=1, rho=-0.5)
    DefaultRisk(delta=0.0, gamma_l=0.0)
    DefaultRisk(gamma_l=0.2, gamma_h=0.2)
    DefaultRisk(delta=1.0)
    DiffRates(r_b=0.04)
    np.testing.assert_allclose(BlackScholesBarenblatt(dim=3).x0, [1.0, 0.5, 1.0])
    assert GeometricBasketCall(dim=2, s0=90.0).x0 == (90.0, 90.0)
