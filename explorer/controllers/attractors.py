"""State and actions of the Attractors page (param only: no Panel, no HoloViews).

The controller holds what the user chose (system, parameter values, initial condition,
solver, view settings), validates every change, turns it into compute requests run off the
UI thread (:class:`~explorer.controllers.base.PageController` jobs), and publishes finished
results as parameters (``attractor``, ``lyapunov``, ``orbit``, ``section``, ``fixed``) that the
views watch. It also owns live mode: a :class:`~explorer.controllers.live.LiveEnsemble` played,
paused, stepped and rebuilt here, so the view only draws its frames. The same object drives the
served page, the notebook and the tests.

Page state round-trips through the URL query (:meth:`to_query` / :meth:`apply_query`).
"""

from __future__ import annotations

import math
import os
import re
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
from ..core.device import describe_device
from ..core.errors import ExplorerError, ParameterError, SizeLimitError
from ..core.registry import system_class
from ..core.simulate import Trajectory, prepare_initial_states, simulate
from ..core.system import DynamicalSystem, check_param_value
from .base import (CUSTOM, DEFAULT_CUSTOM_PARAMS, DEFAULT_EQUATIONS, SystemSource,
                   link_notice, one_line)
from .jobs import Done
from .live import Frame, LiveEnsemble
from .parameter_map import ParameterMapController
from .presets import PRESETS

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
    def is_map(self) -> bool:
        """Discrete time: iterates are points (not joined), time is the iteration n."""
        return self.kind == "map"

    @property
    def n_points(self) -> int:
        return int(self.x.shape[0] * self.x.shape[1])


