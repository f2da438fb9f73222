r"""Stationary densities, probability currents and entropy production of SDEs.

For an Itô SDE :math:`dX = f(X)\,dt + g(X)\,dW` the generator's diffusion matrix is
:math:`D(x) = g g^\top / 2` (diagonal noise: :math:`D = \mathrm{diag}(g^2)/2`); ``k_B = 1``.
The Fokker–Planck current is :math:`J = f p - \nabla\cdot(D p)` (row-wise divergence
:math:`(\nabla\cdot D)_i = \sum_j \partial_j D_{ij}`); in the stationary state the *mean local
velocity* :math:`v = J/p = f - \nabla\cdot D - D\nabla\log p` is the irreversible part of the
drift and the entropy-production rate is

.. math:: e_p = \int v^\top D^{-1} v\, p\, dx = \int F^\top J\, dx,
   \qquad F = D^{-1}(f - \nabla\cdot D)\ \text{(thermodynamic force)} .

It vanishes exactly for detailed balance (a gradient drift with matching noise). Two
estimators from simulated (or observed) stationary trajectories are provided:

* ``"stratonovich_midpoint"`` (needs the drift and ``D``; no density estimate, hence
  "model-free" in the sense of free of any model of ``p``):
  :math:`e_p = \lim \frac1t \sum_n F(\bar x_n)^\top \Delta x_n`, the Stratonovich time
  average of :math:`F\circ dX` with :math:`\bar x_n = (x_n + x_{n+1})/2`. Its error is
  :math:`O(\Delta t)` and its variance per unit time about :math:`2\langle F^\top D F\rangle`.
* ``"grid_current"`` (needs only the data and ``D``): the mean local velocity is estimated on
  a grid as :math:`\hat v = \langle (x_{n+1} - x_{n-1}) / (2\Delta t) \mid x_n \in
  \text{cell}\rangle` (the average of the forward and backward drifts) and
  :math:`e_p \approx \sum_\text{cells} \hat v^\top D^{-1} \hat v\, p\, \Delta V`. The naive
  square of a noisy cell mean is biased upwards by its variance (about ``dim / (N dt)`` per
  cell), so the square is replaced by the cross products of velocity sums of *independent*
  batches, :math:`(|\sum_k S_k|^2 - \sum_k |S_k|^2) / (n^2 - \sum_k n_k^2)`, which is unbiased.
  Grid resolution biases it slightly low. For ``D <= 3`` dimensions.

Error bars come from ``n_batches`` independent groups of trajectories (or, with fewer
trajectories than groups, contiguous blocks of time): the standard error of the per-batch
rates (midpoint) or the jackknife over batches (grid). For linear SDEs
:func:`linear_reference` gives the exact covariance and rate (a Lyapunov equation).

All estimates are computed in float64 whatever the input dtype. Arrays may be torch tensors
or numpy arrays, time-major ``(T, B, D)`` (or ``(T, D)`` for one trajectory); rows with NaN
(diverged members) are dropped. Pure numerics: no UI imports.

References:
    U. Seifert, Stochastic thermodynamics, fluctuation theorems and molecular machines,
    Rep. Prog. Phys. 75, 126001 (2012) (entropy production of Langevin dynamics).
    D.-Q. Jiang, M. Qian, M.-P. Qian, Mathematical Theory of Nonequilibrium Steady States,
    Lecture Notes in Mathematics 1833 (Springer, 2004) (mean local velocity, e_p formula).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ParameterError, ShapeError, SizeLimitError
from ..system import SDE, DynamicalSystem, UnsupportedKindError

F64 = torch.float64

#: the largest grid (number of cells) the grid estimators build
MAX_GRID_CELLS = 4_000_000
#: samples per vectorised chunk (bounds the memory of drift/diffusion evaluations)
CHUNK_SAMPLES = 1_000_000
#: KDE: at most this many points are used (a regular subsample of the data)
KDE_MAX_POINTS = 20_000

METHOD_MIDPOINT = "stratonovich_midpoint"
METHOD_GRID = "grid_current"


# ====================================================================== results
@dataclass(frozen=True)
class Density:
    """A stationary density on a regular grid.

    Attributes:
        centres: cell centres per axis, in the order of ``dims`` (numpy arrays).
        p: the density, normalised on the grid (``p.sum() * cell_volume == 1``); shape
            ``(nx,)`` in 1D, ``(ny, nx)`` in 2D (``p[iy, ix]``, image layout), ``(nz, ny, nx)``
            in 3D.
        bounds: ``(lo, hi)`` per axis (order of ``dims``).
        counts: histogram counts, same layout as ``p``.
        n_samples: valid (non-NaN) samples; ``dims``: the state components on the axes;
        method: ``"hist"`` or ``"kde"``.
    """

    centres: tuple[np.ndarray, ...]
    p: np.ndarray
    bounds: tuple[tuple[float, float], ...]
    counts: np.ndarray
    n_samples: int
    dims: tuple[int, ...]
    method: str = "hist"

    @property
    def cell_volume(self) -> float:
        return float(np.prod([(hi - lo) / len(c) for (lo, hi), c in zip(self.bounds, self.centres)]))


@dataclass(frozen=True)
class ProbabilityCurrent:
    """The stationary probability current on a grid (layout as :class:`Density`).

    Attributes:
        v: mean local velocity ``J / p``, shape ``p.shape + (d,)`` (components in ``dims``
            order); NaN in empty cells.
        J: the current ``p v`` (0 in empty cells).
        p: the density normalised on the grid; ``counts`` the samples per cell.
        dt: the sample spacing used.
    For a projection (``dims`` a subset) these are the marginal current and
    ``E[v | x_dims]``.
    """

    centres: tuple[np.ndarray, ...]
    v: np.ndarray
    J: np.ndarray
    p: np.ndarray
    counts: np.ndarray
    bounds: tuple[tuple[float, float], ...]
    dims: tuple[int, ...]
    dt: float


@dataclass(frozen=True)
class EntropyEstimate:
    """An entropy-production rate (per unit time, ``k_B = 1``) with its standard error.

    ``per_batch``: the rates of the independent batches (midpoint) or the jackknife
    pseudo-values (grid); ``stderr = std(per_batch) / sqrt(n_batches)``. ``n``: the number
    of increments (midpoint) or samples (grid) used.
    """

    rate: float
    stderr: float
    method: str
    per_batch: np.ndarray
    n: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"entropy_production_rate": _finite(self.rate), "stderr": _finite(self.stderr),
                "method": self.method, "n": self.n,
                "per_batch": [_finite(v) for v in self.per_batch]}


@dataclass(frozen=True)
class EntropyDensity:
    """The local entropy-production density ``sigma = v^T D^-1 v p`` on a grid (layout as
    :class:`Density`), estimated without bias from independent batches (cells may come out
    slightly negative by noise). ``rate = sum(sigma) * cell volume`` (the grid estimate of
    ``e_p``, with its jackknife ``stderr``). For a projection (``dims`` a subset) this is
    the coarse-grained density, whose integral is a lower bound on ``e_p``."""

    centres: tuple[np.ndarray, ...]
    sigma: np.ndarray
    p: np.ndarray
    v: np.ndarray
    counts: np.ndarray
    bounds: tuple[tuple[float, float], ...]
    dims: tuple[int, ...]
    rate: float
    stderr: float


@dataclass(frozen=True)
class EntropySweep:
    """Entropy production against one parameter: ``rates``, ``stderrs`` and ``exacts``
    (NaN where no exact value is known) at each of ``values``."""

    name: str
    values: np.ndarray
    rates: np.ndarray
    stderrs: np.ndarray
    exacts: np.ndarray
    method: str = METHOD_MIDPOINT
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "values": [float(v) for v in self.values],
                "rates": [_finite(v) for v in self.rates],
                "stderrs": [_finite(v) for v in self.stderrs],
                "exacts": [_finite(v) for v in self.exacts], "method": self.method,
                "seconds": round(self.seconds, 3)}


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ====================================================================== inputs
def _as_traj(x, what: str = "trajectory", min_len: int = 1) -> torch.Tensor:
    """(T, B, D) float64 CPU tensor from (T, B, D) or (T, D) tensors/arrays."""
    try:
        t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ShapeError(f"{what} must be a numeric array, got {type(x).__name__}") from e
    if t.ndim == 2:
        t = t.unsqueeze(1)
    if t.ndim != 3:
        raise ShapeError(f"{what} must be (T, B, D) or (T, D), got shape {tuple(t.shape)}")
    if t.shape[0] < min_len or t.shape[1] < 1 or t.shape[2] < 1:
        raise ShapeError(f"{what} needs at least {min_len} time samples, got shape {tuple(t.shape)}")
    return t.to("cpu", F64)


def _as_points(x) -> torch.Tensor:
    """(N, D) float64 points from (T, B, D) or (N, D) samples, NaN rows dropped."""
    try:
        t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ShapeError(f"samples must be a numeric array, got {type(x).__name__}") from e
    if t.ndim == 1:
        t = t.unsqueeze(-1)
    if t.ndim not in (2, 3):
        raise ShapeError(f"samples must be (T, B, D) or (N, D), got shape {tuple(t.shape)}")
    t = t.to("cpu", F64).reshape(-1, t.shape[-1])
    return t[torch.isfinite(t).all(-1)]


def _check_dt(dt) -> float:
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise ParameterError(f"time step dt must be a positive number, got {dt!r}") from None
    if not math.isfinite(dt) or dt <= 0:
        raise ParameterError(f"time step dt must be a positive number, got {dt!r}")
    return dt


def _check_batches(n_batches) -> int:
    if isinstance(n_batches, bool) or not isinstance(n_batches, (int, np.integer)) or n_batches < 2:
        raise ParameterError(f"n_batches must be an integer >= 2 (for an error bar), got {n_batches!r}")
    return int(n_batches)


def _check_dims(dims, D: int, default: Sequence[int] | None = None) -> tuple[int, ...]:
    if dims is None:
        dims = default if default is not None else tuple(range(D))
    if isinstance(dims, (int, np.integer)):
        dims = (int(dims),)
    try:
        dims = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise ParameterError(f"dims must be a sequence of state indices, got {dims!r}") from None
    if not 1 <= len(dims) <= 3:
        raise ParameterError(f"grids have 1 to 3 axes, got dims={dims}")
    if len(set(dims)) != len(dims) or any(not 0 <= d < D for d in dims):
        raise ParameterError(f"dims={dims} must be distinct indices in [0, {D - 1}]")
    return dims


# ====================================================================== grids
@dataclass(frozen=True)
class _Grid:
    lo: np.ndarray          # (d,)
    hi: np.ndarray          # (d,)
    nb: tuple[int, ...]     # cells per axis (dims order)

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.nb))

    @property
    def width(self) -> np.ndarray:
        return (self.hi - self.lo) / np.asarray(self.nb)

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.width))

    @property
    def centres(self) -> tuple[np.ndarray, ...]:
        return tuple(self.lo[i] + (np.arange(n) + 0.5) * self.width[i] for i, n in enumerate(self.nb))

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        return tuple((float(a), float(b)) for a, b in zip(self.lo, self.hi))

    def index(self, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat row-major cell index (N,) and an ``inside`` mask of points (N, d)."""
        lo = torch.as_tensor(self.lo, dtype=F64)
        hi = torch.as_tensor(self.hi, dtype=F64)
        nb = torch.as_tensor(self.nb)
        idx = torch.floor((pts - lo) / (hi - lo) * nb).long()
        idx = torch.where(pts == hi, nb - 1, idx)                      # the upper edge is in
        inside = ((idx >= 0) & (idx < nb)).all(-1) & torch.isfinite(pts).all(-1)
        flat = torch.zeros(pts.shape[0], dtype=torch.long)
        for i in range(len(self.nb)):
            flat = flat * self.nb[i] + idx[:, i].clamp(0, self.nb[i] - 1)
        return flat, inside

    def layout(self, arr: np.ndarray) -> np.ndarray:
        """Flat (n_cells, ...) -> image layout (..., ny, nx) + trailing axes."""
        a = arr.reshape(*self.nb, *arr.shape[1:])
        d = len(self.nb)
        return np.transpose(a, (*range(d - 1, -1, -1), *range(d, a.ndim)))

    def centre_points(self) -> np.ndarray:
        """(n_cells, d) cell centres in flat row-major order."""
        mesh = np.meshgrid(*self.centres, indexing="ij")
        return np.stack([m.ravel() for m in mesh], -1)


