"""Trusted reference calculators for the catalogue equations (numpy/scipy in float64; torch only for the
Monte Carlo one).

Each function documents its mathematics and source; the values they give at the catalogue's default points
are listed in ``../shared/references.md`` and printed by ``scripts/references.py``.

=====================================  =========================================================
:mod:`.hjb_lq`                         HJB of the LQ control problem: Cole–Hopf + 1-D χ² quadrature
:mod:`.allen_cahn`                     Allen–Cahn: radial Crank–Nicolson / Strang solve
:mod:`.bounds`                         default-risk and borrowing/lending comparison bounds,
                                       Black–Scholes and geometric-basket closed forms
:mod:`.monte_carlo`                    Feynman–Kac Monte Carlo for any problem with a linear driver
:mod:`.noncentral_chi2`                log-space expectations over (noncentral) χ² laws
:mod:`.burgers`                        viscous Burgers (1-D): Cole–Hopf quadrature, finite differences
=====================================  =========================================================
"""

from .allen_cahn import (Refinement, allen_cahn_grid, allen_cahn_profile, allen_cahn_refinement,
                         allen_cahn_value)
from .burgers import burgers_cole_hopf, burgers_finite_difference
from .bounds import (black_scholes_call, default_risk_bounds, diff_rates_linear_prices, diff_rates_lower_bound,
                     expected_max_call_lognormal, expected_min_lognormal, geometric_basket_call)
from .hjb_lq import hjb_lq_monte_carlo, hjb_lq_uncontrolled, hjb_lq_value
from .monte_carlo import MonteCarloEstimate, feynman_kac
from .noncentral_chi2 import log_expectation, ncx2_logpdf

__all__ = [
    "hjb_lq_value", "hjb_lq_uncontrolled", "hjb_lq_monte_carlo",
    "allen_cahn_value", "allen_cahn_profile", "allen_cahn_grid", "allen_cahn_refinement", "Refinement",
    "default_risk_bounds", "diff_rates_lower_bound", "diff_rates_linear_prices", "expected_min_lognormal",
    "expected_max_call_lognormal", "black_scholes_call", "geometric_basket_call",
    "feynman_kac", "MonteCarloEstimate",
    "burgers_cole_hopf", "burgers_finite_difference",
    "log_expectation", "ncx2_logpdf",
]
