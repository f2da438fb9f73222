"""Solver orders measured against an exact solution (slope of log error vs log step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from explorer.core.custom import parse_system
from explorer.core.simulate import simulate
from explorer.core.solvers import dopri5_attempt

# dx/dt = A x with a damped rotation: exact solution x(t) = expm(A t) x0
A = np.array([[-0.3, 2.0], [-2.0, -0.3]])
LINEAR = parse_system("dx/dt = a*x + b*y; dy/dt = c*x + d*y",
                      {"a": A[0, 0], "b": A[0, 1], "c": A[1, 0], "d": A[1, 1]}, x0=[1.0, 0.5])
X0 = np.array([1.0, 0.5])
T_END = 2.0


def exact(t):
    return expm(A * t) @ X0


def _slope(hs, errs):
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


@pytest.mark.parametrize("solver,order", [("euler", 1), ("rk4", 4)])
def test_fixed_step_order(solver, order):
    hs, errs = [], []
    for n in (20, 40, 80, 160):
        dt = T_END / n
        tr = simulate(LINEAR, steps=n, dt=dt, solver=solver)
        errs.append(np.abs(tr.states[-1].numpy() - exact(T_END)).max())
        hs.append(dt)
    assert _slope(hs, errs) == pytest.approx(order, abs=0.15)


def test_dormand_prince_fifth_order_fixed_steps():
    f = LINEAR.f
    hs, errs = [], []
    for n in (10, 20, 40, 80):
        h = T_END / n
        x = torch.tensor(X0).unsqueeze(0)
        for _ in range(n):
            x, _, _ = dopri5_attempt(f, x, torch.tensor([h], dtype=torch.float64))
        errs.append(np.abs(x[0].numpy() - exact(T_END)).max())
        hs.append(h)
    assert _slope(hs, errs) == pytest.approx(5.0, abs=0.3)


def test_dormand_prince_error_estimate_is_local_order_five():
    # the embedded estimate x5 - x4 is O(h^5) per step
    f = LINEAR.f
    x = torch.tensor(X0).unsqueeze(0)
    hs = [0.2, 0.1, 0.05, 0.025]
    errs = [float(dopri5_attempt(f, x, torch.tensor([h], dtype=torch.float64))[1].abs().max()) for h in hs]
    assert _slope(hs, errs) == pytest.approx(5.0, abs=0.3)


@pytest.mark.parametrize("rtol", [1e-5, 1e-8, 1e-11])
def test_adaptive_meets_tolerance(rtol):
    tr = simulate(LINEAR, steps=10, dt=T_END / 10, solver="dopri5", rtol=rtol, atol=rtol * 1e-2)
    err = np.abs(tr.states[-1].numpy() - exact(T_END)).max()
    assert err < 50 * rtol
    # samples land on the requested output grid
    np.testing.assert_allclose(tr.t.numpy(), np.linspace(0, T_END, 11), atol=1e-12)


def test_adaptive_steps_are_per_member():
    # a fast member (large rotation) must not change the slow member's result
    sweep = LINEAR.with_params(b=torch.tensor([2.0, 200.0]), c=torch.tensor([-2.0, -200.0]))
    tr = simulate(sweep, steps=4, dt=0.5, solver="dopri5", rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tr.x[-1, 0].numpy(), exact(T_END), rtol=1e-8, atol=1e-10)
    assert not tr.diverged.any()
