"""compare() draws a curve of u(0, ·) and of its Greek for every method that evaluates u at any point, and
measures the relative L2 errors of u and ∇u (issue 11, item 3):

* DeepBSDE in region mode, FBSNN and the PINN get curves and finite L2 errors; the slice lies in the region and
  its reference curve is the heat equation's closed form |x|² + d T, checked here from the stored line;
* a point-mode DeepBSDE gets '-' in the L2 columns and a dot at x0 (its interval and grad_u0 · v);
* the L2 numbers: recomputed here from the stored curves, and exactly from fake solutions whose error is known;
* the line through a Box, a Line and without region; a compare config gives a method its region.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from deepbsde import FBSNN, PINN, Box, ConfigError, DeepBSDE, Line, compare
from deepbsde.compare import REGION_POINTS, slice_line
from deepbsde.compare_config import apply_compare_overrides, build_compare_from_config, check_compare_sections
from deepbsde.solution import Solution
from equations import HeatEquation

TRAIN = dict(iterations=4, log_every=2, batch_size=16, valid_size=16)


def _exact(x: np.ndarray, dim: int, horizon: float = 1.0) -> np.ndarray:
    """The heat equation's u(0, x) = |x|² + d T (sigma = 1), written out here."""
    return (x * x).sum(1) + dim * horizon


def _rel_l2(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(((estimate - reference) ** 2).sum() / (reference ** 2).sum()))


def _slice_points(curves: dict) -> np.ndarray:
    base, direction, s = (np.asarray(curves[k]) for k in ("base", "direction", "s"))
    return base[None, :] + s[:, None] * direction[None, :]


