"""The Stochastic page's view: an SDE ensemble, its potential, currents and entropy
production, and an I-OnsagerNet learning them live.

``StochasticPanel(controller)`` is a :class:`~explorer.views.base.PageView` over one
:class:`~explorer.controllers.stochastic.StochasticController`. The system picker (with typed
drift and diffusion), the parameter sliders and the run panel are the platform's; the maps
are :class:`~explorer.views.field_plots.FieldMap`\\ s patched in place, so a training frame is
a handful of small data patches.
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import panel as pn

from ..controllers.base import CUSTOM
from ..controllers.stochastic import PRESETS, FieldFrame, Sample, StochasticController, Sweep
from .base import PageView, message
from .field_plots import Curves, FieldMap
from .run_panel import RunPanel
from .shell import prompt_widgets
from .source import ParamSliders, SystemPicker

SW = dict(sizing_mode="stretch_width")


class StochasticPanel(PageView):
    """Sidebar and main area of the Stochastic page around one controller."""

    TICK_MS = 100                    # faster than the run's frames (0.14 s), none skipped

    def __init__(self, controller: StochasticController | None = None, *, sync_url: bool = True,
                 **params):
        c = controller or StochasticController()
        super().__init__(c, **params)
        self._sync_url = sync_url and pn.state.location is not None
        if self._sync_url:
            query = dict(pn.state.location.query_params or {})
            if any(k != "page" for k in query):
                c.apply_query(query)
        self._frame_shown = None
        self._rates: list[tuple[int, float]] = []
        self.source = SystemPicker(c)
        self.sliders = ParamSliders(lambda name, v: self.guard(c.set_value, name, v))
        self.run = RunPanel(c, self, loss_log=False, loss_title="Training loss (transition NLL)")
        self._widgets()
        self._plots()
        self._layout()
        c.param.watch(self._on_system, ["system", "values", "equations", "custom_params", "diffusion"])
        c.param.watch(self._on_sample, "sample")
        c.param.watch(self._on_sweep, "sweep")
        c.param.watch(self._on_frame, "frame")
        c.param.watch(self._on_preset, "preset")
        c.param.watch(self._on_errors, "errors")
        c.param.watch(lambda *_: self._reset_training(), "run_version")
        self._on_system()
        self._on_preset(push=False)
        if self.served:                  # what was drawn before the browser connected, again
            pn.state.onload(self._redraw)
        if c.auto and c.sample is None:
            c.request_sample()
            self.ensure_tick()
        elif c.sample is not None:
            self._on_sample()

    # ================================================================ widgets
    def _widgets(self) -> None:
        c, W = self.controller, pn.widgets
        self.w_preset = W.Select(name="Teaching preset", options={"(none)": ""} | {
            p.title: k for k, p in PRESETS.items()}, value=c.preset if c.preset in PRESETS else "", **SW)
        self.w_preset.param.watch(lambda e: (not self._building and e.new)
                                  and self.act(c.apply_preset, e.new), "value")
        self.preset_text = pn.pane.Markdown("", css_classes=["preset-text"], **SW)
        n = self.number_input
        self.w_batch = n("batch", W.IntInput, name="Trajectories", step=64, width=110)
        self.w_duration = n("duration", name="Duration", step=10.0, width=110)
        self.w_transient = n("transient", name="Transient", step=1.0, width=100)
        self.w_dt = n("dt", name="Step dt", step=0.001, format="0.[00000]", width=100)
        self.w_every = n("save_every", W.IntInput, name="Record every", width=100)
        self.w_seed = n("seed", W.IntInput, name="Seed", width=100)
        self.w_bins = n("bins", W.IntInput, name="Grid cells", width=100)
        self.w_xvar = W.Select(name="Map x", options=[], width=100)
        self.w_yvar = W.Select(name="Map y", options=[], width=100)
        self.w_xvar.param.watch(lambda e: self.set_param("x_var", e.new), "value")
        self.w_yvar.param.watch(lambda e: self.set_param("y_var", e.new), "value")
        self.b_sample = W.Button(name="Simulate again", button_type="primary", **SW)
        self.b_sample.on_click(lambda e: self.act(c.request_sample))
        self.sample_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        # model
        self.w_hidden = n("hidden", W.IntInput, name="Hidden units", width=100)
        self.w_layers = n("layers", W.IntInput, name="Layers", width=80)
        self.w_lr = n("lr", name="Learning rate", step=1e-4, format="0.[000000]", width=110)
        self.w_tbatch = n("train_batch", W.IntInput, name="Transitions/step", step=256, width=120)
        self.w_steps = n("steps", W.IntInput, name="Steps", step=500, width=100)
        # sweep
        self.w_sweep = W.Select(name="Sweep parameter", options=[], **SW)
        self.w_sweep.param.watch(lambda e: self.set_param("sweep_param", e.new), "value")
        self.w_slo = n("sweep_low", name="From", width=90)
        self.w_shi = n("sweep_high", name="To", width=90)
        self.w_sn = n("sweep_n", W.IntInput, name="Values", width=80)
        self.w_sbatch = n("sweep_batch", W.IntInput, name="Traj./value", width=100)
        self.b_sweep = W.Button(name="Sweep entropy production", **SW)
        self.b_sweep.on_click(lambda e: self.act(c.request_sweep))
        self.sweep_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        self.summary = pn.pane.Markdown("", **SW)

    def _plots(self) -> None:
        self.m_pot_data = FieldMap("Effective potential −T log p (samples)", palette="Viridis256",
                                   contours=True, bar_title="−T log p")
        self.m_pot_model = FieldMap("Learned potential T·V/ε (model)", palette="Viridis256",
                                    contours=True, bar_title="T V/ε")
        self.m_rev = FieldMap("Reversible drift −M∇V + ε∇·M (model)", palette="Blues256",
                              vectors=True, bar_title="|b_rev|")
        self.m_irr = FieldMap("Irreversible drift −W∇V + ε∇·W (model)", palette="Oranges256",
                              vectors=True, bar_title="|b_irr|")
        self.m_sig_data = FieldMap("Entropy production density, mean velocity v = J/p (samples)",
                                   palette="Inferno256", vectors=True, bar_title="σ")
        self.m_sig_model = FieldMap("Entropy production density (model)", palette="Inferno256",
                                    bar_title="σ")
        for m in (self.m_rev.mapper, self.m_irr.mapper):
            m.palette = tuple(reversed(m.palette))
        self.c_marginal = Curves("Stationary density (marginal)", {
            "hist": dict(kind="quad", color="#868e96", label="samples"),
            "model": dict(color="#e8590c", label="model exp(−V/ε)")}, ylabel="density")
        self.c_rate = Curves("Entropy production during training", {
            "band": dict(kind="band", color="#1c7ed6", label="samples ± error"),
            "data": dict(color="#1c7ed6", label="samples"),
            "exact": dict(color="#2b8a3e", dash="dashed", label="exact"),
            "model": dict(color="#e8590c", label="model")}, xlabel="step", ylabel="e_p")
        self.c_sweep = Curves("Entropy production against a parameter (one batched run)", {
            "rates": dict(kind="errors", color="#1c7ed6", label="estimate ± error"),
            "exact": dict(color="#2b8a3e", dash="dashed", label="exact")}, ylabel="e_p")

    def _layout(self) -> None:
        W = pn.widgets
        c = self.controller
        ensemble = pn.Card(pn.Row(self.w_batch, self.w_duration), pn.Row(self.w_transient, self.w_dt),
                           pn.Row(self.w_every, self.w_seed), pn.Row(self.w_bins, self.w_xvar, self.w_yvar),
                           self.b_sample, self.sample_error, title="Ensemble", collapsed=False, **SW)
        model = pn.Card(pn.Row(self.w_hidden, self.w_layers), pn.Row(self.w_lr, self.w_tbatch),
                        self.w_steps, self.run.controls, self.run.checkpoint, title="I-OnsagerNet",
                        **SW)
        sweep = pn.Card(self.w_sweep, pn.Row(self.w_slo, self.w_shi, self.w_sn), self.w_sbatch,
                        self.b_sweep, self.sweep_error, title="Sweep", collapsed=True, **SW)
        self.sidebar = pn.Column(self.w_preset, self.source, pn.pane.Markdown("**Parameters**"),
                                 self.sliders, ensemble, model, sweep, **SW)
        prompt_widgets(self.sidebar)
        grid = pn.GridBox(self.m_pot_data.pane, self.m_pot_model.pane, self.m_rev.pane, self.m_irr.pane,
                          self.m_sig_data.pane, self.m_sig_model.pane, self.c_marginal.pane,
                          self.c_rate.pane, ncols=2, **SW)
        self.main = pn.Column(self.status_line(), self.preset_text, self.summary, grid,
                              pn.Row(self.run.loss.pane, self.c_sweep.pane, **SW), **SW)
        _ = (W, c)

    # ================================================================ controller -> widgets
    def _on_system(self, *_) -> None:
        c = self.controller
        with self.building():
            self.source.sync()
            if c.system == CUSTOM:
                self.sliders.note("Parameters of typed equations are set in the parameter field.")
            else:
                self.sliders.show(c.param_specs(), c.values)
            var = list(c.variables())
            for w, v in ((self.w_xvar, c.x_var), (self.w_yvar, c.y_var)):
                if w.options != var:
                    w.options = var
                if v in var:
                    w.value = v
            self.w_xvar.visible = self.w_yvar.visible = len(var) > 2
            names = [p.name for p in c.param_specs()]
            self.w_sweep.options = names
            if c.sweep_param in names:
                self.w_sweep.value = c.sweep_param
            self.b_sweep.disabled = not names

    def _on_preset(self, *_, push: bool = True) -> None:
        c = self.controller
        p = PRESETS.get(c.preset)
        self.set_quietly(self.w_preset, value=c.preset if p else "")
        self.preset_text.object = f"**{p.title}.** {p.text}" if p else ""
        self._on_system()
        if push and self._sync_url:
            q = {"page": "stochastic", **({"preset": c.preset} if c.preset else {"sys": c.system})}
            pn.state.location.search = "?" + urlencode(q)

    def _on_errors(self, *_) -> None:
        e = self.controller.errors
        self.sample_error.object = message(e.get("sample"))
        self.sweep_error.object = message(e.get("sweep"))

    # ================================================================ drawing
    def _on_sample(self, *_) -> None:
        s: Sample | None = self.controller.sample
        if s is None:
            return
        labels = s.variables
        self.m_pot_data.show(s.xs, s.ys, s.potential, labels=labels)
        self.m_sig_data.show(s.xs, s.ys, s.sigma, vec=(s.velocity[0], s.velocity[1]), labels=labels)
        dx = s.xs[1] - s.xs[0]
        marg = np.nansum(s.density, axis=0) * (s.ys[1] - s.ys[0])
        self.c_marginal.set("hist", left=s.xs - dx / 2, right=s.xs + dx / 2, top=marg)
        self.c_marginal.fig.xaxis.axis_label = labels[0]
        self._summary()
        self._reset_training()

    def _redraw(self) -> None:
        """Draw the current sample and model frame again (the page has just connected)."""
        if self.controller.sample is not None:
            self._on_sample()
            self._frame_shown = None
            self._on_frame()

    def _reset_training(self) -> None:
        """A new sample or run: the model's pictures and curve start again."""
        c = self.controller
        self._rates = []
        self.c_rate.set("model", x=[], y=[])
        if c.frame is None:
            for m in (self.m_pot_model, self.m_rev, self.m_irr, self.m_sig_model):
                m.clear()
            self.c_marginal.set("model", x=[], y=[])
        self._reference_lines()

    def _reference_lines(self) -> None:
        s = self.controller.sample
        if s is None:
            return
        hi = max(self.controller.steps, self._rates[-1][0] if self._rates else 1)
        xs = [0, hi]
        self.c_rate.set("data", x=xs, y=[s.rate, s.rate])
        self.c_rate.set("band", x=xs, lo=[s.rate - s.stderr] * 2, hi=[s.rate + s.stderr] * 2)
        self.c_rate.set("exact", x=xs if s.exact is not None else [],
                        y=[s.exact, s.exact] if s.exact is not None else [])

    def _on_frame(self, *_) -> None:
        f: FieldFrame | None = self.controller.frame
        s = self.controller.sample
        if f is None or s is None or f is self._frame_shown:
            return
        self._frame_shown = f
        labels = s.variables
        lo, hi = self.m_pot_data.mapper.low, self.m_pot_data.mapper.high
        self.m_pot_model.show(s.xs, s.ys, f.potential, labels=labels, limits=(lo, hi))
        self.m_rev.show(s.xs, s.ys, np.hypot(*f.b_rev), vec=(f.b_rev[0], f.b_rev[1]), labels=labels,
                        geometry=f.rev_geometry)
        self.m_irr.show(s.xs, s.ys, np.hypot(*f.b_irr), vec=(f.b_irr[0], f.b_irr[1]), labels=labels,
                        geometry=f.irr_geometry)
        self.m_sig_model.show(s.xs, s.ys, f.sigma, labels=labels,
                              limits=(self.m_sig_data.mapper.low, self.m_sig_data.mapper.high))
        self.c_marginal.set("model", x=s.xs, y=np.nansum(f.density, axis=0) * (s.ys[1] - s.ys[0]))
        if np.isfinite(f.rate) and (not self._rates or f.step > self._rates[-1][0]):
            self._rates.append((f.step, f.rate))
            steps, rates = zip(*self._rates)
            self.c_rate.set("model", x=steps, y=rates)
            if f.step > self.controller.steps:
                self._reference_lines()
        self._summary()

    def _on_sweep(self, *_) -> None:
        sw: Sweep | None = self.controller.sweep
        if sw is None:
            return
        self.c_sweep.set("rates", x=sw.values, y=sw.rates, lo=sw.rates - sw.stderrs, hi=sw.rates + sw.stderrs)
        if sw.exact is not None:
            self.c_sweep.set("exact", x=sw.values, y=sw.exact)
        else:
            self.c_sweep.set("exact", x=[], y=[])
        self.c_sweep.fig.xaxis.axis_label = sw.name

    def _summary(self) -> None:
        c = self.controller
        s, f = c.sample, c.frame
        if s is None:
            self.summary.object = ""
            return
        parts = [f"**Entropy production** (k_B = 1, per unit time): samples **{s.rate:.4g} ± "
                 f"{s.stderr:.2g}** ({s.method})"]
        if s.exact is not None:
            parts.append(f"exact **{s.exact:.4g}** (linear SDE: Lyapunov equation)")
        if f is not None:
            parts.append(f"model **{f.rate:.4g}** at step {f.step:,}")
        self.summary.object = " · ".join(parts)

    def show(self, p) -> None:
        self.run.show(p)                     # the controller took the new frame (on_frame)


def view(*, sync_url: bool = False) -> StochasticPanel:
    """The page body around a new controller (the registry's factory)."""
    return StochasticPanel(StochasticController(), sync_url=sync_url)


__all__ = ["StochasticPanel", "view"]
