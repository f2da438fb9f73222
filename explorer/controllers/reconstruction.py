"""State and actions of the Reconstruction page (param only: no Panel, no HoloViews).

The page trains a PLRNN, shallow PLRNN or AL-RNN on a time series (a simulated system of the
registry, or an uploaded CSV/NPY/NPZ file) and analyses the trained model as a dynamical
system. :class:`ReconstructionController` holds the settings, runs *one* training run per
session in a background thread, and publishes progress for the view:

* The training thread calls :meth:`explorer.training.Trainer.run` in chunks of about
  :data:`CHUNK_SECONDS` and honours a stop event (pause, stop, reset, session close). Each
  step's losses and metrics go into a queue; every :data:`FRAME_SECONDS` (between two steps)
  the thread also computes a :class:`Frame`: a free run of the model against the data, with
  the subregion (symbolic) sequence and transition counts (about 25 ms). The UI
  thread collects both with :meth:`poll` (the view's periodic callback), so training speed
  and drawing speed are independent and the UI thread never runs the model.
* A server-wide limit (:data:`MAX_RUNS_ENV`, default 2) bounds the number of runs training at
  once; a refused start or resume reports ``busy: N runs active``.
* Checkpoints download as bytes of :meth:`Trainer.save` (taken between two steps when a run
  is active) and upload through :meth:`Trainer.load` (``weights_only=True``).
* When training ends (done, paused, stopped, diverged), the model is analysed through
  ``model.as_system()`` with the Attractors page's compute functions (fixed points; Lyapunov
  spectrum on request) and :mod:`explorer.models.pwl` (subregion sequence, transition graph,
  exact fixed points in the visited subregions).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import param
import torch

from ..core.analysis.fixed_points import FixedPoint, fixed_points
from ..core.analysis.lyapunov import LyapunovResult, lyapunov_spectrum
from ..core.custom import parse_param_assignments, parse_system, validate_equations
from ..core.device import available_devices, default_device, parse_device
from ..core.errors import ExplorerError, ParameterError, SizeLimitError
from ..core.registry import system_class, system_names
from ..core.simulate import simulate
from ..core.system import DynamicalSystem
from ..models import (PWLFixedPoint, ReconstructionModel, build_model, pwl_fixed_points,
                      symbolic_sequence, transition_graph)
from ..training import (DataError, TimeSeries, Trainer, TrainerConfig, TrainEvent, from_file,
                        from_system)
from ..training.verdict import D_H_GOOD, D_STSP_GOOD, Verdict, metrics_verdict
from ..training.gtf import force
from .jobs import Done, JobRunner

log = logging.getLogger(__name__)

CUSTOM = "custom"
DEFAULT_EQUATIONS = "dx/dt = sigma*(y - x)\ndy/dt = x*(rho - z) - y\ndz/dt = x*y - beta*z"
DEFAULT_CUSTOM_PARAMS = "sigma = 10, rho = 28, beta = 2.6667"

#: environment variable: most training runs active at once on this server
MAX_RUNS_ENV = "EXPLORER_MAX_RUNS"
#: target wall time of one ``Trainer.run`` chunk (seconds)
CHUNK_SECONDS = 0.5
#: time between two live frames (seconds): about 5.5 free runs per second
FRAME_SECONDS = 0.18
#: samples of the live free run compared with the data
FRAME_LENGTH = 2000
#: solver steps one simulated data set may take (length x subsampling)
MAX_DATA_STEPS = 2_000_000
#: file types accepted for data upload
DATA_SUFFIXES = (".csv", ".txt", ".tsv", ".dat", ".npy", ".npz")
#: largest uploaded data file or checkpoint (bytes)
MAX_UPLOAD_BYTES = 64 * 2**20
#: intra-op threads of the training and analysis threads (``EXPLORER_TRAIN_THREADS``): these
#: models are small, and on a busy machine OpenMP threads waiting for each other make a step
#: up to 100x slower; ``torch.set_num_threads`` in a worker thread is local to that thread
TRAIN_THREADS_ENV = "EXPLORER_TRAIN_THREADS"
#: step records kept for the view between two polls (older ones are dropped)
MAX_QUEUED_STEPS = 200_000
PHASES = ("idle", "preparing", "running", "paused", "stopped", "done", "diverged", "error")

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


# ============================================================================ run limit
_runs_lock = threading.Lock()
_active_runs = 0


def max_runs() -> int:
    """The server-wide limit of runs training at once (``EXPLORER_MAX_RUNS``, default 2)."""
    try:
        return max(1, int(os.environ.get(MAX_RUNS_ENV, "2")))
    except ValueError:
        return 2


def active_runs() -> int:
    """Runs training now, over every session of this server process."""
    with _runs_lock:
        return _active_runs


def _acquire_run() -> int | None:
    """Take a slot; ``None`` when the limit is reached (the count is returned otherwise)."""
    global _active_runs
    with _runs_lock:
        if _active_runs >= max_runs():
            return None
        _active_runs += 1
        return _active_runs


def _release_run() -> None:
    global _active_runs
    with _runs_lock:
        _active_runs = max(0, _active_runs - 1)


def _worker_threads() -> None:
    """Limit the calling worker thread's intra-op parallelism (see ``TRAIN_THREADS_ENV``)."""
    try:
        n = max(1, int(os.environ.get(TRAIN_THREADS_ENV, "1")))
    except ValueError:
        n = 1
    torch.set_num_threads(n)


_warm = threading.Event()


