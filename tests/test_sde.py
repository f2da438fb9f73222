"""Stochastic systems: solver orders against the exact GBM solution, stationary statistics
against closed forms (OU variance, Lyapunov-equation covariance), exact reproducibility
from a seed, the backend recorded, and the analyses that refuse SDEs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from explorer.core.analysis.fixed_points import fixed_points
from explorer.core.analysis.lyapunov import lyapunov_spectrum
from explorer.core.analysis.sections import orbit_diagram, poincare_section
from explorer.core.errors import ExplorerError, ParameterError
from explorer.core.native import available as native_available
from explorer.core.registry import get_system, system_class, system_names
from explorer.core.simulate import iterate, simulate
from explorer.core.solvers import SOLVERS
from explorer.core.system import SDE, Flow, Map, Param, UnsupportedKindError

F64 = torch.float64


def _slope(dts, errs) -> float:
    """Least-squares slope of log(err) against log(dt)."""
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


# ------------------------------------------------------------------ orders on GBM
@pytest.fixture(scope="module")
def gbm_errors():
    """Strong and weak errors at T = 1 of each SDE solver on GBM (mu = 1.5, sigma = 0.8), the
    numerical and exact solutions driven by the same Brownian increments (summed from the
    finest grid for the coarser steps)."""
    mu, sigma, T, N = 1.5, 0.8, 1.0, 20_000
    sys_ = get_system("gbm", mu=mu, sigma=sigma)
    p = sys_.bind(torch.zeros(1, dtype=F64))
    gen = torch.Generator().manual_seed(2024)
    n_fine = 2 ** 8
    dW_fine = torch.randn(n_fine, N, 1, generator=gen, dtype=F64) * math.sqrt(T / n_fine)
    exact = torch.exp((mu - 0.5 * sigma ** 2) * T + sigma * dW_fine.sum(0))        # X0 = 1
    out = {}
    for solver in ("euler_maruyama", "milstein"):
        step = SOLVERS[solver].step
        dts, strong, weak = [], [], []
        for level in range(3, 9):                       # dt = 2^-3 ... 2^-8
            n = 2 ** level
            dW = dW_fine.reshape(n, n_fine // n, N, 1).sum(1)                     # (n, N, 1)
            x = torch.ones(N, 1, dtype=F64)
            for k in range(n):
                x = step(sys_, p, x, T / n, dW[k])
            dts.append(T / n)
            strong.append(float((x - exact).abs().mean()))
            # E[X^h] - E[X]: the mean of the difference (same paths) has a far smaller
            # sampling error than the difference of the two means
            weak.append(abs(float((x - exact).mean())))
        out[solver] = (dts, strong, weak)
    return out


def test_euler_maruyama_strong_order_one_half(gbm_errors):
    dts, strong, _ = gbm_errors["euler_maruyama"]
    s = _slope(dts, strong)
    print(f"Euler-Maruyama strong order {s:.3f}")
    assert 0.4 <= s <= 0.65
    assert SOLVERS["euler_maruyama"].order == 0.5 and SOLVERS["euler_maruyama"].weak_order == 1.0


def test_euler_maruyama_weak_order_one(gbm_errors):
    dts, _, weak = gbm_errors["euler_maruyama"]
    s = _slope(dts, weak)
    print(f"Euler-Maruyama weak order {s:.3f}")
    assert 0.8 <= s <= 1.2
    # and against the closed form E[X_T^h] = (1 + mu h)^n of the scheme (E[X_T] = e^{mu T})
    assert weak[-1] == pytest.approx(math.exp(1.5) - (1 + 1.5 / 256) ** 256, rel=0.1)


def test_milstein_strong_order_one(gbm_errors):
    dts, strong, _ = gbm_errors["milstein"]
    s = _slope(dts, strong)
    print(f"Milstein strong order {s:.3f}")
    assert 0.9 <= s <= 1.1
    assert strong[-1] < 0.3 * gbm_errors["euler_maruyama"][1][-1]
    assert SOLVERS["milstein"].order == 1.0


# ------------------------------------------------------------------ stationary statistics
def test_ou_stationary_variance():
    theta, sigma, mu = 1.0, 1.0, 0.5
    ou = get_system("ornstein_uhlenbeck", theta=theta, sigma=sigma, mu=mu)
    tr = simulate(ou, [mu], batch=4000, steps=2000, transient=500, save_every=100, seed=7)
    assert tr.status == "ok" and tr.x.shape == (21, 4000, 1)
    x = tr.x[1:, :, 0]                          # after 5 relaxation times, 1 apart
    var = float(x.var())
    print(f"OU stationary variance {var:.4f} (exact {sigma ** 2 / (2 * theta):.4f})")
    assert var == pytest.approx(sigma ** 2 / (2 * theta), rel=0.02)
    assert float(x.mean()) == pytest.approx(mu, abs=0.02)


def test_ou_parameter_sweep_broadcasts():
    """One batched run, half the members at theta = 0.5, half at theta = 2."""
    theta = torch.cat([torch.full((2000,), 0.5), torch.full((2000,), 2.0)]).to(F64)
    ou = get_system("ornstein_uhlenbeck", theta=theta, sigma=1.0)
    tr = simulate(ou, [0.0], steps=2000, transient=1000, save_every=100, seed=3)
    assert tr.x.shape == (21, 4000, 1)
    v_slow = float(tr.x[1:, :2000].var())
    v_fast = float(tr.x[1:, 2000:].var())
    assert v_slow == pytest.approx(1.0, rel=0.04)      # sigma^2 / (2 theta)
    assert v_fast == pytest.approx(0.25, rel=0.04)


def test_rotating_ou_covariance_solves_the_lyapunov_equation():
    kx, ky, w, sx, sy = 1.0, 0.5, 1.0, 1.0, 0.3
    ou = get_system("rotating_ou", kx=kx, ky=ky, omega=w, sigma_x=sx, sigma_y=sy)
    A = np.array([[kx, -w], [w, ky]])                   # drift -A x
    C = scipy.linalg.solve_continuous_lyapunov(A, np.diag([sx ** 2, sy ** 2]))
    # Euler-Maruyama's stationary covariance is off by O(h |A|): h = 0.005 keeps that < 1%
    tr = simulate(ou, [0.0, 0.0], batch=3000, steps=2000, transient=1000, save_every=200,
                  dt=0.005, seed=11)
    x = tr.x[1:].reshape(-1, 2).numpy()
    est = np.cov(x.T)
    print(f"2D OU covariance\n{est}\nexact\n{C}")
    np.testing.assert_allclose(est, C, rtol=0, atol=0.04 * np.abs(C).max())
    # the drift is not a gradient: the stationary state carries a current, C is not diagonal
    assert abs(C[0, 1]) > 0.1 * np.abs(C).max()
    # Milstein is Euler-Maruyama for additive noise (bit for bit)
    a = simulate(ou, [0.5, 0.5], batch=8, steps=50, seed=1)
    b = simulate(ou, [0.5, 0.5], batch=8, steps=50, seed=1, solver="milstein")
    assert torch.equal(a.x, b.x)


def test_double_well_hops_and_keeps_its_density():
    """Stationary density exp(-2U/sigma^2), U = (x^2-1)^2/4 + k y^2/2, despite the rotation:
    <y^2> = sigma^2 / (2k), and x is symmetric with both wells visited."""
    k, sigma = 1.0, 0.7
    dw = get_system("rotating_double_well", k=k, sigma=sigma, omega=1.0)
    x0 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64).repeat(600, 1)      # both wells
    tr = simulate(dw, x0, steps=3000, transient=500, save_every=100, seed=5)
    x = tr.x[1:]                                                              # (30, 1200, 2)
    assert float(x[..., 1].pow(2).mean()) == pytest.approx(sigma ** 2 / (2 * k), rel=0.05)
    assert 0.45 < float((x[..., 0] > 0).double().mean()) < 0.55
    hopped = (torch.sign(x[..., 0]) != torch.sign(x[:1, :, 0])).any(0)
    assert float(hopped.double().mean()) > 0.5           # Kramers: about 0.1 hops per unit time
    zs = torch.linspace(-3, 3, 6001, dtype=F64)
    rho = torch.exp(-2 * (zs ** 2 - 1) ** 2 / 4 / sigma ** 2)
    want = float((zs ** 2 * rho).sum() / rho.sum())
    assert float(x[..., 0].pow(2).mean()) == pytest.approx(want, rel=0.05)


# ------------------------------------------------------------------ explicit RNG
def test_seeded_runs_reproduce_bit_for_bit():
    s = get_system("rotating_double_well")
    a = simulate(s, batch=16, steps=300, seed=42)
    b = simulate(s, batch=16, steps=300, seed=42)
    c = simulate(s, batch=16, steps=300, seed=43)
    g = simulate(s, batch=16, steps=300, generator=torch.Generator().manual_seed(42))
    g2 = simulate(s, batch=16, steps=300, generator=torch.Generator().manual_seed(42))
    e = simulate(s, batch=16, steps=300, seed=42, compile=False)   # eager, the same stream
    assert torch.equal(a.x, b.x) and torch.equal(a.x, e.x) and torch.equal(g.x, g2.x)
    assert not torch.equal(a.x, c.x)
    assert a.seed == 42 and g.seed is None
    # no seed: a fresh one, recorded, and the run can be repeated from it
    d = simulate(s, batch=16, steps=300)
    assert isinstance(d.seed, int) and not torch.equal(d.x, a.x)
    assert torch.equal(simulate(s, batch=16, steps=300, seed=d.seed).x, d.x)
    with pytest.raises(ParameterError):
        simulate(s, steps=10, seed=1, generator=torch.Generator())


def test_results_do_not_depend_on_chunking():
    """Transient, save_every and chunk sizes change how the steps are grouped, never the
    stream of noise: the common samples are bit-identical."""
    s = get_system("gbm")
    x0 = torch.tensor([[1.0], [2.0], [0.5]], dtype=F64)
    full = simulate(s, x0, steps=1200, seed=9)                             # (1201, 3, 1)
    every = simulate(s, x0, steps=1200, save_every=3, seed=9)
    late = simulate(s, x0, steps=900, transient=300, save_every=5, seed=9)
    assert torch.equal(every.x, full.x[::3])
    assert torch.equal(late.x, full.x[300::5])
    torch.testing.assert_close(late.t, full.t[300::5])
    # the live generator draws the same stream
    gen = iterate(s, x0, steps_per_frame=4, seed=9, dtype=F64)
    next(gen)
    frames = [next(gen)[1] for _ in range(3)]
    assert torch.equal(frames[-1], full.x[12])


def test_float32_and_dtype_follow_the_state():
    s = get_system("rotating_ou")
    tr = simulate(s, batch=5, steps=20, seed=0, dtype=torch.float32)
    assert tr.x.dtype == torch.float32 and torch.isfinite(tr.x).all()
    x = torch.zeros(3, 2, dtype=torch.float32)
    assert s.g(x).dtype == torch.float32 and s.g(x).shape == (3, 2)


# ------------------------------------------------------------------ backends
def test_backend_is_recorded():
    lor = simulate(get_system("lorenz63"), steps=200, batch=4)
    assert lor.backend in ("native", "inductor", "eager")
    if native_available():
        assert lor.backend == "native" and lor.backend_note == ""
    eager = simulate(get_system("lorenz63"), steps=200, batch=4, compile=False)
    assert eager.backend == "eager" and eager.backend_note == ""
    roll = simulate(get_system("lorenz96"), steps=50)
    assert roll.backend == "eager" and "native" in roll.backend_note
    for compile in (None, True, "native"):              # seeded SDEs run natively
        tr = simulate(get_system("ou"), steps=50, batch=4, seed=0, compile=compile)
        assert tr.backend == ("native" if native_available() else "eager"), compile
    tr = simulate(get_system("ou"), steps=50, batch=4, seed=0, compile="inductor")
    assert tr.backend == "eager" and "Inductor" in tr.backend_note
    tr = simulate(get_system("ou"), steps=50, batch=4, generator=torch.Generator().manual_seed(0))
    assert tr.backend == "eager" and "generator" in tr.backend_note
    assert simulate(get_system("ou"), steps=5, seed=0, compile=False).backend_note == ""
    assert simulate(get_system("henon"), steps=50, solver="map", dt=None).backend in (
        "native", "inductor", "eager")


# ------------------------------------------------------------------ kinds as behaviour
def test_kind_properties():
    lor, hen, ou = get_system("lorenz63"), get_system("henon"), get_system("ou")
    assert isinstance(ou, SDE) and ou.kind == "sde" and ou.stochastic and not ou.deterministic
    assert lor.continuous_time and ou.continuous_time and not hen.continuous_time
    assert hen.is_map and not lor.is_map and not ou.is_map
    assert (lor.default_solver, hen.default_solver, ou.default_solver) == ("rk4", "map",
                                                                          "euler_maruyama")
    assert ou.solver_names() == ["euler_maruyama", "milstein"]
    assert hen.solver_names() == ["map"] and lor.solver_names()[0] == "rk4"
    assert hen.time_step(0.3) == 1.0 and ou.time_step() == ou.default_dt
    assert lor.time_unit == "time unit" and hen.time_unit == "iteration"
    with pytest.raises(ParameterError):
        ou.time_step(-1.0)
    with pytest.raises(ParameterError):
        simulate(ou, steps=5, solver="rk4")
    with pytest.raises(ParameterError):
        simulate(lor, steps=5, solver="milstein")
    info = ou.info()
    assert info["kind"] == "sde" and info["stochastic"] and info["noise"] == "diagonal"
    x = torch.tensor([[0.3, 0.1]], dtype=F64)
    torch.testing.assert_close(hen.velocity(x, hen.bind(x)), hen.f(x) - x)


def test_listings_keep_sdes_apart():
    assert "ornstein_uhlenbeck" not in system_names(dysts=False)
    sdes = system_names(dysts=False, stochastic=True)
    assert {"ornstein_uhlenbeck", "rotating_ou", "rotating_double_well",
            "geometric_brownian_motion"} <= set(sdes)
    assert all(system_class(n).stochastic for n in sdes)
    assert set(system_names(dysts=False, stochastic=None)) == set(system_names(dysts=False)) | set(sdes)
    assert system_class("OU") is system_class("ornstein_uhlenbeck")


def test_deterministic_analyses_refuse_sdes_with_a_typed_error():
    ou2 = get_system("rotating_ou")
    with pytest.raises(UnsupportedKindError, match="stochastic"):
        lyapunov_spectrum(ou2, steps=20, transient=0)
    tr = simulate(ou2, steps=50, seed=0)
    with pytest.raises(UnsupportedKindError):
        poincare_section(ou2, tr, 0)
    with pytest.raises(ExplorerError):
        orbit_diagram(ou2, "omega", 0.0, 1.0, n_values=2)
    # the drift is a flow like any other: its exponents are the real parts of -A's eigenvalues
    drift = ou2.drift_system()
    assert isinstance(drift, Flow) and not drift.stochastic and drift.params == ou2.params
    res = lyapunov_spectrum(drift, steps=200, transient=20, batch=2)
    torch.testing.assert_close(res.exponents, torch.tensor([-1.0, -1.0], dtype=F64),
                               rtol=0, atol=1e-6)
    assert res.as_dict()["per"] == "time unit"


def test_fixed_points_are_those_of_the_drift():
    dw = get_system("rotating_double_well", k=2.0, omega=1.0)
    fps = fixed_points(dw, box=([-2.0, -2.0], [2.0, 2.0]), n_starts=64,
                       generator=torch.Generator().manual_seed(0))
    xs = sorted(round(float(f.x[0]), 6) for f in fps)
    assert xs == [-1.0, 0.0, 1.0]
    types = {round(float(f.x[0])): f.type for f in fps}
    # at the wells the drift's Jacobian is -(I - omega J) diag(2, k): a stable focus
    assert types[1] == types[-1] == "stable focus" and types[0] == "saddle"


# ------------------------------------------------------------------ noise layouts
class _GeneralNoise(SDE):
    """2 variables driven by 3 Wiener processes through a state-dependent matrix."""

    name = "test_general_noise"
    title = "general noise"
    variables = ("x", "y")
    parameters = (Param("s", 0.5, 0.0, 2.0, "noise scale"),)
    default_x0 = (0.1, -0.2)
    noise = "general"
    noise_dim = 3
    latex = r"dX = -X dt + G(X) dW"
    description = "test system"

    def rhs(self, x, p):
        return -x

    def diffusion(self, x, p):
        x_, y = x.unbind(-1)
        one = torch.ones_like(x_)
        return p["s"] * torch.stack([torch.stack([one, x_, 0 * one], -1),
                                     torch.stack([y, one, one], -1)], -2)      # (..., 2, 3)


def test_general_noise_euler_maruyama_step_and_milstein_refusal():
    s = _GeneralNoise()
    assert s.n_noises == 3 and s.g(torch.zeros(4, 2, dtype=F64)).shape == (4, 2, 3)
    x = torch.tensor([[0.3, 0.4]], dtype=F64)
    dW = torch.tensor([[0.1, -0.2, 0.3]], dtype=F64)
    got = SOLVERS["euler_maruyama"].step(s, s.bind(x), x, 0.01, dW)
    G = 0.5 * torch.tensor([[1.0, 0.3, 0.0], [0.4, 1.0, 1.0]], dtype=F64)
    want = x - 0.01 * x + (G @ dW[0]).unsqueeze(0)
    torch.testing.assert_close(got, want)
    tr = simulate(s, batch=3, steps=20, seed=0)
    assert tr.x.shape == (21, 3, 2) and tr.status == "ok"
    with pytest.raises(ParameterError, match="milstein"):
        simulate(s, steps=5, seed=0, solver="milstein")


def test_diffusion_derivative_autograd_matches_analytic():
    gbm = get_system("gbm", sigma=torch.tensor([0.2, 0.5, 1.0], dtype=F64))
    x = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    p = gbm.bind(x)
    torch.testing.assert_close(gbm.diffusion_derivative(x, p),
                               SDE.diffusion_derivative(gbm, x, p))
    torch.testing.assert_close(gbm.diffusion_derivative(x, p), torch.tensor([[0.2], [0.5], [1.0]],
                                                                            dtype=F64))
    assert isinstance(get_system("henon"), Map)
