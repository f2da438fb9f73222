"""Live plots: a HoloViews overlay drawn once, then updated in its Bokeh sources.

Every page that animates (training curves, free runs, attractor trails, spectra moving while a
model trains) shows its data through :class:`LivePlot`: the first data (and any change of
structure) go through a HoloViews stream and render; later data are written straight into the
Bokeh ``ColumnDataSource`` of each labelled layer (``patch`` replaces columns, ``stream``
appends rows), one small document patch instead of a re-render.

Animations are paced by the browser (:class:`FramePacer`): it acknowledges each frame once
applied, and the next frame is sent only then (or after :data:`FRAME_ACK_TIMEOUT`). Without
this a browser slower than the server queues seconds of frames, and every other message of the
page (a new parameter value, a pause label, the URL) waits behind them.
"""

from __future__ import annotations

import math
import time

import holoviews as hv
import panel as pn

from . import plots
from . import training_plots as tp

PLOT_OPTS = dict(toolbar="above", default_tools=["pan", "wheel_zoom", "box_zoom", "reset", "save"])

#: a frame not acknowledged by the browser within this many seconds is taken as lost
FRAME_ACK_TIMEOUT = 2.0


class FramePacer:
    """Browser-acknowledged frames: a ``CustomJS`` on one Bokeh source (write it last in each
    frame) sets its ``tags`` once the browser has applied a new ``data``; the server watches
    ``tags``. :meth:`ready` says whether the next frame may be sent."""

    def __init__(self, timeout: float = FRAME_ACK_TIMEOUT, on_ack=None):
        self.timeout = timeout
        self.source = None
        self.pending, self.sent = False, 0.0
        #: called (server side, document locked) when the browser has shown a frame: a page
        #: can send the next one at once instead of at its next tick
        self.on_ack = on_ack

    def watch(self, source) -> None:
        """Have the browser acknowledge every change of ``source``'s data."""
        from bokeh.models import CustomJS

        if source is self.source:
            return
        source.js_on_change("data", CustomJS(code="cb_obj.tags = [Date.now()]"))
        source.on_change("tags", self._ack)
        self.source, self.pending = source, False

    def _ack(self, attr, old, new) -> None:
        self.pending = False
        if self.on_ack is not None:
            self.on_ack()

    def ready(self) -> bool:
        """The last frame was shown (or is taken as lost)."""
        return not self.pending or time.monotonic() - self.sent >= self.timeout

    def sent_frame(self) -> None:
        """A frame went out (pending only once a source is watched)."""
        self.pending, self.sent = self.source is not None, time.monotonic()


class LivePlot:
    """A HoloViews overlay drawn once through a stream, then patched in place.

    ``builder(data)`` returns an overlay whose layers carry labels; after the first render a
    hook keeps each layer's Bokeh ``ColumnDataSource`` (by label) and the figure. :meth:`patch`
    replaces the layers' columns and sets the axis ranges (one data patch, no re-render);
    :meth:`stream` appends rows. Whenever the structure may differ (first data, other axes:
    ``key`` changed) the data goes through the stream and HoloViews re-renders.
    """

    def __init__(self, builder, *, height: int, logy: bool = False, decorate=None,
                 paced: bool = False):
        self.decorate = decorate                  # fig -> None, after each render (annotations)
        #: ``paced``: the browser acknowledges each patch (:meth:`ready`; animations)
        self.pacer = FramePacer() if paced else None
        self.pipe = plots.QuietPipe(data=None)
        self.sources: dict = {}
        self.fig = None
        self.key = None
        self.logy = logy
        dm = hv.DynamicMap(lambda data: builder(data), streams=[self.pipe])
        fw = dict(framewise=True)
        self.dmap = dm.opts(hv.opts.Curve(**fw), hv.opts.Points(**fw), hv.opts.Scatter(**fw),
                            hv.opts.Overlay(hooks=[plots.weak_hook(self._hook)], responsive=True, height=height,
                                            **fw, **PLOT_OPTS))
        self.pane = pn.pane.HoloViews(self.dmap, linked_axes=False, sizing_mode="stretch_width",
                                      height=height + 10)

    def _hook(self, plot, element) -> None:
        self.fig = plot.state
        self.sources = {sp.current_frame.label: sp.handles.get("source")
                        for sp in plot.subplots.values()
                        if sp.current_frame is not None and sp.handles.get("source") is not None}
        if self.logy:
            self._log_ticks()
        if self.decorate is not None:
            self.decorate(self.fig)
        if self.pacer is not None and self.sources:
            self.pacer.watch(list(self.sources.values())[-1])     # the last layer is written last

    def ready(self) -> bool:
        """Whether the browser has shown the last patch (always true unless ``paced``)."""
        return self.pacer is None or self.pacer.ready()

    def _can_patch(self, columns: dict, key) -> bool:
        if self.fig is None or key != self.key:
            return False
        for label, cols in columns.items():
            src = self.sources.get(label)
            if src is None or set(src.data) != set(cols):
                return False
        return True

    def send(self, data, key=None) -> None:
        """Re-render through HoloViews."""
        self.key = key
        self.pipe.send(data)

    def patch(self, data, columns: dict, *, key=None, x_range=None, y_range=None) -> None:
        """Show ``data`` (whose layers' columns are ``columns``) without a re-render when the
        plot's structure allows it."""
        if not self._can_patch(columns, key):
            self.send(data, key)
            return
        self.pipe.set_quietly(data)
        for label, cols in columns.items():
            self.sources[label].data = dict(cols)
        self.set_ranges(x_range, y_range)
        if self.pacer is not None:
            self.pacer.sent_frame()

    def stream(self, data, rows: dict, *, rollover: int, key=None, x_range=None, y_range=None) -> None:
        """Append ``rows`` (per label) to the layers' sources; ``data`` is the whole."""
        if not self._can_patch(rows, key):
            self.send(data, key)
            return
        self.pipe.set_quietly(data)
        for label, cols in rows.items():
            if len(next(iter(cols.values()))):
                self.sources[label].stream(dict(cols), rollover=rollover)
        self.set_ranges(x_range, y_range)
        if self.pacer is not None:
            self.pacer.sent_frame()

    def set_ranges(self, x_range=None, y_range=None) -> None:
        if self.fig is None:
            return
        for rng, value in ((self.fig.x_range, x_range), (self.fig.y_range, y_range)):
            if value is not None and all(math.isfinite(v) for v in value) and value[1] > value[0]:
                if (getattr(rng, "start", None), getattr(rng, "end", None)) != tuple(value):
                    rng.update(start=float(value[0]), end=float(value[1]))
        if self.logy:
            self._log_ticks()

    def _log_ticks(self) -> None:
        """Label a log y axis with :func:`training_plots.log_ticks` (a FixedTicker)."""
        from bokeh.models import FixedTicker

        rng = self.fig.y_range
        lo, hi = getattr(rng, "start", None), getattr(rng, "end", None)
        if lo is None or hi is None or not (lo > 0 and hi > lo):
            return
        ticks = tp.log_ticks(lo, hi)
        for axis in self.fig.yaxis:
            if isinstance(axis.ticker, FixedTicker):
                if list(axis.ticker.ticks) != ticks:
                    axis.ticker.ticks = ticks
            else:
                axis.ticker = FixedTicker(ticks=ticks)
