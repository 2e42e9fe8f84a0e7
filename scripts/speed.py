"""Speed of one deep BSDE training step: the batched step networks against a Python loop of networks.

Measures, in one process and one run (so the ratio is meaningful on a shared machine), the median time of
a full training step (sampling, rollout, backward, Adam) for Allen–Cahn at d = 100 (N = 20, batch 64,
width d + 10, batch norm) with

* ``batched``: deepbsde's :class:`~deepbsde.nets.StepNets` (one ``bmm`` per layer for all 19 networks);
* ``loop``: the same architecture as a ``ModuleList`` of 19 ``nn.Sequential`` networks evaluated one after
  the other, as in the original TensorFlow code;

and estimates the time of the shipped 4000-step run from the median. Usage::

    python scripts/speed.py [--threads 2] [--repeats 7] [--steps 50] [--dim 100] [--out benchmarks/speed.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from deepbsde import DeepBSDE
from deepbsde.methods.deep_bsde import rollout, terminal_loss
from deepbsde.paths import make_generator
from equations import AllenCahn


class LoopNets(nn.Module):
    """The original's layout: one small network per time step, called in a Python loop."""

    def __init__(self, num: int, dim: int, width: int) -> None:
        super().__init__()

        def net() -> nn.Sequential:
            return nn.Sequential(nn.BatchNorm1d(dim, momentum=0.01, eps=1e-6), nn.Linear(dim, width, bias=False),
                                 nn.BatchNorm1d(width, momentum=0.01, eps=1e-6), nn.ReLU(),
                                 nn.Linear(width, width, bias=False), nn.BatchNorm1d(width, momentum=0.01, eps=1e-6),
                                 nn.ReLU(), nn.Linear(width, dim), nn.BatchNorm1d(dim, momentum=0.01, eps=1e-6))

        self.nets = nn.ModuleList(net() for _ in range(num))
        self.y0 = nn.Parameter(torch.tensor([0.4]))
        self.z0 = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = x.shape[0]
        zs = [self.z0.expand(batch, -1)] + [net(x[:, n + 1]) / x.shape[2] for n, net in enumerate(self.nets)]
        return self.y0.expand(batch, 1), torch.stack(zs, 1)


def _step_fn(model: nn.Module, method: DeepBSDE, problem: AllenCahn, gen: torch.Generator):
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, eps=1e-8)

    def step() -> None:
        x, dw = method.sample(problem, 64, gen, torch.float32)
        opt.zero_grad(set_to_none=True)
        y0, z = model(x)
        y = rollout(problem, y0, z, x, dw, problem.horizon / method.num_steps, method.scheme)
        terminal_loss(y - problem.terminal(x[:, -1]), method.clip).backward()
        opt.step()

    return step


def _median_ms(step, steps: int, repeats: int) -> list[float]:
    for _ in range(5):
        step()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        out.append((time.perf_counter() - t) / steps * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    problem = AllenCahn(dim=args.dim)
    method = DeepBSDE(num_steps=20, y0_range=(0.3, 0.6), scheme="heun")
    batched = method.build(problem, make_generator(0)).float()
    loop = LoopNets(19, args.dim, args.dim + 10).float()
    times = {"batched": [], "loop": []}
    # interleave the two so that both see the same machine load
    for _ in range(args.repeats):
        times["batched"] += _median_ms(_step_fn(batched, method, problem, make_generator(1)), args.steps, 1)
        times["loop"] += _median_ms(_step_fn(loop, method, problem, make_generator(1)), args.steps, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"# Deep BSDE training-step speed (Allen–Cahn, d = {args.dim}, N = 20, batch 64, width d + 10)",
        "",
        f"Command: `python scripts/speed.py --threads {args.threads} --repeats {args.repeats} --steps {args.steps}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
        "medians over interleaved repeats of one run.",
        "",
        "| networks | median ms / step | min | max | 4000 steps (est.) |",
        "|---|---|---|---|---|",
    ]
    for k in ("batched", "loop"):
        lines.append(f"| {k} | {med[k]:.2f} | {min(times[k]):.2f} | {max(times[k]):.2f} | {4 * med[k]:.1f} s |")
    lines += ["", f"Ratio loop / batched: **{med['loop'] / med['batched']:.2f}x**"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
