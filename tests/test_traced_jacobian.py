"""Jacobians differentiated from the traced lane program (explorer.core.traced).

Checked against the hand-written Jacobians of every built-in system (written independently,
from the equations), against torch's autograd for custom equations that use every function
of the custom grammar, and end to end: a typed Lorenz-63 gets the published spectrum through
the native tangent stepper.
"""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core import native
from explorer.core.analysis import lyapunov_spectrum
from explorer.core.analysis.lyapunov import _variational_stepper
from explorer.core.autodiff import jacobian as autograd_jacobian
from explorer.core.custom import parse_system
from explorer.core.registry import get_system, system_names
from explorer.core.traced import reason, traced_jacobian

LORENZ = "dx/dt = sigma*(y - x); dy/dt = x*(rho - z) - y; dz/dt = x*y - beta*z"
LORENZ_P = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}


def _states(system, n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = system.initial_state(torch.float64)
    return x0 + 0.3 * (1.0 + x0.abs()) * torch.randn(n, system.dim, generator=gen,
                                                      dtype=torch.float64)


def _deterministic_builtins():
    return [n for n in system_names(dysts=False) if not get_system(n).stochastic]


@pytest.mark.parametrize("name", _deterministic_builtins())
def test_traced_jacobian_equals_the_hand_written_one(name):
    system = get_system(name)
    tj = traced_jacobian(system)
    if name == "lorenz96":                       # torch.roll over the state does not trace
        assert tj is None and "roll" in reason(system)
        return
    assert tj is not None, reason(system)
    x = _states(system)
    p = system.bind(x)
    want = system.jacobian(x, p)                 # analytic, written by hand per system
    got = tj(x, p)
    assert got.shape == want.shape == (64, system.dim, system.dim)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12 * (1 + float(want.abs().max())))


def test_every_function_of_the_custom_grammar_differentiates_exactly():
    text = ("dx/dt = sin(x)*cos(y) + tan(z/4) + sinh(x/3) - cosh(y/5) + tanh(z)*exp(-x*x)\n"
            "dy/dt = log(1 + x*x) + sqrt(2 + y*y) + abs(z - 0.3) + atan2(y, x + 3) + x^a\n"
            "dz/dt = min(x, y) + max(y, z) + mod(z, 1.7) + arcsin(x/9) + arccos(y/9) "
            "+ arctan(z) + heaviside(x)*y + sign(y)*z + x*y/(1 + z*z) + y^3 - b*z")
    system = parse_system(text, {"a": 2.0, "b": 0.7}, x0=(1.2, 0.4, -0.8))
    tj = traced_jacobian(system)
    assert tj is not None, reason(system)
    x = _states(system, 200)
    x[:, 0] = x[:, 0].abs() + 0.1            # x^a with a real exponent needs x > 0
    p = system.bind(x)
    want = autograd_jacobian(lambda z: system.rhs(z, p), x)
    got = system.jacobian(x, p)
    fin = torch.isfinite(want)
    assert bool(fin.all())
    assert torch.allclose(got, want, rtol=1e-11, atol=1e-11)
    # one entry by hand: d(dy/dt)/dx = 2x/(1+x^2) - y/((x+3)^2+y^2) + a x^(a-1)
    xs, ys = x[:, 0], x[:, 1]
    hand = 2 * xs / (1 + xs * xs) - ys / ((xs + 3) ** 2 + ys * ys) + 2.0 * xs
    assert torch.allclose(got[:, 1, 0], hand, rtol=1e-12, atol=1e-12)


def test_a_swept_parameter_gives_one_jacobian_per_value():
    system = parse_system(LORENZ, LORENZ_P)
    rho = torch.linspace(20.0, 30.0, 5, dtype=torch.float64)
    swept = system.with_params(rho=rho)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    J = swept.jacobian(x, swept.bind(x))
    assert J.shape == (5, 3, 3)
    assert torch.allclose(J[:, 1, 0], rho - 3.0)             # d(dy/dt)/dx = rho - z
    assert torch.allclose(J[:, 0, 0], torch.full((5,), -10.0, dtype=torch.float64))


def test_a_field_that_does_not_trace_keeps_autograd():
    # a Python branch on the state's values cannot become a straight-line program
    system = parse_system(LORENZ, LORENZ_P)
    cls = type(system)

    class Branchy(cls):
        def rhs(self, x, p):
            out = super().rhs(x, p)
            return out * 2.0 if bool((x[..., 0] > 1e9).any()) else out

    b = Branchy(**LORENZ_P)
    assert traced_jacobian(b) is None
    x = _states(b, 8)
    assert torch.allclose(b.jacobian(x, b.bind(x)), 1.0 * system.jacobian(x, system.bind(x)))


