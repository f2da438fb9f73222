r"""Poincaré sections and orbit (bifurcation) diagrams.

A Poincaré section records where a trajectory crosses the plane :math:`x_i = c` in one
direction. Between two recorded samples the crossing is located on the cubic Hermite
interpolant built from the states and the vector field at both ends (error
:math:`O(h^4)`, matching RK4), not on the straight chord.

An orbit diagram sweeps one parameter over a range in a single batched run: maps record
the last iterates of one coordinate; flows record the local maxima of one coordinate (or
the crossings of a section plane). Float64 by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import torch

from ..errors import ParameterError
from ..limits import check_size
from ..simulate import Trajectory, simulate
from ..system import DynamicalSystem


@dataclass(frozen=True)
class Section:
    """Crossings of a trajectory batch with a plane.

    Attributes:
        points: (N, D) states at the crossings.
        times: (N,) crossing times.
        member: (N,) index of the batch member each crossing belongs to.
        axis, value, direction: the plane :math:`x_{axis} = value`, crossed upward (+1),
            downward (-1) or both (0).
    """

    points: torch.Tensor
    times: torch.Tensor
    member: torch.Tensor
    axis: int
    value: float
    direction: int


def _hermite(x0, x1, f0, f1, h, s):
    """Cubic Hermite interpolant between (x0, f0) and (x1, f1) at fraction ``s`` of step h."""
    s = s.unsqueeze(-1)
    h00 = 2 * s**3 - 3 * s**2 + 1
    h10 = s**3 - 2 * s**2 + s
    h01 = -2 * s**3 + 3 * s**2
    h11 = s**3 - s**2
    return h00 * x0 + h10 * h * f0 + h01 * x1 + h11 * h * f1


def poincare_section(system: DynamicalSystem, traj: Trajectory, axis: int | str = 2,
                     value: float | None = None, *, direction: int = 1) -> Section:
    """Crossings of ``traj`` (T, B, D) with the plane ``x[axis] = value``.

    Args:
        system: the flow that produced ``traj`` (its vector field refines the crossings).
        traj: a :class:`Trajectory` of that flow.
        axis: variable index or name; ``value``: plane position (default: the mean of that
            coordinate over the trajectory).
        direction: +1 upward crossings, -1 downward, 0 both.
    """
    system.require_deterministic("Poincaré sections")
    if system.is_map:
        raise ParameterError("Poincaré sections are for flows; a map's iterates are already discrete")
    if isinstance(axis, str):
        if axis not in system.variables:
            raise ParameterError(f"unknown variable {axis!r}; variables: {', '.join(system.variables)}")
        axis = system.variables.index(axis)
    if not 0 <= axis < system.dim:
        raise ParameterError(f"axis must be in 0..{system.dim - 1}, got {axis}")
    if direction not in (-1, 0, 1):
        raise ParameterError(f"direction must be -1, 0 or +1, got {direction}")
    x = traj.x                                                        # (T, B, D)
    if value is None:
        value = float(torch.nanmean(x[..., axis]))
    c = x[..., axis] - value                                          # (T, B)
    a, b = c[:-1], c[1:]
    up = (a < 0) & (b >= 0)
    down = (a > 0) & (b <= 0)
    hit = up if direction == 1 else down if direction == -1 else (up | down)
    ti, bi = torch.nonzero(hit, as_tuple=True)                        # crossing step, member
    x0, x1 = x[ti, bi], x[ti + 1, bi]                                 # (N, D)
    h = float(traj.t[1] - traj.t[0]) if len(traj.t) > 1 else 1.0
    p = system.bind(x0) if not system.batch_shape() else {
        k: (v[bi] if isinstance(v, torch.Tensor) and v.ndim else v) for k, v in system.bind(x0).items()}
    f0, f1 = system.rhs(x0, p), system.rhs(x1, p)
    # locate the root of the Hermite interpolant's axis component: bisection then Newton-free
    lo = torch.zeros(len(ti), dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    ca = a[ti, bi]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        cm = _hermite(x0, x1, f0, f1, h, mid)[:, axis] - value
        same = torch.sign(cm) == torch.sign(ca)
        lo = torch.where(same, mid, lo)
        hi = torch.where(same, hi, mid)
    s = 0.5 * (lo + hi)
    pts = _hermite(x0, x1, f0, f1, h, s)
    pts[:, axis] = value
    times = traj.t[ti].to(x.dtype) + s * h
    order = torch.argsort(bi * (times.max() + 1 if len(times) else 1) + times) if len(times) else ti
    return Section(points=pts[order], times=times[order], member=bi[order], axis=axis,
                   value=float(value), direction=direction)


@dataclass(frozen=True)
class OrbitDiagram:
    """Orbit (bifurcation) diagram: for each parameter value, the recorded points.

    Attributes:
        param: the swept parameter's name; ``values``: (P,) its values.
        points: (P, N) the recorded coordinate, NaN-padded (maps: last iterates; flows: local
            maxima or section crossings); ``coordinate``: which variable.
        diverged: (P,) parameter values whose orbit diverged.
    """

    param: str
    values: torch.Tensor
    points: torch.Tensor
    coordinate: int
    diverged: torch.Tensor
    method: str

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(parameter value, point) pairs without the NaN padding, for scatter plots."""
        v = self.values.unsqueeze(1).expand_as(self.points)
        keep = ~torch.isnan(self.points)
        return v[keep], self.points[keep]


