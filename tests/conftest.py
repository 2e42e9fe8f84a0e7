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


def pytest_configure(config):
    """Every solve's error bar on 2048 fresh paths (the library's default is up to 2^20), for the whole session
    (module- and session-scoped fixtures train too): the tests train for a few dozen steps, and the
    estimator's own tests set their path counts explicitly."""
    import deepbsde.estimators

    deepbsde.estimators.MAX_PATHS = 2048
    deepbsde.estimators.MIN_PATHS = 2048
