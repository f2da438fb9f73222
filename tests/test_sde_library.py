"""The extended SDE library and custom SDEs typed as text, against known answers.

Conventions checked: Itô, ``dX = f dt + g dW``, generator diffusion matrix ``D = g g^T / 2``.
Known answers: the OU stationary covariance (Lyapunov equation), the tilted ring's mean
velocity (``F`` for a flat ring, Stratonovich's closed form over a washboard), the Maier–Stein
potential at ``beta = 1``, the FENE dumbbell's equilibrium moments (quadrature of its
Boltzmann / Itô-stationary density) and the (non-)gradient structure claimed in its docs, the
SGD noise covariance computed independently in numpy, and the Lorenz identity
``<x y> = beta <z>``.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch

from explorer.core.custom import parse_sde, validate_sde
from explorer.core.errors import EquationError, ParameterError
from explorer.core.registry import get_system, system_names
from explorer.core.sdes import SGLD_X, SGLD_Y
from explorer.core.simulate import simulate
from explorer.core.system import SDE

F64 = torch.float64
NEW = ("linear_ou", "maier_stein", "tilted_ring", "stochastic_lorenz", "fene_dumbbell", "sgld")


# ------------------------------------------------------------------ every new system
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", NEW)
def test_new_systems_simulate_from_their_defaults(name, dtype):
    assert name in system_names("builtin", dysts=False, stochastic=True)
    sys = get_system(name)
    assert isinstance(sys, SDE)
    tr = simulate(sys, batch=6, steps=400, save_every=20, seed=0, dtype=dtype)
    assert tr.status == "ok" and tr.x.dtype == dtype and tr.x.shape == (21, 6, sys.dim)
    assert torch.isfinite(tr.x).all()
    # a parameter sweep: one batched run, every member at its own value of the first parameter
    p = next(q for q in type(sys).parameters if not q.integer)
    values = torch.linspace(p.default - 0.05 * (p.default - p.low), p.default, 4, dtype=F64)
    tr = simulate(sys.with_params(**{p.name: values}), steps=100, save_every=50, seed=1,
                  dtype=dtype)
    assert tr.status == "ok" and tr.x.shape == (3, 4, sys.dim) and torch.isfinite(tr.x).all()
    # the drift as a Flow (for deterministic analyses) is the same field
    x = sys.initial_state(dtype).expand(3, -1)
    drift = sys.drift_system()
    assert torch.equal(drift.f(x), sys.f(x)) and torch.equal(drift.jac(x), sys.jac(x))
    # noise layout
    g = sys.g(x)
    want = (3, sys.dim) if sys.noise == "diagonal" else (3, sys.dim, sys.n_noises)
    assert g.shape == want and g.dtype == dtype


# ------------------------------------------------------------------ linear OU
def test_linear_ou_covariance_is_identity_and_solves_the_lyapunov_equation():
    """Defaults (k = 1, D_x = D_y = 1): covariance I for any rotation. Half the batch with
    D_y = 0.2: covariance from A C + C A^T = 2 D, A = k (I - gamma J)."""
    n = 1500
    d_y = torch.cat([torch.full((n,), 1.0), torch.full((n,), 0.2)]).to(F64)
    ou = get_system("linear_ou", D_y=d_y)
    # Euler-Maruyama's stationary covariance is off by O(dt |A|): dt = 0.005 keeps it < 1%
    tr = simulate(ou, [0.0, 0.0], steps=2000, transient=1000, save_every=200, dt=0.005, seed=3)
    x = tr.x[1:].numpy()                                              # (10, 2n, 2)
    iso = np.cov(x[:, :n].reshape(-1, 2).T)
    print(f"linear OU covariance (defaults)\n{iso}")
    np.testing.assert_allclose(iso, np.eye(2), rtol=0, atol=0.04)
    A = np.array([[1.0, 1.0], [-1.0, 1.0]])                           # drift -A x, gamma = 1
    C = scipy.linalg.solve_continuous_lyapunov(A, 2 * np.diag([1.0, 0.2]))
    est = np.cov(x[:, n:].reshape(-1, 2).T)
    np.testing.assert_allclose(est, C, rtol=0, atol=0.04 * np.abs(C).max())
    # the drift is -A x with the documented A, and its Jacobian is -A
    z = torch.tensor([[0.3, -0.7]], dtype=F64)
    ou1 = get_system("linear_ou", k=2.0, rotation=0.5)
    A2 = 2.0 * (np.eye(2) - 0.5 * np.array([[0.0, -1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(ou1.f(z).numpy()[0], -A2 @ z.numpy()[0])
    np.testing.assert_allclose(ou1.jac(z).numpy()[0], -A2)
    # g = sqrt(2 D): D = g g^T / 2
    torch.testing.assert_close(get_system("linear_ou", D_x=0.5, D_y=2.0).g(z),
                               torch.tensor([[1.0, 2.0]], dtype=F64))


# ------------------------------------------------------------------ tilted ring
def _washboard_velocity(F: float, V0: float, T: float, n: int = 800) -> float:
    """Stratonovich's mean velocity on a ring of length 2 pi, V = -V0 cos(theta): rectangle
    rule over the periodic x, trapezoid rule over z in [0, 2 pi]."""
    L = 2 * math.pi
    x = np.arange(n) * L / n
    z = np.linspace(0.0, L, n + 1)
    wz = np.full(n + 1, L / n)
    wz[[0, -1]] *= 0.5
    def V(u):
        return -V0 * np.cos(u)
    expo = (V(x[:, None] + z[None, :]) - V(x[:, None]) - F * z[None, :]) / T
    integral = (np.exp(expo) @ wz).sum() * (L / n)
    return L * T * (1 - math.exp(-F * L / T)) / integral


def test_tilted_ring_mean_velocity():
    """V0 = 0: <dtheta/dt> = F exactly; V0 > 0: Stratonovich's closed form. One run, the two
    cases as halves of the batch; velocity = mean slope of the unwrapped angle."""
    n = 1000
    F, T = 1.5, 0.5
    V0 = torch.cat([torch.zeros(n), torch.ones(n)]).to(F64)
    ring = get_system("tilted_ring", F=F, V0=V0, T=T)
    x0 = torch.rand(2 * n, 1, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 * math.pi
    tr = simulate(ring, x0, steps=4000, transient=400, save_every=4000, dt=0.005, seed=4)
    assert tr.status == "ok"
    span = float(tr.t[-1] - tr.t[0])
    v = ((tr.x[-1] - tr.x[0])[:, 0] / span).numpy()                     # (2n,)
    for half, want in ((v[:n], F), (v[n:], _washboard_velocity(F, 1.0, T))):
        mean, err = half.mean(), half.std(ddof=1) / math.sqrt(n)
        print(f"tilted ring velocity {mean:.4f} +- {err:.4f} (exact {want:.4f})")
        assert abs(mean - want) < 4 * err + 0.01 * abs(want)
    # the washboard slows the particle down, and the angle is not wrapped
    assert _washboard_velocity(F, 1.0, T) < F - 0.2
    assert float(tr.x[-1].abs().max()) > 2 * math.pi


def test_washboard_formula_limits():
    """The quadrature reproduces its own limits: V0 = 0 gives F, and a strong tilt F >> V0
    approaches the deterministic running velocity sqrt(F^2 - V0^2) at low temperature."""
    assert _washboard_velocity(0.7, 0.0, 0.3) == pytest.approx(0.7, rel=1e-4)
    assert _washboard_velocity(2.0, 1.0, 0.05, n=2000) == pytest.approx(math.sqrt(3.0), rel=5e-3)


# ------------------------------------------------------------------ Maier–Stein
def test_maier_stein_is_a_gradient_system_only_at_beta_one():
    def U(z):
        x, y = z.unbind(-1)
        return -x ** 2 / 2 + x ** 4 / 4 + y ** 2 / 2 + x ** 2 * y ** 2 / 2

    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 1.5
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(U(zg).sum(), zg)
    ms = get_system("maier_stein", beta=1.0)
    torch.testing.assert_close(ms.f(z), -grad)
    J = ms.jac(z)
    torch.testing.assert_close(J, J.transpose(-1, -2))                 # Hessian: symmetric
    J10 = get_system("maier_stein").jac(z)                             # beta = 10: curl != 0
    assert (J10[:, 0, 1] - J10[:, 1, 0]).abs().max() > 1.0
    # fixed points (+-1, 0) and the saddle at the origin, for any beta
    fp = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=F64)
    assert get_system("maier_stein", beta=7.0).f(fp).abs().max() == 0
    # g = sqrt(2 eps) on both variables
    torch.testing.assert_close(get_system("maier_stein", eps=0.08).g(z[:2]),
                               torch.full((2, 2), 0.4, dtype=F64))


# ------------------------------------------------------------------ FENE dumbbell
def _radial_moment(b: float, weight) -> float:
    """<|Q|^2> for a 2D radial density ∝ weight(r) (1 - r^2/b)^(b/2)."""
    r = np.linspace(0, math.sqrt(b), 200_001)[1:-1]
    rho = weight(r) * (1 - r ** 2 / b) ** (b / 2) * r
    return float((r ** 2 * rho).sum() / rho.sum())


def test_fene_dumbbell_stays_inside_the_ball():
    for params in ({}, {"strain_rate": 2.0, "drag_ratio": 4.0, "b": 20.0},
                   {"strain_rate": 4.0, "b": 50.0}):
        sys = get_system("fene_dumbbell", **params)
        b = sys.params["b"]
        tr = simulate(sys, batch=64, steps=3000, save_every=10, seed=2)
        assert tr.status == "ok", params
        r2 = tr.x.pow(2).sum(-1)
        print(f"FENE {params}: max |Q|^2 / b = {float(r2.max()) / b:.4f}")
        assert torch.isfinite(r2).all() and float(r2.max()) < b
    # strong flow stretches the chain towards its full length; at the default (critical)
    # strain rate it stays a coil of size ~ sqrt(2)
    assert float(r2[-50:].mean()) > 0.7 * b


def test_fene_dumbbell_equilibrium_moments():
    """Three groups in one run: (strain, drag_ratio) = (0, 1): Boltzmann (1 - r^2/b)^(b/2),
    <|Q|^2> = 2b/(b + 4); (0, 4): zero current, Itô density ∝ zeta (1 - r^2/b)^(b/2);
    (0.25, 1): gradient drift, density ∝ (1 - r^2/b)^(b/2) exp(strain (qx^2 - qy^2))."""
    b, n = 50.0, 800
    strain = torch.tensor([0.0, 0.0, 0.25], dtype=F64).repeat_interleave(n)
    drag = torch.tensor([1.0, 4.0, 1.0], dtype=F64).repeat_interleave(n)
    sys = get_system("fene_dumbbell", b=b, strain_rate=strain, drag_ratio=drag)
    x0 = torch.randn(3 * n, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    tr = simulate(sys, x0, steps=4000, transient=1000, save_every=100, dt=0.005, seed=5)
    assert tr.status == "ok"
    q = tr.x[1:]                                                      # (40, 3n, 2)
    r2 = q.pow(2).sum(-1)
    want0 = 2 * b / (b + 4)
    assert want0 == pytest.approx(_radial_moment(b, lambda r: 1.0), rel=1e-6)
    want1 = _radial_moment(b, lambda r: 1 + 3 * r / math.sqrt(b))
    # (0.25, 1): <qx^2> by 2D quadrature
    g = np.linspace(-math.sqrt(b), math.sqrt(b), 1201)
    X, Y = np.meshgrid(g, g, indexing="ij")
    inside = X ** 2 + Y ** 2 < b
    dens = np.where(inside, np.clip(1 - (X ** 2 + Y ** 2) / b, 0, None) ** (b / 2)
                    * np.exp(0.25 * (X ** 2 - Y ** 2)), 0.0)
    want2 = float((X ** 2 * dens).sum() / dens.sum())
    got = (float(r2[:, :n].mean()), float(r2[:, n:2 * n].mean()),
           float(q[:, 2 * n:, 0].pow(2).mean()))
    print(f"FENE moments {got} exact {(want0, want1, want2)}")
    assert got[0] == pytest.approx(want0, rel=0.04)
    assert got[1] == pytest.approx(want1, rel=0.04)
    assert got[2] == pytest.approx(want2, rel=0.06)
    assert want1 > want0 * 1.05              # the drag changes the stationary law (Itô)


def test_fene_dumbbell_gradient_structure():
    """D^{-1} f = 2 zeta f is a gradient (symmetric Jacobian) for constant drag at any strain
    rate and for any drag at zero strain rate; it has a curl when both are non-zero."""
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=F64)

    def curl(**params):
        sys = get_system("fene_dumbbell", **params)
        p = sys.bind(z)

        def force(x):                     # D^{-1} f, D = g^2 / 2 per component
            g = sys.diffusion(x, p)
            return 2.0 * sys.rhs(x, p) / g ** 2
        J = torch.func.vmap(torch.func.jacrev(force))(z)
        return (J[:, 0, 1] - J[:, 1, 0]).abs().max().item()

    assert curl(strain_rate=1.0, drag_ratio=1.0) < 1e-10
    assert curl(strain_rate=0.0, drag_ratio=5.0) < 1e-10
    assert curl(strain_rate=1.0, drag_ratio=5.0) > 1e-2
    # the drift is the documented formula
    sys = get_system("fene_dumbbell", strain_rate=0.7, b=30.0, drag_ratio=3.0)
    q = z[:3].numpy()
    r = np.linalg.norm(q, axis=1)
    zeta = 1 + 2 * r / math.sqrt(30)
    want = q * np.array([0.7, -0.7]) - 0.5 * q / (zeta * (1 - r ** 2 / 30))[:, None]
    np.testing.assert_allclose(sys.f(z[:3]).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(sys.g(z[:3]).numpy(), np.repeat(zeta[:, None] ** -0.5, 2, 1),
                               rtol=1e-12)


# ------------------------------------------------------------------ SGLD
def _numpy_per_sample_grads(theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """(N, 2) gradients of l_i = (a tanh(w x_i) - y_i)^2 / 2 by central differences."""
    xs, ys = np.array(SGLD_X), np.array(SGLD_Y)

    def loss(t):
        return 0.5 * (t[1] * np.tanh(t[0] * xs) - ys) ** 2               # (N,)
    out = np.zeros((len(xs), 2))
    for j in range(2):
        e = np.zeros(2)
        e[j] = h
        out[:, j] = (loss(theta + e) - loss(theta - e)) / (2 * h)
    return out


def test_sgld_noise_covariance_is_lr_over_b_times_gradient_covariance():
    np.testing.assert_allclose(SGLD_X, np.linspace(-2, 2, 16), atol=1e-15)
    lr, B, T = 0.3, 2.0, 0.05
    sys = get_system("sgld", lr=lr, batch_size=B, temperature=T)
    thetas = np.array([[0.3, 0.2], [1.2, 1.5], [-0.8, 2.0], [2.0, -0.4]])
    x = torch.tensor(thetas, dtype=F64)
    g = sys.g(x).numpy()                                              # (4, 2, 18)
    assert g.shape == (4, 2, 18)
    for k, th in enumerate(thetas):
        G = _numpy_per_sample_grads(th)
        cov = np.cov(G.T, bias=True)                                  # 1/N: with replacement
        np.testing.assert_allclose(g[k] @ g[k].T, lr / B * cov + 2 * T * np.eye(2),
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(sys.f(x[k]).numpy(), -G.mean(0), rtol=1e-7, atol=1e-9)
    # the Jacobian of the drift is minus the loss Hessian (symmetric), by finite differences
    J = sys.jac(x).numpy()
    for k, th in enumerate(thetas):
        H = np.stack([(_numpy_per_sample_grads(th + e, 1e-4).mean(0)
                       - _numpy_per_sample_grads(th - e, 1e-4).mean(0)) / 2e-3
                      for e in np.eye(2) * 1e-3], 1)
        np.testing.assert_allclose(J[k], -H.T, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(J[k], J[k].T, atol=1e-12)
    # lr = 0: only Langevin noise, g g^T = 2 T I; batch size as a swept tensor parameter
    g0 = get_system("sgld", lr=0.0, temperature=0.2).g(x).numpy()
    np.testing.assert_allclose(g0 @ g0.transpose(0, 2, 1), np.broadcast_to(0.4 * np.eye(2), (4, 2, 2)),
                               atol=1e-15)
    Bs = torch.tensor([1.0, 2.0, 4.0, 16.0], dtype=F64)
    gs = get_system("sgld", batch_size=Bs).g(x)
    for i in range(4):
        torch.testing.assert_close(gs[i], get_system("sgld", batch_size=float(Bs[i])).g(x[i]))
    # the two mirror minima: L(w, a) = L(-w, -a)
    torch.testing.assert_close(sys.f(-x), -sys.f(x))


# ------------------------------------------------------------------ stochastic Lorenz
def test_stochastic_lorenz_drift_and_stationary_identity():
    sys = get_system("stochastic_lorenz", D=2.0)
    z = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 10
    torch.testing.assert_close(sys.f(z), get_system("lorenz63").f(z))
    torch.testing.assert_close(sys.g(z), torch.full_like(z, 2.0))
    assert (get_system("stochastic_lorenz", D=0.0).g(z) == 0).all()
    # E[dz] = E[xy - beta z] dt with additive noise: <xy> = beta <z> in the stationary state
    tr = simulate(sys, batch=200, steps=8000, transient=1000, save_every=4, seed=6)
    x = tr.x[1:]
    xy, zz = float((x[..., 0] * x[..., 1]).mean()), float(x[..., 2].mean())
    beta = 8.0 / 3.0
    print(f"stochastic Lorenz <xy> = {xy:.3f}, beta <z> = {beta * zz:.3f}")
    assert xy == pytest.approx(beta * zz, rel=0.02)
    assert 20.0 < zz < 27.0


# ------------------------------------------------------------------ custom SDEs
def test_parse_sde_values_at_a_point():
    sys = parse_sde("dx/dt = -k*x + y; dy/dt = x*y - s",
                    "T, 0.5*x^2 + s*y^2", {"k": 2.0, "s": 0.5, "T": 0.3})
    assert sys.kind == "sde" and sys.origin == "custom" and sys.noise == "diagonal"
    assert sys.variables == ("x", "y") and not sys.additive
    x = torch.tensor([[1.5, -2.0]], dtype=F64)
    torch.testing.assert_close(sys.f(x), torch.tensor([[-2 * 1.5 - 2.0, 1.5 * -2.0 - 0.5]],
                                                      dtype=F64))
    D = np.array([0.3, 0.5 * 1.5 ** 2 + 0.5 * 4.0])
    torch.testing.assert_close(sys.g(x), torch.tensor(np.sqrt(2 * D)[None], dtype=F64))
    # Milstein's derivative dg_i/dx_i: d sqrt(2 (x^2/2 + s y^2)) / dy = 2 s y / g_y
    dg = sys.diffusion_derivative(x, sys.bind(x))
    torch.testing.assert_close(dg, torch.tensor([[0.0, 2 * 0.5 * -2.0 / math.sqrt(2 * D[1])]],
                                                dtype=F64))
    # x' means the drift here, exactly as dx/dt
    prime = parse_sde("x' = -k*x + y; y' = x*y - s", "T; 0.5*x^2 + s*y^2",
                      {"k": 2.0, "s": 0.5, "T": 0.3})
    torch.testing.assert_close(prime.f(x), sys.f(x))
    torch.testing.assert_close(prime.g(x), sys.g(x))
    assert "dW_{2}" in sys.latex and sys.description


def test_parse_sde_reproduces_builtins():
    """Custom GBM (D = sigma^2 x^2 / 2) and linear OU against the built-in classes: drift,
    noise, Milstein derivative and seeded paths."""
    gbm = parse_sde("x' = mu*x", "0.5*sigma^2*x^2", {"mu": 0.5, "sigma": 0.5}, x0=[1.0],
                    dt=0.001)
    ref = get_system("gbm")
    x = torch.tensor([[0.5], [1.0], [3.0]], dtype=F64)
    for fn in ("f", "g"):
        torch.testing.assert_close(getattr(gbm, fn)(x), getattr(ref, fn)(x))
    torch.testing.assert_close(gbm.diffusion_derivative(x, gbm.bind(x)),
                               ref.diffusion_derivative(x, ref.bind(x)))
    a = simulate(gbm, batch=4, steps=300, seed=8, solver="milstein")
    b = simulate(ref, batch=4, steps=300, seed=8, solver="milstein")
    torch.testing.assert_close(a.x, b.x)
    ou = parse_sde("dx/dt = -k*(x + g*y); dy/dt = -k*(y - g*x)", "Dx, Dy",
                   {"k": 1.0, "g": 1.0, "Dx": 1.0, "Dy": 0.25})
    assert ou.additive
    z = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref2 = get_system("linear_ou", D_y=0.25)
    torch.testing.assert_close(ou.f(z), ref2.f(z))
    torch.testing.assert_close(ou.jac(z), ref2.jac(z))
    torch.testing.assert_close(ou.g(z), ref2.g(z))


def test_parse_sde_parameter_sweeps_dtype_pickling_and_simulate():
    sys = parse_sde("x' = -k*x; y' = -y", "T, T*(1 + x^2)", {"k": 1.0, "T": 0.5})
    k = torch.linspace(0.5, 2.0, 4, dtype=F64)
    T = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    swept = sys.with_params(k=k, T=T)
    x = torch.tensor([0.7, -0.3], dtype=F64).expand(4, 2)
    f, g = swept.f(x), swept.g(x)
    assert f.shape == g.shape == (4, 2)
    for i in range(4):
        one = sys.with_params(k=float(k[i]), T=float(T[i]))
        torch.testing.assert_close(f[i], one.f(x[i]))
        torch.testing.assert_close(g[i], one.g(x[i]))
    dg = swept.diffusion_derivative(x, swept.bind(x))
    for i in range(4):
        one = sys.with_params(T=float(T[i]))
        ref = torch.diagonal(torch.func.jacrev(one.g)(x[i]))
        torch.testing.assert_close(dg[i], ref)
    tr = simulate(swept, steps=200, seed=0, dtype=torch.float32)
    assert tr.status == "ok" and tr.x.shape == (201, 4, 2) and tr.x.dtype == torch.float32
    again = simulate(swept, steps=200, seed=0, dtype=torch.float32)
    assert torch.equal(tr.x, again.x)
    drift = swept.drift_system()                       # a Flow, for deterministic analyses
    assert drift.kind == "flow" and not drift.stochastic
    torch.testing.assert_close(drift.f(x), f)
    assert swept.info()["noise"] == "diagonal" and swept.info()["origin"] == "custom"
    clone = pickle.loads(pickle.dumps(swept))
    torch.testing.assert_close(clone.g(x), g)
    assert type(clone).__name__ == "CustomSDE" and clone.params["k"].shape == (4,)
    # a parameter-only entry may not go negative; a state-dependent one is clamped at 0
    with pytest.raises(ParameterError, match="D must be >= 0"):
        sys.with_params(T=-0.1)
    with pytest.raises(ParameterError):
        sys.with_params(T=torch.tensor([0.1, -0.1], dtype=F64))
    clamp = parse_sde("x' = -x", "x", {})
    torch.testing.assert_close(clamp.g(torch.tensor([[-1.0], [2.0]], dtype=F64)),
                               torch.tensor([[0.0], [2.0]], dtype=F64))
    tr = simulate(clamp, [0.5], batch=8, steps=100, seed=1, solver="milstein")
    assert tr.status == "ok"


@pytest.mark.parametrize("drift, diffusion, params, field, fragment", [
    ("x_{n+1} = r*x", "1", {"r": 1.0}, "drift", "map's next state"),
    ("x[n+1] = r*x", "1", {"r": 1.0}, "drift", "map's next state"),
    ("x' = x_n", "1", {}, "drift", "map notation"),
    ("dx/dt = -q*x", "1", {}, "drift", "unknown name 'q'"),
    ("x' = -x; y' = -y", "1", {}, "diffusion", "one entry per variable (x, y): 2 expected, got 1"),
    ("x' = -x", "1, 2", {}, "diffusion", "1 expected, got 2"),
    ("x' = -x; y' = -y", "1,,2", {}, "diffusion", "empty diffusion entry"),
    ("x' = -x", "", {}, "diffusion", "no diffusion entries"),
    ("x' = -x", "TT", {"T": 1.0}, "diffusion", "did you mean 'T'"),
    ("x' = -x", "-0.5", {}, "diffusion", "D must be >= 0"),
    ("x' = -x", "a - 1", {"a": 0.5}, "diffusion", "is -0.5 at these parameters"),
    ("x' = -x", "sqrt(-1)", {}, "diffusion", "D must be >= 0"),
    ("x' = -x", "x = 1", {}, "diffusion", "expressions (the diagonal of D)"),
    ("x' = -x", "1 +", {}, "diffusion", "incomplete expression"),
    ("x' = -x", "foo(x)", {}, "diffusion", "unknown function 'foo'"),
    ("x' = -x", "x.real", {}, "diffusion", "attribute access"),
    ("x' = -x", "__import__('os')", {}, "diffusion", "names must start with a letter"),
    ("x' = -x", None, {}, "diffusion", "must be text"),
])
def test_parse_sde_errors(drift, diffusion, params, field, fragment):
    with pytest.raises(EquationError) as info:
        parse_sde(drift, diffusion, params)
    assert fragment in str(info.value), str(info.value)
    assert info.value.field == field
    errs = validate_sde(drift, diffusion, params)
    assert errs and errs[0].field == field and fragment in str(errs[0])


def test_validate_sde_and_error_positions():
    assert validate_sde("x' = -k*x", "T", {"k": 1.0, "T": 1.0}) == []
    assert validate_sde("x' = -k*x", "T") == []          # undeclared names: parameters
    e = validate_sde("x' = -x; y' = -y", "1, 2*zz", {})[0]
    assert e.field == "diffusion" and e.position == 5 and e.token == "zz"
    with pytest.raises(EquationError, match="x0 must be 2"):
        parse_sde("x' = -x; y' = -y", "1, 1", x0=[1.0])
    with pytest.raises(EquationError, match="dt must be"):
        parse_sde("x' = -x", "1", dt=0)
    sys = parse_sde("x' = -x; y' = -y", "atan2(y, 1)^2,\n max(x, 1)")   # commas inside calls
    assert sys.dim == 2 and sys.g(sys.initial_state()).shape == (2,)
