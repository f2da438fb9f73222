"""Lyapunov spectra against published values and exact identities."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core.analysis.lyapunov import kaplan_yorke_dimension, lyapunov_spectrum
from explorer.core.custom import parse_system
from explorer.core.registry import get_system

GEN = lambda: torch.Generator().manual_seed(1234)  # noqa: E731


def test_lorenz63_published_exponent_and_exact_sum():
    res = lyapunov_spectrum(get_system("lorenz63"), generator=GEN())
    lam = res.exponents
    assert lam[0].item() == pytest.approx(0.9056, rel=0.02)
    assert abs(lam[1].item()) < 0.02
    # constant divergence: the sum equals -(sigma + 1 + beta)
    assert lam.sum().item() == pytest.approx(-(10 + 1 + 8 / 3), rel=0.005)
    assert res.kaplan_yorke_dimension == pytest.approx(2.062, abs=0.01)


def test_henon_published_exponent_and_exact_sum():
    res = lyapunov_spectrum(get_system("henon"), generator=GEN())
    assert res.exponents[0].item() == pytest.approx(0.4192, rel=0.02)
    assert res.exponents.sum().item() == pytest.approx(math.log(0.3), rel=0.005)


def test_logistic_r4_is_ln2():
    res = lyapunov_spectrum(get_system("logistic", r=4.0), generator=GEN())
    assert res.exponents[0].item() == pytest.approx(math.log(2.0), rel=0.01)


def test_stable_fixed_point_gives_negative_exponent():
    # Lorenz below the first bifurcation (rho < 1): the origin attracts everything
    res = lyapunov_spectrum(get_system("lorenz63", rho=0.5), generator=GEN())
    assert res.exponents[0].item() < -0.1


def test_linear_flow_exponents_are_real_parts_of_eigenvalues():
    # A = [[-0.5, 3], [-3, -0.5]] (eigenvalues -0.5 +- 3i) plus a decoupled z' = -2 z
    sys = parse_system("dx/dt = -0.5*x + 3*y; dy/dt = -3*x - 0.5*y; dz/dt = -2*z", {}, x0=[1, 0, 1])
    res = lyapunov_spectrum(sys, steps=3000, transient=200, batch=4, generator=GEN())
    torch.testing.assert_close(res.exponents, torch.tensor([-0.5, -0.5, -2.0], dtype=torch.float64),
                               atol=2e-3, rtol=0)


def test_parameter_sweep_gives_one_spectrum_per_value():
    sys = get_system("logistic", r=torch.tensor([2.5, 3.2, 4.0], dtype=torch.float64))
    res = lyapunov_spectrum(sys, steps=4000)
    assert res.exponents.shape == (3, 1)
    # r = 2.5: stable fixed point 1 - 1/r, exponent ln|2 - r| exactly
    assert res.exponents[0, 0].item() == pytest.approx(math.log(0.5), abs=1e-6)
    # r = 3.2: stable 2-cycle, negative exponent; r = 4: ln 2
    assert res.exponents[1, 0].item() < 0
    assert res.exponents[2, 0].item() == pytest.approx(math.log(2.0), rel=0.02)


def test_kaplan_yorke_formula():
    assert kaplan_yorke_dimension([0.9056, 0.0, -14.5723]) == pytest.approx(2 + 0.9056 / 14.5723)
    assert kaplan_yorke_dimension([-0.1, -1.0]) == 0.0
    assert kaplan_yorke_dimension([0.5, 0.1]) == 2.0
    assert kaplan_yorke_dimension([0.4192, -1.6232]) == pytest.approx(1 + 0.4192 / 1.6232)


def test_diverged_members_are_excluded():
    # Henon from points that escape to infinity plus one on the attractor
    x0 = torch.tensor([[0.1, 0.1], [3.0, 3.0], [-3.0, 2.0]], dtype=torch.float64)
    res = lyapunov_spectrum(get_system("henon"), x0, steps=2000, transient=100)
    assert res.diverged.tolist() == [False, True, True]
    assert res.status == "partly diverged"
    assert res.exponents[0].item() == pytest.approx(0.4192, rel=0.1)


def test_strongly_contracting_map_keeps_both_directions():
    # Zaslavsky map: |det J| = exp(-Gamma) everywhere, so the exponents sum to -Gamma exactly;
    # the contraction per step is strong enough to lose a direction between sparse QRs
    sys = get_system("zaslavsky")
    res = lyapunov_spectrum(sys, generator=GEN())
    assert torch.isfinite(res.exponents).all()
    gamma = sys.params["gamma"]
    assert res.exponents.sum().item() == pytest.approx(-gamma, rel=0.005)


def test_running_estimate_converges_to_the_result():
    """The convergence record: increasing averaging times, at most about a hundred points,
    its last row the reported spectrum, and (Lorenz-63) the sum of the running estimate near
    the exact phase-space contraction -(sigma + 1 + beta) all along."""
    import torch
    from explorer.core.analysis.lyapunov import lyapunov_spectrum
    from explorer.core.registry import get_system

    r = lyapunov_spectrum(get_system("lorenz63"), batch=16, steps=2000,
                          generator=torch.Generator().manual_seed(0))
    t, h = r.history_time, r.history
    assert h.shape[1] == 3 and 10 <= h.shape[0] <= 110
    assert bool((t[1:] > t[:-1]).all()) and abs(float(t[-1]) - r.averaging_time) < 1e-9
    assert torch.allclose(h[-1], r.exponents, rtol=1e-10, atol=1e-12)
    exact = -(10.0 + 1.0 + 8.0 / 3.0)
    assert torch.allclose(h.sum(-1), torch.full((h.shape[0],), exact, dtype=h.dtype), rtol=1e-3)


@pytest.mark.parametrize("name,params", [("lorenz63", {}), ("rossler", {}), ("henon", {}),
                                         ("lorenz63", {"rho": 15.0})])
def test_native_tangent_steps_match_the_torch_loop(name, params, monkeypatch):
    """The state and tangent vectors stepped in generated C give the torch loop's spectrum to
    rounding (same RK4 or map, same chunks), and also for a fixed-point regime (rho = 15)."""
    from explorer.core import native
    from explorer.core.analysis import lyapunov as L

    if not native.available():
        pytest.skip("no C compiler for the native backend")
    system = get_system(name, **params)
    x = torch.zeros(1, system.dim, dtype=torch.float64)
    assert L._variational_stepper(system, system.dim, x) is not None, native.refusal(
        L.variational_class(type(system), system.dim)(**system.params), "rk4")
    fast = lyapunov_spectrum(system, generator=GEN(), steps=800, transient=200)
    monkeypatch.setattr(L, "_variational_stepper", lambda *a: None)
    slow = lyapunov_spectrum(system, generator=GEN(), steps=800, transient=200)
    assert torch.allclose(fast.per_member, slow.per_member, rtol=1e-9, atol=1e-9)