def _fmt(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 else repr(float(v))


class AttractorController(SystemSource):
    """Everything the Attractors page shows, and the requests that compute it."""

    # ---- what is simulated (``system``, ``equations``, ``custom_params``: SystemSource)
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
    # ---- how it is shown
    x_var = param.String(default="x", doc="Horizontal variable of the projection.")
    y_var = param.String(default="z", doc="Vertical variable of the projection.")
    view = param.Selector(default="2D", objects=["2D", "3D"],
                          doc="2D: two variables; 3D: rotatable projection of three.")
    z_var = param.String(default="", doc="Third variable of the 3D view.")
    azimuth = param.Number(default=30.0, bounds=(-180.0, 180.0), doc="3D view: rotation about the vertical axis (degrees).")
    elevation = param.Number(default=20.0, bounds=(-90.0, 90.0), doc="3D view: tilt (degrees).")
    color_by = param.Selector(default="time", objects={"time": "time", "speed": "speed",
                                                       "local expansion rate": "expansion"},
                              doc="Colour points by time, speed or local expansion rate.")
    # ---- live mode
    live_n = param.Integer(default=1000, bounds=(1, MAX_TRAJECTORIES),
                           doc="Live mode: number of trajectories animated around the initial condition.")
    live_speed = param.Integer(default=2, bounds=(1, 50),
                               doc="Live mode: integration steps (iterations) per frame.")
    live_status = param.String(default="", doc="Live mode: running or paused, ensemble size, time.")
    # ---- orbit diagram, section
    orbit_param = param.String(default="", doc="Parameter swept by the orbit diagram.")
    orbit_low = param.Number(default=0.0, doc="Lower end of the orbit diagram's range.")
    orbit_high = param.Number(default=1.0, doc="Upper end of the orbit diagram's range.")
    orbit_var = param.String(default="", doc="Variable plotted by the orbit diagram.")
    section_var = param.String(default="", doc="Poincaré section: the plane is this variable = value.")
    section_value = param.Number(default=None, allow_None=True,
                                 doc="Poincaré section plane position (empty: the mean).")
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
    orbit_history = param.List(default=[], doc="Zoom history of the orbit diagram: (low, high) pairs.")
    query_version = param.Integer(default=0, doc="Bumped when the URL state changed.")

    RESULT_KEYS = ("attractor", "lyapunov", "orbit", "section", "fixed")

    def __init__(self, *, dysts: bool = False, auto: bool = True, notify=None, **params):
        self._after_attractor: list[str] = []
        #: a page that draws sets this: the on-request analyses of a preset then start when it
        #: calls :meth:`picture_shown` (their results would otherwise compete with the picture
        #: for the browser), not as soon as the attractor is computed
        self.wait_for_picture = False
        self.live: LiveEnsemble | None = None      # live mode's ensemble (built on demand)
        self.maps = ParameterMapController(self)   # the parameter map tab's settings and run
        super().__init__(dysts=dysts, kinds=("flow", "map"), auto=auto, notify=notify,
                         **{k: v for k, v in params.items() if k != "system"})
        # live mode follows the system first (a new system stops it before its settings move)
        self.param.watch(self._on_live_change, ["system", "equations", "custom_params", "values",
                                                "x0", "solver", "dt", "live_n", "live_speed"])
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
        return self.system_of(self.system, **self.values)

    def system_class(self) -> type[DynamicalSystem]:
        return type(self.current_system()) if self.system == CUSTOM else system_class(self.system)

    def is_map(self) -> bool:
        """Whether the current system is a map (flows when it cannot be built)."""
        try:
            return self.current_system().is_map
        except ExplorerError:
            return False

    def _select(self, name: str, *, reset: bool) -> None:
        """Switch to ``name`` and reset the dependent settings to that system's defaults."""
        if name not in self.param.system.objects:
            system_class(name)                       # raises UnknownSystemError with a hint
            raise ParameterError(f"{name!r} is not offered on this page")
        with self.suspended():
            self.system = name
            sys_ = self.system_of(name)
            cls = type(sys_)
            self.values = {} if name == CUSTOM else dict(sys_.params)
            self.x0 = [float(v) for v in sys_.default_x0]
            flow = sys_.continuous_time
            self.param.solver.objects = cls.solver_names()
            self.solver = cls.default_solver
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
            for key in self.RESULT_KEYS + ("recolor", ParameterMapController.KEY):
                self.jobs.cancel(key)
            self.maps.reset_axes()
            self._after_attractor = []
            self.param.update(attractor=None, lyapunov=None, orbit=None, section=None, fixed=None,
                              errors={})

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
                with self.suspended():
                    self.x0 = [float(v) for v in sys_.default_x0]
                    var = sys_.variables
                    for setting, default in (("x_var", var[0]), ("y_var", var[1]), ("z_var", var[2]),
                                             ("orbit_var", var[0]), ("section_var", var[-1])):
                        if getattr(self, setting) not in var:
                            setattr(self, setting, default)
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
        dt = sys_.time_step(float(self.dt))
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
        if data is None or data.is_map or data.trajectory is None:
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
        dt = None if sys_.is_map else self.dt

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
        n_values = 600 if sys_.is_map else 300

        def work(stop, progress):
            return orbit_diagram(sys_, name, lo, hi, n_values=n_values, coordinate=var,
                                 n_points=200 if sys_.is_map else 100, x0=x0,
                                 dtype=torch.float64, device=device, progress=progress, stop=stop)

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

    # ---------------------------------------------------------------- results
    def _job_done(self, d: Done) -> None:
        if d.error is not None:
            if d.key == "attractor":
                self._after_attractor = []
            super()._job_done(d)
        elif d.key == "attractor":
            data = d.value
            self.attractor = data
            self.request_section()
            if not self.wait_for_picture:
                self._run_after_attractor()
            note = " (stopped early)" if d.stopped else ""
            self.status = (f"{data.title}: {data.message}{note}; computed in "
                           f"{data.seconds * 1000:.0f} ms on {data.device}{backend_text(data.trajectory)}")
        elif d.key == "section":
            self.section = d.value
        elif d.key == ParameterMapController.KEY:
            self.maps.finished(d.value)
            self.status = f"{d.label}: {'done' if d.value.complete else 'stopped'} in {d.seconds:.1f} s"
        elif d.key == "recolor":
            if self.attractor is not None and d.value.x is self.attractor.x:
                self.attractor = d.value
                self.status = f"{d.label}: done in {d.seconds * 1000:.0f} ms"
        else:
            super()._job_done(d)

    def poll(self) -> list[Done]:
        """Collect finished jobs and publish their results (call from the UI thread); while
        nothing finished, show the progress of the latest running job."""
        self.maps.refresh()
        done = super().poll()
        if not done:
            running = [j for j in self.jobs.running() if j.key != "section"]
            if running:
                j = running[-1]
                # in 5 % steps: every new status text is a document patch (and Panel's busy
                # indicator) on the UI thread, which the jobs' threads then wait for
                self.status = f"{j.label} on {self._job_device(j.key)}: {int(j.progress * 20) * 5}%"
        return done

    def close(self) -> None:
        """Stop everything (the browser session closed)."""
        self.stop_live()
        super().close()

    # ================================================================ live mode
    @property
    def playing(self) -> bool:
        """Live mode is animating (the view draws frames while this is true)."""
        return self.live is not None and self.live.playing

    def _make_live(self) -> LiveEnsemble:
        sys_ = self.current_system()
        flow = sys_.continuous_time
        solver = ("rk4" if self.solver == "dopri5" else self.solver) if flow else None
        return LiveEnsemble(sys_, self.x0, n=self.live_n, trail=16, steps_per_frame=self.live_speed,
                            dt=self.dt if flow else None, solver=solver, spread=0.02, device="cpu")

    def _live_do(self, action: str) -> bool:
        """Build the ensemble if needed and ``play``/``pause``/``step``; False (and the
        message in ``live_status``) when it cannot run."""
        try:
            if self.live is None:
                self.live = self._make_live()
            getattr(self.live, action)()
        except (ExplorerError, ValueError) as e:
            self.live_status = f"⚠ {one_line(e)}"
            return False
        self._live_label()
        return True

    def play(self) -> bool:
        """Start (or continue) live mode: ``live_n`` trajectories around the initial condition."""
        return self._live_do("play")

    def pause(self) -> None:
        if self.live is not None:
            self.live.pause()
            self._live_label()

    def step(self) -> bool:
        """Pause and advance one frame (``live_speed`` steps)."""
        if self.live is not None:
            self.live.pause()
        return self._live_do("step")

    def reset(self) -> None:
        """Restart the ensemble around the initial condition."""
        if self.live is not None:
            self._live_guard(self.live.reset, self.x0)
            self._live_label()

    def stop_live(self) -> None:
        """Close live mode (a new system)."""
        if self.live is not None:
            self.live.close()
            self.live = None
        self.live_status = ""

    def rebuild_live(self) -> None:
        """Rebuild the ensemble with the current settings (size, dt, solver), keeping its
        playing state."""
        if self.live is None:
            return
        playing = self.live.playing
        self.live.close()
        self.live = None
        self.play() if playing else self.step()

    def live_frame(self) -> Frame | None:
        """The ensemble's latest frame (None without live mode); reports a stopped ensemble
        and diverged members in ``live_status``."""
        live = self.live
        if live is None:
            return None
        if live.error:
            self.live_status = f"⚠ {live.error}"
            live.error = None
        frame = live.frame()
        if frame.n_diverged:
            self.live_status = (f"t = {frame.t:.2f}: {frame.n_diverged} of {live.n} trajectories "
                                "diverged (frozen)")
        return frame

    def _live_label(self) -> None:
        live = self.live
        if live is None:
            self.live_status = ""
            return
        n = f"{live.n:,} trajector{'y' if live.n == 1 else 'ies'}"
        self.live_status = f"running: {n}" if live.playing else f"paused: {n}, t = {live.frame().t:.4g}"

    def _live_guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except (ExplorerError, ValueError) as e:
            self.live_status = f"⚠ {one_line(e)}"

    def _on_live_change(self, *events) -> None:
        """Settings reach the running ensemble: new parameter values and initial conditions
        apply in place, a new size, time step or solver rebuilds it, a new system stops it."""
        live = self.live
        if live is None:
            return
        names = {e.name for e in events}
        if "system" in names or (names & {"equations", "custom_params"} and self.system == CUSTOM):
            self.stop_live()
        elif "values" in names:
            try:
                live.set_system(self.current_system())
            except (ExplorerError, ValueError) as e:
                self.live_status = f"⚠ {one_line(e)}"
        elif "x0" in names:
            if len(self.x0) == live.system.dim:         # else the new dimension's values follow
                self._live_guard(live.reset, self.x0)
                self._live_label()
        elif "live_speed" in names:
            self._live_guard(live.set_speed, self.live_speed)
        elif names & {"solver", "dt", "live_n"}:
            self.rebuild_live()

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
        self._clear_error("custom")
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
            with self.suspended():
                self.z_var = _depth_variable(self.variables(), self.x_var, self.y_var)
        if not self._suspend:
            self.query_version += 1

    # ================================================================ presets
    def apply_preset(self, key: str) -> list[str]:
        """Load a teaching preset (its state, then its on-request computations)."""
        if key not in PRESETS:
            raise ParameterError(f"unknown preset {key!r}; presets: {', '.join(PRESETS)}")
        p = PRESETS[key]
        # the teacher's classroom settings belong to the session, not to the preset
        keep = {"classroom": "1" if self.classroom else "0", "hide": ",".join(self.hidden)}
        problems = self.apply_query({**p.query, **keep}, compute=False)
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

    def picture_shown(self) -> None:
        """The page has drawn the attractor: start the analyses waiting for it (if any)."""
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
                                    ("n", "n_traj", _whole), ("T", "duration", float),
                                    ("tr", "transient", float), ("spread", "spread", float),
                                    ("view", "view", str), ("color", "color_by", str),
                                    ("az", "azimuth", float), ("el", "elevation", float),
                                    ("olo", "orbit_low", float), ("ohi", "orbit_high", float)):
                if key in q:
                    attempt(key, lambda name=name, conv=conv, key=key: self._set_checked(name, conv(q[key])))
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
            self.notice = link_notice(problems)
            self.status = "⚠ " + self.notice
        if compute and self.auto:
            self.request_attractor()
        return problems

    def _is_integer_param(self, name: str) -> bool:
        try:
            return self.system_class().param_spec(name).integer
        except ExplorerError:
            return False

    def _set_checked(self, name: str, value) -> None:
        """Set a parameter, turning param's bound errors into a short :class:`ParameterError`
        (``must be at most 100000, not 1e+12``, without param's class path)."""
        try:
            setattr(self, name, value)
        except ValueError as e:
            text = re.sub(r"^\w+ parameter '[\w.]+' ", "", str(e).split("\n")[0])
            raise ParameterError(text.rstrip(".")) from None


