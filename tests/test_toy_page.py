"""The platform's template page (tests/toy_page.py): a page that trains live is its
controller, its view and one registry entry, in under 80 lines."""

import time
from pathlib import Path

import panel as pn
import pytest
import torch
from bokeh.document import Document
from panel.io.state import set_curdoc

import toy_page
from explorer.pages import REGISTRY, page, register, titles, unregister
from toy_page import ToyController, ToyPanel


@pytest.fixture(autouse=True)
def _registered():
    register(toy_page.PAGE)                  # the module's one registry line, for each test
    yield
    unregister("toy")


def _until(c, pred, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c.poll()
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out; phase {c.phase}, step {c.step}, status {c.status!r}")


def test_the_page_code_is_short():
    lines = Path(toy_page.__file__).read_text().splitlines()
    assert len(lines) < 80, len(lines)


def test_trains_to_a_low_loss():
    """A 32-unit tanh MLP fits sin(3x) on [-1, 1] (variance 1/2 - sin(6)/12 = 0.52) in 400
    full-batch steps to a mean squared error below 0.01 (2 % of the variance; a constant
    fit would score 0.52, a linear one 0.30), ten times below its first evaluation."""
    c = ToyController()
    assert c.start()
    c.wait(120)
    assert c.phase == "done" and c.step == 400, c.status
    assert c.history["step"] == list(range(1, 401))
    mse = [m["mse"] for m in c.metric_history]
    assert [m["step"] for m in c.metric_history][:2] == [50, 100]
    assert mse[-1] < 0.01 and mse[-1] < mse[0] / 10, mse
    assert c.status.startswith("done: 400 steps")


def test_pause_resume_stop_and_checkpoint_round_trip():
    c = ToyController(steps=1_000_000)
    assert c.start() and c.phase == "preparing"
    # the status line is redrawn at most twice a second: wait for one that has the rate
    _until(c, lambda: c.step >= 10 and "steps/s" in c.status)
    assert c.phase == "running" and "training: step" in c.status
    assert c.pause()
    c.wait(30)
    at = c.step
    assert c.phase == "paused" and f"paused at step {at:,}" in c.status
    time.sleep(0.3)
    assert c.poll().records == [] and c.step == at              # nothing trains while paused
    assert c.resume()
    _until(c, lambda: c.step > at + 5)
    assert c.stop()
    c.wait(30)
    assert c.phase == "stopped" and not c.can_resume()
    assert c.history["step"] == list(range(1, c.step + 1))       # one continuous loss curve
    blob = c.checkpoint_bytes()
    weights = {k: v.clone() for k, v in c.trainer.task.model.state_dict().items()}

    d = ToyController(steps=5)
    assert d.load_checkpoint(blob, "toy.pt"), d.errors
    assert d.phase == "paused" and d.step == c.step and d.steps == 1_000_000
    for k, v in d.trainer.task.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert d.history["loss"] == c.history["loss"]
    d.steps = d.step + 20
    assert d.resume()
    d.wait(60)
    assert d.phase == "done" and d.step == c.step + 20

    # a checkpoint of another model (other width) is refused in one line, nothing changes
    e = ToyController(hidden=8)
    assert not e.load_checkpoint(blob, "toy.pt")
    assert e.errors["checkpoint"].startswith("toy.pt") and "\n" not in e.errors["checkpoint"]
    assert e.trainer is None and e.phase == "idle"


def test_the_view_and_the_registry_entry():
    assert page("toy") is toy_page.PAGE and list(REGISTRY)[-1] == "toy"
    assert titles()["toy"] == "◆ Toy regression"
    doc = Document()
    with set_curdoc(doc):
        tpl = page("toy").build(sync_url=False)
        tpl.server_doc(doc)
        view = ToyPanel()
        names = [b.name for b in view.run.controls.select(pn.widgets.Button)]
        assert names == ["▶ Start", "❚❚ Pause", "▶ Resume", "■ Stop", "Reset"]
        assert view.run.b_pause.disabled and not view.run.b_start.disabled
        view.run.b_start.clicks += 1                               # no server: the view polls itself
        end = time.monotonic() + 60
        while view.controller.phase != "done" and time.monotonic() < end:
            view._poll()                                           # what the tick does
            time.sleep(0.02)
        assert view.controller.phase == "done" and view.run.b_pause.disabled
        assert not view.run.b_start.disabled and not view.run.b_resume.disabled   # raise Steps to go on
        assert len(view.run._loss["step"]) == 400
        view.close()


def test_a_run_that_ends_after_the_tab_closed_is_ignored():
    """CI saw this: the run finished, the tab closed, then a tick that was already scheduled
    polled the end and its follow-up job was refused with a traceback in the server log."""
    class FollowUp(ToyController):
        def on_run_end(self, phase):
            self._submit("after", lambda stop, progress: 1, "follow-up")

    c = FollowUp(steps=5)
    assert c.start()
    run = c._run
    assert run.join(60)                      # ended, its end not yet polled
    c.close()
    p = c.poll()                             # the late tick: no error, no new job
    assert p.empty and not c.busy() and "after" not in c.errors
