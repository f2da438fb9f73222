"""The live-run platform: one background training run, and the run controller every
training page composes (param only: no Panel, no HoloViews, no Bokeh).

* :class:`RunLimit` (one instance, :data:`RUNS`): the server-wide limit of runs training at
  once (``EXPLORER_MAX_RUNS``, default 2); a refused start says ``busy: N runs active``.
* :class:`BackgroundRun`: the worker thread of one run. It builds the trainer (off the UI
  thread: data, model), calls its ``run(n, callbacks, stop)`` in chunks of about
  :data:`CHUNK_SECONDS`, queues one :class:`StepRecord` per step, computes a live *frame*
  between two steps every :data:`FRAME_SECONDS` (at most a quarter of the time), honours
  pause/stop through a stop event, and answers requests that need the model at rest
  (checkpoints) through a :class:`concurrent.futures.Future`, run between two steps.
* :class:`RunController`: the run's state as parameters (phase, step, progress, time left,
  rate, history of losses and metrics) and its actions (start, pause, resume, stop, reset,
  checkpoint download and upload). A page supplies its science through a few hooks:
  :meth:`~RunController.new_run` (what to train, validated on the UI thread, built in the
  worker) and optionally :meth:`~RunController.frame_of`, :meth:`~RunController.load_trainer`,
  :meth:`~RunController.on_run_end`.

The trainer is anything with ``run(n, callbacks, stop) -> event`` (events carry ``step``,
``losses``, ``metrics``, ``snapshot``, ``seconds``, ``eta``, ``status``, ``message``: see
:class:`explorer.training.TrainEvent`), ``step_count``, ``config.steps``, ``save(path)`` and
``snapshot()``: :class:`explorer.training.Trainer` and the generic training loop both are.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import param
import torch

from ..core.errors import ExplorerError, SizeLimitError
from .base import PageController, one_line
from .jobs import env_limit

log = logging.getLogger(__name__)

MAX_RUNS_ENV = "EXPLORER_MAX_RUNS"
#: torch threads of a training thread (default 1: two made small-batch training many times
#: slower on a loaded 2-core machine)
TRAIN_THREADS_ENV = "EXPLORER_TRAIN_THREADS"
#: a training thread runs ``Trainer.run`` in chunks of about this many seconds
CHUNK_SECONDS = 0.5
#: a live frame (free run of the model) is computed at most this often (s)
FRAME_SECONDS = 0.18
#: live frames take at most this share of a run's time (a running mean of their cost)
FRAME_SHARE = 0.25
#: the training status line is rewritten at most this often (s)
STATUS_SECONDS = 0.5
#: step records kept for the UI between two polls
MAX_QUEUED_STEPS = 200_000
#: largest accepted checkpoint upload
MAX_UPLOAD_BYTES = 64 * 2**20
PHASES = ("idle", "preparing", "running", "paused", "stopped", "done", "diverged", "error")


# ============================================================================ the limit
class RunLimit:
    """How many runs may train at once in this server process (all sessions together)."""

    def __init__(self, env: str = MAX_RUNS_ENV, default: int = 2):
        self.env, self.default = env, default
        self._lock = threading.Lock()
        self._active = 0

    def limit(self) -> int:
        return env_limit(self.env, self.default)

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def acquire(self) -> bool:
        """Take a slot without waiting; False when the limit is reached."""
        with self._lock:
            if self._active >= self.limit():
                return False
            self._active += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._active = max(0, self._active - 1)

    def busy_message(self) -> str:
        return (f"busy: {self.active} runs active (this server trains at most {self.limit()} "
                "at once); try again in a moment")


RUNS = RunLimit()


def worker_threads() -> None:
    """Limit the calling worker thread's intra-op parallelism (:data:`TRAIN_THREADS_ENV`)."""
    try:
        n = max(1, int(os.environ.get(TRAIN_THREADS_ENV, "1")))
    except ValueError:
        n = 1
    torch.set_num_threads(n)


_warm = threading.Event()


def warm_up() -> None:
    """Pay torch's one-time costs before the first Start (from a worker thread): the first
    optimiser built in a process imports ``torch._dynamo`` (1.5 s on this CPU)."""
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


