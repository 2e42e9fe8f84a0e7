#!/usr/bin/env python
"""Convergence studies of the deep BSDE method (scripts, not tests: each takes minutes of CPU).

Subcommands::

    python scripts/convergence.py steps    # error against N = 5, 10, 20, 40, Euler and Heun schemes
    python scripts/convergence.py dims     # error against d = 10, 100, 1000
    python scripts/convergence.py batch    # error against batch size 16, 64, 256

for AllenCahn (T = 0.3, x0 = 0) and HJBLQ (λ = 1, x0 = 0). Each run is a fresh subprocess
(``python -m deepbsde solve``, one thread) through :func:`benchmark.run_one`; its run folder is
``OUT/convergence/runs/<equation>/<label>/seed-S`` with the exact ``config.toml`` used. A run whose folder
already holds a ``summary.json`` for the identical config is reused (the N = 20, d = 100, batch 64 run is
shared by the three studies). Each study writes ``OUT/convergence/<study>.csv`` and ``<study>.png`` and
replaces its own section of ``OUT/results.md``.

Why the steps study: the explicit driver term of the Euler scheme, Y_{n+1} = Y_n − f(t_n, …)Δt + Z_nᵀΔW_n,
leaves an O(Δt) bias in Y_0 (the Euler–Maruyama weak order one); the Heun (trapezoidal) corrector removes
the leading term. The fitted slope of log error against log Δt is therefore about 1 for Euler where the
bias dominates the training error, and flatter for Heun. With few iterations the training error (a floor
independent of Δt) hides the bias at small Δt: read the slopes with the floor in mind.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark as bm  # noqa: E402  (scripts/benchmark.py: the subprocess runner and report helpers)

ROOT = bm.ROOT

# Settings of the studies: the original architecture (two hidden layers of width d + 10, batch norm,
# Y0 and Z0 trainable) with a shortened learning-rate schedule so that the studies fit a shared laptop CPU.
BASE: dict[str, dict[str, dict[str, Any]]] = {
    "AllenCahn": {
        "equation": {"name": "AllenCahn", "dim": 100, "horizon": 0.3, "x0": 0.0},
        "method": {"name": "DeepBSDE", "num_steps": 20, "y0_range": [0.3, 0.6]},
        "train": {"iterations": 1000, "batch_size": 64, "valid_size": 256, "lr_values": [5e-3, 5e-4, 5e-5],
                  "lr_boundaries": [500, 800], "log_every": 100, "dtype": "float32"},
    },
    "HJBLQ": {
        "equation": {"name": "HJBLQ", "dim": 100, "horizon": 1.0, "x0": 0.0, "lam": 1.0},
        # Y0 starts near E[g(X_T)] (4.6 at d = 100: a Monte Carlo mean, known before training): from the
        # original [0, 1] it cannot reach u ~ 4.6 in 1000 Adam steps with this schedule
        "method": {"name": "DeepBSDE", "num_steps": 20, "y0_range": [4.0, 5.0]},
        "train": {"iterations": 1000, "batch_size": 64, "valid_size": 256, "lr_values": [1e-2, 1e-3, 1e-4],
                  "lr_boundaries": [500, 800], "log_every": 100, "dtype": "float32"},
    },
}




def hjb_y0_range(dim: int, horizon: float = 1.0) -> list[float]:
    """HJBLQ's Y0 start in the dims study: ±0.5 around ln E[(1 + |X_T|²)/2] = ln((1 + 2dT)/2), Jensen's upper
    bound of E g(X_T) (u(0, 0) grows like ln d: 2.16, 4.59, 6.91 at d = 10, 100, 1000)."""
    c = math.log((1 + 2 * dim * horizon) / 2)
    return [round(c - 0.5, 3), round(c + 0.5, 3)]


def allen_cahn_y0_range(dim: int, horizon: float = 0.3) -> list[float]:
    """AllenCahn's Y0 start in the dims study: [0.5, 1.5] x g at E|X_T|² = 2dT, i.e. 1 / (2 + 0.8 d T)
    (u(0, 0) = 0.3165, 0.0528, 0.0056 at d = 10, 100, 1000 falls like 1/d: a fixed range cannot serve all d)."""
    c = 1.0 / (2 + 0.4 * 2 * dim * horizon)
    return [round(0.5 * c, 6), round(1.5 * c, 6)]


# --------------------------------------------------------------------------------------------- numerics

def fit_loglog_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``; returns ``(slope, intercept)``.

    Pairs with a non-positive or non-finite value are ignored; fewer than two usable pairs give NaNs."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y)
           if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return math.nan, math.nan
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    slope = sxy / sxx
    return slope, my - slope * mx


# --------------------------------------------------------------------------------------------- running

def toml_dumps(config: dict[str, dict[str, Any]]) -> str:
    """A flat-sectioned config as TOML (values: str, bool, int, float, lists of those)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")
    out = []
    for section in ("equation", "method", "train"):
        out.append(f"[{section}]")
        out += [f"{k} = {val(v)}" for k, v in config.get(section, {}).items()]
        out.append("")
    return "\n".join(out)


