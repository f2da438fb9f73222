"""The Reconstruction page's view: data, model and teacher-forcing settings, the shared run
panel, live plots, model analysis.

``ReconstructionPanel(controller)`` is a :class:`~explorer.views.base.PageView` over one
:class:`~explorer.controllers.reconstruction.ReconstructionController`; its widgets and
streams are built per instance (sessions never share them). The run controls, loss curve and
checkpoints are the platform's :class:`~explorer.views.run_panel.RunPanel`; the system picker
is :class:`~explorer.views.source.SystemPicker`.

Live drawing: while a run trains, the tick collects what the training thread queued (step
records, the latest free-run frame) and publishes it inside ``pn.io.hold()``. The training
thread computes everything heavy (free runs, subregion sequences), so a tick only moves arrays
into plots, each a :class:`~explorer.views.live.LivePlot` patched in its Bokeh sources.
"""

from __future__ import annotations

import time

import holoviews as hv
import pandas as pd
import panel as pn

from ..controllers.reconstruction import RUN_PRESETS, Frame, Progress, ReconstructionController
from ..training.verdict import D_H_GOOD, D_STSP_GOOD
from . import training_plots as tp
from .base import PageView, lazy_tabs, message
from .live import LivePlot
from .run_panel import RunPanel
from .shell import prompt_widgets
from .source import SystemPicker

#: the transition heatmap is re-rendered (not patched) at most this often (s)
GRAPH_SECONDS = 1.0


class ReconstructionPanel(PageView):
    """Sidebar and main area of the Reconstruction page around one controller."""

    TICK_MS = 100                                 # 10 updates per second while training

    def __init__(self, controller: ReconstructionController | None = None, *, sync_url: bool = True,
                 **params):
        ctrl = controller or ReconstructionController()
        super().__init__(ctrl, **params)
        self._sync_url = sync_url and pn.state.location is not None
        if self._sync_url:                        # ?page=reconstruction&preset=lecture, ...
            query = dict(pn.state.location.query_params or {})
            if any(k != "page" for k in query):
                ctrl.apply_query(query)
        self._frame: Frame | None = None              # the frame on screen
        self._graph_at = 0.0
        self._graph_pending = None
        self._n_metrics = -1
        self.source = SystemPicker(ctrl)
        self.run = RunPanel(ctrl, self)
        self._make_widgets()
        self._make_plots()
        self._layout()
        ctrl.param.watch(self._on_status, ["status", "errors"])
        ctrl.param.watch(self._on_phase, "phase")
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
        if ctrl.auto and ctrl.data is None:
            ctrl.request_data()
            self.ensure_tick()
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
        # status and analysis
        self.status = pn.pane.Markdown("", css_classes=["status-line"], **sw)
        self.b_lyap = W.Button(name="Compute Lyapunov spectrum of the model", button_type="primary", **sw)
        self.b_lyap.on_click(lambda e: self.act(self.controller.request_lyapunov))
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

    # ================================================================ plots
    def _make_plots(self) -> None:
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
        self.system_box = pn.Column(self.source,
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
            pn.layout.Divider(), self.run,
            sizing_mode="stretch_width", css_classes=["explorer-sidebar"])
        prompt_widgets(self.sidebar)
        self.tabs = lazy_tabs(
            ("Lyapunov spectrum", pn.Column(w.b_lyap, w.lyap_text, w.lyap_box, sizing_mode="stretch_width")),
            ("Fixed points", pn.Column(w.fixed_text, w.fixed_table, sizing_mode="stretch_width")),
            ("Model", pn.Column(w.model_eq, w.model_text, sizing_mode="stretch_width")),
            dynamic=False, sizing_mode="stretch_width")
        self.main = pn.Column(
            self.status,
            pn.Row(self.run.loss.pane, self.metrics_plot.pane,
                   pn.Column(w.verdict_text, w.invariants_text, width=250),
                   sizing_mode="stretch_width"),
            pn.Row(pn.Column(pn.Row(md("**Projection**", margin=(18, 5)), w.w_xvar, w.w_yvar),
                             self.attractor_plot.pane, sizing_mode="stretch_width"),
                   pn.Column(pn.Row(md("**Time series**", margin=(18, 5)), w.w_tsvar),
                             self.ts_plot.pane, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            pn.Row(self.symbols_plot.pane, self.graph_plot, sizing_mode="stretch_width"),
            self.tabs, sizing_mode="stretch_width")

    # ================================================================ actions
    def _on_file(self, event) -> None:
        if not event.new:
            return
        self.controller.load_file(event.new, self.w_file.filename or "data.csv")
        self.ensure_tick()

    # ================================================================ controller -> widgets
    def _on_status(self, *_) -> None:
        c = self.controller
        self.status.object = c.status
        err = c.errors.get("data")
        self.data_error.object = message(err)

    def _on_phase(self, *_) -> None:
        c = self.controller
        self.b_lyap.disabled = c.trainer is None
        if c.phase in ("preparing", "running") or c.running:
            self.ensure_tick()

    def _choose_preset(self, event) -> None:
        if self._building or not event.new or event.new == self.controller.preset:
            return
        self.act(self.controller.apply_preset, event.new)

    def _on_preset(self, *_, push: bool = True) -> None:
        c = self.controller
        p = RUN_PRESETS.get(c.preset)
        self.set_quietly(self.w_preset, value=c.preset if p else "")
        self.source.sync()
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
        self.system_box.visible = c.source == "system"
        self.file_box.visible = c.source == "file"

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
    def busy(self) -> bool:
        return super().busy() or self._graph_pending is not None

    def show(self, p: Progress) -> None:
        self.run.show(p)
        if p.reset:
            self._reload_history()
        elif any(r.metrics is not None for r in p.records):
            self._show_metrics()
        if p.frame is not None:
            self._show_frame(p.frame)
        if self._graph_pending is not None and time.monotonic() - self._graph_at >= GRAPH_SECONDS:
            self._send_graph()
        if p.ended:
            self._on_phase()

    # ================================================================ losses and metrics
    def _reload_history(self) -> None:
        """Redraw the metric curves (and the data) from the controller's whole history."""
        self._n_metrics = -1
        self._show_metrics()
        if not self.controller.history["step"]:
            self._frame = None
            if self.controller.preview is not None:
                self._show_frame(self.controller.preview, force=True)
            self._graph_pending = None
            self.graph_pipe.send(None)

    def _show_metrics(self) -> None:
        rows = self.controller.metric_history
        if len(rows) == self._n_metrics:
            return
        first = self._n_metrics <= 0
        self._n_metrics = len(rows)
        cols = tp.metric_columns(rows)
        vals = [c["value"] for c in cols.values()]
        data = list(rows)
        xr = (0, max(self.run.planned(), rows[-1]["step"] if rows else 1) * 1.02)
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
            with self.building():
                self.w_xvar.options = var
                self.w_yvar.options = var
                self.w_tsvar.options = var
                self.w_xvar.value = var[0]
                self.w_yvar.value = var[2] if len(var) >= 3 and tuple(var[:3]) == ("x", "y", "z") \
                    else var[min(1, len(var) - 1)]
                self.w_tsvar.value = var[0]
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
