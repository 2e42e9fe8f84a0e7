"""deepbsde: deep BSDE and PINN solvers for high-dimensional semilinear parabolic PDEs.

Convention: the driver's fourth argument is z = σᵀ∇u (never ∇u). See :mod:`deepbsde.problem`.
"""

import logging

from .compare import ComparisonReport, compare
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DeepBSDEError, DivergenceError, ProblemError
from .identity import problem_identity
from .methods import FBSNN, PINN, DeepBSDE, Method
from .pinn_problem import Derivatives, ResidualProblem
from .problem import Problem, Reference, check_problem
from .regions import Box, Line
from .solution import History, HistoryRow, Solution
from .saved import load_solution as load
from .solve import solve

__version__ = "0.1.0"

# The library logs and never configures output: without this handler, a warning logged while the application
# has set up no logging would reach stderr through logging's last-resort handler. The CLI configures output.
logging.getLogger("deepbsde").addHandler(logging.NullHandler())

__all__ = [
    "Problem", "Reference", "check_problem", "problem_identity",
    "ResidualProblem", "Derivatives",
    "Method", "DeepBSDE", "PINN", "FBSNN", "Box", "Line",
    "TrainConfig", "solve", "compare", "ComparisonReport", "Solution", "History", "HistoryRow", "load",
    "DeepBSDEError", "ConfigError", "ProblemError", "DivergenceError", "CheckpointError",
]
