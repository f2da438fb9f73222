"""The web app: ``dynamics-explorer serve``, or ``panel serve explorer/app.py``.

One Panel app; the page comes from the URL (``?page=attractors``, the default;
``?page=reconstruction`` trains models on data; every page of the registry in
:mod:`explorer.pages`), and the rest of the query holds that page's state, so a copied link
reproduces what was shown.
"""

from __future__ import annotations

import logging

import panel as pn

from . import views as _views  # noqa: F401  (loads the Panel/HoloViews extensions once)
from .pages import page


def create_app():
    """Build the page the URL asks for (called once per browser session); the pages are
    those of the registry (:mod:`explorer.pages`)."""
    query = (pn.state.location.query_params if pn.state.location is not None else {}) or {}
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda ctx: release_memory())
        _serve_styles_locally(pn.state.curdoc)
        _publish_this_process()
    return page(query.get("page")).build()


def _publish_this_process() -> None:
    """A multi-process server's process publishes its /stats figures from its first session
    on (see :func:`_start_publishing`)."""
    import os

    if not os.environ.get(STATS_DIR_ENV) or _publisher_pid == os.getpid():
        return
    for server, *_ in list(pn.state._servers.values()):
        tornado_app = getattr(server, "_tornado", None)
        if tornado_app is not None:
            _start_publishing(tornado_app)
            return


def _serve_styles_locally(doc) -> None:
    """Have this session's style sheets point at this server, whichever way it was made.

    Panel writes the server's own address of its style sheets into a session's document when
    it renders the page's HTML, and points those of later components there. A page whose
    browser connects after its session expired (a busy server, a class arriving at once) gets
    a new session from the websocket, without HTML: every style sheet then pointed at Panel's
    CDN, which a classroom without internet cannot reach (console errors, unstyled widgets)."""
    from panel.io.resources import LOCAL_DIST

    rel = pn.state.rel_path
    doc._template_variables.setdefault("dist_url", f"{rel}/{LOCAL_DIST}" if rel else LOCAL_DIST)


_release_timer = None


def _collect_and_trim() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):      # not glibc: the memory is reused, not returned
        pass


def _freeze_startup_objects() -> None:
    """Move everything alive after the warm-up (modules, classes, caches: the bulk of the
    Python heap) out of the garbage collector's reach (``gc.freeze``). A full collection,
    which :func:`release_memory` runs after sessions close and Python runs on its own, then
    walks only the sessions' objects: 0.23-0.29 s of held GIL each before, long enough to
    show in a preset switch of another student. Also spares forked server processes
    (``--num-procs``) the copy-on-write of those pages."""
    import gc

    gc.collect()
    gc.freeze()


def _serve_lean() -> None:
    """What the served app leaves out.

    * Bokeh's development checks: the integrity check of every model before a document's
      first page (``perform_document_validation``), and the signature check of every
      ``on_change`` callback and the fuzzy "did you mean" search behind each missing
      attribute (``perform_error_diagnostics``). Together 0.08 s of the 0.67 s a new session
      cost (py-spy, 30 GETs). The tests, which build the pages in process, keep them.
    * Bokeh's MathJax bundle: Panel adds it (1.8 MB of the page's 5.1 MB of JavaScript, which
      every browser parses) to any page with a Markdown pane, in case its text holds TeX. This
      app typesets its equations with KaTeX (``LaTeX`` panes) and its Markdown has no TeX.
    """
    from bokeh.settings import settings
    from panel.io import resources

    settings.perform_document_validation.set_value(False)
    settings.perform_error_diagnostics.set_value(False)
    if callable(getattr(resources, "_panel_use_mathjax", None)):
        resources._panel_use_mathjax = lambda roots: False


def _accept_one_at_a_time() -> None:
    """Let each process of a ``--num-procs`` server take one new connection per turn of its
    event loop. The processes share one listening socket, and Tornado accepts up to 128
    waiting connections at once: when a class arrives together one process took most of them
    and built their sessions one after another while the other idled (30 GETs at once: the
    last answered after 13 s). One at a time, a process busy building a session leaves the
    next connection to an idle one."""
    import tornado.netutil

    if isinstance(getattr(tornado.netutil, "_DEFAULT_BACKLOG", None), int):
        tornado.netutil._DEFAULT_BACKLOG = 1     # read by the accept loop; listen() keeps 128


def release_memory(delay: float = 3.0) -> None:
    """Give a closed session's memory back to the system: a few seconds after the last call
    (a class closing its tabs calls it thirty times at once), collect Python's reference
    cycles and, with glibc, return the freed heap pages (``malloc_trim``); without it, a
    process's resident size only ever grows, whatever was freed."""
    import threading

    global _release_timer

    if _release_timer is not None:
        _release_timer.cancel()
    _release_timer = threading.Timer(delay, _collect_and_trim)
    _release_timer.daemon = True
    _release_timer.start()


