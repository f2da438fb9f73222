"""Pure plot builders: data in, HoloViews elements out (no widgets, no state).

Every builder is a function ``*_plot(data, ...)`` returning an ``hv.Element`` or
``hv.Overlay``; the page's DynamicMaps call them with what the streams carry. Arrays are
float32 (rendering precision).
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import NamedTuple

import holoviews as hv
import numpy as np

# An all-NaN image (nothing drawn yet) is expected; HoloViews' range computation warns about
# it on every render.
warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning,
                        module="holoviews.core.data.image")

#: above this many points the attractor is rasterised with datashader
DENSE_POINTS = 50_000
CMAPS = {"time": "viridis", "speed": "plasma", "expansion": "coolwarm"}
#: colour-bar titles of the colourings
COLOR_TITLES = {"time": "time", "speed": "speed |dx/dt|", "expansion": "local expansion rate"}
LINE = "#3b6ea5"


# ------------------------------------------------------------------ geometry
def weak_hook(method):
    """A HoloViews plot hook that calls a bound ``method`` without keeping its object alive.

    HoloViews keeps an element's options (hooks included) in a process-wide tree until the
    element is freed; a hook bound to a session's canvas would hold the canvas, and through
    it the element, the page and the controller: every closed session would stay in memory."""
    ref = weakref.WeakMethod(method)

    def hook(plot, element):
        m = ref()
        if m is not None:
            m(plot, element)
    return hook


def screen_dims(labels) -> list[hv.Dimension]:
    """The attractor plot's two axes: always named ``u`` and ``v`` (the Bokeh columns never
    change name between systems, so no glyph ever points at a column a new source lacks),
    labelled with the variables shown."""
    return [hv.Dimension("u", label=str(labels[0]) or " "), hv.Dimension("v", label=str(labels[1]) or " ")]


def rotation(azimuth: float, elevation: float) -> np.ndarray:
    """(2, 3) matrix projecting (horizontal, vertical, depth) coordinates to the screen.

    At azimuth = elevation = 0 the screen shows the horizontal and vertical variables as a
    2D view would; the azimuth turns the data about the vertical axis (the depth variable
    comes into the horizontal), the elevation then tilts it about the horizontal axis."""
    a, e = math.radians(azimuth), math.radians(elevation)
    return np.array([[math.cos(a), 0.0, -math.sin(a)],
                     [-math.sin(e) * math.sin(a), math.cos(e), -math.sin(e) * math.cos(a)]],
                    dtype=np.float32)


def project(x: np.ndarray, variables, axes, *, view: str = "2D", azimuth: float = 30.0,
            elevation: float = 20.0, centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """Screen coordinates of states ``x`` (..., D): two chosen variables (2D) or a rotated
    projection of three (3D). Returns ``(u, v, (u_label, v_label))``."""
    if len(variables) == 1:                       # one variable: delay plot x_{n+1} against x_n
        name = variables[0]
        return x[:-1, ..., 0], x[1:, ..., 0], (f"{name}(n)", f"{name}(n+1)")
    idx = [list(variables).index(a) for a in axes]
    if view == "3D" and len(idx) == 3:
        sub = x[..., idx]                                            # (..., 3)
        c = np.nanmean(sub.reshape(-1, 3), axis=0) if centre is None else centre
        uv = (sub - c) @ rotation(azimuth, elevation).T              # (..., 2)
        return uv[..., 0], uv[..., 1], (projection_label(azimuth, elevation), " ")
    return x[..., idx[0]], x[..., idx[1]], (axes[0], axes[1])


def projection_label(azimuth: float, elevation: float) -> str:
    """What the axes of the 3D view are: a rotated projection, not two variables (the triad
    in the plot shows where each variable points)."""
    return f"3D projection, azimuth {azimuth:.0f}°, elevation {elevation:.0f}° (drag to rotate)"


def axes_triad(x: np.ndarray, variables, axes, azimuth: float, elevation: float):
    """Short projected unit axes of the 3D view (its orientation aid): ``(origin, ends)``,
    the screen point (2,) they start from and their three ends (3, 2), in ``axes``' order."""
    idx = [list(variables).index(a) for a in axes]
    sub = x[..., idx].reshape(-1, 3)
    span = np.nanmax(sub, 0) - np.nanmin(sub, 0)
    L = 0.18 * float(np.nanmax(span)) if np.isfinite(span).all() else 1.0
    R = rotation(azimuth, elevation)
    u_all = (sub - np.nanmean(sub, 0)) @ R.T
    o = np.nanmin(u_all, 0) if np.isfinite(u_all).any() else np.zeros(2)
    return o, o + L * R.T


