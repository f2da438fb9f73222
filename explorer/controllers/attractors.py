"""State and actions of the Attractors page (param only: no Panel, no HoloViews).

The controller holds what the user chose (system, parameter values, initial condition,
solver, view settings), validates every change, turns it into compute requests run off the
UI thread by a :class:`~explorer.controllers.jobs.JobRunner`, and publishes finished results
as parameters (``attractor``, ``lyapunov``, ``orbit``, ``section``, ``fixed``) that the
views watch. The same object drives the served page, the notebook and the tests.

Page state round-trips through the URL query (:meth:`to_query` / :meth:`apply_query`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import param
import torch

from ..core.analysis.fixed_points import fixed_points
from ..core.analysis.local import local_expansion, speed
from ..core.analysis.lyapunov import lyapunov_spectrum
from ..core.analysis.sections import orbit_diagram, poincare_section
from ..core.custom import parse_param_assignments, parse_system, validate_equations
from ..core.device import available_devices, default_device, describe_device, parse_device
from ..core.errors import ExplorerError, ParameterError, SizeLimitError
from ..core.registry import system_class, system_names
from ..core.simulate import Trajectory, prepare_initial_states, simulate
from ..core.system import DynamicalSystem, check_param_value
from .jobs import Done, JobRunner
from .presets import PRESETS

CUSTOM = "custom"
DEFAULT_EQUATIONS = "dx/dt = sigma*(y - x)\ndy/dt = x*(rho - z) - y\ndz/dt = x*y - beta*z"
DEFAULT_CUSTOM_PARAMS = "sigma = 10, rho = 28, beta = 2.6667"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


#: recorded points shown at most (n_traj x samples); longer runs record every k-th step
MAX_DISPLAY_POINTS = int(_env_float("EXPLORER_APP_MAX_POINTS", 2_000_000))
#: trajectory-steps one page request may take (refused beyond, with this limit in the message)
MAX_APP_WORK = _env_float("EXPLORER_APP_MAX_WORK", 2e9)
#: number of trajectories the page allows
MAX_TRAJECTORIES = 100_000
#: torch threads of the simulation jobs: the process default, read at import (a new thread
#: starts with the count another thread set last, so every job sets its own)
SIMULATION_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class AttractorData:
    """A computed attractor, ready to draw (float32: rendering precision).

    ``x`` is (T, B, D) with NaN after divergence; ``color`` is (T, B) or None.
    """

    system: str
    title: str
    kind: str
    variables: tuple[str, ...]
    t: np.ndarray
    x: np.ndarray
    color: np.ndarray | None
    color_by: str
    message: str
    diverged: bool
    seconds: float
    device: str
    trajectory: Trajectory | None = field(default=None, repr=False)

    @property
    def n_points(self) -> int:
        return int(self.x.shape[0] * self.x.shape[1])


def _fmt(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 else repr(float(v))


class AttractorController(param.Parameterized):
    """Everything the Attractors page shows, and the requests that compute it."""

    # ---- what is simulated
    system = param.Selector(default="lorenz63", objects=["lorenz63"],
                            doc="The dynamical system: built-in, dysts (when installed) or custom.")
    values = param.Dict(default={}, doc="Parameter values of the system (each within its bounds).")
    x0 = param.List(default=[], item_type=float, doc="Initial condition, one value per variable.")
    solver = param.Selector(default="rk4", objects=["rk4", "dopri5", "euler", "map"],
                            doc="Integrator: fixed-step RK4, adaptive Dormand-Prince 5(4), "
                                "Euler; maps are iterated.")
    dt = param.Number(default=0.01, bounds=(1e-5, 10.0), inclusive_bounds=(False, True),
                      doc="Time step (flows); the output spacing for Dormand-Prince.")
    n_traj = param.Integer(default=1, bounds=(1, MAX_TRAJECTORIES),
                           doc="Number of trajectories, started around the initial condition.")
    duration = param.Number(default=100.0, bounds=(1e-3, 1e7),
                            doc="Recorded duration: time units for flows, iterations for maps.")
    transient = param.Number(default=10.0, bounds=(0.0, 1e6),
                             doc="Discarded before recording: time units (flows) or iterations (maps).")
    spread = param.Number(default=0.5, bounds=(0.0, 100.0),
                          doc="Spread of the ensemble around the initial condition (relative).")
    device = param.String(default="", doc="Compute device (cpu, cuda, cuda:1, ...).")
    # ---- how it is shown
    x_var = param.String(default="x", doc="Horizontal variable of the projection.")
    y_var = param.String(default="z", doc="Vertical variable of the projection.")
    view = param.Selector(default="2D", objects=["2D", "3D"],
                          doc="2D: two variables; 3D: rotatable projection of three.")
    z_var = param.String(default="", doc="Third variable of the 3D view.")
    azimuth = param.Number(default=30.0, bounds=(-180.0, 180.0), doc="3D view: rotation about the vertical axis (degrees).")
    elevation = param.Number(default=20.0, bounds=(-90.0, 90.0), doc="3D view: tilt (degrees).")
    color_by = param.Selector(default="time", objects=["time", "speed", "expansion"],
                              doc="Colour points by time, speed or local expansion rate.")
    # ---- orbit diagram, section
    orbit_param = param.String(default="", doc="Parameter swept by the orbit diagram.")
    orbit_low = param.Number(default=0.0, doc="Lower end of the orbit diagram's range.")
    orbit_high = param.Number(default=1.0, doc="Upper end of the orbit diagram's range.")
    orbit_var = param.String(default="", doc="Variable plotted by the orbit diagram.")
    section_var = param.String(default="", doc="Poincaré section: the plane is this variable = value.")
    section_value = param.Number(default=None, allow_None=True,
                                 doc="Poincaré section plane position (empty: the mean).")
    # ---- custom system
    equations = param.String(default=DEFAULT_EQUATIONS, doc="Equations of the custom system.")
    custom_params = param.String(default=DEFAULT_CUSTOM_PARAMS,
                                 doc="Parameters of the custom system: name = value, ...")
    # ---- classroom / presets
    preset = param.String(default="", doc="Teaching preset in use.")
    classroom = param.Boolean(default=False, doc="Classroom mode: hide the controls listed in 'hidden'.")
    hidden = param.List(default=[], item_type=str, doc="Controls hidden in classroom mode.")
    # ---- results (read-only for views)
    attractor = param.Parameter(default=None, doc="Last AttractorData.")
    lyapunov = param.Parameter(default=None, doc="Last LyapunovResult.")
    orbit = param.Parameter(default=None, doc="Last OrbitDiagram.")
    section = param.Parameter(default=None, doc="Last Section.")
    fixed = param.Parameter(default=None, doc="Last list of FixedPoint.")
    errors = param.Dict(default={}, doc="Error message per result key.")
    status = param.String(default="", doc="What is computing and where, or what just happened.")
    orbit_history = param.List(default=[], doc="Zoom history of the orbit diagram: (low, high) pairs.")
    query_version = param.Integer(default=0, doc="Bumped when the URL state changed.")

    RESULT_KEYS = ("attractor", "lyapunov", "orbit", "section", "fixed")

    def __init__(self, *, dysts: bool = False, auto: bool = True, notify=None, **params):
        names = system_names(dysts=dysts) + [CUSTOM]
        self.param.system.objects = names
        super().__init__(**{k: v for k, v in params.items() if k != "system"})
        self.jobs = JobRunner(notify=notify)
        self.auto = auto
        self._custom_cache: tuple[str, str, DynamicalSystem] | None = None
        self._after_attractor: list[str] = []
        self._job_threads: dict[str, int | None] = {}
        self._suspend = 0
        if not self.device:
            self.device = str(default_device())
        self._select(params.get("system", self.system), reset=True)
        self.param.watch(self._on_system, "system")
        self.param.watch(self._on_sim_change,
                         ["values", "x0", "solver", "dt", "n_traj", "duration", "transient",
                          "spread", "device"])
        self.param.watch(self._on_section, ["section_var", "section_value"])
        self.param.watch(self._on_color, "color_by")
        self.param.watch(self._on_custom, ["equations", "custom_params"])
        self.param.watch(self._on_view, ["x_var", "y_var", "z_var", "view", "azimuth", "elevation",
                                         "orbit_param", "orbit_low", "orbit_high", "orbit_var",
                                         "classroom", "hidden", "preset"])

    # ================================================================ the system
    def current_system(self) -> DynamicalSystem:
        """The system at the current parameter values (validated)."""
        if self.system == CUSTOM:
            return self._custom_system()
        return system_class(self.system)(**self.values)

    def system_class(self) -> type[DynamicalSystem]:
        return type(self.current_system()) if self.system == CUSTOM else system_class(self.system)

    def _custom_system(self) -> DynamicalSystem:
        key = (self.equations, self.custom_params)
        if self._custom_cache is None or self._custom_cache[:2] != key:
            params = parse_param_assignments(self.custom_params)
            sys_ = parse_system(self.equations, params, name=CUSTOM)
            self._custom_cache = (*key, sys_)
        return self._custom_cache[2]

    def check_custom(self, equations: str | None = None, params_text: str | None = None) -> list[str]:
        """Problems with typed equations and parameters, one message each (empty: valid).

        Used as the user types; nothing is applied."""
        eqs = self.equations if equations is None else equations
        ptext = self.custom_params if params_text is None else params_text
        try:
            params = parse_param_assignments(ptext)
        except ParameterError as e:
            return [f"parameters: {e}"]
        return [str(e) for e in validate_equations(eqs, params)]

    def _select(self, name: str, *, reset: bool) -> None:
        """Switch to ``name`` and reset the dependent settings to that system's defaults."""
        if name not in self.param.system.objects:
            system_class(name)                       # raises UnknownSystemError with a hint
            raise ParameterError(f"{name!r} is not offered on this page")
        self._suspend += 1
        try:
            self.system = name
            sys_ = self._default_instance()
            cls = type(sys_)
            self.values = {} if name == CUSTOM else dict(sys_.params)
            self.x0 = [float(v) for v in sys_.default_x0]
            flow = sys_.kind == "flow"
            self.solver = "rk4" if flow else "map"
            self.dt = float(sys_.default_dt) if flow else 1.0
            self.duration = 100.0 if flow else 5000.0
            self.transient = 10.0 if flow else 100.0
            var = sys_.variables
            self.x_var = var[0]
            self.y_var = var[2] if (flow and len(var) >= 3 and name in ("lorenz63", CUSTOM)) else var[min(1, len(var) - 1)]
            self.z_var = _depth_variable(var, self.x_var, self.y_var)
            if len(var) < 3:
                self.view = "2D"
            cont = [p for p in cls.parameters if not p.integer]
            if cont:
                p0 = cont[-1] if name == "logistic" else cont[0]
                p0 = next((p for p in cont if p.name in ("rho", "r", "a", "c", "F")), p0)
                self.orbit_param = p0.name
                d = float(sys_.params[p0.name])
                span = max(abs(d) * 0.5, 0.5)
                self.orbit_low = max(p0.low, d - span)
                self.orbit_high = min(p0.high, d + span)
            else:
                self.orbit_param = ""
            self.orbit_var = var[0]
            self.orbit_history = []
            self.section_var = var[-1] if flow else ""
            self.section_value = None
            for key in self.RESULT_KEYS + ("recolor",):
                self.jobs.cancel(key)
            self._after_attractor = []
            self.param.update(attractor=None, lyapunov=None, orbit=None, section=None, fixed=None,
                              errors={})
        finally:
            self._suspend -= 1

    def _default_instance(self) -> DynamicalSystem:
        if self.system == CUSTOM:
            return self._custom_system()
        return system_class(self.system)()

    # ================================================================ validated setters
    def set_value(self, name: str, value: float) -> None:
        """Set one parameter; :class:`ParameterError` (with the allowed range) if out of bounds."""
        if self.system == CUSTOM:
            raise ParameterError("a custom system's parameters are set in its parameter field")
        cls = system_class(self.system)
        spec = cls.param_spec(name)
        v = check_param_value(spec, value, cls.title or cls.name)
        new = dict(self.values)
        new[name] = int(v) if spec.integer else float(v)
        if spec.integer:                               # the dimension may change (Lorenz-96)
            sys_ = cls(**new)
            if sys_.dim != len(self.x0):
                self._suspend += 1
                try:
                    self.x0 = [float(v) for v in sys_.default_x0]
                    var = sys_.variables
                    if self.x_var not in var:
                        self.x_var = var[0]
                    if self.y_var not in var:
                        self.y_var = var[1]
                    if self.z_var not in var:
                        self.z_var = var[2]
                    if self.orbit_var not in var:
                        self.orbit_var = var[0]
                    if self.section_var not in var:
                        self.section_var = var[-1]
                finally:
                    self._suspend -= 1
        self.values = new

    def param_specs(self) -> list:
        """The current system's :class:`Param` specs (what the sliders are built from)."""
        return list(self.system_class().parameters)

    def variables(self) -> tuple[str, ...]:
        try:
            return tuple(self.current_system().variables)
        except ExplorerError:
            return tuple(self.attractor.variables) if self.attractor else ("x", "y")

    def set_x0(self, values) -> None:
        """Set the initial condition; :class:`ParameterError` unless D finite numbers."""
        sys_ = self.current_system()
        try:
            vals = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ParameterError("the initial condition must be numbers") from None
        if len(vals) != sys_.dim:
            raise ParameterError(f"the initial condition needs {sys_.dim} values "
                                 f"({', '.join(sys_.variables)}), got {len(vals)}")
        if not all(math.isfinite(v) and abs(v) < float(sys_.bound) for v in vals):
            raise ParameterError(f"initial values must be finite and below {float(sys_.bound):g} in size")
        self.x0 = vals

    def set_point(self, coords: Mapping[str, float]) -> None:
        """A click on a plot: set the named coordinates of the initial condition."""
        var = list(self.variables())
        x0 = list(self.x0)
        for name, v in coords.items():
            if name in var and v is not None and math.isfinite(float(v)):
                x0[var.index(name)] = float(v)
        self.set_x0(x0)

    # ================================================================ requests
    def _steps(self, sys_: DynamicalSystem) -> tuple[int, int, int]:
        """(steps, transient steps, save_every) from duration and dt, checked against the limits."""
        dt = 1.0 if sys_.kind == "map" else float(self.dt)
        steps = max(1, int(round(self.duration / dt)))
        transient = int(round(self.transient / dt))
        work = self.n_traj * (steps + transient)
        if work > MAX_APP_WORK:
            raise SizeLimitError(
                f"{self.n_traj:,} trajectories x {steps + transient:,} steps = {work:.2e} "
                f"trajectory-steps exceed this page's limit of {MAX_APP_WORK:.0e} "
                f"(fewer trajectories, a shorter duration or a larger time step)")
        every = max(1, math.ceil(self.n_traj * steps / MAX_DISPLAY_POINTS))
        return steps, transient, every

    def request_attractor(self) -> None:
        """Simulate the current settings off the UI thread (supersedes a running request)."""
        try:
            sys_ = self.current_system()
            steps, transient, every = self._steps(sys_)
            x0 = prepare_initial_states(sys_, self.x0, dtype=torch.float64, device="cpu")[0][0]
        except ExplorerError as e:
            self._error("attractor", str(e))
            return
        solver, dt, n, spread = self.solver, self.dt, self.n_traj, self.spread
        color_by, device = self.color_by, self._device()

        def work(stop, progress):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(0)
            traj = simulate(sys_, x0 if n == 1 else x0, steps=steps, dt=dt, solver=solver,
                            transient=transient, save_every=every,
                            batch=None if n == 1 else n, generator=gen, spread=spread * 0.1,
                            dtype=torch.float32, device=device, compile=_compile_mode(),
                            progress=progress, stop=stop)
            return _attractor_data(sys_, traj, color_by, time.perf_counter() - t0, device)

        # the simulation keeps every core: the native backend parallelises over trajectories
        self._submit("attractor", work, f"simulating {sys_.title or sys_.name}",
                     threads=SIMULATION_THREADS)

    #: trajectories used for the Poincaré section (the first ones of the ensemble)
    SECTION_MEMBERS = 64

    def request_section(self) -> None:
        """Poincaré section of the current attractor (flows) on ``section_var = section_value``."""
        data = self.attractor
        if data is None or data.kind != "flow" or data.trajectory is None:
            self.section = None
            return
        try:
            sys_ = self.current_system()
        except ExplorerError as e:
            self._error("section", str(e))
            return
        if self.section_var not in sys_.variables:
            self.section = None
            return
        traj, var, value = data.trajectory, self.section_var, self.section_value
        members = self.SECTION_MEMBERS

        def work(stop, progress):
            sub = replace(traj, x=traj.x[:, :members], diverged_at=traj.diverged_at[:members])
            return poincare_section(sys_, sub, var, value)

        self._submit("section", work, "Poincaré section", quiet=True)

    def request_lyapunov(self) -> None:
        """Lyapunov spectrum (float64) of the current system, off the UI thread."""
        try:
            sys_ = self.current_system()
            x0 = self.x0
        except ExplorerError as e:
            self._error("lyapunov", str(e))
            return
        device = self._device()
        dt = None if sys_.kind == "map" else self.dt

        def work(stop, progress):
            return lyapunov_spectrum(sys_, x0, dt=dt, generator=torch.Generator().manual_seed(0),
                                     device=device, progress=progress, stop=stop)

        self._submit("lyapunov", work, "Lyapunov spectrum")

    def request_orbit(self) -> None:
        """Orbit diagram over ``orbit_param`` in [orbit_low, orbit_high], off the UI thread."""
        try:
            sys_ = self.current_system()
            if not self.orbit_param:
                raise ParameterError("this system has no continuous parameter to sweep")
            lo, hi = float(self.orbit_low), float(self.orbit_high)
            spec = type(sys_).param_spec(self.orbit_param)
            if not (spec.low <= lo < hi <= spec.high):
                raise ParameterError(f"orbit range [{lo:g}, {hi:g}] must be increasing and inside "
                                     f"[{spec.low:g}, {spec.high:g}]")
        except ExplorerError as e:
            self._error("orbit", str(e))
            return
        name, var, device, x0 = self.orbit_param, self.orbit_var, self._device(), self.x0
        n_values = 600 if sys_.kind == "map" else 300
        sec = self.section_var if sys_.kind == "flow" else None

        def work(stop, progress):
            return orbit_diagram(sys_, name, lo, hi, n_values=n_values, coordinate=var,
                                 n_points=200 if sys_.kind == "map" else 100, x0=x0,
                                 dtype=torch.float64, device=device, progress=progress, stop=stop)

        del sec
        self._submit("orbit", work, f"orbit diagram over {name}")

    def zoom_orbit(self, low: float, high: float) -> None:
        """Zoom the orbit diagram to [low, high] (clipped to the bounds) and recompute."""
        spec = self.system_class().param_spec(self.orbit_param)
        lo, hi = max(float(low), spec.low), min(float(high), spec.high)
        if not hi > lo:
            return
        self.orbit_history = self.orbit_history + [(self.orbit_low, self.orbit_high)]
        self.param.update(orbit_low=lo, orbit_high=hi)
        self.request_orbit()

    def orbit_back(self) -> bool:
        """Return to the previous orbit-diagram range; False when there is none."""
        if not self.orbit_history:
            return False
        *rest, (lo, hi) = self.orbit_history
        self.orbit_history = rest
        self.param.update(orbit_low=lo, orbit_high=hi)
        self.request_orbit()
        return True

    def request_fixed_points(self) -> None:
        """Fixed points with eigenvalues and type, off the UI thread."""
        try:
            sys_ = self.current_system()
        except ExplorerError as e:
            self._error("fixed", str(e))
            return

        def work(stop, progress):
            return fixed_points(sys_, generator=torch.Generator().manual_seed(0))

        self._submit("fixed", work, "fixed points")

    def cancel(self, key: str) -> None:
        if self.jobs.cancel(key):
            self.status = f"{key}: stopped"

    # ---------------------------------------------------------------- plumbing
    def _device(self) -> torch.device:
        try:
            return parse_device(self.device)
        except ExplorerError:
            return default_device()

    def _submit(self, key: str, fn, label: str, *, quiet: bool = False,
                threads: int | None = 1) -> None:
        """Run ``fn`` off the UI thread; ``quiet`` jobs (follow-ups) leave the status line alone.

        ``threads``: torch threads of the job's thread (None: leave as it is). Analyses
        make thousands of small tensor calls; with two threads each one waits at an OpenMP
        barrier, for seconds in all when the other core is busy (a served page always has
        other work): a Lyapunov spectrum took 7-30 s in the page against 1-2 s alone."""
        errors = dict(self.errors)
        errors.pop(key, None)
        self.errors = errors

        def run(stop, progress):
            if threads is not None:
                torch.set_num_threads(threads)   # set per job: a new thread starts with the
                                                 # count some other thread set last
            return fn(stop=stop, progress=progress)

        self.jobs.submit(key, run, label=label)
        self._job_threads[key] = threads
        if not quiet:
            self.status = f"{label} on {self._job_device(key)} ..."

    def _job_device(self, key: str | None = None) -> str:
        """The device a job runs on, with its thread count on the CPU."""
        dev = self._device()
        if key is None:
            running = [j for j in self.jobs.running() if j.key != "section"]
            key = running[-1].key if running else None
        return describe_device(dev, self._job_threads.get(key) if key is not None else None)

    def _error(self, key: str, message: str) -> None:
        self.errors = {**self.errors, key: message}
        self.status = f"⚠ {message}"

    def poll(self) -> list[Done]:
        """Collect finished jobs and publish their results (call from the UI thread)."""
        done = self.jobs.poll()
        for d in done:
            if d.error is not None:
                if d.key == "attractor":
                    self._after_attractor = []
                self._error(d.key, d.error)
                continue
            if d.key == "attractor":
                data = d.value
                self.attractor = data
                self.request_section()
                self._run_after_attractor()
                note = " (stopped early)" if d.stopped else ""
                self.status = (f"{data.title}: {data.message}{note}; computed in "
                               f"{data.seconds * 1000:.0f} ms on {data.device}")
            elif d.key == "section":
                self.section = d.value
            elif d.key == "recolor":
                if self.attractor is not None and d.value.x is self.attractor.x:
                    self.attractor = d.value
                    self.status = f"{d.label}: done in {d.seconds * 1000:.0f} ms"
            else:
                setattr(self, d.key, d.value)
                self.status = f"{d.label}: done in {d.seconds:.2f} s"
        if not done:
            running = [j for j in self.jobs.running() if j.key != "section"]
            if running:
                j = running[-1]
                # in 5 % steps: every new status text is a document patch (and Panel's busy
                # indicator) on the UI thread, which the jobs' threads then wait for
                self.status = f"{j.label} on {self._job_device()}: {int(j.progress * 20) * 5}%"
        return done

    def wait(self, timeout: float = 60.0) -> list[Done]:
        """Block until every job, follow-ups included, has finished and publish the results
        (notebooks, tests)."""
        deadline = time.monotonic() + timeout
        done: list[Done] = []
        while True:
            self.jobs.wait(max(0.0, deadline - time.monotonic()))
            done += self.poll()
            if not self.jobs.running() or time.monotonic() >= deadline:
                return done

    def close(self) -> None:
        """Stop everything (the browser session closed)."""
        self.jobs.close()

    # ---------------------------------------------------------------- watchers
    def _on_system(self, event) -> None:
        if self._suspend:
            return
        try:
            self._select(event.new, reset=True)
        except ExplorerError as e:
            self._error("attractor", str(e))
            return
        self.preset = ""
        self.query_version += 1
        if self.auto:
            self.request_attractor()

    def _on_sim_change(self, *_events) -> None:
        if self._suspend:
            return
        self.query_version += 1
        if self.auto:
            self.request_attractor()

    def _on_section(self, *_events) -> None:
        if self._suspend:
            return
        self.query_version += 1
        if self.auto:
            self.request_section()

    def _on_color(self, event) -> None:
        if self._suspend:
            return
        self.query_version += 1
        if self.attractor is None:
            if self.auto:
                self.request_attractor()
        else:
            self.request_recolor()

    def request_recolor(self) -> None:
        """Recolour the current attractor (no new simulation): speed and expansion rate are
        evaluated on its recorded states, off the UI thread."""
        data, color_by = self.attractor, self.color_by
        if data is None:
            return
        if color_by == "time":
            self.attractor = _recolor(data, "time")
            return
        try:
            sys_ = self.current_system()
        except ExplorerError as e:
            self._error("attractor", str(e))
            return

        def work(stop, progress):
            return replace(data, color=_color_values(sys_, torch.from_numpy(data.x), color_by),
                           color_by=color_by)

        self._submit("recolor", work, f"colouring by {color_by}")

    def _on_custom(self, *_events) -> None:
        if self._suspend or self.system != CUSTOM:
            return
        problems = self.check_custom()
        if problems:
            self._error("custom", problems[0])
            return
        errors = dict(self.errors)
        errors.pop("custom", None)
        self.errors = errors
        try:
            self._select(CUSTOM, reset=True)
        except ExplorerError as e:
            self._error("custom", str(e))
            return
        self.query_version += 1
        if self.auto:
            self.request_attractor()

    def _on_view(self, *events) -> None:
        if any(e.name in ("x_var", "y_var", "z_var") for e in events) and self.z_var in (self.x_var, self.y_var):
            # the 3D view's depth must be a third variable (x, z, z would be a flat projection)
            self._suspend += 1
            try:
                self.z_var = _depth_variable(self.variables(), self.x_var, self.y_var)
            finally:
                self._suspend -= 1
        if not self._suspend:
            self.query_version += 1

    # ================================================================ presets
    def apply_preset(self, key: str) -> list[str]:
        """Load a teaching preset (its state, then its on-request computations)."""
        if key not in PRESETS:
            raise ParameterError(f"unknown preset {key!r}; presets: {', '.join(PRESETS)}")
        p = PRESETS[key]
        problems = self.apply_query(p.query, compute=False)
        self.preset = key
        if self.auto:
            self.request_attractor()
            self.request_after_attractor(p.compute)
        return problems

    def request_after_attractor(self, what) -> None:
        """Start these on-request analyses (``"lyapunov"``, ``"orbit"``, ``"fixed"``) once
        the attractor being computed is shown: the picture comes first."""
        self._after_attractor = [w for w in what if w != "section"]
        if not self.jobs.is_running("attractor"):
            self._run_after_attractor()

    def _run_after_attractor(self) -> None:
        todo, self._after_attractor = self._after_attractor, []
        for what in todo:
            {"lyapunov": self.request_lyapunov, "orbit": self.request_orbit,
             "fixed": self.request_fixed_points}[what]()

    # ================================================================ URL state
    def to_query(self) -> dict[str, str]:
        """The page state as URL query values (strings); :meth:`apply_query` restores it."""
        q: dict[str, str] = {"sys": self.system}
        if self.system == CUSTOM:
            q["eq"] = self.equations
            q["cp"] = self.custom_params
        else:
            for k, v in self.values.items():
                q[f"p.{k}"] = _fmt(v)
        q["x0"] = ",".join(_fmt(v) for v in self.x0)
        q.update(solver=self.solver, dt=_fmt(self.dt), n=str(self.n_traj), T=_fmt(self.duration),
                 tr=_fmt(self.transient), view=self.view, proj=f"{self.x_var},{self.y_var}",
                 color=self.color_by)
        if self.spread != 0.5:
            q["spread"] = _fmt(self.spread)
        if self.view == "3D":
            q.update(z=self.z_var, az=_fmt(self.azimuth), el=_fmt(self.elevation))
        if self.orbit_param:
            q.update(op=self.orbit_param, olo=_fmt(self.orbit_low), ohi=_fmt(self.orbit_high),
                     ov=self.orbit_var)
        if self.section_var:
            q["sec"] = self.section_var + ("" if self.section_value is None else f":{_fmt(self.section_value)}")
        if self.preset:
            q["preset"] = self.preset
        if self.classroom:
            q["classroom"] = "1"
            if self.hidden:
                q["hide"] = ",".join(self.hidden)
        return q

    def apply_query(self, query: Mapping[str, Any], *, compute: bool = True) -> list[str]:
        """Restore state from URL query values. Invalid entries are skipped and reported
        (one message each); the rest applies. Recomputes the attractor once at the end."""
        q = {k: (v[0] if isinstance(v, (list, tuple)) and v else v) for k, v in query.items()}
        q = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in q.items()}
        problems: list[str] = []
        if "preset" in q:
            if q["preset"] in PRESETS:
                # a preset link: the preset's state, then whatever else the link sets on top
                q = {**PRESETS[q["preset"]].query, **q}
            else:
                problems.append(f"preset: unknown preset {q['preset']!r}")

        def attempt(what: str, fn) -> None:
            try:
                fn()
            except (ExplorerError, ValueError, TypeError) as e:
                problems.append(f"{what}: {e}")

        self._suspend += 1
        try:
            if "sys" in q:
                if q["sys"] == CUSTOM:
                    self.equations = q.get("eq", self.equations)
                    self.custom_params = q.get("cp", self.custom_params)
                    bad = self.check_custom()
                    if bad:
                        problems.append(f"custom system: {bad[0]}")
                    else:
                        attempt("system", lambda: self._select(CUSTOM, reset=True))
                else:
                    attempt("system", lambda: self._select(system_class(q["sys"]).name, reset=True))
            ints = sorted((k for k in q if k.startswith("p.")),
                          key=lambda k: not self._is_integer_param(k[2:]))   # dimension first
            for k in ints:
                attempt(k[2:], lambda k=k: self.set_value(k[2:], float(q[k])))
            if "x0" in q:
                attempt("x0", lambda: self.set_x0(q["x0"].split(",")))
            for key, name, conv in (("solver", "solver", str), ("dt", "dt", float),
                                    ("n", "n_traj", int), ("T", "duration", float),
                                    ("tr", "transient", float), ("spread", "spread", float),
                                    ("view", "view", str), ("color", "color_by", str),
                                    ("az", "azimuth", float), ("el", "elevation", float),
                                    ("olo", "orbit_low", float), ("ohi", "orbit_high", float)):
                if key in q:
                    attempt(name, lambda name=name, conv=conv, key=key: self._set_checked(name, conv(q[key])))
            var = self.variables()
            if "proj" in q:
                xs = q["proj"].split(",")
                if len(xs) == 2 and all(v in var for v in xs):
                    self.x_var, self.y_var = xs
                else:
                    problems.append(f"proj: variables must be two of {', '.join(var)}")
            for key, name in (("z", "z_var"), ("ov", "orbit_var")):
                if key in q:
                    if q[key] in var:
                        setattr(self, name, q[key])
                    else:
                        problems.append(f"{key}: unknown variable {q[key]!r}")
            if "op" in q:
                names = [p.name for p in self.param_specs() if not p.integer]
                if q["op"] in names:
                    self.orbit_param = q["op"]
                else:
                    problems.append(f"op: no continuous parameter {q['op']!r}")
            if "sec" in q:
                name, _, val = q["sec"].partition(":")
                if name in var:
                    self.section_var = name
                    if val:
                        attempt("sec", lambda: setattr(self, "section_value", float(val)))
                else:
                    problems.append(f"sec: unknown variable {name!r}")
            if "preset" in q and q["preset"] in PRESETS:
                self.preset = q["preset"]
            self.classroom = q.get("classroom", "0") in ("1", "true", "yes")
            if "hide" in q:
                self.hidden = [h for h in q["hide"].split(",") if h]
        finally:
            self._suspend -= 1
        self.query_version += 1
        if problems:
            self.status = "⚠ link: " + "; ".join(problems)
        if compute and self.auto:
            self.request_attractor()
        return problems

    def _is_integer_param(self, name: str) -> bool:
        try:
            return self.system_class().param_spec(name).integer
        except ExplorerError:
            return False

    def _set_checked(self, name: str, value) -> None:
        """Set a parameter, turning param's bound errors into :class:`ParameterError`."""
        try:
            setattr(self, name, value)
        except ValueError as e:
            raise ParameterError(str(e).split("\n")[0]) from None

    # ================================================================ devices
    @staticmethod
    def devices() -> list[str]:
        return [str(d) for d in available_devices()]


