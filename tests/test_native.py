"""The native (generated C) backend agrees with eager torch: every supported built-in
system, parameter sweeps, divergence masking, custom equations; unsupported fields give None.

Compiled libraries are cached on disk (``EXPLORER_CACHE``), so reruns take a few seconds.
"""

from __future__ import annotations

import threading

import pytest
import torch

from explorer.core import native
from explorer.core.custom import parse_system
from explorer.core.registry import get_system, system_names
from explorer.core.simulate import _make_chunk, simulate
from explorer.core.solvers import SOLVERS

pytestmark = pytest.mark.skipif(not native.available(), reason="no working gcc/OpenMP here")

F64 = torch.float64
NAMES = system_names(dysts=False)


def _solver(system) -> str:
    return "map" if system.kind == "map" else "rk4"


def _dt(system) -> float:
    return 1.0 if system.kind == "map" else float(system.default_dt)


@pytest.fixture(scope="module")
def steppers():
    """name -> NativeStepper or None, default solver, float64 (built in parallel threads)."""
    out: dict[str, native.NativeStepper | None] = {}

    def build(names):
        for n in names:
            s = get_system(n)
            out[n] = native.native_stepper(s, _solver(s), F64)

    threads = [threading.Thread(target=build, args=(NAMES[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_most_builtin_systems_are_supported(steppers):
    supported = sorted(n for n, st in steppers.items() if st is not None)
    unsupported = sorted(n for n, st in steppers.items() if st is None)
    print(f"native: {len(supported)} of {len(NAMES)} built-in systems supported; "
          f"unsupported: {', '.join(unsupported)}")
    assert len(supported) >= 45, unsupported
    assert "lorenz96" in unsupported          # roll over the state: stays on torch
    assert native.native_stepper(get_system("lorenz96"), "rk4", F64) is None


@pytest.mark.parametrize("name", NAMES)
def test_native_agrees_with_eager_torch(name, steppers):
    st = steppers[name]
    if st is None:
        pytest.skip("not supported natively")
    s = get_system(name)
    steps = 200
    tr = simulate(s, steps=steps, batch=3, generator=torch.Generator().manual_seed(0),
                  compile=False, dtype=F64)
    assert tr.status == "ok"
    x = tr.x[0].clone()                                          # (B, D) initial states
    rec, ok, n_ok = st.run(x, s.params, _dt(s), n_steps=steps, record_every=1)
    assert rec.shape == (steps, s.dim, 3)
    assert ok.all() and (n_ok == steps).all()
    torch.testing.assert_close(x, rec[-1].T)                     # advanced in place
    want = tr.x[1:].transpose(1, 2)                              # (T, D, B)
    # chaotic maps with transcendental functions amplify the few-ulp differences of libm
    # against torch's vector math: their whole-trajectory check is limited to 20 steps
    horizon = steps if s.kind == "flow" else 20
    torch.testing.assert_close(rec[:horizon], want[:horizon], rtol=1e-9, atol=1e-9)
    # every single step (shadowing): one torch step from each native state
    states = torch.cat([tr.x[0].T.unsqueeze(0), rec], 0)         # (T+1, D, B)
    prev = states[:-1].permute(0, 2, 1).reshape(-1, s.dim)
    params = {k: v for k, v in s.params.items()}
    one = SOLVERS[_solver(s)].step(lambda z: s.rhs(z, params), prev, _dt(s))
    torch.testing.assert_close(one, states[1:].permute(0, 2, 1).reshape(-1, s.dim),
                               rtol=1e-12, atol=1e-12)


def test_float32_and_euler():
    s = get_system("lorenz63")
    for dtype, solver in ((torch.float32, "rk4"), (F64, "euler"), (torch.float32, "euler")):
        st = native.native_stepper(s, solver, dtype)
        assert st is not None and st.dtype == dtype and st.solver == solver
        tr = simulate(s, steps=100, batch=4, solver=solver, dtype=dtype, compile=False,
                      generator=torch.Generator().manual_seed(1))
        x = tr.x[0].clone()
        rec, ok, _ = st.run(x, s.params, s.default_dt, n_steps=100, record_every=10)
        # bit-identical arithmetic (no FMA contraction) in both dtypes
        torch.testing.assert_close(rec, tr.x[10::10].transpose(1, 2), rtol=0, atol=0)


def test_parameter_sweep_with_batched_parameters():
    rho = torch.linspace(20.0, 30.0, 6, dtype=F64)
    s = get_system("lorenz63", rho=rho)
    st = native.native_stepper(s, "rk4", F64)
    tr = simulate(s, steps=150, compile=False, dtype=F64)        # sweep: B = 6 from x0
    x = tr.x[0].clone()
    rec, ok, _ = st.run(x, s.params, s.default_dt, n_steps=150, record_every=50)
    torch.testing.assert_close(rec, tr.x[50::50].transpose(1, 2), rtol=1e-12, atol=1e-12)
    # one run per value agrees with the sweep
    for i in (0, 5):
        xi = tr.x[0, i:i + 1].clone()
        r1, _, _ = st.run(xi, {"sigma": 10.0, "rho": float(rho[i]), "beta": 8 / 3},
                          s.default_dt, n_steps=150, record_every=50)
        torch.testing.assert_close(r1[:, :, 0], rec[:, :, i], rtol=0, atol=0)
    # a map sweep, and a wrong-length parameter vector is refused
    h = get_system("henon", a=torch.linspace(1.0, 1.4, 5, dtype=F64))
    sth = native.native_stepper(h, "map", F64)
    trh = simulate(h, steps=40, compile=False, dtype=F64)
    xh = trh.x[0].clone()
    rh, _, _ = sth.run(xh, h.params, 1.0, n_steps=40, record_every=1)
    torch.testing.assert_close(rh, trh.x[1:].transpose(1, 2), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        sth.run(xh[:3].clone(), h.params, 1.0, n_steps=1, record_every=1)


def test_divergence_masking_matches_make_chunk():
    s = get_system("lorenz63")
    st = native.native_stepper(s, "rk4", F64)
    x0 = torch.tensor([[-8.0, 7.0, 27.0], [9.0e5, -9.0e5, 10.0], [1.0, 1.0, 1.0],
                       [2.0e5, 2.0e5, 2.0e5]], dtype=F64)
    ref = _make_chunk(s, SOLVERS["rk4"].step, 10, 10, float(s.bound))
    ok0 = torch.ones(4, dtype=torch.bool)
    nok0 = torch.zeros(4, dtype=torch.int32)
    want_xs, want_x, want_ok, want_nok = ref(x0.clone(), ok0, nok0, 0.01, s.bind(x0))
    assert not want_ok.all() and want_ok.any()                   # some diverge, some go on
    # the same 100 steps in two native calls, the divergence state carried between them
    x = x0.clone()
    ok, n_ok = ok0.clone(), nok0.clone()
    r1, ok, n_ok = st.run(x, s.params, 0.01, n_steps=50, record_every=10, ok=ok, n_ok=n_ok)
    r2, ok2, n_ok2 = st.run(x, s.params, 0.01, n_steps=50, record_every=10, ok=ok, n_ok=n_ok)
    assert ok2 is ok and n_ok2 is n_ok                           # updated in place
    torch.testing.assert_close(torch.cat([r1, r2]), want_xs.transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(x, want_x, rtol=0, atol=0)
    assert torch.equal(ok, want_ok) and torch.equal(n_ok, want_nok)
    frozen = ~ok
    assert (n_ok[frozen] < 100).all() and (n_ok[~frozen] == 100).all()
    # a member already marked bad stays frozen and is not counted
    x = x0[:1].clone()
    r, ok, n_ok = st.run(x, s.params, 0.01, n_steps=5, record_every=1,
                         ok=torch.zeros(1, dtype=torch.bool), n_ok=torch.full((1,), 7, dtype=torch.int32))
    assert torch.equal(x, x0[:1]) and int(n_ok) == 7 and not ok.any()
    assert torch.equal(r[:, :, 0], x0[:1].expand(5, 3))


def test_map_divergence_and_simulate_status():
    s = get_system("logistic", r=4.0)
    st = native.native_stepper(s, "map", F64)
    x = torch.tensor([[0.3], [1.5], [0.7]], dtype=F64)           # 1.5 escapes to -inf
    tr = simulate(s, x.clone(), steps=20, compile=False, dtype=F64)
    rec, ok, n_ok = st.run(x, s.params, 1.0, n_steps=20, record_every=1)
    assert ok.tolist() == [True, False, True]
    torch.testing.assert_close((n_ok[1] + 1).double(), tr.diverged_at[1])   # dt = 1 for maps
    good = rec.transpose(1, 2)[:, [0, 2]]
    torch.testing.assert_close(good, tr.x[1:, [0, 2]], rtol=0, atol=0)


def test_record_every_tail_out_buffer_and_threads():
    s = get_system("rossler")
    st = native.native_stepper(s, "rk4", F64)
    x0 = s.initial_state(F64) + 0.1 * torch.randn(200, 3, dtype=F64,
                                                  generator=torch.Generator().manual_seed(2))
    xa, xb = x0.clone(), x0.clone()
    big = torch.full((10, 3, 200), float("nan"), dtype=F64)
    ra, _, _ = st.run(xa, s.params, 0.05, n_steps=23, record_every=5, out=big[2:6], threads=1)
    assert ra.data_ptr() == big[2:6].data_ptr() and big[:2].isnan().all() and big[6:].isnan().all()
    rb, _, _ = st.run(xb, s.params, 0.05, n_steps=23, record_every=5, threads=2)
    assert torch.equal(ra, rb) and torch.equal(xa, xb)           # 23 steps taken, 4 recorded
    xc = x0.clone()
    r0, _, _ = st.run(xc, s.params, 0.05, n_steps=23, record_every=100)   # none recorded
    assert r0.shape == (0, 3, 200) and torch.equal(xc, xa)
    with pytest.raises(ValueError):
        st.run(x0.float(), s.params, 0.05, n_steps=1, record_every=1)     # wrong dtype


def test_concurrent_runs_from_threads():
    s = get_system("thomas")
    st = native.native_stepper(s, "rk4", F64)
    x0 = s.initial_state(F64) + torch.randn(64, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    want, _, _ = st.run(x0.clone(), s.params, 0.05, n_steps=300, record_every=100)
    results = [None] * 4

    def work(i):
        results[i] = st.run(x0.clone(), s.params, 0.05, n_steps=300, record_every=100)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, want) for r in results)


def test_custom_system_and_no_user_text_in_the_source():
    c = parse_system("dx/dt = sigma*(y - x); dy/dt = x*(rho - z) - y; dz/dt = x*y - beta*z",
                     {"sigma": 10, "rho": 28, "beta": 8 / 3})
    st = native.native_stepper(c, "rk4", F64)
    assert st is not None
    tr = simulate(c, steps=200, batch=3, compile=False, dtype=F64,
                  generator=torch.Generator().manual_seed(0))
    x = tr.x[0].clone()
    rec, ok, _ = st.run(x, c.params, c.default_dt, n_steps=200, record_every=1)
    torch.testing.assert_close(rec, tr.x[1:].transpose(1, 2), rtol=1e-9, atol=1e-9)
    # the same equations as the built-in Lorenz-63: the same numbers
    lor = native.native_stepper(get_system("lorenz63"), "rk4", F64)
    x2 = tr.x[0].clone()
    rec2, _, _ = lor.run(x2, {"sigma": 10.0, "rho": 28.0, "beta": 8 / 3}, 0.01, n_steps=200,
                         record_every=1)
    torch.testing.assert_close(rec, rec2, rtol=0, atol=0)

    # many functions, C-like names: values agree, and no user text reaches the C source
    text = ("dmain/dt = sin(include) - int_*main + abs(system)^1.5 + 2^main - main^3;"
            "dinclude/dt = mod(main, 2) + max(include, system) - min(main, 0.5) + cosh(0.1*main)"
            " - include^3;"
            "dsystem/dt = atan2(include, main) + sign(system)*heaviside(main) - tanh(system)"
            " + exp(-main^2) + sqrt(abs(include)) + log(1 + main^2) / (1 + system^2) - system^3")
    c2 = parse_system(text, {"int_": 0.7})
    st2 = native.native_stepper(c2, "rk4", F64)
    assert st2 is not None
    for word in ("main", "include", "system", "int_"):
        assert f"{word}" not in st2.source.replace("explorer_", "").replace("#include", "")
    z = torch.randn(257, 3, dtype=F64, generator=torch.Generator().manual_seed(5)) * 2
    torch.testing.assert_close(st2.field(z, c2.params), c2.rhs(z, c2.params), rtol=1e-12, atol=1e-12)
    tr2 = simulate(c2, torch.tensor([0.3, -0.2, 0.5]), steps=100, compile=False, dtype=F64)
    assert tr2.status == "ok"
    x3 = tr2.x[0].clone()
    r3, _, _ = st2.run(x3, c2.params, c2.default_dt, n_steps=100, record_every=10)
    torch.testing.assert_close(r3, tr2.x[10::10].transpose(1, 2), rtol=1e-9, atol=1e-9)


def test_unsupported_and_disabled(monkeypatch):
    s = get_system("lorenz63")
    assert native.native_stepper(s, "dopri5", F64) is None
    assert native.native_stepper(s, "map", F64) is None          # map solver on a flow
    assert native.native_stepper(get_system("henon"), "rk4", F64) is None
    assert native.native_stepper(s, "rk4", torch.float16) is None
    # a reduction over one trajectory's state translates; one over the batch does not
    c = parse_system("dx/dt = -x; dy/dt = -y", {})

    class Summing(type(c)):
        def rhs(self, x, p):
            return -x + x.sum(-1, keepdim=True)

    class Mixing(type(c)):
        def rhs(self, x, p):
            return -x + x.mean(0, keepdim=True)

    st = native.native_stepper(Summing(), "rk4", F64)
    z = torch.randn(9, 2, dtype=F64)
    torch.testing.assert_close(st.field(z, {}), Summing().rhs(z, {}), rtol=1e-14, atol=1e-14)
    assert native.native_stepper(Mixing(), "rk4", F64) is None
    # cached: the same object for the same key
    assert native.native_stepper(s, "rk4", F64) is native.native_stepper(s.with_params(rho=20.0), "rk4", F64)
    monkeypatch.setenv("EXPLORER_NATIVE", "0")
    assert not native.available()


def test_fma_variant_is_close_but_separate():
    s = get_system("lorenz63")
    exact = native.native_stepper(s, "rk4", F64)
    fused = native.native_stepper(s, "rk4", F64, fma=True)
    assert fused is not None and fused is not exact and fused.fma and not exact.fma
    x0 = s.initial_state(F64).reshape(1, 3)
    a, _, _ = exact.run(x0.clone(), s.params, 0.01, n_steps=100, record_every=10)
    b, _, _ = fused.run(x0.clone(), s.params, 0.01, n_steps=100, record_every=10)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_assignments_in_place_updates_and_reductions_within_a_state_translate():
    c = parse_system("dx/dt = -x; dy/dt = -y; dz/dt = -z", {})

    class Assigning(type(c)):
        def rhs(self, x, p):
            out = torch.zeros_like(x)
            out[..., 0] = x[..., 1] - x[..., 0]
            h = x[..., 0] * 2.0
            h += x[..., 2]
            h *= 0.5
            out[..., 1] = h - torch.amin(x, -1)
            out[..., 2:] = torch.amax(x, -1, keepdim=True) - x[..., 2:]
            return out

    st = native.native_stepper(Assigning(), "rk4", F64)
    assert st is not None, native.refusal(Assigning(), "rk4", F64)
    z = torch.randn(40, 3, dtype=F64)
    torch.testing.assert_close(st.field(z, {}), Assigning().rhs(z, {}), rtol=1e-14, atol=1e-14)
