"""Saved solutions: ``Solution.save`` / ``deepbsde.load`` round trips bit for bit, refuse another problem, and
``Solution.u`` / ``grad_u`` at any points (NumPy in NumPy out, torch in torch out); ``deepbsde eval``."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deepbsde
from deepbsde import PINN, CheckpointError, ConfigError, DeepBSDE, load, solve
from deepbsde.cli import main
from deepbsde.saved import MODEL_FILE, SOLUTION_FILE
from equations import BurgersType, HeatEquation

ROOT = Path(__file__).resolve().parents[1]
TRAIN = dict(iterations=20, log_every=10, batch_size=32, valid_size=32, dtype="float64")


@pytest.fixture(scope="module")
def pinn_run(tmp_path_factory):
    problem = HeatEquation(dim=3, x0=0.5)
    out = tmp_path_factory.mktemp("pinn") / "run"
    sol = solve(problem, PINN(hidden=(8, 8), eval_points=64, path_steps=5), train=TRAIN, seed=3, device="cpu",
                out=out, progress=False)
    return problem, sol, out


@pytest.fixture(scope="module")
def bsde_run(tmp_path_factory):
    problem = HeatEquation(dim=3)
    out = tmp_path_factory.mktemp("bsde") / "run"
    sol = solve(problem, DeepBSDE(num_steps=4, hidden=(8, 8)), train=dict(TRAIN, dtype="float32"), seed=5,
                device="cpu", out=out, progress=False)
    return problem, sol, out


def _same_fields(a, b) -> None:
    """Every compared field equal (NaN equal to NaN: the history's first train_loss is NaN)."""
    for f in dataclasses.fields(a):
        if f.compare:
            left = json.dumps(getattr(a, f.name), default=str, sort_keys=True)
            right = json.dumps(getattr(b, f.name), default=str, sort_keys=True)
            assert left == right, f.name


POINTS = np.random.default_rng(0).normal(size=(7, 3))


def test_solve_saves_into_its_run_folder_and_load_is_bit_for_bit(pinn_run) -> None:
    problem, sol, out = pinn_run
    assert (out / MODEL_FILE).is_file() and (out / SOLUTION_FILE).is_file()
    loaded = load(out, problem)
    assert loaded.u0 == sol.u0 and loaded.u0_interval == sol.u0_interval and loaded.grad_u0 == sol.grad_u0
    _same_fields(loaded, sol)
    assert loaded.summary() == json.loads((out / "summary.json").read_text())
    assert not loaded.model.training
    for t in (None, 0.0, 0.4, problem.horizon):
        np.testing.assert_array_equal(loaded.u(POINTS, t=t), sol.u(POINTS, t=t))
        np.testing.assert_array_equal(loaded.grad_u(POINTS, t=t), sol.grad_u(POINTS, t=t))
    saved = sol.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # the trained value at x0 is the method's estimate there
    assert float(loaded.u(problem.x0_tensor().numpy())) == pytest.approx(sol.extra["trained_u0"], rel=1e-12)


def test_save_elsewhere_and_load_without_the_problem(pinn_run, tmp_path) -> None:
    problem, sol, _ = pinn_run
    assert sol.save(tmp_path / "saved") == tmp_path / "saved"
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [MODEL_FILE, SOLUTION_FILE]
    loaded = load(tmp_path / "saved")  # the problem rebuilt from its saved identity, the method from its keywords
    assert loaded.problem_object.describe() == problem.describe()
    assert loaded.method_object == sol.method_object
    np.testing.assert_array_equal(loaded.u(POINTS), sol.u(POINTS))
    # a loaded solution saves again, identically
    loaded.save(tmp_path / "again")
    np.testing.assert_array_equal(load(tmp_path / "again", problem).grad_u(POINTS), sol.grad_u(POINTS))


@pytest.mark.parametrize("other, words", [
    (HeatEquation(dim=4, x0=0.5), ["dim: saved 3, given 4"]),
    (HeatEquation(dim=3, x0=0.5, sigma=2.0), ["sigma: saved 1.0, given 2.0", "behaviour"]),
    (HeatEquation(dim=3, x0=0.6), ["x0"]),
    (BurgersType(dim=3, x0=0.5), ["class: saved", "BurgersType"]),
])
def test_another_problem_is_refused(pinn_run, other, words) -> None:
    _, _, out = pinn_run
    with pytest.raises(CheckpointError, match="trained on another problem") as info:
        load(out, other)
    for word in words:
        assert word in str(info.value)


def test_another_method_is_refused(pinn_run) -> None:
    problem, _, out = pinn_run
    with pytest.raises(ConfigError, match="differs from the saved one"):
        load(out, problem, method=PINN(hidden=(16, 16), eval_points=64, path_steps=5))


def test_shapes_and_types_round_trip(pinn_run) -> None:
    problem, sol, _ = pinn_run
    u = sol.u(POINTS)
    assert isinstance(u, np.ndarray) and u.shape == (7,) and u.dtype == np.float64
    grad = sol.grad_u(POINTS)
    assert isinstance(grad, np.ndarray) and grad.shape == (7, 3) and grad.dtype == np.float64
    one = sol.u(POINTS[2])
    assert isinstance(one, np.ndarray) and one.shape == () and float(one) == pytest.approx(u[2], rel=1e-13)
    assert sol.grad_u(POINTS[2]).shape == (3,)
    np.testing.assert_array_equal(sol.u(POINTS.tolist()), u)  # array-like in, NumPy out
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(POINTS, dtype=dtype)
        ut, gt = sol.u(x), sol.grad_u(x)
        assert isinstance(ut, torch.Tensor) and ut.shape == (7,) and ut.dtype == dtype and not ut.requires_grad
        assert isinstance(gt, torch.Tensor) and gt.shape == (7, 3) and gt.dtype == dtype
        assert sol.u(x[0]).shape == () and sol.grad_u(x[0]).shape == (3,)
    np.testing.assert_array_equal(sol.u(torch.tensor(POINTS)).numpy(), u)
    assert sol.u(np.zeros((0, 3))).shape == (0,)


def test_grad_u_is_the_gradient_of_u(pinn_run) -> None:
    _, sol, _ = pinn_run
    x = POINTS[:3]
    h = 1e-6
    fd = np.stack([(sol.u(x + h * e, t=0.2) - sol.u(x - h * e, t=0.2)) / (2 * h) for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(sol.grad_u(x, t=0.2), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("x, t, words", [
    (np.zeros((2, 4)), None, "expected shape (batch, 3) or (3,)"),
    (np.zeros((2, 3, 1)), None, "expected shape"),
    (np.zeros(3), 1.5, "t: expected a time in [0, T=1.0]"),
    (np.zeros(3), -0.1, "t: expected a time"),
    (["a", "b", "c"], None, "x: expected an array"),
])
def test_bad_points_are_refused(pinn_run, x, t, words) -> None:
    _, sol, _ = pinn_run
    with pytest.raises(ConfigError) as info:
        sol.u(x, t=t)
    assert words in str(info.value)


def test_method_without_value_is_a_clear_error(pinn_run) -> None:
    _, sol, _ = pinn_run

    class OnlyX0:
        name = "OnlyX0"

        def value(self, model, problem, t, x):
            raise NotImplementedError("OnlyX0 gives u(0, x0) only")

    other = dataclasses.replace(sol, method_object=OnlyX0())
    for fn in (other.u, other.grad_u):
        with pytest.raises(ConfigError, match=r"OnlyX0 method gives u at \(0, x0\) only"):
            fn(POINTS)


def test_hand_built_solution_cannot_be_evaluated_or_saved(pinn_run, tmp_path) -> None:
    _, sol, _ = pinn_run
    bare = dataclasses.replace(sol, model=None, problem_object=None, method_object=None)
    with pytest.raises(ConfigError, match="holds no trained model"):
        bare.u(POINTS)
    with pytest.raises(ConfigError, match="holds no model, problem_object, method_object"):
        bare.save(tmp_path / "x")


def test_deep_bsde_round_trip_does_not_depend_on_the_pilot(bsde_run, tmp_path) -> None:
    """The deep BSDE model's plain attributes (y_shift, y_scale, z0_scale, z_scale) come from the pilot
    simulation at build: load restores them, so even a build from another seed gives the same model."""
    problem, sol, out = bsde_run
    loaded = load(out, problem)
    assert loaded.u0 == sol.u0 and loaded.grad_u0 == sol.grad_u0
    _same_fields(loaded, sol)
    method = sol.method_object
    assert float(method.u0_tensor(loaded.model, problem)) == float(method.u0_tensor(sol.model, problem))
    assert method.estimate(loaded.model, problem) == method.estimate(sol.model, problem)
    # tamper with the initialisation seed: the pilot then draws other paths
    sol.save(tmp_path / "s")
    data = json.loads((tmp_path / "s" / SOLUTION_FILE).read_text())
    data["seed"] = 12345
    (tmp_path / "s" / SOLUTION_FILE).write_text(json.dumps(data))
    other = load(tmp_path / "s", problem)
    assert other.seed == sol.seed  # the Solution's own field is untouched
    for name in ("y_shift", "y_scale", "z0_scale", "z_scale"):
        assert getattr(other.model, name) == getattr(sol.model, name), name
    assert torch.equal(other.model.y0, sol.model.y0) and torch.equal(other.model.z0, sol.model.z0)
    for key, value in other.model.state_dict().items():
        assert torch.equal(value, sol.model.state_dict()[key]), key
    assert next(other.model.parameters()).dtype == torch.float32
    x = sol.model.nets.shift.reshape(1, 1, -1).expand(2, 3, -1).to(torch.float32) + 0.1
    torch.testing.assert_close(other.model.nets(x), sol.model.nets(x), rtol=0, atol=0)


def test_missing_and_corrupt_saves_are_refused(pinn_run, tmp_path) -> None:
    problem, sol, _ = pinn_run
    with pytest.raises(CheckpointError, match="holds no solution.json"):
        load(tmp_path, problem)
    sol.save(tmp_path / "s")
    (tmp_path / "s" / MODEL_FILE).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load(tmp_path / "s", problem)
    (tmp_path / "s" / SOLUTION_FILE).write_text("{}")
    with pytest.raises(CheckpointError, match="not a deepbsde saved solution"):
        load(tmp_path / "s", problem)


def test_load_is_exported() -> None:
    assert deepbsde.load is load and "load" in deepbsde.__all__


# --- the command line ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "pinn.toml"
    config.write_text('[equation]\nname = "HeatEquation"\ndim = 2\n[method]\nname = "PINN"\nhidden = [8, 8]\n'
                      'eval_points = 64\npath_steps = 5\n[train]\niterations = 10\nlog_every = 5\nbatch_size = 32\n'
                      'valid_size = 32\ndtype = "float64"\n')
    run = root / "run"
    assert main(["solve", str(config), "--out", str(run), "--device", "cpu", "--no-progress"]) == 0
    points = root / "points.npy"
    np.save(points, np.array([[0.1, -0.2], [1.0, 0.5], [0.0, 0.0]]))
    return run, points


def test_cli_eval_prints_u_and_grad_u(cli_run, capsys) -> None:
    run, points = cli_run
    capsys.readouterr()
    assert main(["eval", str(run), "--x", str(points), "--t", "0.25", "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    sol = load(run)  # the problem rebuilt from the command line's config
    x = np.load(points)
    assert result["u"] == sol.u(x, t=0.25).tolist()
    assert result["grad_u"] == sol.grad_u(x, t=0.25).tolist()
    assert result["points"] == 3 and result["t"] == 0.25 and result["dim"] == 2
    assert "x[2]: u = " in out and "grad u = [" in out


def test_cli_eval_one_point_in_a_subprocess(cli_run, tmp_path) -> None:
    run, _ = cli_run
    np.save(tmp_path / "one.npy", np.array([0.3, 0.4]))
    res = subprocess.run([sys.executable, "-m", "deepbsde", "eval", str(run), "--x", str(tmp_path / "one.npy"),
                          "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    sol = load(run)
    assert result["u"] == float(sol.u(np.array([0.3, 0.4])))
    assert len(result["grad_u"]) == 2 and math.isfinite(result["grad_u"][0])


@pytest.mark.parametrize("args, words", [
    (["eval", "/nonexistent/run", "--x", "p.npy"], "no such folder"),
    (["eval", "RUN", "--x", "/nonexistent.npy"], "no such file"),
    (["eval", "RUN", "--x", "BAD"], "not a NumPy .npy"),
    (["eval", "RUN", "--x", "WIDE"], "expected shape (batch, 2) or (2,)"),
    (["eval", "RUN", "--x", "POINTS", "--t", "2"], "t: expected a time in [0, T=1.0]"),
    (["eval", "EMPTY", "--x", "POINTS"], "holds no solution.json"),
])
def test_cli_eval_bad_input_exits_2(cli_run, tmp_path, capsys, args, words) -> None:
    run, points = cli_run
    (tmp_path / "bad.npy").write_text("not numpy")
    np.save(tmp_path / "wide.npy", np.zeros((2, 5)))
    (tmp_path / "empty").mkdir()
    subs = {"RUN": str(run), "BAD": str(tmp_path / "bad.npy"), "WIDE": str(tmp_path / "wide.npy"),
            "POINTS": str(points), "EMPTY": str(tmp_path / "empty")}
    capsys.readouterr()
    assert main([subs.get(a, a) for a in args]) == 2
    assert words in capsys.readouterr().err
