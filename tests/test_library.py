"""The built-in library: which systems exist, and that their defaults sit on bounded attractors."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core.registry import get_system, system_class, system_names
from explorer.core.simulate import simulate

BUILTINS = system_names("builtin", dysts=False)          # deterministic: flows and maps
FLOWS = [n for n in BUILTINS if system_class(n).continuous_time]
MAPS = [n for n in BUILTINS if system_class(n).is_map]
SDES = system_names("builtin", dysts=False, stochastic=True)

REQUIRED_FLOWS = (
    "lorenz63", "rossler", "chen", "lu", "thomas", "halvorsen", "aizawa", "dadras",
    "sprott_a", "sprott_b", "sprott_c", "chua", "duffing", "van_der_pol", "lorenz96",
    "double_pendulum", "henon_heiles", "rabinovich_fabrikant", "genesio_tesi", "rucklidge",
    "shimizu_morioka", "arneodo", "burke_shaw", "lorenz84", "hindmarsh_rose",
)
REQUIRED_SDES = ("ornstein_uhlenbeck", "rotating_ou", "rotating_double_well",
                 "geometric_brownian_motion")
REQUIRED_MAPS = (
    "henon", "logistic", "ikeda", "tinkerbell", "lozi", "standard_map", "clifford", "de_jong",
    "gingerbreadman", "duffing_map", "bogdanov", "zaslavsky", "gauss_map", "kaplan_yorke",
    "sine_map", "circle_map",
)

# a few perturbed copies of the default initial condition are simulated together
BATCH = 3
MAX_FLOW_STEPS = 3000
MAP_STEPS = 5000


def _start(sys) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x0 = sys.initial_state(torch.float64)
    return x0 + 1e-6 * (1.0 + x0.abs()) * torch.randn(BATCH, sys.dim, generator=gen,
                                                       dtype=torch.float64)


def _rk4_step(f, x, dt):
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def test_library_size_and_required_names():
    assert len(BUILTINS) >= 32
    assert len(set(BUILTINS)) == len(BUILTINS)
    for name in REQUIRED_FLOWS:
        assert name in FLOWS, name
    for name in REQUIRED_MAPS:
        assert name in MAPS, name
    sprott = [n for n in FLOWS if n.startswith("sprott_")]
    assert len(sprott) >= 4
    for name in REQUIRED_SDES:
        assert name in SDES, name
    assert not set(SDES) & set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS + SDES)
def test_metadata_is_complete(name):
    cls = system_class(name)
    sys = cls()
    assert cls.name == name and name == name.lower()
    assert cls.citation and cls.title
    assert 20 <= len(cls.description) <= 600
    assert cls.bound > 0
    if sys.continuous_time:
        assert sys.default_dt < 1.0
        assert cls.period is None or cls.period > sys.default_dt
    for p in cls.parameters:
        assert p.low < p.high, p
    ref = cls.lyapunov_reference
    if ref is not None:
        assert all(math.isfinite(v) for v in ref.exponents)
        if sys.continuous_time:  # every autonomous chaotic flow has a zero exponent
            assert 0.0 in ref.exponents
        if ref.params:
            for k in ref.params:
                cls.param_spec(k)


@pytest.mark.parametrize("name", FLOWS)
def test_flow_defaults_stay_on_a_bounded_attractor(name):
    sys = get_system(name)
    dt = sys.default_dt
    steps = MAX_FLOW_STEPS
    if sys.period:
        steps = min(steps, math.ceil(20.0 * sys.period / dt))
    x = _start(sys)
    f = sys.f
    with torch.no_grad():
        for i in range(steps):
            x = _rk4_step(f, x, dt)
            if i % 500 == 499:
                assert torch.isfinite(x).all(), f"{name} diverged after {i + 1} steps"
    assert torch.isfinite(x).all(), name
    assert x.abs().max().item() < sys.bound, name
    # the orbit did not collapse onto a fixed point either: it still moves
    assert sys.f(x).abs().max().item() > 1e-6, f"{name} settled onto an equilibrium"


@pytest.mark.parametrize("name", MAPS)
def test_map_defaults_stay_bounded(name):
    sys = get_system(name)
    x = _start(sys)
    f = sys.f
    with torch.no_grad():
        for i in range(MAP_STEPS):
            x = f(x)
            if i % 500 == 499:
                assert torch.isfinite(x).all(), f"{name} diverged after {i + 1} steps"
                assert x.abs().max().item() < sys.bound, name


@pytest.mark.parametrize("name", SDES)
def test_sde_defaults_stay_bounded(name):
    """A short seeded Euler-Maruyama run from the defaults stays finite and inside the bound."""
    sys = get_system(name)
    tr = simulate(sys, batch=BATCH, steps=2000, save_every=100, seed=1)
    assert tr.status == "ok" and torch.isfinite(tr.x).all(), name
    assert tr.x.abs().max().item() < sys.bound


def test_lorenz96_dimension_is_structural():
    sys = get_system("lorenz96", n=12)
    assert sys.dim == 12 == len(sys.default_x0) == len(sys.variables)
    assert sys.variables[0] == "x0" and sys.variables[-1] == "x11"
    x = sys.initial_state().expand(3, -1) + 0.1
    assert sys.f(x).shape == (3, 12)
    J = sys.jac(x)
    ref = torch.func.vmap(torch.func.jacrev(sys.f))(x)
    torch.testing.assert_close(J, ref)
    assert get_system("lorenz96").dim == 5
    with pytest.raises(Exception):
        get_system("lorenz96", n=3)
    with pytest.raises(Exception):
        get_system("lorenz96", n=5.5)


def test_forced_oscillators_carry_their_phase():
    for name in ("duffing", "van_der_pol"):
        sys = get_system(name)
        assert sys.variables == ("x", "v", "theta")
        x = sys.initial_state().expand(4, -1)
        dtheta = sys.f(x)[..., 2]
        torch.testing.assert_close(dtheta, torch.full_like(dtheta, sys.params["omega"]))
        assert (sys.jac(x)[..., 2, :] == 0).all()


def test_hamiltonian_systems_conserve_energy():
    hh = get_system("henon_heiles")
    x = hh.initial_state().unsqueeze(0)

    def energy_hh(s):
        q1, q2, p1, p2 = s.unbind(-1)
        return 0.5 * (p1 ** 2 + p2 ** 2) + 0.5 * (q1 ** 2 + q2 ** 2) + q1 ** 2 * q2 - q2 ** 3 / 3.0

    e0 = energy_hh(x)
    assert abs(e0.item() - 0.125) < 1e-3
    for _ in range(1000):
        x = _rk4_step(hh.f, x, hh.default_dt)
    torch.testing.assert_close(energy_hh(x), e0, rtol=0, atol=1e-7)

    dp = get_system("double_pendulum")
    m1, m2, l1, l2, g = (dp.params[k] for k in ("m1", "m2", "l1", "l2", "g"))

    def energy_dp(s):
        t1, t2, w1, w2 = s.unbind(-1)
        kin = (0.5 * (m1 + m2) * l1 ** 2 * w1 ** 2 + 0.5 * m2 * l2 ** 2 * w2 ** 2
               + m2 * l1 * l2 * w1 * w2 * torch.cos(t1 - t2))
        pot = -(m1 + m2) * g * l1 * torch.cos(t1) - m2 * g * l2 * torch.cos(t2)
        return kin + pot

    x = dp.initial_state().unsqueeze(0)
    e0 = energy_dp(x)
    for _ in range(1000):
        x = _rk4_step(dp.f, x, dp.default_dt)
    torch.testing.assert_close(energy_dp(x), e0, rtol=1e-5, atol=1e-5)


def _gram_schmidt(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormalise the columns of a batch of small matrices; also return the column norms
    (the diagonal of R). Cheaper than ``torch.linalg.qr`` for 1x1 and 2x2 blocks."""
    cols, norms = [], []
    for j in range(A.shape[-1]):
        v = A[..., :, j]
        for q in cols:
            v = v - (q * v).sum(-1, keepdim=True) * q
        n = v.norm(dim=-1)
        cols.append(v / n.unsqueeze(-1))
        norms.append(n)
    return torch.stack(cols, -1), torch.stack(norms, -1)


@pytest.mark.parametrize("name", ["logistic", "kaplan_yorke", "cat_map", "lozi", "henon", "ikeda"])
def test_map_reference_exponents_roughly(name):
    """Cheap QR (Benettin) estimate with the analytic Jacobian against the published values."""
    sys = get_system(name)
    ref = sys.lyapunov_reference
    assert ref is not None
    x = _start(sys)
    with torch.no_grad():
        for _ in range(200):
            x = sys.f(x)
        Q = torch.eye(sys.dim, dtype=torch.float64).expand(BATCH, -1, -1)
        total = torch.zeros(BATCH, sys.dim, dtype=torch.float64)
        n = 2000
        for _ in range(n):
            Q, r = _gram_schmidt(sys.jac(x) @ Q)
            total = total + torch.log(r)
            x = sys.f(x)
    est = (total / n).mean(0)
    torch.testing.assert_close(est, torch.tensor(ref.exponents, dtype=torch.float64),
                               rtol=0, atol=0.03)
