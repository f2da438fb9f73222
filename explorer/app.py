"""The web app. ``panel serve explorer/app.py`` or ``dynamics-explorer serve``.

For now a single minimal page (a system picker and its attractor, drawn from the same
``simulate`` API as the CLI); the multipage app with the Attractors page replaces it.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn
import torch

from explorer.core.device import default_device, describe_device
from explorer.core.errors import ExplorerError
from explorer.core.registry import system_class, system_names
from explorer.core.simulate import simulate

hv.extension("bokeh")


def attractor_page() -> pn.viewable.Viewable:
    """A system picker, its equations and a 2D projection of its attractor."""
    names = system_names(dysts=False)
    pick = pn.widgets.Select(name="System", options=names, value="lorenz63")
    steps = pn.widgets.IntSlider(name="Steps", start=1_000, end=50_000, step=1_000, value=10_000)
    status = pn.pane.Markdown("", sizing_mode="stretch_width")
    equations = pn.pane.LaTeX("", sizing_mode="stretch_width")
    pipe = hv.streams.Pipe(data=(np.zeros((0, 2)), ("x", "y")))

    def draw(data):
        xy, names = data
        return hv.Path([xy], kdims=list(names)).opts(color="#3b6ea5", line_width=0.6,
                                                     responsive=True, height=520)

    plot = hv.DynamicMap(draw, streams=[pipe])

    def update(*_):
        try:
            system = system_class(pick.value)()
            traj = simulate(system, steps=steps.value, transient=steps.value // 10,
                            dtype=torch.float64, device="cpu")
            xs = traj.states.numpy()
            cols = (0, 1) if system.dim < 3 else (0, 2)
            pipe.send((xs[:, cols], tuple(system.variables[c] for c in cols)))
            equations.object = r"$$\begin{gathered}" + system.latex + r"\end{gathered}$$"
            status.object = f"**{system.title}**: {traj.message}"
        except ExplorerError as e:
            status.object = f"⚠ {e}"

    pick.param.watch(update, "value")
    steps.param.watch(update, "value")
    update()
    return pn.template.FastListTemplate(
        title="Dynamics Explorer",
        sidebar=[pick, steps, pn.pane.Markdown(f"Device: `{describe_device(default_device())}`")],
        main=[pn.Column(status, equations, plot, sizing_mode="stretch_width")],
    )


def serve(port: int = 5006, address: str = "localhost", show: bool = False) -> None:
    """Serve the app (blocking)."""
    pn.serve({"explorer": attractor_page}, port=port, address=address, show=show,
             websocket_origin=[f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"],
             title="Dynamics Explorer")


if __name__.startswith("bokeh_app"):
    attractor_page().servable()
