"""Reusable drawing pieces of state-space pages: a projected point cloud with 3D rotation by
drag, live trails, a colour bar and fitted ranges; an orbit diagram with box zoom; Lyapunov bars.

:class:`ProjectionCanvas` draws states (an attractor, a latent flow's samples, stochastic
trajectories) as a 2D projection or a rotatable 3D one: sparse clouds as points (with thin lines
for a few trajectories), dense ones as a datashader image aggregated in a worker thread and
re-aggregated on zoom, all written straight into one Bokeh figure's sources (a data patch,
never a re-render). A page gives it data
and reads taps and rotations back through callbacks; it owns no page state.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import holoviews as hv
import numpy as np
import panel as pn

from ..controllers.jobs import JobRunner
from . import plots
from .live import FramePacer

#: the tools of a state-space figure
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"


@functools.lru_cache(maxsize=None)
def process_palette(cmap: str) -> list[str]:
    """The 256 colours of a named colour map."""
    from holoviews.plotting.util import process_cmap
    return process_cmap(cmap, 256)


def palette(color_by: str) -> list[str]:
    """The 256 colours of a colouring's colour map."""
    return process_palette(plots.CMAPS.get(color_by, "viridis"))


def close_ranges(a, b, rel: float = 1e-6) -> bool:
    """Two (low, high) ranges equal up to ``rel`` of the first one's span."""
    span = max(abs(a[1] - a[0]), 1e-300)
    return abs(a[0] - b[0]) <= rel * span and abs(a[1] - b[1]) <= rel * span


def reset_ranges(dmap) -> None:
    """Let a rasterised plot fit its next data: forget the viewport it last aggregated over."""
    for stream in getattr(dmap, "streams", []):
        if isinstance(stream, hv.streams.RangeXY):
            stream.update(x_range=None, y_range=None)


def fit_view(fig, box, *, three_d: bool = False) -> None:
    """Show exactly ``box`` (l, b, r, t): new data never inherits the previous data's view
    (HoloViews keeps a range the browser reported for the old axes). ``three_d``: a rotated
    projection has no meaningful tick values (hidden) and a drag rotates (no drag tool)."""
    l, b, r, t = box
    fig.x_range.update(start=l, end=r, reset_start=l, reset_end=r)     # Reset comes back here
    fig.y_range.update(start=b, end=t, reset_start=b, reset_end=t)
    alpha = 0.0 if three_d else 1.0
    for ax in list(fig.xaxis) + list(fig.yaxis):
        ax.update(major_label_text_alpha=alpha, major_tick_line_alpha=alpha,
                  minor_tick_line_alpha=alpha)
    pan = next((tool for tool in fig.tools if type(tool).__name__ == "PanTool"), None)
    fig.toolbar.active_drag = None if three_d or pan is None else pan


def add_colorbar(fig):
    """A colour bar at the right of ``fig`` for histogram-equalised colours (see
    :func:`set_colorbar`)."""
    from bokeh.models import ColorBar, FixedTicker, LinearColorMapper

    bar = ColorBar(color_mapper=LinearColorMapper(palette=palette("time"), low=0, high=1),
                   ticker=FixedTicker(ticks=[]), width=10, title="", title_text_font_style="normal",
                   padding=4)
    fig.add_layout(bar, "right")
    return bar


def set_colorbar(bar, ticks: dict, color_by: str, title: str) -> None:
    """What each colour stands for: ticks at ranks, labelled with values (hidden without)."""
    bar.color_mapper.palette = palette(color_by)
    bar.ticker.ticks = list(ticks)
    bar.major_label_overrides = {float(k): v for k, v in ticks.items()}
    bar.title = title
    bar.visible = bool(ticks)


