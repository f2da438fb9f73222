"""The Attractors page's view: widgets built from the controller, streams, plots.

``AttractorsPanel(controller)`` is a :class:`~explorer.views.base.PageView`; it owns no state of
its own beyond widgets and plots (all built per instance, so sessions never share them).
Results reach the plots only through HoloViews streams, published from the UI thread when the
controller's background jobs finish. The attractor, its live trails, colour bar and 3D
rotation are a :class:`~explorer.views.canvas.ProjectionCanvas`; live mode itself (play, pause,
rebuilds) is the controller's, the view only draws its frames.
"""

from __future__ import annotations

import io
import threading
import time

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from ..controllers.attractors import CUSTOM, AttractorController
from ..controllers.presets import PRESETS
from ..core.analysis.lyapunov import prepare_native
from ..core.errors import ExplorerError
from . import plots
from .base import PageView, lazy_tabs, message
from .canvas import Curves, LyapunovBars, OrbitDiagram, ProjectionCanvas, Rotator
from .parameter_map import ParameterMapPanel
from .live import FRAME_ACK_TIMEOUT  # noqa: F401  (frames are paced by the browser: see live.py)
from .shell import dysts_available, prompt_widgets
from .source import ParamSliders, SystemPicker, param_label  # noqa: F401  (param_label: public)

#: the time series is sent this long after the attractor image (it is below the fold, and
#: its re-render would otherwise hold the server's event loop while the image is in flight)
TS_DELAY_MS = 200

LYAP_PROMPT = "Press **Compute Lyapunov spectrum**."

NO_SECTION = ("No Poincaré section for a map: its iterates are already a discrete section "
              "of time (the attractor plot shows them).")

#: control groups that classroom mode can hide (``?classroom=1&hide=solver,dt``)
CONTROL_GROUPS = ("presets", "system", "params", "x0", "solver", "dt", "n", "duration", "view",
                  "color", "live", "lyapunov", "orbit", "map", "section", "fixed", "export",
                  "custom", "device")

SW = {"sizing_mode": "stretch_width"}


