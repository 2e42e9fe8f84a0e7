r"""``compare(problem, methods, ...)``: several methods on the same problem, one report.

Each method is trained by :func:`deepbsde.solve` with the same seed and device (each in its own run folder
``OUT/<label>/``); then ``OUT`` receives

* ``report.md``: one table (method, :math:`u(0, x_0)`, reference, relative error, relative L2 error where
  the method measures one, wall time, peak memory, iterations, and the relative L2 errors of :math:`u(0, \cdot)`
  and :math:`\nabla u(0, \cdot)` measured here, see below) and the figures;
* ``loss.png``: the validation loss of each method against the step (and the relative L2 error where
  recorded), on log scales;
* ``slice.png``: two panels along one line :math:`x(s) = b + s\,v` at :math:`t = 0` (:func:`slice_line`):
  :math:`u(0, x(s))` and the Greek :math:`\partial_s u(0, x(s)) = \nabla u(0, x(s)) \cdot v`. Every method
  whose solution evaluates :math:`u` at any point (``Solution.u`` and ``Solution.grad_u``: the PINN, FBSNN, the
  deep BSDE method in region mode) is drawn as a curve; one that gives :math:`u(0, x_0)` only (the deep BSDE
  method in point mode) as a dot at :math:`x_0` (its ``u0_interval`` as an error bar, ``grad_u0 · v`` in the
  Greek panel) where :math:`x_0` lies on the line. The reference curves come from
  :func:`deepbsde.regions.reference_functions` (the catalogue's ``reference_at`` / ``reference_grad_at``,
  else ``exact_solution``) where the problem gives :math:`u` at any point. For a
  :class:`~deepbsde.ResidualProblem`, :math:`u(t, \cdot)` and its Greek along :math:`x_0 + s e_1` at three
  times, against the reference solution (no reference Greek);
* ``slice.json``: the curves of ``slice.png`` as numbers (the line, ``s``, the reference and every method);
* ``summary.json``: a list of one object per method with the keys of :meth:`deepbsde.Solution.summary`
  plus ``label``, ``wall_seconds``, ``peak_memory_bytes``, ``memory_measure``, and ``u_rel_l2``,
  ``grad_u_rel_l2``, ``l2_over`` (:func:`accuracy`).

**Relative L2 errors of u and ∇u** (:func:`accuracy`): for every method that evaluates :math:`u` at any point,
:math:`\|\hat u - u\|_2 / \|u\|_2` and the same for :math:`\nabla u` (summed over coordinates) at :math:`t = 0`,
against :func:`~deepbsde.regions.reference_functions`, on the same points for every method: 4096 points of the
region of the first method that has one (drawn with seed 0, whatever the training seed), else the points of the
slice. The deep BSDE method's own ``region_rel_l2`` (from :func:`deepbsde.solve`) is the same measure on other
points of its region, so the two differ by sampling noise only. ``None`` (``-``
in the table) for a method that gives :math:`u(0, x_0)` only or where the problem has no reference at any point.

**Peak memory.** On a GPU, ``torch.cuda.max_memory_allocated`` over the run. On the CPU, the peak resident
set size of the process above its value when the run starts (after a garbage collection and glibc's
``malloc_trim``, so that memory freed by an earlier run is not silently reused), sampled every 5 ms by a
background thread from ``/proc/self/statm`` (Linux; elsewhere the growth of ``ru_maxrss``, which only sees a
new high-water mark). Both include the data and autograd graph of a training step, which is what scales with
the dimension; neither is exact to the byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .config import TrainConfig
from .errors import ConfigError, describe
from .methods.base import Method
from .paths import make_generator
from .pinn_problem import ResidualProblem
from .problem import Problem
from .regions import Box, Line, Region, _relative_l2, reference_functions
from .runlog import check_out_folder, default_run_dir, write_json_atomic
from .solution import Solution
from .solve import resolve_device, solve

__all__ = ["compare", "ComparisonReport", "ComparisonEntry", "PeakMemory", "SliceLine", "slice_line",
           "comparison_region", "accuracy"]

logger = logging.getLogger(__name__)

#: points of the region on which :func:`accuracy` measures (those of ``DeepBSDE.region_report``), and their seed
REGION_POINTS = 4096
REGION_SEED = 0
#: points of the slice of ``slice.png`` (and of :func:`accuracy` where no method has a region)
SLICE_POINTS = 201


@dataclasses.dataclass(frozen=True)
class ComparisonEntry:
    """One method's run: its label, the :class:`~deepbsde.Solution`, the wall time of the whole
    :func:`~deepbsde.solve` call and its peak memory in bytes (see the module docstring)."""

    label: str
    method: Method
    solution: Solution
    wall_seconds: float
    peak_memory_bytes: int | None
    memory_measure: str
    #: ``u_rel_l2``, ``grad_u_rel_l2`` and ``l2_over`` (:func:`accuracy`); ``None`` values where not measured
    accuracy: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out = {"label": self.label}
        out.update(self.solution.summary())
        out.update(wall_seconds=self.wall_seconds, peak_memory_bytes=self.peak_memory_bytes,
                   memory_measure=self.memory_measure)
        for key in ACCURACY_KEYS:  # a diverged method's NaN error as None, as Solution.summary does
            value = self.accuracy.get(key)
            out[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        return out


@dataclasses.dataclass(frozen=True)
class ComparisonReport:
    """What :func:`compare` returns: the problem's name, one entry per method, and the report folder."""

    problem: str
    entries: tuple[ComparisonEntry, ...]
    out: Path | None

    def __getitem__(self, label: str) -> ComparisonEntry:
        for entry in self.entries:
            if entry.label == label:
                return entry
        raise KeyError(f"no method labelled {label!r}; labels: {[e.label for e in self.entries]}")

    def summaries(self) -> list[dict[str, Any]]:
        return [e.summary() for e in self.entries]

    def table(self) -> str:
        """The comparison as a Markdown table."""
        head = ("| method | u(0, x0) | reference | relative error | relative L2 error | wall time (s) "
                "| peak memory (MiB) | iterations | u rel. L2 | ∇u rel. L2 |")
        lines = [head, "|" + "---|" * 10]
        for e in self.entries:
            s = e.solution
            ref = s.reference
            ref_text = "-" if ref is None or ref.value is None else f"{ref.value:.6g}"
            rel = s.relative_error
            l2 = s.extra.get("l2_relative_error")
            iters = f"{s.iterations}"
            if s.extra.get("lbfgs_iterations_run"):
                iters += f" Adam + {s.extra['lbfgs_iterations_run']} L-BFGS"
            mem = "-" if e.peak_memory_bytes is None else f"{e.peak_memory_bytes / 2 ** 20:.1f}"
            lines.append(f"| {e.label} | {s.u0:.6g} | {ref_text} | {'-' if rel is None else f'{rel:.2e}'} "
                         f"| {'-' if l2 is None else f'{l2:.2e}'} | {e.wall_seconds:.1f} | {mem} | {iters} "
                         f"| {_cell(e.accuracy.get('u_rel_l2'))} | {_cell(e.accuracy.get('grad_u_rel_l2'))} |")
        return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


