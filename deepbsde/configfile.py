r"""Config files: the edge where strings become objects (and the only place a catalogue name is looked up).

A config is TOML with three sections, and an optional fourth::

    [equation]            # name = a catalogue class ("AllenCahn") or "module:Class", plus its keywords
    name = "AllenCahn"
    dim = 100
    [method]              # name = "DeepBSDE", "PINN" or "FBSNN", plus its keywords
    name = "DeepBSDE"
    num_steps = 20
    [train]               # TrainConfig fields, plus seed
    iterations = 4000
    seed = 0
    [region]              # optional, DeepBSDE only: region mode (deepbsde.regions), x0 drawn from a region
    type = "box"          # x0 uniform in the box [lo, hi]^d: lo, hi numbers or lists of d numbers
    lo = -1.0
    hi = 1.0

A ``[region]`` of ``type = "line"`` draws :math:`x_0 = s \cdot` ``direction`` with ``s`` uniform in ``[lo, hi]``
(``direction`` a number, meaning every coordinate equal to it, or a list of d numbers)::

    [region]
    type = "line"
    direction = 1.0
    lo = 80.0
    hi = 120.0

With a region the trained solution gives :math:`u(0, x)` and :math:`\nabla u(0, x)` over it (``Solution.u``,
``grad_u``, ``deepbsde eval``) and the summary reports ``region_rel_l2`` and ``region_grad_rel_l2`` against the
problem's reference at any point where it has one; ``--set region.lo=-2`` overrides as for the other sections.
The table becomes the method's ``region`` keyword (:class:`~deepbsde.DeepBSDE`); a user's sampler (a callable)
has no config form.

Catalogue names come from the ``deepbsde.equations`` entry-point group, so that other packages can
register their own equations without deepbsde importing them.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import re
import tomllib
import typing
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Mapping

from .config import TrainConfig
from .errors import ConfigError, ProblemError, describe
from .methods import DeepBSDE, Method
from .pinn_problem import ResidualProblem
from .problem import Problem

__all__ = ["load_config", "apply_overrides", "build_from_config", "equation_registry", "method_registry",
           "lookup_equation"]

SECTIONS = ("equation", "method", "train", "region")
ENTRY_POINT_GROUP = "deepbsde.equations"


def equation_registry() -> dict[str, Any]:
    """Catalogue name -> entry point (loaded lazily)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def method_registry() -> dict[str, type[Method]]:
    methods: dict[str, type[Method]] = {"DeepBSDE": DeepBSDE}
    try:
        from .methods.pinn import PINN
    except ImportError:  # pragma: no cover - the PINN ships with the package
        pass
    else:
        methods["PINN"] = PINN
    from .methods.fbsnn import FBSNN

    methods["FBSNN"] = FBSNN
    return methods


def lookup_equation(name: object) -> type[Problem] | type[ResidualProblem]:
    """A Problem (or ResidualProblem) class from a catalogue name (case-insensitive, ``_`` ignored) or ``"module:Class"``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"equation.name: expected a catalogue name or 'module:Class', received {describe(name)}")
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"equation.name: cannot import {name!r} ({exc})") from exc
    else:
        registry = equation_registry()
        key = {k.lower().replace("_", ""): k for k in registry}.get(name.lower().replace("_", ""))
        if key is None:
            raise ConfigError(f"equation.name: unknown equation {name!r}; expected one of: "
                              f"{', '.join(sorted(registry))} (or 'module:Class')")
        cls = registry[key].load()
    if not (isinstance(cls, type) and issubclass(cls, (Problem, ResidualProblem))):
        raise ConfigError(f"equation.name: {name!r} is not a deepbsde.Problem or deepbsde.ResidualProblem "
                          f"subclass, received {describe(cls)}")
    return cls


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing file or invalid TOML is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config: no such file {str(path)!r}")
    text = path.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML ({exc}){_offending_line(text, exc)}") from exc


def _offending_line(text: str, exc: Exception) -> str:
    """``"; line N: <its text>"`` for a TOML error that names line ``N`` (so the message shows the key)."""
    match = re.search(r"at line (\d+)", str(exc))
    lines = text.splitlines()
    if match is None or not 1 <= int(match.group(1)) <= len(lines):
        return ""
    number = int(match.group(1))
    return f"; line {number}: {lines[number - 1].strip()!r}"


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a TOML config and check its sections."""
    return check_sections(read_toml(path), str(path))


def check_sections(data: Mapping[str, Any], where: str = "config") -> dict[str, dict[str, Any]]:
    """The ``[equation]``, ``[method]`` and ``[train]`` tables of a solve config, and ``[region]`` where it is
    given and not empty."""
    out = check_tables(data, SECTIONS, where)
    if not out["region"]:
        del out["region"]
    return out


