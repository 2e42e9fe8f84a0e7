#!/usr/bin/env python
"""u and ∇u over a region: the four shipped region configs (the deep BSDE method's region mode), several seeds.

Each run is one fresh subprocess, what a user types::

    python -m deepbsde solve equations/configs/heat_region.toml --set train.seed=S --json --no-progress --out DIR

(``OMP_NUM_THREADS=1``). The summary of a region run carries the relative L2 errors of the trained u(0, .) and
∇u(0, .) over 4096 points drawn from the region (``region_rel_l2``, ``region_grad_rel_l2``) and of the mean over
coordinates of ∇u (``region_mean_grad_rel_l2``: along the basket's line x0 = s (1, ..., 1) the mean delta,
the derivative along the line over d). The script writes ``benchmarks/region.md`` (a table against the issue's
targets, the wall times and the commands, relative to the repository root) and ``region.json`` beside the
runs (``benchmarks/region_runs``).

Examples::

    python scripts/region.py --seeds 0 1 2                 # the d = 100 table (long on a CPU)
    python scripts/region.py --dim 5 --seeds 0 --output /tmp/region.md --runs /tmp/region_runs   # a quick check
    python scripts/region.py --only heat_region --set train.iterations=8000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "equations" / "configs"
OUTPUT = ROOT / "benchmarks" / "region.md"
RUNS = ROOT / "benchmarks" / "region_runs"

#: config -> the issue's targets: the summary key, its bound, and the label of the column
CASES: dict[str, list[tuple[str, float, str]]] = {
    "heat_region": [("region_rel_l2", 0.01, "u"), ("region_grad_rel_l2", 0.05, "∇u")],
    "barenblatt_region": [("region_rel_l2", 0.01, "u"), ("region_grad_rel_l2", 0.05, "∇u")],
    "geometric_basket_region": [("region_rel_l2", 0.01, "u"), ("region_mean_grad_rel_l2", 0.02, "mean delta")],
    "hjb_lq_region": [("region_rel_l2", 0.01, "u")],
}
KEYS = ("region_rel_l2", "region_grad_rel_l2", "region_mean_grad_rel_l2")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def command(name: str, seed: int, out: Path, dim: int | None, sets: list[str]) -> list[str]:
    cmd = ["python", "-m", "deepbsde", "solve", f"equations/configs/{name}.toml", "--set", f"train.seed={seed}"]
    if dim is not None:
        cmd += ["--set", f"equation.dim={dim}"]
    for s in sets:
        cmd += ["--set", s]
    return cmd + ["--json", "--no-progress", "--out", _relative(out)]


def run_one(name: str, seed: int, runs: Path, dim: int | None, sets: list[str], device: str) -> dict[str, Any]:
    folder = runs / (name if dim is None else f"{name}-d{dim}") / f"seed-{seed}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = command(name, seed, folder, dim, sets)
    shown = shlex.join(cmd)
    if device != "auto":
        cmd += ["--device", device]
        shown += f" --device {device}"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"case": name, "seed": seed, "returncode": proc.returncode, "wall_seconds": wall,
                           "command": shown}
    if proc.returncode != 0 or not proc.stdout.strip():
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    else:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update({k: summary.get(k) for k in ("dim", "u0", "reference", "relative_error", "seconds", "iterations",
                                                "device", "region", "variance_explained", *KEYS)})
    (folder / "region_row.json").write_text(json.dumps(row, indent=1, default=str))
    print(f"{name} seed {seed}: " + (row.get("error") or ", ".join(
        f"{k} {row[k]:.4g}" for k in KEYS if isinstance(row.get(k), float)) + f", {wall:.0f} s"), flush=True)
    return row


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def write_markdown(rows: list[dict[str, Any]], output: Path, args: argparse.Namespace, seconds: float) -> None:
    by_case: dict[str, list[dict[str, Any]]] = {}
    order = list(CASES)
    for r in sorted(rows, key=lambda r: (order.index(r["case"]) if r["case"] in order else len(order), r["seed"])):
        by_case.setdefault(r["case"], []).append(r)
    dims = sorted({r.get("dim") for r in rows if r.get("dim") is not None})
    lines = ["# u and ∇u over a region (deep BSDE region mode)", "",
             "The four shipped region configs (`equations/configs/*_region.toml`: `[equation]`, `[region]`, and "
             "in `[train]` `tolerance = 0` and the learning-rate schedule, with their reasons in the configs' "
             "comments; every other setting the default), run by `python scripts/region.py"
             + (f" --dim {args.dim}" if args.dim is not None else "")
             + "".join(f" --set {s}" for s in args.set) + f" --seeds {' '.join(map(str, args.seeds))}`.",
             "Errors are relative L2 over 4096 points drawn from the region (fixed seed derived from the run's): "
             "`u` is ‖û − u‖ / ‖u‖ at t = 0, `∇u` the same for the gradient (∇u by autograd of the trained Y0 "
             "network, not σᵀ∇u), `mean delta` for the mean over coordinates of ∇u (along the basket's line "
             "x0 = s·(1, …, 1): the derivative along the line over d, the only direction the line's data "
             "identify). References: the closed forms (heat, Barenblatt, basket) and the Cole-Hopf quadrature "
             "(HJB).",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; dimension {', '.join(map(str, dims)) or '-'}; the whole table took "
             f"{seconds / 60:.1f} min of runs (several at a time on the two cores). Seconds: `train` is the training loop's, `wall` the whole command's (the "
             f"error bar at x0 and the 4096-point comparison included).", "",
             "| config | seeds | u rel L2 % (mean, max) | ∇u rel L2 % (mean, max) | mean delta rel L2 % (mean, max) | "
             "targets | met | u0 at x0 (error %) | train s (median) | wall s (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by_case.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            lines.append(f"| {name} | 0/{len(rs)} | failed: {rs[0].get('error', '')[:100]} ||||||||")
            continue

        def pair(key: str) -> str:
            vals = [r[key] for r in ok if isinstance(r.get(key), (int, float))]
            if not vals:
                return "-"
            return f"{100 * statistics.fmean(vals):.2f}, {100 * max(vals):.2f}"

        targets = CASES.get(name, [])
        met = all(isinstance(r.get(k), (int, float)) and r[k] <= bound for r in ok for k, bound, _ in targets)
        target_text = "; ".join(f"{label} ≤ {100 * bound:g} %" for _, bound, label in targets)
        errs = [r["relative_error"] for r in ok if isinstance(r.get("relative_error"), (int, float))]
        u0 = statistics.fmean(r["u0"] for r in ok)
        lines.append(
            f"| {name} | {len(ok)}/{len(rs)} | {pair('region_rel_l2')} | {pair('region_grad_rel_l2')} | "
            f"{pair('region_mean_grad_rel_l2')} | {target_text} | {'yes' if met else 'no'} | "
            f"{u0:.6g} ({_fmt(100 * statistics.fmean(errs) if errs else None, '.3f')}) | "
            f"{_fmt(statistics.median(r['seconds'] for r in ok), '.0f')} | "
            f"{_fmt(statistics.median(r['wall_seconds'] for r in ok), '.0f')} |")
    lines += ["", "Commands (from the repository root, `OMP_NUM_THREADS=1`):", "", "```"]
    lines += [r["command"] for r in sorted(rows, key=lambda r: (r["case"], r["seed"]))]
    lines += ["```", ""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dim", type=int, default=None, help="override equation.dim of every config (a quick check)")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), default=None, help="run these configs only")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="passed to every run, e.g. --set train.iterations=500")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the markdown table (default benchmarks/region.md)")
    parser.add_argument("--runs", type=Path, default=RUNS, help="the run folders (default benchmarks/region_runs)")
    parser.add_argument("--from-runs", action="store_true",
                        help="rebuild the table from every finished run under --runs (runs of several invocations)")
    args = parser.parse_args(argv)
    if args.from_runs:
        rows = [json.loads(p.read_text()) for p in sorted(args.runs.glob("*/seed-*/region_row.json"))]
        if args.only:
            rows = [r for r in rows if r["case"] in args.only]
        args.seeds = sorted({r["seed"] for r in rows})
        write_markdown(rows, args.output, args, sum(r["wall_seconds"] for r in rows))
        print(f"wrote {args.output} from {len(rows)} runs")
        return 0
    start = time.perf_counter()
    rows = [run_one(name, seed, args.runs, args.dim, args.set, args.device)
            for name in (args.only or CASES) for seed in args.seeds]
    seconds = time.perf_counter() - start
    args.runs.mkdir(parents=True, exist_ok=True)
    (args.runs / "region.json").write_text(json.dumps(rows, indent=1, default=str))
    write_markdown(rows, args.output, args, seconds)
    print(f"wrote {args.output}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
