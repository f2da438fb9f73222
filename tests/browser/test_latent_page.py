"""The served Latent dynamics page in Debian's chromium: frames shown, training redraws the
frames and the latent vector field, pause/resume/stop, a malformed upload shows its error and
the page keeps working, zero console errors."""

import re

import pytest

pytestmark = pytest.mark.slow

#: every image glyph source: [[rows, cols, sum of the finite pixels], ...]
IMAGES = """() => {
  const out = [];
  for (const d of Bokeh.documents)
    for (const m of d._all_models.values())
      if (m.data && m.data.image !== undefined && m.data.image.length) {
        const img = m.data.image[0];
        let s = 0, n = 0;
        const flat = img.length !== undefined && typeof img[0] === "number" ? img : [].concat(...img);
        for (const v of flat) if (Number.isFinite(v)) { s += v; n += 1; }
        out.push([n, Math.round(s * 1e4) / 1e4]);
      }
  return out;
}"""


def _step(status: str) -> int:
    m = re.search(r"step ([\d,]+)", status)
    return int(m.group(1).replace(",", "")) if m else -1


def _images(page):
    return page.evaluate(IMAGES)


def test_training_redraws_frames_and_field_pause_resume_stop_and_bad_upload(open_page):
    p = open_page("?page=latent&frames=300&size=24&batch=16&steps=3000")
    page = p.page
    p.wait_status("frames: Pendulum, 300 frames of 24×24")
    # the truth strip is drawn before any model: a real image (hundreds of finite pixels)
    page.wait_for_function(f"() => ({IMAGES})().some(a => a[0] >= 24 * 24 * 4 && a[1] > 1)",
                           timeout=30_000)
    page.get_by_role("button", name="▶ Start").click()
    s1 = p.wait_status("training: step")
    page.wait_for_function(f"() => ({IMAGES})().filter(a => a[0] >= 100).length >= 4",
                           timeout=60_000)            # strip, animation, vector field, encode-decode
    first = _images(page)
    page.wait_for_timeout(4000)
    later = _images(page)
    assert later != first, "the frames and the vector field were not redrawn while training"
    assert _step(p.status()) > _step(s1)
    # pause: the step count stops; resume continues; stop
    page.get_by_role("button", name="❚❚ Pause").click()
    at = _step(p.wait_status("paused at step"))
    page.wait_for_timeout(1000)
    assert _step(p.status()) == at
    page.get_by_role("button", name="▶ Resume").click()
    end = page.evaluate("Date.now()") + 60_000
    while _step(p.status()) <= at and page.evaluate("Date.now()") < end:
        page.wait_for_timeout(200)
    assert _step(p.status()) > at, "training did not resume"
    page.get_by_role("button", name="■ Stop").click()
    p.wait_status("stopped at step")
    # a malformed upload: one line beside the upload, nothing else changes
    page.locator("select").filter(has=page.locator("option", has_text="Uploaded frames")).first \
        .select_option(label="Uploaded frames")
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "bad.npy", "mimeType": "application/octet-stream",
                "buffer": b"\x93NUMPY\x01\x00garbage that is not a header"}])
    page.get_by_text("bad.npy", exact=False).first.wait_for(timeout=20_000)
    assert "⚠ bad.npy" in p.status()
    # the page keeps working: back to rendered frames, a new scene renders
    page.locator("select").filter(has=page.locator("option", has_text="Rendered system")).first \
        .select_option(label="Rendered system")
    page.locator("select").filter(has=page.locator("option", has_text="Mass on a spring")).first \
        .select_option(label="Mass on a spring")
    p.wait_status("frames: Mass on a spring")
    page.wait_for_timeout(300)
    assert p.errors == [], p.errors[:5]
