"""The web app: ``dynamics-explorer serve``, or ``panel serve explorer/app.py``.

One Panel app; the page comes from the URL (``?page=attractors``, the default;
``?page=reconstruction`` trains models on data; every page of the registry in
:mod:`explorer.pages`), and the rest of the query holds that page's state, so a copied link
reproduces what was shown.
"""

from __future__ import annotations

import panel as pn

from . import views as _views  # noqa: F401  (loads the Panel/HoloViews extensions once)
from .pages import page


def create_app():
    """Build the page the URL asks for (called once per browser session); the pages are
    those of the registry (:mod:`explorer.pages`)."""
    query = (pn.state.location.query_params if pn.state.location is not None else {}) or {}
    return page(query.get("page")).build()


class _DisconnectFilter:
    """A tab closed while the server was writing to it is not an error of the app: tornado
    and asyncio log it with a traceback (``WebSocketClosedError``, ``StreamClosedError``);
    it becomes one plain line."""

    NAMES = ("WebSocketClosedError", "StreamClosedError")

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage() if exc is None else ""
        if (exc is not None and type(exc).__name__ in self.NAMES) or any(n in text for n in self.NAMES):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a browser tab closed while a message was being sent to it (ignored)", (), None, None)
            record.levelname, record.levelno = "INFO", 20
        return True


def _quiet_disconnects() -> None:
    import logging

    for name in ("tornado.application", "asyncio", "bokeh.server.protocol_handler",
                 "bokeh.server.views.ws"):
        logging.getLogger(name).addFilter(_DisconnectFilter())


def serve(port: int = 5006, address: str = "localhost", show: bool = False) -> None:
    """Serve the app at ``http://<address>:<port>/explorer`` (blocking).

    First-use costs (HoloViews/Bokeh model building, numba's datashader compilation, the
    native simulation library) are paid here, before the port opens, so the first student's
    tab is as fast as the later ones."""
    import logging

    from .views.attractors import warm_up

    _quiet_disconnects()
    try:
        seconds = warm_up()
        logging.getLogger(__name__).info("warmed up in %.1f s", seconds)
    except Exception:  # a failed warm-up only costs the first session its speed
        logging.getLogger(__name__).exception("warm-up failed (the app still serves)")
    pn.serve({"explorer": create_app}, port=port, address=address, show=show,
             websocket_origin=[f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"],
             title="Dynamics Explorer", threaded=False,
             # a closed tab's session (its jobs, its live animation) is cleaned up within seconds
             check_unused_sessions=2000, unused_session_lifetime=2000)


if __name__.startswith("bokeh_app"):
    create_app().servable()