class Rotator:
    """Rotation of a 3D view by dragging: horizontal moves turn the azimuth, vertical ones the
    elevation, applied at most about ten times a second while the mouse moves and once more on
    release. ``get() -> (azimuth, elevation)``, ``set(azimuth, elevation)``, ``active()``."""

    #: degrees of rotation per pixel dragged
    DEGREES = 0.5

    def __init__(self, get: Callable, set: Callable, active: Callable[[], bool]):
        self.get, self.set, self.active = get, set, active
        self._drag, self._applied, self._seen = (0.0, 0.0), 0.0, (0.0, 0.0)

    def attach(self, fig) -> None:
        from bokeh.events import Pan, PanEnd

        fig.on_event(Pan, self._on_drag)
        fig.on_event(PanEnd, self._on_end)

    def _on_drag(self, event) -> None:
        if not self.active():
            return
        # Bokeh's pan deltas count from the start of the gesture: keep the part not yet applied
        total = (float(event.delta_x or 0.0), float(event.delta_y or 0.0))
        seen, self._seen = self._seen, total
        dx, dy = self._drag
        self._drag = (dx + total[0] - seen[0], dy + total[1] - seen[1])
        if time.monotonic() - self._applied > 0.1:
            self._apply()

    def _on_end(self, _event) -> None:
        if self.active():
            self._apply()
        self._seen = (0.0, 0.0)

    def _apply(self) -> None:
        dx, dy = self._drag
        self._drag, self._applied = (0.0, 0.0), time.monotonic()
        if dx or dy:
            az, el = self.get()
            self.set(round((az - self.DEGREES * dx + 180.0) % 360.0 - 180.0, 1),
                     round(min(90.0, max(-90.0, el + self.DEGREES * dy)), 1))


