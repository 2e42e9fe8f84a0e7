"""Saved solutions: :meth:`deepbsde.Solution.save` and :func:`deepbsde.load`.

A saved solution is a folder holding two files (a run folder of :func:`deepbsde.solve` holds them beside its
config, history and summary: ``solve`` saves every solution it returns into its run folder)::

    solution.json   what was solved and how: the problem's description and identity
                    (:func:`deepbsde.problem_identity`), the method's class and constructor keywords, the
                    seed, the dtype, every field of the Solution (u0, u0_interval, grad_u0, history, ...),
                    the summary (as summary.json) and the model's plain attributes (below)
    model.pt        the trained model's ``state_dict`` (CPU tensors; ``torch.save``)

:func:`load_solution` rebuilds the model with ``method.build(problem, generator)`` (from the run's
initialisation seed), then loads the state dict with ``torch.load(weights_only=True)``, so that nothing but
tensors is unpickled. Building may draw random numbers (the deep BSDE method's pilot simulation, the PINN's
input scaling); none of them survives: every parameter and buffer comes from the state dict, and the plain
number attributes of every submodule that are not in it (the deep BSDE model's ``y_shift``, ``y_scale``,
``z0_scale``, ``z_scale``, a network's ``out_scale``, ...) are saved in ``solution.json`` and restored. The
loaded model therefore evaluates bit for bit like the saved one on the same device.

A deep BSDE solution in region mode (``DeepBSDE(region=...)``) keeps its region as its description (``{"type":
"box", "lo": ..., "hi": ...}``) among the method's keywords, from which load rebuilds it; a user's sampler
(a callable) is saved by name only, so that loading it needs the method passed:
``deepbsde.load(dir, method=DeepBSDE(region=sampler, ...))`` (a clear :class:`~deepbsde.errors.ConfigError`
says so otherwise).

The problem must be the one solved: its :func:`~deepbsde.problem_identity` (class, constructor arguments and
the behaviour hash of its functions) is compared with the saved one, and a difference is refused with
:class:`~deepbsde.errors.CheckpointError` naming what differs.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, ProblemError, describe
from .identity import problem_identity
from .methods.base import Method
from .pinn_problem import ResidualProblem
from .problem import Problem, Reference
from .runlog import write_json_atomic
from .solution import History, HistoryRow, Solution

__all__ = ["save_solution", "load_solution", "rebuild_problem", "SOLUTION_FILE", "MODEL_FILE"]

SOLUTION_FILE = "solution.json"
MODEL_FILE = "model.pt"
FORMAT = "deepbsde-solution"
FORMAT_VERSION = 1

_PLAIN = (bool, int, float)


# --- save ---------------------------------------------------------------------------------------------

def save_solution(solution: Solution, directory: str | Path) -> Path:
    """Write ``solution`` into ``directory`` (made if needed; other files there are kept) and return it.

    Needs the trained model, the problem and the method, which every Solution returned by
    :func:`deepbsde.solve` (or :func:`load_solution`) holds; raises :class:`~deepbsde.errors.ConfigError`
    otherwise, and :class:`~deepbsde.errors.ProblemError` for a problem that cannot be identified.
    """
    model, problem, method = solution.model, solution.problem_object, solution.method_object
    missing = [name for name, value in (("model", model), ("problem_object", problem), ("method_object", method))
               if value is None]
    if missing:
        raise ConfigError(f"Solution.save: this Solution holds no {', '.join(missing)}; only a Solution returned by "
                          f"deepbsde.solve or deepbsde.load can be saved")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Solution.save: expected the model to be a torch nn.Module, received {describe(model)}")
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"Solution.save: expected a folder, received {str(directory)!r}, an existing file")
    directory.mkdir(parents=True, exist_ok=True)
    identity = problem_identity(problem)  # before writing anything: an unidentifiable problem is refused
    state = {k: (v.detach().to("cpu") if isinstance(v, torch.Tensor) else v) for k, v in model.state_dict().items()}
    path = directory / MODEL_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "problem": problem.describe(),
        "problem_identity": identity,
        "method": method.describe(),
        "method_class": _qualified(type(method)),
        "method_keywords": _method_keywords(method),
        "model_class": _qualified(type(model)),
        "model_attributes": _module_attributes(model),
        "seed": solution.seed,
        "dtype": solution.dtype,
        "fields": _fields_to_json(solution),
        "summary": solution.summary(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    write_json_atomic(directory / SOLUTION_FILE, data)
    return directory


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _method_keywords(method: Method) -> dict[str, Any]:
    """The keywords that rebuild ``method``: a dataclass's ``init`` fields, else ``describe()`` without ``name``."""
    if dataclasses.is_dataclass(method):
        out = {f.name: getattr(method, f.name) for f in dataclasses.fields(method) if f.init}
    else:
        out = {k: v for k, v in method.describe().items() if k != "name"}
    return {k: _keyword(v) for k, v in out.items()}


