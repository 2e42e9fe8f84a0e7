"""The error bar (deepbsde.estimators): unbiasedness, standard errors and coverage on closed forms, the driver
probe, the pathwise gradient, and the stopping rule and verdict of solve."""

import importlib.util
import math
import statistics
from pathlib import Path

import pytest
import torch

import deepbsde
from deepbsde.estimators import Control, DriverStructure, driver_structure, evaluate, pilot
from deepbsde.paths import make_generator
from equations import BlackScholesBarenblatt, GeometricBasketCall, HeatEquation, HJBLQ


def _example_problem():
    """The README's user-defined equation, MyHeat (u_t + ½Δu − r u = 0, u(T, x) = |x|²/d, closed form
    e^{−r(T−t)}(|x|²/d + T − t)), from examples/user_defined_equation.py: a driver linear in y."""
    path = Path(__file__).resolve().parents[1] / "examples" / "user_defined_equation.py"
    spec = importlib.util.spec_from_file_location("example_user_defined_equation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MyHeat


MyHeat = _example_problem()


def DiscountedHeat(dim=3, r=0.5):  # noqa: N802 - the problem class, with this file's defaults
    return MyHeat(dim=dim, r=r)


def exact_control(problem, factor: float, num_steps: int = 10, y0_shift: float = 0.0) -> tuple[Control, torch.Tensor]:
    """A control from the closed form with Z scaled by ``factor`` (1: the exact Z; 0.5: a poor one)."""

    def z_at(x, steps):
        batch = x.shape[0]
        t = torch.linspace(0, problem.horizon, steps + 1, dtype=x.dtype)[:-1].repeat(batch).reshape(-1, 1)
        xs = x[:, :-1].reshape(-1, problem.dim)
        with torch.enable_grad():
            xg = xs if xs.requires_grad else xs.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(problem.exact_solution(t, xg).sum(), xg, create_graph=xs.requires_grad)
        return factor * problem.sigma_transpose_times(t, xs, grad).reshape(batch, steps, -1)

    x0 = problem.x0_tensor(torch.float64).reshape(1, 1, -1).expand(1, 2, -1)
    z0 = z_at(x0, 1)[0, 0]
    ref = problem.reference().value
    return Control(ref + y0_shift, z_at, num_steps, "heun"), z0


def structure(problem):
    return pilot(problem, 10, 64, make_generator(0))[0].structure


def test_driver_probe_tells_the_catalogue_apart():
    assert driver_structure is not None
    assert structure(HeatEquation(dim=3)) == DriverStructure(False, False, False)
    assert structure(DiscountedHeat()) == DriverStructure(True, False, False)
    assert structure(BlackScholesBarenblatt(dim=3)) == DriverStructure(True, True, True)  # affine in z
    assert structure(HJBLQ(dim=3)) == DriverStructure(False, True, False)  # quadratic in z


@pytest.mark.parametrize("problem", [HeatEquation(dim=3, x0=1.0), DiscountedHeat()], ids=["heat", "discounted"])
def test_control_variate_is_unbiased_with_a_poor_control(problem):
    """With half the exact Z and a trained Y0 0.3 off, 40 independent re-estimates of 512 paths average to the
    exact u0 within 3 standard errors of their mean, and the stated standard error matches their spread. A
    driver that depends on y is handled by the Newton step (a wrong Γ would bias the discounted case)."""
    control, z0 = exact_control(problem, 0.5, y0_shift=0.3)
    st = structure(problem)
    runs = [evaluate(problem, control, z0, 512, seed, torch.float64, structure=st, refine=False, gradient=False)
            for seed in range(40)]
    values = [r.u0 for r in runs]
    mean, spread = statistics.fmean(values), statistics.stdev(values)
    stated = statistics.fmean(r.u0_se for r in runs)
    exact = problem.reference().value
    assert abs(mean - exact) < 3 * spread / math.sqrt(len(values)), (mean, exact, spread)
    assert 0.75 < stated / spread < 1.33, (stated, spread)


def test_interval_covers_on_closed_forms():
    """The 95 % interval (1.96 standard errors plus the time-step bias bound) covers the exact u0 in at least
    17 of 20 independent re-estimates with a poor control, for each of two closed forms."""
    for problem in (HeatEquation(dim=2, x0=1.0, sigma=0.7), DiscountedHeat()):
        control, z0 = exact_control(problem, 0.7)
        st = structure(problem)
        covers = 0
        for seed in range(20):
            ev = evaluate(problem, control, z0, 256, seed, torch.float64, structure=st, gradient=False)
            lo, hi = ev.interval
            covers += lo <= problem.reference().value <= hi
        assert covers >= 17, (problem, covers)


def test_exact_control_has_no_variance_left_but_the_time_step():
    """With the exact Z the mismatch is the scheme's own (O(Δt)): variance explained close to 1."""
    problem = HeatEquation(dim=2, x0=1.0)
    control, z0 = exact_control(problem, 1.0, num_steps=20)
    ev = evaluate(problem, control, z0, 2048, 0, torch.float64, structure=structure(problem))
    assert ev.variance_explained > 0.95
    assert ev.u0 == pytest.approx(problem.reference().value, rel=3e-3)


def test_pathwise_gradient_of_closed_forms():
    """∇u(0, x0) from the pathwise estimate: heat (2 x0, exact whatever Z) and the geometric basket (closed
    form), each coordinate within 4 standard errors, with standard errors below 2 % of the value."""
    heat = HeatEquation(dim=3, x0=[0.5, -1.0, 1.5], sigma=0.7)
    control, z0 = exact_control(heat, 0.5)
    ev = evaluate(heat, control, z0, 2048, 1, torch.float64, structure=structure(heat))
    exact = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    got, se = torch.tensor(ev.grad_u0), torch.tensor(ev.grad_u0_se)
    assert bool(((got - exact).abs() <= 4 * se + 1e-9).all()), (got, se)

    basket = GeometricBasketCall(dim=3, rho=0.5, strike=95.0)
    control, z0 = exact_control(basket, 1.0)
    ev = evaluate(basket, control, z0, 4096, 2, torch.float64, structure=structure(basket))
    x0 = basket.x0_tensor().unsqueeze(0).requires_grad_(True)
    (exact,) = torch.autograd.grad(basket.exact_solution(torch.zeros(1, 1, dtype=torch.float64), x0).sum(), x0)
    got, se = torch.tensor(ev.grad_u0), torch.tensor(ev.grad_u0_se)
    assert bool(((got - exact[0]).abs() <= 4 * se + 1e-6).all()), (got, exact, se)
    assert bool((se < 0.02 * exact[0].abs()).all())
    # the likelihood-ratio cross-check agrees with the pathwise mean
    assert abs(ev.grad_lr_mean - float(got.mean())) < 4 * ev.grad_lr_mean_se + 4 * float(se.max())


def test_affine_driver_is_absorbed_and_quadratic_one_bounded():
    """Black–Scholes–Barenblatt (f affine in z): paths under the Girsanov drift, no control bias and an
    estimate that stays unbiased with a poor control. HJB (quadratic in z): a nonzero control bias bound."""
    bsb = BlackScholesBarenblatt(dim=2)
    control, z0 = exact_control(bsb, 0.5, num_steps=20)
    ev = evaluate(bsb, control, z0, 4096, 3, torch.float64, structure=structure(bsb), gradient=False)
    assert ev.control_bias < 1e-12 * ev.u0  # linear in y: the curvature term is rounding only
    lo, hi = ev.interval
    assert lo <= bsb.reference().value <= hi, (ev.interval, bsb.reference().value)

    hjb = HJBLQ(dim=2)
    z_zero = Control(4.0, lambda x, s: torch.zeros(x.shape[0], s, 2, dtype=x.dtype), 10, "heun")
    ev = evaluate(hjb, z_zero, torch.zeros(2, dtype=torch.float64), 4096, 0, torch.float64, structure=structure(hjb),
                  gradient=False)
    # Z = 0: the driver's slope vanishes on the paths, its curvature (λ) does not: the second-order term
    # keeps the interval honest (the re-estimate is E g(X_T), above u by about λ/2 E∫|Z*|² dt)
    lo, hi = ev.interval
    assert ev.control_bias > 0.0 and lo <= hjb.reference().value <= hi, (ev.interval, hjb.reference().value)
    assert ev.u0 - hjb.reference().value > 3 * ev.u0_se  # the re-estimate alone is biased: the bound is needed
    poor = Control(4.0, lambda x, s: 0.3 * torch.ones(x.shape[0], s, 2, dtype=x.dtype), 10, "heun")
    ev = evaluate(hjb, poor, torch.full((2,), 0.3, dtype=torch.float64), 1024, 0, torch.float64,
                  structure=structure(hjb), gradient=False)
    assert ev.control_bias > 0.0


# --- through solve -------------------------------------------------------------------------------------

def test_tolerance_stop_fires_and_budget_says_not_reached():
    problem = HeatEquation(dim=2, x0=1.0)
    quick = dict(iterations=2000, batch_size=64, log_every=50, eval_paths=4096)
    loose = deepbsde.solve(problem, train=dict(quick, tolerance=0.02), seed=0, out=False, progress=False)
    assert loose.extra["stopped_by"] == "tolerance" and loose.iterations < 2000
    assert loose.tolerance_reached and loose.verdict == "ok"
    lo, hi = loose.u0_interval
    assert (hi - lo) / 2 <= 0.02 * abs(loose.u0)
    strict = deepbsde.solve(problem, train=dict(quick, iterations=150, tolerance=1e-6), seed=0, out=False,
                            progress=False)
    assert strict.extra["stopped_by"] == "budget" and strict.iterations == 150
    assert strict.tolerance_reached is False and strict.verdict == "check"
    assert strict.verdict_reason.startswith("tolerance not reached") and strict.warnings[-1] == strict.verdict_reason
    summary = strict.summary()
    assert summary["tolerance_reached"] is False and summary["verdict"] == "check"


def test_defaults_one_seed_one_answer():
    """solve(problem) with no settings at all: the same seed gives the same history, u0 and interval."""
    problem = HeatEquation(dim=2, x0=1.0)
    train = dict(iterations=300, eval_paths=1024)
    a, b = (deepbsde.solve(problem, train=train, seed=7, out=False, progress=False) for _ in range(2))
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    assert a.u0 == b.u0 and a.u0_interval == b.u0_interval and a.grad_u0 == b.grad_u0


def test_no_settings_solve_is_right_with_an_error_bar():
    """The README's promise: a user problem, no settings: the answer within its interval, and the interval
    within 1 %."""
    problem = DiscountedHeat(dim=5, r=0.05)
    sol = deepbsde.solve(problem, out=False, progress=False)
    lo, hi = sol.u0_interval
    assert lo <= problem.reference().value <= hi
    assert (hi - lo) / 2 < 0.01 * abs(sol.u0)
    assert sol.verdict in ("ok", "check") and sol.grad_u0_stderr


def test_problem_too_large_for_memory_is_refused(capsys):
    """A dimension whose run cannot fit: exit 2 with the estimate and what the machine has, before training."""
    from deepbsde.cli import main

    code = main(["solve", "--equation", "HeatEquation", "--set", "equation.dim=2000000", "--out", "unused-run"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "needs about" in err and "available" in err and "Traceback" not in err


def test_memory_estimate_grows_with_the_run():
    method = deepbsde.DeepBSDE()
    small = method.memory_estimate(HeatEquation(dim=10), 256, 1024, torch.float32)
    large = method.memory_estimate(HeatEquation(dim=1000), 256, 1024, torch.float32)
    assert 0 < small < large


def test_sampling_drift_solves_the_same_pde():
    """DeepBSDE(sampling_drift=κ) on a problem that has no such keyword: the driver gains (σ⁻¹b)·z with
    b = −κ(x − x0), the paths are pulled towards x0, and the answer is the same closed form within its interval."""
    from deepbsde.drift import DriftedProblem, pull_towards_x0

    problem = HeatEquation(dim=3, x0=1.0, sigma=0.7)
    view = DriftedProblem(problem, pull_towards_x0(2.0, problem.x0_tensor()))
    x = torch.full((4, 3), 2.0, dtype=torch.float64)
    z = torch.ones(4, 3, dtype=torch.float64)
    t = torch.zeros((), dtype=torch.float64)
    # b = -2 (x - 1) = -2 per coordinate, σ = 0.7: f - (b/σ)·z = 0 + 3 * 2 / 0.7
    assert torch.allclose(view.driver(t, x, torch.zeros(4, 1, dtype=torch.float64), z),
                          torch.full((4, 1), 6 / 0.7, dtype=torch.float64))
    method = deepbsde.DeepBSDE(sampling_drift=2.0)
    sol = deepbsde.solve(problem, method, train=dict(iterations=400, eval_paths=4096, tolerance=0), seed=0,
                         out=False, progress=False)
    lo, hi = sol.u0_interval
    assert lo <= problem.reference().value <= hi and (hi - lo) / 2 < 0.01 * sol.u0
    with pytest.raises(deepbsde.ConfigError, match="sampling_drift"):
        deepbsde.DeepBSDE(sampling_drift=-1.0)


def test_controlled_paths_follow_the_feedback_control():
    """For HJB's f = −λ|z|²/2 the control's measure has β = ∂f/∂z = −λ Ẑ: the drift −λσẐ of the feedback
    control, and the driver f − β·z, which at z = Ẑ is λ|Ẑ|²/2."""
    from deepbsde.methods.deep_bsde import controlled_paths

    problem = HJBLQ(dim=3, lam=2.0)
    zhat = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    dw = torch.zeros(5, 4, 3, dtype=torch.float64)
    x, beta = controlled_paths(problem, lambda n, x, s: zhat.expand(x.shape[0], 3), 0.0, dw, 0.25)
    assert torch.allclose(beta, -2.0 * zhat.expand(5, 4, 3))
    # no noise: X moves by σβΔt = √2 (−λ Ẑ) Δt per step
    assert torch.allclose(x[:, -1], (4 * 0.25 * math.sqrt(2.0) * -2.0 * zhat).expand(5, 3))


def test_controlled_paths_of_a_driver_free_of_z_are_the_plain_paths():
    """A driver that does not depend on z (heat: f = 0) has no graph to differentiate: the controlled paths are
    the plain ones with β = 0 (``control_measure="controlled"`` on the heat equation raised a RuntimeError)."""
    from deepbsde.estimators import forward_paths
    from deepbsde.methods.deep_bsde import controlled_paths

    problem = HeatEquation(dim=3)
    dw = torch.randn(6, 4, 3, generator=make_generator(0), dtype=torch.float64) * 0.5
    x, beta = controlled_paths(problem, lambda n, x, s: torch.ones(x.shape[0], 3, dtype=x.dtype), 1.0, dw, 0.25)
    assert torch.equal(beta, torch.zeros_like(beta))
    torch.testing.assert_close(x, forward_paths(problem, dw, 0.25))


def test_control_measure_makes_hard_hjb_honest():
    """HJB at λ = 5, d = 4, a short budget: under the plain measure the re-estimate carries a first-order
    control bias; under the control's measure (the default for drivers nonlinear in z) the error is smaller
    and the interval holds the reference."""
    problem = HJBLQ(dim=4, lam=5.0)
    train = dict(iterations=600, eval_paths=4096, tolerance=0)
    ref = problem.reference().value
    plain = deepbsde.solve(problem, deepbsde.DeepBSDE(control_measure="plain"), train=train, out=False, progress=False)
    auto = deepbsde.solve(problem, train=train, out=False, progress=False)
    assert abs(auto.u0 - ref) < abs(plain.u0 - ref), (auto.u0, plain.u0, ref)
    lo, hi = auto.u0_interval
    assert lo <= ref <= hi, (auto.u0_interval, ref)


def test_rare_payoff_gets_a_noise_shift_and_an_unbiased_weighted_estimate():
    """A call far out of the money (d = 4, K = 150: about 1e-4 of the paths pay) triggers the cross-entropy
    noise shift, an at-the-money one and the heat equation do not. Re-estimates under the shift, weighted by the
    likelihood ratio, with a poor control (half the exact Z) average to the closed form within 3 standard errors of
    their mean, their stated standard error matches their spread, and it is a small fraction of the plain ones'."""
    from deepbsde.drift import rare_event_shift

    far = GeometricBasketCall(dim=4, strike=150.0)
    found = rare_event_shift(far, 10, make_generator(3))
    assert found is not None and found[1]["shifted_share"] > 50 * found[1]["share"], found
    assert rare_event_shift(GeometricBasketCall(dim=4), 10, make_generator(3)) is None
    assert rare_event_shift(HeatEquation(dim=4), 10, make_generator(3)) is None
    control, z0 = exact_control(far, 0.5)
    shifted = Control(control.y0, control.z_at, control.num_steps, control.scheme, noise_shift=found[0])
    st = structure(far)
    spreads = {}
    for name, ctrl in (("plain", control), ("shifted", shifted)):
        runs = [evaluate(far, ctrl, z0, 2048, seed, torch.float64, structure=st, refine=False, gradient=False)
                for seed in range(20)]
        values = [r.u0 for r in runs]
        spreads[name] = statistics.stdev(values)
    mean, spread = statistics.fmean(values), spreads["shifted"]
    stated = statistics.fmean(r.u0_se for r in runs)
    exact = far.reference().value
    assert abs(mean - exact) < 3 * spread / math.sqrt(len(values)), (mean, exact, spread)
    assert 0.7 < stated / spread < 1.4, (stated, spread)
    assert spreads["shifted"] < 0.25 * spreads["plain"], spreads


def test_gradient_under_the_control_measure_is_second_order_in_the_control():
    """BurgersType (driver (y - k) Σz, nonlinear in (y, z)) with a control 20 % off the exact Z: the pathwise
    gradient on the plain paths is about 3 % off (first order in the control's error) and its interval misses;
    under the measure the control induces it is within 0.5 %, and its interval holds the closed form
    ∇u = u(1 - u)/d on at least 90 % of coordinates over 5 seeds."""
    from equations import BurgersType

    problem = BurgersType(dim=4)
    control, z0 = exact_control(problem, 0.8, num_steps=10)

    def z_step(n, x, steps):
        t = torch.full((x.shape[0], 1), n * problem.horizon / steps, dtype=x.dtype)
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(problem.exact_solution(t, xg).sum(), xg, create_graph=x.requires_grad)
        return 0.8 * problem.sigma_transpose_times(t, x, grad)

    controlled = Control(control.y0, control.z_at, 10, "heun", None, z_step)
    st = structure(problem)
    exact = 0.25 / problem.dim
    errors = {"plain": [], "controlled": []}
    covered = total = 0
    for seed in range(5):
        for name, ctrl in (("plain", control), ("controlled", controlled)):
            ev = evaluate(problem, ctrl, z0, 1024, seed, torch.float64, structure=st)
            errors[name].append(statistics.fmean(ev.grad_u0) / exact - 1)
            if name == "controlled":
                covered += sum(abs(v - exact) <= 1.96 * s for v, s in zip(ev.grad_u0, ev.grad_u0_se))
                total += len(ev.grad_u0)
    plain, ctrl_err = abs(statistics.fmean(errors["plain"])), abs(statistics.fmean(errors["controlled"]))
    assert plain > 0.015, errors
    assert ctrl_err < 0.005, errors
    assert covered >= 0.9 * total, (covered, total)


def test_mismatch_ratio_tells_the_time_grid_from_the_control_and_steers_the_verdict():
    """Heat with g = |x|^2: with the exact Z the terminal mismatch is the grid's alone (sum of
    s^2(|dW|^2 - d dt), mean square 2 s^4 d T dt), so it halves on the grid twice as fine; with Z = 0 it is
    g's own spread, the same on both grids. Where the control part dominates an error bar, the verdict says to
    raise num_steps only in the first case."""
    import dataclasses

    from deepbsde.solve import _verdict

    problem = HeatEquation(dim=3, x0=1.0)
    st = structure(problem)
    ratios = {}
    for factor in (1.0, 0.0):
        control, z0 = exact_control(problem, factor)
        ev = evaluate(problem, control, z0, 8192, 3, torch.float64, structure=st, refine=True, gradient=False)
        ratios[factor] = ev.mismatch_ratio
        poor = dataclasses.replace(ev, control_bias=0.5 * abs(ev.u0))  # the control's part dominates
        verdict, reason = _verdict(poor, poor.u0, 2e-3, [], "budget")
        assert verdict == "check" and "control one" in reason
        assert ("method.num_steps" in reason) == (factor == 1.0), (factor, ev.mismatch_ratio, reason)
    assert 0.4 < ratios[1.0] < 0.6, ratios
    assert ratios[0.0] > 0.95, ratios


def test_curvature_probe_finds_a_kink_along_the_sum_of_z():
    """A driver a max(0, sum_i z_i) (different rates' kink) bends only along (1, ..., 1)/sqrt(d): the probe
    must see the full bend a sqrt(d) / h there, not the ~a / h that random directions in d = 100 meet; and an
    isotropic driver (HJB's -lam |z|^2 / 2) keeps its curvature lam."""
    from deepbsde.estimators import _curvature

    d, a, h = 100, 0.02, 1.0

    class Kink:
        def driver(self, t, x, y, z):
            return a * torch.clamp(z.sum(1, keepdim=True), min=0.0)

    class Quadratic:
        def driver(self, t, x, y, z):
            return -2.5 * z.square().sum(1, keepdim=True)

    gen = torch.Generator().manual_seed(0)
    p = 32
    z = 1e-3 * torch.randn(p, d, generator=gen, dtype=torch.float64)
    pts = (torch.zeros(p, 1, dtype=torch.float64), torch.zeros(p, d, dtype=torch.float64),
           torch.zeros(p, 1, dtype=torch.float64), z)
    kink = _curvature(Kink(), pts, h)
    assert kink > 0.9 * a * math.sqrt(d) / h, kink
    assert abs(_curvature(Quadratic(), pts, h) - 5.0) < 1e-6
