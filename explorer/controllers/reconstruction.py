"""State and actions of the Reconstruction page (param only: no Panel, no HoloViews).

The page trains a PLRNN, shallow PLRNN or AL-RNN on a time series (a simulated system of the
registry, or an uploaded CSV/NPY/NPZ file) and analyses the trained model as a dynamical
system. :class:`ReconstructionController` is the page's science on the shared platform:

* the system picker and custom equations come from :class:`~.base.SystemSource`;
* the run (worker thread, pause/resume/stop, server-wide limit, history, progress line,
  checkpoint download and upload) from :class:`~.run.RunController`; this page supplies what
  to train (:meth:`ReconstructionController.new_run`: the data and a
  :class:`explorer.training.Trainer`), the live picture (a free run of the model against the
  data, :func:`explorer.training.frames.model_frame`) and the verdict of the final model;
* when training ends (done, paused, stopped, diverged), the model is analysed through
  ``model.as_system()`` with the core analysis (fixed points; Lyapunov spectrum on request)
  and :mod:`explorer.models.pwl` (subregion sequence, transition graph, exact fixed points).
"""

from __future__ import annotations

import math
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import param
import torch

from ..core.analysis.lyapunov import lyapunov_spectrum
from ..core.custom import parse_param_assignments, parse_system, validate_equations
from ..core.errors import ExplorerError, ParameterError, SizeLimitError
from ..core.registry import system_class
from ..core.system import DynamicalSystem
from ..models import ReconstructionModel, build_model
from ..training import DataError, TimeSeries, Trainer, TrainerConfig, from_file, from_system
from ..training.frames import (FRAME_LENGTH, Frame, ModelAnalysis, ModelLyapunov, analyse_model,
                               data_frame, model_frame, model_frame_of)
from ..training.verdict import D_H_GOOD, D_STSP_GOOD, Verdict, metrics_verdict
from .base import CUSTOM, PresetLinks, SystemSource, one_line
from .jobs import Done
from .run import (MAX_RUNS_ENV, MAX_UPLOAD_BYTES, RUNS, BackgroundRun, Progress, RunController,
                  StepRecord, warm_up, worker_threads)

#: solver steps one simulated data set may take (length x subsampling)
MAX_DATA_STEPS = 2_000_000
#: file types accepted for data upload
DATA_SUFFIXES = (".csv", ".txt", ".tsv", ".dat", ".npy", ".npz")


def max_runs() -> int:
    """The server-wide limit of runs training at once (``EXPLORER_MAX_RUNS``, default 2)."""
    return RUNS.limit()


def active_runs() -> int:
    """Runs training now, over every session of this server process."""
    return RUNS.active


def busy_message() -> str:
    return RUNS.busy_message()


# ============================================================================ presets
@dataclass(frozen=True)
class RunPreset:
    """A teaching preset of the Reconstruction page: settings (controller parameter values)
    and a few sentences. ``?page=reconstruction&preset=KEY`` opens the page with it."""

    key: str
    title: str
    text: str
    settings: dict[str, Any]


RUN_PRESETS: dict[str, RunPreset] = {p.key: p for p in (
    RunPreset(
        "lecture", "Lecture: Lorenz-63 in a minute",
        "A shallow PLRNN (3 latent units) learns the Lorenz-63 flow from 5,000 noisy samples "
        "in short windows (50 steps). Press Start: the loss falls within seconds, the "
        "invariants are measured every 50 steps, and within about a minute the model's free "
        "run (orange) fills both wings of the butterfly (grey) and the verdict turns to "
        "'reconstruction'.",
        dict(source="system", system="lorenz63", noise=0.05, subsample=1, length=5000,
             model="shplrnn", latent=3, hidden=100, alpha_mode="adaptive", alpha=0.1,
             sparse_tf=False, seq_len=50, batch=32, lr=2e-3, lr_end=2e-4, steps=3000,
             metrics_every=50, metric_length=2000, metric_runs=4, seed=0)),
)}

#: URL query keys of the page (besides ``page``) and the settings they hold
QUERY_KEYS = {"sys": "system", "model": "model", "steps": "steps", "seed": "seed",
              "noise": "noise", "length": "length", "latent": "latent"}



