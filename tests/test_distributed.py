"""Data-parallel training under torchrun (two CPU processes, gloo).

* ``torchrun --nproc_per_node=2 -m deepbsde solve ... --out DIR --json`` exits 0, writes exactly one run
  folder (rank 0 only: one TensorBoard file, no second folder), prints the JSON line once, and its u0 agrees
  with a single-process run of the same total batch within Monte Carlo noise;
* the gradients are really averaged: both ranks, which draw different paths, hold identical parameters at
  every validation, before rank 0's parameters are broadcast; the collective helpers (gradient average,
  broadcast of mixed-dtype buffers, gather) give the expected numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from deepbsde import DeepBSDE, TrainConfig, solve
from equations import HeatEquation

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

# Heat equation d = 10, N = 10, total batch 64, 400 steps, float64: u(0, 0) = d = 10 exactly.
DIM, ITERATIONS, SIGMA_U0 = 10, 400, 0.135
SETTINGS = ["--set", f"equation.dim={DIM}", "--set", "method.num_steps=10", "--set", "method.y0_range=[0.0, 20.0]",
            "--set", f"train.iterations={ITERATIONS}", "--set", "train.batch_size=64", "--set", "train.valid_size=256",
            "--set", "train.log_every=100", "--set", 'train.dtype="float64"', "--set", "train.lr_values=[0.05, 0.005]",
            "--set", "train.lr_boundaries=[300]", "--set", "train.checkpoint_every=200", "--set", "train.tolerance=0", "--set", "train.eval_paths=2048"]


def test_torchrun_cli_two_processes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    config = ROOT / "equations" / "configs" / "heat.toml"
    proc = subprocess.run([*TORCHRUN, "-m", "deepbsde", "solve", str(config), "--out", "run", "--device", "cpu",
                           "--json", "--no-progress", *SETTINGS], cwd=work, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    json_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1, proc.stdout  # printed by rank 0 only
    assert proc.stdout.count("HeatEquation (d = 10) by DeepBSDE") == 1
    summary = json.loads(json_lines[0])
    assert summary["world_size"] == 2 and summary["iterations"] == ITERATIONS

    # resuming that run with another number of processes (here one) is refused, with the reason (exit 2)
    single = subprocess.run([sys.executable, "-m", "deepbsde", "solve", "--resume", "run", "--no-progress",
                             "--set", f"train.iterations={ITERATIONS + 100}"], cwd=work, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 2, single.stdout + single.stderr
    assert "same number of processes" in single.stderr and "Traceback" not in single.stderr

    # one run folder, written by rank 0 alone
    assert [p.name for p in work.iterdir()] == ["run"]
    run = work / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "history.csv", "model.pt",
                                                     "solution.json", "summary.json", "tensorboard"]
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-00000200.pt", "ckpt-00000400.pt"]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    state = torch.load(run / "checkpoints" / "ckpt-00000400.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and not torch.equal(state["rng"][0], state["rng"][1])
    assert json.loads((run / "summary.json").read_text())["u0"] == summary["u0"]

    # Against one process with the same total batch: two independent training runs of one estimator. The
    # spread of u0 over seeds 0..11 of the single-process run, measured once, is SIGMA_U0 = 0.135 (mean
    # 10.04); the difference of two independent runs has standard deviation sqrt(2) * 0.135 = 0.19, and the
    # tolerance is 4 of those. Both must also lie within 5 SIGMA_U0 of the exact u(0, 0) = 10.
    single = solve(HeatEquation(dim=DIM), DeepBSDE(num_steps=10, y0_range=(0.0, 20.0)), seed=0, out=False,
                   progress=False, device="cpu",
                   train=TrainConfig(iterations=ITERATIONS, batch_size=64, valid_size=256, log_every=100, tolerance=None,
                                     dtype="float64", lr_values=(0.05, 0.005), lr_boundaries=(300,)))
    assert abs(summary["u0"] - single.u0) < 4 * 2 ** 0.5 * SIGMA_U0
    assert abs(summary["u0"] - DIM) < 5 * SIGMA_U0 and abs(single.u0 - DIM) < 5 * SIGMA_U0
    assert summary["u0"] != single.u0  # the ranks really drew their own paths


WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    from deepbsde import DeepBSDE, TrainConfig, distributed, solve
    from deepbsde.solve import _derive_seeds
    from equations import HeatEquation

    dist.init_process_group("gloo")
    rank, world_size = distributed.world()
    out = {"train_seed": _derive_seeds(0, rank)[2]}

    lin = torch.nn.Linear(3, 2)
    for p in lin.parameters():
        p.grad = torch.full_like(p, float(rank + 1))
    distributed.allreduce_gradients(lin, world_size)
    out["grads"] = [p.grad.clone() for p in lin.parameters()]

    bn = torch.nn.BatchNorm1d(3)
    bn.num_batches_tracked.fill_(2 ** 40 + 1 + rank)  # not exact in float32: must not travel as one
    bn.running_mean.fill_(float(rank))
    distributed.broadcast_module(bn, world_size)
    out["bn"] = (int(bn.num_batches_tracked), bn.running_mean.clone())
    out["gather"] = distributed.gather_tensors(torch.tensor([rank, 10 + rank]), world_size)

    seen = []  # every rank's parameters at each validation, before rank 0's are broadcast
    real = distributed.broadcast_module

    def spy(model, ws):
        seen.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
        real(model, ws)

    distributed.broadcast_module = spy
    sol = solve(HeatEquation(dim=5), DeepBSDE(num_steps=5, y0_range=(0.0, 10.0)), seed=0, out=False, progress=False,
                device="cpu", train=TrainConfig(iterations=60, batch_size=32, log_every=20, dtype="float64", tolerance=None))
    out["seen"], out["u0"] = seen, sol.u0
    torch.save(out, f"{sys.argv[1]}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
''')


def test_gradients_are_averaged_across_ranks(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run([*TORCHRUN, str(script), str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["train_seed"] != r1["train_seed"]  # different paths on each rank
    for r in (r0, r1):
        assert all(torch.equal(g, torch.full_like(g, 1.5)) for g in r["grads"])  # (1 + 2) / 2
        assert r["bn"][0] == 2 ** 40 + 1 and torch.equal(r["bn"][1], torch.zeros(3))
        assert [t.tolist() for t in r["gather"]] == [[0, 10], [1, 11]]
    # validations at steps 0, 20, 40, 60: identical parameters on both ranks, and training moved them
    assert len(r0["seen"]) == len(r1["seen"]) == 4
    for a, b in zip(r0["seen"], r1["seen"]):
        assert torch.equal(a, b)
    assert not torch.equal(r0["seen"][0], r0["seen"][-1])
    assert r0["u0"] == r1["u0"]
