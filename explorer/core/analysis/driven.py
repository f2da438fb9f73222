r"""Lyapunov exponents and perturbation responses of input-driven recurrences (sequence models).

A sequence model's state obeys :math:`h_t = F(h_{t-1}, u_t)` with an external input sequence
:math:`u_t`. For a *fixed* input sequence the tangent dynamics are
:math:`\delta h_t = J_t\,\delta h_{t-1}`, :math:`J_t = \partial F/\partial h\,(h_{t-1}, u_t)`,
and the (conditional, input-driven) Lyapunov exponents are the growth rates of
:math:`J_T \cdots J_1`, estimated by the Benettin/QR method: ``k`` tangent vectors ``Q`` (D, k)
are propagated, :math:`Q \leftarrow J_t Q`, and every ``renorm_every`` steps re-orthonormalised
by :math:`Q R = Q`, accumulating :math:`\log|R_{ii}|`:

.. math:: \lambda_i = \lim_{T\to\infty} \frac1T \sum_{\text{QR steps}} \log |R_{ii}| .

Negative exponents mean the model forgets its initial state (the echo-state / fading-memory
property); for a Mamba layer they are :math:`A_{d,n}\,\overline{\Delta_d}`
(:meth:`explorer.models.selective.SelectiveSSM.lyapunov_exponents`).

:func:`perturbation_response` measures the same memory from the outside: how much the outputs
at later times move when one input token is perturbed (for a linear recurrence with
eigenvalue ``a`` it decays like :math:`|a|^{t-s}`).

References:
    G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, Meccanica 15, 9 (1980).
    R. Engelken, F. Wolf, L. F. Abbott, "Lyapunov spectra of chaotic recurrent neural
    networks", Phys. Rev. Research 5, 043044 (2023), arXiv:2006.02427 (input-driven RNNs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ParameterError, ShapeError
from ..limits import check_size
from .lyapunov import _orthonormalise

__all__ = ["DrivenLyapunov", "driven_lyapunov", "perturbation_response"]


@dataclass(frozen=True)
class DrivenLyapunov:
    """Lyapunov exponents of an input-driven recurrence, largest first, per step (token).

    Attributes:
        exponents: (k,) mean over the batch members that stayed finite.
        per_batch: (B, k) each member's exponents (its own input sequence); NaN rows for
            members whose state or tangent vectors stopped being finite (also a singular
            tangent map, an exponent of −∞, e.g. ``exp(Δ A)`` underflowing in float32).
        running: (T,) running estimate of the largest exponent after each step (mean over the
            finite members; updated at each re-orthonormalisation, NaN before the first).
        history: (T, k) the running estimate of all k exponents.
        steps: T, the number of steps averaged over.
        renorm_every: steps between QR re-orthonormalisations.
        diverged: (B,) members excluded from the mean.
    """

    exponents: torch.Tensor
    per_batch: torch.Tensor
    running: torch.Tensor
    history: torch.Tensor
    steps: int
    renorm_every: int
    diverged: torch.Tensor

    @property
    def largest(self) -> float:
        return float(self.exponents[0])

    def as_dict(self) -> dict[str, Any]:
        def clean(v):
            v = v.tolist() if isinstance(v, torch.Tensor) else v
            if isinstance(v, list):
                return [clean(e) for e in v]
            return v if not isinstance(v, float) or math.isfinite(v) else None

        return {"exponents": clean(self.exponents), "per_batch": clean(self.per_batch),
                "steps": self.steps, "renorm_every": self.renorm_every,
                "diverged": clean(self.diverged), "per": "step"}


def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ParameterError(f"driven Lyapunov: {name} must be an integer >= {lo}, got {v!r}")
    return v


def driven_lyapunov(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h0: torch.Tensor,
                    inputs: torch.Tensor, *, k: int = 1, renorm_every: int = 1,
                    q0: torch.Tensor | None = None, generator: torch.Generator | None = None,
                    mode: str = "auto") -> DrivenLyapunov:
    r"""The ``k`` largest Lyapunov exponents of :math:`h_t = F(h_{t-1}, u_t)` along given inputs.

    .. math:: \lambda_i = \lim_T \frac1T \log \sigma_i(J_T\cdots J_1),\qquad
              J_t = \frac{\partial F}{\partial h}(h_{t-1}, u_t)

    estimated by Benettin/QR. The tangent map comes from ``torch.func``: full Jacobians by
    ``jacrev`` vectorised over the batch with ``vmap`` (``mode="jacrev"``; ``step`` is then
    called with batch size 1 inside ``vmap``), or only :math:`J_t Q` by one forward-mode
    ``jvp`` with the k tangent vectors folded into the batch (``mode="jvp"``: ``step`` is then
    called with batch size B·k; far cheaper for k ≪ D);
    ``"auto"`` takes ``jvp`` when ``4k ≤ D``. Either way ``step`` must use out-of-place torch
    ops. Computed in the dtype of ``h0``; use a float64 model and inputs for accurate exponents.

    The QR step is modified Gram–Schmidt applied twice for k ≤ 6 (batched vector ops; a
    batched LAPACK call is much slower for tiny matrices), LAPACK otherwise.
    Tangent vectors start at the identity when ``k = D`` (then a diagonal or triangular
    recurrence gives its exponents exactly, not after a transient), else at a random
    orthonormal frame from ``generator``. The exponents are reported sorted, largest first.

    Args:
        step: ``step(h (B, D), u (B, m)) -> h (B, D)``.
        h0: initial states (B, D).
        inputs: the driving inputs (T, B, m).
        k: number of exponents (1 ≤ k ≤ D).
        renorm_every: re-orthonormalise every this many steps (1: every step; the tangent
            vectors grow or shrink unnormalised in between, so keep it small for large
            exponents).
        q0: optional initial tangent frame (D, k) or (B, D, k) (orthonormalised here).
        generator: for the random initial frame when ``k < D``.
        mode: ``"auto"``, ``"jacrev"`` or ``"jvp"`` (how the tangent map is computed).

    Returns:
        :class:`DrivenLyapunov`, exponents per step.

    References:
        Benettin et al., Meccanica 15, 9 (1980); Engelken, Wolf, Abbott, arXiv:2006.02427.
    """
    def shape(v):
        return tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__

    if not isinstance(h0, torch.Tensor) or h0.ndim != 2:
        raise ShapeError(f"driven Lyapunov: h0 must be (B, D), got {shape(h0)}")
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 3 or inputs.shape[1] != h0.shape[0]:
        raise ShapeError(f"driven Lyapunov: inputs must be (T, B, m) with B = {h0.shape[0]}, "
                         f"got {shape(inputs)}")
    B, D = h0.shape
    T = inputs.shape[0]
    k = _int("k", k, 1)
    renorm_every = _int("renorm_every", renorm_every, 1)
    if k > D:
        raise ParameterError(f"driven Lyapunov: k = {k} exceeds the state dimension {D}")
    if T < 1:
        raise ShapeError("driven Lyapunov: the input sequence is empty (T = 0)")
    if mode not in ("auto", "jacrev", "jvp"):
        raise ParameterError(f"driven Lyapunov: mode must be auto, jacrev or jvp, got {mode!r}")
    use_jvp = mode == "jvp" or (mode == "auto" and 4 * k <= D)
    itemsize = h0.element_size()
    check_size(batch=B, steps=T, saved=D, dim=D, itemsize=itemsize, what="driven Lyapunov")

    dtype, device = h0.dtype, h0.device
    if q0 is not None:
        Q = torch.as_tensor(q0, dtype=dtype, device=device)
        if Q.shape[-2:] != (D, k) or Q.ndim not in (2, 3):
            raise ShapeError(f"driven Lyapunov: q0 must be (D, k) = ({D}, {k}) or (B, D, k), "
                             f"got {tuple(Q.shape)}")
        Q = torch.linalg.qr(Q.expand(B, D, k))[0]
    elif k == D:
        Q = torch.eye(D, dtype=dtype, device=device).expand(B, D, D).clone()
    else:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        Q = torch.linalg.qr(torch.randn(D, k, generator=g, dtype=torch.float64))[0]
        Q = Q.to(dtype=dtype, device=device).expand(B, D, k).clone()

    def single(h, u):                                          # (D,), (m,) -> (D,), twice
        out = step(h.unsqueeze(0), u.unsqueeze(0)).squeeze(0)
        return out, out

    jac = torch.func.vmap(torch.func.jacrev(single, argnums=0, has_aux=True))

    def tangent(h, u, Q):                                      # (B, D), (B, m), (B, D, k)
        if use_jvp:                                            # the k tangents join the batch
            hk, uk = h.repeat_interleave(k, 0), u.repeat_interleave(k, 0)      # (B*k, ·)
            qk = Q.transpose(1, 2).reshape(B * k, D)                           # (B*k, D)
            out, JQ = torch.func.jvp(lambda hh: step(hh, uk), (hk,), (qk,))
            return out.reshape(B, k, D)[:, 0], JQ.reshape(B, k, D).transpose(1, 2)
        J, h_new = jac(h, u)                                   # (B, D, D), (B, D)
        return h_new, J @ Q

    h = h0.detach()
    logs = torch.zeros(B, k, dtype=torch.float64, device=device)
    bad = torch.zeros(B, dtype=torch.bool, device=device)
    history = torch.full((T, k), math.nan, dtype=torch.float64)
    per_hist = None
    eye = torch.eye(D, k, dtype=dtype, device=device)
    for t in range(T):
        h, Q = tangent(h, inputs[t].detach(), Q)               # (B, D), (B, D, k)
        h, Q = h.detach(), Q.detach()
        if (t + 1) % renorm_every == 0 or t == T - 1:
            Q, r = _orthonormalise(Q)                          # (B, D, k), |diag R| (B, k)
            r = r.to(torch.float64)
            logs = logs + torch.log(r)
            now_bad = ~(torch.isfinite(h).all(-1) & torch.isfinite(logs).all(-1)
                        & torch.isfinite(Q).flatten(1).all(-1))
            if now_bad.any():                                  # keep the run going, drop them
                bad = bad | now_bad
                h = torch.where(now_bad[:, None], torch.zeros_like(h), h)
                Q = torch.where(now_bad[:, None, None], eye.expand(B, D, k), Q)
                logs = torch.where(now_bad[:, None], torch.zeros_like(logs), logs)
            per_hist = torch.sort(logs / (t + 1), dim=-1, descending=True).values
            if (~bad).any():
                history[t] = per_hist[~bad].mean(0).cpu()
        elif per_hist is not None:
            history[t] = history[t - 1]
    per_batch = per_hist.clone()                               # the last step always renorms
    per_batch[bad] = math.nan
    exponents = per_batch[~bad].mean(0) if (~bad).any() else \
        torch.full((k,), math.nan, dtype=torch.float64, device=device)
    return DrivenLyapunov(exponents=exponents.cpu(), per_batch=per_batch.cpu(),
                          running=history[:, 0].clone(), history=history, steps=T,
                          renorm_every=renorm_every, diverged=bad.cpu())


def perturbation_response(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                          position: int = 0, eps: float | None = 1e-4,
                          direction: torch.Tensor | None = None) -> torch.Tensor:
    r"""Sensitivity of a sequence model's outputs to a perturbation of one input token.

    .. math:: r_t = \Big\langle \frac{\| f(x + \varepsilon\, e_s v)_t - f(x)_t \|_2}
              {\varepsilon} \Big\rangle_{\rm batch},\qquad s = \text{position},

    with ``v`` a unit vector in the input features (default :math:`(1,\dots,1)/\sqrt d`).
    For a causal model :math:`r_t = 0` for :math:`t < s`; for a linear recurrence
    :math:`h_t = a h_{t-1} + u_t`, :math:`y = h`, it is :math:`|a|^{t-s}`: the memory of the
    model seen from its outputs. ``eps=None`` gives the exact limit ε → 0 (a forward-mode
    Jacobian-vector product, ``torch.func.jvp``). Use a float64 model for small ``eps``.

    Args:
        f: the model, (T, B, d) -> (T, B, d_out) (SSM, selective or transformer models).
        x: inputs (T, B, d).
        position: the perturbed time step s (negative counts from the end).
        eps: perturbation size, or None for the exact derivative.
        direction: optional (d,) perturbation direction (normalised here).

    Returns:
        (T,) the response at every time, averaged over the batch.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ShapeError(f"perturbation response: x must be (T, B, d), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    T, B, d = x.shape
    if isinstance(position, bool) or not isinstance(position, int) or not -T <= position < T:
        raise ParameterError(f"perturbation response: position must be an integer in "
                             f"[{-T}, {T - 1}], got {position!r}")
    if eps is not None and not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ParameterError(f"perturbation response: eps must be a positive number or None, "
                             f"got {eps!r}")
    v = torch.ones(d, dtype=x.dtype, device=x.device) if direction is None else \
        torch.as_tensor(direction, dtype=x.dtype, device=x.device).reshape(-1)
    if v.numel() != d or not torch.isfinite(v).all() or float(v.norm()) == 0:
        raise ParameterError(f"perturbation response: direction must be a nonzero finite ({d},) "
                             f"vector")
    v = v / v.norm()
    dx = torch.zeros_like(x)
    dx[position] = v                                           # (B, d) broadcast
    with torch.no_grad():
        if eps is None:
            _, dy = torch.func.jvp(f, (x,), (dx,))
        else:
            dy = (f(x + eps * dx) - f(x)) / eps                # (T, B, d_out)
    if dy.ndim != 3 or dy.shape[:2] != (T, B):
        raise ShapeError(f"perturbation response: f must return (T, B, d_out) = ({T}, {B}, ...), "
                         f"got {tuple(dy.shape)}")
    return dy.norm(dim=-1).mean(-1)                            # (T,)
