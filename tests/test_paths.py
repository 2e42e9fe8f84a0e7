"""Brownian increments and forward schemes: statistics with fixed seeds, strong order of Euler–Maruyama
against exact geometric Brownian motion driven by the same increments."""

import math

import numpy as np
import pytest
import torch

from deepbsde import Problem
from deepbsde.paths import brownian_increments, gbm_step, make_generator, simulate, time_grid


def test_time_grid():
    grid = time_grid(0.3, 20)
    assert grid.shape == (21,)
    assert grid[0] == 0 and abs(float(grid[-1]) - 0.3) < 1e-15
    assert torch.allclose(grid[1:] - grid[:-1], torch.full((20,), 0.015, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_brownian_increment_statistics(dtype):
    batch, steps, m, dt = 40000, 4, 3, 0.25
    dw = brownian_increments(batch, steps, m, dt, make_generator(123), dtype)
    assert dw.shape == (batch, steps, m) and dw.dtype == dtype
    flat = dw.reshape(batch, -1).double()
    # mean 0: within 4 standard errors sqrt(dt / batch) for every (step, coordinate)
    assert flat.mean(0).abs().max() < 4 * math.sqrt(dt / batch)
    # variance dt: the sample variance has standard error dt * sqrt(2 / batch)
    assert (flat.var(0) - dt).abs().max() < 4 * dt * math.sqrt(2 / batch)
    # independent across steps and coordinates: correlations within 4 / sqrt(batch)
    corr = torch.corrcoef(flat.T) - torch.eye(flat.shape[1], dtype=torch.float64)
    assert corr.abs().max() < 4.5 / math.sqrt(batch)
    # Gaussian: fourth moment 3 dt^2 (kurtosis), within a loose 6 standard errors (sd of x^4 is sqrt(96) dt^2)
    assert (flat.pow(4).mean(0) - 3 * dt * dt).abs().max() < 6 * math.sqrt(96) * dt * dt / math.sqrt(batch)


def test_same_seed_same_increments_and_different_seed_differs():
    a = brownian_increments(8, 5, 2, 0.1, make_generator(7))
    b = brownian_increments(8, 5, 2, 0.1, make_generator(7))
    c = brownian_increments(8, 5, 2, 0.1, make_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


class EulerGBM(Problem):
    """dX = a X dt + b X dW (diagonal), stepped by the default Euler–Maruyama scheme."""

    a, b = 0.1, 0.4

    def drift(self, t, x):
        return self.a * x

    def diffusion(self, t, x):
        return self.b * x

    def driver(self, t, x, y, z):
        return torch.zeros_like(y)

    def terminal(self, x):
        return x.sum(1, keepdim=True)


class ExactGBM(EulerGBM):
    def step(self, t, x, dt, dw):
        return gbm_step(x, self.a, self.b, dt, dw)


def _coarsen(dw: torch.Tensor, factor: int) -> torch.Tensor:
    batch, steps, m = dw.shape
    return dw.reshape(batch, steps // factor, factor, m).sum(2)


def test_euler_maruyama_strong_order_half_against_exact_gbm():
    """E|X_N^Euler - X_T| ~ C dt^{1/2} for GBM (Kloeden & Platen, Thm 10.2.2): fit the slope on N = 8..256."""
    euler, exact = EulerGBM(2, 1.0, 1.0), ExactGBM(2, 1.0, 1.0)
    fine_steps, batch = 256, 4000
    dw_fine = brownian_increments(batch, fine_steps, 2, 1.0 / fine_steps, make_generator(5))
    x_true = simulate(exact, dw_fine, 1.0 / fine_steps)[:, -1]  # exact whatever the step
    steps, errors = [], []
    for factor in (32, 16, 8, 4, 2, 1):
        n = fine_steps // factor
        dw = _coarsen(dw_fine, factor)
        x_exact = simulate(exact, dw, 1.0 / n)[:, -1]
        # the exact scheme is exact on any grid driven by the same Brownian path
        assert torch.allclose(x_exact, x_true, rtol=1e-12)
        x_euler = simulate(euler, dw, 1.0 / n)[:, -1]
        steps.append(n)
        errors.append(float((x_euler - x_true).abs().mean()))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 0.4 < slope < 0.65, (slope, errors)


def test_exact_gbm_mean():
    p = ExactGBM(3, 1.0, 2.0)
    dw = brownian_increments(50000, 2, 3, 0.5, make_generator(11))
    x = simulate(p, dw, 0.5)
    mean = x[:, -1].mean(0)
    expected = 2.0 * math.exp(p.a)
    sd = 2.0 * math.exp(p.a) * math.sqrt(math.exp(p.b ** 2) - 1)
    assert (mean - expected).abs().max() < 4 * sd / math.sqrt(50000)


def test_simulate_shapes_and_start():
    p = EulerGBM(4, 1.0, [1.0, 2.0, 3.0, 4.0])
    dw = brownian_increments(6, 10, 4, 0.1, make_generator(0), torch.float32)
    x = simulate(p, dw, 0.1)
    assert x.shape == (6, 11, 4) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(6, 4))
    assert not x.requires_grad
