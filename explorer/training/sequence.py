r"""Synthetic sequence tasks for the Spectra page (issue 12): memory functions and D-retrieval.

Two families of targets, both drawn afresh each step from seeded generators (pure torch):

* **Memory functions** (``docs/notes/ssm_spectra.md`` §5, §6). A white or AR(1) input
  :math:`x_t` and a target that is a causal linear functional of it, optionally through a
  nonlinear readout,

  .. math::

      y_t = c_{\rm out}\, g\Big(c_{\rm in}\sum_{s=0}^{t}\rho(s)\,x_{t-s}\Big),
      \qquad g \in \{\mathrm{id}, \tanh\},

  with one memory function :math:`\rho` of four kinds (:data:`MEMORY_KINDS`), each set by one
  *strength*: the memory length in steps. The scales :math:`c_{\rm in}, c_{\rm out}`
  (:func:`target_scales`) make the stationary target unit-variance. A linear model that fits
  the target exactly has the memory function (impulse response) :math:`c_{\rm out}c_{\rm in}
  \rho` (:meth:`MemoryTask.target_memory`); for the exponential kind its decay rate is
  :math:`1/\tau` per step (:func:`learned_decay_rate`, issue 12's acceptance check).
* **Generalized D-retrieval** (note §8, arXiv 2510.06662; the definition there was *not*
  read, the one here is inferred, see :func:`retrieval_batch`): from T tokens, retrieve the
  maximiser of each of D fixed features and combine them. A transformer needs about D heads
  to do it with few parameters: :func:`head_sweep` shows the loss against the number of
  heads at a fixed budget ``h·d_head``.

:class:`MemoryTask` (name ``"memory"``) and :class:`RetrievalTask` (name ``"retrieval"``) are
:class:`~explorer.training.loop.Task`\ s: Adam with a cosine learning-rate schedule, the
normalised MSE as the loss, the sampler's RNG state in :meth:`~MemoryTask.state_dict` (a
resumed run draws the same batches). :func:`make_sequence_run` builds a
:class:`~explorer.training.loop.TrainingLoop` for a model of :mod:`explorer.models.ssm`
(``"ssm"``), :mod:`~explorer.models.selective` (``"selective"``) or
:mod:`~explorer.models.attention` (``"transformer"``), or any model kind registered with
:func:`~explorer.training.registry.register_model`; :func:`load_sequence_run` rebuilds one
from its checkpoint; :func:`run_summary` reports it as plain numbers. Importing this module
registers the three model builders (the model modules themselves are imported only when a
model is built).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from .checkpoint import model_identity
from .loop import LoopConfig, Task, TrainingLoop
from .registry import build_model_from_spec, register_model, registered_models

__all__ = ["DEFAULT_PERIOD", "INPUT_KINDS", "MEMORY_KINDS", "MODEL_KINDS", "POWER_OMEGA",
           "READOUTS", "TASKS",
           "HeadSweep", "MemoryTask", "RetrievalFeatures", "RetrievalTask", "head_sweep",
           "learned_decay_rate", "learned_memory", "load_sequence_run", "make_inputs",
           "make_sequence_run", "memory_function", "memory_targets", "retrieval_batch",
           "retrieval_features", "run_summary", "settings_of", "target_scales"]

#: the memory-function kinds (:func:`memory_function`)
MEMORY_KINDS = ("exp", "power", "delay", "oscillatory")
#: input processes (:func:`make_inputs`)
INPUT_KINDS = ("white", "ar1")
#: target readouts g (:func:`memory_targets`)
READOUTS = ("linear", "tanh")
#: the fixed exponent of the power law: ρ(s) = (1 + s/τ)^-(1+ω)  (the group's ``pol``: 0.1)
POWER_OMEGA = 0.1
#: the default period (steps) of the oscillatory memory function
DEFAULT_PERIOD = 8.0
#: the model kinds this module registers (built lazily from :mod:`explorer.models`)
MODEL_KINDS = ("ssm", "selective", "transformer")

_F64 = torch.float64


def _positive(name: str, v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {v!r}") from None
    if not (f > 0 and math.isfinite(f)):
        raise ParameterError(f"{name} must be a positive number, got {v!r}")
    return f


def _count(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _choice(name: str, v, options: Sequence[str]) -> str:
    if v not in options:
        raise ParameterError(f"unknown {name} {v!r}; choose one of {', '.join(options)}")
    return v


def _phi(phi) -> float:
    try:
        f = float(phi)
    except (TypeError, ValueError):
        raise ParameterError(f"phi must be a number, got {phi!r}") from None
    if not (-1.0 < f < 1.0):
        raise ParameterError(f"the AR(1) coefficient phi must be in (-1, 1), got {phi!r}")
    return f


# ---------------------------------------------------------------------- memory functions
def memory_function(kind: str, L: int, strength: float, *,
                    period: float = DEFAULT_PERIOD) -> torch.Tensor:
    r"""The memory function :math:`\rho(s)`, ``s = 0..L-1``, of one of :data:`MEMORY_KINDS`.

    ``strength`` is the memory length in steps (τ, or the lag k):

    * ``"exp"``: :math:`\rho(s) = e^{-s/\tau}` (decay rate :math:`1/\tau` per step);
    * ``"power"``: :math:`\rho(s) = (1 + s/\tau)^{-(1+\omega)}`, :math:`\omega =`
      :data:`POWER_OMEGA` ``= 0.1`` fixed, so :math:`\rho \sim s^{-(1+\omega)}` for
      :math:`s \gg \tau` (the slowly decaying memory of the curse of memory, note §6);
    * ``"delay"``: :math:`\rho(s) = \mathbf 1[s = k]`, :math:`k = \mathrm{round}(\tau)`, so the
      target is :math:`y_t = x_{t-k}` (``0 <= k < L``);
    * ``"oscillatory"``: :math:`\rho(s) = e^{-s/\tau}\cos(2\pi s/P)` with the period
      ``P = period`` steps (``>= 2``, the Nyquist limit).

    Source: the memory functions of ``radarFudan/Curse-of-memory``
    (``src/data/components/lf/datagen.py``), the code of the group behind arXiv 2506.05678:
    ``exp`` :math:`e^{-t}`, ``pol`` :math:`(1+0.1t)^{-1.1}`, ``shift``
    :math:`\mathbf 1[9<t<11]` and ``airy`` :math:`\mathrm{Ai}(t-6)` (oscillatory), with
    :math:`t = s\,dt`. Ours are those with one strength per kind (``exp`` is τ = 1/dt,
    ``pol`` is τ = 10/dt with ω = 0.1, ``shift`` is k = 10/dt) and an exponentially damped
    cosine in place of the Airy function; the paper's own four families could not be read
    (note §5, §11).

    Returns:
        (L,) float64.

    Raises:
        ParameterError: unknown kind, non-positive strength, a lag outside ``[0, L)``, a
        period below 2.
    """
    _choice("memory function", kind, MEMORY_KINDS)
    L = _count("L", L)
    s = torch.arange(L, dtype=_F64)
    if kind == "delay":
        try:
            k = round(float(strength))
        except (TypeError, ValueError):
            raise ParameterError(f"the lag must be a number, got {strength!r}") from None
        if not 0 <= k < L:
            raise ParameterError(f"the lag {strength!r} must be in [0, {L}) (the length)")
        rho = torch.zeros(L, dtype=_F64)
        rho[k] = 1.0
        return rho
    tau = _positive("the memory length", strength)
    if kind == "exp":
        return torch.exp(-s / tau)
    if kind == "power":
        return (1.0 + s / tau) ** (-(1.0 + POWER_OMEGA))
    P = _positive("the period", period)
    if P < 2.0:
        raise ParameterError(f"the period must be at least 2 steps (Nyquist), got {period!r}")
    return torch.exp(-s / tau) * torch.cos(2.0 * math.pi * s / P)


# ---------------------------------------------------------------------- inputs and targets
def make_inputs(T: int, B: int, *, kind: str = "white", phi: float = 0.8,
                generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Unit-variance input sequences (T, B, 1) drawn from ``generator`` (CPU).

    * ``"white"``: :math:`x_t \sim \mathcal N(0, 1)` i.i.d.;
    * ``"ar1"``: the stationary AR(1) process :math:`x_0 \sim \mathcal N(0,1)`,
      :math:`x_t = \varphi x_{t-1} + \sqrt{1-\varphi^2}\,\varepsilon_t`, so
      :math:`\mathrm{Var}\,x_t = 1` and the autocorrelation is :math:`r(k) = \varphi^{|k|}`.

    (Generated in float64, returned in ``dtype``.)
    """
    T, B = _count("T", T), _count("B", B)
    _choice("input kind", kind, INPUT_KINDS)
    e = torch.randn(T, B, 1, generator=generator, dtype=_F64)
    if kind == "white":
        return e.to(dtype)
    phi = _phi(phi)
    c = math.sqrt(1.0 - phi * phi)
    x = torch.empty_like(e)
    x[0] = e[0]
    for t in range(1, T):                                          # (B, 1) per step
        x[t] = phi * x[t - 1] + c * e[t]
    return x.to(dtype)