class PeakMemory:
    """Context manager measuring the peak memory of a block (bytes in :attr:`peak`, method in :attr:`measure`)."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.peak: int | None = None
        self.measure = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._max = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.measure = "torch.cuda.max_memory_allocated above the start"
        elif _rss() is not None:
            _release_freed_memory()  # so that an earlier run's freed heap does not hide this run's needs
            self._base = self._max = _rss()
            self.measure = "peak RSS above the start (after gc + malloc_trim; /proc/self/statm sampled every 5 ms)"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._base = _maxrss()
            self.measure = "growth of ru_maxrss (new high-water mark only)"
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            value = _rss()
            if value is not None and value > self._max:
                self._max = value
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device) - self._base)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            value = _rss()
            self.peak = int(max(self._max, value or 0) - self._base)
        else:
            self.peak = int(_maxrss() - self._base)


def _release_freed_memory() -> None:
    """Collect garbage and return the freed heap to the system (glibc ``malloc_trim``; elsewhere a no-op)."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _maxrss() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def compare(problem: Problem | ResidualProblem, methods: Sequence[Method] | Mapping[str, Method], *,
            train: TrainConfig | Mapping[str, Any] | None = None,
            trains: Mapping[str, TrainConfig | Mapping[str, Any]] | None = None, seed: int = 0,
            device: str | torch.device = "auto", out: str | Path | bool | None = None,
            progress: bool | None = None, run_config: Mapping[str, Any] | None = None) -> ComparisonReport:
    """Train every method on ``problem`` with :func:`deepbsde.solve` and write one report.

    Parameters
    ----------
    problem:
        The one problem object every method gets.
    methods:
        A sequence of methods (labelled by their names, which must then differ) or a mapping label -> method.
    train:
        The shared :class:`~deepbsde.TrainConfig` (or mapping of its fields).
    trains:
        Per-label overrides: a full TrainConfig, or a mapping of fields applied over ``train``.
    seed, device, progress:
        As for :func:`deepbsde.solve`; the same for every method.
    out:
        The report folder (each method's run folder is ``out/<label>``); ``None`` makes
        ``runs/compare-<problem>-<timestamp>``, ``False`` writes nothing.
    run_config:
        Extra data stored in ``config.json`` of the report folder (the command line stores its config).
    """
    labelled = _labelled(methods)
    base = _train(train, "train")
    per_label: dict[str, TrainConfig] = {}
    for label in labelled:
        override = (trains or {}).get(label)
        if override is None:
            per_label[label] = base
        elif isinstance(override, TrainConfig):
            per_label[label] = override
        elif isinstance(override, Mapping):
            per_label[label] = TrainConfig.from_mapping({**base.to_dict(), **dict(override)})
        else:
            raise ConfigError(f"trains[{label!r}]: expected a TrainConfig or a mapping, received {describe(override)}")
    unknown = sorted(set(trains or {}) - set(labelled))
    if unknown:
        raise ConfigError(f"trains: unknown label {unknown[0]!r}; labels: {', '.join(labelled)}")
    for label, method in labelled.items():
        method.check(problem)  # refuse a mismatch before anything trains
    dev = resolve_device(device)
    root: Path | None = None
    if out is not False:
        root = Path(out) if out is not None else default_run_dir(f"compare-{problem.name}")
        check_out_folder(root, "out")
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_report(root, labelled)
        write_json_atomic(root / "config.json", {
            "problem": problem.describe(), "methods": {k: m.describe() for k, m in labelled.items()},
            "train": {k: t.to_dict() for k, t in per_label.items()}, "seed": seed, "device": str(dev),
            **({"run_config": dict(run_config)} if run_config is not None else {})})
    points = accuracy_points(problem, labelled)
    entries = []
    for label, method in labelled.items():
        start = time.perf_counter()
        with PeakMemory(dev) as mem:
            solution = solve(problem, method, train=per_label[label], seed=seed, device=dev,
                             out=(root / label) if root is not None else False, progress=progress)
        wall = time.perf_counter() - start
        entries.append(ComparisonEntry(label, method, solution, wall, mem.peak, mem.measure,
                                       accuracy(solution, problem, points)))
    report = ComparisonReport(problem.name, tuple(entries), root)
    if root is not None:
        write_report(report, problem)
    return report


