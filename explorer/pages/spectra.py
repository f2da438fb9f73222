"""The Spectra page: ``panel serve explorer/pages/spectra.py`` serves it alone.

Eigenvalues of state-space models, selective SSMs and attention in the complex plane, moving
while the model trains on a memory task. In a notebook:
``from explorer.pages.spectra import SpectraPanel; SpectraPanel()``.
"""

from __future__ import annotations

from ..controllers.spectra import PRESETS, SpectraController
from ..views.spectra import SpectraPanel, view
from . import page

__all__ = ["PRESETS", "SpectraController", "SpectraPanel", "build", "view"]


def build():
    """The Spectra page in the app's template (one per browser session)."""
    return page("spectra").build()


if __name__.startswith("bokeh_app"):
    build().servable()