def make_config(equation: str, *, num_steps: int | None = None, scheme: str = "euler", dim: int | None = None,
                batch_size: int | None = None, iterations: int | None = None) -> dict[str, dict[str, Any]]:
    cfg = {k: dict(v) for k, v in BASE[equation].items()}
    if num_steps is not None:
        cfg["method"]["num_steps"] = num_steps
    cfg["method"]["scheme"] = scheme
    if dim is not None:
        cfg["equation"]["dim"] = dim
    if batch_size is not None:
        cfg["train"]["batch_size"] = batch_size
    if iterations is not None and iterations != cfg["train"]["iterations"]:
        old = cfg["train"]["iterations"]
        cfg["train"]["iterations"] = iterations
        cfg["train"]["lr_boundaries"] = [max(1, round(b * iterations / old)) for b in cfg["train"]["lr_boundaries"]]
        cfg["train"]["log_every"] = max(1, min(cfg["train"]["log_every"], iterations // 10))
    return cfg


def run_point(out: Path, equation: str, cfg: dict[str, dict[str, Any]], seed: int, invocation: str) -> dict[str, Any]:
    """Run (or reuse) one configuration; returns its summary (``None`` entries on failure)."""
    m, e, t = cfg["method"], cfg["equation"], cfg["train"]
    label = f"d{e['dim']}-N{m['num_steps']}-{m['scheme']}-b{t['batch_size']}-it{t['iterations']}"
    base = out / "convergence" / "runs" / equation / label
    run_dir = base / f"seed-{seed}"
    text = toml_dumps(cfg)
    cfg_path = base / "config.toml"
    summary = bm.read_json(run_dir / "summary.json")
    if summary is not None and cfg_path.is_file() and cfg_path.read_text() == text:
        print(f"  {equation:10s} {label:32s} seed {seed}: reused ({summary['u0']:.6g})", flush=True)
        meta = bm.read_json(run_dir / "benchmark.json") or {}
        return {"summary": summary, "meta": meta, "label": label}
    base.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(text)
    meta = bm.run_one(cfg_path, seed, run_dir, [], invocation=invocation)
    summary = bm.read_json(run_dir / "summary.json") if meta["returncode"] == 0 else None
    if summary:
        print(f"  {equation:10s} {label:32s} seed {seed}: u0 = {summary['u0']:.6g}, rel.err "
              f"{summary['relative_error']:.3%} ({meta['wall_seconds']:.0f} s)", flush=True)
    else:
        print(f"  {equation:10s} {label:32s} seed {seed}: FAILED, see {run_dir / 'stderr.txt'}", flush=True)
    return {"summary": summary, "meta": meta, "label": label}


def run_grid(out: Path, points: list[tuple[str, dict[str, Any], dict[str, dict[str, Any]]]], seeds: Sequence[int],
             invocation: str, jobs: int) -> list[dict[str, Any]]:
    """``points``: (equation, row keys, config). Returns one row per (point, seed)."""
    import concurrent.futures

    tasks = [(eq, keys, cfg, s) for eq, keys, cfg in points for s in seeds]
    rows = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_point, out, eq, cfg, s, invocation) for eq, keys, cfg, s in tasks]
        for (eq, keys, cfg, s), fut in zip(tasks, futures):
            res = fut.result()
            summ = res["summary"] or {}
            rows.append({"equation": eq, **keys, "scheme": cfg["method"]["scheme"], "seed": s,
                         "dim": cfg["equation"]["dim"], "num_steps": cfg["method"]["num_steps"],
                         "dt": cfg["equation"]["horizon"] / cfg["method"]["num_steps"],
                         "batch_size": cfg["train"]["batch_size"], "iterations": cfg["train"]["iterations"],
                         "u0": summ.get("u0"), "reference": summ.get("reference"),
                         "rel_error": summ.get("relative_error"), "seconds": summ.get("seconds"),
                         "variance_explained": summ.get("variance_explained"),
                         "peak_memory_mb": res["meta"].get("peak_memory_mb"), "label": res["label"]})
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def mean_by(rows: list[dict[str, Any]], keys: Sequence[str], value: str = "rel_error") -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get(value) is not None:
            groups.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    return {k: statistics.fmean(v) for k, v in groups.items()}


