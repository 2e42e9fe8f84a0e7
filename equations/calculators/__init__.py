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

import importlib

# Each name is imported from its module on first use (PEP 562): a run that needs one calculator (the main job
# needs only Allen-Cahn's) does not pay for importing the others and their scipy modules.
_HOME = {
    "Refinement": "allen_cahn", "allen_cahn_grid": "allen_cahn", "allen_cahn_profile": "allen_cahn",
    "allen_cahn_refinement": "allen_cahn", "allen_cahn_value": "allen_cahn",
    "burgers_cole_hopf": "burgers", "burgers_finite_difference": "burgers",
    "black_scholes_call": "bounds", "default_risk_bounds": "bounds", "diff_rates_linear_prices": "bounds",
    "diff_rates_lower_bound": "bounds", "expected_max_call_lognormal": "bounds", "expected_min_lognormal": "bounds",
    "geometric_basket_call": "bounds",
    "hjb_lq_monte_carlo": "hjb_lq", "hjb_lq_uncontrolled": "hjb_lq", "hjb_lq_value": "hjb_lq",
    "MonteCarloEstimate": "monte_carlo", "feynman_kac": "monte_carlo",
    "log_expectation": "noncentral_chi2", "ncx2_logpdf": "noncentral_chi2",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_HOME))


__all__ = [
    "hjb_lq_value", "hjb_lq_uncontrolled", "hjb_lq_monte_carlo",
    "allen_cahn_value", "allen_cahn_profile", "allen_cahn_grid", "allen_cahn_refinement", "Refinement",
    "default_risk_bounds", "diff_rates_lower_bound", "diff_rates_linear_prices", "expected_min_lognormal",
    "expected_max_call_lognormal", "black_scholes_call", "geometric_basket_call",
    "feynman_kac", "MonteCarloEstimate",
    "burgers_cole_hopf", "burgers_finite_difference",
    "log_expectation", "ncx2_logpdf",
]
