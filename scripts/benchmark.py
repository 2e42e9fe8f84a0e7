#!/usr/bin/env python
"""Benchmark suite: run catalogue configs over several seeds and tabulate u(0, x0) against the references.

Each run is one fresh subprocess ``python -m deepbsde solve CONFIG --json --set train.seed=S --out RUN``
(``OMP_NUM_THREADS=1``: one thread per run), whose peak resident memory is read from ``os.wait4``.
Results go to ``OUT/results.csv``, ``OUT/results.md`` (between markers, so that other sections such as
"Convergence" and "Hard regimes" survive a re-run) and ``OUT/plots/<config>.png``.

Examples::

    python scripts/benchmark.py --seeds 0 1 2
    python scripts/benchmark.py --only hjb_lq heat --seeds 0 --iterations-scale 0.1
    python scripts/benchmark.py --only burgers_type --iterations-scale 0.1333 --set train.batch_size=128
    python scripts/benchmark.py --from-runs            # rebuild tables and plots from OUT/runs, no training

The run folder of config NAME and seed S is ``OUT/runs/NAME/seed-S``; next to ``summary.json``,
``history.csv`` and ``config.json`` (written by deepbsde) this script writes ``benchmark.json`` (command,
overrides, iterations scale, peak memory, wall time, return code, the tail of stderr on failure).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import datetime as _dt
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
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "equations" / "configs"
EXCLUDED_BY_DEFAULT = ("compare_", "burgers_1d")

CSV_COLUMNS = ("config", "equation", "dim", "seeds", "n_ok", "u0_mean", "u0_std", "reference", "reference_source",
               "bounds_low", "bounds_high", "rel_error_mean", "rel_error_std", "within_bounds", "seconds_median",
               "iterations", "iterations_scale", "peak_memory_mb", "device", "dtype", "scheme", "network", "num_steps",
               "batch_size", "variance_explained", "warnings", "failed_seeds")


# --------------------------------------------------------------------------------------------- configs

def default_configs(config_dir: Path = CONFIG_DIR) -> list[Path]:
    """Every ``*.toml`` in ``config_dir`` except ``compare_*`` and ``burgers_1d`` (not a DeepBSDE benchmark)."""
    return sorted(p for p in config_dir.glob("*.toml") if not p.stem.startswith(EXCLUDED_BY_DEFAULT))


def resolve_configs(only: Sequence[str] | None, config_dir: Path = CONFIG_DIR) -> list[Path]:
    """Config paths from ``--only`` (stems like ``hjb_lq`` or paths); the default list without it."""
    if not only:
        return default_configs(config_dir)
    out = []
    for name in only:
        path = Path(name)
        if not path.suffix:
            path = config_dir / f"{name}.toml"
        if not path.is_file():
            known = ", ".join(p.stem for p in sorted(config_dir.glob("*.toml")))
            raise SystemExit(f"--only: no config {name!r} ({path}); expected one of: {known}")
        out.append(path)
    return out


def scaled_overrides(config: dict[str, dict[str, Any]], scale: float) -> list[str]:
    """``--set`` strings that scale ``train.iterations`` and ``train.lr_boundaries`` by ``scale``
    (boundaries kept strictly increasing and below the new iteration count; ``log_every`` reduced so that
    at least ten history rows are logged)."""
    if scale == 1.0:
        return []
    if not scale > 0:
        raise SystemExit(f"--iterations-scale: expected a positive number, received {scale}")
    train = config.get("train", {})
    iterations = max(1, round(int(train.get("iterations", 2000)) * scale))
    values = list(train.get("lr_values", [1e-2]))
    kept_values, kept_bounds = [values[0]], []
    for b, v in zip(train.get("lr_boundaries", []), values[1:]):
        nb = max(1, round(int(b) * scale))
        if nb < iterations and (not kept_bounds or nb > kept_bounds[-1]):
            kept_bounds.append(nb)
            kept_values.append(v)
    log_every = int(train.get("log_every", 100))
    log_every = max(1, min(log_every, iterations // 10 or 1))
    return [f"train.iterations={iterations}", f"train.lr_boundaries={kept_bounds}",
            f"train.lr_values={kept_values}", f"train.log_every={log_every}"]


def effective_config(path: Path, sets: Sequence[str], scale: float) -> tuple[dict[str, Any], list[str]]:
    """The config after the user's ``--set`` and the iteration scaling, and the full list of overrides."""
    from deepbsde.configfile import apply_overrides, load_config

    config = apply_overrides(load_config(path), list(sets))
    overrides = list(sets) + scaled_overrides(config, scale)
    return apply_overrides(config, overrides), overrides