class Trails:
    """Fading trails of a live ensemble in a figure: :data:`plots.TRAIL_BUCKETS` line glyphs
    (older: fainter) and the heads, updated in their Bokeh sources; frames are paced by the
    browser (a :class:`~explorer.views.live.FramePacer` on the heads, written last)."""

    def __init__(self):
        self.fig, self.sources, self.heads = None, [], None
        self.pacer = FramePacer()

    @staticmethod
    def _empty() -> dict:
        return {"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)}

    def attach(self, fig) -> None:
        from bokeh.models import ColumnDataSource

        self.fig, self.sources = fig, []
        for k in range(plots.TRAIL_BUCKETS):
            src = ColumnDataSource(self._empty())
            fig.line("x", "y", source=src, color=plots.TRAIL_COLOR, line_width=1.0,
                     alpha=0.12 + 0.7 * (k + 1) / plots.TRAIL_BUCKETS)
            self.sources.append(src)
        self.heads = ColumnDataSource(self._empty())
        fig.scatter("x", "y", source=self.heads, size=3, color=plots.HEAD_COLOR)
        self.pacer.watch(self.heads)

    def ready(self) -> bool:
        return self.pacer.ready()

    def show(self, layers) -> None:
        """Draw :func:`plots.trail_layers` output (None: clear)."""
        if self.fig is None:
            return
        if layers is None:
            for src in [*self.sources, self.heads]:
                src.data = self._empty()
            return
        *buckets, heads = layers
        for src, (x, y) in zip(self.sources, buckets):
            src.data = {"x": x, "y": y}
        self.heads.data = {"x": heads[0], "y": heads[1]}
        self.pacer.sent_frame()


class ProjectionCanvas:
    """A projected cloud of states with trails, colour bar, 3D rotation and zoom.

    One Bokeh figure, built with the canvas and then only written to: a dense cloud's image,
    a sparse one's points and lines (a few trajectories), the 3D view's axis triad, the
    trails and the colour bar are glyphs whose sources, ranges, labels and colour map change
    in place. A HoloViews overlay of the same layers cost a new session 0.15 s to render and
    re-rendered all four whenever the axes changed (a new system). Colours are ranks in
    [0, 1] (histogram-equalised, :func:`plots.equalize`) through one linear colour mapper.

    Args:
        cmap: the first colour map name; each drawing then brings its colouring's.
        on_tap: ``(x, y)`` of a click on the plot.
        rotator: the :class:`Rotator` of the 3D view.
        on_drawn: called after each new drawing reached the plot (follow-ups: time series).
        notify: called from worker threads when a drawing is ready (schedule a poll).
    """

    def __init__(self, *, cmap, on_tap: Callable, rotator: Rotator, on_drawn: Callable,
                 notify: Callable, min_height: int = 460):
        from bokeh.events import RangesUpdate, Tap
        from bokeh.models import ColumnDataSource, LinearColorMapper, Range1d
        from bokeh.plotting import figure

        self.rotator, self.on_drawn, self.on_tap = rotator, on_drawn, on_tap
        self.jobs = JobRunner(notify=notify, admission=None)   # drawing never waits in the queue
        self.pts = None                                 # projected points of a dense drawing
        self.rendered = None                            # (x_range, y_range) of the image
        self.centre = None                              # 3D: the rotation's centre
        self.three_d = False
        self._image_bounds = None                       # (l, b, r, t) of the image shown
        fig = figure(name="projection",                 # how tests and benchmarks find it
                     x_range=Range1d(0, 1), y_range=Range1d(0, 1), x_axis_label=" ",
                     y_axis_label=" ", tools=TOOLS, toolbar_location="above",
                     sizing_mode="stretch_both", min_height=min_height)
        self.mapper = LinearColorMapper(palette=process_palette(cmap), low=0.0, high=1.0,
                                        nan_color="rgba(0, 0, 0, 0)")
        self.image = ColumnDataSource(_EMPTY_IMAGE)
        fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image,
                  color_mapper=self.mapper)
        self.lines = ColumnDataSource({"xs": [], "ys": []})
        fig.multi_line("xs", "ys", source=self.lines, color=plots.LINE, alpha=0.35, line_width=0.7)
        self.points = ColumnDataSource(_empty("u", "v", "color"))
        fig.scatter("u", "v", source=self.points, size=2.2, alpha=0.8,
                    color={"field": "color", "transform": self.mapper})
        self.triad = ColumnDataSource(_empty("x0", "y0", "x1", "y1"))
        self.triad_labels = ColumnDataSource({"x": [], "y": [], "text": []})
        fig.segment("x0", "y0", "x1", "y1", source=self.triad, color="#555", line_width=1.5)
        fig.text("x", "y", "text", source=self.triad_labels, text_font_size="10pt", text_color="#333")
        self.trails = Trails()
        self.trails.attach(fig)
        self.colorbar = add_colorbar(fig)
        rotator.attach(fig)
        fig.on_event(Tap, self._on_tap)
        fig.on_event(RangesUpdate, self._on_ranges)
        self.fig = fig
        self.pane = pn.pane.Bokeh(fig, sizing_mode="stretch_both", min_height=min_height)

    def _on_tap(self, event) -> None:
        if event.x is not None and event.y is not None:
            self.on_tap(event.x, event.y)

    def _on_ranges(self, event) -> None:
        if None not in (event.x0, event.x1, event.y0, event.y1):
            self._on_zoom((event.x0, event.x1), (event.y0, event.y1))

    # ---------------------------------------------------------------- drawing
    def draw(self, data, axes, *, view: str, azimuth: float, elevation: float, color_by: str,
             color_title: str) -> None:
        """Project (and above DENSE_POINTS aggregate) ``data`` in a worker thread; the UI
        thread only writes the result into the figure (:meth:`poll`)."""
        # the cloud shown is on its way out: a range change meanwhile (the page re-laid out
        # around the plot) must not re-aggregate it (1.2 MB of pixels sent during a switch)
        self.pts = None
        if data is None:                 # the next data replaces this drawing (and fits its
            return                       # view); clearing first would cost two redraws
        if view == "3D" and len(axes) == 3:
            idx = [list(data.variables).index(a) for a in axes]
            self.centre = np.nanmean(data.x[..., idx].reshape(-1, 3), axis=0)
        else:
            self.centre = None
        self.rendered = (None, None)

        def work(stop, progress):
            pts = plots.attractor_points(data, axes, view=view, azimuth=azimuth, elevation=elevation)
            pts.update(view=view, color_by=color_by, title=color_title)
            if view == "3D" and len(axes) == 3 and all(a in data.variables for a in axes):
                pts["triad"] = (plots.axes_triad(data.x, data.variables, axes, azimuth, elevation), axes)
            if pts["u"].size > plots.DENSE_POINTS:
                image, pts["ticks"] = plots.raster_image(pts, with_ticks=True)
                return pts, image
            pts["lines"] = plots.path_lines(data, axes, view=view, azimuth=azimuth, elevation=elevation)
            return pts, None

        self.jobs.submit("image", work, label="drawing")

    def poll(self) -> str | None:
        """Show finished drawings (UI thread); an error message if drawing failed."""
        for d in self.jobs.poll():
            if d.error:
                return f"⚠ drawing failed: {d.error}"
            self._show(d.value)
        return None

    def busy(self) -> bool:
        return bool(self.jobs.running())

    def _show(self, value) -> None:
        if isinstance(value, plots.Raster):          # a zoomed re-aggregation
            self.show_image(value, fit=False)
            return
        pts, image = value
        self.three_d = pts["view"] == "3D"
        self._recolour(pts["color_by"])
        set_colorbar(self.colorbar, pts.get("ticks", {}), pts["color_by"], pts["title"])
        if image is not None:
            self.pts = pts
            self.show_image(image)
            self._set(self.points, _empty("u", "v", "color"))
            self._set(self.lines, {"xs": [], "ys": []})
        else:
            self.pts = None
            self._set(self.image, _EMPTY_IMAGE)
            self._image_bounds = None
            self.points.data = {"u": pts["u"], "v": pts["v"], "color": pts["rank"]}
            xs, ys = pts["lines"]
            self._set(self.lines, {"xs": xs, "ys": ys})
            (l, r), (b, t) = plots.fit_range(pts["u"]), plots.fit_range(pts["v"])
            self.fit((l, b, r, t))
        self._show_triad(pts.get("triad"))
        self._label_axes(pts["labels"])
        self.on_drawn()

    @staticmethod
    def _set(source, data: dict) -> None:
        """New data for a source, unless it and the shown data are both empty."""
        if any(len(v) for v in data.values()) or any(len(v) for v in source.data.values()):
            source.data = data

    def _show_triad(self, triad) -> None:
        if triad is None:
            self._set(self.triad, _empty("x0", "y0", "x1", "y1"))
            self._set(self.triad_labels, {"x": [], "y": [], "text": []})
            return
        (o, ends), axes = triad
        self.triad.data = {"x0": [float(o[0])] * 3, "y0": [float(o[1])] * 3,
                           "x1": [float(e[0]) for e in ends], "y1": [float(e[1]) for e in ends]}
        self.triad_labels.data = {"x": [float(e[0]) for e in ends], "y": [float(e[1]) for e in ends],
                                  "text": [str(a) for a in axes]}

    def _recolour(self, color_by: str) -> None:
        """The colouring's colour map into the mapper, in place."""
        colors = palette(color_by)
        if list(self.mapper.palette) != colors:
            self.mapper.palette = colors

    def _label_axes(self, labels) -> None:
        for axes, text in zip((self.fig.xaxis, self.fig.yaxis), labels):
            for axis in axes:
                if axis.axis_label != (str(text) or " "):
                    axis.axis_label = str(text) or " "

    def show_image(self, image: plots.Raster, *, fit: bool = True) -> None:
        """Put a rasterised cloud on screen: its pixels and bounds into the image glyph's
        source (the values are equalised to [0, 1], so the colour mapper stays as it is).
        ``fit``: set the view to the image's bounds (new data; not for a zoom's
        re-aggregation)."""
        l, b, r, t = image.bounds
        self._image_bounds = image.bounds
        self.image.data = {"image": [image.pixels], "x": [l], "y": [b], "dw": [r - l], "dh": [t - b]}
        if fit:
            self.fit((l, b, r, t))

    def fit(self, box) -> None:
        fit_view(self.fig, box, three_d=self.three_d)
        l, b, r, t = box
        self.rendered = ((l, r), (b, t))

    def _on_zoom(self, x_range=None, y_range=None) -> None:
        """Re-aggregate at the new view range (datashader's zoom), off the UI thread."""
        if self.pts is None or x_range is None or y_range is None:
            return
        last, bounds = self.rendered, self._image_bounds
        if last is not None and last[0] is None and bounds is not None:
            (x0, y0, x1, y1) = bounds
            last = ((x0, x1), (y0, y1))
        if last is not None and last[0] is not None and close_ranges(last[0], x_range) \
                and close_ranges(last[1], y_range):
            return
        pts, self.rendered = self.pts, (tuple(x_range), tuple(y_range))
        self.jobs.submit("image", lambda stop, progress: plots.raster_image(
            pts, x_range=tuple(x_range), y_range=tuple(y_range)), label="drawing")

    def close(self) -> None:
        self.jobs.close()