def _make_grid(pts: torch.Tensor, dims: tuple[int, ...], bins, bounds) -> _Grid:
    d = len(dims)
    if bins is None:
        bins = 64 if d <= 2 else 24
    nb = (bins,) * d if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) else bins
    try:
        nb = tuple(int(b) for b in nb)
    except (TypeError, ValueError):
        raise ParameterError(f"bins must be an integer or one per axis, got {bins!r}") from None
    if len(nb) != d or any(b < 2 for b in nb):
        raise ParameterError(f"bins must be at least 2 per axis ({d} axes), got {bins!r}")
    if int(np.prod(nb, dtype=np.int64)) > MAX_GRID_CELLS:
        raise SizeLimitError(f"a grid of {' x '.join(map(str, nb))} cells exceeds the limit of "
                             f"{MAX_GRID_CELLS:,} cells: use fewer bins")
    if bounds is None:
        if pts.shape[0] == 0:
            raise ShapeError("no finite samples to build a grid from")
        lo = pts.min(0).values.numpy()
        hi = pts.max(0).values.numpy()
        pad = 1e-9 * np.maximum(hi - lo, 1.0)
        lo, hi = lo - pad, hi + pad
        same = hi - lo < 1e-12
        lo, hi = np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)
    else:
        b = np.asarray(bounds, dtype=np.float64)
        if b.shape == (2,) and d == 1:
            b = b[None]
        if b.shape != (d, 2) or not np.isfinite(b).all() or (b[:, 1] <= b[:, 0]).any():
            raise ParameterError(f"bounds must be one finite (lo, hi) with lo < hi per axis "
                                 f"({d} axes), got {bounds!r}")
        lo, hi = b[:, 0].copy(), b[:, 1].copy()
    return _Grid(np.asarray(lo, np.float64), np.asarray(hi, np.float64), nb)


