"""The command line: ``deepbsde solve``, ``deepbsde compare``, ``deepbsde list``, ``deepbsde eval`` (and
``python -m deepbsde``).

Exit codes: 0 success, 2 bad input (config, problem, device, checkpoint), 3 training diverged.
"""

from __future__ import annotations

import argparse
import re
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import distributed
from .configfile import apply_overrides, build_from_config, check_sections, equation_registry, load_config
from .errors import CheckpointError, ConfigError, DeepBSDEError, DivergenceError, ProblemError
from .runlog import check_out_folder
from .solve import resolve_device, solve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepbsde", description=(
        "Solve high-dimensional semilinear parabolic PDEs by the deep BSDE method (and PINNs)."))
    parser.add_argument("-v", "--verbose", action="store_true", help="log every validation step to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("solve", help="train on a config file and print u(0, x0) against its reference")
    s.add_argument("config", nargs="?", help="a TOML config with [equation], [method], [train] (only [equation] "
                                             "is needed: every other setting has a default)")
    s.add_argument("--equation", metavar="NAME", help="solve the catalogue equation NAME with every default, "
                                                      "no config file (keywords by --set equation.KEY=VALUE)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set equation.dim=10 --set train.iterations=500")
    s.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    s.add_argument("--out", help="run folder (default runs/<equation>-<timestamp>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    s.add_argument("--init", metavar="RUN_DIR", help="warm start: begin from the trained weights of the finished run "
                                                     "(or saved solution) in RUN_DIR, of a nearby problem with the "
                                                     "same method settings")
    s.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser("compare", help="train several methods on one equation and write a comparison report")
    c.add_argument("config", help="a TOML config with [equation], [train] and one [methods.<label>] per method")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override one config value, e.g. --set train.iterations=100 --set methods.PINN.probes=8")
    c.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    c.add_argument("--out", help="report folder (default runs/compare-<equation>-<timestamp>)")
    c.add_argument("--json", action="store_true", help="print the per-method summaries as one JSON list on the last line")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    sub.add_parser("list", help="the catalogue of equations with their reference values and sources")

    e = sub.add_parser("eval", help="evaluate a finished run (a saved solution) at points: u and grad u")
    e.add_argument("run_dir", help="a run folder of `deepbsde solve` (or a folder written by Solution.save)")
    e.add_argument("--x", required=True, metavar="FILE.npy",
                   help="the points: a NumPy .npy file holding an array of shape (B, d), or (d,) for one point")
    e.add_argument("--t", type=float, default=None, help="the time (default 0; other times only for methods "
                                                         "that learn u at every time, e.g. the PINN)")
    e.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    e.add_argument("--json", action="store_true", help="print u and grad u as one JSON object on the last line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "list":
            return _list()
        if args.command == "compare":
            return _compare(args)
        if args.command == "eval":
            return _eval(args)
        return _solve(args)
    except DivergenceError as exc:
        print(f"deepbsde: error: {exc}", file=sys.stderr)
        return 3
    except (ConfigError, ProblemError, CheckpointError, DeepBSDEError) as exc:
        print(f"deepbsde: error: {exc}", file=sys.stderr)
        return 2


def _solve(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume: {str(run_dir)!r} is not a run folder (no config.json)")
        config = json.loads(saved.read_text()).get("run_config")
        if config is None:
            raise ConfigError(f"--resume: {saved} was not written by the command line (no run_config)")
        if args.config is not None:
            raise ConfigError("--resume: give either a config file or --resume RUN_DIR, not both")
        if args.out is not None and Path(args.out) != run_dir:
            raise ConfigError(f"--resume: continues in its own folder {str(run_dir)!r}; "
                              f"received --out {args.out!r} too")
        out, resume = run_dir, True
    else:
        if args.config is not None and args.equation is not None:
            raise ConfigError("solve: give either a config file or --equation NAME, not both")
        if args.equation is not None:
            config = check_sections({"equation": {"name": args.equation}}, "--equation")
        elif args.config is None:
            raise ConfigError("solve: expected a config file, --equation NAME, or --resume RUN_DIR")
        else:
            config = load_config(args.config)
        out, resume = (Path(args.out) if args.out else None), False
        if out is not None:
            check_out_folder(out)
    config = check_sections(apply_overrides(config, args.overrides))
    problem, method, train, seed = build_from_config(config)
    init = None
    if args.init is not None:
        from .saved import load_solution

        init_dir = Path(args.init)
        if not init_dir.is_dir():
            raise ConfigError(f"--init: no such folder {str(init_dir)!r}; expected a finished run folder or a saved "
                              f"solution")
        init = load_solution(init_dir)
    device = distributed.local_device(resolve_device(args.device))
    in_group = distributed.init_from_env(device)
    rank, world_size = distributed.world()
    try:
        if in_group and out is None:
            raise ConfigError("--out: a multi-process run needs an explicit run folder shared by every rank "
                              "(each rank would otherwise make its own timestamped folder)")
        solution = solve(problem, method, train=train, seed=seed, device=device, out=out, resume=resume,
                         progress=False if args.no_progress or rank != 0 else None, run_config=config, init=init)
        # every rank waits until rank 0 has written its checkpoint and summary: a rank that tears the group
        # down and exits while another still uses it can abort at exit (seen with gloo). Only on success: a
        # rank that failed alone must exit, so that torchrun stops the others.
        distributed.barrier(world_size)
    finally:
        if in_group:
            distributed.shutdown()
    if rank != 0:
        return 0
    summary = solution.summary()
    print(_human(solution))
    if args.json:
        print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """``deepbsde eval RUN_DIR --x FILE.npy [--t T] [--json]``: the saved solution's u and ∇u at the points."""
    import numpy as np

    from .saved import load_solution

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"eval: RUN_DIR: no such folder {str(run_dir)!r}")
    path = Path(args.x)
    if not path.is_file():
        raise ConfigError(f"eval: --x: no such file {str(path)!r}; expected a .npy file of points (B, d) or (d,)")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"eval: --x {str(path)!r}: not a NumPy .npy array file ({exc})") from exc
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ConfigError(f"eval: --x {str(path)!r}: expected numbers, received an array of dtype {x.dtype}")
    solution = load_solution(run_dir, device=resolve_device(args.device))
    t = 0.0 if args.t is None else args.t
    u = solution.u(x, t=t)
    grad = solution.grad_u(x, t=t)
    single = x.ndim == 1
    us = np.atleast_1d(u)
    grads = grad.reshape(-1, solution.dim)
    print(f"{solution.problem} (d = {solution.dim}) by {solution.method} from {run_dir}: u({t:g}, x) at "
          f"{us.shape[0]} point(s) (the solution's u0 = {solution.u0:.6f})")
    shown = 20
    for k in range(min(shown, us.shape[0])):
        g = grads[k]
        coords = ", ".join(f"{v:.6g}" for v in (g if g.shape[0] <= 6 else np.r_[g[:3], g[-2:]]))
        if g.shape[0] > 6:
            head, _, tail = coords.rpartition(", ")
            head, _, mid = head.rpartition(", ")
            coords = f"{head}, ..., {mid}, {tail}"
        print(f"  x[{k}]: u = {us[k]:.6f}, |grad u| = {float(np.linalg.norm(g)):.6g}, grad u = [{coords}]")
    if us.shape[0] > shown:
        print(f"  ... {us.shape[0] - shown} more point(s): use --json for all")
    if args.json:
        out = {"run_dir": str(run_dir), "equation": solution.problem, "method": solution.method,
               "dim": solution.dim, "t": t, "points": int(us.shape[0]),
               "u": float(u) if single else [float(v) for v in us],
               "grad_u": [float(v) for v in grad] if single else [[float(v) for v in row] for row in grads]}
        print(json.dumps(out))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .compare_config import apply_compare_overrides, build_compare_from_config, load_compare_config

    config = apply_compare_overrides(load_compare_config(args.config), args.overrides)
    if args.out:
        check_out_folder(args.out)
    problem, methods, trains, seed = build_compare_from_config(config)
    report = compare(problem, methods, trains=trains, seed=seed, device=args.device,
                     out=Path(args.out) if args.out else None, progress=False if args.no_progress else None,
                     run_config=config)
    print(f"{report.problem}: {len(report.entries)} methods; report in {report.out}")
    print(report.table())
    if args.json:
        print(json.dumps(report.summaries()))
    return 0


def _human(solution) -> str:
    ref = solution.reference
    lines = [f"{solution.problem} (d = {solution.dim}) by {solution.method}: u(0, x0) = {solution.u0:.6f}"]
    if solution.u0_interval is not None:
        lo, hi = solution.u0_interval
        half = (hi - lo) / 2
        rel = f" ({100 * half / abs(solution.u0):.3g} %)" if solution.u0 else ""
        lines.append(f"  95 % interval [{lo:.6f}, {hi:.6f}], ±{half:.3g}{rel}; standard error {solution.u0_stderr:.3g}; "
                     f"verdict: {solution.verdict}")
    else:
        lines.append(f"  no error bar; verdict: {solution.verdict}")
    if solution._grad_u0 is not None:
        grad = solution._grad_u0
        mean = sum(grad) / len(grad)
        text = f"  grad u(0, x0): mean over coordinates {mean:.6g}"
        if solution._grad_u0_stderr is not None:
            se = max(solution._grad_u0_stderr)
            text += f", largest standard error {se:.3g}"
        lines.append(text)
    if ref is not None:
        if ref.value is not None:
            lines.append(f"  reference {ref.value:.6f} ({ref.source}); relative error {100 * solution.relative_error:.3f} %")
        if ref.bounds is not None:
            lo, hi = ref.bounds
            inside = "inside" if solution.within_bounds else "OUTSIDE"
            lines.append(f"  bounds [{'-inf' if lo is None else f'{lo:.4f}'}, {'inf' if hi is None else f'{hi:.4f}'}]: {inside}")
    else:
        lines.append("  no reference value for these settings")
    if solution.extra.get("l2_relative_error") is not None:
        lines.append(f"  relative L2 error {solution.extra['l2_relative_error']:.3e} on "
                     f"{solution.extra.get('l2_points', '?')} reference points")
    lbfgs = f" + {solution.extra['lbfgs_iterations_run']} L-BFGS" if solution.extra.get("lbfgs_iterations_run") else ""
    stopped_by = solution.extra.get("stopped_by", "")
    stopped = (f", stopped at the tolerance {solution.tolerance:g}" if stopped_by == "tolerance"
               else ", stopped at train.max_seconds" if stopped_by == "max_seconds" else "")
    refined = solution.extra.get("refined_from")
    if refined:
        where = f", in {refined['run_dir']}" if refined.get("run_dir") else ""
        finer = getattr(solution.method_object, "num_steps", "?")
        lines.append(f"  time grid refined: {refined['num_steps']} -> {finer} steps (the "
                     f"time-step part was {100 * refined['time_step_share']:.3g} % of u0; on {refined['num_steps']} "
                     f"steps u0 = {refined['u0']:.6g} after {refined['iterations']} iterations{where})")
    lines.append(f"  {solution.iterations}{lbfgs} iterations in {solution.seconds:.1f} s on {solution.device} "
                 f"({solution.dtype}){stopped}")
    for w in solution.warnings:
        lines.append(f"  warning: {w}")
    if solution.run_dir is not None:
        lines.append(f"  run folder: {solution.run_dir}")
    return "\n".join(lines)


def _list() -> int:
    rows = []
    for name, ep in sorted(equation_registry().items()):
        cls = ep.load()
        title = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        title = re.sub(r":math:`([^`]*)`", r"\1", title).replace("``", "")  # docstring markup off
        try:
            ref = cls().reference()
        except Exception as exc:  # a catalogue entry whose reference fails must not hide the others
            ref, title = None, f"{title} (reference failed: {exc})"
        value = "-" if ref is None or ref.value is None else f"{ref.value:.6f}"
        bounds = "" if ref is None or ref.bounds is None else " bounds [" + ", ".join(
            "-" if b is None else f"{b:.4f}" for b in ref.bounds) + "]"
        source = "" if ref is None else ref.source
        rows.append((name, value, f"{source}{bounds}", title))
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"{'name':<{width}}  {'u(0, x0)':>10}  source / title")
    for name, value, source, title in rows:
        print(f"{name:<{width}}  {value:>10}  {source}")
        print(f"{'':<{width}}  {'':>10}  {title}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
