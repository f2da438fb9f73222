"""The Attractors page's Parameter map tab in chromium: it fills in tile by tile, and a click
on the map moves the attractor there."""

import re
from urllib.parse import parse_qs, urlparse

import pytest

pytestmark = pytest.mark.slow

TILES = re.compile(r"(\d+) of (\d+) tiles")


def map_canvas(page, below):
    """The map's figure: the first large canvas below the tab's buttons."""
    top = below.bounding_box()["y"]
    canvases = page.locator("canvas")
    for i in range(canvases.count()):
        box = canvases.nth(i).bounding_box()
        if box and box["y"] > top and box["height"] > 200:
            return canvases.nth(i), box
    raise AssertionError("no map canvas below the buttons")


def test_map_fills_in_progressively_and_a_click_moves_the_attractor(open_page):
    p = open_page()
    p.wait_status("computed in")
    page = p.page
    page.get_by_text("Parameter map", exact=True).click()
    page.locator("select").filter(has=page.locator("option", has_text="400")).first.select_option("200")
    go = page.get_by_role("button", name="Compute map")
    go.click()                                             # 40,000 points in 16 tiles
    partial, final = [], None
    for _ in range(1200):                                  # up to ~2 min under CI load
        texts = page.get_by_text(TILES).all_inner_texts()
        for t in texts:
            m = TILES.search(t)
            if m and int(m.group(1)) < int(m.group(2)) and t not in partial:
                partial.append(t)
        done = page.get_by_text("points in").all_inner_texts()
        if done:
            final = done[0]
            break
        page.wait_for_timeout(100)
    assert final is not None, "the map never finished"
    assert partial, "the map appeared at once, not tile by tile"
    assert "λ₁ from" in final
    canvas, box = map_canvas(page, go)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    before = parse_qs(urlparse(page.url).query)
    page.mouse.click(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    page.wait_for_function("""() => {
        const v = new URLSearchParams(location.search).get('p.rho');
        return v !== null && v !== '28'; }""", timeout=30_000)
    p.wait_status("computed in")
    query = parse_qs(urlparse(page.url).query)
    assert query.get("p.rho") != before.get("p.rho")
    rho = float(query["p.rho"][0])
    assert 28.0 < rho < 35.0                   # the upper part of the map's box [21, 35]
    assert p.errors == [], p.errors[:5]
    assert "Traceback" not in page.content()
