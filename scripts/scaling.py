"""Scaling in the dimension on one CPU: the deep BSDE solver on HJBLQ at d = 100 and d = 1000.

Each dimension runs in a fresh subprocess (so that its peak resident memory, from
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, is its own), with the original architecture (N = 20 steps,
two hidden layers of width d + 10 with batch norm per step), batch 64, float32. The time per iteration is
the median over logged intervals (the first left out: it holds the warm-up); each interval also holds one
validation on 256 paths. Writes ``benchmarks/scaling.md`` with the table and the command.

    python scripts/scaling.py                          # d = 100 (300 steps) and d = 1000 (120 steps)
    python scripts/scaling.py --dims 100 1000 --iterations 300 120 --threads 1

On a shared machine the absolute times move with the load; the ratio d = 1000 / d = 100 measured in one
run is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_GB = 24.0


def child(dim: int, iterations: int, log_every: int, threads: int) -> None:
    """Train once and print one JSON line: the history's (step, seconds), peak RSS and the answer."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(threads)
    from deepbsde import DeepBSDE, TrainConfig, solve
    from equations import HJBLQ

    sol = solve(HJBLQ(dim=dim), DeepBSDE(num_steps=20), seed=0, device="cpu", out=False, progress=False,
                train=TrainConfig(iterations=iterations, batch_size=64, valid_size=256, log_every=log_every,
                                  dtype="float32", lr_values=(1e-2,)))
    params = sum(p.numel() for p in sol.model.parameters())
    print(json.dumps({"dim": dim, "iterations": iterations, "log_every": log_every, "threads": threads,
                      "rows": [[r.step, r.seconds] for r in sol.history], "seconds": sol.seconds,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
                      "parameters": params, "u0": sol.u0, "reference": sol.reference.value}))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--iterations", type=int, nargs="+", default=[300, 120],
                        help="training steps per dimension (default 300 and 120)")
    parser.add_argument("--log-every", type=int, nargs="+", default=[20, 10])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "scaling.md"))
    parser.add_argument("--child", nargs=4, type=int, metavar=("DIM", "ITERATIONS", "LOG_EVERY", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if not (len(args.dims) == len(args.iterations) == len(args.log_every)):
        parser.error("--dims, --iterations and --log-every need one value per dimension")

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    load_before = os.getloadavg()
    began = time.perf_counter()
    results = []
    for dim, iterations, log_every in zip(args.dims, args.iterations, args.log_every):
        print(f"d = {dim}: {iterations} steps ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(dim), str(iterations), str(log_every),
                               str(args.threads)], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rows = r["rows"]
        per_step = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(rows[1:], rows[2:])]
        r["per_step_median"] = statistics.median(per_step)
        r["per_step_min"], r["per_step_max"] = min(per_step), max(per_step)
        r["intervals"] = len(per_step)
        results.append(r)
    total = time.perf_counter() - began
    load_after = os.getloadavg()

    base = results[0]
    command = "python scripts/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Scaling in the dimension on one CPU (HJBLQ, deep BSDE)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {_cpu_name()} ({os.cpu_count()} cores), torch "
        f"{__import__('torch').__version__}, {args.threads} thread(s) per run, one run per dimension in a fresh "
        f"process, one after the other. **The machine was shared with other jobs**: load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (on {os.cpu_count()} cores), so absolute "
        f"times are inflated and noisy; the ratios come from one run of this script.",
        "",
        "Set-up: HJBLQ (lambda = 1, T = 1, x0 = 0), N = 20 time steps, per step two hidden layers of width "
        "d + 10 with batch norm (the original architecture), batch 64, validation batch 256, float32, Adam at "
        "1e-2. Time per step: median over logged intervals after the first (each interval holds one "
        "validation); range in brackets. Peak RSS: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the run's "
        "own process (everything: Python, torch, the model, Adam state, the rollback snapshot, the final "
        "diagnostics).",
        "",
        "| d | steps (intervals) | parameters | time per step (s) | ratio to d = "
        f"{base['dim']} | peak RSS (GB) | fits in {MEMORY_LIMIT_GB:.0f} GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['dim']} | {r['iterations']} ({r['intervals']}) | {r['parameters']:,} "
                     f"| {r['per_step_median']:.3g} [{r['per_step_min']:.3g}, {r['per_step_max']:.3g}] "
                     f"| {r['per_step_median'] / base['per_step_median']:.1f} | {r['peak_rss_gb']:.2f} "
                     f"| {'yes' if r['peak_rss_gb'] < MEMORY_LIMIT_GB else 'NO'} |")
    if len(results) > 1:
        last = results[-1]
        lines += ["", f"Parameters grow {last['parameters'] / base['parameters']:.0f}x from d = {base['dim']} to "
                      f"d = {last['dim']} (the hidden width grows with d, so roughly (d + 10)^2); the time per step "
                      f"{last['per_step_median'] / base['per_step_median']:.0f}x; peak memory "
                      f"{last['peak_rss_gb'] / base['peak_rss_gb']:.1f}x."]
    lines += ["", f"Command (total {total:.0f} s):", "", "```", command.strip(), "```", ""]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
