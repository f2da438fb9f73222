"""Stationary densities, probability currents and entropy production against known answers:
Euler–Maruyama's weak order on OU, Boltzmann densities of gradient systems, zero entropy
production without a current, 2 gamma^2 for the rotating 2D OU (both estimators, the
Lyapunov-equation reference and a sweep), a non-equilibrium SDE with state-dependent noise
(the grad . D term), the exact value only for linear SDEs, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.core.analysis.entropy import (
    METHOD_GRID, METHOD_MIDPOINT, effective_potential, entropy_density_map, entropy_production,
    entropy_sweep, estimate_entropy, exact_entropy_production, linear_reference,
    probability_current, stationary_density)
from explorer.core.errors import ParameterError, ShapeError, SizeLimitError
from explorer.core.registry import get_system
from explorer.core.simulate import simulate
from explorer.core.system import SDE, Param, UnsupportedKindError

F64 = torch.float64
SQRT2 = math.sqrt(2.0)
J2 = np.array([[0.0, -1.0], [1.0, 0.0]])


def rotating_ou(gamma: float):
    """dX = -(I - gamma J) X dt + sqrt(2) dW: stationary N(0, I), e_p = 2 gamma^2."""
    return get_system("rotating_ou", kx=1.0, ky=1.0, omega=gamma, sigma_x=SQRT2, sigma_y=SQRT2)


@pytest.fixture(scope="module")
def rou_traj():
    """Stationary rotating OU (gamma = 1): 1000 trajectories x 3000 steps of 0.01."""
    return simulate(rotating_ou(1.0), steps=3000, dt=0.01, batch=1000, seed=11, transient=500)


@pytest.fixture(scope="module")
def double_well():
    """The gradient double well (omega = 0), stationary: 512 trajectories, every 10th step."""
    s = get_system("rotating_double_well", omega=0.0)
    tr = simulate(s, steps=4000, dt=0.01, batch=512, seed=5, transient=1000)
    return s, tr


# ------------------------------------------------------------------ the solver's order
def test_euler_maruyama_weak_order_one_on_ou():
    """E[X_T^2] of OU (theta = 1, D = 1, X_0 = 0, T = 1): the error halves with dt, and each
    Monte Carlo value matches the scheme's own closed form m <- (1-h)^2 m + 2h."""
    ou = get_system("ou", theta=1.0, sigma=SQRT2)
    exact = 1.0 - math.exp(-2.0)
    dts, errs = [], []
    for i, h in enumerate((0.2, 0.1, 0.05)):
        n = round(1.0 / h)
        tr = simulate(ou, [0.0], steps=n, dt=h, batch=400_000, seed=3 + i)
        x2 = tr.x[-1, :, 0] ** 2
        m, se = float(x2.mean()), float(x2.std()) / math.sqrt(x2.numel())
        scheme = 0.0
        for _ in range(n):
            scheme = (1 - h) ** 2 * scheme + 2 * h
        assert abs(m - scheme) < 4 * se, (h, m, scheme, se)
        dts.append(h)
        errs.append(m - exact)
    slope = float(np.polyfit(np.log(dts), np.log(errs), 1)[0])
    print(f"Euler-Maruyama weak order on OU: {slope:.3f}; errors {errs}")
    assert 0.8 <= slope <= 1.2


