"""Live mode: an ensemble of trajectories advanced in a worker thread, with fading trails.

The interaction grammar follows DynamicalSystems.jl's interactive apps: run, pause, single
step, reset, a speed (steps per frame); parameter changes apply to the running ensemble; a
click sets a new initial condition and restarts the ensemble around it.

The worker advances the ensemble (float32, rendering precision) and keeps the last
``trail`` frames in a ring buffer; the page reads :meth:`LiveEnsemble.frame` from a periodic
callback, so drawing and computing run at independent rates. Pure Python and torch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ExplorerError, ParameterError
from ..core.simulate import iterate
from ..core.system import DynamicalSystem


@dataclass(frozen=True)
class Frame:
    """A snapshot: ``trails`` (L, B, D) oldest first (NaN where not yet filled or diverged)."""

    index: int
    t: float
    trails: np.ndarray
    n_diverged: int


class LiveEnsemble:
    """``n`` trajectories around ``x0`` advancing ``steps_per_frame`` steps per frame.

    Args:
        system: the system (its parameters may be replaced while running, :meth:`set_system`).
        x0: centre of the ensemble, (D,).
        n: ensemble size; ``spread``: relative size of the initial cloud.
        trail: number of frames kept for the fading trails.
        fps: frames computed per second at most while playing.
    """

    def __init__(self, system: DynamicalSystem, x0, *, n: int = 1000, trail: int = 24,
                 steps_per_frame: int = 2, dt: float | None = None, solver: str | None = None,
                 spread: float = 0.05, fps: float = 40.0, device="cpu", seed: int = 0):
        if not 1 <= int(n) <= 100_000:
            raise ParameterError(f"live ensemble size must be 1..100,000, got {n}")
        if not 2 <= int(trail) <= 500:
            raise ParameterError(f"trail length must be 2..500 frames, got {trail}")
        self.system, self.n, self.trail = system, int(n), int(trail)
        self.dt, self.solver, self.spread, self.device = dt, solver, float(spread), device
        self.fps, self.seed = float(fps), int(seed)
        self.steps_per_frame = int(steps_per_frame)
        self._x0 = torch.as_tensor(x0, dtype=torch.float32).reshape(-1)
        self._lock = threading.Lock()
        self._playing = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self._start()

    # ------------------------------------------------------------------ state
    def _start(self) -> None:
        """(Re)build the generator and an empty trail buffer around the current x0."""
        gen = torch.Generator().manual_seed(self.seed)
        if self.system.dim != self._x0.numel():
            raise ParameterError(f"initial condition has {self._x0.numel()} values, the system "
                                 f"needs {self.system.dim}")
        noise = torch.randn(self.n, self.system.dim, generator=gen, dtype=torch.float32)
        noise[0] = 0.0                                              # member 0 starts at x0
        x0 = self._x0 + self.spread * (1.0 + self._x0.abs()) * noise          # (B, D)
        self._gen = iterate(self.system, x0, dt=self.dt, solver=self.solver,
                            steps_per_frame=1, dtype=torch.float32, device=self.device)
        t, x = next(self._gen)
        self._ring = np.full((self.trail, self.n, self.system.dim), np.nan, dtype=np.float32)
        self._ring[-1] = x.cpu().numpy()
        self._t, self._index, self._n_div = t, 0, 0

    def reset(self, x0=None) -> None:
        """Restart the ensemble (around ``x0`` when given)."""
        with self._lock:
            if x0 is not None:
                x = torch.as_tensor(x0, dtype=torch.float32).reshape(-1)
                if x.numel() != self.system.dim or not torch.isfinite(x).all():
                    raise ParameterError(f"initial condition must be {self.system.dim} finite numbers")
                self._x0 = x
            self._start()

    def set_system(self, system: DynamicalSystem) -> None:
        """New parameter values for the running ensemble (same system class and dimension)."""
        with self._lock:
            if type(system) is not type(self.system) or system.dim != self.system.dim:
                self.system = system
                self._x0 = torch.as_tensor(system.default_x0, dtype=torch.float32)
                self._start()
                return
            self.system = system
            try:
                self._gen.send(system)
            except ExplorerError:
                self._start()

    def set_speed(self, steps_per_frame: int) -> None:
        if not 1 <= int(steps_per_frame) <= 1000:
            raise ParameterError("speed must be 1..1000 steps per frame")
        self.steps_per_frame = int(steps_per_frame)

    def step(self) -> Frame:
        """Advance one frame (``steps_per_frame`` steps) and return it."""
        with self._lock:
            x = None
            for _ in range(self.steps_per_frame):
                t, x = next(self._gen)
            xs = x.cpu().numpy()
            self._ring = np.roll(self._ring, -1, axis=0)
            self._ring[-1] = xs
            self._t, self._index = t, self._index + 1
            self._n_div = int((~np.isfinite(xs).all(-1)).sum())
            return self._frame()

    def _frame(self) -> Frame:
        return Frame(index=self._index, t=float(self._t), trails=self._ring.copy(),
                     n_diverged=self._n_div)

    def frame(self) -> Frame:
        """The latest frame (a copy; safe to use from another thread)."""
        with self._lock:
            return self._frame()

    # ------------------------------------------------------------------ playing
    @property
    def playing(self) -> bool:
        return self._playing.is_set()

    def play(self) -> None:
        """Advance continuously in a worker thread (at most ``fps`` frames per second)."""
        if self._closed.is_set():
            raise ExplorerError("the live ensemble was closed")
        self._playing.set()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="explorer-live", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        self._playing.clear()

    def close(self) -> None:
        self._closed.set()
        self._playing.clear()

    def _loop(self) -> None:
        period = 1.0 / self.fps
        while not self._closed.is_set() and self._playing.is_set():
            t0 = time.perf_counter()
            try:
                self.step()
            except Exception as e:  # report in the page, stop playing; never crash the server
                self.error = f"live mode stopped: {e}"
                self._playing.clear()
                return
            rest = period - (time.perf_counter() - t0)
            if rest > 0:
                time.sleep(rest)