class _DisconnectFilter:
    """A tab closed while the server was writing to it is not an error of the app: tornado
    and asyncio log it with a traceback (``WebSocketClosedError``, ``StreamClosedError``);
    it becomes one plain line."""

    NAMES = ("WebSocketClosedError", "StreamClosedError")
    #: Bokeh's own warning for the same event, once per message still addressed to the closed
    #: tab (a live animation sends dozens a second): dropped, the close itself is logged
    LINES = ("Failed sending message as connection was closed",)

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() if exc is None else ""
        if any(line in text for line in self.LINES):
            return False
        if (exc is not None and type(exc).__name__ in self.NAMES) or any(n in text for n in self.NAMES):
            return self._one_line(record, "a browser tab closed while a message was being sent to it (ignored)")
        if self._from_detached_connection(record):
            return self._one_line(record, "a message from a closed browser tab arrived after its "
                                          "connection was dropped (ignored)")
        return True

    @staticmethod
    def _one_line(record, text: str) -> bool:
        record.msg, record.args, record.exc_info, record.exc_text = text, (), None, None
        record.levelname, record.levelno = "INFO", 20
        return True

    @staticmethod
    def _from_detached_connection(record) -> bool:
        """Bokeh's ``AssertionError`` for a message that a tab sent just before its socket
        closed, read after the keep-alive ping had already dropped the connection."""
        if not record.exc_info or not isinstance(record.exc_info[1], AssertionError):
            return False
        tb = record.exc_info[2]
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code if tb is not None else None
        return (code is not None and code.co_name == "session"
                and code.co_filename.replace("\\", "/").endswith("bokeh/server/connection.py"))


def _quiet_disconnects() -> None:
    for name in ("tornado.application", "asyncio", "bokeh.server.protocol_handler",
                 "bokeh.server.views.ws"):
        logging.getLogger(name).addFilter(_DisconnectFilter())


def _notify_lost_connections() -> None:
    """Tell a session its browser has gone however Bokeh finds out (once per connection).

    Bokeh notifies a session (``ConnectionLost``, on which a page stops its work and asks to
    be discarded) only when tornado closes the websocket. Its keep-alive ping may find the
    socket closed first: it then unsubscribes the connection without notifying, and the later
    close fails on an assertion (a traceback in the log) and leaves the session to linger for
    the whole connect wait. Here the notification moves into ``client_lost``, which both paths
    call and which detaches the connection (so a second call cannot notify twice)."""
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.views.ws import WSHandler

    if getattr(BokehTornado.client_lost, "_explorer", False):
        return
    original = BokehTornado.client_lost

    def client_lost(self, connection) -> None:
        session = getattr(connection, "_session", None)
        if session is not None and not session.destroyed:
            try:
                session.notify_connection_lost()
            except Exception:
                logging.getLogger(__name__).exception("notifying a session of its closed tab")
        original(self, connection)

    def on_close(self) -> None:
        logging.getLogger("bokeh.server.views.ws").info(
            "WebSocket connection closed: code=%s, reason=%r", self.close_code, self.close_reason)
        if self.connection is not None:
            self.application.client_lost(self.connection)

    client_lost._explorer = True
    BokehTornado.client_lost = client_lost
    WSHandler.on_close = on_close