# ------------------------------------------------------------------ stationary densities
def test_ou_stationary_density_is_the_normal_law():
    theta, sigma, mu = 1.0, 1.0, 0.5
    ou = get_system("ou", theta=theta, sigma=sigma, mu=mu)
    tr = simulate(ou, [mu], steps=2000, dt=0.01, batch=2000, seed=7, transient=500, save_every=20)
    var = sigma ** 2 / (2 * theta)
    for method, tol in (("hist", 0.04), ("kde", 0.03)):
        d = stationary_density(tr.x, bins=40, method=method)
        c = d.centres[0]
        q = np.exp(-(c - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)
        l1 = float(np.abs(d.p - q).sum() * d.cell_volume)
        print(f"OU density ({method}): L1 error {l1:.4f}")
        assert d.p.shape == (40,) and d.dims == (0,) and d.n_samples == tr.x[..., 0].numel()
        assert d.p.sum() * d.cell_volume == pytest.approx(1.0)
        assert l1 < tol
    # -T log p is the potential theta (x - mu)^2 / 2 at temperature sigma^2 / 2
    d = stationary_density(tr.x, bins=40)
    u = effective_potential(d, temperature=sigma ** 2 / 2)
    c = d.centres[0]
    well = d.counts > 2000
    ref = theta * (c - mu) ** 2 / 2
    err = (u - ref)[well]
    assert np.nanmin(u) == 0.0 and np.abs(err - err.mean()).max() < 0.05


def test_double_well_density_is_boltzmann(double_well):
    """exp(-U/T)/Z with U = (x^2-1)^2/4 + k y^2/2, T = sigma^2/2, on a 32 x 32 grid."""
    s, tr = double_well
    T = s.params["sigma"] ** 2 / 2
    d = stationary_density(tr.x[::10], dims=(0, 1), bins=32)
    X, Y = np.meshgrid(*d.centres)                          # (ny, nx), as d.p
    U = 0.25 * (X ** 2 - 1) ** 2 + 0.5 * s.params["k"] * Y ** 2
    q = np.exp(-U / T)
    q /= q.sum() * d.cell_volume
    l1 = float(np.abs(d.p - q).sum() * d.cell_volume)
    print(f"double-well density: relative L1 error {l1:.4f} ({d.n_samples} samples)")
    assert d.p.shape == (32, 32) and l1 < 0.08
    u = effective_potential(d, T)
    well = d.counts > 200
    err = (u - U)[well]
    assert np.abs(err - err.mean()).max() < 0.1


def test_density_layout_bounds_and_nan_rows():
    x = torch.zeros(100, 3, dtype=F64)
    x[:, 0] = torch.linspace(0.0, 0.99, 100)           # x uniform on [0, 1)
    x[:, 2] = 5.0                                      # y (dims[1]) in the upper half
    x[7] = float("nan")
    d = stationary_density(x, dims=(0, 2), bins=(10, 4), bounds=[(0.0, 1.0), (0.0, 10.0)])
    assert d.p.shape == (4, 10) and d.counts.sum() == 99 and d.n_samples == 99
    assert d.counts[2].sum() == 99                     # y = 5 is in row 2 of [0, 10) / 4
    assert d.centres[1].tolist() == [1.25, 3.75, 6.25, 8.75]
    assert d.p.sum() * d.cell_volume == pytest.approx(1.0)
    with pytest.raises(ParameterError):
        stationary_density(x, dims=(0, 3))
    with pytest.raises(ParameterError):
        stationary_density(x, bins=1)
    with pytest.raises(ParameterError):
        stationary_density(x, bounds=[(0, 1)])
    with pytest.raises(ParameterError):
        stationary_density(x, method="spline")
    with pytest.raises(SizeLimitError):
        stationary_density(x, dims=(0, 1, 2), bins=1000)
    with pytest.raises(ShapeError):
        stationary_density(np.ones((2, 2, 2, 2)))
    with pytest.raises(ParameterError):
        effective_potential(d, temperature=0.0)


# ------------------------------------------------------------------ zero without a current
def test_gradient_drift_has_zero_entropy_production(double_well):
    s, tr = double_well
    T = s.params["sigma"] ** 2 / 2
    mid = entropy_production(tr.x, tr.dt, drift=s.f, diffusion=T)
    grid = entropy_production(tr.x, tr.dt, diffusion=T)
    print(f"gradient double well: midpoint {mid.rate:.2e} ± {mid.stderr:.1e}, "
          f"grid {grid.rate:.2e} ± {grid.stderr:.1e}")
    assert mid.method == METHOD_MIDPOINT and grid.method == METHOD_GRID
    assert abs(mid.rate) < 3 * mid.stderr and mid.stderr < 0.01
    assert abs(grid.rate) < 3 * grid.stderr and grid.stderr < 0.03
    assert len(mid.per_batch) == 10 and len(grid.per_batch) == 10
    # a one-dimensional stationary diffusion has no current either (from the system)
    res = estimate_entropy(get_system("ou", mu=1.0), steps=1000, batch=64, seed=1, transient=200)
    assert abs(res["entropy_production_rate"]) < 3 * res["stderr"] and res["exact"] == 0.0


# ------------------------------------------------------------------ rotating OU: 2 gamma^2
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 3.0])
def test_linear_reference_rotating_ou(gamma):
    C, rate = linear_reference(np.eye(2) - gamma * J2, np.eye(2))
    assert np.allclose(C, np.eye(2), atol=1e-12) and rate == pytest.approx(2 * gamma ** 2, abs=1e-12)
    assert exact_entropy_production(rotating_ou(gamma)) == pytest.approx(2 * gamma ** 2, abs=1e-12)


