"""The app's pages: one module per topic, each with ``build(query) -> template`` and
servable on its own (``panel serve explorer/pages/<page>.py``)."""

#: page key -> title, in navigation order
PAGES = {"attractors": "Attractors", "reconstruction": "Reconstruction"}
