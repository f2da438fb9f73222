"""The Latent dynamics page's view: frames in, a latent space out, its vector field live.

``LatentPanel(controller)`` is a :class:`~explorer.views.base.PageView` over one
:class:`~explorer.controllers.latent.LatentController`. Plots are Bokeh figures patched in
place (:class:`~explorer.views.field_plots.Curves`, :class:`~explorer.views.field_plots.FieldMap`):
a live training frame is a few small data patches, paced by the browser
(:class:`~explorer.views.live.FramePacer`). Frames are shown in grey (0 black, 1 white) with
row 0 at the top.
"""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import panel as pn

from ..controllers.latent import (MODEL_TITLES, PRESETS, SCENE_TITLES, LatentController,
                                  describe_analysis, metric_parts)
from .base import PageView, message
from .field_plots import PALETTE, Curves, FieldMap
from .live import FramePacer
from .run_panel import RunPanel
from .shell import prompt_widgets

SW = dict(sizing_mode="stretch_width")


def column(a) -> np.ndarray:
    """A contiguous float64 column for a Bokeh source (a strided view is sent as binary)."""
    return np.ascontiguousarray(a, dtype=float)


def fp_colour(fp) -> str:
    """Green stable, orange saddle, red unstable, blue non-hyperbolic (a centre)."""
    if "saddle" in fp.type:
        return "#f08c00"
    if "non-hyperbolic" in fp.type:
        return "#1c7ed6"
    return "#2b8a3e" if fp.stable else "#e03131"
MODEL_COLORS = {"cae": "#e8590c", "cpae": "#1c7ed6"}


def tile(frames: np.ndarray, *, gap: float = np.nan) -> np.ndarray:
    """Frames (k, H, W) side by side as one image (H, k·(W+1)−1), NaN columns between."""
    k, H, W = frames.shape
    sep = np.full((H, 1), gap, np.float32)
    cols = []
    for i in range(k):
        cols += [frames[i], sep]
    return np.concatenate(cols[:-1], axis=1) if cols else np.zeros((H, 0), np.float32)


def show_image(m: FieldMap, img: np.ndarray, labels=("", "")) -> None:
    """A frame-like image (row 0 at the top) on pixel coordinates, grey 0..1."""
    H, W = img.shape
    m.show(np.arange(W, dtype=float), np.arange(H, dtype=float), img[::-1], labels=labels,
           limits=(0.0, 1.0))