def test_linear_reference_identities_and_errors():
    rng = np.random.default_rng(0)
    for _ in range(5):
        A = rng.normal(size=(3, 3)) + 3 * np.eye(3)            # stable
        L = rng.normal(size=(3, 3))
        Dm = L @ L.T + 0.5 * np.eye(3)
        C, rate = linear_reference(A, Dm)
        assert np.allclose(A @ C + C @ A.T, 2 * Dm)
        # e_p = int F^T J dx with F = -D^-1 A x and J = M x p, M = D C^-1 - A
        M = Dm @ np.linalg.inv(C) - A
        assert rate == pytest.approx(-np.trace(A.T @ np.linalg.solve(Dm, M) @ C), rel=1e-9)
        assert rate >= 0
    assert linear_reference([[2.0]], 0.7)[1] == pytest.approx(0.0, abs=1e-12)   # 1D: reversible
    assert linear_reference(np.diag([1.0, 3.0]), [0.5, 2.0])[1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ParameterError, match="not stable"):
        linear_reference(-np.eye(2), np.eye(2))
    with pytest.raises(ParameterError, match="not stable"):
        linear_reference(J2, np.eye(2))                       # purely imaginary eigenvalues
    with pytest.raises(ParameterError, match="singular"):
        linear_reference(np.eye(2), np.diag([1.0, 0.0]))
    with pytest.raises(ShapeError):
        linear_reference(np.eye(2), np.eye(3))


def test_rotating_ou_both_estimators(rou_traj):
    tr, s = rou_traj, rotating_ou(1.0)
    mid = entropy_production(tr.x, tr.dt, drift=s.f, diffusion=1.0)
    grid = entropy_production(tr.x, tr.dt, diffusion=np.eye(2))
    # a callable diffusion (grad . D by autograd, here zero) gives the same midpoint estimate
    call = entropy_production(tr.x, tr.dt, drift=s.f, diffusion=lambda z: torch.ones_like(z))
    print(f"rotating OU (exact 2): midpoint {mid.rate:.4f} ± {mid.stderr:.4f}, "
          f"grid {grid.rate:.4f} ± {grid.stderr:.4f}")
    assert mid.rate == pytest.approx(2.0, rel=0.05) and mid.stderr < 0.03
    assert grid.rate == pytest.approx(2.0, rel=0.05) and grid.stderr < 0.05
    assert call.rate == pytest.approx(mid.rate, rel=1e-12)
    # too few trajectories for the batches: blocks of time instead
    few = entropy_production(tr.x[:, :4], tr.dt, drift=s.f, diffusion=1.0, n_batches=8)
    assert len(few.per_batch) == 8 and abs(few.rate - 2.0) < 4 * few.stderr + 0.05