#: what a finished compare writes into its report folder (each method's folder holds its own summary.json)
REPORT_FILES = ("summary.json", "report.md", "loss.png", "slice.png", "slice.json")


def remove_stale_report(root: Path, labels: Mapping[str, object]) -> None:
    """Delete the outputs of an earlier compare in ``root`` (:data:`REPORT_FILES`, and ``summary.json`` of
    every method's folder), so that a compare that fails leaves no result that the new config.json does not
    describe."""
    for name in REPORT_FILES:
        (root / name).unlink(missing_ok=True)
    for label in labels:
        (root / label / "summary.json").unlink(missing_ok=True)


def _labelled(methods: object) -> dict[str, Method]:
    if isinstance(methods, Mapping):
        items = list(methods.items())
    elif isinstance(methods, Sequence) and not isinstance(methods, str):
        items = [(getattr(m, "name", None), m) for m in methods]
        names = [k for k, _ in items]
        if len(set(names)) != len(names):
            raise ConfigError(f"methods: two methods share the name in {names}; pass a mapping label -> method")
    else:
        raise ConfigError(f"methods: expected a sequence of methods or a mapping label -> method, "
                          f"received {describe(methods)}")
    if not items:
        raise ConfigError("methods: expected at least one method, received none")
    out: dict[str, Method] = {}
    for label, method in items:
        if not isinstance(method, Method):
            raise ConfigError(f"methods[{label!r}]: expected a deepbsde method (DeepBSDE, PINN, FBSNN), received {describe(method)}")
        if not isinstance(label, str) or not label or "/" in label or label.startswith("."):
            raise ConfigError(f"methods: expected labels usable as folder names, received {describe(label)}")
        out[label] = method
    return out


