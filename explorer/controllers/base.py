"""What every page's controller shares (param only: no Panel, no HoloViews, no Bokeh).

* :class:`PageController`: the status line, one error message per key, the compute device,
  the session's :class:`~explorer.controllers.jobs.JobRunner` (``_submit`` runs work off the
  UI thread on one torch thread, ``poll`` publishes what finished, ``wait`` blocks for tests
  and notebooks) and ``close`` when the browser session ends.
* :class:`SystemSource`: the system a page simulates: a registry name (built-in, dysts) or
  typed custom equations, with live checking of what is typed.

A page controller subclasses one of them (a training page subclasses
:class:`explorer.controllers.run.RunController`, itself a :class:`PageController`) and adds
only its own science: settings, results and the requests that compute them.
"""

from __future__ import annotations

import contextlib
import html
import time
import weakref
from collections.abc import Mapping
from typing import Any, Callable

import param
import torch

from ..core.custom import parse_param_assignments, parse_system, validate_equations
from ..core.device import available_devices, default_device, describe_device, parse_device
from ..core.errors import ExplorerError, ParameterError
from ..core.registry import system_class, system_names
from ..core.system import DynamicalSystem
from .jobs import Done, JobRunner

CUSTOM = "custom"
DEFAULT_EQUATIONS = "dx/dt = sigma*(y - x)\ndy/dt = x*(rho - z) - y\ndz/dt = x*y - beta*z"
DEFAULT_CUSTOM_PARAMS = "sigma = 10, rho = 28, beta = 2.6667"


def plain_query(query) -> dict[str, str]:
    """URL query values as one string per key (Panel gives lists of bytes or str)."""
    q = {k: (v[0] if isinstance(v, (list, tuple)) and v else v) for k, v in dict(query).items()}
    return {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in q.items()}


def query_value(p: param.Parameter, text: str):
    """A URL query string as the value of parameter ``p``: int for an Integer, float for a
    Number, the text otherwise (ValueError on a malformed number)."""
    if isinstance(p, param.Integer):
        return int(text)
    if isinstance(p, param.Number):
        return float(text)
    return text


def set_from_query(target: param.Parameterized, q: Mapping[str, str], keys: Mapping[str, str], *,
                   skip: tuple[str, ...] = ()) -> list[str]:
    """Set ``target``'s parameters from URL query values: ``keys`` maps a query key to a
    parameter name (keys in ``skip`` are left to the caller). Returns one line per value that
    could not be applied (the page reports them; the others are applied)."""
    problems: list[str] = []
    for k, name in keys.items():
        if k in skip or k not in q:
            continue
        try:
            setattr(target, name, query_value(target.param[name], q[k]))
        except (ValueError, TypeError) as e:
            problems.append(f"{k}={q[k]!r}: {one_line(e)}")
    return problems


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (the UI never shows a traceback)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class PresetLinks:
    """URL state of a page with teaching presets: a preset link is ``?preset=KEY``, otherwise
    the settings named in :attr:`query_keys` (query key -> parameter name). The page supplies
    ``apply_preset(key)``, ``preset``, ``auto``, ``status`` and ``suspended()``."""

    query_keys: dict[str, str] = {}
    query_skip: tuple[str, ...] = ()     # keys of query_keys that _query_extras applies

    def to_query(self) -> dict[str, str]:
        if self.preset:
            return {"preset": self.preset}
        return {k: str(getattr(self, name)) for k, name in self.query_keys.items()}

    def apply_query(self, query) -> list[str]:
        """Restore state from URL query values; bad entries are skipped and reported."""
        q = plain_query(query)
        problems: list[str] = []
        auto, self.auto = self.auto, False
        try:
            if q.get("preset"):
                try:
                    self.apply_preset(q["preset"])
                except ExplorerError as e:
                    problems.append(one_line(e))
            problems += self._query_extras(q)
            with self.suspended():
                problems += set_from_query(self, q, self.query_keys, skip=self.query_skip)
        finally:
            self.auto = auto
        if problems:
            self.notice = link_notice(problems)
            self.status = "⚠ " + self.notice
        return problems

    def _query_extras(self, q: Mapping[str, str]) -> list[str]:
        """Apply the link's values that are not plain parameters (after the preset, before
        :attr:`query_keys`); one line per value not used."""
        return []


def link_notice(problems: list[str]) -> str:
    """The page's notice for values of a link that were not used: one line, HTML-escaped
    (URL values are never reflected as markup)."""
    return html.escape("Not used from the link, defaults kept: " + "; ".join(problems), quote=False)


#: every page controller alive in this process (the server's /stats counts them: a closed
#: session's controller must disappear)
LIVE_CONTROLLERS: "weakref.WeakSet[PageController]" = weakref.WeakSet()


