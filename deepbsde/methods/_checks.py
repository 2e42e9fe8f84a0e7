"""Checks of method settings, shared by :class:`~deepbsde.DeepBSDE` and :class:`~deepbsde.PINN`.

Each raises :class:`~deepbsde.errors.ConfigError` naming the field (``method.<name>``), what was expected
and what was received.
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import ConfigError, describe


def choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"method.{name}: expected one of {', '.join(repr(a) for a in allowed)}, received {describe(value)}")


def integer(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"method.{name}: expected {what}, received {describe(value)}")


def number(name: str, value: object, positive: bool = False) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (positive and value <= 0)):
        raise ConfigError(f"method.{name}: expected a finite number{' > 0' if positive else ''}, received {describe(value)}")


def positive_or_none(name: str, value: object) -> None:
    if value is not None and not (_finite(value) and value > 0):
        raise ConfigError(f"method.{name}: expected a finite number > 0 or None, received {describe(value)}")


def _finite(value: object) -> bool:
    """A real number (not a bool) that is finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def widths(name: str, value: object) -> tuple[int, ...]:
    """Hidden-layer widths: a non-empty sequence of positive integers, returned as a tuple."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"method.{name}: expected a non-empty list of positive integers, received {describe(value)}")
    return tuple(value)


def interval(name: str, value: object) -> tuple[float, float]:
    """``[low, high]`` of finite numbers with ``low <= high``, returned as a pair of floats."""
    ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
          and all(_finite(v) for v in value) and value[0] <= value[1])
    if not ok:
        raise ConfigError(f"method.{name}: expected [low, high] of finite numbers with low <= high, "
                          f"received {describe(value)}")
    return (float(value[0]), float(value[1]))
