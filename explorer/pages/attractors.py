"""The Attractors page: ``panel serve explorer/pages/attractors.py`` serves it on its own.

In a notebook: ``from explorer.pages.attractors import AttractorsPanel; AttractorsPanel()``
embeds the page body (sidebar and plots) without the template.
"""

from __future__ import annotations

import panel as pn

from ..controllers.attractors import AttractorController
from ..views.attractors import AttractorsPanel  # importing explorer.views loads the extensions
from ..views.shell import apply_theme, device_widget, dysts_available, page_template
from . import PAGES

__all__ = ["AttractorsPanel", "AttractorController", "build"]


def build(*, sync_url: bool = True) -> pn.template.BootstrapTemplate:
    """The Attractors page in the app's template (one per browser session)."""
    theme = apply_theme()
    controller = AttractorController(dysts=dysts_available())
    panel = AttractorsPanel(controller, sync_url=sync_url)
    device = device_widget(controller.devices(), controller.device,
                           lambda d: setattr(controller, "device", d))
    return page_template(title="Attractors", sidebar=panel.sidebar, main=panel.body(), pages=PAGES,
                         current="attractors", device=device, theme=theme)


if __name__.startswith("bokeh_app"):
    build().servable()
