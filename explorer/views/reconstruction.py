"""The Reconstruction page's view: training controls, live plots, model analysis.

``ReconstructionPanel(controller)`` is a :class:`panel.viewable.Viewer` over one
:class:`~explorer.controllers.reconstruction.ReconstructionController`; its widgets and
streams are built per instance (sessions never share them).

Live drawing: while a run trains, a periodic callback (every :data:`TICK_MS`) collects what
the training thread queued (:meth:`ReconstructionController.poll`: step records, the latest
free-run frame) and publishes it inside ``pn.io.hold()`` (one document patch per tick). The
training thread computes everything heavy (the free runs, subregion sequences), so a tick
only moves arrays into plots. Each live plot (:class:`LivePlot`) is rendered once by
HoloViews through a stream; later updates write the new columns straight into the Bokeh
data sources of its layers (loss rows are *streamed*: only the new rows travel), as the
Attractors page does for its image and trails.
"""

from __future__ import annotations

import io
import math
import time

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from ..controllers.reconstruction import (CUSTOM, RUN_PRESETS, Frame, Progress,
                                          ReconstructionController)
from ..training.verdict import D_H_GOOD, D_STSP_GOOD
from ..core.errors import ExplorerError
from ..core.registry import system_class
from . import plots
from . import training_plots as tp
from .shell import prompt_widgets, schedule

#: period of the UI tick while training or computing (ms): 10 updates per second at most
TICK_MS = 100
#: the transition heatmap is re-rendered (not patched) at most this often (s)
GRAPH_SECONDS = 1.0
#: loss rows kept in the browser (older ones roll off the plot, not the history)
MAX_LOSS_POINTS = 200_000
PLOT_OPTS = dict(toolbar="above", default_tools=["pan", "wheel_zoom", "box_zoom", "reset", "save"])