# ------------------------------------------------------------------ attractor
def attractor_points(data, axes, *, view="2D", azimuth=30.0, elevation=20.0) -> dict:
    """Flattened screen coordinates and colour values of an attractor (finite points only)."""
    x = data.x                                                       # (T, B, D)
    u, v, labels = project(x, data.variables, axes, view=view, azimuth=azimuth, elevation=elevation)
    if data.color is not None:
        c = data.color                                               # (T, B)
    else:
        T = x.shape[0]
        c = np.broadcast_to((data.t - data.t[0]).astype(np.float32)[:, None], x.shape[:2]) if T else x[..., 0]
    if len(data.variables) == 1:
        c = c[1:]
    u, v, c = u.reshape(-1), v.reshape(-1), np.asarray(c, dtype=np.float32).reshape(-1)
    ok = np.isfinite(u) & np.isfinite(v)
    if not ok.all():
        u, v, c = u[ok], v[ok], c[ok]
    c = np.where(np.isfinite(c), c, np.nanmin(c) if c.size and np.isfinite(c).any() else 0.0)
    # points are coloured by rank (histogram-equalised, as the dense image): the colour bar's
    # ticks (color_ticks) say which value each rank stands for
    out = {"u": u, "v": v, "c": c, "labels": labels}
    if u.size <= DENSE_POINTS:      # drawn as points (a dense cloud is ranked per pixel instead)
        out.update(rank=equalize(c), ticks=color_ticks(c))
    return out


def color_ticks(values: np.ndarray, n: int = 5, sample: int = 65536) -> dict[float, str]:
    """Colour-bar ticks of a histogram-equalised colouring: rank q -> the q-quantile of the
    values (equalised colours spread evenly over ranks, not values)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if not v.size:
        return {}
    qs = np.linspace(0.0, 1.0, n)
    vals = np.quantile(v[:: max(1, v.size // sample)], qs)
    return {float(q): f"{x:.4g}" for q, x in zip(qs, vals)}


def path_lines(data, axes, *, view="2D", azimuth=30.0, elevation=20.0,
               max_lines=20) -> tuple[list, list]:
    """Thin lines under the points for a few trajectories (flows only, sparse mode): the
    screen coordinates ``(xs, ys)``, one array per trajectory (none otherwise)."""
    if data is None or data.kind != "flow" or data.x.shape[1] > max_lines or data.n_points > DENSE_POINTS:
        return [], []
    u, v, _ = project(data.x, data.variables, axes, view=view, azimuth=azimuth, elevation=elevation)
    return [u[:, b] for b in range(u.shape[1])], [v[:, b] for b in range(u.shape[1])]


class QuietPipe(hv.streams.Pipe):
    """A ``Pipe`` whose data can also be replaced without an event (:meth:`set_quietly`), for
    plots whose Bokeh models are updated directly: a later re-render then starts from the
    new data instead of a memoized old frame."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._version = 0

    def set_quietly(self, data) -> None:
        self.update(data=data)
        self._version += 1

    def _on_trigger(self):
        super()._on_trigger()
        self._version += 1

    @property
    def hashkey(self):
        return {"_memoize_key": self._version}