class AttractorsPanel(PageView):
    """Sidebar and main area of the Attractors page around one :class:`AttractorController`."""

    controller = param.ClassSelector(class_=AttractorController)

    def __init__(self, controller: AttractorController | None = None, *, sync_url: bool = False,
                 **params):
        ctrl = controller or AttractorController(dysts=dysts_available())
        super().__init__(ctrl, **params)
        ctrl.wait_for_picture = self.served         # a browser draws: analyses come after
        self._last_frame = -1
        self._sync_pending = self._redraw_pending = False
        self._make_widgets()
        self._make_plots()
        self._layout()
        ctrl.param.watch(self._on_result, ["attractor", "lyapunov", "orbit", "section", "fixed"])
        ctrl.param.watch(self._on_status, ["status", "live_status"])
        ctrl.param.watch(self._on_settings, ["system", "values", "x0", "solver", "equations"])
        ctrl.param.watch(self._on_view_changed, ["x_var", "y_var", "z_var", "view", "azimuth",
                                                 "elevation"])
        ctrl.param.watch(self._on_classroom, ["classroom", "hidden"])
        ctrl.param.watch(self._on_preset, "preset")
        if sync_url and pn.state.location is not None:
            query = dict(pn.state.location.query_params or {})
            if query:
                ctrl.apply_query(query, compute=False)
            ctrl.param.watch(self._push_url, "query_version")
        self._sync_widgets_now()
        self._on_classroom()
        self._on_preset()
        ctrl.request_attractor()
        if ctrl.preset and ctrl.preset in PRESETS:
            ctrl.request_after_attractor(PRESETS[ctrl.preset].compute)

    # ================================================================ widgets
    def _make_widgets(self) -> None:
        c = self.controller
        self.w_preset = pn.widgets.Select(name="Teaching preset", options={"(none)": ""} | {
            p.title: k for k, p in PRESETS.items()}, value=c.preset, **SW)
        self.preset_text = pn.pane.Markdown("", css_classes=["preset-text"], **SW)
        self.picker = SystemPicker(c, toggle_custom=False)
        self.sliders = ParamSliders(lambda name, v: self.guard(c.set_value, name, v))
        self.w_x0 = pn.widgets.TextInput(name="Initial condition", **SW)
        self.x0_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        # bounds, options and tooltips come from the controller's parameter declarations
        self.w_solver = pn.widgets.Select.from_param(c.param.solver, name="Solver", **SW)
        self.w_dt = self.number_input("dt", name="Time step dt", step=0.001, format="0.[00000]", **SW)
        self.w_n = self.number_input("n_traj", pn.widgets.IntInput, name="Trajectories", **SW)
        self.w_duration = self.number_input("duration", name="Duration", **SW)
        self.w_transient = self.number_input("transient", name="Transient", **SW)
        self.w_view = pn.widgets.RadioButtonGroup.from_param(c.param.view, name="View",
                                                             button_type="default")
        self.w_xvar = pn.widgets.Select(name="horizontal", width=95)
        self.w_yvar = pn.widgets.Select(name="vertical", width=95)
        self.w_zvar = pn.widgets.Select(name="depth (3D)", width=95)
        self.w_az = pn.widgets.FloatSlider.from_param(c.param.azimuth, name="Azimuth", step=1, **SW)
        self.w_el = pn.widgets.FloatSlider.from_param(c.param.elevation, name="Elevation", step=1, **SW)
        self.w_color = pn.widgets.Select.from_param(c.param.color_by, name="Colour by", **SW)
        # live mode (the controller's)
        self.b_play = pn.widgets.Button(name="▶ Run", button_type="success", width=70)
        self.b_pause = pn.widgets.Button(name="❚❚ Pause", width=70)
        self.b_step = pn.widgets.Button(name="Step", width=60)
        self.b_reset = pn.widgets.Button(name="Reset", width=60)
        self.w_speed = pn.widgets.IntSlider.from_param(c.param.live_speed,
                                                       name="Speed (steps per frame)", **SW)
        self.w_live_n = self.number_input("live_n", pn.widgets.IntInput, name="Ensemble size", **SW)
        self.live_text = pn.pane.Markdown(c.param.live_status, **SW)
        # analysis
        self.b_lyap = pn.widgets.Button(name="Compute Lyapunov spectrum", button_type="primary", **SW)
        self.w_orbit_param = pn.widgets.Select(name="Parameter", width=110)
        self.w_orbit_var = pn.widgets.Select(name="Coordinate", width=110)
        self.w_orbit_lo = self.number_input("orbit_low", name="from", width=110)
        self.w_orbit_hi = self.number_input("orbit_high", name="to", width=110)
        self.b_orbit = pn.widgets.Button(name="Compute orbit diagram", button_type="primary", **SW)
        self.b_orbit_back = pn.widgets.Button(name="◀ Back", width=80, disabled=True)
        self.w_sec_var = pn.widgets.Select(name="Section variable", width=130)
        self.w_sec_val = self.number_input("section_value", name="at value (empty: its mean)", width=170)
        self.b_fixed = pn.widgets.Button(name="Find fixed points", button_type="primary", **SW)
        self.d_csv = pn.widgets.FileDownload(callback=self._csv, filename="trajectory.csv",
                                             label="Trajectory CSV", button_type="light", width=135)
        self.d_npz = pn.widgets.FileDownload(callback=self._npz, filename="trajectory.npz",
                                             label="Trajectory NPZ", button_type="light", width=135)
        # text
        self.status = pn.pane.Markdown(c.param.status, css_classes=["status-line"], **SW)
        self.equations = pn.pane.LaTeX("", styles={"font-size": "1.05em"}, **SW)
        self.about = pn.pane.Markdown("", **SW)
        self.lyap_text = pn.pane.Markdown(LYAP_PROMPT, **SW)
        self.fixed_table = pn.pane.DataFrame(pd.DataFrame(), index=False,
                                             float_format="{:.5g}".format, **SW)
        self.orbit_text = pn.pane.Markdown("", **SW)
        self.section_text = pn.pane.Markdown("", **SW)

        self.w_preset.param.watch(self._choose_preset, "value")
        self.w_x0.param.watch(self._on_x0, "value")
        for w, name in ((self.w_xvar, "x_var"), (self.w_yvar, "y_var"), (self.w_zvar, "z_var"),
                        (self.w_orbit_param, "orbit_param"), (self.w_orbit_var, "orbit_var"),
                        (self.w_sec_var, "section_var")):
            w.param.watch(lambda e, name=name: self.set_param(name, e.new), "value")
        for button, action in ((self.b_play, c.play), (self.b_pause, c.pause), (self.b_step, c.step),
                               (self.b_reset, c.reset), (self.b_lyap, c.request_lyapunov),
                               (self.b_orbit, c.request_orbit), (self.b_orbit_back, c.orbit_back),
                               (self.b_fixed, c.request_fixed_points)):
            button.on_click(lambda e, action=action: self.act(action))

    # ================================================================ plots
    def _make_plots(self) -> None:
        c = self.controller
        rotator = Rotator(get=lambda: (c.azimuth, c.elevation),
                          set=lambda az, el: c.param.update(azimuth=az, elevation=el),
                          active=lambda: c.view == "3D")
        self.canvas = ProjectionCanvas(cmap=plots.CMAPS[c.color_by],
                                       on_tap=self._on_tap, rotator=rotator,
                                       on_drawn=lambda: self.later(self._send_timeseries, TS_DELAY_MS),
                                       notify=self._schedule_poll)
        self.on_close(self.canvas)
        self.attractor_plot = self.canvas.pane
        # flows as curves, maps as markers (iterates are not joined), written in place
        self.ts = Curves(6, x_label="t", y_label="value", height=360)
        self.ts_caption = pn.pane.Markdown("**Time series**", **SW)
        self.lyap = LyapunovBars()
        self.orbit = OrbitDiagram(c.variables, lambda lo, hi: self.guard(c.zoom_orbit, lo, hi))
        self.orbit_plot = self.orbit.pane
        self.section_pipe = hv.streams.Pipe(data=None)
        sec_dm = hv.DynamicMap(lambda data: plots.section_plot(*(data or (None, ("a", "b")))),
                               streams=[self.section_pipe]).opts(
            color="#1864ab", size=2.5, responsive=True, min_height=380, framewise=True, tools=["tap"])
        self.section_tap = hv.streams.Tap(source=sec_dm, x=None, y=None)
        self.section_tap.add_subscriber(self._on_section_tap)
        self.section_plot = pn.pane.HoloViews(sec_dm, linked_axes=False, min_height=380, **SW)
        self.map_panel = ParameterMapPanel(self, c.maps)

    # ================================================================ layout
    def _layout(self) -> None:
        c, w = self.controller, self
        self.groups = {
            "presets": pn.Column(w.w_preset, w.preset_text, **SW),
            "system": w.picker.picker,
            "params": w.sliders.box,
            "x0": pn.Column(w.w_x0, w.x0_error, **SW),
            "solver": w.w_solver, "dt": w.w_dt, "n": pn.Row(w.w_n, w.w_transient, **SW),
            "duration": w.w_duration,
            "view": pn.Column(w.w_view, pn.Row(w.w_xvar, w.w_yvar, w.w_zvar, **SW), w.w_az, w.w_el, **SW),
            "color": w.w_color,
            "live": pn.Column(pn.Row(w.b_play, w.b_pause, w.b_step, w.b_reset), w.w_speed, w.w_live_n,
                              w.live_text, **SW),
            "export": pn.Row(w.d_csv, w.d_npz),
            "custom": pn.Card(w.picker.custom_box, title="Custom system", collapsed=c.system != CUSTOM, **SW),
            "lyapunov": pn.Column(w.b_lyap, w.lyap_text, w.lyap.box, **SW),
            "orbit": pn.Column(pn.Row(w.w_orbit_param, w.w_orbit_var, w.w_orbit_lo, w.w_orbit_hi),
                               pn.Row(w.b_orbit, w.b_orbit_back, **SW), w.orbit_text,
                               pn.Column(w.orbit_plot, **SW), **SW),
            "section": pn.Column(pn.Row(w.w_sec_var, w.w_sec_val), w.section_text,
                                 pn.Column(w.section_plot, **SW), **SW),
            "fixed": pn.Column(w.b_fixed, w.fixed_table, **SW),
            "map": self.map_panel.box,
        }
        g, divider = self.groups, pn.layout.Divider
        self.sidebar = pn.Column(
            g["presets"], divider(), g["system"], g["params"], g["x0"],
            pn.Row(g["solver"], g["dt"], **SW), g["n"], g["duration"],
            divider(), pn.pane.Markdown("**View**"), g["view"], g["color"],
            divider(), pn.pane.Markdown("**Live mode**"), g["live"],
            divider(), g["custom"], pn.pane.Markdown("**Export**"), g["export"],
            css_classes=["explorer-sidebar"], **SW)
        prompt_widgets(self.sidebar)
        self.tabs = lazy_tabs(("Lyapunov spectrum", g["lyapunov"]), ("Orbit diagram", g["orbit"]),
                            ("Parameter map", g["map"]), ("Poincaré section", g["section"]), ("Fixed points", g["fixed"]),
                            ("About this system", self.about), dynamic=False, **SW)
        self.main = pn.Column(
            self.status,
            pn.Row(pn.Column(self.attractor_plot, min_height=480, **SW),
                   pn.Column(self.equations, self.ts_caption, self.ts.pane,
                             max_width=440, **SW), min_height=480, **SW),
            self.tabs, **SW)

    # ================================================================ widgets <- controller
    def _sync_widgets(self) -> None:
        """Bring the widgets in line with the controller, once per burst of changes (a preset
        changes the system and a dozen settings; each full sync rebuilds the sliders)."""
        if not self.served:
            self._sync_widgets_now()
        elif not self._sync_pending:
            self._sync_pending = True
            self._doc.add_next_tick_callback(self._sync_widgets_now)

    def _sync_widgets_now(self) -> None:
        self._sync_pending = False
        c = self.controller
        with self.building(), self.batch():
            var = list(c.variables())
            flow = not c.is_map()
            self.picker.sync()
            self.w_x0.value = ", ".join(f"{v:.6g}" for v in c.x0)
            self.w_dt.disabled = not flow
            self.w_duration.name = "Duration (time units)" if flow else "Iterations"
            self.w_transient.name = "Transient (time)" if flow else "Transient (iterations)"
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
            specs = [p for p in c.param_specs() if not p.integer] if c.system != CUSTOM else []
            self.w_orbit_param.options = [p.name for p in specs]
            self.w_orbit_param.value = c.orbit_param if c.orbit_param in self.w_orbit_param.options else None
            self.w_orbit_param.disabled = self.b_orbit.disabled = not specs
            self.w_orbit_var.options, self.w_orbit_var.value = var, c.orbit_var if c.orbit_var in var else var[0]
            self.b_orbit_back.disabled = not c.orbit_history
            self.w_sec_var.options = var if flow else []
            self.w_sec_var.value = c.section_var if c.section_var in var else None
            self.w_sec_var.disabled = self.w_sec_val.disabled = not flow
            if not flow:
                self.section_text.object = NO_SECTION
            if c.system == CUSTOM:
                self.sliders.note("*Parameters of a custom system are set in the Custom system card below.*")
            else:
                self.sliders.show(c.param_specs(), c.values)
            self._describe()
            self._mark_orbit()

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

    def _on_status(self, *_) -> None:
        if self.controller.busy() or self.controller.playing:
            self.ensure_tick()
        # a pause, step or reset shows its frame, on the next tick: this watcher also runs
        # inside button handlers, where a direct write into the trail sources once hit
        # Bokeh outside the session's document lock (CI: "_pending_writes should be non-None")
        self.later(lambda: self._draw_live(force=True))

    def _on_settings(self, *events) -> None:
        c, names = self.controller, {e.name for e in events}
        if names & {"system", "equations", "solver"} or len(c.x0) != len(self.w_x0.value.split(",")):
            self._sync_widgets()                 # a new system resyncs everything once
            return
        if "x0" in names:
            self.set_quietly(self.w_x0, value=", ".join(f"{v:.6g}" for v in c.x0))
        if "values" in names:
            self._mark_orbit()
        self.map_panel.mark()

    def _on_view_changed(self, *_events) -> None:
        c = self.controller
        with self.building():
            self.w_zvar.visible = self.w_az.visible = self.w_el.visible = c.view == "3D"
            for w_, v in ((self.w_xvar, c.x_var), (self.w_yvar, c.y_var), (self.w_zvar, c.z_var)):
                if v in w_.options:
                    w_.value = v
        if not self._redraw_pending:       # a preset changes several view settings: one redraw,
            self._redraw_pending = True    # on the next tick, once its new simulation is under
            self.later(self._redraw_view)  # way (then the old attractor is not redrawn at all)

    def _redraw_view(self) -> None:
        self._redraw_pending = False
        self._send_attractor()
        self._draw_live(force=True)

    def _on_classroom(self, *_) -> None:
        c = self.controller
        hidden = set(c.hidden) if c.classroom else set()
        for name, obj in self.groups.items():
            obj.visible = name not in hidden

    def _choose_preset(self, event) -> None:
        if event.new and not self._building:
            self.act(self.controller.apply_preset, event.new)

    def _on_preset(self, *_) -> None:
        p = PRESETS.get(self.controller.preset)
        self.set_quietly(self.w_preset, value=self.controller.preset if p else "")
        self.preset_text.object = f"**{p.title}.** {p.text}" if p else ""
        if p:
            self._sync_widgets()

    def _push_url(self, *_) -> None:
        from urllib.parse import urlencode

        loc = pn.state.location
        if loc is None:
            return
        q = self.controller.to_query()
        page = (loc.query_params or {}).get("page")
        loc.search = "?" + urlencode({"page": page, **q} if page else q)

    # ================================================================ controller <- widgets
    def _on_x0(self, event) -> None:
        if self._building:
            return
        try:
            self.controller.set_x0([s for s in event.new.replace(";", ",").split(",") if s.strip()])
            self.x0_error.object = ""
        except (ExplorerError, ValueError) as e:
            self.x0_error.object = message(str(e))

    def _on_tap(self, x, y) -> None:
        c = self.controller
        if c.view == "3D":
            c.status = "Clicks set the initial condition in the 2D view (the 3D projection is ambiguous)."
            return
        self.guard(c.set_point, {c.x_var: x, c.y_var: y})

    def _on_section_tap(self, x=None, y=None) -> None:
        c = self.controller
        s = c.section
        if x is None or y is None or s is None or c.attractor is None:
            return
        var = c.attractor.variables
        others = [v for i, v in enumerate(var) if i != s.axis][:2]
        self.guard(c.set_point, {others[0]: x, others[1]: y, var[s.axis]: s.value})

    # ================================================================ results -> plots
    def busy(self) -> bool:
        return self.controller.busy() or self.controller.playing or self.canvas.busy()

    def fast(self) -> bool:
        return self.controller.playing

    def refresh(self) -> None:
        error = self.canvas.poll()
        if error:
            self.controller.status = error
        self._draw_live()

    def _on_result(self, *events) -> None:
        for event in events:
            getattr(self, f"_show_{event.name}")()

    def _show_attractor(self) -> None:
        self._send_attractor()
        # a preset's analyses start once its picture is drawn (see _send_timeseries), or
        # after this fallback if drawing failed
        self.later(self.controller.picture_shown, 1500)

    def _show_lyapunov(self) -> None:
        c = self.controller
        r, ref = c.lyapunov, None
        try:
            sys_ = c.current_system()
            pub = sys_.lyapunov_reference
            if pub is not None and (pub.params is None or all(
                    abs(float(sys_.params[k]) - v) < 1e-9 for k, v in pub.params.items())) and all(
                    abs(float(sys_.params[k]) - sys_.defaults()[k]) < 1e-9 for k in sys_.defaults()):
                ref = pub.exponents
        except (ExplorerError, KeyError):
            pass
        self.lyap.show(r, ref)
        if r is None:
            self.lyap_text.object = LYAP_PROMPT
            return
        unit, per = ("iterations", "per iteration") if r.kind == "map" else ("time units", "per time unit")
        txt = (f"**λ** = {', '.join(f'{v:.4f}' for v in r.exponents.tolist())} ({per}); "
               f"Kaplan–Yorke dimension **{float(r.kaplan_yorke_dimension):.3f}**; "
               f"averaged over {r.averaging_time:g} {unit}")
        if ref is not None:
            txt += "; published: " + ", ".join(f"{v:.4g}" for v in ref)
        if bool(r.diverged.any()):
            txt += f"; ⚠ {int(r.diverged.sum())} member(s) diverged and were left out"
        self.lyap_text.object = txt

    def _show_orbit(self) -> None:
        c = self.controller
        r = c.orbit
        self.orbit.show(r)
        self._mark_orbit()
        self.b_orbit_back.disabled = not c.orbit_history
        if r is None:
            self.orbit_text.object = ""
            return
        nd = int(r.diverged.sum())
        self.orbit_text.object = (f"{r.param} ∈ [{c.orbit_low:.6g}, {c.orbit_high:.6g}], "
                                  f"{len(r.values)} values ({r.method}). Drag a box to zoom in."
                                  + (f" ⚠ diverged for {nd} values (not drawn)." if nd else ""))

    def _show_section(self) -> None:
        c = self.controller
        s = c.section
        self.section_pipe.send(None if s is None else (s, c.attractor.variables))
        if s is None:
            self.section_text.object = NO_SECTION if c.is_map() else ""
        else:
            self.section_text.object = (f"{len(s.points)} upward crossings of "
                                        f"{c.attractor.variables[s.axis]} = {s.value:.5g}. "
                                        "Click a point to start there.")

    def _show_fixed(self) -> None:
        c = self.controller
        rows = plots.fixed_points_table(c.fixed, c.variables()) if c.fixed is not None else None
        self.fixed_table.object = (pd.DataFrame() if rows is None else pd.DataFrame(rows) if rows
                                   else pd.DataFrame({"": ["no fixed point found"]}))

    def _mark_orbit(self) -> None:
        c = self.controller
        v = c.values.get(c.orbit_param) if c.system != CUSTOM else None
        self.orbit.mark(None if v is None else float(v))

    def _axes(self, variables) -> tuple[str, ...]:
        c = self.controller
        axes = [c.x_var, c.y_var] + ([c.z_var] if c.view == "3D" else [])
        if not all(a in variables for a in axes) or (c.view == "3D" and len(set(axes)) < 3):
            axes = list(variables[:3] if c.view == "3D" and len(variables) >= 3 else variables[:2])
            if len(axes) == 1:
                axes = axes * 2
        return tuple(axes)

    def _send_attractor(self) -> None:
        c = self.controller
        data = c.attractor
        if data is not None and c.computing("attractor"):
            return        # a new attractor is on its way (a preset sets the view and colouring
            #               before its simulation ends): redrawing the old one is wasted work
        title = plots.COLOR_TITLES.get(c.color_by, c.color_by)
        if c.color_by == "time" and data is not None and data.is_map:
            title = "iteration n"
        self.canvas.draw(data, self._axes(data.variables) if data is not None else (),
                         view=c.view, azimuth=c.azimuth, elevation=c.elevation, color_by=c.color_by,
                         color_title=title)

    def _send_timeseries(self) -> None:
        data = self.controller.attractor
        if data is None:
            self.ts.show(None, [], [])
        else:
            t, ys, names, markers, t_label = plots.timeseries_series(data)
            self.ts.show(t, ys, names, markers=markers, x_label=t_label)
        self.ts_caption.object = plots.timeseries_caption(data)
        self.controller.picture_shown()

    def _draw_live(self, force: bool = False) -> None:
        """The live ensemble's latest frame as trails, once the browser has shown the last
        one (see :class:`~explorer.views.live.FramePacer`); ``force``: now."""
        c, trails = self.controller, self.canvas.trails
        frame = c.live_frame()
        if frame is None:
            if self._last_frame != -1:
                self._last_frame = -1
                trails.show(None)
            return
        if not force and (frame.index == self._last_frame or not trails.ready()):
            return
        self._last_frame = frame.index
        variables = c.live.system.variables
        trails.show(plots.trail_layers(frame.trails, variables, self._axes(variables), view=c.view,
                                       azimuth=c.azimuth, elevation=c.elevation,
                                       centre=self.canvas.centre))

    # ================================================================ export
    def _arrays(self):
        data = self.controller.attractor
        if data is None:
            raise ExplorerError("nothing computed yet")
        return data

    def _csv(self):
        data = self._arrays()
        T, B, _D = data.x.shape
        frame = pd.DataFrame({"t": np.repeat(data.t, B), "member": np.tile(np.arange(B), T)})
        for i, v in enumerate(data.variables):
            frame[v] = data.x[:, :, i].reshape(-1)
        return io.BytesIO(frame.to_csv(index=False, float_format="%.7g").encode())

    def _npz(self):
        data = self._arrays()
        buf = io.BytesIO()
        x = data.x[:, 0] if data.x.shape[1] == 1 else data.x
        np.savez_compressed(buf, t=data.t, x=x, variables=np.array(data.variables),
                            system=np.array(data.system))
        buf.seek(0)
        return buf


