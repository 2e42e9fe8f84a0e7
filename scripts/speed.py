"""Speed against the hardware floor, measured in one run: the main job's time to accuracy, and the time per
training step of each network type against the matrix products it cannot avoid.

What it measures (every time a median of interleaved repeats in this one process or its children, so that the
ratios are meaningful on a shared machine):

1. **Matmul probes.** The fp32 rate of ``mm``/``bmm`` at the shapes of the original code's step (19 networks,
   batch 64, 1216 x 110 @ 110 x 110) and of a large square product (the machine's peak).
2. **The original's workload.** The floating-point work of the original code's 4000 training steps
   (Allen-Cahn d = 100: 19 batch-normalised networks 100 -> 110 -> 110 -> 100, batch 64, forward and backward),
   counted from the matrix products recorded during one step of deepbsde's batched copy of that architecture
   (``equations/configs/allen_cahn_original.toml``), and its floor time at the probed rate.
3. **The main job** (``python -m deepbsde solve equations/configs/allen_cahn.toml``), ``--seeds`` seeds, each in
   a fresh process as a user runs it: wall time from the shell to the answer, the answer's relative error,
   and the training time after which the trained u0 stays within 0.3 % of the reference. With ``--baseline
   REV`` the same runs of an earlier revision of the repository (``git archive``), interleaved with these.
4. **Per-phase profile of the main job** (in process, seed 0): import, set-up (pilot, network, optimiser),
   training steps, validation and logging, the stopping rule's checks, the final error bar, the reference,
   and what is left (writing the run folder) -- for this revision and the baseline.
5. **Time per training step against its own floor**, for the main job's step (shared network, batch 256),
   the original architecture (per-step networks, batch 64), the PINN's Hutchinson residual step (Allen-Cahn
   d = 100) and HJBLQ d = 1000 with the original's width d + 10: the step's phases (sampling, forward,
   backward, Adam), and its floor, the time that the step's own matrix products take alone (recorded during
   one step and replayed with the same shapes and layouts).

Usage::

    python scripts/speed.py                           # everything, 3 seeds, writes benchmarks/speed.md
    python scripts/speed.py --baseline cd9b2d3        # and the same for an earlier revision
    python scripts/speed.py --quick                   # a smoke run of the script (1 seed, few repeats)
    python scripts/speed.py --original ../DeepBSDE --original-python ../tfvenv/bin/python
                                                      # and the original TensorFlow code, side by side

``--original DIR``: a checkout of the original code (github.com/frankhan91/DeepBSDE, outside this repository;
it is run, never copied) and ``--original-python`` an interpreter with TensorFlow. Its Allen-Cahn d = 100 run
(``configs/allencahn_d100.json``: 4000 steps, batch 64) is timed from the shell in the same loop as the main
job's seeds (one original run before each seed's run), and its final Y0 is compared with the same reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAIN_CONFIG = "equations/configs/allen_cahn.toml"
ORIGINAL_CONFIG = "equations/configs/allen_cahn_original.toml"
ORIGINAL_STEPS = 4000
WITHIN = 3e-3  # the accuracy target for the main job

# -- the per-phase profile runs in a child process (one per revision): it wraps the training loop's phases ----
PROFILE_CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
import torch
import deepbsde
import importlib
solve_mod = importlib.import_module("deepbsde.solve")
from deepbsde.configfile import load_config, build_from_config
t_import = time.perf_counter() - t_start
problem, method, train, seed = build_from_config(load_config(sys.argv[1]))
phases = {}
stack = []
def wrap(owner, name, label):
    inner = getattr(owner, name)
    def timed(*a, **k):
        t = time.perf_counter()
        stack.append(0.0)
        try:
            return inner(*a, **k)
        finally:
            total = time.perf_counter() - t
            nested = stack.pop()
            phases[label] = phases.get(label, 0.0) + total - nested
            if stack:
                stack[-1] += total
    setattr(owner, name, timed)
Run = solve_mod._Run
wrap(Run, "__init__", "set-up (pilot, network, optimiser, validation batch)")
wrap(Run, "_step", "training steps")
wrap(Run, "_validate", "validation and logging")
wrap(Run, "_record", "validation and logging")
wrap(Run, "_checkpoint", "validation and logging")
wrap(Run, "_should_stop", "stopping-rule checks")
wrap(Run, "finish", "final error bar and summary")
wrap(type(problem), "reference", "reference value")
t = time.perf_counter()
sol = deepbsde.solve(problem, method, train=train, seed=seed, out=sys.argv[2], progress=False)
total = time.perf_counter() - t
phases["other (run folder, glue)"] = total - sum(phases.values())
phases = {"import torch and deepbsde": t_import, **phases}
print(json.dumps({"phases": phases, "iterations": sol.iterations, "u0": sol.u0,
                  "eval_paths": sol.extra.get("eval_paths")}))
"""


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench(fn, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return median(out)


# -- 1. matmul probes --------------------------------------------------------------------------------------
def probe_rate(shape_a: tuple[int, ...], shape_b: tuple[int, ...], repeats: int) -> float:
    """fp32 GFLOP/s of ``a @ b`` (``bmm`` for 3-d shapes)."""
    a, b = torch.randn(*shape_a), torch.randn(*shape_b)
    flops = 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.dim() == 3 else 1)
    return flops / bench(lambda: torch.matmul(a, b), repeats) / 1e9