def _empty(*columns: str) -> dict:
    return {c: np.zeros(0, np.float32) for c in columns}


_EMPTY_IMAGE = {"image": [], "x": [], "y": [], "dw": [], "dh": []}


def zoomed_range(rng, shown) -> tuple[float, float, bool] | None:
    """A range the browser reported, clipped to the ``shown`` (lo, hi) one, and whether it is
    a zoom (strictly inside: under 98 % of it); None for no usable range."""
    if not rng or shown is None:
        return None
    lo, hi = (float(v) for v in rng)
    span = shown[1] - shown[0]
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo <= 0 or span <= 0:
        return None
    lo, hi = max(lo, shown[0]), min(hi, shown[1])
    return lo, hi, hi - lo < 0.98 * span


def crosshair(color: str = "#d9480f"):
    """Two dashed Bokeh spans (vertical, horizontal) that mark a point and move in place."""
    from bokeh.models import Span

    return [Span(dimension=d, line_color=color, line_width=1.5, line_dash="dashed",
                 location=None, visible=False) for d in ("height", "width")]


class ParameterMapImage:
    """A parameter map as an image that fills in tile by tile, with the attractor's current
    point marked (a crosshair), a click that moves the attractor there (``on_tap(x, y)``) and
    a box zoom that recomputes the map over the box (``on_box(x0, x1, y0, y1)``, read back as
    the figure's new ranges, as :class:`OrbitDiagram` does)."""

    def __init__(self, on_tap: Callable, on_box: Callable, min_height: int = 420):
        self.pipe = hv.streams.Pipe(data=None)
        self._shown: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._on_box = on_box
        dm = hv.DynamicMap(lambda data: plots.parameter_map_image(*(data or (None, None))),
                           streams=[self.pipe])
        self.image = dm.opts(clipping_colors={"NaN": "#e9ecef"}, active_tools=["box_zoom"],
                             tools=["tap", "hover"], responsive=True, min_height=min_height,
                             framewise=True, colorbar=True)
        self.tap = hv.streams.Tap(source=self.image, x=None, y=None)
        self.tap.add_subscriber(lambda x=None, y=None: on_tap(x, y) if x is not None else None)
        self.range = hv.streams.RangeXY(source=self.image)
        self.range.add_subscriber(self._on_range)
        self.spans = crosshair("#212529")            # dark: visible on every colour map
        self.pane = pn.pane.HoloViews(self.image.opts(hooks=[plots.weak_hook(self._hook)]), linked_axes=False,
                                      sizing_mode="stretch_width", min_height=min_height)

    def _on_range(self, x_range=None, y_range=None) -> None:
        if self._shown is None:
            return
        zx = zoomed_range(x_range, self._shown[0])
        zy = zoomed_range(y_range, self._shown[1])
        if zx is not None and zy is not None and (zx[2] or zy[2]):
            self._on_box(zx[0], zx[1], zy[0], zy[1])

    def _hook(self, plot, element) -> None:
        for span in self.spans:
            if span not in plot.state.center:
                plot.state.add_layout(span)

    def mark(self, x: float | None, y: float | None) -> None:
        for span, v in zip(self.spans, (x, y)):
            span.update(location=v, visible=v is not None)

    def show(self, spec, values, *, new: bool) -> None:
        """Draw ``values`` of ``spec``'s grid; ``new``: a new map (its own ranges, forgetting a zoom)."""
        if new:
            self._shown = None
            reset_ranges(self.image)
        self.pipe.send((spec, values))
        if spec is not None:
            self._shown = ((spec.x.lo, spec.x.hi), (spec.y.lo, spec.y.hi))


