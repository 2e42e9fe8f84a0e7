"""solve(): bad input is refused before training with messages naming the field, what was received and
what was expected; the run folder is complete; a diverging run never reports a number."""

import csv
import json
import math

import pytest
import torch

import deepbsde
from deepbsde import ConfigError, DivergenceError, Problem, ProblemError, TrainConfig
from equations import HeatEquation

TINY = TrainConfig(iterations=20, log_every=10, lr_values=(1e-2,))
METHOD = deepbsde.DeepBSDE(num_steps=4, hidden=(8, 8))


class Simple(Problem):
    def drift(self, t, x):
        return torch.zeros_like(x)

    def diffusion(self, t, x):
        return torch.ones_like(x)

    def driver(self, t, x, y, z):
        return torch.zeros_like(y)

    def terminal(self, x):
        return (x * x).sum(1, keepdim=True)


class BadDriver(Simple):
    def driver(self, t, x, y, z):
        return torch.zeros(x.shape[0], dtype=x.dtype)  # (batch,) instead of (batch, 1)


class BadTerminal(Simple):
    def terminal(self, x):
        return (x * x)  # (batch, d) instead of (batch, 1)


class BadDrift(Simple):
    def drift(self, t, x):
        return torch.zeros(x.shape[0], 1, dtype=x.dtype)


class NotATensor(Simple):
    def terminal(self, x):
        return 1.0


class GeneralWrongShape(Simple):
    noise_type = "general"

    def diffusion(self, t, x):
        return torch.ones_like(x)  # general noise must be (batch, d, m)


@pytest.mark.parametrize("cls, words", [
    (BadDriver, ["driver", "(3, 1)", "(3,)"]),
    (BadTerminal, ["terminal", "(3, 1)", "(3, 2)"]),
    (BadDrift, ["drift", "(3, 2)", "(3, 1)"]),
    (NotATensor, ["terminal", "tensor", "float"]),
    (GeneralWrongShape, ["diffusion", "(3, 2, 2)", "(3, 2)"]),
])
def test_user_function_with_wrong_shape_is_refused_before_training(cls, words):
    with pytest.raises(ProblemError) as err:
        deepbsde.solve(cls(2, 1.0, 0.0), METHOD, train=TINY, out=False, progress=False)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


@pytest.mark.parametrize("kwargs, words", [
    (dict(dim=2, horizon=0.0, x0=0.0), ["horizon", "0.0", "positive"]),
    (dict(dim=2, horizon=-1.0, x0=0.0), ["horizon", "-1.0"]),
    (dict(dim=2, horizon=float("inf"), x0=0.0), ["horizon", "inf"]),
    (dict(dim=2, horizon=1.0, x0=float("nan")), ["x0", "nan", "finite"]),
    (dict(dim=2, horizon=1.0, x0=[0.0, float("inf")]), ["x0", "inf", "coordinate 1"]),
    (dict(dim=2, horizon=1.0, x0=[0.0, 1.0, 2.0]), ["x0", "length 3", "dim=2"]),
    (dict(dim=0, horizon=1.0, x0=0.0), ["dim", "positive integer", "0"]),
    (dict(dim=2.5, horizon=1.0, x0=0.0), ["dim", "2.5", "float"]),
    (dict(dim=2, horizon="1", x0=0.0), ["horizon", "'1'", "str"]),
])
def test_bad_problem_fields(kwargs, words):
    with pytest.raises(ProblemError) as err:
        Simple(**kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_cuda_requested_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="cuda.*no CUDA device"):
        deepbsde.solve(Simple(2, 1.0), METHOD, train=TINY, device="cuda", out=False)