def _keyword(value: Any) -> Any:
    """A method keyword as JSON: tuples as lists, a region (:mod:`deepbsde.regions`) as its description (a user's
    sampler as its name only: :func:`load_solution` then needs ``method=``)."""
    from .regions import Region

    if isinstance(value, Region):
        return value.describe()
    return list(value) if isinstance(value, tuple) else value


def _module_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{submodule name: {attribute: value}}``: the public bool, int and float attributes of every submodule
    (what its state dict does not hold), ``training`` excluded."""
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        values = {k: v for k, v in vars(module).items()
                  if not k.startswith("_") and k != "training" and type(v) in _PLAIN}
        if values:
            out[name] = values
    return out


def _fields_to_json(solution: Solution) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(solution):
        if not f.compare:  # the model, the problem and the method objects
            continue
        value = getattr(solution, f.name)
        if isinstance(value, History):
            value = {"rows": [[getattr(r, k) for k in HistoryRow.FIELDS] for r in value.rows],
                     "metrics": [[step, dict(values)] for step, values in value.metrics]}
        elif isinstance(value, Reference):
            value = {"value": value.value, "source": value.source,
                     "bounds": list(value.bounds) if value.bounds is not None else None}
        elif isinstance(value, Path):
            value = str(value)
        out[f.name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# --- load ---------------------------------------------------------------------------------------------

def read_saved(directory: str | Path) -> dict[str, Any]:
    """The parsed ``solution.json`` of a saved solution; :class:`~deepbsde.errors.CheckpointError` where there is
    none or it is not one."""
    directory = Path(directory)
    path = directory / SOLUTION_FILE
    if not path.is_file():
        what = "a run folder of a run that did not finish" if (directory / "config.json").is_file() else \
            "not a saved solution"
        raise CheckpointError(f"load: {str(directory)!r} holds no {SOLUTION_FILE} ({what}); expected a folder "
                              f"written by Solution.save or a finished deepbsde.solve run")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"load: {path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise CheckpointError(f"load: {path} is not a deepbsde saved solution of format version {FORMAT_VERSION} "
                              f"(format {data.get('format') if isinstance(data, dict) else None!r}, version {version})")
    return data


def rebuild_problem(directory: str | Path, data: dict[str, Any] | None = None) -> Problem | ResidualProblem:
    """The problem of a saved solution: from the command line's config in ``config.json`` where the run was
    started by ``deepbsde solve``, else from the class and constructor arguments of the saved identity."""
    from .configfile import build_from_config, construct_equation, lookup_equation

    directory = Path(directory)
    data = read_saved(directory) if data is None else data
    config_path = directory / "config.json"
    if config_path.is_file():
        try:
            run_config = json.loads(config_path.read_text()).get("run_config")
        except (OSError, ValueError):
            run_config = None
        if isinstance(run_config, dict):
            try:
                return build_from_config(run_config)[0]
            except (ConfigError, ProblemError):  # not a solve config (e.g. a compare's): use the identity
                pass
    identity = data["problem_identity"]
    try:
        cls = lookup_equation(identity["class"])
    except ConfigError as exc:
        raise ConfigError(f"load: cannot rebuild the problem of {str(directory)!r} ({exc}); pass it: "
                          f"deepbsde.load(dir, problem)") from exc
    arguments = dict(identity["arguments"])
    bad = [k for k, v in arguments.items() if isinstance(v, dict) and "unrepresentable" in v]
    if bad:
        raise ConfigError(f"load: the problem of {str(directory)!r} has constructor arguments that were not saved "
                          f"({', '.join(bad)}); pass it: deepbsde.load(dir, problem)")
    return construct_equation(cls, arguments)


def _identity_difference(saved: dict[str, Any], mine: dict[str, Any]) -> list[str]:
    out = []
    if saved.get("class") != mine.get("class"):
        out.append(f"class: saved {saved.get('class')}, given {mine.get('class')}")
    a, b = saved.get("arguments", {}), mine.get("arguments", {})
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            va, vb = _short(a.get(key, "<absent>")), _short(b.get(key, "<absent>"))
            out.append(f"{key}: saved {va}, given {vb}")
    if saved.get("behaviour") != mine.get("behaviour"):
        out.append("behaviour (its functions on the probe batch): saved "
                   f"{str(saved.get('behaviour'))[:12]}..., given {str(mine.get('behaviour'))[:12]}...")
    return out


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > 1 and all(v == value[0] for v in value):
        return f"[{value[0]!r}] * {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rebuild_method(data: dict[str, Any]) -> Method:
    module_name, _, qualname = str(data.get("method_class", "")).partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"load: cannot import the method class {data.get('method_class')!r} ({exc}); pass it: "
                          f"deepbsde.load(dir, problem, method=...)") from exc
    try:
        method = obj(**data.get("method_keywords", {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"load: cannot rebuild the method {data.get('method_class')} from its saved keywords "
                          f"({type(exc).__name__}: {exc}); pass it: deepbsde.load(dir, problem, method=...)") from exc
    if not isinstance(method, Method):
        raise ConfigError(f"load: {data.get('method_class')} is not a deepbsde Method")
    return method


def _json_normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def load_solution(directory: str | Path, problem: Problem | ResidualProblem | None = None, *,
                  method: Method | None = None, device: str | torch.device = "cpu") -> Solution:
    """The Solution saved in ``directory``, with its trained model rebuilt (in evaluation mode, on ``device``).

    ``problem``: the problem that was solved; ``None`` rebuilds it (:func:`rebuild_problem`). Either way its
    identity must equal the saved one, else :class:`~deepbsde.errors.CheckpointError` says what differs.
    ``method``: ``None`` rebuilds it from its saved class and keywords; a given one must describe itself as
    the saved one did (:class:`~deepbsde.errors.ConfigError` otherwise).
    """
    from .paths import make_generator
    from .solve import _derive_seeds, resolve_device

    directory = Path(directory)
    data = read_saved(directory)
    if problem is None:
        problem = rebuild_problem(directory, data)
    elif not isinstance(problem, (Problem, ResidualProblem)):
        raise ConfigError(f"load: problem: expected a deepbsde.Problem or ResidualProblem, received {describe(problem)}")
    mine = _json_normal(problem_identity(problem))
    saved_identity = data.get("problem_identity", {})
    if mine != saved_identity:
        differences = _identity_difference(saved_identity, mine)
        raise CheckpointError(f"load: the solution in {str(directory)!r} was trained on another problem than "
                              f"{problem.name}(dim={problem.dim}): " + "; ".join(differences or ["identity differs"]))
    if method is None:
        method = _rebuild_method(data)
    elif not isinstance(method, Method):
        raise ConfigError(f"load: method: expected a deepbsde method, received {describe(method)}")
    if _json_normal(method.describe()) != data.get("method"):
        raise ConfigError(f"load: the given method {_short(method.describe())} differs from the saved one "
                          f"{_short(data.get('method'))}")
    dev = resolve_device(device)
    seed = int(data.get("seed", 0))
    init_seed = _derive_seeds(seed, 0)[0]
    try:
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for missing, truncated or foreign files
        first = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise CheckpointError(f"load: {directory / MODEL_FILE} cannot be read ({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"load: {directory / MODEL_FILE} is not a state dict, received {type(state).__name__}")
    model = method.build(problem, make_generator(init_seed))
    dtype = next((v.dtype for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    if dtype is not None:
        model = model.to(dtype=dtype)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"load: {directory / MODEL_FILE} does not fit the model that {method.name} builds "
                              f"for this problem: {str(exc).splitlines()[0]}") from exc
    _restore_attributes(model, data.get("model_attributes", {}))
    model = model.to(device=dev)
    model.eval()
    return Solution(**_fields_from_json(data.get("fields", {})), model=model, problem_object=problem,
                    method_object=method)


def _restore_attributes(model: nn.Module, saved: dict[str, dict[str, Any]]) -> None:
    modules = dict(model.named_modules())
    for name, values in saved.items():
        module = modules.get(name)
        if module is None:
            raise CheckpointError(f"load: the saved model has a submodule {name!r} that the rebuilt one lacks")
        for key, value in values.items():
            current = vars(module).get(key)
            if type(current) in _PLAIN or current is None:
                setattr(module, key, value)


def _fields_from_json(fields: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in dataclasses.fields(Solution) if f.compare}
    out: dict[str, Any] = {}
    for name, value in fields.items():
        f = known.get(name)
        if f is None:
            continue  # a field of another version
        if name == "history":
            value = History(tuple(HistoryRow(int(r[0]), *map(float, r[1:])) for r in value.get("rows", [])),
                            tuple((int(s), {k: float(v) for k, v in vals.items()}) for s, vals in value.get("metrics", [])))
        elif name == "reference":
            value = None if value is None else Reference(
                value.get("value"), value.get("source", ""),
                tuple(value["bounds"]) if value.get("bounds") is not None else None)
        elif name == "run_dir":
            value = Path(value) if value is not None else None
        elif isinstance(value, list) and "tuple" in str(f.type):
            value = tuple(value)
        out[name] = value
    missing = [name for name, f in known.items() if name not in out
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise CheckpointError(f"load: the saved solution lacks the field(s) {', '.join(missing)}")
    return out