def _train(train: object, where: str) -> TrainConfig:
    if train is None:
        return TrainConfig()
    if isinstance(train, TrainConfig):
        return train
    if isinstance(train, Mapping):
        return TrainConfig.from_mapping(train)
    raise ConfigError(f"{where}: expected a TrainConfig or a mapping, received {describe(train)}")


# --- the slice and the errors of u and ∇u ----------------------------------------------------------------

#: the keys :func:`accuracy` adds to each method's row of summary.json
ACCURACY_KEYS = ("u_rel_l2", "grad_u_rel_l2", "l2_over")


@dataclasses.dataclass(frozen=True)
class SliceLine:
    """The line of ``slice.png``: the points ``base + s * direction`` for ``s`` in ``s`` (float64 NumPy arrays,
    ``(d,)``, ``(d,)``, ``(n,)``); ``at_x0`` the ``s`` at which the problem's ``x0`` lies on it (``None`` where
    ``x0`` is not on the drawn segment); ``text`` the line in words."""

    base: np.ndarray
    direction: np.ndarray
    s: np.ndarray
    at_x0: float | None
    text: str

    def points(self) -> np.ndarray:
        """The points of the line, ``(n, d)``."""
        return self.base[None, :] + self.s[:, None] * self.direction[None, :]


def comparison_region(methods: Mapping[str, Method]) -> tuple[str, Region] | None:
    """``(label, region)`` of the first method with a region (``method.region`` not ``None``: the deep BSDE
    method in region mode), or ``None``."""
    for label, method in methods.items():
        region = getattr(method, "region", None)
        if region is not None:
            return label, region
    return None


def slice_line(problem: Problem | ResidualProblem, methods: Mapping[str, Method]) -> SliceLine:
    r"""The line along which ``slice.png`` draws :math:`u(0, \cdot)` and its Greek (``SLICE_POINTS`` points):

    * a :class:`~deepbsde.ResidualProblem`: :math:`x_0 + s e_1` across the problem's box in coordinate 1
      (257 points);
    * where a method has a region (:func:`comparison_region`): a :class:`~deepbsde.regions.Line`
      ``(v, lo, hi)`` is drawn as itself, :math:`s v` for :math:`s \in [lo, hi]`; a
      :class:`~deepbsde.regions.Box` as :math:`b + s e_1` across the box in coordinate 1, with :math:`b` the
      point :math:`x_0` clipped into the box (so the line goes through :math:`x_0` when :math:`x_0` is in the
      box); a user's sampler has no shape to follow and gets the default below;
    * otherwise :math:`x_0 + s e_1` for :math:`s \in [-h, h]`, :math:`h` the PINN's ``half_width`` (of the last
      method that has one; 1 where none has).

    The Greek drawn is :math:`\partial_s u(0, b + s v) = \nabla u \cdot v` (:math:`\partial u / \partial x_1`
    for the lines along :math:`e_1`)."""
    d = problem.dim
    x0 = problem.x0_tensor(torch.float64).cpu().numpy().reshape(d)
    e1 = np.zeros(d)
    e1[0] = 1.0
    if isinstance(problem, ResidualProblem):
        lo, hi = float(problem.lower[0]), float(problem.upper[0])
        return _line(x0, e1, np.linspace(lo - x0[0], hi - x0[0], 257), x0, "x0 + s e1")
    found = comparison_region(methods)
    region = found[1] if found is not None else None
    if isinstance(region, Line):
        v = region.vector(d).numpy()
        return _line(np.zeros(d), v, np.linspace(region.lo, region.hi, SLICE_POINTS), x0,
                     f"s v, v = {_vector_text(v)} (the line region of {found[0]})")
    if isinstance(region, Box):
        lo, hi = (b.numpy() for b in region.bounds(d))
        base = np.clip(x0, lo, hi)
        text = "x0 + s e1" if np.array_equal(base, x0) else "b + s e1 (b = x0 clipped into the box)"
        return _line(base, e1, np.linspace(lo[0] - base[0], hi[0] - base[0], SLICE_POINTS), x0,
                     f"{text} across the box region of {found[0]}")
    half = 1.0
    for method in methods.values():
        half = float(getattr(method, "half_width", half))
    return _line(x0, e1, np.linspace(-half, half, SLICE_POINTS), x0, "x0 + s e1")