def test_rotating_ou_current_and_density_map(rou_traj):
    """v = f - D grad log p = f + x = [[0, 1], [-1, 0]] x (gamma = 1); sigma = |v|^2 p."""
    tr = rou_traj
    c = probability_current(tr.x, tr.dt, bins=32)
    X, Y = np.meshgrid(*c.centres)
    m = c.counts > 100
    w = np.sqrt(c.counts[m])[:, None]
    B = np.linalg.lstsq(np.stack([X[m], Y[m]], 1) * w, c.v[m] * w, rcond=None)[0].T
    print(f"fitted v = B x, B = {B.round(3).tolist()}")
    assert np.allclose(B, [[0.0, 1.0], [-1.0, 0.0]], atol=0.05)
    assert c.v.shape == (32, 32, 2) and np.allclose(c.J[m], (c.v * c.p[..., None])[m])
    assert np.isnan(c.v[c.counts == 0]).all()
    dm = entropy_density_map(tr.x, tr.dt, diffusion=1.0, bins=16)
    grid = entropy_production(tr.x, tr.dt, diffusion=1.0, bins=16)
    assert dm.sigma.shape == (16, 16) and dm.rate == pytest.approx(grid.rate, rel=1e-12)
    assert float(dm.sigma.sum()) * np.prod([x[1] - x[0] for x in dm.centres]) == pytest.approx(dm.rate)
    X, Y = np.meshgrid(*dm.centres)
    ref = (X ** 2 + Y ** 2) * np.exp(-(X ** 2 + Y ** 2) / 2) / (2 * math.pi)
    rel = np.abs(dm.sigma - ref).sum() / ref.sum()
    print(f"entropy density map: relative L1 error {rel:.3f}")
    assert rel < 0.15
    # the projection on x is a lower bound (here E[v_x | x] = E[y | x] = 0)
    proj = entropy_density_map(tr.x, tr.dt, diffusion=1.0, dims=(0,))
    assert proj.sigma.shape == (64,) and proj.rate < 0.2 * grid.rate


def test_estimate_entropy_from_the_system():
    res = estimate_entropy(rotating_ou(1.0), steps=2000, dt=0.01, batch=500, seed=4, transient=500)
    print(res)
    assert set(res) >= {"entropy_production_rate", "stderr", "exact", "method", "n", "dt", "seconds"}
    assert res["exact"] == pytest.approx(2.0) and res["method"] == METHOD_MIDPOINT
    assert res["n"] == 2000 * 500 and res["dt"] == 0.01
    assert res["entropy_production_rate"] == pytest.approx(2.0, rel=0.05)
    assert abs(res["entropy_production_rate"] - 2.0) < 3 * res["stderr"] + 0.03   # O(dt) bias


def test_entropy_sweep_matches_two_omega_squared():
    values = [0.0, 0.5, 1.0, 1.5]
    sw = entropy_sweep(rotating_ou(0.0), "omega", values, steps=2000, dt=0.005,
                       batch_per_value=150, seed=9, transient=600)
    print(sw.as_dict())
    exact = 2 * np.asarray(values) ** 2
    assert np.allclose(sw.exacts, exact, atol=1e-12)
    assert (np.abs(sw.rates - exact) < 3 * sw.stderrs + 1e-9).all()
    assert (sw.stderrs > 0).all() and sw.values.tolist() == values


# ------------------------------------------------------------------ state-dependent noise
class _CurlNoisy(SDE):
    """p ~ exp(-|x|^2 / 2) with D = diag(d(x, y), 1), d = 1.5 + sin x sin y, and drift
    f = -D grad U + grad . D + g J grad U: v = g J x, e_p = g^2 <y^2 / d + x^2>."""

    name = "test_curl_noisy"
    variables = ("x", "y")
    parameters = (Param("g", 1.0, -5.0, 5.0, "rotation"),)
    default_x0 = (0.0, 0.0)
    default_dt = 0.005

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        d = 1.5 + torch.sin(x_) * torch.sin(y)
        return torch.stack([-d * x_ + torch.cos(x_) * torch.sin(y) - p["g"] * y,
                            -y + p["g"] * x_], -1)

    def diffusion(self, x, p):
        x_, y = x.unbind(-1)
        d = 1.5 + torch.sin(x_) * torch.sin(y)
        return torch.stack([torch.sqrt(2 * d), torch.full_like(d, SQRT2)], -1)