# ==================================================================== helpers
def _compile_mode():
    """The app's compile policy: the native backend where it applies, else eager torch (a
    page request never waits for a ``torch.compile`` build)."""
    return None if os.environ.get("EXPLORER_APP_INDUCTOR") else _NO_INDUCTOR


#: ``simulate(compile=...)`` value that allows the native backend but not torch.compile
_NO_INDUCTOR = "no-inductor"


def _attractor_data(sys_: DynamicalSystem, traj: Trajectory, color_by: str, seconds: float,
                    device: torch.device) -> AttractorData:
    x = traj.x                                                       # (T, B, D) float32
    color = None if color_by == "time" else _color_values(sys_, x, color_by)
    return AttractorData(
        system=sys_.name, title=sys_.title or sys_.name, kind=sys_.kind,
        variables=tuple(sys_.variables), t=traj.t.cpu().numpy(),
        x=x.cpu().numpy(), color=color, color_by=color_by, message=traj.message,
        diverged=bool(traj.diverged.any()), seconds=seconds, device=describe_device(device),
        trajectory=traj)


def _depth_variable(variables, x_var: str, y_var: str) -> str:
    """The 3D view's third axis: the first variable that is neither of the two shown."""
    return next((v for v in variables if v not in (x_var, y_var)), "")


def _color_values(sys_: DynamicalSystem, x: torch.Tensor, color_by: str) -> np.ndarray:
    """Colour values (T, B) of recorded states ``x`` (T, B, D): speed or local expansion rate."""
    fn = speed if color_by == "speed" else local_expansion
    return fn(sys_, x).cpu().numpy()


def _recolor(data: AttractorData, color_by: str) -> AttractorData:
    return replace(data, color=None, color_by=color_by)


__all__ = ["AttractorController", "AttractorData", "CUSTOM", "MAX_DISPLAY_POINTS", "MAX_APP_WORK"]