# ====================================================================== densities
def stationary_density(x, dims=None, bins=64, bounds=None, method: str = "hist") -> Density:
    """The stationary density of samples on a regular grid.

    Args:
        x: samples, (T, B, D) or (N, D) tensor or array (stationary: drop the transient
            first); rows with NaN are dropped.
        dims: the state components on the axes (1 to 3), default ``(0, 1)`` or ``(0,)`` for
            one-dimensional data.
        bins: cells per axis (int or one per axis).
        bounds: ``(lo, hi)`` per axis; default the data's range.
        method: ``"hist"`` (histogram) or ``"kde"`` (Gaussian kernel density estimate, Scott's
            bandwidth, on at most :data:`KDE_MAX_POINTS` regularly subsampled points).

    Returns:
        A :class:`Density`, normalised on the grid, computed in float64.
    """
    pts = _as_points(x)
    dims = _check_dims(dims, pts.shape[-1], (0, 1) if pts.shape[-1] >= 2 else (0,))
    if method not in ("hist", "kde"):
        raise ParameterError(f"method must be 'hist' or 'kde', got {method!r}")
    pts = pts[:, list(dims)]
    if pts.shape[0] == 0:
        raise ShapeError("no finite samples to estimate a density from")
    grid = _make_grid(pts, dims, bins, bounds)
    flat, inside = grid.index(pts)
    counts = torch.bincount(flat[inside], minlength=grid.n_cells).to(F64).numpy()
    n_in = counts.sum()
    if method == "hist":
        p = counts / (max(n_in, 1.0) * grid.cell_volume)
    else:
        from scipy.stats import gaussian_kde

        use = pts.numpy()
        if use.shape[0] > KDE_MAX_POINTS:
            use = use[:: math.ceil(use.shape[0] / KDE_MAX_POINTS)]
        if use.shape[0] <= len(dims):
            raise ShapeError(f"a KDE needs more than {len(dims)} samples, got {use.shape[0]}")
        try:
            kde = gaussian_kde(use.T)
            p = kde(grid.centre_points().T)
        except np.linalg.LinAlgError:
            raise ShapeError("the samples are degenerate (a constant coordinate): the KDE "
                             "is undefined; use method='hist'") from None
        total = p.sum() * grid.cell_volume
        p = p / total if total > 0 else p
    return Density(grid.centres, grid.layout(p), grid.bounds, grid.layout(counts),
                   int(pts.shape[0]), dims, method)