def orbit_diagram(system: DynamicalSystem, param: str, low: float, high: float, *,
                  n_values: int = 400, coordinate: int | str = 0, transient: int | None = None,
                  n_points: int = 200, dt: float | None = None, method: str = "auto",
                  section_axis: int | None = None, section_value: float | None = None,
                  x0=None, dtype: torch.dtype = torch.float64, device=None,
                  progress=None, stop=None) -> OrbitDiagram:
    """Orbit diagram of ``system`` over ``param`` in ``[low, high]``, in one batched run.

    Args:
        param: parameter to sweep (bounds are checked); ``n_values`` values, evenly spaced.
        coordinate: variable recorded (index or name).
        transient: steps discarded (default 1,000 for maps; 50 periods for flows).
        n_points: maps: iterates recorded per value; flows: at most this many maxima/crossings.
        method: ``"iterates"`` (maps), ``"maxima"`` (flows: local maxima of the coordinate),
            ``"section"`` (flows: the coordinate at crossings of ``section_axis`` =
            ``section_value``); ``"auto"`` picks iterates for maps, maxima for flows.
    """
    system.require_deterministic("Orbit diagrams")
    spec = system.param_spec(param)
    if spec.integer:
        raise ParameterError(f"{param!r} is structural (an integer); sweep a continuous parameter")
    if not (spec.low <= low < high <= spec.high):
        raise ParameterError(f"sweep range [{low:g}, {high:g}] must be increasing and inside "
                             f"{param}'s allowed range [{spec.low:g}, {spec.high:g}]")
    if isinstance(coordinate, str):
        if coordinate not in system.variables:
            raise ParameterError(f"unknown variable {coordinate!r}")
        coordinate = system.variables.index(coordinate)
    if n_values < 1 or n_points < 1:
        raise ParameterError("n_values and n_points must be positive")
    values = torch.linspace(low, high, n_values, dtype=torch.float64)
    swept = system.with_params(**{param: values})
    if method == "auto":
        method = "iterates" if system.is_map else "maxima"
    if system.is_map:
        if method != "iterates":
            raise ParameterError("maps use method 'iterates'")
        transient = 1000 if transient is None else transient
        check_size(batch=n_values, steps=transient + n_points, saved=n_points, dim=system.dim,
                   itemsize=8, what="orbit diagram")
        tr = simulate(swept, x0, steps=n_points - 1, transient=transient, dtype=dtype,
                      device=device, progress=progress, stop=stop)
        pts = tr.x[..., coordinate].T.contiguous()                   # (P, N)
        return OrbitDiagram(param, values, pts.cpu(), coordinate, tr.diverged.cpu(), method)
    # flows: simulate long enough for n_points oscillations
    dt = float(system.default_dt if dt is None else dt)
    period = system.period or 100 * dt
    steps = int(math.ceil(1.2 * n_points * period / dt)) + 10
    transient = int(math.ceil(50 * period / dt)) if transient is None else transient
    tr = simulate(swept, x0, steps=steps, transient=transient, dt=dt, dtype=dtype,
                  device=device, progress=progress, stop=stop)
    xs = tr.x                                                           # (T, P, D)
    if method == "maxima":
        pts = local_maxima(xs[..., coordinate], n_points)
    elif method == "section":
        if section_axis is None:
            raise ParameterError("method 'section' needs section_axis (and optionally section_value)")
        sec = poincare_section(swept, tr, section_axis, section_value, direction=1)
        pts = _padded([sec.points[sec.member == j, coordinate] for j in range(xs.shape[1])],
                      n_points, dtype)
    else:
        raise ParameterError(f"unknown method {method!r}: use auto, iterates, maxima or section")
    return OrbitDiagram(param, values, pts, coordinate, tr.diverged.cpu(), method)


def _padded(hits: list[torch.Tensor], n_points: int, dtype: torch.dtype) -> torch.Tensor:
    """The last ``n_points`` entries of each member's hits, as a NaN-padded (B, n_points) tensor."""
    pts = torch.full((len(hits), n_points), float("nan"), dtype=dtype)
    for j, h in enumerate(hits):
        h = h[-n_points:]
        pts[j, : len(h)] = h.cpu()
    return pts


def local_maxima(c: torch.Tensor, n_points: int) -> torch.Tensor:
    """The last ``n_points`` local maxima of each column of ``c`` (T, B), NaN-padded (B, n_points),
    in time order (a flow's analogue of a map's iterates: period-n orbits have n distinct maxima).

    Each maximum is the vertex of the parabola through the peak sample and its neighbours, so
    its error is of third order in the sampling step rather than second (successive maxima of
    a periodic orbit then agree to ~1e-5 relative at the default step, not ~1e-2)."""
    c0, c1, c2 = c[:-2], c[1:-1], c[2:]
    peak = (c1 > c0) & (c1 >= c2)
    curv = c0 - 2.0 * c1 + c2                                 # < 0 at a strict maximum
    vals = torch.where(curv < 0, c1 - (c2 - c0) ** 2 / (8.0 * curv.clamp(max=-1e-300)), c1)
    return _padded([vals[peak[:, j], j] for j in range(c.shape[1])], n_points, c.dtype)
