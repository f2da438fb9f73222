"""The run panel every training page reuses: controls, progress, loss curve, checkpoints.

:class:`RunPanel` shows one :class:`~explorer.controllers.run.RunController`:

* ``controls``: Start, Pause, Resume, Stop, Reset (enabled by the run's phase: after Stop,
  Resume is disabled and Start is the way on), a progress bar and the time left;
* ``loss``: the live loss curve (log axis, raw and smoothed), streamed row by row;
* ``checkpoint``: download of the current state (taken between two steps while training)
  and upload of a checkpoint to resume or analyse, with its error line.

The page view calls :meth:`RunPanel.show` with each :class:`~explorer.controllers.run.Progress`
it polls; everything else follows the controller's parameters.
"""

from __future__ import annotations

import io
import time

import numpy as np
import panel as pn
import param

from ..controllers.run import Progress, RunController, duration
from ..core.errors import ExplorerError
from . import training_plots as tp
from .base import PageView, message
from .live import LivePlot

#: the progress bar and time left are redrawn at most this often while training (s)
PROGRESS_SECONDS = 0.5
#: loss rows kept in the browser (older ones roll off the plot, not the history)
MAX_LOSS_POINTS = 200_000


class RunPanel(pn.viewable.Viewer):
    """Controls, progress, loss curve and checkpoints of one training run."""

    controller = param.ClassSelector(class_=RunController)

    def __init__(self, controller: RunController, view: PageView, *, loss_height: int = 260,
                 checkpoint_types: str = ".pt,.pth,.ckpt", loss_log: bool = True,
                 loss_title: str = "Training loss (MSE)", **params):
        super().__init__(controller=controller, **params)
        self.loss_log = loss_log                  # False: a linear axis (losses that can be negative)
        self.view = view
        W, sw = pn.widgets, {"sizing_mode": "stretch_width"}
        self.b_start = W.Button(name="▶ Start", button_type="success", width=100)
        self.b_pause = W.Button(name="❚❚ Pause", width=100)
        self.b_resume = W.Button(name="▶ Resume", button_type="primary", width=100)
        self.b_stop = W.Button(name="■ Stop", button_type="danger", width=100)
        self.b_reset = W.Button(name="Reset", width=100)
        for b, fn in ((self.b_start, controller.start), (self.b_pause, controller.pause),
                      (self.b_resume, controller.resume), (self.b_stop, controller.stop),
                      (self.b_reset, controller.reset)):
            b.on_click(lambda e, fn=fn: self._act(fn))
        self.progress = pn.indicators.Progress(value=0, max=1000, bar_color="primary", height=14, **sw)
        self.time_text = pn.pane.Markdown("", css_classes=["preset-text"], margin=(0, 10), **sw)
        self.d_ckpt = W.FileDownload(callback=self._download, filename="model.pt",
                                     label="Download checkpoint", button_type="light", **sw)
        self.w_ckpt = W.FileInput(accept=checkpoint_types, multiple=False, **sw)
        self.w_ckpt.param.watch(self._upload, "value")
        self.ckpt_error = pn.pane.Markdown("", css_classes=["field-error"], **sw)
        self.controls = pn.Column(pn.Row(self.b_start, self.b_pause, self.b_resume),
                                  pn.Row(self.b_stop, self.b_reset), self.progress, self.time_text, **sw)
        self.checkpoint = pn.Column(
            pn.pane.Markdown("**Checkpoint**"), self.d_ckpt,
            pn.pane.Markdown("Load a checkpoint (.pt) to resume or analyse it:",
                             css_classes=["preset-text"]),
            self.w_ckpt, self.ckpt_error, **sw)
        self.loss = LivePlot(lambda data: tp.loss_plot(data, logy=loss_log, title=loss_title),
                             height=loss_height, logy=loss_log)
        self._loss = {"step": [], "loss": [], "smooth": []}
        self._loss_range = None
        self._shown_at = 0.0
        self._pending: list = []                # step records not drawn yet
        self._streamed_at = 0.0
        controller.param.watch(self.on_phase, ["phase", "progress", "eta"])
        controller.param.watch(self._on_errors, "errors")
        self.on_phase()

    def __panel__(self):
        return pn.Column(pn.pane.Markdown("**Training**"), self.controls, pn.layout.Divider(),
                         self.checkpoint, sizing_mode="stretch_width")

    # ---------------------------------------------------------------- actions
    def _act(self, fn) -> None:
        self.view.act(fn)
        self.on_phase()

    def _download(self):
        c = self.controller
        try:
            content = c.checkpoint_bytes()
        except ExplorerError as e:
            c._error("checkpoint", str(e))
            return io.BytesIO(b"")
        self.d_ckpt.filename = c.checkpoint_filename()
        return io.BytesIO(content)

    def _upload(self, event) -> None:
        if not event.new:
            return
        if self.controller.load_checkpoint(event.new, self.w_ckpt.filename or "checkpoint.pt"):
            self.reload()
        self.on_phase()
        self.view.ensure_tick()

    # ---------------------------------------------------------------- controller -> widgets
    def _on_errors(self, *_) -> None:
        self.ckpt_error.object = message(self.controller.errors.get("checkpoint"))

    def on_phase(self, *events) -> None:
        c = self.controller
        now = time.monotonic()
        if events and all(e.name in ("progress", "eta") for e in events) \
                and now - self._shown_at < PROGRESS_SECONDS:
            return                               # progress text and bar: twice a second
        self._shown_at = now
        busy = c.phase in ("preparing", "running") or c.running
        self.b_start.disabled = busy
        self.b_pause.disabled = not (busy and c.phase == "running")
        self.b_resume.disabled = not c.can_resume()
        self.b_stop.disabled = not (busy or c.phase == "paused")
        self.d_ckpt.disabled = c.trainer is None and not busy
        if c.phase == "preparing":
            self.progress.value = -1
            self.progress.active = True
        else:
            self.progress.active = busy
            self.progress.value = int(round(1000 * c.progress))
        self.progress.bar_color = {"diverged": "warning", "error": "danger", "done": "success"}.get(
            c.phase, "primary")
        self.time_text.object = (f"{c.step:,} steps · {duration(c.eta)} left" if busy and c.eta
                                 else "")
        if busy:
            self.view.ensure_tick()

    # ---------------------------------------------------------------- the loss curve
    def planned(self) -> int:
        c = self.controller
        return c.planned(c.trainer) if c.trainer is not None else c.steps

    def show(self, p: Progress) -> None:
        """Put what the controller polled on the loss curve (new rows at most every
        :data:`PROGRESS_SECONDS` while training: each append is a browser redraw)."""
        if p.reset:
            self.reload()
        elif p.records:
            self._pending += p.records
        now = time.monotonic()
        if self._pending and (p.ended or now - self._streamed_at >= PROGRESS_SECONDS):
            self._streamed_at = now
            recs, self._pending = self._pending, []
            self._append(recs)
        if p.ended:
            self.on_phase()

    def reload(self) -> None:
        """Redraw the loss curve from the controller's whole history."""
        self._pending = []                      # in the history already
        h = self.controller.history
        steps, loss = list(h["step"]), list(h.get("loss", []))
        smooth = list(tp.ema(np.asarray(loss, dtype=float)))
        self._loss = {"step": steps, "loss": loss, "smooth": smooth}
        self._loss_range = tp.fit_range(loss, log=self.loss_log)
        self.loss.send((steps, loss, smooth), key="loss")
        if steps:
            self.loss.set_ranges((0, max(self.planned(), steps[-1]) * 1.02), self._loss_range)

    def _append(self, recs: list) -> None:
        steps = [r.step for r in recs]
        loss = [r.loss for r in recs]
        prev = self._loss["smooth"][-1] if self._loss["smooth"] else None
        smooth = tp.ema(np.asarray(loss, dtype=float), prev)
        self._loss["step"] += steps
        self._loss["loss"] += loss
        self._loss["smooth"] += smooth.tolist()
        new, old = tp.fit_range(loss, log=self.loss_log), self._loss_range
        self._loss_range = new if old is None else (old if new is None else (min(old[0], new[0]), max(old[1], new[1])))
        data = (self._loss["step"], self._loss["loss"], self._loss["smooth"])
        xr = (0, max(self.planned(), steps[-1]) * 1.02)
        if len(self._loss["step"]) == len(steps):          # the first rows: render
            self.loss.send(data, key="loss")
            self.loss.set_ranges(xr, None)
        else:
            self.loss.stream(data, tp.loss_columns(steps, loss, smooth), rollover=MAX_LOSS_POINTS,
                             key="loss", x_range=xr, y_range=self._loss_range)
