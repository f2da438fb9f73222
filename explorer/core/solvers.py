"""Time steppers: *how* a system is advanced. A dict registry maps names to solvers.

Fixed-step solvers (``euler``, ``rk4``, and ``map`` iteration) are pure functions
``step(f, x, dt) -> x_next`` that :func:`explorer.core.simulate.simulate` batches, chunks and
optionally compiles. The adaptive Dormand-Prince 5(4) pair keeps one step size per batch
member so a stiff or fast member does not slow the others.

SDE solvers (``euler_maruyama``, ``milstein``; ``kind == "sde"``) are pure functions
``step(system, p, x, dt, dW) -> x_next`` of an :class:`~explorer.core.system.SDE`, its bound
parameters ``p``, the state (B, D), the step and the Wiener increments ``dW`` (B, M), which
the caller draws as ``sqrt(dt) * N(0, 1)`` from an explicit generator. Orders (Kloeden &
Platen 1992): Euler-Maruyama strong 0.5, weak 1; Milstein strong 1, weak 1 (for additive
noise Euler-Maruyama already has strong order 1 and the two coincide).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import ParameterError

Field = Callable[[torch.Tensor], torch.Tensor]


def euler_step(f: Field, x: torch.Tensor, dt) -> torch.Tensor:
    r"""Forward Euler, order 1: :math:`x_{n+1} = x_n + h f(x_n)`."""
    return x + dt * f(x)


def rk4_step(f: Field, x: torch.Tensor, dt) -> torch.Tensor:
    r"""Classical Runge-Kutta, order 4:
    :math:`x_{n+1} = x_n + \tfrac{h}{6}(k_1 + 2k_2 + 2k_3 + k_4)`."""
    k1 = f(x)
    k2 = f(x + (0.5 * dt) * k1)
    k3 = f(x + (0.5 * dt) * k2)
    k4 = f(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)


def map_step(f: Field, x: torch.Tensor, dt=None) -> torch.Tensor:
    """One iteration of a map, :math:`x_{n+1} = F(x_n)` (``dt`` is ignored)."""
    return f(x)


def _noise_term(g: torch.Tensor, dW: torch.Tensor, noise: str) -> torch.Tensor:
    """``g dW``: elementwise for diagonal noise (g (B, D), dW (B, D)), a matrix-vector
    product for general noise (g (B, D, M), dW (B, M))."""
    if noise == "diagonal":
        return g * dW
    return (g @ dW.unsqueeze(-1)).squeeze(-1)


def euler_maruyama_step(system, p, x: torch.Tensor, dt, dW: torch.Tensor) -> torch.Tensor:
    r"""Euler-Maruyama: :math:`X_{n+1} = X_n + f(X_n)\,h + g(X_n)\,\Delta W_n`.

    Strong order 0.5, weak order 1 (strong order 1 for additive noise). Any noise layout.
    """
    return x + dt * system.rhs(x, p) + _noise_term(system.diffusion(x, p), dW, system.noise)


def milstein_step(system, p, x: torch.Tensor, dt, dW: torch.Tensor) -> torch.Tensor:
    r"""Milstein for diagonal noise (Itô):
    :math:`X_{n+1,i} = X_{n,i} + f_i h + g_i \Delta W_i + \tfrac12 g_i\,\partial_i g_i\,
    (\Delta W_i^2 - h)`.

    Strong order 1, weak order 1. General (matrix) noise would need Lévy areas: only its
    additive case (where the correction vanishes) is accepted.
    """
    g = system.diffusion(x, p)
    if system.additive:
        return x + dt * system.rhs(x, p) + _noise_term(g, dW, system.noise)
    if system.noise != "diagonal":
        raise ParameterError("milstein needs diagonal or additive noise; use euler_maruyama")
    dg = system.diffusion_derivative(x, p)
    return x + dt * system.rhs(x, p) + g * dW + 0.5 * g * dg * (dW * dW - dt)


@dataclass(frozen=True)
class SolverInfo:
    """What a solver dropdown needs to know.

    ``order`` is the (global) order of convergence; for SDE solvers the strong order, with
    the weak order in ``weak_order``.
    """

    name: str
    kind: str          # the system kind it advances: "flow", "map" or "sde"
    order: float
    adaptive: bool
    step: Callable | None
    doc: str
    weak_order: float | None = None


SOLVERS: dict[str, SolverInfo] = {
    "rk4": SolverInfo("rk4", "flow", 4, False, rk4_step, "classical Runge-Kutta, fixed step"),
    "dopri5": SolverInfo("dopri5", "flow", 5, True, None,
                         "Dormand-Prince 5(4), adaptive step per trajectory"),
    "euler": SolverInfo("euler", "flow", 1, False, euler_step, "forward Euler (for teaching)"),
    "map": SolverInfo("map", "map", 0, False, map_step, "iteration of a map"),
    "euler_maruyama": SolverInfo("euler_maruyama", "sde", 0.5, False, euler_maruyama_step,
                                 "Euler-Maruyama (strong order 0.5, weak order 1)", 1.0),
    "milstein": SolverInfo("milstein", "sde", 1.0, False, milstein_step,
                           "Milstein, diagonal or additive noise (strong order 1, weak 1)", 1.0),
}


# Dormand & Prince (1980) coefficients.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


def dopri5_attempt(f: Field, x: torch.Tensor, h: torch.Tensor, k1: torch.Tensor | None = None):
    """One Dormand-Prince trial step with per-member step ``h`` of shape (B,).

    Returns ``(x5, err, k7)``: the 5th-order solution, the embedded error estimate
    ``x5 - x4`` and the last stage (equal to ``f(x5)``; a caller may pass it as the next
    ``k1`` when the step was accepted).
    """
    hb = h.unsqueeze(-1)                                   # (B, 1)
    ks = [f(x) if k1 is None else k1]
    for i in range(1, 7):
        acc = sum(a * k for a, k in zip(_A[i], ks) if a != 0.0)
        ks.append(f(x + hb * acc))
    x5 = x + hb * sum(b * k for b, k in zip(_B5, ks) if b != 0.0)
    err = hb * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
    return x5, err, ks[-1]


def dopri5_advance(f: Field, x: torch.Tensor, t_span: float, h: torch.Tensor, *,
                   rtol: float = 1e-6, atol: float = 1e-9, max_steps: int = 100_000,
                   active: torch.Tensor | None = None):
    """Advance every member of a batch ``x`` (B, D) by exactly ``t_span`` with adaptive steps.

    Each member keeps its own step size ``h`` (B,), which is returned updated so the next
    interval starts where this one left off. Members whose ``active`` flag is False are not
    moved. Returns ``(x, h, ok)``; ``ok`` is False for members that hit NaN/inf or a step
    size underflow (they keep their last good state).
    """
    B = x.shape[0]
    dev, dt_ = x.device, x.dtype
    t = torch.zeros(B, dtype=dt_, device=dev)
    ok = torch.ones(B, dtype=torch.bool, device=dev) if active is None else active.clone()
    h = h.clone()
    for _ in range(max_steps):
        todo = ok & (t < t_span * (1 - 1e-12))
        if not bool(todo.any()):
            break
        h_eff = torch.minimum(h, t_span - t)
        h_eff = torch.where(todo, h_eff, torch.zeros_like(h_eff))
        x5, err, _ = dopri5_attempt(f, x, h_eff)
        scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
        en = torch.sqrt(torch.mean((err / scale) ** 2, dim=-1))              # (B,)
        finite = torch.isfinite(x5).all(-1) & torch.isfinite(en)
        accept = todo & finite & (en <= 1.0)
        x = torch.where(accept.unsqueeze(-1), x5, x)
        t = torch.where(accept, t + h_eff, t)
        # standard controller: h <- h * 0.9 * err^(-1/5), limited to [0.2, 5] per step;
        # a step cut short by the end of the interval does not shrink the next one
        factor = torch.where(finite, 0.9 * en.clamp_min(1e-10) ** -0.2, torch.full_like(en, 0.2))
        h_new = h_eff * factor.clamp(0.2, 5.0)
        h_new = torch.where(accept & (h_eff < h), torch.maximum(h, h_new), h_new)
        h = torch.where(todo, h_new, h)
        tiny = todo & (h < 1e-12 * max(t_span, 1.0))
        ok = ok & ~tiny
    else:
        ok = ok & (t >= t_span * (1 - 1e-12))
    return x, h, ok