class OrbitDiagram:
    """An orbit diagram (rasterised points) with a box zoom that recomputes the diagram over
    the zoomed parameter range (``on_box(low, high)``), and a dashed marker at the current
    parameter value (a Bokeh ``Span`` moved in place: a new value must not re-render).

    The zoom is Bokeh's box zoom, read back as the figure's new x range (a ``RangeX``
    stream): a box-select geometry comes back in wrong coordinates from some browsers (the
    datashaded figure's ranges are set on the server), a zoomed range never does. Only a
    range strictly inside the diagram's own one counts as a zoom request, so the redraw of
    the new diagram, Back and Reset request nothing."""

    def __init__(self, variables: Callable[[], tuple], on_box: Callable, min_height: int = 380):
        self.pipe = hv.streams.Pipe(data=None)
        self._shown: tuple[float, float] | None = None
        self._on_zoom = on_box
        dm = hv.DynamicMap(lambda data: plots.orbit_image(data, variables()), streams=[self.pipe])
        self.raster = dm.opts(
            cmap="kbc_r", clipping_colors={"NaN": "transparent"}, active_tools=["box_zoom"], responsive=True, min_height=min_height, framewise=True)
        self.range = hv.streams.RangeX(source=self.raster)
        self.range.add_subscriber(self._on_range)
        self.span = crosshair()[0]
        self.pane = pn.pane.HoloViews(self.raster.opts(hooks=[plots.weak_hook(self._hook)]), linked_axes=False,
                                      sizing_mode="stretch_width", min_height=min_height)

    def _on_range(self, x_range=None) -> None:
        zoomed = zoomed_range(x_range, self._shown)
        if zoomed is not None and zoomed[2]:
            self._on_zoom(zoomed[0], zoomed[1])

    def _hook(self, plot, element) -> None:
        if self.span not in plot.state.center:
            plot.state.add_layout(self.span)

    def mark(self, value: float | None) -> None:
        self.span.update(location=value, visible=value is not None)

    def show(self, result) -> None:
        self._shown = None if result is None else (float(result.values.min()), float(result.values.max()))
        reset_ranges(self.raster)
        self.pipe.send(result)


