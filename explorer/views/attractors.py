"""The Attractors page's view: widgets built from the controller, streams, plots.

``AttractorsPanel(controller)`` is a :class:`panel.viewable.Viewer`; it owns no state of
its own beyond widgets and streams (all built per instance, so sessions never share them).
Results reach the plots only through HoloViews ``Pipe`` streams, published from the UI
thread when the controller's background jobs finish.
"""

from __future__ import annotations

import io
import math
import time

import datashader as ds
import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from holoviews.operation.datashader import rasterize

from ..controllers.attractors import CUSTOM, AttractorController
from ..controllers.jobs import JobRunner
from ..controllers.live import LiveEnsemble
from ..controllers.presets import PRESETS
from ..core.errors import ExplorerError
from ..core.registry import system_class
from . import plots
from .shell import dysts_available, prompt_widgets, schedule

PLOT_OPTS = dict(responsive=True, min_height=420, toolbar="above", default_tools=["pan", "wheel_zoom", "box_zoom", "reset", "save"])

#: the time series is sent this long after the attractor image (it is below the fold, and
#: its re-render would otherwise hold the server's event loop while the image is in flight)
TS_DELAY_MS = 200

LYAP_PROMPT = "Press **Compute Lyapunov spectrum**."

NO_SECTION = ("No Poincaré section for a map: its iterates are already a discrete section "
              "of time (the attractor plot shows them).")

#: a live frame not acknowledged by the browser within this many seconds is taken as lost
FRAME_ACK_TIMEOUT = 2.0

#: control groups that classroom mode can hide (``?classroom=1&hide=solver,dt``)
CONTROL_GROUPS = ("presets", "system", "params", "x0", "solver", "dt", "n", "duration", "view",
                  "color", "live", "lyapunov", "orbit", "section", "fixed", "export", "custom",
                  "device")


