"""What every page's view shares: the UI tick, session clean-up and the error guard.

:class:`PageView` is a :class:`panel.viewable.Viewer` around one page controller
(:class:`explorer.controllers.base.PageController`). It owns

* the **tick**: a periodic callback that runs only while something computes or plays
  (:meth:`busy`), publishes inside ``pn.io.hold()`` (one document patch per tick) and stops
  the session's work at once when its tab has gone;
* the **poll**: finished jobs are collected at once (the controller's jobs notify the
  session's event loop), not only by the tick;
* the **error guard**: :meth:`guard` turns a user error into the status line, never a
  traceback in the browser;
* **clean-up**: the controller and any extra closables are closed when the session ends;
* :meth:`set_quietly` to move a widget without feeding the change back.

A page view subclasses it, builds ``self.sidebar`` and ``self.main`` and overrides
:meth:`refresh` (called on every poll) and, if it animates, :meth:`busy`.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any, Callable

import panel as pn
import param

from ..controllers.base import PageController, one_line
from ..core.errors import ExplorerError
from .shell import schedule


#: every page view alive in this process (counted by the server's /stats)
LIVE_VIEWS: "weakref.WeakSet[PageView]" = weakref.WeakSet()


class PageView(pn.viewable.Viewer):
    """Sidebar and main area around one page controller."""

    controller = param.ClassSelector(class_=PageController)

    #: UI tick periods (ms): while animating, and otherwise (progress of jobs)
    TICK_FAST_MS, TICK_MS = 25, 250

    def __init__(self, controller: PageController, **params):
        super().__init__(controller=controller, **params)
        self._doc = pn.state.curdoc
        self._periodic = None
        self._building = False
        self._was_connected = False
        self._closables: list[Any] = []
        controller.jobs.notify = self._schedule_poll
        LIVE_VIEWS.add(self)
        #: whether the browser has connected (always, without a server); see :meth:`when_ready`
        self._ready = not self.served
        self._deferred: dict[object, Callable[[], None]] = {}
        if self.served:
            from bokeh.events import ConnectionLost

            pn.state.onload(self._on_ready)
            pn.state.on_session_destroyed(lambda ctx: self.close())
            self._doc.on_event(ConnectionLost, lambda event: self._connection_lost())

    # ---------------------------------------------------------------- hooks for pages
    def refresh(self) -> None:
        """Move what the controller collected into the plots (UI thread, inside a hold)."""

    def show(self, result) -> None:
        """Like :meth:`refresh`, with what ``controller.poll()`` returned (a training page's
        :class:`~explorer.controllers.run.Progress`); the default calls :meth:`refresh`."""
        self.refresh()

    def busy(self) -> bool:
        """Whether the tick should keep running."""
        return self.controller.busy()

    def fast(self) -> bool:
        """Whether the tick runs at :data:`TICK_FAST_MS` (animations)."""
        return False

    def __panel__(self):
        return pn.Row(pn.Column(self.sidebar, width=360), self.body(), sizing_mode="stretch_width")

    def body(self) -> pn.Column:
        """The main area with the controller's notice on top (values of the link that were
        refused: shown until dismissed; the text is escaped by the controller). The notice
        goes into ``main`` itself, whose own rows the template then lets wrap."""
        if getattr(self, "_notice_box", None) is not None:          # shown once already
            return self.main
        c = self.controller
        text = pn.pane.Markdown(c.notice and "⚠ " + c.notice, sizing_mode="stretch_width", margin=(0, 8))
        close = pn.widgets.Button(name="✕", width=36, button_type="light",
                                  description="Dismiss this notice")
        box = pn.Column(pn.Row(text, close, sizing_mode="stretch_width"), visible=bool(c.notice),
                        css_classes=["link-notice"], sizing_mode="stretch_width",
                        styles={"background": "#fff3bf", "border-radius": "6px"})

        def show(event) -> None:
            text.object, box.visible = event.new and "⚠ " + event.new, bool(event.new)
        c.param.watch(show, "notice")
        close.on_click(lambda e: setattr(c, "notice", ""))
        self._notice_box = box
        self.main.insert(0, box)
        return self.main

    # ---------------------------------------------------------------- the tick
    @property
    def served(self) -> bool:
        """A live server session (not a notebook or a test without a server)."""
        return self._doc is not None and self._doc.session_context is not None

    def _schedule_poll(self) -> None:
        self.when_ready(lambda: schedule(self._doc, self._poll), key="poll")

    def when_ready(self, fn: Callable[[], None], key: str | None = None) -> None:
        """Run ``fn`` now, or once the browser has connected the session's websocket.

        Until then a served page's plots must not change: HoloViews reschedules a plot's
        refresh on every tick of the server's event loop until the session connects, so a
        result delivered to a page whose browser is still loading (a class arriving at once)
        would spin the loop that every other session shares. What changes before the
        connection is drawn right after it instead. ``key`` merges repeated requests."""
        if self._ready:
            fn()
            return
        self._deferred.setdefault(object() if key is None else key, fn)

    def _on_ready(self) -> None:
        self._ready = True
        deferred, self._deferred = self._deferred, {}
        for fn in deferred.values():
            try:
                fn()
            except Exception:
                logging.getLogger(__name__).exception("a page update held until the browser connected")

    def _poll(self) -> None:
        with self.batch():
            self.show(self.controller.poll())

    @contextlib.contextmanager
    def batch(self):
        """Everything changed inside goes out as one document patch, with at most one walk
        of the document's model graph (see :func:`one_model_walk`)."""
        doc = self._doc
        if doc is None or not self.served:
            yield
            return
        with pn.io.hold(doc), one_model_walk(doc):
            yield

    def ensure_tick(self) -> None:
        """Run the tick while :meth:`busy` (it stops itself); without a server, poll once."""
        if not self.served:
            self._poll()
            return
        if not self._ready:                     # started once the browser has connected
            self.when_ready(self.ensure_tick, key="tick")
            return
        period = self.TICK_FAST_MS if self.fast() else self.TICK_MS
        if self._periodic is None or not self._periodic.running:
            self._periodic = self._start_tick(period)
        elif self._periodic.period != period:
            self._periodic.period = period

    def _start_tick(self, period: int):
        """A periodic callback of this session for the tick: in the background (Panel's
        busy indicators are process-wide, so a foreground callback would flip every open
        session's spinner twice per tick: a cost that grows with the square of the class)
        and without Panel's two log records per call."""
        from panel.io.callbacks import PeriodicCallback
        from panel.io.state import set_curdoc

        tick = PeriodicCallback(callback=self._tick, period=period, log=False, background=True)
        with set_curdoc(self._doc):
            tick.start()
        return tick

    def connected(self) -> bool:
        """False once the browser tab has gone (its session may live on a few seconds more)."""
        ctx = getattr(self._doc, "session_context", None)
        session = getattr(ctx, "_session", None)
        conns = getattr(session, "_subscribed_connections", None)
        if conns:
            self._was_connected = True
        return conns is None or bool(conns) or not self._was_connected

    def _tick(self) -> None:
        if not self.connected():                  # the tab closed: stop sending at once
            self.close()
            return
        if not self._ready:                       # the browser is still loading the page
            self._periodic.stop()
            self.when_ready(self.ensure_tick, key="tick")
            return
        self._poll()
        if self._periodic is None:
            return
        if not self.busy():
            self._periodic.stop()
        else:
            period = self.TICK_FAST_MS if self.fast() else self.TICK_MS
            if self._periodic.period != period:
                self._periodic.period = period

    def later(self, fn: Callable[[], None], delay_ms: int = 0) -> None:
        """Run ``fn`` on a later tick (a separate document patch) or ``delay_ms`` later, or
        now without a server."""
        if not self.served:
            fn()
            return

        def batched() -> None:
            with self.batch():
                fn()

        def add() -> None:
            try:
                if delay_ms:
                    self._doc.add_timeout_callback(batched, delay_ms)
                else:
                    self._doc.add_next_tick_callback(batched)
            except Exception:  # the session is being destroyed: nothing to show any more
                pass
        self.when_ready(add)

    def status_line(self) -> pn.pane.Markdown:
        """A pane that shows the controller's status line (what computes, what happened)."""
        pane = pn.pane.Markdown(self.controller.status, css_classes=["status-line"],
                                sizing_mode="stretch_width")
        self.controller.param.watch(lambda e: setattr(pane, "object", e.new), "status")
        return pane

    # ---------------------------------------------------------------- errors and widgets
    def guard(self, fn: Callable, *args, **kwargs):
        """Call ``fn``; a user error (bad value, refused request) becomes the status line."""
        try:
            return fn(*args, **kwargs)
        except (ValueError, ExplorerError) as e:
            self.controller.status = f"⚠ {one_line(e)}"
        return None

    def act(self, fn: Callable, *args) -> None:
        """A button's action: guarded, then the tick runs while its work does."""
        with self.batch():
            self.guard(fn, *args)
        self.ensure_tick()

    def set_param(self, name: str, value) -> None:
        """A widget's new value into the controller (ignored while the view moves widgets)."""
        if self._building or value is None:
            return
        with self.batch():
            self.guard(setattr, self.controller, name, value)

    @contextlib.contextmanager
    def building(self):
        """Move widgets to the controller's state without feeding the changes back."""
        was, self._building = self._building, True
        try:
            yield
        finally:
            self._building = was

    def set_quietly(self, widget, **values) -> None:
        with self.building():
            widget.param.update(**{k: v for k, v in values.items() if getattr(widget, k) != v})

    def number_input(self, parameter: str, widget=pn.widgets.FloatInput, **kwargs):
        """A number box for the controller's parameter ``parameter``: label, bounds and tooltip
        from its declaration (``from_param`` semantics, linked both ways), but guarded: a
        refused value becomes the status line, and an emptied box takes the current value
        back (unless the parameter allows None)."""
        c, p = self.controller, self.controller.param[parameter]
        lo, hi = p.bounds or (None, None)
        kwargs.setdefault("name", p.label)
        w = widget(value=getattr(c, parameter), start=lo, end=hi, description=p.doc, **kwargs)

        def changed(event):
            if event.new is None and not p.allow_None:
                self.later(lambda: self.set_quietly(w, value=getattr(c, parameter)))
            elif not self._building and event.new != getattr(c, parameter):
                self.guard(setattr, c, parameter, event.new)
        w.param.watch(changed, "value")
        c.param.watch(lambda e: self.set_quietly(w, value=e.new), parameter)
        return w

    # ---------------------------------------------------------------- lifetime
    def _connection_lost(self) -> None:
        """The tab closed (its websocket went): stop the session's work now and have the
        server discard the session at its next check (every 2 s) instead of after the
        lifetime that pages not yet connected get (see :data:`explorer.app.CONNECT_WAIT_MS`)."""
        # this runs inside Bokeh's websocket close, before the connection is unsubscribed:
        # whatever happens here must not stop that, or the session would never be discarded
        try:
            self.close()
        except Exception:
            logging.getLogger(__name__).exception("closing a page after its tab closed")
        session = getattr(getattr(self._doc, "session_context", None), "_session", None)
        if session is not None:
            session.request_expiration()

    def on_close(self, obj) -> None:
        """Also close ``obj`` (anything with ``close()``) when the session ends."""
        self._closables.append(obj)

    def close(self) -> None:
        for obj in [self.controller, *self._closables]:
            try:
                obj.close()
            except Exception:  # never let one failing clean-up keep the others alive
                pass
        forget_links(getattr(self, "sidebar", None), getattr(self, "main", None))
        if self._periodic is not None:
            try:
                self._periodic.stop()
            except Exception:
                pass


