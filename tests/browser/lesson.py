"""A scripted lesson in the served app, as a teacher gives it: a preset link, live mode with
a parameter change, the Lyapunov spectrum, an orbit-diagram zoom and Back, a 3D rotation,
then the Reconstruction page's lecture preset training to a visible reconstruction.

Shared by the browser test (``test_class_lesson.py``: every step works, zero console errors)
and the benchmark (``benchmarks/bench_lesson.py``: the same steps timed). Pure Playwright
on a page opened by the caller; no pytest here.
"""

from __future__ import annotations

import re
import time

#: the figures of the page, read in the browser: ranges, axis label, renderer count, name
FIGURES = """() => {
  const out = [];
  for (const doc of Bokeh.documents)
    for (const m of doc.all_models)
      if (m.x_range !== undefined && m.y_range !== undefined && m.renderers !== undefined)
        out.push({x: [m.x_range.start, m.x_range.end], y: [m.y_range.start, m.y_range.end],
                  xlabel: (m.below && m.below[0]) ? m.below[0].axis_label : null,
                  renderers: m.renderers.length, name: m.name});
  return out;
}"""

#: rows of the Reconstruction page's loss curve in the browser
LOSS_ROWS = """() => {
  let n = 0;
  for (const d of Bokeh.documents)
    for (const m of d.all_models)
      if (m.data && m.data.loss !== undefined && m.data.step !== undefined)
        n = Math.max(n, m.data.step.length);
  return n;
}"""


def status(page) -> str:
    return page.locator(".status-line").first.locator("div").first.inner_text()


def wait_status(page, text: str, timeout: float = 120.0) -> float:
    """Wait until the status line contains ``text``; returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if text in status(page):
            return time.perf_counter() - t0
        page.wait_for_timeout(50)
    raise AssertionError(f"status never showed {text!r}; last: {status(page)!r}")


def wait_for(page, fn, what: str, timeout: float = 30.0):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        value = fn()
        if value:
            return value
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def main_figure(page) -> dict:
    """The attractor plot (the projection canvas's figure)."""
    return max(page.evaluate(FIGURES), key=lambda f: (f["name"] == "projection", f["renderers"]))


def _fits(fig: dict, *, x=None, y=None, wide: float = 0.0) -> bool:
    """The figure's view lies inside the box ``x``/``y`` and spans at least ``wide`` in x."""
    ok = True
    if x is not None:
        ok &= x[0] <= fig["x"][0] < fig["x"][1] <= x[1] and fig["x"][1] - fig["x"][0] >= wide
    if y is not None:
        ok &= y[0] <= fig["y"][0] < fig["y"][1] <= y[1]
    return bool(ok)


def system_select(page):
    return page.locator("select").filter(has=page.locator("option", has_text="Hénon map")).first


def choose_system(page, label: str) -> float:
    """Pick a system; seconds until its attractor is computed."""
    t0 = time.perf_counter()
    system_select(page).select_option(label=label)
    wait_status(page, f"{label}:")
    wait_status(page, "computed in")
    return time.perf_counter() - t0


def slider_box(page, value: str):
    """The text box of the parameter slider showing ``value``."""
    inputs = page.locator(".bk-input-group input")
    for i in range(inputs.count()):
        if inputs.nth(i).input_value() == value:
            return inputs.nth(i)
    raise AssertionError(f"no slider box shows {value!r}")


def drag(page, canvas, frac_from=(0.5, 0.5), frac_to=(0.7, 0.6), steps: int = 10) -> None:
    """A real mouse drag across ``canvas`` (fractions of its box)."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0 = box["x"] + box["width"] * frac_from[0], box["y"] + box["height"] * frac_from[1]
    x1, y1 = box["x"] + box["width"] * frac_to[0], box["y"] + box["height"] * frac_to[1]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
        page.wait_for_timeout(30)
    page.mouse.up()


def orbit_canvas(page):
    """The orbit diagram's canvas: the lowest wide plot on the page (it is shown once the
    diagram exists, so wait for it)."""
    def find():
        # canvases come and go while plots re-render: a vanished one is skipped, not waited for
        boxes = []
        canvases = page.locator("canvas")
        for i in range(canvases.count()):
            try:
                c = canvases.nth(i)
                box = c.bounding_box(timeout=1000) if c.is_visible() else None
            except Exception:
                box = None
            if box is not None and box["width"] > 300:
                boxes.append((box["y"], c))
        low = max(boxes, key=lambda b: b[0], default=None)
        # the element itself, not the n-th canvas: a figure added above it meanwhile (the
        # Lyapunov plots, at their first result) would shift the index to another canvas
        return low[1].element_handle() if low is not None and low[0] > 300 else None
    return wait_for(page, find, "the orbit diagram's plot", 60)


def orbit_drawn(page, lo: float, hi: float) -> bool:
    """A figure in the browser shows the parameter range [lo, hi] (the orbit diagram has been
    drawn, not only computed: a drag before that would zoom the previous picture)."""
    def near(a, b):
        return isinstance(a, (int, float)) and abs(a - b) < 1e-6 * max(1.0, abs(b))
    return any(near(f["x"][0], lo) and near(f["x"][1], hi) for f in page.evaluate(FIGURES))


def zoom_orbit(page, before, frac_from, frac_to, timeout: float = 60.0, tries: int = 3):
    """Drag a box on the orbit diagram and return its new range. A drag that lands while the
    figure is still being laid out now and then does nothing (about one lesson in five on a
    busy 2-core machine); a person drags again, and so does this, up to ``tries`` times
    within ``timeout`` s."""
    for k in range(tries):
        drag(page, orbit_canvas(page), frac_from, frac_to)
        try:
            return wait_for(page, lambda: orbit_range(page) != before and orbit_range(page),
                            "the zoomed diagram", timeout / tries)
        except AssertionError:
            if k == tries - 1:
                raise


def orbit_range(page) -> tuple[float, float] | None:
    """The orbit diagram's range as its caption states it (None until it shows one)."""
    found = page.get_by_text("values (", exact=False)
    for i in range(found.count()):
        m = re.search(r"∈ \[([-\d.e+]+), ([-\d.e+]+)\]", found.nth(i).inner_text())
        if m:
            return float(m.group(1)), float(m.group(2))
    return None