def _line(base: np.ndarray, direction: np.ndarray, s: np.ndarray, x0: np.ndarray, text: str) -> SliceLine:
    """A :class:`SliceLine`, with ``at_x0`` found by projecting ``x0`` onto it."""
    at = float((x0 - base) @ direction / (direction @ direction))
    tol = 1e-9 * (1.0 + float(np.abs(x0).max(initial=0.0)) + float(np.abs(s).max(initial=0.0)))
    on_line = float(np.abs(base + at * direction - x0).max(initial=0.0)) <= tol
    within = s.size > 0 and s.min() - tol <= at <= s.max() + tol
    return SliceLine(base.astype(np.float64), direction.astype(np.float64), s.astype(np.float64),
                     at if on_line and within else None, text)


def _vector_text(v: np.ndarray) -> str:
    if v.size and np.all(v == v[0]):
        return f"{v[0]:g} in every coordinate"
    if v.size <= 4:
        return "(" + ", ".join(f"{c:g}" for c in v) + ")"
    return "(" + ", ".join(f"{c:g}" for c in v[:3]) + f", ..., {v[-1]:g})"


@dataclasses.dataclass
class AccuracyPoints:
    """The points where :func:`accuracy` measures, ``x`` ``(n, d)`` float64, with ``over`` saying which; the
    reference at them is computed once, on first use (:meth:`reference`)."""

    x: np.ndarray
    over: str
    _reference: tuple[np.ndarray | None, np.ndarray | None] | None = None

    def reference(self, problem: Problem | ResidualProblem) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The reference ``(u (n,), grad u (n, d))`` at :math:`t = 0` on :attr:`x`, ``None`` for either where
        the problem gives none at any point (:func:`deepbsde.regions.reference_functions`)."""
        if self._reference is None:
            self._reference = _reference_at(problem, self.x, 0.0)
        return self._reference


def accuracy_points(problem: Problem | ResidualProblem, methods: Mapping[str, Method]) -> AccuracyPoints:
    """``REGION_POINTS`` points of the first method's region (:func:`comparison_region`), drawn with seed
    ``REGION_SEED`` (``region.sample`` on :func:`deepbsde.paths.make_generator`); else the points of
    :func:`slice_line`."""
    found = comparison_region(methods)
    if found is not None and isinstance(problem, Problem):
        label, region = found
        x = region.sample(REGION_POINTS, problem.dim, make_generator(REGION_SEED), torch.float64)
        return AccuracyPoints(x.cpu().numpy(), f"{REGION_POINTS} points of the {region.kind} region of {label}")
    line = slice_line(problem, methods)
    return AccuracyPoints(line.points(), f"the {line.s.size} points of the slice {line.text}")


def _reference_at(problem: Problem | ResidualProblem, x: np.ndarray,
                  t: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The reference ``(u (n,), grad u (n, d))`` at time ``t`` and points ``x``, ``None`` where there is none:
    :func:`~deepbsde.regions.reference_functions`, and for a ResidualProblem its ``reference_solution``
    (no gradient). A reference that fails is logged and taken as none: it must not lose the trained answers."""
    try:
        return _reference_values(problem, x, t)
    except Exception as exc:  # a user's or the catalogue's reference function
        logger.warning("compare: the reference of %s at t = %g failed, drawn and measured without it: %s: %s",
                       problem.name, t, type(exc).__name__, exc)
        return None, None


