r"""Parameter maps: a quantity of the long-time behaviour over a 1-D or 2-D grid.

A :class:`MapSpec` is a system, one or two :class:`Axis` (each over a parameter or a
variable's initial value, evenly or log-spaced) and a :class:`Quantity`. The grid is cut into
rectangular tiles; :meth:`MapSpec.evaluate` computes one tile in one batched call (every
grid point of the tile is a member of the batch: tensor parameters and a (B, D) initial
state), so the same tile gives the same numbers whichever process, worker or order computes
it, and a map computed tile by tile equals the map computed in one call. The scheduling
(Dask, the Zarr store, resuming) is in :mod:`explorer.sweeps`; this module is the maths.

Quantities (all in float64, the invariants need it):

``lyapunov``   the largest Lyapunov exponent of the orbit from each point (one tangent
               vector, :func:`~explorer.core.analysis.lyapunov.largest_exponent`: one
               ``simulate`` call, so generated C on the CPU), per time unit for flows and
               per iteration for maps; NaN where the orbit diverged.
``spectrum``   the full spectrum (Benettin/QR, :func:`~explorer.core.analysis.lyapunov.
               lyapunov_spectrum`, eager torch; one extra dimension ``exponent``).
``ky``         the Kaplan-Yorke dimension of the full spectrum.
``period``     the smallest p <= ``max_period`` with :math:`|x_{t+p} - x_t| \le` ``tol``
               :math:`\cdot (1 + \max|x|)` over the last 3 ``max_period`` samples: maps compare iterates,
               flows compare successive local maxima of the first variable (a period-n
               orbit has n distinct maxima, so flows report n, as in an orbit diagram).
               An orbit at rest (a flow's equilibrium) has period 1, like a map's fixed
               point; 0 where no period up to ``max_period`` fits (chaos,
               quasi-periodicity, a transient too short), NaN where the orbit diverged.
``mean:VAR``, ``max:VAR``  of a variable over up to 1,000 evenly spaced samples after the
               transient.
``divergence`` the time (iterations for maps) at which the orbit left the system's bound;
               +inf where it stayed bounded for the whole run.
``basin``      which attractor the start ends on: the index into ``attractors`` (found first
               by :func:`find_attractors` from starts across the grid), -1 where the orbit
               diverged, -2 where it ended on none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ParameterError
from ..simulate import simulate
from ..system import DynamicalSystem
from .lyapunov import kaplan_yorke_dimension, largest_exponent, lyapunov_spectrum
from .sections import local_maxima

#: the quantities a map can show (``mean`` and ``max`` take a variable: ``mean:x``)
QUANTITIES = ("lyapunov", "spectrum", "ky", "period", "mean", "max", "divergence", "basin")
#: basin labels that are not an attractor's index
DIVERGED, UNMATCHED = -1, -2
#: the largest grid side and number of points (a 4000 x 4000 map is 16 M points)
MAX_SIDE = 10_000
MAX_POINTS = 25_000_000


@dataclass(frozen=True)
class Axis:
    """One side of the grid: ``n`` values of ``name`` from ``lo`` to ``hi`` (``log``: geometric)."""

    name: str
    lo: float
    hi: float
    n: int
    log: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ParameterError("an axis needs a parameter or variable name")
        for v in (self.lo, self.hi):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ParameterError(f"axis {self.name}: bounds must be finite numbers, got {v!r}")
        if not self.lo < self.hi:
            raise ParameterError(f"axis {self.name}: need LO < HI, got {self.lo:g} and {self.hi:g}")
        if not isinstance(self.n, int) or not 1 <= self.n <= MAX_SIDE:
            raise ParameterError(f"axis {self.name}: the number of values must be an integer "
                                 f"from 1 to {MAX_SIDE:,}, got {self.n!r}")
        if self.log and self.lo <= 0:
            raise ParameterError(f"axis {self.name}: a log axis needs LO > 0, got {self.lo:g}")

    @classmethod
    def parse(cls, text: str, log: bool = False) -> "Axis":
        """``NAME=LO:HI:N``, as on the command line."""
        name, sep, rng = str(text).partition("=")
        parts = rng.split(":")
        if not sep or len(parts) != 3 or not name.strip():
            raise ParameterError(f"an axis is NAME=LO:HI:N, got {text!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
            n = float(parts[2])
        except ValueError:
            raise ParameterError(f"an axis is NAME=LO:HI:N with numbers, got {text!r}") from None
        if n != int(n):
            raise ParameterError(f"axis {name.strip()}: N must be an integer, got {parts[2]!r}")
        return cls(name.strip(), lo, hi, int(n), log)

    def values(self) -> np.ndarray:
        """The ``n`` grid values (float64)."""
        if self.n == 1:
            return np.array([self.lo if not self.log else math.sqrt(self.lo * self.hi)])
        if self.log:
            return np.geomspace(self.lo, self.hi, self.n)
        return np.linspace(self.lo, self.hi, self.n)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lo": self.lo, "hi": self.hi, "n": self.n, "log": self.log}


@dataclass(frozen=True)
class Quantity:
    """What each grid point computes: one of :data:`QUANTITIES`, with a variable for mean/max."""

    kind: str
    variable: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Quantity":
        kind, _, var = str(text).strip().partition(":")
        kind = kind.strip().lower()
        if kind not in QUANTITIES:
            raise ParameterError(f"unknown quantity {text!r}: use one of lyapunov, spectrum, ky, "
                                 "period, mean:VAR, max:VAR, divergence, basin")
        if kind in ("mean", "max"):
            if not var.strip():
                raise ParameterError(f"{kind} needs a variable, e.g. {kind}:x")
            return cls(kind, var.strip())
        if var:
            raise ParameterError(f"{kind} takes no variable, got {text!r}")
        return cls(kind)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.variable}" if self.variable else self.kind

    @property
    def output(self) -> str:
        """The name of the data variable in the stored map."""
        names = {"lyapunov": "lyapunov", "spectrum": "spectrum", "ky": "kaplan_yorke",
                 "period": "period", "divergence": "divergence_time", "basin": "basin"}
        return names.get(self.kind) or f"{self.kind}_{self.variable}"


@dataclass(frozen=True)
class Tile:
    """A rectangle of the grid: rows ``y0:y1`` and columns ``x0:x1``, and its place (iy, ix)
    among the tiles."""

    iy: int
    ix: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def size(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


@dataclass(frozen=True)
class MapSpec:
    """A parameter map: system, axes, quantity and the run lengths. Picklable (it travels to
    Dask workers); :meth:`settings` is its JSON record, stored with the results.

    ``steps``/``transient`` default per quantity and kind (see :meth:`run_lengths`); ``x0``
    is the start of every point (the system's default when None) except along an axis over a
    variable; ``tol``/``max_period`` are the period test's (see :attr:`period_tol`);
    ``attractors`` is the list the basin quantity labels against (each a (N, D) array of
    points on it; :func:`explorer.sweeps.run_map` finds them when it is empty).
    """

    system: DynamicalSystem
    x: Axis
    quantity: Quantity
    y: Axis | None = None
    steps: int | None = None
    transient: int | None = None
    dt: float | None = None
    x0: tuple[float, ...] | None = None
    tol: float | None = None
    max_period: int = 64
    attractors: tuple = field(default=(), compare=False)
    attractor_tol: float = 0.05

    def __post_init__(self):
        sys_ = self.system
        sys_.require_deterministic("Parameter maps")
        if len(sys_.batch_shape()) > 0:
            raise ParameterError("the system's parameters must be single values; the axes sweep them")
        axes = [self.x] + ([self.y] if self.y is not None else [])
        if self.y is not None and self.y.name == self.x.name:
            raise ParameterError(f"the two axes must differ, both are {self.x.name!r}")
        for ax in axes:
            self.axis_kind(ax)                                    # raises for unknown names
        q = self.quantity
        if q.variable is not None and q.variable not in sys_.variables:
            raise ParameterError(f"{q.label}: {sys_.name} has no variable {q.variable!r} "
                                 f"(its variables: {', '.join(sys_.variables)})")
        ny, nx = self.shape2d
        if ny * nx > MAX_POINTS:
            raise ParameterError(f"{ny * nx:,} grid points exceed the limit of {MAX_POINTS:,}")
        steps, transient = self.run_lengths()
        if steps < 1 or transient < 0:
            raise ParameterError(f"need steps >= 1 and transient >= 0, got {steps} and {transient}")
        if not (0 < self.period_tol < 1) or not 1 <= int(self.max_period) <= 4096:
            raise ParameterError("need 0 < tol < 1 and 1 <= max_period <= 4096")
        if self.x0 is not None:
            x0 = torch.as_tensor(self.x0, dtype=torch.float64)
            sys_.check_state(x0)
            if x0.ndim != 1 or not torch.isfinite(x0).all():
                raise ParameterError("x0 must be one finite state")
        sys_.time_step(self.dt)

    @property
    def period_tol(self) -> float:
        """The period test's relative tolerance: ``tol``, by default 1e-6 for maps (iterates are
        exact) and 1e-3 for flows (maxima come from sampled orbits)."""
        return float(self.tol if self.tol is not None else (1e-6 if self.system.is_map else 1e-3))

    # ------------------------------------------------------------------ grid
    @property
    def axes(self) -> list[Axis]:
        return [self.x] + ([self.y] if self.y is not None else [])

    @property
    def shape2d(self) -> tuple[int, int]:
        """(rows, columns): the y axis runs down the rows (1 row for a 1-D map)."""
        return (self.y.n if self.y is not None else 1), self.x.n

    @property
    def shape(self) -> tuple[int, ...]:
        """The map's shape: (nx,) for 1-D, (ny, nx) for 2-D (plus the exponents of a spectrum)."""
        base = self.shape2d if self.y is not None else (self.x.n,)
        return base + self.extra_shape

    @property
    def extra_shape(self) -> tuple[int, ...]:
        return (self.system.dim,) if self.quantity.kind == "spectrum" else ()

    @property
    def n_points(self) -> int:
        ny, nx = self.shape2d
        return ny * nx

    def axis_kind(self, ax: Axis) -> str:
        """``"parameter"`` or ``"state"`` (an initial value of a variable)."""
        names = {p.name: p for p in self.system.parameters}
        if ax.name in names:
            spec = names[ax.name]
            if spec.integer:
                raise ParameterError(f"{ax.name!r} is structural (an integer); map a continuous parameter")
            if ax.lo < spec.low or ax.hi > spec.high:
                raise ParameterError(f"axis {ax.name}: [{ax.lo:g}, {ax.hi:g}] is outside its allowed "
                                     f"range [{spec.low:g}, {spec.high:g}]")
            return "parameter"
        if ax.name in self.system.variables:
            return "state"
        raise ParameterError(f"{self.system.name} has no parameter or variable {ax.name!r} "
                             f"(parameters: {', '.join(names) or 'none'}; "
                             f"variables: {', '.join(self.system.variables)})")

    def tiles(self, chunk: int) -> list[Tile]:
        """The grid cut into rectangles of about ``chunk`` points: whole rows when a row fits,
        else pieces of one row. Every tile has the same shape except at the edges."""
        tw, th = self.tile_shape(chunk)
        ny, nx = self.shape2d
        return [Tile(iy, ix, y0, min(y0 + th, ny), x0, min(x0 + tw, nx))
                for iy, y0 in enumerate(range(0, ny, th))
                for ix, x0 in enumerate(range(0, nx, tw))]

    def tile_shape(self, chunk: int) -> tuple[int, int]:
        """(columns, rows) of a tile of about ``chunk`` points."""
        chunk = int(chunk)
        if chunk < 1:
            raise ParameterError(f"the chunk size must be at least 1 point, got {chunk}")
        ny, nx = self.shape2d
        tw = min(nx, chunk)
        th = max(1, min(ny, chunk // tw))
        return tw, th

    def run_lengths(self) -> tuple[int, int]:
        """(steps, transient) with the quantity's defaults filled in."""
        is_map = self.system.is_map
        q = self.quantity.kind
        if q in ("lyapunov", "spectrum", "ky"):
            d_steps, d_tr = (4000 if is_map else 2500), 1000
        elif q == "divergence":
            d_steps, d_tr = (1000 if is_map else 10_000), 0
        elif q == "period" and not is_map:
            d_steps, d_tr = 20_000, 20_000
        else:
            d_steps, d_tr = (2000 if is_map else 10_000), (1000 if is_map else 5000)
        return (int(self.steps if self.steps is not None else d_steps),
                int(self.transient if self.transient is not None else d_tr))

    # ------------------------------------------------------------------ records
    def settings(self) -> dict[str, Any]:
        """The JSON record that identifies this map (a store holding another is not resumed)."""
        steps, transient = self.run_lengths()
        s = self.system
        return {"system": s.name, "kind": s.kind, "params": {k: float(v) for k, v in s.params.items()},
                "variables": list(s.variables), "axes": [a.as_dict() for a in self.axes],
                "axis_kinds": [self.axis_kind(a) for a in self.axes],
                "quantity": self.quantity.label, "steps": steps, "transient": transient,
                "dt": s.time_step(self.dt), "x0": list(self.start()),
                "tol": self.period_tol, "max_period": int(self.max_period),
                "attractors": [np.asarray(a).tolist() for a in self.attractors],
                "attractor_tol": self.attractor_tol}

    def units(self) -> str:
        q = self.quantity.kind
        if q in ("lyapunov", "spectrum"):
            return "1/" + ("iteration" if self.system.is_map else "time unit")
        if q == "divergence":
            return "iterations" if self.system.is_map else "time units"
        if q == "period":
            return "iterations" if self.system.is_map else "maxima per period"
        return ""

    def start(self) -> tuple[float, ...]:
        return tuple(float(v) for v in (self.x0 if self.x0 is not None else self.system.default_x0))

    # ------------------------------------------------------------------ evaluation
    def points(self, rows: np.ndarray, cols: np.ndarray) -> tuple[DynamicalSystem, torch.Tensor]:
        """The grid points at row indices ``rows`` x column indices ``cols`` as a swept system
        (tensor parameters) and (B, D) initial states, row-major (y slow, x fast)."""
        xv = torch.as_tensor(self.x.values()[cols])
        yv = (torch.as_tensor(self.y.values()[rows]) if self.y is not None
              else torch.zeros(1, dtype=torch.float64))
        gy, gx = torch.meshgrid(yv, xv, indexing="ij")
        cols_ = {self.x.name: gx.reshape(-1)}
        if self.y is not None:
            cols_[self.y.name] = gy.reshape(-1)
        B = gx.numel()
        x0 = torch.tensor(self.start(), dtype=torch.float64).expand(B, -1).clone()
        params: dict[str, torch.Tensor] = {}
        for ax in self.axes:
            if self.axis_kind(ax) == "state":
                x0[:, self.system.variables.index(ax.name)] = cols_[ax.name]
            else:
                params[ax.name] = cols_[ax.name]
        return self.system.with_params(**params), x0

    def tile_points(self, tile: Tile) -> tuple[DynamicalSystem, torch.Tensor]:
        return self.points(np.arange(tile.y0, tile.y1), np.arange(tile.x0, tile.x1))

    def evaluate(self, tile: Tile, device=None) -> np.ndarray:
        """The quantity at every point of ``tile``: an array of shape (rows, columns[, D])."""
        system, x0 = self.tile_points(tile)
        steps, transient = self.run_lengths()
        q = self.quantity.kind
        if q == "lyapunov":
            out = largest_exponent(system, x0, steps=steps, transient=transient, dt=self.dt,
                                   device=device).numpy()
        elif q in ("spectrum", "ky"):
            res = lyapunov_spectrum(system, x0, steps=steps, transient=transient, dt=self.dt,
                                    device=device)
            per = res.per_member.numpy()                                # (B, D), NaN diverged
            out = per if q == "spectrum" else np.array([kaplan_yorke_dimension(r) for r in per])
        elif q == "divergence":
            tr = simulate(system, x0, steps=steps, transient=transient, dt=self.dt,
                          save_every=steps, device=device)
            at = tr.diverged_at.cpu().numpy()
            out = np.where(np.isnan(at), np.inf, at)
        elif q in ("mean", "max"):
            every = max(1, steps // 1000)
            tr = simulate(system, x0, steps=steps, transient=transient, dt=self.dt,
                          save_every=every, device=device)
            xs = tr.x[..., system.variables.index(self.quantity.variable)]     # (T, B)
            vals = xs.mean(0) if q == "mean" else xs.max(0).values
            out = torch.where(tr.diverged.to(vals.device), torch.nan, vals).cpu().numpy()
        elif q == "period":
            out = self._period(system, x0, steps, transient, device)
        else:
            out = self._basin(system, x0, steps, transient, device)
        rows, cols = tile.y1 - tile.y0, tile.x1 - tile.x0
        return np.asarray(out, dtype=np.float64).reshape((rows, cols) + self.extra_shape)

    def _period(self, system, x0, steps, transient, device) -> np.ndarray:
        P = int(self.max_period)
        tr = simulate(system, x0, steps=steps, transient=transient, dt=self.dt, device=device)
        if system.is_map:
            return sequence_period(tr.x, P, self.period_tol, tr.diverged.cpu().numpy())
        seq = local_maxima(tr.x[..., 0], 3 * P).T.unsqueeze(-1)          # (3P, B, 1), NaN-padded
        out = sequence_period(seq, P, self.period_tol, tr.diverged.cpu().numpy())
        # an orbit at rest (an equilibrium) is period 1, as a map's fixed point
        tail = tr.x[-max(2, tr.x.shape[0] // 10):]
        rest = ((tail.amax(0) - tail.amin(0)).amax(-1)
                <= self.period_tol * (1.0 + tail.abs().amax(dim=(0, 2)))).cpu().numpy()
        out[rest & ~np.isnan(out)] = 1
        return out

    def _basin(self, system, x0, steps, transient, device) -> np.ndarray:
        if not self.attractors:
            raise ParameterError("a basin map needs the attractors to label against "
                                 "(find them with find_attractors; run_map does)")
        seg, diverged = final_segments(system, x0, steps, transient, self.dt, device)
        return label_segments(seg, self.attractors, self.attractor_tol, diverged)


#: samples of the final segment that stands for where an orbit ended (basins)
SEGMENT = 400


def final_segments(system, x0, steps, transient, dt, device=None) -> tuple[torch.Tensor, np.ndarray]:
    """The last :data:`SEGMENT` samples (every step) of ``transient + steps`` steps: (S, B, D)
    float64 on the CPU, and the diverged flags (B,)."""
    n = min(SEGMENT, steps)
    tr = simulate(system, x0, steps=n - 1, transient=transient + steps - n + 1, dt=dt, device=device)
    return tr.x.cpu().to(torch.float64), tr.diverged.cpu().numpy()


def sequence_period(seq: torch.Tensor, max_period: int, tol: float, diverged: np.ndarray) -> np.ndarray:
    r"""The smallest p <= ``max_period`` with :math:`|s_{t+p} - s_t| \le tol\,(1 + \max|s|)` for
    every pair of the last :math:`3\,p_{max}` samples of ``seq`` (T, B, D) where both are
    present (NaN marks a missing sample), and at least :math:`\max(2p, 4)` such pairs; 0 where
    none fits; NaN for ``diverged`` members."""
    W = min(seq.shape[0], 3 * max_period)
    s = seq[-W:].to(torch.float64)
    B = s.shape[1]
    scale = 1.0 + torch.nan_to_num(s.abs(), nan=0.0).amax(dim=(0, 2))    # (B,)
    out = torch.zeros(B, dtype=torch.float64)
    found = torch.zeros(B, dtype=torch.bool, device=s.device)
    for p in range(1, min(max_period, W - 1) + 1):
        d = (s[p:] - s[:-p]).abs().amax(-1)                             # (W - p, B)
        pairs = (~torch.isnan(d)).sum(0)
        close = torch.nan_to_num(d, nan=0.0).amax(0) <= tol * scale
        new = close & (pairs >= max(2 * p, 4)) & ~found
        out[new.cpu()] = p
        found |= new
    res = out.numpy()
    res[diverged] = np.nan
    return res


def label_segments(seg: torch.Tensor, attractors: Sequence, tol: float,
                   diverged: np.ndarray) -> np.ndarray:
    """Which attractor each member's final segment (T, B, D) lies on: the index of the one
    whose points are nearest (median over the segment of the distance to the nearest point),
    if that is within ``tol`` times the attractors' extent; -2 for none, -1 if diverged."""
    seg = seg.to(torch.float64)
    B = seg.shape[1]
    out = np.full(B, float(UNMATCHED))
    if not len(attractors):
        out[diverged] = DIVERGED
        return out
    clouds = [torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in attractors]
    allpts = torch.cat(clouds)
    extent = max(float((allpts.amax(0) - allpts.amin(0)).norm()), 1.0 + float(allpts.abs().max()))
    pts = seg.transpose(0, 1)                                           # (B, T, D)
    d = torch.stack([torch.cdist(pts, c.expand(B, -1, -1)).amin(-1).nanmedian(-1).values
                     for c in clouds], -1)                              # (B, A)
    d = torch.nan_to_num(d, nan=math.inf)
    best = d.argmin(-1)
    near = d.gather(1, best.unsqueeze(1)).squeeze(1) <= tol * extent
    out[near.numpy()] = best[near].numpy()
    out[diverged] = DIVERGED
    return out


def find_attractors(spec: MapSpec, n_starts: int = 64) -> tuple[np.ndarray, ...]:
    """The distinct attractors reached from about ``n_starts`` grid points spread evenly over
    ``spec``'s grid: each final segment joins the first attractor it lies on (as
    :func:`label_segments` decides) or starts a new one. Returns one (S, D) array of points
    per attractor (float64), in the order found."""
    ny, nx = spec.shape2d
    side = max(1, math.isqrt(max(1, n_starts)))
    rows = np.unique(np.linspace(0, ny - 1, min(ny, side)).round().astype(int))
    cols = np.unique(np.linspace(0, nx - 1, min(nx, max(side, n_starts // len(rows)))).round().astype(int))
    system, x0 = spec.points(rows, cols)
    steps, transient = spec.run_lengths()
    seg, diverged = final_segments(system, x0, steps, transient, spec.dt)
    found: list[np.ndarray] = []
    for b in range(seg.shape[1]):
        if diverged[b]:
            continue
        if found and label_segments(seg[:, b:b + 1], found, spec.attractor_tol, np.zeros(1, bool))[0] >= 0:
            continue
        found.append(seg[:, b].numpy())
    return tuple(found)
