#!/usr/bin/env python
r"""The deep BSDE scheme on HJBLQ with the *exact* Z: how far its Y0 is from u(0, x0) when training is perfect.

For the HJB equation of benchmarks 2 (``u_t + Δu − λ|∇u|² = 0``, σ = √2 I) the solution is radial,
u(t, x) = v(T − t, |x|²), so Z = σᵀ∇u = 2√2 ∂v/∂(|x|²) x. ``v`` comes from the Cole–Hopf quadrature
(:func:`equations.calculators.hjb_lq.hjb_lq_value`), tabulated per time step on a grid of |x|² that covers
the sampled paths and differentiated through a cubic spline. With this Z the script rolls Y forward
(Euler or Heun driver term, the library's own :func:`deepbsde.methods.deep_bsde.rollout`) and finds the
Y0 for which E[Y_N − g(X_N)] = 0 on the same paths (bisection): what a perfectly trained network would
return at that N. It also reports the terminal mismatch E|Y_N − g(X_N)|² at that Y0: the floor that no
training gets below. Comparing a trained run's ``final_loss`` and ``u0`` with these two numbers separates
the scheme's error from the training error.

Example::

    python scripts/hjb_exact_z.py --dim 100 --lams 1 10 20 50 --steps 20 40 --out benchmarks/hjb_exact_z.md
    python scripts/hjb_exact_z.py --dim 100 --lams 50 --pull 0 1 2.5 3.5 --steps 20    # with a sampling drift
    python scripts/hjb_exact_z.py --controlled --run RUN_DIR --steps 20 40 80 160     # the control's measure,
                                                                  # and a trained run's control beside the exact one
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.interpolate import CubicSpline

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deepbsde.methods.deep_bsde import controlled_paths, rollout  # noqa: E402
from deepbsde.paths import brownian_increments, make_generator, simulate  # noqa: E402
from equations import HJBLQ  # noqa: E402
from equations.calculators.hjb_lq import hjb_lq_value  # noqa: E402


def exact_z_step(problem: HJBLQ, n: int, x: torch.Tensor, num_steps: int, grid_points: int = 80) -> torch.Tensor:
    """Z_n = 2√2 ∂u/∂(|x|²)(t_n, x) x at the points ``x`` (batch, d), in ``x``'s dtype."""
    dim, horizon, lam = problem.dim, problem.horizon, problem.lam
    xd = x.detach().to(torch.float64)
    r2 = (xd ** 2).sum(1).numpy()
    if float(r2.max()) == 0.0:  # all paths at the origin (n = 0, x0 = 0): Z = 0 by symmetry
        return torch.zeros_like(x)
    lo, hi = float(r2.min()), float(r2.max())
    if hi - lo < 1e-9 * hi:  # n = 0 with x0 != 0: one point; widen the grid around it
        lo, hi = 0.9 * lo, 1.1 * hi
    grid = np.linspace(lo * 0.99, hi * 1.01, grid_points)
    # hjb_lq_value broadcasts a scalar x to all d coordinates: |x|² = d x²
    vals = np.array([hjb_lq_value(n * horizon / num_steps, math.sqrt(g / dim), lam=lam, horizon=horizon, dim=dim)
                     for g in grid])
    slope = CubicSpline(grid, vals)(r2, 1)
    return (torch.from_numpy(2.0 * math.sqrt(2.0) * slope)[:, None] * xd).to(x.dtype)


def exact_z(problem: HJBLQ, x: torch.Tensor, num_steps: int, grid_points: int = 80) -> torch.Tensor:
    """Z_n for n = 0..N−1 along paths ``x`` (batch, N+1, d): shape (batch, N, d)."""
    return torch.stack([exact_z_step(problem, n, x[:, n], num_steps, grid_points) for n in range(num_steps)], 1)


def scheme_y0(problem: HJBLQ, num_steps: int, batch: int, seed: int, schemes=("euler", "heun"),
              z_step=None) -> dict:
    """For each scheme: the Y0 zeroing the mean terminal mismatch, and the mismatch there. ``z_step``: ``None``
    for the exact Z on plain paths; ``"exact"`` for the exact Z on the paths of the exact feedback control's
    measure (drift σ ∂_z f(Z) = −2λ∇u, driver f − ∂_z f(Z)·z: the library's
    :func:`~deepbsde.methods.deep_bsde.controlled_paths`); or a callable ``z_step(n, x_n, N)`` (a trained
    network's control, whose Y0 is then the value of that feedback control at this N: an upper bound on u as
    N grows)."""
    dt = problem.horizon / num_steps
    dw = brownian_increments(batch, num_steps, problem.noise_dim, dt, make_generator(seed), torch.float64)
    beta = None
    if z_step is None:
        x = simulate(problem, dw, dt)
        z = exact_z(problem, x, num_steps)
    else:
        step = (lambda n, xn, steps: exact_z_step(problem, n, xn, steps)) if z_step == "exact" else z_step
        x, beta = controlled_paths(problem, step, problem.reference().value, dw, dt)
        z = torch.stack([step(n, x[:, n], num_steps).to(torch.float64) for n in range(num_steps)], 1)
    g = problem.terminal(x[:, -1])
    ref = problem.reference().value

    def rolled(y0: float) -> torch.Tensor:
        return rollout(problem, torch.full((batch, 1), y0, dtype=torch.float64), z, x, dw, dt, scheme, beta) - g

    out = {"reference": ref, "var_g": float(g.var())}
    for scheme in schemes:
        lo, hi = ref - 2.0, ref + 2.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if float(rolled(mid).mean()) > 0 else (mid, hi)
        y0 = 0.5 * (lo + hi)
        out[scheme] = {"y0": y0, "rel_error": (y0 - ref) / ref, "mse": float(rolled(y0).square().mean())}
    return out