class LatentPanel(PageView):
    """Sidebar and main area of the Latent dynamics page around one controller."""

    TICK_MS = 100

    def __init__(self, controller: LatentController | None = None, *, sync_url: bool = True, **params):
        c = controller or LatentController()
        super().__init__(c, **params)
        self._sync_url = sync_url and pn.state.location is not None
        if self._sync_url:
            query = dict(pn.state.location.query_params or {})
            if any(k != "page" for k in query):
                c.apply_query(query)
        self._shown = None
        self._held_details = self._held_ed = None     # parts of pictures not drawn yet
        self.pacer = FramePacer(on_ack=self._on_ack)
        self.run = RunPanel(c, self, loss_title="Training loss")
        self._widgets()
        self._plots()
        self._layout()
        c.param.watch(self._on_picture, "picture")
        c.param.watch(self._on_data, "data")
        c.param.watch(self._on_analysis, "analysis")
        c.param.watch(self._on_compare, "compare")
        c.param.watch(self._on_preset, "preset")
        c.param.watch(self._on_errors, "errors")
        c.param.watch(self._on_source, ["source", "scene", "model"])
        self._on_source()
        self._on_preset(push=False)
        if self.served:
            pn.state.onload(self._redraw)
        if c.auto and c.data is None:
            c.request_data()
            self.ensure_tick()
        else:
            self._redraw()

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
        # data
        self.w_source = select("source", {"Rendered system": "render", "Uploaded frames": "upload"},
                               "Frames", **SW)
        self.w_scene = select("scene", {v: k for k, v in SCENE_TITLES.items()}, "Scene", **SW)
        self.w_system = W.TextInput(name="System (blob)", value=c.system, **SW)
        self.w_system.param.watch(lambda e: self.set_param("system", e.new.strip()), "value")
        c.param.watch(lambda e: self.set_quietly(self.w_system, value=e.new), "system")
        self.w_size = n("size", W.IntInput, name="Size (px)", width=90)
        self.w_frames = n("n_frames", W.IntInput, name="Frames", step=100, width=100)
        self.w_dt = n("dt", name="Δt", step=0.01, width=80)
        self.w_amp = n("amplitude", name="Amplitude", step=0.1, width=100)
        self.w_shape = select("shape", {"Gaussian blob": "gaussian", "Hard-edged square": "square"},
                              "Blob", width=150)
        self.w_width = n("width", name="Blob width (px)", step=0.5, width=110)
        self.w_noise = n("noise", name="Pixel noise", step=0.01, width=100)
        self.w_bg = W.Checkbox(name="Distractor background", value=c.background)
        self.w_bg.param.watch(lambda e: self.set_param("background", e.new), "value")
        c.param.watch(lambda e: self.set_quietly(self.w_bg, value=e.new), "background")
        self.w_file = W.FileInput(accept=".npy,.npz,.zip", multiple=False, **SW)
        self.w_file.param.watch(self._on_file, "value")
        self.w_file_dt = n("file_dt", name="Δt of the file", width=120)
        self.file_text = pn.pane.Markdown("NPY/NPZ of shape (T, H, W) or (T, H, W, 1), or a ZIP "
                                          "of PNG frames (sorted by name); 8–128 px.",
                                          css_classes=["preset-text"], **SW)
        self.data_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        self.render_box = pn.Column(self.w_scene, self.w_system,
                                    pn.Row(self.w_size, self.w_frames, self.w_dt),
                                    pn.Row(self.w_amp, self.w_shape, self.w_width), pn.Row(self.w_noise, self.w_bg), **SW)
        self.upload_box = pn.Column(self.w_file, self.w_file_dt, self.file_text, **SW)
        # model and training
        self.w_model = select("model", {v: k for k, v in MODEL_TITLES.items()}, "Model", **SW)
        self.w_latent = n("latent", W.IntInput, name="Latent size", width=100)
        self.w_cont = n("continuity", name="Continuity weight", step=0.1, width=130)
        self.w_lr = n("lr", name="Learning rate", step=1e-4, format="0.[000000]", width=110)
        self.w_batch = n("train_batch", W.IntInput, name="Batch", width=90)
        self.w_steps = n("steps", W.IntInput, name="Steps", step=100, width=100)
        self.w_seed = n("seed", W.IntInput, name="Seed", width=90)
        # analyses
        self.b_analysis = W.Button(name="Fixed points and encode–decode attractors", **SW)
        self.b_analysis.on_click(lambda e: self.act(c.request_analysis))
        self.analysis_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        self.b_compare = W.Button(name="Compare plain CAE and CpAE (same seed and budget)", **SW)
        self.b_compare.on_click(lambda e: self.act(c.request_compare))
        self.compare_error = pn.pane.Markdown("", css_classes=["field-error"], **SW)
        self.summary = pn.pane.Markdown("", **SW)
        # the animation: true, reconstructed and predicted frame side by side
        self.player = W.Player(name="Frame", start=0, end=1, value=0, interval=120, loop_policy="loop",
                               show_loop_controls=False, width=330, visible_buttons=["pause", "play"])
        self.player.param.watch(lambda e: self._animate(), "value")

    def _plots(self) -> None:
        self.m_strip = FieldMap("Frames: truth (top row) and reconstruction (bottom row)",
                                palette="Greys256", bar_title="", height=200)
        self.m_anim = FieldMap("Truth | reconstruction | free-run prediction", palette="Greys256",
                               height=200)
        self.p_latent = Curves("Latent trajectories of the data", {
            "z": dict(kind="multi", alpha=0.9, width=1.5)}, xlabel="t", ylabel="z_i", height=260)
        self.p_state = Curves("Latent coordinates against the true state", {
            "pts": dict(kind="points", label="z_i against the true variable", size=4)},
            xlabel="true state", ylabel="latent", height=260)
        self.m_field = FieldMap("Learned latent vector field", palette="Viridis256", bar_title="speed",
                                vectors=True, height=340)
        self.m_ed = FieldMap("Encode–decode field E(D(z)) − z", palette="Magma256", bar_title="|E(D(z)) − z|",
                             vectors=True, height=340)
        from bokeh.models import ColumnDataSource
        self._path = ColumnDataSource({"x": [], "y": []})
        self.m_field.fig.line("x", "y", source=self._path, color="#ffffff", line_width=1.5, alpha=0.8)
        self._fp = ColumnDataSource({"x": [], "y": [], "color": [], "kind": []})
        self.m_field.fig.scatter("x", "y", source=self._fp, size=13, marker="x", line_width=3, color="color")
        self._ed_path = ColumnDataSource({"x": [], "y": []})
        self.m_ed.fig.scatter("x", "y", source=self._ed_path, size=3, color="#74c0fc", alpha=0.6)
        self._attr = ColumnDataSource({"x": [], "y": [], "size": []})
        self.m_ed.fig.scatter("x", "y", source=self._attr, size="size", marker="star", color="#40c057",
                              line_color="black")
        self.p_eig = Curves("Koopman eigenvalues (unit circle)", {
            "circle": dict(color="#adb5bd", dash="dashed", label="unit circle"),
            "true": dict(kind="points", label="true exp(±iωΔt)", marker="diamond", size=13),
            "eig": dict(kind="points", label="learned eigenvalues of K (or exp(J Δt))", size=9)},
            xlabel="Re", ylabel="Im", height=300, match_aspect=True)
        a = np.linspace(0, 2 * np.pi, 200)
        self.p_eig.set("circle", x=np.cos(a), y=np.sin(a))
        self.p_pred = Curves("Free run against the data (pixel error per frame)", {
            "err": dict(color="#e8590c", label="free run decoded vs true frame (MSE)"),
            "base": dict(color="#868e96", dash="dashed", label="reconstruction error")},
            xlabel="frames ahead", ylabel="MSE", height=260)
        self.p_compare = Curves("CAE against CpAE: first latent coordinate over time", {
            "cae": dict(color=MODEL_COLORS["cae"], label="plain CAE"),
            "cpae": dict(color=MODEL_COLORS["cpae"], label="CpAE")},
            xlabel="t", ylabel="z₁ (standardised)", height=260)
        self.p_jumps = Curves("Latent step per frame", {
            "cae": dict(color=MODEL_COLORS["cae"], label="plain CAE"),
            "cpae": dict(color=MODEL_COLORS["cpae"], label="CpAE")},
            xlabel="t", ylabel="|z_{t+1} − z_t| / spread", height=260)
        self.pacer.watch(self.m_field.image)                 # written last in each frame

    def _layout(self) -> None:
        data = pn.Card(self.w_source, self.render_box, self.upload_box, self.data_error,
                       title="Frames", **SW)
        model = pn.Card(self.w_model, pn.Row(self.w_latent, self.w_cont), title="Model", **SW)
        train = pn.Card(pn.Row(self.w_lr, self.w_batch), pn.Row(self.w_steps, self.w_seed),
                        self.run.controls, self.run.checkpoint, title="Training", **SW)
        analyses = pn.Card(self.b_analysis, self.analysis_error, self.b_compare, self.compare_error,
                           title="Analyses", **SW)
        self.sidebar = pn.Column(self.w_preset, data, model, train, analyses, **SW)
        prompt_widgets(self.sidebar)
        self.compare_box = pn.GridBox(self.p_compare.pane, self.p_jumps.pane, ncols=2, **SW)
        self.main = pn.Column(
            self.status_line(), self.preset_text, self.summary,
            pn.GridBox(self.m_strip.pane, pn.Column(self.m_anim.pane, self.player, **SW), ncols=2, **SW),
            pn.GridBox(self.m_field.pane, self.m_ed.pane, self.p_latent.pane, self.p_state.pane,
                       self.p_eig.pane, self.p_pred.pane, ncols=2, **SW),
            self.compare_box, self.run.loss.pane, **SW)

    # ================================================================ controller -> widgets
    def _on_source(self, *_) -> None:
        c = self.controller
        upload = c.source == "upload"
        self.render_box.visible = not upload
        self.upload_box.visible = upload
        self.w_system.visible = self.w_shape.visible = c.scene == "blob"
        self.w_width.visible = c.scene in ("blob", "moving-square")
        self.w_amp.visible = c.scene in ("pendulum", "damped-pendulum", "spring")
        self.w_cont.disabled = c.model == "cae"

    def _on_preset(self, *_, push: bool = True) -> None:
        c = self.controller
        p = PRESETS.get(c.preset)
        self.set_quietly(self.w_preset, value=c.preset if p else "")
        self.preset_text.object = f"**{p.title}.** {p.text}" if p else ""
        self._on_source()
        if push and self._sync_url:
            pn.state.location.search = "?" + urlencode({"page": "latent", **c.to_query()})

    def _on_errors(self, *_) -> None:
        e = self.controller.errors
        self.data_error.object = message(e.get("data"))
        self.analysis_error.object = message(e.get("analysis"))
        self.compare_error.object = message(e.get("compare"))

    def _on_file(self, event) -> None:
        if event.new:
            self.controller.load_frames(event.new, self.w_file.filename or "frames.npy")
            self.ensure_tick()

    # ================================================================ drawing
    def _redraw(self) -> None:
        self._shown = None
        self._on_data()
        self._on_picture()
        self._on_analysis()
        self._on_compare()

    def _on_data(self, *_) -> None:
        """New frames (no model yet): the strip shows the truth alone, the plots clear."""
        fs = self.controller.data
        if fs is None or self.controller.picture is not None:
            return
        frames = fs.frames.numpy()
        idx = np.linspace(0, frames.shape[0] - 1, 8).astype(int)
        show_image(self.m_strip, tile(frames[idx]), labels=(f"{len(idx)} frames across the sequence", ""))
        self._anim_frames = frames[: min(frames.shape[0], 200)][:, None]
        self._set_player(self._anim_frames.shape[0])
        for m in (self.m_field, self.m_ed):
            m.clear()
        for src in (self._path, self._fp, self._ed_path, self._attr):
            src.data = {k: [] for k in src.data}
        for p in (self.p_latent, self.p_state, self.p_pred):
            p.clear()
        self.p_eig.set("eig", x=[], y=[], g=[])
        self.p_eig.set("true", x=[], y=[], g=[])
        self.summary.object = ""

    def _set_player(self, n: int) -> None:
        end = max(int(n) - 1, 1)
        if self.player.end != end:
            self.player.end = end
        if self.player.value > end:
            self.player.value = 0
        self._animate()

    def _animate(self) -> None:
        frames = getattr(self, "_anim_frames", None)
        if frames is None or not len(frames):
            return
        i = min(int(self.player.value), frames.shape[0] - 1)
        show_image(self.m_anim, tile(frames[i]), labels=(f"frame {i}", ""))

    def _on_ack(self) -> None:
        with pn.io.hold():
            self._on_picture()

    def _on_picture(self, *_) -> None:
        """Draw the newest picture once the browser has shown the previous one."""
        p = self.controller.picture
        if p is None or p is self._shown:
            return
        # live pictures carry the details, or the encode–decode field, about once a second:
        # keep them until drawn, even if a quicker picture comes before the browser is ready
        if p.details:
            self._held_details = p
        elif np.isfinite(p.encode_decode).any():
            self._held_ed = p
        if self.controller.running and not self.pacer.ready():
            return
        self._shown = p
        held, self._held_details = self._held_details, None
        if held is not None:
            self._details(held)
        held, self._held_ed = self._held_ed, None
        if held is not None:
            self._encode_decode(held)
        self._field(p)                         # last: the paced source
        self.pacer.sent_frame()

    def _field(self, p) -> None:
        z = p.latents
        self._path.data = {"x": column(z[:, 0]), "y": column(z[:, 1])}
        u, v = p.field[..., 0], p.field[..., 1]
        self.m_field.show(p.grid_x, p.grid_y, np.hypot(u, v), vec=(u, v), labels=("z₁", "z₂"),
                          geometry=p.field_geometry)
        koopman = p.eigenvalues is not None
        title = ("Learned latent field (K − I) z / Δt of the Koopman map" if koopman else
                 "Learned latent vector field f(z) of the latent ODE") + f" · step {p.step:,}"
        if self.m_field.fig.title.text != title:
            self.m_field.fig.title.text = title

    def _details(self, p) -> None:
        top, bottom = tile(p.strip_true), tile(p.strip_recon)
        show_image(self.m_strip, np.concatenate([top, np.full((1, top.shape[1]), np.nan, np.float32),
                                                 bottom], axis=0),
                   labels=(f"frames {', '.join(str(int(i)) for i in p.strip_index)}", ""))
        n = min(len(p.truth), len(p.prediction))
        self._anim_frames = np.stack([p.truth[:n], p.reconstruction[:n], p.prediction[:n]], axis=1)
        self._set_player(n)
        z = p.latents
        L = z.shape[1]
        self.p_latent.set("z", xs=[p.t] * L, ys=list(z.T), color=[PALETTE[i % len(PALETTE)] for i in range(L)])
        self.p_latent.fig.title.text = f"Latents of the data · largest jump {p.jump:.3g} of the spread"
        if p.states is not None:
            xs, ys, gs = [], [], []
            S = p.states[: len(z)]
            for i in range(min(L, S.shape[1])):
                s, zi = S[:, i], z[:, i]
                xs.append((s - s.mean()) / (s.std() + 1e-12))
                ys.append((zi - zi.mean()) / (zi.std() + 1e-12))
                gs.append(np.full(s.shape, i))
            self.p_state.set("pts", x=np.concatenate(xs), y=np.concatenate(ys), g=np.concatenate(gs))
            names = ", ".join(f"z{i + 1}–{v}" for i, v in enumerate(p.variables[:L]))
            self.p_state.fig.title.text = f"Latents against the true state (standardised): {names}"
        else:
            self.p_state.clear()
            self.p_state.fig.title.text = "Latents against the true state (uploaded frames: none known)"
        self._encode_decode(p)
        if p.eigenvalues is not None:
            e = np.asarray(p.eigenvalues)
            self.p_eig.set("eig", x=e.real, y=e.imag, g=np.zeros(e.size))
            self.p_eig.fig.title.text = "Koopman eigenvalues of K (unit circle)"
        else:
            self.p_eig.set("eig", x=[], y=[], g=[])
            self.p_eig.fig.title.text = "Koopman eigenvalues (Koopman model only)"
        dt = float(p.pred_t[1] - p.pred_t[0]) if len(p.pred_t) > 1 else 1.0
        if np.isfinite(p.true_frequency) and p.true_frequency > 0:
            w = p.true_frequency * dt
            self.p_eig.set("true", x=[np.cos(w)] * 2, y=[np.sin(w), -np.sin(w)], g=[3, 3])
        else:
            self.p_eig.set("true", x=[], y=[], g=[])
        self.p_pred.set("err", x=np.arange(p.pred_error.size), y=p.pred_error)
        rec = float(np.mean((p.strip_recon - p.strip_true) ** 2))
        self.p_pred.set("base", x=[0, max(p.pred_error.size - 1, 1)], y=[rec, rec])
        parts = [f"**{MODEL_TITLES.get(self.controller.model, '')}**, step {p.step:,} ({p.phase})",
                 *metric_parts(self.controller.last_metrics or {})]
        if np.isfinite(p.frequency):
            parts.append(f"learned ω **{p.frequency:.4g}**" + (
                f" (true {p.true_frequency:.4g})" if np.isfinite(p.true_frequency) else ""))
        self.summary.object = " · ".join(parts)

    def _encode_decode(self, p) -> None:
        """The encode–decode field, when the picture carries it (about once a second while
        training), with the data's latents over it."""
        ed = p.encode_decode
        if np.isfinite(ed).any():
            self.m_ed.show(p.grid_x, p.grid_y, np.hypot(ed[..., 0], ed[..., 1]),
                           vec=(ed[..., 0], ed[..., 1]), labels=("z₁", "z₂"), geometry=p.ed_geometry)
            z = p.latents
            self._ed_path.data = {"x": column(z[:, 0]), "y": column(z[:, 1])}

    def _on_analysis(self, *_) -> None:
        a = self.controller.analysis
        if a is None:
            self._fp.data = {"x": [], "y": [], "color": [], "kind": []}
            self._attr.data = {"x": [], "y": [], "size": []}
            return
        fps = a.fixed
        self._fp.data = {"x": [float(f.x[0]) for f in fps], "y": [float(f.x[1]) for f in fps],
                         "color": [fp_colour(f) for f in fps], "kind": [f.type for f in fps]}
        at = a.attractors.points.double().cpu().numpy()
        sizes = a.attractors.basin.double().cpu().numpy()
        self._attr.data = {"x": column(at[:, 0]), "y": column(at[:, 1]),
                           "size": column(10 + 14 * np.sqrt(sizes / max(float(sizes.max()), 1e-12))
                                          if sizes.size else [])}
        self.m_ed.fig.title.text = f"Encode–decode field E(D(z)) − z · {describe_analysis(a)}"

    def _on_compare(self, *_) -> None:
        cmp_ = self.controller.compare
        self.compare_box.visible = cmp_ is not None
        if cmp_ is None:
            return
        for kind in ("cae", "cpae"):
            z = cmp_.latents[kind][:, 0]
            self.p_compare.set(kind, x=cmp_.t, y=(z - z.mean()) / (z.std() + 1e-12))
            self.p_jumps.set(kind, x=cmp_.t[1:], y=cmp_.steps_of(kind))
        self.p_jumps.fig.title.text = f"Latent step per frame · {cmp_.describe()}"

    def show(self, p) -> None:
        self.run.show(p)
        self._on_picture()                     # a picture held back until the browser was ready


def view(*, sync_url: bool = False) -> LatentPanel:
    """The page body around a new controller (the registry's factory)."""
    return LatentPanel(LatentController(), sync_url=sync_url)


__all__ = ["LatentPanel", "view"]
