r"""Linear state-space sequence models (S4D, HiPPO, LRU, zero-real) and their spectra.

Continuous time, per channel (SISO):

.. math::

    x'(t) = A x(t) + B u(t), \qquad y(t) = \operatorname{Re}(C x(t)) + D u(t),

discretised with a step :math:`\Delta` (ZOH, bilinear or forward Euler) into

.. math::

    x_k = \bar A x_{k-1} + \bar B u_k, \qquad y_k = \operatorname{Re}(C x_k) + D u_k
    = \sum_{j=0}^{k} K_j u_{k-j} + D u_k, \qquad K_j = \operatorname{Re}(C \bar A^j \bar B)

(the state is updated first, so :math:`K_0 = C\bar B \ne 0`, as in the S4 step function and
Mamba's ``selective_scan_ref``). With a diagonal :math:`A = \operatorname{diag}(\lambda_n)` that
keeps one eigenvalue of each conjugate pair (S4/S4D), the kernel is the Vandermonde sum

.. math:: K_l = 2\operatorname{Re}\sum_n C_n \bar b_n B_n \bar\lambda_n^{\,l},

computed in one shot and applied by an FFT convolution (``mode="conv"``), or by the recurrence
(``mode="scan"``); both give the same outputs (``tests/test_ssm.py``: 1e-12 in float64).

Initialisations (:data:`INITS`; equations and known answers in ``docs/notes/ssm_spectra.md``):

* ``legs``: the HiPPO-LegS matrix (dense, lower triangular, eigenvalues exactly -1..-N);
* ``legs-diag``: S4D-LegS, the normal part of LegS (Re λ = -1/2), kept modes and ``V* B``;
* ``legt``: HiPPO-LegT (dense, Hurwitz, window 1, the S4 code's normalisation);
* ``s4d-lin``: λ_n = -1/2 + iπn; ``s4d-inv``: λ_n = -1/2 + i(N/π)(N/(2n+1) - 1);
* ``s4d-real``: λ_n = -(n+1), n = 0..N-1, real modes without conjugate doubling (Mamba's A);
* ``lru``: the LRU ring (|λ̄|² uniform on [r_min², r_max²], arg λ̄ uniform on [0, max_phase]),
  converted to continuous time by λ = log(λ̄)/Δ, so one (ZOH-exact) code path serves;
* ``random``: a dense Gaussian A = G/√N shifted so its spectral abscissa is exactly -1/2
  (Hurwitz, the same real part as S4D); circular-law spectrum;
* ``zero-real``: λ_n = iπn (Re λ = 0) with the timescale Δ = c/√(L λ_max) of Liu & Li
  (arXiv:2411.19455; a reconstruction, see the note §4).

Parameterisation of the diagonal models: Re λ = -exp(log_A_real) (stays < 0); for ``zero-real``
Re λ = min(a, 0) with a straight-through gradient (the value is clamped at 0, the gradient
passes unchanged), so Re λ is exactly 0 at initialisation, moves left when the loss asks for
it and never crosses into the right half-plane. Im λ is free (frozen at 0 for ``s4d-real``),
B and C complex (stored as real/imag pairs), D real, Δ = exp(log_dt) per channel.

Dtypes: the known-answer functions (:func:`state_init`, :func:`discretize`, kernels in the
tests) work in float64/complex128; :class:`SSMModel` trains in float32 (complex64 kernels,
with the phase Δ·Im λ reduced mod 2π before the powers are taken); ``model.double()`` gives
float64 everywhere. Pure torch (no UI imports).

References:
    A. Gu, K. Goel, C. Ré, *Efficiently Modeling Long Sequences with Structured State Spaces*,
    ICLR 2022 (S4; ``state-spaces/s4``). A. Gu, A. Gupta, K. Goel, C. Ré, *On the
    Parameterization and Initialization of Diagonal State Space Models*, NeurIPS 2022 (S4D).
    A. Gu, T. Dao, S. Ermon, A. Rudra, C. Ré, *HiPPO*, NeurIPS 2020. A. Orvieto et al.,
    *Resurrecting Recurrent Neural Networks for Long Sequences*, ICML 2023 (LRU,
    arXiv:2303.06349). F. Liu, Q. Li, *Autocorrelation Matters*, arXiv:2411.19455.
    A. Gu, T. Dao, *Mamba*, arXiv:2312.00752.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ParameterError, ShapeError, SizeLimitError

__all__ = [
    "DENSE_INITS",
    "DISCRETIZATIONS",
    "INITS",
    "MAX_AUTOCORR_LEN",
    "MAX_DENSE_STATE",
    "MAX_LEN",
    "MAX_STATE",
    "MAX_WORK",
    "PAIRED_INITS",
    "SSMConfig",
    "SSMModel",
    "StateInit",
    "autocorrelation_lambda_max",
    "build_ssm",
    "continuous_eigenvalues",
    "dense_kernel",
    "dense_scan",
    "discretize",
    "discretize_dense",
    "fft_conv",
    "legs_rank_correction",
    "legt_rank_correction",
    "ssm_kernel",
    "ssm_scan",
    "state_init",
    "zero_real_timescale",
]

INITS = ("legs", "legs-diag", "legt", "s4d-lin", "s4d-inv", "s4d-real", "lru", "random", "zero-real")
DISCRETIZATIONS = ("zoh", "bilinear", "euler")
#: inits with a dense N x N state matrix (the others are diagonal)
DENSE_INITS = ("legs", "legt", "random")
#: diagonal inits that keep one eigenvalue of each conjugate pair (output 2 Re, N even)
PAIRED_INITS = ("legs-diag", "s4d-lin", "s4d-inv", "lru", "zero-real")

MAX_STATE = 4096             # largest state size N (diagonal inits)
MAX_DENSE_STATE = 1024       # largest state size N of a dense init (N x N matrices, eigvals, expm)
MAX_LEN = 2 ** 20            # longest kernel / sequence (entries per channel)
MAX_AUTOCORR_LEN = 4096      # largest L x L autocorrelation matrix
MAX_WORK = 2 ** 32           # largest channels x modes x length of one kernel or scan

_MODES = ("conv", "scan")
_READOUTS = ("linear", "mlp")
_TWO_PI = 2.0 * math.pi


# ============================================================================ validation helpers
def _choice(what: str, value, options) -> str:
    if value not in options:
        raise ParameterError(f"unknown {what} {value!r}; options: {', '.join(options)}")
    return value


def _int(what: str, value, lo: int, hi: int, *, size: bool = True) -> int:
    """An integer in [lo, hi]: ParameterError below lo or for a non-integer; above hi
    SizeLimitError (``size``: a resource limit) or ParameterError (a range of the model)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ParameterError(f"{what} must be an integer, got {value!r}")
    if value < lo:
        raise ParameterError(f"{what} must be at least {lo}, got {value}")
    if value > hi:
        if not size:
            raise ParameterError(f"{what} must be at most {hi}, got {value}")
        raise SizeLimitError(f"{what} = {value:,} exceeds the limit of {hi:,}")
    return value


