"""The app shell in a real browser: narrow screens (collapsible sidebar, rows that wrap) and
the dark theme that follows the browser's ``prefers-color-scheme``.

Screenshots go to ``EXPLORER_SHOTS`` when that names a directory (a human looks at them).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from .conftest import FLAGS  # noqa: F401  (the same chromium flags as the other browser tests)

SHOTS = os.environ.get("EXPLORER_SHOTS")


class ShellPage:
    """A page of the app in its own browser context (viewport, colour scheme, cookies)."""

    def __init__(self, browser, url: str, *, width: int, height: int = 900, scheme: str = "light"):
        self.ctx = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.load(url)

    def load(self, url: str | None = None) -> None:
        if url is not None:
            self.page.goto(url)
        self.page.wait_for_selector("canvas", timeout=90_000)
        self.page.wait_for_load_state("load")

    def _visible_canvases(self) -> list:
        canvases = self.page.locator("canvas")
        return [c for c in (canvases.nth(i) for i in range(canvases.count())) if c.is_visible()]

    def plot_width(self) -> float:
        """Width of the widest visible plot canvas (the main plot; inactive tabs excluded)."""
        return max(((c.bounding_box() or {}).get("width", 0) for c in self._visible_canvases()), default=0)

    def wait_plot_width(self, predicate, timeout: float = 30.0) -> float:
        end = time.time() + timeout
        while True:
            w = self.plot_width()
            if predicate(w) or time.time() > end:
                return w
            self.page.wait_for_timeout(200)

    def sidebar_width(self) -> float:
        return self.page.evaluate("() => document.getElementById('sidebar').getBoundingClientRect().width")

    def theme(self) -> str:
        return self.page.evaluate("() => document.documentElement.getAttribute('data-bs-theme')")

    def body_luminance(self) -> float:
        rgb = self.page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        r, g, b = (int(v) for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])
        return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255

    def canvas_luminance(self) -> float:
        """Mean luminance (0 black .. 1 white) of the main plot's canvas."""
        from PIL import Image

        canvas = max(self._visible_canvases(), key=lambda c: (c.bounding_box() or {}).get("width", 0))
        img = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
        return sum(img.getdata()) / (255 * img.width * img.height)

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def shell_page(browser, app_url):
    pages = []

    def make(query: str = "", **kw) -> ShellPage:
        p = ShellPage(browser, app_url + query, **kw)
        pages.append(p)
        return p

    yield make
    for p in pages:
        p.close()


@pytest.mark.slow
def test_narrow_screen_sidebar_collapses_and_plots_reflow(shell_page):
    p = shell_page(width=800)
    assert p.sidebar_width() > 300
    # the sidebar open: the plots share what is left, stacked rather than squeezed side by side
    open_width = p.wait_plot_width(lambda w: w >= 300)
    p.page.wait_for_timeout(2000)                              # let the first image arrive
    p.shot("shell-800-sidebar-open")
    assert open_width >= 300, f"with the sidebar open the main plot is a sliver ({open_width:.0f} px)"
    p.page.click("#sidebar-toggle")
    p.page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().width < 1")
    closed_width = p.wait_plot_width(lambda w: w > 600)
    p.page.wait_for_timeout(500)
    p.shot("shell-800-sidebar-collapsed")
    assert closed_width > 600, f"with the sidebar collapsed the main plot is only {closed_width:.0f} px wide"
    p.page.click("#sidebar-toggle")                            # and it opens again
    p.page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().width > 300")
    assert not p.errors, p.errors


@pytest.mark.slow
def test_wide_screen_keeps_plots_side_by_side(shell_page):
    p = shell_page(width=1400)
    w = p.wait_plot_width(lambda w: 450 < w < 800)
    p.shot("shell-1400")
    assert 450 < w < 800, f"the attractor should share the row with the time series ({w:.0f} px)"
    assert not p.errors, p.errors


@pytest.mark.slow
def test_dark_theme_follows_the_browser(shell_page):
    p = shell_page(width=1200, scheme="dark")
    p.page.wait_for_function("() => document.documentElement.getAttribute('data-bs-theme') === 'dark'",
                             timeout=90_000)
    p.load()
    p.page.wait_for_timeout(1500)
    p.shot("shell-dark")
    assert p.theme() == "dark"
    assert p.body_luminance() < 0.3
    assert p.canvas_luminance() < 0.45, "the plot should be drawn on a dark background"
    assert not p.errors, p.errors


@pytest.mark.slow
def test_light_scheme_stays_light_and_the_toggle_overrides_it(shell_page):
    p = shell_page(width=1200, scheme="light")
    assert p.theme() == "light"
    assert p.body_luminance() > 0.8
    p.page.get_by_role("button", name="☾").click()            # the header's toggle: dark now
    p.page.wait_for_function("() => document.documentElement.getAttribute('data-bs-theme') === 'dark'",
                             timeout=90_000)
    p.load()
    assert p.theme() == "dark"
    p.page.get_by_role("button", name="☀").click()            # back to the browser's choice
    p.page.wait_for_function("() => document.documentElement.getAttribute('data-bs-theme') === 'light'",
                             timeout=90_000)
    p.load()
    assert not any(c["name"] == "explorer-theme" for c in p.ctx.cookies())
    assert not p.errors, p.errors


@pytest.mark.slow
def test_theme_in_the_url_wins(shell_page):
    p = shell_page("?page=reconstruction&theme=dark", width=1000, scheme="light")
    assert p.theme() == "dark"
    assert p.body_luminance() < 0.3
    assert not p.errors, p.errors
