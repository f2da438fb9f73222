"""The served Stochastic page in Debian's chromium: the maps of a sampled ensemble, live
training that redraws the model's potential and entropy maps, a malformed custom SDE."""

import pytest

pytestmark = pytest.mark.slow

#: per Bokeh image source: (number of pixels, their sum over finite values)
IMAGES = """() => {
  const out = [];
  for (const d of Bokeh.documents)
    for (const m of d._all_models.values())
      if (m.data && m.data.image !== undefined && m.data.dw !== undefined) {
        const im = m.data.image[0];
        let n = 0, s = 0;
        if (im) for (const v of im) if (Number.isFinite(v)) { n += 1; s += v; }
        out.push([n, Math.round(s * 1e4) / 1e4]);
      }
  return out;
}"""


def _images(page):
    return page.evaluate(IMAGES)


def test_training_redraws_the_maps_and_a_bad_custom_sde_is_refused(open_page):
    p = open_page("?page=stochastic&preset=rotating-ou")
    page = p.page
    status = p.wait_status("entropy production")
    assert "exact 2" in status, status
    page.get_by_text("probability circulates", exact=False).first.wait_for()   # the preset's text
    page.wait_for_function(f"() => ({IMAGES})().filter(a => a[0] >= 1000).length == 2",
                           timeout=60_000)                  # the two maps of the samples
    page.get_by_role("button", name="▶ Start").click()
    p.wait_status("training: step")
    page.wait_for_function(f"() => ({IMAGES})().filter(a => a[0] >= 1000).length == 6",
                           timeout=60_000)                  # the model's four maps too
    first = _images(page)
    page.wait_for_timeout(4000)
    later = _images(page)
    assert later != first, "the model's maps did not change while training"
    assert "model e_p" in p.status()
    page.get_by_role("button", name="■ Stop").click()
    p.wait_status("stopped")
    # a malformed custom SDE: the error is shown, nothing is applied, the page keeps working
    select = page.locator("select").filter(
        has=page.locator("option", has_text="Custom (your equations)")).first
    select.select_option(label="Custom (your equations)")
    area = page.locator("textarea").first
    area.wait_for()
    area.fill("x' = -x +* y\ny' = -y")
    page.get_by_text("⚠").first.wait_for(timeout=10_000)
    assert page.get_by_role("button", name="Use these equations").is_disabled()
    area.fill("x' = -x + a*y\ny' = -a*x - y")
    diffusion = page.get_by_placeholder("one entry per variable", exact=False).first
    diffusion.fill("1, -1")
    diffusion.press("Enter")
    p.wait_button("Use these equations", enabled=False)
    diffusion.fill("1, 1")
    diffusion.press("Enter")
    button = p.wait_button("Use these equations", enabled=True)
    button.click()
    status = p.wait_status("exact 2")                      # a = 1: the rotating OU again
    assert p.errors == [], p.errors[:5]