# --------------------------------------------------------------------------------------------- running

def run_dir_for(out: Path, name: str, seed: int) -> Path:
    return out / "runs" / name / f"seed-{seed}"


def run_one(config: Path, seed: int, run_dir: Path, overrides: Sequence[str], *, iterations_scale: float = 1.0,
            python: str = sys.executable, device: str = "cpu", timeout: float | None = None,
            invocation: str = "") -> dict[str, Any]:
    """Solve ``config`` with ``seed`` in a fresh subprocess (one torch thread); returns ``benchmark.json``'s data.

    Peak memory is the child's ``ru_maxrss`` from ``os.wait4`` (per process, so parallel runs do not mix)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "deepbsde", "solve", str(config), "--json", "--no-progress", "--device", device,
           "--set", f"train.seed={seed}", "--out", str(run_dir)]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.perf_counter()
    with open(run_dir / "stdout.txt", "w") as so, open(run_dir / "stderr.txt", "w") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=ROOT)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    wall = time.perf_counter() - start
    meta = {"config": str(config), "name": config.stem, "seed": seed, "overrides": list(overrides),
            "iterations_scale": iterations_scale, "command": relative_command(cmd), "invocation": invocation, "returncode": proc.returncode,
            "wall_seconds": wall, "peak_memory_mb": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
            "finished": _dt.datetime.now().isoformat(timespec="seconds")}
    if proc.returncode != 0:
        meta["error"] = (run_dir / "stderr.txt").read_text()[-2000:]
    (run_dir / "benchmark.json").write_text(json.dumps(meta, indent=1))
    return meta


def already_done(run_dir: Path, overrides: Sequence[str]) -> bool:
    """Whether ``run_dir`` holds a finished run made with exactly ``overrides``."""
    meta = read_json(run_dir / "benchmark.json")
    return (read_json(run_dir / "summary.json") is not None and meta is not None
            and meta.get("returncode") == 0 and list(meta.get("overrides", [])) == list(overrides))


def run_many(jobs: Iterable[tuple[Path, int, Path, list[str]]], *, scale: float, workers: int, device: str,
             timeout: float | None = None, invocation: str = "", echo=print) -> list[dict[str, Any]]:
    """Run ``(config, seed, run_dir, overrides)`` jobs with ``workers`` processes at a time."""
    jobs = list(jobs)
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run_one, c, s, d, o, iterations_scale=scale, device=device, timeout=timeout,
                               invocation=invocation): (c, s, d) for c, s, d, o in jobs}
        for fut in concurrent.futures.as_completed(futures):
            c, s, d = futures[fut]
            meta = fut.result()
            results.append(meta)
            summary = read_json(d / "summary.json") if meta["returncode"] == 0 else None
            if summary:
                err = summary.get("relative_error")
                echo(f"  {c.stem:22s} seed {s}: u0 = {summary['u0']:.6g}"
                     + (f"  rel.err {err:.3%}" if err is not None else "")
                     + f"  ({meta['wall_seconds']:.0f} s, {meta['peak_memory_mb']:.0f} MB)", flush=True)
            else:
                echo(f"  {c.stem:22s} seed {s}: FAILED (rc {meta['returncode']}); see its stderr.txt", flush=True)
    return results


# --------------------------------------------------------------------------------------------- reading runs

def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as columns of floats (empty dict when missing)."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return {}
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(math.nan)
    return cols


def collect_runs(out: Path, names: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{config name: [run, ...]}`` from ``OUT/runs/NAME/seed-S``; each run holds its summary, config
    and benchmark metadata (summary ``None`` for a failed run)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    base = out / "runs"
    if not base.is_dir():
        return runs
    for cdir in sorted(p for p in base.iterdir() if p.is_dir()):
        if names and cdir.name not in names:
            continue
        for rdir in sorted(cdir.glob("seed-*"), key=lambda p: int(p.name.split("-")[1])):
            runs.setdefault(cdir.name, []).append({
                "dir": rdir, "seed": int(rdir.name.split("-")[1]), "summary": read_json(rdir / "summary.json"),
                "config": read_json(rdir / "config.json") or {}, "meta": read_json(rdir / "benchmark.json") or {}})
    return runs


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of results.csv from the runs of one config: every number comes from the run folders."""
    ok = [r for r in runs if r["summary"] is not None]
    failed = [r["seed"] for r in runs if r["summary"] is None]
    first = ok[0]["summary"] if ok else {}
    method = (ok[0]["config"].get("method") or {}) if ok else {}
    train = (ok[0]["config"].get("train") or {}) if ok else {}
    u0_mean, u0_std = _mean_std([r["summary"]["u0"] for r in ok])
    err_mean, err_std = _mean_std([r["summary"].get("relative_error") for r in ok])
    inside = [r["summary"].get("within_bounds") for r in ok]
    bounds = first.get("reference_bounds") or [None, None]
    ve = [r["summary"].get("variance_explained") for r in ok if r["summary"].get("variance_explained") is not None]
    warnings = sorted({w for r in ok for w in r["summary"].get("warnings", [])})
    scales = {r["meta"].get("iterations_scale", 1.0) for r in runs}
    return {
        "config": name, "equation": first.get("equation"), "dim": first.get("dim"),
        "seeds": " ".join(str(r["seed"]) for r in ok), "n_ok": len(ok),
        "u0_mean": u0_mean, "u0_std": u0_std, "reference": first.get("reference"),
        "reference_source": first.get("reference_source"), "bounds_low": bounds[0], "bounds_high": bounds[1],
        "rel_error_mean": err_mean, "rel_error_std": err_std,
        "within_bounds": (None if all(v is None for v in inside) else f"{sum(bool(v) for v in inside)}/{len(inside)}"),
        "seconds_median": statistics.median([r["summary"]["seconds"] for r in ok]) if ok else None,
        "iterations": first.get("iterations"), "iterations_scale": " ".join(f"{s:g}" for s in sorted(scales)),
        "peak_memory_mb": max((r["meta"].get("peak_memory_mb", math.nan) for r in ok), default=None),
        "device": first.get("device"), "dtype": first.get("dtype"), "scheme": method.get("scheme", "euler"),
        "network": method.get("network", "per_step"),
        "num_steps": method.get("num_steps"), "batch_size": train.get("batch_size"),
        "variance_explained": statistics.fmean(ve) if ve else None,
        "warnings": " | ".join(warnings), "failed_seeds": " ".join(map(str, failed)),
    }


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


