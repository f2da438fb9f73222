"""Panel/HoloViews views: pure plot builders (:mod:`.plots`) and page panels (Viewers).

Importing this package loads HoloViews' Bokeh backend and Panel's extensions once
(:func:`.shell.load_extensions`), so a panel works after a bare import in a fresh notebook.
"""

from .shell import load_extensions

load_extensions()