def trained_control(run_dir: Path):
    """``z_step(n, x_n, N)`` of a saved deep BSDE run with the shared network (``deepbsde.load``)."""
    from deepbsde.saved import load_solution

    model = load_solution(run_dir).model
    dtype = next(model.parameters()).dtype  # the run's train.dtype

    def z_step(n: int, x: torch.Tensor, steps: int) -> torch.Tensor:
        with torch.no_grad():
            if n == 0:
                return model.z0.detach().to(x.dtype).expand_as(x)
            return model.z_step(n, x.to(dtype), steps).to(x.dtype)
    return z_step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--lams", type=float, nargs="+", default=[1.0, 10.0, 20.0, 50.0])
    p.add_argument("--steps", type=int, nargs="+", default=[20])
    p.add_argument("--batch", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pull", type=float, nargs="+", default=[0.0],
                   help="sampling drift(s) κ of HJBLQ(pull=κ): paths from dX = −κX dt + √2 dW")
    p.add_argument("--controlled", action="store_true",
                   help="paths under the exact feedback control's measure (as the default DeepBSDE trains and "
                        "re-estimates for drivers nonlinear in z) instead of plain paths")
    p.add_argument("--run", type=Path, default=None,
                   help="a saved run folder of HJBLQ (shared network): also the value of its trained control, "
                        "under that control's measure, at each N (its --dim and --lams are taken from the run)")
    p.add_argument("--out", type=Path, default=None, help="write the table to this markdown file")
    args = p.parse_args(argv)
    trained = None
    if args.run is not None:
        from deepbsde.saved import read_saved
        saved = read_saved(args.run)["problem_identity"]["arguments"]
        args.dim, args.lams, args.pull = int(saved["dim"]), [float(saved["lam"])], [float(saved.get("pull", 0.0))]
        trained = trained_control(args.run)
    torch.set_num_threads(1)
    rows = ["| λ | pull | N | Z | paths | reference | Var g(X_T) | Euler Y0 (rel. error) | Euler mismatch | Heun Y0 (rel. error) | Heun mismatch |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lam in args.lams:
        for pull in args.pull:
            problem = HJBLQ(dim=args.dim, lam=lam, pull=pull)
            for n in args.steps:
                cases = [("exact", "exact" if args.controlled else None)]
                if trained is not None:
                    cases.append(("trained", trained))
                for label, z_step in cases:
                    r = scheme_y0(problem, n, args.batch, args.seed, z_step=z_step)
                    e, h = r["euler"], r["heun"]
                    measure = "plain" if z_step is None else "controlled"
                    rows.append(f"| {lam:g} | {pull:g} | {n} | {label} | {measure} | {r['reference']:.6f} "
                                f"| {r['var_g']:.4f} | {e['y0']:.5f} ({e['rel_error']:+.3%}) | {e['mse']:.2e} "
                                f"| {h['y0']:.5f} ({h['rel_error']:+.3%}) | {h['mse']:.2e} |")
                    print(rows[-1], flush=True)
    text = "\n".join(rows)
    if args.out is not None:
        command = "python scripts/hjb_exact_z.py " + " ".join(sys.argv[1:] if argv is None else argv)
        args.out.write_text(
            f"# HJBLQ: the deep BSDE scheme with the exact Z (d = {args.dim}, x0 = 0, {args.batch} paths, seed {args.seed})\n\n"
            "`pull` is κ of the sampling drift −κx (HJBLQ(pull=κ), exact Ornstein–Uhlenbeck steps). `paths`: plain "
            "(dX = √2 dW) or controlled (the measure of the feedback control of the row's Z, as the default DeepBSDE "
            "trains and re-estimates for this driver). Z `trained`: the network of the run folder "
            f"{args.run} (its Y0 is the value of that control at this N, an upper bound on u as N grows).\n\n"
            "Y0 that zeroes the mean terminal mismatch when Z is the exact σᵀ∇u (Cole–Hopf quadrature), and the mean "
            "square mismatch there: the error and the loss floor of a perfectly trained network at this N.\n\n"
            f"{text}\n\nCommand: `{command}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
