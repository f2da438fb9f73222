"""State and actions of the Stochastic page (param only: no Panel, no HoloViews, no Bokeh).

The page simulates an ensemble of a stochastic differential equation (a built-in SDE or typed
drift and diffusion), measures its irreversibility from the trajectories and trains an
I-OnsagerNet on them live. Its science on the shared platform:

* the system picker, typed drift and diffusion: :class:`~.base.SystemSource` with
  ``custom_kind = "sde"``;
* **sample** (a job): one seeded batched simulation; from it the model-free estimates of
  :mod:`explorer.core.analysis.entropy`: stationary density on a grid, effective potential
  ``-T log p``, the mean local velocity ``v = J / p`` (the irreversible drift), the local
  entropy-production density and the total rate with its error bar from independent batches,
  and for a linear SDE the exact rate (Lyapunov equation);
* **training** (the run, :class:`~.run.RunController`): an I-OnsagerNet
  (:mod:`explorer.models.onsager`) learns the potential, the reversible and the irreversible
  drift from the sampled transitions (:mod:`explorer.training.onsager`); a live frame is the
  model's fields on the grid and its entropy-production rate;
* **sweep** (a job): the entropy-production rate against one parameter in one batched
  simulation (:func:`explorer.core.analysis.entropy.entropy_sweep`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import param
import torch

from ..core.analysis import entropy as ent
from ..core.errors import ExplorerError, ParameterError, SizeLimitError
from ..core.geometry import vector_geometry
from ..core.registry import system_class
from ..core.simulate import simulate
from ..core.system import DynamicalSystem, check_param_value
from .base import CUSTOM, PresetLinks, SystemSource, one_line
from .jobs import Done
from .run import RunController

#: states one ensemble may record (batch x recorded steps)
MAX_SAMPLE_STATES = 4_000_000
#: grid cells per axis of the maps
GRID_DEFAULT = 40
#: stationary samples the live frame's entropy-production estimate averages over
FRAME_SAMPLES = 1000

SDE_EQUATIONS = "x' = -x + a*y\ny' = -a*x - y"
SDE_PARAMS = "a = 1"
SDE_DIFFUSION = "1, 1"


# ============================================================================ presets
@dataclass(frozen=True)
class Preset:
    """A teaching preset: settings (controller parameter values, ``values`` the system's
    parameters) and a few sentences. ``?page=stochastic&preset=KEY`` opens it."""

    key: str
    title: str
    text: str
    system: str
    values: dict
    settings: dict


PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset("equilibrium", "Equilibrium: no rotation, no entropy production",
           "A 2D Ornstein–Uhlenbeck process whose drift is the gradient of a quadratic "
           "potential: detailed balance holds, the probability current vanishes and the "
           "entropy-production rate is zero (the estimate is zero within its error bar, the "
           "exact value is 0). Train the I-OnsagerNet: its irreversible drift stays near zero.",
           "linear_ou", {"rotation": 0.0}, dict(sweep_param="rotation", sweep_low=0.0, sweep_high=2.0)),
    Preset("rotating-ou", "Rotating OU: entropy production grows with the rotation squared",
           "The drift −(I − γJ)x adds a rotation γ to the relaxation. The stationary density is "
           "still the standard normal, but probability circulates: the entropy-production rate "
           "is exactly 2γ². Sweep γ to see the parabola; train the model to split the drift "
           "into its reversible (radial) and irreversible (circular) parts.",
           "linear_ou", {"rotation": 1.0}, dict(sweep_param="rotation", sweep_low=0.0, sweep_high=2.0)),
    Preset("double-well", "Double well with circulation",
           "Noise carries the particle over the barrier between two wells, while a rotational "
           "drift along the level lines of the potential makes it circulate around each well. "
           "The stationary density is exp(−U/T) whatever the rotation: the model learns U from "
           "the density and the circulation as the irreversible drift.",
           "rotating_double_well", {"omega": 1.0}, dict(sweep_param="omega", sweep_low=0.0, sweep_high=2.0)),
    Preset("polymer", "Polymer: barrier height and entropy production against strain rate",
           "A FENE dumbbell stretched by planar elongational flow, with a drag that grows with "
           "the extension. Near the coil–stretch transition the extension has two states "
           "separated by a barrier; the conformation-dependent drag makes the dynamics "
           "irreversible. Sweep the strain rate to see the entropy production rise.",
           "fene_dumbbell", {"drag_ratio": 5.0, "b": 200.0, "strain_rate": 0.25},
           dict(sweep_param="strain_rate", sweep_low=0.0, sweep_high=0.6, dt=1e-3, duration=40.0,
                transient=5.0, save_every=10)),
    Preset("sgld", "SGLD: irreversibility against batch size",
           "Stochastic gradient descent on a small model is a diffusion whose noise comes from "
           "the minibatch: anisotropic and state-dependent, not aligned with the loss "
           "landscape, so the dynamics break detailed balance. Sweep the batch size to see how "
           "the entropy production changes as the gradient noise shrinks.",
           "sgld", {}, dict(sweep_param="batch_size", sweep_low=1.0, sweep_high=16.0)),
)}

#: URL query keys of the page (besides ``page`` and ``preset``) and the settings they hold
QUERY_KEYS = {"sys": "system", "batch": "batch", "T": "duration", "seed": "seed",
              "hidden": "hidden", "steps": "steps"}


# ============================================================================ results
@dataclass
class Sample:
    """One simulated ensemble and its model-free estimates (float64 numbers; the grids are
    numpy arrays for the plots).

    Attributes:
        x: recorded states after the transient, (T, B, D) float32 (the training data).
        dt: the step between recorded states; ``dims``: the two variables the maps show.
        bounds: ``(x_lo, x_hi, y_lo, y_hi)`` of the grid; ``xs``, ``ys``: cell centres.
        density: stationary density on the grid (ny, nx), normalised; ``potential``:
            ``-T log p`` (NaN where no sample fell), T the temperature (1 if not isotropic).
        velocity: the mean local velocity ``v = J/p`` (2, ny, nx) (the irreversible drift);
            ``sigma``: the local entropy-production density on the grid.
        rate, stderr: the entropy-production rate and its error bar; ``exact``: the exact
            rate for a linear SDE (else None); ``method``: how the rate was estimated.
        true_potential: ``U/T`` of a built-in system that declares its potential (or None).
    """

    system: DynamicalSystem
    x: torch.Tensor
    dt: float
    dims: tuple[int, int]
    variables: tuple[str, str]
    bounds: tuple[float, float, float, float]
    xs: np.ndarray
    ys: np.ndarray
    density: np.ndarray
    potential: np.ndarray
    velocity: np.ndarray
    sigma: np.ndarray
    rate: float
    stderr: float
    exact: float | None
    method: str
    temperature: float
    seconds: float
    backend: str


@dataclass
class FieldFrame:
    """A live picture of the model: its fields on the sample's grid (numpy) and its rate."""

    step: int
    potential: np.ndarray          # V/eps * T (min 0), comparable with the sample's -T log p
    density: np.ndarray            # exp(-V/eps) normalised on the grid
    b_rev: np.ndarray              # (2, ny, nx)
    b_irr: np.ndarray              # (2, ny, nx)
    sigma: np.ndarray              # local entropy-production density
    rate: float                    # entropy-production rate over stationary samples
    #: arrows and streamlines of b_rev and b_irr (explorer.core.geometry.vector_geometry),
    #: computed with the frame, off the UI thread
    rev_geometry: dict | None = None
    irr_geometry: dict | None = None


