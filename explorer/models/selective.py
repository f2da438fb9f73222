r"""A Mamba-style selective state-space model, its per-token spectra and its token dynamics.

Each layer is the Mamba block of the reference code (``state-spaces/mamba``,
``mamba_simple.py`` and ``selective_scan_ref``; ``docs/notes/ssm_spectra.md`` §9), time-major:

.. math::

    [u, z] = W_{\rm in} x_t,\quad u \leftarrow \mathrm{SiLU}(\mathrm{conv}_{\rm causal}(u)),
    \quad [\delta_t, B_t, C_t] = W_x u_t,\quad
    \Delta_t = \mathrm{softplus}(W_\Delta \delta_t + b_\Delta),

.. math::

    A = -e^{A_{\log}},\quad \bar A_t = e^{\Delta_t A},\quad
    h_t = \bar A_t \odot h_{t-1} + \Delta_t B_t u_t,\quad
    y_t = C_t^\top h_t + D u_t,\quad \mathrm{out}_t = W_{\rm out}(y_t \odot \mathrm{SiLU}(z_t)).

Per channel ``d`` (of ``d_inner = expand * d_model``) the state has ``N = d_state`` modes; ``B_t``
and ``C_t`` (N,) are shared by the channels, ``Δ_t`` (d_inner,) is per channel. The model is
``x -> in-proj -> layers x (x + block(RMSNorm(x))) -> RMSNorm -> out-proj`` (pre-norm residual as
in the reference ``Block``; ``norm=False`` drops the norms).

The scan: :func:`selective_scan` (the default path of ``forward``) gives the result of the
step-by-step reference :func:`selective_scan_ref` (float64: to rounding, ~1e-15) with a fused,
chunked recurrence and a hand-written adjoint scan for the gradient (no per-token autograd
graph; the backward pass recomputes each chunk's states from the chunk-entry state, so the
memory kept is ``T/chunk`` states rather than all ``T``). ``forward(x, reference=True)`` runs
the reference. The Mamba-2 (SSD) form -- quadratic within a chunk, recurrent across chunks --
was measured 20-90x slower on CPU (T=256, B=32, E=N=16, chunks of 8-32): with a decay per
(channel, mode) its segment matrices hold ``T·chunk·B·E·N`` entries, each an ``exp``, where
the scan needs ``T·B·E·N``.

Initialisation (reference defaults): ``A_log[d, n] = log(n+1)`` (S4D-Real: A = −(1..N) in every
channel), ``D = 1``, ``dt_proj.weight ~ U(±dt_rank^{-1/2})``, ``dt_proj.bias`` the inverse
softplus of ``Δ ~ exp(U[log dt_min, log dt_max])`` (clamped at 1e-4), so ``softplus(bias)`` is
log-uniform in ``[dt_min, dt_max]``; every other linear and the depthwise convolution like
PyTorch's default, ``U(±1/sqrt(fan_in))``, all drawn from one explicit generator.

Spectra: the per-token transition eigenvalues :math:`\bar A_{t,d,n} = e^{\Delta_{t,d} A_{d,n}}`
are real and lie in (0, 1) for every input (``Δ > 0``, ``A < 0``), so the state map is a
contraction; with the inputs held fixed the recurrence is diagonal and its Lyapunov exponents
are exactly :math:`\lambda_{d,n} = A_{d,n}\,\overline{\Delta_{\cdot,d}}` (the time mean of Δ).
:meth:`SelectiveSSM.recurrence` exposes the state map of one layer for
:func:`explorer.core.analysis.driven.driven_lyapunov`, which must reproduce that closed form.

Token dynamics (continuous-depth limit, one scalar channel; ``docs/notes/ssm_spectra.md`` §7):
:func:`token_ode`, :func:`token_regime` and :func:`phase_diagram`.

References:
    A. Gu, T. Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
    arXiv:2312.00752 (2023).
    T. N. Vo, T. Pham, X. Tong, T. Nguyen, "Demystifying the Token Dynamics of Deep Selective
    State Space Models", arXiv:2410.03292 (ICLR 2025).
    J. T. Halloran, M. Gulati, P. F. Roysdon, "Mamba State-Space Models Are Lyapunov-Stable
    Learners", arXiv:2406.00209 (TMLR 2025).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..core.errors import ParameterError, ShapeError, SizeLimitError

__all__ = [
    "REGIME_LABELS",
    "SelectiveConfig",
    "SelectiveRecurrence",
    "SelectiveSSM",
    "build_selective",
    "phase_diagram",
    "selective_scan",
    "selective_scan_ref",
    "selective_step",
    "token_blowup_time",
    "token_ode",
    "token_regime",
    "token_regime_codes",
]

#: regime codes of :func:`token_regime_codes` / :func:`phase_diagram`, in code order
REGIME_LABELS = ("converge", "diverge-slow", "diverge-fast")


# ============================================================================= config
@dataclass(frozen=True)
class SelectiveConfig:
    """Architecture of a :class:`SelectiveSSM` (plain data; stored in checkpoints)."""

    d_input: int = 1          # input features per time step
    d_output: int = 1         # output features per time step
    d_model: int = 8          # width of the residual stream
    d_state: int = 16         # N: state modes per inner channel
    expand: int = 2           # d_inner = expand * d_model
    d_conv: int = 4           # width of the causal depthwise convolution (1: no convolution)
    dt_rank: int = 0          # rank of the Δ projection; 0: ceil(d_model / 16)
    dt_min: float = 1e-3      # smallest initial step size Δ (softplus(dt bias) log-uniform ...
    dt_max: float = 1e-1      # ... in [dt_min, dt_max])
    layers: int = 1           # number of Mamba blocks
    norm: bool = True         # pre-norm RMSNorm before each block and at the end (as in Mamba)
    seed: int = 0             # initialisation seed (an explicit torch.Generator; no global RNG)

    def __post_init__(self):
        def bad(msg):
            raise ParameterError(f"selective SSM config: {msg}")

        limits = {"d_input": (1, 4096), "d_output": (1, 4096), "d_model": (1, 4096),
                  "d_state": (1, 1024), "expand": (1, 16), "d_conv": (1, 64),
                  "dt_rank": (0, 4096), "layers": (1, 64), "seed": (0, 2**63 - 1)}
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                bad(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        for name in ("dt_min", "dt_max"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v <= 0:
                bad(f"{name} must be a positive number, got {v!r}")
        if self.dt_min > self.dt_max:
            bad(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        if not isinstance(self.norm, bool):
            bad(f"norm must be True or False, got {self.norm!r}")

    @property
    def d_inner(self) -> int:
        """Inner width ``expand * d_model`` (the number of SSM channels)."""
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        """The Δ-projection rank actually used (``dt_rank``, or ``ceil(d_model/16)`` for 0)."""
        return self.dt_rank or math.ceil(self.d_model / 16)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SelectiveConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise ParameterError(f"selective SSM config: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: v for k, v in dict(d).items() if k in names})

    def replace(self, **changes) -> SelectiveConfig:
        return type(self)(**{**self.as_dict(), **changes})


# ============================================================================= building blocks
def _uniform_(t: torch.Tensor, bound: float, generator: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        return t.copy_((torch.rand(t.shape, generator=generator, dtype=t.dtype) * 2 - 1) * bound)


def _linear(d_in: int, d_out: int, bias: bool, generator: torch.Generator) -> nn.Linear:
    """An ``nn.Linear`` initialised like PyTorch's default, U(±1/sqrt(d_in)), from ``generator``
    (``skip_init``: the global RNG is not touched)."""
    lin = nn.utils.skip_init(nn.Linear, d_in, d_out, bias=bias)
    bound = 1.0 / math.sqrt(d_in)
    _uniform_(lin.weight, bound, generator)
    if bias:
        _uniform_(lin.bias, bound, generator)
    return lin


class RMSNorm(nn.Module):
    r""":math:`x / \sqrt{\mathrm{mean}(x^2) + \epsilon} \odot w` over the last dimension
    (Mamba's pre-norm; ``w`` starts at 1)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SelectiveRecurrence(NamedTuple):
    """The state map of one selective layer with its inputs, for a driven-Lyapunov analysis.

    ``step(h, v)``: ``h`` (B, d_inner*N) -> (B, d_inner*N), with
    :math:`h' = e^{\\Delta A} \\odot h + \\Delta\\,(u \\otimes B)`; ``v`` (B, 2 d_inner + N) packs
    ``[Δ_t, B_t, u_t]``. ``inputs`` (T, B, 2 d_inner + N) are those of the model's run, ``h0``
    (B, d_inner*N) zeros, ``A`` (d_inner, N) the continuous eigenvalues, ``C`` (T, B, N) the
    readout vectors (``y_t = C_t · h_t + D u_t``)."""

    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    inputs: torch.Tensor
    h0: torch.Tensor
    A: torch.Tensor
    C: torch.Tensor


# ============================================================================= selective scan
def selective_step(h: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, u: torch.Tensor,
                   Bm: torch.Tensor) -> torch.Tensor:
    r"""One step of the selective recurrence, :math:`h' = e^{\Delta A} \odot h + \Delta u \otimes B`.

    ``h`` (..., E, N), ``delta`` and ``u`` (..., E), ``A`` (E, N), ``Bm`` (..., N)."""
    return (torch.exp(delta.unsqueeze(-1) * A) * h
            + (delta * u).unsqueeze(-1) * Bm.unsqueeze(-2))


def selective_scan_ref(delta: torch.Tensor, A: torch.Tensor, u: torch.Tensor, Bm: torch.Tensor,
                       Cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The selective scan, step by step (the reference of :func:`selective_scan`).

    :math:`h_t = e^{\Delta_t A} \odot h_{t-1} + \Delta_t u_t \otimes B_t` from :math:`h_{-1} = 0`
    and :math:`y_t = C_t \cdot h_t` (without the skip term ``D u``).

    Args:
        delta, u: (T, B, E); A: (E, N); Bm, Cm: (T, B, N).

    Returns:
        ``y`` (T, B, E) and the last state ``h_{T-1}`` (B, E, N).
    """
    h = delta.new_zeros(delta.shape[1:] + A.shape[-1:])
    ys = []
    for d, x, b, c in zip(delta.unbind(0), u.unbind(0), Bm.unbind(0), Cm.unbind(0)):
        h = selective_step(h, d, A, x, b)
        ys.append((h * c.unsqueeze(-2)).sum(-1))
    return torch.stack(ys), h


class _SelectiveScan(torch.autograd.Function):
    """Fused, chunked selective scan with a hand-written reverse (adjoint) scan for the gradient.

    Inputs ``delta`` (T, B, E), ``A`` (E, N), ``x = Δ u`` (T, B, E), ``Bm``, ``Cm`` (T, B, N) and
    the chunk length. Outputs ``y`` (T, B, E), the last state (B, E, N) and the states entering
    each chunk (K, B, E, N) (saved for the backward pass; not differentiable).

    Time is cut into chunks of ``chunk`` tokens. Per chunk the decays :math:`e^{\\Delta_t A}`,
    the inputs :math:`\\Delta_t u_t B_t` and the readout are whole-chunk tensor operations into
    preallocated work buffers (a chunk, ``chunk·B·E·N`` elements, stays in cache) and only the
    recurrence itself is a Python loop, one in-place ``addcmul`` per token; across chunks the
    state is carried. Only the chunk-entry states are kept: the backward pass recomputes a
    chunk's states from its entry state (the same operations, so the same numbers) and runs the
    adjoint scan :math:`g_t = C_t \\bar y_t + e^{\\Delta_{t+1} A} \\odot g_{t+1}` backwards
    through it. Forward mode (``jvp``) is the tangent scan. Double backward is not supported."""

    @staticmethod
    def _chunk_states(dv, A, xv, Bv, h_in, t0, t1, a, H, a_steps, h_steps):
        """Decays ``a[:c]`` and states ``H[:c]`` of the chunk [t0, t1) from its entry state."""
        c = t1 - t0
        torch.mul(dv[t0:t1], A, out=a[:c]).exp_()                        # e^{Δ_t A}
        torch.mul(xv[t0:t1], Bv[t0:t1], out=H[:c])                        # Δ_t u_t B_t
        h_steps[0].addcmul_(a_steps[0], h_in)
        for i in range(1, c):                                             # h_t += a_t h_{t-1}
            h_steps[i].addcmul_(a_steps[i], h_steps[i - 1])

    @staticmethod
    def forward(delta, A, x, Bm, Cm, chunk):
        T, Bsz, E = delta.shape
        N = A.shape[-1]
        K = -(-T // chunk)
        h_in = delta.new_zeros(K, Bsz, E, N)                              # state entering chunk
        y = delta.new_empty(T, Bsz, E, 1)
        a, H, tmp = (delta.new_empty(chunk, Bsz, E, N) for _ in range(3))  # work buffers
        a_steps, h_steps = a.unbind(0), H.unbind(0)
        ones = delta.new_ones(N, 1)                   # Σ_n as a matrix product (faster on CPU)
        dv, xv, Bv, Cv = delta.unsqueeze(-1), x.unsqueeze(-1), Bm.unsqueeze(-2), Cm.unsqueeze(-2)
        for k in range(K):
            t0, t1 = k * chunk, min((k + 1) * chunk, T)
            if k:
                h_in[k].copy_(h_steps[chunk - 1])
            _SelectiveScan._chunk_states(dv, A, xv, Bv, h_in[k], t0, t1, a, H, a_steps, h_steps)
            c = t1 - t0
            torch.mul(H[:c], Cv[t0:t1], out=tmp[:c])                      # y_t = Σ_n h_t C_t
            torch.mm(tmp[:c].view(-1, N), ones, out=y[t0:t1].view(-1, 1))
        return y.squeeze(-1), h_steps[(T - 1) % chunk].clone(), h_in

    @staticmethod
    def setup_context(ctx, inputs, output):
        delta, A, x, Bm, Cm, chunk = inputs
        h_in = output[2]
        ctx.mark_non_differentiable(h_in)
        ctx.chunk = chunk
        ctx.save_for_backward(delta, A, x, Bm, Cm, h_in)
        ctx.save_for_forward(delta, A, x, Bm, Cm)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh_last, _g_h_in):
        delta, A, x, Bm, Cm, h_in = ctx.saved_tensors
        chunk = ctx.chunk
        T, Bsz, E = delta.shape
        N = A.shape[-1]
        if gy is None:
            gy = delta.new_zeros(T, Bsz, E)
        g_delta, g_x = delta.new_empty(T, Bsz, E), delta.new_empty(T, Bsz, E, 1)
        g_B, g_C = Bm.new_empty(T, Bsz, N), Cm.new_empty(T, Bsz, N)
        acc_A, acc = (delta.new_zeros(Bsz, E, N) for _ in range(2))
        carry = delta.new_zeros(Bsz, E, N) if gh_last is None else gh_last.clone()
        a, H, G, tmp = (delta.new_empty(chunk, Bsz, E, N) for _ in range(4))
        a_steps, h_steps, g_steps = a.unbind(0), H.unbind(0), G.unbind(0)
        ones = delta.new_ones(N, 1)                   # Σ_n as a matrix product (faster on CPU)
        dv, xv, Bv = delta.unsqueeze(-1), x.unsqueeze(-1), Bm.unsqueeze(-2)
        gyv, Cr = gy.unsqueeze(-1), Cm.unsqueeze(-2)
        for k in range(len(h_in) - 1, -1, -1):
            t0, t1 = k * chunk, min((k + 1) * chunk, T)
            c = t1 - t0
            _SelectiveScan._chunk_states(dv, A, xv, Bv, h_in[k], t0, t1, a, H, a_steps, h_steps)
            ac, Hc, Gc, tc = a[:c], H[:c], G[:c], tmp[:c]
            torch.mul(gyv[t0:t1], Cr[t0:t1], out=Gc)                      # C_t ȳ_t
            g_steps[c - 1].add_(carry)                                    # + a_{t1} g_{t1}
            for i in range(c - 2, -1, -1):                                # g_t += a_{t+1} g_{t+1}
                g_steps[i].addcmul_(a_steps[i + 1], g_steps[i + 1])
            torch.sum(torch.mul(gyv[t0:t1], Hc, out=tc), -2, out=g_C[t0:t1])   # ȳ_t h_t
            torch.mul(Gc, Bv[t0:t1], out=tc)                              # Σ_n g_t B_t
            torch.mm(tc.view(-1, N), ones, out=g_x[t0:t1].view(-1, 1))
            torch.sum(torch.mul(xv[t0:t1], Gc, out=tc), -2, out=g_B[t0:t1])    # (Δu)_t g_t
            Gc.mul_(ac)                                                   # a_t g_t
            carry.copy_(g_steps[0])                                       # dL/dh_{t0-1}
            Gc[1:].mul_(Hc[:-1])                                          # ∂/∂(Δ_t A) ...
            g_steps[0].mul_(h_in[k])                                      # ... = a_t g_t h_{t-1}
            torch.mul(Gc, A, out=tc)                                      # Σ_n (·) A
            torch.mm(tc.view(-1, N), ones, out=g_delta[t0:t1].view(-1, 1))
            acc_A.add_(torch.sum(torch.mul(Gc, dv[t0:t1], out=tc), 0, out=acc))  # Σ_t (·) Δ_t
        return g_delta, acc_A.sum(0), g_x.squeeze(-1), g_B, g_C, None

    @staticmethod
    def jvp(ctx, d_delta, d_A, d_x, d_B, d_C, _d_chunk):
        primals = ctx.saved_tensors
        delta, A, x, Bm, Cm = primals
        T = delta.shape[0]
        d_delta, d_A, d_x, d_B, d_C = (torch.zeros_like(p) if d is None else d
                                       for p, d in zip(primals, (d_delta, d_A, d_x, d_B, d_C)))
        a = torch.exp(delta.unsqueeze(-1) * A)                            # (T, B, E, N)
        X = x.unsqueeze(-1) * Bm.unsqueeze(-2)
        dX = d_x.unsqueeze(-1) * Bm.unsqueeze(-2) + x.unsqueeze(-1) * d_B.unsqueeze(-2)
        da = a * (d_delta.unsqueeze(-1) * A + delta.unsqueeze(-1) * d_A)  # tangent of a_t
        h = dh = delta.new_zeros(a.shape[1:])
        dH, H = [], []
        for t in range(T):                                                # tangent scan
            dh = a[t] * dh + da[t] * h + dX[t]
            h = a[t] * h + X[t]
            dH.append(dh)
            H.append(h)
        dH, H = torch.stack(dH), torch.stack(H)
        dy = (dH * Cm.unsqueeze(-2)).sum(-1) + (H * d_C.unsqueeze(-2)).sum(-1)
        return dy, dH[-1], None                                           # h_in: no tangent


#: elements of a scan chunk (chunk·B·E·N): small enough to stay in cache
_CHUNK_ELEMENTS = 1 << 18


def selective_scan(delta: torch.Tensor, A: torch.Tensor, u: torch.Tensor, Bm: torch.Tensor,
                   Cm: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The selective scan (the result of :func:`selective_scan_ref`, much faster to train).

    Recurrent within chunks of ``chunk`` tokens and across them, with whole-chunk tensor
    operations and a hand-written backward pass (:class:`_SelectiveScan`): no per-step autograd
    graph, cost linear in T, and the memory kept for the backward pass is the chunk-entry
    states, not every state.

    Args:
        delta, u: (T, B, E); A: (E, N); Bm, Cm: (T, B, N).
        chunk: tokens per chunk; default: about ``2**18 / (B·E·N)`` (a chunk fits in cache).

    Returns:
        ``y`` (T, B, E) (without ``D u``) and the last state (B, E, N).
    """
    T, Bsz, E = delta.shape
    if chunk is None:
        chunk = _CHUNK_ELEMENTS // max(1, Bsz * E * A.shape[-1])
    chunk = max(1, min(int(chunk), T))
    y, h_last, _ = _SelectiveScan.apply(delta, A, delta * u, Bm, Cm, chunk)
    return y, h_last


class MambaBlock(nn.Module):
    """One Mamba block on a time-major sequence (T, B, d_model) -> (T, B, d_model)."""

    def __init__(self, config: SelectiveConfig, generator: torch.Generator):
        super().__init__()
        c = config
        E, N, R = c.d_inner, c.d_state, c.rank
        self.d_inner, self.d_state, self.rank, self.d_conv = E, N, R, c.d_conv
        self.in_proj = _linear(c.d_model, 2 * E, False, generator)
        if c.d_conv > 1:                       # depthwise causal conv (Conv1d default init)
            bound = 1.0 / math.sqrt(c.d_conv)
            self.conv_weight = nn.Parameter(
                _uniform_(torch.empty(E, 1, c.d_conv), bound, generator))    # (E, 1, d_conv)
            self.conv_bias = nn.Parameter(_uniform_(torch.empty(E), bound, generator))
        self.x_proj = _linear(E, R + 2 * N, False, generator)
        self.dt_proj = nn.utils.skip_init(nn.Linear, R, E, bias=True)
        _uniform_(self.dt_proj.weight, R ** -0.5, generator)              # dt_scale = 1
        log_dt = (torch.rand(E, generator=generator, dtype=torch.float64)
                  * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min))
        dt = torch.exp(log_dt).clamp(min=1e-4)
        with torch.no_grad():                                             # inverse softplus
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)     # (E, N) S4D-Real
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = _linear(E, c.d_model, False, generator)

    def A(self) -> torch.Tensor:
        """Continuous eigenvalues :math:`A = -e^{A_{\\log}}` (d_inner, N), real and negative."""
        return -torch.exp(self.A_log)

    def scan_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the selective scan needs from the block input ``x`` (T, B, d_model)."""
        E, N, R = self.d_inner, self.d_state, self.rank
        u, z = self.in_proj(x).split(E, dim=-1)                          # (T, B, E) each
        if self.d_conv > 1:
            uc = u.permute(1, 2, 0)                                       # (B, E, T)
            uc = F.conv1d(F.pad(uc, (self.d_conv - 1, 0)), self.conv_weight, self.conv_bias,
                          groups=E)                                       # causal: left padding
            u = uc.permute(2, 0, 1)                                       # (T, B, E)
        u = F.silu(u)
        delta, Bm, Cm = self.x_proj(u).split([R, N, N], dim=-1)          # (T,B,R), (T,B,N) x2
        delta = F.softplus(self.dt_proj(delta))                           # (T, B, E)  Δ_t > 0
        return {"u": u, "z": z, "delta": delta, "B": Bm, "C": Cm}

    def forward(self, x: torch.Tensor, record: bool = False, reference: bool = False):
        """``reference``: run the step-by-step :func:`selective_scan_ref` (slow; for tests)
        instead of the fused :func:`selective_scan`."""
        s = self.scan_inputs(x)
        u, delta, Bm, Cm = s["u"], s["delta"], s["B"], s["C"]
        A = self.A().to(u.dtype)                                          # (E, N)
        scan = selective_scan_ref if reference else selective_scan
        y, h = scan(delta, A, u, Bm, Cm)                                  # (T,B,E), (B,E,N)
        y = y + u * self.D                                                # y_t = C_t·h_t + D u_t
        out = self.out_proj(y * F.silu(s["z"]))                           # (T, B, d_model)
        if record:
            s["h_last"] = h
            return out, s
        return out


# ============================================================================= the model
class SelectiveSSM(nn.Module):
    """Mamba-style selective SSM: in-proj ``d_input -> d_model``, ``layers`` residual Mamba
    blocks, out-proj ``-> d_output``. ``forward(x)``: (T, B, d_input) -> (T, B, d_output).

    Causal: the output at t depends on inputs up to t only (causal convolution and scan).
    Initialised from ``generator`` if given, else from ``torch.Generator().manual_seed(seed)``.
    """

    kind = "selective"
    title = "selective SSM (Mamba)"
    config_class = SelectiveConfig

    def __init__(self, config: SelectiveConfig | None = None, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.config = c = config or SelectiveConfig()
        g = generator if generator is not None else torch.Generator().manual_seed(c.seed)
        self.encoder = _linear(c.d_input, c.d_model, True, g)
        self.blocks = nn.ModuleList(MambaBlock(c, g) for _ in range(c.layers))
        if c.norm:
            self.norms = nn.ModuleList(RMSNorm(c.d_model) for _ in range(c.layers))
            self.norm_f = RMSNorm(c.d_model)
        self.decoder = _linear(c.d_model, c.d_output, True, g)

    # ------------------------------------------------------------------ running
    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != self.config.d_input:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ShapeError(f"selective SSM: expected inputs (T, B, {self.config.d_input}), "
                             f"got {shape}")
        if x.shape[0] < 1:
            raise ShapeError("selective SSM: the sequence is empty (T = 0)")

    def _run(self, x: torch.Tensor, record: bool = False, upto: int | None = None,
             reference: bool = False):
        """Run the stack; with ``record`` also each layer's scan inputs. ``upto``: stop after
        recording that layer (its output is not needed). ``reference``: the step-by-step scan
        :func:`selective_scan_ref` instead of the fused :func:`selective_scan`."""
        self._check(x)
        h = self.encoder(x)                                               # (T, B, d_model)
        records = []
        for i, block in enumerate(self.blocks):
            hin = self.norms[i](h) if self.config.norm else h
            if record:
                out, rec = block(hin, record=True, reference=reference)
                records.append(rec)
                if upto is not None and i == upto:
                    return None, records
            else:
                out = block(hin, reference=reference)
            h = h + out                                                   # residual
        if self.config.norm:
            h = self.norm_f(h)
        return self.decoder(h), records                                   # (T, B, d_output)

    def forward(self, x: torch.Tensor, *, reference: bool = False) -> torch.Tensor:
        """(T, B, d_input) -> (T, B, d_output). ``reference=True`` runs the step-by-step scan
        :func:`selective_scan_ref` (same result, slow; for tests)."""
        return self._run(x, reference=reference)[0]

    # ------------------------------------------------------------------ spectra
    def eigenvalues(self) -> torch.Tensor:
        """Continuous eigenvalues :math:`A_{d,n} = -e^{A_{\\log,d,n}}`, real
        (layers, d_inner, N)."""
        return torch.stack([b.A() for b in self.blocks]).detach()

    def step_sizes(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token step sizes :math:`\\Delta_{t,d} = \\mathrm{softplus}(W_\\Delta\\delta_t + b)`
        of every layer for inputs ``x`` (T, B, d_input): (layers, T, B, d_inner)."""
        with torch.no_grad():
            _, recs = self._run(x, record=True)
        return torch.stack([r["delta"] for r in recs])

    def transition_eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token transition eigenvalues :math:`\\bar A_{t,d,n} = e^{\\Delta_{t,d} A_{d,n}}`,
        real and in (0, 1) (in float32 a tiny Δ may round to 1): (layers, T, B, d_inner, N)."""
        delta = self.step_sizes(x)                                        # (layers, T, B, E)
        A = self.eigenvalues().to(delta.dtype)                            # (layers, E, N)
        return torch.exp(delta.unsqueeze(-1) * A[:, None, None])

    def lyapunov_exponents(self, x: torch.Tensor) -> torch.Tensor:
        """Exact Lyapunov exponents of each layer's state recurrence with the inputs ``x`` held
        fixed (the recurrence is diagonal):

        .. math:: \\lambda_{d,n} = \\lim_T \\frac1T \\sum_t \\log \\bar A_{t,d,n}
                  = A_{d,n}\\,\\frac1T\\sum_t \\Delta_{t,d} < 0 .

        Args:
            x: inputs (T, B, d_input).

        Returns:
            (layers, B, d_inner, N), per iteration (token).

        References:
            Halloran, Gulati, Roysdon, arXiv:2406.00209; ``docs/notes/ssm_spectra.md`` §7.
        """
        delta = self.step_sizes(x).mean(1)                                # (layers, B, E)
        A = self.eigenvalues().to(delta.dtype)                            # (layers, E, N)
        return delta.unsqueeze(-1) * A.unsqueeze(1)

    def recurrence(self, x: torch.Tensor, layer: int = 0) -> SelectiveRecurrence:
        """The state map of layer ``layer`` with that layer's inputs for ``x`` (T, B, d_input).

        ``step(h, v)`` maps (B, d_inner*N) states and packed inputs ``v = [Δ_t, B_t, u_t]``
        (B, 2 d_inner + N) to the next state; scanning it over ``inputs`` from ``h0``
        reproduces the layer's scan. Its Jacobian is ``diag(exp(Δ_t A))``; use it with
        :func:`explorer.core.analysis.driven.driven_lyapunov`.
        """
        L = self.config.layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < L:
            raise ParameterError(f"selective SSM: layer must be in [0, {self.config.layers - 1}], "
                                 f"got {layer!r}")
        with torch.no_grad():
            _, recs = self._run(x, record=True, upto=layer)
        r = recs[layer]
        E, N = self.config.d_inner, self.config.d_state
        A = self.blocks[layer].A().detach().to(r["u"].dtype)              # (E, N)
        inputs = torch.cat([r["delta"], r["B"], r["u"]], -1)              # (T, B, 2E + N)

        def step(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            lead = h.shape[:-1]
            delta, Bm, u = v[..., :E], v[..., E:E + N], v[..., E + N:]
            h3 = selective_step(h.reshape(*lead, E, N), delta, A, u, Bm)   # (B, E, N)
            return h3.reshape(*lead, E * N)

        h0 = inputs.new_zeros(inputs.shape[1], E * N)
        return SelectiveRecurrence(step, inputs, h0, A, r["C"])

    def token_parameters(self) -> dict[str, Any]:
        """The quantities of the token-dynamics phase diagram (:func:`phase_diagram`).

        The simplified model of Vo et al. (no conv, gate or norm; ``B_j = S_B x_j``,
        ``C_l = S_C x_l``, ``Δ_j = softplus(S_Δ x_j + b)``) read off each block in its inner
        channels: ``S_B = W_B``, ``S_C = W_C`` (the (N, d_inner) rows of ``x_proj``),
        ``S_Δ = W_Δ W_δ`` (d_inner, d_inner), ``b`` = the Δ bias. Reduction for d_inner > 1:

        * per channel ``d`` the model restricted to that channel is the 1-D model with
          :math:`\\mu_d = (S_C^\\top S_B)_{dd} = \\sum_n S_{C,nd} S_{B,nd}`,
          :math:`s_{\\Delta,d} = (S_\\Delta)_{dd}` and :math:`b_d`: one point per channel
          and layer on the phase diagram (``mu_channels``, ``s_delta_channels``,
          ``b_channels``);
        * the model's marker (``mu``, ``s_delta``, ``b``, Python floats) is the mean of those
          over all channels and layers; :math:`\\bar\\mu = \\mathrm{tr}(S_C^\\top S_B)/d_{inner}`
          is also the mean eigenvalue of :math:`S_C^\\top S_B`;
        * the multi-dimensional criterion is the sign of the eigenvalues of
          :math:`S_C^\\top S_B` (the authors' pos/neg experiments use a symmetric
          :math:`P^\\top D P`); for a general matrix, the quadratic form
          :math:`x^\\top S_C^\\top S_B x` that sets the sign of :math:`d|x|^2/dt` is governed by
          its symmetric part, whose eigenvalues are ``mu_eigenvalues`` (ascending) and whose
          sign pattern is ``definiteness``.

        Returns:
            dict of floats ``mu``, ``s_delta``, ``b``, ``a`` (the mean of −A); float64 tensors
            ``mu_channels``, ``s_delta_channels``, ``b_channels``, ``mu_eigenvalues``
            (layers, d_inner) and ``mu_min``, ``mu_max``, ``mu_mean`` (layers,);
            ``definiteness``: per layer "positive" | "negative" | "semidefinite+" |
            "semidefinite-" | "indefinite" | "zero".
        """
        keys = ("mu_channels", "s_delta_channels", "b_channels", "mu_eigenvalues", "a")
        out: dict[str, list] = {k: [] for k in keys}
        definiteness = []
        R, N = self.config.rank, self.config.d_state
        with torch.no_grad():
            for blk in self.blocks:
                W = blk.x_proj.weight.detach().double()                   # (R + 2N, E)
                Wd, SB, SC = W[:R], W[R:R + N], W[R + N:]
                mu_mat = SC.T @ SB                                        # (E, E)
                S_delta = blk.dt_proj.weight.detach().double() @ Wd       # (E, E)
                ev = torch.linalg.eigvalsh(0.5 * (mu_mat + mu_mat.T))     # ascending
                out["mu_channels"].append(torch.diagonal(mu_mat))
                out["s_delta_channels"].append(torch.diagonal(S_delta))
                out["b_channels"].append(blk.dt_proj.bias.detach().double())
                out["mu_eigenvalues"].append(ev)
                out["a"].append(torch.exp(blk.A_log.detach().double()).mean())
                definiteness.append(_definiteness(ev))
        res: dict[str, Any] = {k: torch.stack(v).cpu() for k, v in out.items()}
        ev = res["mu_eigenvalues"]
        res.update(mu=float(res["mu_channels"].mean()),
                   s_delta=float(res["s_delta_channels"].mean()),
                   b=float(res["b_channels"].mean()), a=float(res["a"].mean()),
                   mu_min=ev[:, 0], mu_max=ev[:, -1], mu_mean=ev.mean(-1),
                   definiteness=definiteness)
        return res

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _definiteness(ev: torch.Tensor) -> str:
    """Sign pattern of ascending symmetric eigenvalues (relative tolerance 1e-12)."""
    tol = 1e-12 * max(1.0, float(ev.abs().max()))
    neg, pos = bool(ev[0] < -tol), bool(ev[-1] > tol)
    if pos and neg:
        return "indefinite"
    if pos:
        return "positive" if bool(ev[0] > tol) else "semidefinite+"
    if neg:
        return "negative" if bool(ev[-1] < -tol) else "semidefinite-"
    return "zero"


def build_selective(config: Mapping[str, Any] | SelectiveConfig | None = None) -> SelectiveSSM:
    """A :class:`SelectiveSSM` from a config dict (the checkpoint registry's builder)."""
    if config is None or isinstance(config, SelectiveConfig):
        return SelectiveSSM(config)
    return SelectiveSSM(SelectiveConfig.from_dict(config))


# ============================================================================= token dynamics
def _softplus_np(z):
    return np.logaddexp(0.0, z)


def _scalar(name: str, v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ParameterError(f"token dynamics: {name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ParameterError(f"token dynamics: {name} must be finite, got {v!r}")
    return f


def _tokens(x0) -> np.ndarray:
    x = np.atleast_1d(np.asarray(torch.as_tensor(x0, dtype=torch.float64).cpu(), dtype=np.float64))
    if x.ndim != 1 or x.size < 1:
        raise ShapeError(f"token dynamics: x0 must be a scalar or a vector of tokens (L,), "
                         f"got shape {tuple(x.shape)}")
    if x.size > 1024:
        raise SizeLimitError(f"token dynamics: {x.size} tokens exceed the limit of 1024")
    if not np.isfinite(x).all():
        raise ParameterError("token dynamics: x0 must be finite")
    return x


def _integrate_tokens(mu, s_delta, b, x0, t, a, tol, blowup, max_steps):
    """Adaptive RK4 (float64) of the token ODE; (outputs (K, L), blow-up time or inf)."""
    mu, s, b, a = (_scalar(n, v) for n, v in (("mu", mu), ("s_delta", s_delta), ("b", b), ("a", a)))
    if a < 0:
        raise ParameterError(f"token dynamics: a must be >= 0 (A = -a), got {a}")
    x = _tokens(x0)
    ts = np.atleast_1d(np.asarray(torch.as_tensor(t, dtype=torch.float64).cpu(), dtype=np.float64))
    if ts.ndim != 1 or ts.size < 1 or not np.isfinite(ts).all() or (ts < 0).any() \
            or (np.diff(ts) < 0).any():
        raise ParameterError("token dynamics: t must be a non-empty, non-decreasing vector of "
                             "finite times >= 0")
    L = x.size
    tril = np.tril(np.ones((L, L), dtype=bool))

    def rhs(x):
        d = _softplus_np(s * x + b)                                       # Δ_j (L,)
        if L == 1:
            return mu * x * d * x * x
        S = np.cumsum(d)
        gap = np.where(tril, S[:, None] - S[None, :], 0.0)   # Σ_{k=j+1}^{l} Δ_k ≥ 0
        E = np.where(tril, np.exp(-a * gap), 0.0)                         # (L, L)
        return mu * x * (E @ (d * x * x))

    out = np.full((ts.size, L), np.nan)
    t_end = float(ts[-1])
    max_step = t_end / 500 if t_end > 0 else 0.0
    tcur, k, steps, t_blow = 0.0, 0, 0, math.inf
    while k < ts.size:
        target = float(ts[k])
        while tcur < target:
            f1 = rhs(x)
            rate = float(np.max(np.abs(f1) / (np.abs(x) + 1e-300)))
            dt = min(max_step, target - tcur, tol / rate if rate > 0 else math.inf)
            f2 = rhs(x + 0.5 * dt * f1)
            f3 = rhs(x + 0.5 * dt * f2)
            f4 = rhs(x + dt * f3)
            x_new = x + dt / 6 * (f1 + 2 * f2 + 2 * f3 + f4)
            tcur = target if dt >= target - tcur else tcur + dt
            steps += 1
            if not np.isfinite(x_new).all() or np.max(np.abs(x_new)) > blowup:
                t_blow = tcur
                return out, t_blow
            x = x_new
            if steps > max_steps:
                raise SizeLimitError(f"token dynamics: more than {max_steps:,} steps before "
                                     f"t = {target:g} (raise max_steps or shorten t)")
        out[k] = x
        k += 1
    return out, t_blow


def token_ode(mu, s_delta, b, x0, t, *, a: float = 1.0, tol: float = 1e-2,
              blowup: float = 1e6, max_steps: int = 200_000) -> torch.Tensor:
    r"""Token dynamics of a deep selective SSM in the continuous-depth limit (one channel).

    .. math::

        \dot x_l = x_l \sum_{j\le l} \mu\, e^{-a \sum_{k=j+1}^{l} \Delta_k}\, \Delta_j x_j^2,
        \qquad \Delta_j = \mathrm{softplus}(S_\Delta x_j + b),

    the depth ("layers") as time, ``μ = S_Cᵀ S_B``, ``A = −a``. For one token and
    ``S_Δ = 0`` the solution is :math:`x(t) = x_0/\sqrt{1 - 2\mu\,\mathrm{softplus}(b)\,x_0^2 t}`:
    blow-up at :math:`t^* = 1/(2\mu\,\mathrm{softplus}(b) x_0^2)` for μ > 0, decay like
    :math:`1/\sqrt{2|\mu|\,\mathrm{softplus}(b)\,t}` for μ < 0.

    Integrated in float64 by RK4 with the step limited to a relative change ``tol`` of the
    fastest token per step (and to ``t[-1]/500``), so it follows a finite-time blow-up down to
    the singularity without hanging: once some ``|x_l|`` exceeds ``blowup`` (or is not finite)
    the integration stops and every later row is NaN.

    Args:
        mu, s_delta, b: scalars μ, S_Δ and the Δ bias b.
        x0: initial tokens, a scalar or (L,) (L ≤ 1024).
        t: output times (K,), non-decreasing, ≥ 0 (the start is t = 0).
        a: decay rate of the state, A = −a (≥ 0).

    Returns:
        (K, L) float64 tokens at the times ``t``; NaN after a blow-up.

    References:
        Vo, Pham, Tong, Nguyen, arXiv:2410.03292; ``docs/notes/ssm_spectra.md`` §7 (the ODE as
        derived there from the S6 recurrence).
    """
    out, _ = _integrate_tokens(mu, s_delta, b, x0, t, a, tol, blowup, max_steps)
    return torch.from_numpy(out)


def token_blowup_time(mu, s_delta, b, x0, *, a: float = 1.0, t_max: float = 1e3,
                      tol: float = 1e-2, blowup: float = 1e6, max_steps: int = 200_000) -> float:
    """The time at which :func:`token_ode` blows up (some ``|x_l| > blowup``), or ``inf`` if it
    does not before ``t_max``."""
    _, t_blow = _integrate_tokens(mu, s_delta, b, x0, [float(t_max)], a, tol, blowup, max_steps)
    return t_blow


def token_regime_codes(mu, sdx) -> np.ndarray:
    """Vectorised regimes (codes of :data:`REGIME_LABELS`) of one token from μ and
    :math:`S_\\Delta x_0` (broadcast): 0 converge (μ ≤ 0; μ = 0 leaves the token frozen,
    counted with the bounded regime), 1 slow divergence (μ > 0, S_Δ x_0 < 0),
    2 fast divergence, a finite-time blow-up (μ > 0, S_Δ x_0 ≥ 0)."""
    mu, sdx = np.broadcast_arrays(np.asarray(mu, dtype=np.float64),
                                  np.asarray(sdx, dtype=np.float64))
    return np.where(mu <= 0, 0, np.where(sdx < 0, 1, 2)).astype(np.int64)


def token_regime(mu, s_delta, b, x0) -> str:
    r"""The regime of the token ODE (:func:`token_ode`): ``"converge"``, ``"diverge-fast"``
    (finite-time blow-up) or ``"diverge-slow"`` (logarithmic growth).

    Closed-form criteria (``docs/notes/ssm_spectra.md`` §7): :math:`\mathrm{sign}(\tfrac{d}{dt}
    x_l^2) = \mathrm{sign}(\mu)` for every token, so μ < 0 makes all tokens converge to 0
    (rate :math:`O(1/\sqrt t)`) and μ > 0 makes all nonzero tokens grow. A growing token with
    :math:`S_\Delta x_l \ge 0` keeps :math:`\Delta_l \ge \mathrm{softplus}(b)`, so
    :math:`|\dot x_l| \ge \mu\,\mathrm{softplus}(b)|x_l|^3` and it blows up in finite time; if
    every nonzero token has :math:`S_\Delta x_l < 0`, Δ decays like
    :math:`e^{S_\Delta x + b}` and the growth is only logarithmic. ``b`` sets the time scale,
    not the regime. μ = 0 (frozen tokens) and all-zero tokens count as ``"converge"``.

    Args:
        mu, s_delta, b: scalars μ, S_Δ and the Δ bias b.
        x0: initial tokens, a scalar or (L,).
    """
    mu, s = _scalar("mu", mu), _scalar("s_delta", s_delta)
    _scalar("b", b)
    x = _tokens(x0)
    x = x[x != 0]
    if mu <= 0 or x.size == 0:
        return "converge"
    return "diverge-fast" if (s * x >= 0).any() else "diverge-slow"


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


def phase_diagram(mu_range=(-1.0, 1.0), sdx_range=(-3.0, 3.0), b: float = 0.0, n: int = 101, *,
                  m: int | None = None, x0: float = 1.0) -> dict[str, Any]:
    r"""The token-dynamics phase diagram over μ and :math:`S_\Delta x_0` for the page.

    Regimes from :func:`token_regime_codes` (they do not depend on ``b``). In the fast region
    the blow-up time of one token is also given, from the quadrature (``x = x_0/u``)

    .. math:: t^* = \int_0^1 \frac{u\,du}{\mu x_0^2\,\mathrm{softplus}(S_\Delta x_0/u + b)},

    which is :math:`1/(2\mu\,\mathrm{softplus}(b)\,x_0^2)` at :math:`S_\Delta = 0` and diverges
    in the slow region (64-point Gauss–Legendre).

    Args:
        mu_range, sdx_range: (lo, hi) of the μ and :math:`S_\Delta x_0` axes.
        b: the Δ bias (sets the blow-up times).
        n, m: grid points along μ and along :math:`S_\Delta x_0` (``m`` defaults to ``n``).
        x0: the token's initial value (μ enters the times as μ x0²).

    Returns:
        dict of numpy arrays ``mu`` (n,), ``sdx`` (m,), ``regime`` (m, n) int codes
        (0 converge, 1 diverge-slow, 2 diverge-fast), ``blowup_time`` (m, n) (NaN outside the
        fast region), and ``labels`` (the code names), ``b``, ``x0``.
    """
    m = n if m is None else m
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 2001:
            raise ParameterError(f"phase diagram: {name} must be an integer in [2, 2001], "
                                 f"got {v!r}")
    try:
        (mlo, mhi), (slo, shi) = (tuple(map(float, mu_range)), tuple(map(float, sdx_range)))
    except (TypeError, ValueError):
        raise ParameterError("phase diagram: mu_range and sdx_range must be (lo, hi) "
                             "pairs") from None
    if not all(map(math.isfinite, (mlo, mhi, slo, shi))) or mlo >= mhi or slo >= shi:
        raise ParameterError("phase diagram: each range must be finite with lo < hi")
    b, x0 = _scalar("b", b), _scalar("x0", x0)
    if x0 == 0:
        raise ParameterError("phase diagram: x0 must be nonzero")
    mu = np.linspace(mlo, mhi, n)
    sdx = np.linspace(slo, shi, m)
    regime = token_regime_codes(mu[None, :], sdx[:, None])               # (m, n)
    u = 0.5 * (_GL_NODES + 1)                                             # nodes on (0, 1)
    w = 0.5 * _GL_WEIGHTS
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        integral = (w * u / _softplus_np(sdx[:, None] / u + b)).sum(-1)   # (m,)
        tstar = integral[:, None] / (mu[None, :] * x0 * x0)               # (m, n)
    tstar = np.where(regime == 2, tstar, np.nan)
    return {"mu": mu, "sdx": sdx, "regime": regime, "blowup_time": tstar,
            "labels": list(REGIME_LABELS), "b": b, "x0": x0}