def server_stats(sessions: int | None = None, *, collect: bool = False) -> dict:
    """What this server process holds now: sessions open (``sessions``, from the server),
    page controllers and views alive, background-job threads, training runs against their
    limit, all threads, resident memory (MiB) and process CPU seconds. ``collect`` runs the
    garbage collector first and returns freed heap pages to the system (a closed session's
    objects and memory should then be gone)."""
    import resource
    import threading

    from .controllers.base import LIVE_CONTROLLERS
    from .controllers.run import RUNS
    from .views.base import LIVE_VIEWS

    if collect:
        _collect_and_trim()
    rss = 0.0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
    except OSError:                      # not Linux: the peak instead of the current size
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    threads = threading.enumerate()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"sessions": sessions, "controllers": len(LIVE_CONTROLLERS), "views": len(LIVE_VIEWS),
            "job_threads": sum(t.name.startswith("explorer-") for t in threads),
            "threads": threading.active_count(), "runs_active": RUNS.active,
            "runs_limit": RUNS.limit(), "rss_mb": round(rss, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def _sessions(tornado_app) -> int:
    contexts = getattr(tornado_app, "_applications", {}).values()
    return sum(len(getattr(c, "sessions", ())) for c in contexts)


#: with ``--num-procs``, each server process writes its figures here every second (a JSON
#: file per process id), so that ``/stats`` answers for the whole server, whichever process
#: the request reaches
STATS_DIR_ENV = "EXPLORER_STATS_DIR"
_publisher_pid: int | None = None


def _publish(tornado_app, collect: bool = False) -> dict:
    """This process's figures, written to the shared directory (multi-process servers)."""
    import json
    import os

    stats = server_stats(_sessions(tornado_app), collect=collect)
    folder = os.environ.get(STATS_DIR_ENV)
    if folder:
        tmp = os.path.join(folder, f".{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, os.path.join(folder, f"{os.getpid()}.json"))
        except OSError:
            pass
    return stats


def _start_publishing(tornado_app) -> None:
    """Publish this process's figures every second from now on (once per process)."""
    import os

    from tornado.ioloop import PeriodicCallback

    global _publisher_pid
    if not os.environ.get(STATS_DIR_ENV) or _publisher_pid == os.getpid():
        return
    _publisher_pid = os.getpid()
    _publish(tornado_app)
    PeriodicCallback(lambda: _publish(tornado_app), 1000).start()   # on this process's loop


def _whole_server(own: dict) -> dict:
    """The figures of every live process of this server summed (``processes``: how many
    answered); ``own`` alone in a single-process server."""
    import json
    import os

    folder = os.environ.get(STATS_DIR_ENV)
    if not folder:
        return {**own, "processes": 1}
    total, n = dict(own), 1
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    for name in names:
        if not name.endswith(".json") or name == f"{os.getpid()}.json":
            continue
        try:
            os.kill(int(name[:-5]), 0)                 # a process that ended: not counted
            with open(os.path.join(folder, name)) as f:
                other = json.load(f)
        except (OSError, ValueError):
            continue
        n += 1
        for key, value in other.items():
            if isinstance(value, (int, float)) and isinstance(total.get(key), (int, float)):
                total[key] = round(total[key] + value, 2)
    return {**total, "processes": n}


def _stats_handler():
    """A tornado handler for ``/stats`` (JSON of :func:`server_stats`, summed over the server's
    processes with ``--num-procs``; ``?gc=1`` collects first, in the answering process).
    Served with ``--admin`` only."""
    import json

    from tornado.web import RequestHandler

    class StatsHandler(RequestHandler):
        def get(self) -> None:
            _start_publishing(self.application)
            own = _publish(self.application, collect=self.get_argument("gc", "0") == "1")
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.write(json.dumps(_whole_server(own)))

    return StatsHandler


#: how long a served page may take to connect its websocket before its session is discarded
#: (ms; ``EXPLORER_CONNECT_WAIT_S`` seconds). A class arriving at once loads a busy server:
#: a browser may take tens of seconds from the page's HTML to its websocket. A tab that
#: closes is discarded at the next check instead (its view asks for it on ConnectionLost).
CONNECT_WAIT_MS = 60_000
#: how often the server looks for sessions to discard (ms)
SESSION_CHECK_MS = 2_000


def session_options() -> dict:
    """Bokeh's options for discarding sessions (under the names Bokeh reads)."""
    from .controllers.jobs import env_limit

    wait_s = env_limit("EXPLORER_CONNECT_WAIT_S", CONNECT_WAIT_MS // 1000)
    return {"check_unused_sessions_milliseconds": SESSION_CHECK_MS,
            "unused_session_lifetime_milliseconds": 1000 * wait_s}


def serve(port: int = 5006, address: str = "localhost", show: bool = False, *,
          num_procs: int = 1, num_threads: int | None = None, admin: bool = False,
          allow_origin: list[str] | None = None) -> None:
    """Serve the app at ``http://<address>:<port>/explorer`` (blocking).

    First-use costs (HoloViews/Bokeh model building, numba's datashader compilation, the
    native simulation library) are paid here, before the port opens, so the first student's
    tab is as fast as the later ones.

    Args:
        num_procs: server processes sharing the port (Bokeh forks them after the warm-up;
            each holds its own sessions; 0 = one per core). See docs/deploy.md.
        num_threads: threads that run widget callbacks (Panel's ``nthreads``; None: Panel's
            default of the event loop itself). Heavy work runs in the pages' job threads
            either way.
        admin: serve Panel's admin view at ``/admin`` (sessions, memory, CPU, logs) and this
            app's figures at ``/stats`` (JSON of :func:`server_stats`).
        allow_origin: extra ``host:port`` origins allowed to open the websocket (behind a
            proxy or under another host name).
    """
    from .views.attractors import warm_up

    _quiet_disconnects()
    _notify_lost_connections()
    if num_procs < 0:
        raise ValueError(f"num_procs must be 0 (one per core) or more, got {num_procs}")
    try:
        seconds = warm_up()
        logging.getLogger(__name__).info("warmed up in %.1f s", seconds)
    except Exception:  # a failed warm-up only costs the first session its speed
        logging.getLogger(__name__).exception("warm-up failed (the app still serves)")
    _freeze_startup_objects()
    _serve_lean()
    if num_procs != 1:
        _accept_one_at_a_time()
    if admin and num_procs != 1:          # /stats sums the processes' figures
        import os
        import tempfile

        import atexit
        import shutil

        os.environ[STATS_DIR_ENV] = folder = tempfile.mkdtemp(prefix="explorer-stats-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    if num_threads is not None:
        pn.config.nthreads = num_threads
    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", *(allow_origin or [])]
    pn.serve({"explorer": create_app}, port=port, address=address, show=show,
             websocket_origin=origins, title="Dynamics Explorer", threaded=False,
             num_procs=num_procs, admin=admin,
             extra_patterns=[(r"/stats", _stats_handler())] if admin else [],
             # a closed tab's session (its jobs, its live animation) is cleaned up within seconds
             **session_options())


if __name__.startswith("bokeh_app"):
    _notify_lost_connections()
    create_app().servable()
