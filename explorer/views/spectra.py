"""The Spectra page's view: eigenvalues of sequence models in the complex plane, moving while
the model trains, with the memory they give.

``SpectraPanel(controller)`` is a :class:`~explorer.views.base.PageView` over one
:class:`~explorer.controllers.spectra.SpectraController`. Plots are Bokeh figures patched in
place (:class:`~explorer.views.field_plots.Curves`, :class:`~explorer.views.field_plots.FieldMap`):
a live training frame is a few small data patches.
"""

from __future__ import annotations

import time
from collections import deque
from urllib.parse import urlencode

import numpy as np
import panel as pn

from ..controllers.spectra import (
    FAMILY_TITLES,
    INIT_TITLES,
    MEMORY_TITLES,
    PRESETS,
    TRAIL_FRAMES,
    SpectraController,
    SpectrumFrame,
)
from .base import PageView, message
from .field_plots import PALETTE, Curves, FieldMap
from .live import FramePacer
from .run_panel import RunPanel
from .shell import prompt_widgets

SW = dict(sizing_mode="stretch_width")
#: while training, the trails and the plots beside the planes are redrawn at most this often (s)
DETAIL_SECONDS = 1.0
#: trail dots drawn per plane at most (older frames are thinned)
MAX_TRAIL_POINTS = 8_000
STAB_COLORS = {"ssm": "#1c7ed6", "selective": "#2b8a3e", "transformer": "#e8590c"}


def colours(groups: np.ndarray) -> list[str]:
    return [PALETTE[int(g) % len(PALETTE)] for g in groups]


