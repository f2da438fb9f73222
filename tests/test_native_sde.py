"""SDEs on the native (generated C) backend, and the counter-based noise they draw.

Known answers: Random123's Philox4x32-10 test vectors; the C normals equal the torch
reference bit for bit and pass a Kolmogorov-Smirnov test; Euler-Maruyama's stationary law
of an OU process (variance sigma^2 / (theta (2 - theta h)) for the scheme, sigma^2 / (2 theta)
in the limit); the rotating OU covariance against the (discrete and continuous) Lyapunov
equations; E[X_T] = X0 exp(mu T) for geometric Brownian motion and Milstein's path against
the exact solution driven by the same Brownian increments. Reproducibility: the same
numbers for 1 or 2 threads, any chunking, transient or batch size, native or eager, for one
seed; other numbers for another seed.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from explorer.core import native
from explorer.core.errors import ParameterError
from explorer.core.registry import get_system
from explorer.core.simulate import iterate, simulate
from explorer.core.system import SDE, Param

F64, F32 = torch.float64, torch.float32
needs_gcc = pytest.mark.skipif(not native.available(), reason="no working gcc/OpenMP here")


# ------------------------------------------------------------------ the noise
def test_philox_known_answer_vectors():
    """Random123's kat_vectors for philox4x32 with 10 rounds (Salmon et al., SC'11)."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2,
              (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        assert tuple(int(w) for w in native.philox4x32(ctr, key)) == want
        # the tensor path (int64 words, wrapping products) gives the same words
        got = native.philox4x32(tuple(torch.tensor([c]) for c in ctr), key)
        assert tuple(int(w) for w in got) == want


@pytest.mark.parametrize("dtype", [F64, F32])
def test_reference_normals_are_standard_normal_and_keyed(dtype):
    z = native.philox_normals(7, 3, 50_000, 4, dtype)
    flat = z.double().numpy().reshape(-1)
    assert scipy.stats.kstest(flat, "norm").pvalue > 1e-3
    n = flat.size
    assert abs(flat.mean()) < 5 / math.sqrt(n) and abs(flat.var() - 1) < 5 * math.sqrt(2 / n)
    # components, trajectories and steps are independent streams
    c = np.corrcoef(z.double().numpy().T)
    assert np.abs(c - np.eye(4)).max() < 5 / math.sqrt(z.shape[0])
    z2 = native.philox_normals(7, 4, 50_000, 4, dtype)
    assert abs(np.corrcoef(z[:, 0].double(), z2[:, 0].double())[0, 1]) < 5 / math.sqrt(50_000)
    # keyed by the absolute trajectory index, the step and the seed
    assert torch.equal(native.philox_normals(7, 3, 10, 4, dtype, traj0=5), z[5:15])
    assert not torch.equal(native.philox_normals(8, 3, 10, 4, dtype), z[:10])
    assert torch.equal(native.philox_normals(7, 3, 10, 3, dtype), z[:10, :3])
    if dtype == F32:
        assert float(z.abs().max()) < 5.7           # 23-bit uniforms: the tail ends at 5.65
    big = native.philox_normals(2 ** 64 - 1, 2 ** 40 + 3, 5, 2, dtype)   # high words used
    assert torch.isfinite(big).all() and not torch.equal(big, native.philox_normals(
        2 ** 64 - 1, 3, 5, 2, dtype))


@needs_gcc
@pytest.mark.parametrize("dtype", [F64, F32])
def test_compiled_normals_equal_the_torch_reference_bit_for_bit(dtype):
    for m in (1, 2, 3, 5):
        for seed, step, traj0 in ((0, 0, 0), (123, 77, 9), (2 ** 63 + 5, 2 ** 33 + 1, 2 ** 31)):
            want = native.philox_normals(seed, step, 3000, m, dtype, traj0=traj0)
            got = native.counter_normals(seed, step, 3000, m, dtype, traj0=traj0)
            assert torch.equal(got, want)
    st = native.native_stepper(get_system("rotating_ou"), "euler_maruyama", dtype)
    assert torch.equal(st.normals(5, 6, 1000, traj0=3), native.philox_normals(5, 6, 1000, 2, dtype,
                                                                              traj0=3))


# ------------------------------------------------------------------ known answers
@needs_gcc
def test_ou_stationary_mean_and_variance():
    theta, sigma, mu, h = 1.0, 1.0, 0.5, 0.01
    ou = get_system("ornstein_uhlenbeck", theta=theta, sigma=sigma, mu=mu)
    tr = simulate(ou, [mu], batch=4000, steps=2000, transient=500, save_every=100, dt=h, seed=21)
    assert tr.backend == "native" and tr.backend_note == "" and tr.seed == 21
    x = tr.x[1:, :, 0].double()                 # 20 samples 1 relaxation time apart
    n_eff = x.numel() * (1 - math.exp(-1)) / (1 + math.exp(-1))
    var_em = sigma ** 2 / (theta * (2 - theta * h))            # the scheme's stationary law
    var, mean = float(x.var()), float(x.mean())
    print(f"native OU: mean {mean:.4f} (exact {mu}), variance {var:.4f} (scheme {var_em:.4f}, "
          f"SDE {sigma ** 2 / (2 * theta):.4f})")
    assert abs(mean - mu) < 5 * math.sqrt(var_em / n_eff)
    assert abs(var - var_em) < 5 * var_em * math.sqrt(2 / n_eff)
    assert var == pytest.approx(sigma ** 2 / (2 * theta), rel=0.03)


@needs_gcc
def test_rotating_ou_covariance_solves_the_lyapunov_equation():
    kx, ky, w, sx, sy, h = 1.0, 0.5, 1.0, 1.0, 0.3, 0.005
    ou = get_system("rotating_ou", kx=kx, ky=ky, omega=w, sigma_x=sx, sigma_y=sy)
    A = np.array([[kx, -w], [w, ky]])                  # drift -A x
    Q = np.diag([sx ** 2, sy ** 2])
    C = scipy.linalg.solve_continuous_lyapunov(A, Q)     # A C + C A^T = Sigma Sigma^T
    F = np.eye(2) - h * A                                # Euler-Maruyama: x <- F x + sqrt(h) S z
    C_em = scipy.linalg.solve_discrete_lyapunov(F, h * Q)
    tr = simulate(ou, [0.0, 0.0], batch=4000, steps=2000, transient=1000, save_every=200, dt=h,
                  seed=11)
    assert tr.backend == "native"
    est = np.cov(tr.x[1:].reshape(-1, 2).numpy().T)
    print(f"native 2D OU covariance\n{est}\nscheme\n{C_em}\nLyapunov\n{C}")
    np.testing.assert_allclose(est, C_em, rtol=0, atol=0.03 * np.abs(C).max())
    np.testing.assert_allclose(est, C, rtol=0, atol=0.04 * np.abs(C).max())
    assert abs(C[0, 1]) > 0.1 * np.abs(C).max()        # a probability current: off-diagonal


@needs_gcc
@pytest.mark.parametrize("dtype", [F64, F32])
def test_gbm_mean_is_x0_exp_mu_t(dtype):
    """Multiplicative noise: E[X_T] = X0 e^{mu T}; for the scheme exactly X0 (1 + mu h)^n."""
    mu, sigma, x0, h, n = 0.5, 0.5, 2.0, 1e-3, 1000
    gbm = get_system("geometric_brownian_motion", mu=mu, sigma=sigma)
    tr = simulate(gbm, [x0], batch=20_000, steps=n, save_every=n, dt=h, seed=3, dtype=dtype)
    assert tr.backend == "native" and tr.x.shape == (2, 20_000, 1) and tr.status == "ok"
    xT = tr.x[-1, :, 0].double()
    exact = x0 * math.exp(mu * n * h)
    sd = exact * math.sqrt(math.exp(sigma ** 2 * n * h) - 1)
    print(f"GBM E[X_T] {float(xT.mean()):.4f}, exact {exact:.4f} (scheme "
          f"{x0 * (1 + mu * h) ** n:.4f}), standard error {sd / math.sqrt(xT.numel()):.4f}")
    assert abs(float(xT.mean()) - x0 * (1 + mu * h) ** n) < 5 * sd / math.sqrt(xT.numel())
    assert float(xT.mean()) == pytest.approx(exact, rel=0.02)
    assert (xT > 0).all()


@needs_gcc
def test_milstein_follows_the_exact_gbm_path_of_the_same_noise():
    """The documented stream: W_T summed from counter_normals(seed, k, ...) drives the exact
    solution X0 exp((mu - sigma^2/2) T + sigma W_T); native Milstein (strong order 1) and
    Euler-Maruyama (1/2) land on it."""
    mu, sigma, h, n, B, seed = 1.0, 0.8, 2e-3, 500, 2000, 77
    gbm = get_system("gbm", mu=mu, sigma=sigma)
    W = torch.zeros(B, 1, dtype=F64)
    for k in range(n):
        W += native.counter_normals(seed, k, B, 1, F64) * math.sqrt(h)
    exact = torch.exp((mu - 0.5 * sigma ** 2) * n * h + sigma * W)[:, 0]
    errs = {}
    for solver in ("milstein", "euler_maruyama"):
        tr = simulate(gbm, [1.0], batch=B, steps=n, save_every=n, dt=h, seed=seed, solver=solver)
        assert tr.backend == "native"
        errs[solver] = float((tr.x[-1, :, 0] - exact).abs().mean())
    print(f"strong errors at h = {h}: {errs}")
    assert errs["milstein"] < 0.01 and errs["euler_maruyama"] < 0.15
    assert errs["milstein"] < 0.2 * errs["euler_maruyama"]


# ------------------------------------------------------------------ reproducibility
@needs_gcc
@pytest.mark.parametrize("name,dtype", [("rotating_double_well", F64),
                                        ("rotating_double_well", F32),   # 2 steps per block
                                        ("ornstein_uhlenbeck", F64),     # 2 steps per block
                                        ("ornstein_uhlenbeck", F32)])    # 4 steps per block
def test_bit_identical_for_any_threads_chunking_and_batch(name, dtype):
    s = get_system(name)
    old = torch.get_num_threads()
    try:
        runs = []
        for nt in (1, 2):
            torch.set_num_threads(nt)
            runs.append(simulate(s, batch=1024, steps=300, save_every=3, seed=42, dtype=dtype))
    finally:
        torch.set_num_threads(old)
    a, b = runs
    assert a.backend == b.backend == "native" and torch.equal(a.x, b.x)
    # transient and recording grid: the same absolute steps, the same numbers
    late = simulate(s, batch=1024, steps=201, transient=99, save_every=67, seed=42, dtype=dtype)
    full = simulate(s, batch=1024, steps=300, seed=42, dtype=dtype)
    assert torch.equal(full.x[::3], a.x) and torch.equal(late.x, full.x[99::67])
    # the stepper directly: threads and chunks
    st = native.native_stepper(s, "euler_maruyama", dtype)
    x0 = full.x[0].clone()
    r1, _, _ = st.run(x0.clone(), s.params, 0.01, n_steps=300, record_every=1, seed=42, threads=1)
    xc = x0.clone()
    ok, n_ok = torch.ones(1024, dtype=torch.bool), torch.zeros(1024, dtype=torch.int32)
    parts = [st.run(xc, s.params, 0.01, n_steps=k, record_every=1, seed=42, step0=s0, ok=ok,
                    n_ok=n_ok, threads=2)[0] for s0, k in ((0, 7), (7, 193), (200, 100))]
    assert torch.equal(r1, torch.cat(parts)) and torch.equal(r1, full.x[1:].transpose(1, 2))
    # a member's path depends on its index only: a smaller batch is a prefix
    small = simulate(s, full.x[0, :8], steps=300, seed=42, dtype=dtype)
    assert torch.equal(small.x, full.x[:, :8])
    # same seed, same numbers; another seed, others
    assert not torch.equal(simulate(s, batch=1024, steps=300, seed=43, dtype=dtype).x, full.x)


@needs_gcc
@pytest.mark.parametrize("name", ["ornstein_uhlenbeck", "rotating_double_well", "gbm"])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_native_equals_eager_torch_for_the_same_seed(name, dtype):
    """Arithmetic drift and diffusion, no FMA contraction, correctly rounded normals: the
    native and eager paths of one seed agree to the last bit, Milstein too."""
    s = get_system(name)
    for solver in ("euler_maruyama", "milstein"):
        a = simulate(s, batch=40, steps=150, transient=10, save_every=5, seed=8, dtype=dtype,
                     solver=solver)
        b = simulate(s, batch=40, steps=150, transient=10, save_every=5, seed=8, dtype=dtype,
                     solver=solver, compile=False)
        assert (a.backend, b.backend, b.backend_note) == ("native", "eager", "")
        assert torch.equal(a.x, b.x) and a.x.dtype == dtype


@needs_gcc
def test_eager_runs_without_a_compiler_draw_the_same_noise(monkeypatch):
    """Where no compiled generator is at hand (no gcc, a GPU), eager runs compute the stream
    in torch, a few steps at a time: still the native run's numbers."""
    s = get_system("rotating_double_well")
    a = simulate(s, batch=30, steps=200, save_every=10, seed=12)
    monkeypatch.setattr(native, "_normals_fn", lambda dtype, m: None)
    b = simulate(s, batch=30, steps=200, save_every=10, seed=12, compile=False)
    assert a.backend == "native" and b.backend == "eager" and torch.equal(a.x, b.x)


@needs_gcc
def test_iterate_draws_the_stream_of_simulate():
    s = get_system("rotating_ou")
    full = simulate(s, batch=5, steps=40, seed=4, dtype=F32)
    gen = iterate(s, batch=5, steps_per_frame=10, seed=4, dtype=F32)
    frames = [next(gen)[1] for _ in range(5)]
    for k, fr in enumerate(frames):
        assert torch.equal(fr, full.x[10 * k])
    gen.send(s.with_params(omega=-2.0))              # new parameters, same stream position
    moved = next(gen)[1]
    assert torch.equal(frames[-1], full.x[40]) and not torch.equal(moved, frames[-1])


# ------------------------------------------------------------------ backend selection
@needs_gcc
def test_backend_selection_and_notes():
    ou = get_system("ou")
    assert simulate(ou, steps=20, batch=4, seed=0).backend == "native"
    assert simulate(ou, steps=20, batch=4, seed=0, compile="native").backend == "native"
    assert simulate(ou, steps=20, batch=4, seed=0, compile=True).backend == "native"
    tr = simulate(ou, steps=20, batch=4, seed=0, compile="inductor")
    assert tr.backend == "eager" and "Inductor" in tr.backend_note
    fresh = simulate(ou, steps=20, batch=4)                  # a fresh seed, recorded
    assert fresh.backend == "native" and isinstance(fresh.seed, int)
    assert torch.equal(simulate(ou, steps=20, batch=4, seed=fresh.seed).x, fresh.x)
    # an explicit torch.Generator: its stream, eagerly (unchanged)
    g = simulate(ou, steps=20, batch=4, generator=torch.Generator().manual_seed(0))
    assert g.backend == "eager" and "generator" in g.backend_note and g.seed is None
    g2 = simulate(ou, steps=20, batch=4, generator=torch.Generator().manual_seed(0), compile=False)
    assert torch.equal(g.x, g2.x) and g2.backend_note == ""
    with pytest.raises(ParameterError):
        simulate(ou, steps=5, generator=torch.Generator(), compile="native")
    assert native.refusal(ou, "euler_maruyama", F64) is None


class _Mixing(SDE):
    """Noise through torch.roll over the state (outside the whitelist): runs eagerly."""

    name = "test_mixing_sde"
    title = "mixing"
    variables = ("x", "y")
    parameters = (Param("s", 0.5, 0.0, 2.0, "noise scale"),)
    default_x0 = (0.1, -0.2)
    latex = r"dx = -x\,dt + s |y|\,dW_1,\ dy = -y\,dt + s |x|\,dW_2"
    description = "test system"

    def rhs(self, x, p):
        return -x

    def diffusion(self, x, p):
        return p["s"] * torch.roll(x, 1, -1).abs()


class _NoAnalyticDerivative(type(get_system("gbm"))):
    """GBM without its analytic dg/dx: Milstein needs autograd, so torch."""

    name = "test_gbm_autograd"
    diffusion_derivative = SDE.diffusion_derivative


@needs_gcc
def test_untraceable_systems_fall_back_to_eager_with_a_note():
    m = _Mixing()
    tr = simulate(m, batch=8, steps=30, seed=1)
    assert tr.backend == "eager" and tr.backend_note.startswith("native backend:")
    assert tr.status == "ok" and native.refusal(m, "euler_maruyama", F64)
    with pytest.raises(ParameterError):
        simulate(m, steps=5, seed=1, compile="native")
    g = _NoAnalyticDerivative()
    mil = simulate(g, batch=8, steps=30, seed=1, solver="milstein")
    assert mil.backend == "eager" and "diffusion_derivative" in mil.backend_note
    em = simulate(g, batch=8, steps=30, seed=1)
    assert em.backend == "native"                     # Euler-Maruyama needs no derivative


class _GeneralNoise(SDE):
    """2 variables driven by 3 Wiener processes through a state-dependent matrix."""

    name = "test_native_general_noise"
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


@needs_gcc
def test_general_noise_runs_natively():
    s = _GeneralNoise()
    st = native.native_stepper(s, "euler_maruyama", F64)
    assert st is not None and st.noise == "general" and st.n_noises == 3
    x = torch.randn(7, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(st.diffusion(x, s.params), s.g(x), rtol=0, atol=0)
    a = simulate(s, batch=64, steps=100, seed=2)
    b = simulate(s, batch=64, steps=100, seed=2, compile=False)
    assert a.backend == "native" and b.backend == "eager"
    torch.testing.assert_close(a.x, b.x, rtol=1e-12, atol=1e-12)   # g dW summed in C's order


@needs_gcc
def test_divergence_masking_progress_and_stop():
    gbm = get_system("gbm", mu=5.0, sigma=3.0)
    x0 = torch.tensor([[1.0], [3e5], [8e5], [2.0]], dtype=F64)
    a = simulate(gbm, x0, steps=400, seed=6)
    b = simulate(gbm, x0, steps=400, seed=6, compile=False)
    assert a.backend == "native" and a.status == "partly diverged"
    assert a.diverged.tolist() == [False, True, True, False]
    torch.testing.assert_close(a.diverged_at, b.diverged_at, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0, equal_nan=True)   # NaN after divergence
    seen = []
    tr = simulate(get_system("ou"), batch=4096, steps=2000, seed=1, progress=seen.append)
    assert tr.backend == "native" and seen and seen[-1] == 1.0 and seen == sorted(seen)
    stop = threading.Event()
    stop.set()
    early = simulate(get_system("ou"), batch=8, steps=1000, seed=1, stop=stop)
    assert early.backend == "native" and early.x.shape[0] == 1