def effective_potential(density: Density, temperature: float = 1.0) -> np.ndarray:
    """``-T log p`` on the density's grid, NaN in empty cells, shifted so its minimum is 0
    (the potential ``U`` of a gradient system ``-grad U`` with noise temperature ``T``)."""
    T = float(temperature)
    if not math.isfinite(T) or T <= 0:
        raise ParameterError(f"temperature must be positive, got {temperature!r}")
    p = np.asarray(density.p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(p > 0, -T * np.log(np.where(p > 0, p, 1.0)), np.nan)
    if np.isfinite(u).any():
        u = u - np.nanmin(u)
    return u


# ====================================================================== currents
def _group_of(T_eff: int, B: int, n_groups: int) -> tuple[str, int]:
    """Split by trajectories when there are enough of them, else by blocks of time."""
    if B >= n_groups:
        return "trajectories", n_groups
    if T_eff >= n_groups:
        return "time", n_groups
    raise ShapeError(f"{n_groups} batches need at least {n_groups} trajectories or samples "
                     f"per trajectory, got {B} x {T_eff}")


def _group_ids(by: str, n0: int, n1: int, T_eff: int, B: int, G: int) -> torch.Tensor:
    """(n1 - n0, B) group index of the samples n0..n1-1 (of T_eff) of every trajectory."""
    if by == "trajectories":
        g = torch.arange(B) * G // B
        return g.expand(n1 - n0, B)
    g = torch.arange(n0, n1) * G // T_eff
    return g[:, None].expand(n1 - n0, B)


def _velocity_sums(x: torch.Tensor, dt: float, dims: tuple[int, ...], grid: _Grid | None,
                   bins, bounds, n_groups: int):
    """Cell sums of the midpoint velocity ``(x[n+1] - x[n-1]) / (2 dt)`` at ``x[n]``, per
    group: S (G, K, d), n (G, K), total valid samples per group (G,), and the grid."""
    T, B, _ = x.shape
    if T < 3:
        raise ShapeError(f"a probability current needs at least 3 time samples, got {T}")
    T_eff = T - 2
    by, G = _group_of(T_eff, B, n_groups)
    if grid is None:
        grid = _make_grid(_as_points(x[:, :, list(dims)]), dims, bins, bounds)
    K, d = grid.n_cells, len(dims)
    S = torch.zeros(G * K, d, dtype=F64)
    n = torch.zeros(G * K, dtype=F64)
    n_valid = torch.zeros(G, dtype=F64)
    xd = x[:, :, list(dims)]
    step = max(1, CHUNK_SAMPLES // max(B, 1))
    for n0 in range(0, T_eff, step):
        n1 = min(T_eff, n0 + step)
        xc = xd[n0 + 1:n1 + 1].reshape(-1, d)
        vel = ((xd[n0 + 2:n1 + 2] - xd[n0:n1]) / (2.0 * dt)).reshape(-1, d)
        ok = torch.isfinite(vel).all(-1) & torch.isfinite(x[n0 + 1:n1 + 1]).all(-1).reshape(-1)
        gid = _group_ids(by, n0, n1, T_eff, B, G).reshape(-1)
        n_valid += torch.bincount(gid[ok], minlength=G).to(F64)
        flat, inside = grid.index(xc)
        keep = ok & inside
        key = gid[keep] * K + flat[keep]
        S.index_add_(0, key, vel[keep])
        n += torch.bincount(key, minlength=G * K).to(F64)
    return S.reshape(G, K, d), n.reshape(G, K), n_valid, grid


def probability_current(x, dt, dims=None, bins=64, bounds=None) -> ProbabilityCurrent:
    r"""The stationary probability current on a grid, from trajectories.

    ``v(x) = <(x_{n+1} - x_{n-1}) / (2 dt) | x_n in cell>`` is the mean local velocity
    ``J / p`` (the average of the forward and backward drifts: the Stratonovich/midpoint
    velocity), ``J = p v``.

    Args:
        x: (T, B, D) or (T, D) trajectories of the stationary process, sample spacing ``dt``.
        dims: the state components on the grid (default all, at most 3); a subset gives the
            marginal current of the projection.
        bins, bounds: as :func:`stationary_density`.

    Returns:
        A :class:`ProbabilityCurrent` (float64; NaN velocity in empty cells).
    """
    xt = _as_traj(x, "trajectory", 3)
    dt = _check_dt(dt)
    dims = _check_dims(dims, xt.shape[-1])
    S, n, _, grid = _velocity_sums(xt, dt, dims, None, bins, bounds, 1)
    S, n = S[0].numpy(), n[0].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(n[:, None] > 0, S / np.maximum(n, 1.0)[:, None], np.nan)
    p = n / (max(n.sum(), 1.0) * grid.cell_volume)
    J = np.where(n[:, None] > 0, v * p[:, None], 0.0)
    return ProbabilityCurrent(grid.centres, grid.layout(v), grid.layout(J), grid.layout(p),
                              grid.layout(n), grid.bounds, dims, dt)


# ====================================================================== diffusion
def _const_diffusion(diffusion, D: int) -> torch.Tensor | None:
    """A constant diffusion (scalar, (D,) diagonal or (D, D) matrix) as a (D, D) float64
    matrix; None when ``diffusion`` is callable."""
    if callable(diffusion):
        return None
    try:
        a = torch.as_tensor(np.asarray(diffusion.detach().cpu() if isinstance(diffusion, torch.Tensor)
                                       else diffusion, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ParameterError(f"diffusion must be a number, a (D,) diagonal or a (D, D) matrix, "
                             f"got {type(diffusion).__name__}") from e
    if a.ndim == 0:
        a = a * torch.eye(D, dtype=F64)
    elif a.shape == (D,):
        a = torch.diag(a)
    elif a.shape != (D, D):
        raise ShapeError(f"diffusion must be a number, a ({D},) diagonal or a ({D}, {D}) "
                         f"matrix, got shape {tuple(a.shape)}")
    if not torch.isfinite(a).all():
        raise ParameterError("diffusion must be finite")
    _check_spd(a.numpy())
    return a


def _check_spd(Dm: np.ndarray) -> None:
    if not np.allclose(Dm, Dm.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(Dm).max())):
        raise ParameterError("the diffusion matrix D must be symmetric")
    ev = np.linalg.eigvalsh((Dm + Dm.T) / 2)
    if ev.min() <= 1e-12 * max(1.0, ev.max()):
        raise ParameterError("the diffusion matrix D is singular (no noise along some direction): "
                             "entropy production is undefined; give every variable noise")


def _divergence(diff_fn: Callable, x: torch.Tensor) -> torch.Tensor:
    r"""Row-wise divergence :math:`(\nabla\cdot D)_i = \sum_j \partial_j D_{ij}` of a callable
    diffusion (diagonal (..., D) or matrix (..., D, D)) at ``x`` (..., D), by autograd."""
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        out = diff_fn(xg)
        div = torch.zeros_like(x)
        if not out.requires_grad:
            return div
        diag = out.ndim == x.ndim
        Dn = x.shape[-1]
        for j in range(Dn):
            # diagonal: only d_j D_jj; matrix: d_j D_ij for every i
            rows = [j] if diag else range(Dn)
            for i in rows:
                entry = out[..., j] if diag else out[..., i, j]
                entry = entry.expand(x.shape[:-1])
                (g,) = torch.autograd.grad(entry.sum(), xg, retain_graph=True, allow_unused=True)
                if g is not None:
                    div[..., i] += g[..., j].detach()
    return div


def _solve(Dx: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``D^{-1} b`` for D diagonal (..., D) or matrix (..., D, D), b (..., D)."""
    if Dx.ndim == b.ndim:
        if (Dx <= 0).any():
            raise ParameterError("the diffusion matrix D is singular or negative somewhere on the "
                                 "trajectory: entropy production is undefined")
        return b / Dx
    if Dx.ndim != b.ndim + 1:
        raise ShapeError(f"the diffusion must give (..., D) (diagonal) or (..., D, D) for states "
                         f"{tuple(b.shape)}, got shape {tuple(Dx.shape)}")
    try:
        return torch.linalg.solve(Dx, b.unsqueeze(-1)).squeeze(-1)
    except RuntimeError as e:   # torch.linalg.LinAlgError
        raise ParameterError("the diffusion matrix D is singular somewhere on the trajectory: "
                             "entropy production is undefined") from e


# ====================================================================== estimators
def _midpoint_sums(x: torch.Tensor, dt: float, drift: Callable, diff_fn: Callable,
                   div_fn: Callable | None, by: str, G: int):
    """Per-(group) sums of ``F(xbar)^T dx`` and valid increment counts; ``by``/``G`` as
    :func:`_group_of` (``"trajectory"``: one group per trajectory)."""
    T, B, _ = x.shape
    T_eff = T - 1
    sums = torch.zeros(G if by != "each" else B, dtype=F64)
    counts = torch.zeros_like(sums)
    step = max(1, CHUNK_SAMPLES // max(B, 1))
    for n0 in range(0, T_eff, step):
        n1 = min(T_eff, n0 + step)
        dx = x[n0 + 1:n1 + 1] - x[n0:n1]
        xm = 0.5 * (x[n0 + 1:n1 + 1] + x[n0:n1])
        ok = torch.isfinite(dx).all(-1)
        xm = torch.where(ok[..., None], xm, torch.zeros_like(xm))
        f = drift(xm).to(F64)
        if f.shape != xm.shape:
            f = f.expand(xm.shape)
        if div_fn is not None:
            f = f - div_fn(xm)
        F = _solve(diff_fn(xm).to(F64), f)
        term = (F * torch.where(ok[..., None], dx, torch.zeros_like(dx))).sum(-1)   # (c, B)
        term = torch.where(ok, term, torch.zeros_like(term))
        if by == "each":
            sums += term.sum(0)
            counts += ok.sum(0).to(F64)
        else:
            gid = _group_ids(by, n0, n1, T_eff, B, G).reshape(-1)
            sums.index_add_(0, gid, term.reshape(-1))
            counts += torch.bincount(gid[ok.reshape(-1)], minlength=G).to(F64)
    return sums, counts


def _batch_stats(sums: np.ndarray, counts: np.ndarray, dt: float) -> tuple[float, float, np.ndarray]:
    good = counts > 0
    if good.sum() < 2:
        raise ShapeError("fewer than 2 batches hold finite increments: no error bar (all diverged?)")
    per = sums[good] / (counts[good] * dt)
    rate = float(sums[good].sum() / (counts[good].sum() * dt))
    stderr = float(per.std(ddof=1) / math.sqrt(len(per)))
    return rate, stderr, per


def _grid_cross(S: torch.Tensor, n: torch.Tensor, Dinv: torch.Tensor, n_total: float):
    """Unbiased grid estimate of sum_c (n_c / N) v_c^T D^-1 v_c from per-group velocity
    sums S (G, K, d), counts n (G, K); Dinv (d, d) or (K, d, d). Returns the per-cell
    density factor q (K,) and the rate."""
    def quad(a, b):
        if Dinv.ndim == 2:
            return torch.einsum("...ki,ij,...kj->...k", a, Dinv, b)
        return torch.einsum("...ki,kij,...kj->...k", a, Dinv, b)

    Stot = S.sum(0)
    num = quad(Stot, Stot) - quad(S, S).sum(0)
    ntot = n.sum(0)
    den = ntot ** 2 - (n ** 2).sum(0)
    q = torch.where(den > 0, num / den.clamp_min(1.0), torch.zeros_like(num))
    return q, float((ntot * q).sum() / n_total)


def _grid_estimate(x: torch.Tensor, dt: float, dims: tuple[int, ...], Dfull, bins, bounds,
                   n_batches: int):
    """The grid estimator: (rate, stderr, pseudo-values, q (K,), S, n, n_total, grid)."""
    S, n, n_valid, grid = _velocity_sums(x, dt, dims, None, bins, bounds, n_batches)
    G = S.shape[0]
    if callable(Dfull):
        if len(dims) != x.shape[-1]:
            raise ParameterError("a state-dependent diffusion needs the grid over all dimensions "
                                 "(dims = all); give a constant D for a projection")
        c = torch.as_tensor(grid.centre_points(), dtype=F64)
        Dc = Dfull(c).to(F64)
        if Dc.ndim == 2:
            Dc = torch.diag_embed(Dc)
        try:
            Dinv = torch.linalg.inv(Dc)
        except RuntimeError as e:
            raise ParameterError("the diffusion matrix D is singular on the grid") from e
    else:
        Dinv = torch.linalg.inv(Dfull[list(dims)][:, list(dims)])
    N = float(n_valid.sum())
    if N <= 0:
        raise ShapeError("no finite samples for the grid estimator")
    q, rate = _grid_cross(S, n, Dinv, N)
    loo = np.array([_grid_cross(torch.cat([S[:g], S[g + 1:]]), torch.cat([n[:g], n[g + 1:]]),
                                Dinv, N - float(n_valid[g]))[1] for g in range(G)])
    pseudo = G * rate - (G - 1) * loo
    stderr = float(pseudo.std(ddof=1) / math.sqrt(G))
    return rate, stderr, pseudo, q, S, n, N, grid


def _diffusion_fns(diffusion, D: int):
    """(diff_fn, div_fn or None, constant (D, D) matrix or None) from the user's diffusion."""
    const = _const_diffusion(diffusion, D)
    if const is not None:
        diag = torch.diagonal(const)
        if torch.equal(torch.diag(diag), const):
            return (lambda z: diag.expand(z.shape)), None, const
        return (lambda z: const.expand(*z.shape, D)), None, const
    return (lambda z: diffusion(z).to(F64)), (lambda z: _divergence(diffusion, z)), None


def entropy_production(traj_x, dt, *, drift: Callable | None = None, diffusion=None,
                       n_batches: int = 10, method: str = "auto", bins=None,
                       bounds=None) -> EntropyEstimate:
    r"""The stationary entropy-production rate (per unit time, ``k_B = 1``) with an error bar.

    Args:
        traj_x: stationary trajectories (T, B, D) (or (T, D)) with sample spacing ``dt``;
            discard the transient first. NaN increments (diverged members) are dropped.
        dt: the time between samples.
        drift: ``f``, a callable ``x (..., D) -> (..., D)`` (torch, float64); needed by the
            midpoint estimator.
        diffusion: the generator's ``D(x) = g g^T / 2``: a number, a constant (D,) diagonal
            or (D, D) matrix, or a callable ``x -> (..., D)`` (diagonal) or ``(..., D, D)``.
            ``grad . D`` of a callable is taken by autograd. Required.
        n_batches: independent groups for the error bar: the trajectories are split into
            ``n_batches`` groups (or, with fewer trajectories, each into blocks of time).
        method: ``"stratonovich_midpoint"`` (the default when ``drift`` is given):
            ``(1/t) sum F(xbar_n)^T dx_n``, ``F = D^-1 (f - grad . D)`` at midpoints — no
            density estimate, but it needs the drift; ``"grid_current"`` (the default without
            a drift): ``sum_cells v^T D^-1 v p dV`` from the estimated mean local velocity,
            needing only the data and ``D`` (D <= 3 dimensions; unbiased cross products of
            independent batches, jackknife error); ``"auto"`` picks as said.
        bins, bounds: the grid of ``"grid_current"`` (default 64 per axis in 1D/2D, 24 in
            3D; the data's range).

    Returns:
        An :class:`EntropyEstimate` (float64).
    """
    x = _as_traj(traj_x, "trajectory", 2)
    dt = _check_dt(dt)
    G = _check_batches(n_batches)
    D = x.shape[-1]
    if diffusion is None:
        raise ParameterError("entropy production needs the diffusion D (a number, a diagonal "
                             "or a matrix, or a callable)")
    if method == "auto":
        method = METHOD_MIDPOINT if drift is not None else METHOD_GRID
    if method == METHOD_MIDPOINT:
        if drift is None or not callable(drift):
            raise ParameterError("the midpoint estimator needs the drift (a callable x -> f(x))")
        diff_fn, div_fn, _ = _diffusion_fns(diffusion, D)
        by, G = _group_of(x.shape[0] - 1, x.shape[1], G)
        sums, counts = _midpoint_sums(x, dt, drift, diff_fn, div_fn, by, G)
        rate, stderr, per = _batch_stats(sums.numpy(), counts.numpy(), dt)
        return EntropyEstimate(rate, stderr, METHOD_MIDPOINT, per, int(counts.sum()))
    if method == METHOD_GRID:
        if D > 3:
            raise ParameterError(f"the grid estimator works in at most 3 dimensions, got {D}; "
                                 "give the drift for the midpoint estimator")
        const = _const_diffusion(diffusion, D)
        Dfull = const if const is not None else diffusion
        rate, stderr, pseudo, *_ , N, _g = _grid_estimate(x, dt, tuple(range(D)), Dfull, bins,
                                                          bounds, G)
        return EntropyEstimate(rate, stderr, METHOD_GRID, pseudo, int(N))
    raise ParameterError(f"method must be 'auto', '{METHOD_MIDPOINT}' or '{METHOD_GRID}', "
                         f"got {method!r}")


def entropy_density_map(traj_x, dt, *, diffusion, dims=None, bins=None, bounds=None,
                        n_batches: int = 10) -> EntropyDensity:
    r"""The local entropy-production density ``sigma(x) = v^T D^-1 v p`` on a grid.

    ``v`` is the mean local velocity of :func:`probability_current`; the square is taken
    without noise bias as in the ``"grid_current"`` estimator, so ``sigma`` integrates to
    that estimate of ``e_p``. ``dims`` defaults to all dimensions (at most 3); for a subset
    the coarse-grained density (with the ``dims`` block of a constant ``D``) is returned,
    whose integral is a lower bound on ``e_p``. Arguments as :func:`entropy_production`.
    Float64.
    """
    x = _as_traj(traj_x, "trajectory", 3)
    dt = _check_dt(dt)
    G = _check_batches(n_batches)
    D = x.shape[-1]
    dims = _check_dims(dims, D)
    if diffusion is None:
        raise ParameterError("the entropy-production density needs the diffusion D")
    const = _const_diffusion(diffusion, D)
    rate, stderr, _, q, S, n, N, grid = _grid_estimate(x, dt, dims, const if const is not None
                                                      else diffusion, bins, bounds, G)
    ntot = n.sum(0).numpy()
    p = ntot / (N * grid.cell_volume)
    sigma = p * q.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(ntot[:, None] > 0, S.sum(0).numpy() / np.maximum(ntot, 1.0)[:, None], np.nan)
    return EntropyDensity(grid.centres, grid.layout(sigma), grid.layout(p), grid.layout(v),
                          grid.layout(ntot), grid.bounds, dims, rate, stderr)


# ====================================================================== linear SDEs
def linear_reference(A, Dmat) -> tuple[np.ndarray, float]:
    r"""Exact stationary covariance and entropy production of ``dX = -A X dt + sqrt(2D) dW``.

    ``C`` solves the Lyapunov equation ``A C + C A^T = 2 D``; the irreversible drift is
    ``v = M x`` with ``M = D C^-1 - A`` and the rate is ``tr(M^T D^-1 M C)``. (Check:
    ``A = I - gamma J``, ``D = I`` give ``C = I`` and ``2 gamma^2``.) ``Dmat`` may be a
    number, a (d,) diagonal or a (d, d) matrix. Float64.

    Raises:
        ParameterError: ``A`` is not stable (an eigenvalue with real part <= 0: no stationary
            state) or ``D`` is singular, not symmetric, or the shapes disagree.
    """
    from scipy.linalg import solve_continuous_lyapunov

    try:
        A = np.atleast_2d(np.asarray(A.detach().cpu() if isinstance(A, torch.Tensor) else A,
                                     dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ParameterError(f"A must be a square numeric matrix, got {type(A).__name__}") from e
    if A.ndim != 2 or A.shape[0] != A.shape[1] or not np.isfinite(A).all():
        raise ShapeError(f"A must be a finite square matrix, got shape {A.shape}")
    d = A.shape[0]
    Dm = _const_diffusion(Dmat, d).numpy()
    ev = np.linalg.eigvals(A)
    if ev.real.min() <= 1e-12 * max(1.0, np.abs(ev).max()):
        raise ParameterError(f"the linear drift -A x is not stable (eigenvalue of A with real part "
                             f"{ev.real.min():.3g} <= 0): there is no stationary state")
    C = solve_continuous_lyapunov(A, 2.0 * Dm)
    C = 0.5 * (C + C.T)
    M = Dm @ np.linalg.inv(C) - A
    rate = float(np.trace(M.T @ np.linalg.solve(Dm, M) @ C))
    return C, rate


def _system_diffusion_matrix(system: SDE, x: torch.Tensor) -> torch.Tensor:
    """``D = g g^T / 2`` of an SDE at states x (..., D): (..., D, D)."""
    g = system.g(x).to(F64)
    if system.noise == "diagonal":
        return torch.diag_embed(0.5 * g * g)
    return 0.5 * g @ g.transpose(-1, -2)


def _require_sde(system, what: str = "Entropy production") -> SDE:
    if not isinstance(system, DynamicalSystem):
        raise UnsupportedKindError(f"{what} needs an SDE system, got {type(system).__name__}")
    if not isinstance(system, SDE):
        raise UnsupportedKindError(
            f"{what} needs a stochastic system (an SDE); {system.title or system.name} is a "
            f"{system.kind}")
    return system


def exact_entropy_production(system, params: Mapping[str, Any] | None = None) -> float | None:
    """The exact stationary entropy-production rate of an SDE with an affine drift
    ``f(x) = J x + b`` and constant diffusion, from :func:`linear_reference` with ``A = -J``
    (a shift ``b`` moves the mean only); ``None`` for any other SDE.

    Linearity is checked in float64 at a few fixed pseudo-random points (equal Jacobians,
    ``f(x) = J x + f(0)``, equal diffusion). ``params`` overrides parameters (scalars only).

    Raises:
        UnsupportedKindError: not an SDE.
        ParameterError: swept (tensor) parameters, or a linear SDE without a stationary state
            or with singular ``D`` (see :func:`linear_reference`).
    """
    system = _require_sde(system)
    if params:
        system = system.with_params(**params)
    if len(system.batch_shape()) > 0:
        raise ParameterError("exact entropy production needs scalar parameters (not a sweep)")
    D = system.dim
    gen = torch.Generator().manual_seed(12345)
    scale = 1.0 + max((abs(float(v)) for v in system.default_x0), default=0.0)
    pts = torch.randn(6, D, generator=gen, dtype=F64) * scale
    pts = torch.cat([torch.zeros(1, D, dtype=F64), pts])
    try:
        p = system.bind(pts)
        f = system.rhs(pts, p).to(F64).expand(pts.shape)
        Jm = system.jacobian(pts, p).to(F64).expand(*pts.shape, D)
        Dm = _system_diffusion_matrix(system, pts)
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError):
        return None
    if not (torch.isfinite(f).all() and torch.isfinite(Jm).all() and torch.isfinite(Dm).all()):
        return None
    tol = 1e-9 * (1.0 + float(Jm.abs().max()))
    if float((Jm - Jm[0]).abs().max()) > tol:
        return None
    J0 = Jm[0]
    pred = pts @ J0.T + f[0]
    if float((f - pred).abs().max()) > 1e-9 * (1.0 + float(f.abs().max()) + float(pred.abs().max())):
        return None
    if float((Dm - Dm[0]).abs().max()) > 1e-12 * (1.0 + float(Dm.abs().max())):
        return None
    _, rate = linear_reference(-J0.numpy(), Dm[0].numpy())
    return rate


# ====================================================================== from a system
def _system_fns(system: SDE):
    """(drift, diff_fn, div_fn or None) evaluating an SDE at its own (possibly swept)
    parameters on (..., B, D) arrays; ``D`` as a diagonal (..., D) or matrix."""
    def drift(z):
        return system.rhs(z, system.bind(z))

    if system.noise == "diagonal":
        def diff_fn(z):
            g = system.g(z)
            return 0.5 * g * g
    else:
        def diff_fn(z):
            g = system.g(z)
            return 0.5 * g @ g.transpose(-1, -2)
    div_fn = None if system.additive else (lambda z: _divergence(diff_fn, z))
    return drift, diff_fn, div_fn


def _check_noise(system: SDE, x: torch.Tensor) -> None:
    Dm = _system_diffusion_matrix(system, x)
    ev = torch.linalg.eigvalsh(0.5 * (Dm + Dm.transpose(-1, -2)))
    if not torch.isfinite(ev).all() or float(ev.min()) <= 1e-14 * max(1.0, float(ev.max())):
        raise ParameterError(
            f"{system.title or system.name}: the diffusion matrix D is singular (no noise on some "
            "variable): entropy production is undefined; give every variable noise")


def _count(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def estimate_entropy(system, *, steps: int = 4000, dt: float | None = None, batch: int = 256,
                     seed: int | None = 0, transient: int = 1000, n_batches: int = 10,
                     x0=None) -> dict[str, Any]:
    """Simulate an SDE and estimate its stationary entropy-production rate.

    Runs ``batch`` trajectories for ``transient + steps`` Euler–Maruyama steps of ``dt``
    (:func:`explorer.core.simulate.simulate`, seeded), discards the transient and applies the
    ``"stratonovich_midpoint"`` estimator with the system's own drift and diffusion, the
    error bar from ``n_batches`` groups of trajectories. Float64.

    Returns:
        ``{"entropy_production_rate", "stderr", "exact"`` (float or None, see
        :func:`exact_entropy_production`), ``"method", "n"`` (increments used), ``"dt",
        "seconds", "system", "steps", "batch", "status"}``.

    Raises:
        UnsupportedKindError: not an SDE. ParameterError: bad counts or dt, singular noise, a
        linear SDE without a stationary state.
    """
    from ..simulate import simulate

    t0 = time.perf_counter()
    system = _require_sde(system)
    steps = _count("steps", steps, 2)
    batch = _count("batch", batch, 1)
    transient = _count("transient", transient, 0)
    G = _check_batches(n_batches)
    dt = system.time_step(dt)
    if len(system.batch_shape()) > 0:
        raise ParameterError("estimate_entropy needs scalar parameters; use entropy_sweep to sweep one")
    _check_noise(system, system.initial_state(F64)[None])
    exact = exact_entropy_production(system)
    traj = simulate(system, x0, steps=steps, dt=dt, batch=batch, seed=seed, transient=transient)
    x = traj.x.to("cpu", F64)
    drift, diff_fn, div_fn = _system_fns(system)
    by, G = _group_of(x.shape[0] - 1, x.shape[1], G)
    sums, counts = _midpoint_sums(x, traj.dt, drift, diff_fn, div_fn, by, G)
    rate, stderr, _ = _batch_stats(sums.numpy(), counts.numpy(), traj.dt)
    return {"entropy_production_rate": rate, "stderr": stderr, "exact": exact,
            "method": METHOD_MIDPOINT, "n": int(counts.sum()), "dt": traj.dt,
            "seconds": round(time.perf_counter() - t0, 3), "system": system.name,
            "steps": steps, "batch": batch, "status": traj.status}


def entropy_sweep(system, name: str, values, *, steps: int = 2000, dt: float | None = None,
                  batch_per_value: int = 100, seed: int | None = 0, transient: int = 1000,
                  n_batches: int = 10) -> EntropySweep:
    """Entropy production against one parameter, in one batched simulation.

    The parameter becomes a (B,) tensor, each value repeated ``batch_per_value`` times;
    every member starts from the default state, runs ``transient`` steps, then ``steps``
    recorded ones. Each value's rate is the midpoint estimator over its own trajectories with
    an error bar from ``min(n_batches, batch_per_value)`` groups of them; ``exacts`` holds
    :func:`exact_entropy_production` at each value (NaN where none is known). Float64.
    """
    from ..simulate import simulate

    t0 = time.perf_counter()
    system = _require_sde(system)
    system.param_spec(name)
    vals = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if vals.ndim != 1 or vals.size == 0 or not np.isfinite(vals).all():
        raise ParameterError(f"values of {name!r} must be a non-empty list of finite numbers")
    bpv = _count("batch_per_value", batch_per_value, 2)
    steps = _count("steps", steps, 2)
    transient = _count("transient", transient, 0)
    G = min(_check_batches(n_batches), bpv)
    dt = system.time_step(dt)
    exacts = np.full(vals.size, np.nan)
    for i, v in enumerate(vals):
        one = system.with_params(**{name: float(v)})
        _check_noise(one, one.initial_state(F64)[None])
        e = exact_entropy_production(one)
        exacts[i] = np.nan if e is None else e
    swept = system.with_params(**{name: torch.as_tensor(np.repeat(vals, bpv))})
    traj = simulate(swept, steps=steps, dt=dt, seed=seed, transient=transient)
    x = traj.x.to("cpu", F64)
    drift, diff_fn, div_fn = _system_fns(swept)
    sums, counts = _midpoint_sums(x, traj.dt, drift, diff_fn, div_fn, "each", 1)
    rates, stderrs = np.empty(vals.size), np.empty(vals.size)
    s, c = sums.numpy().reshape(vals.size, bpv), counts.numpy().reshape(vals.size, bpv)
    gid = np.arange(bpv) * G // bpv
    for i in range(vals.size):
        gs = np.bincount(gid, weights=s[i], minlength=G)
        gc = np.bincount(gid, weights=c[i], minlength=G)
        try:
            rates[i], stderrs[i], _ = _batch_stats(gs, gc, traj.dt)
        except ShapeError:
            rates[i] = stderrs[i] = np.nan
    return EntropySweep(name, vals, rates, stderrs, exacts, METHOD_MIDPOINT,
                        time.perf_counter() - t0, {"status": traj.status, "dt": traj.dt})


def diffusion_matrix(system, x: torch.Tensor) -> torch.Tensor:
    """The generator's diffusion matrix ``D = g g^T / 2`` of an SDE at states ``x`` (..., D):
    (..., D, D), float64."""
    return _system_diffusion_matrix(_require_sde(system), x)


def system_functions(system):
    """``(drift, diffusion, divergence or None)`` of an SDE as callables on (..., D) tensors
    at its own parameters, in the forms :func:`entropy_production` and
    :func:`entropy_density_map` take (diffusion: a (..., D) diagonal or (..., D, D) matrix)."""
    return _system_fns(_require_sde(system))