# --------------------------------------------------------------------------------------------- report

def _fmt(v: Any, spec: str = ".6g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| config | equation | d | N | scheme | network | seeds | u0 mean ± std | reference | rel. error mean ± std "
            "| bounds (inside) | s (median) | iterations | peak MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ref = _fmt(r["reference"])
        bounds = "–"
        if r["bounds_low"] is not None or r["bounds_high"] is not None:
            bounds = f"[{_fmt(r['bounds_low'])}, {_fmt(r['bounds_high'])}] ({r['within_bounds']})"
        err = "–" if r["rel_error_mean"] is None else f"{r['rel_error_mean']:.3%} ± {r['rel_error_std']:.3%}"
        u0 = "–" if r["u0_mean"] is None else f"{r['u0_mean']:.6g} ± {r['u0_std']:.2g}"
        seeds = r["seeds"] + (f" (failed: {r['failed_seeds']})" if r["failed_seeds"] else "")
        iters = _fmt(r["iterations"]) + ("" if r["iterations_scale"] in ("1", "") else f" (scale {r['iterations_scale']})")
        lines.append(f"| {r['config']} | {r['equation']} | {_fmt(r['dim'])} | {_fmt(r['num_steps'])} | {r['scheme']} "
                     f"| {r['network']} | {seeds} | {u0} | {ref} | {err} | {bounds} | {_fmt(r['seconds_median'], '.0f')} | {iters} "
                     f"| {_fmt(r['peak_memory_mb'], '.0f')} |")
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        model = platform.processor()
    try:
        import torch
        tv = torch.__version__
    except ImportError:  # pragma: no cover
        tv = "?"
    return {"cpu": model or "unknown", "cores": str(os.cpu_count()), "torch": tv,
            "python": platform.python_version(), "date": _dt.datetime.now().isoformat(timespec="minutes"),
            "platform": platform.platform()}


def upsert_section(path: Path, key: str, text: str, *, first: bool = False) -> None:
    """Replace the block between ``<!-- begin KEY -->`` and ``<!-- end KEY -->`` in ``path`` with ``text``
    (added at the end, or at the start with ``first``, when absent); the rest of the file is kept."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.is_file() else ""
    if begin in old and end in old:
        pre, rest = old.split(begin, 1)
        post = rest.split(end, 1)[1].lstrip("\n")
        new = pre + block + ("\n" + post if post else "")
    elif first:
        new = block + ("\n" + old if old else "")
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def relative_command(cmd: Sequence[str]) -> str:
    """``cmd`` as a reader reruns it from the repository root: ``python`` for the interpreter's path and every
    path below the root relative to it (no absolute paths of the machine it ran on)."""
    out = []
    for i, part in enumerate(cmd):
        if i == 0 and Path(part).name.startswith("python"):
            out.append("python")
            continue
        p = Path(part)
        if p.is_absolute():
            try:
                part = str(p.relative_to(ROOT))
            except ValueError:
                pass
        out.append(part)
    return shlex.join(out)


def benchmark_markdown(rows: list[dict[str, Any]], command: str, runs: dict[str, list[dict[str, Any]]]) -> str:
    m = machine_info()
    commands = sorted({r["meta"].get("command", "") for rs in runs.values() for r in rs[:1]})
    invocations = sorted({r["meta"].get("invocation", "") for rs in runs.values() for r in rs} - {""})
    lines = ["# Benchmarks", "",
             "u(0, x0) by the deep BSDE method at the configs' shipped settings, several seeds; every number below is "
             "read from the run folders (`runs/<config>/seed-<S>/summary.json`). Relative error = |u0 − ref| / |ref|; "
             "for DefaultRisk and DiffRates the reference is published (multilevel Picard, E, Hutzenthaler, Jentzen & "
             "Kruse) and the comparison bounds are ours (`equations/calculators/bounds.py`). Published deep-BSDE "
             "errors at d = 100 (Han, Jentzen & E, PNAS 2018): AllenCahn 0.30 %, HJBLQ (λ = 1) 0.17 %, DefaultRisk "
             "0.46 %. `network`: `per_step` is the original's one network per time step, `shared` one network of "
             "(t, x) for all steps (see Hard regimes).", "",
             markdown_table(rows), "",
             "Runs made by:", "", *[f"    {c}" for c in invocations], "",
             f"Table rebuilt by: `{command}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, Python {m['python']}, {m['platform']}; "
             f"{m['date']}. Every run used one thread (`OMP_NUM_THREADS=1`) in its own process. **The machine was "
             "shared with other jobs while these ran: wall times are noisy and only their ratios mean anything.** "
             "Peak MB is the run process's maximum resident set size.", ""]
    notes = [r for r in rows if r["warnings"] or r["failed_seeds"]]
    for r in notes:
        if r["failed_seeds"]:
            lines.append(f"- {r['config']}: seeds {r['failed_seeds']} failed (see their stderr.txt).")
        if r["warnings"]:
            lines.append(f"- {r['config']}: warnings: {r['warnings']}")
    lines.append("")
    lines.append("Per-run commands (first seed of each config):")
    lines.append("")
    lines += [f"    {c}" for c in commands]
    plots = [f"[{r['config']}](plots/{r['config']}.png)" for r in rows]
    lines += ["", "Training curves (u0 and relative error against the iteration, one line per seed): " + ", ".join(plots)]
    return "\n".join(lines)


def plot_config(name: str, runs: list[dict[str, Any]], path: Path) -> None:
    """u0 and relative error against the iteration, one line per seed; the reference (or bounds) marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in runs if r["summary"] is not None or (r["dir"] / "history.csv").is_file()]
    summary = next((r["summary"] for r in ok if r["summary"]), {}) or {}
    ref, bounds = summary.get("reference"), summary.get("reference_bounds")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in ok:
        h = read_history(r["dir"] / "history.csv")
        if not h.get("step"):
            continue
        ax1.plot(h["step"], h["u0"], lw=1, label=f"seed {r['seed']}")
        if ref:
            ax2.semilogy(h["step"], [abs(u - ref) / abs(ref) for u in h["u0"]], lw=1, label=f"seed {r['seed']}")
    if ref is not None:
        ax1.axhline(ref, color="k", ls="--", lw=1, label=f"reference {ref:.6g}")
    if bounds:
        lo, hi = bounds
        lo_v = lo if lo is not None else ax1.get_ylim()[0]
        hi_v = hi if hi is not None else ax1.get_ylim()[1]
        ax1.axhspan(lo_v, hi_v, color="tab:green", alpha=0.12, label=f"bounds [{_fmt(lo)}, {_fmt(hi)}]")
    if ref:
        lo_y = min(ax1.get_ylim()[0], ref)
        ax1.set_ylim(lo_y, ax1.get_ylim()[1])
        ax2.axhline(0.01, color="gray", ls=":", lw=1, label="1 %")
        ax2.set_ylabel("relative error |u0 − ref| / |ref|")
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no reference value\n(bounds only, left panel)", ha="center", va="center",
                 transform=ax2.transAxes)
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("u0 estimate")
    ax2.set_xlabel("iteration")
    ax1.legend(fontsize=8)
    fig.suptitle(f"{name}: {summary.get('equation', '')} d = {summary.get('dim', '?')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(out: Path, command: str, names: Sequence[str] | None = None, echo=print) -> list[dict[str, Any]]:
    """Rebuild results.csv, the benchmark section of results.md and the plots from ``OUT/runs``."""
    runs = collect_runs(out, names)
    rows = [aggregate(n, rs) for n, rs in runs.items()]
    write_csv(rows, out / "results.csv")
    upsert_section(out / "results.md", "benchmark", benchmark_markdown(rows, command, runs), first=True)
    for n, rs in runs.items():
        plot_config(n, rs, out / "plots" / f"{n}.png")
    echo(markdown_table(rows))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", help="config stems (hjb_lq ...) or paths; default: all "
                   "equations/configs/*.toml except compare_* and burgers_1d")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override passed to every run (repeatable)")
    p.add_argument("--iterations-scale", type=float, default=1.0,
                   help="multiply train.iterations and lr_boundaries (quick runs); recorded in the output")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks", help="output folder (default benchmarks/)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each single-threaded)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which a run is killed")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep a run folder that already holds a summary.json made with the same overrides")
    p.add_argument("--from-runs", action="store_true", help="no training: rebuild tables and plots from OUT/runs")
    p.add_argument("--report-only-selected", action="store_true",
                   help="tabulate only the configs of --only (default: every run folder under OUT/runs)")
    args = p.parse_args(argv)
    command = "python scripts/benchmark.py " + shlex.join(list(sys.argv[1:] if argv is None else argv))
    out = args.out
    if not args.from_runs:
        configs = resolve_configs(args.only)
        jobs = []
        for cfg in configs:
            _, overrides = effective_config(cfg, args.sets, args.iterations_scale)
            for seed in args.seeds:
                rdir = run_dir_for(out, cfg.stem, seed)
                if args.skip_existing and already_done(rdir, overrides):
                    print(f"  {cfg.stem:22s} seed {seed}: kept existing run", flush=True)
                    continue
                jobs.append((cfg, seed, rdir, overrides))
        print(f"{len(jobs)} runs ({len(configs)} configs x {len(args.seeds)} seeds), {args.jobs} at a time", flush=True)
        run_many(jobs, scale=args.iterations_scale, workers=args.jobs, device=args.device, timeout=args.timeout,
                 invocation=command)
    names = [resolve_configs([n])[0].stem for n in args.only] if (args.only and args.report_only_selected) else None
    report(out, command, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
