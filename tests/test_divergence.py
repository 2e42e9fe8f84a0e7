"""A loss that turns non-finite or explodes rolls training back, with a smaller learning rate; a loss that
stays non-finite stops training with DivergenceError and no result.

The faults are injected by :class:`Faulty`, a DeepBSDE whose loss turns NaN (or, in evaluation, huge) while
its count of training-loss calls lies in a window: the count does not rewind with a rollback, so the
replayed steps are clean, as after a transient fault.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deepbsde import DeepBSDE, DivergenceError, TrainConfig, solve
from deepbsde.checkpoint import list_checkpoints
from equations import HeatEquation

ROOT = Path(__file__).resolve().parents[1]
LR = 0.05
NEVER = 10**9


class Crash(Exception):
    """Stands for the process dying."""


@dataclasses.dataclass(frozen=True)
class Faulty(DeepBSDE):
    """Training loss NaN for training calls ``nan_from <= k < nan_until``; validation loss multiplied by 1e12
    while ``explode_from <= k < explode_until``; :class:`Crash` at training call ``crash_at``."""

    nan_from: int = NEVER
    nan_until: int = NEVER
    explode_from: int = NEVER
    explode_until: int = NEVER
    crash_at: int = NEVER
    calls: list = dataclasses.field(default_factory=lambda: [0], compare=False)

    def loss(self, model, problem, batch):
        loss = super().loss(model, problem, batch)
        k = self.calls[0]
        if model.training:
            self.calls[0] += 1
            if k == self.crash_at:
                raise Crash(f"crash at training call {k}")
            if self.nan_from <= k < self.nan_until:
                return loss * float("nan")
        elif self.explode_from <= k < self.explode_until:
            return loss * 1e12
        return loss

    def describe(self):
        out = super().describe()
        out.pop("calls")  # the fault counter and the crash are not settings: a resumed run matches its checkpoint
        out.pop("crash_at")
        return out


def _method(**faults) -> Faulty:
    return Faulty(num_steps=10, y0_range=(0.0, 10.0), **faults)


def _train(iterations: int = 300, **kw) -> TrainConfig:
    kw = {"batch_size": 32, "valid_size": 64, "log_every": 50, "dtype": "float64", "lr_values": (LR,), **kw}
    return TrainConfig(iterations=iterations, **kw)


def _solve(method, train, out=False, resume=False):
    return solve(HeatEquation(dim=5), method, train=train, seed=0, out=out, resume=resume, progress=False,
                 device="cpu")


def _check_recovered(sol, at_step: int, back_to: int, reason: str) -> None:
    assert len(sol.rollbacks) == 1
    rb = sol.rollbacks[0]
    assert rb["at_step"] == at_step and rb["back_to_step"] == back_to and rb["lr_scale"] == 0.5
    assert reason in rb["reason"]
    assert any(f"rollback at step {at_step}" in w for w in sol.warnings)
    # the learning rate is halved from the rollback on, and every logged number is finite
    assert [r.lr for r in sol.history if r.step <= back_to] == [LR] * len([r for r in sol.history if r.step <= back_to])
    assert all(r.lr == LR * 0.5 for r in sol.history if r.step > back_to)
    assert [r.step for r in sol.history] == list(range(0, 301, 50))
    assert all(math.isfinite(r.loss) and math.isfinite(r.u0) for r in sol.history)
    assert all(math.isfinite(r.train_loss) for r in sol.history[1:])
    assert math.isfinite(sol.u0) and abs(sol.u0 - 5.0) < 1.0  # u(0, 0) = d = 5


def test_nan_rolls_back_with_smaller_lr_and_finishes(tmp_path: Path, caplog) -> None:
    # NaN at training calls 120-122 (steps 121-123): detected at the step-150 validation, back to step 100
    sol = _solve(_method(nan_from=120, nan_until=123), _train(), out=tmp_path / "run")
    _check_recovered(sol, at_step=150, back_to=100, reason="loss became non-finite")
    assert any("rollback at step 150 to step 100" in r.getMessage() for r in caplog.records)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rollbacks"] == [dict(r) for r in sol.rollbacks]
    assert summary["u0"] == sol.u0
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(s) for s in range(0, 301, 50)]  # no stale rows


def test_exploding_loss_rolls_back(tmp_path: Path) -> None:
    # a finite but huge validation loss at step 200 (1e12 x the best so far > explode_factor = 1e6)
    sol = _solve(_method(explode_from=200, explode_until=201), _train())
    _check_recovered(sol, at_step=200, back_to=150, reason="loss exploded")


def test_persistent_nan_stops_with_divergence_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(DivergenceError) as info:
        _solve(_method(nan_from=120), _train(max_rollbacks=2, checkpoint_every=50), out=out)
    msg = str(info.value)
    assert "loss became non-finite" in msg and "after 2 rollback(s)" in msg and "No result is reported" in msg
    assert "last good step 100" in msg
    assert "remove the override(s) method.y0_range" in msg  # the method's own hint: this run overrides the pilot
    assert not (out / "summary.json").exists()
    assert (out / "history.csv").exists()  # what was learnt before is kept, and the checkpoints are finite
    for path in list_checkpoints(out / "checkpoints"):
        state = torch.load(path, weights_only=True)
        assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def test_rollback_then_crash_resumes_exactly(tmp_path: Path) -> None:
    """Checkpoints hold validated states only: the NaN of step 121 must not be saved by the step-130 checkpoint
    (checkpoint_every = 65 is no multiple of log_every = 50), or a resumed run could never roll back past it."""
    train = _train(checkpoint_every=65)
    full = _solve(_method(nan_from=120, nan_until=123), train)
    out = tmp_path / "run"
    with pytest.raises(Crash):
        _solve(_method(nan_from=120, nan_until=123, crash_at=140), train, out=out)
    ckpt = list_checkpoints(out / "checkpoints")[-1]
    assert ckpt.name == "ckpt-00000100.pt"  # the first logged step past 65 x 1
    resumed_method = _method(nan_from=120, nan_until=123)
    resumed_method.calls[0] = 100  # the fault counter where the resumed run picks up
    resumed = _solve(resumed_method, train, out=out, resume=True)
    assert resumed.rollbacks == full.rollbacks and len(full.rollbacks) == 1
    assert resumed.u0 == full.u0
    assert [repr(r[:5]) for r in map(dataclasses.astuple, resumed.history)] == \
        [repr(r[:5]) for r in map(dataclasses.astuple, full.history)]


def test_nan_before_any_training_is_reported_at_once() -> None:
    # validation loss NaN at step 0: no training has happened, so no rollback can help
    method = _method()
    object.__setattr__(method, "loss", lambda model, problem, batch: torch.tensor(float("nan"), dtype=torch.float64))
    with pytest.raises(DivergenceError, match="at step 0, before any training step"):
        _solve(method, _train())


FRAGILE = textwrap.dedent('''
    import torch
    from equations import HeatEquation

    class Fragile(HeatEquation):
        """The heat equation with a driver sqrt(1 - |z|^2) * 0: zero while |z| <= 1, NaN beyond. The true
        z = 2x grows past 1 as training learns it, whatever the learning rate."""

        def driver(self, t, x, y, z):
            return 0.0 * torch.sqrt(1.0 - (z * z).sum(1, keepdim=True))
''')


def test_cli_divergence_exits_3_with_message(tmp_path: Path) -> None:
    (tmp_path / "fragile_problem.py").write_text(FRAGILE)
    config = tmp_path / "fragile.toml"
    config.write_text(textwrap.dedent('''
        [equation]
        name = "fragile_problem:Fragile"
        dim = 5
        [method]
        name = "DeepBSDE"
        num_steps = 10
        y0_range = [0.0, 10.0]
        [train]
        iterations = 400
        batch_size = 32
        valid_size = 64
        log_every = 25
        lr_values = [0.05]
        dtype = "float64"
        seed = 0
    '''))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-m", "deepbsde", "solve", str(config), "--out", str(out), "--json",
                           "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "deepbsde: error: training stopped:" in proc.stderr
    assert "loss became non-finite" in proc.stderr and "after 3 rollback(s)" in proc.stderr
    assert proc.stdout.strip() == ""  # no JSON line, no answer
    assert not (out / "summary.json").exists()


def test_divergence_hint_names_the_overrides_and_the_control_measure() -> None:
    """A default run has nothing of its own to undo; an override of the pilot's scales, or training under the
    control's measure (a driver quadratic in z), is named."""
    from deepbsde.paths import make_generator
    from equations import HJBLQ

    heat, hjb = HeatEquation(dim=3), HJBLQ(dim=3)
    plain = DeepBSDE(num_steps=5)
    plain.build(heat, make_generator(0))
    assert plain.divergence_hint(heat) == ""
    scaled = DeepBSDE(num_steps=5, z_scale=1.0)
    scaled.build(hjb, make_generator(0))
    hint = scaled.divergence_hint(hjb)
    assert "method.z_scale" in hint and "control_measure = 'plain'" in hint
