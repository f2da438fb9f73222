"""Background jobs for one session: compute off the UI thread, newest request wins.

A page submits work under a *key* ("attractor", "lyapunov", ...). Each key has at most one
current job: a new submission under the same key sets the previous job's stop event and
bumps the key's generation, so a superseded job stops at its next check and its result,
if it still arrives, is dropped. Finished jobs wait in a queue until the UI thread
collects them with :meth:`JobRunner.poll` (a Panel periodic or next-tick callback), so the
worker threads never touch a document.

Pure Python (threading only): tested without a browser.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.errors import ExplorerError


@dataclass
class Job:
    """One submitted computation (mutable while it runs)."""

    key: str
    generation: int
    label: str
    stop: threading.Event = field(default_factory=threading.Event)
    progress: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None


@dataclass(frozen=True)
class Done:
    """A finished, current job: either ``value`` or an ``error`` message (never both).

    ``internal`` is True when the error was not an :class:`ExplorerError` (a bug): the
    message is then a short summary, and the traceback went to the log, not to the page.
    """

    key: str
    label: str
    value: Any = None
    error: str | None = None
    internal: bool = False
    seconds: float = 0.0
    stopped: bool = False


_RUNNERS: "weakref.WeakSet[JobRunner]" = weakref.WeakSet()

#: environment variable: most background jobs computing at once in one process (all sessions)
MAX_JOBS_ENV = "EXPLORER_MAX_JOBS"


def env_limit(env: str, default: int) -> int:
    """A positive count from environment variable ``env`` (``default`` when unset or not a
    number)."""
    import os
    try:
        return max(1, int(os.environ.get(env, str(default))))
    except ValueError:
        return default


class Admission:
    """Server-wide slots for background jobs, so that one session's heavy work cannot starve
    the others: at most :meth:`limit` jobs compute at once (default: twice the cores, at least 4;
    ``EXPLORER_MAX_JOBS``); the rest wait in a queue. A freed slot goes to the waiting job
    whose session holds the fewest slots (oldest first among equals), so a session with
    many jobs cannot keep the others out. A job waiting is stopped like a running one.
    """

    def __init__(self, env: str = MAX_JOBS_ENV):
        import os
        self.env = env
        self.default = max(4, 2 * (os.cpu_count() or 1))
        self._cond = threading.Condition()
        self._active: dict[int, int] = {}                 # owner id -> slots held
        self._waiting: list[tuple[int, Job]] = []          # arrival order

    def limit(self) -> int:
        return env_limit(self.env, self.default)

    @property
    def active(self) -> int:
        with self._cond:
            return sum(self._active.values())

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _next(self) -> tuple[int, Job] | None:
        if not self._waiting:
            return None
        return min(self._waiting, key=lambda w: self._active.get(w[0], 0))   # min is stable

    def acquire(self, owner: object, job: Job) -> bool:
        """Wait for a slot (False when ``job.stop`` is set first)."""
        me = (id(owner), job)
        with self._cond:
            self._waiting.append(me)
            try:
                while True:
                    if job.stop.is_set():
                        return False
                    if sum(self._active.values()) < self.limit() and self._next() is me:
                        self._active[me[0]] = self._active.get(me[0], 0) + 1
                        return True
                    self._cond.wait(0.1)
            finally:
                self._waiting.remove(me)
                self._cond.notify_all()

    def release(self, owner: object) -> None:
        with self._cond:
            k = id(owner)
            n = self._active.get(k, 0) - 1
            if n > 0:
                self._active[k] = n
            else:
                self._active.pop(k, None)
            self._cond.notify_all()

    def position(self, job: Job) -> int | None:
        """How many jobs are ahead of ``job`` in the queue (None: not waiting)."""
        with self._cond:
            order = sorted(range(len(self._waiting)),
                           key=lambda i: (self._active.get(self._waiting[i][0], 0), i))
            for rank, i in enumerate(order):
                if self._waiting[i][1] is job:
                    return rank
        return None


#: the process's admission (every page's jobs share it)
ADMISSION = Admission()


@atexit.register
def _close_all(timeout: float = 2.0) -> None:
    """At interpreter exit, stop every runner's jobs and let them finish briefly: a daemon
    thread still inside torch while Python tears down can abort the process ("terminate
    called without an active exception") when a script ends right after making a page."""
    runners = list(_RUNNERS)
    threads = [j.thread for r in runners for j in r.running() if j.thread is not None]
    for r in runners:
        r.close()
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))


