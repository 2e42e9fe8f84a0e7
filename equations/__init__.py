"""The catalogue of benchmark PDEs: one module per equation, each a final :class:`deepbsde.problem.Problem`
with its mathematics, source and exact solution or trusted reference value (``shared/references.md``).

The command-line edge finds them through the ``deepbsde.equations`` entry-point group (``pyproject.toml``).

``CATALOGUE`` holds the ten FBSDE problems (``shared/references.md``). :class:`Burgers1D` is exported and
registered too, but it is a :class:`deepbsde.ResidualProblem` (a PDE stated by its residual, with an initial
condition and a boundary): the PINN method solves it, the deep BSDE method refuses it.

:func:`reference_u` and :func:`reference_grad` give the reference u and ∇u at any points
where the catalogue has one (:mod:`equations.references`).
"""

from __future__ import annotations

from .allen_cahn import AllenCahn
from .barenblatt import BlackScholesBarenblatt
from .basket import GeometricBasketCall
from .burgers_1d import Burgers1D
from .burgers_type import BurgersType
from .default_risk import DefaultRisk
from .diff_rates import DiffRates
from .heat import HeatEquation
from .hjb_lq import HJBLQ
from .quadratic_gradient import QuadraticGradient
from .reaction_diffusion import ReactionDiffusion
from .references import has_reference_at, reference_grad, reference_u

__all__ = [
    "AllenCahn",
    "HJBLQ",
    "DefaultRisk",
    "DiffRates",
    "BlackScholesBarenblatt",
    "BurgersType",
    "ReactionDiffusion",
    "QuadraticGradient",
    "GeometricBasketCall",
    "HeatEquation",
    "Burgers1D",
    "CATALOGUE",
    "reference_u",
    "reference_grad",
    "has_reference_at",
]

CATALOGUE = (
    AllenCahn,
    HJBLQ,
    DefaultRisk,
    DiffRates,
    BlackScholesBarenblatt,
    BurgersType,
    ReactionDiffusion,
    QuadraticGradient,
    GeometricBasketCall,
    HeatEquation,
)
