"""The app shell: template, header (name, page navigation, compute device), theme.

One place for what every page shares. Static files (logo, CSS) live in ``assets/``; the CSS
is inlined and the logo embedded, so a page looks the same served, standalone or in a
notebook, and the page loads nothing from outside the server.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable

import panel as pn

ASSETS = Path(__file__).resolve().parents[2] / "assets"
APP_NAME = "Dynamics Explorer"
ACCENT = "#1d3557"


def asset_text(name: str) -> str:
    path = ASSETS / name
    return path.read_text() if path.exists() else ""


def logo_uri() -> str:
    path = ASSETS / "logo.svg"
    if not path.exists():
        return ""
    return "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()


def navigation(pages: dict[str, str], current: str) -> pn.pane.HTML:
    """Links to the app's pages (``?page=key``); the current one highlighted."""
    links = "".join(f'<a class="{"active" if k == current else ""}" href="?page={k}">{title}</a>'
                    for k, title in pages.items())
    return pn.pane.HTML(f'<nav class="explorer-nav">{links}</nav>', margin=(12, 10),
                        stylesheets=[asset_text("explorer.css")])


def device_widget(devices: list[str], current: str, on_change: Callable[[str], None]):
    """The compute device: a selector when there is a choice, else a label."""
    if len(devices) > 1:
        sel = pn.widgets.Select(name="", options=devices, value=current, width=140, margin=(10, 5))
        sel.param.watch(lambda e: on_change(e.new), "value")
        return pn.Row(pn.pane.HTML('<span class="explorer-device">Device</span>', margin=(16, 0),
                                   stylesheets=[asset_text("explorer.css")]), sel)
    return pn.pane.HTML(f'<span class="explorer-device">Device: <b>{current}</b></span>', margin=(16, 10),
                        stylesheets=[asset_text("explorer.css")])


def page_template(*, title: str, sidebar, main, pages: dict[str, str], current: str,
                  device) -> pn.template.BootstrapTemplate:
    """The shared template: header with navigation and device, sidebar, main area."""
    tpl = pn.template.BootstrapTemplate(
        title=f"{APP_NAME} · {title}", logo=logo_uri(), header_background=ACCENT,
        sidebar=[sidebar], main=[main], sidebar_width=380, raw_css=[asset_text("explorer.css")],
        favicon=str(ASSETS / "logo.svg"))
    tpl.header.append(navigation(pages, current))
    tpl.header.append(pn.layout.HSpacer())
    tpl.header.append(device)
    return tpl


def dysts_available() -> bool:
    """Whether the optional dysts catalogue is installed (its systems join the pickers)."""
    try:
        import importlib.util
        return importlib.util.find_spec("dysts") is not None
    except (ImportError, ValueError):
        return False


def schedule(doc, fn) -> None:
    """Run ``fn`` on the session's event loop at its next tick (safe from any thread); a
    no-op when there is no live session (notebooks, tests, a closed tab)."""
    if doc is not None and doc.session_context is not None:
        try:
            doc.add_next_tick_callback(fn)
        except Exception:  # the document is being destroyed
            pass


def prompt_widgets(layout) -> None:
    """Apply the browser's widget changes at once: Panel waits 50 ms (``_debounce``, a class
    default) to merge rapid edits, but these widgets send committed values (Enter, slider
    release, a click), and the page's supersession of running jobs already merges bursts."""
    for w in layout.select(pn.widgets.Widget):
        if hasattr(w, "_debounce"):
            w._debounce = 0
