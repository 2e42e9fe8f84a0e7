r"""Adam (Kingma & Ba, ICLR 2015) for the CPU, without ``torch.optim``'s start-up cost.

:math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
:math:`\theta \leftarrow \theta - \frac{\mathrm{lr}}{1-\beta_1^k}\,\frac{m}{\sqrt{v/(1-\beta_2^k)} + \epsilon}` at step
:math:`k`, with the same ``_foreach`` operations in the same order as ``torch.optim.Adam(foreach=True)`` (no weight
decay, no AMSGrad), so the two give bit-identical parameters, and the same ``state_dict`` layout, so snapshots and
checkpoints move between them.

Why not ``torch.optim.Adam`` on the CPU: its ``step`` imports ``torch._dynamo`` on first use, about 0.9 s with
torch 2.13 on this project's 2-core machine, a tenth of the main job's wall time (``benchmarks/speed.md``), for an
update that takes under 1 ms. On accelerators :func:`deepbsde.solve` keeps torch's fused kernel.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


class Adam:
    """The optimiser of :func:`deepbsde.solve` on the CPU: one parameter group, ``lr`` settable through
    ``param_groups[0]["lr"]`` as with ``torch.optim``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        params = list(params)
        if not params:
            raise ValueError("Adam: received no parameters")
        self.param_groups = [{"params": params, "lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.tensor(0.0),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        counts = [float(s.item()) for s in steps]
        step_size = [(lr / (1 - beta1 ** k)) * -1 for k in counts]
        correction2_sqrt = [(1 - beta2 ** k) ** 0.5 for k in counts]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam``'s layout: per-parameter state by index, and the group's settings."""
        group = self.param_groups[0]
        index = {id(p): i for i, p in enumerate(group["params"])}
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        settings = {k: v for k, v in group.items() if k != "params"}
        settings.update(weight_decay=0, amsgrad=False, maximize=False, foreach=True, capturable=False,
                        differentiable=False, fused=None, decoupled_weight_decay=False)
        return {"state": state, "param_groups": [{**settings, "params": list(range(len(group["params"])))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` or from ``torch.optim.Adam.state_dict()`` of the same parameters."""
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError(f"Adam.load_state_dict: expected one group of {len(params)} parameters, received "
                             f"{[len(g['params']) for g in groups]}")
        saved = groups[0]
        for key in ("amsgrad", "maximize"):
            if saved.get(key):
                raise ValueError(f"Adam.load_state_dict: the saved optimiser used {key}, which this one does not")
        if saved.get("weight_decay", 0):
            raise ValueError("Adam.load_state_dict: the saved optimiser used weight decay, which this one does not")
        self.param_groups[0].update(lr=float(saved["lr"]), betas=tuple(saved["betas"]), eps=float(saved["eps"]))
        self.state = {}
        for i, p in zip(saved["params"], params):
            s = state_dict["state"].get(i)
            if s is None:
                continue
            self.state[p] = {"step": torch.as_tensor(s["step"], dtype=torch.float32).detach().clone().cpu(),
                             "exp_avg": s["exp_avg"].detach().to(p.device, p.dtype).clone(),
                             "exp_avg_sq": s["exp_avg_sq"].detach().to(p.device, p.dtype).clone()}
