"""One shared check that every registered system must pass (built-in, and dysts when installed).

SDEs take the same checks on their drift (``rhs``, whose Jacobian is checked against
autograd) and further ones on their diffusion ``g`` (shape, dtype, batching, parameter
broadcasting, Milstein's derivative against autograd)."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core.registry import system_class, system_names
from explorer.core.system import SDE, Flow, Map

NAMES = system_names(stochastic=None)
SDES = [n for n in NAMES if system_class(n).stochastic]


def _states(sys, batch: int, gen: torch.Generator) -> torch.Tensor:
    x0 = sys.initial_state(torch.float64)
    scale = 0.05 * (1.0 + x0.abs())
    return x0 + scale * torch.randn(batch, sys.dim, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    cls = system_class(name)
    sys = cls()
    assert isinstance(sys, (Flow, Map, SDE))
    assert sys.kind in ("flow", "map", "sde")
    assert sys.is_map == isinstance(sys, Map) and sys.stochastic == isinstance(sys, SDE)
    assert sys.default_solver in sys.solver_names()
    assert sys.dim == len(sys.variables) == len(sys.default_x0) >= 1
    assert sys.title and sys.latex and sys.description
    assert sys.default_dt > 0
    for p in cls.parameters:
        assert p.low <= p.default <= p.high, p
        assert p.doc, f"{name}.{p.name} has no doc"
    ref = cls.lyapunov_reference
    if ref is not None:
        assert len(ref.exponents) == sys.dim
        assert list(ref.exponents) == sorted(ref.exponents, reverse=True)
        assert ref.source


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_batching_and_jacobian(name):
    gen = torch.Generator().manual_seed(0)
    sys = system_class(name)()
    x = _states(sys, 7, gen)                      # (B, D)
    fx = sys.f(x)
    assert fx.shape == x.shape and fx.dtype == torch.float64
    assert torch.isfinite(fx).all()
    # float32 in, float32 out
    assert sys.f(x.float()).dtype == torch.float32
    # batching: row b of the batched call equals the unbatched call on x[b]
    for b in (0, 3):
        torch.testing.assert_close(sys.f(x[b]), fx[b])
    # time-major (T, B, D) works too
    assert sys.f(x.reshape(1, 7, -1).expand(2, 7, -1)).shape == (2, 7, sys.dim)
    # analytic Jacobian against torch.func.jacrev, per batch member
    J = sys.jac(x)
    assert J.shape == (7, sys.dim, sys.dim)
    ref = torch.func.vmap(torch.func.jacrev(sys.f))(x)
    torch.testing.assert_close(J, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_sweep_broadcasts(name):
    cls = system_class(name)
    sweep = [p for p in cls.parameters if not p.integer and p.high > p.low]
    if not sweep:
        pytest.skip("no continuous parameter")
    p = sweep[0]
    lo = p.default - 0.01 * (p.high - p.low) if p.default > p.low else p.default
    values = torch.linspace(max(lo, p.low), p.default, 4, dtype=torch.float64)
    sys = cls(**{p.name: values})
    x = sys.initial_state().expand(4, -1)
    fx = sys.f(x)
    assert fx.shape == (4, sys.dim)
    for i in range(4):
        single = cls(**{p.name: float(values[i])}).f(x[i])
        torch.testing.assert_close(fx[i], single)
    assert math.isfinite(float(fx.abs().sum()))


@pytest.mark.parametrize("name", SDES)
def test_sde_diffusion_shapes_batching_and_derivative(name):
    gen = torch.Generator().manual_seed(0)
    sys = system_class(name)()
    x = _states(sys, 7, gen)                      # (B, D)
    g = sys.g(x)
    want = (7, sys.dim) if sys.noise == "diagonal" else (7, sys.dim, sys.n_noises)
    assert g.shape == want and g.dtype == torch.float64 and torch.isfinite(g).all()
    assert sys.g(x.float()).dtype == torch.float32
    for b in (0, 3):
        torch.testing.assert_close(sys.g(x[b]), g[b])
    if sys.additive:
        torch.testing.assert_close(g, sys.g(x.flip(0)))   # the same everywhere
    if sys.noise == "diagonal":
        p = sys.bind(x)
        ref = torch.diagonal(torch.func.vmap(torch.func.jacrev(sys.g))(x), dim1=-2, dim2=-1)
        torch.testing.assert_close(sys.diffusion_derivative(x, p), ref, rtol=1e-7, atol=1e-9)
    # parameters broadcast in the diffusion as in the drift
    cls = type(sys)
    for p in [q for q in cls.parameters if not q.integer and q.high > q.low]:
        values = torch.linspace(max(p.low, p.default - 0.01 * (p.high - p.low)), p.default, 4,
                                dtype=torch.float64)
        swept = cls(**{p.name: values})
        xs = sys.initial_state().expand(4, -1) + 0.1
        gs = swept.g(xs)
        for i in range(4):
            torch.testing.assert_close(gs[i], cls(**{p.name: float(values[i])}).g(xs[i]))