def _curl_noisy_exact(g: float) -> tuple[float, float]:
    """(e_p, the value an estimator omitting grad . D would converge to), by quadrature."""
    x = np.linspace(-8, 8, 1601)
    X, Y = np.meshgrid(x, x, indexing="ij")
    p = np.exp(-(X ** 2 + Y ** 2) / 2)
    p /= p.sum()
    d = 1.5 + np.sin(X) * np.sin(Y)
    ep = g ** 2 * float((p * (Y ** 2 / d + X ** 2)).sum())
    # int (D^-1 grad . D)^T J dx, J = p v = p g (-y, x)
    wrong = ep + float((p * (np.cos(X) * np.sin(Y) / d) * (-g * Y)).sum())
    return ep, wrong


def test_state_dependent_noise_uses_the_divergence_of_D():
    s = _CurlNoisy(g=1.0)
    ep, wrong = _curl_noisy_exact(1.0)
    assert abs(wrong - ep) > 0.1 * ep                     # the grad . D term matters here
    assert exact_entropy_production(s) is None            # nonlinear, multiplicative
    res = estimate_entropy(s, steps=2000, batch=400, seed=2, transient=400)
    print(f"state-dependent D: {res['entropy_production_rate']:.4f} ± {res['stderr']:.4f} "
          f"(exact {ep:.4f}; without grad . D {wrong:.4f})")
    assert res["entropy_production_rate"] == pytest.approx(ep, rel=0.05)
    assert abs(res["entropy_production_rate"] - wrong) > 3 * res["stderr"]
    # the same from the data with a callable D(x) (autograd divergence), and the grid
    tr = simulate(s, steps=2000, batch=200, seed=3, transient=400)

    def dfun(z):
        return 0.5 * s.g(z) ** 2

    mid = entropy_production(tr.x, tr.dt, drift=s.f, diffusion=dfun)
    grid = entropy_production(tr.x, tr.dt, diffusion=dfun, bins=40)
    print(f"  data: midpoint {mid.rate:.4f} ± {mid.stderr:.4f}, grid {grid.rate:.4f} ± {grid.stderr:.4f}")
    assert mid.rate == pytest.approx(ep, rel=0.05) and abs(grid.rate - ep) < 3 * grid.stderr


# ------------------------------------------------------------------ exact: linear only
def test_exact_entropy_production_only_for_linear_sdes():
    assert exact_entropy_production(get_system("ou", mu=3.0, theta=2.0)) == pytest.approx(0.0, abs=1e-12)
    # defaults: kx = 1, ky = 1, omega = 2, unequal noise: against the Lyapunov equation
    s = get_system("rotating_ou")
    A = np.array([[1.0, -2.0], [2.0, 1.0]])
    assert exact_entropy_production(s) == pytest.approx(linear_reference(A, [0.5, 0.045])[1])
    assert exact_entropy_production(s, {"omega": 1.0, "sigma_y": SQRT2, "sigma_x": SQRT2}) \
        == pytest.approx(2.0)
    assert exact_entropy_production(get_system("rotating_double_well")) is None   # nonlinear
    assert exact_entropy_production(get_system("gbm")) is None     # multiplicative noise
    with pytest.raises(UnsupportedKindError):
        exact_entropy_production(get_system("lorenz63"))
    with pytest.raises(ParameterError, match="singular"):
        exact_entropy_production(get_system("rotating_ou", sigma_y=0.0))


