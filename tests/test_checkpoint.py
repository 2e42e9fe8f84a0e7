"""Checkpoints: an interrupted run resumes to exactly the numbers of an uninterrupted one, and a damaged,
foreign or malicious checkpoint never silently corrupts a run.

* the command line killed with SIGKILL mid-run and resumed with ``--resume`` ends with the same u0 and the
  same history (loss, train_loss, u0, lr; bit for bit on the CPU) as an uninterrupted run of the same seed;
  in-process, a run stopped early and extended with ``resume=True`` does the same;
* a truncated newest checkpoint is skipped (warning in the Solution and in the log) in favour of the
  previous one, again reproducing the uninterrupted numbers; when none is readable: CheckpointError;
* weights-only loading refuses a checkpoint carrying a pickled object (and does not run its code);
* a checkpoint of another run (seed, problem) is refused;
* a crash during ``torch.save`` never leaves a partial file under a checkpoint's name: the previous
  checkpoint stays intact and is what a resume uses.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepbsde import CheckpointError, DeepBSDE, TrainConfig, solve
from deepbsde.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from equations import HeatEquation

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("step", "loss", "train_loss", "u0", "lr")  # every history column but wall-clock seconds
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# The command-line run: heat equation d = 5 (u(0, 0) = 5), N = 10, float64, 1200 steps (a few seconds).
CLI_SETTINGS = ["--set", "equation.dim=5", "--set", "method.num_steps=10", "--set", "method.y0_range=[0.0, 10.0]",
                "--set", "train.iterations=1200", "--set", "train.log_every=50", "--set", "train.checkpoint_every=100",
                "--set", 'train.dtype="float64"', "--set", "train.lr_values=[0.05, 0.01]",
                "--set", "train.lr_boundaries=[600]", "--set", "train.tolerance=0", "--set", "train.eval_paths=2048", "--json", "--no-progress"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepbsde", "solve", *args]


# `deepbsde solve ARGS...` that kills its own process with SIGKILL right after writing the history row of
# step argv[1] (a crash at a known point: no timing involved)
KILL_AFTER_ROW = """
import os, signal, sys
from deepbsde import runlog
from deepbsde.cli import main

kill_at, log = int(sys.argv[1]), runlog.RunWriter.log

def log_then_die(self, row):
    log(self, row)
    if row.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

