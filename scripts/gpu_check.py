"""One-shot GPU check: time-to-accuracy, throughput and peak memory of the deep BSDE solver.

Runs, in one process, the most important first (a deadline, ``--budget``, skips what no longer fits and
says so in the table):

1. Allen-Cahn d = 100 (``equations/configs/allen_cahn.toml``; ``hjb_lq.toml`` d = 100 if it does not
   exist), float32 eager: time to reach the relative error ``--tol`` against the reference, final error;
2. HJBLQ d = 1000 (original architecture, hidden width d + 10), float32 eager, 1000 steps;
3. HJBLQ d = 10000, float32 eager, 500 steps, hidden width 1024 (the original's d + 10 = 10010 means
   5.7e9 parameters: about 90 GB for parameters, gradients and Adam moments, plus 68 GB for the rollback
   snapshot, and a 46 GB float64 initialisation on the host);
4. Allen-Cahn d = 100 with ``torch.compile``, and in float64;
5. HJBLQ d = 1000 with ``torch.compile``.

For each: iterations, seconds, time-to-accuracy, u0 and its relative error, throughput in paths x time
steps per second (median over logged intervals, the first one, which holds compilation and warm-up,
left out), and peak memory (``torch.cuda.max_memory_allocated``; on the CPU the process's peak RSS so
far). Prints a compact Markdown table and writes it to ``$OUT/gpu_check.md`` (and the raw numbers to
``$OUT/gpu_check.json``) when ``$OUT`` is set.

Usage::

    scripts/gpu_check.sh                      # on one GPU: the full check, within 10 minutes (--budget)
    scripts/gpu_check.sh --cpu --quick        # on a CPU: tiny iterations, to test the script itself
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import tomllib
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from deepbsde import solve  # noqa: E402
from deepbsde.configfile import apply_overrides, build_from_config  # noqa: E402
from equations import CATALOGUE  # noqa: E402

CONFIGS = ROOT / "equations" / "configs"


def _base_config(name: str) -> tuple[dict, str]:
    """A config file, with catalogue names turned into ``module:Class`` (works without installing)."""
    path = CONFIGS / name
    if name == "allen_cahn.toml" and not path.exists():
        path = CONFIGS / "hjb_lq.toml"
    config = tomllib.loads(path.read_text())
    classes = {cls.__name__.lower(): f"{cls.__module__}:{cls.__name__}" for cls in CATALOGUE}
    eq = config["equation"]["name"]
    config["equation"]["name"] = classes.get(eq.lower().replace("_", ""), eq)
    return config, path.name


def _cases(quick: bool, cpu: bool) -> list[dict]:
    """(label, config file, overrides, iterations) for each run."""
    ac_iters = 40 if quick else None  # None: the config's own iterations
    big_hidden = "[32, 32]" if quick else "[1024, 1024]"
    quick_hidden = ["method.hidden=[32, 32]"] if quick else []
    cases = [
        dict(label="d=100 f32 eager", config="allen_cahn.toml", iterations=ac_iters, sets=['train.dtype="float32"']),
        dict(label="HJBLQ d=1000 f32 eager", config="hjb_lq.toml", iterations=10 if quick else 1000,
             sets=["equation.dim=1000", 'train.dtype="float32"', *quick_hidden]),
        dict(label="HJBLQ d=10000 f32 eager", config="hjb_lq.toml", iterations=5 if quick else 500,
             sets=["equation.dim=10000", 'train.dtype="float32"', f"method.hidden={big_hidden}"]),
        dict(label="d=100 f32 compile", config="allen_cahn.toml", iterations=ac_iters,
             sets=['train.dtype="float32"', "train.compile=true"]),
        dict(label="d=100 f64 eager", config="allen_cahn.toml", iterations=ac_iters, sets=['train.dtype="float64"']),
        dict(label="HJBLQ d=1000 f32 compile", config="hjb_lq.toml", iterations=10 if quick else 1000,
             sets=["equation.dim=1000", 'train.dtype="float32"', "train.compile=true", *quick_hidden]),
    ]
    if quick and cpu:  # compiling on a CPU takes minutes: keep one compiled case to test the path
        cases = [c for c in cases if c["label"] != "HJBLQ d=1000 f32 compile"]
    return cases


def _peak_memory(dev: torch.device) -> tuple[float, str]:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30, "GPU max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak RSS of the process so far"


def _run(case: dict, dev: torch.device, tol: float, log_every: int | None) -> dict:
    config, source = _base_config(case["config"])
    sets = list(case["sets"])
    if case["iterations"] is not None:
        sets.append(f"train.iterations={case['iterations']}")
    iterations = case["iterations"] or int(config["train"].get("iterations", 2000))
    sets.append(f"train.log_every={log_every or max(1, min(100, iterations // 20))}")
    sets.append("train.checkpoint_every=0")
    problem, method, train, seed = build_from_config(apply_overrides(config, sets))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    sol = solve(problem, method, train=train, seed=seed, device=dev, out=False, progress=False)
    wall = time.perf_counter() - start
    memory, memory_kind = _peak_memory(dev)
    rows = list(sol.history)
    ref = sol.reference.value if sol.reference is not None else None

    def rel(u0: float) -> float | None:
        return abs(u0 - ref) / abs(ref) if ref else None

    reached = next((r for r in rows if ref and rel(r.u0) is not None and rel(r.u0) <= tol), None)
    batch, steps = train.batch_size, method.num_steps
    rates = [batch * steps * (b.step - a.step) / (b.seconds - a.seconds)
             for a, b in zip(rows[1:], rows[2:]) if b.seconds > a.seconds and b.step > a.step]
    if not rates:  # too few logged intervals (quick mode): the whole run
        rates = [batch * steps * rows[-1].step / rows[-1].seconds] if rows and rows[-1].seconds > 0 else [math.nan]
    return dict(label=case["label"], config=source, equation=problem.name, dim=problem.dim, dtype=train.dtype,
                compile=train.compile, hidden=list(method.hidden_for(problem)), num_steps=steps, batch=batch,
                iterations=train.iterations, seconds=sol.seconds, wall_seconds=wall, u0=sol.u0, reference=ref,
                relative_error=sol.relative_error, tol=tol,
                time_to_tol=reached.seconds if reached else None, step_to_tol=reached.step if reached else None,
                throughput=statistics.median(rates), peak_memory_gib=memory, memory_kind=memory_kind,
                rollbacks=len(sol.rollbacks), warnings=list(sol.warnings))


def _fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _table(results: list[dict], header: str) -> str:
    lines = [header, "",
             "| case | dtype | compile | hidden | iters | seconds | time to tol (step) | u0 | rel. error "
             "| paths x steps / s | peak mem (GiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['label']} | | | | | | | | {r['error']} | | |")
            continue
        ttt = f"{r['time_to_tol']:.1f} s ({r['step_to_tol']})" if r["time_to_tol"] is not None else "not reached"
        lines.append(f"| {r['label']} ({r['equation']}) | {r['dtype']} | {'yes' if r['compile'] else 'no'} "
                     f"| {'x'.join(map(str, r['hidden']))} | {r['iterations']} | {r['seconds']:.1f} | {ttt} "
                     f"| {r['u0']:.6g} | {_fmt(r['relative_error'], '.2e')} | {_fmt(r['throughput'], '.3g')} "
                     f"| {_fmt(r['peak_memory_gib'], '.2f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (to test the script)")
    parser.add_argument("--quick", action="store_true", help="tiny iterations and narrow networks for d >= 1000")
    parser.add_argument("--tol", type=float, default=0.01, help="relative error for time-to-accuracy (default 1%%)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which no further case starts (default 420: the last one started "
                             "still ends within a 10-minute slot)")
    parser.add_argument("--only", help="run only the cases whose label contains this text")
    parser.add_argument("--log-every", type=int, help="logging interval (default: iterations / 20, at most 100)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --cpu --quick to test the "
              "script on a CPU", file=sys.stderr)
        return 2
    dev = torch.device("cpu" if args.cpu else "cuda")
    began = time.perf_counter()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    header = (f"deepbsde gpu_check on {name} ({dev.type}), torch {torch.__version__}"
              f"{', CUDA ' + str(torch.version.cuda) if dev.type == 'cuda' else ''}, "
              f"{'quick' if args.quick else 'full'} mode, tol {args.tol:g}, {time.strftime('%Y-%m-%d %H:%M')}")
    results: list[dict] = []
    for case in _cases(args.quick, args.cpu):
        if args.only and args.only not in case["label"]:
            continue
        if time.perf_counter() - began > args.budget:
            results.append(dict(label=case["label"], error=f"skipped: past the {args.budget:.0f} s budget"))
            continue
        print(f"[{time.perf_counter() - began:6.1f} s] {case['label']} ...", file=sys.stderr, flush=True)
        try:
            results.append(_run(case, dev, args.tol, args.log_every))
        except Exception as exc:  # one failing case (e.g. out of memory) must not hide the others
            traceback.print_exc()
            results.append(dict(label=case["label"], error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    footer = (f"\nThroughput: paths x time steps per second, median over logged intervals after the first. "
              f"Time to tol: wall-clock seconds (compilation included) at the first logged step with relative "
              f"error <= {args.tol:g}. Peak memory: {_peak_memory(dev)[1]}. Total "
              f"{time.perf_counter() - began:.0f} s. Command: scripts/gpu_check.sh {' '.join(argv or sys.argv[1:])}")
    text = _table(results, header) + "\n" + footer + "\n"
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.md").write_text(text)
        (Path(out) / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if all("error" not in r or r["error"].startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
