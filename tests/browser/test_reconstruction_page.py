"""The served Reconstruction page in Debian's chromium (Playwright): live training, run
control, checkpoint download, malformed upload."""

import re

import pytest
import torch

pytestmark = pytest.mark.slow

#: lengths of the loss plot's Bokeh data sources (columns 'step' and 'loss'), in the browser
LOSS_ROWS = """() => {
  const out = [];
  for (const d of Bokeh.documents)
    for (const m of d._all_models.values())
      if (m.data && m.data.loss !== undefined && m.data.step !== undefined)
        out.push(m.data.step.length);
  return out.length ? Math.max(...out) : 0;
}"""


def _step(status: str) -> int:
    m = re.search(r"step ([\d,]+)", status)
    assert m, status
    return int(m.group(1).replace(",", ""))


def _wait(p, pred, what: str, timeout: float = 60.0):
    end = timeout * 1000
    waited = 0
    while waited < end:
        s = p.status()
        if pred(s):
            return s
        p.page.wait_for_timeout(150)
        waited += 150
    raise AssertionError(f"{what}: status stayed {p.status()!r}")


def test_train_pause_resume_stop_download_and_bad_upload(open_page, tmp_path):
    p = open_page("?page=reconstruction")
    page = p.page
    p.wait_status("data: lorenz63")
    # start: the status counts steps and the loss curve grows in the browser
    page.get_by_role("button", name="▶ Start").click()
    s1 = _wait(p, lambda s: s.startswith("training: step") and _step(s) > 0, "training started")
    rows1 = page.evaluate(LOSS_ROWS)
    page.wait_for_timeout(1500)
    s2 = _wait(p, lambda s: s.startswith("training: step") and _step(s) > _step(s1), "steps advance")
    assert "left" in s2 and "steps/s" in s2
    rows2 = page.evaluate(LOSS_ROWS)
    assert rows2 > rows1 > 0 or rows2 > 0 and rows1 == 0
    # pause: the step count stops
    page.get_by_role("button", name="❚❚ Pause").click()
    paused = _wait(p, lambda s: "paused at step" in s, "paused")
    at = _step(paused)
    page.wait_for_timeout(1200)
    assert _step(p.status()) == at and page.evaluate(LOSS_ROWS) == at
    # resume: it continues from there
    page.get_by_role("button", name="▶ Resume").click()
    _wait(p, lambda s: s.startswith("training: step") and _step(s) > at, "resumed")
    # stop
    page.get_by_role("button", name="■ Stop").click()
    stopped = _wait(p, lambda s: "stopped at step" in s, "stopped")
    assert _step(stopped) > at
    # download the checkpoint: a file that torch loads with weights_only=True
    with page.expect_download(timeout=30_000) as info:
        page.get_by_role("button", name="Download checkpoint").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.suffix == ".pt" and path.stat().st_size > 1000
    ck = torch.load(path, weights_only=True)
    assert ck["format"] == "dynamics-explorer/checkpoint"
    assert ck["trainer_state"]["step_count"] == _step(stopped)
    # upload a malformed CSV: a one-line error next to the upload, the page keeps working
    page.get_by_text("Uploaded file", exact=True).click()
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": b"x,y\n1,2\nfoo,3\n"}])
    page.get_by_text("line 3: 'foo' is not a number").first.wait_for(timeout=20_000)
    assert "⚠ bad.csv, line 3" in p.status()
    page.wait_for_timeout(300)
    assert p.errors == []


def test_lecture_preset_link_first_step_fast_stop_disables_resume(open_page):
    """The teaching link opens the lecture preset; the first step shows within a few seconds
    of Start; after Stop, Resume is disabled and Start is the way on; no console errors."""
    import time

    p = open_page("?page=reconstruction&preset=lecture")
    page = p.page
    p.wait_status("data: lorenz63")
    assert page.locator("select").filter(has_text="Lecture").first.input_value() == "Lecture: Lorenz-63 in a minute"
    page.get_by_text("Lecture: Lorenz-63 in a minute.").first.wait_for(timeout=10_000)
    page.get_by_text("counts as a reconstruction here").first.wait_for(timeout=10_000)
    t0 = time.monotonic()
    page.get_by_role("button", name="▶ Start").click()
    _wait(p, lambda s: s.startswith("training: step") and _step(s) > 0, "first step", timeout=10)
    first = time.monotonic() - t0
    assert first < 5.0, f"first step after {first:.1f} s"
    # the invariants come every 50 steps: the verdict box fills in
    page.get_by_text("Verdict: ").first.wait_for(timeout=60_000)
    page.get_by_role("button", name="■ Stop").click()
    stopped = _wait(p, lambda s: "stopped at step" in s, "stopped")
    assert "reconstruction" in stopped and "Start trains a new model" in stopped
    assert page.get_by_role("button", name="▶ Resume").is_disabled()
    assert page.get_by_role("button", name="❚❚ Pause").is_disabled()
    assert page.get_by_role("button", name="▶ Start").is_enabled()
    page.wait_for_timeout(500)
    assert p.errors == []