def _positive(what: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ParameterError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype.is_complex:
        return dtype
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.complex128:
        return torch.float64
    if dtype == torch.complex64:
        return torch.float32
    return dtype


# ============================================================================ initialisations
@dataclass(frozen=True, eq=False)
class StateInit:
    """A continuous-time state initialisation (float64/complex128, CPU).

    For the conjugate-pair inits (``pairs=True``: legs-diag, s4d-lin, s4d-inv, lru,
    zero-real) ``eigenvalues`` and ``B`` list the N/2 kept modes first (Im λ ≥ 0) and then their
    conjugates, so :attr:`modes` = ``eigenvalues[:N//2]`` is what a diagonal model
    parameterises and its output is 2 Re(·). ``s4d-real`` keeps all N real modes
    (``pairs=False``); the dense inits have ``A`` and ``modes`` = ``eigenvalues``.
    """

    name: str
    eigenvalues: torch.Tensor     # complex128 (N,): the full continuous-time spectrum (conjugates included)
    A: torch.Tensor | None        # float64 (N, N) dense state matrix, or None for a diagonal init
    B: torch.Tensor               # (N,) input vector (float64 for dense inits, complex128 for diagonal)
    diagonal: bool
    note: str = ""                # one sentence shown in the UI (what the init is)
    pairs: bool = False           # diagonal with conjugate pairs: kept modes first, output 2 Re
    dt: float | None = None       # step the init prescribes (zero-real) or used to convert (lru)

    @property
    def modes(self) -> torch.Tensor:
        """complex128 (M,): the modes a model parameterises (M = N/2 when ``pairs``, else N)."""
        return self.eigenvalues[: self.eigenvalues.shape[0] // 2] if self.pairs else self.eigenvalues

    @property
    def mode_B(self) -> torch.Tensor:
        """(M,) the input vector of :attr:`modes`."""
        return self.B[: self.B.shape[0] // 2] if self.pairs else self.B


def _legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS: A_nk = -sqrt(2n+1)sqrt(2k+1) (n>k), -(n+1) (n=k), 0 (n<k); B_n = sqrt(2n+1)."""
    q = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(q + 1)
    return A, r.clone()


def _legt(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegT (θ = 1, the S4 code's extra factor 1/2): A_nk = -R_n R_k/2 · (1 if n ≥ k
    else (-1)^(n-k)), B_n = R_n/2, R_n = sqrt(2n+1)."""
    q = torch.arange(N, dtype=torch.float64)
    R = torch.sqrt(2 * q + 1)
    n, k = q[:, None], q[None, :]
    sign = torch.where(n >= k, torch.ones(()), (-1.0) ** (n - k))
    return -0.5 * R[:, None] * R[None, :] * sign, 0.5 * R


def legs_rank_correction(N: int) -> torch.Tensor:
    """P (N,) with A_LegS + P Pᵀ = -I/2 + S, S skew-symmetric: P_n = sqrt(n + 1/2)."""
    return torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)


def legt_rank_correction(N: int) -> torch.Tensor:
    """P (2, N) with A_LegT + PᵀP skew-symmetric: P = 2^(-1/2) [R with even entries zeroed;
    R with odd entries zeroed], R_n = sqrt(2n+1)."""
    R = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    P0, P1 = R.clone(), R.clone()
    P0[0::2] = 0.0
    P1[1::2] = 0.0
    return torch.stack([P0, P1]) / math.sqrt(2.0)


def _paired(name: str, modes: torch.Tensor, B: torch.Tensor, note: str, dt=None) -> StateInit:
    modes = modes.to(torch.complex128)
    B = B.to(torch.complex128)
    return StateInit(name, torch.cat([modes, modes.conj()]), None, torch.cat([B, B.conj()]),
                     True, note, pairs=True, dt=dt)


def state_init(name: str, state_size: int, *, generator: torch.Generator | None = None,
               seq_len: int = 1024, autocorr=None, r_min: float = 0.0, r_max: float = 1.0,
               max_phase: float = 6.28, dt: float | None = None) -> StateInit:
    r"""The continuous-time state matrix / eigenvalues and input vector of one initialisation.

    Diagonal S4D inits (n = 0..N/2-1, conjugates added back):
    :math:`\lambda_n = -\tfrac12 + i\pi n` (s4d-lin),
    :math:`-\tfrac12 + i\tfrac{N}{\pi}(\tfrac{N}{2n+1} - 1)` (s4d-inv),
    :math:`-(n+1)` for n = 0..N-1 (s4d-real), :math:`i\pi n` (zero-real); B = 1.
    LegS/LegT are the HiPPO matrices; legs-diag is the normal part of LegS,
    :math:`A + PP^\top = -\tfrac12 I + S = V(-\tfrac12 + iW)V^*`, with :math:`B \leftarrow V^*B`
    (the S4 code's ``nplr``; its clip of Im B to ±2 is not applied). LRU draws
    :math:`|\bar\lambda|^2 \sim U[r_{min}^2, r_{max}^2]`, :math:`\theta \sim U[0, \text{max\_phase}]`
    and returns :math:`\lambda = (\log|\bar\lambda| + i\theta)/\Delta` with
    :math:`B = \gamma = \sqrt{1 - |\bar\lambda|^2}`. ``random``:
    :math:`A = G/\sqrt N - (\alpha(G/\sqrt N) + \tfrac12) I`, G standard Gaussian,
    :math:`\alpha` the spectral abscissa, B standard Gaussian.

    Args:
        name: one of :data:`INITS`.
        state_size: N, the full state size (even for the conjugate-pair inits; at most
            :data:`MAX_STATE`, :data:`MAX_DENSE_STATE` for dense inits).
        generator: random source of ``lru`` and ``random`` (default: a fresh generator seeded 0).
        seq_len: L of the zero-real timescale.
        autocorr: zero-real: ``None`` (white input, λ_max = 1), a number (λ_max) or input samples
            (T,) / (T, B) (λ_max by :func:`autocorrelation_lambda_max` with L = min(seq_len, 4096)).
        r_min, r_max, max_phase: the LRU ring (0 ≤ r_min ≤ r_max ≤ 1, 0 < max_phase ≤ 2π).
        dt: zero-real: overrides Δ = 1/√(L λ_max); lru: the Δ of the conversion (default 1);
            ignored by the other inits.

    Returns:
        A :class:`StateInit` (float64 / complex128).

    References:
        ``state-spaces/s4`` ``src/models/hippo/hippo.py`` (transition, nplr),
        ``src/models/sequence/kernels/dplr.py``; ``NicolasZucchet/minimal-LRU``; see
        ``docs/notes/ssm_spectra.md`` §1-4.
    """
    _choice("SSM init", name, INITS)
    hi = MAX_DENSE_STATE if name in DENSE_INITS else MAX_STATE
    N = _int("state size N", state_size, 2, hi)
    if name in PAIRED_INITS and N % 2:
        raise ParameterError(f"{name} pairs conjugate eigenvalues: the state size must be even, got {N}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    c128 = torch.complex128
    h = N // 2
    n = torch.arange(h, dtype=torch.float64)

    if name == "legs":
        A, B = _legs(N)
        ev = torch.diagonal(A).to(c128)                 # triangular: exactly -1..-N
        return StateInit(name, ev, A, B, False, "HiPPO-LegS (scaled Legendre): lower triangular, "
                         "eigenvalues exactly −1, −2, …, −N.")
    if name == "legt":
        A, B = _legt(N)
        ev = torch.linalg.eigvals(A)
        return StateInit(name, ev, A, B, False, "HiPPO-LegT (translated Legendre, window 1): "
                         "Hurwitz, its normal part is purely imaginary.")
    if name == "random":
        G = torch.randn(N, N, generator=gen, dtype=torch.float64) / math.sqrt(N)
        shift = float(torch.linalg.eigvals(G).real.max()) + 0.5
        A = G - shift * torch.eye(N, dtype=torch.float64)
        ev = torch.linalg.eigvals(A)
        B = torch.randn(N, generator=gen, dtype=torch.float64)
        return StateInit(name, ev, A, B, False, "Random Gaussian A/√N shifted so the rightmost "
                         "eigenvalue has real part −1/2 (circular law, Hurwitz).")
    if name == "legs-diag":
        A, B = _legs(N)
        P = legs_rank_correction(N)
        S = A + P[:, None] * P[None, :] + 0.5 * torch.eye(N, dtype=torch.float64)   # skew
        S = 0.5 * (S - S.T)                                   # exact skew part (roundoff)
        w, V = torch.linalg.eigh(-1j * S.to(c128))            # S V = i w V, w ascending
        w, V = w[:h], V[:, :h]                                # the S4 code keeps w < 0
        Bv = V.conj().T @ B.to(c128)                          # V* B
        # keep the conjugates instead (Im λ > 0): λ = -1/2 - i w, B -> conj(V* B)
        modes = torch.complex(torch.full_like(w, -0.5), -w)
        return _paired(name, modes, Bv.conj(), "S4D-LegS: the normal part of HiPPO-LegS, "
                       "Re λ = −1/2; approximated by S4D-Inv.")
    if name == "s4d-lin":
        modes = torch.complex(torch.full_like(n, -0.5), math.pi * n)
        return _paired(name, modes, torch.ones(h), "S4D-Lin: λ_n = −1/2 + iπn, imaginary parts "
                       "equally spaced (Fourier-like).")
    if name == "s4d-inv":
        modes = torch.complex(torch.full_like(n, -0.5), N / math.pi * (N / (2 * n + 1) - 1))
        return _paired(name, modes, torch.ones(h), "S4D-Inv: λ_n = −1/2 + i(N/π)(N/(2n+1) − 1), "
                       "an approximation of the LegS normal part.")
    if name == "s4d-real":
        ev = -(torch.arange(N, dtype=torch.float64) + 1).to(c128)
        return StateInit(name, ev, None, torch.ones(N, dtype=c128), True,
                         "S4D-Real / Mamba: λ_n = −(n+1), real modes (the LegS eigenvalues).")
    if name == "lru":
        for what, v in (("r_min", r_min), ("r_max", r_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ParameterError(f"LRU {what} must be in [0, 1], got {v!r}")
        if r_min > r_max:
            raise ParameterError(f"LRU r_min {r_min} is above r_max {r_max}")
        if isinstance(max_phase, bool) or not isinstance(max_phase, (int, float)) \
                or not 0.0 < max_phase <= _TWO_PI + 1e-9:
            raise ParameterError(f"LRU max_phase must be in (0, 2π], got {max_phase!r}")
        step = 1.0 if dt is None else _positive("LRU dt", dt)
        u_r = torch.rand(h, generator=gen, dtype=torch.float64)
        u_t = torch.rand(h, generator=gen, dtype=torch.float64)
        mod2 = (u_r * (r_max ** 2 - r_min ** 2) + r_min ** 2).clamp(min=1e-300)   # |λ̄|² uniform
        theta = max_phase * u_t                                                  # arg λ̄ uniform
        gamma = torch.sqrt((1.0 - mod2).clamp(min=0.0))                          # γ = sqrt(1-|λ̄|²)
        modes = torch.complex(0.5 * torch.log(mod2), theta) / step               # log(λ̄)/Δ
        return _paired(name, modes, gamma, f"LRU ring: |λ̄| in [{r_min:g}, {r_max:g}], arg λ̄ in "
                       f"[0, {max_phase:g}], stable by construction (λ = log λ̄ / Δ).", dt=step)
    # zero-real
    L = _int("sequence length L", seq_len, 1, MAX_LEN)
    if dt is not None:
        step = _positive("zero-real dt", dt)
    else:
        if autocorr is None:
            lam_max = 1.0
        elif isinstance(autocorr, (int, float)) and not isinstance(autocorr, bool):
            lam_max = _positive("autocorrelation λ_max", autocorr)
        else:
            lam_max = autocorrelation_lambda_max(autocorr, min(L, MAX_AUTOCORR_LEN))
        step = zero_real_timescale(L, lam_max)
    modes = torch.complex(torch.zeros_like(n), math.pi * n)
    return _paired(name, modes, torch.ones(h), f"Zero real part: λ_n = iπn on the imaginary axis, "
                   f"Δ = 1/√(L·λ_max) = {step:.3g} keeps the output O(1).", dt=step)


def continuous_eigenvalues(name: str, state_size: int, **opts) -> torch.Tensor:
    """The full continuous-time spectrum of an init, complex128 (N,), sorted by imaginary part
    then real part (for display). ``opts`` are :func:`state_init`'s keywords."""
    ev = state_init(name, state_size, **opts).eigenvalues
    ev = ev[torch.sort(ev.real, stable=True).indices]
    return ev[torch.sort(ev.imag, stable=True).indices]


# ============================================================================ discretisation
def _phi1(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\varphi_1(z) = (e^z - 1)/z` with the limit 1 at z = 0 (a series for |z| < 1e-3)."""
    small = z.abs() < 1e-3
    zs = torch.where(small, torch.ones_like(z), z)            # safe: no 0/0 in either branch
    series = 1 + z * (0.5 + z * (1.0 / 6 + z * (1.0 / 24 + z / 120)))
    return torch.where(small, series, torch.expm1(zs) / zs)


def _discretize(lam: torch.Tensor, dt: torch.Tensor, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    z = dt * lam
    if method == "zoh":
        return torch.exp(z), dt * _phi1(z)
    if method == "bilinear":
        den = 1 - 0.5 * z
        return (1 + 0.5 * z) / den, dt / den
    return 1 + z, dt * torch.ones_like(z)                    # euler


def discretize(lam, dt, method: str = "zoh") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Elementwise discretisation of diagonal modes: :math:`x_k = \bar\lambda x_{k-1} + \bar b B u_k`.

    .. math::

        \text{ZOH: } \bar\lambda = e^{\Delta\lambda},\ \bar b = \Delta\,\varphi_1(\Delta\lambda)
        = (e^{\Delta\lambda} - 1)/\lambda; \quad
        \text{bilinear: } \bar\lambda = \frac{1 + \Delta\lambda/2}{1 - \Delta\lambda/2},\
        \bar b = \frac{\Delta}{1 - \Delta\lambda/2}; \quad
        \text{Euler: } \bar\lambda = 1 + \Delta\lambda,\ \bar b = \Delta .

    :math:`\varphi_1(z) = (e^z - 1)/z` is evaluated without the 0/0 at λ = 0 (limit: b̄ = Δ).

    Args:
        lam: eigenvalues, any shape (real or complex; float64 for known answers).
        dt: step sizes Δ > 0, a number or a tensor broadcasting against ``lam``.
        method: one of :data:`DISCRETIZATIONS`.

    Returns:
        ``(lam_bar, b_factor)``, broadcast shape, ``lam``'s dtype (B̄ = b_factor · B).

    References:
        ``state-spaces/s4`` ``src/models/sequence/kernels/ssm.py`` (ZOH, bilinear); forward
        Euler is the textbook map. ``docs/notes/ssm_spectra.md`` §2.
    """
    _choice("discretization", method, DISCRETIZATIONS)
    lam = torch.as_tensor(lam)
    if not (lam.dtype.is_complex or lam.dtype.is_floating_point):
        lam = lam.to(torch.float64)
    dt = torch.as_tensor(dt, dtype=_real_dtype(lam.dtype), device=lam.device)
    if not bool(torch.isfinite(dt).all() and (dt > 0).all()):
        raise ParameterError("the step sizes Δ must be finite and positive")
    return _discretize(lam, dt, method)


def discretize_dense(A, B, dt, method: str = "zoh") -> tuple[torch.Tensor, torch.Tensor]:
    r"""Discretise a dense system :math:`x' = Ax + Bu` with step Δ.

    .. math::

        \text{ZOH: } \bar A = e^{\Delta A},\ \bar B = \int_0^\Delta e^{sA}ds\,B
        \ \Big(\exp\begin{psmallmatrix}\Delta A & \Delta B\\ 0 & 0\end{psmallmatrix}
        = \begin{psmallmatrix}\bar A & \bar B\\ 0 & 1\end{psmallmatrix}\Big);\quad
        \text{bilinear: } \bar A = (I - \tfrac\Delta2 A)^{-1}(I + \tfrac\Delta2 A),\
        \bar B = (I - \tfrac\Delta2 A)^{-1}\Delta B;\quad
        \text{Euler: } \bar A = I + \Delta A,\ \bar B = \Delta B.

    The ZOH input matrix comes from the augmented matrix exponential, so it equals
    :math:`(\Delta A)^{-1}(e^{\Delta A} - I)\Delta B` and needs no inverse of A (singular A is fine).

    Args:
        A: (..., N, N) state matrix.
        B: (..., N) input vector.
        dt: Δ > 0, a number or a tensor of the batch shape (e.g. (H,) per channel).
        method: one of :data:`DISCRETIZATIONS`.

    Returns:
        ``(A_bar, B_bar)``: (*batch, N, N) and (*batch, N), batch the broadcast of A's, B's and
        dt's batch shapes.

    References:
        ``state-spaces/s4`` ``SSMKernelDense.bilinear``; C. Van Loan, *Computing integrals
        involving the matrix exponential*, IEEE TAC 23 (1978) (the augmented exponential).
    """
    _choice("discretization", method, DISCRETIZATIONS)
    A = torch.as_tensor(A)
    B = torch.as_tensor(B, dtype=A.dtype)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ShapeError(f"A must be (..., N, N), got {tuple(A.shape)}")
    N = A.shape[-1]
    if B.ndim < 1 or B.shape[-1] != N:
        raise ShapeError(f"B must be (..., {N}), got {tuple(B.shape)}")
    dt = torch.as_tensor(dt, dtype=_real_dtype(A.dtype), device=A.device)
    if not bool(torch.isfinite(dt).all() and (dt > 0).all()):
        raise ParameterError("the step sizes Δ must be finite and positive")
    try:
        batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-1], dt.shape)
    except RuntimeError as e:
        raise ShapeError(f"A {tuple(A.shape)}, B {tuple(B.shape)} and dt {tuple(dt.shape)} do "
                         "not broadcast") from e
    return _discretize_dense(A, B, dt, method, batch)


def _discretize_dense(A, B, dt, method, batch):
    N = A.shape[-1]
    dtA = (dt[..., None, None] * A).expand(*batch, N, N)            # (*batch, N, N)
    dtB = (dt[..., None] * B).expand(*batch, N)                      # (*batch, N)
    eye = torch.eye(N, dtype=A.dtype, device=A.device)
    if method == "zoh":
        top = torch.cat([dtA, dtB[..., None]], dim=-1)                # (*batch, N, N+1)
        M = torch.cat([top, torch.zeros_like(top[..., :1, :])], dim=-2)   # (*batch, N+1, N+1)
        E = torch.linalg.matrix_exp(M)
        return E[..., :N, :N], E[..., :N, N]
    if method == "bilinear":
        minus = eye - 0.5 * dtA
        Abar = torch.linalg.solve(minus, eye + 0.5 * dtA)
        Bbar = torch.linalg.solve(minus, dtB[..., None])[..., 0]
        return Abar, Bbar
    return eye + dtA, dtB


# ============================================================================ kernels and scans
def _check_len(L) -> int:
    return _int("kernel length L", L, 1, MAX_LEN)


def _vandermonde(log_lam: torch.Tensor, bc: torch.Tensor, L: int, conj: bool) -> torch.Tensor:
    """K (..., L) = (2) Re sum_m bc_m exp(l log_lam_m), chunked over l (bounded memory)."""
    log_lam, bc = torch.broadcast_tensors(log_lam, bc)              # (..., M)
    if log_lam.numel() * L > MAX_WORK:
        raise SizeLimitError(f"kernel: {log_lam.numel():,} modes x {L:,} steps exceed the limit "
                             f"of {MAX_WORK:,.0f} mode-steps")
    # phase reduced to (-π, π] (exact: λ̄^l is unchanged), so float32 keeps l·θ accurate
    im = log_lam.imag - _TWO_PI * torch.round(log_lam.imag.detach() / _TWO_PI)
    re = log_lam.real.clamp(min=-1e4)                                 # λ̄ = 0: exp(-1e4 l) = 0, l ≥ 1
    rdt = re.dtype
    bc_row = bc[..., None, :]                                         # (..., 1, M)
    chunk = max(1, (1 << 22) // max(1, re.numel()))
    out = []
    for l0 in range(0, L, chunk):
        ls = torch.arange(l0, min(L, l0 + chunk), dtype=rdt, device=log_lam.device)
        # λ̄^l = |λ̄|^l e^{i l θ} (polar form: real exp/cos/sin, much faster than complex exp)
        V = torch.polar(torch.exp(re[..., None] * ls), im[..., None] * ls)  # (..., M, l)
        out.append((bc_row @ V)[..., 0, :].real)                     # (..., l)
    K = torch.cat(out, dim=-1) if len(out) > 1 else out[0]
    return 2 * K if conj else K


def ssm_kernel(lam_bar, bc, L: int, *, conj: bool = True) -> torch.Tensor:
    r"""Convolution kernel of diagonal discrete modes (a Vandermonde product).

    .. math:: K_l = 2\operatorname{Re}\sum_n bc_n\,\bar\lambda_n^{\,l}\quad(l = 0..L-1),
        \qquad bc_n = C_n \bar b_n B_n,

    with ``conj=True`` (one mode of each conjugate pair kept); ``conj=False`` drops the factor 2
    (real modes, s4d-real): :math:`K_l = \operatorname{Re}\sum_n bc_n \bar\lambda_n^l`.
    Powers are taken as :math:`\exp(l\log\bar\lambda)`, in chunks of l.

    Args:
        lam_bar: (..., M) discrete eigenvalues (complex or real; λ̄ = 0 allowed).
        bc: (..., M) products C·b_factor·B, broadcasting against ``lam_bar``.
        L: kernel length (1..:data:`MAX_LEN`).

    Returns:
        (..., L) real kernel (float64 for complex128 inputs).

    References:
        ``state-spaces/s4`` ``models/s4/s4d.py`` (``K = 2*einsum(...).real``).
    """
    L = _check_len(L)
    lam_bar = torch.as_tensor(lam_bar)
    cd = _complex_dtype(lam_bar.dtype if lam_bar.dtype.is_floating_point or lam_bar.dtype.is_complex
                        else torch.float64)
    lam_bar = lam_bar.to(cd)
    bc = torch.as_tensor(bc, device=lam_bar.device).to(cd)
    try:
        torch.broadcast_shapes(lam_bar.shape, bc.shape)
    except RuntimeError as e:
        raise ShapeError(f"lam_bar {tuple(lam_bar.shape)} and bc {tuple(bc.shape)} do not broadcast") from e
    if lam_bar.ndim == 0:
        raise ShapeError("lam_bar must have a mode axis (..., M)")
    return _vandermonde(torch.log(lam_bar), bc, L, conj)


def _chan_shape(u: torch.Tensor, chan: tuple[int, ...], what: str) -> None:
    if u.ndim < 1 + len(chan) or tuple(u.shape[u.ndim - len(chan):]) != tuple(chan):
        raise ShapeError(f"{what}: the input must be (T, ..., {', '.join(map(str, chan)) or ''}) "
                         f"time-major, got {tuple(u.shape)}")


def ssm_scan(lam_bar, b, c, u, *, conj: bool = True) -> torch.Tensor:
    r"""The recurrence of diagonal modes, step by step (the reference for the kernel path).

    .. math:: x_k = \bar\lambda \odot x_{k-1} + b\,u_k,\quad x_{-1} = 0,\qquad
        y_k = 2\operatorname{Re}\textstyle\sum_n c_n x_{k,n}

    (no factor 2 with ``conj=False``). Same outputs as ``fft_conv(u, ssm_kernel(lam_bar, c*b, T))``;
    the feed-through D u is not included.

    Args:
        lam_bar: (*chan, M) discrete eigenvalues.
        b: (*chan, M) input factors b_factor·B.
        c: (*chan, M) output vector C.
        u: (T, *batch, *chan) input, time-major.

    Returns:
        (T, *batch, *chan) real output.
    """
    lam_bar = torch.as_tensor(lam_bar)
    u = torch.as_tensor(u)
    ld = lam_bar.dtype if (lam_bar.dtype.is_floating_point or lam_bar.dtype.is_complex) else torch.float64
    ud = u.dtype if u.dtype.is_floating_point else torch.float64
    cd = _complex_dtype(torch.promote_types(_real_dtype(ld), ud))
    lam_bar = lam_bar.to(cd)
    b = torch.as_tensor(b, device=lam_bar.device).to(cd)
    c = torch.as_tensor(c, device=lam_bar.device).to(cd)
    try:
        shape = torch.broadcast_shapes(lam_bar.shape, b.shape, c.shape)
    except RuntimeError as e:
        raise ShapeError("lam_bar, b and c do not broadcast") from e
    if len(shape) == 0:
        raise ShapeError("lam_bar must have a mode axis (..., M)")
    chan, M = tuple(shape[:-1]), shape[-1]
    _chan_shape(u, chan, "ssm_scan")
    T = u.shape[0]
    _check_len(T)
    if u[0].numel() * M * T > MAX_WORK:
        raise SizeLimitError(f"scan: {u[0].numel() * M:,} states x {T:,} steps exceed the limit "
                             f"of {MAX_WORK:,.0f}")
    return _scan(lam_bar.expand(shape), b.expand(shape), c.expand(shape), u.to(_real_dtype(cd)), conj)


def _scan(lam, b, c, u, conj):
    x = torch.zeros(*u.shape[1:], lam.shape[-1], dtype=lam.dtype, device=u.device)   # (*batch, *chan, M)
    ys = []
    for k in range(u.shape[0]):
        x = lam * x + b * u[k][..., None]
        ys.append((c * x).sum(-1).real)                               # (*batch, *chan)
    y = torch.stack(ys)                                               # (T, *batch, *chan)
    return 2 * y if conj else y


def dense_kernel(A_bar, B_bar, C, L: int) -> torch.Tensor:
    r"""Kernel of a dense discrete system, :math:`K_l = \operatorname{Re}(C\bar A^l\bar B)`, l < L.

    The Krylov block :math:`[\bar B, \bar A\bar B, \dots]` is built by doubling
    (:math:`V_{[2^k, 2^{k+1})} = \bar A^{2^k} V_{[0, 2^k)}`): log₂L matrix products.

    Args:
        A_bar: (..., N, N); B_bar: (..., N); C: (..., N).
        L: kernel length.

    Returns:
        (..., L) real.
    """
    L = _check_len(L)
    A_bar = torch.as_tensor(A_bar)
    B_bar = torch.as_tensor(B_bar, dtype=A_bar.dtype)
    C = torch.as_tensor(C, dtype=A_bar.dtype)
    N = A_bar.shape[-1]
    if A_bar.ndim < 2 or A_bar.shape[-2] != N or B_bar.shape[-1:] != (N,) or C.shape[-1:] != (N,):
        raise ShapeError(f"dense_kernel: A_bar (..., N, N), B_bar and C (..., N); got "
                         f"{tuple(A_bar.shape)}, {tuple(B_bar.shape)}, {tuple(C.shape)}")
    batch = torch.broadcast_shapes(A_bar.shape[:-2], B_bar.shape[:-1], C.shape[:-1])
    if math.prod(batch) * N * L > MAX_WORK:
        raise SizeLimitError(f"dense kernel: {math.prod(batch) * N:,} states x {L:,} steps exceed "
                             f"the limit of {MAX_WORK:,.0f}")
    return _dense_kernel(A_bar, B_bar, C, L)


def _dense_kernel(A_bar, B_bar, C, L):
    V = B_bar[..., None]                                              # (..., N, 1)
    P = A_bar
    while V.shape[-1] < L:
        V = torch.cat([V, P @ V], dim=-1)                             # (..., N, 2m)
        if V.shape[-1] < L:
            P = P @ P
    V = V[..., :L]                                                    # (..., N, L)
    K = (C[..., None] * V).sum(-2)                                    # (..., L)
    return K.real if K.is_complex() else K


def dense_scan(A_bar, B_bar, C, u) -> torch.Tensor:
    r"""Recurrence of a dense system: :math:`x_k = \bar A x_{k-1} + \bar B u_k`,
    :math:`y_k = \operatorname{Re}(C x_k)` (no D u).

    Args:
        A_bar: (*chan, N, N); B_bar, C: (*chan, N).
        u: (T, *batch, *chan).

    Returns:
        (T, *batch, *chan).
    """
    A_bar = torch.as_tensor(A_bar)
    u = torch.as_tensor(u)
    B_bar = torch.as_tensor(B_bar, dtype=A_bar.dtype)
    C = torch.as_tensor(C, dtype=A_bar.dtype)
    N = A_bar.shape[-1]
    if A_bar.ndim < 2 or A_bar.shape[-2] != N:
        raise ShapeError(f"A_bar must be (..., N, N), got {tuple(A_bar.shape)}")
    chan = tuple(torch.broadcast_shapes(A_bar.shape[:-2], B_bar.shape[:-1], C.shape[:-1]))
    _chan_shape(u, chan, "dense_scan")
    _check_len(u.shape[0])
    return _dense_scan(A_bar.expand(*chan, N, N), B_bar.expand(*chan, N), C.expand(*chan, N),
                       u.to(_real_dtype(A_bar.dtype)))


def _dense_scan(A_bar, B_bar, C, u):
    x = torch.zeros(*u.shape[1:], A_bar.shape[-1], dtype=A_bar.dtype, device=u.device)  # (*batch, *chan, N)
    ys = []
    for k in range(u.shape[0]):
        x = (A_bar @ x[..., None])[..., 0] + B_bar * u[k][..., None]
        y = (C * x).sum(-1)
        ys.append(y.real if y.is_complex() else y)
    return torch.stack(ys)                                            # (T, *batch, *chan)


def fft_conv(u, K) -> torch.Tensor:
    r"""Causal convolution along time, :math:`y_t = \sum_{s=0}^{t} K_s u_{t-s}`, by FFT.

    ``y = irfft(rfft(u, 2T) · rfft(K, 2T))[:T]``: zero padding to 2T makes the circular
    convolution linear. Kernels longer than T are cut, shorter ones are zero beyond L.

    Args:
        u: (T, *rest) real input, time-major.
        K: (*k, L) real kernels; ``k`` aligns with the trailing dims of ``rest`` (e.g. u
            (T, B, H) with K (H, L); u (T,) or (T, B) with K (L,)).

    Returns:
        (T, *rest) (broadcast with ``k``).
    """
    u = torch.as_tensor(u)
    K = torch.as_tensor(K, device=u.device)
    if u.ndim < 1 or K.ndim < 1:
        raise ShapeError("fft_conv: u must be (T, ...) and K (..., L)")
    if K.ndim - 1 > u.ndim - 1:
        raise ShapeError(f"fft_conv: kernel {tuple(K.shape)} has more channel dims than input "
                         f"{tuple(u.shape)}")
    T = _check_len(u.shape[0])
    Kt = K.movedim(-1, 0)[:T]                                         # (L', *k)
    Kt = Kt.reshape(Kt.shape[0], *([1] * (u.ndim - K.ndim)), *Kt.shape[1:])   # aligned with u
    try:
        torch.broadcast_shapes(u.shape[1:], Kt.shape[1:])
    except RuntimeError as e:
        raise ShapeError(f"fft_conv: kernel {tuple(K.shape)} does not match input {tuple(u.shape)}") from e
    n = 2 * T
    y = torch.fft.irfft(torch.fft.rfft(u, n=n, dim=0) * torch.fft.rfft(Kt, n=n, dim=0), n=n, dim=0)
    return y[:T]


# ============================================================================ timescales
def autocorrelation_lambda_max(x, L: int) -> float:
    r"""Largest eigenvalue of the L×L Toeplitz autocorrelation matrix of input samples.

    .. math:: \hat R_{ij} = \hat r(|i-j|),\qquad
        \hat r(k) = \frac{1}{TB}\sum_{b}\sum_{t=0}^{T-1-k} x_{t,b}\,x_{t+k,b}

    (the biased estimator: positive semi-definite; the mean is not removed, as in
    :math:`E[x x^\top]`). For an AR(1) input with unit variance, :math:`\lambda_{max} \to
    (1+\varphi)/(1-\varphi)` as L grows (and L ≪ T); for white noise of variance σ², σ².

    Args:
        x: (T,) or (T, B) samples (time-major; columns are independent sequences).
        L: the matrix size (1..:data:`MAX_AUTOCORR_LEN`).

    Returns:
        λ_max (float, float64 computation).

    References:
        F. Liu, Q. Li, arXiv:2411.19455 (the timescale rule); ``docs/notes/ssm_spectra.md`` §4.
    """
    L = _int("autocorrelation size L", L, 1, MAX_AUTOCORR_LEN)
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim == 1:
        x = x[:, None]                                                # (T, 1)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ShapeError(f"autocorrelation: samples must be (T,) or (T, B) with T >= 2, got "
                         f"{tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ParameterError("autocorrelation: the samples must be finite")
    T = x.shape[0]
    X = torch.fft.rfft(x, n=2 * T, dim=0)
    r = torch.fft.irfft(X.abs() ** 2, n=2 * T, dim=0)[:T].mean(dim=1) / T   # r(k), k < T
    r = torch.cat([r, r.new_zeros(max(0, L - T))])[:L]
    i = torch.arange(L)
    R = r[(i[:, None] - i[None, :]).abs()]                             # (L, L) Toeplitz
    return float(torch.linalg.eigvalsh(R)[-1])


def zero_real_timescale(seq_len: int, lambda_max: float, c: float = 1.0) -> float:
    r"""The zero-real-part step size :math:`\Delta = c / \sqrt{L\,\lambda_{max}}`.

    With Re λ = 0 and ZOH every past input enters the state with weight ≈ Δ|CB|, so
    :math:`E|y_L|^2 \le \Delta^2|CB|^2 L\,\lambda_{max}(R)`; this Δ keeps it O(1)
    (white noise: Δ ∝ 1/√L; near-constant input: Δ ∝ 1/L).

    Args:
        seq_len: L ≥ 1.
        lambda_max: largest eigenvalue of the input autocorrelation matrix (> 0).
        c: the constant (> 0).

    Returns:
        Δ (float).

    References:
        F. Liu, Q. Li, arXiv:2411.19455 (abstract and secondary quotes; derivation in
        ``docs/notes/ssm_spectra.md`` §4).
    """
    L = _int("sequence length L", seq_len, 1, MAX_LEN)
    return _positive("c", c) / math.sqrt(L * _positive("λ_max", lambda_max))


# ============================================================================ the model
@dataclass(frozen=True)
class SSMConfig:
    """Architecture of an :class:`SSMModel` (plain data; stored in checkpoints)."""

    d_input: int = 1          # input features
    d_output: int = 1         # output features
    channels: int = 4         # H: independent SISO SSM channels per layer
    state_size: int = 64      # N: full state size per channel (diagonal inits keep N/2 conjugate-pair modes; s4d-real keeps N real modes)
    layers: int = 1           # 1..4 stacked layers (GELU + channel-mixing linear map between layers when > 1; a 1-layer model with readout "linear" is a linear time-invariant system)
    init: str = "s4d-lin"     # one of INITS
    discretization: str = "zoh"   # one of DISCRETIZATIONS
    dt_min: float = 1e-3      # log Δ ~ U[log dt_min, log dt_max] per channel (not zero-real)
    dt_max: float = 1e-1      # (zero-real: Δ = 1/sqrt(seq_len·input_lambda_max) for every channel instead)
    seq_len: int = 1024       # L used by the zero-real init's timescale
    input_lambda_max: float = 1.0   # zero-real: λ_max of the input's autocorrelation matrix (1: white noise)
    mode: str = "conv"        # "conv" (Vandermonde kernel + FFT) or "scan" (recurrence); same outputs
    readout: str = "linear"   # "linear" or "mlp" (Linear(H, H), GELU, Linear(H, d_output))
    train_dt: bool = True     # whether log Δ is trained
    seed: int = 0             # seed of the torch.Generator that draws every initial weight

    def __post_init__(self):
        def setint(name, lo, hi, size=True):                         # 64.0 -> 64
            object.__setattr__(self, name, _int(name, getattr(self, name), lo, hi, size=size))

        setint("d_input", 1, 1024)
        setint("d_output", 1, 1024)
        setint("channels", 1, 4096)
        setint("layers", 1, 4, size=False)
        _choice("SSM init", self.init, INITS)
        _choice("discretization", self.discretization, DISCRETIZATIONS)
        _choice("mode", self.mode, _MODES)
        _choice("readout", self.readout, _READOUTS)
        object.__setattr__(self, "state_size", _int(
            "state size N", self.state_size, 2, MAX_DENSE_STATE if self.init in DENSE_INITS else MAX_STATE))
        if self.init in PAIRED_INITS and self.state_size % 2:
            raise ParameterError(f"{self.init} pairs conjugate eigenvalues: the state size must "
                                 f"be even, got {self.state_size}")
        lo, hi_dt = _positive("dt_min", self.dt_min), _positive("dt_max", self.dt_max)
        if lo > hi_dt:
            raise ParameterError(f"dt_min {self.dt_min:g} is above dt_max {self.dt_max:g}")
        setint("seq_len", 1, MAX_LEN)
        _positive("input_lambda_max", self.input_lambda_max)
        if not isinstance(self.train_dt, bool):
            raise ParameterError(f"train_dt must be True or False, got {self.train_dt!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def diagonal(self) -> bool:
        return self.init not in DENSE_INITS

    @property
    def modes(self) -> int:
        """M, the modes per channel: N/2 for conjugate-pair inits, N otherwise."""
        return self.state_size // 2 if self.init in PAIRED_INITS else self.state_size

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> SSMConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise ParameterError(f"SSM config: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in dict(d).items() if k in names})

    def replace(self, **changes) -> SSMConfig:
        return type(self)(**{**self.as_dict(), **changes})


def _uniform(shape, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (2 * torch.rand(*shape, generator=gen, dtype=torch.float64) - 1) * bound


def _log_dt(cfg: SSMConfig, gen: torch.Generator) -> torch.Tensor:
    """(H,) float64 log Δ: log-uniform in [dt_min, dt_max] (zero-real: log(1/sqrt(L λ_max)))."""
    H = cfg.channels
    if cfg.init == "zero-real":
        return torch.full((H,), math.log(zero_real_timescale(cfg.seq_len, cfg.input_lambda_max)),
                          dtype=torch.float64)
    lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
    return lo + torch.rand(H, generator=gen, dtype=torch.float64) * (hi - lo)


class _DiagonalSSM(nn.Module):
    """H independent diagonal SISO SSMs (one layer). Parameters (H, M) per mode."""

    def __init__(self, cfg: SSMConfig, gen: torch.Generator):
        super().__init__()
        H, N, M = cfg.channels, cfg.state_size, cfg.modes
        self.method, self.mode = cfg.discretization, cfg.mode
        self.conj = cfg.init in PAIRED_INITS
        self.zero_real = cfg.init == "zero-real"
        log_dt = _log_dt(cfg, gen)                                    # (H,)
        if cfg.init == "lru":                                         # a ring per channel
            lam, Bm = [], []
            for h in range(H):
                si = state_init("lru", N, generator=gen, dt=1.0)      # modes = log λ̄
                lam.append(si.modes / math.exp(float(log_dt[h])))     # λ = log(λ̄)/Δ_h
                Bm.append(si.mode_B)
            lam, Bm = torch.stack(lam), torch.stack(Bm)               # (H, M)
        else:
            si = state_init(cfg.init, N, seq_len=cfg.seq_len)
            lam = si.modes.expand(H, M).clone()                       # (H, M)
            Bm = si.mode_B.expand(H, M).clone()
        f32 = torch.float32
        if self.zero_real:
            self.A_real = nn.Parameter(lam.real.to(f32))              # Re λ = min(a, 0)
        else:
            self.log_A_real = nn.Parameter(torch.log((-lam.real).clamp(min=1e-12)).to(f32))
        if cfg.init == "s4d-real":
            self.register_buffer("A_imag", torch.zeros(H, M, dtype=f32))    # real modes
        else:
            self.A_imag = nn.Parameter(lam.imag.to(f32))
        self.B = nn.Parameter(torch.view_as_real(Bm.to(torch.complex128)).to(f32))       # (H, M, 2)
        C = torch.randn(H, M, 2, generator=gen, dtype=torch.float64) * math.sqrt(0.5)    # CN(0, 1)
        self.C = nn.Parameter(C.to(f32))
        self.D = nn.Parameter(torch.randn(H, generator=gen, dtype=torch.float64).to(f32))
        self.log_dt = nn.Parameter(log_dt.to(f32), requires_grad=cfg.train_dt)

    def real_part(self) -> torch.Tensor:
        if self.zero_real:
            a = self.A_real                                           # straight-through clamp
            return a + (a.clamp(max=0.0) - a).detach()
        return -torch.exp(self.log_A_real)

    def lam(self) -> torch.Tensor:
        """(H, M) complex continuous eigenvalues (parameter precision)."""
        return torch.complex(self.real_part(), self.A_imag)

    def dt(self) -> torch.Tensor:
        return torch.exp(self.log_dt)                                 # (H,)

    def _discrete(self):
        lam, dt = self.lam(), self.dt()[:, None]                      # (H, M), (H, 1)
        lam_bar, bfac = _discretize(lam, dt, self.method)
        b = bfac * torch.view_as_complex(self.B.contiguous())         # B̄ (H, M)
        c = torch.view_as_complex(self.C.contiguous())                # (H, M)
        log_lam = dt * lam if self.method == "zoh" else torch.log(lam_bar)
        return lam_bar, log_lam, b, c

    def eigenvalues(self) -> torch.Tensor:
        return torch.complex(self.real_part().double(), self.A_imag.double())  # (H, M)

    def kernel(self, L: int) -> torch.Tensor:
        _, log_lam, b, c = self._discrete()
        return _vandermonde(log_lam, c * b, L, self.conj)             # (H, L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:             # u (T, B, H)
        if self.mode == "conv":
            y = fft_conv(u, self.kernel(u.shape[0]))                  # (T, B, H)
        else:
            lam_bar, _, b, c = self._discrete()
            y = _scan(lam_bar, b, c, u, self.conj)                    # (T, B, H)
        return y + self.D * u


class _DenseSSM(nn.Module):
    """H SISO SSMs sharing one dense state matrix A (N, N) (one layer); Δ, B, C, D per channel."""

    def __init__(self, cfg: SSMConfig, gen: torch.Generator):
        super().__init__()
        H, N = cfg.channels, cfg.state_size
        self.method, self.mode = cfg.discretization, cfg.mode
        log_dt = _log_dt(cfg, gen)
        si = state_init(cfg.init, N, generator=gen)
        f32 = torch.float32
        self.A = nn.Parameter(si.A.to(f32))                                       # (N, N)
        self.B = nn.Parameter(si.B.real[:, None].expand(N, H).to(f32).clone())    # (N, H)
        self.C = nn.Parameter(torch.randn(H, N, generator=gen, dtype=torch.float64).to(f32))
        self.D = nn.Parameter(torch.randn(H, generator=gen, dtype=torch.float64).to(f32))
        self.log_dt = nn.Parameter(log_dt.to(f32), requires_grad=cfg.train_dt)
        self.H = H

    def dt(self) -> torch.Tensor:
        return torch.exp(self.log_dt)

    def eigenvalues(self) -> torch.Tensor:
        ev = torch.linalg.eigvals(self.A.detach().double())                       # (N,)
        return ev.expand(self.H, -1).clone()                                      # (H, N)

    def _discrete(self):
        dt = self.dt()                                                            # (H,)
        return _discretize_dense(self.A, self.B.T, dt, self.method, dt.shape)    # (H,N,N), (H,N)

    def kernel(self, L: int) -> torch.Tensor:
        Abar, Bbar = self._discrete()
        return _dense_kernel(Abar, Bbar, self.C, L)                               # (H, L)

    def forward(self, u: torch.Tensor) -> torch.Tensor:             # u (T, B, H)
        if self.mode == "conv":
            y = fft_conv(u, self.kernel(u.shape[0]))
        else:
            Abar, Bbar = self._discrete()
            y = _dense_scan(Abar, Bbar, self.C, u)
        return y + self.D * u


class SSMModel(nn.Module):
    r"""A stack of linear SSM layers (S4D / HiPPO / LRU / zero-real) with a readout.

    .. math::

        u^{(1)}_t = W_{in} x_t,\quad y^{(\ell)}_{t,h} = \sum_{s\le t} K^{(\ell)}_{h,s}
        u^{(\ell)}_{t-s,h} + D^{(\ell)}_h u^{(\ell)}_{t,h},\quad
        u^{(\ell+1)} = W^{(\ell)} \mathrm{GELU}(y^{(\ell)}) + b^{(\ell)},\quad
        \hat y_t = \mathrm{readout}(y^{(\text{layers})}_t)

    (no bias on the input map; readout ``"linear"``: :math:`W_{out} y + b_{out}`, so a 1-layer
    linear-readout model is LTI: :math:`\hat y_t = \sum_s \rho(s) x_{t-s} + D_{eff} x_t + b`).
    Diagonal layers hold per channel the modes λ (H, M), B, C (complex), D and Δ; dense layers
    (legs, legt, random) one trainable A (N, N) shared by the channels and B (N, H), C (H, N).
    Every initial weight is drawn from ``torch.Generator().manual_seed(config.seed)``.

    Args:
        config: an :class:`SSMConfig` (keyword arguments override its fields).

    Shapes: ``forward`` maps (T, B, d_input) to (T, B, d_output), time-major, in the
    parameters' dtype (float32 unless ``.double()``).
    """

    kind: ClassVar[str] = "ssm"

    def __init__(self, config: SSMConfig | None = None, **overrides: Any):
        super().__init__()
        cfg = config if config is not None else SSMConfig(**overrides)
        if config is not None and overrides:
            cfg = cfg.replace(**overrides)
        self.config = cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        H, f32 = cfg.channels, torch.float32
        layer = _DiagonalSSM if cfg.diagonal else _DenseSSM
        self.ssm = nn.ModuleList(layer(cfg, gen) for _ in range(cfg.layers))
        self.mix_weight = nn.ParameterList(
            nn.Parameter(_uniform((H, H), 1 / math.sqrt(H), gen).to(f32)) for _ in range(cfg.layers - 1))
        self.mix_bias = nn.ParameterList(
            nn.Parameter(_uniform((H,), 1 / math.sqrt(H), gen).to(f32)) for _ in range(cfg.layers - 1))
        self.W_in = nn.Parameter(_uniform((H, cfg.d_input), 1 / math.sqrt(cfg.d_input), gen).to(f32))
        if cfg.readout == "mlp":
            self.W_hidden = nn.Parameter(_uniform((H, H), 1 / math.sqrt(H), gen).to(f32))
            self.b_hidden = nn.Parameter(_uniform((H,), 1 / math.sqrt(H), gen).to(f32))
        self.W_out = nn.Parameter(_uniform((cfg.d_output, H), 1 / math.sqrt(H), gen).to(f32))
        self.b_out = nn.Parameter(_uniform((cfg.d_output,), 1 / math.sqrt(H), gen).to(f32))

    # ------------------------------------------------------------------ forward
    @property
    def linear(self) -> bool:
        """True for a 1-layer linear-readout model (an LTI system)."""
        return self.config.layers == 1 and self.config.readout == "linear"

    def _dtype(self) -> torch.dtype:
        return self.W_in.dtype

    def _check_len(self, T: int) -> int:
        T = _check_len(T)
        work = self.config.layers * self.config.channels * self.config.modes * T
        if work > MAX_WORK:
            raise SizeLimitError(f"SSM: {work:,} mode-steps (layers x channels x modes x length) "
                                 f"exceed the limit of {MAX_WORK:,.0f}")
        return T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, B, d_input) -> (T, B, d_output)."""
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != cfg.d_input:
            raise ShapeError(f"SSM input must be (T, B, {cfg.d_input}) time-major, got {tuple(x.shape)}")
        self._check_len(x.shape[0])
        x = x.to(self._dtype())
        u = x @ self.W_in.T                                           # (T, B, H)
        for i, layer in enumerate(self.ssm):
            y = layer(u)                                              # (T, B, H)
            if i < cfg.layers - 1:
                u = F.gelu(y) @ self.mix_weight[i].T + self.mix_bias[i]
        if cfg.readout == "mlp":
            y = F.gelu(y @ self.W_hidden.T + self.b_hidden)           # (T, B, H)
        return y @ self.W_out.T + self.b_out                          # (T, B, d_output)

    # ------------------------------------------------------------------ spectra
    @torch.no_grad()
    def eigenvalues(self) -> torch.Tensor:
        """complex128 (layers, H, M): the continuous eigenvalues now (dense: eigvals of A)."""
        return torch.stack([layer.eigenvalues() for layer in self.ssm])

    @torch.no_grad()
    def dt(self) -> torch.Tensor:
        """(layers, H) step sizes Δ (parameter dtype)."""
        return torch.stack([layer.dt() for layer in self.ssm])

    @torch.no_grad()
    def discrete_eigenvalues(self) -> torch.Tensor:
        r"""complex128 (layers, H, M): :math:`\bar\lambda` = the discretisation map of each λ with
        its channel's Δ (exact for dense layers too: Ā is that map applied to ΔA)."""
        dt = self.dt().double()[..., None]                           # (layers, H, 1)
        return _discretize(self.eigenvalues(), dt, self.config.discretization)[0]

    @torch.no_grad()
    def kernels(self, L: int) -> torch.Tensor:
        """Real (layers, H, L) per-channel convolution kernels K_l (without D), parameter dtype."""
        L = self._check_len(L)
        return torch.stack([layer.kernel(L) for layer in self.ssm])

    @torch.no_grad()
    def feedthrough(self) -> torch.Tensor:
        """(d_output, d_input) D_eff = W_out diag(D) W_in of a 1-layer linear model."""
        return self.W_out @ (self.ssm[0].D[:, None] * self.W_in)

    @torch.no_grad()
    def memory_function(self, L: int) -> torch.Tensor:
        r"""The learned memory, (L,), input 0 -> output 0.

        1-layer linear readout (LTI): the impulse response without feed-through,
        :math:`\rho(s) = \sum_h W_{out,0h} K_{h,s} W_{in,h0}`, so
        :math:`\hat y_t = \sum_s \rho(s) x_{t-s} + D_{eff} x_t + b` (:meth:`feedthrough`).
        Otherwise the step-response difference under the constant input :math:`x_t = 1`:
        :math:`|\hat y_s - \hat y_{s-1}|` with :math:`\hat y_{-1}` the output at t = 0 for zero
        input (for an LTI model this is :math:`|\rho(s)|` for s ≥ 1 and :math:`|\rho(0) + D|` at 0).

        References:
            ``radarFudan/Curse-of-memory`` ``src/data/components/lf/datagen.py``
            (``memory = abs(outputs[1:] - outputs[:-1])``); ``docs/notes/ssm_spectra.md`` §5.
        """
        L = self._check_len(L)
        if self.linear:
            K = self.ssm[0].kernel(L)                                 # (H, L)
            return (self.W_out[0][:, None] * self.W_in[:, 0][:, None] * K).sum(0)
        was = self.training
        self.eval()
        try:
            x = torch.zeros(L, 2, self.config.d_input, dtype=self._dtype(), device=self.W_in.device)
            x[:, 0, 0] = 1.0                                          # batch 0: step, batch 1: zero
            y = self(x)[..., 0]                                       # (L, 2)
        finally:
            self.train(was)
        prev = torch.cat([y[:1, 1], y[:-1, 0]])                       # ŷ_{s-1}
        return (y[:, 0] - prev).abs()

    @torch.no_grad()
    def lyapunov_exponent(self) -> float:
        r"""Largest Lyapunov exponent per step of the (linear) recurrence,
        :math:`\max_{\ell,h,n}\log|\bar\lambda_{\ell h n}|` (ZOH: :math:`\Delta\operatorname{Re}\lambda`);
        exact for each layer's linear recurrence (docs/notes §7). 0 means marginal
        (zero-real), > 0 an unstable recurrence (e.g. Euler with Δ|λ| too large)."""
        return float(torch.log(self.discrete_eigenvalues().abs()).max())


def build_ssm(config: Mapping) -> SSMModel:
    """An :class:`SSMModel` from a config mapping (a ``"kind"`` key is ignored)."""
    if isinstance(config, SSMConfig):
        return SSMModel(config)
    return SSMModel(SSMConfig.from_dict(config))
