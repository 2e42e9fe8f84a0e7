"""Checks of the model keywords of the catalogue equations, run once at construction.

Each check returns the value as a ``float`` or raises :class:`~deepbsde.errors.ProblemError` naming the
field, the value received and what was expected.
"""

from __future__ import annotations

import math
from typing import Sequence

from deepbsde.errors import ProblemError, describe

__all__ = ["real", "positive", "nonnegative", "in_interval", "positive_x0"]


def real(name: str, value: object) -> float:
    """A finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProblemError(f"{name}: expected a finite real number, received {describe(value)}")
    return float(value)


def positive(name: str, value: object) -> float:
    """A finite number ``> 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProblemError(f"{name}: expected a finite number > 0, received {describe(value)}")
    return float(value)


def nonnegative(name: str, value: object) -> float:
    """A finite number ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ProblemError(f"{name}: expected a finite number >= 0, received {describe(value)}")
    return float(value)


def in_interval(name: str, value: object, low: float, high: float, *, closed_low: bool = False,
                closed_high: bool = False, why: str = "") -> float:
    """A finite number in the interval from ``low`` to ``high`` (open unless told otherwise)."""
    text = (f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
            + (f" ({why})" if why else ""))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProblemError(f"{name}: expected a finite number in {text}, received {describe(value)}")
    above = value >= low if closed_low else value > low
    below = value <= high if closed_high else value < high
    if not (above and below):
        raise ProblemError(f"{name}: expected a number in {text}, received {describe(value)}")
    return float(value)


def positive_x0(x0: Sequence[float], what: str = "asset prices") -> None:
    """Every coordinate of an (already checked) ``x0`` is ``> 0``."""
    bad = [i for i, v in enumerate(x0) if not v > 0]
    if bad:
        raise ProblemError(f"x0: expected positive {what} in every coordinate, "
                           f"received {x0[bad[0]]!r} at coordinate {bad[0]}")
