"""Smoke tests of scripts/benchmark.py and scripts/convergence.py (the long runs themselves are not tests)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import random
import statistics
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))  # convergence.py imports benchmark.py by name
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


benchmark = _load("benchmark")
convergence = _load("convergence")


def test_benchmark_runs_and_tabulates_the_run_folders(tmp_path):
    """Two seeds of a tiny heat equation in fresh subprocesses; the CSV's numbers are those of summary.json."""
    out = tmp_path / "bench"
    rc = benchmark.main(["--only", "heat", "--seeds", "0", "1", "--jobs", "2", "--out", str(out),
                         "--set", "equation.dim=4", "--set", "train.iterations=6", "--set", "train.log_every=3",
                         "--set", "train.valid_size=32", "--set", "train.tolerance=0", "--set", "train.eval_paths=2048"])
    assert rc == 0
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    required = {"equation", "dim", "seeds", "u0_mean", "u0_std", "reference", "reference_source", "rel_error_mean",
                "rel_error_std", "within_bounds", "seconds_median", "iterations", "peak_memory_mb", "device", "scheme"}
    assert required <= set(rows[0])
    assert len(rows) == 1
    # the commands printed are relative to the repository root: no path of the machine that ran them
    markdown = (out / "results.md").read_text()
    assert "python -m deepbsde solve equations/configs/heat.toml" in markdown
    assert str(benchmark.ROOT) not in markdown and sys.executable not in markdown
    row = rows[0]
    summaries = [json.loads((out / "runs" / "heat" / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1)]
    u0 = [s["u0"] for s in summaries]
    err = [s["relative_error"] for s in summaries]
    assert row["equation"] == summaries[0]["equation"] == "HeatEquation"
    assert int(row["dim"]) == 4 and int(row["iterations"]) == 6 and row["seeds"] == "0 1"
    assert float(row["u0_mean"]) == pytest.approx(statistics.fmean(u0), rel=1e-12)
    assert float(row["u0_std"]) == pytest.approx(statistics.stdev(u0), rel=1e-12)
    assert float(row["rel_error_mean"]) == pytest.approx(statistics.fmean(err), rel=1e-12)
    assert float(row["reference"]) == summaries[0]["reference"]
    assert float(row["seconds_median"]) == pytest.approx(statistics.median(s["seconds"] for s in summaries), rel=1e-12)
    assert float(row["peak_memory_mb"]) > 10  # a python process with torch loaded
    assert row["scheme"] == "heun" and row["device"] == "cpu"  # the default scheme
    assert u0[0] != u0[1]  # the seeds were passed through
    assert (out / "plots" / "heat.png").stat().st_size > 0
    text = (out / "results.md").read_text()
    assert "| heat | HeatEquation |" in text and "shared" in text

    # --from-runs rebuilds the same table without training, and keeps other sections of results.md
    benchmark.upsert_section(out / "results.md", "other", "## Hard regimes\nkept")
    (out / "results.csv").unlink()
    assert benchmark.main(["--from-runs", "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as fh:
        again = list(csv.DictReader(fh))
    assert again == rows
    assert "## Hard regimes\nkept" in (out / "results.md").read_text()


def test_iterations_scale_scales_the_schedule():
    config = {"train": {"iterations": 30000, "lr_values": [1e-2, 1e-3, 1e-4], "lr_boundaries": [15000, 25000],
                        "log_every": 100}}
    sets = benchmark.scaled_overrides(config, 4000 / 30000)
    assert sets == ["train.iterations=4000", "train.lr_boundaries=[2000, 3333]",
                    "train.lr_values=[0.01, 0.001, 0.0001]", "train.log_every=100"]
    assert benchmark.scaled_overrides(config, 1.0) == []
    # 3 iterations: the boundaries 1.5 -> 2 and 2.5 -> 2 collide; the second falls off with its rate
    assert benchmark.scaled_overrides(config, 1e-4) == [
        "train.iterations=3", "train.lr_boundaries=[2]", "train.lr_values=[0.01, 0.001]", "train.log_every=1"]
    # 1 iteration: no boundary is left
    assert benchmark.scaled_overrides(config, 1 / 30000) == [
        "train.iterations=1", "train.lr_boundaries=[]", "train.lr_values=[0.01]", "train.log_every=1"]


def test_slope_fit_recovers_known_orders():
    rng = random.Random(0)
    dt = [0.3 / n for n in (5, 10, 20, 40)]
    for order in (1.0, 2.0, 0.5):
        err = [0.7 * h ** order * math.exp(rng.gauss(0, 0.02)) for h in dt]
        slope, intercept = convergence.fit_loglog_slope(dt, err)
        assert slope == pytest.approx(order, abs=0.05)
        assert math.exp(intercept) == pytest.approx(0.7, rel=0.2)
    exact, _ = convergence.fit_loglog_slope([1, 2, 4], [3, 12, 48])
    assert exact == pytest.approx(2.0, abs=1e-12)
    # zero or non-finite errors are ignored; fewer than two usable points give NaN
    assert convergence.fit_loglog_slope([1, 2, 4, 8], [1, 2, 0, math.nan])[0] == pytest.approx(1.0)
    assert math.isnan(convergence.fit_loglog_slope([1, 2], [1, 0])[0])
    assert math.isnan(convergence.fit_loglog_slope([2, 2], [1, 3])[0])


def test_hjb_exact_z_shows_the_orders_of_the_euler_and_heun_driver_terms():
    """With the exact Z (Cole–Hopf quadrature), the Y0 the scheme returns is off by O(Δt) with the Euler
    driver term and by O(Δt²) with Heun's (HJBLQ d = 10, λ = 10: the driver −5|z|² is large, so the scheme's
    error dominates the Monte Carlo error of 4000 paths, ~0.1 %); the terminal mismatch is O(Δt) for both."""
    exact = _load("hjb_exact_z")
    from equations import HJBLQ

    problem = HJBLQ(dim=10, lam=10.0)
    steps = (10, 20, 40)
    runs = [exact.scheme_y0(problem, n, 4000, seed=0) for n in steps]
    logs = [math.log(n) for n in steps]

    def slope(values):
        mx, my = statistics.fmean(logs), statistics.fmean(math.log(v) for v in values)
        return (sum((a - mx) * (math.log(b) - my) for a, b in zip(logs, values))
                / sum((a - mx) ** 2 for a in logs))

    euler = [r["euler"]["rel_error"] for r in runs]
    heun = [abs(r["heun"]["rel_error"]) for r in runs]
    assert all(e > 0 for e in euler), euler  # Euler's explicit −f Δt under-integrates (λ/2)|Z|²: Y0 too high
    assert -1.2 < slope(euler) < -0.8, euler
    assert -2.4 < slope(heun) < -1.6, heun
    assert -1.2 < slope([r["heun"]["mse"] for r in runs]) < -0.8
    assert all(r["heun"]["mse"] < 0.2 * r["var_g"] for r in runs)


def test_hjb_sampling_drift_keeps_the_solution():
    """HJBLQ(pull=κ) samples X with drift −κx (exact Ornstein–Uhlenbeck steps) and adds κ x·z/√2 to the
    driver: the same PDE, so with the exact Z the scheme's Y0 still converges to the Cole–Hopf value. Heun
    stays within the Monte Carlo and O(Δt²) error (< 1.5 % at d = 10, λ = 10, κ = 1), Euler's driver term keeps
    its O(Δt) bias. A sign error in the added term leaves Y0 off by O(1) at every N (−150 %)."""
    exact = _load("hjb_exact_z")
    from equations import HJBLQ

    problem = HJBLQ(dim=10, lam=10.0, pull=1.0)
    steps = (10, 20, 40)
    runs = [exact.scheme_y0(problem, n, 4000, seed=0) for n in steps]
    heun = [r["heun"]["rel_error"] for r in runs]
    euler = [r["euler"]["rel_error"] for r in runs]
    assert all(abs(e) < 0.015 for e in heun), heun
    assert all(e > 0 for e in euler), euler
    slope = math.log(euler[-1] / euler[0]) / math.log(steps[-1] / steps[0])
    assert -1.25 < slope < -0.8, (slope, euler)


def test_fbsnn_script_measures_the_saved_solution_along_fresh_paths(tmp_path):
    """One tiny FBSNN run in a subprocess: the table's numbers come from its summary.json, and the path error
    is that of the saved network against the closed form (zero error would need the exact u; a network trained
    for 20 steps is measurably off, and the same seed gives the same fresh paths)."""
    fbsnn = _load("fbsnn")
    out, runs = tmp_path / "fbsnn.md", tmp_path / "runs"
    rc = fbsnn.main(["--only", "BlackScholesBarenblatt", "--dim", "2", "--seeds", "0", "--set", "train.iterations=20",
                     "--set", "train.log_every=10", "--set", "train.eval_paths=2048", "--paths", "64", "--output", str(out), "--runs", str(runs)])
    assert rc == 0
    summary = json.loads((runs / "BlackScholesBarenblatt-d2" / "seed-0" / "summary.json").read_text())
    text = out.read_text()
    assert f"{100 * summary['relative_error']:.3f}" in text and "FBSNN" in text
    err = fbsnn.path_error(runs / "BlackScholesBarenblatt-d2" / "seed-0", 64, 0)
    assert 1e-4 < err < 1.0 and err == fbsnn.path_error(runs / "BlackScholesBarenblatt-d2" / "seed-0", 64, 0)
    assert f"{100 * err:.3f}" in text
