"""Selective SSM (Mamba block): spectra, Lyapunov exponents, token dynamics; driven Lyapunov.

Known answers from ``docs/notes/ssm_spectra.md`` §7, §9 and §10.
"""

import math

import numpy as np
import pytest
import torch

from explorer.core.analysis.driven import driven_lyapunov, perturbation_response
from explorer.core.errors import ParameterError, ShapeError
from explorer.models import selective as selective_module
from explorer.models.selective import (
    REGIME_LABELS,
    SelectiveConfig,
    SelectiveSSM,
    build_selective,
    phase_diagram,
    selective_scan,
    selective_scan_ref,
    token_blowup_time,
    token_ode,
    token_regime,
    token_regime_codes,
)

SP0 = math.log(2.0)                                  # softplus(0)


def _model(**kw):
    return SelectiveSSM(SelectiveConfig(**kw)).double()


def _x(T, B, d=1, seed=1):
    return torch.randn(T, B, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- config, init
def test_config_validation_and_round_trip():
    for bad in ({"d_model": 0}, {"d_state": 1.5}, {"dt_min": 0.2, "dt_max": 0.1},
                {"dt_min": -1.0}, {"layers": True}, {"norm": 1}):
        with pytest.raises(ParameterError):
            SelectiveConfig(**bad)
    c = SelectiveConfig(d_model=20, expand=3)
    assert c.d_inner == 60 and c.rank == 2 and SelectiveConfig(dt_rank=5).rank == 5
    m = build_selective({"kind": "selective", **c.as_dict()})
    assert m.config == c and m.kind == "selective"
    with pytest.raises(ParameterError):
        build_selective({"d_modle": 3})
    # seeded through its own generator: reproducible and the global RNG is untouched
    state = torch.get_rng_state()
    a, b = SelectiveSSM(c), SelectiveSSM(c)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(SelectiveSSM(c.replace(seed=1)).blocks[0].x_proj.weight,
                           a.blocks[0].x_proj.weight)


def test_init_A_is_s4d_real_and_dt_log_uniform():
    m = _model(d_model=64, d_state=5, layers=2)                      # d_inner = 128 channels
    A = m.eigenvalues()
    assert A.shape == (2, 128, 5)
    assert torch.allclose(A, -torch.arange(1, 6, dtype=A.dtype).expand(2, 128, 5), atol=1e-6)
    dt = torch.nn.functional.softplus(torch.stack([b.dt_proj.bias for b in m.blocks]))
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    # log-uniform: mean of log dt is the midpoint (SE = 1.33/sqrt(256) = 0.08)
    assert abs(dt.log().mean().item() - 0.5 * (math.log(1e-3) + math.log(1e-1))) < 0.35
    assert torch.all(torch.stack([b.D for b in m.blocks]) == 1)


def test_zeroed_projections_give_constant_transitions():
    m = _model(d_model=3, d_state=4, layers=2)
    with torch.no_grad():
        for b in m.blocks:
            b.x_proj.weight.zero_()
            b.dt_proj.weight.zero_()
    x = _x(9, 2)
    lam = m.transition_eigenvalues(x)                                 # (layers, T, B, E, N)
    assert lam.shape == (2, 9, 2, 6, 4)
    for i, b in enumerate(m.blocks):
        want = torch.exp(torch.nn.functional.softplus(b.dt_proj.bias)[:, None] * b.A())
        assert torch.allclose(lam[i], want.expand_as(lam[i]), rtol=0, atol=1e-14)


def test_transition_eigenvalues_in_open_unit_interval():
    m = _model(d_model=4, d_state=6, layers=2)
    x = 3 * _x(40, 3)
    lam = m.transition_eigenvalues(x)
    assert lam.shape == (2, 40, 3, 8, 6)
    assert (lam > 0).all() and (lam < 1).all()
    assert m.step_sizes(x).shape == (2, 40, 3, 8)
    assert (m.step_sizes(x) > 0).all()


# ----------------------------------------------------------------------------- Lyapunov
@pytest.mark.parametrize("layer", [0, 1])
def test_lyapunov_exponents_equal_driven_qr(layer):
    """Closed form A·mean_t Δ against Benettin/QR on the layer's state map (float64)."""
    m = _model(d_model=2, expand=1, d_state=3, layers=2)
    x = _x(150, 3)
    rec = m.recurrence(x, layer=layer)
    D = rec.h0.shape[1]
    assert D == 6 and rec.inputs.shape == (150, 3, 2 * 2 + 3)
    res = driven_lyapunov(rec.step, rec.h0, rec.inputs, k=D)
    closed = m.lyapunov_exponents(x)[layer].reshape(3, D)             # (B, E*N)
    closed = torch.sort(closed, -1, descending=True).values
    assert torch.allclose(res.per_batch, closed, rtol=0, atol=1e-10)
    assert torch.allclose(res.exponents, closed.mean(0), atol=1e-10)
    assert (res.exponents < 0).all()
    assert res.running.shape == (150,) and res.history.shape == (150, D)
    assert abs(res.running[-1] - res.exponents[0]) < 1e-12


def test_recurrence_reproduces_the_layer_scan():
    m = _model(d_model=3, d_state=2, layers=2, d_conv=1)
    x = _x(30, 2)
    rec = m.recurrence(x, layer=1)
    h = rec.h0
    for t in range(30):
        h = rec.step(h, rec.inputs[t])
    _, recs = m._run(x, record=True)
    assert torch.allclose(h, recs[1]["h_last"].reshape(2, -1), atol=1e-13)
    with pytest.raises(ParameterError):
        m.recurrence(x, layer=2)


# ----------------------------------------------------------------------------- forward
def test_forward_shape_and_causality():
    m = _model(d_input=2, d_output=3, d_model=4, layers=2)
    x = _x(20, 2, d=2)
    y = m(x)
    assert y.shape == (20, 2, 3)
    x2 = x.clone()
    x2[12:] += 1.0
    y2 = m(x2)
    assert torch.equal(y[:12], y2[:12])                              # no leak from the future
    assert (y[12:] - y2[12:]).abs().max() > 1e-3
    r = perturbation_response(m, x, position=7)
    assert r.shape == (20,) and torch.all(r[:7] == 0) and r[7] > 0
    with pytest.raises(ShapeError):
        m(torch.zeros(5, 2, 3, dtype=torch.float64))


# ----------------------------------------------------------------------------- fast scan
def _scan_inputs(T, B=3, E=5, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    delta = torch.nn.functional.softplus(r(T, B, E))                  # Δ > 0, up to ~4
    A = -3 * torch.rand(E, N, generator=g, dtype=torch.float64) - 0.1
    return [t.requires_grad_() for t in (delta, A, r(T, B, E), r(T, B, N), r(T, B, N))]


def _scan_and_grads(scan, leaves, seed=7, **kw):
    y, h = scan(*leaves, **kw)
    g = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=g, dtype=y.dtype)
    wh = torch.randn(h.shape, generator=g, dtype=h.dtype)
    grads = torch.autograd.grad((wy * y).sum() + (wh * h).sum(), leaves)
    return [y, h, *grads]


def _close(a, b, tol=1e-10):
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("T,chunk", [(1, None), (5, 16), (16, 16), (37, 8), (37, 1), (37, 4),
                                     (40, 8), (64, None)])
def test_fast_scan_equals_sequential_reference(T, chunk):
    """Outputs, last state and every input gradient (Δ, A, u, B, C) to 1e-10 in float64:
    T < chunk, T a multiple of the chunk or not, one-token chunks."""
    leaves = _scan_inputs(T)
    ref = _scan_and_grads(selective_scan_ref, leaves)
    fast = _scan_and_grads(selective_scan, leaves, chunk=chunk)
    names = ["y", "h_last", "dΔ", "dA", "du", "dB", "dC"]
    for name, a, b in zip(names, fast, ref):
        assert a.shape == b.shape and _close(a, b), name
    # only y used (no gradient through the last state), and only h_last used
    for keep in (0, 1):
        outs = [selective_scan(*leaves, chunk=chunk), selective_scan_ref(*leaves)]
        ga, gb = (torch.autograd.grad(o[keep].sum(), leaves, materialize_grads=True)
                  for o in outs)
        assert all(_close(a, b) for a, b in zip(ga, gb))


def test_fast_scan_forward_mode_and_float32():
    leaves = [t.detach() for t in _scan_inputs(13)]
    tangents = [torch.randn_like(t) for t in leaves]
    fast = torch.func.jvp(lambda *a: selective_scan(*a, chunk=4), tuple(leaves), tuple(tangents))
    ref = torch.func.jvp(selective_scan_ref, tuple(leaves), tuple(tangents))
    assert all(_close(a, b) for a, b in zip(fast[1], ref[1]))
    # float32: the same to float32 rounding
    y32, h32 = selective_scan(*(t.float() for t in leaves), chunk=5)
    y64, h64 = selective_scan_ref(*leaves)
    assert _close(y32.double(), y64, 1e-5) and _close(h32.double(), h64, 1e-5)


@pytest.mark.parametrize("T,chunk", [(37, 8), (3, 8)])
def test_model_fast_path_equals_reference(T, chunk, monkeypatch):
    """The whole model (2 layers, conv, norms): outputs and every parameter gradient agree with
    the step-by-step scan to 1e-10; the recorded last states too."""
    m = _model(d_input=2, d_output=3, d_model=4, d_state=5, layers=2)  # E = 8, N = 5
    B = 3
    monkeypatch.setattr(selective_module, "_CHUNK_ELEMENTS", chunk * B * 8 * 5)
    x = _x(T, B, d=2)
    params = list(m.parameters())
    y_fast, y_ref = m(x), m(x, reference=True)
    assert _close(y_fast, y_ref)
    w = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g_fast = torch.autograd.grad((w * y_fast).sum(), params)
    g_ref = torch.autograd.grad((w * y_ref).sum(), params)
    for (name, _), a, b in zip(m.named_parameters(), g_fast, g_ref):
        assert _close(a, b), name
    with torch.no_grad():
        _, fast = m._run(x, record=True)
        _, ref = m._run(x, record=True, reference=True)
    for rf, rr in zip(fast, ref):
        assert _close(rf["h_last"], rr["h_last"])


def test_token_parameters_sign_of_mu():
    m = _model(d_model=3, d_state=4)
    R, N = m.config.rank, 4
    W = m.blocks[0].x_proj.weight
    with torch.no_grad():
        W[R + N:] = W[R:R + N]                                        # S_C = S_B
    tp = m.token_parameters()
    SB = W[R:R + N].detach()
    mu_d = (SB * SB).sum(0)                                           # mu_d = |S_B[:, d]|²
    assert torch.allclose(tp["mu_channels"][0], mu_d, atol=1e-12)
    assert tp["mu_eigenvalues"].shape == (1, 6) and tp["mu_min"][0] > -1e-12
    assert tp["definiteness"][0] == "semidefinite+"                   # rank N=4 < d_inner=6
    # the marker: channel means; the mean mu is also the mean eigenvalue (a trace)
    assert isinstance(tp["mu"], float) and abs(tp["mu"] - mu_d.mean().item()) < 1e-12
    assert abs(tp["mu"] - tp["mu_mean"][0].item()) < 1e-12
    with torch.no_grad():
        W[R + N:] = -W[R:R + N]                                       # S_C = -S_B
    tp = m.token_parameters()
    assert (tp["mu_channels"][0] < 0).all() and tp["mu_max"][0] < 1e-12 and tp["mu"] < 0
    assert tp["s_delta_channels"].shape == (1, 6) and tp["b_channels"].shape == (1, 6)
    S_delta = m.blocks[0].dt_proj.weight @ W[:R]
    assert torch.allclose(tp["s_delta_channels"][0], torch.diagonal(S_delta).detach(), atol=1e-12)
    assert abs(tp["s_delta"] - torch.diagonal(S_delta).mean().item()) < 1e-12
    assert abs(tp["b"] - m.blocks[0].dt_proj.bias.mean().item()) < 1e-12
    assert token_regime(tp["mu"], tp["s_delta"], tp["b"], 1.0) == "converge"


# ----------------------------------------------------------------------------- token dynamics
def test_token_ode_blowup_time():
    """S_Δ = 0, μ = 0.5, b = 0, x0 = 1: x = 1/sqrt(1 - 2μ softplus(b) t), t* = 1.4427."""
    tstar = 1 / (2 * 0.5 * SP0)
    assert abs(tstar - 1.4427) < 1e-4
    t = torch.linspace(0, 2, 2001, dtype=torch.float64)
    X = token_ode(0.5, 0.0, 0.0, 1.0, t)
    first_nan = int(torch.isnan(X[:, 0]).nonzero()[0])
    assert abs(t[first_nan].item() - tstar) < 0.01 * tstar
    ok = t < 0.99 * tstar
    exact = 1 / torch.sqrt(1 - 2 * 0.5 * SP0 * t[ok])
    assert torch.allclose(X[ok, 0], exact, rtol=1e-6)
    assert abs(token_blowup_time(0.5, 0.0, 0.0, 1.0) - tstar) < 1e-3 * tstar
    # x0 = 2 blows up four times sooner
    assert abs(token_blowup_time(0.5, 0.0, 0.0, 2.0) - tstar / 4) < 1e-3 * tstar


def test_token_ode_decay_rate():
    """μ < 0: x → 0 like 1/sqrt(2|μ| softplus(b) t)."""
    mu, b = -0.5, 0.3
    sp = math.log1p(math.exp(b))
    t = torch.tensor([0.0, 1e2, 1e3, 1e4], dtype=torch.float64)
    X = token_ode(mu, 0.0, b, 1.0, t)[:, 0]
    exact = 1 / torch.sqrt(1 + 2 * abs(mu) * sp * t)
    assert torch.allclose(X, exact, rtol=1e-6)
    ratio = X[-1] * math.sqrt(2 * abs(mu) * sp * 1e4)
    assert abs(ratio - 1) < 1e-3
    slope = (math.log(X[-1]) - math.log(X[-2])) / math.log(10)         # d log x / d log t
    assert abs(slope + 0.5) < 1e-3


def test_token_regime_agrees_with_ode():
    t = torch.tensor([0.0, 5.0, 50.0], dtype=torch.float64)
    cases = [(-0.5, 1.0, 0.0, 1.0, "converge"), (0.5, 1.0, 0.0, 1.0, "diverge-fast"),
             (0.5, -1.0, 0.0, 1.0, "diverge-slow"), (0.5, 1.0, 0.0, -1.0, "diverge-slow"),
             (0.5, -2.0, 0.5, [1.0, 0.5, 2.0], "diverge-slow"),
             (0.5, -2.0, 0.5, [1.0, -0.5, 2.0], "diverge-fast"),
             (-1.0, 2.0, 0.0, [1.0, -0.5, 2.0], "converge")]
    for mu, s, b, x0, want in cases:
        assert token_regime(mu, s, b, x0) == want, (mu, s, x0)
        X = token_ode(mu, s, b, x0, t)
        x0t = torch.as_tensor(x0, dtype=torch.float64).reshape(-1)
        if want == "converge":
            assert torch.all(X[-1].abs() < X[1].abs()) and torch.all(X[1].abs() < x0t.abs())
        elif want == "diverge-fast":
            assert torch.isnan(X[-1]).all()
            assert math.isfinite(token_blowup_time(mu, s, b, x0, t_max=50.0))
        else:
            assert torch.isfinite(X).all() and torch.all(X[-1].abs() > x0t.abs())
            assert X[-1].abs().max() < 100                           # logarithmic growth


def test_phase_diagram_codes_and_blowup_times():
    pd = phase_diagram((-1, 1), (-2, 2), b=0.0, n=5)
    assert pd["labels"] == list(REGIME_LABELS)
    assert pd["regime"].shape == (5, 5) and pd["mu"].shape == (5,) and pd["sdx"].shape == (5,)
    want = np.array([[0, 0, 0, 1, 1]] * 2 + [[0, 0, 0, 2, 2]] * 3)     # rows: sdx, cols: mu
    assert np.array_equal(pd["regime"], want)
    assert np.array_equal(token_regime_codes(pd["mu"][None], pd["sdx"][:, None]), want)
    # S_Δ x0 = 0: t* = 1/(2 μ softplus(b) x0²)
    assert np.allclose(pd["blowup_time"][2, 3:], 1 / (2 * pd["mu"][3:] * SP0), rtol=1e-10)
    assert np.isnan(pd["blowup_time"][pd["regime"] != 2]).all()
    # S_Δ x0 > 0: the quadrature against the ODE
    pd = phase_diagram((0.25, 1.0), (0.0, 1.0), b=-0.5, n=4, m=3, x0=1.0)
    t_ode = token_blowup_time(pd["mu"][1], pd["sdx"][2], -0.5, 1.0)
    assert abs(pd["blowup_time"][2, 1] - t_ode) < 2e-3 * t_ode


# ----------------------------------------------------------------------------- driven
def test_driven_lyapunov_linear_diagonal():
    a = torch.tensor([0.9, -0.5, 0.3, 1.1, -0.05], dtype=torch.float64)
    u = torch.randn(200, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h0 = torch.zeros(3, 5, dtype=torch.float64)
    want = torch.sort(a.abs().log(), descending=True).values
    full = driven_lyapunov(lambda h, v: a * h + v, h0, u, k=5)
    assert torch.allclose(full.exponents, want, atol=1e-12)
    assert torch.allclose(full.per_batch, want.expand(3, 5), atol=1e-12)
    lazy = driven_lyapunov(lambda h, v: a * h + v, h0, u, k=5, renorm_every=7)
    assert torch.allclose(lazy.exponents, want, atol=1e-12)
    assert torch.isnan(lazy.running[:6]).all() and torch.isfinite(lazy.running[6:]).all()
    # two exponents from a random frame (forward-mode tangents): O(1/T) transient
    top = driven_lyapunov(lambda h, v: a * h + v, h0, torch.randn(1000, 3, 5, dtype=torch.float64),
                          k=2, mode="jvp")
    assert torch.allclose(top.exponents, want[:2], atol=1e-2)
    with pytest.raises(ParameterError):
        driven_lyapunov(lambda h, v: a * h + v, h0, u, k=6)
    with pytest.raises(ShapeError):
        driven_lyapunov(lambda h, v: a * h + v, h0, u[:, :2], k=1)


def test_driven_lyapunov_nonlinear_rnn_matches_jacobian_products():
    """tanh RNN: the exponents add up to the mean log-volume growth, Σ_t log|det J_t| / T."""
    g = torch.Generator().manual_seed(3)
    W = 0.75 * torch.randn(4, 4, generator=g, dtype=torch.float64)
    u = torch.randn(40, 2, 4, generator=g, dtype=torch.float64)

    def step(h, v):
        return torch.tanh(h @ W.T + v)

    res = driven_lyapunov(step, torch.zeros(2, 4, dtype=torch.float64), u, k=4)
    h, logdet = torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for t in range(40):                                               # J_t = diag(1 - h_t²) W
        h = step(h, u[t])
        logdet += torch.log(1 - h ** 2).sum(-1) + torch.linalg.slogdet(W)[1]
    assert torch.allclose(res.per_batch.sum(-1), logdet / 40, atol=1e-10)
    assert (res.exponents[:-1] >= res.exponents[1:]).all()


def test_perturbation_response_linear_recurrence():
    a = -0.8

    def f(x):                                                         # h_t = a h_{t-1} + x_t
        hs, h = [], torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            h = a * h + x[t]
            hs.append(h)
        return torch.stack(hs)

    x = _x(30, 4)
    s = 5
    want = torch.zeros(30, dtype=torch.float64)
    want[s:] = abs(a) ** torch.arange(25, dtype=torch.float64)
    assert torch.allclose(perturbation_response(f, x, position=s), want, atol=1e-9)
    assert torch.allclose(perturbation_response(f, x, position=s, eps=None), want, atol=1e-14)
    with pytest.raises(ParameterError):
        perturbation_response(f, x, position=30)
