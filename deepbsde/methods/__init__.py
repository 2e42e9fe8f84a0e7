"""Solver methods: each turns (problem, sampled data, network) into a loss."""

from .base import Estimate, Method
from .deep_bsde import DeepBSDE
from .fbsnn import FBSNN
from .pinn import PINN

__all__ = ["Method", "Estimate", "DeepBSDE", "PINN", "FBSNN"]
