"""The Latent page: ``panel serve explorer/pages/latent.py`` serves it alone.

A model learns a dynamical system from image frames: its latent vector field, fixed points
and attractors, live while it trains. In a notebook:
``from explorer.pages.latent import LatentPanel; LatentPanel()``.
"""

from __future__ import annotations

from ..controllers.latent import PRESETS, LatentController
from ..views.latent import LatentPanel, view
from . import page

__all__ = ["PRESETS", "LatentController", "LatentPanel", "build", "view"]


def build():
    """The Latent page in the app's template (one per browser session)."""
    return page("latent").build()


if __name__.startswith("bokeh_app"):
    build().servable()
