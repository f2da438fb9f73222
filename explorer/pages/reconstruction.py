"""The Reconstruction page: ``panel serve explorer/pages/reconstruction.py`` serves it alone.

Train a PLRNN, shallow PLRNN or AL-RNN on a simulated system or an uploaded series and watch
the reconstruction live; analyse the trained model as a dynamical system. In a notebook:
``from explorer.pages.reconstruction import ReconstructionPanel; ReconstructionPanel()``.
"""

from __future__ import annotations

import panel as pn

from ..controllers.reconstruction import ReconstructionController
from ..views.reconstruction import ReconstructionPanel  # importing explorer.views loads the extensions
from ..views.shell import apply_theme, device_widget, dysts_available, page_template
from . import PAGES

__all__ = ["ReconstructionPanel", "ReconstructionController", "build"]


def build() -> pn.template.BootstrapTemplate:
    """The Reconstruction page in the app's template (one per browser session)."""
    theme = apply_theme()
    controller = ReconstructionController(dysts=dysts_available())
    panel = ReconstructionPanel(controller)
    device = device_widget(controller.devices(), controller.device,
                           lambda d: setattr(controller, "device", d))
    return page_template(title="Reconstruction", sidebar=panel.sidebar, main=panel.main,
                         pages=PAGES, current="reconstruction", device=device, theme=theme)


if __name__.startswith("bokeh_app"):
    build().servable()
