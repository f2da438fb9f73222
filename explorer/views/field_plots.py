"""Maps of scalar and vector fields on a grid, and small curve plots, drawn once in Bokeh and
then updated in their ``ColumnDataSource``\\ s (one small document patch per update, no
re-render: the Stochastic page redraws several of them several times a second while a
model trains).

* :class:`FieldMap`: a heat map with a colour bar, optional contour lines, arrows and
  streamlines of a vector field;
* :class:`Curves`: named line and band layers (training curves, sweeps, marginals).

The geometry (contours, arrows, streamlines) comes from :mod:`explorer.core.geometry`: given
with the data (computed off the UI thread), or computed here; nothing is simulated.
"""

from __future__ import annotations

import numpy as np
import panel as pn

from ..core.geometry import contour_lines, vector_geometry

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
             limits: tuple[float, float] | None = None, geometry: dict | None = None) -> None:
        """Draw ``z`` (ny, nx) on the cell centres ``xs``, ``ys``; ``vec``: (u, v) arrays,
        with their arrows and streamlines from ``geometry`` (:func:`~explorer.core.geometry.
        vector_geometry`, computed off the UI thread) or computed here."""
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
                g = geometry if geometry is not None else vector_geometry(xs, ys, *vec)
                sx, sy = g["stream"]
                self.stream.data = {"xs": sx, "ys": sy}
                self.shafts.data = g["arrows"]

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


__all__ = ["Curves", "FieldMap"]