def warm_up() -> None:
    """Pay torch's one-time costs before the first Start (call from a worker thread): the
    first optimiser built in a process imports ``torch._dynamo`` (1.5 s on this CPU, more on a
    loaded one), which would otherwise delay the first visible training step."""
    if _warm.is_set():
        return
    try:
        p = torch.nn.Parameter(torch.zeros(2))
        opt = torch.optim.RAdam([p], lr=1e-3)
        (p * p).sum().backward()
        opt.step()
    except Exception as e:                                   # only an optimisation
        log.debug("warm-up failed: %s", e)
    _warm.set()


def busy_message() -> str:
    n = active_runs()
    return (f"busy: {n} runs active (this server trains at most {max_runs()} at once); "
            "try again in a moment")


# ============================================================================ results
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


@dataclass(frozen=True)
class StepRecord:
    """One optimisation step as the view needs it (plain floats)."""

    step: int
    loss: float
    grad_norm: float
    alpha: float
    lr: float
    seconds: float
    eta: float | None
    metrics: dict[str, float] | None


@dataclass(frozen=True)
class Frame:
    """A live picture of the model: a free run against the data (data units, float32).

    ``x_true`` and ``x_gen`` are (L, N) from the same data-inferred start, ``t`` (L,) in the
    data's time unit; ``symbols`` (L',) the subregion index of each generated state up to the
    first non-finite one, regions numbered by visit frequency with bitcodes ``codes`` and
    visit ``counts``; ``graph`` (R, R) transition counts. ``x_gen`` is None for a data preview.
    """

    step: int
    variables: tuple[str, ...]
    t: np.ndarray
    x_true: np.ndarray
    x_gen: np.ndarray | None
    symbols: np.ndarray
    codes: tuple[str, ...]
    counts: np.ndarray
    graph: np.ndarray
    diverged: bool = False


@dataclass(frozen=True)
class Progress:
    """What :meth:`ReconstructionController.poll` collected since the last poll."""

    records: list[StepRecord]
    frame: Frame | None
    ended: bool
    reset: bool

    @property
    def empty(self) -> bool:
        return not self.records and self.frame is None and not self.ended and not self.reset


@dataclass(frozen=True)
class ModelAnalysis:
    """The trained model analysed as a map (``model.as_system()``) after training.

    ``fixed`` come from :func:`explorer.core.analysis.fixed_points.fixed_points` (latent
    coordinates, map eigenvalues), ``fixed_observed`` (F, N) are their observed coordinates in
    data units, ``pwl_fixed`` the exact fixed points in the visited subregions; ``symbols``,
    ``codes``, ``counts`` the symbolic sequence of ``steps`` iterations of the snapshot from its
    reference state (after a transient), ``graph`` its transition counts and ``observed`` (T, N)
    that run's observations in data units.
    """

    step: int
    title: str
    latex: str
    latent_dim: int
    obs_dim: int
    n_switches: int
    variables: tuple[str, ...]
    fixed: list[FixedPoint]
    pwl_fixed: list[PWLFixedPoint]
    symbols: np.ndarray
    codes: tuple[str, ...]
    counts: np.ndarray
    graph: np.ndarray
    steps: int
    bounded: bool
    observed: np.ndarray
    fixed_observed: np.ndarray
    seconds: float


@dataclass(frozen=True)
class ModelLyapunov:
    """Lyapunov spectrum of the trained model: per iteration and per time unit of the data."""

    step: int
    result: LyapunovResult
    dt: float
    data_lyapunov: float | None

    @property
    def per_time(self) -> np.ndarray:
        return self.result.exponents.cpu().numpy() / self.dt


