"""The Attractors page's "Parameter map" tab: widgets around a
:class:`~explorer.controllers.parameter_map.ParameterMapController` and its image.

Choose two axes (parameters or start values), a box, a resolution and a quantity; Compute
fills the image tile by tile (Stop keeps what is done); a click moves the attractor to that
point; a box zoom recomputes over the box and Back returns. The map downloads as a zipped
Zarr store (open with ``xarray.open_zarr`` after unzipping) or a PNG.
"""

from __future__ import annotations

import io

import panel as pn

from ..controllers.parameter_map import ParameterMapController
from .canvas import ParameterMapImage

SW = {"sizing_mode": "stretch_width"}

HELP = ("Each pixel is one run of the system at those values: colours show the quantity "
        "chosen. **Click** a pixel to move the attractor there; **drag a box** to zoom in "
        "(the map is recomputed), **◀ Back** to go out.")


class ParameterMapPanel:
    """The tab's widgets and image for one page view (``view``: the page's
    :class:`~explorer.views.base.PageView`, for its guard and tick)."""

    def __init__(self, view, maps: ParameterMapController):
        self.view, self.maps = view, maps
        self._version = -1
        m = maps
        self.w_x = pn.widgets.Select(name="Horizontal", width=125)
        self.w_y = pn.widgets.Select(name="Vertical", width=125)
        self.w_xlo = pn.widgets.FloatInput(name="from", value=m.x_low, width=95)
        self.w_xhi = pn.widgets.FloatInput(name="to", value=m.x_high, width=95)
        self.w_ylo = pn.widgets.FloatInput(name="from", value=m.y_low, width=95)
        self.w_yhi = pn.widgets.FloatInput(name="to", value=m.y_high, width=95)
        self.w_res = pn.widgets.Select.from_param(m.param.resolution, name="Points per side", width=125)
        self.w_q = pn.widgets.Select.from_param(m.param.quantity, name="Quantity", width=230)
        self.b_go = pn.widgets.Button(name="Compute map", button_type="primary", width=130)
        self.b_stop = pn.widgets.Button(name="■ Stop", width=75)
        self.b_back = pn.widgets.Button(name="◀ Back", width=75, disabled=True)
        self.text = pn.pane.Markdown(HELP, **SW)
        self.progress = pn.pane.Markdown("", css_classes=["map-progress"], **SW)
        # a click or zoom arrives in a stream callback outside the document's lock: act on
        # the next tick (the jump moves the crosshair, a Bokeh model)
        self.image = ParameterMapImage(on_tap=lambda x, y: view.later(lambda: view.act(m.jump, x, y)),
                                       on_box=lambda *box: view.later(lambda: view.act(m.zoom, *box)))
        self.d_zarr = pn.widgets.FileDownload(callback=self._zarr, filename="parameter_map.zarr.zip",
                                              label="Map (Zarr, zipped)", button_type="light",
                                              width=160, disabled=True)
        self.d_png = pn.widgets.FileDownload(callback=self._png, filename="parameter_map.png",
                                             label="Map (PNG)", button_type="light", width=120,
                                             disabled=True)
        self.box = pn.Column(
            self.text,
            pn.Row(self.w_x, self.w_xlo, self.w_xhi, **SW),
            pn.Row(self.w_y, self.w_ylo, self.w_yhi, **SW),
            pn.Row(self.w_res, self.w_q, **SW),
            pn.Row(self.b_go, self.b_stop, self.b_back, self.d_zarr, self.d_png, **SW),
            self.progress, pn.Column(self.image.pane, **SW), **SW)
        for w, name in ((self.w_x, "x_axis"), (self.w_y, "y_axis"), (self.w_xlo, "x_low"),
                        (self.w_xhi, "x_high"), (self.w_ylo, "y_low"), (self.w_yhi, "y_high")):
            w.param.watch(lambda e, name=name: self._set(name, e.new), "value")
        self.b_go.on_click(lambda e: view.act(m.request))
        self.b_stop.on_click(lambda e: view.act(m.cancel))
        self.b_back.on_click(lambda e: view.act(m.back))
        m.param.watch(lambda *e: self.sync(), ["x_axis", "y_axis", "x_low", "x_high", "y_low",
                                               "y_high", "history"])
        m.param.watch(lambda e: setattr(self.progress, "object", e.new), "progress")
        m.param.watch(lambda e: self._show_partial(), "version")
        m.param.watch(lambda e: self._show_result(), "result")
        self.sync()

    def _set(self, name: str, value) -> None:
        if not self.view._building and value is not None and value != getattr(self.maps, name):
            if name.endswith("_axis"):
                # a new axis starts from that quantity's own default box
                self.view.guard(self._new_axis, name, value)
            else:
                self.view.guard(setattr, self.maps, name, value)

    def _new_axis(self, name: str, value: str) -> None:
        lo, hi = self.maps._default_box(value)
        side = name[0]
        self.maps.param.update(**{name: value, f"{side}_low": lo, f"{side}_high": hi, "history": []})

    def sync(self) -> None:
        """Widgets from the controller (a new system, a zoom, Back)."""
        m, v = self.maps, self.view
        opts = m.axis_options()
        with v.building():
            for w, val in ((self.w_x, m.x_axis), (self.w_y, m.y_axis)):
                w.options = opts
                w.value = val if val in opts else None
            for w, val in ((self.w_xlo, m.x_low), (self.w_xhi, m.x_high), (self.w_ylo, m.y_low),
                           (self.w_yhi, m.y_high)):
                if w.value != val:
                    w.value = float(val)
        self.b_back.disabled = not m.history
        self.b_go.disabled = len(opts) < 2
        self.mark()

    def mark(self) -> None:
        """The attractor's current point on the map."""
        self.image.mark(*self.maps.current_point())

    def _show_partial(self) -> None:
        part = self.maps.partial
        if part is None:
            self.image.show(None, None, new=True)
            return
        spec, values = part
        new = self._version != id(spec)
        self._version = id(spec)
        self.image.show(spec, values[0] if values.ndim == 1 else values, new=new)

    def _show_result(self) -> None:
        ok = self.maps.result is not None
        self.d_zarr.disabled = self.d_png.disabled = not ok

    # ---------------------------------------------------------------- downloads
    def _zarr(self):
        from ..sweeps import zipped

        return io.BytesIO(zipped(self.maps.result)) if self.maps.result is not None else None

    def _png(self):
        from ..sweeps import map_png

        return io.BytesIO(map_png(self.maps.result)) if self.maps.result is not None else None
