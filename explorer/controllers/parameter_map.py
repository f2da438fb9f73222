"""The Attractors page's parameter map (param only: no Panel, no HoloViews).

A :class:`ParameterMapController` belongs to an
:class:`~explorer.controllers.attractors.AttractorController`: it holds the map's settings
(two axes over the system's parameters or initial values, a box, a resolution, a quantity),
runs the map on the process's shared Dask cluster through
:func:`explorer.sweeps.run_map` (the same engine as ``dynamics-explorer sweep``) as one of the
page's background jobs, publishes the tiles as they arrive (``partial``, ``version``), zooms
into a box and back, and turns a clicked point into the attractor's parameters.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import param

from ..core.analysis.parameter_maps import Axis, MapSpec, Quantity
from ..core.errors import ExplorerError, ParameterError

if TYPE_CHECKING:  # pragma: no cover
    from .attractors import AttractorController

#: the quantities the page offers (label -> quantity text; ``mean`` and ``basin`` need more)
QUANTITY_LABELS = {"largest Lyapunov exponent": "lyapunov", "period": "period",
                   "divergence time": "divergence", "basin (which attractor)": "basin",
                   "mean of the first variable": "mean"}
#: points per Dask task on the page: small enough that the map fills in visibly
PAGE_CHUNK = 2500
#: steps per point on the page (shorter than the CLI's defaults: a map is a first look)
PAGE_STEPS = {"map": (1000, 300), "flow": (4000, 1000)}
INITIAL = "initial "


class ParameterMapController(param.Parameterized):
    """Settings, run and results of the parameter map of one Attractors page."""

    x_axis = param.String(default="", doc="Horizontal axis: a parameter, or 'initial x' for a start value.")
    y_axis = param.String(default="", doc="Vertical axis: a parameter, or 'initial x' for a start value.")
    x_low = param.Number(default=0.0, doc="Left end of the horizontal axis.")
    x_high = param.Number(default=1.0, doc="Right end of the horizontal axis.")
    y_low = param.Number(default=0.0, doc="Lower end of the vertical axis.")
    y_high = param.Number(default=1.0, doc="Upper end of the vertical axis.")
    resolution = param.Selector(default=100, objects=[40, 100, 200, 400],
                                doc="Grid points per side.")
    quantity = param.Selector(default="largest Lyapunov exponent", objects=list(QUANTITY_LABELS),
                              doc="What each grid point shows.")
    history = param.List(default=[], doc="Zoom history: earlier boxes (x_low, x_high, y_low, y_high).")
    result = param.Parameter(default=None, doc="The finished map (an xarray Dataset).")
    partial = param.Parameter(default=None, doc="The map so far: (spec, values array), while it runs.")
    version = param.Integer(default=0, doc="Bumped whenever ``partial`` has new tiles.")
    progress = param.String(default="", doc="Tiles done, time, what the map shows.")

    KEY = "map"

    def __init__(self, owner: "AttractorController", **params):
        super().__init__(**params)
        self.owner = owner
        self._lock = threading.Lock()
        self._store = None            # the running map's MemoryStore (written by the job)
        self._seen = -1
        self._started = 0.0

    # ---------------------------------------------------------------- axes
    def axis_options(self) -> list[str]:
        """The current system's continuous parameters, then 'initial <variable>' for each variable."""
        try:
            sys_ = self.owner.current_system()
        except ExplorerError:
            return []
        return ([p.name for p in type(sys_).parameters if not p.integer]
                + [INITIAL + v for v in sys_.variables])

    def reset_axes(self) -> None:
        """Axes and box for a new system: its first two continuous parameters (or the first
        parameter and a start value), each around its current value."""
        opts = self.axis_options()
        self.history = []
        self.result = self.partial = None
        self.progress = ""
        if not opts:
            return
        params = [o for o in opts if not o.startswith(INITIAL)]
        pick = (params + [o for o in opts if o.startswith(INITIAL)])[:2]
        if len(pick) < 2:
            return
        (xl, xh), (yl, yh) = self._default_box(pick[0]), self._default_box(pick[1])
        self.param.update(x_axis=pick[0], y_axis=pick[1], x_low=xl, x_high=xh, y_low=yl, y_high=yh)

    def _default_box(self, name: str) -> tuple[float, float]:
        sys_ = self.owner.current_system()
        if name.startswith(INITIAL):
            i = sys_.variables.index(name[len(INITIAL):])
            v = float(self.owner.x0[i]) if i < len(self.owner.x0) else 0.0
            span = max(abs(v), 1.0)
            return v - span, v + span
        spec = type(sys_).param_spec(name)
        v = float(sys_.params[name])
        span = max(abs(v) * 0.25, 0.25)
        return max(spec.low, v - span), min(spec.high, v + span)

    def current_point(self) -> tuple[float | None, float | None]:
        """Where the attractor's parameters (or start) are on the map's axes."""
        return self._value_of(self.x_axis), self._value_of(self.y_axis)

    def _value_of(self, name: str) -> float | None:
        try:
            sys_ = self.owner.current_system()
        except ExplorerError:
            return None
        if name.startswith(INITIAL):
            var = name[len(INITIAL):]
            if var in sys_.variables and len(self.owner.x0) == sys_.dim:
                return float(self.owner.x0[sys_.variables.index(var)])
            return None
        v = sys_.params.get(name)
        return None if v is None else float(v)

    # ---------------------------------------------------------------- the map
    def spec(self) -> MapSpec:
        """The map the settings describe (raises :class:`ParameterError` with the reason)."""
        sys_ = self.owner.current_system()
        if not self.x_axis or not self.y_axis:
            raise ParameterError("choose two axes for the map")
        if self.x_axis == self.y_axis:
            raise ParameterError("choose two different axes")
        n = int(self.resolution)
        axes = []
        for name, lo, hi in ((self.x_axis, self.x_low, self.x_high), (self.y_axis, self.y_low, self.y_high)):
            axes.append(Axis(name[len(INITIAL):] if name.startswith(INITIAL) else name,
                             float(lo), float(hi), n))
        q = QUANTITY_LABELS[self.quantity]
        quantity = Quantity(q, sys_.variables[0]) if q == "mean" else Quantity(q)
        steps, transient = PAGE_STEPS["map" if sys_.is_map else "flow"]
        if q == "divergence":
            transient = 0
        dt = None if sys_.is_map else float(self.owner.dt)
        return MapSpec(sys_, axes[0], quantity, y=axes[1], steps=steps, transient=transient, dt=dt,
                       x0=tuple(float(v) for v in self.owner.x0))

    def request(self) -> None:
        """Compute the map over the current box (a background job; tiles arrive as they finish)."""
        try:
            spec = self.spec()
        except (ExplorerError, ValueError) as e:
            self.owner._error(self.KEY, str(e))
            return
        from ..sweeps import MemoryStore, run_map, shared_client, with_attractors

        self._seen = -1
        self._started = time.monotonic()
        self.partial = None
        device = self.owner._device()

        def work(stop, progress):
            s = with_attractors(spec)
            store = MemoryStore(s, PAGE_CHUNK)
            with self._lock:
                self._store = store

            def tick(run, tile, values):
                progress((run.computed + run.skipped) / max(1, run.tiles))
            return run_map(s, store=store, client=shared_client(), device=device, progress=tick,
                           stop=stop)

        self.owner._submit(self.KEY, work, f"parameter map ({spec.n_points:,} points)", threads=None)

    def refresh(self) -> bool:
        """Publish the tiles that arrived since the last call (UI thread); True if any did."""
        with self._lock:
            store = self._store
        if store is None:
            return False
        done = int(store.done.sum())
        if done == self._seen:
            return False
        self._seen = done
        total = store.done.size
        self.partial = (store.spec, store.values.copy())
        self.version += 1
        self.progress = (f"{done} of {total} tiles, {time.monotonic() - self._started:.1f} s"
                         if done < total else self.progress)
        return True

    def finished(self, run) -> None:
        """The job's end (UI thread): the whole map, or what was done before a stop."""
        self.refresh()
        with self._lock:
            self._store = None
        ds = run.dataset()
        self.result = ds
        spec = run.spec
        vals = ds[spec.quantity.output].values
        finite = np.isfinite(vals)
        note = "" if run.complete else f" (stopped: {run.computed + run.skipped} of {run.tiles} tiles)"
        summary = describe_map(spec, vals)
        slots = max(run.workers, 1)
        self.progress = (f"{spec.n_points:,} points in {run.seconds:.1f} s on the Dask cluster "
                         f"({slots} task{'s' if slots != 1 else ''} at once){note}. {summary}")
        if not finite.any() and spec.quantity.kind != "divergence":
            self.progress += " Every orbit diverged here: try a smaller box."

    def cancel(self) -> None:
        self.owner.cancel(self.KEY)

    # ---------------------------------------------------------------- zoom and click
    def zoom(self, x_low: float, x_high: float, y_low: float, y_high: float) -> None:
        """Recompute over a smaller box (kept inside the parameters' allowed ranges)."""
        box = self._clip(self.x_axis, x_low, x_high) + self._clip(self.y_axis, y_low, y_high)
        if not (box[1] > box[0] and box[3] > box[2]):
            return
        self.history = self.history + [(self.x_low, self.x_high, self.y_low, self.y_high)]
        self.param.update(x_low=box[0], x_high=box[1], y_low=box[2], y_high=box[3])
        self.request()

    def back(self) -> bool:
        """Return to the previous box; False when there is none."""
        if not self.history:
            return False
        *rest, box = self.history
        self.history = rest
        self.param.update(x_low=box[0], x_high=box[1], y_low=box[2], y_high=box[3])
        self.request()
        return True

    def _clip(self, name: str, lo: float, hi: float) -> tuple[float, float]:
        if name.startswith(INITIAL) or not name:
            return float(lo), float(hi)
        spec = self.owner.system_class().param_spec(name)
        return max(float(lo), spec.low), min(float(hi), spec.high)

    def jump(self, x: float, y: float) -> None:
        """Move the attractor to a clicked point of the map (its parameters or its start)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        x0 = list(self.owner.x0)
        changed_x0 = False
        sys_ = self.owner.current_system()
        for name, v in ((self.x_axis, x), (self.y_axis, y)):
            if name.startswith(INITIAL):
                x0[sys_.variables.index(name[len(INITIAL):])] = float(v)
                changed_x0 = True
            else:
                lo, hi = self._clip(name, v, v)
                self.owner.set_value(name, min(max(float(v), lo), hi))
        if changed_x0:
            self.owner.x0 = x0


def describe_map(spec: MapSpec, values: np.ndarray) -> str:
    """One sentence about a finished map (what the colours mean, and the extremes)."""
    q = spec.quantity.kind
    finite = values[np.isfinite(values)]
    if q == "lyapunov":
        if not finite.size:
            return ""
        chaotic = float((finite > 1e-3).mean())
        return (f"λ₁ from {finite.min():.3g} to {finite.max():.3g}; {100 * chaotic:.0f} % of the "
                "bounded points are chaotic (λ₁ > 0), blank points diverged.")
    if q == "period":
        if not finite.size:
            return ""
        ps = sorted({int(v) for v in finite if v > 0})
        shown = ", ".join(map(str, ps[:8])) + (" ..." if len(ps) > 8 else "")
        return (f"Periods found: {shown or 'none'}; 0 marks no period up to {spec.max_period} "
                "(chaos or quasi-periodicity).")
    if q == "basin":
        n = len(spec.attractors)
        return (f"{n} attractor{'s' if n != 1 else ''} found; -1 marks diverged starts, -2 starts "
                "that ended on none of them.")
    if q == "divergence":
        bounded = float(np.isinf(values).mean()) if values.size else 0.0
        return f"{100 * bounded:.0f} % of the points stayed bounded for the whole run."
    return ""
