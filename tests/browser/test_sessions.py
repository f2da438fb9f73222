"""A closed browser tab frees its session within seconds, while a page served but not yet
connected keeps it for a minute (a real ``python -m explorer serve --admin`` and chromium)."""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.test_server import _serve, _stats

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def class_server(tmp_path_factory):
    """The default: a page has a minute to connect."""
    yield from _serve(tmp_path_factory)


@pytest.mark.timeout(300)
def test_a_closed_tab_is_freed_within_seconds_though_unconnected_pages_wait_a_minute(class_server, browser):
    """A page has a minute to connect its websocket (a class arriving at once loads the
    server), but a tab that closes is discarded at the server's next check."""
    urllib.request.urlopen(class_server + "/explorer", timeout=60).read()   # served, never connected
    before = _stats(class_server)
    assert before["sessions"] >= 1 and before["views"] >= 1
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(class_server + "/explorer", timeout=120_000)
    page.wait_for_selector("canvas", state="visible", timeout=120_000)
    opened = _stats(class_server)
    assert opened["sessions"] == before["sessions"] + 1, (before, opened)
    t0 = time.time()
    ctx.close()
    deadline, now = time.time() + 15, opened
    while time.time() < deadline:
        now = _stats(class_server)
        if now["sessions"] == before["sessions"]:
            break
        time.sleep(0.5)
    freed_s = time.time() - t0
    assert now["sessions"] == before["sessions"], (before, now)
    assert freed_s < 8, freed_s
    # the page served without a connection is still there (it has a minute)
    assert now["sessions"] >= 1 and now["views"] >= 1, now
