"""Accuracy at the README's headline settings (issue 12, item 7): long runs, deselected by default.

Run with ``python -m pytest -m slow tests/test_accuracy_slow.py`` (tens of minutes on 2 CPU cores). Each test
runs the command line as a user does (``python -m deepbsde solve CONFIG --json --out TMP --no-progress``)
and checks the JSON summary against a trusted reference with the tolerance stated here:

* Allen–Cahn, d = 100 (``allen_cahn.toml``): u0 within 0.3 % of 0.052781 (the README measures 0.08 %);
* HJB λ = 1, d = 100 (``hjb_lq.toml``): u0 within 0.3 % of 4.590162 (README: 0.132 % ± 0.011 %), and the
  trained Z explains Var g(X_T) (a collapsed Z gives E g(X_T), only 0.22 % off, so the error alone cannot
  tell);
* Burgers by PINN (``burgers_1d.toml``): relative L2 error ≤ 1e-3 on the 256 × 100 grid against the Cole–Hopf
  reference (README: 3.8e-4; Raissi et al. 2019 report 6.7e-4);
* a PINN against a closed form: the heat equation at d = 2 (config below), u0 within 0.2 %, ∇u(0, x0) and
  the relative L2 error (tolerances measured, see PINN_HEAT);
* Greeks: the heat equation at d = 10, x0 = 1, where ∇u(0, x0) = 2 x0 = 2 in every coordinate.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "equations" / "configs"


def solve_cli(config: Path, out: Path, *sets: str) -> dict:
    """``python -m deepbsde solve CONFIG --json --out OUT --no-progress``: the JSON summary (last line)."""
    args = [a for s in sets for a in ("--set", s)]
    res = subprocess.run([sys.executable, "-m", "deepbsde", "solve", str(config), "--json", "--out", str(out),
                          "--no-progress", "--device", "cpu", *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3 * 3600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert json.loads((out / "summary.json").read_text())["u0"] == summary["u0"]
    return summary


def test_allen_cahn_d100(tmp_path: Path) -> None:
    """The main job: within 0.3 %, inside its own interval, and no warning that Z was not learnt."""
    s = solve_cli(CONFIGS / "allen_cahn.toml", tmp_path / "run")
    assert s["dim"] == 100 and s["reference"] == pytest.approx(0.052781, abs=5e-7)
    assert s["relative_error"] <= 3e-3, s["u0"]
    assert s["interval_covers_reference"], (s["u0"], s["u0_interval"])
    assert not any("not learnt Z" in w for w in s["warnings"]), s["warnings"]


def test_hjb_lq_d100(tmp_path: Path) -> None:
    s = solve_cli(CONFIGS / "hjb_lq.toml", tmp_path / "run")
    assert s["dim"] == 100 and s["reference"] == pytest.approx(4.590162, abs=5e-7)
    assert s["relative_error"] <= 3e-3, s["u0"]
    assert s["interval_covers_reference"], (s["u0"], s["u0_interval"])
    assert s.get("variance_explained", 0.0) > 0.2, s  # measured 0.43: Z is learnt, not collapsed


def test_burgers_by_pinn(tmp_path: Path) -> None:
    s = solve_cli(CONFIGS / "burgers_1d.toml", tmp_path / "run")
    assert s["method"] == "PINN" and s["l2_points"] == 256 * 100
    assert s["l2_relative_error"] <= 1e-3, s["l2_relative_error"]


# The PINN against a closed form: u_t + ½Δu = 0, u(T, x) = |x|², so u(t, x) = |x|² + d (T - t); at d = 2,
# x0 = 0.5: u(0, x0) = 2.5 and ∇u(0, x0) = 2 x0 = (1, 1). Exact trace, collocation points on the forward paths
# (where the FBSDE lives; a box around x0 leaves this backward Cauchy problem undetermined near its edges:
# with sampler "box" and these settings the relative L2 error over the box was 0.16 while u0 was right to
# 1e-4), float64.
PINN_HEAT = """
[equation]
name = "HeatEquation"
dim = 2
x0 = 0.5
[method]
name = "PINN"
hidden = [32, 32, 32]
trace = "exact"
sampler = "paths"
lbfgs_iterations = 200
[train]
iterations = 1500
batch_size = 256
valid_size = 256
lr_values = [3e-3, 1e-3]
lr_boundaries = [1000]
log_every = 250
dtype = "float64"
seed = 0
"""
# Tolerances from two measured runs of these settings (seeds 0 and 1, about 35 s each on one core): u0 off by
# 3.2e-4 and 1.0e-4 (bound 2e-3), ∇u(0, x0) off by at most 1.2 % in a coordinate (bound 5 %), relative L2
# error on the path points 4.4e-2 and 3.2e-2 (bound 0.1: the points at t near T lie far out, where the
# network is least constrained). A trace off by a factor or a z = ∇u mix-up moves u0 by tens of percent.
PINN_U0_TOL = 2e-3
PINN_GRAD_TOL = 0.05
PINN_L2_TOL = 0.1


def test_pinn_against_a_closed_form(tmp_path: Path) -> None:
    config = tmp_path / "pinn_heat.toml"
    config.write_text(PINN_HEAT)
    s = solve_cli(config, tmp_path / "run")
    assert s["method"] == "PINN" and s["reference"] == pytest.approx(2.5, rel=1e-12)
    assert s["relative_error"] <= PINN_U0_TOL, s["u0"]
    assert s["l2_relative_error"] <= PINN_L2_TOL, s["l2_relative_error"]
    assert all(abs(g - 1.0) <= PINN_GRAD_TOL for g in s["grad_u0"]), s["grad_u0"]


# Greeks: the heat equation at d = 10, T = 1, x0 = 1: u(0, x0) = |x0|² + d T = 20, ∇u(0, x0) = 2 x0 = 2.
GREEKS_HEAT = """
[equation]
name = "HeatEquation"
dim = 10
x0 = 1.0
[method]
name = "DeepBSDE"
num_steps = 20
[train]
iterations = 2000
batch_size = 256
valid_size = 256
lr_values = [1e-2, 1e-3]
lr_boundaries = [1000]
log_every = 100
dtype = "float64"
seed = 0
"""


def test_greeks_of_the_heat_equation(tmp_path: Path) -> None:
    config = tmp_path / "greeks_heat.toml"
    config.write_text(GREEKS_HEAT)
    s = solve_cli(config, tmp_path / "run")
    assert s["reference"] == pytest.approx(20.0, rel=1e-12) and s["relative_error"] <= 1e-2, s["u0"]
    grad, se = s["grad_u0"], s["grad_u0_stderr"]
    assert len(grad) == 10 and all(math.isfinite(g) for g in grad)
    assert abs(sum(grad) / 10 - 2.0) <= 0.01 * 2.0, grad  # the mean over the coordinates within 1 %
    assert all(abs(g - 2.0) <= 0.1 * 2.0 for g in grad), grad  # every coordinate within 10 %
    assert sum(abs(g - 2.0) <= 1.96 * e for g, e in zip(grad, se)) >= 8, (grad, se)  # the intervals cover