def page_opener(ctx, errors: list[str], *, timeout_s: float = 60.0, failed_requests: bool = True):
    """``new_page(url)`` for :func:`run_lesson`: a page of the browser context ``ctx`` that
    appends its console errors, page errors and (``failed_requests``) failed requests to
    ``errors``, returned once ``url`` shows a plot's canvas (every wait up to ``timeout_s``)."""
    def new_page(url):
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        if failed_requests:
            page.on("requestfailed", lambda q: errors.append(f"request failed: {q.url[:120]}"))
        page.set_default_timeout(timeout_s * 1000)
        page.goto(url, timeout=timeout_s * 1000)
        page.wait_for_selector("canvas", timeout=timeout_s * 1000)
        return page
    return new_page


def run_lesson(new_page, base_url: str, *, train_seconds: float = 20.0) -> dict:
    """The lesson; ``new_page(url)`` opens a browser page. Returns timings (seconds) and the
    observations the test checks. Raises AssertionError where a step does not work."""
    out: dict = {}
    # 1. the teacher's preset link, in classroom mode: Hénon, not Lorenz
    t0 = time.perf_counter()
    page = new_page(base_url + "?preset=henon-fractal&classroom=1&hide=solver,dt,custom,export")
    wait_for(page, lambda: _fits(main_figure(page), x=(-2, 2)), "Hénon's attractor", 120)
    out["first_plot_s"] = time.perf_counter() - t0      # the page opened as the fixture returned
    assert system_select(page).input_value() == "Hénon map"
    out["preset_lyapunov_s"] = wait_status(page, "Lyapunov spectrum: done")
    # 2. switch preset in the page
    t0 = time.perf_counter()
    page.locator("select").filter(has=page.locator("option", has_text="Lorenz butterfly")).first \
        .select_option(label="Lorenz butterfly")
    wait_for(page, lambda: _fits(main_figure(page), x=(-25, 25), y=(-5, 55), wide=10), "Lorenz's attractor", 120)
    out["preset_switch_s"] = time.perf_counter() - t0
    wait_status(page, "Lyapunov spectrum: done")
    # 3. live mode with a parameter change while it runs
    page.get_by_role("button", name="▶ Run").click()
    page.get_by_text("running:", exact=False).first.wait_for(timeout=10_000)
    page.wait_for_timeout(1000)
    box = slider_box(page, "28")
    t0 = time.perf_counter()
    box.fill("15")
    box.press("Enter")
    page.wait_for_function("() => location.search.includes('p.rho=15')", timeout=10_000)
    out["live_param_change_s"] = time.perf_counter() - t0
    page.get_by_role("button", name="❚❚ Pause").click()
    page.get_by_text("paused:", exact=False).first.wait_for(timeout=10_000)
    # 4. the Lyapunov spectrum at rho = 15 (a stable fixed point pair: no positive exponent)
    wait_status(page, "computed in")
    t0 = time.perf_counter()
    page.get_by_role("button", name="Compute Lyapunov spectrum").click()
    wait_status(page, "Lyapunov spectrum: done")
    out["lyapunov_s"] = time.perf_counter() - t0
    lyap = page.get_by_text("Kaplan–Yorke dimension", exact=False).first.inner_text()
    out["lyapunov_text"] = lyap
    # 5. the logistic map's orbit diagram: drag a box, then Back
    page.locator("select").filter(has=page.locator("option", has_text="Lorenz butterfly")).first \
        .select_option(label="Route to chaos in the logistic map")
    wait_for(page, lambda: system_select(page).input_value() == "Logistic map", "the logistic map")
    page.get_by_text("Orbit diagram", exact=True).click()
    before = wait_for(page, lambda: orbit_range(page), "the orbit diagram", 120)
    wait_for(page, lambda: orbit_drawn(page, *before), "the orbit diagram drawn", 30)
    zoomed = zoom_orbit(page, before, (0.6, 0.1), (0.8, 0.8))
    out["orbit_zoom"] = (before, zoomed)
    back = page.get_by_role("button", name="◀ Back")
    assert back.is_enabled()
    back.click()
    wait_for(page, lambda: orbit_range(page) == before, "Back", 60)
    # 6. a 3D view of Lorenz-63 rotated with the mouse
    choose_system(page, "Lorenz-63")
    page.get_by_role("button", name="3D").click()
    wait_for(page, lambda: "view=3D" in page.url, "the 3D view in the URL")
    az0 = re.search(r"az=([-\d.]+)", page.url).group(1)
    drag(page, page.locator("canvas").first, (0.5, 0.5), (0.7, 0.55))
    wait_for(page, lambda: re.search(r"az=([-\d.]+)", page.url).group(1) != az0, "a rotation")
    out["rotated_to"] = re.search(r"az=([-\d.]+)&el=([-\d.]+)", page.url).groups()
    # 7. the Reconstruction page's lecture preset
    rec = new_page(base_url + "?page=reconstruction&preset=lecture")
    wait_status(rec, "data: lorenz63")
    t0 = time.perf_counter()
    rec.get_by_role("button", name="▶ Start").click()
    wait_for(rec, lambda: rec.evaluate(LOSS_ROWS) > 0, "the first training step", 60)
    out["first_step_s"] = time.perf_counter() - t0
    rows0 = rec.evaluate(LOSS_ROWS)
    rec.wait_for_timeout(int(train_seconds * 1000))
    out["loss_rows"] = (rows0, rec.evaluate(LOSS_ROWS))
    out["training_status"] = status(rec)
    rec.get_by_role("button", name="■ Stop").click()
    return out