def check_tables(data: Mapping[str, Any], sections: tuple[str, ...], where: str, hint: str = "") -> dict[str, dict[str, Any]]:
    """Every one of ``sections`` as a table (empty where absent), no other section, and an equation name;
    ``hint`` is appended to the unknown-section message."""
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]; expected sections: "
                          + ", ".join(f"[{s}]" for s in sections) + hint)
    out: dict[str, dict[str, Any]] = {}
    for section in sections:
        value = data.get(section, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: [{section}] must be a table, received {describe(value)}")
        out[section] = dict(value)
    if "name" not in out["equation"]:
        raise ConfigError(f"{where}: [equation] needs a name (a catalogue class or 'module:Class')")
    return out


def parse_value(text: str) -> Any:
    """A ``--set`` value read as TOML (``2``, ``0.5``, ``[1, 2]``, ``true``), or the plain string if it is not."""
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def apply_overrides(config: dict[str, dict[str, Any]], assignments: list[str]) -> dict[str, dict[str, Any]]:
    """Apply ``section.key=value`` strings; values are read as TOML (``2``, ``0.5``, ``[1, 2]``, ``true``),
    and as a plain string if they are not valid TOML."""
    config = {k: dict(v) for k, v in config.items()}
    for text in assignments:
        lhs, sep, rhs = text.partition("=")
        section, dot, key = lhs.strip().partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--set: expected section.key=value, received {text!r}")
        if section not in SECTIONS:
            raise ConfigError(f"--set {text!r}: unknown section {section!r}; expected one of: {', '.join(SECTIONS)}")
        config.setdefault(section, {})[key.strip()] = parse_value(rhs)
    return config


def _check_keywords(where: str, kwargs: Mapping[str, Any], target: Any) -> None:
    """Reject unknown keywords and values of the wrong type, from ``target``'s signature."""
    sig = inspect.signature(target)
    params = {k: p for k, p in sig.parameters.items()
              if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; expected one of: {', '.join(params)}")
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolved annotations: fall back to the defaults' types
        hints = {}
    for key, value in kwargs.items():
        expected = hints.get(key, params[key].annotation)
        if expected is inspect.Parameter.empty:
            default = params[key].default
            expected = type(default) if default not in (inspect.Parameter.empty, None) else Any
        if not _matches(value, expected):
            raise ConfigError(f"{where}.{key}: expected {_type_name(expected)}, received {describe(value)}")
        check_finite(f"{where}.{key}", value)


def check_finite(where: str, value: Any) -> None:
    """Raise :class:`ConfigError` naming ``where`` if ``value`` is, or holds (in lists and tables), a
    non-finite number: a config's numbers are all finite (TOML allows ``inf`` and ``nan``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, received {describe(value)}")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_finite(f"{where}[{i}]", item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_finite(f"{where}.{key}", item)


def _matches(value: Any, expected: Any) -> bool:
    if expected is Any or expected is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected in (bool, str):
        return isinstance(value, expected)
    if origin in (tuple, list, typing.Sequence) or expected in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(expected) if a is not Ellipsis]
        return not args or all(any(_matches(v, a) for a in args) for v in value)
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def _type_name(expected: Any) -> str:
    if isinstance(expected, type):
        return expected.__name__
    return str(expected).replace("typing.", "")


def construct_equation(cls: type, kwargs: Mapping[str, Any]) -> Problem | ResidualProblem:
    """``cls(**kwargs)``; a ValueError or TypeError that a (user) constructor raises becomes a
    :class:`ConfigError` naming the equation (a ProblemError, which names its field, stays a ProblemError
    and gains the equation's name)."""
    try:
        return cls(**kwargs)
    except ProblemError as exc:
        raise ProblemError(f"equation {cls.__name__}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ConfigError(f"equation {cls.__name__}: its constructor refused the keywords ({given or 'none'}): "
                          f"{type(exc).__name__}: {exc}") from exc


def build_from_config(config: Mapping[str, Mapping[str, Any]]) -> tuple[Problem, Method, TrainConfig, int]:
    """Turn a checked config into ``(problem, method, train, seed)``; every key is validated first."""
    config = check_sections(config)
    eq_kwargs = dict(config["equation"])
    cls = lookup_equation(eq_kwargs.pop("name"))
    _check_keywords(f"equation {cls.__name__}", eq_kwargs, cls.__init__)

    m_kwargs = dict(config["method"])
    methods = method_registry()
    m_name = m_kwargs.pop("name", "DeepBSDE")
    if m_name not in methods:
        raise ConfigError(f"method.name: unknown method {m_name!r}; expected one of: {', '.join(methods)}")
    m_cls = methods[m_name]
    fields = {f.name for f in dataclasses.fields(m_cls) if f.init}
    unknown = sorted(set(m_kwargs) - fields)
    if unknown:
        raise ConfigError(f"method {m_name}: unknown key {unknown[0]!r}; expected one of: {', '.join(sorted(fields))}")
    _check_keywords(f"method {m_name}", m_kwargs, m_cls)
    region = config.get("region")
    if region:
        if m_name != "DeepBSDE":
            raise ConfigError(f"[region]: only the DeepBSDE method has a region mode; received method.name = "
                              f"{m_name!r}")
        if m_kwargs.get("region") is not None:
            raise ConfigError("[region]: the region is given both as a [region] table and as method.region; "
                              "expected one of them")
        check_finite("region", region)
        m_kwargs["region"] = dict(region)

    t_kwargs = dict(config["train"])
    seed = t_kwargs.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"train.seed: expected a non-negative integer, received {describe(seed)}")
    train = TrainConfig.from_mapping(t_kwargs)  # checks its own keys and values
    problem = construct_equation(cls, eq_kwargs)
    method = m_cls(**m_kwargs)
    return problem, method, train, seed