def _reference_values(problem: Problem | ResidualProblem, x: np.ndarray,
                      t: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    tt = torch.full((xt.shape[0], 1), float(t), dtype=torch.float64)
    ref_u, ref_grad = reference_functions(problem)
    if ref_u is None and isinstance(problem, ResidualProblem) and problem.has_reference_solution:
        ref_u = problem.reference_solution
    if ref_u is None:
        return None, None
    with torch.no_grad():
        u = torch.as_tensor(ref_u(tt, xt)).detach().to("cpu", torch.float64).reshape(-1).numpy()
    grad = None
    if ref_grad is not None:
        grad = torch.as_tensor(ref_grad(tt, xt)).detach().to("cpu", torch.float64).reshape(xt.shape).numpy()
    return u, grad


def accuracy(solution: Solution, problem: Problem | ResidualProblem, points: AccuracyPoints) -> dict[str, Any]:
    r"""``u_rel_l2`` :math:`= \|\hat u - u\|_2 / \|u\|_2` and ``grad_u_rel_l2`` (the same for :math:`\nabla u`,
    summed over coordinates) of ``solution`` at :math:`t = 0` on ``points`` against the problem's reference
    (as :func:`deepbsde.regions.region_errors` computes them), and ``l2_over`` saying where; each ``None``
    where the solution cannot evaluate :math:`u` (or :math:`\nabla u`) there (``ConfigError`` from
    ``Solution.u``: the deep BSDE method in point mode) or where the problem has no reference at any point."""
    out: dict[str, Any] = dict.fromkeys(ACCURACY_KEYS)
    ref_u, ref_grad = points.reference(problem)
    if ref_u is None:
        return out
    try:
        u = solution.u(points.x)
    except ConfigError as exc:
        logger.debug("compare: no u away from x0 for %s: %s", solution.method, exc)
        return out
    out["u_rel_l2"] = _relative_l2(torch.from_numpy(u.reshape(-1)), torch.from_numpy(ref_u))
    out["l2_over"] = points.over
    if ref_grad is not None:
        try:
            grad = solution.grad_u(points.x)
        except ConfigError as exc:
            logger.debug("compare: no grad u away from x0 for %s: %s", solution.method, exc)
        else:
            out["grad_u_rel_l2"] = _relative_l2(torch.from_numpy(grad), torch.from_numpy(ref_grad))
    return out


def slice_curves(report: ComparisonReport, problem: Problem | ResidualProblem) -> dict[str, Any]:
    r"""The numbers of ``slice.png`` (and ``slice.json``): the line (:func:`slice_line`), the times (0, or three
    times for a ResidualProblem), the reference ``u`` and Greek per time (``None`` where there is none), and per
    method either ``curves`` (``u`` and Greek :math:`\nabla u \cdot v` per time, Greek ``None`` where
    ``grad_u`` fails) or, for a method that gives :math:`u(0, x_0)` only, ``u0``, ``u0_interval`` and
    ``greek0`` (``grad_u0 · v``, ``None`` where unavailable)."""
    line = slice_line(problem, {e.label: e.method for e in report.entries})
    x = line.points()
    if isinstance(problem, ResidualProblem):
        times = [0.25 * problem.horizon, 0.5 * problem.horizon, 0.75 * problem.horizon]
    else:
        times = [0.0]
    reference = []
    for tv in times:
        u, grad = _reference_at(problem, x, tv)
        reference.append({"u": _list(u), "greek": _list(None if grad is None else grad @ line.direction)})
    methods: dict[str, Any] = {}
    for e in report.entries:
        curves = _method_curves(e.solution, x, line.direction, times)
        if curves is not None:
            methods[e.label] = {"curves": curves}
            continue
        s = e.solution
        try:
            greek0 = float(np.asarray(s.grad_u0) @ line.direction)
        except AttributeError:
            greek0 = None
        methods[e.label] = {"u0": s.u0, "u0_interval": None if s.u0_interval is None else list(s.u0_interval),
                            "greek0": greek0}
    return {"line": line.text, "base": _list(line.base), "direction": _list(line.direction), "s": _list(line.s),
            "x0_at": line.at_x0, "times": times, "reference": reference, "methods": methods}


def _method_curves(solution: Solution, x: np.ndarray, direction: np.ndarray,
                   times: Sequence[float]) -> list[dict[str, Any]] | None:
    """``[{"u": ..., "greek": ...}]`` per time, or ``None`` where the solution gives :math:`u(0, x_0)` only."""
    curves = []
    for tv in times:
        try:
            u = solution.u(x, t=tv)
        except ConfigError as exc:
            if not curves:
                logger.debug("compare: %s drawn at x0 only: %s", solution.method, exc)
                return None
            logger.debug("compare: no u at t = %g for %s: %s", tv, solution.method, exc)
            curves.append({"u": None, "greek": None})
            continue
        try:
            greek = solution.grad_u(x, t=tv) @ direction
        except ConfigError as exc:
            logger.debug("compare: no Greek for %s: %s", solution.method, exc)
            greek = None
        curves.append({"u": _list(u), "greek": _list(greek)})
    return curves


def _list(values: np.ndarray | None) -> list[float | None] | None:
    """A JSON-ready list (non-finite values as ``None``), or ``None``."""
    if values is None:
        return None
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).reshape(-1)]


