"""Training checkpoints: atomic writes, weights-only loads, fallback to the previous good one.

A checkpoint is a dictionary of tensors and plain values (no pickled objects): the model and optimiser
state dicts, every rank's training random generator state and the number of ranks, the step, the
learning-rate multiplier left by rollbacks, the history rows and the rollback records, and a fingerprint of
the run's settings. :func:`deepbsde.solve` saves only validated states (logged steps that passed the
divergence check). It is written to ``ckpt-<step>.pt.tmp``, flushed and renamed to ``ckpt-<step>.pt``
so that a killed process never leaves a half-written checkpoint under the final name. Loading uses ``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints"]

log = logging.getLogger("deepbsde")

_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
FORMAT_VERSION = 1


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as ``directory/ckpt-<step>.pt`` atomically; keep only the ``keep`` newest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt-{step:08d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format_version": FORMAT_VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # an exception (not a kill) leaves no partial file behind
        raise
    _fsync_dir(directory)  # make the rename itself durable before older checkpoints are deleted
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.glob("ckpt-*.pt.tmp"):  # left by a process killed while writing
        stale.unlink(missing_ok=True)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on this platform (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load one checkpoint with weights-only unpickling; raise :class:`CheckpointError` if it is
    truncated, corrupt, not a deepbsde checkpoint or of another format version."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                              "it is truncated, corrupt or not a deepbsde checkpoint") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: expected a deepbsde checkpoint of format version "
                              f"{FORMAT_VERSION}, received {type(state).__name__} with version "
                              f"{state.get('format_version') if isinstance(state, dict) else None}")
    return state


def latest_checkpoint(directory: Path, map_location: torch.device | str = "cpu") -> tuple[dict[str, Any], Path, list[str]] | None:
    """The newest checkpoint in ``directory`` that loads, with its path and one message per newer
    checkpoint that did not load (skipped in favour of the previous one). ``None`` if there is none;
    :class:`CheckpointError` if there are checkpoints and none of them loads."""
    paths = list_checkpoints(directory)
    if not paths:
        return None
    problems: list[str] = []
    for path in reversed(paths):
        try:
            return load_checkpoint(path, map_location), path, problems
        except CheckpointError as exc:
            log.warning("%s; falling back to the previous checkpoint", exc)
            problems.append(str(exc))
    raise CheckpointError(f"no readable checkpoint in {directory}: " + " | ".join(problems))
