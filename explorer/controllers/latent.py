"""State and actions of the Latent dynamics page (param only: no Panel, no HoloViews, no Bokeh).

A model learns a dynamical system from image frames and the page shows its latent space. The
page's science on the shared platform:

* **data** (a job): a system rendered to grayscale frames by :mod:`explorer.core.render`
  (pendulum, damped pendulum, mass on a spring, two bodies on a ring, any library system as a
  moving blob, a hard-edged square moving by sub-pixel steps), or an uploaded frame sequence
  (:mod:`explorer.training.images`: NPY/NPZ/ZIP of PNGs, sizes checked before decoding);
* **training** (the run, :class:`~.run.RunController`): a convolutional autoencoder (plain
  CAE or continuity-preserving CpAE) with a latent ODE fitted in a second step, a Koopman
  autoencoder (linear latent map, LRAN-style), or an end-to-end latent ODE
  (:mod:`explorer.training.latent`); a live frame is a :class:`LatentPicture` (true and
  reconstructed frames, latent trajectories, the learned vector field, the encode–decode
  field, Koopman eigenvalues, a decoded free run, latents against the true state);
* **analysis** (a job): fixed points of the learned dynamics and their stability through the
  model-as-system wrapper and the core analysis, and the attractors of the encode–decode map;
* **comparison** (a job): a plain CAE and a CpAE trained on the same frames with the same
  seed and budget, side by side (latent jumps per frame, correlation with the true state).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import param

from ..core.errors import ExplorerError, ParameterError
from .base import PresetLinks, one_line
from .jobs import Done
from .run import MAX_UPLOAD_BYTES, RunController

SCENE_TITLES = {"pendulum": "Pendulum", "damped-pendulum": "Damped pendulum",
                "spring": "Mass on a spring", "two-bodies": "Two bodies on a ring",
                "blob": "A library system as a moving blob",
                "moving-square": "Moving square (sub-pixel steps)"}
MODEL_TITLES = {"cpae": "CpAE + latent ODE (two steps)", "cae": "Plain CAE + latent ODE (two steps)",
                "koopman": "Koopman autoencoder (linear latent map)",
                "latent-ode": "Latent ODE (end to end)"}
#: while training, live pictures carry the details (strip, decoded free run) at most this
#: often (s), and the encode–decode field as often, in another picture
DETAIL_SECONDS = 1.0
#: the page's pictures: both latent fields on a 16 × 16 grid, the latents of the first 150
#: frame windows (one thread, 32 px CpAE: a quick picture 17 ms, with the details 40 ms,
#: with the encode–decode field 56 ms)
PICTURE = dict(grid=16, max_frames=150)
#: file types accepted for a frame upload
FRAME_SUFFIXES = (".npy", ".npz", ".zip")


@dataclass(frozen=True)
class Preset:
    """A teaching preset: settings and a few sentences (``?page=latent&preset=KEY``)."""

    key: str
    title: str
    text: str
    settings: dict
    #: what the page runs once the preset is loaded: "train", "compare" or "" (nothing)
    action: str = ""


PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset("pendulum-pixels", "Pendulum from pixels",
           "A pendulum filmed at 32×32 pixels. The encoder sees two consecutive frames (a single "
           "frame shows the angle but not the angular velocity) and compresses them to two latent "
           "numbers; a neural ODE then learns their vector field. Watch the latent orbit close "
           "into a loop around one centre, and compare the learned small-amplitude period with "
           "2π√(L/g).",
           dict(source="render", scene="pendulum", size=32, n_frames=800, dt=0.05, amplitude=0.6,
                model="cpae", latent=2, steps=1500)),
    Preset("why-jumps", "Why plain autoencoders jump",
           "A hard-edged square two pixels wide moves by less than a pixel per frame: the images "
           "change in discrete steps. A plain convolutional autoencoder may map neighbouring "
           "frames to distant latent points, so its latent trajectory jumps; the "
           "continuity-preserving autoencoder (CpAE) regularises its first filters towards "
           "smooth (Lipschitz) filters and its latent moves continuously with the square. "
           "Compare runs both with the same seed and budget (here the CAE's largest step is "
           "about 6 times the CpAE's).",
           dict(source="render", scene="moving-square", size=28, n_frames=400, shape="square",
                width=2.0, model="cpae", latent=2, steps=800), action="compare"),
    Preset("koopman-oscillator", "Koopman eigenvalues of an oscillator",
           "A mass on a spring, ω = √(k/m) = 2. A Koopman autoencoder learns a linear latent map "
           "z ↦ K z; for an undamped oscillator sampled every Δt its eigenvalues sit on the unit "
           "circle at exp(±iωΔt). The true pair is marked: watch the learned pair move onto it.",
           dict(source="render", scene="spring", size=32, n_frames=600, dt=0.05, amplitude=1.0,
                model="koopman", latent=2, steps=1500)),
    Preset("ae-attractors", "Attractors of an autoencoder",
           "Iterating encode then decode, z ↦ E(D(z)), defines a vector field E(D(z)) − z in the "
           "latent space. Its attractors show what the network memorised: early in training they "
           "sit near the training codes; as it generalises they spread along the data manifold. "
           "Train and watch the encode–decode field.",
           dict(source="render", scene="damped-pendulum", size=32, n_frames=400, amplitude=1.2,
                model="cae", latent=2, steps=1200)),
)}

#: URL query keys and the settings they hold
QUERY_KEYS = {"scene": "scene", "sys": "system", "size": "size", "frames": "n_frames", "dt": "dt",
              "shape": "shape", "width": "width", "noise": "noise", "amp": "amplitude", "model": "model",
              "latent": "latent", "cw": "continuity", "steps": "steps", "lr": "lr",
              "batch": "train_batch", "seed": "seed"}


class LatentController(PresetLinks, RunController):
    """Everything the Latent dynamics page shows, and the actions that render, train and analyse."""

    run_name = "latent"
    query_keys = QUERY_KEYS
    #: a quick live picture costs ~15 ms at 32×32 (the run keeps frames under a quarter of its time)
    frame_seconds = 0.1
    #: the pictures are what the page is about: a third of the run's time (training ~10 % slower
    #: than with the platform's quarter, 5+ pictures a second instead of ~4.5 on 2 busy cores)
    frame_share = 1 / 3

    # ---- data
    source = param.Selector(default="render", objects=["render", "upload"],
                            doc="Frames rendered from a system, or an uploaded frame sequence.")
    scene = param.Selector(default="pendulum", objects=list(SCENE_TITLES), doc="What is filmed.")
    system = param.String(default="lorenz63", doc="Blob scene: the library system whose first two "
                          "variables move the blob.")
    size = param.Integer(default=32, bounds=(16, 64), doc="Frame side in pixels.")
    n_frames = param.Integer(default=600, bounds=(32, 20_000), doc="Frames rendered.")
    dt = param.Number(default=0.05, bounds=(1e-4, 10.0), doc="Time between frames.")
    amplitude = param.Number(default=1.0, bounds=(0.0, 3.0),
                             doc="Initial displacement (pendulum angle in rad, spring extension).")
    shape = param.Selector(default="gaussian", objects=["gaussian", "square"],
                           doc="Blob scenes: a Gaussian blob or a hard-edged square.")
    width = param.Number(default=0.0, bounds=(0.0, 16.0),
                         doc="Blob and square scenes: the blob's width in pixels (Gaussian sigma, "
                             "square side); 0: the scene's default (size/16, square size/7).")
    noise = param.Number(default=0.0, bounds=(0.0, 0.5), doc="Pixel noise (standard deviation).")
    background = param.Boolean(default=False, doc="A static distractor background.")
    file_name = param.String(default="", doc="Name of the uploaded frame file (read-only).")
    file_dt = param.Number(default=1.0, bounds=(1e-9, None), doc="Time between uploaded frames.")
    # ---- model
    model = param.Selector(default="cpae", objects=list(MODEL_TITLES), doc="Model of the latent dynamics.")
    latent = param.Integer(default=2, bounds=(2, 8), doc="Latent dimension.")
    continuity = param.Number(default=1.0, bounds=(0.0, 100.0),
                              doc="Weight of the CpAE filter-continuity regulariser (0: none).")
    # ---- training
    lr = param.Number(default=2e-3, bounds=(1e-6, 1.0), doc="Learning rate (Adam).")
    train_batch = param.Integer(default=16, bounds=(1, 1024), doc="Frame windows per step.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed of the frames and the model.")
    # ---- results
    preset = param.String(default="", doc="The teaching preset last applied ('' for none).")
    data = param.Parameter(default=None, doc="The frames (explorer.core.render.FrameSet).")
    picture = param.Parameter(default=None, doc="The model's live picture (LatentPicture).")
    analysis = param.Parameter(default=None, doc="Fixed points and encode–decode attractors.")
    compare = param.Parameter(default=None, doc="CAE against CpAE on the same frames (Comparison).")

    DATA_SETTINGS = ("source", "scene", "system", "size", "n_frames", "dt", "amplitude", "shape",
                     "width", "noise", "background", "seed")
    MODEL_SETTINGS = ("model", "latent", "continuity")

    def __init__(self, **params):
        params.setdefault("steps", 1500)
        super().__init__(**params)
        self._upload = None                       # the uploaded FrameSet, kept across switches
        self._stale = False                       # the run was stopped by a change of settings
        self._analysis_quiet = False
        self._ed_at = 0.0                         # when the last live encode–decode field was made
        self._detail_at = 0.0                     # when the last live details were made
        self.param.watch(self._on_data_settings, list(self.DATA_SETTINGS))
        self.param.watch(self._on_model_settings, list(self.MODEL_SETTINGS))

    # ================================================================ settings
    def render_settings(self) -> dict[str, Any]:
        """Keyword arguments of :func:`explorer.core.render.render_scene` (plain data)."""
        out: dict[str, Any] = dict(scene=self.scene, size=int(self.size), steps=int(self.n_frames),
                                   dt=float(self.dt), noise=float(self.noise),
                                   background=bool(self.background), seed=int(self.seed))
        if self.scene == "blob":
            out.update(system=self.system.strip() or "lorenz63", shape=self.shape)
        elif self.scene in ("pendulum", "damped-pendulum", "spring"):
            out["x0"] = [float(self.amplitude), 0.0]
        if self.scene in ("blob", "moving-square") and self.width > 0:
            out["width"] = float(self.width)
        return out

    def check(self) -> dict[str, Any]:
        """Validate the settings together (UI thread; :class:`ParameterError`, one line) and
        return the canonical render settings (``{}`` for uploaded frames)."""
        if self.source == "upload":
            if self._upload is None:
                raise ExplorerError("no frames uploaded: upload an NPY, NPZ or ZIP of PNGs first")
            return {}
        from ..core.render import scene_settings
        return scene_settings(**self.render_settings())

    def apply_preset(self, key: str) -> None:
        p = PRESETS.get(key)
        if p is None:
            raise ParameterError(f"unknown preset {key!r}; presets: {', '.join(PRESETS)}")
        if self.running:
            raise ExplorerError("a run is training: stop it before loading a preset")
        with self.suspended():
            for name in (*self.DATA_SETTINGS, *self.MODEL_SETTINGS, "lr", "train_batch"):
                if name != "seed":
                    setattr(self, name, self.param[name].default)
            self.steps = 1500
            self.param.update(**p.settings)
            self.preset = key
        self.status = f"preset: {p.title}"
        self._reset_results()
        if self.auto:
            self.request_data()

    def _on_data_settings(self, *events) -> None:
        if self._suspend or self._closed:
            return
        self.preset = ""
        self._stop_for_change()
        self._reset_results()
        if self.auto:
            self.request_data()

    def _on_model_settings(self, *events) -> None:
        if self._suspend or self._closed:
            return
        self.preset = ""
        self._stop_for_change()

    def _stop_for_change(self) -> None:
        if self.running:
            self._stale = True             # its last pictures show the old settings: drop them
            self.stop()
            self.status = "training stopped: the settings changed (Start trains a new model)"

    def _reset_results(self) -> None:
        self.param.update(picture=None, analysis=None, compare=None)

    @property
    def stale(self) -> bool:
        """The run was stopped by a change of settings: its pictures are not shown."""
        return self._stale

    # ================================================================ data
    def request_data(self) -> None:
        """Render the frames of the settings (job); an upload is already validated."""
        if self._closed:
            return
        if self.source == "upload":
            self.data = self._upload
            return
        try:
            settings = self.check()
        except ExplorerError as e:
            self._error("data", one_line(e))
            return
        if self._data_current():
            return

        def work(stop, progress):
            from ..core.render import render_scene
            return render_scene(**settings)

        self._submit("data", work, f"rendering {self.n_frames:,} frames of "
                     f"{SCENE_TITLES[self.scene].lower()}", quiet=True)

    def load_frames(self, content: bytes, filename: str) -> bool:
        """Validate an uploaded frame sequence (NPY/NPZ/ZIP of PNGs). On success the data
        source becomes the file; on failure ``errors["data"]`` and the status hold one line and
        nothing else changes. Returns success."""
        from ..training.images import frames_from_upload

        name = Path(str(filename or "frames.npy")).name
        try:
            if Path(name).suffix.lower() not in FRAME_SUFFIXES:
                raise ParameterError(f"{name}: unknown file type; use .npy, .npz or a .zip of PNGs")
            if not content:
                raise ParameterError(f"{name} is empty")
            if len(content) > MAX_UPLOAD_BYTES:
                raise ParameterError(f"{name} is {len(content) / 2**20:.1f} MiB, over the upload "
                                     f"limit of {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
            fs = frames_from_upload(content, name, dt=float(self.file_dt))
            T, H, W = fs.frames.shape
            if H != W or not 16 <= H <= 64:
                raise ParameterError(f"{name}: frames of {H}×{W} pixels; the models take square "
                                     "frames of 16 to 64 pixels")
        except ExplorerError as e:
            self._error("data", one_line(e))
            return False
        except Exception as e:  # a reader's own failure: still one line, never a traceback
            self._error("data", f"{name} could not be read ({type(e).__name__}: {one_line(e)})")
            return False
        self._stop_for_change()
        self._upload = fs
        self._clear_error("data")
        with self.suspended():
            self.file_name = name
            self.source = "upload"
            self.preset = ""
        self._reset_results()
        self.data = fs
        self.status = f"frames: {name}, {T:,} frames of {H}×{W} (Δt = {fs.dt:g})"
        return True

    # ================================================================ jobs
    def request_analysis(self, *, quiet: bool = False) -> None:
        """Fixed points of the learned dynamics and the encode–decode attractors (job;
        ``quiet``: a follow-up of a finished run, whose final line stays in the status)."""
        tr = self._trainer
        if tr is None:
            self._error("analysis", "train a model first (Start), or load a checkpoint")
            return
        snapshot = _snapshot(tr)

        def work(stop, progress):
            from ..training.latent import latent_analysis
            return latent_analysis(snapshot)

        self._analysis_quiet = quiet
        self._submit("analysis", work, "fixed points and encode–decode attractors", quiet=quiet)

    def request_compare(self) -> None:
        """A plain CAE and a CpAE trained on the current frames with the same seed and budget
        (job; stoppable, with progress)."""
        if self.data is None:
            self._error("compare", "no frames yet: wait for the rendering or upload frames")
            return
        data, steps = self.data, int(min(self.steps, 2000))
        args = dict(latent=int(self.latent), lr=float(self.lr), batch=int(self.train_batch),
                    seed=int(self.seed), continuity=float(self.continuity) or 1.0)

        def work(stop, progress):
            return compare_autoencoders(data, steps=steps, stop=stop, progress=progress, **args)

        self._submit("compare", work, f"training a CAE and a CpAE ({steps} steps each)",
                     threads=None)

    def _job_done(self, d: Done) -> None:
        if d.error is not None:
            self._error(d.key, d.error)
            return
        if d.key == "data":
            self.data = d.value
            fs = d.value
            T, H, W = fs.frames.shape
            self.status = (f"frames: {SCENE_TITLES.get(fs.scene, fs.scene)}, {T:,} frames "
                           f"of {H}×{W} (Δt = {fs.dt:g}) in {d.seconds:.2f} s")
            if self.preset and PRESETS[self.preset].action == "compare" and self.compare is None:
                self.request_compare()
            return
        if d.key == "analysis":
            self.analysis = d.value
            if not self._analysis_quiet:
                self.status = f"analysis: {describe_analysis(d.value)}"
            return
        if d.key == "compare":
            self.compare = d.value
            self.status = f"compared in {d.seconds:.1f} s: {d.value.describe()}"
            return
        super()._job_done(d)

    # ================================================================ training (run hooks)
    def new_run(self):
        settings = self.check()
        from ..core.render import render_scene
        from ..training.latent import make_latent_run

        data = self.data if self.source == "upload" or self._data_current() else None
        self._stale = False
        args = dict(model=self.model, latent=int(self.latent), continuity=float(self.continuity),
                    steps=int(self.steps), batch=int(self.train_batch), lr=float(self.lr),
                    seed=int(self.seed))

        def build(run):
            return make_latent_run(data if data is not None else render_scene(**settings), **args)
        return build

    def _data_current(self) -> bool:
        """The frames shown are those the current render settings give."""
        from ..core.render import scene_settings

        d = self.data
        if d is None or self.source != "render":
            return False
        try:
            return getattr(d, "settings", None) == scene_settings(**self.render_settings())
        except ExplorerError:
            return False

    def frame_of(self, trainer, last: bool = False):
        """The live picture: quick ones (the latents and the learned field, ~15 ms at 32 px),
        with the details (strip, decoded free run) and, in another frame, the encode–decode
        field (the costly part with a CpAE's large filters) each at most every
        :data:`DETAIL_SECONDS`; the picture a run ends on has everything."""
        from ..training.latent import latent_picture

        now = time.monotonic()
        details = last or now - self._detail_at >= DETAIL_SECONDS
        ed = last or (not details and now - self._ed_at >= DETAIL_SECONDS)
        if details:
            self._detail_at = now
        if ed:
            self._ed_at = now
        return latent_picture(trainer, encode_decode=ed, details=details, **PICTURE)

    def on_frame(self, frame) -> None:
        if not self._stale:
            self.picture = frame

    def on_run_end(self, phase: str) -> None:
        if not self._stale and self._trainer is not None and not self._closed:
            self.request_analysis(quiet=True)

    def progress_extra(self) -> list[str]:
        p = self.picture
        out = [f"phase: {p.phase}"] if p is not None else []
        return out + metric_parts(self.last_metrics or {})

    def final_text(self) -> str:
        return ", ".join(metric_parts(self.last_metrics or {}))

    def load_trainer(self, path: Path):
        from ..training.latent import load_latent_run
        return load_latent_run(path)

    def on_loaded(self, trainer, name: str) -> None:
        """Settings follow the loaded run's model and frames; its frames become the data."""
        from ..training.latent import latent_picture

        task, cfg = trainer.task, trainer.model.config
        s: dict[str, Any] = {"latent": cfg.latent, "continuity": cfg.continuity}
        if task.model_name in MODEL_TITLES:
            s["model"] = task.model_name
        rs = dict(task.data.settings or {}) if task.data.rendered else {}
        if rs:
            s.update(source="render", scene=rs.get("scene"), size=rs.get("size"),
                     n_frames=rs.get("steps"), dt=rs.get("dt"), noise=rs.get("noise"),
                     background=rs.get("background"), seed=rs.get("seed"))
            if rs.get("system"):
                s["system"] = rs["system"]
            if rs.get("x0") is not None and rs.get("scene") in ("pendulum", "damped-pendulum", "spring"):
                s["amplitude"] = float(rs["x0"][0])
        else:
            self._upload = task.data
            s.update(source="upload", file_name=name)
        with self.suspended():
            for k, v in s.items():
                if v is None:
                    continue
                try:
                    setattr(self, k, v)
                except (ValueError, TypeError):
                    pass
            self.preset = ""
        self.compare = self.analysis = None
        self.data = task.data
        self.picture = latent_picture(trainer, **PICTURE)


# ============================================================================ compute (workers)
def metric_parts(m: dict) -> list[str]:
    """The evaluation's numbers in words (progress line, final line)."""
    out = []
    if "recon_mse" in m:
        out.append(f"reconstruction MSE {m['recon_mse']:.3g}")
    if "jump" in m and math.isfinite(m["jump"]):
        out.append(f"largest latent jump {m['jump']:.3g} of the spread")
    if "state_r" in m and math.isfinite(m["state_r"]):
        out.append(f"|r| with the true state {m['state_r']:.3f}")
    f, ft = m.get("frequency", math.nan), m.get("true_frequency", math.nan)
    if math.isfinite(f):
        out.append(f"ω {f:.4g}" + (f" (true {ft:.4g})" if math.isfinite(ft) else ""))
    return out


def describe_analysis(a) -> str:
    """One line on a :class:`~explorer.training.latent.LatentAnalysis`."""
    kinds: dict[str, int] = {}
    for fp in a.fixed:
        kinds[fp.type] = kinds.get(fp.type, 0) + 1
    fps = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none found"
    parts = [f"fixed points: {fps}"]
    per = [p for p in a.periods if math.isfinite(p)]
    if per:
        parts.append(f"period at the fixed point {per[0]:.4g}"
                     + (f" (true {a.true_period:.4g})" if math.isfinite(a.true_period) else ""))
    parts.append(f"{len(a.attractors.points)} encode–decode attractor(s)")
    return " · ".join(parts)


def _snapshot(trainer):
    """A frozen copy of a run's model and data for a job (training may go on): what
    :func:`~explorer.training.latent.latent_analysis` reads of a loop."""
    import copy
    from types import SimpleNamespace

    model = copy.deepcopy(trainer.model).cpu().eval()
    return SimpleNamespace(model=model, task=SimpleNamespace(data=trainer.task.data),
                           step_count=trainer.step_count)


@dataclass(frozen=True)
class Comparison:
    """A plain CAE and a CpAE on the same frames, seed and budget (autoencoder step only).

    Attributes:
        t: frame times (n,).
        latents: ``{"cae": (n, L), "cpae": (n, L)}`` latent trajectories of the data.
        jumps: the largest latent step per frame over the trajectory's spread, per model.
        correlation: the smallest |r| of a linear fit of the true variables from the latents
            (NaN without states), per model.
        recon: reconstruction MSE per model.
        steps: training steps per model.
    """

    t: np.ndarray
    latents: dict
    jumps: dict
    correlation: dict
    recon: dict
    steps: int

    def steps_of(self, kind: str) -> np.ndarray:
        """|z_{t+1} − z_t| over the spread of the trajectory, (n − 1,)."""
        z = self.latents[kind]
        spread = float(np.sqrt(z.var(0).sum())) or 1.0
        return np.linalg.norm(np.diff(z, axis=0), axis=1) / spread

    def describe(self) -> str:
        j = self.jumps
        ratio = j["cae"] / j["cpae"] if j["cpae"] > 0 else math.inf
        text = (f"largest latent jump per frame: CAE {j['cae']:.3g}, CpAE {j['cpae']:.3g} "
                f"({ratio:.1f}× smaller with continuity)")
        r = self.correlation
        if all(math.isfinite(r[k]) for k in r):
            text += f"; |r| with the true state: CAE {r['cae']:.3f}, CpAE {r['cpae']:.3f}"
        return text


def compare_autoencoders(data, *, steps: int, latent: int = 2, lr: float = 2e-3, batch: int = 32,
                         seed: int = 0, continuity: float = 1.0, stop=None, progress=None) -> Comparison:
    """Train a plain CAE and a CpAE (the autoencoder step only, reconstruction and the
    continuity regulariser: no auxiliary latent-map term, which makes a CAE continuous too)
    on ``data`` with the same seed and budget; return their latent trajectories and
    continuity measures."""
    from ..training.latent import make_latent_run

    res: dict[str, dict] = {"latents": {}, "jumps": {}, "correlation": {}, "recon": {}}
    t = None
    for i, kind in enumerate(("cae", "cpae")):
        loop = make_latent_run(data, model=kind, latent=latent, steps=steps + 1, ae_steps=steps,
                               batch=batch, lr=lr, seed=seed, dyn_weight=0.0,
                               continuity=continuity if kind == "cpae" else 0.0)

        def tick(ev, i=i, loop=loop):
            if progress is not None:
                progress((i + loop.step_count / steps) / 2)
        loop.run(steps, callbacks=[tick], stop=stop)
        if stop is not None and stop.is_set():
            raise ExplorerError("comparison stopped")
        m = loop.evaluate()
        z = loop.task.latents().double().cpu().numpy()
        F = loop.model.config.frames_in
        t = (F - 1 + np.arange(len(z))) * loop.task.data.dt
        res["latents"][kind] = z
        res["jumps"][kind] = float(m["jump"])
        res["correlation"][kind] = float(m.get("state_r", math.nan))
        res["recon"][kind] = float(m["recon_mse"])
    return Comparison(t=t, steps=steps, **res)
