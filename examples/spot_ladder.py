"""Price and delta of a basket call over a ladder of spots, from one trained solution.

The deep BSDE method in region mode (:class:`deepbsde.Line`) trains on paths that start anywhere on the line
x0 = s (1, ..., 1), s in [80, 120], so one run gives u(0, s 1) and ∇u(0, s 1) for every spot of the ladder.
:class:`equations.GeometricBasketCall` has a closed form at every point (Kemna & Vorst 1990), so the plot and
the table show the trained curve against it, with the 95 % error bar at a few spots (each a re-estimate on
fresh paths from that spot). The delta shown is the mean over the d coordinates of ∇u, i.e. the derivative
along the line divided by d: on a line only that direction is identified by the data.

Run::

    python examples/spot_ladder.py                 # d = 100, rho = 0.5, 12,000 steps (about 10 minutes on 2 CPU cores)
    python examples/spot_ladder.py --dim 10 --iterations 3000 --out runs/ladder-d10

It writes ``ladder.png`` (price and delta against the closed form) and ``ladder.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

import deepbsde
from equations import GeometricBasketCall


def closed_form(problem: GeometricBasketCall, spots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u(0, s 1) and the mean delta (mean over coordinates of ∇u) from the closed form, by autograd."""
    x = torch.tensor(spots, dtype=torch.float64).reshape(-1, 1).expand(-1, problem.dim).clone().requires_grad_(True)
    u = problem.exact_solution(torch.zeros(x.shape[0], 1, dtype=torch.float64), x)
    (grad,) = torch.autograd.grad(u.sum(), x)
    return u.detach().reshape(-1).numpy(), grad.mean(1).numpy()


def main(dim: int = 100, rho: float = 0.5, lo: float = 80.0, hi: float = 120.0, iterations: int = 12000,
         points: int = 41, interval_spots: int = 5, out: str = "runs/spot-ladder", seed: int = 0,
         progress: bool | None = None) -> deepbsde.Solution:
    """Train on the line, evaluate the ladder, write the plot and the table; returns the Solution with the
    ladder's errors in ``extra["ladder"]``."""
    problem = GeometricBasketCall(dim=dim, rho=rho)
    method = deepbsde.DeepBSDE(region=deepbsde.Line(1.0, lo, hi))
    # the schedule of equations/configs/geometric_basket_region.toml (its comment has the measurements): train the
    # whole budget, a sixth of it at the learning rate 1e-2, half at 1e-3, a third at 1e-4
    train = deepbsde.TrainConfig(iterations=iterations, tolerance=0,
                                 lr_boundaries=[max(iterations // 6, 1), max(2 * iterations // 3, 2)])
    sol = deepbsde.solve(problem, method, train=train, seed=seed, out=Path(out) / "run", progress=progress)

    spots = np.linspace(lo, hi, points)
    ladder = np.repeat(spots[:, None], dim, axis=1)       # (points, d): x0 = s (1, ..., 1)
    price = sol.u(ladder).reshape(-1)                      # NumPy in, NumPy out
    delta = sol.grad_u(ladder).mean(1)
    exact_price, exact_delta = closed_form(problem, spots)
    bar_spots = np.linspace(lo, hi, interval_spots)
    bar_lo, bar_hi = sol.u_interval(np.repeat(bar_spots[:, None], dim, axis=1), seed=seed + 1)

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "ladder.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["spot", "price", "closed_form_price", "mean_delta", "closed_form_mean_delta"])
        for row in zip(spots, price, exact_price, delta, exact_delta):
            w.writerow([f"{v:.8g}" for v in row])
    price_l2 = float(np.linalg.norm(price - exact_price) / np.linalg.norm(exact_price))
    delta_l2 = float(np.linalg.norm(delta - exact_delta) / np.linalg.norm(exact_delta))
    bar_exact = closed_form(problem, bar_spots)[0]
    covered = int(np.sum((bar_lo <= bar_exact) & (bar_exact <= bar_hi)))
    _plot(folder / "ladder.png", spots, price, exact_price, delta, exact_delta, bar_spots, bar_lo, bar_hi,
          f"Geometric basket call, d = {dim}, rho = {rho}")
    result = {"price_rel_l2": price_l2, "mean_delta_rel_l2": delta_l2, "intervals_covering": covered,
              "intervals": interval_spots, "seconds": sol.seconds}
    print(f"price along the ladder: relative L2 error {100 * price_l2:.3f} %; mean delta {100 * delta_l2:.3f} %; "
          f"95 % intervals covering the closed form at {covered}/{interval_spots} spots; "
          f"{sol.seconds:.0f} s of training. Plot: {folder / 'ladder.png'}")
    sol.extra["ladder"] = result
    return sol


def _plot(path: Path, spots, price, exact_price, delta, exact_delta, bar_spots, bar_lo, bar_hi, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_u, ax_d) = plt.subplots(1, 2, figsize=(10, 4))
    ax_u.plot(spots, exact_price, "k-", label="closed form")
    ax_u.plot(spots, price, "C0--", label="deep BSDE (region mode)")
    mid = (bar_lo + bar_hi) / 2
    ax_u.errorbar(bar_spots, mid, yerr=(bar_hi - bar_lo) / 2, fmt="none", ecolor="C3", capsize=3,
                  label="95 % interval (re-estimate)")
    ax_u.set_xlabel("spot s (x0 = s 1)")
    ax_u.set_ylabel("price u(0, x0)")
    ax_u.legend()
    ax_d.plot(spots, exact_delta, "k-", label="closed form")
    ax_d.plot(spots, delta, "C0--", label="deep BSDE (region mode)")
    ax_d.set_xlabel("spot s")
    ax_d.set_ylabel("mean delta (mean of ∇u)")
    ax_d.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--iterations", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/spot-ladder")
    args = parser.parse_args()
    main(dim=args.dim, rho=args.rho, iterations=args.iterations, seed=args.seed, out=args.out)
