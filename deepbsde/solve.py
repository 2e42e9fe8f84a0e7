"""``solve(problem, method, ...)``: the one training loop shared by every method.

What it guarantees:

* input is checked once, before any training: the problem's functions are called on a small batch and
  every shape is checked; a CUDA device asked for where there is none is refused;
* one ``seed`` gives one history on the CPU: three independent generators (initialisation, validation
  batch, training batches) are derived from it with :class:`numpy.random.SeedSequence`, per rank under
  ``torch.distributed``; the global generator is never touched;
* nothing is lost on a crash: the history CSV is flushed at every logged step and, with
  ``train.checkpoint_every``, atomic checkpoints allow ``resume=True`` to continue exactly;
* a non-finite or exploding loss rolls back to the last good state with a smaller learning rate, at most
  ``train.max_rollbacks`` times, then stops with :class:`~deepbsde.errors.DivergenceError`; no NaN or
  stale number is ever returned as an answer;
* no host round-trip in a training step: losses are accumulated on the device and read every
  ``train.log_every`` steps.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import platform
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import latest_checkpoint, save_checkpoint
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DivergenceError, describe
from .estimators import Evaluation, default_paths, evaluate, pilot
from .methods.base import Method
from .methods.deep_bsde import DeepBSDE
from .nets import TimeNet
from .paths import make_generator
from .pinn_problem import ResidualProblem
from .problem import Problem, check_problem
from .resources import ResourceError, check_memory
from .runlog import RunWriter, default_run_dir, write_json_atomic
from .saved import MODEL_FILE, SOLUTION_FILE
from .solution import History, HistoryRow, Solution

__all__ = ["solve", "resolve_device"]

log = logging.getLogger("deepbsde")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; refuses CUDA where there is none."""
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', received {describe(device)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: received {name!r} but no CUDA device is available "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is False); use 'cpu' or 'auto'")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device: received {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        return dev
    raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', received {describe(device)}")


def _derive_seeds(seed: int, rank: int) -> tuple[int, int, int, int, int]:
    """Initialisation and validation seeds shared by all ranks, a training seed per rank, and the seeds of
    the error bar's fresh paths (the final one, and the one of the stopping rule's checks)."""
    init_seed, valid_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    train_seed = int(np.random.SeedSequence([seed, 1, rank]).generate_state(1)[0])
    eval_seed, check_seed = (int(s) % (2 ** 31) for s in np.random.SeedSequence([seed, 2]).generate_state(2))
    return init_seed, valid_seed, train_seed, eval_seed, check_seed


@dataclasses.dataclass
class _Loop:
    """The mutable state of the training loop; what a checkpoint and a rollback snapshot hold."""

    step: int = 0
    lr_scale: float = 1.0
    best_loss: float = math.inf
    history: list[HistoryRow] = dataclasses.field(default_factory=list)
    rollbacks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_sum: float = 0.0  # training losses summed since the last logged step
    train_count: int = 0
    metrics: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)  # Method.metrics rows
    next_check: int = 0  # the first step at which the stopping rule may run its (costly) check again


def solve(problem: Problem, method: Method | None = None, *, train: TrainConfig | Mapping[str, Any] | None = None,
          seed: int = 0, device: str | torch.device = "auto", out: str | Path | bool | None = None,
          resume: bool = False, progress: bool | None = None, run_config: Mapping[str, Any] | None = None,
          init: Solution | None = None) -> Solution:
    """Train ``method`` on ``problem`` and return a :class:`~deepbsde.Solution` with its error bar and verdict.

    With no settings, ``solve(problem)`` runs the deep BSDE method with defaults that need no tuning (a
    pilot simulation sets the starting values and scales), stops once the 95 % error bar of u(0, x0) is
    below ``train.tolerance`` (or at the budget), then re-estimates u(0, x0) and ∇u(0, x0) on fresh paths
    with the trained solution as a control variate (:mod:`deepbsde.estimators`).

    Parameters
    ----------
    problem:
        A :class:`~deepbsde.Problem`, or a :class:`~deepbsde.ResidualProblem` (a PDE stated by its residual,
        for the PINN method only).
    method:
        :class:`~deepbsde.DeepBSDE` (the default) or :class:`~deepbsde.PINN`.
    train:
        A :class:`~deepbsde.TrainConfig` or a mapping of its fields.
    seed:
        The one seed from which every random number of the run derives.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    out:
        The run folder; ``None`` makes ``runs/<problem>-<timestamp>``, ``False`` writes nothing.
    resume:
        Continue from the newest readable checkpoint in ``out/checkpoints`` (a fresh start if none).
    progress:
        Show a tqdm bar (``None``: only on a terminal).
    run_config:
        Extra data stored in ``config.json`` (the command line stores its parsed config file here, which is
        what ``deepbsde solve --resume`` reads back).
    init:
        A warm start: a :class:`~deepbsde.Solution` (from ``solve`` or :func:`deepbsde.load`) of a nearby problem
        with the same method architecture (network, widths, steps, dimension, region mode or not). Training
        starts from its trained weights and its pilot scales instead of a fresh initialisation (the new
        problem's pilot still decides the control measure); a model that does not fit is refused with
        :class:`~deepbsde.errors.ConfigError`. A checkpoint found by ``resume`` takes precedence.
    """
    method, train, dev = _check_inputs(problem, method, train, seed, device, out, resume)
    return _solve_checked(problem, method, train, seed, dev, out, resume, progress, run_config, init)


def _solve_checked(problem: Problem, method: Method, train: TrainConfig, seed: int, dev: torch.device, out: Any,
                   resume: bool, progress: bool | None, run_config: Mapping[str, Any] | None,
                   init: Solution | None, refined_from: dict[str, Any] | None = None) -> Solution:
    """Train and finish one run of checked inputs; then, where :meth:`_Run.refinement` asks for it, the run on
    the finer grid (``DeepBSDE.refine_grid``)."""
    run = _Run(problem, method, train, seed, dev, out, resume, progress, run_config, init, refined_from)
    try:
        run.train()
        run.finetune()
    except BaseException:
        run.close()
        raise
    finally:
        run.bar.close()
    solution = run.finish()
    plan = run.refinement(solution)
    if plan is None:
        return solution
    return _refine(solution, plan, problem, method, train, seed, dev, progress, run_config)


