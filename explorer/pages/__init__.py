"""The page registry: each page of the app is declared once, here or by :func:`register`.

A :class:`Page` names its key (``?page=key``), title, icon and how to build its view (a
:class:`~explorer.views.base.PageView`). ``app.py`` serves the page a URL asks for, the
header's navigation lists the registered pages in order, and a notebook embeds one with
``page("attractors").view()``. Adding a page is its controller, its view and one
``register(Page(...))`` line: nothing else in the app changes.

Each page module (``explorer/pages/<key>.py``) is also servable on its own
(``panel serve explorer/pages/<key>.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Page:
    """One page of the app.

    Attributes:
        key: the URL key (``?page=key``); letters, digits, ``-`` and ``_``.
        title: the navigation's and the browser tab's title.
        icon: one character shown before the title (one the common fonts have: a browser
            without an emoji font shows a box).
        view: ``view(sync_url=bool) -> PageView``, or its import path ``"module:function"``
            (imported when the page is first built, so the registry costs nothing to load).
        blurb: one sentence about the page (tooltips, the notebooks' index).
    """

    key: str
    title: str
    icon: str
    view: str | Callable[..., Any]
    blurb: str = ""

    def __post_init__(self):
        if not self.key or not all(ch.isalnum() or ch in "-_" for ch in self.key):
            raise ValueError(f"page key {self.key!r}: use letters, digits, '-' and '_'")

    def make_view(self, *, sync_url: bool = False):
        """The page body (sidebar and main area) around a new controller."""
        factory = self.view
        if isinstance(factory, str):
            module, _, name = factory.partition(":")
            factory = getattr(importlib.import_module(module), name)
        return factory(sync_url=sync_url)

    def build(self, *, sync_url: bool = True):
        """The page in the app's template: header with navigation, theme and device (one per
        browser session)."""
        from ..views.shell import apply_theme, device_widget, page_template

        theme = apply_theme()
        view = self.make_view(sync_url=sync_url)
        c = view.controller
        device = device_widget(c.devices(), c.device, lambda d: setattr(c, "device", d))
        return page_template(title=self.title, sidebar=view.sidebar, main=view.body(),
                             pages=titles(), current=self.key, device=device, theme=theme)


#: registered pages by key, in navigation order
REGISTRY: dict[str, Page] = {}
#: the page a URL without (or with an unknown) ``page`` key shows
DEFAULT_PAGE = "attractors"


def register(page: Page) -> Page:
    """Add (or replace) a page; returns it."""
    REGISTRY[page.key] = page
    return page


def unregister(key: str) -> None:
    REGISTRY.pop(key, None)


def page(key: str | None) -> Page:
    """The registered page ``key``; the default page for None or an unknown key."""
    return REGISTRY.get(key or DEFAULT_PAGE) or REGISTRY[DEFAULT_PAGE]


def titles() -> dict[str, str]:
    """``{key: "icon title"}`` of the registered pages, in order (the navigation)."""
    return {k: f"{p.icon} {p.title}".strip() for k, p in REGISTRY.items()}


def _attractors_view(sync_url: bool = False):
    from ..controllers.attractors import AttractorController
    from ..views.attractors import AttractorsPanel
    from ..views.shell import dysts_available

    return AttractorsPanel(AttractorController(dysts=dysts_available()), sync_url=sync_url)


register(Page("attractors", "Attractors", "∞", _attractors_view,
              "Simulate a library of chaotic systems: attractors, Lyapunov spectra, orbit "
              "diagrams, Poincaré sections, fixed points, live ensembles."))
register(Page("reconstruction", "Reconstruction", "↻", "explorer.pages.reconstruction:view",
              "Train piecewise-linear RNNs on trajectories with generalized teacher forcing "
              "and analyse the trained model as a dynamical system."))

register(Page("stochastic", "Stochastic", "≈", "explorer.pages.stochastic:view",
              "Simulate stochastic dynamics, measure entropy production from trajectories and "
              "train an I-OnsagerNet that learns the potential and splits the drift into "
              "reversible and irreversible parts."))

register(Page("spectra", "Spectra", "λ", "explorer.pages.spectra:view",
              "Eigenvalues of state-space models, selective SSMs and attention: initialisations, "
              "discretisation, memory functions, and spectra that move while a model trains."))

register(Page("latent", "Latent dynamics", "◎", "explorer.pages.latent:view",
              "Learn a dynamical system from image frames: autoencoders (plain and "
              "continuity-preserving), latent ODEs and Koopman models, with the latent vector "
              "field, its fixed points and the encode–decode attractors, live while training."))

#: kept for older imports: ``{key: title}`` of the built-in pages
PAGES = {k: p.title for k, p in REGISTRY.items()}