# --- the report folder ----------------------------------------------------------------------------

def write_report(report: ComparisonReport, problem: Problem | ResidualProblem) -> None:
    """Write ``report.md``, ``loss.png``, ``slice.png`` and ``summary.json`` into ``report.out``."""
    root = report.out
    write_json_atomic(root / "summary.json", report.summaries())
    curves = slice_curves(report, problem)
    write_json_atomic(root / "slice.json", curves)
    figures = []
    try:
        _plot_losses(report, root / "loss.png")
        figures.append(("Training curves", "loss.png"))
        _plot_slice(curves, report, problem, root / "slice.png")
        figures.append(("Solution and its Greek along a slice", "slice.png"))
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        figures.append((f"figures not drawn: {exc}", ""))
    first = report.entries[0].solution
    lines = [f"# {report.problem}: {', '.join(e.label for e in report.entries)}", "",
             f"Problem: `{problem!r}`. Same seed ({first.seed}) and device ({first.device}) for every method.", "",
             report.table(), "",
             "Relative error: |u0 - reference| / |reference| at (0, x0). Relative L2 error: over the method's "
             "reference points (PINN: the evaluation grid of a ResidualProblem, or points drawn by its sampler "
             "against the closed form). Wall time: the whole `solve` call; on a shared machine it is noisy. "
             f"Peak memory: {report.entries[0].memory_measure}. u rel. L2, ∇u rel. L2: "
             f"||û - u||₂ / ||u||₂ at t = 0 (for ∇u summed over coordinates) on {_over(report)}, against the "
             "problem's reference at any point; '-' where a method gives u(0, x0) only or there is no such "
             f"reference. Slice: {curves['line']} (numbers in slice.json).", ""]
    for e in report.entries:
        lines.append(f"- **{e.label}**: `{_settings(e.method)}`; train: `{_train_text(e.solution, e)}`")
        for w in e.solution.warnings:
            lines.append(f"  - warning: {w}")
    lines.append("")
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})" if name else "", ""]
    (root / "report.md").write_text("\n".join(lines))


def _over(report: ComparisonReport) -> str:
    """Where the L2 columns were measured (the same points for every method)."""
    for e in report.entries:
        if e.accuracy.get("l2_over"):
            return e.accuracy["l2_over"]
    return "no points (no method measured)"


def _settings(method: Method) -> str:
    items = method.describe()
    items.pop("name", None)
    return f"{method.name}(" + ", ".join(f"{k}={v}" for k, v in items.items()) + ")"


