"""Linear SSMs (explorer.models.ssm): known answers from docs/notes/ssm_spectra.md §10.

Initialisations: LegS eigenvalues exactly -1..-N, LegS + PPᵀ = -I/2 + skew, LegT + PᵀP skew,
S4D-Lin/Inv/Real closed forms, the LegS normal part (legs-diag) at N = 8 and 64, the LRU ring
law, the zero-real timescale. Discretisation maps (ZOH, bilinear, Euler), their orders as
Δ → 0 and the ZOH limit at λ = 0. The Vandermonde kernel + FFT equals the recurrent scan
(float64, 1e-12), for diagonal and dense systems and for the whole model. Autocorrelation
λ_max of AR(1) and white noise. The model: log-uniform Δ, memory function = impulse response,
Lyapunov exponent = max Δ Re λ, zero-real moving left, seeding, typed errors.
"""

import math

import numpy as np
import pytest
import torch
from scipy.signal import lfilter

from explorer.core.errors import ParameterError, ShapeError, SizeLimitError
from explorer.models.ssm import (
    DISCRETIZATIONS,
    INITS,
    SSMConfig,
    SSMModel,
    autocorrelation_lambda_max,
    build_ssm,
    continuous_eigenvalues,
    dense_kernel,
    dense_scan,
    discretize,
    discretize_dense,
    fft_conv,
    legs_rank_correction,
    legt_rank_correction,
    ssm_kernel,
    ssm_scan,
    state_init,
    zero_real_timescale,
)

F64, C128 = torch.float64, torch.complex128


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def crandn(*shape, g):
    return torch.complex(torch.randn(*shape, generator=g, dtype=F64),
                         torch.randn(*shape, generator=g, dtype=F64))


# ============================================================================ initialisations
@pytest.mark.parametrize("N", [8, 64])
def test_legs_eigenvalues_are_minus_one_to_minus_n(N):
    si = state_init("legs", N)
    expected = -torch.arange(1, N + 1, dtype=F64)
    assert not si.diagonal and si.A.shape == (N, N) and si.A.dtype == F64
    assert torch.equal(si.eigenvalues.real, expected) and torch.all(si.eigenvalues.imag == 0)
    # a numerical eigensolver on A agrees (A is triangular)
    ev = torch.sort(torch.linalg.eigvals(si.A).real).values
    assert torch.allclose(ev, torch.flip(expected, [0]), atol=1e-9)
    assert torch.allclose(si.B, torch.sqrt(2 * torch.arange(N, dtype=F64) + 1))
    A = si.A                                                        # the formula
    assert A[3, 1] == pytest.approx(-math.sqrt(7) * math.sqrt(3)) and A[1, 3] == 0 and A[2, 2] == -3


def test_legs_plus_ppt_is_minus_half_plus_skew():
    N = 32
    A = state_init("legs", N).A
    P = legs_rank_correction(N)
    S = A + torch.outer(P, P) + 0.5 * torch.eye(N, dtype=F64)
    assert float((S + S.T).abs().max()) < 1e-12
    assert float(S.abs().max()) > 1.0                               # not trivially zero
    # without the correction it is not skew
    S0 = A + 0.5 * torch.eye(N, dtype=F64)
    assert float((S0 + S0.T).abs().max()) > 1.0


def test_legt_rank2_correction_is_skew_and_regression_values():
    N = 16
    A = state_init("legt", N).A
    P = legt_rank_correction(N)
    assert P.shape == (2, N)
    S = A + P.T @ P
    assert float((S + S.T).abs().max()) < 1e-12
    assert float((A + A.T).abs().max()) > 1.0
    ev = state_init("legt", 8).eigenvalues                          # note §1, N = 8
    expected = [-5.085 + 0.825j, -4.703 + 2.485j, -3.869 + 4.185j, -2.343 + 6.005j]
    for z in expected:
        for w in (z, z.conjugate()):
            assert float((ev - w).abs().min()) < 2e-3
    assert float(ev.real.max()) < 0                                 # Hurwitz