class PageController(param.Parameterized):
    """Status, errors, device and background jobs of one page in one browser session."""

    device = param.String(default="", doc="Compute device (cpu, cuda, cuda:1, ...).")
    errors = param.Dict(default={}, doc="Error message per key (one line each).")
    status = param.String(default="", doc="What is computing and where, or what just happened.")
    notice = param.String(default="", doc="A message that stays until dismissed: values of the "
                                          "page's link that were refused (and why).")

    def __init__(self, *, auto: bool = True, notify: Callable[[], None] | None = None, **params):
        super().__init__(**params)
        self.jobs = JobRunner(notify=notify)
        LIVE_CONTROLLERS.add(self)
        self.auto = auto                  # settings changes start their computations
        self._suspend = 0                 # > 0: watchers ignore changes (bulk updates)
        self._closed = False
        self._job_threads: dict[str, int | None] = {}
        if not self.device:
            self.device = str(default_device())

    # ---------------------------------------------------------------- bulk updates
    @contextlib.contextmanager
    def suspended(self):
        """Change several settings as one: watchers that check ``_suspend`` stay quiet."""
        self._suspend += 1
        try:
            yield
        finally:
            self._suspend -= 1

    # ---------------------------------------------------------------- device
    def _device(self) -> torch.device:
        try:
            return parse_device(self.device)
        except ExplorerError:
            return default_device()

    @staticmethod
    def devices() -> list[str]:
        return [str(d) for d in available_devices()]

    def _job_device(self, key: str | None = None) -> str:
        """The device a job runs on, with its thread count on the CPU."""
        if key is None:
            running = self.jobs.running()
            key = running[-1].key if running else None
        return describe_device(self._device(), self._job_threads.get(key) if key else None)

    # ---------------------------------------------------------------- errors
    def _error(self, key: str, message: str) -> None:
        self.errors = {**self.errors, key: message}
        self.status = f"⚠ {message}"

    def _clear_error(self, key: str) -> None:
        if key in self.errors:
            self.errors = {k: v for k, v in self.errors.items() if k != key}

    # ---------------------------------------------------------------- jobs
    def _submit(self, key: str, fn: Callable[..., Any], label: str, *, quiet: bool = False,
                threads: int | None = 1) -> None:
        """Run ``fn(stop=, progress=)`` off the UI thread; a newer job of the same key
        supersedes it. ``quiet`` jobs (follow-ups) leave the status line alone.

        ``threads``: torch threads of the job's thread (None: leave as it is). Analyses make
        thousands of small tensor calls; with two threads each one waits at an OpenMP barrier,
        for seconds in all when the other core is busy (a served page always has other work)."""
        if self._closed:            # a follow-up asked for after the tab closed: nothing to do
            return
        self._clear_error(key)

        def run(stop, progress):
            if threads is not None:
                torch.set_num_threads(threads)   # per job: a new thread starts with the count
            return fn(stop=stop, progress=progress)   # some other thread set last

        self.jobs.submit(key, run, label=label)
        self._job_threads[key] = threads
        if not quiet:
            self.status = f"{label} on {self._job_device(key)} ..."

    def _job_done(self, d: Done) -> None:
        """Publish one finished job (UI thread). Default: the result goes to the parameter
        named like the job's key, errors to ``errors[key]``."""
        if d.error is not None:
            self._error(d.key, d.error)
            return
        setattr(self, d.key, d.value)
        self.status = f"{d.label}: done in {d.seconds:.2f} s"

    def poll(self) -> list[Done]:
        """Collect finished jobs and publish their results (call from the UI thread)."""
        if self._closed:
            return []
        done = self.jobs.poll()
        for d in done:
            self._job_done(d)
        self._show_queue()
        return done

    def _show_queue(self) -> None:
        """While one of this page's jobs waits for a server slot, the status line says so
        (and how many jobs are ahead); once it computes, the status says that again."""
        waiting = self.jobs.queue_position()
        if waiting is not None:
            job, ahead = waiting
            adm = self.jobs.admission
            self.status = (f"⏳ {job.label}: queued, position {ahead + 1} (the server is busy: it "
                           f"computes {adm.limit()} jobs at once for everyone)")
            self._queued_label = job.label
        elif getattr(self, "_queued_label", None):
            label, self._queued_label = self._queued_label, None
            if self.status.startswith("⏳"):
                self.status = f"{label} on {self._job_device()} ..."

    def busy(self) -> bool:
        """Anything still computing (the view's tick runs while this is true)."""
        return bool(self.jobs.running())

    def computing(self, key: str) -> bool:
        """Whether the job ``key`` (e.g. ``"attractor"``) is computing a new result."""
        return self.jobs.is_running(key)

    def wait(self, timeout: float = 60.0) -> list[Done]:
        """Block until every job, follow-ups included, has finished and publish the results
        (notebooks, tests)."""
        deadline = time.monotonic() + timeout
        done: list[Done] = []
        while True:
            self.jobs.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            done += self.poll()
            if not self.busy() or time.monotonic() >= deadline:
                return done

    def close(self) -> None:
        """Stop everything (the browser session closed)."""
        self._closed = True
        self.jobs.close()


