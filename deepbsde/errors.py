"""Exceptions raised by deepbsde.

Every error raised at the user boundary names the field, the value received and what was expected.
"""

from __future__ import annotations

__all__ = ["DeepBSDEError", "ConfigError", "ProblemError", "DivergenceError", "CheckpointError"]


class DeepBSDEError(Exception):
    """Base class of every error deepbsde raises on purpose."""


class ConfigError(DeepBSDEError, ValueError):
    """A configuration value (config file, ``--set``, keyword argument) is unknown or malformed."""


class ProblemError(DeepBSDEError, ValueError):
    """A :class:`~deepbsde.Problem` is malformed: bad dimension, horizon, ``x0``, or a user function that
    returns the wrong shape, dtype or non-finite values."""


class DivergenceError(DeepBSDEError, RuntimeError):
    """Training produced a non-finite (or exploding) loss and could not recover."""


class CheckpointError(DeepBSDEError, RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not belong to this run."""


def describe(value: object) -> str:
    """A short description of a received value for error messages: ``2.5 (float)``."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"
