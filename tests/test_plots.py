"""Plot builders that carry numerics of their own (no browser)."""

import numpy as np

from explorer.views import plots


def test_equalize_spreads_any_distribution_evenly():
    rng = np.random.default_rng(1)
    values = rng.exponential(size=(300, 200)) ** 3          # heavily skewed
    values[::7, ::5] = np.nan
    eq = plots.equalize(values)
    finite = np.isfinite(values)
    assert eq.dtype == np.float32 and np.array_equal(np.isfinite(eq), finite)
    e = eq[finite]
    assert 0.0 <= e.min() and e.max() <= 1.0
    # uniform on [0, 1]: the empirical quantiles sit on the diagonal
    q = np.linspace(0.05, 0.95, 19)
    assert np.max(np.abs(np.quantile(e, q) - q)) < 0.02
    # order preserving
    order = np.argsort(values[finite])
    assert np.all(np.diff(e[order]) >= -1e-6)


def test_equalize_edge_cases():
    assert np.isnan(plots.equalize(np.full((3, 3), np.nan))).all()
    const = plots.equalize(np.full((2, 2), 5.0))
    assert np.all(const == 1.0)


def test_raster_image_counts_every_point_once():
    rng = np.random.default_rng(0)
    n = 200_000
    pts = {"u": rng.normal(size=n).astype(np.float32), "v": rng.normal(size=n).astype(np.float32),
           "c": rng.random(n).astype(np.float32), "labels": ("x", "z")}
    img = plots.raster_image(pts, width=64, height=48)
    data = img.pixels
    assert data.shape == (48, 64) and img.labels == ("x", "z")
    l, b, r, t = img.bounds
    assert l < pts["u"].min() and r > pts["u"].max() and b < pts["v"].min() and t > pts["v"].max()
    # a Gaussian cloud covers the middle of the frame and leaves corners empty
    assert np.isfinite(data[24, 32]) and np.isnan(data[0, 0])
    # bottom row first (Bokeh's order): points only in the lower half fill the first rows
    low = {k: (v[pts["v"] < 0] if k != "labels" else v) for k, v in pts.items()}
    img = plots.raster_image(low, width=64, height=48, y_range=(-4.0, 4.0))
    assert np.isfinite(img.pixels[:24]).any() and np.isnan(img.pixels[24:]).all()


def test_quiet_pipe_changes_the_next_render_without_an_event():
    import holoviews as hv

    pipe = plots.QuietPipe(data=None)
    calls = []
    pipe.add_subscriber(lambda **kw: calls.append(kw))
    dmap = hv.DynamicMap(lambda data: hv.Image(np.zeros((2, 2))) if data is None else data, streams=[pipe])
    assert dmap[()].data.shape == (2, 2)
    pipe.set_quietly(hv.Image(np.ones((3, 3))))
    assert not calls                                  # no event ...
    assert dmap[()].data.shape == (3, 3)              # ... but no stale memoized frame either
    pipe.send(hv.Image(np.ones((4, 4))))
    assert len(calls) == 1 and dmap[()].data.shape == (4, 4)


def test_rotation_is_the_2d_view_at_zero_and_orthonormal():
    assert np.allclose(plots.rotation(0, 0), [[1, 0, 0], [0, 1, 0]])
    # a quarter turn of azimuth brings the depth variable into the horizontal
    assert np.allclose(plots.rotation(90, 0) @ np.array([0.0, 0.0, 1.0]), [-1, 0], atol=1e-7)
    for az, el in ((30, 20), (-120, 75), (179, -45)):
        R = plots.rotation(az, el).astype(np.float64)
        assert np.allclose(R @ R.T, np.eye(2), atol=1e-6), (az, el)


def test_colour_ticks_are_the_value_quantiles_at_their_ranks():
    """Equalised colours: the tick at rank q carries the q-quantile. For exponentially
    distributed values the median is ln 2 and the 3/4 quantile ln 4."""
    rng = np.random.default_rng(0)
    v = rng.exponential(1.0, 200_000)
    ticks = plots.color_ticks(v)
    assert list(ticks) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert abs(float(ticks[0.5]) - np.log(2)) < 0.01
    assert abs(float(ticks[0.75]) - np.log(4)) < 0.02
    # and the equalised rank of the median value is one half
    ranks = plots.equalize(v.astype(np.float32))
    assert abs(float(np.median(ranks)) - 0.5) < 0.01


def test_timeseries_caption_says_what_is_shown():
    from types import SimpleNamespace
    big = SimpleNamespace(x=np.broadcast_to(np.float32(0), (10_001, 100_000, 3)), kind="flow")
    cap = plots.timeseries_caption(big)
    assert "trajectory 1 of 100,000" in cap and "one sample in 3 (3,334 of 10,001)" in cap
    cap1 = plots.timeseries_caption(SimpleNamespace(x=np.zeros((2_001, 1, 3), np.float32), kind="flow"))
    assert cap1 == "**Time series** of the trajectory: all 2,001 samples"
