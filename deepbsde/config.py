"""Training configuration: everything about *how* to train that is neither the problem nor the method."""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, Mapping, Sequence

import torch

from .errors import ConfigError, describe

__all__ = ["TrainConfig", "piecewise_constant"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop shared by every method.

    Parameters
    ----------
    iterations:
        The budget of optimiser steps (training stops earlier once ``tolerance`` is met).
    batch_size, valid_size:
        Paths (or collocation points) per training step, and in the fixed held-out validation batch.
    lr_values, lr_boundaries:
        Piecewise-constant learning rate of Adam: ``lr_values[i]`` for
        ``lr_boundaries[i-1] < step <= lr_boundaries[i]``; ``len(lr_values) == len(lr_boundaries) + 1``.
        ``lr_boundaries = None`` (the default) spreads the boundaries evenly over the second half of the
        budget: with the default three values, 1e-2 up to half of ``iterations``, 1e-3 to three quarters,
        1e-4 after.
    tolerance:
        Relative accuracy asked for: training stops once the 95 % error bar of u(0, x0) (statistical part
        on ``eval_paths`` fresh paths, plus the time-step and control bias bounds; see
        :mod:`deepbsde.estimators`) is below ``tolerance * |u0|``, checked at logged steps. ``None`` (or 0, as
        TOML has no null): train to the budget. Where the budget ends first, the result says that the tolerance was not reached.
    max_seconds:
        A wall-clock budget for the training loop (``None`` or 0: none). Like ``iterations``, it caps ``tolerance``.
    eval_paths:
        Fresh paths for the error bar after training. ``None``: where the run stopped at ``tolerance``, the
        fewest (a multiple of 1024) whose predicted error bar is within 0.8 of it; otherwise (the budget ended
        it) as much work as the training took (``iterations * batch_size / 3`` paths, each costing the error
        bar's two grids), at least 4096 and at most a fixed amount of work
        (:func:`deepbsde.estimators.default_paths`: about 40,000 paths at d = 100, N = 20, fewer at large
        ``d x num_steps``), so that a short run is not followed by a long error bar. Set it to tighten the
        Greeks' standard errors.
    log_every:
        Validate, record a history row and write TensorBoard scalars every this many steps.
    dtype:
        ``"float32"`` (fast) or ``"float64"``.
    checkpoint_every:
        Write a checkpoint every this many steps into the run folder (``0``: none). A checkpoint holds a
        validated state: it is written at the first logged step (``log_every``) at or after each multiple
        of ``checkpoint_every``, and at the last step.
    max_rollbacks:
        How many times a non-finite or exploding loss rolls back to the last good state with the
        learning rate multiplied by ``rollback_lr_factor`` before training stops with an error.
    explode_factor:
        A validation loss above ``explode_factor`` times the best one so far counts as exploding.
    compile:
        Compile the loss with ``torch.compile``. Off by default: on a CPU the compilation costs far more than it
        saves. Measured on the main job's step (Allen-Cahn d = 100, shared network, batch 256, 2 cores, torch
        2.13, one process): the first compiled step took 62 s (Inductor generating and building C++), later steps
        12.7 ms against 15.5 ms eager (0.82x), so compiling pays back only after about 22,000 steps, and the main
        job stops after 200. Every new batch shape (the validation and error-bar batches) compiles again. Worth
        trying for long runs on a GPU.
    """

    iterations: int = 4000
    batch_size: int = 256
    valid_size: int = 1024
    lr_values: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    lr_boundaries: tuple[int, ...] | None = None
    log_every: int = 100
    tolerance: float | None = 2e-3
    max_seconds: float | None = None
    eval_paths: int | None = None
    dtype: str = "float32"
    checkpoint_every: int = 0
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    explode_factor: float = 1e6
    compile: bool = False
    _schedule: tuple[int, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    _schedule_values: tuple[float, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "valid_size", "log_every"):
            _positive_int(name, getattr(self, name))
        for name in ("checkpoint_every", "max_rollbacks"):
            _positive_int(name, getattr(self, name), allow_zero=True)
        values = _number_tuple("lr_values", self.lr_values, positive=True)
        schedule_values = values
        if self.lr_boundaries is None:
            k = len(values)
            half = self.iterations // 2
            boundaries = tuple(half + (self.iterations - half) * i // (k - 1) for i in range(k - 1)) if k > 1 else ()
            boundaries = tuple(sorted(set(max(b, 1) for b in boundaries)))
            schedule_values = values[: len(boundaries) + 1]  # a budget too short for every value keeps the first
        else:
            boundaries = _number_tuple("lr_boundaries", self.lr_boundaries, integer=True)
        if self.lr_boundaries is not None and len(values) != len(boundaries) + 1:
            raise ConfigError(f"train.lr_values: expected len(lr_boundaries) + 1 = {len(boundaries) + 1} values, "
                              f"received {len(values)}")
        if list(boundaries) != sorted(set(boundaries)):
            raise ConfigError(f"train.lr_boundaries: expected strictly increasing steps, received {list(boundaries)}")
        object.__setattr__(self, "lr_values", values)
        if self.lr_boundaries is not None:
            object.__setattr__(self, "lr_boundaries", boundaries)
        object.__setattr__(self, "_schedule", boundaries)
        object.__setattr__(self, "_schedule_values", schedule_values)
        if self.dtype not in _DTYPES:
            raise ConfigError(f"train.dtype: expected one of {sorted(_DTYPES)}, received {describe(self.dtype)}")
        if not (_finite(self.rollback_lr_factor) and 0 < self.rollback_lr_factor <= 1):
            raise ConfigError(f"train.rollback_lr_factor: expected a number in (0, 1], "
                              f"received {describe(self.rollback_lr_factor)}")
        if not (_finite(self.explode_factor) and self.explode_factor > 1):
            raise ConfigError(f"train.explode_factor: expected a finite number > 1, "
                              f"received {describe(self.explode_factor)}")
        for name in ("tolerance", "max_seconds"):
            value = getattr(self, name)
            if value is not None and not (_finite(value) and value >= 0):
                raise ConfigError(f"train.{name}: expected a finite positive number, or 0 for none, "
                                  f"received {describe(value)}")
            if value == 0:  # TOML has no null: 0 switches the rule off
                object.__setattr__(self, name, None)
        if self.eval_paths is not None:
            _positive_int("eval_paths", self.eval_paths)
            if self.eval_paths < 2:
                raise ConfigError(f"train.eval_paths: expected at least 2, received {self.eval_paths}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile: expected true or false, received {describe(self.compile)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def lr(self, step: int) -> float:
        """The scheduled learning rate at ``step`` (before any rollback reduction)."""
        return piecewise_constant(step, self._schedule, self._schedule_values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping (a config file's ``[train]`` section), rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"train: unknown key {unknown[0]!r}; expected one of: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not k.startswith("_")}

    @property
    def schedule(self) -> tuple[int, ...]:
        """The learning-rate boundaries in use (``lr_boundaries``, or the default ones derived from
        ``iterations``)."""
        return self._schedule


def piecewise_constant(step: int, boundaries: Sequence[int], values: Sequence[float]) -> float:
    """``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]`` (Keras' PiecewiseConstantDecay)."""
    return float(values[bisect.bisect_left(list(boundaries), step)])


def _positive_int(name: str, value: object, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        expected = "a non-negative integer" if allow_zero else "a positive integer"
        raise ConfigError(f"train.{name}: expected {expected}, received {describe(value)}")


def _finite(value: object) -> bool:
    """A real number (not a bool) that is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _number_tuple(name: str, value: object, positive: bool = False, integer: bool = False) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    kind = int if integer else (int, float)
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or not all(isinstance(v, kind) and _finite(v) for v in value)
            or (positive and not all(v > 0 for v in value))):
        what = "integers" if integer else ("finite positive numbers" if positive else "finite numbers")
        raise ConfigError(f"train.{name}: expected a list of {what}, received {describe(value)}")
    return tuple(int(v) if integer else float(v) for v in value)