def _plot(series: dict[str, tuple[list[float], list[float]]], xlabel: str, title: str, path: Path,
          *, logx: bool = True, slopes: dict[str, float] | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, (x, y) in series.items():
        lab = name + (f" (slope {slopes[name]:.2f})" if slopes and name in slopes and math.isfinite(slopes[name]) else "")
        ax.plot(x, y, "o-", label=lab)
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("relative error of u(0, x0) (mean over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(rows: list[dict[str, Any]], keys: Sequence[str]) -> str:
    agg = mean_by(rows, keys)
    u0 = mean_by(rows, keys, "u0")
    sec = mean_by(rows, keys, "seconds")
    ve = mean_by(rows, keys, "variance_explained")
    ref = {tuple(r[k] for k in keys): r.get("reference") for r in rows}
    head = ("| " + " | ".join(keys) + " | u0 (mean) | reference | signed error (u0 − ref)/ref | rel. error (mean) "
            "| variance explained | s (mean) |")
    lines = [head, "|" + "---|" * (len(keys) + 6)]
    for k in sorted(agg, key=lambda t: tuple(str(v) if isinstance(v, str) else f"{v:012.4f}" for v in t)):
        v = f"{ve[k]:.2f}" if k in ve else "–"
        lines.append("| " + " | ".join(str(v) for v in k) + f" | {u0[k]:.6g} | {ref[k]:.6g} | {(u0[k] - ref[k]) / ref[k]:+.3%} "
                     f"| {agg[k]:.3%} | {v} | {sec[k]:.0f} |")
    return "\n".join(lines)


def _settings_text(extra: str = "") -> str:
    a, h = BASE["AllenCahn"]["train"], BASE["HJBLQ"]["train"]
    return (f"Settings: DeepBSDE, two hidden layers of width d + 10 with batch norm, float32, one thread; AllenCahn "
            f"(T = 0.3, Y0 init in [0.3, 0.6]) {a['iterations']} Adam steps, lr {a['lr_values']} at {a['lr_boundaries']}; "
            f"HJBLQ (λ = 1, Y0 init in [4, 5], near E g(X_T)) {h['iterations']} steps, lr {h['lr_values']} at {h['lr_boundaries']}; "
            f"batch 64, N = 20 unless varied. {extra}").strip()


# --------------------------------------------------------------------------------------------- studies

def study_steps(out: Path, seeds: Sequence[int], invocation: str, jobs: int,
                steps: Sequence[int] = (5, 10, 20, 40), equations: Sequence[str] = ("AllenCahn", "HJBLQ")) -> str:
    points = [(eq, {"study": "steps"}, make_config(eq, num_steps=n, scheme=s))
              for eq in equations for s in ("euler", "heun") for n in steps]
    rows = run_grid(out, points, seeds, invocation, jobs)
    write_rows(rows, out / "convergence" / "steps.csv")
    agg = mean_by(rows, ("equation", "scheme", "num_steps"))
    series, slopes, lines = {}, {}, []
    for eq in equations:
        horizon = BASE[eq]["equation"]["horizon"]
        for s in ("euler", "heun"):
            ns = [n for n in steps if (eq, s, n) in agg]
            dts = [horizon / n for n in ns]
            errs = [agg[(eq, s, n)] for n in ns]
            slope, _ = fit_loglog_slope(dts, errs)
            slope_coarse, _ = fit_loglog_slope(dts[:3], errs[:3])
            key = f"{eq} {s}"
            series[key], slopes[key] = (dts, errs), slope
            lines.append(f"- {eq}, {s}: errors " + ", ".join(f"N={n}: {e:.3%}" for n, e in zip(ns, errs))
                         + f"; fitted slope of log error vs log Δt = **{slope:.2f}** over all N"
                         + (f" ({slope_coarse:.2f} over N = {ns[0]}–{ns[min(2, len(ns) - 1)]})" if len(ns) > 2 else ""))
        # Euler minus Heun at the same seed (same initialisation, same batches): the training error common to
        # both cancels to first order and what is left is the Euler scheme's bias
        u0 = {(r["scheme"], r["num_steps"], r["seed"]): (r["u0"], r["reference"]) for r in rows
              if r["equation"] == eq and r["u0"] is not None}
        diffs = {}
        for (s_, n, seed), (u, ref) in u0.items():
            if s_ == "euler" and ("heun", n, seed) in u0:
                diffs.setdefault(n, []).append((u - u0[("heun", n, seed)][0]) / ref)
        ns = [n for n in steps if n in diffs]
        if ns:
            d_mean = [statistics.fmean(diffs[n]) for n in ns]
            dts = [horizon / n for n in ns]
            slope, _ = fit_loglog_slope(dts, [abs(v) for v in d_mean])
            key = f"{eq} |euler − heun|"
            series[key], slopes[key] = (dts, [abs(v) for v in d_mean]), slope
            text = (f"- {eq}, paired difference (Euler − Heun)/ref at the same seed: "
                    + ", ".join(f"N={n}: {v:+.3%}" for n, v in zip(ns, d_mean))
                    + f"; fitted slope = **{slope:.2f}**")
            if eq == "AllenCahn":
                pred = [((1 - horizon / n) ** (-n) * math.exp(-horizon) - 1) for n in ns]
                text += ("; the Euler bias of the linear part f = y alone, (1 − Δt)^(−N) e^(−T) − 1, predicts "
                         + ", ".join(f"{p:+.3%}" for p in pred))
            lines.append(text)
    _plot(series, "Δt = T / N", "relative error against the time step (Euler vs Heun)",
          out / "convergence" / "steps.png", slopes=slopes)
    text = "\n".join(["## Convergence: number of time steps", "",
                      _settings_text(f"Seeds: {' '.join(map(str, seeds))}."), "",
                      _table(rows, ("equation", "scheme", "num_steps")), "", *lines, "",
                      "Plot: [convergence/steps.png](convergence/steps.png); data: convergence/steps.csv.", ""])
    return text


def study_dims(out: Path, seeds: Sequence[int], invocation: str, jobs: int, dims: Sequence[int] = (10, 100, 1000),
               big_iterations: int = 300, equations: Sequence[str] = ("HJBLQ", "AllenCahn")) -> str:
    points = []
    for eq in equations:
        for d in dims:
            its = big_iterations if d >= 1000 else None
            cfg = make_config(eq, dim=d, iterations=its)
            if eq == "HJBLQ":
                cfg["method"]["y0_range"] = hjb_y0_range(d, cfg["equation"]["horizon"])
            else:
                cfg["method"]["y0_range"] = allen_cahn_y0_range(d, cfg["equation"]["horizon"])
            points.append((eq, {"study": "dims"}, cfg))
    rows = run_grid(out, points, seeds, invocation, jobs)
    write_rows(rows, out / "convergence" / "dims.csv")
    agg = mean_by(rows, ("equation", "dim"))
    series = {eq: ([d for d in dims if (eq, d) in agg], [agg[(eq, d)] for d in dims if (eq, d) in agg]) for eq in equations}
    _plot(series, "dimension d", "relative error against the dimension", out / "convergence" / "dims.png")
    sec = mean_by(rows, ("equation", "dim"), "seconds")
    lines = [f"- {eq}: " + ", ".join(f"d={d}: {agg[(eq, d)]:.3%} ({sec[(eq, d)]:.0f} s)" for d in dims if (eq, d) in agg)
             for eq in equations]
    return "\n".join(["## Convergence: dimension", "",
                      _settings_text(f"At d ≥ 1000 only {big_iterations} iterations (learning-rate boundaries "
                                     f"scaled alike) so that it fits the time available;"
                                     f" HJBLQ's Y0 initialised within ±0.5 of ln((1 + 2d)/2) (Jensen's bound on E g(X_T)), "
                                     f"AllenCahn's in [0.5, 1.5] / (2 + 0.8 d T) (g at E|X_T|²), at every d. Seeds: {' '.join(map(str, seeds))}."),
                      "", _table(rows, ("equation", "dim", "iterations")), "", *lines, "",
                      "Plot: [convergence/dims.png](convergence/dims.png); data: convergence/dims.csv.", ""])


def study_batch(out: Path, seeds: Sequence[int], invocation: str, jobs: int, batches: Sequence[int] = (16, 64, 256),
                equations: Sequence[str] = ("HJBLQ", "AllenCahn"), scheme: str = "euler") -> str:
    points = [(eq, {"study": "batch"}, make_config(eq, batch_size=b, scheme=scheme)) for eq in equations for b in batches]
    rows = run_grid(out, points, seeds, invocation, jobs)
    write_rows(rows, out / "convergence" / "batch.csv")
    agg = mean_by(rows, ("equation", "batch_size"))
    series = {eq: ([b for b in batches if (eq, b) in agg], [agg[(eq, b)] for b in batches if (eq, b) in agg])
              for eq in equations}
    slopes = {eq: fit_loglog_slope(*series[eq])[0] for eq in equations}
    _plot(series, "batch size", "relative error against the batch size", out / "convergence" / "batch.png", slopes=slopes)
    lines = [f"- {eq}: " + ", ".join(f"batch {b}: {agg[(eq, b)]:.3%}" for b in batches if (eq, b) in agg)
             + f"; fitted slope of log error vs log batch = {slopes[eq]:.2f}" for eq in equations]
    return "\n".join(["## Convergence: batch size", "",
                      _settings_text(f"Scheme: {scheme}. Seeds: {' '.join(map(str, seeds))}."), "",
                      _table(rows, ("equation", "batch_size")), "", *lines, "",
                      "Plot: [convergence/batch.png](convergence/batch.png); data: convergence/batch.csv.", ""])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", choices=("steps", "dims", "batch"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each single-threaded)")
    p.add_argument("--equations", nargs="+", choices=tuple(BASE), default=None)
    p.add_argument("--big-iterations", type=int, default=300, help="dims: iterations at d >= 1000")
    p.add_argument("--scheme", choices=("euler", "heun"), default="euler", help="batch: the Y scheme of every run")
    p.add_argument("--iterations", type=int, default=None, help="iterations of every run (lr boundaries scaled)")
    args = p.parse_args(argv)
    if args.iterations is not None:
        for eq in BASE:
            cfg = make_config(eq, iterations=args.iterations)
            BASE[eq]["train"] = cfg["train"]
    invocation = "python scripts/convergence.py " + " ".join(sys.argv[1:] if argv is None else argv)
    kw = {} if args.equations is None else {"equations": args.equations}
    if args.study == "steps":
        text = study_steps(args.out, args.seeds, invocation, args.jobs, **kw)
    elif args.study == "dims":
        text = study_dims(args.out, args.seeds, invocation, args.jobs, big_iterations=args.big_iterations, **kw)
    else:
        text = study_batch(args.out, args.seeds, invocation, args.jobs, scheme=args.scheme, **kw)
    text += f"\nCommand: `{invocation}`\n"
    bm.upsert_section(args.out / "results.md", f"convergence-{args.study}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