def _refine(first: Solution, plan: tuple[int, int, float], problem: Problem, method: Method, train: TrainConfig,
            seed: int, dev: torch.device, progress: bool | None, run_config: Mapping[str, Any] | None) -> Solution:
    """The second run of grid refinement: ``plan = (num_steps, iterations, time-step part / |u0|)``. The first
    run's files move to ``<run folder>/grid-N``; the second writes the run folder afresh (its config.json holds
    its own settings, so ``deepbsde solve --resume`` continues it). Where the finer grid's memory need is more
    than the machine has, the first answer stands, with a warning."""
    num_steps, iterations, share = plan
    coarse = method.num_steps  # type: ignore[attr-defined]
    finer = dataclasses.replace(method, num_steps=num_steps, refine_grid=False)
    boundaries = None
    if train.lr_boundaries is not None:  # explicit boundaries shrink with the budget, as the default ones do
        scaled: list[int] = []
        for b in train.lr_boundaries:
            b = max(1, round(b * iterations / train.iterations))
            scaled.append(max(b, scaled[-1] + 1) if scaled else b)  # strictly increasing still
        boundaries = tuple(scaled)
    finer_train = dataclasses.replace(train, iterations=iterations, lr_boundaries=boundaries)
    reason = (f"time grid refined from {coarse} to {num_steps} steps: the error bar's time-step part was "
              f"{100 * share:.3g} % of u0 on {coarse} steps, above half the tolerance {train.tolerance:g}")
    try:
        _check_run_memory(problem, finer, finer_train, dev)  # the rest was checked for the first run
    except ResourceError as exc:
        note = (f"the time grid needs refining from {coarse} to {num_steps} steps (its time-step part is "
                f"{100 * share:.3g} % of u0), but that run does not fit in memory: {exc}")
        log.warning(note)
        first = dataclasses.replace(first, warnings=(*first.warnings, note))
        if first.run_dir is not None:
            write_json_atomic(Path(first.run_dir) / "summary.json", first.summary())
        return first
    folder = None
    out = first.run_dir if first.run_dir is not None else False  # the second run writes the run folder afresh
    if first.run_dir is not None:
        run_dir = Path(first.run_dir)
        folder = run_dir / f"grid-{coarse}"
        folder.mkdir()
        for entry in list(run_dir.iterdir()):
            if entry != folder:
                entry.rename(folder / entry.name)
        first = dataclasses.replace(first, run_dir=folder)  # where its files now are (the warm start names it)
    config = None
    if run_config is not None:
        config = copy.deepcopy(dict(run_config))
        config["method"] = {**config.get("method", {}), "num_steps": num_steps, "refine_grid": False}
        config["train"] = {**config.get("train", {}), "iterations": iterations}
        if boundaries is not None:
            config["train"]["lr_boundaries"] = list(boundaries)
    log.info("%s; training %d more steps", reason, iterations)
    summary = {"num_steps": coarse, "u0": first.u0, "u0_interval": list(first.u0_interval) if first.u0_interval
               else None, "iterations": first.iterations, "seconds": first.seconds, "verdict": first.verdict,
               "time_step_share": share, "run_dir": str(folder) if folder is not None else None, "reason": reason}
    return _solve_checked(problem, finer, finer_train, seed, dev, out, False, progress, config, first, summary)


def _check_inputs(problem: Problem, method: Method | None, train: Any, seed: Any, device: Any, out: Any,
                  resume: bool) -> tuple[Method, TrainConfig, torch.device]:
    """Phase 1, validate: every argument, the problem's functions, and the memory the run needs, before any
    allocation."""
    method = DeepBSDE() if method is None else method
    if not isinstance(method, Method):
        raise ConfigError(f"method: expected a deepbsde method (DeepBSDE, PINN), received {describe(method)}")
    if train is None:
        train = TrainConfig()
    elif isinstance(train, Mapping):
        train = TrainConfig.from_mapping(train)
    elif not isinstance(train, TrainConfig):
        raise ConfigError(f"train: expected a TrainConfig or a mapping, received {describe(train)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, received {describe(seed)}")
    dev = resolve_device(device)
    if isinstance(problem, (Problem, ResidualProblem)):
        _check_run_memory(problem, method, train, dev)
    if isinstance(problem, ResidualProblem):
        problem.check(train.torch_dtype, dev)  # a PDE stated by its residual (PINN only); method.check says which methods take it
    else:
        check_problem(problem, train.torch_dtype, dev)
    method.check(problem)
    if resume and (out is None or out is False):
        raise ConfigError("resume: needs out=RUN_DIR, the folder of the run to continue")
    return method, train, dev


def _check_run_memory(problem: Problem | ResidualProblem, method: Method, train: TrainConfig,
                      dev: torch.device) -> None:
    """:class:`~deepbsde.resources.ResourceError` where the method's estimate of the run's memory (per process)
    is more than ``dev`` has."""
    _, world_size = distributed.world()
    needed = method.memory_estimate(problem, train.batch_size // world_size, train.valid_size,
                                    train.torch_dtype) if isinstance(problem, Problem) else None
    if needed is not None:
        check_memory(needed, dev, f"{problem.name}(dim={problem.dim}) with {method.name}")


class _FinetuneDiverged(Exception):
    """Raised inside the finetune callback when its validation fails the divergence check."""


