"""The command line: list, solve with --set and --json, config errors with exit code 2, shipped configs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from deepbsde.cli import main
from deepbsde.configfile import apply_overrides, build_from_config, load_config
from deepbsde.errors import ConfigError, ProblemError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "equations" / "configs"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "deepbsde", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


def test_list_shows_catalogue_with_references():
    res = run_cli("list")
    assert res.returncode == 0, res.stderr
    for name, value in [("AllenCahn", "0.052781"), ("HJBLQ", "4.590162"), ("DefaultRisk", "57.300000"),
                        ("DiffRates", "21.299000"), ("BlackScholesBarenblatt", "77.104879"),
                        ("BurgersType", "0.500000"), ("ReactionDiffusion", "1.600000"),
                        ("QuadraticGradient", "0.841471"), ("GeometricBasketCall", "2.971854"),
                        ("HeatEquation", "100.000000")]:
        line = next(l for l in res.stdout.splitlines() if l.startswith(name + " "))
        assert value in line, line


def test_solve_json_with_equation_overrides(tmp_path):
    """--set of equation keywords changes the problem and its reference: heat at d = 4, s = sqrt(2) has
    u(0, 0) = s^2 d T = 8."""
    res = run_cli("solve", str(CONFIGS / "heat.toml"), "--set", "equation.dim=4", "--set", "equation.sigma=1.4142135623730951",
                  "--set", "train.iterations=300", "--set", "method.num_steps=5", "--set", "method.y0_range=[0.0, 10.0]",
                  "--set", "method.hidden=[16, 16]", "--set", "train.lr_values=[1e-1, 1e-2]", "--set", "train.lr_boundaries=[150]",
                  "--set", "train.tolerance=0", "--set", "train.eval_paths=4096",
                  "--out", str(tmp_path / "run"), "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("equation", "method", "dim", "u0", "grad_u0", "reference", "relative_error", "seconds",
                "iterations", "device", "u0_interval", "u0_stderr", "grad_u0_stderr", "verdict"):
        assert key in summary
    assert summary["equation"] == "HeatEquation" and summary["dim"] == 4 and summary["iterations"] == 300
    lo, hi = summary["u0_interval"]
    assert lo < summary["u0"] < hi and len(summary["grad_u0_stderr"]) == 4
    assert "95 % interval" in res.stdout and "verdict:" in res.stdout  # the human summary shows the error bar
    assert summary["reference"] == pytest.approx(8.0)
    assert summary["relative_error"] < 0.02
    assert summary["device"] == "cpu" and len(summary["grad_u0"]) == 4
    assert (tmp_path / "run" / "summary.json").exists()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["run_config"]["equation"]["dim"] == 4


@pytest.mark.parametrize("args, words", [
    (["--set", "equation.dimm=3"], ["unknown key 'dimm'", "dim"]),
    (["--set", "equation.dim=3.5"], ["equation HeatEquation.dim", "int", "3.5"]),
    (["--set", "equation.horizon=-1"], ["horizon", "-1"]),
    (["--set", "train.iterations=many"], ["train.iterations", "'many'"]),
    (["--set", "train.iteration=5"], ["unknown key 'iteration'"]),
    (["--set", "method.num_step=5"], ["unknown key 'num_step'", "num_steps"]),
    (["--set", "method.name=Galerkin"], ["unknown method 'Galerkin'", "DeepBSDE"]),
    (["--set", "equation.name=Heat"], ["unknown equation 'Heat'", "HeatEquation"]),
    (["--set", "nosection"], ["section.key=value"]),
    (["--set", "solver.x=1"], ["unknown section 'solver'"]),
    (["--device", "cuda"], ["cuda"]),
    (["--device", "tpu"], ["device", "'tpu'"]),
])
def test_bad_input_exits_2_with_a_message(args, words, capsys):
    """In-process (cli.main) for speed; the subprocess path is covered by the tests above."""
    if args == ["--device", "cuda"] and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["solve", str(CONFIGS / "heat.toml"), "--no-progress", "--out", "/nonexistent/never", *args])
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    for w in words:
        assert w in err, (w, err)


def test_unknown_section_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[equation]\nname = "HeatEquation"\n[solver]\nx = 1\n')
    assert main(["solve", str(bad)]) == 2
    assert "unknown section [solver]" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "missing.toml")]) == 2
    assert "no such file" in capsys.readouterr().err


SHIPPED = sorted(p for p in CONFIGS.glob("*.toml") if not p.name.startswith("compare"))
# the values of ../shared/references.md as quoted there: compared to half a unit in their last digit
EXPECTED = {"allen_cahn": "0.052781", "hjb_lq": "4.590162", "default_risk": "57.300", "diff_rates": "21.299",
            "barenblatt": "77.104879", "burgers_type": "0.5", "reaction_diffusion": "1.6",
            "quadratic_gradient": "0.8414709848", "geometric_basket": "2.971854", "heat": "100"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_build_and_carry_their_reference(path):
    problem, method, train, seed = build_from_config(load_config(path))
    assert train.iterations > 0 and seed >= 0
    if path.stem in EXPECTED:
        assert problem.dim == 100
        quoted = EXPECTED[path.stem]
        decimals = len(quoted.partition(".")[2])
        assert problem.reference().value == pytest.approx(float(quoted), abs=0.5 * 10.0 ** -decimals)


@pytest.mark.parametrize("sets, expected", [
    (["equation.lam=2.0", "equation.dim=10"], None),
    (["equation.rho=0.5", "equation.strike=90.0"], None),
])
def test_overrides_change_the_reference(sets, expected):
    base = "hjb_lq.toml" if "lam" in sets[0] else "geometric_basket.toml"
    problem, *_ = build_from_config(apply_overrides(load_config(CONFIGS / base), sets))
    default, *_ = build_from_config(load_config(CONFIGS / base))
    assert problem.reference().value != pytest.approx(default.reference().value, rel=1e-3)
    if base == "hjb_lq.toml":
        from equations.calculators.hjb_lq import hjb_lq_value

        assert problem.lam == 2.0 and problem.dim == 10
        assert problem.reference().value == pytest.approx(hjb_lq_value(0.0, [0.0] * 10, lam=2.0, horizon=1.0))
    else:
        from equations.calculators.bounds import geometric_basket_call

        assert problem.reference().value == pytest.approx(
            geometric_basket_call(0.0, [100.0] * 100, strike=90.0, r=0.05, sigma=0.2, rho=0.5, horizon=1.0))


def test_module_class_equation_name():
    cfg = {"equation": {"name": "equations.heat:HeatEquation", "dim": 3}, "method": {}, "train": {}}
    problem, method, train, seed = build_from_config(cfg)
    assert problem.dim == 3 and method.name == "DeepBSDE"
    with pytest.raises(ConfigError, match="cannot import"):
        build_from_config({"equation": {"name": "nowhere:Nothing"}, "method": {}, "train": {}})
    with pytest.raises(ProblemError, match="sigma"):
        build_from_config({"equation": {"name": "HeatEquation", "sigma": -1.0}, "method": {}, "train": {}})


def _run_folder(tmp_path, run_config=True):
    """A folder as the command line leaves it before its first checkpoint (config.json only)."""
    run = tmp_path / "run"
    run.mkdir()
    saved = {"problem": {"name": "HeatEquation"}, "seed": 0}
    if run_config:
        saved["run_config"] = load_config(CONFIGS / "heat.toml")
    (run / "config.json").write_text(json.dumps(saved))
    return run


@pytest.mark.parametrize("case, words", [
    ("no folder", ["--resume", "is not a run folder (no config.json)"]),
    ("a file", ["--resume", "is not a run folder (no config.json)"]),
    ("written by Python", ["--resume", "was not written by the command line (no run_config)"]),
    ("config and resume", ["--resume: give either a config file or --resume RUN_DIR, not both"]),
    ("out differs", ["--resume: continues in its own folder", "received --out"]),
])
def test_resume_error_branches_exit_2(tmp_path, capsys, case, words):
    run = _run_folder(tmp_path, run_config=case != "written by Python")
    args = {"no folder": ["--resume", str(tmp_path / "missing")],
            "a file": ["--resume", str(run / "config.json")],
            "written by Python": ["--resume", str(run)],
            "config and resume": [str(CONFIGS / "heat.toml"), "--resume", str(run)],
            "out differs": ["--resume", str(run), "--out", str(tmp_path / "elsewhere")]}[case]
    code = main(["solve", *args, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # nothing trained, nothing written
    assert not (tmp_path / "elsewhere").exists()
