r"""``compare(problem, methods, ...)``: several methods on the same problem, one report.

Each method is trained by :func:`deepbsde.solve` with the same seed and device (each in its own run folder
``OUT/<label>/``); then ``OUT`` receives

* ``report.md``: one table (method, :math:`u(0, x_0)`, reference, relative error, relative L2 error where
  the method measures one, wall time, peak memory, iterations) and the figures;
* ``loss.png``: the validation loss of each method against the step (and the relative L2 error where
  recorded), on log scales;
* ``slice.png``: :math:`u` along the line :math:`x_0 + s e_1` at :math:`t = 0` for methods that give
  :math:`u(t, x)` everywhere (the PINN), the deep BSDE method's single value at ``s = 0`` and the exact
  solution where there is one; for a :class:`~deepbsde.ResidualProblem`, :math:`u(t, \cdot)` along
  :math:`x_0 + s e_1` at three times against the reference solution;
* ``summary.json``: a list of one object per method with the keys of :meth:`deepbsde.Solution.summary`
  plus ``label``, ``wall_seconds``, ``peak_memory_bytes`` and ``memory_measure``.

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
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .config import TrainConfig
from .errors import ConfigError, describe
from .methods.base import Method
from .pinn_problem import ResidualProblem
from .problem import Problem
from .runlog import check_out_folder, default_run_dir, write_json_atomic
from .solution import Solution
from .solve import resolve_device, solve

__all__ = ["compare", "ComparisonReport", "ComparisonEntry", "PeakMemory"]


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

    def summary(self) -> dict[str, Any]:
        out = {"label": self.label}
        out.update(self.solution.summary())
        out.update(wall_seconds=self.wall_seconds, peak_memory_bytes=self.peak_memory_bytes,
                   memory_measure=self.memory_measure)
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
                "| peak memory (MiB) | iterations |")
        lines = [head, "|" + "---|" * 8]
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
                         f"| {'-' if l2 is None else f'{l2:.2e}'} | {e.wall_seconds:.1f} | {mem} | {iters} |")
        return "\n".join(lines)


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
    entries = []
    for label, method in labelled.items():
        start = time.perf_counter()
        with PeakMemory(dev) as mem:
            solution = solve(problem, method, train=per_label[label], seed=seed, device=dev,
                             out=(root / label) if root is not None else False, progress=progress)
        entries.append(ComparisonEntry(label, method, solution, time.perf_counter() - start, mem.peak, mem.measure))
    report = ComparisonReport(problem.name, tuple(entries), root)
    if root is not None:
        write_report(report, problem)
    return report


#: what a finished compare writes into its report folder (each method's folder holds its own summary.json)
REPORT_FILES = ("summary.json", "report.md", "loss.png", "slice.png")


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


# --- the report folder ----------------------------------------------------------------------------

def write_report(report: ComparisonReport, problem: Problem | ResidualProblem) -> None:
    """Write ``report.md``, ``loss.png``, ``slice.png`` and ``summary.json`` into ``report.out``."""
    root = report.out
    write_json_atomic(root / "summary.json", report.summaries())
    figures = []
    try:
        _plot_losses(report, root / "loss.png")
        figures.append(("Training curves", "loss.png"))
        _plot_slice(report, problem, root / "slice.png")
        figures.append(("Solution along a slice", "slice.png"))
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        figures.append((f"figures not drawn: {exc}", ""))
    first = report.entries[0].solution
    lines = [f"# {report.problem}: {', '.join(e.label for e in report.entries)}", "",
             f"Problem: `{problem!r}`. Same seed ({first.seed}) and device ({first.device}) for every method.", "",
             report.table(), "",
             "Relative error: |u0 - reference| / |reference| at (0, x0). Relative L2 error: over the method's "
             "reference points (PINN: the evaluation grid of a ResidualProblem, or points drawn by its sampler "
             "against the closed form). Wall time: the whole `solve` call; on a shared machine it is noisy. "
             f"Peak memory: {report.entries[0].memory_measure}.", ""]
    for e in report.entries:
        lines.append(f"- **{e.label}**: `{_settings(e.method)}`; train: `{_train_text(e.solution, e)}`")
        for w in e.solution.warnings:
            lines.append(f"  - warning: {w}")
    lines.append("")
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})" if name else "", ""]
    (root / "report.md").write_text("\n".join(lines))


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


def _plot_slice(report: ComparisonReport, problem: Problem | ResidualProblem, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x0 = problem.x0_tensor(torch.float64)
    if isinstance(problem, ResidualProblem):
        lo, hi = problem.lower[0], problem.upper[0]
        s = torch.linspace(lo - x0[0].item(), hi - x0[0].item(), 257, dtype=torch.float64)
        times = [0.25 * problem.horizon, 0.5 * problem.horizon, 0.75 * problem.horizon]
        title = f"u(t, x0 + s e1) at t = {', '.join(f'{t:g}' for t in times)}"
    else:
        half = float(getattr(report.entries[0].method, "half_width", 1.0))
        for e in report.entries:
            half = float(getattr(e.method, "half_width", half))
        s = torch.linspace(-half, half, 201, dtype=torch.float64)
        times = [0.0]
        title = "u(0, x0 + s e1)"
    x = x0.expand(s.shape[0], -1).clone()
    x[:, 0] += s
    for k, tv in enumerate(times):
        t = torch.full((s.shape[0], 1), tv, dtype=torch.float64)
        exact = None
        if isinstance(problem, ResidualProblem) and problem.has_reference_solution:
            exact = problem.reference_solution(t, x)
        elif isinstance(problem, Problem) and problem.has_exact_solution:
            exact = problem.exact_solution(t, x)
        suffix = f" (t={tv:g})" if len(times) > 1 else ""
        if exact is not None:
            ax.plot(s.numpy(), exact.reshape(-1).numpy(), "k-", lw=2.5, alpha=0.35,
                    label=("reference" if isinstance(problem, ResidualProblem) else "exact") + suffix)
        for e in report.entries:
            evaluate = getattr(e.method, "evaluate", None)
            if evaluate is not None and e.solution.model is not None:
                values = evaluate(e.solution.model, t, x).reshape(-1).numpy()
                ax.plot(s.numpy(), values, "--", label=e.label + suffix)
            elif tv == 0.0:
                ax.plot([0.0], [e.solution.u0], "o", ms=8, label=f"{e.label} (u0 only)")
    if isinstance(problem, Problem):
        ref = report.entries[0].solution.reference
        if ref is not None and ref.value is not None and not problem.has_exact_solution:
            ax.plot([0.0], [ref.value], "k*", ms=12, label=f"reference u(0, x0) ({ref.source})")
    ax.set(xlabel="s", ylabel="u", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