def _table_row(text: str, label: str) -> list[str]:
    line = next(l for l in text.splitlines() if l.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_region_fbsnn_and_pinn_are_drawn_as_curves_with_errors(tmp_path: Path) -> None:
    problem = HeatEquation(dim=2)
    methods = {"DeepBSDE": DeepBSDE(num_steps=4, region=Box(-1.0, 1.0)),
               "FBSNN": FBSNN(num_steps=4, hidden=(8, 8)), "PINN": PINN(hidden=(8,))}
    report = compare(problem, methods, train=TRAIN, out=tmp_path, device="cpu", progress=False)
    rows = {r["label"]: r for r in json.loads((tmp_path / "summary.json").read_text())}
    curves = json.loads((tmp_path / "slice.json").read_text())
    for label in methods:
        row = rows[label]
        assert math.isfinite(row["u_rel_l2"]) and row["u_rel_l2"] > 0, label
        assert math.isfinite(row["grad_u_rel_l2"]) and row["grad_u_rel_l2"] > 0, label
        assert f"{REGION_POINTS} points of the box region of DeepBSDE" == row["l2_over"]
        cells = _table_row((tmp_path / "report.md").read_text(), label)
        assert float(cells[8]) == pytest.approx(row["u_rel_l2"], rel=1e-2)
        assert float(cells[9]) == pytest.approx(row["grad_u_rel_l2"], rel=1e-2)
    # the deep BSDE method's own region error (other points of the same box) agrees up to sampling noise
    own = report["DeepBSDE"].solution.extra["region_rel_l2"]
    assert rows["DeepBSDE"]["u_rel_l2"] == pytest.approx(own, rel=0.1)
    # the slice: x0 + s e1 across the box, through x0, reference = closed form, each method's stored curve = its u
    x = _slice_points(curves)
    assert curves["x0_at"] == pytest.approx(0.0) and np.all(np.abs(x) <= 1.0 + 1e-12)
    assert x[0, 0] == pytest.approx(-1.0) and x[-1, 0] == pytest.approx(1.0) and np.all(x[:, 1] == 0.0)
    ref = curves["reference"][0]
    np.testing.assert_allclose(ref["u"], _exact(x, 2), rtol=1e-12)
    np.testing.assert_allclose(ref["greek"], 2 * x[:, 0], rtol=1e-10, atol=1e-12)  # ∂u/∂x1 = 2 x1
    for label in methods:
        sol = report[label].solution
        curve = curves["methods"][label]["curves"][0]
        np.testing.assert_allclose(curve["u"], sol.u(x), rtol=1e-12)
        np.testing.assert_allclose(curve["greek"], sol.grad_u(x)[:, 0], rtol=1e-12, atol=1e-12)
    assert (tmp_path / "slice.png").stat().st_size > 0


def test_point_mode_is_a_dot_and_l2_from_the_slice(tmp_path: Path) -> None:
    """No region: the L2 errors are over the slice points; recomputed here from slice.json and the closed
    form. The point-mode deep BSDE method has none ('-') and is stored as a dot."""
    problem = HeatEquation(dim=3)
    methods = {"point": DeepBSDE(num_steps=4), "PINN": PINN(hidden=(8,), half_width=0.5)}
    report = compare(problem, methods, train=TRAIN, out=tmp_path, device="cpu", progress=False)
    rows = {r["label"]: r for r in json.loads((tmp_path / "summary.json").read_text())}
    curves = json.loads((tmp_path / "slice.json").read_text())
    assert rows["point"]["u_rel_l2"] is None and rows["point"]["grad_u_rel_l2"] is None
    assert rows["point"]["l2_over"] is None
    cells = _table_row((tmp_path / "report.md").read_text(), "point")
    assert cells[8] == "-" and cells[9] == "-"
    dot = curves["methods"]["point"]
    sol = report["point"].solution
    assert "curves" not in dot and dot["u0"] == sol.u0 and dot["u0_interval"] == list(sol.u0_interval)
    assert dot["greek0"] == pytest.approx(sol.grad_u0[0])  # ∇u(0, x0) · e1
    assert curves["x0_at"] == pytest.approx(0.0)
    # the default slice: x0 + s e1 for s in [-half_width, half_width]
    x = _slice_points(curves)
    assert x[0, 0] == pytest.approx(-0.5) and x[-1, 0] == pytest.approx(0.5) and len(x) == 201
    u = np.asarray(curves["methods"]["PINN"]["curves"][0]["u"])
    greek = np.asarray(curves["methods"]["PINN"]["curves"][0]["greek"])
    assert rows["PINN"]["u_rel_l2"] == pytest.approx(_rel_l2(u, _exact(x, 3)), rel=1e-9)
    grad = report["PINN"].solution.grad_u(x)
    np.testing.assert_allclose(greek, grad[:, 0], rtol=1e-12, atol=1e-12)
    assert rows["PINN"]["grad_u_rel_l2"] == pytest.approx(_rel_l2(grad, 2 * x), rel=1e-9)
    assert "the 201 points of the slice" in rows["PINN"]["l2_over"]


def test_l2_errors_of_known_fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Solutions replaced by fakes with a known error: u + 0.5 x1 and ∇u + (0.25, 0): the errors are computed
    here from the points the fakes were called with, and every method is measured on the same region points."""
    calls: dict[str, list[np.ndarray]] = {"u": [], "grad": []}

    def fake_u(self, x, t=None):
        x = np.asarray(x, dtype=np.float64)
        calls["u"].append(x.copy())
        return _exact(x, 2) + 0.5 * x[:, 0]

    def fake_grad(self, x, t=None):
        x = np.asarray(x, dtype=np.float64)
        calls["grad"].append(x.copy())
        return 2 * x + np.array([0.25, 0.0])

    monkeypatch.setattr(Solution, "u", fake_u)
    monkeypatch.setattr(Solution, "grad_u", fake_grad)
    methods = {"box": DeepBSDE(num_steps=4, region=Box((-1.0, 0.0), (1.0, 2.0))), "FBSNN": FBSNN(num_steps=4, hidden=(8,))}
    report = compare(HeatEquation(dim=2), methods, train=TRAIN, out=False, device="cpu", progress=False)
    assert len(calls["u"]) == 2 and len(calls["grad"]) == 2
    x = calls["u"][0]
    np.testing.assert_array_equal(calls["u"][1], x)
    np.testing.assert_array_equal(calls["grad"][0], x)
    assert x.shape == (REGION_POINTS, 2) and np.all((x[:, 0] >= -1) & (x[:, 0] <= 1) & (x[:, 1] >= 0) & (x[:, 1] <= 2))
    ref = _exact(x, 2)
    expected_u = math.sqrt(np.sum((0.5 * x[:, 0]) ** 2) / np.sum(ref ** 2))
    expected_grad = math.sqrt(REGION_POINTS * 0.25 ** 2 / np.sum((2 * x) ** 2))
    for entry in report.entries:
        assert entry.accuracy["u_rel_l2"] == pytest.approx(expected_u, rel=1e-12)
        assert entry.accuracy["grad_u_rel_l2"] == pytest.approx(expected_grad, rel=1e-12)
        assert entry.summary()["u_rel_l2"] == entry.accuracy["u_rel_l2"]


def test_slice_line_in_regions() -> None:
    problem = HeatEquation(dim=3, x0=[0.2, 0.3, 0.4])
    line = slice_line(problem, {"b": DeepBSDE(region=Box(-1.0, 1.0))})
    assert line.at_x0 == pytest.approx(0.0)
    np.testing.assert_allclose(line.base, [0.2, 0.3, 0.4])
    np.testing.assert_allclose(line.points()[[0, -1], 0], [-1.0, 1.0])
    # x0 outside the box: the line runs through x0 clipped into the box, and x0 is not on it
    line = slice_line(problem, {"b": DeepBSDE(region=Box(-1.0, (1.0, 1.0, 0.1)))})
    np.testing.assert_allclose(line.base, [0.2, 0.3, 0.1])
    assert line.at_x0 is None and "clipped" in line.text
    # a Line region is drawn as itself: s v, s in [lo, hi]; x0 = 0.5 (1, 1, 1) is on it at s = 0.5
    on = slice_line(HeatEquation(dim=3, x0=0.5), {"pinn": PINN(), "line": DeepBSDE(region=Line(1.0, -1.0, 2.0))})
    assert on.at_x0 == pytest.approx(0.5) and on.s[0] == -1.0 and on.s[-1] == 2.0
    np.testing.assert_allclose(on.points()[-1], [2.0, 2.0, 2.0])
    assert slice_line(HeatEquation(dim=3, x0=0.5), {"line": DeepBSDE(region=Line(1.0, 1.0, 2.0))}).at_x0 is None
    # no region: x0 + s e1 over the PINN's half width
    free = slice_line(problem, {"pinn": PINN(half_width=2.0), "dbsde": DeepBSDE()})
    assert free.at_x0 == pytest.approx(0.0) and free.s[0] == -2.0 and free.s[-1] == 2.0


def test_compare_config_gives_a_method_its_region() -> None:
    config = check_compare_sections({
        "equation": {"name": "HeatEquation", "dim": 2}, "train": {"iterations": 2},
        "methods": {"DeepBSDE": {"num_steps": 4, "region": {"type": "box", "lo": -1.0, "hi": 1.0}}, "PINN": {}}})
    config = apply_compare_overrides(config, ["methods.DeepBSDE.region.lo=-0.5"])
    _, methods, _, _ = build_compare_from_config(config)
    assert methods["DeepBSDE"].region == Box(-0.5, 1.0)
    config = apply_compare_overrides(config, ["methods.PINN.region.type='box'"])
    with pytest.raises(ConfigError, match=r"\[methods.PINN\].*region"):
        build_compare_from_config(config)
    bad = check_compare_sections({"equation": {"name": "HeatEquation"}, "methods": {"A": {"region": 1.0}}})
    with pytest.raises(ConfigError, match="not a table"):
        apply_compare_overrides(bad, ["methods.A.region.lo=1"])


class _BrokenReference(HeatEquation):
    """The heat equation whose reference at any point fails (as a user's reference function might)."""

    def reference_at(self, t, x):
        raise RuntimeError("no reference here")


def test_a_failing_reference_loses_no_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="deepbsde.compare"):
        compare(_BrokenReference(dim=2), {"PINN": PINN(hidden=(8,))}, train=TRAIN, out=tmp_path, device="cpu",
                progress=False)
    row = json.loads((tmp_path / "summary.json").read_text())[0]
    assert row["u_rel_l2"] is None and row["grad_u_rel_l2"] is None
    curves = json.loads((tmp_path / "slice.json").read_text())
    assert curves["reference"][0]["u"] is None and len(curves["methods"]["PINN"]["curves"][0]["u"]) == 201
    assert "no reference here" in caplog.text and (tmp_path / "slice.png").is_file()