@contextlib.contextmanager
def one_model_walk(doc):
    """Defer the walks of ``doc``'s model graph to the end of the block: one walk, and only
    if the graph may have changed.

    Bokeh walks every model of a document (about 20 ms for a page of 300 models) each time a
    property that holds models changes, and at the end of every ``models.freeze()`` block,
    which HoloViews opens around each plot update and Panel around each model update, whether
    anything changed or not. A preset or a finished computation made a hundred such walks.
    Inside this block the document counts as frozen; a change that would have walked (an
    invalidation or a nested freeze) is noted, and the block ends with one walk if any was.
    Nested blocks defer to the outermost. Event-loop thread only (the document lock)."""
    models = getattr(doc, "models", None)
    if models is None or "_push_freeze" in vars(models):        # nested: the outer block walks
        yield
        return
    changed = False

    def note() -> None:
        nonlocal changed
        changed = True

    def push() -> None:
        note()
        type(models)._push_freeze(models)

    models.invalidate, models._push_freeze = note, push           # instance attributes shadow
    models._freeze_count += 1
    try:
        yield
    finally:
        models._freeze_count -= 1
        del models.invalidate, models._push_freeze
        if changed and models._freeze_count == 0:
            models.recompute()


def forget_links(*layouts) -> None:
    """Drop the JavaScript links of every component in ``layouts`` from Panel's link
    registry. Panel keeps links (``jslink``, ``jscallback``, the editable sliders' own) in a
    process-wide weak-keyed dictionary whose values refer back to their keys, so a component
    with a link, and through its watchers the whole page, would outlive its session."""
    from panel.links import Callback

    for layout in layouts:
        if layout is None:
            continue
        for obj in [layout, *layout.select()]:
            try:
                Callback.registry.pop(obj, None)
            except TypeError:            # an object that cannot be weakly referenced
                pass
            if getattr(obj, "lazy_contents", None):      # tabs of lazy_tabs not opened yet
                forget_links(*obj.lazy_contents)


