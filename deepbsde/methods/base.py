"""The method interface shared by the deep BSDE and PINN solvers.

A method turns ``(problem, sampled data, network)`` into a loss; :func:`deepbsde.solve` runs the one
training loop shared by all methods. A method object holds the discretisation and network settings only,
never the problem.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable

import torch
from torch import nn

from ..problem import Problem

__all__ = ["Method", "Estimate"]


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What a trained model says at ``(0, x0)``: ``u0`` and ``grad_u0`` (∇u, not σᵀ∇u)."""

    u0: float
    grad_u0: tuple[float, ...] | None
    grad_unavailable: str | None = None


class Method(abc.ABC):
    """A solver method: builds a model for a problem, samples training data, computes the loss."""

    #: the name used in configs, summaries and reports
    name: str = "Method"
    #: how the error bar estimates ∇u(0, x0): "pathwise" or "likelihood_ratio" (see deepbsde.estimators.evaluate)
    gradient_estimator: str = "pathwise"

    @abc.abstractmethod
    def check(self, problem: Problem) -> None:
        """Raise :class:`~deepbsde.errors.ConfigError` if this method cannot treat ``problem``."""

    @abc.abstractmethod
    def build(self, problem: Problem, generator: torch.Generator) -> nn.Module:
        """The trainable model, initialised from ``generator`` (a CPU generator), in float64 on CPU."""

    @abc.abstractmethod
    def sample(self, problem: Problem, batch_size: int, generator: torch.Generator,
               dtype: torch.dtype) -> Any:
        """One batch of training data, drawn on ``generator.device``."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, problem: Problem, batch: Any) -> torch.Tensor:
        """The scalar training loss on ``batch``."""

    @abc.abstractmethod
    def estimate(self, model: nn.Module, problem: Problem) -> Estimate:
        """:math:`u(0, x_0)` and :math:`\\nabla u(0, x_0)` from the trained model."""

    def control(self, model: nn.Module, problem: Problem) -> Any:
        r"""The trained solution as a :class:`deepbsde.estimators.Control` (:math:`\hat Y_0` and :math:`\hat Z`
        along paths), from which :func:`deepbsde.solve` re-estimates u0 and its error bar on fresh paths;
        ``None`` where the method cannot give one (then the answer carries no error bar, and says so)."""
        return None

    def trained_z0(self, model: nn.Module, problem: Problem) -> torch.Tensor | None:
        r"""The trained :math:`Z_0 = \sigma^\top\nabla u(0, x_0)`, shape ``(m,)``, where the method has one."""
        return None

    def value(self, model: nn.Module, problem: Problem, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The trained :math:`u(t, x)` at a batch of points: ``t`` of shape ``(B, 1)`` and ``x`` of shape
        ``(B, d)``, both on the model's device and in its dtype; returns ``(B, 1)``, differentiable in ``x``
        (``deepbsde.Solution.u`` and ``grad_u`` use it). Methods that learn u only at some times raise
        :class:`~deepbsde.errors.ConfigError` for other ``t`` (the deep BSDE method: ``t = 0`` in region
        mode). The default raises ``NotImplementedError``: the method gives u at ``(0, x0)`` only."""
        raise NotImplementedError(f"{self.name} gives u(0, x0) only, not u at other points")

    def memory_estimate(self, problem: Problem, batch_size: int, valid_size: int, dtype: torch.dtype) -> float | None:
        """Bytes this method's run is expected to need (see :mod:`deepbsde.resources`), or ``None`` (no check)."""
        return None

    def u0_tensor(self, model: nn.Module, problem: Problem) -> torch.Tensor:
        """:math:`u(0, x_0)` as a 0-dim tensor on the model's device (for cheap logging)."""
        return torch.tensor(self.estimate(model, problem).u0)

    def report(self, model: nn.Module, problem: Problem) -> dict[str, Any]:
        """Method-specific figures for the summary (``Solution.extra``); none by default."""
        return {}

    def divergence_hint(self, problem: Problem) -> str:
        """What of this method's settings to change when training diverged beyond its rollbacks (appended to the
        :class:`~deepbsde.errors.DivergenceError`); nothing by default."""
        return ""

    def metrics(self, model: nn.Module, problem: Problem) -> dict[str, float]:
        """Figures recorded at every logged step (e.g. the PINN's relative L2 error against a reference):
        :func:`deepbsde.solve` stores them in ``History.metrics``, ``metrics.csv`` and TensorBoard. None by
        default. May synchronise with the device (it runs only at logged steps)."""
        return {}

    def finetune(self, model: nn.Module, problem: Problem, *, generator: torch.Generator, dtype: torch.dtype,
                 batch_size: int, log_every: int, callback: Callable[[int, float], None]) -> dict[str, Any] | None:
        """An optional second optimisation phase, run by :func:`deepbsde.solve` after its first-order loop
        (the PINN's L-BFGS). It draws its data from ``generator`` (the training generator, after the loop),
        calls ``callback(iterations_done, training_loss)`` every ``log_every`` of its iterations (solve then
        validates and records a history row at step ``train.iterations + iterations_done``), and returns
        figures merged into ``Solution.extra`` (a ``"warnings"`` list there joins the solution's warnings),
        or ``None`` when it did nothing, as by default. Single-process only: under ``torch.distributed``
        solve skips it with a warning.
        """
        return None

    def _keep(self, name: str, problem: Any, value: Any) -> Any:
        """Store ``value`` for ``problem`` (this object) under ``name``; returns it. The settings are frozen, so
        what a method decides per problem (a probe of its driver, a sampling drift's view) lives beside them."""
        self.__dict__.setdefault(name, {})[id(problem)] = (problem, value)
        return value

    def _kept(self, name: str, problem: Any, make: Callable[[], Any] | None = None, default: Any = None) -> Any:
        """What :meth:`_keep` stored for ``problem`` under ``name`` (the entry holds the problem, so a recycled
        ``id`` of another object is not mistaken for it); else ``make()``, kept, where given; else ``default``."""
        entry = self.__dict__.get(name, {}).get(id(problem))
        if entry is not None and entry[0] is problem:
            return entry[1]
        return self._keep(name, problem, make()) if make is not None else default

    def describe(self) -> dict[str, Any]:
        """The method's settings, for run folders and reports."""
        out: dict[str, Any] = {"name": self.name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
