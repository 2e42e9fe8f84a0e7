"""Training configuration: everything about *how* to train that is neither the problem nor the method."""

from __future__ import annotations

import bisect
import dataclasses
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
        Number of optimiser steps.
    batch_size, valid_size:
        Paths (or collocation points) per training step, and in the fixed held-out validation batch.
    lr_values, lr_boundaries:
        Piecewise-constant learning rate of Adam: ``lr_values[i]`` for
        ``lr_boundaries[i-1] < step <= lr_boundaries[i]``; ``len(lr_values) == len(lr_boundaries) + 1``.
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
        Compile the loss with ``torch.compile`` (useful on GPUs).
    """

    iterations: int = 2000
    batch_size: int = 64
    valid_size: int = 256
    lr_values: tuple[float, ...] = (1e-2,)
    lr_boundaries: tuple[int, ...] = ()
    log_every: int = 100
    dtype: str = "float32"
    checkpoint_every: int = 0
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    explode_factor: float = 1e6
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "valid_size", "log_every"):
            _positive_int(name, getattr(self, name))
        for name in ("checkpoint_every", "max_rollbacks"):
            _positive_int(name, getattr(self, name), allow_zero=True)
        values = _number_tuple("lr_values", self.lr_values, positive=True)
        boundaries = _number_tuple("lr_boundaries", self.lr_boundaries, integer=True)
        if len(values) != len(boundaries) + 1:
            raise ConfigError(f"train.lr_values: expected len(lr_boundaries) + 1 = {len(boundaries) + 1} values, "
                              f"received {len(values)}")
        if list(boundaries) != sorted(set(boundaries)):
            raise ConfigError(f"train.lr_boundaries: expected strictly increasing steps, received {list(boundaries)}")
        object.__setattr__(self, "lr_values", values)
        object.__setattr__(self, "lr_boundaries", boundaries)
        if self.dtype not in _DTYPES:
            raise ConfigError(f"train.dtype: expected one of {sorted(_DTYPES)}, received {describe(self.dtype)}")
        if not (isinstance(self.rollback_lr_factor, (int, float)) and 0 < self.rollback_lr_factor <= 1):
            raise ConfigError(f"train.rollback_lr_factor: expected a number in (0, 1], "
                              f"received {describe(self.rollback_lr_factor)}")
        if not (isinstance(self.explode_factor, (int, float)) and self.explode_factor > 1):
            raise ConfigError(f"train.explode_factor: expected a number > 1, received {describe(self.explode_factor)}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile: expected true or false, received {describe(self.compile)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def lr(self, step: int) -> float:
        """The scheduled learning rate at ``step`` (before any rollback reduction)."""
        return piecewise_constant(step, self.lr_boundaries, self.lr_values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping (a config file's ``[train]`` section), rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"train: unknown key {unknown[0]!r}; expected one of: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def piecewise_constant(step: int, boundaries: Sequence[int], values: Sequence[float]) -> float:
    """``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]`` (Keras' PiecewiseConstantDecay)."""
    return float(values[bisect.bisect_left(list(boundaries), step)])


def _positive_int(name: str, value: object, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        expected = "a non-negative integer" if allow_zero else "a positive integer"
        raise ConfigError(f"train.{name}: expected {expected}, received {describe(value)}")


def _number_tuple(name: str, value: object, positive: bool = False, integer: bool = False) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    kind = int if integer else (int, float)
    if (not isinstance(value, Sequence) or isinstance(value, str)
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
            or (positive and not all(v > 0 for v in value))):
        what = "integers" if integer else ("positive numbers" if positive else "numbers")
        raise ConfigError(f"train.{name}: expected a list of {what}, received {describe(value)}")
    return tuple(int(v) if integer else float(v) for v in value)
