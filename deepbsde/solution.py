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
    problem_object, method_object:
        The problem and the method objects that were solved and used (for :meth:`u`, :meth:`grad_u` and
        :meth:`save`); ``None`` in a Solution built by hand.

    :meth:`u` and :meth:`grad_u` evaluate the trained solution at other points where the method allows it;
    :meth:`save` and :func:`deepbsde.load` keep it for later (:mod:`deepbsde.saved`).
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
    problem_object: Any = dataclasses.field(default=None, repr=False, compare=False)
    method_object: Any = dataclasses.field(default=None, repr=False, compare=False)

    # --- the trained solution away from x0 ------------------------------------------------------------
    def u(self, x: Any, t: float | None = None) -> Any:
        """The trained :math:`u(t, x)` at points ``x``: a NumPy array (or anything array-like) or a torch
        tensor, of shape ``(B, d)`` or ``(d,)`` for one point; returns shape ``(B,)`` or ``()``, as a float64
        NumPy array for array input, as a tensor in ``x``'s dtype and on its device for tensor input (no
        autograd graph). ``t`` defaults to 0; other times only where the method learns u at every time
        (the PINN). Evaluated by the method's ``value`` hook (:meth:`deepbsde.Method.value`); a method that
        gives u(0, x0) only raises :class:`~deepbsde.errors.ConfigError` saying so. At ``x0`` this is the
        trained value (``extra["trained_u0"]``), not ``u0``, which is re-estimated on fresh paths."""
        return _evaluate(self, x, t, gradient=False)

    def grad_u(self, x: Any, t: float | None = None) -> Any:
        """The trained ∇u(t, x) (the gradient, not σᵀ∇u) at points ``x``, by autograd on the
        method's ``value``: shape ``(B, d)`` or ``(d,)``; types, ``t`` and errors as :meth:`u`."""
        return _evaluate(self, x, t, gradient=True)

    def u_interval(self, x: Any, paths: int = 4096, seed: int = 0) -> tuple[Any, Any]:
        """The 95 % interval ``(lo, hi)`` of :math:`u(0, x)` at points ``x`` (``(B, d)`` or ``(d,)``), for a deep BSDE
        solution in region mode (``DeepBSDE(region=...)``): at each point the error bar of ``u0_interval``
        (:func:`deepbsde.estimators.evaluate` on ``paths`` fresh paths from seed ``seed``), run on the problem
        started from that point with the trained control there. Returns two float64 NumPy arrays of shape
        ``(B,)`` (``()`` for one point), or tensors on ``x``'s device for tensor input. Costs one error bar per
        point. :class:`~deepbsde.errors.ConfigError` for a method without one (point mode: ``u0_interval``)."""
        import numpy as np
        import torch

        from .errors import ConfigError, describe

        model, problem, method = self.model, self.problem_object, self.method_object
        if model is None or problem is None or method is None:
            raise ConfigError("Solution.u_interval: this Solution holds no trained model, problem and method; only "
                              "one returned by deepbsde.solve or deepbsde.load can be evaluated")
        if not callable(getattr(method, "u_interval", None)) or getattr(method, "region", None) is None:
            raise ConfigError(f"Solution.u_interval: needs the deep BSDE method in region mode "
                              f"(DeepBSDE(region=...)); {method.name} here gives the error bar at x0 only "
                              f"(u0_interval = {self.u0_interval})")
        if isinstance(paths, bool) or not isinstance(paths, int) or paths < 2:
            raise ConfigError(f"Solution.u_interval: paths: expected an integer >= 2, received {describe(paths)}")
        torch_in = isinstance(x, torch.Tensor)
        try:
            points = x.detach().to("cpu", torch.float64) if torch_in else torch.from_numpy(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Solution.u_interval: x: expected an array or tensor of shape (batch, {problem.dim}) "
                              f"or ({problem.dim},), received {describe(x)}") from exc
        d = problem.dim
        single = points.dim() == 1
        if not ((single and points.shape[0] == d) or (points.dim() == 2 and points.shape[1] == d)):
            raise ConfigError(f"Solution.u_interval: x: expected shape (batch, {d}) or ({d},), received "
                              f"{tuple(points.shape)}")
        lo, hi, _ = method.u_interval(model, problem, points.reshape(-1, d), paths=paths, seed=seed)
        if single:
            lo, hi = lo[0], hi[0]
        if torch_in:
            target = x.dtype if x.is_floating_point() else torch.float64
            return lo.to(device=x.device, dtype=target), hi.to(device=x.device, dtype=target)
        return lo.numpy(), hi.numpy()

    def save(self, directory: str | Path) -> Path:
        """Write what evaluates this solution later without retraining (the model's state dict, the method and
        its keywords, the problem's identity, every field and the summary) into ``directory``; read it back
        with :func:`deepbsde.load` (:mod:`deepbsde.saved`). Returns the folder."""
        from .saved import save_solution

        return save_solution(self, directory)

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