# ============================================================================ the run
@dataclass
class _Run:
    """One training thread and its hand-over structures (thread-safe)."""

    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""                                   # "pause", "stop", "reset", "close"
    thread: threading.Thread | None = None
    records: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_QUEUED_STEPS))
    lock: threading.Lock = field(default_factory=threading.Lock)
    frame: Frame | None = None
    end: tuple[str, str] | None = None                 # (phase, message) once finished
    trainer: Trainer | None = None
    data: TimeSeries | None = None
    snapshot: dict[str, torch.Tensor] | None = None
    spec: DataSpec | None = None                       # where the data came from (new runs)
    save_request: tuple[Path, threading.Event, list] | None = None
    slot: bool = False
    frame_at: float = 0.0                              # when the next live frame is due
    verdict: Verdict | None = None                     # the final model's verdict

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class ReconstructionController(param.Parameterized):
    """Everything the Reconstruction page shows, and the actions that train and analyse."""

    # ---- data source
    source = param.Selector(default="system", objects=["system", "file"],
                            doc="Train on a simulated system of the registry or on an uploaded file.")
    system = param.Selector(default="lorenz63", objects=["lorenz63"],
                            doc="The system whose trajectory is the training data (built-in or custom).")
    equations = param.String(default=DEFAULT_EQUATIONS, doc="Equations of the custom system.")
    custom_params = param.String(default=DEFAULT_CUSTOM_PARAMS,
                                 doc="Parameters of the custom system: name = value, ...")
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
    device = param.String(default="", doc="Compute device (cpu, cuda, cuda:1, ...).")
    # ---- state and results (read-only for views)
    phase = param.Selector(default="idle", objects=list(PHASES), doc="What the training run is doing.")
    step = param.Integer(default=0, doc="Optimisation steps done.")
    progress = param.Number(default=0.0, bounds=(0.0, 1.0), doc="Fraction of the planned steps done.")
    eta = param.Number(default=None, allow_None=True, doc="Estimated seconds to the planned steps.")
    rate = param.Number(default=None, allow_None=True, doc="Optimisation steps per second.")
    data = param.Parameter(default=None, doc="The training TimeSeries (standardised).")
    preview = param.Parameter(default=None, doc="A Frame of the data alone (before training).")
    analysis = param.Parameter(default=None, doc="The last ModelAnalysis.")
    lyapunov = param.Parameter(default=None, doc="The last ModelLyapunov.")
    errors = param.Dict(default={}, doc="Error message per key (data, run, checkpoint, analysis, ...).")
    status = param.String(default="", doc="What happens now, or what just happened.")
    run_version = param.Integer(default=0, doc="Bumped when the loss history restarts (start, reset, load).")
    verdict = param.Parameter(default=None, doc="Is the model a reconstruction? The latest "
                                                "explorer.training.verdict.Verdict (None: not judged yet).")

    DATA_SETTINGS = ("source", "system", "equations", "custom_params", "noise", "subsample",
                     "length", "file_dt")
    RUN_SETTINGS = ("model", "latent", "hidden", "n_relu", "alpha_mode", "alpha", "sparse_tf", "tau",
                    "seq_len", "batch", "lr", "lr_end", "steps", "metrics_every", "metric_length",
                    "metric_runs", "seed")

    def __init__(self, *, dysts: bool = False, auto: bool = True, notify=None, **params):
        self.param.system.objects = system_names(dysts=dysts) + [CUSTOM]
        super().__init__(**params)
        self.jobs = JobRunner(notify=notify)
        self.auto = auto
        self._closed = False
        self._suspend = 0
        self._run: _Run | None = None
        self._trainer: Trainer | None = None
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._data_key: DataSpec | None = None
        self._file_series: TimeSeries | None = None
        self._file_token = 0
        self._last_loss = math.nan
        self._last_metrics: dict[str, float] | None = None
        self._reset_pending = False
        self._frame_pending: Frame | None = None
        self._end_message = ""
        # the whole history of this run (the view reloads it after a reset or a load)
        self.history: dict[str, list[float]] = {k: [] for k in ("step", "loss", "grad_norm", "alpha", "lr")}
        self.metric_history: list[dict[str, float]] = []
        self.last_frame: Frame | None = None
        if not self.device:
            self.device = str(default_device())
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
        self._suspend += 1
        try:
            self.param.update(**p.settings)
            self.preset = key
        finally:
            self._suspend -= 1
        self.status = f"preset: {p.title}. Press Start."
        if self.auto:
            self.request_data()

    def to_query(self) -> dict[str, str]:
        """The page state as URL query values: the preset, or the main settings."""
        if self.preset:
            return {"preset": self.preset}
        return {k: str(getattr(self, name)) for k, name in QUERY_KEYS.items()}

    def apply_query(self, query) -> list[str]:
        """Restore state from URL query values (``preset`` first, then ``sys``, ``model``,
        ``steps``, ``seed``, ``noise``, ``length``, ``latent``); bad entries are skipped and
        reported, one message each; other keys (``page``) are ignored."""
        q = {k: (v[0] if isinstance(v, (list, tuple)) and v else v) for k, v in dict(query).items()}
        q = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in q.items()}
        problems: list[str] = []
        auto, self.auto = self.auto, False
        try:
            if q.get("preset"):
                try:
                    self.apply_preset(q["preset"])
                except ExplorerError as e:
                    problems.append(f"preset: {e}")
            self._suspend += 1
            try:
                for key, name in QUERY_KEYS.items():
                    if key not in q:
                        continue
                    try:
                        conv = type(self.param[name].default) if name != "system" else str
                        setattr(self, name, conv(q[key]))
                    except (ValueError, TypeError) as e:
                        problems.append(f"{key}: {str(e).splitlines()[0]}")
            finally:
                self._suspend -= 1
        finally:
            self.auto = auto
        if problems:
            self.status = f"⚠ URL: {problems[0]}"
        return problems

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

    def check_custom(self, equations: str | None = None, params_text: str | None = None) -> list[str]:
        """Problems with typed custom equations and parameters, one message each."""
        eqs = self.equations if equations is None else equations
        try:
            params = parse_param_assignments(self.custom_params if params_text is None else params_text)
        except ParameterError as e:
            return [f"parameters: {e}"]
        return [str(e) for e in validate_equations(eqs, params)]

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
            _worker_threads()
            ts = self._build_data(spec, stop)
            frame = data_frame(ts)
            warm_up()                         # while the student reads the page
            return spec, ts, frame

        self._clear_error("data")
        self.jobs.submit("data", work, label="preparing data")
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
            self._error("data", _one_line(e))
            return False
        except Exception as e:  # a reader's own failure: still one line, never a traceback
            self._error("data", f"{name} could not be read ({type(e).__name__}: {_one_line(e)})")
            return False
        self._file_series = ts
        self._file_token += 1
        self._clear_error("data")
        self._suspend += 1
        try:
            self.file_name = name
            self.source = "file"
        finally:
            self._suspend -= 1
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
        if spec.system == CUSTOM:
            return "custom system"
        return system_class(spec.system).title or spec.system

    # ================================================================ config
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

    def _device(self) -> torch.device:
        try:
            return parse_device(self.device)
        except ExplorerError:
            return default_device()

    @staticmethod
    def devices() -> list[str]:
        return [str(d) for d in available_devices()]

    # ================================================================ run control
    @property
    def running(self) -> bool:
        """A training thread is alive (training, or finishing its current step)."""
        return self._run is not None and self._run.alive

    @property
    def trainer(self) -> Trainer | None:
        return self._trainer

    def can_resume(self) -> bool:
        return (self._trainer is not None and not self.running
                and self.phase in ("paused", "diverged", "done"))

    def start(self) -> bool:
        """Start a new training run from fresh weights (the previous run is discarded)."""
        if self._closed:
            return False
        if self.running:
            self.status = "a run is already training: pause or stop it first"
            return False
        try:
            config = self.trainer_config(None if self.data is None else self.data.dim)
        except ExplorerError as e:
            self._error("run", _one_line(e))
            return False
        spec = self.data_spec()
        data = self.data if (self.data is not None and self._data_key == spec) else None
        if data is None and spec.source == "file" and self._file_series is None:
            self._error("run", "no data file uploaded: upload a CSV, NPY or NPZ file first")
            return False
        if _acquire_run() is None:
            self._error("run", busy_message())
            return False
        self.jobs.cancel("data")
        self.jobs.cancel("analysis")
        self._trainer = None
        self._snapshot = None
        self._clear_history()
        self._clear_error("run")
        self.param.update(step=0, progress=0.0, eta=None, rate=None, analysis=None, lyapunov=None,
                          verdict=None, phase="preparing", run_version=self.run_version + 1)
        self.status = "preparing the run ..."
        run = _Run(slot=True, spec=spec)
        run.thread = threading.Thread(target=self._train, args=(run, None, config, spec, data),
                                      name="explorer-train", daemon=True)
        self._run = run
        run.thread.start()
        return True

    def resume(self) -> bool:
        """Continue the paused (or stopped) run; a larger ``steps`` extends its plan."""
        if self._closed:
            return False
        if self.running:
            self.status = "the run is already training"
            return False
        if self._trainer is None:
            self._error("run", "nothing to resume: press Start")
            return False
        if self.phase == "stopped":
            self.status = "the run was stopped: press Start to train a new model"
            return False
        tr = self._trainer
        if self.steps != tr.config.steps:
            try:
                tr.config = tr.config.replace(steps=max(int(self.steps), 1))
            except ExplorerError as e:
                self._error("run", _one_line(e))
                return False
        if tr.step_count >= tr.config.steps:
            self.status = (f"the plan of {tr.config.steps:,} steps is complete: raise 'Steps' "
                           "to train further")
            return False
        if _acquire_run() is None:
            self._error("run", busy_message())
            return False
        self.jobs.cancel("analysis")
        self._clear_error("run")
        self.phase = "running"
        self.status = f"resuming at step {tr.step_count:,} ..."
        run = _Run(slot=True, trainer=tr, data=tr.data)
        run.thread = threading.Thread(target=self._train, args=(run, tr, tr.config, None, tr.data),
                                      name="explorer-train", daemon=True)
        self._run = run
        run.thread.start()
        return True

    def pause(self) -> bool:
        """Stop training after the current step; :meth:`resume` continues."""
        return self._halt("pause", "pausing ...")

    def stop(self) -> bool:
        """End the run after the current step and analyse the model."""
        if not self.running and self._trainer is not None and self.phase == "paused":
            self.phase = "stopped"
            v = f" · {self.verdict.line()}" if self.verdict is not None else ""
            self.status = f"stopped at step {self.step:,}{v} · Start trains a new model"
            return True
        return self._halt("stop", "stopping ...")

    def _halt(self, reason: str, text: str) -> bool:
        run = self._run
        if run is None or not run.alive:
            return False
        run.reason = reason
        run.stop.set()
        self.status = text
        return True

    def reset(self) -> None:
        """Stop any run and forget the model and its history."""
        run = self._run
        if run is not None and run.alive:
            run.reason = "reset"
            run.stop.set()
            run.thread.join(5.0)
        self._run = None
        self.jobs.cancel("analysis")
        self.jobs.cancel("lyapunov")
        self._trainer = None
        self._snapshot = None
        self._clear_history()
        errors = {k: v for k, v in self.errors.items() if k == "data"}
        self.param.update(step=0, progress=0.0, eta=None, rate=None, analysis=None, lyapunov=None,
                          verdict=None, phase="idle", errors=errors, run_version=self.run_version + 1)
        self.status = "reset: press Start to train a new model"

    def _clear_history(self) -> None:
        self.history = {k: [] for k in self.history}
        self.metric_history = []
        self.last_frame = None
        self._last_loss = math.nan
        self._last_metrics = None
        self._reset_pending = True

    # ---------------------------------------------------------------- the training thread
    def _train(self, run: _Run, trainer: Trainer | None, config: TrainerConfig,
               spec: DataSpec | None, data: TimeSeries | None) -> None:
        """Body of the training thread: build, then ``Trainer.run`` in chunks until the plan
        is complete or the stop event is set; frames between chunks."""
        phase, message = "error", ""
        try:
            _worker_threads()
            if trainer is None:
                if data is None:
                    data = self._build_data(spec, run.stop)
                    run.data = data
                    with run.lock:
                        run.frame = data_frame(data)
                if run.stop.is_set():
                    raise _Halted()
                trainer = Trainer(data, config)
                run.trainer = trainer
            run.data = trainer.data
            chunk = 5
            ev: TrainEvent | None = None
            while True:
                remaining = trainer.config.steps - trainer.step_count
                if remaining <= 0:
                    phase, message = "done", f"done: {trainer.step_count:,} steps"
                    break
                if run.stop.is_set():
                    raise _Halted()
                t0 = time.perf_counter()
                n0 = trainer.step_count
                ev = trainer.run(min(chunk, remaining), callbacks=[lambda e: self._on_event(run, e)],
                                 stop=run.stop)
                took = time.perf_counter() - t0
                done = trainer.step_count - n0
                if done > 0 and took > 0:          # next chunk: about CHUNK_SECONDS
                    chunk = int(min(max(1, done * CHUNK_SECONDS / took), 10_000))
                if ev.status == "diverged":
                    phase, message = "diverged", ev.message
                    self._frame(run, trainer)
                    break
                if ev.status == "stopped":
                    raise _Halted()
            if phase == "done":
                self._frame(run, trainer)
        except _Halted:
            reason = run.reason or "pause"
            if trainer is None:                        # halted while preparing: nothing to keep
                phase, message = "idle", "cancelled before the first step"
            else:
                phase = {"pause": "paused", "stop": "stopped"}.get(reason, "stopped")
                message = f"{'paused' if phase == 'paused' else 'stopped'} at step {trainer.step_count:,}"
                if reason in ("pause", "stop"):
                    self._frame(run, trainer)
        except ExplorerError as e:
            phase, message = "error", _one_line(e)
        except MemoryError:
            phase, message = "error", "out of memory: use a smaller model, batch or series"
        except Exception as e:  # a bug: log it, show one line
            phase = "error"
            message = f"internal error ({type(e).__name__}: {_one_line(e)}); details are in the server log"
            log.exception("training run failed")
        finally:
            self._serve_save(run, trainer)
            if trainer is not None:
                run.snapshot = trainer.snapshot()
                if run.reason not in ("reset", "close") and phase != "error" and trainer.step_count:
                    try:                                # judged on the final model (~0.1 s)
                        run.verdict = trainer.verdict()
                    except Exception as e:              # never lose the run's end over it
                        log.warning("verdict failed: %s", _one_line(e))
            with run.lock:
                run.end = (phase, message)
            if run.slot:
                run.slot = False
                _release_run()
            self._serve_save(run, trainer)
            if self.jobs.notify is not None:
                try:
                    self.jobs.notify()
                except Exception:
                    pass

    def _on_event(self, run: _Run, ev: TrainEvent) -> None:
        """Per-step callback (training thread): queue the numbers, keep the snapshot."""
        if ev.losses:
            run.records.append(StepRecord(
                ev.step, float(ev.losses["loss"]), float(ev.losses["grad_norm"]),
                float(ev.losses["alpha"]), float(ev.losses["lr"]), float(ev.seconds),
                None if ev.eta is None else float(ev.eta),
                None if ev.metrics is None else {k: float(v) for k, v in ev.metrics.items()}))
        if ev.snapshot is not None:
            run.snapshot = ev.snapshot
        if run.save_request is not None:
            self._serve_save(run, run.trainer)
        now = time.perf_counter()
        if ev.losses and run.trainer is not None and now >= run.frame_at:
            self._frame(run, run.trainer)              # between two steps: the model is idle
            took = time.perf_counter() - now           # frames take at most a quarter of the time
            run.frame_at = now + max(FRAME_SECONDS, 4 * took)

    def _frame(self, run: _Run, trainer: Trainer) -> None:
        try:
            f = model_frame(trainer)
        except ExplorerError:
            return
        with run.lock:
            run.frame = f

    def _serve_save(self, run: _Run, trainer: Trainer | None) -> None:
        """Write a requested checkpoint between two steps (training thread)."""
        req, run.save_request = run.save_request, None
        if req is None:
            return
        path, event, out = req
        try:
            if trainer is None:
                raise ExplorerError("nothing trained yet")
            trainer.save(path)
        except Exception as e:
            out.append(e)
        finally:
            event.set()

    # ---------------------------------------------------------------- UI thread
    def poll(self) -> Progress:
        """Collect the training thread's steps and frame and finished jobs; update the state
        (call from the UI thread)."""
        run = self._run
        records: list[StepRecord] = []
        frame, ended = None, False
        if run is not None:
            while True:
                try:
                    records.append(run.records.popleft())
                except IndexError:
                    break
            with run.lock:
                frame, run.frame = run.frame, None
                end = run.end
            if run.trainer is not None and self._trainer is not run.trainer:
                self._trainer = run.trainer
                if self.phase == "preparing":
                    self.phase = "running"
                    if run.data is not None and self.data is not run.data:
                        self._set_data(run.spec, run.data, data_frame(run.data))
            if run.snapshot is not None:
                self._snapshot = run.snapshot
            if end is not None and not run.alive:
                ended = True
                self._run = None
                self._finish(run, *end, records)
        if self._frame_pending is not None:
            frame, self._frame_pending = self._frame_pending, None
        if records:
            self._record(records)
        if frame is not None:
            self.last_frame = frame
        for d in self.jobs.poll():
            self._job_done(d)
        if records and not ended:
            self._show_progress()
        reset, self._reset_pending = self._reset_pending, False
        return Progress(records, frame, ended, reset)

    def _record(self, records: list[StepRecord]) -> None:
        h = self.history
        for r in records:
            h["step"].append(r.step)
            h["loss"].append(r.loss)
            h["grad_norm"].append(r.grad_norm)
            h["alpha"].append(r.alpha)
            h["lr"].append(r.lr)
            if r.metrics is not None:
                self.metric_history.append({"step": r.step, **r.metrics})
                self._last_metrics = r.metrics
                try:
                    self.verdict = metrics_verdict(r.metrics)
                except (KeyError, TypeError, ValueError):
                    pass
        last = records[-1]
        self._last_loss = last.loss
        if len(records) >= 2 and last.seconds > records[0].seconds:
            rate = (last.step - records[0].step) / (last.seconds - records[0].seconds)
            self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        total = self._trainer.config.steps if self._trainer is not None else self.steps
        self.param.update(step=last.step, progress=min(1.0, last.step / max(total, 1)),
                          eta=last.eta if last.eta is None or math.isfinite(last.eta) else None)

    def _show_progress(self) -> None:
        total = self._trainer.config.steps if self._trainer is not None else self.steps
        parts = [f"step {self.step:,} / {total:,}", f"loss {self._last_loss:.4g}"]
        if self.rate:
            parts.append(f"{self.rate:.0f} steps/s")
        if self.eta is not None:
            parts.append(f"{_duration(self.eta)} left")
        m = self._last_metrics
        if m:
            parts.append(f"D_stsp {m.get('d_stsp', math.nan):.3g}, D_H {m.get('d_h', math.nan):.3g}")
        self.status = "training: " + " · ".join(parts)

    def _finish(self, run: _Run, phase: str, message: str, records) -> None:
        if run.trainer is not None:
            self._trainer = run.trainer
        if run.snapshot is not None:
            self._snapshot = run.snapshot
        if run.reason in ("reset", "close"):
            return
        if run.verdict is not None:
            self.verdict = run.verdict
        if phase == "error":
            self.phase = "error" if self._trainer is None else "stopped"
            self._error("run", message)
            return
        self.phase = phase
        if phase == "idle":
            self.status = message
            return
        if phase == "diverged":
            self._error("run", message)
        else:
            self._clear_error("run")
            rate = f" ({self.rate:.0f} steps/s)" if self.rate else ""
            verdict = f" · {self.verdict.line()}" if self.verdict is not None else ""
            then = " · Start trains a new model" if phase == "stopped" else ""
            self._end_message = message + rate + verdict + then
            self.status = self._end_message
        if self._trainer is not None:
            self.param.update(step=self._trainer.step_count,
                              progress=min(1.0, self._trainer.step_count / max(self._trainer.config.steps, 1)),
                              eta=None)
            self.request_analysis()

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
            self._frame_pending = d.value

    def wait(self, timeout: float = 60.0) -> Progress:
        """Block until the run and every job have finished, then :meth:`poll` (tests,
        notebooks). Returns everything collected."""
        deadline = time.monotonic() + timeout
        records: list[StepRecord] = []
        frame, ended, reset = None, False, False
        while True:
            run = self._run
            if run is not None and run.thread is not None:
                run.thread.join(max(0.0, min(0.1, deadline - time.monotonic())))
            else:
                self.jobs.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            p = self.poll()
            records += p.records
            frame = p.frame or frame
            ended |= p.ended
            reset |= p.reset
            if (not self.running and self._run is None and not self.jobs.running()) \
                    or time.monotonic() >= deadline:
                return Progress(records, frame, ended, reset)

    # ================================================================ checkpoints
    def checkpoint_bytes(self) -> bytes:
        """The current training state as checkpoint bytes (``Trainer.save``); taken between
        two steps when a run is training.

        Raises:
            ExplorerError: nothing trained yet, or the save failed.
        """
        tr = self._trainer
        run = self._run
        if tr is None and run is not None:
            tr = run.trainer
        if tr is None:
            raise ExplorerError("nothing to download yet: start a training run first")
        with tempfile.TemporaryDirectory(prefix="explorer-ckpt-") as d:
            path = Path(d) / "model.pt"
            served = False
            if run is not None and run.alive:
                event, out = threading.Event(), []
                req = (path, event, out)
                run.save_request = req
                deadline = time.monotonic() + 30.0
                while not event.wait(0.05):
                    if not run.alive or time.monotonic() > deadline:
                        break
                if event.is_set():
                    served = True
                    if out:
                        raise ExplorerError(f"saving failed: {_one_line(out[0])}")
                elif run.save_request is req:            # the thread ended first: save here
                    run.save_request = None
                    if run.alive:
                        raise ExplorerError("the checkpoint could not be taken (the run is busy); try again")
                else:                                    # taken by the thread just now
                    event.wait(30.0)
                    served = event.is_set() and not out
                    if out:
                        raise ExplorerError(f"saving failed: {_one_line(out[0])}")
            if not served:
                (tr or run.trainer).save(path)
            return path.read_bytes()

    def checkpoint_filename(self) -> str:
        tr = self._trainer
        if tr is None:
            return "model.pt"
        return f"{tr.config.model}-{tr.data.source.split('.')[0] or 'data'}-step{tr.step_count}.pt"

    def load_checkpoint(self, content: bytes, filename: str = "checkpoint.pt") -> bool:
        """Restore a run from checkpoint bytes (read with ``weights_only=True``); it can then
        be resumed or analysed. A running run is stopped first. Returns success."""
        name = Path(str(filename or "checkpoint.pt")).name
        if not content:
            self._error("checkpoint", f"{name} is empty")
            return False
        if len(content) > MAX_UPLOAD_BYTES:
            self._error("checkpoint", f"{name} is over the upload limit of "
                                      f"{MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
            return False
        if self.running:
            run = self._run
            run.reason = "reset"
            run.stop.set()
            run.thread.join(10.0)
            self.poll()
        try:
            with tempfile.TemporaryDirectory(prefix="explorer-ckpt-") as d:
                path = Path(d) / "upload.pt"
                path.write_bytes(content)
                try:
                    tr = Trainer.load(path, device=str(self._device()))
                except ParameterError as e:
                    if "without its data" not in str(e) or self.data is None:
                        raise
                    tr = Trainer.load(path, data=self.data, device=str(self._device()))
        except ExplorerError as e:
            self._error("checkpoint", f"{name}: {_one_line(e)}")
            return False
        except Exception as e:
            self._error("checkpoint", f"{name} is not a readable checkpoint ({type(e).__name__})")
            return False
        self._run = None
        self._trainer = tr
        self._snapshot = tr.snapshot()
        cfg = tr.config
        self._suspend += 1
        try:
            self.param.update(
                model=cfg.model, latent=tr.model.latent_dim, hidden=cfg.hidden_dim,
                n_relu=cfg.n_relu, seq_len=cfg.seq_len, batch=cfg.batch_size, lr=cfg.lr,
                steps=max(cfg.steps, 1), seed=cfg.seed, metrics_every=cfg.metrics_every,
                lr_end=cfg.lr_end, metric_length=cfg.metric_length, metric_runs=cfg.metric_runs,
                alpha=cfg.alpha, sparse_tf=cfg.alpha_mode == "sparse", tau=cfg.tau,
                alpha_mode=cfg.alpha_mode if cfg.alpha_mode != "sparse" else self.alpha_mode)
        finally:
            self._suspend -= 1
        self._clear_history()
        self.history = {k: list(v) for k, v in tr.history.items()}
        self.metric_history = [dict(m) for m in tr.metric_history]
        self._last_loss = self.history["loss"][-1] if self.history["loss"] else math.nan
        self._last_metrics = self.metric_history[-1] if self.metric_history else None
        try:
            self.verdict = metrics_verdict(self._last_metrics) if self._last_metrics else None
        except (KeyError, TypeError, ValueError):
            self.verdict = None
        self.jobs.cancel("data")
        self._set_data(None, tr.data, data_frame(tr.data))
        self.param.update(step=tr.step_count, progress=min(1.0, tr.step_count / max(cfg.steps, 1)),
                          eta=None, rate=None, analysis=None, lyapunov=None, phase="paused",
                          run_version=self.run_version + 1)
        self._clear_error("checkpoint")
        self._clear_error("run")
        self.status = (f"loaded {name}: {tr.model.title} at step {tr.step_count:,} on "
                       f"{self.describe_data(tr.data)}; Resume continues training")
        model = self._model_copy()
        def frame(stop, progress):
            _worker_threads()
            return model_frame_of(model, tr.data, step=tr.step_count)

        self.jobs.submit("frame", frame, label="free run")
        self.request_analysis()
        return True

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
        self._clear_error("analysis")
        def work(stop, progress):
            _worker_threads()
            return analyse_model(model, data, step=step)

        self.jobs.submit("analysis", work, label="model analysis")

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
            _worker_threads()
            sys_ = model.as_system()
            res = lyapunov_spectrum(sys_, k=k, generator=torch.Generator().manual_seed(0),
                                    progress=progress, stop=stop)
            return ModelLyapunov(step, res, float(data.dt) if data is not None else 1.0,
                                 None if data is None else data.lyapunov)

        self._clear_error("lyapunov")
        self.jobs.submit("lyapunov", work, label="Lyapunov spectrum of the model")
        if not self.running:
            self.status = "Lyapunov spectrum of the model ..."

    # ================================================================ lifetime
    def close(self) -> None:
        """Stop the run and every job (the browser session closed)."""
        self._closed = True
        run = self._run
        if run is not None and run.alive:
            run.reason = "close"
            run.stop.set()
        self.jobs.close()

    def join(self, timeout: float = 10.0) -> bool:
        """Wait for the training thread to end (after :meth:`close`); False on timeout."""
        run = self._run
        if run is None or run.thread is None:
            return True
        run.thread.join(timeout)
        return not run.thread.is_alive()

    # ================================================================ plumbing
    def _error(self, key: str, message: str) -> None:
        self.errors = {**self.errors, key: message}
        self.status = f"⚠ {message}"

    def _clear_error(self, key: str) -> None:
        if key in self.errors:
            errors = dict(self.errors)
            errors.pop(key)
            self.errors = errors

    def _on_data_setting(self, *events) -> None:
        if self._suspend:
            return
        if any(e.name == "file_dt" for e in events) and self.source == "file" and self._file_series is not None:
            self._set_data(self.data_spec(), replace(self._file_series, dt=float(self.file_dt)),
                           data_frame(replace(self._file_series, dt=float(self.file_dt))))
            return
        if self.auto:
            self.request_data()

    def _on_model_kind(self, event) -> None:
        if self._suspend:
            return
        n = self.data.dim if self.data is not None else 1
        self.latent = max({"plrnn": 20, "shplrnn": 3, "alrnn": 20}[event.new], n)


class _Halted(Exception):
    """The stop event was set (pause, stop, reset or close)."""


# ============================================================================ compute
def _system_of(spec: DataSpec) -> DynamicalSystem:
    if spec.system == CUSTOM:
        params = parse_param_assignments(spec.custom_params)
        problems = validate_equations(spec.equations, params)
        if problems:
            raise problems[0]
        return parse_system(spec.equations, params, name=CUSTOM)
    return system_class(spec.system)()


def _duration(seconds: float) -> str:
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _empty_symbols() -> dict[str, Any]:
    return {"symbols": np.zeros(0, np.int64), "codes": (), "counts": np.zeros(0, np.int64),
            "graph": np.zeros((0, 0), np.int64)}


def _symbols(model: ReconstructionModel, z: torch.Tensor) -> dict[str, Any]:
    """Subregion sequence and transition counts of latent states ``z`` (T, M), cut at the
    first non-finite state."""
    ok = torch.isfinite(z).all(-1)
    n = int(ok.long().cumprod(0).sum())
    if n < 1:
        return _empty_symbols()
    if model.n_switches == 0:                       # a linear model: one region
        return {"symbols": np.zeros(n, np.int64), "codes": ("",), "counts": np.array([n]),
                "graph": np.array([[max(n - 1, 0)]])}
    seq = symbolic_sequence(model, z[:n])
    graph = transition_graph(seq.symbols, seq.n_regions)
    return {"symbols": seq.symbols.numpy(), "codes": seq.codes, "counts": seq.counts.numpy(),
            "graph": graph.numpy()}


def data_frame(ts: TimeSeries, length: int = FRAME_LENGTH) -> Frame:
    """A preview :class:`Frame` of the data alone (its first ``length`` samples)."""
    L = min(length, ts.length)
    x = ts.raw()[:L].to(torch.float32).numpy()                          # (L, N)
    return Frame(step=0, variables=tuple(ts.variables), t=(np.arange(L) * ts.dt).astype(np.float32),
                 x_true=x, x_gen=None, **_empty_symbols())


@torch.no_grad()
def model_frame_of(model: ReconstructionModel, ts: TimeSeries, *, step: int = 0,
                   length: int = FRAME_LENGTH) -> Frame:
    r"""A free run of ``model`` against the data ``ts``: the latent state is inferred from the
    data by full teacher forcing over the first samples (none when every unit is observed),
    then the model runs freely for ``length`` samples; its subregion sequence comes with it."""
    dev = next(model.parameters()).device
    x = ts.x.to(dev)                                                    # (T, N) standardised
    M, N = model.latent_dim, model.obs_dim
    w = min(25 if (model.B is not None or M > N) else 0, max(ts.length - 2, 0))
    L = max(2, min(length, ts.length - w))
    was_training = model.training
    model.eval()
    try:
        z = model.init_state(x[0])                                      # (M,)
        for s in range(1, w + 1):
            z = force(model, model.step(z), x[s], 1.0)
        zs = torch.cat([z.unsqueeze(0), model.forward(z, L - 1)])      # (L, M)
        x_gen = model.observe(zs)                                       # (L, N)
    finally:
        model.train(was_training)
    norm = ts.normalisation
    gen = norm.invert(x_gen.detach().to("cpu", torch.float64)).to(torch.float32).numpy()
    true = ts.raw()[w: w + L].to(torch.float32).numpy()
    sym = _symbols(model, zs.detach().cpu())
    diverged = not bool(np.isfinite(gen).all())
    return Frame(step=step, variables=tuple(ts.variables),
                 t=(np.arange(L) * ts.dt).astype(np.float32), x_true=true, x_gen=gen,
                 diverged=diverged, **sym)


def model_frame(trainer: Trainer, length: int = FRAME_LENGTH) -> Frame:
    """:func:`model_frame_of` for a trainer's current model (call from its thread)."""
    return model_frame_of(trainer.model, trainer.data, step=trainer.step_count, length=length)


def analyse_model(model: ReconstructionModel, data: TimeSeries | None, *, step: int = 0,
                  steps: int = 5000) -> ModelAnalysis:
    """Fixed points (Newton, as on the Attractors page, and exact per visited subregion),
    subregion sequence and transition graph of ``model.as_system()``."""
    t0 = time.perf_counter()
    sys_ = model.as_system()
    tr = simulate(sys_, steps=steps, transient=500, dtype=torch.float64, device="cpu")
    z = tr.x[:, 0]                                                      # (T, M)
    sym = _symbols(model, z)
    bounded = bool(torch.isfinite(z).all())
    try:
        fixed = fixed_points(sys_, n_starts=256, generator=torch.Generator().manual_seed(0))
    except (ExplorerError, RuntimeError):             # e.g. a snapshot that diverges at once
        fixed = []
    pwl: list[PWLFixedPoint] = []
    if model.n_switches and sym["codes"]:
        patterns = torch.tensor([[c == "1" for c in code] for code in sym["codes"]], dtype=torch.bool)
        pwl = pwl_fixed_points(model, patterns)
    n_ok = int(torch.isfinite(z).all(-1).long().cumprod(0).sum())
    with torch.no_grad():
        obs = model.observe(z[:n_ok].to(torch.float32))
        fixed_obs = (model.observe(torch.stack([f.x for f in fixed]).to(torch.float32))
                     if fixed else torch.zeros(0, model.obs_dim))
    if data is not None:
        obs = data.normalisation.invert(obs.to(torch.float64))
        fixed_obs = data.normalisation.invert(fixed_obs.to(torch.float64))
    return ModelAnalysis(
        step=step, title=sys_.title, latex=model.latex(), latent_dim=model.latent_dim,
        obs_dim=model.obs_dim, n_switches=model.n_switches,
        variables=tuple(data.variables) if data is not None else tuple(f"x{i + 1}" for i in range(model.obs_dim)),
        fixed=fixed, pwl_fixed=pwl, steps=steps, bounded=bounded,
        observed=obs.to(torch.float32).numpy(),
        fixed_observed=fixed_obs.to(torch.float32).numpy(), seconds=time.perf_counter() - t0, **sym)


__all__ = ["ReconstructionController", "RUN_PRESETS", "RunPreset", "D_STSP_GOOD", "D_H_GOOD", "Frame", "Progress", "StepRecord", "ModelAnalysis",
           "ModelLyapunov", "DataSpec", "max_runs", "active_runs", "busy_message",
           "data_frame", "model_frame", "model_frame_of", "analyse_model", "MAX_RUNS_ENV"]