# ------------------------------------------------------------------ rasterised attractor
def fit_range(a: np.ndarray, pad: float = 0.03) -> tuple[float, float]:
    """(low, high) of the finite values of ``a``, padded; a unit range around a constant."""
    lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size else (0.0, 1.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return (-1.0, 1.0)
    span = hi - lo
    if span <= 1e-12 * max(1.0, abs(hi)):
        return (lo - 0.5, hi + 0.5)
    return (lo - pad * span, hi + pad * span)


def equalize(values: np.ndarray, levels: int = 256, sample: int = 65536) -> np.ndarray:
    """Histogram equalisation: each finite value becomes (about) the fraction of finite values
    below it, so colours spread evenly over the colour map whatever the distribution; NaN
    stays NaN. float32 in [0, 1].

    The value -> rank map is read off ``levels`` quantiles (a colour map has 256 colours) of
    at most ``sample`` values (an evenly strided subset) and interpolated: about 10 ms for a
    640 x 480 image, with a rank error near 1/sqrt(sample). Equal-width bins (datashader's, Bokeh's ``eq_hist``) lose
    the ranks of heavily skewed data, which all falls into the first bins."""
    out = np.full(values.shape, np.nan, np.float32)
    finite = np.isfinite(values)
    v = values[finite]
    if v.size == 0:
        return out
    sub = np.sort(v[:: max(1, v.size // sample)])
    pos = np.linspace(0.0, sub.size - 1, levels + 1)
    edges = sub[pos.astype(np.int64)]                              # non-decreasing quantiles
    edges, first = np.unique(edges, return_index=True)
    if edges.size == 1:
        out[finite] = 1.0
        return out
    ranks = pos[first] / (sub.size - 1)
    out[finite] = np.interp(v, edges, ranks)
    return out


class Raster(NamedTuple):
    """A rasterised point cloud: ``pixels`` (H, W) float32, bottom row first (as Bokeh's image
    glyph takes them), over ``bounds`` (left, bottom, right, top) of the screen axes
    ``labels``."""
    pixels: np.ndarray
    bounds: tuple[float, float, float, float]
    labels: tuple


def raster_image(pts: dict, *, width: int = 640, height: int = 480, x_range=None,
                 y_range=None, with_ticks: bool = False):
    """Datashader aggregate (mean colour value per pixel) of projected points, a :class:`Raster`.

    Runs anywhere (the page calls it in a worker thread). The pixel values are histogram-
    equalised here (:func:`equalize`, float32 in [0, 1], NaN where empty), so the browser maps
    them linearly: Bokeh's own ``eq_hist`` mapping costs about 70 ms per image on this CPU.
    ``with_ticks``: return ``(image, ticks)``, the colour-bar ticks of the pixel values."""
    import datashader as ds
    import pandas as pd

    xr = tuple(x_range) if x_range else fit_range(pts["u"])
    yr = tuple(y_range) if y_range else fit_range(pts["v"])
    frame = pd.DataFrame({"u": pts["u"], "v": pts["v"], "c": pts["c"]}, copy=False)
    agg = ds.Canvas(plot_width=width, plot_height=height, x_range=xr, y_range=yr).points(
        frame, "u", "v", ds.mean("c"))
    image = Raster(equalize(agg.values), (xr[0], yr[0], xr[1], yr[1]),   # bottom row first
                   tuple(pts["labels"]))
    if with_ticks:
        return image, color_ticks(agg.values)
    return image


# ------------------------------------------------------------------ live trails
TRAIL_BUCKETS = 4
TRAIL_COLOR = "#d9480f"
HEAD_COLOR = "#7f1d00"


def trail_layers(trails: np.ndarray, variables, axes, *, view="2D", azimuth=30.0, elevation=20.0,
                 centre=None, buckets: int = TRAIL_BUCKETS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fading trails of a live ensemble as ``buckets`` NaN-separated polylines plus heads.

    ``trails`` is (L, B, D), oldest first. Each age group becomes one line (one glyph per
    group, so a thousand trails stay cheap); the last entry holds the current positions.
    """
    u, v, _ = project(trails, variables, axes, view=view, azimuth=azimuth, elevation=elevation,
                      centre=centre)                                  # (L, B)
    L, B = u.shape
    edges = np.linspace(0, L - 1, buckets + 1).round().astype(int)
    layers = []
    gap = np.full((1, B), np.nan, np.float32)
    for k in range(buckets):
        a, b = edges[k], edges[k + 1]
        seg_u = np.concatenate([u[a: b + 1], gap], 0).T.reshape(-1)   # (B * (l + 1),)
        seg_v = np.concatenate([v[a: b + 1], gap], 0).T.reshape(-1)
        layers.append((seg_u.astype(np.float32), seg_v.astype(np.float32)))
    layers.append((u[-1].astype(np.float32), v[-1].astype(np.float32)))
    return layers


# ------------------------------------------------------------------ other panels
def timeseries_series(data, *, member: int = 0, max_points: int = 4000, most: int = 6):
    """What the time-series plot draws of one trajectory: ``(t, [values per variable],
    labels, markers, t label)`` for at most ``most`` variables and ``max_points`` samples;
    ``markers``: maps' iterates are points, not joined by lines."""
    x = np.asarray(data.x[:, member])                                  # (T, D)
    stride = timeseries_stride(data, max_points)
    names = list(data.variables[:most])
    is_map = data.kind == "map"
    return (np.asarray(data.t)[::stride], [x[::stride, i] for i in range(len(names))], names,
            is_map, "n" if is_map else "t")


def timeseries_stride(data, max_points: int = 4000) -> int:
    """Every how many samples the time-series plot shows one (it shows at most ``max_points``)."""
    return max(1, -(-data.x.shape[0] // max_points))


def timeseries_caption(data, max_points: int = 4000) -> str:
    """What the time-series plot shows, in words: which trajectory, how many samples."""
    if data is None:
        return "**Time series**"
    T, B = data.x.shape[:2]
    shown = len(range(0, T, timeseries_stride(data, max_points)))
    which = "the trajectory" if B == 1 else f"trajectory 1 of {B:,}"
    k = timeseries_stride(data, max_points)
    samples = f"all {T:,} samples" if shown == T else f"one sample in {k} ({shown:,} of {T:,})"
    return f"**Time series** of {which}: {samples}"


def lyapunov_rows(result, reference=None) -> list[tuple[str, str, float]]:
    """The bars of a Lyapunov spectrum (largest first): ``(exponent, source, value)`` rows,
    ``source`` "computed" and, where the system has them at these parameters, "published"."""
    ex = [] if result is None else np.asarray(result.exponents, dtype=float).reshape(-1).tolist()
    if result is not None and result.sweep:
        ex = np.asarray(result.exponents, dtype=float)[0].tolist()
    rows = [(f"λ{i + 1}", "computed", e) for i, e in enumerate(ex)]
    if reference is not None and len(reference) == len(ex):
        rows += [(f"λ{i + 1}", "published", float(e)) for i, e in enumerate(reference)]
    return sorted(rows, key=lambda r: (int(r[0][1:]), r[1]))


def orbit_points(result, variables=()) -> hv.Points:
    """The orbit diagram as points (parameter value, recorded coordinate), axes labelled
    with the parameter's and the coordinate's names."""
    if result is None:
        return hv.Points(np.zeros((0, 2)), kdims=["parameter", "value"])
    vals = result.values.cpu().numpy()                                # (P,)
    pts = result.points.cpu().numpy()                                 # (P, K)
    xs = np.repeat(vals, pts.shape[1])
    ys = pts.reshape(-1)
    ok = np.isfinite(ys)
    coord = variables[result.coordinate] if result.coordinate < len(variables) else "value"
    return hv.Points((xs[ok], ys[ok]), kdims=[hv.Dimension("parameter", label=result.param),
                                              hv.Dimension("value", label=coord)])


def orbit_image(result, variables=(), *, width: int = 900, height: int = 380) -> hv.Image:
    """The orbit diagram as an image: the number of recorded points per pixel, histogram-
    equalised (:func:`equalize`), over the diagram's own parameter range and the points'
    range. Aggregated here (datashader), not by a dynamic ``rasterize``: the image never
    depends on ranges the browser has not sent yet."""
    import datashader as ds
    import pandas as pd

    kdims = [hv.Dimension("parameter", label=getattr(result, "param", "parameter")),
             hv.Dimension("value", label="value")]
    if result is None or not len(result.values):
        return hv.Image(np.full((1, 1), np.nan, np.float32), bounds=(0, 0, 1, 1), kdims=kdims,
                        vdims=["count"])
    pts = orbit_points(result, variables)
    u, v = pts.dimension_values(0), pts.dimension_values(1)
    kdims = pts.kdims
    vals = result.values.cpu().numpy()
    xr = (float(vals.min()), float(vals.max()))
    if xr[1] <= xr[0]:
        xr = (xr[0] - 0.5, xr[0] + 0.5)
    yr = fit_range(v) if len(v) else (0.0, 1.0)
    agg = ds.Canvas(plot_width=width, plot_height=height, x_range=xr, y_range=yr).points(
        pd.DataFrame({"u": u, "v": v}), "u", "v", ds.count())
    counts = agg.values.astype(np.float32)
    counts[counts == 0] = np.nan
    img = equalize(counts)[::-1]                                      # (H, W), top row first
    return hv.Image(img, bounds=(xr[0], yr[0], xr[1], yr[1]), kdims=kdims, vdims=["count"])


def section_plot(section, variables) -> hv.Points:
    """Crossings of a Poincaré section in the two first remaining variables."""
    if section is None:
        return hv.Points(np.zeros((0, 2)), kdims=screen_dims(variables[:2]))
    others = [i for i in range(len(variables)) if i != section.axis][:2]
    p = section.points.cpu().numpy()                                  # (N, D)
    return hv.Points((p[:, others[0]], p[:, others[1]]),
                     kdims=screen_dims([variables[others[0]], variables[others[1]]]))


def fixed_points_table(points, variables) -> list[dict]:
    """Rows (dicts) for a table of fixed points: coordinates, eigenvalues, type, stability."""
    rows = []
    for fp in points or []:
        row = {v: (0.0 if abs(c) < 1e-12 else float(c)) for v, c in zip(variables, fp.x.tolist())}
        ev = fp.eigenvalues.tolist()
        row["eigenvalues"] = ", ".join(_complex(z) for z in ev)
        row["type"] = fp.type
        row["stable"] = "yes" if fp.stable else "no"
        rows.append(row)
    return rows


def _complex(z) -> str:
    z = complex(z)
    if abs(z.imag) < 1e-9 * max(1.0, abs(z.real)):
        return f"{z.real:.4g}"
    return f"{z.real:.4g}{'+' if z.imag >= 0 else '−'}{abs(z.imag):.4g}i"


#: colour maps of the parameter-map quantities
MAP_CMAPS = {"lyapunov": "RdBu_r", "spectrum": "RdBu_r", "period": "glasbey_light",
             "basin": "Category10", "divergence": "viridis", "ky": "viridis", "mean": "viridis",
             "max": "viridis"}


def parameter_map_image(spec, values) -> hv.Image:
    """A parameter map (``values`` (ny, nx) on ``spec``'s grid; NaN: not computed yet or
    diverged, drawn grey) as an image; the Lyapunov exponent on a diverging colour map centred
    on 0, periods and basins on categorical ones, a divergence time of +inf (bounded) as NaN."""
    if spec is None:
        return hv.Image(np.full((1, 1), np.nan), bounds=(0, 0, 1, 1), kdims=["x", "y"], vdims=["value"])
    q = spec.quantity.kind
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 3:                                         # a spectrum: its largest exponent
        vals = vals[..., 0]
    vals = np.where(np.isinf(vals), np.nan, vals)
    label = {"lyapunov": "λ₁", "period": "period", "basin": "attractor", "divergence": "divergence time",
             "ky": "D_KY"}.get(q, spec.quantity.label)
    img = hv.Image((spec.x.values(), spec.y.values(), vals), kdims=[spec.x.name, spec.y.name],
                   vdims=[hv.Dimension("value", label=label)])
    finite = vals[np.isfinite(vals)]
    opts: dict = {"cmap": MAP_CMAPS.get(q, "viridis"), "title": f"{spec.system.title}: {label}"}
    if q in ("lyapunov", "spectrum") and finite.size:
        m = float(np.abs(finite).max()) or 1.0
        opts["clim"] = (-m, m)
    elif q in ("period", "basin") and finite.size:
        opts["clim"] = (float(finite.min()) - 0.5, float(finite.max()) + 0.5)
    return img.opts(**opts)