# -- 5. the floor of a step: its own matrix products, replayed --------------------------------------------
_MATMULS = {"mm", "addmm", "bmm", "baddbmm"}


class RecordMatmuls(TorchDispatchMode):
    """Records the shapes and strides of every matrix product the step runs (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[tuple[int, ...], tuple[int, ...]]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _MATMULS:
            specs = [(tuple(a.shape), tuple(a.stride())) for a in args if isinstance(a, torch.Tensor)]
            self.calls.append((name, specs))
        return func(*args, **(kwargs or {}))


def _flops(call) -> int:
    """``2 M K N`` (times the batch of a ``bmm``) of one recorded product."""
    name, specs = call
    a, b = specs[-2][0], specs[-1][0]
    return 2 * a[-2] * a[-1] * b[-1] * (a[0] if len(a) == 3 else 1)


def matmul_floor(calls, repeats: int) -> float:
    """Median seconds of the recorded products run back to back on fresh tensors of the same layouts."""
    ops = []
    for name, specs in calls:
        tensors = [torch.empty_strided(shape, stride).normal_() for shape, stride in specs]
        ops.append((getattr(torch.ops.aten, name).default, tensors))

    def run() -> None:
        for op, tensors in ops:
            op(*tensors)

    return bench(run, repeats)


def step_profile(label: str, method, problem, batch: int, repeats: int, dtype=torch.float32) -> dict:
    """Phases of one training step (medians), its matmul FLOPs and its floor."""
    from deepbsde.paths import make_generator
    from deepbsde.solve import _adam

    model = method.build(problem, make_generator(0)).to(dtype)
    model.train()
    opt = _adam(model, 1e-3, torch.device("cpu"))
    gen = make_generator(1)
    times: dict[str, list[float]] = {"sampling": [], "forward": [], "backward": [], "Adam": []}

    def one(record: bool = True) -> None:
        t0 = time.perf_counter()
        data = method.sample(problem, batch, gen, dtype)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = method.loss(model, problem, data)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if record:
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k].append(v)

    for _ in range(3):
        one(False)
    for _ in range(repeats):
        one()
    data = method.sample(problem, batch, gen, dtype)
    recorder = RecordMatmuls()
    with recorder:
        opt.zero_grad(set_to_none=True)
        method.loss(model, problem, data).backward()
    floor = matmul_floor(recorder.calls, repeats)
    phases = {k: median(v) for k, v in times.items()}
    total = sum(phases.values())
    return {"label": label, "phases": phases, "total": total, "flops": sum(map(_flops, recorder.calls)),
            "floor": floor, "matmuls": len(recorder.calls), "ratio": total / floor,
            "parameters": sum(p.numel() for p in model.parameters())}


# -- 3. the main job, as a user runs it ---------------------------------------------------------------------
def run_main_job(tree: Path, seed: int, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "deepbsde", "solve", str(tree / MAIN_CONFIG), "--set", f"train.seed={seed}",
           "--json", "--no-progress", "--out", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = summary["reference"]
    rows = list(csv.DictReader(open(out / "history.csv")))
    within_at = None
    for row in rows:  # the first logged time after which every logged u0 stays within 0.3 %
        ok = abs(float(row["u0"]) - ref) <= WITHIN * abs(ref)
        if ok and within_at is None:
            within_at = float(row["seconds"])
        elif not ok:
            within_at = None
    return {"wall": wall, "u0": summary["u0"], "reference": ref, "error": summary["relative_error"], "iterations":
            summary["iterations"], "train_seconds": summary["seconds"], "within_at": within_at,
            "eval_paths": summary.get("eval_paths"), "verdict": summary.get("verdict"),
            "half_width": (summary["u0_interval"][1] - summary["u0"]) / abs(summary["u0"])
            if summary.get("u0_interval") else None}


def profile_main_job(tree: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run([sys.executable, "-c", PROFILE_CHILD, str(tree / MAIN_CONFIG), str(out)], cwd=tree,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"profile of {tree} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export_revision(rev: str, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def run_original(directory: Path, python: str, out: Path) -> dict:
    """The original code's Allen-Cahn d = 100 run, timed from the shell; its last logged Y0 and elapsed time."""
    import re

    # it writes its logs under its own ./logs (not a flag there)
    cmd = [python, "main.py", "--config_path=configs/allencahn_d100.json", f"--exp_name=speed-{out.name}"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    logged = re.findall(r"step:\s*(\d+),.*?Y0:\s*([-+0-9.eE]+),\s*elapsed time:\s*(\d+)", proc.stderr + proc.stdout)
    if not logged:
        raise RuntimeError(f"the original's log has no 'step ... Y0 ... elapsed time' line:\n{proc.stderr[-2000:]}")
    step, y0, elapsed = logged[-1]
    return {"wall": wall, "u0": float(y0), "steps": int(step), "train_seconds": float(elapsed)}


def original_version(directory: Path, python: str, commit: str | None = None) -> str:
    """The checkout's commit (``commit`` where given, e.g. for a ``git archive``; else git's, where it is a git
    checkout) and the TensorFlow that runs it."""
    tf = subprocess.run([python, "-c", "import tensorflow as tf; print(tf.__version__)"], capture_output=True, text=True)
    if commit:
        commit = f"commit {commit} (as given by --original-commit)"
    else:
        rev = subprocess.run(["git", "-C", str(directory), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True)
        commit = f"commit {rev.stdout.strip()}" if rev.returncode == 0 else "commit not recorded (not a git checkout)"
    return f"{commit}, TensorFlow {tf.stdout.strip().splitlines()[-1] if tf.returncode == 0 else 'unknown'} (CPU)"


# -- the report -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15, help="repeats of each timed step or probe")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads in this process (the main-job runs use the default, as a user's do)")
    parser.add_argument("--baseline", help="a git revision to run side by side (e.g. the commit before a change)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 repeats, no d = 1000 row")
    parser.add_argument("--original", type=Path,
                        help="a checkout of the original TensorFlow code (frankhan91/DeepBSDE) to time side by side")
    parser.add_argument("--original-python", default=sys.executable,
                        help="the interpreter (with TensorFlow) that runs --original")
    parser.add_argument("--original-commit", default=None,
                        help="the original's commit, for a checkout that is not a git repository (a git archive)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speed.md")
    args = parser.parse_args()
    if args.original is not None and not (args.original / "main.py").is_file():
        parser.error(f"--original: expected a checkout of frankhan91/DeepBSDE holding main.py, received {args.original}")
    if args.quick:
        args.seeds, args.repeats = 1, 3
    torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    from deepbsde import PINN, DeepBSDE
    from deepbsde.configfile import build_from_config, load_config
    from equations import HJBLQ, AllenCahn

    lines: list[str] = []
    say = lines.append

    # 1-2. probes and the original's workload
    rate_orig = probe_rate((19, 64, 110), (19, 110, 110), args.repeats)
    rate_mm = probe_rate((1216, 110), (110, 110), args.repeats)
    rate_peak = probe_rate((2048, 2048), (2048, 2048), max(3, args.repeats // 3))
    problem_o, method_o, train_o, _ = build_from_config(load_config(ROOT / ORIGINAL_CONFIG))
    original = step_profile("original architecture (per-step networks, batch 64), Allen-Cahn d = 100",
                            method_o, problem_o, train_o.batch_size, args.repeats)
    workload = original["flops"] * ORIGINAL_STEPS
    floor_seconds = original["floor"] * ORIGINAL_STEPS
    flop_floor = workload / (rate_mm * 1e9)

    # 3. the main job, interleaved with the baseline's
    trees = {"this revision": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.baseline:
            trees[f"baseline {args.baseline}"] = export_revision(args.baseline, tmp / "baseline")
        runs: dict[str, list[dict]] = {k: [] for k in trees}
        originals: list[dict] = []
        for seed in range(args.seeds):
            if args.original is not None:
                originals.append(run_original(args.original.resolve(), args.original_python, tmp / f"orig-{seed}"))
            for name, tree in trees.items():
                runs[name].append(run_main_job(tree, seed, tmp / f"run-{len(runs[name])}-{seed}-{name[:4]}"))
        profiles = {name: profile_main_job(tree, tmp / f"profile-{name[:4]}") for name, tree in trees.items()}

    # 5. steps against their floors
    steps = [original]
    problem = AllenCahn(dim=100, horizon=0.3)
    steps.append(step_profile("main job's step (shared network, batch 256, Heun), Allen-Cahn d = 100",
                              DeepBSDE(), problem, 256, args.repeats))
    steps.append(step_profile("PINN, Hutchinson residual (defaults), Allen-Cahn d = 100", PINN(), problem,
                              256, args.repeats))
    if not args.quick:
        steps.append(step_profile("HJBLQ d = 1000, original architecture (width d + 10, batch 64)",
                                  DeepBSDE(network="per_step", z_scale="1/d", y0_range=(0.0, 1.0),
                                           z0_range=(-0.1, 0.1), clip=50.0, scheme="euler"),
                                  HJBLQ(dim=1000), 64, max(3, args.repeats // 3)))
        steps.append(step_profile("HJBLQ d = 1000, default shared network (width 512, batch 256)",
                                  DeepBSDE(), HJBLQ(dim=1000), 256, max(3, args.repeats // 3)))
    load_after = os.getloadavg()[0]

    say("# Speed against the hardware floor")
    say("")
    say(f"Measured {started} on {platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch "
        f"{torch.__version__}; load average {load_before:.1f} before and {load_after:.1f} after. This process used "
        f"{args.threads} torch thread(s); the main-job runs are fresh processes with torch's default. Medians of "
        f"interleaved repeats in this one run: compare ratios, not absolute seconds, across machines.")
    say("")
    say("Command: `python scripts/speed.py" + (f" --baseline {args.baseline}" if args.baseline else "")
        + (" --original CHECKOUT --original-python PYTHON" if args.original is not None else "")
        + (" --quick" if args.quick else "") + "`")
    say("")
    say("## The floor")
    say("")
    say(f"- fp32 matmul probe at the original's step shapes: 1216 x 110 @ 110 x 110 **{rate_mm:.0f} GFLOP/s**; "
        f"19 x (64 x 110 @ 110 x 110) bmm {rate_orig:.0f} GFLOP/s; 2048^2 peak {rate_peak:.0f} GFLOP/s.")
    say(f"- The original's workload (Allen-Cahn d = 100, 19 networks 100-110-110-100, batch 64, {ORIGINAL_STEPS} "
        f"steps): {original['flops'] / 1e6:.0f} MFLOP a step (forward and backward, counted), "
        f"**{workload / 1e12:.2f} TFLOP** in all.")
    say(f"- Its floor: **{flop_floor:.1f} s** at the probed {rate_mm:.0f} GFLOP/s "
        f"({floor_seconds:.1f} s replaying the step's own {original['matmuls']} products at their layouts).")
    say("")
    say("## The main job (`python -m deepbsde solve " + MAIN_CONFIG + "`)")
    say("")
    say("Each seed a fresh process, timed from the shell (interpreter start, imports, training, error bar, "
        "reference, run folder). 'trained u0 within 0.3 %': training seconds after which every logged trained "
        "u0 stays within 0.3 % of the reference (the answer itself is the re-estimate after training).")
    say("")
    say("| revision | seed | wall s | / floor | u0 | rel. error | 95 % half-width | verdict | iterations | "
        "error-bar paths | trained u0 within 0.3 % at (s) |")
    say("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        for seed, r in enumerate(rs):
            hw = f"{100 * r['half_width']:.3f} %" if r["half_width"] is not None else "-"
            within = f"{r['within_at']:.1f}" if r["within_at"] is not None else "never"
            say(f"| {name} | {seed} | {r['wall']:.1f} | {r['wall'] / flop_floor:.2f} | {r['u0']:.6f} | "
                f"{100 * r['error']:.3f} % | {hw} | {r['verdict']} | {r['iterations']} | {r['eval_paths']} | {within} |")
    for name, rs in runs.items():
        walls = [r["wall"] for r in rs]
        worst = max(r["error"] for r in rs)
        say(f"\n**{name}**: median wall {median(walls):.1f} s = **{median(walls) / flop_floor:.2f}x the floor** "
            f"({flop_floor:.1f} s); largest error over {len(rs)} seed(s) {100 * worst:.3f} % "
            f"({'all within' if worst <= WITHIN else 'NOT all within'} 0.3 %).")
    if originals:
        ref = runs["this revision"][0]["reference"]
        mine = median([r["wall"] for r in runs["this revision"]])
        walls = [o["wall"] for o in originals]
        say("")
        say(f"**The original TensorFlow code** (`python main.py --config_path=configs/allencahn_d100.json` in a "
            f"checkout of github.com/frankhan91/DeepBSDE, "
            f"{original_version(args.original, args.original_python, args.original_commit)}; "
            f"run before each seed's run above, same machine and load):")
        say("")
        say("| run | wall s | / floor | its training s (logged) | steps | Y0 | rel. error |")
        say("|---|---|---|---|---|---|---|")
        for i, o in enumerate(originals):
            err = f"{100 * abs(o['u0'] - ref) / abs(ref):.3f} %" if ref else "-"
            say(f"| {i} | {o['wall']:.1f} | {o['wall'] / flop_floor:.2f} | {o['train_seconds']:.0f} | {o['steps']} | "
                f"{o['u0']:.6f} | {err} |")
        say(f"\nMedian wall {median(walls):.1f} s = {median(walls) / flop_floor:.2f}x the floor; the main job is "
            f"**{median(walls) / mine:.1f}x faster** (median over median, measured in this one run).")
    if args.baseline:
        base = [v for k, v in runs.items() if k != "this revision"][0]
        say(f"\nSpeed-up over the baseline (median wall): "
            f"**{median([r['wall'] for r in base]) / median([r['wall'] for r in runs['this revision']]):.2f}x**.")
    say("")
    say("## Where the main job's time goes (seed 0, in process, seconds)")
    say("")
    names = list(profiles)
    say("| phase | " + " | ".join(names) + " |")
    say("|---|" + "---|" * len(names))
    keys = list(dict.fromkeys(k for p in profiles.values() for k in p["phases"]))
    for k in keys:
        say(f"| {k} | " + " | ".join(f"{profiles[n]['phases'].get(k, 0.0):.2f}" for n in names) + " |")
    say("| **total** | " + " | ".join(f"**{sum(profiles[n]['phases'].values()):.2f}**" for n in names) + " |")
    say("| iterations / error-bar paths | " + " | ".join(f"{profiles[n]['iterations']} / {profiles[n]['eval_paths']}"
                                                       for n in names) + " |")
    say("")
    say("## Time per training step against its own floor")
    say("")
    say("The floor is the time the step's own matrix products take alone, replayed back to back at their shapes "
        "and layouts (recorded in one forward and backward pass); the ratio is the step's median time over it.")
    say("")
    say("| step | parameters | MFLOP (counted) | sampling ms | forward ms | backward ms | Adam ms | step ms | "
        "floor ms | step / floor |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for s in steps:
        p = s["phases"]
        say(f"| {s['label']} | {s['parameters']:,} | {s['flops'] / 1e6:.0f} | {1e3 * p['sampling']:.2f} | "
            f"{1e3 * p['forward']:.2f} | {1e3 * p['backward']:.2f} | {1e3 * p['Adam']:.2f} | {1e3 * s['total']:.2f} | "
            f"{1e3 * s['floor']:.2f} | **{s['ratio']:.2f}** |")
    say("")
    say("GPU: none was lent to this task (the device tool's `status`: not drawn); `scripts/gpu_check.sh` is the "
        "prepared check for when one is.")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