def test_s4d_lin_inv_real():
    N = 64
    n = torch.arange(N // 2, dtype=F64)
    lin = state_init("s4d-lin", N)
    assert lin.pairs and lin.diagonal and lin.A is None and lin.eigenvalues.shape == (N,)
    assert torch.allclose(lin.modes, torch.complex(torch.full_like(n, -0.5), math.pi * n),
                          atol=1e-14, rtol=0)
    assert torch.allclose(lin.eigenvalues[N // 2:], lin.modes.conj())
    inv = state_init("s4d-inv", N).modes.imag
    assert float(inv[0]) == pytest.approx(64 / math.pi * 63, rel=1e-12)
    assert float(inv[0]) == pytest.approx(1283.4254, abs=1e-3)
    assert float(inv[-1]) == pytest.approx(64 / (63 * math.pi), rel=1e-12)
    assert float(inv[-1]) == pytest.approx(0.32336, abs=1e-5)
    assert torch.all(state_init("s4d-inv", N).modes.real == -0.5)
    real = state_init("s4d-real", N)
    assert not real.pairs and real.modes.shape == (N,)
    assert torch.equal(real.eigenvalues.real, -(torch.arange(N, dtype=F64) + 1))
    assert torch.all(real.eigenvalues.imag == 0)


def test_legs_diag_is_the_legs_normal_part():
    si = state_init("legs-diag", 8)
    assert si.pairs and torch.allclose(si.eigenvalues.real, torch.full((8,), -0.5, dtype=F64),
                                       atol=1e-12)
    im = torch.sort(si.modes.imag.abs(), descending=True).values
    assert torch.allclose(im, torch.tensor([19.857, 5.354, 1.958, 0.427], dtype=F64), atol=2e-3)
    # the full spectrum equals the eigenvalues of A + PPᵀ (dense solver)
    A, P = state_init("legs", 8).A, legs_rank_correction(8)
    ev = torch.linalg.eigvals(A + torch.outer(P, P))
    for z in si.eigenvalues:
        assert float((ev - z).abs().min()) < 1e-9
    im64 = state_init("legs-diag", 64).modes.imag.abs()
    assert float(im64.max()) == pytest.approx(1303.27, abs=0.01)
    assert float(im64.min()) == pytest.approx(0.2639, abs=1e-4)
    # S4D-Inv approximates it (note §2): the same order of magnitude at both ends
    inv = state_init("s4d-inv", 64).modes.imag
    assert 0.95 < float(inv.max() / im64.max()) < 1.0 and 1.0 < float(inv.min() / im64.min()) < 1.3


def test_random_init_has_abscissa_minus_half_and_follows_the_generator():
    a = state_init("random", 32, generator=gen(3))
    b = state_init("random", 32, generator=gen(3))
    c = state_init("random", 32, generator=gen(4))
    assert torch.equal(a.A, b.A) and not torch.equal(a.A, c.A)
    assert float(a.eigenvalues.real.max()) == pytest.approx(-0.5, abs=1e-9)
    assert float(a.eigenvalues.imag.abs().max()) > 0.1              # genuinely complex


@pytest.mark.parametrize("name", INITS)
def test_every_init_is_well_formed(name):
    si = state_init(name, 16, generator=gen(1))
    assert si.eigenvalues.dtype == C128 and si.eigenvalues.shape == (16,) and si.B.shape == (16,)
    assert si.note and si.name == name
    assert float(si.eigenvalues.real.max()) <= 1e-12               # stable or marginal
    # the spectrum is closed under conjugation (a real system)
    ev = si.eigenvalues
    for z in ev:
        assert float((ev - z.conj()).abs().min()) < 1e-9
    cont = continuous_eigenvalues(name, 16, generator=gen(1))
    key = cont.imag.numpy() + 1e-9 * 0
    assert np.all(np.diff(key) >= 0)                                # sorted by imaginary part


def test_lru_ring_law():
    r_min, r_max, max_phase, dt = 0.4, 0.9, 3.0, 0.5
    g = gen(7)
    draws = [state_init("lru", 4096, generator=g, r_min=r_min, r_max=r_max, max_phase=max_phase,
                        dt=dt) for _ in range(10)]                  # 20,480 modes
    si = draws[0]
    modes = torch.cat([d.modes for d in draws])
    lam_bar = torch.exp(dt * modes)                                 # back to the discrete ring
    mod2 = lam_bar.abs() ** 2
    assert float(mod2.mean()) == pytest.approx((r_min ** 2 + r_max ** 2) / 2, abs=0.004)
    assert float(mod2.min()) >= r_min ** 2 - 1e-12 and float(mod2.max()) <= r_max ** 2 + 1e-12
    theta = dt * modes.imag                                         # arg λ̄ in [0, max_phase]
    assert float(theta.min()) >= 0 and float(theta.max()) <= max_phase
    assert float(theta.mean()) == pytest.approx(max_phase / 2, abs=0.03)
    assert float((theta < max_phase / 4).double().mean()) == pytest.approx(0.25, abs=0.01)
    gamma = torch.cat([d.mode_B.real for d in draws])               # γ²/(1 - |λ̄|²) = 1
    assert torch.allclose(gamma ** 2 / (1 - mod2), torch.ones_like(gamma))
    assert si.dt == dt
    # tighter ring (the paper's long-range setting): all |λ̄| near 1
    tight = torch.exp(state_init("lru", 64, r_min=0.9, r_max=0.999, generator=gen(1)).modes).abs()
    assert float(tight.min()) >= 0.9 - 1e-12 and float(tight.max()) <= 0.999


# ============================================================================ discretisation
def test_discretization_maps_and_unit_circle():
    g = gen(2)
    lam = torch.complex(-torch.rand(50, generator=g, dtype=F64) * 3,
                        torch.randn(50, generator=g, dtype=F64) * 5)
    dt = 0.07
    zoh, bz = discretize(lam, dt, "zoh")
    assert torch.allclose(zoh, torch.exp(dt * lam), rtol=1e-14, atol=0)
    assert torch.allclose(bz, (torch.exp(dt * lam) - 1) / lam, rtol=1e-12, atol=0)
    bil, bb = discretize(lam, dt, "bilinear")
    assert torch.allclose(bil, (1 + dt * lam / 2) / (1 - dt * lam / 2), rtol=1e-14, atol=0)
    assert torch.allclose(bb, dt / (1 - dt * lam / 2), rtol=1e-14, atol=0)
    eul, be = discretize(lam, dt, "euler")
    assert torch.allclose(eul, 1 + dt * lam, rtol=1e-15, atol=0)
    assert torch.allclose(be, torch.full_like(be, dt), rtol=1e-15, atol=0)
    assert bool((zoh.abs() < 1).all() and (bil.abs() < 1).all())   # left half-plane -> disk
    # the imaginary axis goes onto the unit circle (bilinear, ZOH)
    w = torch.complex(torch.zeros(20, dtype=F64), torch.linspace(-30, 30, 20, dtype=F64))
    for method in ("bilinear", "zoh"):
        assert torch.allclose(discretize(w, 0.1, method)[0].abs(), torch.ones(20, dtype=F64),
                              atol=1e-14)
    # bilinear inverse: λ = (2/Δ)(z-1)/(z+1)
    assert torch.allclose((2 / dt) * (bil - 1) / (bil + 1), lam, rtol=1e-12)
    # per-channel steps broadcast
    lb, _ = discretize(lam[None, :5], torch.tensor([[0.1], [0.2]], dtype=F64), "zoh")
    assert lb.shape == (2, 5) and torch.allclose(lb[1], torch.exp(0.2 * lam[:5]))


def test_discretizations_agree_to_second_and_third_order():
    lam = torch.tensor([-0.5 + 3.0j, -2.0 + 0.5j, -1.0 + 0j], dtype=C128)
    errs = {"bilinear": [], "euler": []}
    dts = [0.04, 0.02, 0.01]
    for dt in dts:
        z = discretize(lam, dt, "zoh")[0]
        for m, e in errs.items():
            e.append(float((discretize(lam, dt, m)[0] - z).abs().max()))
    for a, b in zip(errs["bilinear"][:-1], errs["bilinear"][1:]):
        assert a / b == pytest.approx(8.0, rel=0.1)                 # O(Δ³)
    for a, b in zip(errs["euler"][:-1], errs["euler"][1:]):
        assert a / b == pytest.approx(4.0, rel=0.1)                 # O(Δ²)
    # the input factors agree to first order: b̄/Δ -> 1
    for m in DISCRETIZATIONS:
        assert torch.allclose(discretize(lam, 1e-6, m)[1] / 1e-6, torch.ones(3, dtype=C128),
                              atol=1e-5)


def test_zoh_input_factor_at_zero_is_finite_and_equals_dt():
    dt = 0.3
    lam = torch.tensor([0j, 1e-13 + 0j, 1e-9j, 1e-5 - 1e-5j, 2e-3 + 0j], dtype=C128)
    lb, b = discretize(lam, dt, "zoh")
    assert bool(torch.isfinite(b).all())
    assert complex(b[0]) == dt and complex(lb[0]) == 1
    exact = torch.where(lam == 0, torch.full_like(lam, dt), torch.expm1(dt * lam) / lam)
    assert torch.allclose(b[1:], exact[1:], rtol=1e-13, atol=0)
    # continuous across the series threshold |Δλ| = 1e-3
    _, b2 = discretize(torch.tensor([0.999e-3 / dt, 1.001e-3 / dt], dtype=F64), dt, "zoh")
    assert torch.allclose(b2, dt * torch.expm1(torch.tensor([0.999e-3, 1.001e-3], dtype=F64))
                          / torch.tensor([0.999e-3, 1.001e-3], dtype=F64), rtol=1e-15)
    # gradients are finite at λ = 0 (no 0/0 in the unused branch)
    x = torch.zeros(3, dtype=C128, requires_grad=True)
    discretize(x, dt, "zoh")[1].real.sum().backward()
    assert bool(torch.isfinite(torch.view_as_real(x.grad)).all())


def test_euler_makes_s4d_inv_unstable():
    lam = state_init("s4d-inv", 64).modes
    assert float(discretize(lam, 0.1, "euler")[0].abs().max()) > 10
    assert float(discretize(lam, 0.1, "zoh")[0].abs().max()) < 1
    assert float(discretize(lam, 0.1, "bilinear")[0].abs().max()) < 1


def test_dense_discretization():
    A, B = state_init("legs", 6).A, state_init("legs", 6).B
    dt = 0.05
    Ab, Bb = discretize_dense(A, B, dt, "zoh")
    assert torch.allclose(Ab, torch.linalg.matrix_exp(dt * A), rtol=1e-12, atol=1e-14)
    expected = torch.linalg.solve(dt * A, (Ab - torch.eye(6, dtype=F64)) @ (dt * B))
    assert torch.allclose(Bb, expected, rtol=1e-10, atol=1e-14)
    ev = torch.sort(torch.linalg.eigvals(Ab).real).values           # eigenvalues exp(Δλ)
    assert torch.allclose(ev, torch.sort(torch.exp(-dt * torch.arange(1, 7, dtype=F64))).values)
    # a diagonal A reproduces the elementwise maps; a singular A is fine for ZOH
    d = torch.tensor([-1.0, -0.2, 0.0], dtype=F64)
    for m in DISCRETIZATIONS:
        Ab, Bb = discretize_dense(torch.diag(d), torch.ones(3, dtype=F64), 0.3, m)
        lb, bf = discretize(d, 0.3, m)
        assert torch.allclose(torch.diagonal(Ab), lb, atol=1e-14)
        assert torch.allclose(Bb, bf, atol=1e-14)
    # batched per-channel steps
    Ab, Bb = discretize_dense(A, B.expand(4, 6), torch.tensor([0.01, 0.02, 0.05, 0.1], dtype=F64))
    assert Ab.shape == (4, 6, 6) and Bb.shape == (4, 6)
    assert torch.allclose(Ab[2], torch.linalg.matrix_exp(0.05 * A), atol=1e-13)


# ============================================================================ kernel = scan
def test_diagonal_kernel_equals_scan_float64():
    g = gen(5)
    H, M, T, Bsz = 3, 6, 300, 2
    lam = state_init("s4d-lin", 2 * M).modes.expand(H, M)
    dt = torch.tensor([[0.01], [0.05], [0.2]], dtype=F64)
    lam_bar, bf = discretize(lam, dt, "zoh")
    Bv, C = crandn(H, M, g=g), crandn(H, M, g=g)
    u = torch.randn(T, Bsz, H, generator=g, dtype=F64)
    K = ssm_kernel(lam_bar, C * bf * Bv, T)                          # (H, T)
    assert K.shape == (H, T) and K.dtype == F64
    y_conv = fft_conv(u, K)
    y_scan = ssm_scan(lam_bar, bf * Bv, C, u)
    assert y_scan.shape == (T, Bsz, H)
    assert float((y_conv - y_scan).abs().max()) <= 1e-12 * max(1.0, float(y_scan.abs().max()))
    # one mode: K_l = 2 Re(C b̄ B λ̄^l); real modes without doubling: K_l = C b̄ B λ̄^l
    lb = torch.tensor([0.9 * np.exp(0.3j)], dtype=C128)
    K1 = ssm_kernel(lb, torch.tensor([0.7 - 0.2j], dtype=C128), 5)
    assert torch.allclose(K1, 2 * torch.tensor([((0.7 - 0.2j) * complex(lb[0]) ** k).real
                                                for k in range(5)], dtype=F64))
    Kr = ssm_kernel(torch.tensor([0.8], dtype=F64), torch.tensor([2.0], dtype=F64), 4, conj=False)
    assert torch.allclose(Kr, torch.tensor([2.0, 1.6, 1.28, 1.024], dtype=F64))
    yr = ssm_scan(torch.tensor([0.8], dtype=F64), torch.tensor([2.0], dtype=F64),
                  torch.tensor([1.0], dtype=F64), u[:, 0, 0], conj=False)
    assert torch.allclose(yr, fft_conv(u[:, 0, 0], Kr.new_tensor(0.8) ** torch.arange(T) * 2.0),
                          atol=1e-12)


def test_kernel_handles_zero_and_unit_modulus_modes():
    lb = torch.tensor([0j, 1 + 0j, np.exp(1j)], dtype=C128)        # Euler at Δλ = -1, zero-real
    K = ssm_kernel(lb, torch.ones(3, dtype=C128), 4)
    expected = [2 * (1 + 1 + math.cos(0)), 2 * (0 + 1 + math.cos(1)), 2 * (1 + math.cos(2)),
                2 * (1 + math.cos(3))]
    assert torch.allclose(K, torch.tensor(expected, dtype=F64), atol=1e-13)


def test_dense_kernel_equals_scan_float64():
    g = gen(6)
    for name in ("legs", "legt", "random"):
        si = state_init(name, 12, generator=g)
        dt = torch.tensor([0.02, 0.3], dtype=F64)
        Ab, Bb = discretize_dense(si.A, si.B.expand(2, 12), dt, "bilinear")
        C = torch.randn(2, 12, generator=g, dtype=F64)
        T = 257
        K = dense_kernel(Ab, Bb, C, T)
        assert K.shape == (2, T)
        K_pow = torch.stack([C[1] @ torch.linalg.matrix_power(Ab[1], k) @ Bb[1] for k in (0, 1, 100)])
        assert torch.allclose(K[1, [0, 1, 100]], K_pow, atol=1e-12)
        u = torch.randn(T, 3, 2, generator=g, dtype=F64)
        y_scan = dense_scan(Ab, Bb, C, u)
        y_conv = fft_conv(u, K)
        assert float((y_conv - y_scan).abs().max()) <= 1e-12 * max(1.0, float(y_scan.abs().max()))


def test_fft_conv_is_causal_convolution():
    g = gen(8)
    u = torch.randn(50, generator=g, dtype=F64)
    K = torch.randn(30, generator=g, dtype=F64)
    ref = np.convolve(u.numpy(), K.numpy())[:50]
    assert np.allclose(fft_conv(u, K).numpy(), ref, atol=1e-12)
    u2 = torch.randn(50, 4, 3, generator=g, dtype=F64)
    K2 = torch.randn(3, 80, generator=g, dtype=F64)                 # longer than T: cut
    y = fft_conv(u2, K2)
    assert y.shape == (50, 4, 3)
    assert np.allclose(y[:, 2, 1].numpy(), np.convolve(u2[:, 2, 1].numpy(), K2[1].numpy())[:50],
                       atol=1e-12)


@pytest.mark.parametrize("init,disc,layers,readout", [
    ("s4d-lin", "zoh", 1, "linear"), ("s4d-inv", "bilinear", 2, "mlp"),
    ("s4d-real", "zoh", 1, "linear"), ("legs-diag", "euler", 1, "linear"),
    ("lru", "zoh", 2, "linear"), ("zero-real", "zoh", 1, "mlp"),
    ("legs", "zoh", 1, "linear"), ("legt", "bilinear", 2, "linear"), ("random", "euler", 1, "linear"),
])
def test_model_conv_equals_scan(init, disc, layers, readout):
    cfg = SSMConfig(init=init, discretization=disc, layers=layers, readout=readout, state_size=10,
                    channels=3, d_input=2, d_output=2, seed=4)
    conv = SSMModel(cfg).double()
    scan = SSMModel(cfg.replace(mode="scan")).double()
    scan.load_state_dict(conv.state_dict())
    x = torch.randn(120, 2, 2, generator=gen(9), dtype=F64)
    with torch.no_grad():
        a, b = conv(x), scan(x)
    assert a.shape == (120, 2, 2) and a.dtype == F64
    assert float((a - b).abs().max()) <= 1e-12 * max(1.0, float(b.abs().max()))
    # the float32 default runs too and is close
    with torch.no_grad():
        y32 = SSMModel(cfg)(x.float())
    assert y32.dtype == torch.float32
    assert float((y32.double() - a).abs().max()) < 1e-3 * max(1.0, float(a.abs().max()))


# ============================================================================ timescales
def test_autocorrelation_lambda_max_ar1_and_white_noise():
    rng = np.random.default_rng(0)
    phi, T, burn = 0.8, 1 << 16, 200
    eps = rng.standard_normal((T + burn, 8)) * math.sqrt(1 - phi ** 2)   # unit variance
    x = lfilter([1.0], [1.0, -phi], eps, axis=0)[burn:]
    lam = autocorrelation_lambda_max(torch.from_numpy(x), 200)
    assert lam == pytest.approx((1 + phi) / (1 - phi), rel=0.04)        # -> 9 (8.96 at L = 200)
    white = torch.from_numpy(rng.standard_normal((T, 8)))
    assert autocorrelation_lambda_max(white, 200) == pytest.approx(1.0, abs=0.06)
    assert autocorrelation_lambda_max(white[:, 0] * 3, 50) == pytest.approx(9.0, rel=0.08)
    # a constant input: λ_max = L (x xᵀ is all ones)
    assert autocorrelation_lambda_max(torch.ones(4000), 40) == pytest.approx(40 * (1 - 20 / 4000), rel=0.02)


def test_zero_real_timescale_and_init():
    assert zero_real_timescale(1024, 1.0) == pytest.approx(1 / 32)
    assert zero_real_timescale(100, 9.0, c=2.0) == pytest.approx(2 / 30)
    si = state_init("zero-real", 16, seq_len=400)
    assert torch.all(si.eigenvalues.real == 0) and si.dt == pytest.approx(1 / 20)
    assert torch.allclose(si.modes.imag, math.pi * torch.arange(8, dtype=F64))
    assert state_init("zero-real", 16, seq_len=400, autocorr=4.0).dt == pytest.approx(1 / 40)
    assert state_init("zero-real", 16, dt=0.2).dt == 0.2
    x = torch.ones(2000)                                            # constant input: Δ ∝ 1/L
    assert state_init("zero-real", 4, seq_len=100, autocorr=x).dt == pytest.approx(
        1 / math.sqrt(100 * 100 * (1 - 50 / 2000)), rel=0.02)
    # the unit circle exactly (ZOH) and a zero Lyapunov exponent
    m = SSMModel(init="zero-real", state_size=16).double()
    assert torch.all(m.eigenvalues().real == 0)
    assert torch.allclose(m.discrete_eigenvalues().abs(), torch.ones(1, 4, 8, dtype=F64), atol=1e-15)
    assert m.lyapunov_exponent() == pytest.approx(0.0, abs=1e-15)
    assert torch.allclose(m.dt(), torch.full((1, 4), 1 / 32, dtype=F64))


def test_zero_real_moves_left_and_stays_stable_under_training():
    m = SSMModel(init="zero-real", state_size=16, seed=1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x = torch.randn(128, 4, 1, generator=gen(1))
    for _ in range(20):
        loss = (m(x) ** 2).mean()                                   # decay wins
        opt.zero_grad()
        loss.backward()
        opt.step()
    re = m.eigenvalues().real
    assert float(re.max()) <= 0.0                                   # never right of the axis
    assert int((re < -1e-3).sum()) >= 8                             # moved left
    # the parameterisation: Re λ = min(a, 0) with a straight-through gradient
    a = m.ssm[0].A_real
    with torch.no_grad():
        a[0, :2] = torch.tensor([0.3, -0.2])
    re = m.ssm[0].real_part()
    assert float(re[0, 0].detach()) == 0.0 and float(re[0, 1].detach()) == pytest.approx(-0.2)
    assert float(m.eigenvalues().real.max()) <= 0.0
    a.grad = None
    re[0, 0].backward()
    assert float(a.grad[0, 0]) == 1.0                               # a > 0 is not a dead end


# ============================================================================ the model
def test_dt_is_log_uniform():
    m = SSMModel(channels=2000, state_size=2, init="s4d-lin", seed=3)
    dt = m.dt().double()
    assert dt.shape == (1, 2000)
    lg = torch.log10(dt)
    assert float(lg.mean()) == pytest.approx(-2.0, abs=0.05)        # sd 0.58/sqrt(2000) = 0.013
    assert float(lg.min()) >= -3 - 1e-6 and float(lg.max()) <= -1 + 1e-6
    assert float((lg < -2).double().mean()) == pytest.approx(0.5, abs=0.05)
    m2 = SSMModel(channels=8, dt_min=0.01, dt_max=0.01, train_dt=False)
    assert torch.allclose(m2.dt(), torch.full((1, 8), 0.01))
    assert not m2.ssm[0].log_dt.requires_grad


@pytest.mark.parametrize("init", ["s4d-lin", "s4d-real", "legs"])
def test_memory_function_is_the_impulse_response(init):
    m = SSMModel(init=init, state_size=8, channels=3, seed=2).double()
    L = 64
    x = torch.zeros(L, 2, 1, dtype=F64)
    x[0, 0, 0] = 1.0
    y = m(x)[..., 0]
    response = y[:, 0] - y[:, 1]                                    # minus the zero-input output
    rho = m.memory_function(L)
    assert rho.shape == (L,)
    D = float(m.feedthrough()[0, 0])
    expected = rho.clone()
    expected[0] += D
    assert torch.allclose(response, expected, atol=1e-13)
    assert float(rho.abs().max()) > 1e-5
    # LTI: y_t = sum_s rho(s) x_{t-s} + D x_t + b for any input
    u = torch.randn(L, 1, 1, generator=gen(0), dtype=F64)
    pred = fft_conv(u[:, 0, 0], rho) + D * u[:, 0, 0] + float(m.b_out[0].detach())
    assert torch.allclose(m(u)[:, 0, 0], pred, atol=1e-12)


def test_step_response_memory_of_nonlinear_models():
    m = SSMModel(layers=2, state_size=8, channels=3, seed=5).double()
    mem = m.memory_function(50)
    assert mem.shape == (50,) and bool((mem >= 0).all()) and float(mem.max()) > 0
    x = torch.ones(50, 1, 1, dtype=F64)
    y = m(x)[:, 0, 0]
    assert torch.allclose(mem[1:], (y[1:] - y[:-1]).abs(), atol=1e-14)
    # the same definition on an LTI model gives |rho(s)| for s >= 1 (|rho(0) + D| at 0)
    lin_cfg = SSMModel(state_size=8, channels=3, seed=5).double()
    rho = lin_cfg.memory_function(50)
    yl = lin_cfg(torch.ones(50, 1, 1, dtype=F64))[:, 0, 0]
    assert torch.allclose((yl[1:] - yl[:-1]).abs(), rho[1:].abs(), atol=1e-13)


@pytest.mark.parametrize("init", ["s4d-lin", "legs", "lru", "s4d-real"])
def test_lyapunov_exponent_is_max_dt_re_lambda(init):
    m = SSMModel(init=init, state_size=8, channels=5, layers=2, seed=1).double()
    lam, dt = m.eigenvalues(), m.dt()
    assert lam.shape == (2, 5, 4 if init in ("s4d-lin", "lru") else 8) and lam.dtype == C128
    expected = float((dt[..., None] * lam.real).max())
    assert m.lyapunov_exponent() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert torch.allclose(m.discrete_eigenvalues(), torch.exp(dt[..., None] * lam), atol=1e-14)
    K = m.kernels(40)
    assert K.shape == (2, 5, 40)


def test_euler_model_is_unstable_for_s4d_inv():
    m = SSMModel(init="s4d-inv", discretization="euler", dt_min=0.05, dt_max=0.1)
    assert m.lyapunov_exponent() > 0
    assert SSMModel(init="s4d-inv", dt_min=0.05, dt_max=0.1).lyapunov_exponent() < 0


def test_dense_model_eigenvalues_are_those_of_a():
    m = SSMModel(init="legs", state_size=6, channels=2)
    ev = torch.sort(m.eigenvalues()[0, 1].real).values
    assert torch.allclose(ev, -torch.arange(6, 0, -1, dtype=F64), atol=1e-5)
    assert m.ssm[0].A.shape == (6, 6) and m.ssm[0].B.shape == (6, 2) and m.ssm[0].C.shape == (2, 6)


def test_training_step_moves_the_spectrum_and_gradients_reach_every_parameter():
    m = SSMModel(init="s4d-lin", state_size=8, channels=2, layers=2, readout="mlp")
    x = torch.randn(64, 4, 1, generator=gen(2))
    before = m.eigenvalues().clone()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    loss = ((m(x) - torch.sin(x)) ** 2).mean()
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    opt.step()
    assert not torch.allclose(m.eigenvalues(), before)


def test_seeding_config_and_build():
    cfg = SSMConfig(init="lru", state_size=8, channels=3, seed=11)
    state = torch.random.get_rng_state()
    a = build_ssm({**cfg.as_dict(), "kind": "ssm"})
    assert torch.equal(torch.random.get_rng_state(), state)        # no global RNG use
    b = SSMModel(cfg)
    c = SSMModel(cfg, seed=12)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    assert not torch.equal(a.ssm[0].A_imag, c.ssm[0].A_imag)
    assert a.kind == "ssm" and a.config == cfg and cfg.as_dict()["init"] == "lru"
    assert SSMModel(state_size=16).config.state_size == 16


# ============================================================================ errors
def test_typed_errors():
    with pytest.raises(ParameterError, match="legs-diag"):
        state_init("hippo", 8)
    with pytest.raises(ParameterError, match="even"):
        state_init("s4d-lin", 7)
    state_init("s4d-real", 7)                                       # odd is fine without pairs
    with pytest.raises(SizeLimitError):
        state_init("s4d-lin", 8192)
    with pytest.raises(SizeLimitError):
        state_init("legs", 2048)
    with pytest.raises(ParameterError):
        state_init("legs", 1)
    with pytest.raises(ParameterError):
        state_init("lru", 8, r_min=0.9, r_max=0.5)
    with pytest.raises(ParameterError, match="bilinear"):
        discretize(torch.tensor([-1.0]), 0.1, "rk4")
    with pytest.raises(ParameterError):
        discretize(torch.tensor([-1.0]), -0.1)
    with pytest.raises(ParameterError):
        SSMConfig(layers=5)
    with pytest.raises(ParameterError):
        SSMConfig(dt_min=0.1, dt_max=0.01)
    with pytest.raises(ParameterError):
        SSMConfig(mode="fast")
    with pytest.raises(ParameterError):
        SSMConfig(init="s4d-inv", state_size=9)
    with pytest.raises(SizeLimitError):
        SSMConfig(init="legt", state_size=2000)
    with pytest.raises(ParameterError, match="unknown field"):
        build_ssm({"init": "s4d-lin", "colour": 3})
    m = SSMModel(state_size=4, channels=2)
    with pytest.raises(ShapeError):
        m(torch.zeros(10, 2))
    with pytest.raises(ShapeError):
        m(torch.zeros(10, 2, 3))
    with pytest.raises(SizeLimitError):
        m.kernels(2 ** 21)
    with pytest.raises(SizeLimitError):
        ssm_kernel(torch.tensor([0.5j]), torch.tensor([1.0]), 2 ** 21)
    with pytest.raises(ShapeError):
        ssm_scan(torch.ones(3, 4) * 0.5, torch.ones(3, 4), torch.ones(3, 4), torch.zeros(10, 2))
    with pytest.raises(ShapeError):
        fft_conv(torch.zeros(10, 2, 3), torch.zeros(4, 16))
    with pytest.raises(SizeLimitError):
        autocorrelation_lambda_max(torch.zeros(100), 10_000)
    with pytest.raises(ParameterError):
        zero_real_timescale(100, 0.0)
    with pytest.raises(ShapeError):
        discretize_dense(torch.zeros(3, 4), torch.zeros(3), 0.1)
    for err in (ParameterError, ShapeError, SizeLimitError):       # one-line messages
        try:
            {ParameterError: lambda: state_init("x", 4), ShapeError: lambda: m(torch.zeros(3)),
             SizeLimitError: lambda: state_init("s4d-lin", 10 ** 6)}[err]()
        except err as e:
            assert "\n" not in str(e) and str(e)
