"""The deep BSDE method and a PINN side by side on the heat equation u_t + ½Δu = 0, u(T, x) = |x|².

The same :class:`equations.HeatEquation` object goes to both methods; :func:`deepbsde.compare.compare` trains
each with the same seed and writes ``report.md`` (table of u(0, x0), relative error, wall time, peak memory),
``loss.png``, ``slice.png`` (u(0, x0 + s e1) and the Greek along the line: the PINN's curves, the point-mode
deep BSDE method's value and interval at s = 0, the exact |x0 + s e1|² + d T), ``slice.json`` (the plotted
numbers) and ``summary.json``. A deep BSDE method in region mode (``DeepBSDE(region=deepbsde.Box(-1, 1))``)
or ``deepbsde.FBSNN()`` is drawn as a curve too, with the relative L2 errors of u and ∇u in the table. Exact answer: u(0, 0) = d T = 100 at d = 100.
``equations/configs/compare_heat_d100.toml`` holds the settings of the shipped report.
"""

from __future__ import annotations

from deepbsde import PINN, DeepBSDE
from deepbsde.compare import ComparisonReport, compare
from equations import HeatEquation


def main(iterations: int = 2000, dim: int = 100, out: str | bool | None = "runs/compare-heat",
         progress: bool | None = None) -> ComparisonReport:
    problem = HeatEquation(dim=dim)
    methods = {"DeepBSDE": DeepBSDE(num_steps=20),
               "PINN": PINN(hidden=(128, 128, 128), sampler="paths", trace="hutchinson", probes=4)}
    log_every = max(1, min(100, iterations))
    trains = {"DeepBSDE": {"iterations": iterations, "batch_size": 64, "lr_values": [1e-2], "log_every": log_every},
              "PINN": {"iterations": iterations, "batch_size": 256, "lr_values": [1e-3], "log_every": log_every}}
    report = compare(problem, methods, trains=trains, seed=0, device="cpu", out=out, progress=progress)
    print(report.table())
    return report


if __name__ == "__main__":
    main()