# ============================================================================ records
@dataclass(frozen=True)
class StepRecord:
    """One optimisation step as the view needs it (plain floats): ``values`` holds the
    step's losses (``loss`` first, then what the trainer reports: ``grad_norm``, ``lr``, ...),
    readable as attributes (``record.loss``)."""

    step: int
    seconds: float
    eta: float | None
    values: dict[str, float]
    metrics: dict[str, float] | None

    def __getattr__(self, name: str) -> float:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def of(cls, ev) -> "StepRecord":
        return cls(int(ev.step), float(ev.seconds), None if ev.eta is None else float(ev.eta),
                   {k: float(v) for k, v in ev.losses.items()},
                   None if ev.metrics is None else {k: float(v) for k, v in ev.metrics.items()})


@dataclass(frozen=True)
class Progress:
    """What :meth:`RunController.poll` collected since the last poll."""

    records: list[StepRecord]
    frame: Any
    ended: bool
    reset: bool

    @property
    def empty(self) -> bool:
        return not self.records and self.frame is None and not self.ended and not self.reset


class _Halted(Exception):
    """The stop event was set (pause, stop, reset or close)."""


# ============================================================================ the thread
class BackgroundRun:
    """The worker thread of one training run and its hand-over structures (thread-safe).

    Args:
        build: ``build(run) -> trainer``, called in the worker thread (prepare data, build the
            model); it may call :meth:`show` with a first frame and should return soon after
            ``run.stop`` is set. Or pass ``trainer`` to continue an existing one.
        planned: ``planned(trainer) -> int``, the planned number of steps.
        frame: ``frame(trainer, last) -> picture`` between two steps (None: no live frames);
            ``last`` is True for the picture the run ends on (done, paused, stopped,
            diverged), which a page may make more complete than its quick live ones.
        finish: ``finish(trainer) -> value`` once at the end (a verdict); kept as ``final``.
        notify: called (from the worker thread) when the run has ended.
    """

    def __init__(self, *, build: Callable[["BackgroundRun"], Any] | None = None, trainer: Any = None,
                 planned: Callable[[Any], int], frame: Callable[[Any], Any] | None = None,
                 finish: Callable[[Any], Any] | None = None, notify: Callable[[], None] | None = None,
                 limit: RunLimit = RUNS, frame_seconds: float = FRAME_SECONDS,
                 frame_share: float = FRAME_SHARE):
        if build is None and trainer is None:
            raise ValueError("BackgroundRun needs a build function or a trainer")
        self.stop = threading.Event()
        self.reason = ""                       # "pause", "stop", "reset", "close"
        self.trainer = trainer
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.final: Any = None
        self.end: tuple[str, str] | None = None
        self._build, self._planned, self._frame_fn, self._finish_fn = build, planned, frame, finish
        self._notify, self._limit, self._frame_seconds = notify, limit, frame_seconds
        self._frame_share = min(max(float(frame_share), 0.01), 1.0)
        self._records: collections.deque = collections.deque(maxlen=MAX_QUEUED_STEPS)
        self._lock = threading.Lock()
        self._frame: Any = None
        self._frame_at = 0.0
        self._frame_cost: float | None = None   # running mean of a frame's cost (s)
        self._requests: list[tuple[Callable[[Any], Any], concurrent.futures.Future]] = []
        self._accepting = True
        self._slot = False
        self.thread: threading.Thread | None = None

    # ---------------------------------------------------------------- UI side
    def start(self) -> bool:
        """Take a slot of the server-wide limit and start; False (nothing started) if busy."""
        if not self._limit.acquire():
            return False
        self._slot = True
        self.thread = threading.Thread(target=self._main, name="explorer-train", daemon=True)
        self.thread.start()
        return True

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def halt(self, reason: str) -> bool:
        """Ask the thread to end after the current step (``pause``, ``stop``, ``reset``,
        ``close``); False if it is not running."""
        if not self.alive:
            return False
        self.reason = reason
        self.stop.set()
        return True

    def join(self, timeout: float | None = None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.alive

    def drain(self) -> tuple[list[StepRecord], Any, tuple[str, str] | None]:
        """The queued step records, the newest frame and, once the thread has ended, its end
        (phase, message)."""
        records = []
        while True:
            try:
                records.append(self._records.popleft())
            except IndexError:
                break
        with self._lock:
            frame, self._frame = self._frame, None
            end = self.end
        return records, frame, (end if end is not None and not self.alive else None)

    def request(self, fn: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run ``fn(trainer)`` with the model at rest: between two steps in the worker thread,
        or here when the thread has ended. The result (or exception) comes in the future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._accepting and self.alive:
                self._requests.append((fn, future))
                return future
        _answer(fn, self.trainer, future)
        return future

    # ---------------------------------------------------------------- worker side
    def show(self, frame: Any) -> None:
        """Publish a live picture (worker thread)."""
        with self._lock:
            self._frame = frame

    def _serve(self, *, last: bool = False) -> None:
        with self._lock:
            pending, self._requests = self._requests, []
            if last:
                self._accepting = False
        for fn, future in pending:
            _answer(fn, self.trainer, future)

    def _on_event(self, ev) -> None:
        if ev.losses:
            self._records.append(StepRecord.of(ev))
        if ev.snapshot is not None:
            self.snapshot = ev.snapshot
        if self._requests:
            self._serve()
        now = time.perf_counter()
        if ev.losses and self._frame_fn is not None and now >= self._frame_at:
            self._make_frame()                          # between two steps: the model is idle
            # frames take at most ``frame_share`` of the time, on average: a page may make a
            # costly picture now and then (details once a second) between quick ones
            took = time.perf_counter() - now
            c = self._frame_cost
            self._frame_cost = took if c is None else 0.75 * c + 0.25 * took
            self._frame_at = now + max(self._frame_seconds, self._frame_cost / self._frame_share)

    def _make_frame(self, last: bool = False) -> None:
        if self._frame_fn is None or self.trainer is None:
            return
        try:
            self.show(self._frame_fn(self.trainer, last))
        except ExplorerError:
            pass

    def _main(self) -> None:
        phase, message = "error", ""
        trainer = self.trainer
        try:
            worker_threads()
            if trainer is None:
                trainer = self._build(self)
                if self.stop.is_set():
                    raise _Halted()
                self.trainer = trainer
            chunk = 5
            while True:
                remaining = self._planned(trainer) - trainer.step_count
                if remaining <= 0:
                    phase, message = "done", f"done: {trainer.step_count:,} steps"
                    self._make_frame(last=True)
                    break
                if self.stop.is_set():
                    raise _Halted()
                t0, n0 = time.perf_counter(), trainer.step_count
                ev = trainer.run(min(chunk, remaining), callbacks=[self._on_event], stop=self.stop)
                took, done = time.perf_counter() - t0, trainer.step_count - n0
                if done > 0 and took > 0:               # next chunk: about CHUNK_SECONDS
                    chunk = int(min(max(1, done * CHUNK_SECONDS / took), 10_000))
                if ev.status == "diverged":
                    phase, message = "diverged", ev.message
                    self._make_frame(last=True)
                    break
                if ev.status == "stopped":
                    raise _Halted()
        except _Halted:
            reason = self.reason or "pause"
            if trainer is None or self.trainer is None:  # halted while preparing
                phase, message = "idle", "cancelled before the first step"
            else:
                phase = "paused" if reason == "pause" else "stopped"
                message = f"{phase} at step {trainer.step_count:,}"
                if reason in ("pause", "stop"):
                    self._make_frame(last=True)
        except ExplorerError as e:
            phase, message = "error", one_line(e)
        except MemoryError:
            phase, message = "error", "out of memory: use a smaller model, batch or data set"
        except Exception as e:  # a bug: log it, show one line
            phase = "error"
            message = f"internal error ({type(e).__name__}: {one_line(e)}); details are in the server log"
            log.exception("training run failed")
        finally:
            self._serve()
            if self.trainer is not None:
                try:
                    self.snapshot = self.trainer.snapshot()
                except Exception as e:                  # never lose the run's end over it
                    log.warning("snapshot failed: %s", one_line(e))
                if (self._finish_fn is not None and self.reason not in ("reset", "close")
                        and phase != "error" and self.trainer.step_count):
                    try:
                        self.final = self._finish_fn(self.trainer)
                    except Exception as e:
                        log.warning("end-of-run evaluation failed: %s", one_line(e))
            self._serve(last=True)
            with self._lock:
                self.end = (phase, message)
            if self._slot:
                self._slot = False
                self._limit.release()
            if self._notify is not None:
                try:
                    self._notify()
                except Exception:
                    pass


def _answer(fn, trainer, future: concurrent.futures.Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn(trainer))
    except BaseException as e:  # handed to the caller
        future.set_exception(e)


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 5 s"``, ``"1 h 2 min"``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"


# ============================================================================ the controller
class RunController(PageController):
    """The state and actions of one live training run per session.

    A page subclasses it and supplies :meth:`new_run` (and optionally the other hooks);
    everything else (thread, limit, pause/resume, history, progress text, checkpoints) is
    here. ``history`` holds one list per step value (``step``, ``loss``, ...),
    ``metric_history`` one dict per evaluation, ``last_frame`` the newest live picture.
    """

    steps = param.Integer(default=1000, bounds=(1, 10_000_000), doc="Planned optimisation steps.")
    phase = param.Selector(default="idle", objects=list(PHASES), doc="What the training run is doing.")
    step = param.Integer(default=0, doc="Optimisation steps done.")
    progress = param.Number(default=0.0, bounds=(0.0, 1.0), doc="Fraction of the planned steps done.")
    eta = param.Number(default=None, allow_None=True, doc="Estimated seconds to the planned steps.")
    rate = param.Number(default=None, allow_None=True, doc="Optimisation steps per second.")
    run_version = param.Integer(default=0, doc="Bumped when the loss history restarts (start, reset, load).")

    #: the page's name in checkpoint file names
    run_name = "model"
    #: a live frame at most this often (s); a page whose frames are cheap may ask for more
    frame_seconds = FRAME_SECONDS
    #: the share of the run's time its live frames may take (on average)
    frame_share = FRAME_SHARE

    def __init__(self, **params):
        super().__init__(**params)
        self._run: BackgroundRun | None = None
        self._trainer: Any = None
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._reset_pending = False
        self._end_message = ""
        self._last_values: dict[str, float] = {}
        self._last_metrics: dict[str, float] | None = None
        self.history: dict[str, list[float]] = {"step": []}
        self.metric_history: list[dict[str, float]] = []
        self.last_frame: Any = None
        self._status_at = 0.0

    # ================================================================ hooks for pages
    def new_run(self) -> Callable[[BackgroundRun], Any]:
        """Validate the settings (UI thread; raise :class:`ExplorerError` with a one-line
        message) and return ``build(run) -> trainer`` for the worker thread."""
        raise NotImplementedError

    def frame_of(self, trainer, last: bool = False) -> Any:
        """A live picture of the model (worker thread, between two steps); None: none.
        ``last``: the picture the run ends on (done, paused, stopped, diverged), shown until
        the next run; a page whose live pictures leave out costly parts makes this one whole."""
        return None

    def on_frame(self, frame) -> None:
        """A new picture from the run (UI thread, at a poll; the run's last picture comes
        before :meth:`on_final` and :meth:`on_run_end`). It is also in ``last_frame``."""

    def finish_of(self, trainer) -> Any:
        """A value computed once when a run ends (worker thread), passed to
        :meth:`on_final`; None: nothing."""
        return None

    def on_final(self, value) -> None:
        """The value of :meth:`finish_of` (UI thread)."""

    def on_trainer(self, run: BackgroundRun) -> None:
        """The worker built its trainer (UI thread, at the next poll)."""

    def on_records(self, records: list[StepRecord]) -> None:
        """New step records were added to the history (UI thread)."""

    def on_run_end(self, phase: str) -> None:
        """A run ended as ``phase`` (done, paused, stopped, diverged; UI thread)."""

    def progress_extra(self) -> list[str]:
        """More parts of the progress line (``"D_stsp 1.2"``)."""
        return []

    def planned(self, trainer) -> int:
        """The planned steps of ``trainer`` (``config.steps`` or ``config.planned_steps``)."""
        cfg = trainer.config
        return int(cfg.steps if hasattr(cfg, "steps") else cfg.planned_steps)

    def set_planned(self, trainer, steps: int) -> None:
        """Extend (or shorten) a paused run's plan to ``steps``."""
        cfg = trainer.config
        key = "steps" if hasattr(cfg, "steps") else "planned_steps"
        trainer.config = cfg.replace(**{key: max(int(steps), 1)})

    def load_trainer(self, path: Path) -> Any:
        """A trainer restored from a checkpoint file (``weights_only=True``)."""
        raise ExplorerError("this page cannot load checkpoints")

    def on_loaded(self, trainer, name: str) -> None:
        """Settings and views follow a loaded trainer (UI thread)."""

    def checkpoint_filename(self) -> str:
        tr = self.trainer
        return f"{self.run_name}-step{tr.step_count if tr is not None else 0}.pt"

    # ================================================================ state
    @property
    def running(self) -> bool:
        """A training thread is alive (training, or finishing its current step)."""
        return self._run is not None and self._run.alive

    @property
    def trainer(self):
        return self._trainer

    @property
    def last_metrics(self) -> dict[str, float] | None:
        """The newest evaluation of the run (None before the first)."""
        return self._last_metrics

    def busy(self) -> bool:
        if self._closed:                          # nothing more is shown once the tab closed
            return False
        return self._run is not None or bool(self.jobs.running())

    def can_resume(self) -> bool:
        return (self._trainer is not None and not self.running
                and self.phase in ("paused", "diverged", "done"))

    # ================================================================ actions
    def start(self) -> bool:
        """Start a new run from fresh weights (the previous run is discarded)."""
        if self._closed:
            return False
        if self.running:
            self.status = "a run is already training: pause or stop it first"
            return False
        try:
            build = self.new_run()
        except ExplorerError as e:
            self._error("run", one_line(e))
            return False
        if not self._launch(build=build):
            return False
        self._trainer = None
        self._snapshot = None
        self._clear_history()
        self._clear_error("run")
        self.param.update(step=0, progress=0.0, eta=None, rate=None, phase="preparing",
                          run_version=self.run_version + 1)
        self.status = "preparing the run ..."
        return True

    def resume(self) -> bool:
        """Continue the paused run; a larger ``steps`` extends its plan."""
        if self._closed:
            return False
        if self.running:
            self.status = "the run is already training"
            return False
        tr = self._trainer
        if tr is None:
            self._error("run", "nothing to resume: press Start")
            return False
        if self.phase == "stopped":
            self.status = "the run was stopped: press Start to train a new model"
            return False
        if self.steps != self.planned(tr):
            try:
                self.set_planned(tr, self.steps)
            except ExplorerError as e:
                self._error("run", one_line(e))
                return False
        if tr.step_count >= self.planned(tr):
            self.status = (f"the plan of {self.planned(tr):,} steps is complete: raise 'Steps' "
                           "to train further")
            return False
        if not self._launch(trainer=tr):
            return False
        self._clear_error("run")
        self.phase = "running"
        self.status = f"resuming at step {tr.step_count:,} ..."
        return True

    def _launch(self, **source) -> bool:
        """Start a :class:`BackgroundRun` (``build=`` or ``trainer=``); False when the
        server-wide limit is reached (the error says so)."""
        run = BackgroundRun(**source, planned=self.planned, frame=self.frame_of,
                            finish=self.finish_of, notify=self.jobs.notify,
                            frame_seconds=self.frame_seconds, frame_share=self.frame_share)
        if not run.start():
            self._error("run", RUNS.busy_message())
            return False
        self._run = run
        return True

    def pause(self) -> bool:
        """Stop training after the current step; :meth:`resume` continues."""
        if self._run is not None and self._run.halt("pause"):
            self.status = "pausing ..."
            return True
        return False

    def stop(self) -> bool:
        """End the run after the current step."""
        if not self.running and self._trainer is not None and self.phase == "paused":
            self.phase = "stopped"
            self.status = f"stopped at step {self.step:,} · Start trains a new model"
            return True
        if self._run is not None and self._run.halt("stop"):
            self.status = "stopping ..."
            return True
        return False

    def reset(self) -> None:
        """Stop any run and forget the model and its history."""
        self._discard_run()
        self._trainer = None
        self._snapshot = None
        self._clear_history()
        self.param.update(step=0, progress=0.0, eta=None, rate=None, phase="idle",
                          run_version=self.run_version + 1)
        self._clear_error("run")
        self.status = "reset: press Start to train"

    def _discard_run(self) -> None:
        run, self._run = self._run, None
        if run is not None and run.halt("reset"):
            run.join(10.0)

    def _clear_history(self) -> None:
        self.history = {"step": []}
        self.metric_history = []
        self.last_frame = None
        self._last_values = {}
        self._last_metrics = None
        self._reset_pending = True

    # ================================================================ UI thread
    def poll(self) -> Progress:
        """Collect the run's steps, frame and end and the finished jobs; update the state.
        Nothing once the session has closed (a tick scheduled before the close may still come)."""
        if self._closed:
            return Progress([], None, False, False)
        run = self._run
        records: list[StepRecord] = []
        frame, ended = None, False
        if run is not None:
            records, frame, end = run.drain()
            if run.trainer is not None and self._trainer is not run.trainer:
                self._trainer = run.trainer
                if self.phase == "preparing":
                    self.phase = "running"
                self.on_trainer(run)
            if run.snapshot is not None:
                self._snapshot = run.snapshot
            if end is not None:
                ended = True
                self._run = None
        if records:
            self._record(records)
        if frame is not None:
            self.last_frame = frame
            self.on_frame(frame)
        if ended:
            self._finish(run, *end)
        super().poll()
        now = time.monotonic()
        if records and not ended and self.running and now - self._status_at >= STATUS_SECONDS:
            self._status_at = now              # the status line is re-laid out by the browser:
            self.status = "training: " + " · ".join(self._progress_parts())   # twice a second
        reset, self._reset_pending = self._reset_pending, False
        return Progress(records, frame, ended, reset)

    def _record(self, records: list[StepRecord]) -> None:
        h = self.history
        n = len(h["step"])
        for r in records:
            h["step"].append(r.step)
            for k, v in r.values.items():
                h.setdefault(k, [math.nan] * n).append(v)
            n += 1
            for k, col in h.items():                  # a value missing from this step
                if len(col) < n:
                    col.append(math.nan)
            if r.metrics is not None:
                self.metric_history.append({"step": r.step, **r.metrics})
                self._last_metrics = r.metrics
        last = records[-1]
        self._last_values = last.values
        if len(records) >= 2 and last.seconds > records[0].seconds:
            rate = (last.step - records[0].step) / (last.seconds - records[0].seconds)
            self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate
        total = self.planned(self._trainer) if self._trainer is not None else self.steps
        self.param.update(step=last.step, progress=min(1.0, last.step / max(total, 1)),
                          eta=last.eta if last.eta is None or math.isfinite(last.eta) else None)
        self.on_records(records)

    def _progress_parts(self) -> list[str]:
        total = self.planned(self._trainer) if self._trainer is not None else self.steps
        parts = [f"step {self.step:,} / {total:,}",
                 f"loss {self._last_values.get('loss', math.nan):.4g}"]
        if self.rate:
            parts.append(f"{self.rate:.0f} steps/s")
        if self.eta is not None:
            parts.append(f"{duration(self.eta)} left")
        return parts + self.progress_extra()

    def _finish(self, run: BackgroundRun, phase: str, message: str) -> None:
        if run.trainer is not None:
            self._trainer = run.trainer
        if run.snapshot is not None:
            self._snapshot = run.snapshot
        if run.reason in ("reset", "close"):
            return
        if run.final is not None:
            self.on_final(run.final)
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
            final = self.final_text()
            then = " · Start trains a new model" if phase == "stopped" else ""
            self._end_message = message + rate + (f" · {final}" if final else "") + then
            self.status = self._end_message
        if self._trainer is not None:
            n = self._trainer.step_count
            self.param.update(step=n, progress=min(1.0, n / max(self.planned(self._trainer), 1)), eta=None)
        self.on_run_end(phase)

    def final_text(self) -> str:
        """A short judgement of the final model for the end-of-run status (optional)."""
        return ""

    def wait(self, timeout: float = 60.0) -> Progress:
        """Block until the run and every job have finished, then poll (tests, notebooks).
        Returns everything collected."""
        deadline = time.monotonic() + timeout
        records: list[StepRecord] = []
        frame, ended, reset = None, False, False
        while True:
            run = self._run
            if run is not None:
                run.join(max(0.0, min(0.1, deadline - time.monotonic())))
            else:
                self.jobs.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            p = self.poll()
            records += p.records
            frame = p.frame if p.frame is not None else frame
            ended |= p.ended
            reset |= p.reset
            if (self._run is None and not self.jobs.running()) or time.monotonic() >= deadline:
                return Progress(records, frame, ended, reset)

    # ================================================================ checkpoints
    def checkpoint_bytes(self, timeout: float = 30.0) -> bytes:
        """The current training state as checkpoint bytes, taken between two steps when a
        run is training.

        Raises:
            ExplorerError: nothing trained yet, or the save failed.
        """
        run = self._run
        if self._trainer is None and (run is None or run.trainer is None):
            raise ExplorerError("nothing to download yet: start a training run first")
        with tempfile.TemporaryDirectory(prefix="explorer-ckpt-") as d:
            path = Path(d) / "model.pt"

            def save(trainer):
                if trainer is None:
                    raise ExplorerError("nothing trained yet")
                trainer.save(path)
                return path.read_bytes()

            future = run.request(save) if run is not None else None
            try:
                if future is None:
                    return save(self._trainer)
                return future.result(timeout)
            except concurrent.futures.TimeoutError:
                raise ExplorerError("the checkpoint could not be taken (the run is busy); try again") from None
            except ExplorerError:
                raise
            except Exception as e:
                raise ExplorerError(f"saving failed: {one_line(e)}") from e

    def load_checkpoint(self, content: bytes, filename: str = "checkpoint.pt") -> bool:
        """Restore a run from checkpoint bytes (read with ``weights_only=True``); it can then
        be resumed. A running run is discarded once the file has been read (a refused file
        leaves it as it was). Returns success."""
        name = Path(str(filename or "checkpoint.pt")).name
        try:
            if not content:
                raise ExplorerError(f"{name} is empty")
            if len(content) > MAX_UPLOAD_BYTES:
                raise SizeLimitError(f"{name} is over the upload limit of {MAX_UPLOAD_BYTES / 2**20:.0f} MiB")
            with tempfile.TemporaryDirectory(prefix="explorer-ckpt-") as d:
                path = Path(d) / "upload.pt"
                path.write_bytes(content)
                tr = self.load_trainer(path)
            self._discard_run()              # only once the file is good: a bad one loses nothing
            self.poll()
        except ExplorerError as e:
            self._error("checkpoint", f"{name}: {one_line(e)}" if not str(e).startswith(name) else one_line(e))
            return False
        except Exception as e:
            self._error("checkpoint", f"{name} is not a readable checkpoint ({type(e).__name__})")
            return False
        self._run = None
        self._trainer = tr
        self._snapshot = tr.snapshot()
        self._clear_history()
        self.history = {k: list(v) for k, v in getattr(tr, "history", {"step": []}).items()}
        self.history.setdefault("step", [])
        self.metric_history = [dict(m) for m in getattr(tr, "metric_history", [])]
        self._last_values = {k: v[-1] for k, v in self.history.items() if v and k != "step"}
        self._last_metrics = self.metric_history[-1] if self.metric_history else None
        with self.suspended():
            self.steps = max(self.planned(tr), 1)
        self.param.update(step=tr.step_count, progress=min(1.0, tr.step_count / max(self.planned(tr), 1)),
                          eta=None, rate=None, phase="paused", run_version=self.run_version + 1)
        self._clear_error("checkpoint")
        self._clear_error("run")
        self.status = f"loaded {name} at step {tr.step_count:,}; Resume continues training"
        self.on_loaded(tr, name)
        return True

    # ================================================================ lifetime
    def close(self) -> None:
        """Stop the run and every job (the browser session closed)."""
        run = self._run
        if run is not None:
            run.halt("close")
        super().close()

    def join(self, timeout: float = 10.0) -> bool:
        """Wait for the training thread to end (after :meth:`close`); False on timeout."""
        run = self._run
        return True if run is None else run.join(timeout)
