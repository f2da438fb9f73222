"""The app shell: extensions, template, header (name, page navigation, compute device), theme.

One place for what every page shares. Static files (logo, CSS, the template's script) live in
``assets/``; the CSS and script are inlined and the logo embedded, so a page looks the same
served, standalone or in a notebook, and the page loads nothing from outside the server.

* :func:`load_extensions` is the one place that loads HoloViews' Bokeh backend and Panel's
  extensions; importing :mod:`explorer.views` calls it, so ``AttractorsPanel()`` works after a
  bare import in a fresh notebook or script.
* Theme: light or dark, following the browser's ``prefers-color-scheme`` (the template's
  script reports it in a cookie and reloads once when the page was rendered in the other
  theme); ``?theme=dark`` / ``?theme=default`` in the URL and the header's toggle override it.
* Narrow screens: the sidebar collapses (header button; closed from the start below 700 px)
  and the rows of the main area wrap (:func:`reflow`), so plots never shrink to slivers.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable

import panel as pn

ASSETS = Path(__file__).resolve().parents[2] / "assets"
APP_NAME = "Dynamics Explorer"
ACCENT = "#1d3557"
SIDEBAR_WIDTH = 380
#: the width a plot in a row of the main area asks for before the row wraps it onto a line of
#: its own (``reflow``): an item that may grow without limit asks for more than a capped one
REFLOW_WIDTH = 480
REFLOW_WIDTH_CAPPED = 340
#: cookies written by the template's script (assets/shell.js): the browser's colour scheme as
#: last seen, and the reader's explicit choice from the header toggle (absent: follow the browser)
SCHEME_COOKIE = "explorer-scheme"
THEME_COOKIE = "explorer-theme"
THEMES = ("default", "dark")

_extensions_loaded = False


def load_extensions() -> None:
    """Load HoloViews' Bokeh backend and Panel's extensions, once per process.

    The one place that does it: importing :mod:`explorer.views` calls this, the pages and
    the app rely on it. Bokeh draws on a canvas, not WebGL: dense clouds arrive as datashaded
    images, and on machines without a GPU WebGL runs in software and every repaint reads the
    framebuffer back (ten times slower frames).
    """
    global _extensions_loaded
    if _extensions_loaded:
        return
    import holoviews as hv

    hv.extension("bokeh", logo=False)
    hv.renderer("bokeh").webgl = False
    # a spinner from the first byte of the page until its plots are ready (no blank page)
    pn.extension("katex", notifications=False, global_loading_spinner=True)
    _extensions_loaded = True


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


def session_theme() -> str:
    """This session's theme, ``"default"`` (light) or ``"dark"``: ``?theme=`` in the URL
    first, then the reader's choice from the header toggle, then the browser's colour scheme
    (cookies written by the template's script); light where none is known (a notebook)."""
    query = (pn.state.session_args or {}).get("theme") if pn.state.curdoc else None
    if query:
        value = query[0].decode() if isinstance(query[0], bytes) else str(query[0])
        if value in THEMES:
            return value
    cookies = pn.state.cookies or {}
    for name in (THEME_COOKIE, SCHEME_COOKIE):
        if cookies.get(name) in THEMES:
            return cookies[name]
    return "default"


def apply_theme() -> str:
    """Set this session's theme (:func:`session_theme`) for every component built after
    it; call it first in a page's ``build()``. Returns the theme."""
    theme = session_theme()
    if pn.state.curdoc is not None:
        pn.config.theme = theme      # a session setting: widgets, template and plots follow it
    return theme


TOGGLE_CSS = """
.bk-btn { background: transparent !important; color: #f1faee !important; font-size: 1.05em;
          border: 1px solid rgba(241, 250, 238, 0.45) !important; padding: 2px 6px; }
.bk-btn:hover { background: rgba(255, 255, 255, 0.15) !important; color: #fff !important; }
"""


class ExplorerTemplate(pn.template.BootstrapTemplate):
    """Panel's Bootstrap template plus the shell's script (``assets/shell.js``: theme follows
    the browser, sidebar closed from the start on narrow screens)."""

    _template = ASSETS / "template.html"

    def _init_doc(self, doc=None, comm=None, title=None, notebook=False, location=True):
        """Build the page's models with the document's model graph frozen: Bokeh otherwise
        walks the whole graph again after every root and plot added (a dozen times per
        session, about a quarter of a new session's server time); frozen, once at the end."""
        from panel.io.document import init_doc

        document = init_doc(doc or pn.state.curdoc)
        with document.models.freeze():
            return super()._init_doc(document, comm, title, notebook, location)


def theme_toggle(theme: str) -> pn.widgets.Button:
    """The header's light/dark switch: stores the reader's choice in a cookie and reloads
    (a choice equal to the browser's scheme is forgotten, so the page follows it again)."""
    dark = theme == "dark"
    button = pn.widgets.Button(name="☀" if dark else "☾", width=40, margin=(14, 6),
                               description="Light theme" if dark else "Dark theme",
                               stylesheets=[TOGGLE_CSS])
    button.js_on_click(code=f"window.explorerToggleTheme({'true' if dark else 'false'})")
    return button


def reflow(main):
    """Let the rows of the main area wrap: every ``pn.Row`` directly in ``main`` (a column)
    becomes a wrapping ``pn.FlexBox`` of the same items, so a narrow window stacks plots
    instead of squeezing them to slivers. An item grows from a flex basis of
    :data:`REFLOW_WIDTH` pixels (:data:`REFLOW_WIDTH_CAPPED` when it has a ``max_width``,
    its own ``min_width`` when larger); items with a fixed ``width`` keep it."""
    if not isinstance(main, pn.Column):
        return main
    for i, row in enumerate(list(main.objects)):
        if type(row) is not pn.Row:
            continue
        items = list(row.objects)
        for item in items:
            if item.width is not None:
                continue
            basis = REFLOW_WIDTH if item.max_width is None else min(REFLOW_WIDTH_CAPPED, item.max_width)
            basis = max(basis, item.min_width or 0)
            # the flex basis, not Bokeh's own 100% width (with which every item would wrap)
            item.styles = {**item.styles, "flex": f"1 1 {basis}px"}
        main[i] = pn.FlexBox(*items, flex_wrap="wrap", align_items="stretch",
                             sizing_mode="stretch_width", min_height=row.min_height, margin=row.margin)
    return main


def page_template(*, title: str, sidebar, main, pages: dict[str, str], current: str,
                  device, theme: str | None = None) -> pn.template.BootstrapTemplate:
    """The shared template: header with navigation, theme toggle and device, a collapsible
    sidebar, and the main area (its rows wrap on narrow screens)."""
    theme = theme or session_theme()
    tpl = ExplorerTemplate(
        title=f"{APP_NAME} · {title}", logo=logo_uri(), header_background=ACCENT,
        sidebar=[sidebar], main=[reflow(main)], sidebar_width=SIDEBAR_WIDTH, theme=theme,
        raw_css=[asset_text("explorer.css")], favicon=str(ASSETS / "logo.svg"))
    tpl.header.append(navigation(pages, current))
    tpl.header.append(pn.layout.HSpacer())
    tpl.header.append(theme_toggle(theme))
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
