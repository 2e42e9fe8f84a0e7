"""The one result type, :class:`Solution`, and the training :class:`History`."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterator

from .problem import Reference

__all__ = ["Solution", "History", "HistoryRow"]


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    """One logged point of training: validation loss on the fixed held-out batch, mean training loss
    since the previous row, the estimate of u(0, x0), the learning rate and wall-clock seconds."""

    step: int
    loss: float
    train_loss: float
    u0: float
    lr: float
    seconds: float

    FIELDS = ("step", "loss", "train_loss", "u0", "lr", "seconds")


@dataclasses.dataclass(frozen=True)
class History:
    """The rows logged during training, in order of step, and the method's metrics at those steps
    (``metrics``: ``(step, {name: value})`` pairs, e.g. the PINN's ``l2_relative_error``; see
    :meth:`deepbsde.Method.metrics`)."""

    rows: tuple[HistoryRow, ...] = ()
    metrics: tuple[tuple[int, dict[str, float]], ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[HistoryRow]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> HistoryRow:
        return self.rows[i]

    def column(self, name: str) -> list[float]:
        """One column, e.g. ``history.column("u0")``."""
        if name not in HistoryRow.FIELDS:
            raise KeyError(f"history column: expected one of {HistoryRow.FIELDS}, received {name!r}")
        return [getattr(r, name) for r in self.rows]

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """The steps and values of one metric, e.g. ``history.metric("l2_relative_error")``."""
        known = sorted({k for _, values in self.metrics for k in values})
        if name not in known:
            raise KeyError(f"history metric: expected one of {known}, received {name!r}")
        pairs = [(step, values[name]) for step, values in self.metrics if name in values]
        return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclasses.dataclass(frozen=True)
class Solution:
    """What :func:`deepbsde.solve` returns.

    Attributes
    ----------
    u0:
        The estimate of :math:`u(0, x_0)`: the control-variate re-estimate on fresh paths
        (:mod:`deepbsde.estimators`) where the method gives a control, else the trained value.
    u0_interval:
        The 95 % interval ``(lo, hi)`` of :math:`u(0, x_0)`: 1.96 standard errors plus the time-step and
        control bias bounds; ``None`` where there is no error bar.
    u0_stderr:
        The statistical standard error of ``u0``.
    grad_u0:
        The estimate of :math:`\\nabla u(0, x_0)` (not σᵀ∇u), a tuple of ``d`` floats: pathwise on fresh paths
        where there is an error bar. Reading it raises ``AttributeError`` with the reason where the method
        cannot provide it.
    grad_u0_stderr:
        Standard errors of ``grad_u0``, per coordinate (``AttributeError`` where there are none).
    verdict, verdict_reason:
        ``"ok"`` when the interval is within the tolerance and no diagnostic fired; ``"check"`` otherwise
        (``verdict_reason``, also the last warning, says what failed and what to try); ``"unverified"`` where
        there is no error bar.
    tolerance, tolerance_reached:
        ``train.tolerance`` and whether the relative half-width of ``u0_interval`` is within it.
    history:
        The :class:`History` of training.
    reference:
        The problem's :class:`~deepbsde.problem.Reference`, or ``None``.
    relative_error:
        ``|u0 - reference| / |reference|``, or ``None`` where there is no reference value.
    seconds:
        Wall-clock time of the training loop.
    model:
        The trained ``nn.Module`` (in evaluation mode), for further use.
    extra:
        Method-specific figures (e.g. the PINN's relative L2 error), also merged into :meth:`summary`.
    """

    problem: str
    method: str
    dim: int
    u0: float
    _grad_u0: tuple[float, ...] | None
    history: History
    reference: Reference | None
    seconds: float
    iterations: int
    device: str
    dtype: str
    seed: int
    run_dir: Path | None = None
    rollbacks: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: Any = dataclasses.field(default=None, repr=False, compare=False)
    _grad_unavailable: str | None = None
    u0_interval: tuple[float, float] | None = None
    u0_stderr: float | None = None
    _grad_u0_stderr: tuple[float, ...] | None = None
    verdict: str = "unverified"
    verdict_reason: str | None = None
    tolerance: float | None = None
    tolerance_reached: bool | None = None

    @property
    def run_warnings(self) -> tuple[str, ...]:
        """``warnings`` without the verdict's own line (``verdict_reason``): what happened during the run and
        what the diagnostics found."""
        return tuple(w for w in self.warnings if w != self.verdict_reason)

    @property
    def grad_u0_stderr(self) -> tuple[float, ...]:
        if self._grad_u0_stderr is None:
            reason = self._grad_unavailable or "this method gives no error bar for the gradient"
            raise AttributeError(f"grad_u0_stderr is not available: {reason}")
        return self._grad_u0_stderr

    @property
    def grad_u0(self) -> tuple[float, ...]:
        if self._grad_u0 is None:
            raise AttributeError(f"grad_u0 is not available: {self._grad_unavailable}")
        return self._grad_u0

    @property
    def relative_error(self) -> float | None:
        if self.reference is None or self.reference.value is None or self.reference.value == 0:
            return None
        return abs(self.u0 - self.reference.value) / abs(self.reference.value)

    @property
    def interval_covers_reference(self) -> bool | None:
        """Whether ``u0_interval`` holds the reference value (``None`` where either is missing)."""
        if self.u0_interval is None or self.reference is None or self.reference.value is None:
            return None
        return self.u0_interval[0] <= self.reference.value <= self.u0_interval[1]

    @property
    def within_bounds(self) -> bool | None:
        """Whether ``u0`` lies within the reference's bounds, where it has any."""
        if self.reference is None or self.reference.bounds is None:
            return None
        lo, hi = self.reference.bounds
        return (lo is None or self.u0 >= lo) and (hi is None or self.u0 <= hi)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dictionary: the keys the CLI prints with ``--json`` and writes to summary.json."""
        ref = self.reference
        out: dict[str, Any] = {
            "equation": self.problem,
            "method": self.method,
            "dim": self.dim,
            "u0": self.u0,
            "u0_interval": list(self.u0_interval) if self.u0_interval is not None else None,
            "u0_stderr": self.u0_stderr,
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "tolerance": self.tolerance,
            "tolerance_reached": self.tolerance_reached,
            "grad_u0": list(self._grad_u0) if self._grad_u0 is not None else None,
            "grad_u0_stderr": list(self._grad_u0_stderr) if self._grad_u0_stderr is not None else None,
            "reference": ref.value if ref is not None else None,
            "reference_source": ref.source if ref is not None else None,
            "reference_bounds": list(ref.bounds) if ref is not None and ref.bounds is not None else None,
            "relative_error": self.relative_error,
            "within_bounds": self.within_bounds,
            "interval_covers_reference": self.interval_covers_reference,
            "seconds": self.seconds,
            "iterations": self.iterations,
            "device": self.device,
            "dtype": self.dtype,
            "seed": self.seed,
            "final_loss": self.history[-1].loss if len(self.history) else None,
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
            "rollbacks": list(self.rollbacks),
            "warnings": list(self.warnings),
        }
        out.update(self.extra)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