# ==================================================================== helpers
def _whole(text: str) -> int:
    """A whole number from a link (``100``, ``1e3``); ValueError otherwise."""
    v = float(text)
    if not math.isfinite(v) or v != int(v):
        raise ValueError(f"{text!r} is not a whole number")
    return int(v)


def _compile_mode():
    """The app's compile policy: the native backend where it applies, else eager torch (a
    page request never waits for a ``torch.compile`` build)."""
    return None if os.environ.get("EXPLORER_APP_INDUCTOR") else _NO_INDUCTOR


#: ``simulate(compile=...)`` value that allows the native backend but not torch.compile
_NO_INDUCTOR = "no-inductor"


def backend_text(traj: Trajectory | None) -> str:
    """The backend a simulation ran on, for the status line; when it was eager torch because
    a faster path was refused (no C compiler, an operation the native code cannot do), why."""
    if traj is None or not getattr(traj, "backend", ""):
        return ""
    if traj.backend == "eager" and traj.backend_note:
        return f", {traj.backend} torch (slower path: {traj.backend_note})"
    return f", {traj.backend} backend"


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


__all__ = ["AttractorController", "AttractorData", "CUSTOM", "DEFAULT_CUSTOM_PARAMS", "DEFAULT_EQUATIONS",
           "MAX_DISPLAY_POINTS", "MAX_APP_WORK"]