def test_default_schedule_follows_the_budget():
    """lr_boundaries left out: the values split the second half of the budget; a budget too short for all of
    them keeps the first ones."""
    assert TrainConfig(iterations=4000).schedule == (2000, 3000)
    assert [TrainConfig(iterations=4000).lr(s) for s in (0, 2000, 2001, 3001)] == [1e-2, 1e-2, 1e-3, 1e-4]
    short = TrainConfig(iterations=1)
    assert short.schedule == (1,) and short.lr(0) == 1e-2 and short.lr(5) == 1e-3


@pytest.mark.parametrize("kwargs, words", [
    (dict(iterations=0), ["iterations", "positive integer", "0"]),
    (dict(batch_size=2.5), ["batch_size", "2.5"]),
    (dict(lr_values=(1e-2, 1e-3), lr_boundaries=()), ["lr_values", "1 values", "received 2"]),
    (dict(tolerance=float("inf")), ["tolerance", "finite positive"]),
    (dict(tolerance=-0.1), ["tolerance", "-0.1"]),
    (dict(max_seconds=float("nan")), ["max_seconds", "nan"]),
    (dict(eval_paths=1), ["eval_paths", "at least 2"]),
    (dict(lr_values=(-1.0,)), ["lr_values", "positive"]),
    (dict(lr_values=(1e-2, 1e-3), lr_boundaries=(10.5,)), ["lr_boundaries", "integers"]),
    (dict(dtype="float16"), ["dtype", "float16", "float32"]),
])
def test_bad_train_config(kwargs, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_unknown_train_key_from_mapping():
    with pytest.raises(ConfigError, match="unknown key 'iteration'.*iterations"):
        deepbsde.solve(Simple(2, 1.0), METHOD, train={"iteration": 5}, out=False)


@pytest.mark.parametrize("kwargs, words", [
    (dict(num_steps=0), ["num_steps", "positive integer"]),
    (dict(hidden=(8, -1)), ["hidden", "positive integers"]),
    (dict(y0_range=(1.0, 0.0)), ["y0_range", "low <= high"]),
    (dict(scheme="rk4"), ["scheme", "'rk4'", "heun"]),
    (dict(network="merged"), ["method.network", "'merged'", "per_step", "shared"]),
])
def test_bad_method_settings(kwargs, words):
    with pytest.raises(ConfigError) as err:
        deepbsde.DeepBSDE(**kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_bad_seed_and_method():
    with pytest.raises(ConfigError, match="seed"):
        deepbsde.solve(Simple(2, 1.0), METHOD, train=TINY, seed=-1, out=False)
    with pytest.raises(ConfigError, match="method"):
        deepbsde.solve(Simple(2, 1.0), "DeepBSDE", train=TINY, out=False)


class Exploding(Simple):
    """g(x) = sqrt(x_1): NaN as soon as a path goes negative, which happens on the first batch."""

    def terminal(self, x):
        return torch.sqrt(x[:, :1])


def test_non_finite_loss_stops_with_a_message_and_no_result(tmp_path):
    train = TrainConfig(iterations=50, log_every=5, max_rollbacks=2)
    with pytest.raises(DivergenceError) as err:
        deepbsde.solve(Exploding(2, 1.0, 1.0), METHOD, train=train, out=tmp_path / "run", progress=False)
    text = str(err.value)
    assert "non-finite" in text and "step 0" in text and "No result" in text
    assert not (tmp_path / "run" / "summary.json").exists()
    # the history written so far survives
    assert (tmp_path / "run" / "history.csv").exists()


def test_run_folder(tmp_path):
    out = tmp_path / "run"
    sol = deepbsde.solve(HeatEquation(dim=2), METHOD, train=TINY, seed=3, out=out, progress=False)
    assert sol.run_dir == out
    config = json.loads((out / "config.json").read_text())
    assert config["problem"]["name"] == "HeatEquation" and config["seed"] == 3
    assert config["method"]["num_steps"] == 4 and config["train"]["iterations"] == 20
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 10, 20]
    assert float(rows[-1]["u0"]) == pytest.approx(sol.extra["trained_u0"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("equation", "method", "dim", "u0", "grad_u0", "reference", "relative_error", "seconds",
                "iterations", "device"):
        assert key in summary
    assert summary["u0"] == sol.u0 and summary["reference"] == pytest.approx(2.0)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_solution_fields():
    sol = deepbsde.solve(HeatEquation(dim=2), METHOD, train=TINY, out=False, progress=False)
    assert math.isfinite(sol.u0) and len(sol.grad_u0) == 2
    assert sol.relative_error == pytest.approx(abs(sol.u0 - 2.0) / 2.0)
    assert sol.history.column("step") == [0, 10, 20]
    with pytest.raises(KeyError, match="expected one of"):
        sol.history.column("y0")


class ZeroSigmaAtX0(Simple):
    def diffusion(self, t, x):
        return x.clone()  # zero at x0 = 0: Z0 = σᵀ∇u says nothing about ∇u


def test_grad_u0_where_sigma_vanishes_at_x0():
    """σ(0, x0) = 0: the trained Z0 = σᵀ∇u says nothing about ∇u, and the method's own estimate says why; the
    pathwise estimate on fresh paths does not need σ⁻¹, so the solution still carries ∇u with its errors.
    Here X stays at x0 = 0 (σ = x), so u(0, x) = E|x ∏(1 + ΔW)|² and ∇u(0, 0) = 0 exactly."""
    problem = ZeroSigmaAtX0(2, 1.0, 0.0)
    sol = deepbsde.solve(problem, METHOD, train=TINY, out=False, progress=False)
    assert "not identified" in METHOD.estimate(sol.model, problem).grad_unavailable
    assert sol.grad_u0 == pytest.approx((0.0, 0.0), abs=1e-9) and len(sol.grad_u0_stderr) == 2


def test_grad_u0_unavailable_says_why():
    """Without an error bar (eval_paths too few to matter is not the point: a method with no control), the
    trained Z0 route is all there is, and it says why it cannot give ∇u."""
    problem = ZeroSigmaAtX0(2, 1.0, 0.0)

    class NoControl(deepbsde.DeepBSDE):
        def control(self, model, problem):
            return None

    sol = deepbsde.solve(problem, NoControl(num_steps=4, hidden=(8, 8)), train=TINY, out=False, progress=False)
    with pytest.raises(AttributeError, match="not identified"):
        _ = sol.grad_u0
    assert sol.summary()["grad_u0"] is None and sol.verdict == "unverified"
    assert "no error bar" in sol.warnings[-1]


class OneFactor(Problem):
    """Three coordinates driven by one Brownian motion, set the way the Problem docstring says:
    ``self.noise_dim = 1``. u = e^{-r(T-t)} (x_1 + x_2 + x_3)^2 / 3 ... closed form below."""
    noise_type = "general"

    def __init__(self, dim=3, horizon=1.0, x0=0.5, r=0.05):
        super().__init__(dim, horizon, x0)
        self.r = r
        self.noise_dim = 1
        self.b = torch.tensor([[1.0], [0.5], [-0.25]], dtype=torch.float64)

    def drift(self, t, x):
        return torch.zeros_like(x)

    def diffusion(self, t, x):
        return self.b.to(x.dtype).expand(x.shape[0], 3, 1)

    def driver(self, t, x, y, z):
        return -self.r * y

    def terminal(self, x):
        return x.sum(1, keepdim=True) ** 2 / 3

    def exact_solution(self, t, x):
        # s = x1 + x2 + x3 moves as s + 1.25 W: E[s_T^2] = s^2 + 1.25^2 (T - t)
        s = x.sum(1, keepdim=True)
        return torch.exp(-self.r * (self.horizon - t)) * (s * s + 1.5625 * (self.horizon - t)) / 3


def test_general_noise_with_fewer_factors_than_coordinates():
    """``noise_dim`` is set in ``__init__`` as the Problem docstring says (it was a read-only property, and
    that line raised AttributeError), and the solver draws and learns ``m = 1`` noise for ``d = 3``."""
    problem = OneFactor()
    assert problem.noise_dim == 1
    sol = deepbsde.solve(problem, deepbsde.DeepBSDE(num_steps=8), train=TrainConfig(iterations=300),
                         seed=0, out=False, progress=False)
    exact = float(problem.exact_solution(torch.zeros(()), problem.x0_tensor(torch.float64).reshape(1, -1)))
    lo, hi = sol.u0_interval
    assert lo <= exact <= hi and (hi - lo) / 2 < 0.02 * exact, (sol.u0, sol.u0_interval, exact)  # not a vacuous bar
    # grad u = e^{-rT} 2 s / 3 in every coordinate (s = 1.5)
    assert sol.grad_u0 is not None and len(sol.grad_u0) == 3
    exact_grad = math.exp(-0.05) * 1.0
    for g, se in zip(sol.grad_u0, sol.grad_u0_stderr):
        # within three of its stated standard errors, and the bar itself not vacuous (2048 error-bar paths here)
        assert abs(g - exact_grad) <= 3 * se and se < 0.1 * exact_grad, (sol.grad_u0, sol.grad_u0_stderr)
    with pytest.raises(ProblemError, match="noise_dim"):
        problem.noise_dim = 0


class StiffOU(Problem):
    """dX = -κX dt + dW, g = x², f = 0, stepped by Euler: u(0, x) = x² e^{-2κT} + (1 - e^{-2κT}) / (2κ).
    At κ = 2, T = 1 and 4 steps, Euler's E g(X_N) is 27 % above it, on 8 steps 11 %: a time-step part far
    above the tolerance."""

    def __init__(self, dim=1, horizon=1.0, x0=1.0, kappa=2.0):
        super().__init__(dim, horizon, x0)
        self.kappa = kappa

    def drift(self, t, x):
        return -self.kappa * x

    def diffusion(self, t, x):
        return torch.ones_like(x)

    def driver(self, t, x, y, z):
        return torch.zeros_like(y)

    def terminal(self, x):
        return x * x

    def exact_solution(self, t, x):
        decay = torch.exp(-2 * self.kappa * (self.horizon - t))
        return x * x * decay + (1 - decay) / (2 * self.kappa)


def test_a_time_step_bias_beyond_the_tolerance_refines_the_grid(tmp_path):
    """DeepBSDE.refine_grid: the first run's error bar says its time-step part is most of the error, so a
    second run on a grid 4 times as fine, warm-started, gives the answer; the first stays in grid-4/."""
    problem = StiffOU()
    exact = float(problem.exact_solution(torch.zeros(()), torch.ones(1, 1, dtype=torch.float64)))
    train = TrainConfig(iterations=200)
    out = tmp_path / "run"
    sol = deepbsde.solve(problem, deepbsde.DeepBSDE(num_steps=4), train=train, seed=0, out=out, progress=False,
                         run_config={"equation": {"name": "StiffOU"}})
    first = sol.extra["refined_from"]
    assert first["num_steps"] == 4 and first["time_step_share"] > 2e-3, first
    assert sol.method_object.num_steps == 16 and sol.method_object.refine_grid is False
    assert sol.iterations == 500  # the first run's 200 steps of 4 are 50 of 16: the floor of 500
    assert abs(sol.u0 - exact) < 0.5 * abs(first["u0"] - exact), (sol.u0, first["u0"], exact)
    lo, hi = sol.u0_interval
    assert lo <= exact <= hi, (sol.u0_interval, exact)
    # the first run's files in grid-4/, the second's in the run folder, with settings that resume it
    assert json.loads((out / "grid-4" / "summary.json").read_text())["u0"] == first["u0"]
    assert json.loads((out / "summary.json").read_text())["refined_from"]["num_steps"] == 4
    assert sol.extra["init"] == str(out / "grid-4")  # the warm start names where the first run's files are
    config = json.loads((out / "config.json").read_text())
    assert config["run_config"]["method"] == {"num_steps": 16, "refine_grid": False}
    assert config["run_config"]["train"] == {"iterations": 500}
    # refine_grid=False: one run, its answer
    plain = deepbsde.solve(problem, deepbsde.DeepBSDE(num_steps=4, refine_grid=False), train=train, seed=0,
                           out=False, progress=False)
    assert "refined_from" not in plain.extra and plain.u0 == first["u0"]


def test_refinement_scales_explicit_learning_rate_boundaries(tmp_path):
    """A config's own lr_boundaries shrink with the second run's budget (else the refined run, 500 steps
    here, would train at the first learning rate only, its boundaries at 1000 and 1500 never reached)."""
    train = TrainConfig(iterations=200, lr_values=(1e-2, 1e-3, 1e-4), lr_boundaries=(100, 150))
    sol = deepbsde.solve(StiffOU(), deepbsde.DeepBSDE(num_steps=4), train=train, seed=0, out=tmp_path / "run",
                         progress=False, run_config={"equation": {"name": "StiffOU"}})
    assert sol.extra["refined_from"]["num_steps"] == 4 and sol.iterations == 500
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["lr_boundaries"] == [250, 375]
    assert config["run_config"]["train"] == {"iterations": 500, "lr_boundaries": [250, 375]}


def test_a_refinement_that_does_not_fit_keeps_the_first_answer_with_a_warning(tmp_path, monkeypatch):
    import importlib

    from deepbsde.resources import ResourceError

    solve_module = importlib.import_module("deepbsde.solve")  # the module (the package exports the function)

    calls = []

    def check(needed, dev, what):
        calls.append(needed)
        if len(calls) > 1:  # the finer grid's check
            raise ResourceError(f"{what} needs {needed:.0f} bytes, the machine has fewer")

    monkeypatch.setattr(solve_module, "check_memory", check)
    sol = deepbsde.solve(StiffOU(), deepbsde.DeepBSDE(num_steps=4), train=TrainConfig(iterations=200), seed=0,
                         out=tmp_path / "run", progress=False)
    assert len(calls) == 2 and calls[1] > calls[0]
    assert "refined_from" not in sol.extra and "does not fit in memory" in sol.warnings[-1]
    assert "does not fit in memory" in json.loads((tmp_path / "run" / "summary.json").read_text())["warnings"][-1]
    assert not (tmp_path / "run" / "grid-4").exists()


def test_the_interval_holds_both_estimates_where_they_disagree():
    """Where the driver is nonlinear in z and the trained Y0 is further from the re-estimate than the error bar
    plus three standard errors, the interval widens to hold both (the gap plus 1.96 standard errors); where they
    agree, or the driver is affine in z, it stays as the error bar says."""
    from deepbsde.estimators import DriverStructure, Evaluation
    from deepbsde.solve import _disagreement_half_width

    def ev(structure):
        return Evaluation(u0=0.581, u0_coarse=0.58, u0_se=0.0002, grad_u0=None, grad_u0_se=None, grad_lr_mean=None,
                          grad_lr_mean_se=None, grad_time_step_bias=None, time_step_bias=0.0008,
                          time_step_se=0.0001, control_bias=1e-7, paths=1000, variance_explained=0.99,
                          trained_y0=0.574, structure=structure)

    nonlinear = ev(DriverStructure(True, True, False))
    assert nonlinear.half_width < 0.0015
    widened = _disagreement_half_width(nonlinear, 0.574)
    assert widened == pytest.approx(0.007 + 1.96 * 0.0002)
    assert nonlinear.u0 - widened <= 0.574
    assert _disagreement_half_width(nonlinear, 0.5805) is None  # within the error bar
    assert _disagreement_half_width(ev(DriverStructure(True, True, True)), 0.574) is None  # affine in z
