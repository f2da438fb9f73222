"""The served Spectra page in Debian's chromium: switching the initialisation moves the
eigenvalues, training animates them, zero console errors."""

import time

import pytest

pytestmark = pytest.mark.slow

#: the eigenvalue scatter sources (x, y, color columns): [[n, sum x, sum |y|], ...]
POINTS = """() => {
  const out = [];
  for (const d of Bokeh.documents)
    for (const m of d._all_models.values())
      if (m.data && m.data.g !== undefined && m.data.x !== undefined) {
        let sx = 0, sy = 0;
        for (const v of m.data.x) sx += v;
        for (const v of m.data.y) sy += Math.abs(v);
        out.push([m.data.x.length, Math.round(sx * 1e6) / 1e6, Math.round(sy * 1e6) / 1e6]);
      }
  return out;
}"""


def _points(page):
    return page.evaluate(POINTS)


def test_initialisation_moves_and_training_animates_the_eigenvalues(open_page):
    p = open_page("?page=spectra&preset=s4d-lin")
    page = p.page
    p.wait_status("eigenvalues")
    page.get_by_text("vertical line in the left half-plane", exact=False).first.wait_for()   # preset text
    page.wait_for_function(f"() => ({POINTS})().filter(a => a[0] >= 64).length >= 2",
                           timeout=60_000)                 # continuous and discrete planes
    lin = _points(page)
    # S4D-Lin: imaginary parts π n (large); S4D-Real: on the real axis
    select = page.locator("select").filter(has=page.locator("option", has_text="S4D-Real")).first
    select.select_option(label="S4D-Real")
    page.wait_for_function(f"() => ({POINTS})().filter(a => a[0] >= 64 && a[2] < 1e-6).length >= 2",
                           timeout=60_000)
    real = _points(page)
    assert real != lin
    before = _points(page)
    page.get_by_role("button", name="▶ Start").click()
    # every frame drawn while the run lasts (a quiet machine trains the 600 steps in seconds)
    frames, end = [], time.time() + 60
    while time.time() < end:
        frames.append(_points(page))
        s = p.status()
        if "done" in s or "stopped" in s:
            break
        page.wait_for_timeout(100)
    frames.append(_points(page))
    moved = {repr(f) for f in frames if f != before}
    assert len(moved) >= 2, f"the eigenvalues did not move while training ({len(moved)} new frames)"
    if "training" in p.status():
        page.get_by_role("button", name="■ Stop").click()
        p.wait_status("stopped")
    assert p.errors == [], p.errors[:5]
