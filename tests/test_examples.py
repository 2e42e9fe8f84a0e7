"""Every example runs: each examples/*.py has a main(iterations=...) that is run here with a tiny count, and
returns solutions whose numbers are checked against independent values: the closed-form reference, the
relative error computed from it, the logged steps, the report on disk. The README's example is also run at
its full settings and checked against its closed form, u0 and ∇u(0, x0)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from deepbsde import ComparisonReport

# the examples' own defaults, made cheap where they are expensive (the Burgers example's L-BFGS phase and
# batch of 10,000 points; the comparison at d = 100)
SMALL = {"pinn_burgers": dict(lbfgs_iterations=5, batch_size=512), "compare_heat": dict(dim=5),
         "spot_ladder": dict(dim=4, points=5, interval_spots=2)}
# u(0, x0) in closed form, computed here: e^{-rT}(|x0|²/d + T) with r = 0.05, T = 1, x0 = 0.5; d T for heat
REFERENCE = {"user_defined_equation": math.exp(-0.05) * (0.25 + 1.0), "compare_heat": 5.0}

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_small(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write run folders write them here
    module = _load(path)
    assert hasattr(module, "main"), f"{path.name} needs a main(iterations=...)"
    result = module.main(iterations=10, **SMALL.get(path.stem, {}))
    report = result if isinstance(result, ComparisonReport) else None
    solutions = [e.solution for e in report.entries] if report is not None else [result]
    for sol in solutions:
        assert math.isfinite(sol.u0) and sol.iterations == 10
        steps = [row.step for row in sol.history]
        assert steps[0] == 0 and 10 in steps and all(math.isfinite(row.loss) for row in sol.history)
        if path.stem in REFERENCE:
            assert sol.reference.value == pytest.approx(REFERENCE[path.stem], rel=1e-12)
            assert sol.relative_error == pytest.approx(abs(sol.u0 - sol.reference.value) / sol.reference.value)
        if sol.grad_u0 is not None:
            assert len(sol.grad_u0) == sol.dim and all(math.isfinite(g) for g in sol.grad_u0)
    if path.stem == "pinn_burgers":
        l2_steps, l2 = result.history.metric("l2_relative_error")
        assert result.extra["l2_relative_error"] == l2[-1] and 0 < l2[-1] < 10 and l2_steps[0] == 0
        assert result.extra["l2_points"] == 256 * 100 and result.extra["lbfgs_iterations_run"] <= 5
    if path.stem == "spot_ladder":  # the ladder's table on disk holds the plotted curves, the closed form checked
        rows = (tmp_path / "runs" / "spot-ladder" / "ladder.csv").read_text().splitlines()
        assert len(rows) == 1 + 5 and (tmp_path / "runs" / "spot-ladder" / "ladder.png").is_file()
        spot, _, exact, _, exact_delta = (float(v) for v in rows[3].split(","))
        assert spot == 100.0 and exact == pytest.approx(result.reference.value, rel=1e-6)
        assert 0 < exact_delta < 1 and result.extra["ladder"]["intervals"] == 2
    if report is not None:  # the report on disk holds the same numbers
        saved = json.loads((report.out / "summary.json").read_text())
        assert [(r["label"], r["u0"], r["reference"]) for r in saved] == [
            (e.label, e.solution.u0, e.solution.reference.value) for e in report.entries]


def test_user_defined_example_is_accurate():
    """The README's example after 1000 steps against its closed form u(0, x) = e^{-rT}(|x|²/d + T):
    u0 within 1 % and ∇u(0, x0) = e^{-rT} 2 x0 / d = 0.09512 (not 0.1: the discount applies) within 7.5 %
    on the mean over the coordinates and 20 % in every one. Measured over seeds 0-4 (default network):
    u0 off by 0.00-0.28 %, the mean gradient by -4.8 % to +0.9 %, the worst coordinate by 4.8-13.2 %."""
    module = _load(next(p for p in EXAMPLES if p.stem == "user_defined_equation"))
    sol = module.main(iterations=1000)
    exact_u0 = math.exp(-0.05) * (0.25 + 1.0)
    exact_grad = math.exp(-0.05) * 2 * 0.5 / 10
    assert sol.reference.value == pytest.approx(exact_u0, rel=1e-12)
    assert abs(sol.u0 - exact_u0) < 0.01 * exact_u0
    assert len(sol.grad_u0) == 10
    assert abs(sum(sol.grad_u0) / 10 - exact_grad) < 0.075 * exact_grad
    assert all(abs(g - exact_grad) < 0.2 * exact_grad for g in sol.grad_u0), sol.grad_u0