def _train_text(solution: Solution, entry: ComparisonEntry) -> str:
    cfg = solution.run_dir / "config.json" if solution.run_dir is not None else None
    if cfg is not None and cfg.is_file():
        train = json.loads(cfg.read_text()).get("train", {})
        keys = ("iterations", "batch_size", "lr_values", "lr_boundaries", "dtype")
        return ", ".join(f"{k}={train[k]}" for k in keys if k in train)
    return f"iterations={solution.iterations}, dtype={solution.dtype}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_losses(report: ComparisonReport, path: Path) -> None:
    plt = _plt()
    with_l2 = any(e.solution.history.metrics for e in report.entries)
    fig, axes = plt.subplots(1, 2 if with_l2 else 1, figsize=(11 if with_l2 else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for e in report.entries:
        h = e.solution.history
        steps, loss = h.column("step"), h.column("loss")
        ax.plot(steps, [v if v > 0 else float("nan") for v in loss], label=e.label)
        split = e.solution.iterations
        if steps and steps[-1] > split:
            ax.axvline(split, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="step (L-BFGS iterations after the dotted line)", ylabel="validation loss", yscale="log",
           title="validation loss")
    ax.legend()
    if with_l2:
        ax = axes[0, 1]
        for e in report.entries:
            if e.solution.history.metrics:
                steps, values = e.solution.history.metric("l2_relative_error")
                ax.plot(steps, values, label=e.label)
        ax.set(xlabel="step", ylabel="relative L2 error", yscale="log", title="relative L2 error")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_slice(curves: Mapping[str, Any], report: ComparisonReport, problem: Problem | ResidualProblem,
                path: Path) -> None:
    """Draw ``slice.png`` from :func:`slice_curves`: :math:`u` (left) and the Greek :math:`\\nabla u \\cdot v`
    (right) along the line; curves for methods that evaluate u anywhere, dots at x0 for the others."""
    plt = _plt()
    fig, (ax_u, ax_g) = plt.subplots(1, 2, figsize=(12, 4.4))
    s = np.asarray(curves["s"], dtype=np.float64)
    times, at = curves["times"], curves["x0_at"]
    residual = isinstance(problem, ResidualProblem)
    for k, tv in enumerate(times):
        suffix = f" (t={tv:g})" if len(times) > 1 else ""
        ref = curves["reference"][k]
        exact = not residual and problem.has_exact_solution
        name = ("exact" if exact else "reference") + suffix
        for ax, key in ((ax_u, "u"), (ax_g, "greek")):
            if ref[key] is not None:
                ax.plot(s, _floats(ref[key]), "k-", lw=2.5, alpha=0.35, label=name)
        for label, data in curves["methods"].items():
            if "curves" in data:
                curve = data["curves"][k]
                for ax, key in ((ax_u, "u"), (ax_g, "greek")):
                    if curve[key] is not None:
                        ax.plot(s, _floats(curve[key]), "--", label=label + suffix)
            elif tv == 0.0:
                _plot_dot(ax_u, ax_g, label, data, at)
    if not residual and at is not None and curves["reference"][0]["u"] is None:
        ref = report.entries[0].solution.reference
        if ref is not None and ref.value is not None:
            ax_u.plot([at], [ref.value], "k*", ms=12, label=f"reference u(0, x0) ({ref.source})")
    what = "u(t, x)" if residual else "u(0, x)"
    ax_u.set(xlabel="s", ylabel="u", title=f"{what} along {curves['line']}")
    ax_g.set(xlabel="s", ylabel="∂u/∂s = ∇u · v", title="Greek ∂u/∂s = ∇u · v along the same line")
    for ax in (ax_u, ax_g):
        ax.title.set_fontsize(9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_dot(ax_u: Any, ax_g: Any, label: str, data: Mapping[str, Any], at: float | None) -> None:
    """A method that gives u(0, x0) only: a dot at x0 (its interval as an error bar, ``grad_u0 · v`` on the
    Greek panel), or a legend line where x0 is not on the drawn line."""
    if at is None:
        ax_u.plot([], [], " ", label=f"{label}: u0 = {data['u0']:.6g} at x0 (x0 not on this line)")
        return
    interval = data.get("u0_interval")
    if interval is not None:
        err = [[max(data["u0"] - interval[0], 0.0)], [max(interval[1] - data["u0"], 0.0)]]
        ax_u.errorbar([at], [data["u0"]], yerr=err, fmt="o", ms=7, capsize=4, label=f"{label} (u0 only, 95 %)")
    else:
        ax_u.plot([at], [data["u0"]], "o", ms=8, label=f"{label} (u0 only)")
    if data.get("greek0") is not None:
        ax_g.plot([at], [data["greek0"]], "o", ms=8, label=f"{label} (∇u(0, x0) · v)")


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
