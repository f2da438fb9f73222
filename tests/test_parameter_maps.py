"""Parameter maps (explorer.core.analysis.parameter_maps): known answers per quantity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from explorer.core.analysis.lyapunov import largest_exponent
from explorer.core.analysis.parameter_maps import (DIVERGED, Axis, MapSpec, Quantity,
                                                   find_attractors)
from explorer.core.custom import parse_system
from explorer.core.errors import ParameterError
from explorer.core.registry import system_class

R_WINDOW = 1.0 + math.sqrt(8.0)          # the period-3 window of the logistic map opens here


def whole(spec: MapSpec) -> np.ndarray:
    """The map computed as one tile (one batched call)."""
    [tile] = spec.tiles(spec.n_points)
    out = spec.evaluate(tile)
    return out[0] if spec.y is None else out


def logistic():
    return system_class("logistic")()


def test_logistic_exponent_at_r4_is_ln2():
    spec = MapSpec(logistic(), Axis("r", 3.9, 4.0, 3), Quantity.parse("lyapunov"),
                   steps=200_000, transient=1000)
    assert whole(spec)[-1] == pytest.approx(math.log(2.0), abs=0.01)


def test_period_three_window_opens_at_one_plus_root_eight():
    spec = MapSpec(logistic(), Axis("r", 3.826, 3.831, 101), Quantity.parse("lyapunov"),
                   steps=20_000, transient=20_000)
    r, lam = spec.x.values(), whole(spec)
    first = int(np.argmax(lam < 0))
    assert abs(r[first] - R_WINDOW) <= 1.2e-4            # within two grid steps of 1 + sqrt 8
    assert (lam[r < R_WINDOW - 2e-4] > 0).all()          # chaotic (intermittent) just before
    period = MapSpec(logistic(), Axis("r", 3.826, 3.831, 101), Quantity.parse("period"),
                     transient=20_000)
    per = whole(period)
    assert per[first + 2] == 3 and (per[r < R_WINDOW - 2e-4] == 0).all()
    inside = MapSpec(logistic(), Axis("r", 3.83, 3.84, 21), Quantity.parse("lyapunov"))
    assert (whole(inside) < 0).all()


def test_logistic_periods_of_the_cascade():
    spec = MapSpec(logistic(), Axis("r", 2.9, 3.5, 4), Quantity.parse("period"))
    assert whole(spec).tolist() == [1, 2, 2, 4]          # r = 2.9, 3.1, 3.3, 3.5
    chaos = MapSpec(logistic(), Axis("r", 3.7, 3.7 + 1e-9, 1), Quantity.parse("period"))
    assert whole(chaos).tolist() == [0]


def test_henon_exponents_sum_to_log_b_at_every_bounded_point():
    spec = MapSpec(system_class("henon")(), Axis("a", 0.0, 1.4, 24), Quantity.parse("spectrum"),
                   y=Axis("b", -0.5, 0.5, 8), steps=600, transient=100)
    spectra = whole(spec)                                 # (b, a, exponent)
    assert spectra.shape == (8, 24, 2)
    total = spectra.sum(-1)
    bounded = ~np.isnan(total)
    assert bounded.mean() > 0.8
    log_b = np.log(np.abs(spec.y.values()))[:, None] * np.ones((1, 24))          # b = 0 is not on the grid
    np.testing.assert_allclose(total[bounded], log_b[bounded], atol=1e-10)


def test_largest_exponent_matches_published_values():
    henon = system_class("henon")()
    lam = largest_exponent(henon, henon.initial_state().expand(4, 2), steps=100_000, transient=1000)
    assert lam.mean().item() == pytest.approx(0.419, abs=0.005)       # Sprott (2003), Table A.1
    lorenz = system_class("lorenz63")()
    spec = MapSpec(lorenz, Axis("rho", 28.0, 28.0 + 1e-9, 1), Quantity.parse("lyapunov"),
                   steps=100_000, transient=2000)
    assert whole(spec)[0] == pytest.approx(0.9056, abs=0.03)


def test_kaplan_yorke_map_of_henon():
    spec = MapSpec(system_class("henon")(), Axis("a", 1.4, 1.4 + 1e-9, 1), Quantity.parse("ky"),
                   y=Axis("b", 0.3, 0.3 + 1e-9, 1), steps=20_000)
    assert whole(spec)[0, 0] == pytest.approx(1.26, abs=0.02)          # 1 + 0.419 / 1.623


def test_rossler_period_doubling_counts_maxima():
    spec = MapSpec(system_class("rossler")(), Axis("c", 2.5, 4.0, 3), Quantity.parse("period"))
    assert whole(spec).tolist() == [1, 2, 4]                            # c = 2.5, 3.25, 4.0


def bistable():
    return parse_system("dx/dt = x - x**3\ndy/dt = -y", {})


def test_basins_of_a_double_well_follow_the_sign_of_x0():
    spec = MapSpec(bistable(), Axis("x", -1.5, 1.5, 20), Quantity.parse("mean:x"),
                   y=Axis("y", -1.0, 1.0, 5), steps=1000, transient=500)
    found = find_attractors(spec)
    assert len(found) == 2
    centres = sorted(float(a[:, 0].mean()) for a in found)
    assert centres == pytest.approx([-1.0, 1.0], abs=1e-6)
    basin = dataclasses.replace(spec, quantity=Quantity.parse("basin"), attractors=found)
    labels = whole(basin)
    right = int(np.argmax([a[:, 0].mean() for a in found]))
    expect = np.where(spec.x.values() > 0, right, 1 - right)[None, :] * np.ones((5, 1))
    np.testing.assert_array_equal(labels, expect)


def test_divergence_time_of_a_blow_up_is_one_over_x0():
    # dx/dt = x^2 from x0 > 0: x(t) = x0 / (1 - x0 t) reaches the bound B at 1/x0 - 1/B
    blow = parse_system("dx/dt = x**2\ndy/dt = -y", {})
    spec = MapSpec(blow, Axis("x", 0.5, 2.0, 4), Quantity.parse("divergence"), steps=1000, dt=0.01)
    expect = 1.0 / spec.x.values() - 1.0 / blow.bound
    np.testing.assert_allclose(whole(spec), expect, atol=0.02)      # the first step past it
    calm = MapSpec(blow, Axis("x", -2.0, -0.5, 3), Quantity.parse("divergence"), steps=1000)
    assert np.isinf(whole(calm)).all()


def test_mean_and_max_of_a_variable():
    relax = parse_system("dx/dt = -x + a\ndy/dt = -y", {"a": 1.0})
    spec = MapSpec(relax, Axis("a", -1.0, 2.0, 4), Quantity.parse("mean:x"), steps=2000,
                   transient=3000, dt=0.01)
    np.testing.assert_allclose(whole(spec), spec.x.values(), atol=1e-9)
    peak = MapSpec(bistable(), Axis("x", 2.0, 3.0, 2), Quantity.parse("max:x"), transient=0,
                   steps=100, dt=0.01)
    np.testing.assert_allclose(whole(peak), [2.0, 3.0])                 # decays from its start


def test_diverged_points_are_marked():
    spec = MapSpec(logistic(), Axis("x", 1.5, 2.0, 3), Quantity.parse("period"))
    assert np.isnan(whole(spec)).all()
    basin = MapSpec(logistic(), Axis("x", 1.5, 2.0, 3), Quantity.parse("basin"),
                    attractors=(np.array([[0.5]]),))
    assert (whole(basin) == DIVERGED).all()


def test_tiles_cover_the_grid_once():
    spec = MapSpec(system_class("henon")(), Axis("a", 1.0, 1.4, 7), Quantity.parse("lyapunov"),
                   y=Axis("b", 0.1, 0.3, 5))
    for chunk in (1, 3, 7, 10, 14, 35, 100):
        seen = np.zeros((5, 7), int)
        for t in spec.tiles(chunk):
            seen[t.y0:t.y1, t.x0:t.x1] += 1
            assert t.size <= max(chunk, 1)
        assert (seen == 1).all()


def test_log_axis_and_parsing():
    ax = Axis.parse("a=0.01:100:5", log=True)
    np.testing.assert_allclose(ax.values(), [0.01, 0.1, 1.0, 10.0, 100.0])
    assert Quantity.parse("mean:z").output == "mean_z"


@pytest.mark.parametrize("text", ["a", "a=1:2", "a=1:x:3", "a=2:1:3", "a=0:1:2.5", "=0:1:3",
                                  "a=0:inf:3", "a=0:1:0", "a=0:1:100000"])
def test_bad_axes_are_refused(text):
    with pytest.raises(ParameterError):
        Axis.parse(text)


def test_bad_maps_are_refused():
    henon = system_class("henon")()
    q = Quantity.parse("lyapunov")
    with pytest.raises(ParameterError, match="no parameter or variable 'c'"):
        MapSpec(henon, Axis("c", 0, 1, 3), q)
    with pytest.raises(ParameterError, match="outside its allowed range"):
        MapSpec(henon, Axis("a", 0, 5, 3), q)
    with pytest.raises(ParameterError, match="must differ"):
        MapSpec(henon, Axis("a", 0, 1, 3), q, y=Axis("a", 0, 1, 3))
    with pytest.raises(ParameterError, match="exceed the limit"):
        MapSpec(henon, Axis("a", 0, 1, 10_000), q, y=Axis("b", 0, 1, 10_000))
    with pytest.raises(ParameterError, match="log axis"):
        Axis("a", -1, 1, 3, log=True)
    with pytest.raises(ParameterError, match="needs the attractors"):
        whole(MapSpec(henon, Axis("a", 0, 1, 3), Quantity.parse("basin")))
    with pytest.raises(ParameterError, match="no variable 'q'"):
        MapSpec(henon, Axis("a", 0, 1, 3), Quantity.parse("mean:q"))
    with pytest.raises(ParameterError, match="unknown quantity"):
        Quantity.parse("entropy")
    with pytest.raises(ParameterError):
        MapSpec(system_class("lorenz96")(), Axis("n", 4, 8, 3), q)          # structural
    from explorer.core.sdes import OrnsteinUhlenbeck
    sde = OrnsteinUhlenbeck()
    par = sde.parameters[0]
    with pytest.raises(Exception, match="(?i)stochastic|SDE"):
        MapSpec(sde, Axis(par.name, par.low, par.high, 3), q)
