#!/usr/bin/env python
"""Warm start against cold start on nearby parameters: how much sooner the tolerance is reached.

For each case, with the default method and training settings (``deepbsde.solve(problem)`` and its tolerance):
solve the base problem once (seed 0), then the moved problem from a fresh initialisation (cold) and from the
base solution (``solve(moved, init=base)``, warm), with the same seed. The table gives, per seed, the steps and
the seconds of each (the solve call's wall time: training and the error bar; the error bar's path count follows
the trained control's quality, so a better start also shortens it), the errors against the reference, and the
speed-up (cold seconds over warm seconds).

Cases (the issue's examples of a nearby problem): the heat equation at d = 100, x0 = 1, with sigma moved by 5 %;
HJBLQ at d = 100 with lambda moved by 5 %; Black-Scholes-Barenblatt at d = 100 with r moved by 50 bp. (The
geometric basket at d = 100, rho = 0.5, is not among them: with the default tolerance of 0.2 % it trains its whole
budget cold and warm: at K = 90 its error bar on the most paths the default allows is 0.126 % statistical plus
0.068 % time-step bias, above the 0.16 % the stopping rule asks for, so there is no time to the tolerance to
compare.)

Examples::

    python scripts/warm_start.py --seeds 1 2 3          # writes benchmarks/warm_start.md
    python scripts/warm_start.py --dim 5 --seeds 1 --output /tmp/warm.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import deepbsde  # noqa: E402
from equations import HJBLQ, BlackScholesBarenblatt, HeatEquation  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "warm_start.md"
CASES = {
    "heat, sigma 1 -> 1.05": (lambda d: HeatEquation(dim=d, x0=1.0), lambda d: HeatEquation(dim=d, x0=1.0, sigma=1.05)),
    "HJB, lambda 1 -> 1.05": (lambda d: HJBLQ(dim=d), lambda d: HJBLQ(dim=d, lam=1.05)),
    "Barenblatt, r 0.05 -> 0.055": (lambda d: BlackScholesBarenblatt(dim=d),
                                    lambda d: BlackScholesBarenblatt(dim=d, r=0.055)),
}


def timed_solve(problem, seed: int, init=None):
    start = time.perf_counter()
    sol = deepbsde.solve(problem, seed=seed, out=False, progress=False, init=init)
    return sol, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    lines = ["# Warm start against cold start", "",
             f"Written by `{' '.join(['python scripts/warm_start.py', *map(shlex.quote, argv)])}`" +
             f" on {platform.machine()} ({os.cpu_count()} CPUs), torch {torch.__version__}, "
             f"{torch.get_num_threads()} thread(s). Default settings (tolerance {deepbsde.TrainConfig().tolerance}); "
             "the base problem is solved once with seed 0, then the moved one cold and warm with the same seed. "
             "Seconds: the solve call's wall time (training and the error bar). Speed-up: cold over warm seconds.",
             "", "| case | seed | cold steps | warm steps | cold s | warm s | speed-up | cold error % | warm error % "
             "| warm interval covers |", "|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    for label, (make_base, make_moved) in CASES.items():
        base, base_s = timed_solve(make_base(args.dim), 0)
        ups = []
        for seed in args.seeds:
            moved = make_moved(args.dim)
            cold, cold_s = timed_solve(moved, seed)
            warm, warm_s = timed_solve(moved, seed, init=base)
            ups.append(cold_s / warm_s)
            covers = warm.u0_interval[0] <= warm.reference.value <= warm.u0_interval[1]
            lines.append(f"| {label} (d = {args.dim}) | {seed} | {cold.iterations} | {warm.iterations} | {cold_s:.1f} | "
                         f"{warm_s:.1f} | {cold_s / warm_s:.2f} | {100 * cold.relative_error:.3f} | "
                         f"{100 * warm.relative_error:.3f} | {covers} |")
            print(lines[-1], flush=True)
        summary.append(f"- {label}: median speed-up {statistics.median(ups):.2f}x over {len(ups)} seed(s) "
                       f"(base solve {base.iterations} steps, {base_s:.1f} s).")
    lines += ["", "## Summary", ""] + summary
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
