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
from .methods.base import Method
from .methods.deep_bsde import DeepBSDE
from .paths import make_generator
from .pinn_problem import ResidualProblem
from .problem import Problem, check_problem
from .runlog import RunWriter, default_run_dir
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


def _derive_seeds(seed: int, rank: int) -> tuple[int, int, int]:
    """Initialisation and validation seeds shared by all ranks; a training seed per rank."""
    init_seed, valid_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
    train_seed = int(np.random.SeedSequence([seed, 1, rank]).generate_state(1)[0])
    return init_seed, valid_seed, train_seed


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


def solve(problem: Problem, method: Method | None = None, *, train: TrainConfig | Mapping[str, Any] | None = None,
          seed: int = 0, device: str | torch.device = "auto", out: str | Path | bool | None = None,
          resume: bool = False, progress: bool | None = None, run_config: Mapping[str, Any] | None = None) -> Solution:
    """Train ``method`` on ``problem`` and return a :class:`~deepbsde.Solution`.

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
    """
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
    dtype = train.torch_dtype
    if isinstance(problem, ResidualProblem):
        problem.check(dtype, dev)  # a PDE stated by its residual (PINN only); method.check says which methods take it
    else:
        check_problem(problem, dtype, dev)
    method.check(problem)
    if resume and (out is None or out is False):
        raise ConfigError("resume: needs out=RUN_DIR, the folder of the run to continue")

    rank, world_size = distributed.world()
    if train.batch_size % world_size:
        raise ConfigError(f"train.batch_size: expected a multiple of the number of processes ({world_size}), "
                          f"received {train.batch_size}")
    init_seed, valid_seed, train_seed = _derive_seeds(seed, rank)
    model = method.build(problem, make_generator(init_seed)).to(device=dev, dtype=dtype)
    optimizer = _adam(model, train.lr(0), dev)
    valid_batch = method.sample(problem, train.valid_size, make_generator(valid_seed, dev), dtype)
    gen = make_generator(train_seed, dev)
    loop = _Loop()

    run_dir: Path | None = None
    if out is not False:
        run_dir = Path(out) if out is not None else default_run_dir(problem.name)
    writer: RunWriter | None = None
    warnings: list[str] = []
    if resume:
        found = latest_checkpoint(run_dir / "checkpoints", map_location=dev)
        if found is not None:
            state, path, skipped = found
            _check_fingerprint(state, problem, method, train, seed, path)
            saved_world = int(state.get("world_size", len(state["rng"])))
            if saved_world != world_size:
                raise CheckpointError(f"checkpoint {path} was written by a run of {saved_world} process(es); "
                                      f"this run has {world_size}: resume with the same number of processes")
            if int(state["loop"]["step"]) > train.iterations:
                raise ConfigError(f"train.iterations: checkpoint {path} is at step {state['loop']['step']}, beyond "
                                  f"the {train.iterations} iterations asked for; expected at least that many")
            _restore(state, model, optimizer, gen, loop, rank)
            warnings.extend(f"skipped unreadable checkpoint: {s}" for s in skipped)
            log.info("resumed from %s at step %d", path, loop.step)
        else:
            warnings.append(f"resume: no checkpoint in {run_dir / 'checkpoints'}; started from step 0")
            log.warning("resume: no checkpoint in %s; starting from step 0", run_dir / "checkpoints")
    if rank == 0 and run_dir is not None:
        (run_dir / "summary.json").unlink(missing_ok=True)  # a stale result must not outlive this run
        config = {"problem": problem.describe(), "method": method.describe(), "train": train.to_dict(),
                  "seed": seed, "device": str(dev), "world_size": world_size,
                  "versions": {"python": platform.python_version(), "torch": torch.__version__}}
        if run_config is not None:
            config["run_config"] = dict(run_config)
        writer = RunWriter(run_dir, config)
        writer.start_history(loop.history, loop.metrics)

    def loss_fn(batch: Any) -> torch.Tensor:
        return method.loss(model, problem, batch)

    step_loss = torch.compile(loss_fn) if train.compile else loss_fn
    per_rank_batch = train.batch_size // world_size
    good = _snapshot(model, optimizer, gen, loop)
    train_sum = torch.full((), loop.train_sum, dtype=torch.float64, device=dev)
    saved_at = loop.step
    start = time.perf_counter()
    elapsed_before = loop.history[-1].seconds if loop.history else 0.0
    bar = tqdm(total=train.iterations, initial=loop.step, desc=problem.name, unit="step",
               disable=(not progress) if progress is not None else None, leave=False)
    try:
        while True:
            step = loop.step
            due = step % train.log_every == 0 or step == train.iterations
            if due and not (loop.history and loop.history[-1].step == step):
                valid_loss, u0 = _validate(method, model, problem, valid_batch, world_size, dev)
                count = loop.train_count
                train_mean = float(train_sum) / count if count else float("nan")
                if count:
                    train_mean = distributed.broadcast_floats([train_mean], world_size, dev)[0]
                reason = _divergence(valid_loss, train_mean, count, u0, loop.best_loss, train.explode_factor)
                if reason is not None:
                    if step == 0:  # nothing trained yet: rolling back cannot help
                        raise DivergenceError(
                            f"training stopped: {reason} at step 0, before any training step: the problem's "
                            f"terminal or driver is non-finite on simulated paths (not only at x0), or "
                            f"method.y0_range is extreme. No result is reported.")
                    if len(loop.rollbacks) >= train.max_rollbacks:
                        raise DivergenceError(
                            f"training stopped: {reason} at step {step} after {len(loop.rollbacks)} rollback(s) "
                            f"(train.max_rollbacks = {train.max_rollbacks}); last good step "
                            f"{good['loop']['step']}, u0 there {_last_u0(good)}. No result is reported. "
                            f"Try smaller train.lr_values, float64, or a narrower method.y0_range.")
                    _restore(good, model, optimizer, gen, loop, rank)
                    loop.lr_scale *= train.rollback_lr_factor
                    record = {"at_step": step, "back_to_step": loop.step, "reason": reason,
                              "lr_scale": loop.lr_scale}
                    loop.rollbacks.append(record)
                    warnings.append(f"rollback at step {step}: {reason}; learning rate scaled by {loop.lr_scale:g}")
                    log.warning("rollback at step %d to step %d: %s; lr scale now %g", step, loop.step, reason,
                                loop.lr_scale)
                    train_sum.fill_(loop.train_sum)
                    good = _snapshot(model, optimizer, gen, loop)
                    if writer is not None:
                        writer.start_history(loop.history, loop.metrics)
                    bar.reset(total=train.iterations)
                    bar.update(loop.step)
                    continue
                loop.best_loss = min(loop.best_loss, valid_loss)
                row = HistoryRow(step, valid_loss, train_mean, u0, train.lr(step) * loop.lr_scale,
                                 elapsed_before + time.perf_counter() - start)
                loop.history.append(row)
                if writer is not None:
                    writer.log(row)
                _record_metrics(method, model, problem, step, loop, writer)
                log.info("step %6d  loss %.4e  u0 %.6g  lr %.2e", step, valid_loss, u0, row.lr)
                bar.set_postfix(loss=f"{valid_loss:.3e}", u0=f"{u0:.6g}", refresh=False)
                train_sum.zero_()
                loop.train_sum, loop.train_count = 0.0, 0
                good = _snapshot(model, optimizer, gen, loop)
                # Checkpoints hold validated states only (a logged step whose loss passed the divergence
                # check): the first logged step at or after each multiple of checkpoint_every, and the last.
                # A state between logged steps could already be non-finite, and a resumed run's rollback
                # target would then differ from the uninterrupted run's.
                if (train.checkpoint_every and run_dir is not None and step > saved_at
                        and (step // train.checkpoint_every > saved_at // train.checkpoint_every
                             or step == train.iterations)):
                    _save(run_dir, good, problem, method, train, seed, rank, world_size)
                    saved_at = step
            if step >= train.iterations:
                break
            lr = train.lr(step) * loop.lr_scale
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            batch = method.sample(problem, per_rank_batch, gen, dtype)
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(batch)
            loss.backward()
            distributed.allreduce_gradients(model, world_size)
            optimizer.step()
            train_sum += loss.detach()
            loop.train_count += 1
            loop.step += 1
            bar.update(1)
        if world_size == 1:
            def on_finetune(done: int, train_loss: float) -> None:
                valid_loss, u0 = _validate(method, model, problem, valid_batch, world_size, dev)
                row = HistoryRow(train.iterations + done, valid_loss, train_loss, u0, float("nan"),
                                 elapsed_before + time.perf_counter() - start)
                loop.history.append(row)
                if writer is not None:
                    writer.log(row)
                log.info("finetune %6d  loss %.4e  u0 %.6g", done, valid_loss, u0)
                _record_metrics(method, model, problem, row.step, loop, writer)

            finetuned = method.finetune(model, problem, generator=gen, dtype=dtype, batch_size=per_rank_batch,
                                        log_every=train.log_every, callback=on_finetune)
        else:
            finetuned = None
            if type(method).finetune is not Method.finetune:
                warnings.append(f"{method.name}.finetune skipped: it runs in a single process only")
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    finally:
        bar.close()
    seconds = elapsed_before + time.perf_counter() - start

    model.eval()
    est = method.estimate(model, problem)
    try:
        reference = problem.reference()
    except Exception as exc:  # a failing reference calculator must not lose the trained answer
        reference = None
        warnings.append(f"reference could not be computed: {type(exc).__name__}: {exc}")
    extra = _extra(method.report(model, problem), finetuned, warnings)
    extra["world_size"] = world_size
    solution = Solution(problem=problem.name, method=method.name, dim=problem.dim, u0=est.u0,
                        _grad_u0=est.grad_u0, history=History(tuple(loop.history), tuple(loop.metrics)),
                        reference=reference,
                        seconds=seconds, iterations=train.iterations, device=str(dev), dtype=train.dtype,
                        seed=seed, run_dir=run_dir, rollbacks=tuple(loop.rollbacks), warnings=tuple(warnings),
                        extra=extra,
                        model=model, _grad_unavailable=est.grad_unavailable)
    if writer is not None:
        writer.finish(solution.summary())
    return solution


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


def _adam(model: torch.nn.Module, lr: float, dev: torch.device) -> torch.optim.Optimizer:
    """Adam (ε = 1e-8 as in the original); the fused kernel where this torch has one for the device."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8)


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
            "metrics": [[step, dict(values)] for step, values in loop.metrics]}


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer, gen: torch.Generator,
              loop: _Loop) -> dict[str, Any]:
    """A deep copy of everything a rollback or a checkpoint must restore."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "rng": [gen.get_state()], "loop": _loop_to_dict(loop)}


def _restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             gen: torch.Generator, loop: _Loop, rank: int) -> None:
    model.load_state_dict(state["model"])
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


def _fingerprint(problem: Problem, method: Method, train: TrainConfig, seed: int) -> str:
    import json

    data = {"problem": problem.describe(), "method": method.describe(), "seed": seed,
            "train": {k: v for k, v in train.to_dict().items()
                      if k not in ("checkpoint_every", "iterations", "max_rollbacks", "compile")}}
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
    state = dict(snapshot, rng=[r.cpu() for r in rng], world_size=world_size,
                 fingerprint=_fingerprint(problem, method, train, seed))
    save_checkpoint(run_dir / "checkpoints", int(snapshot["loop"]["step"]), state)
