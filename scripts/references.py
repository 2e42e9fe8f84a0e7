#!/usr/bin/env python
"""Print trusted reference values from our own calculators (equations.calculators).

Examples::

    python scripts/references.py all
    python scripts/references.py hjb --dim 100 --lam 50
    python scripts/references.py allen-cahn --dim 100 --refine
    python scripts/references.py default-risk --dim 10
    python scripts/references.py diff-rates
    python scripts/references.py basket --dim 100 --rho 0.5
    python scripts/references.py black-scholes --S 100 --K 100

Every number comes from equations.calculators; this script only parses arguments and formats output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

try:
    import equations.calculators as calc
except ImportError:   # run from a checkout that is not installed: put the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import equations.calculators as calc

from equations.calculators.bounds import DEFAULT_RISK_DEFAULTS, DIFF_RATES_DEFAULTS


def _timed(fun, *args, **kwargs):
    start = time.perf_counter()
    value = fun(*args, **kwargs)
    return value, time.perf_counter() - start


def cmd_hjb(args: argparse.Namespace) -> None:
    value, seconds = _timed(calc.hjb_lq_value, args.t, args.x, lam=args.lam, horizon=args.horizon, dim=args.dim)
    mean = calc.hjb_lq_uncontrolled(args.t, args.x, horizon=args.horizon, dim=args.dim)
    print(f"HJB (LQ control), d={args.dim}, lambda={args.lam:g}, T={args.horizon:g}, t={args.t:g}, "
          f"x={args.x:g}*1")
    print(f"  u(t, x)      = {value:.10f}   (Cole-Hopf + chi^2 quadrature, {seconds * 1e3:.1f} ms)")
    print(f"  E[g(X_T)]    = {mean:.10f}   (lambda -> 0 limit)")
    if args.mc:
        estimate, stderr = calc.hjb_lq_monte_carlo(args.t, args.x, lam=args.lam, horizon=args.horizon,
                                                   dim=args.dim, samples=args.mc, seed=args.seed)
        print(f"  Monte Carlo  = {estimate:.6f} +- {stderr:.2g}  ({args.mc} samples; biased for large lambda)")


def cmd_allen_cahn(args: argparse.Namespace) -> None:
    print(f"Allen-Cahn, d={args.dim}, T={args.horizon:g}, t={args.t:g}, |x|={args.radius:g}")
    if args.refine:
        rows = calc.allen_cahn_refinement(args.t, args.radius, dim=args.dim, horizon=args.horizon,
                                          levels=args.levels, points=args.points, steps=args.steps)
        print(f"  {'points':>7} {'steps':>6} {'u':>16} {'change':>11} {'ratio':>7}")
        for row in rows:
            change = "" if row.change is None else f"{row.change:11.3e}"
            ratio = "" if row.ratio is None else f"{row.ratio:7.3f}"
            print(f"  {row.points:7d} {row.steps:6d} {row.value:16.12f} {change:>11} {ratio:>7}")
        if rows[-1].change is not None:
            extrapolated = rows[-1].value + rows[-1].change / 3.0
            print(f"  Richardson extrapolation: {extrapolated:.12f}")
        return
    value, seconds = _timed(calc.allen_cahn_value, args.t, args.radius, dim=args.dim, horizon=args.horizon,
                            points=args.points, steps=args.steps)
    print(f"  u(t, x) = {value:.10f}   (radial Crank-Nicolson/Strang, {args.points} points, {args.steps} steps, "
          f"{seconds:.2f} s)")


def _namespace(args: argparse.Namespace, keys) -> SimpleNamespace:
    return SimpleNamespace(**{key: getattr(args, key) for key in keys})


def cmd_default_risk(args: argparse.Namespace) -> None:
    problem = _namespace(args, DEFAULT_RISK_DEFAULTS)
    (lower, upper), seconds = _timed(calc.default_risk_bounds, problem)
    print(f"Black-Scholes with default risk, d={args.dim}, T={args.horizon:g}, x0={args.x0:g}*1")
    print(f"  comparison bounds: [{lower:.6f}, {upper:.6f}]   ({seconds * 1e3:.1f} ms; published MLP value 57.300 "
          f"at the defaults)")


def cmd_diff_rates(args: argparse.Namespace) -> None:
    problem = _namespace(args, DIFF_RATES_DEFAULTS)
    prices, seconds = _timed(calc.diff_rates_linear_prices, problem)
    print(f"Borrowing/lending rates, d={args.dim}, T={args.horizon:g}, x0={args.x0:g}*1")
    print(f"  linear price at R^l={args.r_l:g}: {prices['r_l']:.6f}")
    print(f"  linear price at R^b={args.r_b:g}: {prices['r_b']:.6f}")
    print(f"  lower bound: {max(prices.values()):.6f}   ({seconds * 1e3:.1f} ms; published MLP value 21.299 "
          f"at the defaults)")


def cmd_basket(args: argparse.Namespace) -> None:
    value = calc.geometric_basket_call(args.t, args.x0, strike=args.strike, r=args.r, sigma=args.sigma,
                                       rho=args.rho, horizon=args.horizon, dim=args.dim)
    print(f"Geometric-average basket call, d={args.dim}, rho={args.rho:g}, K={args.strike:g}, r={args.r:g}, "
          f"sigma={args.sigma:g}, T={args.horizon:g}, x0={args.x0:g}*1")
    print(f"  u(t, x) = {value:.10f}   (closed form)")


def cmd_black_scholes(args: argparse.Namespace) -> None:
    value = calc.black_scholes_call(args.S, args.K, args.r, args.sigma, args.tau)
    print(f"Black-Scholes call, S={args.S:g}, K={args.K:g}, r={args.r:g}, sigma={args.sigma:g}, tau={args.tau:g}")
    print(f"  C = {value:.10f}")


def cmd_all(args: argparse.Namespace) -> None:
    rows = []
    value, s = _timed(calc.allen_cahn_value, 0.0, 0.0, dim=100, horizon=0.3)
    rows.append(("1 Allen-Cahn d=100 T=0.3 x=0", f"{value:.8f}", "0.052781", s))
    value, s = _timed(calc.hjb_lq_value, 0.0, 0.0, lam=1.0, horizon=1.0, dim=100)
    rows.append(("2 HJB d=100 lambda=1 T=1 x=0", f"{value:.8f}", "4.590162", s))
    value, s = _timed(calc.hjb_lq_uncontrolled, 0.0, 0.0, horizon=1.0, dim=100)
    rows.append(("2 HJB E[g(X_T)] (lambda->0)", f"{value:.8f}", "4.600226", s))
    for lam in (10.0, 50.0):
        value, s = _timed(calc.hjb_lq_value, 0.0, 0.0, lam=lam, horizon=1.0, dim=100)
        rows.append((f"2 HJB d=100 lambda={lam:g}", f"{value:.8f}", "-", s))
    (lower, upper), s = _timed(calc.default_risk_bounds)
    rows.append(("3 default risk: bounds", f"[{lower:.4f}, {upper:.4f}]", "[55.735, 59.181]", s))
    value, s = _timed(calc.diff_rates_lower_bound)
    rows.append(("4 diff. rates: lower bound", f"{value:.6f}", ">= 21.0932", s))
    value, s = _timed(calc.geometric_basket_call, 0.0, 100.0, strike=100.0, r=0.05, sigma=0.2, rho=0.0,
                      horizon=1.0, dim=100)
    rows.append(("9 geometric basket d=100 rho=0", f"{value:.8f}", "2.971854", s))
    value, s = _timed(calc.black_scholes_call, 100.0, 100.0, 0.05, 0.2, 1.0)
    rows.append(("9 Black-Scholes (d=1 check)", f"{value:.8f}", "10.450584", s))
    width = max(len(r[0]) for r in rows)
    print(f"{'reference (references.md #)':<{width}}  {'ours':>22}  {'references.md':>17}  {'time':>8}")
    for name, ours, theirs, seconds in rows:
        print(f"{name:<{width}}  {ours:>22}  {theirs:>17}  {seconds * 1e3:6.1f}ms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("hjb", help="HJB of the LQ control problem (references.md section 2)")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--horizon", type=float, default=1.0)
    p.add_argument("--t", type=float, default=0.0)
    p.add_argument("--x", type=float, default=0.0, help="every coordinate of x (default 0)")
    p.add_argument("--mc", type=int, default=0, metavar="SAMPLES", help="also a plain Monte Carlo estimate")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_hjb)

    p = sub.add_parser("allen-cahn", help="Allen-Cahn by the radial solve (references.md section 1)")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--horizon", type=float, default=0.3)
    p.add_argument("--t", type=float, default=0.0)
    p.add_argument("--radius", type=float, default=0.0, help="|x| (default 0)")
    p.add_argument("--refine", action="store_true", help="print a grid-refinement table")
    p.add_argument("--levels", type=int, default=5, help="levels of the refinement table")
    p.add_argument("--points", type=int, default=None, help="radial grid points (refinement: of the first level)")
    p.add_argument("--steps", type=int, default=None, help="time steps (refinement: of the first level)")
    p.set_defaults(func=cmd_allen_cahn)

    p = sub.add_parser("default-risk", help="default-risk comparison bounds (references.md section 3)")
    for key, value in DEFAULT_RISK_DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        p.add_argument(flag, dest=key, type=int if key == "dim" else float, default=value)
    p.set_defaults(func=cmd_default_risk)

    p = sub.add_parser("diff-rates", help="borrowing/lending lower bound (references.md section 4)")
    for key, value in DIFF_RATES_DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        p.add_argument(flag, dest=key, type=int if key == "dim" else float, default=value)
    p.set_defaults(func=cmd_diff_rates)

    p = sub.add_parser("basket", help="geometric-average basket call (references.md section 9)")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--x0", type=float, default=100.0)
    p.add_argument("--strike", type=float, default=100.0)
    p.add_argument("--r", type=float, default=0.05)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--rho", type=float, default=0.0)
    p.add_argument("--horizon", type=float, default=1.0)
    p.add_argument("--t", type=float, default=0.0)
    p.set_defaults(func=cmd_basket)

    p = sub.add_parser("black-scholes", help="Black-Scholes call")
    p.add_argument("--S", type=float, default=100.0)
    p.add_argument("--K", type=float, default=100.0)
    p.add_argument("--r", type=float, default=0.05)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--tau", type=float, default=1.0)
    p.set_defaults(func=cmd_black_scholes)

    p = sub.add_parser("all", help="every reference value at the catalogue defaults")
    p.set_defaults(func=cmd_all)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "allen-cahn":
        from equations.calculators.allen_cahn import DEFAULT_POINTS, DEFAULT_STEPS
        if args.points is None:
            args.points = 250 if args.refine else DEFAULT_POINTS
        if args.steps is None:
            args.steps = 125 if args.refine else DEFAULT_STEPS
    try:
        args.func(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
