"""The Reconstruction page: ``panel serve explorer/pages/reconstruction.py`` serves it alone.

Train a PLRNN, shallow PLRNN or AL-RNN on a simulated system or an uploaded series and watch
the reconstruction live; analyse the trained model as a dynamical system. In a notebook:
``from explorer.pages.reconstruction import ReconstructionPanel; ReconstructionPanel()``.
"""

from __future__ import annotations

from ..controllers.reconstruction import ReconstructionController
from ..views.reconstruction import ReconstructionPanel  # importing explorer.views loads the extensions
from ..views.shell import dysts_available
from . import page

__all__ = ["ReconstructionController", "ReconstructionPanel", "build", "view"]


def view(*, sync_url: bool = False) -> ReconstructionPanel:
    """The page body around a new controller."""
    return ReconstructionPanel(ReconstructionController(dysts=dysts_available()), sync_url=sync_url)


def build():
    """The Reconstruction page in the app's template (one per browser session)."""
    return page("reconstruction").build()


if __name__.startswith("bokeh_app"):
    build().servable()
