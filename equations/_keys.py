"""Hashable keys of a problem's constructor keywords, for caching reference values."""

from __future__ import annotations

from deepbsde.problem import Problem

__all__ = ["keywords", "at_defaults"]


def keywords(problem: Problem) -> tuple[tuple[str, object], ...]:
    """The constructor keywords and their stored values (``x0`` as a tuple), as a hashable tuple."""
    items = problem.describe()
    items.pop("name")
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in items.items())


def at_defaults(problem: Problem) -> bool:
    """Whether every constructor keyword of ``problem`` has its default value."""
    return keywords(problem) == keywords(type(problem)())