_CHUNK = 8192  # points per evaluation of the model


def _evaluate(solution: Solution, x: Any, t: float | None, gradient: bool) -> Any:
    """:meth:`Solution.u` (``gradient=False``) or :meth:`Solution.grad_u`."""
    import numpy as np
    import torch

    from .errors import ConfigError, describe

    what = "Solution.grad_u" if gradient else "Solution.u"
    model, problem, method = solution.model, solution.problem_object, solution.method_object
    if model is None or problem is None or method is None:
        raise ConfigError(f"{what}: this Solution holds no trained model, problem and method; only one returned "
                          f"by deepbsde.solve or deepbsde.load can be evaluated")
    torch_in = isinstance(x, torch.Tensor)
    if torch_in:
        points = x.detach()
    else:
        try:
            array = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{what}: x: expected an array or tensor of shape (batch, {problem.dim}) or "
                              f"({problem.dim},), received {describe(x)}") from exc
        points = torch.from_numpy(array)
    d = problem.dim
    single = points.dim() == 1
    if not ((single and points.shape[0] == d) or (points.dim() == 2 and points.shape[1] == d)):
        raise ConfigError(f"{what}: x: expected shape (batch, {d}) or ({d},) for {problem.name}(dim={d}), "
                          f"received {tuple(points.shape)}")
    points = points.reshape(-1, d)
    time = 0.0 if t is None else t
    if isinstance(time, bool) or not isinstance(time, (int, float)) or not (
            math.isfinite(time) and 0.0 <= time <= problem.horizon):
        raise ConfigError(f"{what}: t: expected a time in [0, T={problem.horizon}], received {describe(time)}")
    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()), None)
    dev = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, points.shape[0], _CHUNK):
            xs = points[start:start + _CHUNK].to(device=dev, dtype=dtype)
            ts = torch.full((xs.shape[0], 1), float(time), dtype=dtype, device=dev)
            if not gradient:
                with torch.no_grad():
                    value = _value(method, model, problem, ts, xs, what, solution)
                out.append(value.reshape(-1))
                continue
            xg = xs.clone().requires_grad_(True)
            with torch.enable_grad():
                value = _value(method, model, problem, ts, xg, what, solution)
                if not value.requires_grad:
                    raise ConfigError(f"{what}: {method.name}.value is not differentiable in x here")
                (grad,) = torch.autograd.grad(value.sum(), xg)
            out.append(grad.detach())
    finally:
        model.train(was_training)
    result = torch.cat(out) if out else torch.zeros((0,) if not gradient else (0, d), dtype=dtype, device=dev)
    if single:
        result = result[0]
    if torch_in:
        target = x.dtype if x.is_floating_point() else torch.float64
        return result.detach().to(device=x.device, dtype=target)
    return result.detach().to("cpu", torch.float64).numpy()


def _value(method: Any, model: Any, problem: Any, t: Any, x: Any, what: str, solution: Solution) -> Any:
    from .errors import ConfigError

    try:
        value = method.value(model, problem, t, x)
    except NotImplementedError as exc:
        raise ConfigError(f"{what}: the {method.name} method gives u at (0, x0) only, not at other points "
                          f"(u0 = {solution.u0:.6g}; grad_u0 is ∇u(0, x0)): {exc}") from exc
    if tuple(value.shape) != (x.shape[0], 1):
        raise ConfigError(f"{what}: {method.name}.value returned shape {tuple(value.shape)}, expected "
                          f"({x.shape[0]}, 1)")
    return value
