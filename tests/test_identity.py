"""The identity of a problem (issue 12, item 2): a problem is described and identified by the arguments of
its constructor call and by its behaviour, whatever names its class stores them under.

* ``describe()`` (config.json, reports) records every constructor argument, defaults included, also when the
  class stores it under another name (``rate`` as ``self._rate``);
* :func:`deepbsde.problem_identity` is equal for equal problems and differs when an argument, or the
  behaviour (a problem changed after construction, a function argument), differs;
* what can be identified neither by JSON arguments nor by behaviour is refused with a ProblemError;
* a run resumed with another problem is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import deepbsde
from deepbsde import CheckpointError, DeepBSDE, ProblemError, TrainConfig, problem_identity, solve
from equations import HJBLQ, Burgers1D, HeatEquation


class RatedHeat(deepbsde.Problem):
    """u_t + ½Δu − r u = 0, u(T, x) = |x|²/d, the README's example, but storing r as ``self._rate``
    (a user's class that does not follow the same-name convention)."""

    def __init__(self, dim: int = 3, rate: float = 0.05) -> None:
        super().__init__(dim, 1.0, 0.5)
        self._rate = rate

    def drift(self, t, x):
        return torch.zeros_like(x)

    def diffusion(self, t, x):
        return torch.ones_like(x)

    def driver(self, t, x, y, z):
        return -self._rate * y

    def terminal(self, x):
        return (x * x).mean(1, keepdim=True)


class ScaledHeat(RatedHeat):
    """A subclass whose constructor calls its parent's with derived values: the outermost call is recorded."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__(dim=3, rate=0.01 * scale)


class FunctionTerminal(RatedHeat):
    """A problem taking a function: its argument has no JSON form, its behaviour identifies it."""

    def __init__(self, g=None, dim: int = 3) -> None:
        super().__init__(dim=dim)
        self._g = g

    def terminal(self, x):
        return self._g(x)


class Float32Only(FunctionTerminal):
    """A problem whose functions refuse float64: no behaviour fingerprint."""

    def drift(self, t, x):
        if x.dtype == torch.float64:
            raise TypeError("this problem runs in float32 only")
        return torch.zeros_like(x)


def test_describe_records_arguments_stored_under_other_names() -> None:
    assert RatedHeat(rate=5.0).describe() == {"name": "RatedHeat", "dim": 3, "rate": 5.0}
    assert RatedHeat().describe()["rate"] == 0.05  # defaults included
    assert repr(RatedHeat(4, 0.2)) == "RatedHeat(dim=4, rate=0.2)"
    assert ScaledHeat(scale=3.0).describe() == {"name": "ScaledHeat", "scale": 3.0}  # the outermost call
    # the catalogue's convention is kept: the checked values of the attributes of the same name
    assert HeatEquation(dim=2, sigma=2).describe() == {"name": "HeatEquation", "dim": 2, "horizon": 1.0,
                                                       "x0": [0.0, 0.0], "sigma": 2.0}
    assert Burgers1D(nu=0.1).describe() == {"name": "Burgers1D", "nu": 0.1, "horizon": 1.0}


def test_identity_equal_for_equal_problems_and_differs_with_an_argument() -> None:
    a, b = problem_identity(RatedHeat(rate=0.05)), problem_identity(RatedHeat(3, 0.05))
    assert a == b  # positional or keyword, the same call
    assert json.loads(json.dumps(a)) == a  # JSON-representable, for checkpoints and config.json
    assert a["class"] == f"{__name__}:RatedHeat"
    assert a["arguments"] == {"dim": 3, "rate": 0.05} and len(a["behaviour"]) == 64
    c = problem_identity(RatedHeat(rate=5.0))
    assert c["arguments"]["rate"] == 5.0 and c["behaviour"] != a["behaviour"] and c != a
    assert problem_identity(ScaledHeat(2.0)) != problem_identity(ScaledHeat(3.0))
    assert problem_identity(HJBLQ(dim=5, pull=0.5))["behaviour"] != problem_identity(HJBLQ(dim=5))["behaviour"]
    assert problem_identity(Burgers1D()) == problem_identity(Burgers1D())
    assert problem_identity(Burgers1D(nu=0.02)) != problem_identity(Burgers1D())


def test_identity_sees_a_problem_changed_after_construction() -> None:
    changed = RatedHeat(rate=0.05)
    changed._rate = 5.0  # the constructor arguments say 0.05; the behaviour says otherwise
    a, b = problem_identity(RatedHeat(rate=0.05)), problem_identity(changed)
    assert a["arguments"] == b["arguments"] and a["behaviour"] != b["behaviour"]


def test_identity_of_a_function_argument_is_its_behaviour() -> None:
    square = problem_identity(FunctionTerminal(lambda x: (x * x).mean(1, keepdim=True)))
    again = problem_identity(FunctionTerminal(lambda x: (x * x).mean(1, keepdim=True)))
    cube = problem_identity(FunctionTerminal(lambda x: (x ** 3).mean(1, keepdim=True)))
    assert square["arguments"]["g"] == {"unrepresentable": "builtins.function"}
    assert square == again and square["behaviour"] != cube["behaviour"]


def test_what_cannot_be_identified_is_refused() -> None:
    problem = Float32Only(lambda x: x.sum(1, keepdim=True))
    with pytest.raises(ProblemError, match=r"Float32Only: cannot identify .*'g'.* not JSON-representable.*"
                                           r"float32 only"):
        problem_identity(problem)
    # the same problem with JSON arguments only is identified by them
    assert problem_identity(Float32Only(None))["behaviour"] is None
    # arguments not recorded (built around the constructor) and no behaviour: refused
    bare = Float32Only.__new__(Float32Only)
    bare.__dict__.clear()
    bare.__dict__.update(dim=3, horizon=1.0, x0=(0.5,) * 3, _rate=0.05, _g=None)
    with pytest.raises(ProblemError, match="arguments were not recorded"):
        problem_identity(bare)
    with pytest.raises(ProblemError, match="expected a deepbsde.Problem"):
        problem_identity("HeatEquation")


# --- resume with another problem ----------------------------------------------------------------------

def _run(problem, out: Path, iterations: int, resume: bool = False):
    train = TrainConfig(iterations=iterations, batch_size=16, valid_size=32, log_every=10, checkpoint_every=10,
                        dtype="float64", lr_values=(1e-2,))
    return solve(problem, DeepBSDE(num_steps=4, hidden=(8,), z_scale=1.0), train=train, seed=0, out=out,
                 resume=resume, progress=False, device="cpu")


def test_resume_with_another_problem_is_refused(tmp_path: Path) -> None:
    """The issue's reproduction: rate stored as self._rate, trained with 0.05, resumed with 5.0."""
    out = tmp_path / "run"
    _run(RatedHeat(rate=0.05), out, 20)
    assert json.loads((out / "config.json").read_text())["problem"] == {"name": "RatedHeat", "dim": 3,
                                                                       "rate": 0.05}
    with pytest.raises(CheckpointError, match="belongs to another run"):
        _run(RatedHeat(rate=5.0), out, 30, resume=True)
    resumed = _run(RatedHeat(rate=0.05), out, 30, resume=True)  # the same problem is accepted
    assert resumed.run_warnings == () and resumed.history[-1].step == 30


def test_resume_with_a_problem_changed_after_construction_is_refused(tmp_path: Path) -> None:
    """Only the behaviour fingerprint of problem_identity tells these apart: solve's checkpoint fingerprint
    uses it."""
    out = tmp_path / "run"
    _run(RatedHeat(rate=0.05), out, 20)
    changed = RatedHeat(rate=0.05)
    changed._rate = 5.0
    with pytest.raises(CheckpointError, match="belongs to another run"):
        _run(changed, out, 30, resume=True)
