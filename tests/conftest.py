"""Shared test set-up.

One thread per process: the tests run many small tensor operations, for which OpenMP threads only add
overhead, and several tests start subprocesses that would otherwise oversubscribe the two cores of CI.
"""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def f64():
    return torch.float64
