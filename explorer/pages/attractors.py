"""The Attractors page: ``panel serve explorer/pages/attractors.py`` serves it on its own.

In a notebook: ``from explorer.pages.attractors import AttractorsPanel; AttractorsPanel()``
embeds the page body (sidebar and plots) without the template.
"""

from __future__ import annotations

import holoviews as hv
import panel as pn

from ..controllers.attractors import AttractorController
from ..views.attractors import AttractorsPanel
from ..views.shell import device_widget, dysts_available, page_template
from . import PAGES

hv.extension("bokeh", logo=False)
# Canvas, not WebGL: dense clouds arrive as datashaded images, and on machines without a GPU
# WebGL runs in software and every repaint reads the framebuffer back (10x slower frames).
hv.renderer("bokeh").webgl = False
pn.extension("katex", notifications=False)

__all__ = ["AttractorsPanel", "AttractorController", "build"]


def build(*, sync_url: bool = True) -> pn.template.BootstrapTemplate:
    """The Attractors page in the app's template (one per browser session)."""
    controller = AttractorController(dysts=dysts_available())
    panel = AttractorsPanel(controller, sync_url=sync_url)
    device = device_widget(controller.devices(), controller.device,
                           lambda d: setattr(controller, "device", d))
    return page_template(title="Attractors", sidebar=panel.sidebar, main=panel.main, pages=PAGES,
                         current="attractors", device=device)


if __name__.startswith("bokeh_app"):
    build().servable()
