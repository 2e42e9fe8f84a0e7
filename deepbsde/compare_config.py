"""Config files of ``deepbsde compare``: one equation, shared training settings, several methods.

::

    [equation]                 # as for `deepbsde solve`
    name = "HJBLQ"
    dim = 10
    [train]                    # TrainConfig fields shared by every method, plus seed (the same for all)
    iterations = 2000
    seed = 0
    [methods.DeepBSDE]         # one table per method; the key is its label, `name` defaults to the label
    num_steps = 20
    [methods.DeepBSDE.train]   # optional: training overrides for this method only (not the seed)
    batch_size = 64
    [methods.PINN-sobol]       # a second PINN under its own label
    name = "PINN"
    sampler = "sobol"
    [methods.DeepBSDE-box]     # the deep BSDE method in region mode: the [region] table of `deepbsde solve`
    name = "DeepBSDE"
    [methods.DeepBSDE-box.region]
    type = "box"
    lo = -1.0
    hi = 1.0

``--set`` assignments address the same paths: ``equation.dim=5``, ``train.iterations=100``,
``methods.PINN.probes=8``, ``methods.PINN.train.batch_size=256``, ``methods.DeepBSDE-box.region.lo=-2``. Every
key is validated as for ``deepbsde solve`` (unknown keys and wrong types are refused with the expected ones
listed). With a region, ``compare`` draws the method's u(0, ·) along a line in it and measures the L2 errors
of u and ∇u over it (:mod:`deepbsde.compare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .config import TrainConfig
from .configfile import build_from_config, check_tables, method_registry, parse_value, read_toml
from .errors import ConfigError, describe
from .methods.base import Method
from .pinn_problem import ResidualProblem
from .problem import Problem

__all__ = ["load_compare_config", "apply_compare_overrides", "build_compare_from_config"]

SECTIONS = ("equation", "train", "methods")


def load_compare_config(path: str | Path) -> dict[str, Any]:
    """Read a compare config (TOML) and check its sections."""
    return check_compare_sections(read_toml(path), str(path))


def check_compare_sections(data: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    hint = " (a compare config lists its methods under [methods.<label>])" if "method" in data else ""
    out: dict[str, Any] = check_tables(data, SECTIONS, where, hint)
    if not out["methods"]:
        raise ConfigError(f"{where}: [methods] is empty; expected one table [methods.<label>] per method")
    for label, table in out["methods"].items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [methods.{label}] must be a table, received {describe(table)}")
        if "train" in table and not isinstance(table["train"], Mapping):
            raise ConfigError(f"{where}: [methods.{label}.train] must be a table, received {describe(table['train'])}")
        if "seed" in table.get("train", {}):
            raise ConfigError(f"{where}: methods.{label}.train.seed: every method runs with the shared "
                              f"train.seed; remove it here")
        out["methods"][label] = {k: (dict(v) if k == "train" else v) for k, v in table.items()}
    return out


def apply_compare_overrides(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``path=value`` strings (``equation.dim=5``, ``methods.PINN.train.iterations=10``); values are
    read as TOML, and as a plain string if they are not valid TOML."""
    config = {"equation": dict(config["equation"]), "train": dict(config["train"]),
              "methods": {k: {kk: (dict(vv) if kk == "train" else vv) for kk, vv in v.items()}
                          for k, v in config["methods"].items()}}
    for text in assignments:
        lhs, sep, rhs = text.partition("=")
        parts = [p.strip() for p in lhs.split(".")]
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set: expected section.key=value, received {text!r}")
        value = parse_value(rhs)
        section = parts[0]
        if section in ("equation", "train") and len(parts) == 2:
            config[section][parts[1]] = value
        elif section == "methods" and len(parts) == 3:
            _method_table(config, parts[1], text)[parts[2]] = value
        elif section == "methods" and len(parts) == 4 and parts[2] in ("train", "region"):
            table = _method_table(config, parts[1], text)
            sub = table.get(parts[2])
            if sub is None:
                sub = table[parts[2]] = {}
            elif not isinstance(sub, Mapping):
                raise ConfigError(f"--set {text!r}: methods.{parts[1]}.{parts[2]} is {describe(sub)}, not a table")
            else:
                sub = table[parts[2]] = dict(sub)
            sub[parts[3]] = value
        else:
            raise ConfigError(f"--set {text!r}: expected equation.KEY, train.KEY, methods.LABEL.KEY, "
                              f"methods.LABEL.train.KEY or methods.LABEL.region.KEY")
    return config


def _method_table(config: dict[str, Any], label: str, text: str) -> dict[str, Any]:
    if label not in config["methods"]:
        raise ConfigError(f"--set {text!r}: unknown method label {label!r}; labels: {', '.join(config['methods'])}")
    return config["methods"][label]


def build_compare_from_config(config: Mapping[str, Any]) -> tuple[Problem | ResidualProblem, dict[str, Method],
                                                                   dict[str, TrainConfig], int]:
    """``(problem, {label: method}, {label: train}, seed)``; every key validated first."""
    config = check_compare_sections(config)
    problem = None
    methods: dict[str, Method] = {}
    trains: dict[str, TrainConfig] = {}
    registry = method_registry()
    seed = 0
    for label, table in config["methods"].items():
        table = dict(table)
        override = table.pop("train", {})
        name = table.pop("name", label)
        if name not in registry:
            raise ConfigError(f"methods.{label}.name: unknown method {name!r}; expected one of: "
                              f"{', '.join(registry)} (the label is the name unless `name` is given)")
        single = {"equation": config["equation"], "method": {"name": name, **table},
                  "train": {**config["train"], **override}}
        try:
            built_problem, method, train, seed = build_from_config(single)
        except ConfigError as exc:
            raise ConfigError(f"[methods.{label}]: {exc}") from exc
        problem = built_problem if problem is None else problem
        methods[label] = method
        trains[label] = train
    return problem, methods, trains, seed
