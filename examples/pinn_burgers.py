"""Burgers' equation u_t + u u_x = (0.01/pi) u_xx on [-1, 1] x [0, 1] by a PINN.

The standard recipe of Raissi, Perdikaris & Karniadakis (J. Comput. Phys. 378, 2019, §3.1): 9 hidden layers
of 20 tanh units, 10,000 collocation points, Adam, then L-BFGS; they report a relative L2 error of 6.7e-4.
The same settings ship as ``equations/configs/burgers_1d.toml``. Run ``python examples/pinn_burgers.py``
(several minutes on a laptop CPU); the tests run ``main`` with a handful of iterations.
"""

from __future__ import annotations

from deepbsde import PINN, Solution, TrainConfig, solve
from equations import Burgers1D


def main(iterations: int = 2000, lbfgs_iterations: int = 6000, batch_size: int = 10000,
         out: str | bool | None = None, progress: bool | None = None) -> Solution:
    problem = Burgers1D()
    method = PINN(hidden=(20,) * 9, activation="tanh", sampler="sobol", condition_fraction=0.03,
                  boundary_fraction=0.02, lbfgs_iterations=lbfgs_iterations)
    train = TrainConfig(iterations=iterations, batch_size=batch_size, valid_size=1024, lr_values=(1e-3,),
                        log_every=max(1, min(250, iterations)), dtype="float32")
    solution = solve(problem, method, train=train, seed=0, out=out, progress=progress)
    print(f"{problem!r}: relative L2 error {solution.extra['l2_relative_error']:.3e} on the 256 x 100 grid "
          f"(Raissi et al. 2019: 6.7e-4) after {iterations} Adam + "
          f"{solution.extra.get('lbfgs_iterations_run', 0)} L-BFGS iterations, {solution.seconds:.0f} s")
    return solution


if __name__ == "__main__":
    main()
