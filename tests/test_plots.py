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
    data = img.dimension_values(2, flat=False)
    assert data.shape == (48, 64)
    l, b, r, t = img.bounds.lbrt()
    assert l < pts["u"].min() and r > pts["u"].max() and b < pts["v"].min() and t > pts["v"].max()
    # a Gaussian cloud covers the middle of the frame and leaves corners empty
    assert np.isfinite(data[24, 32]) and np.isnan(data[0, 0])


def test_quiet_pipe_changes_the_next_render_without_an_event():
    import holoviews as hv

    pipe = plots.QuietPipe(data=None)
    calls = []
    pipe.add_subscriber(lambda **kw: calls.append(kw))
    dmap = hv.DynamicMap(lambda data: plots.empty_image() if data is None else data, streams=[pipe])
    assert dmap[()].data.shape == (2, 2)
    pipe.set_quietly(hv.Image(np.ones((3, 3))))
    assert not calls                                  # no event ...
    assert dmap[()].data.shape == (3, 3)              # ... but no stale memoized frame either
    pipe.send(hv.Image(np.ones((4, 4))))
    assert len(calls) == 1 and dmap[()].data.shape == (4, 4)