@dataclass(frozen=True)
class DataSpec:
    """Where the training series comes from (a snapshot of the settings)."""

    source: str
    system: str
    equations: str
    custom_params: str
    noise: float
    subsample: int
    length: int
    seed: int
    file_token: int
    file_dt: float


class ReconstructionController(PresetLinks, SystemSource, RunController):
    """Everything the Reconstruction page shows, and the actions that train and analyse."""
    query_keys = QUERY_KEYS

    # ---- data source (system, equations, custom_params: SystemSource)
    source = param.Selector(default="system", objects=["system", "file"],
                            doc="Train on a simulated system of the registry or on an uploaded file.")
    noise = param.Number(default=0.05, bounds=(0.0, 1.0),
                         doc="Observation noise: a fraction of each coordinate's standard deviation.")
    subsample = param.Integer(default=1, bounds=(1, 1000),
                              doc="Keep every k-th solver step (the data's sampling interval is k dt).")
    length = param.Integer(default=10_000, bounds=(100, 200_000),
                           doc="Number of samples in the training series.")
    file_dt = param.Number(default=1.0, bounds=(1e-9, 1e9), inclusive_bounds=(False, True),
                           doc="Sampling interval of an uploaded series (time units per sample).")
    file_name = param.String(default="", doc="Name of the uploaded data file (read-only).")
    # ---- model
    model = param.Selector(default="shplrnn", objects=["shplrnn", "plrnn", "alrnn"],
                           doc="shplrnn: shallow PLRNN; plrnn: vanilla PLRNN; alrnn: almost-linear RNN.")
    latent = param.Integer(default=3, bounds=(1, 512), doc="Latent dimension M (>= observed coordinates).")
    hidden = param.Integer(default=100, bounds=(1, 4096), doc="Shallow PLRNN: width H of the ReLU layer.")
    n_relu = param.Integer(default=2, bounds=(0, 64),
                           doc="AL-RNN: number P of ReLU units (at most 2^P linear subregions).")
    # ---- teacher forcing
    alpha_mode = param.Selector(default="adaptive", objects=["adaptive", "fixed"],
                                doc="Generalized teacher forcing: alpha estimated from the model's "
                                    "Jacobians (adaptive) or held at a fixed value.")
    alpha = param.Number(default=0.1, bounds=(0.0, 1.0),
                         doc="GTF strength alpha (fixed), or the adaptive alpha's starting value.")
    sparse_tf = param.Boolean(default=False,
                              doc="Sparse teacher forcing instead: replace the observed units every tau steps.")
    tau = param.Integer(default=16, bounds=(1, 10_000), doc="Sparse teacher forcing interval tau.")
    # ---- optimisation
    seq_len = param.Integer(default=100, bounds=(2, 10_000), doc="Steps per training window.")
    batch = param.Integer(default=16, bounds=(1, 4096), doc="Windows per optimisation step.")
    lr = param.Number(default=1e-3, bounds=(1e-6, 0.5),
                      doc="Initial learning rate (decays to 'lr_end' over the planned steps).")
    lr_end = param.Number(default=1e-4, bounds=(1e-8, 0.5),
                          doc="Learning rate reached at the planned number of steps (at most 'lr').")
    steps = param.Integer(default=3000, bounds=(1, 10_000_000), doc="Planned optimisation steps.")
    metrics_every = param.Integer(default=100, bounds=(0, 1_000_000),
                                  doc="Compute D_stsp, D_H and the prediction error every this many steps (0: never).")
    metric_length = param.Integer(default=2000, bounds=(100, 100_000),
                                  doc="Samples of each free run that D_stsp and D_H compare with the data.")
    metric_runs = param.Integer(default=4, bounds=(1, 64),
                                doc="Free runs per evaluation, from evenly spaced data states (pooled).")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed of initialisation, windows and noise.")
    preset = param.String(default="", doc="Teaching preset in use ('' for none; see RUN_PRESETS).")
    # ---- results (read-only for views)
    data = param.Parameter(default=None, doc="The training TimeSeries (standardised).")
    preview = param.Parameter(default=None, doc="A Frame of the data alone (before training).")
    analysis = param.Parameter(default=None, doc="The last ModelAnalysis.")
    lyapunov = param.Parameter(default=None, doc="The last ModelLyapunov.")
    verdict = param.Parameter(default=None, doc="Is the model a reconstruction? The latest "
                                                "explorer.training.verdict.Verdict (None: not judged yet).")

    DATA_SETTINGS = ("source", "system", "equations", "custom_params", "noise", "subsample",
                     "length", "file_dt")
    RUN_SETTINGS = ("model", "latent", "hidden", "n_relu", "alpha_mode", "alpha", "sparse_tf", "tau",
                    "seq_len", "batch", "lr", "lr_end", "steps", "metrics_every", "metric_length",
                    "metric_runs", "seed")
    run_name = "reconstruction"

    def __init__(self, *, dysts: bool = False, auto: bool = True, notify=None, **params):
        super().__init__(dysts=dysts, kinds=("flow", "map"), auto=auto, notify=notify, **params)
        self._data_key: DataSpec | None = None
        self._file_series: TimeSeries | None = None
        self._file_token = 0
        self.param.watch(self._on_data_setting, list(self.DATA_SETTINGS))
        self.param.watch(self._on_model_kind, "model")
        self.param.watch(self._on_setting, list(self.DATA_SETTINGS + self.RUN_SETTINGS))

    # ================================================================ presets and URL state
    def apply_preset(self, key: str) -> None:
        """Load a teaching preset's settings (:data:`RUN_PRESETS`); the data are rebuilt once."""
        if key not in RUN_PRESETS:
            raise ParameterError(f"unknown preset {key!r}; presets: {', '.join(RUN_PRESETS)}")
        if self.running:
            raise ExplorerError("a run is training: stop it before loading a preset")
        p = RUN_PRESETS[key]
        with self.suspended():
            self.param.update(**p.settings)
            self.preset = key
        self.status = f"preset: {p.title}. Press Start."
        if self.auto:
            self.request_data()


    def _on_setting(self, *events) -> None:
        """A setting changed by hand: the preset no longer describes the page."""
        if not self._suspend and self.preset:
            self.preset = ""

    # ================================================================ data
    def data_spec(self) -> DataSpec:
        return DataSpec(self.source, self.system, self.equations, self.custom_params,
                        float(self.noise), int(self.subsample), int(self.length), int(self.seed),
                        self._file_token, float(self.file_dt))

    def current_system(self) -> DynamicalSystem:
        """The data source's system (validated); custom equations are parsed."""
        return _system_of(self.data_spec())

    def _build_data(self, spec: DataSpec, stop: threading.Event | None = None) -> TimeSeries:
        """The training series of ``spec`` (runs in a worker thread)."""
        if spec.source == "file":
            if self._file_series is None or spec.file_token != self._file_token:
                raise DataError("no data file uploaded: upload a CSV, NPY or NPZ file first")
            return replace(self._file_series, dt=spec.file_dt)
        sys_ = _system_of(spec)
        steps = (spec.length - 1) * spec.subsample
        if steps > MAX_DATA_STEPS:
            raise SizeLimitError(f"{spec.length:,} samples every {spec.subsample} steps take "
                                 f"{steps:,} solver steps, over the limit of {MAX_DATA_STEPS:,}")
        transient = 5000 if sys_.kind == "flow" else 1000
        return from_system(sys_, steps=steps, transient=transient, save_every=spec.subsample,
                           noise=spec.noise, generator=torch.Generator().manual_seed(spec.seed))

    def request_data(self) -> None:
        """(Re)build the training series off the UI thread (shown as a preview)."""
        spec = self.data_spec()
        if spec.source == "file" and self._file_series is None:
            self.param.update(data=None, preview=None)
            self._data_key = None
            self.status = "upload a CSV, NPY or NPZ file (time along rows, one column per variable)"
            return

        def work(stop, progress):
            worker_threads()
            ts = self._build_data(spec, stop)
            frame = data_frame(ts)
            warm_up()                         # while the student reads the page
            return spec, ts, frame

        self._submit("data", work, label="preparing data", quiet=True, threads=None)
        if not self.running:
            self.status = f"preparing data: {self._source_title(spec)} ..."

    def load_file(self, content: bytes, filename: str) -> bool:
        """Validate an uploaded series (CSV/NPY/NPZ bytes) with the training core's loader.

        On success the data source becomes the file; on failure ``errors["data"]`` and the
        status hold a one-line message and nothing else changes. Returns success."""
        name = Path(str(filename or "data.csv")).name
        try:
            suffix = Path(name).suffix.lower()
            if suffix not in DATA_SUFFIXES:
                raise DataError(f"{name}: unknown file type {suffix or '(none)'}; use .csv, .npy or .npz")
            if not content:
                raise DataError(f"{name} is empty")
            if len(content) > MAX_UPLOAD_BYTES:
                raise SizeLimitError(f"{name} is {len(content) / 2**20:.1f} MiB, over the upload "
                                     f"limit of {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
            with tempfile.TemporaryDirectory(prefix="explorer-upload-") as d:
                path = Path(d) / name
                path.write_bytes(content)
                ts = from_file(path, dt=float(self.file_dt))
        except ExplorerError as e:
            self._error("data", one_line(e))
            return False
        except Exception as e:  # a reader's own failure: still one line, never a traceback
            self._error("data", f"{name} could not be read ({type(e).__name__}: {one_line(e)})")
            return False
        self._file_series = ts
        self._file_token += 1
        self._clear_error("data")
        with self.suspended():
            self.file_name = name
            self.source = "file"
        self._set_data(self.data_spec(), ts, data_frame(ts))
        self.status = f"data: {self.describe_data(ts)}"
        return True

    def _set_data(self, spec: DataSpec | None, ts: TimeSeries, frame: Frame) -> None:
        self._data_key = spec
        self.param.update(data=ts, preview=frame)

    def describe_data(self, ts: TimeSeries | None = None) -> str:
        ts = ts or self.data
        if ts is None:
            return "no data"
        lam = f"; published λ1 = {ts.lyapunov:.4g}" if ts.lyapunov is not None else ""
        return (f"{ts.source}, {ts.length:,} samples of {', '.join(ts.variables)} "
                f"(Δt = {ts.dt:g}){lam}")

    def _source_title(self, spec: DataSpec) -> str:
        if spec.source == "file":
            return self.file_name or "file"
        return self.system_title(spec.system)

    # ================================================================ the run (platform hooks)
    def trainer_config(self, obs_dim: int | None = None) -> TrainerConfig:
        """The :class:`TrainerConfig` of the current settings (validated)."""
        if obs_dim is not None and self.latent < obs_dim:
            raise ParameterError(f"the latent dimension M = {self.latent} is smaller than the "
                                 f"{obs_dim} observed coordinates; use M >= {obs_dim}")
        if self.model == "alrnn" and self.n_relu > self.latent:
            raise ParameterError(f"the AL-RNN's P = {self.n_relu} ReLU units exceed M = {self.latent}")
        return TrainerConfig(
            model=self.model, latent_dim=int(self.latent), hidden_dim=int(self.hidden),
            n_relu=int(self.n_relu), seq_len=int(self.seq_len), batch_size=int(self.batch),
            lr=float(self.lr), lr_end=min(float(self.lr_end), float(self.lr)), steps=int(self.steps),
            alpha_mode="sparse" if self.sparse_tf else self.alpha_mode, alpha=float(self.alpha),
            tau=int(self.tau), seed=int(self.seed), device=str(self._device()),
            metrics_every=int(self.metrics_every), metric_length=int(self.metric_length),
            metric_runs=int(self.metric_runs))

    def new_run(self):
        config = self.trainer_config(None if self.data is None else self.data.dim)
        spec = self.data_spec()
        data = self.data if (self.data is not None and self._data_key == spec) else None
        if data is None and spec.source == "file" and self._file_series is None:
            raise ExplorerError("no data file uploaded: upload a CSV, NPY or NPZ file first")

        def build(run: BackgroundRun) -> Trainer:
            ts = data
            if ts is None:
                ts = self._build_data(spec, run.stop)
                run.show(data_frame(ts))
            run.spec = spec
            return Trainer(ts, config)

        return build

    def start(self) -> bool:
        if not super().start():
            return False
        self.jobs.cancel("data")
        self.jobs.cancel("analysis")
        self.param.update(analysis=None, lyapunov=None, verdict=None)
        return True

    def resume(self) -> bool:
        if not super().resume():
            return False
        self.jobs.cancel("analysis")
        return True

    def reset(self) -> None:
        super().reset()
        self.jobs.cancel("analysis")
        self.jobs.cancel("lyapunov")
        self.param.update(analysis=None, lyapunov=None, verdict=None)

    def frame_of(self, trainer: Trainer, last: bool = False) -> Frame:
        return model_frame(trainer)

    def finish_of(self, trainer: Trainer) -> Verdict:
        return trainer.verdict()                     # judged on the final model (~0.1 s)

    def on_final(self, value: Verdict) -> None:
        self.verdict = value

    def final_text(self) -> str:
        return self.verdict.line() if self.verdict is not None else ""

    def on_trainer(self, run: BackgroundRun) -> None:
        ts = run.trainer.data
        if self.data is not ts:
            self._set_data(getattr(run, "spec", None), ts, data_frame(ts))

    def on_records(self, records: list[StepRecord]) -> None:
        for r in records:
            if r.metrics is not None:
                try:
                    self.verdict = metrics_verdict(r.metrics)
                except (KeyError, TypeError, ValueError):
                    pass

    def progress_extra(self) -> list[str]:
        m = self._last_metrics
        if not m:
            return []
        return [f"D_stsp {m.get('d_stsp', math.nan):.3g}, D_H {m.get('d_h', math.nan):.3g}"]

    def on_run_end(self, phase: str) -> None:
        if self._trainer is not None and phase != "error":
            self.request_analysis()

    def stop(self) -> bool:
        paused = not self.running and self._trainer is not None and self.phase == "paused"
        ok = super().stop()
        if ok and paused and self.verdict is not None:
            self.status = (f"stopped at step {self.step:,} · {self.verdict.line()} · "
                           "Start trains a new model")
        return ok

    def _job_done(self, d: Done) -> None:
        if d.error is not None:
            self._error(d.key, d.error)
            return
        if d.key == "data":
            spec, ts, frame = d.value
            self._set_data(spec, ts, frame)
            if not self.running:
                self.status = f"data: {self.describe_data(ts)}"
        elif d.key == "analysis":
            self.analysis = d.value
            if not self.running and self.status == self._end_message:   # nothing newer to say
                a = d.value
                self.status = (f"{self._end_message} · analysis: {len(a.fixed)} fixed point(s), "
                               f"{len(a.codes)} subregion(s) visited")
        elif d.key == "lyapunov":
            self.lyapunov = d.value
            if not self.running:
                self.status = f"Lyapunov spectrum of the model: done in {d.seconds:.1f} s"
        elif d.key == "frame":
            self.last_frame = d.value
            self._frame_job = d.value

    def poll(self) -> Progress:
        p = super().poll()
        pending, self._frame_job = getattr(self, "_frame_job", None), None
        if pending is not None and p.frame is None:
            p = Progress(p.records, pending, p.ended, p.reset)
        return p

    # ================================================================ checkpoints
    def checkpoint_filename(self) -> str:
        tr = self._trainer
        if tr is None:
            return "model.pt"
        return f"{tr.config.model}-{tr.data.source.split('.')[0] or 'data'}-step{tr.step_count}.pt"

    def load_trainer(self, path: Path) -> Trainer:
        try:
            return Trainer.load(path, device=str(self._device()))
        except ParameterError as e:
            if "without its data" not in str(e) or self.data is None:
                raise
            return Trainer.load(path, data=self.data, device=str(self._device()))

    def on_loaded(self, tr: Trainer, name: str) -> None:
        cfg = tr.config
        with self.suspended():
            self.param.update(
                model=cfg.model, latent=tr.model.latent_dim, hidden=cfg.hidden_dim,
                n_relu=cfg.n_relu, seq_len=cfg.seq_len, batch=cfg.batch_size, lr=cfg.lr,
                steps=max(cfg.steps, 1), seed=cfg.seed, metrics_every=cfg.metrics_every,
                lr_end=cfg.lr_end, metric_length=cfg.metric_length, metric_runs=cfg.metric_runs,
                alpha=cfg.alpha, sparse_tf=cfg.alpha_mode == "sparse", tau=cfg.tau,
                alpha_mode=cfg.alpha_mode if cfg.alpha_mode != "sparse" else self.alpha_mode)
        try:
            self.verdict = metrics_verdict(self._last_metrics) if self._last_metrics else None
        except (KeyError, TypeError, ValueError):
            self.verdict = None
        self.jobs.cancel("data")
        self._set_data(None, tr.data, data_frame(tr.data))
        self.param.update(analysis=None, lyapunov=None)
        self.status = (f"loaded {name}: {tr.model.title} at step {tr.step_count:,} on "
                       f"{self.describe_data(tr.data)}; Resume continues training")
        model = self._model_copy()
        self._submit("frame", lambda stop, progress: model_frame_of(model, tr.data, step=tr.step_count),
                     "free run", quiet=True)
        self.request_analysis()

    # ================================================================ analysis
    def _model_copy(self) -> ReconstructionModel:
        """A CPU copy of the latest model snapshot (safe to use while training continues)."""
        tr = self._trainer or (self._run.trainer if self._run is not None else None)
        if tr is None:
            raise ExplorerError("no model yet: start a training run first")
        snap = self._snapshot
        if snap is None:
            if self.running:
                raise ExplorerError("no model snapshot yet: wait for the first step")
            snap = tr.snapshot()
        m = build_model(tr.model.config)
        m.load_state_dict(snap)
        return m.eval()

    def request_analysis(self) -> None:
        """Fixed points, subregion sequence and transition graph of the trained model."""
        try:
            model = self._model_copy()
        except ExplorerError as e:
            self._error("analysis", str(e))
            return
        data = self._trainer.data if self._trainer is not None else self.data
        step = self.step
        self._submit("analysis", lambda stop, progress: analyse_model(model, data, step=step),
                     "model analysis", quiet=True)

    def request_lyapunov(self) -> None:
        """Lyapunov spectrum of the model's ``as_system()`` snapshot (the largest exponents,
        at most 10), off the UI thread."""
        try:
            model = self._model_copy()
        except ExplorerError as e:
            self._error("lyapunov", str(e))
            return
        data = self._trainer.data if self._trainer is not None else self.data
        step = self.step
        k = min(model.latent_dim, 10)

        def work(stop, progress):
            res = lyapunov_spectrum(model.as_system(), k=k, generator=torch.Generator().manual_seed(0),
                                    progress=progress, stop=stop)
            return ModelLyapunov(step, res, float(data.dt) if data is not None else 1.0,
                                 None if data is None else data.lyapunov)

        self._submit("lyapunov", work, "Lyapunov spectrum of the model", quiet=self.running)

    # ================================================================ watchers
    def _on_data_setting(self, *events) -> None:
        if self._suspend:
            return
        if any(e.name == "file_dt" for e in events) and self.source == "file" and self._file_series is not None:
            ts = replace(self._file_series, dt=float(self.file_dt))
            self._set_data(self.data_spec(), ts, data_frame(ts))
            return
        if self.auto:
            self.request_data()

    def _on_model_kind(self, event) -> None:
        if self._suspend:
            return
        n = self.data.dim if self.data is not None else 1
        self.latent = max({"plrnn": 20, "shplrnn": 3, "alrnn": 20}[event.new], n)


def _system_of(spec: DataSpec) -> DynamicalSystem:
    if spec.system == CUSTOM:
        params = parse_param_assignments(spec.custom_params)
        problems = validate_equations(spec.equations, params)
        if problems:
            raise problems[0]
        return parse_system(spec.equations, params, name=CUSTOM)
    return system_class(spec.system)()


__all__ = ["ReconstructionController", "RUN_PRESETS", "RunPreset", "D_STSP_GOOD", "D_H_GOOD",
           "Frame", "Progress", "StepRecord", "ModelAnalysis", "ModelLyapunov", "DataSpec",
           "max_runs", "active_runs", "busy_message", "data_frame", "model_frame",
           "model_frame_of", "analyse_model", "MAX_RUNS_ENV", "FRAME_LENGTH"]