class AttractorsPanel(pn.viewable.Viewer):
    """Sidebar and main area of the Attractors page around one :class:`AttractorController`."""

    controller = param.ClassSelector(class_=AttractorController)

    def __init__(self, controller: AttractorController | None = None, *, sync_url: bool = False,
                 **params):
        ctrl = controller or AttractorController(dysts=dysts_available())
        super().__init__(controller=ctrl, **params)
        self._doc = pn.state.curdoc
        self._periodic = None                         # the UI tick (runs only while busy)
        ctrl.jobs.notify = self._schedule_poll
        self._live: LiveEnsemble | None = None
        self._last_frame = -1
        self._centre = None
        self._building = False
        self._frame_pending, self._frame_sent = False, 0.0
        self._was_connected = False
        self._sync_pending = False
        self._slider_key = None
        self._drag, self._drag_applied, self._drag_seen = (0.0, 0.0), 0.0, (0.0, 0.0)
        self._make_widgets()
        self._make_plots()
        self._layout()
        ctrl.param.watch(self._on_result, ["attractor", "lyapunov", "orbit", "section", "fixed"])
        ctrl.param.watch(self._on_status, ["status", "errors"])
        ctrl.param.watch(self._on_system_changed, ["system", "values", "x0", "solver", "dt", "n_traj",
                                                   "duration", "transient", "equations"])
        ctrl.param.watch(self._on_view_changed, ["x_var", "y_var", "z_var", "view", "azimuth",
                                                 "elevation"])
        ctrl.param.watch(self._on_classroom, ["classroom", "hidden"])
        ctrl.param.watch(self._on_preset, "preset")
        self._callbacks = []
        if sync_url and pn.state.location is not None:
            loc = pn.state.location
            query = dict(loc.query_params or {})
            if query:
                ctrl.apply_query(query, compute=False)
            ctrl.param.watch(self._push_url, "query_version")
        self._sync_widgets_now()
        self._on_classroom()
        self._on_preset()
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda ctx: self.close())
        ctrl.request_attractor()
        if ctrl.preset and ctrl.preset in PRESETS:
            ctrl.request_after_attractor(PRESETS[ctrl.preset].compute)

    # ================================================================ widgets
    def _make_widgets(self) -> None:
        c = self.controller
        self.w_preset = pn.widgets.Select(name="Teaching preset", options={"(none)": ""} | {
            p.title: k for k, p in PRESETS.items()}, value=c.preset, sizing_mode="stretch_width")
        self.preset_text = pn.pane.Markdown("", sizing_mode="stretch_width", css_classes=["preset-text"])
        self.w_search = pn.widgets.TextInput(name="System", placeholder="search systems ...",
                                             sizing_mode="stretch_width")
        self.w_system = pn.widgets.Select(name="", groups=self._system_groups(""), value=c.system,
                                          sizing_mode="stretch_width", size=1)
        self.params_box = pn.Column(sizing_mode="stretch_width")
        self.w_x0 = pn.widgets.TextInput(name="Initial condition", sizing_mode="stretch_width")
        self.x0_error = pn.pane.Markdown("", css_classes=["field-error"], sizing_mode="stretch_width")
        self.w_solver = pn.widgets.Select(name="Solver", options=["rk4", "dopri5", "euler"], value="rk4",
                                          sizing_mode="stretch_width")
        self.w_dt = pn.widgets.FloatInput(name="Time step dt", value=c.dt, start=1e-5, end=10.0,
                                          step=0.001, format="0.[00000]", sizing_mode="stretch_width")
        self.w_n = pn.widgets.IntInput(name="Trajectories", value=c.n_traj, start=1, end=100_000,
                                       sizing_mode="stretch_width")
        self.w_duration = pn.widgets.FloatInput(name="Duration", value=c.duration, start=1e-3, end=1e7,
                                                sizing_mode="stretch_width")
        self.w_transient = pn.widgets.FloatInput(name="Transient", value=c.transient, start=0.0,
                                                 end=1e6, sizing_mode="stretch_width")
        self.w_view = pn.widgets.RadioButtonGroup(name="View", options=["2D", "3D"], value=c.view,
                                                  button_type="default")
        self.w_xvar = pn.widgets.Select(name="horizontal", width=95)
        self.w_yvar = pn.widgets.Select(name="vertical", width=95)
        self.w_zvar = pn.widgets.Select(name="depth (3D)", width=95)
        self.w_az = pn.widgets.FloatSlider(name="Azimuth", start=-180, end=180, step=1, value=c.azimuth,
                                           sizing_mode="stretch_width")
        self.w_el = pn.widgets.FloatSlider(name="Elevation", start=-90, end=90, step=1, value=c.elevation,
                                           sizing_mode="stretch_width")
        self.w_color = pn.widgets.Select(name="Colour by", options={"time": "time", "speed": "speed",
                                                                     "local expansion rate": "expansion"},
                                         value=c.color_by, sizing_mode="stretch_width")
        # live mode
        self.b_play = pn.widgets.Button(name="▶ Run", button_type="success", width=70)
        self.b_pause = pn.widgets.Button(name="❚❚ Pause", width=70)
        self.b_step = pn.widgets.Button(name="Step", width=60)
        self.b_reset = pn.widgets.Button(name="Reset", width=60)
        self.w_speed = pn.widgets.IntSlider(name="Speed (steps per frame)", start=1, end=50, value=2,
                                            sizing_mode="stretch_width")
        self.w_live_n = pn.widgets.IntInput(name="Ensemble size", value=1000, start=1, end=100_000,
                                            sizing_mode="stretch_width")
        # analysis
        self.b_lyap = pn.widgets.Button(name="Compute Lyapunov spectrum", button_type="primary",
                                        sizing_mode="stretch_width")
        self.w_orbit_param = pn.widgets.Select(name="Parameter", width=110)
        self.w_orbit_var = pn.widgets.Select(name="Coordinate", width=110)
        self.w_orbit_lo = pn.widgets.FloatInput(name="from", width=110)
        self.w_orbit_hi = pn.widgets.FloatInput(name="to", width=110)
        self.b_orbit = pn.widgets.Button(name="Compute orbit diagram", button_type="primary",
                                         sizing_mode="stretch_width")
        self.b_orbit_back = pn.widgets.Button(name="◀ Back", width=80, disabled=True)
        self.w_sec_var = pn.widgets.Select(name="Section variable", width=130)
        self.w_sec_val = pn.widgets.FloatInput(name="at value (empty: its mean)", value=None,
                                               width=170)
        self.b_fixed = pn.widgets.Button(name="Find fixed points", button_type="primary",
                                         sizing_mode="stretch_width")
        # custom system
        self.w_equations = pn.widgets.TextAreaInput(name="Equations", value=c.equations, height=110,
                                                    sizing_mode="stretch_width")
        self.w_custom_params = pn.widgets.TextInput(name="Parameters", value=c.custom_params,
                                                    placeholder="name = value, ... (e.g. a = 0.2, b = 0.2)",
                                                    sizing_mode="stretch_width")
        self.custom_error = pn.pane.Markdown("", css_classes=["field-error"], sizing_mode="stretch_width")
        self.b_custom = pn.widgets.Button(name="Use these equations", button_type="primary",
                                          sizing_mode="stretch_width")
        # export
        self.d_csv = pn.widgets.FileDownload(callback=self._csv, filename="trajectory.csv",
                                             label="Trajectory CSV", button_type="light", width=135)
        self.d_npz = pn.widgets.FileDownload(callback=self._npz, filename="trajectory.npz",
                                             label="Trajectory NPZ", button_type="light", width=135)
        # status
        self.status = pn.pane.Markdown("", css_classes=["status-line"], sizing_mode="stretch_width")
        self.equations = pn.pane.LaTeX("", sizing_mode="stretch_width", styles={"font-size": "1.05em"})
        self.about = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.lyap_text = pn.pane.Markdown(LYAP_PROMPT, sizing_mode="stretch_width")
        self.fixed_table = pn.pane.DataFrame(pd.DataFrame(), sizing_mode="stretch_width", index=False,
                                             float_format="{:.5g}".format)
        self.orbit_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.section_text = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.live_text = pn.pane.Markdown("", sizing_mode="stretch_width")

        # wiring
        self.w_preset.param.watch(self._choose_preset, "value")
        self.w_search.param.watch(self._filter_systems, "value_input")
        self.w_system.param.watch(lambda e: self._set("system", e.new), "value")
        self.w_x0.param.watch(self._on_x0, "value")
        self.w_solver.param.watch(lambda e: self._set("solver", e.new), "value")
        self.w_dt.param.watch(lambda e: self._set("dt", e.new), "value")
        self.w_n.param.watch(lambda e: self._set("n_traj", e.new), "value")
        self.w_duration.param.watch(lambda e: self._set("duration", e.new), "value")
        self.w_transient.param.watch(lambda e: self._set("transient", e.new), "value")
        self.w_view.param.watch(lambda e: self._set("view", e.new), "value")
        self.w_xvar.param.watch(lambda e: self._set("x_var", e.new), "value")
        self.w_yvar.param.watch(lambda e: self._set("y_var", e.new), "value")
        self.w_zvar.param.watch(lambda e: self._set("z_var", e.new), "value")
        self.w_az.param.watch(lambda e: self._set("azimuth", e.new), "value")
        self.w_el.param.watch(lambda e: self._set("elevation", e.new), "value")
        self.w_color.param.watch(lambda e: self._set("color_by", e.new), "value")
        self.b_play.on_click(self._play)
        self.b_pause.on_click(self._pause)
        self.b_step.on_click(self._step)
        self.b_reset.on_click(self._reset)
        self.w_speed.param.watch(lambda e: self._live and self._live.set_speed(e.new), "value")
        self.w_live_n.param.watch(self._restart_live, "value")
        self.b_lyap.on_click(lambda e: self.controller.request_lyapunov())
        self.w_orbit_param.param.watch(lambda e: self._set("orbit_param", e.new), "value")
        self.w_orbit_var.param.watch(lambda e: self._set("orbit_var", e.new), "value")
        self.w_orbit_lo.param.watch(lambda e: self._set("orbit_low", e.new), "value")
        self.w_orbit_hi.param.watch(lambda e: self._set("orbit_high", e.new), "value")
        self.b_orbit.on_click(lambda e: self.controller.request_orbit())
        self.b_orbit_back.on_click(lambda e: self.controller.orbit_back())
        self.w_sec_var.param.watch(lambda e: self._set("section_var", e.new), "value")
        self.w_sec_val.param.watch(lambda e: self._set("section_value", e.new), "value")
        self.b_fixed.on_click(lambda e: self.controller.request_fixed_points())
        self.w_equations.param.watch(self._check_custom, "value_input")
        self.w_custom_params.param.watch(self._check_custom, "value_input")
        self.b_custom.on_click(self._apply_custom)

    def _system_groups(self, query: str) -> dict:
        q = query.strip().lower()
        groups: dict[str, dict[str, str]] = {}
        for name in self.controller.param.system.objects:
            if name == CUSTOM:
                label, origin = "Custom (your equations)", "Custom"
            else:
                cls = system_class(name)
                label = cls.title or name
                origin = {"builtin": "Built-in", "dysts": "dysts"}.get(cls.origin, cls.origin)
                if q and q not in label.lower() and q not in name:
                    continue
            groups.setdefault(origin, {})[label] = name
        if self.controller.system not in [v for g in groups.values() for v in g.values()]:
            cls = system_class(self.controller.system) if self.controller.system != CUSTOM else None
            groups.setdefault("Current", {})[cls.title if cls else "Custom"] = self.controller.system
        return groups

    def _filter_systems(self, event) -> None:
        self.w_system.groups = self._system_groups(event.new or "")

    # ================================================================ plots
    def _make_plots(self) -> None:
        c = self.controller
        self.pipe = hv.streams.Pipe(data=None)
        self.ts_pipe = hv.streams.Pipe(data=None)
        self.lyap_pipe = hv.streams.Pipe(data=None)
        self.orbit_pipe = hv.streams.Pipe(data=None)
        self.section_pipe = hv.streams.Pipe(data=None)

        self.image_pipe = plots.QuietPipe(data=None)
        self.render_jobs = JobRunner(notify=self._schedule_poll)
        self._pts = None                            # projected points of the current attractor
        self._rendered = None                       # (x_range, y_range) of the current image

        def image(data):
            return data if data is not None else plots.empty_image()

        def sparse(data):
            return plots.points_element(data, dense=False) if data else plots.empty_points()

        def lines(data):
            if not data:
                return hv.Path([])
            return plots.path_element(c.attractor, data["axes"], view=data["view"],
                                      azimuth=data["az"], elevation=data["el"])

        def triad(data):
            a = c.attractor
            if (not data or data["view"] != "3D" or a is None
                    or not all(v in a.variables for v in data["axes"])):
                return plots.empty_triad()
            return plots.axes_triad(c.attractor.x, c.attractor.variables, data["axes"], data["az"], data["el"])

        cmap = pn.bind(lambda col: plots.CMAPS[col], c.param.color_by)
        dm_img = hv.DynamicMap(image, streams=[self.image_pipe])
        dm_sparse = hv.DynamicMap(sparse, streams=[self.pipe])
        img = dm_img.apply.opts(cmap=cmap).opts(clim=(0.0, 1.0), colorbar=False, tools=["tap"],
                                                framewise=True, hooks=[self._image_hook], **PLOT_OPTS)
        pts = dm_sparse.apply.opts(color="c", cmap=cmap).opts(size=2.2, alpha=0.8, tools=["tap"],
                                                               framewise=True)
        self.view_range = hv.streams.RangeXY(source=dm_img)
        self.view_range.add_subscriber(self._on_zoom)
        self.tap = hv.streams.Tap(source=dm_sparse, x=None, y=None)
        self.tap.add_subscriber(self._on_tap)
        self._trail_fig = None
        self._img_source = None
        self._img_dims = ()
        self.attractor_plot = pn.pane.HoloViews(linked_axes=False, object=
            (img * hv.DynamicMap(lines, streams=[self.pipe]) * pts
             * hv.DynamicMap(triad, streams=[self.pipe])).opts(
                hv.opts.Overlay(responsive=True, min_height=460, framewise=True, title="")),
            sizing_mode="stretch_width", min_height=460)
        # flows as curves, maps as markers (iterates are not joined): two panes, one shown
        self.ts_map_pipe = hv.streams.Pipe(data=None)
        ts_opts = (hv.opts.NdOverlay(responsive=True, min_height=300, framewise=True,
                                     legend_position="right"),)
        self.ts_plot = pn.pane.HoloViews(linked_axes=False, object=hv.DynamicMap(
            plots.timeseries_plot, streams=[self.ts_pipe]).opts(
            hv.opts.Curve(line_width=1, framewise=True), *ts_opts),
            sizing_mode="stretch_width", min_height=360)
        self.ts_map_plot = pn.pane.HoloViews(linked_axes=False, object=hv.DynamicMap(
            lambda data: plots.timeseries_plot(data, markers=True), streams=[self.ts_map_pipe]).opts(
            hv.opts.Scatter(size=2.5, framewise=True), *ts_opts),
            sizing_mode="stretch_width", min_height=360)
        # shown through wrappers (toggling a HoloViews pane itself upsets Panel's stylesheets)
        self.ts_box = pn.Column(self.ts_plot, sizing_mode="stretch_width")
        self.ts_map_box = pn.Column(self.ts_map_plot, sizing_mode="stretch_width", visible=False)
        self.ts_caption = pn.pane.Markdown("**Time series**", sizing_mode="stretch_width")
        self._lyap_bars = 0
        self.lyap_plot = pn.pane.HoloViews(linked_axes=False, object=self._lyap_dmap(),
                                           sizing_mode="stretch_width")
        self.lyap_convergence = pn.pane.HoloViews(linked_axes=False, object=None,
                                                  sizing_mode="stretch_width")
        # shown once computed (toggling the HoloViews pane itself upsets Panel's stylesheets)
        self.lyap_box = pn.Column(self.lyap_plot, self.lyap_convergence, visible=False, sizing_mode="stretch_width")
        orbit_dm = hv.DynamicMap(lambda data: plots.orbit_points(data, c.variables()),
                                 streams=[self.orbit_pipe])
        orbit_r = rasterize(orbit_dm, aggregator=ds.count(), line_width=0).opts(
            cmap="kbc_r", cnorm="eq_hist", tools=["box_select"], active_tools=["box_select"],
            responsive=True, min_height=380, framewise=True)
        self._orbit_raster = orbit_r
        self.orbit_bounds = hv.streams.BoundsXY(source=orbit_r, bounds=None)
        self.orbit_bounds.add_subscriber(self._on_orbit_box)
        self._orbit_span = None
        self._orbit_mark = None                      # the current parameter value, or None
        orbit_r = orbit_r.opts(hooks=[self._orbit_hook])
        self.orbit_plot = pn.pane.HoloViews(linked_axes=False, object=orbit_r,
                                            sizing_mode="stretch_width", min_height=380)
        sec_dm = hv.DynamicMap(lambda data: plots.section_plot(*(data or (None, ("a", "b")))),
                               streams=[self.section_pipe]).opts(
            color="#1864ab", size=2.5, responsive=True, min_height=380, framewise=True, tools=["tap"])
        self.section_tap = hv.streams.Tap(source=sec_dm, x=None, y=None)
        self.section_tap.add_subscriber(self._on_section_tap)
        self.section_plot = pn.pane.HoloViews(linked_axes=False, object=sec_dm, sizing_mode="stretch_width", min_height=380)
        self.orbit_box = pn.Column(self.orbit_plot, sizing_mode="stretch_width")
        self.section_box = pn.Column(self.section_plot, sizing_mode="stretch_width")

    def _lyap_dmap(self) -> hv.DynamicMap:
        return hv.DynamicMap(lambda data: plots.lyapunov_plot(*(data or (None, None))),
                             streams=[self.lyap_pipe]).opts(
            hv.opts.Bars(responsive=True, height=300, framewise=True, tools=["hover"]))

    def _image_hook(self, plot, element) -> None:
        """Keep hold of the attractor image's Bokeh source (see :meth:`_show_image`) and add
        the live-mode trail glyphs to its figure (once per figure).

        Frames then update these sources directly, so an animation frame costs a data
        patch of a few glyphs instead of a HoloViews re-render of the whole overlay."""
        from bokeh.events import Pan, PanEnd
        from bokeh.models import ColorBar, ColumnDataSource, CustomJS, FixedTicker, LinearColorMapper

        fig = plot.state
        self._img_source = plot.handles.get("source")
        self._img_dims = tuple(d.label for d in element.kdims)
        if self._trail_fig is fig:
            return
        self._trail_sources = []
        for k in range(plots.TRAIL_BUCKETS):
            src = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
            fig.line("x", "y", source=src, color=plots.TRAIL_COLOR, line_width=1.0,
                     alpha=0.12 + 0.7 * (k + 1) / plots.TRAIL_BUCKETS)
            self._trail_sources.append(src)
        self._head_source = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
        fig.scatter("x", "y", source=self._head_source, size=3, color=plots.HEAD_COLOR)
        # Frames are paced by the browser: it acknowledges each frame once applied (the heads
        # are written last), and the next frame is sent only then. Without this, a browser
        # slower than the server queues frames, and every other message of the page (a new
        # parameter value, the pause label, the URL) waits behind seconds of trails.
        self._head_source.js_on_change("data", CustomJS(code="cb_obj.tags = [Date.now()]"))
        self._head_source.on_change("tags", self._frame_ack)
        self._frame_pending = False
        self._colorbar = ColorBar(color_mapper=LinearColorMapper(palette=_palette("time"), low=0, high=1),
                                  ticker=FixedTicker(ticks=[]), width=10, title="",
                                  title_text_font_style="normal", padding=4)
        fig.add_layout(self._colorbar, "right")
        fig.on_event(Pan, self._on_drag)
        fig.on_event(PanEnd, self._on_drag_end)
        self._trail_fig = fig

    #: degrees of rotation per pixel dragged in the 3D view
    DRAG_DEGREES = 0.5

    def _on_drag(self, event) -> None:
        """Drag in the 3D view: rotate (horizontal: azimuth, vertical: elevation), applied at
        most about ten times a second while the mouse moves, and once more on release."""
        if self.controller.view != "3D":
            return
        # Bokeh's pan deltas count from the start of the gesture: keep the part not yet applied
        total = (float(event.delta_x or 0.0), float(event.delta_y or 0.0))
        seen = self._drag_seen
        self._drag_seen = total
        dx, dy = self._drag
        self._drag = (dx + total[0] - seen[0], dy + total[1] - seen[1])
        if time.monotonic() - self._drag_applied > 0.1:
            self._apply_drag()

    def _on_drag_end(self, _event) -> None:
        if self.controller.view == "3D":
            self._apply_drag()
        self._drag_seen = (0.0, 0.0)

    def _apply_drag(self) -> None:
        dx, dy = self._drag
        self._drag, self._drag_applied = (0.0, 0.0), time.monotonic()
        if not (dx or dy):
            return
        c = self.controller
        az = (c.azimuth - self.DRAG_DEGREES * dx + 180.0) % 360.0 - 180.0
        el = min(90.0, max(-90.0, c.elevation + self.DRAG_DEGREES * dy))
        c.param.update(azimuth=round(az, 1), elevation=round(el, 1))
        self._building = True
        self.w_az.value, self.w_el.value = c.azimuth, c.elevation
        self._building = False

    def _frame_ack(self, attr, old, new) -> None:
        self._frame_pending = False

    def _set_trails(self, layers) -> None:
        if self._trail_fig is None:
            return
        empty = {"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)}
        if layers is None:
            for src in self._trail_sources + [self._head_source]:
                src.data = dict(empty)
            return
        *buckets, heads = layers
        for src, (x, y) in zip(self._trail_sources, buckets):
            src.data = {"x": x, "y": y}
        self._head_source.data = {"x": heads[0], "y": heads[1]}

    # ================================================================ layout
    def _layout(self) -> None:
        c = self.controller
        w = self
        self.groups = {
            "presets": pn.Column(w.w_preset, w.preset_text, sizing_mode="stretch_width"),
            "system": pn.Column(w.w_search, w.w_system, sizing_mode="stretch_width"),
            "params": w.params_box,
            "x0": pn.Column(w.w_x0, w.x0_error, sizing_mode="stretch_width"),
            "solver": w.w_solver, "dt": w.w_dt, "n": pn.Row(w.w_n, w.w_transient, sizing_mode="stretch_width"),
            "duration": w.w_duration,
            "view": pn.Column(w.w_view, pn.Row(w.w_xvar, w.w_yvar, w.w_zvar, sizing_mode="stretch_width"),
                              w.w_az, w.w_el, sizing_mode="stretch_width"),
            "color": w.w_color,
            "live": pn.Column(pn.Row(w.b_play, w.b_pause, w.b_step, w.b_reset), w.w_speed, w.w_live_n,
                              w.live_text, sizing_mode="stretch_width"),
            "export": pn.Row(w.d_csv, w.d_npz),
            "custom": pn.Card(w.w_equations, w.w_custom_params, w.custom_error, w.b_custom,
                              title="Custom system", collapsed=c.system != CUSTOM,
                              sizing_mode="stretch_width"),
            "lyapunov": pn.Column(w.b_lyap, w.lyap_text, w.lyap_box, sizing_mode="stretch_width"),
            "orbit": pn.Column(pn.Row(w.w_orbit_param, w.w_orbit_var, w.w_orbit_lo, w.w_orbit_hi),
                               pn.Row(w.b_orbit, w.b_orbit_back, sizing_mode="stretch_width"),
                               w.orbit_text, w.orbit_box, sizing_mode="stretch_width"),
            "section": pn.Column(pn.Row(w.w_sec_var, w.w_sec_val), w.section_text, w.section_box,
                                 sizing_mode="stretch_width"),
            "fixed": pn.Column(w.b_fixed, w.fixed_table, sizing_mode="stretch_width"),
        }
        g = self.groups
        self.sidebar = pn.Column(
            g["presets"], pn.layout.Divider(), g["system"], g["params"], g["x0"],
            pn.Row(g["solver"], g["dt"], sizing_mode="stretch_width"), g["n"], g["duration"],
            pn.layout.Divider(), pn.pane.Markdown("**View**"), g["view"], g["color"],
            pn.layout.Divider(), pn.pane.Markdown("**Live mode**"), g["live"],
            pn.layout.Divider(), g["custom"], pn.pane.Markdown("**Export**"), g["export"],
            sizing_mode="stretch_width", css_classes=["explorer-sidebar"])
        prompt_widgets(self.sidebar)
        self.tabs = pn.Tabs(("Lyapunov spectrum", g["lyapunov"]), ("Orbit diagram", g["orbit"]),
                            ("Poincaré section", g["section"]), ("Fixed points", g["fixed"]),
                            ("About this system", self.about),
                            dynamic=False, sizing_mode="stretch_width")
        self.main = pn.Column(
            self.status,
            pn.Row(pn.Column(self.attractor_plot, sizing_mode="stretch_width", min_height=480),
                   pn.Column(self.equations, self.ts_caption, self.ts_box, self.ts_map_box,
                             sizing_mode="stretch_width", max_width=440),
                   sizing_mode="stretch_width", min_height=480),
            self.tabs, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar, width=360), self.main, sizing_mode="stretch_width")

    # ================================================================ sync widgets <- controller
    def _sync_widgets(self) -> None:
        """Bring the widgets in line with the controller, once per burst of changes (a preset
        changes the system and a dozen settings; each full sync rebuilds the sliders)."""
        if self._doc is None or self._doc.session_context is None:
            self._sync_widgets_now()
        elif not self._sync_pending:
            self._sync_pending = True
            self._doc.add_next_tick_callback(self._sync_widgets_now)

    def _sync_widgets_now(self) -> None:
        self._sync_pending = False
        c = self.controller
        self._building = True
        try:
            var = list(c.variables())
            self.w_system.groups = self._system_groups(self.w_search.value or "")
            self.w_system.value = c.system
            self.w_x0.value = ", ".join(f"{v:.6g}" for v in c.x0)
            flow = self._kind() == "flow"
            self.w_solver.options = ["rk4", "dopri5", "euler"] if flow else ["map"]
            self.w_solver.value = c.solver
            self.w_dt.value, self.w_dt.disabled = c.dt, not flow
            self.w_duration.name = "Duration (time units)" if flow else "Iterations"
            self.w_transient.name = "Transient (time)" if flow else "Transient (iterations)"
            self.w_n.value, self.w_duration.value, self.w_transient.value = c.n_traj, c.duration, c.transient
            for w_, v in ((self.w_xvar, c.x_var), (self.w_yvar, c.y_var)):
                w_.options, w_.value = var, v
            # one variable: the page draws the delay plot x(n) -> x(n+1), nothing to choose
            self.w_xvar.visible = self.w_yvar.visible = len(var) > 1
            self.w_zvar.options = var
            if c.z_var in var:
                self.w_zvar.value = c.z_var
            self.w_view.options = ["2D", "3D"] if len(var) >= 3 else ["2D"]
            self.w_view.value = c.view
            self.w_zvar.visible = self.w_az.visible = self.w_el.visible = c.view == "3D"
            self.w_az.value, self.w_el.value = c.azimuth, c.elevation
            self.w_color.value = c.color_by
            specs = [p for p in c.param_specs() if not p.integer] if c.system != CUSTOM else []
            self.w_orbit_param.options = [p.name for p in specs]
            self.w_orbit_param.value = c.orbit_param if c.orbit_param in self.w_orbit_param.options else None
            self.w_orbit_param.disabled = not specs
            self.b_orbit.disabled = not specs
            self.w_orbit_var.options, self.w_orbit_var.value = var, c.orbit_var if c.orbit_var in var else var[0]
            self.w_orbit_lo.value, self.w_orbit_hi.value = c.orbit_low, c.orbit_high
            self.b_orbit_back.disabled = not c.orbit_history
            self.w_sec_var.options = var if flow else []
            self.w_sec_var.value = c.section_var if c.section_var in var else None
            self.w_sec_var.disabled = self.w_sec_val.disabled = not flow
            if not flow:
                self.section_text.object = NO_SECTION
            self.w_sec_val.value = c.section_value
            self.groups["section"].visible = True
            self.w_equations.value, self.w_custom_params.value = c.equations, c.custom_params
            self._build_sliders()
            self._describe()
        finally:
            self._building = False

    def _kind(self) -> str:
        try:
            return self.controller.current_system().kind
        except ExplorerError:
            return "flow"

    def _build_sliders(self) -> None:
        c = self.controller
        if c.system == CUSTOM:
            self._slider_key = None
            self.params_box.objects = [pn.pane.Markdown("*Parameters of a custom system are set in "
                                                        "the Custom system card below.*")]
            return
        specs = c.param_specs()
        key = tuple((p.name, p.low, p.high, p.integer) for p in specs)
        if key == self._slider_key:                    # same sliders: new values only
            for spec, s in zip(specs, self.params_box.objects):
                v = c.values.get(spec.name, spec.default)
                s.value = int(v) if spec.integer else float(v)
            return
        self._slider_key = key
        sliders = []
        for spec in specs:
            value = c.values.get(spec.name, spec.default)
            label = param_label(spec.name)
            if spec.integer:
                s = pn.widgets.IntSlider(name=label, start=int(spec.low), end=int(min(spec.high, 200)),
                                         value=int(value), sizing_mode="stretch_width")
            else:
                step = _nice_step(spec.low, spec.high)
                s = pn.widgets.EditableFloatSlider(
                    name=label, start=float(spec.low), end=float(spec.high), fixed_start=float(spec.low),
                    fixed_end=float(spec.high), value=float(value), step=step, format="0.[0000]",
                    sizing_mode="stretch_width")
            s.description = spec.doc or None
            s.param.watch(lambda e, n=spec.name: self._set_value(n, e.new), "value_throttled"
                          if not isinstance(s, pn.widgets.EditableFloatSlider) else "value")
            sliders.append(s)
        self.params_box.objects = sliders
        prompt_widgets(self.params_box)

    def _describe(self) -> None:
        try:
            sys_ = self.controller.current_system()
        except ExplorerError:
            return
        latex = sys_.latex or ""
        self.equations.object = (r"$$\begin{gathered}" + latex + r"\end{gathered}$$") if latex else ""
        lines = [f"### {sys_.title or sys_.name}", sys_.description or ""]
        if sys_.citation:
            lines.append(f"*Reference:* {sys_.citation}")
        ref = sys_.lyapunov_reference
        if ref is not None:
            lines.append("*Published Lyapunov exponents:* " + ", ".join(f"{v:.4g}" for v in ref.exponents)
                         + f" ({ref.source})")
        lines.append(f"*Origin:* {sys_.origin}; *dimension* {sys_.dim}; *kind* {sys_.kind}")
        self.about.object = "\n\n".join(lines)

    # ================================================================ controller <- widgets
    def _set(self, name: str, value) -> None:
        if self._building or value is None and name not in ("section_value",):
            return
        c = self.controller
        if getattr(c, name) == value:
            return
        try:
            setattr(c, name, value)
        except (ValueError, ExplorerError) as e:
            c.status = f"⚠ {str(e).splitlines()[0]}"

    def _set_value(self, name: str, value) -> None:
        if self._building:
            return
        self._guard(self.controller.set_value, name, value)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except (ValueError, ExplorerError) as e:
            self.controller.status = f"⚠ {str(e).splitlines()[0]}"

    def _on_x0(self, event) -> None:
        if self._building:
            return
        try:
            self.controller.set_x0([s for s in event.new.replace(";", ",").split(",") if s.strip()])
            self.x0_error.object = ""
        except (ExplorerError, ValueError) as e:
            self.x0_error.object = f"⚠ {e}"

    def _check_custom(self, _event=None) -> None:
        problems = self.controller.check_custom(self.w_equations.value_input or self.w_equations.value,
                                                self.w_custom_params.value_input or self.w_custom_params.value)
        self.custom_error.object = "" if not problems else "⚠ " + problems[0]
        self.b_custom.disabled = bool(problems)

    def _apply_custom(self, _event=None) -> None:
        c = self.controller
        eqs = self.w_equations.value_input or self.w_equations.value
        ptext = self.w_custom_params.value_input or self.w_custom_params.value
        problems = c.check_custom(eqs, ptext)
        if problems:
            self.custom_error.object = "⚠ " + problems[0]
            return
        with param.parameterized.batch_call_watchers(c):
            c.param.update(equations=eqs, custom_params=ptext)
        if c.system != CUSTOM:
            c.system = CUSTOM
        self.custom_error.object = ""

    # ================================================================ results -> streams
    def _schedule_poll(self) -> None:
        schedule(self._doc, self._poll)

    def _poll(self) -> None:
        with pn.io.hold():
            self.controller.poll()
            for d in self.render_jobs.poll():
                if d.error:
                    self.controller.status = f"⚠ drawing failed: {d.error}"
                else:
                    self._show_drawing(d.value)

    #: UI tick period (ms): live animation, and otherwise (progress of jobs; finished jobs
    #: are collected at once through ``_schedule_poll``, not by the tick)
    TICK_LIVE_MS, TICK_IDLE_MS = 25, 250

    def _ensure_tick(self) -> None:
        """Run the UI tick while something is computing or playing (it stops itself): 40 Hz
        for live mode, 4 Hz for progress (every tick holds the event loop the jobs' threads
        need for the GIL)."""
        live = self._live is not None and self._live.playing
        period = self.TICK_LIVE_MS if live else self.TICK_IDLE_MS
        if self._periodic is None or not self._periodic.running:
            self._periodic = pn.state.add_periodic_callback(self._tick, period=period, start=True)
        elif self._periodic.period != period:
            self._periodic.period = period

    def _connected(self) -> bool:
        """False once the browser tab has gone (its session may live on a few seconds more)."""
        ctx = getattr(self._doc, "session_context", None)
        session = getattr(ctx, "_session", None)
        conns = getattr(session, "_subscribed_connections", None)
        if conns:
            self._was_connected = True
        return conns is None or bool(conns) or not self._was_connected

    def _tick(self) -> None:
        if not self._connected():                 # the tab closed: stop sending at once
            self.close()
            return
        with pn.io.hold():                        # one document patch per tick
            self._poll()
            self._draw_live()
        live = self._live is not None and self._live.playing
        busy = self.controller.jobs.running() or self.render_jobs.running()
        if not live and not busy and self._periodic is not None:
            self._periodic.stop()
        elif not live and self._periodic is not None and self._periodic.period != self.TICK_IDLE_MS:
            self._periodic.period = self.TICK_IDLE_MS

    def _on_result(self, *events) -> None:
        for event in events:
            self._show_result(event.name)

    def _show_result(self, name: str) -> None:
        c = self.controller
        if name == "attractor":
            self._send_attractor()
        elif name == "lyapunov":
            r = c.lyapunov
            ref = None
            try:
                sys_ = c.current_system()
                if sys_.lyapunov_reference is not None and (sys_.lyapunov_reference.params is None or all(
                        abs(float(sys_.params[k]) - v) < 1e-9 for k, v in sys_.lyapunov_reference.params.items())):
                    if all(abs(float(sys_.params[k]) - sys_.defaults()[k]) < 1e-9 for k in sys_.defaults()):
                        ref = sys_.lyapunov_reference.exponents
            except (ExplorerError, KeyError):
                pass
            # the plot is shown before its bars change, and keeps them while hidden: changing
            # the number of bars of a hidden plot upsets Bokeh ("Size mismatch")
            self.lyap_box.visible = r is not None
            if r is not None:
                bars = len(plots.lyapunov_plot(r, ref))
                if bars != self._lyap_bars:
                    # a new figure for a new number of bars: BokehJS keeps the old bars'
                    # selection size for a figure updated in place ("Size mismatch")
                    self._lyap_bars = bars
                    self.lyap_pipe = hv.streams.Pipe(data=(r, ref))
                    self.lyap_plot.object = self._lyap_dmap()
                else:
                    self.lyap_pipe.send((r, ref))
                # drawn anew for each result (a handful of curves, once per computation)
                self.lyap_convergence.object = plots.lyapunov_convergence_plot(r).opts(
                    hv.opts.Curve(line_width=1.5, tools=["hover"]),
                    hv.opts.NdOverlay(responsive=True, height=240, legend_position="right",
                                      title="Running estimate (convergence)"))
            if r is None:
                self.lyap_text.object = LYAP_PROMPT
            else:
                ex = r.exponents.tolist()
                unit = "per iteration" if r.kind == "map" else "per time unit"
                txt = (f"**λ** = {', '.join(f'{v:.4f}' for v in ex)} ({unit}); "
                       f"Kaplan–Yorke dimension **{float(r.kaplan_yorke_dimension):.3f}**; "
                       f"averaged over {r.averaging_time:g} {'iterations' if r.kind == 'map' else 'time units'}")
                if ref is not None:
                    txt += "; published: " + ", ".join(f"{v:.4g}" for v in ref)
                if bool(r.diverged.any()):
                    txt += f"; ⚠ {int(r.diverged.sum())} member(s) diverged and were left out"
                self.lyap_text.object = txt
        elif name == "orbit":
            r = c.orbit
            _reset_ranges(self._orbit_raster)
            self.orbit_pipe.send(r)
            self._mark_orbit()
            self.b_orbit_back.disabled = not c.orbit_history
            if r is None:
                self.orbit_text.object = ""
            else:
                self.w_orbit_lo.value, self.w_orbit_hi.value = c.orbit_low, c.orbit_high
                nd = int(r.diverged.sum())
                self.orbit_text.object = (f"{r.param} ∈ [{c.orbit_low:.6g}, {c.orbit_high:.6g}], "
                                          f"{len(r.values)} values ({r.method}). Drag a box to zoom in."
                                          + (f" ⚠ diverged for {nd} values (not drawn)." if nd else ""))
        elif name == "section":
            s = c.section
            self.section_pipe.send(None if s is None else (s, c.attractor.variables))
            if s is None:
                self.section_text.object = NO_SECTION if self._kind() == "map" else ""
            else:
                var = c.attractor.variables[s.axis]
                self.section_text.object = (f"{len(s.points)} upward crossings of {var} = {s.value:.5g}. "
                                            "Click a point to start there.")
        elif name == "fixed":
            if c.fixed is None:
                self.fixed_table.object = pd.DataFrame()
                return
            rows = plots.fixed_points_table(c.fixed, c.variables())
            self.fixed_table.object = pd.DataFrame(rows) if rows else pd.DataFrame({"": ["no fixed point found"]})

    def _send_attractor(self) -> None:
        """Draw the attractor: projection and (above DENSE_POINTS) datashader aggregation run
        in a worker thread; the UI thread only hands the result to the plot."""
        c = self.controller
        data = c.attractor
        if data is None:                 # the next attractor replaces this drawing (and fits
            self._pts = None             # its view); clearing first costs two re-renders
            return
        axes = self._axes(data.variables)
        view, az, el = c.view, c.azimuth, c.elevation
        if view == "3D" and len(axes) == 3:
            idx = [list(data.variables).index(a) for a in axes]
            self._centre = np.nanmean(data.x[..., idx].reshape(-1, 3), axis=0)
        else:
            self._centre = None
        self._rendered = (None, None)

        def work(stop, progress):
            pts = plots.attractor_points(data, axes, view=view, azimuth=az, elevation=el)
            pts.update(axes=axes, view=view, az=az, el=el)
            dense = pts["u"].size > plots.DENSE_POINTS
            if dense:
                image, pts["ticks"] = plots.raster_image(pts, with_ticks=True)
                return pts, image
            return pts, None

        self.render_jobs.submit("image", work, label="drawing")

    def _show_drawing(self, value) -> None:
        """A finished drawing job: an image (dense) or points (sparse), then the time series."""
        if isinstance(value, hv.Image):              # a zoomed re-aggregation
            self._show_image(value, fit=False)
            return
        pts, image = value
        data = self.controller.attractor
        self._set_colorbar(pts.get("ticks", {}), self.controller.color_by,
                           data.kind if data is not None else "flow")
        if image is not None:
            self._pts = pts
            self._show_image(image)
            if self.pipe.data is None or self.pipe.data["u"].size:
                self.pipe.send({**pts, **{k: pts[k][:0] for k in ("u", "v", "c", "rank") if k in pts}})
        else:
            self._pts = None
            (l, r), (b, t) = plots.fit_range(pts["u"]), plots.fit_range(pts["v"])
            self.image_pipe.set_quietly(plots.empty_image(pts["labels"], bounds=(l, b, r, t)))
            self.pipe.send(pts)                      # re-renders the overlay, image included
            self._fit_view(l, b, r, t)
        # the time series after the attractor has reached the browser and been painted
        self._later(self._send_timeseries, delay_ms=TS_DELAY_MS)

    def _send_timeseries(self) -> None:
        data = self.controller.attractor
        is_map = data is not None and data.kind == "map"
        shown, hidden = (self.ts_map_pipe, self.ts_pipe) if is_map else (self.ts_pipe, self.ts_map_pipe)
        if hidden.data is not None:
            hidden.send(None)
        shown.send(data)
        self.ts_box.visible, self.ts_map_box.visible = not is_map, is_map
        self.ts_caption.object = plots.timeseries_caption(data)

    def _show_image(self, image: hv.Image, *, fit: bool = True) -> None:
        """Put a rasterised attractor on screen.

        When the axes are those already shown, the new pixels go straight into the Bokeh
        image glyph's source, with the new ranges (the values are equalised to [0, 1], so the
        colour mapper stays as it is): a data patch of one glyph. Through the image stream,
        HoloViews would re-render the whole overlay on the UI thread (about 50 ms for this
        plot), so only a change of axes takes that path. The stream's value is updated all
        the same, without an event, so a later re-render starts from this image. ``fit``:
        set the view to the image's bounds (a new attractor; not for a zoom's re-aggregation,
        whose view the user has set)."""
        src, fig = self._img_source, self._trail_fig
        l, b, r, t = image.bounds.lbrt()
        if src is None or fig is None or self._img_dims != tuple(d.label for d in image.kdims):
            self.image_pipe.send(image)
        else:
            self.image_pipe.set_quietly(image)
            pixels = image.dimension_values(2, flat=False)            # (H, W), bottom row first
            src.data = {"image": [pixels], "x": [l], "y": [b], "dw": [r - l], "dh": [t - b]}
        if fit:
            self._fit_view(l, b, r, t)

    def _set_colorbar(self, ticks: dict, color_by: str, kind: str) -> None:
        """The colour bar: what each colour stands for (ticks at ranks, labelled with values)."""
        bar = getattr(self, "_colorbar", None)
        if bar is None:
            return
        title = plots.COLOR_TITLES.get(color_by, color_by)
        if color_by == "time" and kind == "map":
            title = "iteration n"
        bar.color_mapper.palette = _palette(color_by)
        bar.ticker.ticks = list(ticks)
        bar.major_label_overrides = {float(k): v for k, v in ticks.items()}
        bar.title = title
        bar.visible = bool(ticks)

    def _fit_view(self, l: float, b: float, r: float, t: float) -> None:
        """Show exactly this box: a new attractor never inherits the previous one's view
        (HoloViews keeps a range the browser reported for the old axes)."""
        fig = self._trail_fig
        if fig is not None:
            fig.x_range.update(start=l, end=r)
            fig.y_range.update(start=b, end=t)
            # a rotated projection has no meaningful tick values: the triad shows the variables
            three_d = self.controller.view == "3D"
            alpha = 0.0 if three_d else 1.0
            for ax in list(fig.xaxis) + list(fig.yaxis):
                ax.update(major_label_text_alpha=alpha, major_tick_line_alpha=alpha,
                          minor_tick_line_alpha=alpha)
            # 3D: a drag rotates (no drag tool active); 2D: a drag pans
            pan = next((t for t in fig.tools if type(t).__name__ == "PanTool"), None)
            fig.toolbar.active_drag = None if three_d or pan is None else pan
        self._rendered = ((l, r), (b, t))

    def _later(self, fn, delay_ms: int = 0) -> None:
        """Run ``fn`` on a later tick (a separate document patch) or ``delay_ms`` later, or
        now without a server."""
        doc = self._doc
        if doc is not None and doc.session_context is not None:
            if delay_ms:
                doc.add_timeout_callback(fn, delay_ms)
            else:
                doc.add_next_tick_callback(fn)
        else:
            fn()

    def _render(self, pts, x_range=None, y_range=None) -> None:
        """Re-aggregate ``pts`` at a view range in a worker thread (zoom)."""
        self._rendered = (x_range, y_range)

        def work(stop, progress):
            return plots.raster_image(pts, x_range=x_range, y_range=y_range)

        self.render_jobs.submit("image", work, label="drawing")

    def _on_zoom(self, x_range=None, y_range=None) -> None:
        """Re-aggregate at the new view range (datashader's zoom), off the UI thread."""
        if self._pts is None or x_range is None or y_range is None:
            return
        last = self._rendered
        img = self.image_pipe.data
        if last is not None and last[0] is None and img is not None:
            (x0, y0, x1, y1) = img.bounds.lbrt()
            last = ((x0, x1), (y0, y1))
        if last is not None and last[0] is not None and _close(last[0], x_range) and _close(last[1], y_range):
            return
        self._render(self._pts, tuple(x_range), tuple(y_range))

    def _axes(self, variables) -> tuple[str, ...]:
        c = self.controller
        axes = [c.x_var, c.y_var] + ([c.z_var] if c.view == "3D" else [])
        if not all(a in variables for a in axes) or (c.view == "3D" and len(set(axes)) < 3):
            axes = list(variables[:3] if c.view == "3D" and len(variables) >= 3 else variables[:2])
            if len(axes) == 1:
                axes = axes * 2
        return tuple(axes)

    def _mark_orbit(self) -> None:
        """Move the orbit diagram's marker to the current parameter value (a Bokeh ``Span``
        updated in place: a parameter change must not re-render the orbit diagram)."""
        c = self.controller
        v = c.values.get(c.orbit_param) if c.system != CUSTOM else None
        self._orbit_mark = None if v is None else float(v)
        if self._orbit_span is not None:
            self._orbit_span.update(location=self._orbit_mark, visible=self._orbit_mark is not None)

    def _orbit_hook(self, plot, element) -> None:
        """Add the current-value marker to the orbit diagram's figure (once per figure)."""
        from bokeh.models import Span

        if self._orbit_span is not None and self._orbit_span in plot.state.center:
            return
        self._orbit_span = Span(dimension="height", line_color="#d9480f", line_width=1.5,
                                line_dash="dashed", location=self._orbit_mark,
                                visible=self._orbit_mark is not None)
        plot.state.add_layout(self._orbit_span)

    def _on_status(self, *_):
        c = self.controller
        if c.jobs.running():
            self._ensure_tick()
        self.status.object = c.status
        err = c.errors.get("custom")
        if err:
            self.custom_error.object = "⚠ " + err

    def _on_system_changed(self, *events) -> None:
        names = {e.name for e in events}
        for event in events:
            if "system" in names and event.name != "system":
                continue                         # a new system resyncs everything once
            self._system_event(event)

    def _system_event(self, event) -> None:
        c = self.controller
        if event.name in ("system", "equations") or (event.name == "values" and
                                                      len(c.x0) != len(self.w_x0.value.split(","))):
            self._stop_live()
            self._sync_widgets()
        elif event.name == "x0":
            self._building = True
            self.w_x0.value = ", ".join(f"{v:.6g}" for v in c.x0)
            self._building = False
            if self._live is not None:
                self._guard(self._live.reset, c.x0)
                self._draw_live(force=True)
        elif event.name == "values":
            self._mark_orbit()
            if self._live is not None:
                self._guard(self._live.set_system, c.current_system())
        elif event.name in ("solver", "dt"):
            self._restart_live()

    def _on_view_changed(self, *events) -> None:
        c = self.controller
        self._building = True
        try:
            self.w_view.value = c.view
            self.w_zvar.visible = self.w_az.visible = self.w_el.visible = c.view == "3D"
            for w_, v in ((self.w_xvar, c.x_var), (self.w_yvar, c.y_var), (self.w_zvar, c.z_var)):
                if v in w_.options:
                    w_.value = v
            self.w_az.value, self.w_el.value = c.azimuth, c.elevation
        finally:
            self._building = False
        self._send_attractor()
        self._draw_live(force=True)

    def _on_classroom(self, *_):
        c = self.controller
        hidden = set(c.hidden) if c.classroom else set()
        for name, obj in self.groups.items():
            obj.visible = name not in hidden

    def _choose_preset(self, event) -> None:
        if event.new and not self._building:
            self._guard(self.controller.apply_preset, event.new)

    def _on_preset(self, *_):
        c = self.controller
        p = PRESETS.get(c.preset)
        self._building = True
        self.w_preset.value = c.preset if p else ""
        self._building = False
        self.preset_text.object = f"**{p.title}.** {p.text}" if p else ""
        if p:
            self._sync_widgets()

    def _push_url(self, *_):
        loc = pn.state.location
        if loc is None:
            return
        from urllib.parse import urlencode
        q = self.controller.to_query()
        page = (loc.query_params or {}).get("page")
        if page:
            q = {"page": page, **q}
        loc.search = "?" + urlencode(q)

    # ================================================================ clicks
    def _on_tap(self, x=None, y=None) -> None:
        c = self.controller
        if x is None or y is None:
            return
        if c.view == "3D":
            c.status = "Clicks set the initial condition in the 2D view (the 3D projection is ambiguous)."
            return
        self._guard(c.set_point, {c.x_var: x, c.y_var: y})

    def _on_section_tap(self, x=None, y=None) -> None:
        c = self.controller
        s = c.section
        if x is None or y is None or s is None or c.attractor is None:
            return
        var = c.attractor.variables
        others = [v for i, v in enumerate(var) if i != s.axis][:2]
        self._guard(c.set_point, {others[0]: x, others[1]: y, var[s.axis]: s.value})

    def _on_orbit_box(self, bounds=None) -> None:
        if not bounds:
            return
        x0, _y0, x1, _y1 = bounds
        if not (math.isfinite(x0) and math.isfinite(x1)) or x1 - x0 <= 0:
            return
        self._guard(self.controller.zoom_orbit, x0, x1)

    # ================================================================ live mode
    def _make_live(self) -> LiveEnsemble:
        c = self.controller
        sys_ = c.current_system()
        flow = sys_.kind != "map"
        solver = ("rk4" if c.solver == "dopri5" else c.solver) if flow else None
        return LiveEnsemble(sys_, c.x0, n=int(self.w_live_n.value or 1000), trail=16,
                            steps_per_frame=self.w_speed.value, dt=c.dt if flow else None,
                            solver=solver, spread=0.02, device="cpu")

    def _live_label(self) -> None:
        live = self._live
        if live is None:
            self.live_text.object = ""
            return
        n = f"{live.n:,} trajector{'y' if live.n == 1 else 'ies'}"
        self.live_text.object = f"running: {n}" if live.playing else f"paused: {n}, t = {live.frame().t:.4g}"

    def _play(self, _event=None) -> None:
        try:
            if self._live is None:
                self._live = self._make_live()
            self._live.play()
            self._ensure_tick()
        except (ExplorerError, ValueError) as e:
            self.live_text.object = f"⚠ {e}"
            return
        self._live_label()

    def _pause(self, _event=None) -> None:
        if self._live is not None:
            self._live.pause()
            self._draw_live(force=True)
            self._live_label()

    def _step(self, _event=None) -> None:
        if self._live is None:
            try:
                self._live = self._make_live()
            except (ExplorerError, ValueError) as e:
                self.live_text.object = f"⚠ {e}"
                return
        self._live.pause()
        self._guard(self._live.step)
        self._draw_live(force=True)
        self._live_label()

    def _reset(self, _event=None) -> None:
        if self._live is not None:
            self._guard(self._live.reset, self.controller.x0)
            self._draw_live(force=True)
            self._live_label()

    def _restart_live(self, _event=None) -> None:
        """Rebuild the running ensemble with the current settings (size, dt), keeping its
        playing state."""
        if self._live is None:
            return
        playing = self._live.playing
        self._live.close()
        self._live = None
        if playing:
            self._play()
        else:
            self._step()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.close()
            self._live = None
            self._set_trails(None)
            self.live_text.object = ""

    def _draw_live(self, force: bool = False) -> None:
        live = self._live
        if live is None:
            return
        if live.error:
            self.live_text.object = f"⚠ {live.error}"
            live.error = None
        frame = live.frame()
        if frame.index == self._last_frame and not force:
            return
        now = time.monotonic()
        if self._frame_pending and now - self._frame_sent < FRAME_ACK_TIMEOUT and not force:
            return                                    # the browser has not shown the last one
        self._frame_pending, self._frame_sent = self._trail_fig is not None, now
        self._last_frame = frame.index
        c = self.controller
        axes = self._axes(live.system.variables)
        self._set_trails(plots.trail_layers(frame.trails, live.system.variables, axes, view=c.view,
                                            azimuth=c.azimuth, elevation=c.elevation,
                                            centre=self._centre))
        if frame.n_diverged:
            self.live_text.object = (f"t = {frame.t:.2f}: {frame.n_diverged} of {live.n} trajectories "
                                     "diverged (frozen)")

    # ================================================================ export
    def _arrays(self):
        data = self.controller.attractor
        if data is None:
            raise ExplorerError("nothing computed yet")
        return data

    def _csv(self):
        data = self._arrays()
        T, B, D = data.x.shape
        buf = io.StringIO()
        frame = pd.DataFrame({"t": np.repeat(data.t, B), "member": np.tile(np.arange(B), T)})
        for i, v in enumerate(data.variables):
            frame[v] = data.x[:, :, i].reshape(-1)
        frame.to_csv(buf, index=False, float_format="%.7g")
        buf.seek(0)
        return io.BytesIO(buf.getvalue().encode())

    def _npz(self):
        data = self._arrays()
        buf = io.BytesIO()
        x = data.x[:, 0] if data.x.shape[1] == 1 else data.x
        np.savez_compressed(buf, t=data.t, x=x, variables=np.array(data.variables),
                            system=np.array(data.system))
        buf.seek(0)
        return buf

    # ================================================================ lifetime
    def close(self) -> None:
        self._stop_live()
        self.controller.close()
        self.render_jobs.close()
        if self._periodic is not None:
            try:
                self._periodic.stop()
            except Exception:
                pass


