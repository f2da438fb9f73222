"""Drawing geometry of fields on a grid, computed with numpy (no plotting library): contour
lines of a scalar field, and arrows and streamlines of a 2-D vector field, as the lists and
arrays Bokeh glyphs take. Pages compute them off the UI thread (in a run's frame, a job)
and hand them to :class:`explorer.views.field_plots.FieldMap`, which otherwise computes them
itself. Float64 (plot coordinates).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["arrows", "contour_lines", "streamlines", "vector_geometry"]


def contour_lines(xs, ys, z, levels) -> tuple[list, list]:
    """Contour lines of ``z`` (ny, nx) at ``levels`` as Bokeh multi_line ``xs``, ``ys``."""
    import contourpy

    out_x, out_y = [], []
    zz = np.where(np.isfinite(z), z, np.nan)
    if not np.isfinite(zz).any():
        return out_x, out_y
    gen = contourpy.contour_generator(np.asarray(xs, float), np.asarray(ys, float),
                                      np.ma.masked_invalid(zz))
    for level in levels:
        for line in gen.lines(float(level)):
            if len(line) >= 2:
                out_x.append(line[:, 0].tolist())
                out_y.append(line[:, 1].tolist())
    return out_x, out_y


def _interp(fields, xs, ys, px, py):
    """Bilinear interpolation of ``fields`` (k, ny, nx) at the points: (k, n), NaN outside
    the grid (the k components share the cell lookup)."""
    nx, ny = len(xs), len(ys)
    fx = (px - xs[0]) / (xs[-1] - xs[0]) * (nx - 1)
    fy = (py - ys[0]) / (ys[-1] - ys[0]) * (ny - 1)
    inside = (fx >= 0) & (fx <= nx - 1) & (fy >= 0) & (fy <= ny - 1)
    fx, fy = np.where(inside, fx, 0.0), np.where(inside, fy, 0.0)      # NaN points: outside
    i0 = np.clip(np.floor(fx).astype(int), 0, nx - 2)
    j0 = np.clip(np.floor(fy).astype(int), 0, ny - 2)
    tx, ty = np.clip(fx - i0, 0, 1), np.clip(fy - j0, 0, 1)
    f = (fields[:, j0, i0] * ((1 - tx) * (1 - ty)) + fields[:, j0, i0 + 1] * (tx * (1 - ty))
         + fields[:, j0 + 1, i0] * ((1 - tx) * ty) + fields[:, j0 + 1, i0 + 1] * (tx * ty))
    return np.where(inside, f, np.nan)


def streamlines(xs, ys, u, v, *, seeds: int = 10, steps: int = 40) -> tuple[list, list]:
    """Streamlines of the field (u, v) on the grid from a ``seeds`` x ``seeds`` lattice,
    integrated forward with midpoint steps of a fixed length along the normalised direction
    (lines end where the field vanishes, is NaN or leaves the grid)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    u = np.where(np.isfinite(u), u, 0.0)
    v = np.where(np.isfinite(v), v, 0.0)
    speed = np.hypot(u, v)
    if not np.isfinite(speed).any() or speed.max() <= 0:
        return [], []
    floor = 0.02 * float(np.quantile(speed, 0.9))
    gx = np.linspace(xs[0], xs[-1], seeds + 2)[1:-1]
    gy = np.linspace(ys[0], ys[-1], seeds + 2)[1:-1]
    px, py = (a.ravel() for a in np.meshgrid(gx, gy))
    h = 0.6 * min(xs[-1] - xs[0], ys[-1] - ys[0]) / seeds / 6
    path_x, path_y = [px.copy()], [py.copy()]
    alive = np.ones_like(px, bool)

    uv = np.stack([u, v])

    def direction(qx, qy):
        a, b = _interp(uv, xs, ys, qx, qy)
        n = np.hypot(a, b)
        ok = np.isfinite(n) & (n > floor)
        n = np.where(ok, n, 1.0)
        return a / n, b / n, ok

    for _ in range(steps):
        a, b, ok = direction(px, py)
        mx, my = px + 0.5 * h * a, py + 0.5 * h * b
        a2, b2, ok2 = direction(mx, my)
        alive &= ok & ok2
        px = np.where(alive, px + h * a2, np.nan)
        py = np.where(alive, py + h * b2, np.nan)
        path_x.append(px)
        path_y.append(py)
    X, Y = np.stack(path_x, 1), np.stack(path_y, 1)
    out_x, out_y = [], []
    for lx, ly in zip(X, Y):
        keep = np.isfinite(lx) & np.isfinite(ly)
        if keep.sum() >= 3:
            out_x.append(lx[keep].tolist())
            out_y.append(ly[keep].tolist())
    return out_x, out_y


def arrows(xs, ys, u, v, *, every: int = 3) -> dict:
    """Arrow shafts and heads of (u, v) on every ``every``-th grid point, lengths scaled so
    the longest arrow spans about one spacing of the thinned grid."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    X, Y = np.meshgrid(xs[::every], ys[::every])
    U, V = u[::every, ::every], v[::every, ::every]
    ok = np.isfinite(U) & np.isfinite(V)
    X, Y, U, V = X[ok], Y[ok], U[ok], V[ok]
    mag = np.hypot(U, V)
    top = float(np.quantile(mag, 0.95)) if mag.size else 0.0
    spacing = min(xs[every] - xs[0] if len(xs) > every else 1.0, ys[every] - ys[0] if len(ys) > every else 1.0)
    scale = 0.9 * spacing / top if top > 0 else 0.0
    L = np.minimum(mag * scale, 1.2 * spacing)
    n = np.where(mag > 0, mag, 1.0)
    ex, ey = X + U / n * L, Y + V / n * L
    return {"x0": X, "y0": Y, "x1": ex, "y1": ey, "angle": np.arctan2(V, U) - math.pi / 2,
            "size": np.where(L > 0.05 * spacing, 6.0, 0.0)}


def vector_geometry(xs, ys, u, v) -> dict:
    """Everything :class:`~explorer.views.field_plots.FieldMap` draws over a vector field
    (u, v) (ny, nx): ``{"stream": (xs, ys) of the streamlines, "arrows": the arrow columns}``."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    u, v = np.asarray(u, float), np.asarray(v, float)
    return {"stream": streamlines(xs, ys, u, v), "arrows": arrows(xs, ys, u, v, every=max(1, len(xs) // 12))}