class Curves:
    """Up to ``n`` curves against a shared horizontal axis, one per label (a trajectory's
    coordinates against time, running estimates against averaging time), drawn as lines or,
    for maps' iterates, as markers.

    One Bokeh figure, built once; its line (or marker) renderers, one legend entry each, are
    added as more curves are first needed and then reused: new data are written into their
    sources, visibility flags, labels and ranges (a data patch). A HoloViews overlay
    re-rendered per trajectory made new glyphs and legend items, which re-laid out the whole
    page in the browser: 0.7 s of a preset switch. Float32 data (drawing)."""

    COLORS = ('#30a2da', '#fc4f30', '#e5ae38', '#6d904f', '#8b8b8b', '#17becf', '#9467bd',
              '#d62728', '#1f77b4', '#e377c2')

    def __init__(self, n: int = 6, *, x_label: str = "t", y_label: str = "value",
                 title: str | None = None, height: int = 360, line_width: float = 1.0):
        from bokeh.models import HoverTool, Legend, Range1d
        from bokeh.plotting import figure

        self.n, self.line_width = n, line_width
        fig = figure(x_range=Range1d(0, 1), y_range=Range1d(0, 1), sizing_mode="stretch_width",
                     height=height, toolbar_location="above", title=title,
                     tools=TOOLS, x_axis_label=x_label,
                     y_axis_label=y_label)
        self.sources: list = []
        self.glyphs: dict[bool, list] = {False: [], True: []}     # markers? -> renderers
        self.items: list = []
        self.legend = Legend(items=[], location="top_left")
        fig.add_layout(self.legend, "right")
        self.hover = HoverTool(tooltips="$name: (@x, @y)", renderers=[])
        fig.add_tools(self.hover)
        self.fig = fig
        self.pane = pn.pane.Bokeh(fig, height=height, sizing_mode="stretch_width")

    def _ensure(self, count: int, markers: bool) -> None:
        """Renderers (lines or markers) and legend entries for ``count`` curves."""
        from bokeh.models import ColumnDataSource, LegendItem

        grown = False
        while len(self.sources) < count:
            self.sources.append(ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)}))
            self.items.append(LegendItem(label={"value": ""}, renderers=[], visible=False))
            grown = True
        pool = self.glyphs[markers]
        while len(pool) < count:
            i = len(pool)
            color = self.COLORS[i % len(self.COLORS)]
            kw = dict(source=self.sources[i], color=color, visible=False)
            r = (self.fig.scatter("x", "y", size=2.5, **kw) if markers
                 else self.fig.line("x", "y", line_width=self.line_width, **kw))
            pool.append(r)
            grown = True
        if grown:
            self.legend.items = list(self.items)
            self.hover.renderers = self.glyphs[False] + self.glyphs[True]

    def show(self, x, ys, labels, *, markers: bool = False, x_label: str | None = None) -> None:
        """Draw ``ys[i]`` against ``x`` labelled ``labels[i]`` (the first ``n``); ``x=None``
        clears the figure."""
        count = 0 if x is None else min(len(labels), self.n)
        self._ensure(count, markers)
        for i, src in enumerate(self.sources):
            on = i < count
            if on:
                src.data = {"x": np.asarray(x, np.float32), "y": np.asarray(ys[i], np.float32)}
            elif len(src.data["x"]):
                src.data = {"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)}
            for kind, pool in self.glyphs.items():
                if i < len(pool):
                    visible = on and kind == markers
                    if pool[i].visible != visible:
                        pool[i].visible = visible
                    if on:
                        pool[i].name = labels[i]
            self.items[i].visible = on
            if on:
                self.items[i].label = {"value": labels[i]}          # a text, not a column
                shown = [self.glyphs[markers][i]]                     # the legend's glyph
                if self.items[i].renderers != shown:
                    self.items[i].renderers = shown
        if x_label is not None:
            self.fig.xaxis.axis_label = x_label
        if count:
            y = np.concatenate([np.asarray(ys[i], np.float64) for i in range(count)])
            for rng, vals in ((self.fig.x_range, np.asarray(x, np.float64)),
                              (self.fig.y_range, y[np.isfinite(y)])):
                a, b = plots.fit_range(vals)
                rng.update(start=a, end=b, reset_start=a, reset_end=b)


class LyapunovBars:
    """Lyapunov exponents as bars (computed and, where known, published) and their running
    estimates (:class:`Curves`). Both figures are built with the first result, then
    updated in place."""

    #: running estimates drawn (the first ones: the largest exponents)
    MAX_CURVES = 10

    def __init__(self):
        # the figures are built with the first result (a session that never computes a
        # spectrum does not pay for them)
        self.fig = None
        self.box = pn.Column(visible=False, sizing_mode="stretch_width")

    def _build(self) -> None:
        from bokeh.models import ColumnDataSource, FactorRange, Range1d, Span
        from bokeh.plotting import figure

        # explicit ranges: a figure shown before its data must not have NaN ranges
        fig = figure(x_range=FactorRange(factors=[("λ1", "computed")]), y_range=Range1d(-1, 1),
                     height=300, sizing_mode="stretch_width", toolbar_location="above",
                     tools="save", y_axis_label="λ",
                     tooltips=[("", "@x"), ("λ", "@top{0.0000}")])
        self.source = ColumnDataSource({"x": [], "top": [], "color": [], "source": []})
        fig.vbar(x="x", top="top", width=0.9, color="color", source=self.source,
                 legend_field="source")
        fig.add_layout(Span(location=0, dimension="width", line_color="#868e96", line_width=1))
        legend = fig.legend[0]                    # beside the bars, never over one
        fig.center.remove(legend)
        fig.add_layout(legend, "right")
        fig.x_range.update(group_padding=0.6, factor_padding=0.1)
        fig.xgrid.grid_line_color = None
        self.fig = fig
        self.bars = pn.pane.Bokeh(fig, sizing_mode="stretch_width", height=300)
        self.curves = Curves(self.MAX_CURVES, x_label="averaging time", y_label="λ",
                             title="Running estimate (convergence)", height=260, line_width=1.5)
        self.convergence = self.curves.pane
        self.box.objects = [self.bars, self.convergence]

    def show(self, result, reference=None) -> None:
        """Draw ``result`` (None: no spectrum; once figures exist they stay in place, empty:
        hiding and showing them re-laid out the page at every new system)."""
        if result is None:
            if self.fig is not None:
                self.source.data = {"x": [], "top": [], "color": [], "source": []}
                self.curves.show(None, [], [])
            return
        if self.fig is None:
            self._build()
        self.box.visible = True
        rows = plots.lyapunov_rows(result, reference)
        colors = {"computed": "#1971c2", "published": "#adb5bd"}
        self.fig.x_range.factors = [(name, src) for name, src, _ in rows]
        self.source.data = {"x": [(name, src) for name, src, _ in rows],
                            "top": [v for _, _, v in rows], "color": [colors[src] for _, src, _ in rows],
                            "source": [src for _, src, _ in rows]}
        lo, hi = plots.fit_range(np.array([v for _, _, v in rows if math.isfinite(v)] + [0.0]), pad=0.08)
        self.fig.y_range.update(start=lo, end=hi)
        unit = "iterations" if result.kind == "map" else "time"
        if result.history is None:
            self.curves.show(None, [], [])
        else:
            h = result.history.numpy()
            self.curves.show(result.history_time.numpy(), [h[:, i] for i in range(h.shape[1])],
                             [f"λ{i + 1}" for i in range(h.shape[1])], x_label=f"averaging {unit}")