class SystemSource(PageController):
    """A page that simulates a system of the registry or typed custom equations."""

    system = param.Selector(default="lorenz63", objects=["lorenz63"],
                            doc="The dynamical system: built-in, dysts (when installed) or custom.")
    equations = param.String(default=DEFAULT_EQUATIONS, doc="Equations of the custom system.")
    custom_params = param.String(default=DEFAULT_CUSTOM_PARAMS,
                                 doc="Parameters of the custom system: name = value, ...")
    diffusion = param.String(default="1, 1",
                             doc="Custom SDE: the diagonal of D, one entry per variable (noise "
                                 "sqrt(2 D_i) dW_i); expressions of the variables and parameters.")

    #: what typed equations define: ``"ode"`` (flows and maps) or ``"sde"`` (the equations are
    #: the drift and :attr:`diffusion` the noise; a stochastic page sets it)
    custom_kind = "ode"

    def __init__(self, *, dysts: bool = False, kinds: tuple[str, ...] | None = None, **params):
        names = system_names(dysts=dysts, stochastic=None if kinds and "sde" in kinds else False)
        if kinds is not None:
            names = [n for n in names if system_class(n).kind in kinds]
        self.param.system.objects = names + [CUSTOM]
        self._custom_cache: tuple[str, str, DynamicalSystem] | None = None
        super().__init__(**params)

    def system_of(self, name: str, equations: str | None = None, params_text: str | None = None,
                  **values) -> DynamicalSystem:
        """The system ``name`` (custom: the typed equations) at ``values`` (validated)."""
        if name != CUSTOM:
            return system_class(name)(**values)
        key = (self.equations if equations is None else equations,
               self.custom_params if params_text is None else params_text,
               self.diffusion if self.custom_kind == "sde" else "")
        if self._custom_cache is None or self._custom_cache[:3] != key:
            params = parse_param_assignments(key[1])
            if self.custom_kind == "sde":
                from ..core.custom import parse_sde
                sys_ = parse_sde(key[0], key[2], params, name=CUSTOM)
            else:
                sys_ = parse_system(key[0], params, name=CUSTOM)
            self._custom_cache = (*key, sys_)
        return self._custom_cache[3]

    def check_custom(self, equations: str | None = None, params_text: str | None = None,
                     diffusion: str | None = None) -> list[str]:
        """Problems with typed equations and parameters (and, for a custom SDE, the
        diffusion), one message each (empty: valid). Used as the user types; nothing is applied."""
        eqs = self.equations if equations is None else equations
        try:
            params = parse_param_assignments(self.custom_params if params_text is None else params_text)
        except ParameterError as e:
            return [f"parameters: {e}"]
        problems = [str(e) for e in validate_equations(eqs, params)]
        if problems or self.custom_kind != "sde":
            return problems
        from ..core.custom import parse_sde
        try:
            parse_sde(eqs, self.diffusion if diffusion is None else diffusion, params, name=CUSTOM)
        except ExplorerError as e:
            return [f"diffusion: {one_line(e)}" if "diffusion" not in str(e).lower() else one_line(e)]
        return []

    def system_title(self, name: str | None = None) -> str:
        name = self.system if name is None else name
        if name == CUSTOM:
            return "custom system"
        return system_class(name).title or name

    def system_groups(self, query: str = "") -> dict[str, dict[str, str]]:
        """The offered systems grouped by origin (Built-in, dysts, Custom) as
        ``{group: {title: name}}``, filtered by ``query`` (case-insensitive, title or name)."""
        q = query.strip().lower()
        groups: dict[str, dict[str, str]] = {}
        for name in self.param.system.objects:
            if name == CUSTOM:
                title, origin = "Custom (your equations)", "Custom"
            else:
                cls = system_class(name)
                title = cls.title or name
                origin = {"builtin": "Built-in", "dysts": "dysts"}.get(cls.origin, cls.origin)
            if q and name not in (CUSTOM, self.system) and q not in title.lower() \
                    and q not in name.lower():
                continue
            groups.setdefault(origin, {})[title] = name
        return groups
