"""The training loop's phases: the finetune phase's divergence guard, extending a run whose budget is not a
multiple of log_every, what may change on resume, TensorBoard writers on rollback, and the PINN's gradient."""

import math
from pathlib import Path

import pytest
import torch

import deepbsde
from deepbsde import DeepBSDE, PINN, TrainConfig, solve
from deepbsde.errors import CheckpointError
from equations import GeometricBasketCall, HeatEquation


class NaNFinetune(DeepBSDE):
    """A finetune phase whose third logged iteration leaves the model non-finite."""

    def finetune(self, model, problem, *, generator, dtype, batch_size, log_every, callback):
        for done in (1, 2, 3):
            if done == 3:
                with torch.no_grad():
                    model.y0_param.fill_(float("nan"))
            callback(done, 0.0)
        return {"finetuned": True}


def test_finetune_divergence_restores_the_first_phase(tmp_path: Path) -> None:
    problem = HeatEquation(dim=2)
    train = dict(iterations=20, log_every=10, tolerance=0, eval_paths=512)
    clean = solve(problem, DeepBSDE(num_steps=4, hidden=(8, 8)), train=train, out=False, progress=False)
    sol = solve(problem, NaNFinetune(num_steps=4, hidden=(8, 8)), train=train, out=tmp_path / "run", progress=False)
    assert any("finetune diverged" in w and "step 20" in w for w in sol.run_warnings), sol.warnings
    assert math.isfinite(sol.u0) and sol.u0 == clean.u0  # the state at the end of Adam, not the NaN one
    assert [r.step for r in sol.history] == [0, 10, 20]  # the finetune rows before the failure are dropped
    assert "finetuned" not in sol.extra
    rows = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # header and the three Adam rows


def test_extending_an_off_grid_run_matches_the_uninterrupted_one(tmp_path: Path) -> None:
    """A budget of 25 with log_every 10 logs step 25; extended to 40 it must give the history of a run of 40
    (rows at 0, 10, 20, 30, 40), bit for bit, with the same answer."""
    problem = HeatEquation(dim=2)
    method = DeepBSDE(num_steps=4, hidden=(8, 8))
    base = dict(log_every=10, checkpoint_every=10, tolerance=0, eval_paths=512, lr_values=[1e-2], dtype="float64")
    full = solve(problem, method, train=dict(base, iterations=40), out=tmp_path / "full", progress=False)
    short = solve(problem, method, train=dict(base, iterations=25), out=tmp_path / "split", progress=False)
    assert [r.step for r in short.history] == [0, 10, 20, 25]
    extended = solve(problem, method, train=dict(base, iterations=40), out=tmp_path / "split", resume=True,
                     progress=False)
    assert [r.step for r in extended.history] == [0, 10, 20, 30, 40]
    fields = ("step", "loss", "train_loss", "u0", "lr")
    assert [[repr(getattr(r, f)) for f in fields] for r in extended.history] == \
           [[repr(getattr(r, f)) for f in fields] for r in full.history]
    assert extended.u0 == full.u0


