"""Torch modules wrapped as systems (explorer.models.wrap) and autodiff Jacobians
(explorer.core.autodiff): against hand computations, analytic Jacobians and finite differences."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from explorer.core import autodiff
from explorer.core.analysis.fixed_points import fixed_points
from explorer.core.analysis.lyapunov import lyapunov_spectrum
from explorer.core.custom import parse_system
from explorer.core.registry import get_system
from explorer.core.system import Flow, Map
from explorer.models import module_flow, module_map, module_system

METHODS = ("expand", "jacrev", "jacfwd", "loop")


class TanhMLP(nn.Module):
    """A bounded map ``x -> 2 tanh(MLP(x))`` (its orbits stay in [-2, 2]^D)."""

    def __init__(self, d: int = 3, hidden: int = 16, gain: float = 2.0, seed: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(d, hidden)
        self.l2 = nn.Linear(hidden, d)
        with torch.no_grad():
            self.l1.weight.copy_(gain * torch.randn(hidden, d, generator=g) / d ** 0.5)
            self.l1.bias.copy_(0.5 * torch.randn(hidden, generator=g))
            self.l2.weight.copy_(gain * torch.randn(d, hidden, generator=g) / hidden ** 0.5)
            self.l2.bias.zero_()

    def forward(self, x):
        return 2.0 * torch.tanh(self.l2(torch.tanh(self.l1(x))))


class Linear(nn.Module):
    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, x):
        return x @ self.A.T


def _hand_spectrum(F, x0: torch.Tensor, steps: int, transient: int) -> torch.Tensor:
    """Benettin/QR by hand: per-state Jacobians by torch.func.jacrev, QR every step."""
    B, D = x0.shape
    x = x0.clone()
    Q = torch.eye(D, dtype=torch.float64).expand(B, D, D).clone()
    logs = torch.zeros(B, D, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(F))
    for n in range(transient + steps):
        J = jac(x)
        x, Q = F(x), J @ Q
        Q, R = torch.linalg.qr(Q)
        if n >= transient:
            logs += torch.log(torch.diagonal(R, dim1=-2, dim2=-1).abs())
    per = torch.sort(logs / steps, dim=-1, descending=True).values
    return per.mean(0)


# ----------------------------------------------------------------------------- maps
def test_mlp_map_lyapunov_spectrum_matches_hand_computation():
    net = TanhMLP()
    sys_ = module_map(net)
    assert isinstance(sys_, Map) and sys_.dim == 3 and sys_.origin == "trained"
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    res = lyapunov_spectrum(sys_, x0, steps=300, transient=50)
    net64 = TanhMLP().to(torch.float64)
    with torch.no_grad():
        want = _hand_spectrum(net64, x0, steps=300, transient=50)
    assert res.status == "ok"
    torch.testing.assert_close(res.exponents, want, rtol=1e-6, atol=1e-9)
    assert res.exponents[0] > 0.05          # chaotic at this gain (bounded by the tanh)


def test_snapshot_is_frozen_float64_and_pickles():
    net = TanhMLP()
    sys_ = module_map(net, variables=("a", "b", "c"))
    x = torch.randn(5, 3, dtype=torch.float64)
    before = sys_.f(x)
    with torch.no_grad():                   # "training" goes on: the snapshot must not move
        net.l1.weight.add_(1.0)
    torch.testing.assert_close(sys_.f(x), before)
    assert next(sys_.module.parameters()).dtype == torch.float64
    assert sys_.variables == ("a", "b", "c")
    again = pickle.loads(pickle.dumps(sys_))
    torch.testing.assert_close(again.f(x), before)
    assert sys_.f(x.float()).dtype == torch.float32
    # the coupling sweep: one Jacobian per parameter value, c = 1 is the module's
    c = torch.linspace(0.5, 1.0, 5, dtype=torch.float64)
    J = type(sys_)(coupling=c).jac(x)
    assert J.shape == (5, 3, 3)
    torch.testing.assert_close(J[-1], sys_.jac(x[-1]))
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(J[0], 0.5 * eye + 0.5 * sys_.jac(x[0]))


def test_default_x0_from_data_or_noise():
    net = TanhMLP()
    data = torch.randn(20, 3)
    assert module_map(net, data=data).default_x0 == tuple(data[0].double().tolist())
    x0 = torch.tensor(module_map(net).default_x0)
    assert x0.shape == (3,) and 0 < x0.abs().max() < 0.1
    with pytest.raises(Exception, match="dimension|return"):
        module_map(nn.Linear(3, 2))


# ----------------------------------------------------------------------------- flows
def _key(z) -> tuple[float, float]:
    return round(float(z.real), 6), round(float(z.imag), 6)


def test_linear_flow_fixed_point_and_exponents():
    A = torch.tensor([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.0, 0.0, -0.5]], dtype=torch.float64)
    sys_ = module_flow(Linear(A), x0=[1.0, 0.5, -0.3], dt=0.01)
    assert isinstance(sys_, Flow) and sys_.default_dt == 0.01
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(sys_.jac(x), A.expand(4, 3, 3))
    fps = fixed_points(sys_, n_starts=16, box=(-torch.ones(3), torch.ones(3)),
                       generator=torch.Generator().manual_seed(0))
    assert len(fps) == 1
    torch.testing.assert_close(fps[0].x, torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    want = torch.linalg.eigvals(A)
    got = fps[0].eigenvalues
    assert sorted(map(_key, got)) == sorted(map(_key, want))
    assert fps[0].stable
    res = lyapunov_spectrum(sys_, steps=4000, transient=500, batch=4,
                            generator=torch.Generator().manual_seed(0))
    real = torch.sort(want.real, descending=True).values
    torch.testing.assert_close(res.exponents, real, atol=2e-2, rtol=0)
    # the damping parameter shifts every exponent by -d
    res2 = lyapunov_spectrum(type(sys_)(damping=0.25), steps=4000, transient=500, batch=4,
                             generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res2.exponents, real - 0.25, atol=2e-2, rtol=0)


def test_module_system_rejects_bad_arguments():
    with pytest.raises(ValueError):
        module_system(TanhMLP(), "sde")
    with pytest.raises(TypeError):
        module_system(lambda x: x)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- autodiff
@pytest.mark.parametrize("name, sweep", [("lorenz63", "rho"), ("rossler", "c"), ("henon", "a")])
@pytest.mark.parametrize("method", METHODS)
def test_autodiff_equals_analytic_jacobians(name, sweep, method):
    s = get_system(name)
    gen = torch.Generator().manual_seed(0)
    x = s.initial_state() + 0.3 * torch.randn(2, 16, s.dim, generator=gen, dtype=torch.float64)
    p = s.bind(x)
    J = autodiff.jacobian(lambda z: s.rhs(z, p), x, method=method)
    torch.testing.assert_close(J, s.jacobian(x, p), rtol=1e-12, atol=1e-12)
    with torch.inference_mode():            # as the Lyapunov loop calls it
        J2 = autodiff.jacobian(lambda z: s.rhs(z, p), x, method=method)
    torch.testing.assert_close(J2, J)
    if method in ("jacrev", "jacfwd"):     # vmap over the states only: no tensor parameters
        return
    # a parameter sweep from one state: one Jacobian per value
    v = s.defaults()[sweep]
    sw = s.with_params(**{sweep: torch.linspace(0.9 * v, v, 5, dtype=torch.float64)})
    ps = sw.bind(x)
    x1 = x[0, 0]
    Js = autodiff.jacobian(lambda z: sw.rhs(z, ps), x1, method=method,
                           batch=autodiff.batch_shape(x1, ps))
    assert Js.shape == (5, s.dim, s.dim)
    torch.testing.assert_close(Js, sw.jacobian(x1.expand(5, -1), ps), rtol=1e-12, atol=1e-12)


def test_value_and_jacobian_and_constant_fields():
    s = get_system("lorenz63")
    x = torch.randn(7, 3, dtype=torch.float64)
    v, J = autodiff.value_and_jacobian(s.f, x)
    torch.testing.assert_close(v, s.f(x))
    torch.testing.assert_close(J, s.jac(x))
    zero = autodiff.jacobian(lambda z: torch.ones_like(z).detach(), x)
    assert zero.shape == (7, 3, 3) and not zero.any()
    with pytest.raises(ValueError):
        autodiff.jacobian(s.f, x, method="nope")


def _fd(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    D = x.shape[-1]
    hs = h * (1.0 + x.abs())
    E = torch.eye(D, dtype=x.dtype)
    xp = x.unsqueeze(-2) + E * hs.unsqueeze(-1)
    xm = x.unsqueeze(-2) - E * hs.unsqueeze(-1)
    return ((f(xp) - f(xm)) / (2 * hs.unsqueeze(-1))).transpose(-1, -2)


def test_custom_jacobian_matches_finite_differences():
    s = parse_system("x' = sigma*(y - x)\ny' = x*(rho - z) - y + sin(x*y)\nz' = x*y - beta*z",
                     {"sigma": 10.0, "rho": 28.0, "beta": 8 / 3})
    x = 3.0 * torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(s.jac(x), _fd(s.f, x), rtol=1e-6, atol=1e-6)
    rho = torch.linspace(20, 30, 32, dtype=torch.float64)
    sw = s.with_params(rho=rho)
    J = sw.jac(x[0])                                  # one state, 32 parameter values
    assert J.shape == (32, 3, 3)
    torch.testing.assert_close(J[5], s.with_params(rho=float(rho[5])).jac(x[0]))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["dysts_lorenz", "dysts_hopfield", "dysts_mac_arthur",
                                  "dysts_blinking_rotlet"])
def test_dysts_jacobians_match_finite_differences(name):
    pytest.importorskip("dysts")
    from explorer.core.registry import load_dysts

    load_dysts()
    s = get_system(name)
    gen = torch.Generator().manual_seed(3)
    x0 = s.initial_state()
    x = x0 + 0.05 * (1 + x0.abs()) * torch.randn(6, s.dim, generator=gen, dtype=torch.float64)
    J = s.jac(x)
    fd = _fd(s.f, x)
    scale = 1.0 + fd.abs().max()
    assert ((J - fd).abs() <= 1e-5 * (fd.abs() + scale)).all()
    for method in METHODS:
        torch.testing.assert_close(autodiff.jacobian(s.f, x, method=method), J,
                                   rtol=1e-10, atol=1e-10)
