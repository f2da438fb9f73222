"""The served app as a class meets it: sessions that end are freed (measured on a real
``python -m explorer serve --admin`` process through its ``/stats``).

A leak here was two bugs: the unused-session options were passed under names Bokeh ignores
(sessions then lived 15-30 s more than meant), and Panel's link registry kept every page with
an editable slider alive for good.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.servers import serve_app


def _serve(tmp_path_factory, **env):
    yield from serve_app(tmp_path_factory.mktemp("server") / "server.log", "--admin", env=env)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A page served but never connected is discarded 2 s after it was served."""
    yield from _serve(tmp_path_factory, EXPLORER_CONNECT_WAIT_S="2")


def _stats(base: str) -> dict:
    return json.loads(urllib.request.urlopen(base + "/stats?gc=1", timeout=30).read())


@pytest.mark.timeout(300)
def test_ended_sessions_free_their_pages_within_seconds(server):
    urllib.request.urlopen(server + "/explorer", timeout=60).read()   # the first session's costs
    time.sleep(4)
    before = _stats(server)
    with ThreadPoolExecutor(4) as ex:                                  # four students at once
        pages = list(ex.map(lambda _: urllib.request.urlopen(server + "/explorer", timeout=120).read(),
                            range(4)))
    assert all(b"Dynamics Explorer" in p for p in pages)
    opened = _stats(server)
    # (the first sessions may already be gone: 2 s after their page was served)
    assert opened["sessions"] >= 1 and opened["views"] >= before["views"] + 1, (before, opened)
    # a session nobody connects to is discarded 2 s after its page was served (checked every
    # 2 s); its controller, view and job threads must then be gone
    deadline, now = time.time() + 20, opened
    while time.time() < deadline:
        now = _stats(server)
        if now["sessions"] == 0 and now["views"] <= before["views"] and now["job_threads"] == 0:
            break
        time.sleep(1)
    assert now["sessions"] == 0, now
    # Bokeh's module state keeps the last document built (one page at most, never more)
    assert now["views"] <= max(before["views"], 1), (before, now)
    assert now["controllers"] <= max(before["controllers"], 1), (before, now)
    assert now["job_threads"] == 0, now
    assert now["threads"] <= before["threads"] + 1, (before, now)



def test_a_connection_found_dead_by_the_keep_alive_notifies_its_session_once():
    """Bokeh's keep-alive ping may find a closed tab first: it used to drop the connection
    without telling the session (whose page then kept running for the connect wait) and the
    websocket's close then failed on an assertion. Both paths now notify the session once."""
    from bokeh.server.tornado import BokehTornado
    from bokeh.server.views.ws import WSHandler

    from explorer.app import _notify_lost_connections

    _notify_lost_connections()

    class Session:
        destroyed, told = False, 0

        def notify_connection_lost(self):
            self.told += 1

    class Connection:
        def __init__(self, session):
            self._session = session

        def detach_session(self):
            self._session = None

    class Server:
        def client_lost(self, connection):
            BokehTornado.client_lost(self, connection)

    session, server = Session(), Server()
    connection = Connection(session)
    server._clients = {connection}
    BokehTornado.client_lost(server, connection)        # the keep-alive ping failed

    class Socket:                                       # then tornado closes the websocket
        pass
    socket = Socket()
    socket.connection, socket.application = connection, server
    socket.close_code, socket.close_reason = 1001, None
    WSHandler.on_close(socket)                          # no AssertionError
    assert session.told == 1
    assert connection not in server._clients and connection._session is None

    fresh, closed = Session(), Connection(None)         # the ordinary close: told once too
    closed._session = fresh
    server._clients = {closed}
    socket.connection = closed
    WSHandler.on_close(socket)
    assert fresh.told == 1 and not server._clients


@pytest.mark.timeout(300)
def test_a_session_made_for_a_late_websocket_loads_nothing_from_outside(server):
    """A browser that connects after its page's session expired (a busy server) gets a new
    session from the websocket, without the page's HTML; its style sheets used to point at
    Panel's CDN (console errors and unstyled widgets in a classroom without internet)."""
    from bokeh.client import pull_session
    from bokeh.models import ImportedStyleSheet
    from bokeh.util.token import generate_session_id

    import explorer.views  # noqa: F401  (the page's model types, to read its document)

    def style_sheets() -> set[str]:
        session = pull_session(url=server + "/explorer", session_id=generate_session_id())
        try:
            return {str(s.url) for m in session.document.models
                    for s in (getattr(m, "stylesheets", None) or []) if isinstance(s, ImportedStyleSheet)}
        finally:
            session.close()

    with ThreadPoolExecutor(1) as ex:       # its own event loop (the browser tests run one here)
        urls = ex.submit(style_sheets).result(timeout=120)
    assert urls, "the page's components carry their style sheets"
    outside = sorted(u for u in urls if u.startswith(("http://", "https://", "//")))
    assert not outside, outside[:3]


def test_a_message_from_a_dropped_connection_is_one_line_not_a_traceback():
    import logging
    import sys

    from bokeh.server.connection import ServerConnection

    from explorer.app import _DisconnectFilter

    connection = ServerConnection.__new__(ServerConnection)
    connection._session = None                  # dropped by the keep-alive ping
    try:
        connection.session
    except AssertionError:
        info = sys.exc_info()
    record = logging.LogRecord("bokeh.server.protocol_handler", logging.ERROR, __file__, 1,
                               "error handling message", (), info)
    assert _DisconnectFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "closed browser tab" in record.getMessage()

    try:                                        # any other assertion keeps its traceback
        assert False, "a real bug"
    except AssertionError:
        other = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    assert _DisconnectFilter().filter(other) and other.levelno == logging.ERROR and other.exc_info


def test_stats_of_a_multi_process_server_sum_its_live_processes(tmp_path, monkeypatch):
    """With --num-procs each process publishes its /stats figures to a shared folder; the
    answering process adds the other live ones (a file of an ended process is not counted)."""
    import os
    import subprocess
    import sys

    from explorer import app

    monkeypatch.setenv(app.STATS_DIR_ENV, str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    other = {"sessions": 3, "views": 3, "rss_mb": 400.5, "cpu_s": 1.25, "note": "x"}
    (tmp_path / f"{os.getppid()}.json").write_text(json.dumps(other))            # alive
    (tmp_path / f"{ended.pid}.json").write_text(json.dumps({**other, "sessions": 100}))
    (tmp_path / f"{os.getpid()}.json").write_text(json.dumps({"sessions": 50}))  # own: fresh
    own = {"sessions": 2, "views": 2, "rss_mb": 300.0, "cpu_s": 0.5, "note": "own"}
    total = app._whole_server(own)
    assert total == {"sessions": 5, "views": 5, "rss_mb": 700.5, "cpu_s": 1.75, "note": "own",
                     "processes": 2}
    monkeypatch.delenv(app.STATS_DIR_ENV)
    assert app._whole_server(own) == {**own, "processes": 1}
