"""State-space divergence and power-spectrum distance against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explorer.core.analysis.invariants import (hellinger_distance, power_spectrum_distance,
                                               state_space_divergence)
from explorer.core.errors import ParameterError, ShapeError
from explorer.core.registry import get_system
from explorer.core.simulate import simulate


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lorenz():
    tr = simulate(get_system("lorenz63"), steps=20_000, transient=1000, dtype=torch.float64)
    return tr.x[:, 0]                                                 # (T, 3)


# ----------------------------------------------------------------------------- D_stsp
def test_dstsp_of_a_trajectory_with_itself_is_zero(lorenz):
    assert state_space_divergence(lorenz, lorenz) == pytest.approx(0.0, abs=1e-12)
    # batched (T, B, D) input pools the members
    xb = lorenz[:20_000].reshape(-1, 4, 3)
    assert state_space_divergence(xb, xb) == pytest.approx(0.0, abs=1e-12)


def test_dstsp_grows_with_a_shift(lorenz):
    std = lorenz.std(0)
    d = [state_space_divergence(lorenz, lorenz + s * std) for s in (0.05, 0.2, 0.5)]
    assert 0 < d[0] < d[1] < d[2]


def test_binned_kl_of_two_gaussians_matches_the_closed_form():
    g = _gen(0)
    n = 200_000
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    m, s = 0.5, 1.2
    y = m + s * torch.randn(n, 1, generator=g, dtype=torch.float64)
    exact = math.log(s) + (1 + m * m) / (2 * s * s) - 0.5           # KL(N(0,1) || N(m, s^2))
    assert state_space_divergence(x, y) == pytest.approx(exact, rel=0.05)


def test_binned_kl_is_laplace_smoothed_and_in_the_data_range():
    # hand-computed: 2 bins over [0 - 0.1 sd, 1 + 0.1 sd]; data half/half, model all left
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
    eps = 1e-5
    p = torch.tensor([1 + eps, 1 + eps], dtype=torch.float64) / (2 + 2 * eps)
    q = torch.tensor([2 + eps, eps], dtype=torch.float64) / (2 + 2 * eps)
    exact = float((p * (p / q).log()).sum())
    assert state_space_divergence(x, y, bins=2) == pytest.approx(exact, rel=1e-12)
    # a generated point far outside the data range is dropped (reference) or clipped
    y_out = torch.tensor([[0.0], [1.0], [50.0]], dtype=torch.float64)
    assert state_space_divergence(x, y_out, bins=2) == pytest.approx(0.0, abs=1e-12)
    assert state_space_divergence(x, y_out, bins=2, outliers="clip") > 0.01


def test_gmm_estimate_above_three_dimensions_matches_gaussian_smoothing():
    # each mixture of N(x_t, I) over x_t ~ N(mu, I) is N(mu, 2 I): KL = |mu|^2 / 4 both ways
    g = _gen(1)
    x = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(5000, 4, generator=g, dtype=torch.float64)
    same = state_space_divergence(x, x, generator=_gen(2))
    assert same == pytest.approx(0.0, abs=1e-9)
    y[:, 0] += 1.0
    d = state_space_divergence(x, y, n_centres=5000, generator=_gen(2))
    assert d == pytest.approx(0.25, abs=0.04)


def test_dstsp_of_a_diverged_model_is_inf_and_bad_inputs_raise(lorenz):
    bad = lorenz.clone()
    bad[100, 0] = float("nan")
    assert state_space_divergence(lorenz, bad) == math.inf
    with pytest.raises(ParameterError):
        state_space_divergence(bad, lorenz)
    with pytest.raises(ShapeError):
        state_space_divergence(lorenz, lorenz[:, :2])
    with pytest.raises(ParameterError):
        state_space_divergence(lorenz, lorenz, bins=1)


# ----------------------------------------------------------------------------- D_H
def test_hellinger_distance_hand_computed():
    assert hellinger_distance([0.5, 0.5], [1.0, 0.0]) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))
    assert hellinger_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert hellinger_distance([0.2, 0.8], [2, 8]) == pytest.approx(0.0, abs=1e-12)  # normalised


def _sine(T, cycles, phase=0.0):
    t = np.arange(T)
    return np.sin(2 * np.pi * cycles * t / T + phase)


def test_power_spectrum_distance_of_equal_sines_is_zero():
    x = _sine(4096, 50)[:, None]
    assert power_spectrum_distance(x, x) == pytest.approx(0.0, abs=1e-7)
    # the phase and amplitude do not matter (z-scored power spectrum)
    assert power_spectrum_distance(x, 3 * _sine(4096, 50, 1.0)[:, None]) == pytest.approx(0.0, abs=1e-6)


def test_power_spectrum_distance_of_far_apart_sines_is_one():
    x = _sine(10_000, 50)[:, None]
    y = _sine(10_000, 2000)[:, None]
    assert power_spectrum_distance(x, y) > 0.99


def test_power_spectrum_distance_hand_computed_without_smoothing():
    # integer cycles: all power in one bin; the sum of two equal sines splits it in half
    T = 1024
    x = _sine(T, 40)[:, None]
    y = (_sine(T, 40) + _sine(T, 200))[:, None]
    expected = math.sqrt(1 - math.sqrt(0.5))
    assert power_spectrum_distance(x, y, smoothing=0) == pytest.approx(expected, abs=1e-9)
    # per dimension, averaged
    xx = np.concatenate([x, x], 1)
    yy = np.concatenate([x, y], 1)
    mean, per = power_spectrum_distance(xx, yy, smoothing=0, per_dimension=True)
    assert per == pytest.approx([0.0, expected], abs=1e-9)
    assert mean == pytest.approx(expected / 2, abs=1e-9)


def test_power_spectrum_distance_edge_cases(lorenz):
    assert power_spectrum_distance(lorenz, torch.ones_like(lorenz)) == 1.0   # a fixed point
    bad = lorenz.clone()
    bad[5] = float("inf")
    assert power_spectrum_distance(lorenz, bad) == 1.0
    with pytest.raises(ParameterError):
        power_spectrum_distance(torch.ones_like(lorenz), lorenz)
    with pytest.raises(ShapeError):
        power_spectrum_distance(lorenz, lorenz[:, :1])
    # trajectories of different lengths are cut to the common length
    assert power_spectrum_distance(lorenz, lorenz[:5000]) < 0.2