class LivePlot:
    """A HoloViews overlay drawn once through a stream, then patched in place.

    ``builder(data)`` returns an overlay whose layers carry labels; after the first render a
    hook keeps each layer's Bokeh ``ColumnDataSource`` (by label) and the figure. :meth:`patch`
    replaces the layers' columns and sets the axis ranges (one data patch, no re-render);
    :meth:`stream` appends rows. Whenever the structure may differ (first data, other axes:
    ``key`` changed) the data goes through the stream and HoloViews re-renders.
    """

    def __init__(self, builder, *, height: int, logy: bool = False, decorate=None):
        self.decorate = decorate                  # fig -> None, after each render (annotations)
        self.pipe = plots.QuietPipe(data=None)
        self.sources: dict = {}
        self.fig = None
        self.key = None
        self.logy = logy
        dm = hv.DynamicMap(lambda data: builder(data), streams=[self.pipe])
        fw = dict(framewise=True)
        self.dmap = dm.opts(hv.opts.Curve(**fw), hv.opts.Points(**fw), hv.opts.Scatter(**fw),
                            hv.opts.Overlay(hooks=[self._hook], responsive=True, height=height,
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


class ReconstructionPanel(pn.viewable.Viewer):
    """Sidebar and main area of the Reconstruction page around one controller."""

    controller = param.ClassSelector(class_=ReconstructionController)

    def __init__(self, controller: ReconstructionController | None = None, *, sync_url: bool = True,
                 **params):
        ctrl = controller or ReconstructionController()
        super().__init__(controller=ctrl, **params)
        self._sync_url = sync_url and pn.state.location is not None
        if self._sync_url:                        # ?page=reconstruction&preset=lecture, ...
            query = dict(pn.state.location.query_params or {})
            if any(k != "page" for k in query):
                ctrl.apply_query(query)
        self._doc = pn.state.curdoc
        self._periodic = None
        ctrl.jobs.notify = self._schedule_poll
        self._frame: Frame | None = None              # the frame on screen
        self._graph_at = 0.0
        self._graph_pending = None
        self._loss = {"step": [], "loss": [], "smooth": []}
        self._loss_range = None
        self._n_metrics = -1
        self._building = False
        self._make_widgets()
        self._make_plots()
        self._layout()
        ctrl.param.watch(self._on_status, ["status", "errors"])
        ctrl.param.watch(self._on_phase, ["phase", "progress"])
        ctrl.param.watch(self._on_preview, "preview")
        ctrl.param.watch(self._on_analysis, "analysis")
        ctrl.param.watch(self._on_lyapunov, "lyapunov")
        ctrl.param.watch(self._on_kind, ["model", "sparse_tf", "system", "source"])
        ctrl.param.watch(self._on_verdict, "verdict")
        ctrl.param.watch(self._on_preset, "preset")
        self._on_kind()
        self._on_verdict()
        self._on_preset(push=False)
        self._on_phase()
        self._on_status()
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda ctx: self.close())
        if ctrl.auto and ctrl.data is None:
            ctrl.request_data()
            self._ensure_tick()
        elif ctrl.preview is not None:
            self._on_preview()

    # ================================================================ widgets
    def _make_widgets(self) -> None:
        c = self.controller
        W = pn.widgets
        sw = dict(sizing_mode="stretch_width")
        # preset
        self.w_preset = W.Select(name="Teaching preset", options={"(none)": ""} | {
            p.title: k for k, p in RUN_PRESETS.items()}, value=c.preset if c.preset in RUN_PRESETS else "",
            **sw)
        self.w_preset.param.watch(self._choose_preset, "value")
        self.preset_text = pn.pane.Markdown("", css_classes=["preset-text"], **sw)
        # data
        self.w_source = W.RadioButtonGroup.from_param(c.param.source, options={"Simulated system": "system",
                                                                               "Uploaded file": "file"},
                                                      name="", button_type="default", **sw)
        self.w_system = W.Select(name="System", groups=self._system_groups(), value=c.system, **sw)
        self.w_system.param.watch(lambda e: self._set("system", e.new), "value")
        self.w_equations = W.TextAreaInput.from_param(c.param.equations, name="Equations", height=90, **sw)
        self.w_custom_params = W.TextInput.from_param(c.param.custom_params, name="Parameters", **sw)
        self.w_noise = W.FloatInput.from_param(c.param.noise, name="Noise (fraction of std)", step=0.01,
                                               width=150)
        self.w_subsample = W.IntInput.from_param(c.param.subsample, name="Keep every k-th step", width=150)
        self.w_length = W.IntInput.from_param(c.param.length, name="Samples", step=1000, width=150)
        self.w_file = W.FileInput(accept=",".join((".csv", ".txt", ".tsv", ".dat", ".npy", ".npz")),
                                  multiple=False, **sw)
        self.w_file.param.watch(self._on_file, "value")
        self.w_file_dt = W.FloatInput.from_param(c.param.file_dt, name="Sampling interval Δt", width=150)
        self.data_text = pn.pane.Markdown("", css_classes=["preset-text"], **sw)
        self.data_error = pn.pane.Markdown("", css_classes=["field-error"], **sw)
        # model
        self.w_model = W.Select.from_param(c.param.model, name="Model", options={
            "shallow PLRNN": "shplrnn", "PLRNN": "plrnn", "AL-RNN": "alrnn"}, **sw)
        self.w_latent = W.IntInput.from_param(c.param.latent, name="Latent M", width=100)
        self.w_hidden = W.IntInput.from_param(c.param.hidden, name="Hidden H", width=100)
        self.w_relu = W.IntInput.from_param(c.param.n_relu, name="ReLU units P", width=100)
        self.w_alpha_mode = W.RadioButtonGroup.from_param(c.param.alpha_mode, name="", **sw)
        self.w_alpha = W.FloatInput.from_param(c.param.alpha, name="GTF α", step=0.01, width=100)
        self.w_sparse = W.Checkbox.from_param(c.param.sparse_tf, name="Sparse teacher forcing")
        self.w_tau = W.IntInput.from_param(c.param.tau, name="τ", width=80)
        self.w_seq = W.IntInput.from_param(c.param.seq_len, name="Sequence length", width=100)
        self.w_batch = W.IntInput.from_param(c.param.batch, name="Batch", width=100)
        self.w_lr = W.FloatInput.from_param(c.param.lr, name="Learning rate", step=1e-4, format="0.[000000]",
                                            width=100)
        self.w_steps = W.IntInput.from_param(c.param.steps, name="Steps", step=500, width=100)
        self.w_metrics = W.IntInput.from_param(c.param.metrics_every, name="Metrics every", width=100)
        self.w_seed = W.IntInput.from_param(c.param.seed, name="Seed", width=100)
        self.verdict_text = pn.pane.Markdown("", css_classes=["verdict"], **sw)
        self.invariants_text = pn.pane.Markdown(
            f"**D_stsp** (state-space divergence) compares *where* the model's free run spends its "
            f"time with where the data do: 0 is the same occupation of state space; at most "
            f"**{D_STSP_GOOD:g}** (the green band) counts as a reconstruction here (the true "
            f"system itself scores about 0.4, failed models 5 to 15).  \n"
            f"**D_H** (power-spectrum distance) compares the *rhythms*, the power spectra of each "
            f"coordinate: 0 is the same spectrum, 1 nothing in common; below about "
            f"**{D_H_GOOD:g}** is good.  \n"
            "Solid: against the noisy data; dashed: against the noise-free trajectory (noise "
            "alone keeps the solid D_stsp above the dashed one). PE: 20-step prediction error.",
            css_classes=["preset-text"], styles={"font-size": "0.9em"}, **sw)
        # run control
        self.b_start = W.Button(name="▶ Start", button_type="success", width=100)
        self.b_pause = W.Button(name="❚❚ Pause", width=100)
        self.b_resume = W.Button(name="▶ Resume", button_type="primary", width=100)
        self.b_stop = W.Button(name="■ Stop", button_type="danger", width=100)
        self.b_reset = W.Button(name="Reset", width=100)
        self.b_start.on_click(lambda e: self._act(self.controller.start))
        self.b_pause.on_click(lambda e: self._act(self.controller.pause))
        self.b_resume.on_click(lambda e: self._act(self.controller.resume))
        self.b_stop.on_click(lambda e: self._act(self.controller.stop))
        self.b_reset.on_click(lambda e: self._act(self.controller.reset))
        self.progress = pn.indicators.Progress(value=0, max=1000, bar_color="primary", height=14,
                                               **sw)
        # checkpoints
        self.d_ckpt = W.FileDownload(callback=self._checkpoint, filename="model.pt",
                                     label="Download checkpoint", button_type="light", **sw)
        self.w_ckpt = W.FileInput(accept=".pt,.pth,.ckpt", multiple=False, **sw)
        self.w_ckpt.param.watch(self._on_ckpt, "value")
        self.ckpt_error = pn.pane.Markdown("", css_classes=["field-error"], **sw)
        # status and analysis
        self.status = pn.pane.Markdown("", css_classes=["status-line"], **sw)
        self.b_lyap = W.Button(name="Compute Lyapunov spectrum of the model", button_type="primary", **sw)
        self.b_lyap.on_click(lambda e: self._act(self.controller.request_lyapunov))
        self.lyap_text = pn.pane.Markdown("Train a model, then press the button: the spectrum of "
                                          "the trained map, in units of the data's time.", **sw)
        self.fixed_text = pn.pane.Markdown("Fixed points of the trained model appear when "
                                           "training ends (or is paused).", **sw)
        self.fixed_table = pn.pane.DataFrame(pd.DataFrame(), index=False, float_format="{:.4g}".format, **sw)
        self.model_eq = pn.pane.LaTeX("", styles={"font-size": "1.05em"}, **sw)
        self.model_text = pn.pane.Markdown("", **sw)
        self.w_xvar = W.Select(name="horizontal", width=100)
        self.w_yvar = W.Select(name="vertical", width=100)
        self.w_tsvar = W.Select(name="variable", width=100)
        for w in (self.w_xvar, self.w_yvar):
            w.param.watch(lambda e: self._redraw_frame(), "value")
        self.w_tsvar.param.watch(lambda e: self._redraw_frame(), "value")

    def _system_groups(self) -> dict:
        groups: dict[str, dict[str, str]] = {}
        for name in self.controller.param.system.objects:
            if name == CUSTOM:
                groups.setdefault("Custom", {})["Custom (your equations)"] = CUSTOM
                continue
            cls = system_class(name)
            origin = {"builtin": "Built-in", "dysts": "dysts"}.get(cls.origin, cls.origin)
            groups.setdefault(origin, {})[cls.title or name] = name
        return groups

    def _set(self, name: str, value) -> None:
        if self._building or value is None:
            return
        try:
            setattr(self.controller, name, value)
        except (ValueError, ExplorerError) as e:
            self.controller.status = f"⚠ {str(e).splitlines()[0]}"

    # ================================================================ plots
    def _make_plots(self) -> None:
        self.loss_plot = LivePlot(tp.loss_plot, height=260, logy=True)
        self.metrics_plot = LivePlot(tp.metrics_plot, height=260, logy=True, decorate=tp.good_band)
        self.attractor_plot = LivePlot(tp.attractor_plot, height=360)
        self.ts_plot = LivePlot(tp.timeseries_plot, height=360)
        self.symbols_plot = LivePlot(tp.symbols_plot, height=280)
        self.graph_pipe = hv.streams.Pipe(data=None)
        self.graph_plot = pn.pane.HoloViews(hv.DynamicMap(tp.transition_plot, streams=[self.graph_pipe]).opts(
            hv.opts.HeatMap(responsive=True, height=280, framewise=True, toolbar="above")),
            linked_axes=False, sizing_mode="stretch_width", height=290)
        self.lyap_pipe = hv.streams.Pipe(data=None)
        self.lyap_plot = pn.pane.HoloViews(hv.DynamicMap(tp.lyapunov_bars, streams=[self.lyap_pipe]).opts(
            hv.opts.Bars(responsive=True, height=280, framewise=True, tools=["hover"])),
            linked_axes=False, sizing_mode="stretch_width")
        self.lyap_box = pn.Column(self.lyap_plot, visible=False, sizing_mode="stretch_width")

    # ================================================================ layout
    def _layout(self) -> None:
        w = self
        md = pn.pane.Markdown
        self.custom_box = pn.Column(w.w_equations, w.w_custom_params, sizing_mode="stretch_width")
        self.system_box = pn.Column(w.w_system, self.custom_box,
                                    pn.Row(w.w_noise, w.w_subsample), w.w_length,
                                    sizing_mode="stretch_width")
        self.file_box = pn.Column(md("Upload a series: CSV (optional header row), NPY or NPZ; "
                                     "time along rows, one column per variable.",
                                     css_classes=["preset-text"]),
                                  w.w_file, w.w_file_dt, sizing_mode="stretch_width")
        self.tau_box = pn.Row(w.w_tau)
        self.sidebar = pn.Column(
            w.w_preset, w.preset_text, pn.layout.Divider(),
            md("**Data**"), w.w_source, self.system_box, self.file_box, w.data_error, w.data_text,
            pn.layout.Divider(),
            md("**Model**"), w.w_model, pn.Row(w.w_latent, w.w_hidden, w.w_relu),
            md("**Teacher forcing**"), w.w_alpha_mode, pn.Row(w.w_alpha, w.w_sparse, self.tau_box),
            md("**Optimisation**"), pn.Row(w.w_seq, w.w_batch, w.w_lr),
            pn.Row(w.w_steps, w.w_metrics, w.w_seed),
            pn.layout.Divider(),
            md("**Training**"), pn.Row(w.b_start, w.b_pause, w.b_resume), pn.Row(w.b_stop, w.b_reset),
            w.progress,
            pn.layout.Divider(),
            md("**Checkpoint**"), w.d_ckpt,
            md("Load a checkpoint (.pt) to resume or analyse it:", css_classes=["preset-text"]),
            w.w_ckpt, w.ckpt_error,
            sizing_mode="stretch_width", css_classes=["explorer-sidebar"])
        prompt_widgets(self.sidebar)
        self.tabs = pn.Tabs(
            ("Lyapunov spectrum", pn.Column(w.b_lyap, w.lyap_text, w.lyap_box, sizing_mode="stretch_width")),
            ("Fixed points", pn.Column(w.fixed_text, w.fixed_table, sizing_mode="stretch_width")),
            ("Model", pn.Column(w.model_eq, w.model_text, sizing_mode="stretch_width")),
            dynamic=False, sizing_mode="stretch_width")
        self.main = pn.Column(
            self.status,
            pn.Row(self.loss_plot.pane, self.metrics_plot.pane,
                   pn.Column(w.verdict_text, w.invariants_text, width=250),
                   sizing_mode="stretch_width"),
            pn.Row(pn.Column(pn.Row(md("**Projection**", margin=(18, 5)), w.w_xvar, w.w_yvar),
                             self.attractor_plot.pane, sizing_mode="stretch_width"),
                   pn.Column(pn.Row(md("**Time series**", margin=(18, 5)), w.w_tsvar),
                             self.ts_plot.pane, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.Row(self.symbols_plot.pane, self.graph_plot, sizing_mode="stretch_width"),
            self.tabs, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar, width=360), self.main, sizing_mode="stretch_width")

    # ================================================================ actions
    def _act(self, fn) -> None:
        try:
            fn()
        except (ExplorerError, ValueError) as e:
            self.controller.status = f"⚠ {str(e).splitlines()[0]}"
        self._on_phase()
        self._ensure_tick()

    def _on_file(self, event) -> None:
        if not event.new:
            return
        self.controller.load_file(event.new, self.w_file.filename or "data.csv")
        self._ensure_tick()

    def _on_ckpt(self, event) -> None:
        if not event.new:
            return
        if self.controller.load_checkpoint(event.new, self.w_ckpt.filename or "checkpoint.pt"):
            self._reload_history()
        self._on_phase()
        self._ensure_tick()

    def _checkpoint(self):
        c = self.controller
        try:
            content = c.checkpoint_bytes()
        except ExplorerError as e:
            c._error("checkpoint", str(e))
            return io.BytesIO(b"")
        self.d_ckpt.filename = c.checkpoint_filename()
        return io.BytesIO(content)

    # ================================================================ controller -> widgets
    def _on_status(self, *_) -> None:
        c = self.controller
        self.status.object = c.status
        err = c.errors.get("data")
        self.data_error.object = f"⚠ {err}" if err else ""
        err = c.errors.get("checkpoint")
        self.ckpt_error.object = f"⚠ {err}" if err else ""

    def _on_phase(self, *_) -> None:
        c = self.controller
        busy = c.phase in ("preparing", "running") or c.running
        self.b_start.disabled = busy
        self.b_pause.disabled = not (busy and c.phase == "running")
        self.b_resume.disabled = not c.can_resume()
        self.b_stop.disabled = not (busy or c.phase == "paused")
        has_model = c.trainer is not None
        self.d_ckpt.disabled = not has_model and not busy
        self.b_lyap.disabled = not has_model
        if c.phase == "preparing":
            self.progress.value = -1
            self.progress.active = True
        else:
            self.progress.active = busy
            self.progress.value = int(round(1000 * c.progress))
        self.progress.bar_color = {"diverged": "warning", "error": "danger", "done": "success"}.get(
            c.phase, "primary")
        if busy:
            self._ensure_tick()

    def _choose_preset(self, event) -> None:
        if self._building or not event.new or event.new == self.controller.preset:
            return
        self._act(lambda: self.controller.apply_preset(event.new))

    def _on_preset(self, *_, push: bool = True) -> None:
        c = self.controller
        p = RUN_PRESETS.get(c.preset)
        self._building = True
        try:
            self.w_preset.value = c.preset if p else ""
            self.w_system.value = c.system
        finally:
            self._building = False
        self.preset_text.object = f"**{p.title}.** {p.text}" if p else ""
        if push and self._sync_url:
            self._push_url()

    def _push_url(self) -> None:
        from urllib.parse import urlencode

        loc = pn.state.location
        if loc is None:
            return
        q = {"page": "reconstruction", **self.controller.to_query()}
        if not self.controller.preset:
            q = {"page": "reconstruction"}
        loc.search = "?" + urlencode(q)

    def _on_verdict(self, *_) -> None:
        v = self.controller.verdict
        if v is None:
            self.verdict_text.object = ("**Reconstruction?** Not judged yet: the verdict comes "
                                        "with the first invariants.")
            return
        when = "" if self.controller.running else " (final model)"
        colour = "#2b8a3e" if v.ok else "#c92a2a"
        self.verdict_text.object = (f"<span style='color:{colour}'><b>Verdict: {v.headline}"
                                    f"</b>{when}</span>: {v.reason}.")

    def _on_kind(self, *_) -> None:
        c = self.controller
        self.w_hidden.visible = c.model == "shplrnn"
        self.w_relu.visible = c.model == "alrnn"
        self.tau_box.visible = c.sparse_tf
        self.w_alpha_mode.disabled = c.sparse_tf
        self.custom_box.visible = c.system == CUSTOM
        self.system_box.visible = c.source == "system"
        self.file_box.visible = c.source == "file"
        self._building = True
        self.w_system.value = c.system
        self._building = False

    def _on_preview(self, *_) -> None:
        c = self.controller
        ts = c.data
        self.data_text.object = f"*{c.describe_data(ts)}*" if ts is not None else ""
        if c.preview is None or c.running:          # training: the frames show the data
            return
        self._show_frame(c.preview, force=True)      # new data: show it (a model stays resumable)

    def _on_analysis(self, *_) -> None:
        a = self.controller.analysis
        if a is None:
            self.fixed_text.object = "Fixed points of the trained model appear when training ends (or is paused)."
            self.fixed_table.object = pd.DataFrame()
            return
        rows = tp.fixed_point_rows(a)
        self.fixed_table.object = pd.DataFrame(rows) if rows else pd.DataFrame({"": ["no fixed point found"]})
        exact = ", ".join(f"{tp.short_code(p.code)} ({p.type})" for p in a.pwl_fixed[:6]) or "none"
        top = ", ".join(f"{tp.short_code(code)}: {n / max(1, a.counts.sum()):.0%}"
                        for code, n in list(zip(a.codes, a.counts))[:5])
        self.fixed_text.object = (
            f"Model at step {a.step:,}, analysed as a {a.latent_dim}-dimensional map "
            f"({a.seconds:.1f} s). **{len(a.fixed)}** fixed point(s) by Newton's method (observed "
            f"coordinates in data units below); exact fixed points in the visited subregions: "
            f"{exact}. A free run of {a.steps:,} iterations "
            f"{'stays bounded' if a.bounded else '**diverges**'} and visits **{len(a.codes)}** "
            f"subregion(s) (bitcode: share of time) — {top}.")
        self._graph_pending = None
        self.graph_pipe.send(a)
        self.model_eq.object = f"$${a.latex}$$"
        self.model_text.object = (f"{a.title}: latent dimension M = {a.latent_dim}, {a.obs_dim} observed "
                                  f"coordinate(s), {a.n_switches} ReLU unit(s) define the "
                                  "subregions (bitcode: one bit per unit, 1 = active).")

    def _on_lyapunov(self, *_) -> None:
        r = self.controller.lyapunov
        self.lyap_pipe.send(r)
        self.lyap_box.visible = r is not None
        if r is None:
            return
        ex = r.per_time
        per_it = r.result.exponents.tolist()
        txt = (f"Model at step {r.step:,}: **λ** = {', '.join(f'{v:.4g}' for v in ex)} per time unit "
               f"(Δt = {r.dt:g}; per iteration: {', '.join(f'{v:.4g}' for v in per_it)}); "
               f"Kaplan–Yorke dimension **{float(r.result.kaplan_yorke_dimension):.3f}**")
        if r.data_lyapunov is not None:
            txt += f"; the data's system: λ1 = {r.data_lyapunov:.4g}"
        self.lyap_text.object = txt

    # ================================================================ the tick
    def _schedule_poll(self) -> None:
        schedule(self._doc, self._tick)

    def _ensure_tick(self) -> None:
        """Run the UI tick while something trains or computes (it stops itself)."""
        if self._doc is None or self._doc.session_context is None:
            self._poll()                               # no server (notebook, tests)
            return
        if self._periodic is None or not self._periodic.running:
            self._periodic = pn.state.add_periodic_callback(self._tick, period=TICK_MS, start=True)

    def _tick(self) -> None:
        with pn.io.hold():                              # one document patch per tick
            self._poll()
        c = self.controller
        if not c.running and not c.jobs.running() and self._graph_pending is None \
                and self._periodic is not None and self._periodic.running:
            self._periodic.stop()

    def _poll(self) -> None:
        p: Progress = self.controller.poll()
        if p.reset:
            self._reload_history()
        elif p.records:
            self._append(p)
        if p.frame is not None:
            self._show_frame(p.frame)
        if self._graph_pending is not None and time.monotonic() - self._graph_at >= GRAPH_SECONDS:
            self._send_graph()
        if p.ended:
            self._on_phase()

    # ================================================================ losses and metrics
    def _planned(self) -> int:
        c = self.controller
        return c.trainer.config.steps if c.trainer is not None else c.steps

    def _reload_history(self) -> None:
        """Redraw the loss and metric curves from the controller's whole history."""
        h = self.controller.history
        steps, loss = list(h["step"]), list(h["loss"])
        smooth = list(tp.ema(np.asarray(loss, dtype=float)))
        self._loss = {"step": steps, "loss": loss, "smooth": smooth}
        self._loss_range = tp.fit_range(loss, log=True)
        self.loss_plot.send((steps, loss, smooth), key="loss")
        if steps:
            self.loss_plot.set_ranges((0, max(self._planned(), steps[-1]) * 1.02), self._loss_range)
        self._n_metrics = -1
        self._show_metrics()
        if not steps:
            self._frame = None
            if self.controller.preview is not None:
                self._show_frame(self.controller.preview, force=True)
            self._graph_pending = None
            self.graph_pipe.send(None)

    def _append(self, p: Progress) -> None:
        recs = p.records
        steps = [r.step for r in recs]
        loss = [r.loss for r in recs]
        prev = self._loss["smooth"][-1] if self._loss["smooth"] else None
        smooth = tp.ema(np.asarray(loss, dtype=float), prev)
        self._loss["step"] += steps
        self._loss["loss"] += loss
        self._loss["smooth"] += smooth.tolist()
        new = tp.fit_range(loss, log=True)
        old = self._loss_range
        self._loss_range = new if old is None else (old if new is None else (min(old[0], new[0]), max(old[1], new[1])))
        data = (self._loss["step"], self._loss["loss"], self._loss["smooth"])
        xr = (0, max(self._planned(), steps[-1]) * 1.02)
        if len(self._loss["step"]) == len(steps):          # the first rows: render
            self.loss_plot.send(data, key="loss")
            self.loss_plot.set_ranges(xr, None)
        else:
            self.loss_plot.stream(data, tp.loss_columns(steps, loss, smooth), rollover=MAX_LOSS_POINTS,
                                  key="loss", x_range=xr, y_range=self._loss_range)
        if any(r.metrics is not None for r in recs):
            self._show_metrics()

    def _show_metrics(self) -> None:
        rows = self.controller.metric_history
        if len(rows) == self._n_metrics:
            return
        first = self._n_metrics <= 0
        self._n_metrics = len(rows)
        cols = tp.metric_columns(rows)
        vals = [c["value"] for c in cols.values()]
        data = list(rows)
        xr = (0, max(self._planned(), rows[-1]["step"] if rows else 1) * 1.02)
        if first or not rows:
            self.metrics_plot.send(data, key="metrics")
            if rows:
                self.metrics_plot.set_ranges(xr, None)
        else:
            self.metrics_plot.patch(data, cols, key="metrics", x_range=xr,
                                    y_range=tp.fit_range(*vals, log=True))

    # ================================================================ frames
    def _axes(self, frame: Frame) -> tuple[str, str]:
        var = list(frame.variables)
        opts = list(self.w_xvar.options or [])
        if opts != var:
            self._building = True
            try:
                self.w_xvar.options = var
                self.w_yvar.options = var
                self.w_tsvar.options = var
                self.w_xvar.value = var[0]
                self.w_yvar.value = var[2] if len(var) >= 3 and tuple(var[:3]) == ("x", "y", "z") \
                    else var[min(1, len(var) - 1)]
                self.w_tsvar.value = var[0]
            finally:
                self._building = False
            self.w_xvar.visible = self.w_yvar.visible = len(var) > 1
        x = self.w_xvar.value if self.w_xvar.value in var else var[0]
        y = self.w_yvar.value if self.w_yvar.value in var else var[min(1, len(var) - 1)]
        return x, y

    def _redraw_frame(self) -> None:
        if not self._building and self._frame is not None:
            self._show_frame(self._frame, force=True)

    def _show_frame(self, frame: Frame, *, force: bool = False) -> None:
        """Put a frame on the attractor, time-series and subregion plots (data patches)."""
        self._frame = frame
        axes = self._axes(frame)
        var = self.w_tsvar.value if self.w_tsvar.value in frame.variables else frame.variables[0]
        # attractor: the view fits the data, widened by at most one span for the model
        cols = tp.attractor_columns(frame, axes)
        xr = tp.range_with(tp.fit_range(cols["data"]["u"]), tp.fit_range(cols["model"]["u"]))
        yr = tp.range_with(tp.fit_range(cols["data"]["v"]), tp.fit_range(cols["model"]["v"]))
        key = ("attractor", axes, frame.variables)
        if force:
            self.attractor_plot.send((frame, axes), key=key)
        else:
            self.attractor_plot.patch((frame, axes), cols, key=key, x_range=xr, y_range=yr)
        cols = tp.timeseries_columns(frame, var)
        yr = tp.range_with(tp.fit_range(cols["data"]["value"]), tp.fit_range(cols["model"]["value"]))
        key = ("ts", var)
        if force:
            self.ts_plot.send((frame, var), key=key)
        else:
            self.ts_plot.patch((frame, var), cols, key=key, x_range=tp.fit_range(frame.t, pad=0.01),
                               y_range=yr)
        cols = tp.symbols_columns(frame)
        if force:
            self.symbols_plot.send(frame, key="symbols")
        else:
            n = len(frame.codes)
            self.symbols_plot.patch(frame, cols, key="symbols", x_range=tp.fit_range(frame.t, pad=0.01),
                                    y_range=(-0.5, max(n, 1) - 0.5))
        if frame.x_gen is not None:
            self._graph_pending = frame
            if force or time.monotonic() - self._graph_at >= GRAPH_SECONDS:
                self._send_graph()

    def _send_graph(self) -> None:
        frame, self._graph_pending = self._graph_pending, None
        self._graph_at = time.monotonic()
        self.graph_pipe.send(frame)

    # ================================================================ lifetime
    def close(self) -> None:
        self.controller.close()
        if self._periodic is not None:
            try:
                self._periodic.stop()
            except Exception:
                pass
