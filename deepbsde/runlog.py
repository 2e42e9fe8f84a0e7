"""The run folder: config, history CSV, summary JSON and TensorBoard scalars, written as training goes.

Layout of ``RUN_DIR``::

    config.json        problem, method, training settings, seed, device, versions (written first)
    history.csv        one row per logged step, flushed as it is written
    metrics.csv        the method's metrics at logged steps (step,name,value), where it has any
    summary.json       the final summary (the same keys as ``deepbsde solve --json``)
    tensorboard/       TensorBoard scalars: loss, train_loss, u0, lr
    checkpoints/       training checkpoints (see :mod:`deepbsde.checkpoint`)
    solution.json      the saved solution: problem identity, method, every field (see :mod:`deepbsde.saved`)
    model.pt           the trained model's state dict (read back by :func:`deepbsde.load`)
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .solution import HistoryRow

__all__ = ["RunWriter", "default_run_dir", "write_json_atomic", "check_out_folder"]


def default_run_dir(name: str, root: str | Path = "runs", claim: bool = True) -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>[-k]``, a folder no other run has. ``claim=True`` creates it, atomically:
    two runs started in the same second (two processes of a user's script) each get a folder of their own,
    where a check for existence followed by a later creation gave both the same one and one crashed writing
    its config. ``claim=False`` only names the first free one (for a process that writes nothing)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-{stamp}"
    path, k = base, 1
    if claim:
        Path(root).mkdir(parents=True, exist_ok=True)
    while True:
        if claim:
            try:
                path.mkdir()
                return path
            except FileExistsError:
                pass
        elif not path.exists():
            return path
        path = base.with_name(f"{base.name}-{k}")
        k += 1


def check_out_folder(path: str | Path, where: str = "--out") -> None:
    """Raise :class:`ConfigError` naming ``where`` unless ``path`` is a folder or can be made one: neither it
    nor any existing folder above it may be a file (checked before any training)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                what = "is" if candidate == path else f"lies below {str(candidate)!r}, which is"
                raise ConfigError(f"{where}: expected a folder for the run, received {str(path)!r}, which "
                                  f"{what} an existing file, not a folder")
            return


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunWriter:
    """Writes one run folder. ``resume=True`` keeps what is there and rewrites the history CSV from the
    rows restored with the checkpoint."""

    def __init__(self, run_dir: Path, config: dict[str, Any], tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / "config.json", config)
        self._csv_path = self.run_dir / "history.csv"
        self._csv = None
        self._metrics_csv = None
        self._tb = None
        self._tensorboard = tensorboard

    def start_history(self, rows: list[HistoryRow], metrics: list[tuple[int, dict[str, float]]] = ()) -> None:
        """Open the history CSV (and the metrics CSV) afresh, holding ``rows`` and ``metrics`` (those restored
        from a checkpoint, or none)."""
        if self._csv is not None:
            self._csv.close()
        self._csv = open(self._csv_path, "w", newline="")
        self._writer = csv.writer(self._csv)
        self._writer.writerow(HistoryRow.FIELDS)
        for row in rows:
            self._writer.writerow([getattr(row, f) for f in HistoryRow.FIELDS])
        self._csv.flush()
        if self._metrics_csv is not None:
            self._metrics_csv.close()
            self._metrics_csv = None
        if metrics:
            for step, values in metrics:
                self._write_metrics(step, values)
        elif (self.run_dir / "metrics.csv").exists():
            (self.run_dir / "metrics.csv").unlink()
        if self._tensorboard:
            from .tbevents import EventWriter

            if self._tb is not None:  # a rollback reopens the history: close the old writer, not leak it
                self._tb.close()
            self._tb = EventWriter(self.run_dir / "tensorboard", purge_step=rows[-1].step + 1 if rows else None)

    def log(self, row: HistoryRow) -> None:
        self._writer.writerow([getattr(row, f) for f in HistoryRow.FIELDS])
        self._csv.flush()
        if self._tb is not None:
            for key in ("loss", "train_loss", "u0", "lr"):
                self._tb.add_scalar(key, getattr(row, key), row.step)
            self._tb.flush()

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        """One row per metric in ``metrics.csv`` (``step,name,value``) and TensorBoard ``metrics/<name>``."""
        self._write_metrics(step, values)
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"metrics/{key}", value, step)
            self._tb.flush()

    def _write_metrics(self, step: int, values: dict[str, float]) -> None:
        if self._metrics_csv is None:
            self._metrics_csv = open(self.run_dir / "metrics.csv", "w", newline="")
            self._metrics_writer = csv.writer(self._metrics_csv)
            self._metrics_writer.writerow(("step", "name", "value"))
        for key, value in values.items():
            self._metrics_writer.writerow((step, key, value))
        self._metrics_csv.flush()

    def finish(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / "summary.json", summary)
        self.close()

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._metrics_csv is not None:
            self._metrics_csv.close()
            self._metrics_csv = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