@dataclass
class Sweep:
    """Entropy-production rate against one parameter (one batched simulation)."""

    name: str
    values: np.ndarray
    rates: np.ndarray
    stderrs: np.ndarray
    exact: np.ndarray | None
    seconds: float


class StochasticController(PresetLinks, SystemSource, RunController):
    """Everything the Stochastic page shows, and the actions that simulate, train and sweep."""
    query_keys = QUERY_KEYS
    query_skip = ("sys",)        # _query_extras selects the system (its values reset)

    custom_kind = "sde"
    run_name = "onsager"
    #: a frame of the learned fields costs 6-15 ms (40 x 40 grid, 1,000 samples): 7 a second
    frame_seconds = 0.14

    values = param.Dict(default={}, doc="Parameter values of the system (each within its bounds).")
    # ---- ensemble
    batch = param.Integer(default=256, bounds=(8, 100_000), doc="Trajectories in the ensemble.")
    duration = param.Number(default=50.0, bounds=(0.1, 1e6),
                            doc="Recorded time per trajectory (after the transient), in time units.")
    transient = param.Number(default=10.0, bounds=(0.0, 1e6),
                             doc="Time simulated and discarded first (the ensemble relaxes to stationarity).")
    dt = param.Number(default=0.01, bounds=(1e-6, 10.0), inclusive_bounds=(False, True),
                      doc="Euler–Maruyama step (time units).")
    save_every = param.Integer(default=1, bounds=(1, 1000), doc="Record every k-th step.")
    seed = param.Integer(default=0, bounds=(0, 2**31 - 1), doc="Seed of the noise (same seed: same ensemble).")
    bins = param.Integer(default=GRID_DEFAULT, bounds=(8, 200), doc="Grid cells per axis of the maps.")
    x_var = param.String(default="", doc="Variable on the maps' horizontal axis.")
    y_var = param.String(default="", doc="Variable on the maps' vertical axis.")
    # ---- model
    hidden = param.Integer(default=16, bounds=(4, 512), doc="Width of the potential, mobility and rotation MLPs.")
    layers = param.Integer(default=2, bounds=(1, 6), doc="Hidden layers of each MLP.")
    lr = param.Number(default=1e-2, bounds=(1e-6, 1.0), doc="Learning rate (Adam).")
    train_batch = param.Integer(default=8192, bounds=(16, 1_000_000), doc="Transitions per optimisation step.")
    # ---- sweep
    sweep_param = param.String(default="", doc="Parameter swept for the entropy-production curve.")
    sweep_low = param.Number(default=0.0, doc="First value of the sweep.")
    sweep_high = param.Number(default=2.0, doc="Last value of the sweep.")
    sweep_n = param.Integer(default=9, bounds=(2, 64), doc="Values in the sweep.")
    sweep_batch = param.Integer(default=64, bounds=(4, 10_000), doc="Trajectories per swept value.")
    # ---- results
    preset = param.String(default="", doc="The teaching preset last applied ('' for none).")
    sample = param.Parameter(default=None, doc="The last simulated ensemble (Sample).")
    sweep = param.Parameter(default=None, doc="The last sweep (Sweep).")
    frame = param.Parameter(default=None, doc="The model's latest fields (FieldFrame).")

    def __init__(self, *, dysts: bool = False, **params):
        params.setdefault("system", "rotating_double_well")
        params.setdefault("equations", SDE_EQUATIONS)
        params.setdefault("custom_params", SDE_PARAMS)
        params.setdefault("diffusion", SDE_DIFFUSION)
        params.setdefault("steps", 600)
        super().__init__(dysts=False, kinds=("sde",), **params)
        # the page's maps need two variables: one-dimensional SDEs stay in the CLI/notebooks
        self.param.system.objects = [n for n in self.param.system.objects
                                     if n == CUSTOM or len(system_class(n).variables) >= 2]
        self._select(self.system)
        self.param.watch(self._on_settings, ["system", "equations", "custom_params", "diffusion",
                                             "values", "batch", "duration", "transient", "dt",
                                             "save_every", "seed", "bins", "x_var", "y_var"])

    # ================================================================ system
    def current_system(self) -> DynamicalSystem:
        """The SDE at the current parameter values (validated)."""
        return self.system_of(self.system, **self.values)

    def _select(self, name: str) -> None:
        """Switch to ``name`` with that system's defaults."""
        if name not in self.param.system.objects:
            system_class(name)                       # UnknownSystemError with a hint
            raise ParameterError(f"{name!r} is not offered on this page (it needs two or more variables)")
        with self.suspended():
            self.system = name
            sys_ = self.system_of(name)
            self.values = {} if name == CUSTOM else dict(sys_.params)
            for setting in ("duration", "transient", "save_every", "batch"):
                setattr(self, setting, self.param[setting].default)   # a preset's stay with it
            self.dt = float(sys_.default_dt)
            var = sys_.variables
            self.x_var, self.y_var = var[0], var[1]
            specs = [p for p in type(sys_).parameters if p.name != "sigma"] if name != CUSTOM else []
            if specs:
                self.sweep_param = specs[0].name
                d = float(sys_.params[specs[0].name])
                self.sweep_low = float(specs[0].low) if specs[0].low >= 0 else d - 1.0
                self.sweep_high = float(min(specs[0].high, max(2 * abs(d), d + 1.0)))
            else:
                self.sweep_param = ""
            for key in ("sample", "sweep"):
                self.jobs.cancel(key)
            self.param.update(sample=None, sweep=None, frame=None, errors={})

    def select_system(self, name: str) -> None:
        if self.running:
            raise ExplorerError("a run is training: stop it before changing the system")
        self.preset = ""
        self._select(name)
        if self.auto:
            self.request_sample()

    def set_value(self, name: str, value: float) -> None:
        """Set one parameter of the system; :class:`ParameterError` if out of bounds."""
        if self.system == CUSTOM:
            raise ParameterError("a custom system's parameters are set in its parameter field")
        cls = system_class(self.system)
        spec = cls.param_spec(name)
        v = check_param_value(spec, value, cls.title or cls.name)
        self.values = {**self.values, name: int(v) if spec.integer else float(v)}

    def param_specs(self) -> list:
        return [] if self.system == CUSTOM else list(system_class(self.system).parameters)

    def variables(self) -> tuple[str, ...]:
        try:
            return tuple(self.current_system().variables)
        except ExplorerError:
            return ()

    def apply_preset(self, key: str) -> None:
        p = PRESETS.get(key)
        if p is None:
            raise ParameterError(f"unknown preset {key!r}; presets: {', '.join(PRESETS)}")
        if self.running:
            raise ExplorerError("a run is training: stop it before loading a preset")
        with self.suspended():
            self._select(p.system)
            self.values = {**self.values, **p.values}
            self.param.update(**p.settings)
            self.preset = key
        self.status = f"preset: {p.title}"
        if self.auto:
            self.request_sample()

    def _on_settings(self, *events) -> None:
        if self._suspend or self._closed:
            return
        names = {e.name for e in events}
        if self.running and names - {"x_var", "y_var", "bins"}:
            self.stop()                      # the model keeps what it learned (Resume is off)
            self.status = "training stopped: the ensemble changed (Start trains on the new one)"
        if "system" in names:
            self.preset = ""
            try:
                self._select(self.system)
            except ExplorerError as e:
                self._error("sample", one_line(e))
                return
        if self.auto:
            self.request_sample()

    # ================================================================ sample (model-free)
    def _checked(self) -> tuple[DynamicalSystem, int, int, tuple[int, int]]:
        sys_ = self.current_system()
        if not sys_.stochastic:
            raise ParameterError(f"{self.system_title()} is not a stochastic system")
        if sys_.dim < 2:
            raise ParameterError("the maps need a system with two or more variables")
        var = tuple(sys_.variables)
        xv = self.x_var if self.x_var in var else var[0]
        yv = self.y_var if self.y_var in var and self.y_var != xv else next(v for v in var if v != xv)
        steps = int(round(self.duration / self.dt))
        transient = int(round(self.transient / self.dt))
        if steps < 10:
            raise ParameterError(f"duration {self.duration:g} is under 10 steps of dt = {self.dt:g}")
        states = self.batch * (steps // self.save_every + 1)
        if states > MAX_SAMPLE_STATES:
            raise SizeLimitError(f"{self.batch:,} trajectories × {steps // self.save_every + 1:,} "
                                 f"recorded steps = {states:,} states, over the limit of "
                                 f"{MAX_SAMPLE_STATES:,}: fewer trajectories, a shorter duration "
                                 "or a larger 'record every'")
        return sys_, steps, transient, (var.index(xv), var.index(yv))

    def request_sample(self) -> None:
        """Simulate the ensemble and estimate density, current and entropy production (job)."""
        if self._closed:
            return
        try:
            sys_, steps, transient, dims = self._checked()
        except (ExplorerError, ValueError) as e:
            self._error("sample", one_line(e))
            return
        args = dict(steps=steps, transient=transient, dt=float(self.dt), batch=int(self.batch),
                    seed=int(self.seed), every=int(self.save_every), dims=dims, bins=int(self.bins),
                    device=self._device())
        self._submit("sample", lambda stop, progress: compute_sample(sys_, stop=stop, progress=progress, **args),
                     f"simulating {self.batch:,} trajectories of {self.system_title()}")

    def request_sweep(self) -> None:
        """Entropy production against :attr:`sweep_param` in one batched simulation (job)."""
        try:
            sys_, steps, transient, _dims = self._checked()
            name = self.sweep_param
            names = [p.name for p in type(sys_).parameters]
            if name not in names:
                raise ParameterError(f"choose a parameter to sweep ({', '.join(names) or 'none'})")
            spec = type(sys_).param_spec(name)
            values = np.linspace(self.sweep_low, self.sweep_high, self.sweep_n)
            if spec.integer:
                values = np.unique(np.round(values)).astype(float)
            for v in (values[0], values[-1]):
                check_param_value(spec, float(v), self.system_title())
            n = self.sweep_batch * len(values) * (steps // self.save_every + 1)
            if n > MAX_SAMPLE_STATES * 4:
                raise SizeLimitError(f"the sweep would record {n:,} states (limit "
                                     f"{MAX_SAMPLE_STATES * 4:,}): fewer values or trajectories, "
                                     "or a shorter duration")
        except (ExplorerError, ValueError) as e:
            self._error("sweep", one_line(e))
            return
        args = dict(steps=steps, dt=float(self.dt), batch_per_value=int(self.sweep_batch),
                    seed=int(self.seed), transient=transient)

        def work(stop, progress):
            t0 = time.perf_counter()
            out = ent.entropy_sweep(sys_, name, values, **args)
            ex = np.asarray(out.exacts, float)
            return Sweep(name, np.asarray(out.values, float), np.asarray(out.rates, float),
                         np.asarray(out.stderrs, float), None if np.isnan(ex).all() else ex,
                         time.perf_counter() - t0)

        self._submit("sweep", work, f"sweeping {name} over {len(values)} values")

    def _job_done(self, d: Done) -> None:
        if d.error is not None:
            self._error(d.key, d.error)
            return
        if d.key == "sample":
            s: Sample = d.value
            self.sample = s
            exact = f" (exact {s.exact:.4g})" if s.exact is not None else ""
            self.status = (f"{s.x.shape[1]:,} trajectories × {s.x.shape[0]:,} samples in "
                           f"{s.seconds:.1f} s on {s.backend}: entropy production "
                           f"{s.rate:.4g} ± {s.stderr:.2g}{exact}")
            return
        if d.key == "sweep":
            self.sweep = d.value
            self.status = f"sweep of {d.value.name}: {len(d.value.values)} values in {d.value.seconds:.1f} s"
            return
        super()._job_done(d)

    # ================================================================ training (run hooks)
    def new_run(self):
        s = self.sample
        if s is None:
            raise ExplorerError("simulate the ensemble first (it is the training data)")
        if self.sample_stale():
            raise ExplorerError("the settings changed since the last simulation: wait for the "
                                "new ensemble (or press Simulate again), then Start")
        from ..training.onsager import make_onsager_run
        cfg = dict(hidden=int(self.hidden), layers=int(self.layers), lr=float(self.lr),
                   minibatch=int(self.train_batch), planned_steps=int(self.steps),
                   seed=int(self.seed), eps=s.temperature, stationary_fraction=1.0)
        return lambda run: make_onsager_run(s.system, data=s.x, dt=s.dt, **cfg)

    def sample_stale(self) -> bool:
        """A newer ensemble is being simulated (the shown one no longer matches the settings)."""
        return self.jobs.is_running("sample")

    def frame_of(self, trainer, last: bool = False) -> FieldFrame | None:
        s = self.sample
        if s is None:
            return None
        return field_frame(_shown_model(trainer), s, trainer.step_count)

    def on_frame(self, frame) -> None:
        self.frame = frame

    def progress_extra(self) -> list[str]:
        f = self.frame
        return [f"model e_p {f.rate:.3g}"] if f is not None and math.isfinite(f.rate) else []

    def final_text(self) -> str:
        f, s = self.frame, self.sample
        if f is None or s is None:
            return ""
        ref = s.exact if s.exact is not None else s.rate
        return f"model entropy production {f.rate:.4g} (data {ref:.4g})"

    def load_trainer(self, path: Path):
        from ..training.onsager import load_onsager_run
        s = self.sample
        return load_onsager_run(path, data=s.x if s is not None else None)

    def on_loaded(self, trainer, name: str) -> None:
        if self.sample is not None:
            try:
                self.frame = field_frame(_shown_model(trainer), self.sample, trainer.step_count)
            except (ExplorerError, RuntimeError, ValueError) as e:
                self._error("checkpoint", f"the model does not fit this ensemble: {one_line(e)}")

    # ================================================================ URL
    def to_query(self) -> dict[str, str]:
        q = super().to_query()
        if not self.preset:
            for k, v in self.values.items():
                q[f"p.{k}"] = f"{v:g}" if isinstance(v, float) else str(v)
        return q

    def _query_extras(self, q) -> list[str]:
        """The system (``sys``: its values reset) and its parameter values (``p.NAME``)."""
        problems: list[str] = []
        if "sys" in q and q["sys"] != self.system:
            try:
                self._select(q["sys"])
            except ExplorerError as e:
                problems.append(one_line(e))
        for k, v in q.items():
            if k.startswith("p."):
                try:
                    self.set_value(k[2:], float(v))
                except (ExplorerError, ValueError) as e:
                    problems.append(f"{k}={v!r}: {one_line(e)}")
        return problems


# ============================================================================ compute (workers)
def compute_sample(sys_: DynamicalSystem, *, steps: int, transient: int, dt: float, batch: int,
                   seed: int, every: int, dims: tuple[int, int], bins: int, device=None,
                   stop=None, progress=None) -> Sample:
    """Simulate and estimate (worker thread); float64 simulation and estimates, float32
    training data."""
    t0 = time.perf_counter()
    traj = simulate(sys_, steps=steps, transient=transient, dt=dt, batch=batch, seed=seed,
                    save_every=every, spread=0.5, device=device, stop=stop,
                    progress=(lambda f: progress(0.8 * f)) if progress else None)
    x = traj.x.to("cpu", torch.float64)
    ok = torch.isfinite(x).all(dim=0).all(dim=-1)
    if not bool(ok.any()):
        raise ExplorerError("every trajectory diverged: lower the step dt or check the drift")
    x = x[:, ok]
    step = dt * every
    from ..training.onsager import default_eps
    T = default_eps(sys_)
    xy = x[..., list(dims)].reshape(-1, 2)
    xy = xy[:: max(1, xy.shape[0] // 400_000)]
    lo, hi = torch.quantile(xy, 0.002, dim=0), torch.quantile(xy, 0.998, dim=0)
    pad = 0.08 * (hi - lo).clamp_min(1e-6)
    lo, hi = lo - pad, hi + pad
    bounds = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
    drift, diff_fn, _div = ent.system_functions(sys_)
    sig = ent.entropy_density_map(x, step, diffusion=diff_fn, dims=dims, bins=bins, bounds=bounds)
    dens = ent.Density(centres=sig.centres, p=sig.p, bounds=sig.bounds, counts=sig.counts,
                       n_samples=int(np.nansum(sig.counts)), dims=tuple(dims), method="hist")
    pot = ent.effective_potential(dens, temperature=T)
    est = ent.entropy_production(x, step, drift=drift, diffusion=diff_fn)
    exact = ent.exact_entropy_production(sys_)
    if progress:
        progress(1.0)
    xs, ys = sig.centres
    v = np.moveaxis(np.asarray(sig.v), -1, 0)                     # (2, ny, nx)
    return Sample(system=sys_, x=x.to(torch.float32), dt=step, dims=tuple(dims),
                  variables=(sys_.variables[dims[0]], sys_.variables[dims[1]]),
                  bounds=(bounds[0][0], bounds[0][1], bounds[1][0], bounds[1][1]),
                  xs=np.asarray(xs), ys=np.asarray(ys), density=np.asarray(sig.p),
                  potential=np.asarray(pot), velocity=v, sigma=np.asarray(sig.sigma),
                  rate=float(est.rate), stderr=float(est.stderr), exact=exact,
                  method=est.method.replace("_", " "), temperature=T,
                  seconds=time.perf_counter() - t0, backend=traj.backend)


def _shown_model(trainer):
    """The model the page shows: the task's weight average when it keeps one (what its
    evaluations measure), else the trained weights."""
    task = trainer.task
    return task.trained_model() if hasattr(task, "trained_model") else task.model


def field_frame(model, s: Sample, step: int) -> FieldFrame:
    """The model's fields on the sample's grid (a slice through the ensemble's mean state when
    the system has more than two variables) and its entropy-production rate over the last
    recorded states (worker thread, between two steps: the model is at rest and evaluated in
    its own float32 without a copy; the arrays handed to the plots are float64)."""
    m = model                       # at rest between two steps: no copy; its own float32
    dtype = next(m.parameters()).dtype
    i, j = s.dims
    X, Y = np.meshgrid(s.xs, s.ys)                                  # (ny, nx)
    base = s.x.reshape(-1, s.x.shape[-1]).to(dtype).mean(0)
    pts = base.repeat(X.size, 1)
    pts[:, i] = torch.from_numpy(X.ravel()).to(dtype)
    pts[:, j] = torch.from_numpy(Y.ravel()).to(dtype)
    with torch.no_grad():
        f = m.fields(pts)
        local = m.entropy_density(pts)
    shape = X.shape
    phi = (f.phi - f.phi.min()).reshape(shape)
    cell = float((s.xs[1] - s.xs[0]) * (s.ys[1] - s.ys[0]))
    w = torch.exp(-phi)
    rho = w / (w.sum() * cell)
    b_rev = f.b_rev[:, [i, j]].T.reshape(2, *shape)
    b_irr = f.b_irr[:, [i, j]].T.reshape(2, *shape)
    x = s.x[-max(1, FRAME_SAMPLES // s.x.shape[1] + 1):].reshape(-1, s.x.shape[-1])[:FRAME_SAMPLES]
    rate = float(m.entropy_production(x.to(dtype)))
    f64 = lambda t: t.to(torch.float64).numpy()                     # noqa: E731
    b_rev, b_irr = f64(b_rev), f64(b_irr)
    return FieldFrame(step=step, potential=f64(phi * m.eps), density=f64(rho),
                      b_rev=b_rev, b_irr=b_irr,
                      sigma=f64(local.reshape(shape) * rho), rate=rate,
                      rev_geometry=vector_geometry(s.xs, s.ys, *b_rev),
                      irr_geometry=vector_geometry(s.xs, s.ys, *b_irr))


__all__ = ["FieldFrame", "PRESETS", "Preset", "Sample", "StochasticController", "Sweep",
           "compute_sample", "field_frame"]