@pytest.mark.skipif(not native.available(), reason="no C compiler for the native backend")
def test_typed_lorenz_gets_the_published_spectrum_through_the_native_tangent_stepper():
    system = parse_system(LORENZ, LORENZ_P, x0=(1.0, 1.0, 1.0))
    assert _variational_stepper(system, 3, torch.zeros(1, 3, dtype=torch.float64)) is not None
    builtin = get_system("lorenz63")
    x0 = builtin.initial_state(torch.float64)
    res = lyapunov_spectrum(system, x0=x0, steps=5000, generator=torch.Generator().manual_seed(0))
    ref = lyapunov_spectrum(builtin, x0=x0, steps=5000, generator=torch.Generator().manual_seed(0))
    # the same spectrum as the built-in with its hand-written Jacobian
    assert torch.allclose(res.exponents, ref.exponents, rtol=0.0, atol=0.03)
    # and the published values (Sprott: 0.9056, 0, -14.5723)
    l1, l2, l3 = (float(v) for v in res.exponents)
    assert abs(l1 - 0.9056) < 0.05 and abs(l2) < 0.03 and abs(l3 + 14.5723) < 0.1
    assert math.isclose(l1 + l2 + l3, -(10.0 + 1.0 + 8.0 / 3.0), rel_tol=2e-3)


def test_a_branch_that_zeroes_a_tangent_keeps_it_zero_under_an_infinite_factor():
    # sqrt(max(0, x)): at x < 0 the derivative is 0 (autograd's answer), not 0 * inf = nan;
    # at x > 0 it is c / (2 sqrt(x)) with c exactly as given (float64 throughout)
    system = parse_system("dx/dt = c*sqrt(max(0, x)) - y; dy/dt = x", {"c": -8.03474})
    assert traced_jacobian(system) is not None, reason(system)
    x = torch.tensor([[-0.5, 1.0], [0.25, 1.0], [0.007000359303087025, 0.4]], dtype=torch.float64)
    J = system.jacobian(x, system.bind(x))
    assert float(J[0, 0, 0]) == 0.0
    assert float(J[1, 0, 0]) == -8.03474 / (2 * 0.5)
    assert torch.isclose(J[2, 0, 0], torch.tensor(-8.03474 / (2 * math.sqrt(0.007000359303087025)),
                                                   dtype=torch.float64), rtol=1e-15)


class _MatrixField(parse_system("dx/dt = -x; dy/dt = -y", {}).__class__):
    """tanh(W X) - X, written for X = x.movedim(-1, 0) as in dysts's method-style fields."""

    W = ((0.5, -1.5), (2.0, 0.25))

    def rhs(self, x, p):
        X = x.movedim(-1, 0)
        W = torch.tensor(self.W, dtype=x.dtype, device=x.device)
        Y = torch.tanh(torch.tensordot(W, X, dims=([1], [0]))) - X
        return Y.movedim(0, -1)


def test_a_field_that_moves_the_batch_axis_traces_one_state_at_a_time():
    system = _MatrixField()
    tj = traced_jacobian(system)
    assert tj is not None, reason(system)
    x = _states(system, 16)
    W = torch.tensor(_MatrixField.W, dtype=torch.float64)
    s = 1.0 - torch.tanh(x @ W.T) ** 2                              # (16, 2)
    hand = s.unsqueeze(-1) * W - torch.eye(2, dtype=torch.float64)   # diag(1 - tanh^2) W - I
    assert torch.allclose(tj(x, {}), hand, rtol=1e-13, atol=1e-13)
    f, J = tj.value_and_jacobian(x, {})
    assert torch.allclose(f, system.rhs(x, {}), rtol=1e-13, atol=1e-13)


@pytest.mark.skipif(not native.available(), reason="no C compiler for the native backend")
def test_a_system_too_large_for_a_native_tangent_stepper_gets_a_compiled_field_and_jacobian(
        monkeypatch):
    # Lorenz-96 with N = 7 typed out: 7 x 7 x 7 tangent terms exceed NATIVE_TANGENT_WORK, so
    # the field and Jacobian are one C function and torch multiplies the tangent vectors
    from explorer.core.analysis import lyapunov as ly

    N = 7
    names = [f"x{i}" for i in range(N)]
    text = "\n".join(f"d{names[i]}/dt = ({names[(i + 1) % N]} - {names[i - 2]})*{names[i - 1]}"
                     f" - {names[i]} + F" for i in range(N))
    system = parse_system(text, {"F": 8.0}, x0=tuple(8.0 + 0.01 * i for i in range(N)))
    assert N * N * N > ly.NATIVE_TANGENT_WORK
    assert ly._variational_stepper(system, N, torch.zeros(1, N, dtype=torch.float64)) is None
    x = torch.zeros(5, N, dtype=torch.float64) + system.initial_state()
    fj = ly._field_and_jacobian_fn(system, system.bind(x), x)
    f, J = fj(x)
    assert torch.equal(f, system.rhs(x, system.bind(x)))
    assert torch.equal(J, system.jacobian(x, system.bind(x)))
    kw = dict(steps=600, transient=200, batch=8)
    res = lyapunov_spectrum(system, generator=torch.Generator().manual_seed(2), **kw)
    # the divergence of Lorenz-96 is -N everywhere: the exponents sum to -N
    assert math.isclose(float(res.exponents.sum()), -N, rel_tol=1e-6)
    assert float(res.exponents[0]) > 0.5                       # chaotic at F = 8
    monkeypatch.setattr(native, "native_function", lambda *a, **k: None)
    # the torch field and Jacobian: the same operations, so the same numbers
    eager = lyapunov_spectrum(system, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(res.exponents, eager.exponents)
