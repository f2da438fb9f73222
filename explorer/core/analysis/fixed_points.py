r"""Fixed points with their Jacobian eigenvalues and type.

Flows: zeros of :math:`f(x)`; maps: solutions of :math:`F(x) = x`. Found by damped Newton
iterations from many starting points at once (the default initial state, samples of a
short trajectory, and random points in a box around it), then de-duplicated. Stability
from the eigenvalues of the Jacobian: real parts against 0 (flows) or moduli against 1
(maps). Float64 throughout. For a stochastic system (SDE) these are the fixed points of
its drift (the deterministic skeleton), classified as for a flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError
from ..simulate import simulate
from ..system import DynamicalSystem


def _discrete(kind) -> bool:
    """Whether ``kind`` (a system, a system class, or the label ``"map"``/``"flow"``/``"sde"``)
    is discrete in time."""
    if isinstance(kind, str):
        return kind == "map"
    return not kind.continuous_time


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point, the eigenvalues of the Jacobian there, and its type."""

    x: torch.Tensor              # (D,)
    eigenvalues: torch.Tensor    # (D,) complex
    type: str
    stable: bool

    def as_dict(self) -> dict:
        return {"x": self.x.tolist(),
                "eigenvalues": [[float(e.real), float(e.imag)] for e in self.eigenvalues],
                "type": self.type, "stable": self.stable}


def classify(eigenvalues: torch.Tensor, kind, tol: float = 1e-9) -> tuple[str, bool]:
    """Name the type of a fixed point from its eigenvalues.

    ``kind``: the system (or its class), or its kind label (``"flow"``, ``"map"``, ``"sde"``).
    Flows (and SDE drifts): stable/unstable node or focus, saddle, saddle-focus, or
    non-hyperbolic (some real part within ``tol`` of 0, e.g. a centre). Maps: the same names
    with the moduli compared to 1 (sink = stable, source = unstable).
    """
    ev = eigenvalues.to(torch.complex128)
    discrete = _discrete(kind)
    if discrete:
        growth = ev.abs() - 1.0
    else:
        growth = ev.real
    complex_pair = bool((ev.imag.abs() > tol).any())
    if bool((growth.abs() <= tol).any()):
        return ("centre" if complex_pair and not discrete and bool((growth.abs() <= tol).all())
                else "non-hyperbolic"), False
    n_unstable = int((growth > 0).sum())
    if n_unstable == 0:
        return ("stable focus" if complex_pair else "stable node"), True
    if n_unstable == ev.numel():
        return ("unstable focus" if complex_pair else "unstable node"), False
    return ("saddle-focus" if complex_pair else "saddle"), False


def fixed_points(system: DynamicalSystem, *, n_starts: int = 512, box: tuple | None = None,
                 generator: torch.Generator | None = None, tol: float = 1e-10,
                 max_iter: int = 60) -> list[FixedPoint]:
    """Fixed points of a flow (:math:`f(x) = 0`), a map (:math:`F(x) = x`) or an SDE's
    drift (:math:`f(x) = 0`).

    Args:
        n_starts: number of Newton starting points.
        box: ``(low, high)`` arrays (D,) bounding the random starts; default: the range of a
            short trajectory from the default state, enlarged by half its width.
        generator: RNG of the random starts.
        tol: residual below which a point counts as converged.

    Returns:
        Fixed points sorted by their first coordinate, each with eigenvalues and type.
    """
    if len(system.batch_shape()):
        raise ParameterError("fixed points need scalar parameters (not a sweep)")
    if system.stochastic:
        system = system.drift_system()          # the deterministic skeleton
    D = system.dim
    x0 = system.initial_state(torch.float64)
    if box is None:
        tr = simulate(system, x0, steps=500 if system.is_map else 2000, dtype=torch.float64,
                      device="cpu")
        xs = tr.x[:, 0]
        xs = xs[torch.isfinite(xs).all(-1)]
        lo, hi = xs.min(0).values, xs.max(0).values
        width = (hi - lo).clamp_min(1.0)
        lo, hi = lo - 0.5 * width, hi + 0.5 * width
        samples = xs[torch.linspace(0, len(xs) - 1, min(64, len(xs))).long()]
    else:
        lo = torch.as_tensor(box[0], dtype=torch.float64)
        hi = torch.as_tensor(box[1], dtype=torch.float64)
        samples = x0.unsqueeze(0)
    u = torch.rand(n_starts, D, generator=generator, dtype=torch.float64)
    starts = torch.cat([x0.unsqueeze(0), samples, torch.zeros(1, D, dtype=torch.float64),
                        lo + (hi - lo) * u], 0)                       # (N, D)
    x = starts
    is_map = system.is_map
    p = system.bind(x)

    def residual(z):
        return system.velocity(z, p)             # f(z), or F(z) - z for a map

    for _ in range(max_iter):
        g = residual(x)
        J = system.velocity_jacobian(x, p)
        try:
            step = torch.linalg.lstsq(J, -g.unsqueeze(-1)).solution.squeeze(-1)
        except RuntimeError:
            break
        # damping: halve a step whose residual grows (never more than 10 halvings)
        lam = torch.ones(len(x), 1, dtype=torch.float64)
        gn = g.norm(dim=-1, keepdim=True)
        for _ in range(10):
            xn = x + lam * step
            worse = ~(residual(xn).norm(dim=-1, keepdim=True) < gn * (1 - 1e-4 * lam))
            worse &= torch.isfinite(gn)
            if not bool(worse.any()):
                break
            lam = torch.where(worse, lam * 0.5, lam)
        x = torch.where(torch.isfinite(xn), xn, x)
    res = residual(x).norm(dim=-1)
    scale = 1.0 + x.abs().amax(-1)
    good = torch.isfinite(res) & (res <= tol * scale) & (x.abs() <= system.bound).all(-1)
    found: list[torch.Tensor] = []
    for z in x[good]:
        if all((z - f).norm() > 1e-6 * (1 + z.norm()) for f in found):
            found.append(z)
    found.sort(key=lambda z: tuple(z.tolist()))
    out = []
    for z in found:
        J = system.jac(z)
        ev = torch.linalg.eigvals(J)
        ev = ev[torch.argsort(-ev.real if not is_map else -ev.abs())]
        kind, stable = classify(ev, system)
        out.append(FixedPoint(z, ev, kind, stable))
    return out