class _Run:
    """One training run, phase by phase: start (build or resume), then the loop of validate, log, roll back,
    checkpoint and step, the optional finetune phase, and finish (the error bar, the verdict, the summary)."""

    def __init__(self, problem: Problem, method: Method, train: TrainConfig, seed: int, dev: torch.device,
                 out: Any, resume: bool, progress: bool | None, run_config: Mapping[str, Any] | None,
                 init: Solution | None = None, refined_from: dict[str, Any] | None = None) -> None:
        self.problem, self.method, self.train_cfg, self.seed, self.dev = problem, method, train, seed, dev
        #: grid refinement's second run: the first run's answer and why it was refined (into extra)
        self.refined_from = refined_from
        self.evaluation: Evaluation | None = None
        self.dtype = train.torch_dtype
        self.rank, self.world_size = distributed.world()
        if train.batch_size % self.world_size:
            raise ConfigError(f"train.batch_size: expected a multiple of the number of processes "
                              f"({self.world_size}), received {train.batch_size}")
        seeds = _derive_seeds(seed, self.rank)
        init_seed, valid_seed, train_seed = seeds[:3]
        self.eval_seed, self.check_seed = seeds[3], seeds[4]
        self.model = method.build(problem, make_generator(init_seed)).to(device=dev, dtype=self.dtype)
        self.init = None
        #: the warm start's training steps: its work counts towards what the error bar may cost (_affordable_paths)
        self.init_steps = 0
        if init is not None:
            self.init = _warm_start(self.model, init, problem, method)
            self.init_steps = int(getattr(init, "iterations", 0) or 0)
        self.optimizer = _adam(self.model, train.lr(0), dev)
        self.valid_batch = method.sample(problem, train.valid_size, make_generator(valid_seed, dev), self.dtype)
        self.gen = make_generator(train_seed, dev)
        self.loop = _Loop()
        self.warnings: list[str] = []
        self.stop_reason = "budget"
        self.tolerance_estimate: float | None = None
        #: the error bar's path count where the stopping rule sized it to the tolerance (else the default)
        self.final_paths: int | None = None
        self.run_dir: Path | None = None
        if out is not False:
            self.run_dir = Path(out) if out is not None else default_run_dir(problem.name, claim=self.rank == 0)
        self.writer: RunWriter | None = None
        if resume:
            self._resume()
        if self.rank == 0 and self.run_dir is not None:
            (self.run_dir / "summary.json").unlink(missing_ok=True)  # a stale result must not outlive this run
            for stale in (SOLUTION_FILE, MODEL_FILE):  # nor a stale saved solution (deepbsde.saved)
                (self.run_dir / stale).unlink(missing_ok=True)
            config = {"problem": problem.describe(), "method": method.describe(), "train": train.to_dict(),
                      **({"init": self.init} if self.init is not None else {}),
                      "seed": seed, "device": str(dev), "world_size": self.world_size,
                      "versions": {"python": platform.python_version(), "torch": torch.__version__}}
            if run_config is not None:
                config["run_config"] = dict(run_config)
            self.writer = RunWriter(self.run_dir, config)
            self.writer.start_history(self.loop.history, self.loop.metrics)

        def loss_fn(batch: Any) -> torch.Tensor:
            return method.loss(self.model, problem, batch)

        self.step_loss = torch.compile(loss_fn) if train.compile else loss_fn
        self.per_rank_batch = train.batch_size // self.world_size
        self.good = _snapshot(self.model, self.optimizer, self.gen, self.loop)
        self.train_sum = torch.full((), self.loop.train_sum, dtype=torch.float64, device=dev)
        self.saved_at = self.loop.step
        self.start = time.perf_counter()
        self.elapsed_before = self.loop.history[-1].seconds if self.loop.history else 0.0
        self.bar = tqdm(total=train.iterations, initial=self.loop.step, desc=problem.name, unit="step",
                        disable=(not progress) if progress is not None else None, leave=False)

    # --- start --------------------------------------------------------------------------------------
    def _resume(self) -> None:
        train, run_dir = self.train_cfg, self.run_dir
        assert run_dir is not None
        found = latest_checkpoint(run_dir / "checkpoints", map_location=self.dev)
        if found is None:
            self.warnings.append(f"resume: no checkpoint in {run_dir / 'checkpoints'}; started from step 0")
            log.warning("resume: no checkpoint in %s; starting from step 0", run_dir / "checkpoints")
            return
        state, path, skipped = found
        _check_fingerprint(state, self.problem, self.method, train, self.seed, path)
        saved_world = int(state.get("world_size", len(state["rng"])))
        if saved_world != self.world_size:
            raise CheckpointError(f"checkpoint {path} was written by a run of {saved_world} process(es); "
                                  f"this run has {self.world_size}: resume with the same number of processes")
        if int(state["loop"]["step"]) > train.iterations:
            raise ConfigError(f"train.iterations: checkpoint {path} is at step {state['loop']['step']}, beyond "
                              f"the {train.iterations} iterations asked for; expected at least that many")
        saved_lrs = state.get("lr_schedule")
        if saved_lrs is not None:
            done = int(state["loop"]["step"])
            mine = [train.lr(k) for k in range(done + 1)]
            if [float(v) for v in saved_lrs[: done + 1]] != mine:
                raise CheckpointError(
                    f"checkpoint {path}: the learning-rate schedule up to its step {done} differs from this run's "
                    f"(the default boundaries follow train.iterations); to extend a run exactly, give "
                    f"train.lr_boundaries explicitly")
        _restore(state, self.model, self.optimizer, self.gen, self.loop, self.rank)
        warm = state.get("warm") or {}
        if self.init is None and warm.get("init") is not None:
            self.init, self.init_steps = warm["init"], int(warm.get("init_steps") or 0)
        if self.refined_from is None and warm.get("refined_from") is not None:
            self.refined_from = dict(warm["refined_from"])
        self.warnings.extend(f"skipped unreadable checkpoint: {s}" for s in skipped)
        log.info("resumed from %s at step %d", path, self.loop.step)

    # --- the loop -----------------------------------------------------------------------------------
    def train(self) -> None:
        """Validate and log at logged steps (rolling back on divergence, checkpointing, checking the stopping
        rule), and take one optimiser step otherwise, until the budget or the tolerance stops it."""
        while True:
            step = self.loop.step
            if self._log_due(step):
                valid_loss, u0, train_mean = self._validate()
                reason = _divergence(valid_loss, train_mean, self.loop.train_count, u0, self.loop.best_loss,
                                     self.train_cfg.explode_factor)
                if reason is not None:
                    self._roll_back(step, reason)
                    continue
                final_off_grid = step == self.train_cfg.iterations and step % self.train_cfg.log_every != 0
                if final_off_grid:
                    # an extended run (more iterations on resume) never logged this step: checkpoint the state
                    # before the row, so that resuming it continues exactly like an uninterrupted run
                    self.loop.train_sum = float(self.train_sum)
                    self._checkpoint(step, _snapshot(self.model, self.optimizer, self.gen, self.loop))
                # the stopping rule first, so that the state a checkpoint holds includes its bookkeeping
                stop = step < self.train_cfg.iterations and self._should_stop(step, valid_loss, u0)
                self._record(step, valid_loss, train_mean, u0, reset=not final_off_grid)
                if not final_off_grid:
                    self._checkpoint(step, self.good, final=stop)
                if stop:
                    break
            if step >= self.train_cfg.iterations:
                break
            self._step()

    def _log_due(self, step: int) -> bool:
        due = step % self.train_cfg.log_every == 0 or step == self.train_cfg.iterations
        return due and not (self.loop.history and self.loop.history[-1].step == step)

    def _validate(self) -> tuple[float, float, float]:
        valid_loss, u0 = _validate(self.method, self.model, self.problem, self.valid_batch, self.world_size, self.dev)
        count = self.loop.train_count
        train_mean = float(self.train_sum) / count if count else float("nan")
        if count:
            train_mean = distributed.broadcast_floats([train_mean], self.world_size, self.dev)[0]
        return valid_loss, u0, train_mean

    def _roll_back(self, step: int, reason: str) -> None:
        train, loop = self.train_cfg, self.loop
        if step == 0:  # nothing trained yet: rolling back cannot help
            raise DivergenceError(
                f"training stopped: {reason} at step 0, before any training step: the problem's "
                f"terminal or driver is non-finite on simulated paths (not only at x0), or "
                f"method.y0_range is extreme. No result is reported.")
        if len(loop.rollbacks) >= train.max_rollbacks:
            hint = self.method.divergence_hint(self.problem)
            raise DivergenceError(
                f"training stopped: {reason} at step {step} after {len(loop.rollbacks)} rollback(s) "
                f"(train.max_rollbacks = {train.max_rollbacks}); last good step "
                f"{self.good['loop']['step']}, u0 there {_last_u0(self.good)}. No result is reported. "
                f"Try smaller train.lr_values, float64, or a narrower method.y0_range." + (" " + hint if hint else ""))
        _restore(self.good, self.model, self.optimizer, self.gen, loop, self.rank)
        loop.lr_scale *= train.rollback_lr_factor
        loop.rollbacks.append({"at_step": step, "back_to_step": loop.step, "reason": reason,
                               "lr_scale": loop.lr_scale})
        self.warnings.append(f"rollback at step {step}: {reason}; learning rate scaled by {loop.lr_scale:g}")
        log.warning("rollback at step %d to step %d: %s; lr scale now %g", step, loop.step, reason, loop.lr_scale)
        self.train_sum.fill_(loop.train_sum)
        self.good = _snapshot(self.model, self.optimizer, self.gen, loop)
        if self.writer is not None:
            self.writer.start_history(loop.history, loop.metrics)
        self.bar.reset(total=train.iterations)
        self.bar.update(loop.step)

    def _record(self, step: int, valid_loss: float, train_mean: float, u0: float, reset: bool = True) -> None:
        loop = self.loop
        loop.best_loss = min(loop.best_loss, valid_loss)
        row = HistoryRow(step, valid_loss, train_mean, u0, self.train_cfg.lr(step) * loop.lr_scale,
                         self.elapsed())
        loop.history.append(row)
        if self.writer is not None:
            self.writer.log(row)
        _record_metrics(self.method, self.model, self.problem, step, loop, self.writer)
        log.info("step %6d  loss %.4e  u0 %.6g  lr %.2e", step, valid_loss, u0, row.lr)
        self.bar.set_postfix(loss=f"{valid_loss:.3e}", u0=f"{u0:.6g}", refresh=False)
        if reset:
            self.train_sum.zero_()
            loop.train_sum, loop.train_count = 0.0, 0
            self.good = _snapshot(self.model, self.optimizer, self.gen, loop)

    def _checkpoint(self, step: int, snapshot: dict[str, Any], final: bool = False) -> None:
        """Checkpoints hold validated states only (a logged step whose loss passed the divergence check): the
        first logged step at or after each multiple of ``checkpoint_every``, and the last. A state between
        logged steps could already be non-finite, and a resumed run's rollback target would then differ
        from the uninterrupted run's."""
        every, run_dir = self.train_cfg.checkpoint_every, self.run_dir
        if (every and run_dir is not None and step > self.saved_at
                and (step // every > self.saved_at // every or step == self.train_cfg.iterations or final)):
            # a warm start's origin (and a refined run's first grid) is not in the config a resume rebuilds
            # from: kept with the state, so that the resumed run's tolerance checks and error bar are the same
            warm = {"init": self.init, "init_steps": self.init_steps, "refined_from": self.refined_from}
            _save(run_dir, {**snapshot, "warm": warm}, self.problem, self.method, self.train_cfg, self.seed,
                  self.rank, self.world_size)
            self.saved_at = step

    def _step(self) -> None:
        lr = self.train_cfg.lr(self.loop.step) * self.loop.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        batch = self.method.sample(self.problem, self.per_rank_batch, self.gen, self.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.step_loss(batch)
        loss.backward()
        distributed.allreduce_gradients(self.model, self.world_size)
        self.optimizer.step()
        self.train_sum += loss.detach()
        self.loop.train_count += 1
        self.loop.step += 1
        self.bar.update(1)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    # --- the stopping rule ---------------------------------------------------------------------------
    def _should_stop(self, step: int, valid_loss: float, u0: float) -> bool:
        """At a logged step: stop for ``train.max_seconds``, or once the predicted error bar of the final
        re-estimate is below ``train.tolerance * |u0|`` (the same decision on every rank)."""
        train = self.train_cfg
        stop = 0.0
        if train.max_seconds is not None and self.elapsed() >= train.max_seconds:
            stop, self.stop_reason = 1.0, "max_seconds"
        elif (train.tolerance is not None and step >= self.loop.next_check
              and step >= (0 if self.init is not None else 2 * train.log_every)
              and (paths := self._affordable_paths(step)) > 0):
            # cheap pre-filter: the statistical part alone, from the validation loss (>= the mismatch variance)
            if 1.96 * math.sqrt(max(valid_loss, 0.0) / paths) <= train.tolerance * abs(u0):
                # checks at geometrically spaced steps (x 1.5): their cost stays a fixed share of the
                # training's, and a run stops at most half its steps after the tolerance was first in reach
                every = train.log_every
                self.loop.next_check = max(step + every, -(-(3 * step) // (2 * every)) * every)
                check_paths = min(paths, CHECK_PATHS)
                estimate = self._evaluate(check_paths, self.check_seed, gradient=False)
                if estimate is not None:
                    # the final error bar on the paths the tolerance needs (with a margin for its own noise),
                    # if that many are affordable now; an explicit train.eval_paths is used as given
                    margin = 1.0 if train.eval_paths is not None else TOLERANCE_MARGIN
                    needed = _paths_for(estimate, check_paths, margin * train.tolerance)
                    if train.eval_paths is not None:
                        needed = paths if needed <= paths else needed
                    self.tolerance_estimate = _predicted_error(estimate, check_paths, min(needed, paths))
                    log.info("step %d: predicted relative error bar %.3g on %d paths (tolerance %.3g)", step,
                             self.tolerance_estimate, min(needed, paths), train.tolerance)
                    if needed <= paths:
                        stop, self.stop_reason = 1.0, "tolerance"
                        self.final_paths = needed
        return distributed.broadcast_floats([stop], self.world_size, self.dev)[0] > 0.5

    def _affordable_paths(self, step: int) -> int:
        """The most paths the final error bar may take if training stopped at ``step``: ``train.eval_paths`` where
        set; otherwise as much work as the training so far (``step * batch_size`` paths of ``N`` steps, against
        ``3N`` path-steps for each error-bar path on its two grids), between :data:`CHECK_PATHS` and the default
        count. Training stops only once the tolerance is within reach on that many: a run whose ``Z`` still
        explains little of the variance trains on, and one that has learnt enough does not buy a tighter
        error bar by training longer than the error bar takes to compute (the total stays within twice the
        cheaper of the two). A warm start's own training counts (``init.iterations`` steps at this run's batch
        size), and its checks start at step 0: a solution of a nearby problem whose control already gives the
        tolerance on the new one stops there, with only the error bar to pay."""
        paths = self._eval_paths()
        if self.train_cfg.eval_paths is not None or paths <= 0:
            return paths
        return min(paths, max(CHECK_PATHS, (step + self.init_steps) * self.train_cfg.batch_size // 3))

    def _eval_paths(self) -> int:
        if self.train_cfg.eval_paths is not None or not isinstance(self.problem, Problem):
            return self.train_cfg.eval_paths or 0
        control = self.method.control(self.model, self.problem)
        steps = control.num_steps if control is not None else 20
        return default_paths(self.problem, steps, sum(p.numel() for p in self.model.parameters()))

    def _evaluate(self, paths: int, seed: int, gradient: str | bool) -> Evaluation | None:
        """The control-variate re-estimate (:func:`deepbsde.estimators.evaluate`), or ``None`` where the
        method gives no control."""
        if not isinstance(self.problem, Problem):
            return None
        self.model.eval()
        control = self.method.control(self.model, self.problem)
        if control is None:
            return None
        problem = control.problem if control.problem is not None else self.problem
        z0 = self.method.trained_z0(self.model, self.problem)
        if z0 is None:
            z0 = control.z_at(problem.x0_tensor(self.dtype, self.dev).reshape(1, 1, -1).expand(1, 2, -1), 1)[0, 0]
        structure = pilot(problem, control.num_steps, 256, make_generator(seed, "cpu"))[0].structure
        return evaluate(problem, control, z0, paths, seed, self.dtype, self.dev, structure, gradient=gradient)

    # --- finetune ----------------------------------------------------------------------------------
    def finetune(self) -> None:
        """The method's optional second phase (the PINN's L-BFGS), with the same divergence guard: a
        validation that fails it restores the state at the end of the first phase, with a warning."""
        self.finetuned: dict[str, Any] | None = None
        if self.world_size != 1:
            if type(self.method).finetune is not Method.finetune:
                self.warnings.append(f"{self.method.name}.finetune skipped: it runs in a single process only")
            return
        before = _snapshot(self.model, self.optimizer, self.gen, self.loop)
        train = self.train_cfg

        def on_finetune(done: int, train_loss: float) -> None:
            valid_loss, u0 = _validate(self.method, self.model, self.problem, self.valid_batch, 1, self.dev)
            reason = _divergence(valid_loss, train_loss, 1, u0, self.loop.best_loss, train.explode_factor)
            if reason is not None:
                raise _FinetuneDiverged(f"{reason} after {done} finetune iterations")
            row = HistoryRow(train.iterations + done, valid_loss, train_loss, u0, float("nan"), self.elapsed())
            self.loop.history.append(row)
            if self.writer is not None:
                self.writer.log(row)
            log.info("finetune %6d  loss %.4e  u0 %.6g", done, valid_loss, u0)
            _record_metrics(self.method, self.model, self.problem, row.step, self.loop, self.writer)

        try:
            self.finetuned = self.method.finetune(self.model, self.problem, generator=self.gen, dtype=self.dtype,
                                                  batch_size=self.per_rank_batch, log_every=train.log_every,
                                                  callback=on_finetune)
        except _FinetuneDiverged as exc:
            _restore(before, self.model, self.optimizer, self.gen, self.loop, self.rank)
            if self.writer is not None:
                self.writer.start_history(self.loop.history, self.loop.metrics)
            self.warnings.append(f"{self.method.name}.finetune diverged ({exc}); kept the state at the end of "
                                 f"the first phase (step {self.loop.step})")
            log.warning("finetune diverged: %s; restored the state of step %d", exc, self.loop.step)
            self.finetuned = None

    # --- grid refinement ----------------------------------------------------------------------------
    def refinement(self, solution: Solution) -> tuple[int, int, float] | None:
        """``(num_steps, iterations, share)`` for a second run on a finer grid (``DeepBSDE.refine_grid``), or
        ``None``: where the tolerance was not reached and the error bar's time-step part, less 1.96 of its
        standard errors, is more than half the tolerance (``share`` is it over ``|u0|``). The grid grows 2
        times, or 4 where that part exceeds the whole tolerance (a scheme of order one then still leaves more
        than a quarter of it on twice the grid); the second run gets as much work as this one took (its steps
        times ``N / N'``, in hundreds, at least 500)."""
        method, ev, tol = self.method, self.evaluation, self.train_cfg.tolerance
        if not (isinstance(method, DeepBSDE) and method.refine_grid and method.network == "shared"
                and method.region is None and self.world_size == 1 and tol is not None and ev is not None):
            return None
        if self.stop_reason == "max_seconds" or solution.verdict == "ok" or not math.isfinite(ev.u0) or ev.u0 == 0:
            return None
        share = (ev.time_step_bias - 1.96 * ev.time_step_se) / abs(ev.u0)
        if not share > 0.5 * tol:
            return None
        num_steps = method.num_steps * (2 if share <= tol else 4)
        iterations = max(500, -(-(self.loop.step * method.num_steps) // (num_steps * 100)) * 100)
        return num_steps, iterations, share

    # --- finish -------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> Solution:
        """The error bar on fresh paths, the diagnostics, the verdict, and the summary."""
        problem, method, train = self.problem, self.method, self.train_cfg
        seconds = self.elapsed()
        self.model.eval()
        est = method.estimate(self.model, problem)
        try:
            reference = problem.reference()
        except Exception as exc:  # a failing reference calculator must not lose the trained answer
            reference = None
            self.warnings.append(f"reference could not be computed: {type(exc).__name__}: {exc}")
        try:
            # the paths the tolerance needs, or (the budget ended the run) no more work than the training took
            evaluation = self._evaluate(self.final_paths or self._affordable_paths(self.loop.step), self.eval_seed,
                                        gradient=getattr(method, "gradient_estimator", "pathwise"))
        except (RuntimeError, ValueError) as exc:  # the trained answer stands, without an error bar
            evaluation = None
            self.warnings.append(f"error bar could not be computed: {type(exc).__name__}: {exc}")
        self.evaluation = evaluation
        report = method.report(self.model, problem)
        training_notes = list(report.pop("warnings", []))
        extra = _extra(report, self.finetuned, self.warnings)
        extra["world_size"] = self.world_size
        extra["stopped_by"] = self.stop_reason
        extra["trained_u0"] = est.u0
        if self.init is not None:
            extra["init"] = self.init
        if self.refined_from is not None:
            extra["refined_from"] = self.refined_from
            seconds += float(self.refined_from["seconds"])  # the answer's cost: both grids' training
        region = getattr(method, "region", None)
        if region is not None and hasattr(method, "region_report") and isinstance(problem, Problem):
            extra["region"] = region.describe()
            try:  # u and its gradient over region points against the problem's reference at any point
                seed = int(np.random.SeedSequence([self.seed, 3]).generate_state(1)[0]) % (2 ** 31)
                extra.update(method.region_report(self.model, problem, REGION_POINTS, seed))
            except Exception as exc:  # a failing reference must not lose the trained answer
                self.warnings.append(f"region errors could not be computed: {type(exc).__name__}: {exc}")
        u0, grad, grad_se = est.u0, est.grad_u0, None
        interval = stderr = widened = None
        diagnostics: list[str] = []
        if evaluation is None or not math.isfinite(evaluation.u0):
            diagnostics = training_notes  # the trained values are the answer: how well Z was learnt matters
        else:
            # the answer is the re-estimate, whose interval holds whatever Z is (only its width depends on
            # it): how well Z was learnt is a note, not a warning
            extra["training_notes"] = training_notes
            u0, interval, stderr = evaluation.u0, evaluation.interval, evaluation.u0_se
            if evaluation.grad_u0 is not None:
                grad, grad_se = evaluation.grad_u0, evaluation.grad_u0_se
            extra.update(_evaluation_extra(evaluation))
            diagnostics.extend(_diagnose(evaluation, est.u0))
            widened = _disagreement_half_width(evaluation, est.u0)
            if widened is not None:
                interval = (u0 - widened, u0 + widened)
                extra["u0_half_width_before_disagreement"] = evaluation.half_width
        verdict, advice = _verdict(evaluation, u0, train.tolerance, diagnostics, self.stop_reason)
        warnings = list(self.warnings) + diagnostics + ([advice] if advice else [])
        tolerance_reached = None
        if train.tolerance is not None and evaluation is not None:
            half_width = widened if widened is not None else evaluation.half_width
            tolerance_reached = half_width / max(abs(evaluation.u0), 1e-300) <= train.tolerance
        solution = Solution(problem=problem.name, method=method.name, dim=problem.dim, u0=u0,
                            _grad_u0=grad, history=History(tuple(self.loop.history), tuple(self.loop.metrics)),
                            reference=reference, seconds=seconds, iterations=self.loop.step, device=str(self.dev),
                            dtype=train.dtype, seed=self.seed, run_dir=self.run_dir,
                            rollbacks=tuple(self.loop.rollbacks), warnings=tuple(warnings), extra=extra,
                            model=self.model, _grad_unavailable=est.grad_unavailable, u0_interval=interval,
                            u0_stderr=stderr, _grad_u0_stderr=grad_se, verdict=verdict, verdict_reason=advice,
                            tolerance=train.tolerance, tolerance_reached=tolerance_reached,
                            problem_object=problem, method_object=method)
        if self.writer is not None:
            self.writer.finish(solution.summary())
            try:  # the trained model beside the summary, for deepbsde.load and `deepbsde eval`
                solution.save(self.run_dir)
            except Exception as exc:  # saving must not lose the answer
                log.warning("the solution could not be saved in %s (%s: %s); deepbsde.load will not find it",
                            self.run_dir, type(exc).__name__, exc)
        return solution


def _evaluation_extra(ev: Evaluation) -> dict[str, Any]:
    return {"eval_paths": ev.paths, "u0_training_grid": ev.u0_coarse, "time_step_bias": ev.time_step_bias,
            "control_bias": ev.control_bias, "variance_explained": ev.variance_explained,
            "mismatch_ratio": ev.mismatch_ratio if math.isfinite(ev.mismatch_ratio) else None,
            "grad_u0_lr_mean": ev.grad_lr_mean, "grad_u0_lr_mean_stderr": ev.grad_lr_mean_se,
            "grad_u0_time_step_bias": ev.grad_time_step_bias,
            "driver": {"depends_on_y": ev.structure.depends_on_y, "depends_on_z": ev.structure.depends_on_z,
                       "affine_in_z": ev.structure.affine_in_z}}


def _disagreement_half_width(ev: Evaluation, trained_u0: float) -> float | None:
    r"""Where the driver is nonlinear in z and the trained :math:`Y_0` and the re-estimate differ by more than the
    error bar (plus three standard errors), a half-width that holds both: the gap plus 1.96 standard errors
    (else ``None``). Two estimates of one number that disagree beyond their errors show a bias the bar did not
    bound; the interval should not claim to exclude either. Found as a user: BurgersType d = 20, T = 0.5,
    x0 = 0.3 (a driver (y - k) Σz, whose slope in y varies from path to path) re-estimated 1.15 % off with ±0.26 %
    while the trained Y0 was 0.09 % off; the widened interval (±1.3 %) holds the reference."""
    if not (ev.structure.depends_on_z and not ev.structure.affine_in_z) or not math.isfinite(trained_u0):
        return None
    gap = abs(trained_u0 - ev.u0)
    if gap > ev.half_width + 3 * ev.u0_se:
        return gap + 1.96 * ev.u0_se
    return None


def _diagnose(ev: Evaluation, trained_u0: float) -> list[str]:
    """Warnings that say the error bar itself may be wrong."""
    out = []
    if ev.u0_se == 0 and not math.isfinite(ev.variance_explained):
        # Var g = 0 on every path (the variance explained is then undefined): the ±0 says only that g(X_T) took
        # one value there. A basket call at d = 20, strike 125 (u0 = 9e-6) returned 0 ± 0 with verdict ok: no
        # path of the rare-payoff search or the error bar paid
        out.append(f"g(X_T) took one value on all {ev.paths} evaluation paths, so the interval (±0) only says that "
                   f"value: an event rarer than about 3/{ev.paths} of the paths (the rule of three; an option far "
                   f"out of the money) may still carry u0. If g can differ from it, look where (a sampling drift, "
                   f"method.pull, or more paths, train.eval_paths)")
    if _disagreement_half_width(ev, trained_u0) is not None:
        out.append(f"the trained Y0 = {trained_u0:.6g} and the re-estimate {ev.u0:.6g} differ by more than the "
                   f"error bar (±{ev.half_width:.3g}); with a driver that depends on z this means the trained "
                   f"Z is far from optimal: raise train.iterations or train.batch_size (the interval is "
                   f"widened to hold both)")
    if ev.grad_u0 is not None and ev.grad_lr_mean is not None and ev.grad_lr_mean_se is not None:
        path_mean = sum(ev.grad_u0) / len(ev.grad_u0)
        # both estimates carry the time step's bias (the likelihood-ratio one on the training grid): allow
        # twice the pathwise one's measured bias besides four standard errors
        se = ev.grad_lr_mean_se + sum(ev.grad_u0_se) / len(ev.grad_u0)
        if abs(path_mean - ev.grad_lr_mean) > 4 * se + 2 * (ev.grad_time_step_bias or 0.0) + 1e-12 * abs(path_mean):
            out.append(f"the pathwise gradient (mean {path_mean:.6g}) disagrees with the likelihood-ratio one "
                       f"({ev.grad_lr_mean:.6g} ± {1.96 * ev.grad_lr_mean_se:.2g}): the terminal condition may "
                       f"not be Lipschitz (a digital payoff?); grad_u0 is then unreliable")
    return out


def _verdict(ev: Evaluation | None, u0: float, tolerance: float | None, diagnostics: list[str],
             stopped_by: str) -> tuple[str, str | None]:
    """``("ok", None)`` only when the interval is narrow (relative half-width within the tolerance, or 1 %
    without one) and no diagnostic fired; otherwise ``("check", one line that says what failed and what to
    try)``."""
    if ev is None:
        return "unverified", ("no error bar: this method gives no control to re-estimate u0 with; "
                              "the answer is unverified")
    if not math.isfinite(ev.half_width):
        return "check", "the error bar is not finite: the re-estimate failed; try float64 or more paths"
    limit = tolerance if tolerance is not None else 1e-2
    rel = ev.relative_half_width()
    if rel > limit:
        parts = {"statistical": 1.96 * ev.u0_se, "time step": ev.time_step_bias, "control": ev.control_bias}
        worst = max(parts, key=parts.get)
        hint = {"statistical": "raise train.eval_paths, or train longer so that Z explains more of the variance",
                "time step": "raise method.num_steps",
                "control": "train longer (train.iterations, train.max_seconds) or with a larger train.batch_size "
                           "so that the trained Z is closer to the optimal one"}[worst]
        if worst == "control" and ev.mismatch_ratio < 0.75:
            # the control part is bounded through the terminal mismatch; where halving the time step removes much
            # of it, the grid's noise inflates that bound and limits what training can learn (HJB at d = 10,
            # lambda = 10: 0.63, and 8.7 % off at N = 20 against 3.3 % at N = 80, benchmarks/hjb_lam10.md)
            hint = (f"raise method.num_steps and train longer: the terminal mismatch falls to "
                    f"{100 * ev.mismatch_ratio:.0f} % of itself on a grid twice as fine, so much of it is the time "
                    f"grid's, which inflates the control's part and hides Z's error from training")
        budget = " (training ended at its budget)" if stopped_by != "tolerance" else ""
        return "check", (f"tolerance not reached: the 95 % error bar is ±{100 * rel:.3g} % of u0, above "
                         f"{100 * limit:.3g} %{budget}; its largest part is the {worst} one: {hint}")
    if diagnostics:
        return "check", "the error bar may not hold: see the warnings above"
    return "ok", None


def _record_metrics(method: Method, model: torch.nn.Module, problem: Problem, step: int, loop: _Loop,
                    writer: RunWriter | None) -> None:
    """Call ``method.metrics`` at a logged step and keep what it returns (nothing for most methods)."""
    model.eval()
    values = {k: float(v) for k, v in method.metrics(model, problem).items()}
    if values:
        loop.metrics.append((step, values))
        if writer is not None:
            writer.log_metrics(step, values)


def _extra(report: dict[str, Any], finetuned: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    """The method's report plus what its finetune phase returned (the warnings of both join ``warnings``)."""
    out = dict(report)
    warnings.extend(out.pop("warnings", []))
    if finetuned:
        finetuned = dict(finetuned)
        warnings.extend(finetuned.pop("warnings", []))
        out.update(finetuned)
    return out


#: paths of the stopping rule's check (no gradient); the final error bar's count follows from it
CHECK_PATHS = 4096

#: region mode: points at which u and ∇u are compared with the problem's reference after training
REGION_POINTS = 4096


def _warm_start(model: torch.nn.Module, init: Any, problem: Problem, method: Method) -> str:
    """Copy ``init``'s trained weights, buffers and plain scale attributes (``y_shift``, ``z_scale``, ...; not
    the problem's ``horizon``) into the freshly built ``model``; :class:`ConfigError` where its model does not
    fit. Returns a description of the source for the run's config and summary."""
    from .saved import _module_attributes, _restore_attributes

    source = getattr(init, "model", None)
    if not isinstance(init, Solution) or not isinstance(source, torch.nn.Module):
        raise ConfigError(f"init: expected a Solution returned by deepbsde.solve or deepbsde.load (with its trained "
                          f"model), received {describe(init)}")
    where = f"{problem.name}(dim={problem.dim}) with {method.name}"
    other = init.method_object
    if other is not None and type(other) is not type(method):
        raise ConfigError(f"init: the solution was trained with {type(other).__name__}, this run uses "
                          f"{type(method).__name__}; a warm start needs the same method")
    if type(source) is not type(model):
        raise ConfigError(f"init: the solution's model is a {type(source).__name__}, {where} builds a "
                          f"{type(model).__name__} (region mode on one side only?); expected the same architecture")
    mine, theirs = model.state_dict(), dict(source.state_dict())
    grids = [k for k in mine if k.endswith("times") and isinstance(model.get_submodule(k.rsplit(".", 1)[0]), TimeNet)]
    for key in grids:
        # the shared network is a function of (t, x): its construction grid is not a learnt quantity, so a
        # solution on another time grid warm-starts this one (grid refinement)
        theirs[key] = mine[key]
    problems = [f"{k}: missing in the solution" for k in mine if k not in theirs]
    problems += [f"{k}: not in this model" for k in theirs if k not in mine]
    problems += [f"{k}: shape {tuple(theirs[k].shape)} in the solution, {tuple(v.shape)} here"
                 for k, v in mine.items() if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)]
    if problems:
        raise ConfigError(f"init: the solution's model ({init.problem}, d = {init.dim}) does not fit the model "
                          f"{where} builds: {'; '.join(problems[:3])}"
                          f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}; expected the same "
                          f"dimension and method settings (network, hidden, num_steps, region)")
    model.load_state_dict(theirs)
    attributes = _module_attributes(source)
    for values in attributes.values():
        values.pop("horizon", None)  # the problem's, not the solution's
    _restore_attributes(model, attributes)
    run_dir = getattr(init, "run_dir", None)
    return str(run_dir) if run_dir is not None else f"a solution of {init.problem} (d = {init.dim})"


def _predicted_error(estimate: Evaluation, check_paths: int, paths: int) -> float:
    """The relative half-width that the final re-estimate on ``paths`` paths is predicted to have, from the
    check's on ``check_paths``: the statistical parts shrink as 1/sqrt(paths), and the time-step bias is kept
    only where it stands out of its own noise."""
    shrink = math.sqrt(check_paths / paths)
    step_bias = max(0.0, estimate.time_step_bias - 1.96 * estimate.time_step_se)
    scaled = 1.96 * estimate.u0_se * shrink + step_bias + estimate.time_step_se * shrink + estimate.control_bias
    return scaled / max(abs(estimate.u0), 1e-300)


#: the final error bar is sized to this share of the tolerance: the rest covers the noise of its own standard
#: error and time-step difference, so that the interval it reports is within the tolerance
TOLERANCE_MARGIN = 0.8


def _paths_for(estimate: Evaluation, check_paths: int, target: float) -> int | float:
    """The fewest paths (a multiple of 1024, at least ``check_paths``) whose predicted relative half-width is
    within ``target``: ``A / sqrt(M) + B <= target`` with ``A`` the statistical parts and ``B`` the bias bounds;
    ``inf`` where the biases alone exceed it (more paths cannot help: train on, or refine the grid)."""
    u = max(abs(estimate.u0), 1e-300)
    step_bias = max(0.0, estimate.time_step_bias - 1.96 * estimate.time_step_se)
    a = (1.96 * estimate.u0_se + estimate.time_step_se) * math.sqrt(check_paths) / u
    b = (step_bias + estimate.control_bias) / u
    if b >= target:
        return math.inf
    return max(check_paths, 1024 * math.ceil((a / (target - b)) ** 2 / 1024))


def _adam(model: torch.nn.Module, lr: float, dev: torch.device) -> Any:
    """Adam (ε = 1e-8 as in the original): torch's fused kernel on accelerators; on the CPU
    :class:`deepbsde.adam.Adam`, the ``foreach`` arithmetic of ``torch.optim.Adam`` (bit-identical) without the
    compiler stack that its first step imports (about 0.9 s, a tenth of the main job)."""
    if dev.type != "cpu":
        try:
            return torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8, foreach=True)
    from .adam import Adam

    return Adam(model.parameters(), lr=lr, eps=1e-8)


def _validate(method: Method, model: torch.nn.Module, problem: Problem, batch: Any, world_size: int,
              dev: torch.device) -> tuple[float, float]:
    distributed.broadcast_module(model, world_size)
    model.eval()
    with torch.no_grad():
        loss = method.loss(model, problem, batch)
        u0 = method.u0_tensor(model, problem)
    return tuple(distributed.broadcast_floats([float(loss), float(u0)], world_size, dev))


def _divergence(valid_loss: float, train_mean: float, train_count: int, u0: float, best: float,
                explode_factor: float) -> str | None:
    if not math.isfinite(valid_loss):
        return f"validation loss became non-finite ({valid_loss})"
    if train_count and not math.isfinite(train_mean):
        return f"training loss became non-finite ({train_mean})"
    if not math.isfinite(u0):
        return f"u0 became non-finite ({u0})"
    if math.isfinite(best) and best > 0 and valid_loss > explode_factor * best:
        return f"loss exploded ({valid_loss:.3e} > {explode_factor:g} x best {best:.3e})"
    return None


def _last_u0(snapshot: dict[str, Any]) -> str:
    rows = snapshot["loop"]["history"]
    return f"{rows[-1][3]:.6g}" if rows else "unknown"


def _loop_to_dict(loop: _Loop) -> dict[str, Any]:
    return {"step": loop.step, "lr_scale": loop.lr_scale, "best_loss": loop.best_loss,
            "history": [[getattr(r, f) for f in HistoryRow.FIELDS] for r in loop.history],
            "rollbacks": [dict(r) for r in loop.rollbacks],
            "train_sum": loop.train_sum, "train_count": loop.train_count,
            "metrics": [[step, dict(values)] for step, values in loop.metrics], "next_check": loop.next_check}


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator,
              loop: _Loop) -> dict[str, Any]:
    """A deep copy of everything a rollback or a checkpoint must restore: with the state dict, the model's plain
    attributes (its pilot scales: a warm start copies the source's, which a resumed run's fresh build would not
    have)."""
    from .saved import _module_attributes

    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "attributes": copy.deepcopy(_module_attributes(model)),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "rng": [gen.get_state()], "loop": _loop_to_dict(loop)}


def _restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             gen: torch.Generator, loop: _Loop, rank: int) -> None:
    from .saved import _restore_attributes

    model.load_state_dict(state["model"])
    if "attributes" in state:  # checkpoints of earlier versions hold the state dict only
        _restore_attributes(model, state["attributes"])
    optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
    rng = state["rng"]
    if rank >= len(rng):
        raise CheckpointError(f"checkpoint holds random generator states for {len(rng)} process(es); "
                              f"this is rank {rank}: resume with the same number of processes")
    gen.set_state(rng[rank].cpu() if isinstance(rng[rank], torch.Tensor) else rng[rank])
    saved = state["loop"]
    loop.step = int(saved["step"])
    loop.lr_scale = float(saved["lr_scale"])
    loop.best_loss = float(saved["best_loss"])
    loop.history = [HistoryRow(int(r[0]), *map(float, r[1:])) for r in saved["history"]]
    loop.rollbacks = [dict(r) for r in saved["rollbacks"]]
    loop.train_sum = float(saved["train_sum"])
    loop.train_count = int(saved["train_count"])
    loop.metrics = [(int(step), {k: float(v) for k, v in values.items()}) for step, values in saved.get("metrics", [])]
    loop.next_check = int(saved.get("next_check", 0))


def _fingerprint(problem: Problem, method: Method, train: TrainConfig, seed: int) -> str:
    import json

    from .identity import problem_identity

    # what may change on resume: the budget and the stopping rule, the rollback allowance, compilation
    may_change = ("iterations", "max_rollbacks", "compile", "tolerance", "max_seconds", "eval_paths")
    data = {"problem": problem_identity(problem), "method": method.describe(), "seed": seed,
            "train": {k: v for k, v in train.to_dict().items() if k not in may_change}}
    return json.dumps(data, sort_keys=True, default=str)


def _check_fingerprint(state: dict[str, Any], problem: Problem, method: Method, train: TrainConfig,
                       seed: int, path: Path) -> None:
    mine = _fingerprint(problem, method, train, seed)
    if state.get("fingerprint") != mine:
        raise CheckpointError(f"checkpoint {path} belongs to another run (problem, method, training settings "
                              f"or seed differ): saved {state.get('fingerprint')}, now {mine}")


def _save(run_dir: Path, snapshot: dict[str, Any], problem: Problem, method: Method, train: TrainConfig,
          seed: int, rank: int, world_size: int) -> None:
    """Write ``snapshot`` (this rank's :func:`_snapshot`) as a checkpoint with every rank's generator state
    (collective: every rank calls it; rank 0 writes)."""
    rng = distributed.gather_tensors(snapshot["rng"][0], world_size)
    if rank != 0:
        return
    done = int(snapshot["loop"]["step"])
    state = dict(snapshot, rng=[r.cpu() for r in rng], world_size=world_size,
                 fingerprint=_fingerprint(problem, method, train, seed),
                 lr_schedule=[train.lr(k) for k in range(done + 1)])
    save_checkpoint(run_dir / "checkpoints", int(snapshot["loop"]["step"]), state)
