"""A fuzz pass over the config surface (issue 12): a hand-written table of malformed configs, ``--set`` values
and arguments, each run through ``deepbsde.cli.main`` in-process.

Every one must end with exit code 2, before any training (no history.csv is written), with one message on
stderr that names the field (the words listed with the case) and no traceback. The base config is tiny, so
that a case that wrongly passes the checks shows up as exit code 0 within a second, not as a long run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepbsde.cli import main

BASE = """
[equation]
name = "HeatEquation"
dim = 2
[method]
name = "DeepBSDE"
hidden = [4]
[train]
iterations = 2
batch_size = 8
valid_size = 8
log_every = 1
lr_values = [1e-2]
lr_boundaries = []
"""

PINN = ["method.name=\"PINN\"", "method.hidden=[4]"]

COMPARE = """
[equation]
name = "HeatEquation"
dim = 2
[train]
iterations = 2
batch_size = 8
valid_size = 8
log_every = 1
lr_values = [1e-2]
lr_boundaries = []
[methods.A]
name = "DeepBSDE"
num_steps = 2
hidden = [4]
"""


def eq(name: str, *keywords: str) -> str:
    """A tiny solve config for the catalogue equation ``name`` with TOML ``keywords`` (``"lam = -1.0"``)."""
    return BASE.replace('name = "HeatEquation"\ndim = 2', "\n".join([f'name = "{name}"', *keywords]))


# (id, config text, --set values, other arguments, words the message must contain)
SOLVE_SETS = [
    # [equation]: types, ranges, non-finite numbers, names
    ("dim-zero", ["equation.dim=0"], ["equation HeatEquation: dim", "positive integer", "0"]),
    ("dim-negative", ["equation.dim=-3"], ["dim", "-3"]),
    ("dim-float", ["equation.dim=2.5"], ["equation HeatEquation.dim", "int", "2.5"]),
    ("dim-string", ["equation.dim=two"], ["equation HeatEquation.dim", "'two'"]),
    ("dim-bool", ["equation.dim=true"], ["equation HeatEquation.dim", "True"]),
    ("horizon-zero", ["equation.horizon=0.0"], ["horizon", "0.0"]),
    ("horizon-inf", ["equation.horizon=inf"], ["horizon", "finite", "inf"]),
    ("horizon-nan", ["equation.horizon=nan"], ["horizon", "nan"]),
    ("x0-inf", ["equation.x0=inf"], ["x0", "finite", "inf"]),
    ("x0-length", ["equation.x0=[1.0, 2.0, 3.0]"], ["x0", "length"]),
    ("x0-nan-entry", ["equation.x0=[nan, 0.0]"], ["x0", "finite", "nan"]),
    ("x0-strings", ['equation.x0=["a", "b"]'], ["x0", "'a'"]),
    ("sigma-negative", ["equation.sigma=-1.0"], ["sigma", "-1.0"]),
    ("sigma-inf", ["equation.sigma=inf"], ["sigma", "finite", "inf"]),
    ("sigma-string", ["equation.sigma=big"], ["equation HeatEquation.sigma", "'big'"]),
    ("equation-unknown-key", ["equation.dimm=3"], ["unknown key 'dimm'", "dim"]),
    ("equation-unknown-name", ["equation.name=Heat"], ["equation.name", "unknown equation 'Heat'"]),
    ("equation-not-importable", ['equation.name="nowhere:Nothing"'], ["equation.name", "cannot import"]),
    ("equation-not-a-problem", ['equation.name="deepbsde.config:TrainConfig"'], ["equation.name", "not a deepbsde.Problem"]),
    ("equation-name-number", ["equation.name=5"], ["equation.name", "5 (int)"]),
    # [method]: DeepBSDE
    ("method-unknown", ["method.name=Galerkin"], ["method.name", "unknown method 'Galerkin'"]),
    ("num-steps-zero", ["method.num_steps=0"], ["method.num_steps", "0"]),
    ("num-steps-float", ["method.num_steps=2.5"], ["method DeepBSDE.num_steps", "2.5"]),
    ("y0-range-inf", ["method.y0_range=[-inf, inf]"], ["method DeepBSDE.y0_range", "finite", "-inf"]),
    ("y0-range-short", ["method.y0_range=[1.0]"], ["method.y0_range", "[low, high]"]),
    ("y0-range-reversed", ["method.y0_range=[2.0, 1.0]"], ["method.y0_range", "low <= high"]),
    ("z0-range-nan", ["method.z0_range=[nan, 0.0]"], ["method DeepBSDE.z0_range", "finite", "nan"]),
    ("z-scale-inf", ["method.z_scale=inf"], ["method DeepBSDE.z_scale", "finite", "inf"]),
    ("z-scale-negative", ["method.z_scale=-1.0"], ["method.z_scale", "-1.0"]),
    ("clip-nan", ["method.clip=nan"], ["method DeepBSDE.clip", "finite", "nan"]),
    ("hidden-empty", ["method.hidden=[]"], ["method.hidden", "non-empty"]),
    ("hidden-negative", ["method.hidden=[8, -1]"], ["method.hidden", "-1"]),
    ("network-unknown", ['method.network="dense"'], ["method.network", "'dense'"]),
    ("scheme-unknown", ['method.scheme="rk4"'], ["method.scheme", "'rk4'"]),
    ("batch-norm-string", ['method.batch_norm="yes"'], ["method DeepBSDE.batch_norm", "bool", "'yes'"]),
    ("method-unknown-key", ["method.foo=1"], ["unknown key 'foo'", "num_steps"]),
    # [method]: PINN
    ("pinn-half-width-inf", [*PINN, "method.half_width=inf"], ["method PINN.half_width", "finite", "inf"]),
    ("pinn-w-res-nan", [*PINN, "method.w_res=nan"], ["method PINN.w_res", "finite", "nan"]),
    ("pinn-condition-fraction", [*PINN, "method.condition_fraction=1.5"], ["method.condition_fraction", "(0, 1]", "1.5"]),
    ("pinn-adapt-alpha-inf", [*PINN, "method.adapt_alpha=inf"], ["method PINN.adapt_alpha", "finite", "inf"]),
    ("pinn-trace", [*PINN, 'method.trace="approx"'], ["method.trace", "'approx'"]),
    ("pinn-probes-zero", [*PINN, "method.probes=0"], ["method.probes", "0"]),
    ("pinn-sampler", [*PINN, 'method.sampler="grid"'], ["method.sampler", "'grid'"]),
    ("pinn-deep-bsde-key", [*PINN, "method.num_steps=3"], ["method PINN", "unknown key 'num_steps'"]),
    # [train]
    ("iterations-zero", ["train.iterations=0"], ["train.iterations", "positive integer", "0"]),
    ("iterations-negative", ["train.iterations=-5"], ["train.iterations", "-5"]),
    ("iterations-string", ["train.iterations=many"], ["train.iterations", "'many'"]),
    ("iterations-float", ["train.iterations=1e3"], ["train.iterations", "1000.0"]),
    ("batch-size-zero", ["train.batch_size=0"], ["train.batch_size", "0"]),
    ("lr-inf", ["train.lr_values=[inf]"], ["train.lr_values", "finite", "inf"]),
    ("lr-inf-two", ["train.lr_values=[inf, inf]", "train.lr_boundaries=[1]"], ["train.lr_values", "finite", "inf"]),
    ("lr-nan", ["train.lr_values=[nan]"], ["train.lr_values", "nan"]),
    ("lr-negative", ["train.lr_values=[-1e-3]"], ["train.lr_values", "positive", "-0.001"]),
    ("lr-count", ["train.lr_values=[1e-2, 1e-3]"], ["train.lr_values", "len(lr_boundaries) + 1"]),
    ("lr-boundaries-order", ["train.lr_values=[1.0, 0.5, 0.1]", "train.lr_boundaries=[5, 3]"],
     ["train.lr_boundaries", "increasing", "[5, 3]"]),
    ("lr-boundaries-float", ["train.lr_boundaries=[1.5]", "train.lr_values=[1.0, 0.5]"], ["train.lr_boundaries", "integers"]),
    ("dtype", ['train.dtype="float16"'], ["train.dtype", "'float16'"]),
    ("explode-inf", ["train.explode_factor=inf"], ["train.explode_factor", "finite", "inf"]),
    ("rollback-zero", ["train.rollback_lr_factor=0.0"], ["train.rollback_lr_factor", "(0, 1]", "0.0"]),
    ("rollback-nan", ["train.rollback_lr_factor=nan"], ["train.rollback_lr_factor", "nan"]),
    ("seed-negative", ["train.seed=-1"], ["train.seed", "-1"]),
    ("seed-float", ["train.seed=1.5"], ["train.seed", "1.5"]),
    ("compile-string", ['train.compile="yes"'], ["train.compile", "'yes'"]),
    ("log-every-zero", ["train.log_every=0"], ["train.log_every", "0"]),
    ("checkpoint-negative", ["train.checkpoint_every=-1"], ["train.checkpoint_every", "-1"]),
    ("max-rollbacks-bool", ["train.max_rollbacks=true"], ["train.max_rollbacks", "True"]),
    ("train-unknown-key", ["train.iteration=5"], ["train: unknown key 'iteration'", "iterations"]),
    # the --set syntax itself
    ("set-no-equals", ["nosection"], ["--set", "section.key=value", "'nosection'"]),
    ("set-no-key", ["train=5"], ["--set", "section.key=value"]),
    ("set-unknown-section", ["solver.x=1"], ["--set", "unknown section 'solver'"]),
    ("set-empty-section", [".x=1"], ["--set", "unknown section ''"]),
]

CATALOGUE_KEYWORDS = [
    ("hjb-lam-negative", eq("HJBLQ", "dim = 2", "lam = -1.0"), ["lam", "-1.0"]),
    ("hjb-pull-negative", eq("HJBLQ", "dim = 2", "pull = -0.5"), ["pull", "-0.5"]),
    ("hjb-lam-inf", eq("HJBLQ", "dim = 2", "lam = inf"), ["lam", "finite", "inf"]),
    ("allen-cahn-unknown", eq("AllenCahn", "dim = 2", "sigma = 1.0"), ["equation AllenCahn", "unknown key 'sigma'"]),
    ("basket-rho", eq("GeometricBasketCall", "dim = 2", "rho = 2.0"), ["rho", "2.0"]),
    ("basket-strike-nan", eq("GeometricBasketCall", "dim = 2", "strike = nan"), ["strike", "finite", "nan"]),
    ("basket-x0-negative", eq("GeometricBasketCall", "dim = 2", "x0 = -1.0"), ["x0", "-1.0"]),
    ("barenblatt-sigma-max", eq("BlackScholesBarenblatt", "dim = 2", "sigma_max = 0.0"), ["sigma_max", "0.0"]),
    ("default-risk-delta", eq("DefaultRisk", "dim = 2", "delta = 1.5"), ["delta", "1.5"]),
    ("reaction-kappa-inf", eq("ReactionDiffusion", "dim = 2", "kappa = inf"), ["kappa", "finite", "inf"]),
    ("quadratic-alpha", eq("QuadraticGradient", "dim = 2", "alpha = -0.1"), ["alpha", "-0.1"]),
    ("diff-rates-string", eq("DiffRates", "dim = 2", 'r_b = "x"'), ["equation DiffRates.r_b", "'x'"]),
    ("burgers-nu", eq("Burgers1D", "nu = 0.0").replace('name = "DeepBSDE"', 'name = "PINN"'), ["nu", "0.0"]),
    ("burgers-dim", eq("Burgers1D", "dim = 2"), ["equation Burgers1D", "unknown key 'dim'"]),
    ("burgers-by-deep-bsde", eq("Burgers1D"), ["method DeepBSDE", "Burgers1D"]),
]

FILES = [
    ("toml-malformed", '[equation\nname = "HeatEquation"\n', ["not valid TOML"]),
    ("toml-duplicate-key", '[equation]\nname = "HeatEquation"\ndim = 2\ndim = 3\n', ["not valid TOML", "dim"]),
    ("toml-unterminated-string", '[equation]\nname = "HeatEquation\n', ["not valid TOML"]),
    ("missing-name", "[equation]\ndim = 2\n", ["[equation] needs a name"]),
    ("empty-file", "", ["[equation] needs a name"]),
    ("unknown-section", BASE + "[solver]\nx = 1\n", ["unknown section [solver]"]),
    ("equation-not-a-table", 'equation = 5\n[method]\nname = "DeepBSDE"\n', ["[equation] must be a table", "5 (int)"]),
    ("method-name-number", BASE.replace('name = "DeepBSDE"', "name = 5"), ["method.name", "unknown method 5"]),
    ("key-in-wrong-section", '[equation]\nname = "HeatEquation"\ntrain = 3\n', ["equation HeatEquation", "unknown key 'train'"]),
]

COMPARES = [
    ("compare-no-methods", '[equation]\nname = "HeatEquation"\n[methods]\n', [], ["[methods] is empty"]),
    ("compare-method-section", BASE, [], ["unknown section [method]", "[methods.<label>]"]),
    ("compare-unknown-label", COMPARE, ["methods.Nope.num_steps=3"], ["--set", "unknown method label 'Nope'"]),
    ("compare-method-seed", COMPARE + "[methods.A.train]\nseed = 1\n", [], ["methods.A.train.seed"]),
    ("compare-method-name", COMPARE, ['methods.A.name="Galerkin"'], ["methods.A.name", "'Galerkin'"]),
    ("compare-y0-range-nan", COMPARE, ["methods.A.y0_range=[nan, 1.0]"], ["[methods.A]", "y0_range", "nan"]),
    ("compare-train-lr-inf", COMPARE, ["methods.A.train.lr_values=[inf]"], ["[methods.A]", "train.lr_values", "inf"]),
    ("compare-bad-path", COMPARE, ["methods.A.train.x.y=1"], ["--set", "methods.LABEL.train.KEY"]),
]


def _run(tmp_path: Path, capsys, argv: list[str]) -> str:
    """Run the command line; return stderr after checking exit code 2, no traceback, nothing trained."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.err, captured.out[-500:])
    assert "Traceback" not in captured.err and captured.err.startswith("deepbsde: error: "), captured.err
    assert not list(tmp_path.rglob("history.csv")), "training started"
    return captured.err


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("sets, words", [c[1:] for c in SOLVE_SETS], ids=[c[0] for c in SOLVE_SETS])
def test_bad_set_values_exit_2(tmp_path, capsys, sets, words) -> None:
    argv = ["solve", _config(tmp_path, BASE), "--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")]
    err = _run(tmp_path, capsys, argv + [a for s in sets for a in ("--set", s)])
    assert all(w in err for w in words), (words, err)