def lazy_tabs(*items: tuple[str, Any], **params) -> pn.Tabs:
    """Tabs whose hidden tabs are drawn when first opened.

    ``items`` are ``(title, content)`` pairs, as for ``pn.Tabs``. Every tab holds a wrapper
    column that receives its content (one Panel object, updated by the page whether shown or
    not) when the tab is first opened, by the reader or by the page setting ``active``.
    Until then the content has no Bokeh models and no HoloViews plots: a new session builds
    the open tab only, a fraction of its server time. Panel's own ``dynamic=True`` renders a
    tab afresh at every switch and loads its style sheets from a CDN."""
    holders = [pn.Column(sizing_mode="stretch_width") for _ in items]
    tabs = pn.Tabs(*[(title, holder) for (title, _), holder in zip(items, holders)], **params)

    def fill(index: int) -> None:
        if 0 <= index < len(holders) and not holders[index].objects:
            holders[index].objects = [items[index][1]]
    fill(tabs.active)
    tabs.param.watch(lambda event: fill(event.new), "active")
    tabs.lazy_contents = [content for _, content in items]     # for forget_links
    return tabs


def message(text: str | None) -> str:
    """An error line for a field (empty when there is none)."""
    return f"⚠ {text}" if text else ""


__all__ = ["PageView", "forget_links", "lazy_tabs", "message", "one_line"]
