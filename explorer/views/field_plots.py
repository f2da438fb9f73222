"""Maps of scalar and vector fields on a grid, and small curve plots, drawn once in Bokeh and
then updated in their ``ColumnDataSource``\\ s (one small document patch per update, no
re-render: the Stochastic page redraws several of them several times a second while a
model trains).

* :class:`FieldMap`: a heat map with a colour bar, optional contour lines, arrows and
  streamlines of a vector field;
* :class:`Curves`: named line and band layers (training curves, sweeps, marginals).

The geometry (contours, arrows, streamlines) is computed here with numpy in float32/64 as
given; nothing is simulated.
"""

from __future__ import annotations

import math

import numpy as np
import panel as pn

TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
#: colours of numbered groups (channels, heads): a ``points`` layer's ``g`` modulo its length
PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#f08c00", "#0c8599", "#c2255c",
           "#5c940d", "#364fc7", "#d9480f")


def _finite_range(z: np.ndarray, robust: bool = True) -> tuple[float, float]:
    v = z[np.isfinite(z)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (np.quantile(v, [0.0, 0.98]) if robust else (v.min(), v.max()))
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


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


def _interp(field, xs, ys, px, py):
    """Bilinear interpolation of ``field`` (ny, nx) at points; NaN outside the grid."""
    nx, ny = len(xs), len(ys)
    fx = (px - xs[0]) / (xs[-1] - xs[0]) * (nx - 1)
    fy = (py - ys[0]) / (ys[-1] - ys[0]) * (ny - 1)
    inside = (fx >= 0) & (fx <= nx - 1) & (fy >= 0) & (fy <= ny - 1)
    fx, fy = np.where(inside, fx, 0.0), np.where(inside, fy, 0.0)      # NaN points: outside
    i0 = np.clip(np.floor(fx).astype(int), 0, nx - 2)
    j0 = np.clip(np.floor(fy).astype(int), 0, ny - 2)
    tx, ty = np.clip(fx - i0, 0, 1), np.clip(fy - j0, 0, 1)
    f = (field[j0, i0] * (1 - tx) * (1 - ty) + field[j0, i0 + 1] * tx * (1 - ty)
         + field[j0 + 1, i0] * (1 - tx) * ty + field[j0 + 1, i0 + 1] * tx * ty)
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

    def direction(qx, qy):
        a, b = _interp(u, xs, ys, qx, qy), _interp(v, xs, ys, qx, qy)
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


class FieldMap:
    """A heat map (colour bar) with optional contours, arrows and streamlines; ``show``
    patches the sources in place."""

    def __init__(self, title: str, *, palette: str = "Viridis256", bar_title: str = "",
                 contours: bool = False, vectors: bool = False, height: int = 300):
        from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper
        from bokeh.plotting import figure

        self.fig = figure(title=title, height=height, sizing_mode="stretch_width", tools=TOOLS,
                          match_aspect=False, x_range=(0, 1), y_range=(0, 1))
        self.fig.title.text_font_style = "normal"
        self.mapper = LinearColorMapper(palette=palette, low=0, high=1, nan_color="rgba(0,0,0,0)")
        self.image = ColumnDataSource({"image": [np.full((2, 2), np.nan)], "x": [0.0], "y": [0.0],
                                       "dw": [1.0], "dh": [1.0]})
        self.fig.image("image", "x", "y", "dw", "dh", source=self.image, color_mapper=self.mapper)
        bar = ColorBar(color_mapper=self.mapper, width=10, title=bar_title, padding=4,
                       title_text_font_style="normal")
        self.fig.add_layout(bar, "right")
        self.contours = self.shafts = self.heads = self.stream = None
        if contours:
            self.contours = ColumnDataSource({"xs": [], "ys": []})
            self.fig.multi_line("xs", "ys", source=self.contours, color="white", alpha=0.7, line_width=1)
        if vectors:
            self.stream = ColumnDataSource({"xs": [], "ys": []})
            self.fig.multi_line("xs", "ys", source=self.stream, color="#f8f9fa", alpha=0.55, line_width=1)
            self.shafts = ColumnDataSource({k: [] for k in ("x0", "y0", "x1", "y1", "angle", "size")})
            self.fig.segment("x0", "y0", "x1", "y1", source=self.shafts, color="black", line_width=1.3)
            self.fig.scatter("x1", "y1", source=self.shafts, marker="triangle", angle="angle",
                             size="size", color="black")
        self.pane = pn.pane.Bokeh(self.fig, sizing_mode="stretch_width", height=height + 10)
        self._box = None

    def show(self, xs, ys, z, *, vec=None, labels=("x", "y"), levels: int = 10,
             limits: tuple[float, float] | None = None) -> None:
        """Draw ``z`` (ny, nx) on the cell centres ``xs``, ``ys``; ``vec``: (u, v) arrays."""
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        dx = (xs[-1] - xs[0]) / max(len(xs) - 1, 1)
        dy = (ys[-1] - ys[0]) / max(len(ys) - 1, 1)
        l, b = xs[0] - dx / 2, ys[0] - dy / 2
        w, h = xs[-1] - xs[0] + dx, ys[-1] - ys[0] + dy
        z = np.asarray(z, float)
        lo, hi = limits if limits is not None else _finite_range(z)
        self.mapper.update(low=lo, high=hi)
        self.image.data = {"image": [z.astype(np.float32)], "x": [l], "y": [b], "dw": [w], "dh": [h]}
        if self._box != (l, b, w, h):
            self._box = (l, b, w, h)
            self.fig.x_range.update(start=l, end=l + w)
            self.fig.y_range.update(start=b, end=b + h)
        self.fig.xaxis.axis_label, self.fig.yaxis.axis_label = labels
        if self.contours is not None:
            cx, cy = contour_lines(xs, ys, z, np.linspace(lo, hi, levels + 2)[1:-1])
            self.contours.data = {"xs": cx, "ys": cy}
        if self.shafts is not None:
            if vec is None:
                self.shafts.data = {k: [] for k in ("x0", "y0", "x1", "y1", "angle", "size")}
                self.stream.data = {"xs": [], "ys": []}
            else:
                u, v = (np.asarray(a, float) for a in vec)
                sx, sy = streamlines(xs, ys, u, v)
                self.stream.data = {"xs": sx, "ys": sy}
                self.shafts.data = arrows(xs, ys, u, v, every=max(1, len(xs) // 12))

    def clear(self) -> None:
        self.image.data = {"image": [np.full((2, 2), np.nan, np.float32)], "x": [0.0], "y": [0.0],
                           "dw": [1.0], "dh": [1.0]}
        for src in (self.contours, self.stream):
            if src is not None:
                src.data = {"xs": [], "ys": []}
        if self.shafts is not None:
            self.shafts.data = {k: [] for k in ("x0", "y0", "x1", "y1", "angle", "size")}


#: an empty ``points`` layer: one invisible row, because Bokeh draws a legend entry from the
#: first row through the colour mapper, and an empty column there is a browser error
EMPTY_POINTS = {"x": np.array([np.nan]), "y": np.array([np.nan]), "g": np.array([0.0])}


class Curves:
    """Named layers of a small line plot (lines, scatter with error bars, bands), each a
    Bokeh source patched by :meth:`set`."""

    def __init__(self, title: str, layers: dict[str, dict], *, xlabel: str = "", ylabel: str = "",
                 height: int = 260, y_axis_type: str = "linear", **figure_options):
        from bokeh.models import ColumnDataSource, Whisker
        from bokeh.plotting import figure

        self.fig = figure(title=title, height=height, sizing_mode="stretch_width", tools=TOOLS,
                          y_axis_type=y_axis_type, **figure_options)
        self.fig.title.text_font_style = "normal"
        self.fig.xaxis.axis_label, self.fig.yaxis.axis_label = xlabel, ylabel
        self.sources: dict[str, ColumnDataSource] = {}
        self._points: set[str] = set()
        for name, spec in layers.items():
            kind = spec.get("kind", "line")
            color, label = spec.get("color", "#1c7ed6"), spec.get("label", name)
            if kind == "band":
                src = ColumnDataSource({"x": [], "lo": [], "hi": []})
                self.fig.varea("x", "lo", "hi", source=src, color=color, alpha=0.18, legend_label=label)
            elif kind == "errors":
                src = ColumnDataSource({"x": [], "y": [], "lo": [], "hi": []})
                self.fig.scatter("x", "y", source=src, color=color, size=7, legend_label=label)
                self.fig.add_layout(Whisker(source=src, base="x", upper="hi", lower="lo",
                                            line_color=color))
            elif kind == "points":                # x, y and a group number g coloured by a palette
                from bokeh.models import LinearColorMapper

                palette = spec.get("palette", PALETTE)
                mapper = LinearColorMapper(palette=list(palette), low=-0.5, high=len(palette) - 0.5)
                src = ColumnDataSource(dict(EMPTY_POINTS))   # numeric columns only: binary
                self._points.add(name)
                self.fig.scatter("x", "y", source=src, color={"field": "g", "transform": mapper},
                                 size=spec.get("size", 6), alpha=spec.get("alpha", 0.85),
                                 marker=spec.get("marker", "circle"), line_alpha=0,
                                 **({"legend_label": label} if spec.get("legend", True) else {}))
            elif kind == "multi":                 # one colour per line: xs, ys, color
                src = ColumnDataSource({"xs": [], "ys": [], "color": []})
                self.fig.multi_line("xs", "ys", source=src, color="color",
                                    alpha=spec.get("alpha", 0.5), line_width=spec.get("width", 1.2))
            elif kind == "quad":
                src = ColumnDataSource({"left": [], "right": [], "top": []})
                self.fig.quad(left="left", right="right", bottom=0, top="top", source=src,
                              color=color, alpha=0.35, line_alpha=0, legend_label=label)
            else:
                src = ColumnDataSource({"x": [], "y": []})
                self.fig.line("x", "y", source=src, color=color, line_width=2,
                              line_dash=spec.get("dash", "solid"), legend_label=label)
            self.sources[name] = src
        if self.fig.legend:
            self.fig.legend.location = "top_left"
            self.fig.legend.background_fill_alpha = 0.6
            self.fig.legend.label_text_font_size = "9pt"
        self.pane = pn.pane.Bokeh(self.fig, sizing_mode="stretch_width", height=height + 10)

    def set(self, name: str, **columns) -> None:
        """Replace a layer's data (numeric columns as float arrays; ``xs``/``ys`` of a
        ``multi`` layer as lists of arrays; ``color`` as strings; a ``points`` layer's group
        numbers ``g`` are taken modulo the palette)."""
        def col(k, v):
            if k == "color":
                return list(v)
            if k in ("xs", "ys"):
                return [np.asarray(a, float) for a in v]
            if k == "g":
                return np.asarray(v, float) % len(PALETTE)
            return np.asarray(v, float)
        data = {k: col(k, v) for k, v in columns.items()}
        if name in self._points and not len(data.get("x", ())):
            data = dict(EMPTY_POINTS)
        self.sources[name].data = data

    def clear(self) -> None:
        for name, src in self.sources.items():
            src.data = dict(EMPTY_POINTS) if name in self._points else {k: [] for k in src.data}


__all__ = ["Curves", "FieldMap", "arrows", "contour_lines", "streamlines"]