def test_bad_inputs_raise_typed_errors(rou_traj):
    x = rou_traj.x[:50, :20]
    with pytest.raises(ParameterError, match="diffusion"):
        entropy_production(x, 0.01)
    with pytest.raises(ParameterError, match="dt"):
        entropy_production(x, -0.01, diffusion=1.0)
    with pytest.raises(ParameterError, match="n_batches"):
        entropy_production(x, 0.01, diffusion=1.0, n_batches=1)
    with pytest.raises(ParameterError, match="method"):
        entropy_production(x, 0.01, diffusion=1.0, method="magic")
    with pytest.raises(ParameterError, match="singular"):
        entropy_production(x, 0.01, diffusion=[1.0, 0.0])
    with pytest.raises(ParameterError, match="drift"):
        entropy_production(x, 0.01, diffusion=1.0, method=METHOD_MIDPOINT)
    with pytest.raises(ShapeError):
        entropy_production(x, 0.01, diffusion=np.eye(3))
    with pytest.raises(ShapeError):
        probability_current(x[:2], 0.01)
    with pytest.raises(UnsupportedKindError):
        estimate_entropy(get_system("lorenz63"))
    with pytest.raises(ParameterError, match="singular"):
        estimate_entropy(get_system("rotating_ou", sigma_y=0.0))
    with pytest.raises(ParameterError):
        estimate_entropy(rotating_ou(1.0), steps=0)
    with pytest.raises(ParameterError):
        entropy_sweep(rotating_ou(1.0), "omega", [1.0, 99.0], steps=10, batch_per_value=2)
    with pytest.raises(ParameterError):
        entropy_sweep(rotating_ou(1.0), "nope", [1.0], steps=10, batch_per_value=2)
    # diverged members (NaN) are dropped, not propagated
    y = x.clone()
    y[25:, 3] = float("nan")
    r = entropy_production(y, 0.01, drift=rotating_ou(1.0).f, diffusion=1.0)
    g = entropy_production(y, 0.01, diffusion=1.0, bins=16)
    assert math.isfinite(r.rate) and math.isfinite(g.rate) and r.n == 49 * 20 - 25


# ------------------------------------------------------------------ CLI
def _cli(capsys, *argv):
    rc = main(["entropy", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_entropy_system_json(capsys):
    rc, out, err = _cli(capsys, "--system", "rotating_ou", "--param", "kx=1", "--param", "ky=1",
                        "--param", "omega=1", "--param", f"sigma_x={SQRT2}",
                        "--param", f"sigma_y={SQRT2}", "--steps", "1500", "--batch", "200",
                        "--transient", "300", "--seed", "1", "--json")
    assert rc == 0, err
    rec = json.loads(out)
    assert set(rec) >= {"entropy_production_rate", "stderr", "exact", "method"}
    assert rec["exact"] == pytest.approx(2.0) and rec["method"] == METHOD_MIDPOINT
    assert abs(rec["entropy_production_rate"] - 2.0) < 4 * rec["stderr"] + 0.03
    rc, out, _ = _cli(capsys, "--system", "rotating_double_well", "--steps", "200", "--batch", "20",
                      "--transient", "0", "--json")
    assert rc == 0 and json.loads(out)["exact"] is None
    rc, out, _ = _cli(capsys, "--system", "ou", "--steps", "200", "--batch", "20")
    assert rc == 0 and "entropy production rate" in out and "exact 0" in out


def test_cli_entropy_custom_sde(capsys):
    custom = pytest.importorskip("explorer.core.custom")
    if not hasattr(custom, "parse_sde"):
        pytest.skip("parse_sde not available")
    rc, out, err = _cli(capsys, "--sde", "x' = -x + g*y; y' = -y - g*x", "--diffusion", "1, 1",
                        "--param", "g=1", "--steps", "1500", "--batch", "200", "--transient",
                        "300", "--json")
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["exact"] == pytest.approx(2.0)
    assert abs(rec["entropy_production_rate"] - 2.0) < 4 * rec["stderr"] + 0.03


@pytest.mark.parametrize("argv, msg", [
    (["--system", "lorenz63"], "SDE"),
    (["--system", "ou", "--dt", "-1"], "dt"),
    (["--system", "ou", "--steps", "0"], "steps"),
    (["--system", "rotating_ou", "--param", "sigma_y=0"], "singular"),
    (["--system", "ou", "--param", "theta=abc"], "not a number"),
    (["--system", "no_such_system"], ""),
    (["--sde", "x' = -x"], "--diffusion"),
    (["--system", "ou", "--sde", "x' = -x", "--diffusion", "1"], "exactly one"),
    ([], "exactly one"),
])
def test_cli_entropy_bad_input_exits_2(capsys, argv, msg):
    rc, out, err = _cli(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith("dynamics-explorer: error:") and msg in err and err.count("\n") == 1