@pytest.mark.parametrize("text, words", [c[1:] for c in CATALOGUE_KEYWORDS + FILES],
                         ids=[c[0] for c in CATALOGUE_KEYWORDS + FILES])
def test_bad_config_files_exit_2(tmp_path, capsys, text, words) -> None:
    err = _run(tmp_path, capsys, ["solve", _config(tmp_path, text), "--no-progress", "--device", "cpu",
                                  "--out", str(tmp_path / "run")])
    assert all(w in err for w in words), (words, err)


@pytest.mark.parametrize("text, sets, words", [c[1:] for c in COMPARES], ids=[c[0] for c in COMPARES])
def test_bad_compare_configs_exit_2(tmp_path, capsys, text, sets, words) -> None:
    argv = ["compare", _config(tmp_path, text), "--no-progress", "--device", "cpu", "--out", str(tmp_path / "cmp")]
    err = _run(tmp_path, capsys, argv + [a for s in sets for a in ("--set", s)])
    assert all(w in err for w in words), (words, err)


ARGUMENTS = [
    ("device-unknown", ["--device", "tpu"], ["device", "'tpu'"]),
    ("device-cuda-index", ["--device", "cuda:99"], ["device", "'cuda:99'"]),
    ("out-below-file", ["--out", "{file}/run"], ["--out", "existing file"]),
    ("out-is-file", ["--out", "{file}"], ["--out", "existing file"]),
    ("resume-not-a-run", ["--resume", "{tmp}/nothing"], ["--resume", "not a run folder"]),
    ("no-config", [], ["solve: expected a config file"]),
    ("missing-file", ["{tmp}/missing.toml"], ["config: no such file"]),
]


@pytest.mark.parametrize("args, words", [c[1:] for c in ARGUMENTS], ids=[c[0] for c in ARGUMENTS])
def test_bad_arguments_exit_2(tmp_path, capsys, args, words) -> None:
    if args[:2] == ["--device", "cuda:99"] and torch.cuda.device_count() > 99:  # pragma: no cover
        pytest.skip("a machine with 100 GPUs")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = [a.format(file=blocker, tmp=tmp_path) for a in args]
    config = [] if any(a.startswith("--resume") or a.endswith(".toml") for a in args) or not args \
        else [_config(tmp_path, BASE)]
    err = _run(tmp_path, capsys, ["solve", *config, "--no-progress", *args])
    assert all(w in err for w in words), (words, err)


def test_the_table_is_large_enough() -> None:
    cases = len(SOLVE_SETS) + len(CATALOGUE_KEYWORDS) + len(FILES) + len(COMPARES) + len(ARGUMENTS)
    assert cases >= 50, cases
