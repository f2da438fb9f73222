"""The Stochastic page: ``panel serve explorer/pages/stochastic.py`` serves it alone.

Simulate an SDE ensemble, estimate its stationary density, probability current and entropy
production from the trajectories, and train an I-OnsagerNet live. In a notebook:
``from explorer.pages.stochastic import StochasticPanel; StochasticPanel()``.
"""

from __future__ import annotations

from ..controllers.stochastic import PRESETS, StochasticController
from ..views.stochastic import StochasticPanel, view
from . import page

__all__ = ["PRESETS", "StochasticController", "StochasticPanel", "build", "view"]


def build():
    """The Stochastic page in the app's template (one per browser session)."""
    return page("stochastic").build()


if __name__.startswith("bokeh_app"):
    build().servable()
