"""Real-browser fixtures: the served app (a subprocess) and Debian's chromium via Playwright.

Skipped where chromium or Playwright is missing, except under CI (``CI=true``), where a
missing browser is a failure: CI installs both.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.servers import serve_app

CHROMIUM = os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"chromium not found at {CHROMIUM}"
    return None


@pytest.fixture(scope="session")
def app_url():
    reason = _missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests need chromium and playwright under CI: {reason}")
        pytest.skip(reason)
    for base in serve_app(ROOT / ".browser-server.log", timeout=90):
        yield base + "/explorer"


@pytest.fixture(scope="session")
def browser():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Page:
    """A browser page on the app that records console errors and page errors."""

    def __init__(self, browser, url: str):
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # the page must load nothing from outside the server (offline classrooms)
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        self.page.goto(url)
        self.page.wait_for_selector("canvas", timeout=60_000)

    def status(self) -> str:
        return self.page.locator(".status-line").first.locator("div").first.inner_text()

    def system_select(self):
        """The system picker (the select offering the built-in systems)."""
        return self.page.locator("select").filter(
            has=self.page.locator("option", has_text="Hénon map")).first

    def wait_status(self, text: str, timeout: float = 120.0) -> str:
        """Wait until the status line contains ``text``; returns it."""
        end = time.time() + timeout
        while time.time() < end:
            s = self.status()
            if text in s:
                return s
            self.page.wait_for_timeout(150)
        raise AssertionError(f"status never showed {text!r}; last: {self.status()!r}")

    def wait_button(self, name: str, *, enabled: bool, timeout: float = 10.0):
        """Wait until the button ``name`` is enabled (or disabled); returns its locator.

        A locator, never an element handle: BokehJS re-renders a button (a new element)
        whenever ``disabled`` changes, so a handle taken before the server's last change
        would go stale and never change."""
        from playwright.sync_api import expect
        button = self.page.get_by_role("button", name=name)
        check = expect(button).to_be_enabled if enabled else expect(button).to_be_disabled
        check(timeout=timeout * 1000)
        return button

    def canvas_png(self, index: int = 0) -> bytes:
        """A screenshot of the index-th plot canvas."""
        return self.page.locator("canvas").nth(index).screenshot()

    def close(self):
        self.ctx.close()


@pytest.fixture
def open_page(browser, app_url):
    pages = []

    def make(query: str = "") -> Page:
        p = Page(browser, app_url + query)
        pages.append(p)
        return p

    yield make
    for p in pages:
        p.close()
