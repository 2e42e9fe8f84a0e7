"""Issue 12: no stale answer, every bad input a clear error (exit code 2), a quiet library.

* a compare that fails (a method diverges) leaves no report of an earlier compare in its folder (item 1);
* a user equation whose constructor raises ValueError or TypeError, and ``--out`` at or below an existing
  file, end with exit code 2 and a message before any training (item 3; non-finite numbers are in
  test_config_fuzz.py);
* the library writes nothing to stderr through logging's last-resort handler (item 5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deepbsde import DeepBSDE, DivergenceError, compare
from deepbsde.cli import main
from equations import HeatEquation

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "equations" / "configs"
REPORT = ("summary.json", "report.md", "loss.png", "slice.png")


# --- item 1: a failed compare -------------------------------------------------------------------------------

def _methods(lr_a: float = 1e-2) -> tuple[dict, dict]:
    methods = {"A": DeepBSDE(num_steps=4, hidden=(8,), y0_range=(0.0, 4.0)), "B": DeepBSDE(num_steps=2, hidden=(8,))}
    trains = {"A": {"lr_values": [lr_a], "lr_boundaries": []}}
    return methods, trains


def test_failed_compare_leaves_no_stale_report(tmp_path: Path) -> None:
    """The issue's reproduction: compare on HeatEquation(dim=2), then into the same folder with sigma = 2 and
    a method that diverges (learning rate 1e8)."""
    methods, trains = _methods()
    train = dict(iterations=10, log_every=2, batch_size=16, valid_size=32, lr_values=[1e-2], lr_boundaries=[])
    compare(HeatEquation(dim=2), methods, train=train, trains=trains, out=tmp_path, device="cpu", progress=False)
    assert all((tmp_path / name).is_file() for name in REPORT)
    assert (tmp_path / "B" / "summary.json").is_file()

    methods, trains = _methods(lr_a=1e8)
    with pytest.raises(DivergenceError, match="training stopped"):
        compare(HeatEquation(dim=2, sigma=2.0), methods, train=train, trains=trains, out=tmp_path, device="cpu",
                progress=False)
    left = [name for name in REPORT if (tmp_path / name).exists()]
    assert left == [], f"stale outputs of the first compare: {left}"
    assert not (tmp_path / "A" / "summary.json").exists() and not (tmp_path / "B" / "summary.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["problem"]["sigma"] == 2.0


def test_failed_compare_from_the_command_line_exits_3_without_stale_report(tmp_path: Path, capsys) -> None:
    small = ["--no-progress", "--device", "cpu", "--out", str(tmp_path), "--set", "equation.dim=2",
             "--set", "train.log_every=2", "--set", "methods.DeepBSDE.train.iterations=6",
             "--set", "methods.PINN.train.iterations=4", "--set", "methods.PINN.hidden=[8]",
             "--set", "methods.PINN.train.batch_size=16", "--set", "methods.DeepBSDE.train.batch_size=16"]
    config = str(CONFIGS / "compare_heat_d100.toml")
    assert main(["compare", config, *small]) == 0
    assert all((tmp_path / name).is_file() for name in REPORT)
    capsys.readouterr()
    code = main(["compare", config, *small, "--set", "equation.sigma=2.0",
                 "--set", "methods.DeepBSDE.train.lr_values=[1e8, 1e8]"])
    err = capsys.readouterr().err
    assert code == 3 and "training stopped" in err and "Traceback" not in err
    assert [name for name in REPORT if (tmp_path / name).exists()] == []
    assert not (tmp_path / "PINN" / "summary.json").exists()


# --- item 3: bad input that used to escape exit code 2 ------------------------------------------------------

PICKY = '''
import torch
import deepbsde


class Picky(deepbsde.Problem):
    """A user equation whose constructor checks its own keywords with ValueError and TypeError."""

    def __init__(self, dim: int = 2, rate: float = 0.1, levels=None):
        if rate > 1:
            raise ValueError(f"rate must be at most 1, got {rate}")
        self.levels = sorted(levels or [])  # TypeError for levels = [1, "a"]
        super().__init__(dim, 1.0, 0.0)
        self.rate = rate

    def drift(self, t, x):
        return torch.zeros_like(x)

    def diffusion(self, t, x):
        return torch.ones_like(x)

    def driver(self, t, x, y, z):
        return -self.rate * y

    def terminal(self, x):
        return x.sum(1, keepdim=True)
'''


@pytest.mark.parametrize("sets, words", [
    (["equation.rate=5.0"], ["equation Picky", "rate=5.0", "ValueError: rate must be at most 1, got 5.0"]),
    (['equation.levels=[1, "a"]'], ["equation Picky", "TypeError", "'<' not supported"]),
])
def test_user_constructor_errors_exit_2(tmp_path: Path, monkeypatch, capsys, sets, words) -> None:
    (tmp_path / "picky_equation.py").write_text(textwrap.dedent(PICKY))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "picky.toml"
    config.write_text('[equation]\nname = "picky_equation:Picky"\n[train]\niterations = 1\nlr_values = [1e-2]\nlr_boundaries = []\n')
    args = [a for s in sets for a in ("--set", s)]
    code = main(["solve", str(config), "--no-progress", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.parametrize("command", ["solve", "compare"])
def test_out_at_or_below_an_existing_file_exits_2(tmp_path: Path, capsys, command) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = str(CONFIGS / ("heat.toml" if command == "solve" else "compare_heat_d100.toml"))
    for out, words in [(blocker / "run", ["lies below", str(blocker)]), (blocker, ["which is an existing file"])]:
        code = main([command, config, "--no-progress", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "--out: expected a folder" in err and all(w in err for w in words) and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


# --- item 5: the library is quiet ---------------------------------------------------------------------------

QUIET = '''
import logging, sys, tempfile
import deepbsde
from equations import HeatEquation
if sys.argv[1] == "without-handler":  # the control: what a user saw before the NullHandler
    logger = logging.getLogger("deepbsde")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
sol = deepbsde.solve(HeatEquation(dim=2), deepbsde.DeepBSDE(num_steps=2, hidden=(4,)),
                     train=dict(iterations=2, log_every=1, lr_values=[1e-2], lr_boundaries=[]),
                     out=tempfile.mkdtemp(), resume=True,
                     progress=False, device="cpu")
print(any("no checkpoint" in w for w in sol.warnings))
'''


def test_library_writes_nothing_to_stderr_through_logging() -> None:
    """solve(resume=True) with no checkpoint logs a warning; used from Python with no logging set up, it must
    not reach stderr (logging's last-resort handler) but only the Solution's warnings."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    runs = {mode: subprocess.run([sys.executable, "-c", QUIET, mode], capture_output=True, text=True, cwd=ROOT,
                                 env=env, timeout=300) for mode in ("library", "without-handler")}
    for res in runs.values():
        assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr
    assert "no checkpoint" in runs["without-handler"].stderr  # the control: the warning is logged
    assert runs["library"].stderr == ""


def test_a_payoff_that_no_path_reaches_is_not_called_ok() -> None:
    """A call so far out of the money that no simulated path pays: the re-estimate is 0 ± 0, and the closed form
    (positive) lies outside that interval. The verdict must not be "ok": the warning names the rule of three."""
    from equations import GeometricBasketCall

    problem = GeometricBasketCall(dim=2, strike=250.0)
    exact = problem.reference().value
    assert exact > 0
    from deepbsde import solve

    sol = solve(problem, DeepBSDE(num_steps=4, hidden=(8, 8)),
                         train=dict(iterations=20, log_every=10, tolerance=0.01, eval_paths=1024), out=False,
                         progress=False, seed=0)
    lo, hi = sol.u0_interval
    assert not lo <= exact <= hi  # the interval says nothing about the paying event
    assert sol.verdict == "check"
    assert any("one value on all 1024 evaluation paths" in w and "rule of three" in w for w in sol.warnings)
