"""Fixed points, Poincaré sections, orbit diagrams and power spectra against known answers."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core.analysis import (classify, fixed_points, orbit_diagram, poincare_section,
                                    power_spectrum)
from explorer.core.custom import parse_system
from explorer.core.registry import get_system
from explorer.core.simulate import simulate


def test_lorenz_fixed_points_closed_form():
    s = get_system("lorenz63")
    fps = fixed_points(s, generator=torch.Generator().manual_seed(0))
    c = math.sqrt(8 / 3 * 27)
    expected = [(-c, -c, 27.0), (0.0, 0.0, 0.0), (c, c, 27.0)]
    assert len(fps) == 3
    for fp, e in zip(fps, expected):
        torch.testing.assert_close(fp.x, torch.tensor(e, dtype=torch.float64), atol=1e-8, rtol=0)
    origin = fps[1]
    # origin: eigenvalues -beta and (-(sigma+1) +- sqrt((sigma+1)^2 + 4 sigma (rho-1))) / 2
    disc = math.sqrt(11**2 + 4 * 10 * 27)
    ev = sorted(origin.eigenvalues.real.tolist())
    assert ev == pytest.approx(sorted([-8 / 3, (-11 + disc) / 2, (-11 - disc) / 2]))
    assert origin.type == "saddle" and not origin.stable
    assert fps[0].type == "saddle-focus"


def test_henon_fixed_points_closed_form():
    a, b = 1.4, 0.3
    fps = fixed_points(get_system("henon"))
    xs = sorted(((b - 1) + s * math.sqrt((1 - b) ** 2 + 4 * a)) / (2 * a) for s in (-1, 1))
    assert [fp.x[0].item() for fp in fps] == pytest.approx(xs)
    assert all(fp.type == "saddle" for fp in fps)


@pytest.mark.parametrize("ev,kind,name,stable", [
    ([-1.0, -2.0], "flow", "stable node", True),
    ([complex(-1, 2), complex(-1, -2)], "flow", "stable focus", True),
    ([1.0, 2.0], "flow", "unstable node", False),
    ([complex(0.5, 1), complex(0.5, -1)], "flow", "unstable focus", False),
    ([1.0, -1.0], "flow", "saddle", False),
    ([complex(0.1, 1), complex(0.1, -1), -3.0], "flow", "saddle-focus", False),
    ([complex(0, 1), complex(0, -1)], "flow", "centre", False),
    ([0.5, -0.2], "map", "stable node", True),
    ([2.0, 0.3], "map", "saddle", False),
    ([1.0, 0.3], "map", "non-hyperbolic", False),
])
def test_classification(ev, kind, name, stable):
    assert classify(torch.tensor(ev, dtype=torch.complex128), kind) == (name, stable)


def test_poincare_section_of_a_circle_is_exact():
    # x' = -y, y' = x: the unit circle; upward crossings of y = 0 happen at x = 1, t = 2 pi k
    s = parse_system("dx/dt = -y; dy/dt = x", {}, x0=[1.0, 0.0])
    tr = simulate(s, [0.0, -1.0], steps=2000, dt=0.01)          # starts at t=0 on (0, -1)
    sec = poincare_section(s, tr, "y", 0.0, direction=1)
    assert len(sec.points) == 3
    torch.testing.assert_close(sec.points[:, 0], torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)
    expected_t = torch.tensor([math.pi / 2 + 2 * math.pi * k for k in range(3)], dtype=torch.float64)
    torch.testing.assert_close(sec.times, expected_t, atol=1e-8, rtol=0)


def test_logistic_orbit_diagram_known_structure():
    od = orbit_diagram(get_system("logistic"), "r", 2.8, 3.5, n_values=8, n_points=64)
    for r, pts in zip(od.values.tolist(), od.points):
        distinct = torch.unique(torch.round(pts, decimals=6)).numel()
        if r < 3.0:          # stable fixed point 1 - 1/r
            assert distinct == 1 and pts[0].item() == pytest.approx(1 - 1 / r, abs=1e-6)
        elif 3.05 < r < 3.44:  # period 2 (sqrt(6) + 1 = 3.449...)
            assert distinct == 2
    v, p = od.flat()
    assert v.shape == p.shape


def test_flow_orbit_diagram_marks_maxima():
    od = orbit_diagram(get_system("rossler"), "c", 2.5, 6.0, n_values=6, coordinate="x",
                       n_points=40)
    assert od.points.shape == (6, 40)
    # c = 2.5: period-1 limit cycle, one distinct maximum
    first = od.points[0]
    first = first[~torch.isnan(first)]
    assert (first.max() - first.min()).item() < 1e-2
    # c = 6: chaotic band, many distinct maxima
    last = od.points[-1]
    last = last[~torch.isnan(last)]
    assert (last.max() - last.min()).item() > 1.0


def test_power_spectrum_finds_the_frequency_and_obeys_parseval():
    dt = 0.01
    t = torch.arange(20_000, dtype=torch.float64) * dt
    x = torch.stack([torch.sin(2 * math.pi * 1.5 * t), 2 * torch.cos(2 * math.pi * 0.25 * t)], -1)
    ps = power_spectrum(x, dt)
    torch.testing.assert_close(ps.dominant_frequency(), torch.tensor([1.5, 0.25], dtype=torch.float64),
                               atol=0.01, rtol=0)
    df = ps.freqs[1] - ps.freqs[0]
    var = (ps.power.sum(0) * df)
    torch.testing.assert_close(var, x.var(0), rtol=0.02, atol=0)