def _causal_conv(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    r""":math:`z_t = \sum_{s=0}^{t}\rho(s)x_{t-s}` along dim 0 by zero-padded FFT (float64)."""
    T = x.shape[0]
    r = torch.zeros(T, dtype=_F64, device=x.device)
    n = min(T, rho.shape[0])
    r[:n] = rho[:n].to(device=x.device, dtype=_F64)
    nfft = 1 << (2 * T - 1).bit_length()
    X = torch.fft.rfft(x.to(_F64), n=nfft, dim=0)                  # (F, B, D)
    R = torch.fft.rfft(r, n=nfft).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.fft.irfft(X * R, n=nfft, dim=0)[:T]               # (T, B, D)


def _tanh_second_moment() -> float:
    r""":math:`\mathbb E[\tanh(u)^2]`, :math:`u \sim \mathcal N(0,1)` (trapezoid on ±12, 1e-12)."""
    u = torch.linspace(-12.0, 12.0, 48_001, dtype=_F64)
    w = torch.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
    return float(torch.trapezoid(torch.tanh(u) ** 2 * w, u))


_TANH_M2 = _tanh_second_moment()                                    # 0.3942...


def target_scales(rho: torch.Tensor, *, readout: str = "linear", input_kind: str = "white",
                  phi: float = 0.8) -> tuple[float, float]:
    r"""The scales :math:`(c_{\rm in}, c_{\rm out})` that make the stationary target
    :math:`y = c_{\rm out}\,g(c_{\rm in} z)`, :math:`z_t = \sum_s \rho(s)x_{t-s}`, unit-variance.

    :math:`c_{\rm in} = 1/\sqrt{\mathrm{Var}\,z}` with
    :math:`\mathrm{Var}\,z = \sum_{s,s'}\rho(s)\rho(s')r(s-s') = a(0) + 2\sum_{k\ge1} r(k)a(k)`,
    :math:`a(k) = \sum_s \rho(s)\rho(s+k)`, :math:`r(k) = \varphi^{k}` (AR(1)) or
    :math:`\mathbf 1[k=0]` (white); the sum runs over all of ``rho``, so positions
    :math:`t < L-1` (a shorter window) have a little less variance. :math:`c_{\rm out} = 1`
    (linear) or :math:`1/\sqrt{\mathbb E\tanh(u)^2} \approx 1.593`, :math:`u\sim\mathcal N(0,1)`
    (tanh; z is Gaussian since x is).
    """
    _choice("readout", readout, READOUTS)
    _choice("input kind", input_kind, INPUT_KINDS)
    rho = torch.as_tensor(rho, dtype=_F64).reshape(-1)
    L = rho.shape[0]
    if input_kind == "white":
        var = float((rho * rho).sum())
    else:
        phi = _phi(phi)
        nfft = 1 << (2 * L - 1).bit_length()
        F = torch.fft.rfft(rho, n=nfft)
        a = torch.fft.irfft(F * F.conj(), n=nfft)[:L]                # a(k), k = 0..L-1
        r = phi ** torch.arange(L, dtype=_F64)
        var = float(a[0] + 2.0 * (r[1:] * a[1:]).sum())
    if not (var > 0 and math.isfinite(var)):
        raise ParameterError("the memory function is zero on the sequence: no target to learn")
    c_out = 1.0 if readout == "linear" else 1.0 / math.sqrt(_TANH_M2)
    return 1.0 / math.sqrt(var), c_out


def memory_targets(x: torch.Tensor, rho: torch.Tensor, *, readout: str = "linear",
                   scales: tuple[float, float] | None = None) -> torch.Tensor:
    r"""The memory-function target of inputs ``x`` (T, B, 1):

    .. math:: y_t = c_{\rm out}\, g\Big(c_{\rm in}\sum_{s=0}^{t}\rho(s)\,x_{t-s}\Big)

    (FFT convolution with zero padding, float64 inside; :math:`g` = identity or tanh).

    Args:
        x: inputs (T, B, D) (each of the D channels is filtered alike; the tasks use D = 1).
        rho: the memory function (at least its first T values are used; shorter is
            zero-padded).
        readout: ``"linear"`` or ``"tanh"``.
        scales: :math:`(c_{\rm in}, c_{\rm out})`; ``None``: from this batch, so that the
            pre-activation and the target each have unit mean square here (the tasks pass
            the analytic :func:`target_scales` instead, fixed for the run). ``(1, 1)``: the
            raw functional.

    Returns:
        (T, B, D) in the dtype of ``x``.
    """
    _choice("readout", readout, READOUTS)
    if x.ndim != 3:
        raise ShapeError(f"inputs must be (T, B, D), got {tuple(x.shape)}")
    rho = torch.as_tensor(rho, dtype=_F64).reshape(-1)
    z = _causal_conv(x, rho)                                        # (T, B, D) float64
    if scales is None:
        c_in = 1.0 / float(z.pow(2).mean().sqrt().clamp_min(1e-300))
        g = z * c_in if readout == "linear" else torch.tanh(z * c_in)
        c_out = 1.0 / float(g.pow(2).mean().sqrt().clamp_min(1e-300))
    else:
        c_in, c_out = float(scales[0]), float(scales[1])
        g = z * c_in if readout == "linear" else torch.tanh(z * c_in)
    return (c_out * g).to(x.dtype)


# ---------------------------------------------------------------------- D-retrieval
@dataclass(frozen=True)
class RetrievalFeatures:
    r"""The fixed functions of a D-retrieval task (see :func:`retrieval_batch`).

    Attributes:
        W: (D, d) feature directions :math:`w_i` (unit norm): :math:`f_i(x) = w_i^\top x`.
        V: (D, d) readout directions :math:`v_i`, orthogonal to :math:`w_i`, norm
            :math:`\sqrt{\text{gain}}`: :math:`F_0 = \frac1D\sum_i \tanh(v_i^\top x^{(s_i^*)})`.
        seed: the seed they were drawn from.
    """

    W: torch.Tensor
    V: torch.Tensor
    seed: int

    @property
    def D(self) -> int:
        return int(self.W.shape[0])

    @property
    def d_input(self) -> int:
        return int(self.W.shape[1])


def retrieval_features(D: int, d_input: int, *, seed: int = 0, gain: float = 1.0) -> RetrievalFeatures:
    r"""Draw the D feature and readout directions of a retrieval task (float64, seeded).

    :math:`w_i` are Gaussian directions normalised to unit length; :math:`v_i` are Gaussian,
    with their :math:`w_i` component removed and scaled to norm :math:`\sqrt{\text{gain}}`, so
    that :math:`v_i^\top x \sim \mathcal N(0, \text{gain})` for any retrieved token (see
    :func:`retrieval_batch`). Needs ``d_input >= 2``.
    """
    D, d = _count("D", D), _count("d_input", d_input)
    if d < 2:
        raise ParameterError("D-retrieval needs tokens of dimension d_input >= 2 (a 1-D "
                             "token's maximiser of w·x is just the largest or smallest input)")
    g = torch.Generator().manual_seed(int(seed))
    W = torch.randn(D, d, generator=g, dtype=_F64)
    W = W / W.norm(dim=1, keepdim=True)
    V = torch.randn(D, d, generator=g, dtype=_F64)
    V = V - (V * W).sum(1, keepdim=True) * W                         # v_i ⟂ w_i
    V = V / V.norm(dim=1, keepdim=True).clamp_min(1e-12) * math.sqrt(_positive("gain", gain))
    return RetrievalFeatures(W=W, V=V, seed=int(seed))


def retrieval_batch(T: int, B: int, D: int, d_input: int, *,
                    generator: torch.Generator | None = None,
                    features: RetrievalFeatures | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A batch of the generalized D-retrieval task: tokens ``x`` (T, B, d_input) and the
    target ``y`` (B, 1), read at the last position.

    .. math::

        x^{(s)} \sim \mathcal N(0, I_d)\ \text{i.i.d.},\qquad
        s_i^* = \arg\max_{s} f_i(x^{(s)}),\quad f_i(x) = w_i^\top x,\qquad
        y = F_0\big(x^{(s_1^*)},\dots,x^{(s_D^*)}\big) = \frac1D\sum_{i=1}^{D}
        \tanh\big(v_i^\top x^{(s_i^*)}\big)

    with the fixed :class:`RetrievalFeatures` ``(w_i, v_i)``. This is an *inferred* instance
    of the task of arXiv 2510.06662 (note §8: D feature functions
    :math:`f_i: [0,1]^d \to [0,1]` whose maximisers are combined by an outer function
    :math:`F_0`; the paper's exact definition was not read). Linear features are used because
    the argmax only sees their order: :math:`\sigma(w_i^\top x)` maps into [0, 1] with the
    same maximiser. Gaussian tokens and :math:`v_i \perp w_i` keep the target from
    concentrating as T grows: the retrieved token's component orthogonal to :math:`w_i` is
    still :math:`\mathcal N(0, I)`, so :math:`v_i^\top x^{(s_i^*)} \sim \mathcal N(0,\|v_i\|^2)`
    for every T.

    Args:
        T, B: tokens per sequence, sequences.
        D: features (positions to retrieve); d_input: token dimension (>= 2).
        generator: draws the tokens (CPU).
        features: the fixed functions; default ``retrieval_features(D, d_input, seed=0)``.

    Returns:
        ``(x, y)``: (T, B, d_input) and (B, 1), in ``dtype``.
    """
    T, B = _count("T", T), _count("B", B)
    if features is None:
        features = retrieval_features(D, d_input)
    if features.D != D or features.d_input != d_input:
        raise ShapeError(f"the features are for D = {features.D}, d_input = {features.d_input}, "
                         f"not {D}, {d_input}")
    x = torch.randn(T, B, d_input, generator=generator, dtype=_F64)          # (T, B, d)
    f = torch.einsum("tbd,id->tbi", x, features.W)                           # (T, B, D)
    s_star = f.argmax(dim=0)                                                 # (B, D)
    b = torch.arange(B).unsqueeze(1).expand(B, D)
    picked = x[s_star, b]                                                    # (B, D, d)
    y = torch.tanh((picked * features.V.unsqueeze(0)).sum(-1)).mean(-1, keepdim=True)  # (B, 1)
    return x.to(dtype), y.to(dtype)


# ---------------------------------------------------------------------- learned memory
@torch.no_grad()
def learned_memory(model: torch.nn.Module, L: int) -> torch.Tensor:
    r"""The memory function of a trained model, (L,) float64 on the CPU: its response to a
    unit impulse at time 0 minus its response to zero input (first input, first output),

    .. math:: \hat\rho(s) = \hat y_s(\delta) - \hat y_s(0),\qquad s = 0..L-1.

    For a linear time-invariant model (a 1-layer SSM with a linear readout) this is exactly
    its kernel with the feed-through added at s = 0 (``model.memory_function(L)`` plus
    ``D_eff`` at lag 0): the quantity that fits :math:`c\rho` of a memory target, whose
    :math:`\rho(0)` the model may split between its kernel and its skip term. For a nonlinear
    model it is the response to that one impulse (signed, unlike the models'
    ``memory_function``, which for nonlinear models is the Curse-of-memory step-response
    difference :math:`|\Delta\hat y|`).
    """
    L = _count("L", L)
    p = next(model.parameters())
    x = torch.zeros(L, 2, 1, dtype=p.dtype, device=p.device)                 # (L, 2, 1)
    x[0, 0, 0] = 1.0
    d_in, _ = _model_dims(model)
    if d_in not in (None, 1):
        x = torch.nn.functional.pad(x, (0, int(d_in) - 1))                   # (L, 2, d_in)
    was = model.training
    model.eval()
    try:
        y = model(x)                                                         # (L, 2, d_out)
    finally:
        model.train(was)
    return (y[:, 0, 0] - y[:, 1, 0]).to("cpu", _F64)


def _eigen_decay_rate(model) -> float:
    f = getattr(model, "discrete_eigenvalues", None)
    if not callable(f):
        return math.nan
    lam = torch.as_tensor(f()).detach().to("cpu")
    mod = lam.abs().double().reshape(-1)
    mod = mod[torch.isfinite(mod) & (mod > 0)]
    if mod.numel() == 0:
        return math.nan
    return float(-torch.log(mod.max()))


@torch.no_grad()
def learned_decay_rate(model: torch.nn.Module, L: int, *, method: str = "fit",
                       floor: float = 1e-2) -> float:
    r"""The decay rate (per step) of a trained model's memory.

    * ``"fit"`` (default): the weighted least-squares slope of :math:`\log|\hat\rho(s)|`
      against s, :math:`\text{rate} = -\text{slope}`, with weights :math:`\hat\rho(s)^2`
      (to first order the least-squares fit of :math:`c\,e^{-rs}` to :math:`\hat\rho` itself),
      on the stretch where the memory is well above the noise: from the peak of
      :math:`|\hat\rho|` (at lag 1 or later, so that a skip term at s = 0 does not bend the
      line) up to the first lag where :math:`|\hat\rho|` falls below ``floor`` times the
      peak. For a memory :math:`c\,e^{-s/\tau}` it returns :math:`1/\tau` exactly. The
      weights keep the tail, where a small slow mode or noise dominates, from setting the
      rate: for :math:`0.41e^{-0.108s} + 0.025e^{-0.038s}` (a trained two-mode model) it gives
      0.099, the unweighted fit 0.085. Needs 3 lags in the stretch (else NaN).
    * ``"eigen"``: :math:`-\log\max|\bar\lambda|` over the discrete eigenvalues
      (``model.discrete_eigenvalues()``), the slowest mode. A mode the readout ignores still
      counts here, so this can report a longer memory than the fit; NaN for models without
      eigenvalues.

    :math:`\hat\rho` is :func:`learned_memory` over L lags.
    """
    _choice("method", method, ("fit", "eigen"))
    if method == "eigen":
        return _eigen_decay_rate(model)
    r = learned_memory(model, L).abs()
    if r.numel() < 3 or not bool(torch.isfinite(r).all()):
        return math.nan
    start = int(r[1:].argmax()) + 1                       # the peak, at lag 1 or later
    peak = float(r[start])
    if not peak > 0:
        return math.nan
    below = torch.nonzero(r[start:] < floor * peak)
    end = start + int(below[0]) if below.numel() else r.numel()
    if end - start < 3:
        return math.nan
    s = torch.arange(start, end, dtype=_F64)
    y = torch.log(r[start:end])
    w = r[start:end] ** 2                                  # ≈ least squares on ρ̂ itself
    sc = s - (w * s).sum() / w.sum()
    yc = y - (w * y).sum() / w.sum()
    slope = float((w * sc * yc).sum() / (w * sc * sc).sum())
    return -slope


# ---------------------------------------------------------------------- tasks
def _cosine(step: int, planned: int, lr: float, lr_end: float) -> float:
    frac = min(1.0, step / max(1, planned))
    return lr_end + 0.5 * (lr - lr_end) * (1.0 + math.cos(math.pi * frac))


def _model_dims(model) -> tuple[int | None, int | None]:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "d_input", None), getattr(cfg, "d_output", None)


class _SequenceTask(Task):
    """Shared parts: the sampler, the schedule, device handling."""

    #: seed offsets of the training sampler and the held-out batch
    _TRAIN, _HELD = 7_919, 104_729

    def _setup(self, model, seed, batch, lr, lr_end, planned_steps, eval_batch):
        if not isinstance(model, torch.nn.Module):
            raise ParameterError("a sequence task needs a torch.nn.Module as its model")
        self.model = model
        self.seed = int(seed)
        self.batch = _count("batch", batch)
        self.eval_batch = _count("eval_batch", eval_batch)
        self.lr = _positive("lr", lr)
        self.lr_end = self.lr / 20.0 if lr_end is None else float(lr_end)
        if not (0 <= self.lr_end <= self.lr):
            raise ParameterError(f"lr_end must be in [0, lr], got {lr_end!r}")
        self.planned_steps = _count("planned_steps", planned_steps)
        self.sampler = torch.Generator().manual_seed(self.seed + self._TRAIN)

    def _to_model(self, *ts: torch.Tensor):
        p = next(self.model.parameters())
        return tuple(t.to(device=p.device, dtype=p.dtype) for t in ts)

    def lr_at(self, step: int) -> float:
        """Cosine decay from ``lr`` to ``lr_end`` over ``planned_steps``, then ``lr_end``."""
        return _cosine(step, self.planned_steps, self.lr, self.lr_end)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.set_state(state["sampler"])

    def model_kind(self) -> str | None:
        k = getattr(self.model, "kind", None)
        return k if isinstance(k, str) else None


class MemoryTask(_SequenceTask):
    r"""Learn a memory-function target (:func:`memory_targets`) from fresh input batches.

    Each step draws ``batch`` input sequences of length ``seq_len`` (:func:`make_inputs`) from
    the task's own generator and computes the target with the fixed analytic
    :func:`target_scales`. The loss is the NMSE, the mean squared error over all positions
    divided by the target's mean square on the held-out batch (:attr:`target_var`; about 1).

    Args:
        model: maps (T, B, 1) to (T, B, 1).
        memory, strength, period: the memory function (:func:`memory_function`).
        seq_len, batch: sequence length, sequences per step.
        input_kind, phi: the input process (:func:`make_inputs`).
        readout: ``"linear"`` or ``"tanh"`` (the target's g).
        seed: the data (the model is seeded by its own config).
        lr, lr_end, planned_steps: Adam's learning rate, cosine-decayed to ``lr_end``
            (default ``lr / 20``) over ``planned_steps``.
        eval_batch: sequences in the fixed held-out batch.
    """

    name = "memory"

    def __init__(self, model: torch.nn.Module, *, memory: str = "exp", strength: float = 20.0,
                 seq_len: int = 256, batch: int = 32, input_kind: str = "white",
                 phi: float = 0.8, readout: str = "linear", seed: int = 0, lr: float = 1e-2,
                 lr_end: float | None = None, planned_steps: int = 1000,
                 period: float = DEFAULT_PERIOD, eval_batch: int = 128):
        self.memory = _choice("memory function", memory, MEMORY_KINDS)
        self.strength = float(strength)
        self.period = float(period)
        self.seq_len = _count("seq_len", seq_len, 2)
        self.input_kind = _choice("input kind", input_kind, INPUT_KINDS)
        self.phi = _phi(phi)
        self.readout = _choice("readout", readout, READOUTS)
        self._setup(model, seed, batch, lr, lr_end, planned_steps, eval_batch)
        d_in, d_out = _model_dims(model)
        if (d_in not in (None, 1)) or (d_out not in (None, 1)):
            raise ShapeError(f"a memory task needs a model with one input and one output, "
                             f"not {d_in} -> {d_out}")
        self.rho = memory_function(self.memory, self.seq_len, self.strength, period=self.period)
        self.scales = target_scales(self.rho, readout=self.readout, input_kind=self.input_kind,
                                    phi=self.phi)
        held = torch.Generator().manual_seed(self.seed + self._HELD)
        self.x_val, self.y_val = self._draw(self.eval_batch, held)
        self.target_var = float(self.y_val.double().pow(2).mean())

    def _draw(self, B: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = make_inputs(self.seq_len, B, kind=self.input_kind, phi=self.phi,
                        generator=generator, dtype=_F64)                        # (T, B, 1)
        y = memory_targets(x, self.rho, readout=self.readout, scales=self.scales)
        return x.float(), y.float()

    def target_memory(self, L: int | None = None) -> torch.Tensor:
        r"""The memory function a model that fits the target learns,
        :math:`c_{\rm out}c_{\rm in}\rho(s)` (for the tanh readout: its linearisation at 0,
        :math:`\tanh'(0) = 1`), (L,) float64; ``L`` defaults to ``seq_len``."""
        L = self.seq_len if L is None else _count("L", L)
        rho = memory_function(self.memory, L, self.strength, period=self.period) \
            if L != self.seq_len else self.rho
        return rho * (self.scales[0] * self.scales[1])

    def target_decay_rate(self) -> float:
        """1/τ per step for the exponential memory, else NaN."""
        return 1.0 / self.strength if self.memory == "exp" else math.nan

    # ------------------------------------------------------------------ Task protocol
    def config(self) -> dict[str, Any]:
        return {"memory": self.memory, "strength": self.strength, "period": self.period,
                "seq_len": self.seq_len, "batch": self.batch, "input_kind": self.input_kind,
                "phi": self.phi, "readout": self.readout, "seed": self.seed, "lr": self.lr,
                "lr_end": self.lr_end, "planned_steps": self.planned_steps,
                "eval_batch": self.eval_batch, "model_kind": self.model_kind()}

    def loss(self, model, step):
        x, y = self._to_model(*self._draw(self.batch, self.sampler))             # (T, B, 1)
        return torch.mean((model(x) - y) ** 2) / self.target_var

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """``nmse`` on the held-out batch; ``memory_error``: relative L2 error of
        :func:`learned_memory` against :meth:`target_memory` over ``seq_len`` lags;
        ``decay_rate`` (exponential memory only): :func:`learned_decay_rate`."""
        x, y = self._to_model(self.x_val, self.y_val)
        out = {"nmse": float(torch.mean((model(x) - y).double() ** 2)) / self.target_var}
        rho_hat = learned_memory(model, self.seq_len)
        ref = self.target_memory()
        out["memory_error"] = float((rho_hat - ref).norm() / ref.norm().clamp_min(1e-300))
        if self.memory == "exp":
            out["decay_rate"] = learned_decay_rate(model, self.seq_len)
        return out


class RetrievalTask(_SequenceTask):
    r"""Learn generalized D-retrieval (:func:`retrieval_batch`), read at the last position.

    The targets are standardised with the held-out batch's mean and standard deviation
    (:attr:`y_shift`, :attr:`y_scale`); the loss is the MSE of the model's output at the last
    position, i.e. the NMSE (1 = predicting the mean).

    Args:
        model: maps (T, B, d_input) to (T, B, 1) (or (1, B, 1): only the last row is read).
        D: positions to retrieve; seq_len: tokens T; d_input: token dimension (default the
            model's ``config.d_input``; at least 2).
        batch, seed, lr, lr_end, planned_steps, eval_batch: as :class:`MemoryTask`; ``seed``
            also draws the features (:func:`retrieval_features`).
    """

    name = "retrieval"

    def __init__(self, model: torch.nn.Module, *, D: int = 4, seq_len: int = 16,
                 d_input: int | None = None, batch: int = 64, seed: int = 0, lr: float = 3e-3,
                 lr_end: float | None = None, planned_steps: int = 1000, eval_batch: int = 512):
        self.D = _count("D", D)
        self.seq_len = _count("seq_len", seq_len, 1)
        m_in, m_out = _model_dims(model)
        if d_input is None:
            d_input = m_in
        if d_input is None:
            raise ParameterError("the token dimension d_input is not known: pass d_input=")
        if m_in is not None and m_in != d_input:
            raise ShapeError(f"the model takes {m_in} inputs, the tokens have {d_input}")
        if m_out not in (None, 1):
            raise ShapeError(f"a retrieval task needs a model with one output, not {m_out}")
        self.d_input = int(d_input)
        self.features = retrieval_features(self.D, self.d_input, seed=int(seed))
        self._setup(model, seed, batch, lr, lr_end, planned_steps, eval_batch)
        held = torch.Generator().manual_seed(self.seed + self._HELD)
        x, y = retrieval_batch(self.seq_len, self.eval_batch, self.D, self.d_input,
                               generator=held, features=self.features, dtype=_F64)
        self.y_shift = float(y.mean())
        self.y_scale = float(y.std().clamp_min(1e-12))
        self.x_val, self.y_val = x.float(), ((y - self.y_shift) / self.y_scale).float()

    def _draw(self, B: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = retrieval_batch(self.seq_len, B, self.D, self.d_input, generator=generator,
                               features=self.features, dtype=_F64)
        return x.float(), ((y - self.y_shift) / self.y_scale).float()

    def config(self) -> dict[str, Any]:
        return {"D": self.D, "seq_len": self.seq_len, "d_input": self.d_input,
                "batch": self.batch, "seed": self.seed, "lr": self.lr, "lr_end": self.lr_end,
                "planned_steps": self.planned_steps, "eval_batch": self.eval_batch,
                "model_kind": self.model_kind()}

    def loss(self, model, step):
        x, y = self._to_model(*self._draw(self.batch, self.sampler))
        return torch.mean((model(x)[-1] - y) ** 2)                           # (B, 1)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """``nmse``: the MSE on the held-out batch over its (unit) variance."""
        x, y = self._to_model(self.x_val, self.y_val)
        return {"nmse": float(torch.mean((model(x)[-1] - y).double() ** 2))}


TASKS: dict[str, type[_SequenceTask]] = {"memory": MemoryTask, "retrieval": RetrievalTask}


# ---------------------------------------------------------------------- model registry
def _build_ssm(config: Mapping[str, Any]) -> torch.nn.Module:
    from ..models.ssm import build_ssm

    return build_ssm(dict(config))


def _build_selective(config: Mapping[str, Any]) -> torch.nn.Module:
    from ..models.selective import build_selective

    return build_selective(dict(config))


def _build_transformer(config: Mapping[str, Any]) -> torch.nn.Module:
    from ..models.attention import build_transformer

    return build_transformer(dict(config))


register_model("ssm", _build_ssm)
register_model("selective", _build_selective)
register_model("transformer", _build_transformer)


# ---------------------------------------------------------------------- runs
def _build(model: str | torch.nn.Module, config: Mapping[str, Any]) -> torch.nn.Module:
    if isinstance(model, torch.nn.Module):
        if config:
            raise ParameterError("model_config is for a model given by name, not an instance")
        return model
    if not isinstance(model, str) or model not in registered_models():
        raise ParameterError(f"unknown model {model!r}; models: {', '.join(MODEL_KINDS)} "
                             "(or a kind registered with register_model)")
    return build_model_from_spec({"kind": model, "config": dict(config)})


def make_sequence_run(*, model: str | torch.nn.Module = "ssm", task: str = "memory",
                      model_config: Mapping[str, Any] | None = None, memory: str = "exp",
                      strength: float = 20.0, seq_len: int = 256, batch: int = 32,
                      input_kind: str = "white", phi: float = 0.8, readout: str = "linear",
                      D: int = 4, lr: float = 1e-2, lr_end: float | None = None,
                      planned_steps: int = 1000, seed: int = 0, eval_every: int | None = None,
                      period: float = DEFAULT_PERIOD, eval_batch: int | None = None,
                      device: str | torch.device | None = None) -> TrainingLoop:
    """A :class:`TrainingLoop` of a sequence model on a memory or retrieval task.

    Args:
        model: ``"ssm"``, ``"selective"``, ``"transformer"`` (or another registered kind),
            or a module.
        task: ``"memory"`` (:class:`MemoryTask`) or ``"retrieval"`` (:class:`RetrievalTask`).
        model_config: the model's config fields. ``d_output`` defaults to 1, ``d_input`` to 1
            (memory) or ``max(2, D)`` (retrieval: the token dimension, at least 2), ``seed``
            to ``seed``; an ``"ssm"`` gets ``seq_len``, a ``"transformer"`` a ``max_len`` of
            at least ``seq_len`` (and ``readout="last"`` on retrieval).
        memory, strength, period, input_kind, phi, readout: the memory task.
        D: the retrieval task's positions to retrieve.
        seq_len, batch, seed, lr, lr_end, planned_steps: see the tasks.
        eval_every: evaluation period (default ``planned_steps // 10``).
        eval_batch: held-out sequences (default 128 for memory, 512 for retrieval).
        device: where the model trains (default: the CPU).
    """
    _choice("task", task, tuple(TASKS))
    cfg = dict(model_config or {})
    if not isinstance(model, torch.nn.Module):
        cfg.setdefault("d_output", 1)
        cfg.setdefault("d_input", 1 if task == "memory" else max(2, int(D)))
        cfg.setdefault("seed", int(seed))
        if model == "ssm":
            cfg.setdefault("seq_len", int(seq_len))
        elif model == "transformer":
            cfg["max_len"] = max(int(cfg.get("max_len", 4096)), int(seq_len))
            if task == "retrieval":
                cfg.setdefault("readout", "last")
    m = _build(model, cfg)
    if device is not None:
        m = m.to(device)
    common = {"batch": int(batch), "seed": int(seed), "lr": float(lr), "lr_end": lr_end,
              "planned_steps": int(planned_steps)}
    if task == "memory":
        t = MemoryTask(m, memory=memory, strength=strength, seq_len=int(seq_len),
                       input_kind=input_kind, phi=phi, readout=readout, period=period,
                       eval_batch=int(eval_batch or 128), **common)
    else:
        t = RetrievalTask(m, D=int(D), seq_len=int(seq_len), eval_batch=int(eval_batch or 512),
                          d_input=cfg.get("d_input") if not isinstance(model, torch.nn.Module)
                          else None, **common)
    every = int(eval_every) if eval_every is not None else max(1, int(planned_steps) // 10)
    return TrainingLoop(t, LoopConfig(lr=float(lr), planned_steps=int(planned_steps),
                                      eval_every=every))


def load_sequence_run(path, *, device: str | torch.device | None = None) -> TrainingLoop:
    """Rebuild the run saved at ``path`` (model from its recorded kind and config through the
    registry, task from its config) and restore its weights, optimiser, counters and sampler.

    Raises:
        CheckpointError, CheckpointMismatchError: see :meth:`TrainingLoop.restore`.
    """
    from .checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint

    ck = load_checkpoint(path)
    cls = TASKS.get(ck.task_name or "")
    if cls is None:
        raise CheckpointMismatchError(f"{Path(path).name} holds a "
                                      f"{ck.task_name or 'bare model'!r} checkpoint, not a "
                                      "sequence task ('memory' or 'retrieval')")
    try:
        model = build_model_from_spec(ck.model_spec)
    except (LookupError, TypeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot rebuild the checkpoint's model: {msg}") from e
    if device is not None:
        model = model.to(device)
    cfg = dict(ck.task_config or {})
    cfg.pop("model_kind", None)
    task = cls(model, **cfg)
    loop_cfg = LoopConfig.from_dict(ck.loop_config) if ck.loop_config else \
        LoopConfig(lr=task.lr, planned_steps=task.planned_steps)
    return TrainingLoop(task, loop_cfg).restore(path)


def settings_of(loop: TrainingLoop) -> dict[str, Any]:
    """A run's settings as flat plain data (for a page to show a loaded run): ``family``
    (the model kind), the model's config fields (not its ``readout``, ``d_input``,
    ``d_output``) and the task's config (``task``, ``memory``, ``strength``, ...)."""
    ident = model_identity(loop.model)
    out: dict[str, Any] = {"family": ident.get("kind")}
    for k, v in (ident.get("config") or {}).items():
        if k not in ("readout", "d_input", "d_output", "kind"):
            out[k] = v
    out["task"] = loop.task_name
    cfg = dict(loop.task_config())
    cfg.pop("model_kind", None)
    out.update(cfg)
    return out


def run_summary(loop: TrainingLoop) -> dict[str, Any]:
    """Plain-data summary of a sequence run (the CLI's ``--json``): task, model kind and
    parameter count, steps, seconds, the last training loss, the current evaluation
    (``nmse``; memory: ``memory_error``, ``decay_rate`` and its target ``1/τ``)."""
    task = loop.task
    metrics = loop.evaluate()
    losses = loop.history.get("loss", [])
    out: dict[str, Any] = {
        "task": loop.task_name, "model": getattr(loop.model, "kind", type(loop.model).__name__),
        "params": int(sum(p.numel() for p in loop.model.parameters() if p.requires_grad)),
        "steps": loop.step_count, "seconds": round(loop.seconds, 3),
        "final_loss": losses[-1] if losses else None,
        "nmse": metrics.get("nmse"), "skipped": loop.skipped, "rollbacks": loop.rollbacks}
    if isinstance(task, MemoryTask):
        rate = metrics.get("decay_rate")
        target = task.target_decay_rate()
        out.update(memory=task.memory, strength=task.strength, seq_len=task.seq_len,
                   memory_error=metrics.get("memory_error"), decay_rate=rate,
                   decay_rate_target=None if math.isnan(target) else target,
                   decay_rate_rel_error=None if rate is None or math.isnan(target) or
                   not math.isfinite(rate) else abs(rate - target) / target)
    elif isinstance(task, RetrievalTask):
        out.update(D=task.D, seq_len=task.seq_len, d_input=task.d_input)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in out.items()}


# ---------------------------------------------------------------------- heads sweep
@dataclass(frozen=True)
class HeadSweep:
    """Loss against the number of heads at a fixed attention budget ``h·d_head``.

    Attributes:
        heads, d_heads: the heads h and head dimension ``budget // h`` of each model trained.
        params: the models' trainable parameter counts.
        losses: held-out NMSE at the end of training (mean of the last 3 evaluations).
        budget, D, T: the budget, the features to retrieve, the sequence length.
        stopped: the stop event ended the sweep early (only the finished models are listed).
    """

    heads: tuple[int, ...]
    d_heads: tuple[int, ...]
    params: tuple[int, ...]
    losses: tuple[float, ...]
    budget: int
    D: int
    T: int
    stopped: bool = False


def head_sweep(*, budget: int = 16, heads: Sequence[int] = (1, 2, 4, 8), D: int = 4,
               T: int = 16, steps: int = 300, batch: int = 64, seed: int = 0,
               lr: float = 1e-2, d_input: int | None = None,
               model: str = "transformer", model_config: Mapping[str, Any] | None = None,
               stop: threading.Event | None = None,
               progress: Callable[[float], Any] | None = None) -> HeadSweep:
    r"""Train one transformer per head count h on D-retrieval (:class:`RetrievalTask`), each
    with head dimension ``budget // h`` (so ``h·d_head = budget`` and the attention has the
    same parameter count), and report the held-out NMSE against h.

    Note §8 (arXiv 2510.06662): with h ≥ D heads the task is approximated efficiently, with
    h < D the needed parameters grow exponentially in T, so the loss should show a knee near
    h = D. Every model sees the same features, batches and held-out set (same ``seed``).

    Measured when written (CPU, defaults but ``steps=1000``: budget 16, D = 4, T = 16): NMSE
    0.67, 0.46, 0.074, 0.076 for h = 1, 2, 4, 8, the knee at h = D; with the default 300 steps
    the knee shows but is noisier (0.78, 0.50, 0.31, 0.38). Each model costs about
    ``steps`` × 20 ms on one CPU thread.

    Args:
        budget: ``h·d_head``; every h must divide it.
        heads: the head counts.
        D, T: features to retrieve, tokens per sequence; d_input: token dimension
            (default ``max(2, D)``).
        steps, batch, lr: training of each model (cosine schedule over ``steps``).
        model: the registered model kind (its config takes ``n_heads``, ``d_head``,
            ``d_input``, ``d_output``, ``seed``); model_config: more config fields. For the
            ``"transformer"`` they default to ``d_ff = 4·budget`` (the outer function F₀
            needs an MLP after the attention), ``positional = "none"`` (the task is
            permutation-invariant) and ``readout = "last"``.
        stop: when set, the sweep ends after the current step (``stopped=True``).
        progress: called with the fraction done (0..1) as the models train.
    """
    budget, steps = _count("budget", budget), _count("steps", steps)
    heads = tuple(_count("heads", h if isinstance(h, bool) else int(h)) for h in heads)
    if not heads:
        raise ParameterError("no head counts to sweep")
    bad = [h for h in heads if budget % h]
    if bad:
        raise ParameterError(f"the budget {budget} is not divisible by {bad[0]} heads")
    d_input = max(2, int(D)) if d_input is None else int(d_input)
    every = max(1, steps // 10)
    out_h, out_d, out_p, out_l = [], [], [], []
    stopped = False
    n = len(heads)
    tick = max(1, steps // 50)
    for i, h in enumerate(heads):
        if stop is not None and stop.is_set():
            stopped = True
            break
        base = {"d_ff": 4 * budget, "positional": "none", "readout": "last"} \
            if model == "transformer" else {}
        cfg = {**base, **dict(model_config or {}), "n_heads": h, "d_head": budget // h,
               "d_input": d_input, "d_output": 1, "seed": int(seed)}
        net = _build(model, cfg)
        task = RetrievalTask(net, D=D, seq_len=T, d_input=d_input, batch=batch, seed=seed,
                             lr=lr, planned_steps=steps)
        loop = TrainingLoop(task, LoopConfig(lr=lr, planned_steps=steps, eval_every=every))

        def report(ev, i=i):
            if progress is not None and ev.step % tick == 0:
                progress(min(1.0, (i + ev.step / steps) / n))

        last = loop.run(steps, callbacks=[report], stop=stop)
        if last.status == "stopped":
            stopped = True
            break
        evals = [m["nmse"] for m in loop.metric_history if "nmse" in m]
        if not evals:
            evals = [loop.evaluate()["nmse"]]
        tail = evals[-3:]
        out_h.append(h)
        out_d.append(budget // h)
        out_p.append(int(sum(p.numel() for p in net.parameters() if p.requires_grad)))
        out_l.append(float(sum(tail) / len(tail)))
    if progress is not None and not stopped:
        progress(1.0)
    return HeadSweep(heads=tuple(out_h), d_heads=tuple(out_d), params=tuple(out_p),
                     losses=tuple(out_l), budget=budget, D=int(D), T=int(T), stopped=stopped)