runlog.RunWriter.log = log_then_die
sys.exit(main(["solve", *sys.argv[2:]]))
"""


def _history(run_dir: Path) -> list[tuple[str, ...]]:
    """The compared columns of history.csv, as written (repr of floats: exact)."""
    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [tuple(row[c] for c in COMPARED) for row in rows]


def test_cli_killed_mid_run_resumes_exactly(tmp_path: Path) -> None:
    config = str(ROOT / "equations" / "configs" / "heat.toml")
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"

    # the uninterrupted run, alongside (one thread each)
    full = subprocess.Popen(_cli(config, "--out", str(full_dir), *CLI_SETTINGS), cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the interrupted run: the command line SIGKILLs itself right after logging step 150, when checkpoint 100
    # is on disk and 50 steps past it are done (so the resume must redo them). Deterministic: no sleep.
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_ROW, "150", config, "--out", str(cut_dir),
                           *CLI_SETTINGS], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed at step 150: {proc.stderr}"
    assert not (cut_dir / "summary.json").exists()
    assert [row[0] for row in _history(cut_dir)] == ["0", "50", "100", "150"]
    assert [p.name for p in list_checkpoints(cut_dir / "checkpoints")] == ["ckpt-00000100.pt"]

    resumed = subprocess.run(_cli("--resume", str(cut_dir), "--json", "--no-progress"), cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    full_out, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err

    a = json.loads(full_out.strip().splitlines()[-1])
    b = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert b["u0"] == a["u0"] and b["grad_u0"] == a["grad_u0"] and b["final_loss"] == a["final_loss"]
    assert b["warnings"] == a["warnings"] and b["rollbacks"] == a["rollbacks"]
    assert [w for w in b["warnings"] if w != b["verdict_reason"]] == []
    assert _history(cut_dir) == _history(full_dir)
    assert len(_history(full_dir)) == 25  # steps 0, 50, ..., 1200
    assert abs(a["u0"] - 5.0) < 0.5  # it did learn the heat equation's u(0, 0) = d = 5
    # the summary on disk is the resumed run's, and the checkpoints are the last two
    assert json.loads((cut_dir / "summary.json").read_text())["u0"] == a["u0"]
    assert [p.name for p in list_checkpoints(cut_dir / "checkpoints")] == ["ckpt-00001100.pt", "ckpt-00001200.pt"]
    assert not list((cut_dir / "checkpoints").glob("*.tmp"))


# ----------------------------------------------------------------------------------------------------------
# in-process: a 300-step reference run with checkpoints at 100, 200, 300 (the last two kept)

PROBLEM = dict(dim=5)
METHOD = dict(num_steps=10, y0_range=(0.0, 10.0))


def _train(iterations: int, **kw) -> TrainConfig:
    return TrainConfig(iterations=iterations, batch_size=32, valid_size=64, log_every=50, checkpoint_every=100, tolerance=None,
                       dtype="float64", lr_values=(0.05,), **kw)


def _solve(iterations: int, out: Path, resume: bool = False, seed: int = 0, dim: int = 5):
    return solve(HeatEquation(dim=dim), DeepBSDE(**METHOD), train=_train(iterations), seed=seed, out=out,
                 resume=resume, progress=False, device="cpu")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ckpt") / "ref"
    return _solve(300, out)


def _copy(run, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run.run_dir, dest)
    return dest


def _same(a, b) -> None:
    assert a.u0 == b.u0
    rows = lambda sol: [[repr(getattr(r, c)) for c in COMPARED] for r in sol.history]  # repr: nan == nan
    assert rows(a) == rows(b)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_in_process_stop_and_extend_is_exact(reference_run, tmp_path: Path) -> None:
    out = tmp_path / "split"
    first = _solve(150, out)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["ckpt-00000100.pt", "ckpt-00000150.pt"]
    assert first.iterations == 150
    resumed = _solve(300, out, resume=True)
    _same(resumed, reference_run)
    assert resumed.run_warnings == ()


def test_truncated_newest_checkpoint_falls_back_to_previous(reference_run, tmp_path: Path, caplog) -> None:
    run_dir = _copy(reference_run, tmp_path)
    newest = run_dir / "checkpoints" / "ckpt-00000300.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="deepbsde"):
        resumed = _solve(300, run_dir, resume=True)
    _same(resumed, reference_run)  # from step 200, redone to 300: the same numbers
    assert len(resumed.run_warnings) == 1 and "skipped unreadable checkpoint" in resumed.run_warnings[0]
    assert "ckpt-00000300.pt" in resumed.run_warnings[0]
    assert any("ckpt-00000300.pt" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
    assert json.loads((run_dir / "summary.json").read_text())["warnings"] == list(resumed.warnings)


def test_every_checkpoint_corrupt_is_an_error(reference_run, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path)
    paths = list_checkpoints(run_dir / "checkpoints")
    assert len(paths) == 2
    paths[0].write_bytes(b"")
    paths[1].write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="no readable checkpoint in") as info:
        _solve(300, run_dir, resume=True)
    assert all(p.name in str(info.value) for p in paths)


class _Payload:
    """Unpickling this creates ``marker``: code that weights-only loading must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_is_refused(reference_run, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    run_dir = _copy(reference_run, tmp_path)
    state = load_checkpoint(run_dir / "checkpoints" / "ckpt-00000300.pt")
    state["payload"] = _Payload(marker)
    for path in list_checkpoints(run_dir / "checkpoints"):
        torch.save(state, path)  # a plain (non-weights-only) save, as an attacker would
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(run_dir / "checkpoints" / "ckpt-00000300.pt")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        _solve(300, run_dir, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("change", [dict(seed=1), dict(dim=6)])
def test_checkpoint_of_another_run_is_refused(reference_run, tmp_path: Path, change) -> None:
    run_dir = _copy(reference_run, tmp_path)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        _solve(300, run_dir, resume=True, **change)


def test_resume_with_fewer_iterations_than_the_checkpoint_is_refused(reference_run, tmp_path: Path) -> None:
    run_dir = _copy(reference_run, tmp_path)
    with pytest.raises(Exception, match="train.iterations: checkpoint .* is at step 300"):
        _solve(250, run_dir, resume=True)


def test_resume_without_checkpoints_says_so(tmp_path: Path) -> None:
    sol = _solve(50, tmp_path / "empty", resume=True)
    assert any("no checkpoint" in w for w in sol.warnings)


def test_crash_during_save_leaves_previous_checkpoint_intact(reference_run, tmp_path: Path, monkeypatch) -> None:
    run_dir = _copy(reference_run, tmp_path)
    directory = run_dir / "checkpoints"
    before = {p.name: p.read_bytes() for p in list_checkpoints(directory)}
    real_save = torch.save

    def crashing_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the disk, then the writer dies
        raise OSError("simulated crash: no space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated crash"):
        _solve(400, run_dir, resume=True)  # trains 300 -> 400, then fails writing ckpt-400
    monkeypatch.setattr(torch, "save", real_save)
    assert {p.name: p.read_bytes() for p in list_checkpoints(directory)} == before
    assert sorted(p.name for p in directory.iterdir()) == sorted(before)  # no ckpt-400, no .tmp
    state, path, skipped = latest_checkpoint(directory)
    assert path.name == "ckpt-00000300.pt" and skipped == [] and state["loop"]["step"] == 300
    assert not (run_dir / "summary.json").exists()  # the failed run claims no result

    # a process killed inside torch.save leaves only the .tmp file, which is ignored and cleaned up
    (directory / "ckpt-00000400.pt.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    assert latest_checkpoint(directory)[1].name == "ckpt-00000300.pt"
    resumed = _solve(300, run_dir, resume=True)
    _same(resumed, reference_run)
    save_checkpoint(directory, 301, state)
    assert not list(directory.glob("*.tmp"))
    assert [p.name for p in list_checkpoints(directory)] == ["ckpt-00000300.pt", "ckpt-00000301.pt"]


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path, monkeypatch) -> None:
    """The default run folder is claimed when it is named: two runs of one problem started in the same second
    (found as two processes of a script, one of which crashed writing its config into the other's folder)."""
    from deepbsde import runlog

    monkeypatch.setattr(runlog.time, "strftime", lambda fmt: "20261203-120000")
    first = runlog.default_run_dir("HJBLQ", tmp_path)
    second = runlog.default_run_dir("HJBLQ", tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "HJBLQ-20261203-120000-1"
    assert runlog.default_run_dir("HJBLQ", tmp_path, claim=False).name == "HJBLQ-20261203-120000-2"


def test_a_warm_started_run_resumes_exactly(tmp_path: Path) -> None:
    """A warm start copies the source's pilot scales into the model and counts its steps towards the error bar's
    paths; a resumed run rebuilds neither from its config (grid refinement's second run is such a run). Both are
    kept with the checkpoint: resuming from the middle gives the uninterrupted run's numbers."""
    method = DeepBSDE(num_steps=4, hidden=(8, 8))
    base = solve(HeatEquation(dim=2), method, train=TrainConfig(iterations=100, log_every=50), seed=0, out=False,
                 progress=False)
    problem = HeatEquation(dim=2, sigma=1.3)
    train = TrainConfig(iterations=200, log_every=50, checkpoint_every=100, tolerance=0)
    full = solve(problem, method, train=train, seed=0, out=tmp_path / "full", progress=False, init=base)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    (tmp_path / "cut" / "checkpoints" / "ckpt-00000200.pt").unlink()
    resumed = solve(problem, method, train=train, seed=0, out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.u0 == full.u0 and resumed.u0_interval == full.u0_interval
    assert resumed.extra["init"] == full.extra["init"]