def test_checkpoint_every_is_part_of_the_fingerprint(tmp_path: Path) -> None:
    problem = HeatEquation(dim=2)
    method = DeepBSDE(num_steps=4, hidden=(8, 8))
    base = dict(iterations=20, log_every=10, tolerance=0, eval_paths=256, lr_values=[1e-2])
    solve(problem, method, train=dict(base, checkpoint_every=10), out=tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        solve(problem, method, train=dict(base, iterations=30, checkpoint_every=5), out=tmp_path / "run",
              resume=True, progress=False)
    # the budget and the stopping rule may change
    again = solve(problem, method, train=dict(base, iterations=30, checkpoint_every=10, tolerance=0.5,
                                              eval_paths=512), out=tmp_path / "run", resume=True, progress=False)
    assert again.history[-1].step <= 30


def test_rollback_closes_the_tensorboard_writer(tmp_path: Path, monkeypatch) -> None:
    """Every TensorBoard writer opened is closed by the end of the run, rollbacks included."""
    from deepbsde import tbevents

    opened, closed = [], []
    real = tbevents.EventWriter

    class Counting(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            opened.append(self)

        def close(self):
            closed.append(self)
            super().close()

    monkeypatch.setattr(tbevents, "EventWriter", Counting)

    class Explodes(DeepBSDE):
        def loss(self, model, problem, batch):
            loss = super().loss(model, problem, batch)
            if self.name == "DeepBSDE" and not getattr(model, "_exploded", False) and model.training:
                steps = getattr(model, "_steps", 0) + 1
                model._steps = steps
                if steps == 15:
                    model._exploded = True
                    return loss * float("nan")
            return loss

    sol = solve(HeatEquation(dim=2), Explodes(num_steps=4, hidden=(8, 8)),
                train=dict(iterations=30, log_every=10, tolerance=0, eval_paths=256), out=tmp_path / "run",
                progress=False)
    assert sol.rollbacks and len(opened) >= 2
    assert set(map(id, opened)) == set(map(id, closed))


def test_pinn_gradient_with_its_error_bar() -> None:
    """The PINN's ∇u(0, x0): the trained σᵀ∇u with its likelihood-ratio correction, each coordinate within 4
    standard errors of the closed form 2 x0 (heat), and the re-estimated u0 within its interval."""
    problem = HeatEquation(dim=2, x0=[0.5, -1.0])
    sol = solve(problem, PINN(hidden=(32, 32), sampler="paths"),
                train=dict(iterations=300, batch_size=128, log_every=100, tolerance=0, eval_paths=8192),
                seed=0, out=False, progress=False)
    exact = (1.0, -2.0)
    for g, se, e in zip(sol.grad_u0, sol.grad_u0_stderr, exact):
        assert abs(g - e) <= 4 * se + 1e-6, (sol.grad_u0, sol.grad_u0_stderr)
    lo, hi = sol.u0_interval
    assert lo <= problem.reference().value <= hi


def test_gradient_with_general_noise() -> None:
    """General (correlated) noise: the basket's ∇u(0, x0) against its closed form through solve."""
    problem = GeometricBasketCall(dim=3, rho=0.5, strike=95.0)
    sol = solve(problem, train=dict(iterations=400, log_every=100, tolerance=0, eval_paths=4096), seed=0,
                out=False, progress=False)
    x0 = problem.x0_tensor().unsqueeze(0).requires_grad_(True)
    (exact,) = torch.autograd.grad(problem.exact_solution(torch.zeros(1, 1, dtype=torch.float64), x0).sum(), x0)
    for g, se, e in zip(sol.grad_u0, sol.grad_u0_stderr, exact[0].tolist()):
        assert abs(g - e) <= 4 * se + 1e-6, (sol.grad_u0, exact)
        assert se < 0.03 * abs(e)


@pytest.mark.parametrize("iterations, batch, expected", [(20, 64, 4096), (60, 256, 5120)])
def test_a_budget_stopped_run_buys_no_more_error_bar_than_its_training(monkeypatch, iterations, batch, expected):
    """Where the budget ends a run, the error bar takes as much work as the training did: iterations x batch / 3
    paths (each costs the two grids, 3N path-steps, against N for a training path), at least 4096 and at most
    the default count; a 20-step run is not followed by a 262,144-path re-estimate."""
    import deepbsde.estimators as est

    monkeypatch.setattr(est, "MAX_PATHS", 2 ** 18)
    monkeypatch.setattr(est, "MIN_PATHS", 4096)
    problem = HeatEquation(dim=2)
    method = DeepBSDE(num_steps=4, hidden=(8, 8))
    assert est.default_paths(problem, 4, 200) == 2 ** 18  # the cap that used to apply
    sol = solve(problem, method, train=dict(iterations=iterations, batch_size=batch, log_every=10, tolerance=0),
                seed=0, out=False, progress=False)
    assert sol.extra["stopped_by"] == "budget" and sol.extra["eval_paths"] == expected