_GREEK = {name: chr(code) for name, code in (
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3B5),
    ("zeta", 0x3B6), ("eta", 0x3B7), ("theta", 0x3B8), ("kappa", 0x3BA), ("lambda", 0x3BB),
    ("lam", 0x3BB), ("mu", 0x3BC), ("nu", 0x3BD), ("xi", 0x3BE), ("pi", 0x3C0), ("rho", 0x3C1),
    ("sigma", 0x3C3), ("tau", 0x3C4), ("phi", 0x3C6), ("chi", 0x3C7), ("psi", 0x3C8),
    ("omega", 0x3C9), ("Omega", 0x3A9), ("Gamma", 0x393), ("Delta", 0x394))}


def param_label(name: str) -> str:
    """A parameter's label as the equations write it: ``sigma`` -> ``σ``, ``beta1`` -> ``β1``."""
    head = name.rstrip("0123456789_")
    return _GREEK[head] + name[len(head):].lstrip("_") if head in _GREEK else name


def warm_up() -> float:
    """Pay the page's first-use costs once per process (at server start), not in the first
    student's session: building the page's HoloViews/Bokeh models for the first time (about
    2.4 s more than later sessions), numba's compilation of the datashader aggregation (about
    4 s at the first dense attractor) and loading the native simulation library. Returns the
    seconds it took."""
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    u, v, c = (rng.standard_normal(plots.DENSE_POINTS + 1).astype(np.float32) for _ in range(3))
    plots.raster_image({"u": u, "v": v, "c": c, "labels": ("x", "y")}, with_ticks=True)
    controller = AttractorController(auto=False)
    controller.request_attractor()
    controller.wait(60)
    doc = Document()
    with set_curdoc(doc):
        view = AttractorsPanel(controller)
        pn.Row(view.sidebar, view.main).get_root(doc)
        view.close()
    return time.perf_counter() - t0


def _palette(color_by: str) -> list[str]:
    from holoviews.plotting.util import process_cmap
    return process_cmap(plots.CMAPS.get(color_by, "viridis"), 256)


def _close(a, b, rel: float = 1e-6) -> bool:
    span = max(abs(a[1] - a[0]), 1e-300)
    return abs(a[0] - b[0]) <= rel * span and abs(a[1] - b[1]) <= rel * span


def _reset_ranges(dmap) -> None:
    """Let a rasterised plot fit its next data: forget the viewport it last aggregated over."""
    for stream in getattr(dmap, "streams", []):
        if isinstance(stream, hv.streams.RangeXY):
            stream.update(x_range=None, y_range=None)


def _nice_step(low: float, high: float) -> float:
    span = float(high) - float(low)
    if not math.isfinite(span) or span <= 0:
        return 0.01
    return 10 ** math.floor(math.log10(span / 1000))