def warm_up() -> float:
    """Pay the page's first-use costs once per process (at server start), not in the first
    student's session: building the page's HoloViews/Bokeh models for the first time (about
    2.4 s more than later sessions), numba's compilation of the datashader aggregation (about
    4 s at the first dense attractor) and loading the native simulation library. Returns the
    seconds it took."""
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    t0 = time.perf_counter()
    # the native tangent steppers of the presets' Lyapunov spectra, built beside the rest
    # (compiled once per machine, then loaded from the disk cache)
    names = ["lorenz63", *(p.query.get("sys") for p in PRESETS.values() if "lyapunov" in p.compute)]
    threading.Thread(target=prepare_native, args=(list(dict.fromkeys(n for n in names if n)),),
                     name="warm-up-native", daemon=True).start()
    rng = np.random.default_rng(0)
    u, v, c = (rng.standard_normal(plots.DENSE_POINTS + 1).astype(np.float32) for _ in range(3))
    plots.raster_image({"u": u, "v": v, "c": c, "labels": ("x", "y")}, with_ticks=True)
    controller = AttractorController(auto=False)
    controller.request_attractor()
    controller.wait(60)
    doc = Document()
    with set_curdoc(doc):
        view = AttractorsPanel(controller)
        layout = pn.Row(view.sidebar, view.main)
        root = layout.get_root(doc)
        view.close()
        layout._cleanup(root)          # HoloViews' plot callbacks: the warm-up leaves nothing
        pn.state._views.pop(root.ref["id"], None)
    return time.perf_counter() - t0