def unit_circle(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    a = np.linspace(0, 2 * np.pi, n)
    return np.cos(a), np.sin(a)


class SpectraPanel(PageView):
    """Sidebar and main area of the Spectra page around one controller."""

    TICK_MS = 100                       # a new spectrum every frame (frames every 0.1 s)

    def __init__(self, controller: SpectraController | None = None, *, sync_url: bool = True,
                 **params):
        c = controller or SpectraController()
        super().__init__(c, **params)
        self._sync_url = sync_url and pn.state.location is not None
        if self._sync_url:
            query = dict(pn.state.location.query_params or {})
            if any(k != "page" for k in query):
                c.apply_query(query)
        self._shown = None
        self._trail: deque = deque(maxlen=TRAIL_FRAMES)
        # the browser acknowledges each spectrum it drew; a waiting one goes out at once
        self.pacer = FramePacer(on_ack=self._on_ack)
        self._detail_at = 0.0
        self.run = RunPanel(c, self, loss_title="Training loss (normalised MSE)")
        self._widgets()
        self._plots()
        self._layout()
        c.param.watch(self._on_frame, "frame")
        c.param.watch(self._on_stability, "stability")
        c.param.watch(self._on_tokens, "tokens")
        c.param.watch(self._on_sweep, "sweep")
        c.param.watch(self._on_preset, "preset")
        c.param.watch(self._on_errors, "errors")
        c.param.watch(self._on_family, ["family", "task"])
        c.param.watch(lambda *_: self._trail.clear(), "run_version")
        self._on_family()
        self._on_preset(push=False)
        if self.served:
            pn.state.onload(self._redraw)
        if c.auto and c.frame is None:
            c.request_preview()
            self.ensure_tick()
        elif c.frame is not None:
            self._on_frame()

    # ================================================================ widgets
    def _widgets(self) -> None:
        c, W = self.controller, pn.widgets
        n = self.number_input

        def select(name, options, label, **kw):
            w = W.Select(name=label, options=options, value=getattr(c, name),
                         description=c.param[name].doc, **kw)
            w.param.watch(lambda e: self.set_param(name, e.new), "value")
            c.param.watch(lambda e: self.set_quietly(w, value=e.new), name)
            return w

        self.w_preset = W.Select(name="Teaching preset", options={"(none)": ""} | {
            p.title: k for k, p in PRESETS.items()}, value=c.preset if c.preset in PRESETS else "", **SW)
        self.w_preset.param.watch(lambda e: (not self._building and e.new)
                                  and self.act(c.apply_preset, e.new), "value")
        self.preset_text = pn.pane.Markdown("", css_classes=["preset-text"], **SW)
        self.w_family = select("family", {v: k for k, v in FAMILY_TITLES.items()}, "Model", **SW)
        self.w_init = select("init", {v: k for k, v in INIT_TITLES.items()}, "Initialisation", **SW)
        self.w_disc = select("discretization", {"Zero-order hold": "zoh", "Bilinear": "bilinear",
                                                "Forward Euler": "euler"}, "Discretisation", **SW)
        self.w_N = n("state_size", W.IntInput, name="State size N", width=110)
        self.w_H = n("channels", W.IntInput, name="Channels H", width=100)
        self.w_dtmin = n("dt_min", name="Δ min", step=1e-3, format="0.[00000]", width=100)
        self.w_dtmax = n("dt_max", name="Δ max", step=1e-2, format="0.[00000]", width=100)
        self.w_layers = n("layers", W.IntInput, name="Layers", width=80)
        self.w_dstate = n("d_state", W.IntInput, name="State size N", width=110)
        self.w_dmodel = n("d_model", W.IntInput, name="Width", width=100)
        self.w_heads = n("n_heads", W.IntInput, name="Heads", width=90)
        self.w_dhead = n("d_head", W.IntInput, name="Head dim", width=90)
        self.w_causal = W.Checkbox(name="Causal", value=c.causal)
        self.w_causal.param.watch(lambda e: self.set_param("causal", e.new), "value")
        self.ssm_box = pn.Column(self.w_init, self.w_disc, pn.Row(self.w_N, self.w_H),
                                 pn.Row(self.w_dtmin, self.w_dtmax), **SW)
        self.sel_box = pn.Column(pn.Row(self.w_dstate, self.w_dmodel), **SW)
        self.att_box = pn.Column(pn.Row(self.w_heads, self.w_dhead, self.w_causal), **SW)
        # task
        self.w_task = select("task", {"Memory function": "memory", "D-retrieval": "retrieval"}, "Task", **SW)
        self.w_memory = select("memory", {v: k for k, v in MEMORY_TITLES.items()}, "Memory function ρ", **SW)
        self.w_strength = pn.widgets.FloatSlider(name="Memory length (steps)", start=1.0, end=200.0,
                                                 step=1.0, value=min(c.strength, 200.0), **SW)
        self.w_strength.param.watch(lambda e: self.set_param("strength", float(e.new)), "value_throttled")
        c.param.watch(lambda e: self.set_quietly(self.w_strength, value=float(min(max(e.new, 1.0), 200.0))),
                      "strength")
        self.w_L = n("seq_len", W.IntInput, name="Length L", step=64, width=100)
        self.w_input = select("input_kind", {"White noise": "white", "AR(1)": "ar1"}, "Input", width=120)
        self.w_phi = n("phi", name="AR(1) φ", step=0.05, width=90)
        self.w_readout = select("readout", {"Linear": "linear", "tanh": "tanh"}, "Readout", width=100)
        self.w_D = n("D", W.IntInput, name="D (tokens)", width=90)
        self.memory_box = pn.Column(self.w_memory, self.w_strength,
                                    pn.Row(self.w_input, self.w_phi, self.w_readout), **SW)
        # training
        self.w_lr = n("lr", name="Learning rate", step=1e-4, format="0.[000000]", width=110)
        self.w_tbatch = n("train_batch", W.IntInput, name="Batch", width=90)
        self.w_steps = n("steps", W.IntInput, name="Steps", step=100, width=100)
        self.w_seed = n("seed", W.IntInput, name="Seed", width=90)
        self.preview_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        # analyses
        self.b_stab = W.Button(name="Compare sensitivity (Lyapunov vs attention)", **SW)
        self.b_stab.on_click(lambda e: self.act(c.request_stability))
        self.stab_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        self.w_budget = n("budget", W.IntInput, name="Budget h·d_head", width=120)
        self.w_sweep_steps = n("sweep_steps", W.IntInput, name="Steps/model", width=100)
        self.b_sweep = W.Button(name="Sweep loss against heads", **SW)
        self.b_sweep.on_click(lambda e: self.act(c.request_sweep))
        self.sweep_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        self.summary = pn.pane.Markdown("", **SW)

    def _plots(self) -> None:
        plane = dict(match_aspect=True, xlabel="Re λ", ylabel="Im λ")
        self.p_cont = Curves("Continuous eigenvalues", {
            "boundary": dict(color="#adb5bd", dash="dashed", label="Re λ = 0 (stability boundary)"),
            "trails": dict(color="#868e96", label="paths over the last steps"),
            "points": dict(kind="points", label="eigenvalues")}, height=330,
            xlabel="Re λ", ylabel="Im λ")          # not to scale: Im λ spans far more than Re λ
        self.p_disc = Curves("Discrete eigenvalues", {
            "circle": dict(color="#adb5bd", dash="dashed", label="unit circle"),
            "trails": dict(color="#868e96", label="paths over the last steps"),
            "points": dict(kind="points", label="eigenvalues")}, height=330, **plane)
        cx, cy = unit_circle()
        self.p_disc.set("circle", x=cx, y=cy)
        self.pacer.watch(self.p_disc.sources["points"])       # written last in each frame
        self.p_mod = Curves("Histogram of |λ̄|", {"h": dict(kind="quad", color="#1c7ed6", label="|λ̄|")},
                            xlabel="|λ̄|", ylabel="count", height=220)
        self.p_arg = Curves("Histogram of arg λ̄", {"h": dict(kind="quad", color="#ae3ec9", label="arg λ̄")},
                            xlabel="arg λ̄ (rad)", ylabel="count", height=220)
        self.p_memory = Curves("Memory function: learned against the target", {
            "target": dict(color="#2b8a3e", dash="dashed", label="target ρ(s)"),
            "memory": dict(color="#e8590c", label="learned (impulse response)")},
            xlabel="lag s (steps)", ylabel="ρ(s)", height=260)
        self.p_freq = Curves("Frequency response |K̂(ω)|", {
            "target": dict(color="#2b8a3e", dash="dashed", label="target"),
            "memory": dict(color="#e8590c", label="learned")},
            xlabel="frequency (cycles/step)", ylabel="|K̂|", height=260, y_axis_type="log")
        self.p_kernel = Curves("Convolution kernels K_l of the first channels", {
            "k": dict(kind="multi", alpha=0.8, width=1.5)}, xlabel="l", ylabel="K_l", height=260)
        self.m_attn = FieldMap("Attention maps of layer 1 (heads side by side)", palette="Viridis256",
                               bar_title="weight", height=300)
        self.p_circ = Curves("QK and OV circuits: eigenvalues per head", {
            "qk": dict(kind="points", label="QK: W_Q W_Kᵀ", marker="circle"),
            "ov": dict(kind="points", label="OV: W_O W_V", marker="triangle")},
            height=300, **plane)
        self.p_sweep = Curves("Loss against the number of heads (h·d_head fixed)", {
            "loss": dict(color="#1c7ed6", label="final NMSE"),
            "pts": dict(kind="errors", color="#1c7ed6", label="runs")},
            xlabel="heads h", ylabel="NMSE", height=260, y_axis_type="log")
        self.p_tokens = Curves("Token trajectories (continuous-depth limit)", {
            "x": dict(kind="multi", alpha=0.9, width=1.5)}, xlabel="depth t", ylabel="token x", height=280)
        self.m_phase = FieldMap("Regimes over μ = S_Cᵀ S_B and S_Δ·x₀ (0 converge, 1 slow, 2 fast divergence)",
                                palette="Cividis256", bar_title="regime", height=280)
        from bokeh.models import ColumnDataSource
        self._marker = ColumnDataSource({"x": [], "y": []})
        self.m_phase.fig.scatter("x", "y", source=self._marker, size=14, marker="x", color="red",
                                 line_width=3)
        self.p_stab = Curves("Sensitivity to a perturbation of the first input: |Δy_t| / ε", {
            **{fam: dict(color=col, label=fam) for fam, col in STAB_COLORS.items()},
            "lyap": dict(color="#868e96", dash="dashed", label="exp(λ_max t)")},
            xlabel="lag t (steps)", ylabel="|Δy_t| / ε", height=280, y_axis_type="log")

    def _layout(self) -> None:
        model = pn.Card(self.w_family, self.ssm_box, self.sel_box, self.att_box, self.w_layers,
                        title="Model", collapsed=False, **SW)
        task = pn.Card(self.w_task, self.memory_box, pn.Row(self.w_L, self.w_D), title="Task", **SW)
        train = pn.Card(pn.Row(self.w_lr, self.w_tbatch), pn.Row(self.w_steps, self.w_seed),
                        self.run.controls, self.run.checkpoint, title="Training", **SW)
        analyses = pn.Card(self.b_stab, self.stab_error, pn.Row(self.w_budget, self.w_sweep_steps),
                           self.b_sweep, self.sweep_error, title="Analyses", collapsed=True, **SW)
        self.sidebar = pn.Column(self.w_preset, model, self.preview_error, task, train, analyses, **SW)
        prompt_widgets(self.sidebar)
        self.ssm_plots = pn.GridBox(self.p_memory.pane, self.p_freq.pane, self.p_kernel.pane,
                                    self.run.loss.pane, ncols=2, **SW)
        self.att_plots = pn.GridBox(self.m_attn.pane, self.p_circ.pane, self.p_sweep.pane, ncols=2, **SW)
        self.tok_plots = pn.GridBox(self.p_tokens.pane, self.m_phase.pane, ncols=2, **SW)
        self.main = pn.Column(
            self.status_line(), self.preset_text, self.summary,
            pn.GridBox(self.p_cont.pane, self.p_disc.pane, self.p_mod.pane, self.p_arg.pane, ncols=2, **SW),
            self.ssm_plots, self.att_plots, self.tok_plots, self.p_stab.pane, **SW)

    # ================================================================ controller -> widgets
    def _on_family(self, *_) -> None:
        c = self.controller
        fam = c.family
        self.ssm_box.visible = fam == "ssm"
        self.sel_box.visible = fam == "selective"
        self.att_box.visible = fam == "transformer"
        self.memory_box.visible = c.task == "memory"
        self.w_D.visible = c.task == "retrieval"
        self.att_plots.visible = fam == "transformer" or c.task == "retrieval"
        self.tok_plots.visible = fam == "selective"
        self.p_kernel.pane.visible = fam == "ssm"
        self.p_memory.pane.visible = self.p_freq.pane.visible = c.task == "memory"
        self._trail.clear()

    def _on_preset(self, *_, push: bool = True) -> None:
        c = self.controller
        p = PRESETS.get(c.preset)
        self.set_quietly(self.w_preset, value=c.preset if p else "")
        self.preset_text.object = f"**{p.title}.** {p.text}" if p else ""
        self._on_family()
        if push and self._sync_url:
            q = {"page": "spectra", **c.to_query()}
            pn.state.location.search = "?" + urlencode(q)

    def _on_errors(self, *_) -> None:
        e = self.controller.errors
        self.preview_error.object = message(e.get("preview"))
        self.stab_error.object = message(e.get("stability"))
        self.sweep_error.object = message(e.get("sweep"))

    # ================================================================ drawing
    def _redraw(self) -> None:
        self._shown = None
        self._on_frame()
        self._on_stability()
        self._on_tokens()
        self._on_sweep()

    def _plane(self, plot: Curves, z: np.ndarray, groups: np.ndarray, title: str) -> None:
        """Eigenvalues ``z`` coloured by channel/head."""
        if plot.fig.title.text != title:
            plot.fig.title.text = title
        plot.set("points", x=z.real, y=z.imag, g=groups)

    def _trails(self, plot: Curves, z: np.ndarray, trail_index: int) -> None:
        """The path of each eigenvalue over the last frames as one NaN-separated line (one
        path for the browser to stroke, whatever K)."""
        trail = [t[trail_index] for t in self._trail if t[trail_index].shape == z.shape]
        keep = max(1, len(trail) * z.size // MAX_TRAIL_POINTS + 1)
        trail = trail[::-1][::keep][::-1]                          # at most MAX_TRAIL_POINTS vertices
        if len(trail) >= 2:
            tz = np.stack(trail + [np.full(z.shape, np.nan)], axis=1).ravel()   # (K, frames + 1)
            plot.set("trails", x=tz.real, y=np.where(np.isnan(tz.real), np.nan, tz.imag))
        else:
            plot.set("trails", x=[], y=[])

    def _on_ack(self) -> None:
        with pn.io.hold():
            self._on_frame()

    def _on_frame(self, *_) -> None:
        """Draw the controller's newest frame, once the browser has shown the previous one (a
        frame that waits is drawn by a later poll, or replaced by a newer one)."""
        f: SpectrumFrame | None = self.controller.frame
        if f is None or f is self._shown:
            return
        if f.step > 0 and not self.pacer.ready():
            return
        self._shown = f
        nc = f.cont.size
        g_cont = f.group[:nc] if f.family == "transformer" else f.group
        g_disc = f.group[nc:] if f.family == "transformer" else f.group
        if f.step == 0:
            self._trail.clear()
        self._trail.append((f.cont, f.disc))
        self._plane(self.p_cont, f.cont, g_cont, f.cont_title)
        now = time.monotonic()
        if f.step == 0 or f is self.controller.frame and not self.controller.running \
                or now - self._detail_at >= DETAIL_SECONDS:
            self._detail_at = now
            self._trails(self.p_cont, f.cont, 0)
            self._trails(self.p_disc, f.disc, 1)
            if f.family == "ssm" and f.cont.size:
                span = max(abs(float(f.cont.imag.min())), abs(float(f.cont.imag.max())), 1.0)
                self.p_cont.set("boundary", x=[0, 0], y=[-span * 1.05, span * 1.05])
            else:
                self.p_cont.set("boundary", x=[], y=[])
            self._details(f)
            self._summary()
        self._plane(self.p_disc, f.disc, g_disc, f.disc_title)      # last: the paced source
        self.pacer.sent_frame()

    def _details(self, f: SpectrumFrame) -> None:
        """Histograms, memory, frequency response, kernels and attention (at most every
        :data:`DETAIL_SECONDS` while training: the planes are what moves)."""
        mod, arg = np.abs(f.disc), np.angle(f.disc)
        self._hist(self.p_mod, mod)
        self._hist(self.p_arg, arg)
        if f.memory is not None:
            self.p_memory.set("memory", x=f.lags, y=f.memory)
        if f.target is not None:
            self.p_memory.set("target", x=f.lags, y=f.target)
        else:
            self.p_memory.set("target", x=[], y=[])
        fr = f.freqs[1:]
        if f.response is not None:
            self.p_freq.set("memory", x=fr, y=np.maximum(f.response[1:], 1e-12))
        if f.target_response is not None:
            self.p_freq.set("target", x=fr, y=np.maximum(f.target_response[1:], 1e-12))
        else:
            self.p_freq.set("target", x=[], y=[])
        if f.kernels is not None:
            ks = list(f.kernels)
            self.p_kernel.set("k", xs=[f.lags[: k.size] for k in ks], ys=ks, color=colours(np.arange(len(ks))))
        if f.attention is not None:
            self._attention(f)

    def _hist(self, plot: Curves, v: np.ndarray) -> None:
        v = v[np.isfinite(v)]
        if v.size == 0:
            plot.set("h", left=[], right=[], top=[])
            return
        lo, hi = float(v.min()), float(v.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5e-3, hi + 0.5e-3
        counts, edges = np.histogram(v, bins=min(40, max(5, v.size // 3)), range=(lo, hi))
        plot.set("h", left=edges[:-1], right=edges[1:], top=counts)

    def _attention(self, f: SpectrumFrame) -> None:
        a = f.attention                                          # (heads, T, T)
        h, T, _ = a.shape
        gap = np.full((T, 1), np.nan)
        img = np.concatenate([np.concatenate([a[i], gap], axis=1) for i in range(h)], axis=1)[:, :-1]
        xs = np.arange(img.shape[1], dtype=float)
        ys = np.arange(T, dtype=float)
        self.m_attn.show(xs, ys, img[::-1], labels=(f"key position (heads 1…{h} side by side)",
                                                     "query position (top: first)"), limits=(0.0, 1.0))
        if f.circuits is not None:
            qk, ov = f.circuits["qk"], f.circuits["ov"]
            gq = np.repeat(np.arange(qk.shape[1]), qk.shape[2])[None].repeat(qk.shape[0], 0).ravel()
            self.p_circ.set("qk", x=qk.real.ravel(), y=qk.imag.ravel(), g=gq)
            self.p_circ.set("ov", x=ov.real.ravel(), y=ov.imag.ravel(), g=gq)

    def _on_stability(self, *_) -> None:
        s = self.controller.stability
        if s is None:
            return
        for fam in ("ssm", "selective", "transformer"):
            label = next((k for k in s.curves if k.startswith(fam)), None)
            if label is None:
                self.p_stab.set(fam, x=[], y=[])
            else:
                self.p_stab.set(fam, x=s.lags, y=np.maximum(s.curves[label], 1e-16))
        if s.lyapunov:
            label, lam = max(s.lyapunov.items(), key=lambda kv: kv[1])
            c0 = s.curves[label][0] if s.curves[label][0] > 0 else 1.0
            self.p_stab.set("lyap", x=s.lags, y=np.maximum(c0 * np.exp(lam * s.lags), 1e-16))
        parts = [f"{k}: λ_max = {v:+.4g} per step" for k, v in s.lyapunov.items()]
        self.p_stab.fig.title.text = ("Sensitivity to a perturbation of the first input: |Δy_t|/ε"
                                      + (" (grey: exp(λ_max t)); " + ", ".join(parts) if parts else ""))

    def _on_tokens(self, *_) -> None:
        tp = self.controller.tokens
        if tp is None:
            return
        xs = [tp.t] * tp.x.shape[1]
        ys = [np.where(np.isfinite(col), col, np.nan) for col in tp.x.T]
        self.p_tokens.set("x", xs=xs, ys=ys, color=colours(np.arange(len(ys))))
        self.p_tokens.fig.title.text = (f"Token trajectories: {tp.regime} (μ = {tp.params['mu']:.3g}, "
                                        f"S_Δ = {tp.params['s_delta']:.3g}, b = {tp.params['b']:.3g})")
        self.m_phase.show(tp.mu_axis, tp.sdx_axis, tp.regimes.astype(float), labels=("μ", "S_Δ · x₀"),
                          limits=(0.0, 2.0))
        self._marker.data = {"x": [tp.marker[0]], "y": [tp.marker[1]]}

    def _on_sweep(self, *_) -> None:
        sw = self.controller.sweep
        if sw is None:
            return
        h = np.asarray(sw.heads, float)
        loss = np.asarray(sw.losses, float)
        self.p_sweep.set("loss", x=h, y=loss)
        self.p_sweep.set("pts", x=h, y=loss, lo=loss, hi=loss)

    def _summary(self) -> None:
        c = self.controller
        f = c.frame
        if f is None:
            self.summary.object = ""
            return
        parts = [f"**{FAMILY_TITLES[f.family]}**, step {f.step:,}"]
        if f.lyapunov is not None:
            parts.append(f"largest Lyapunov exponent **{f.lyapunov:+.4g}** per step")
        if f.dt is not None and f.dt.size:
            parts.append(f"Δ ∈ [{f.dt.min():.3g}, {f.dt.max():.3g}]")
        if f.family != "transformer" and f.disc.size:
            parts.append(f"max |λ̄| = {np.abs(f.disc).max():.5f}")
        text = " · ".join(parts)
        if f.warning:
            text += f"  \n⚠ {f.warning}"
        self.summary.object = text

    def show(self, p) -> None:
        self.run.show(p)                     # the controller took the new frame (on_frame)
        self._on_frame()                     # a frame held back until the browser was ready


def view(*, sync_url: bool = False) -> SpectraPanel:
    """The page body around a new controller (the registry's factory)."""
    return SpectraPanel(SpectraController(), sync_url=sync_url)


__all__ = ["SpectraPanel", "view"]
