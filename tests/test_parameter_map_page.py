"""The Attractors page's parameter map, driven through its controller and view (no browser)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from explorer.controllers.attractors import AttractorController
from explorer.views.attractors import AttractorsPanel

pytestmark = pytest.mark.slow


@pytest.fixture
def henon():
    c = AttractorController(system="henon")
    c.wait()
    c.maps.resolution = 40
    yield c
    c.close()


def test_default_axes_are_the_first_two_parameters_around_their_values(henon):
    m = henon.maps
    assert (m.x_axis, m.y_axis) == ("a", "b")
    assert m.x_low < 1.4 < m.x_high and m.y_low < 0.3 < m.y_high
    assert m.axis_options() == ["a", "b", "initial x", "initial y"]
    assert m.current_point() == (1.4, 0.3)


def test_map_runs_zooms_goes_back_and_jumps(henon):
    m = henon.maps
    m.request()
    henon.wait(120)
    ds = m.result
    lam = ds["lyapunov"].values
    assert lam.shape == (40, 40) and np.isfinite(lam).mean() > 0.3
    assert "points in" in m.progress and "λ₁ from" in m.progress
    i, j = np.unravel_index(np.nanargmax(lam), lam.shape)
    assert lam[i, j] > 0.3                                     # chaos inside the default box
    box = (m.x_low, m.x_high, m.y_low, m.y_high)
    m.zoom(1.2, 1.3, 0.2, 0.25)
    henon.wait(120)
    assert (m.x_low, m.x_high, m.y_low, m.y_high) == (1.2, 1.3, 0.2, 0.25)
    assert m.result["a"].values[0] == pytest.approx(1.2) and m.history == [box]
    assert m.back() and (m.x_low, m.x_high, m.y_low, m.y_high) == box and not m.history
    henon.wait(120)
    m.jump(1.25, 0.21)
    henon.wait(60)
    assert henon.values == {"a": 1.25, "b": 0.21}
    assert henon.attractor is not None and "Hénon" in henon.status
    m.param.update(x_axis="initial x", x_low=-1.0, x_high=1.0)
    m.jump(0.5, 0.3)
    assert henon.x0[0] == 0.5 and henon.values["b"] == 0.3


def test_bad_settings_give_a_message_not_a_run(henon):
    m = henon.maps
    m.y_axis = "a"
    m.request()
    assert "different axes" in henon.errors["map"]
    m.param.update(y_axis="b", y_low=0.5, y_high=0.1)
    m.request()
    assert "LO < HI" in henon.errors["map"]


def test_a_new_system_resets_the_map(henon):
    henon.maps.request()
    henon.wait(120)
    henon.system = "logistic"
    henon.wait(60)
    m = henon.maps
    assert m.result is None and m.history == []
    assert (m.x_axis, m.y_axis) == ("r", "initial x")


def test_basins_and_periods_on_the_page(henon):
    m = henon.maps
    m.quantity = "period"
    m.request()
    henon.wait(120)
    per = m.result["period"].values
    assert {2, 4} <= {int(v) for v in per[np.isfinite(per)]}           # period doubling
    assert "Periods found" in m.progress


def test_downloads_are_a_zarr_zip_and_a_png():
    c = AttractorController(system="henon")
    view = AttractorsPanel(c)
    c.wait()
    c.maps.resolution = 40
    view.map_panel.b_go.clicks += 1
    c.wait(120)
    view._poll()
    mp = view.map_panel
    assert not mp.d_zarr.disabled
    names = zipfile.ZipFile(io.BytesIO(mp._zarr().getvalue())).namelist()
    assert "map.zarr/zarr.json" in names
    from PIL import Image
    img = Image.open(io.BytesIO(mp._png().getvalue()))
    assert img.format == "PNG" and img.size[0] >= 400
    c.close()