class JobRunner:
    """Per-session runner of superseding background jobs.

    Args:
        notify: called (from the worker thread) after a job finishes, e.g. to schedule a
            UI-thread :meth:`poll`; must be thread-safe.
        log: where internal errors' tracebacks go (default: this module's logger, which the
            server prints to stderr).
    """

    def __init__(self, notify: Callable[[], None] | None = None,
                 log: Callable[[str], None] | None = None,
                 admission: Admission | None = ADMISSION):
        self.admission = admission
        self._lock = threading.Lock()
        self._current: dict[str, Job] = {}
        self._generation: dict[str, int] = {}
        self._done: queue.Queue[Done] = queue.Queue()
        self._closed = False
        self.notify = notify
        self._log = log or logging.getLogger(__name__).error
        _RUNNERS.add(self)

    # ------------------------------------------------------------------ submit
    def submit(self, key: str, fn: Callable[..., Any], *, label: str = "") -> Job:
        """Run ``fn(stop=Event, progress=callable)`` in a thread, superseding ``key``'s job."""
        with self._lock:
            if self._closed:
                raise ExplorerError("this session has closed")
            old = self._current.get(key)
            if old is not None:
                old.stop.set()
            gen = self._generation.get(key, 0) + 1
            self._generation[key] = gen
            job = Job(key=key, generation=gen, label=label or key)
            self._current[key] = job

        def progress(fraction: float) -> None:
            job.progress = float(min(max(fraction, 0.0), 1.0))

        def work() -> None:
            value, error, internal = None, None, False
            admitted = False
            try:
                if self.admission is not None:
                    admitted = self.admission.acquire(self, job)
                    if not admitted:                  # stopped while waiting
                        raise ExplorerError("stopped before it started")
                job.started = time.perf_counter()
                value = fn(stop=job.stop, progress=progress)
            except ExplorerError as e:
                error = str(e)
            except MemoryError:
                error = "out of memory: ask for fewer trajectories or a shorter run"
            except Exception as e:  # a bug: log it, show one line
                internal = True
                error = f"internal error ({type(e).__name__}: {e}); details are in the server log"
                self._log(traceback.format_exc())
            finally:
                if admitted:
                    self.admission.release(self)
            self._finish(job, value, error, internal)

        job.thread = threading.Thread(target=work, name=f"explorer-{key}-{gen}", daemon=True)
        job.thread.start()
        return job

    def _finish(self, job: Job, value, error, internal) -> None:
        with self._lock:
            current = self._current.get(job.key) is job
            if current:
                del self._current[job.key]
        if not current:
            return                                   # superseded: drop the result
        self._done.put(Done(key=job.key, label=job.label, value=value, error=error,
                            internal=internal, seconds=time.perf_counter() - job.started,
                            stopped=job.stop.is_set()))
        if self.notify is not None:
            try:
                self.notify()
            except Exception:  # the document may be gone (session closed)
                pass

    # ------------------------------------------------------------------ UI thread
    def poll(self) -> list[Done]:
        """Finished current jobs since the last poll (call from the UI thread)."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def queue_position(self) -> tuple[Job, int] | None:
        """The first of this runner's jobs that waits for a slot, and how many jobs are ahead
        of it (None: none waits)."""
        if self.admission is None:
            return None
        for job in self.running():
            n = self.admission.position(job)
            if n is not None:
                return job, n
        return None

    def running(self) -> list[Job]:
        """Jobs still running, oldest first."""
        with self._lock:
            return sorted(self._current.values(), key=lambda j: j.started)

    def is_running(self, key: str) -> bool:
        with self._lock:
            return key in self._current

    def cancel(self, key: str) -> bool:
        """Stop ``key``'s job; its result is dropped. True if one was running."""
        with self._lock:
            job = self._current.pop(key, None)
            self._generation[key] = self._generation.get(key, 0) + 1
        if job is None:
            return False
        job.stop.set()
        return True

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until no job runs (tests, notebooks, CLI); False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            jobs = self.running()
            if not jobs:
                return True
            t = jobs[0].thread
            if t is not None:
                t.join(max(0.0, min(0.05, end - time.monotonic())))
        return not self.running()

    def close(self) -> None:
        """Stop every job and refuse new ones (the session closed)."""
        with self._lock:
            self._closed = True
            jobs = list(self._current.values())
            self._current.clear()
        for job in jobs:
            job.stop.set()

    @property
    def closed(self) -> bool:
        return self._closed
