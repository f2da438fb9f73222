"""Pure plot builders of the Reconstruction page: data in, HoloViews elements out.

Each live plot comes as a pair: ``*_columns(data, ...)`` returns, per layer label, the
columns of that layer's Bokeh data source, and ``*_plot(data, ...)`` builds the overlay from
exactly those columns (one element per label). The page renders the overlay once through a
HoloViews stream and then writes new columns straight into the layers' sources (a data patch
per frame, see :class:`explorer.views.reconstruction.LivePlot`), so the two must agree: both
are defined here, side by side.
"""

from __future__ import annotations

import math

import holoviews as hv
import numpy as np

from ..training.verdict import D_STSP_GOOD

DATA_COLOR = "#868e96"
MODEL_COLOR = "#d9480f"
METRIC_COLORS = {"D_stsp": "#1971c2", "D_stsp (noise-free)": "#74c0fc", "D_H": "#2f9e44",
                 "PE": "#ae3ec9"}
METRIC_KEYS = {"D_stsp": "d_stsp", "D_stsp (noise-free)": "d_stsp_clean", "D_H": "d_h", "PE": "pe"}
#: regions shown in the transition heatmap (the most visited)
MAX_GRAPH_REGIONS = 16

_F = np.float32


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=_F)


def fit_range(*arrays, pad: float = 0.05, log: bool = False) -> tuple[float, float] | None:
    """(low, high) over the finite (positive, for ``log``) values of ``arrays``, padded;
    None when there are none."""
    vals = [np.asarray(a, dtype=np.float64).ravel() for a in arrays if a is not None and np.size(a)]
    if not vals:
        return None
    v = np.concatenate(vals)
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    if log:
        llo, lhi = math.log10(lo), math.log10(hi)
        span = max(lhi - llo, 0.3)
        return 10 ** (llo - pad * span), 10 ** (lhi + pad * span)
    span = hi - lo
    if span <= 1e-12 * max(1.0, abs(hi)):
        return lo - 0.5, hi + 0.5
    return lo - pad * span, hi + pad * span


def log_ticks(low: float, high: float) -> list[float]:
    """Tick positions for a log axis over [low, high]: 1-2-5 per decade over at most two
    decades, 1-3 up to four, powers of ten beyond. (Bokeh's own LogTicker falls back to
    linear ticks below two decades, which leaves most of such an axis unlabelled.)"""
    if not (low > 0 and high > low and math.isfinite(high)):
        return [1.0]
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    span = math.log10(high) - math.log10(low)
    mant = (1, 2, 5) if span <= 2 else (1, 3) if span <= 4 else (1,)
    step = 1 if span <= 8 else int(math.ceil(span / 8))
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1, step) for m in mant]
    return [t for t in ticks if low <= t <= high] or [10.0 ** round(math.log10(math.sqrt(low * high)))]


# ------------------------------------------------------------------ losses
def ema(values: np.ndarray, start: float | None = None, weight: float = 0.95) -> np.ndarray:
    """Exponential moving average (the smoothed loss curve); ``start`` continues a previous one."""
    out = np.empty(len(values), dtype=np.float64)
    m = start
    for i, v in enumerate(values):
        m = float(v) if m is None or not math.isfinite(m) else weight * m + (1 - weight) * float(v)
        out[i] = m
    return out


def loss_columns(steps, loss, smooth) -> dict[str, dict[str, np.ndarray]]:
    s = _arr(steps)
    return {"loss": {"step": s, "loss": _arr(loss)}, "smoothed": {"step": s, "loss": _arr(smooth)}}


def loss_plot(data, *, logy: bool = True, title: str = "Training loss (MSE)") -> hv.Overlay:
    """Training loss per step (light) and its moving average (dark), log scale unless
    ``logy`` is False (a likelihood loss can be negative)."""
    steps, loss, smooth = data if data is not None else ((), (), ())
    cols = loss_columns(steps, loss, smooth)
    raw = hv.Curve(cols["loss"], "step", "loss", label="loss").opts(color="#a5d8ff", line_width=1)
    sm = hv.Curve(cols["smoothed"], "step", "loss", label="smoothed").opts(color="#1864ab", line_width=2)
    return (raw * sm).opts(logy=logy, legend_position="right", title=title)


# ------------------------------------------------------------------ metrics
MARKS = " (points)"


def metric_columns(rows) -> dict[str, dict[str, np.ndarray]]:
    """Per metric: steps and values (finite positive values only: the axis is logarithmic),
    for its line and for its markers (label + :data:`MARKS`)."""
    out = {}
    for label, key in METRIC_KEYS.items():
        pts = [(r["step"], r[key]) for r in rows or () if key in r and r[key] is not None
               and math.isfinite(r[key]) and r[key] > 0]
        s, v = (zip(*pts) if pts else ((), ()))
        out[label] = {"step": _arr(s), "value": _arr(v)}
        out[label + MARKS] = out[label]
    return out


def metrics_plot(rows) -> hv.Overlay:
    """D_stsp, D_H and the prediction error against the training step (log scale)."""
    cols = metric_columns(rows)
    layers = []
    for label in METRIC_KEYS:
        c, noise = cols[label], "noise" in label
        layers.append(hv.Curve(c, "step", "value", label=label).opts(
            color=METRIC_COLORS[label], line_width=1.5 if noise else 2,
            line_dash="dashed" if noise else "solid"))
        layers.append(hv.Scatter(c, "step", "value", label=label + MARKS).opts(
            color=METRIC_COLORS[label], size=3 if noise else 4, show_legend=False))
    return hv.Overlay(layers).opts(logy=True, legend_position="right",
                                   title="Invariants: D_stsp, D_H, prediction error")


GOOD_BAND = "good-band"


def good_band(fig, top: float = D_STSP_GOOD) -> None:
    """Shade the 'good' D_stsp range (below ``top``) on a Bokeh figure with a log y axis, once
    (a BoxAnnotation and a label: they take no part in the axis ranges)."""
    from bokeh.models import BoxAnnotation, Label

    if fig is None or any(getattr(r, "name", None) == GOOD_BAND for r in fig.center):
        return
    fig.add_layout(BoxAnnotation(name=GOOD_BAND, bottom=1e-12, top=top, fill_color="#2f9e44",
                                 fill_alpha=0.10, line_alpha=0, level="underlay"))
    fig.add_layout(Label(name=GOOD_BAND + "-label", x=6, y=top, x_units="screen", y_units="data",
                         text=f"good: D_stsp ≤ {top:g}", text_font_size="10px",
                         text_color="#2b8a3e", y_offset=-14))


# ------------------------------------------------------------------ attractor
def projection_labels(variables, axes) -> tuple[str, str]:
    if len(variables) == 1:
        v = variables[0]
        return f"{v}(t)", f"{v}(t+Δt)"
    return axes[0], axes[1]


def _project(x: np.ndarray | None, variables, axes) -> tuple[np.ndarray, np.ndarray]:
    if x is None or not len(x):
        return np.zeros(0, _F), np.zeros(0, _F)
    if len(variables) == 1:                       # one variable: delay embedding
        return _arr(x[:-1, 0]), _arr(x[1:, 0])
    i, j = (list(variables).index(a) for a in axes)
    return _arr(x[:, i]), _arr(x[:, j])


def attractor_columns(frame, axes) -> dict[str, dict[str, np.ndarray]]:
    if frame is None:
        e = np.zeros(0, _F)
        return {"data": {"u": e, "v": e}, "model": {"u": e, "v": e}}
    u, v = _project(frame.x_true, frame.variables, axes)
    gu, gv = _project(frame.x_gen, frame.variables, axes)
    ok = np.isfinite(gu) & np.isfinite(gv)
    return {"data": {"u": u, "v": v}, "model": {"u": gu[ok], "v": gv[ok]}}


def attractor_plot(data) -> hv.Overlay:
    """Generated (free-running model) against true (data) states, projected on two variables
    (a delay embedding for scalar data). ``data``: ``(frame, axes)``."""
    frame, axes = data if data is not None else (None, ("x", "y"))
    variables = frame.variables if frame is not None else axes
    lu, lv = projection_labels(variables, axes)
    cols = attractor_columns(frame, axes)
    kd = [hv.Dimension("u", label=lu), hv.Dimension("v", label=lv)]
    true = hv.Points(cols["data"], kd, label="data").opts(color=DATA_COLOR, size=2, alpha=0.45)
    gen = hv.Points(cols["model"], kd, label="model").opts(color=MODEL_COLOR, size=2.2, alpha=0.7)
    return (true * gen).opts(legend_position="right", title="Attractor: model vs data")


def range_with(ref: tuple[float, float] | None, other: tuple[float, float] | None,
               factor: float = 1.0) -> tuple[float, float] | None:
    """``ref`` widened to include ``other``, by at most ``factor`` times ``ref``'s span on
    each side (a diverging model must not squash the data)."""
    if ref is None:
        return other
    if other is None:
        return ref
    span = ref[1] - ref[0]
    return (max(min(ref[0], other[0]), ref[0] - factor * span),
            min(max(ref[1], other[1]), ref[1] + factor * span))


# ------------------------------------------------------------------ time series
def timeseries_columns(frame, variable: str) -> dict[str, dict[str, np.ndarray]]:
    e = np.zeros(0, _F)
    if frame is None or variable not in frame.variables:
        return {"data": {"t": e, "value": e}, "model": {"t": e, "value": e}}
    i = list(frame.variables).index(variable)
    out = {"data": {"t": frame.t, "value": _arr(frame.x_true[:, i])}}
    if frame.x_gen is None:
        out["model"] = {"t": e, "value": e}
    else:
        g = _arr(frame.x_gen[:, i])
        ok = np.isfinite(g)
        out["model"] = {"t": frame.t[ok], "value": g[ok]}
    return out


def timeseries_plot(data) -> hv.Overlay:
    """One coordinate of the free-running model and of the data, from the same start.
    ``data``: ``(frame, variable)``."""
    frame, var = data if data is not None else (None, "x")
    cols = timeseries_columns(frame, var)
    kd, vd = "t", hv.Dimension("value", label=var)
    true = hv.Curve(cols["data"], kd, vd, label="data").opts(color=DATA_COLOR, line_width=1.2)
    gen = hv.Curve(cols["model"], kd, vd, label="model").opts(color=MODEL_COLOR, line_width=1.5)
    return (true * gen).opts(legend_position="right", title="Free run vs data")


# ------------------------------------------------------------------ subregions
def symbols_columns(frame) -> dict[str, dict[str, np.ndarray]]:
    if frame is None or not len(frame.symbols):
        e = np.zeros(0, _F)
        return {"region": {"t": e, "region": e}, "path": {"t": e, "region": e}}
    n = len(frame.symbols)
    t = frame.t[:n]
    r = frame.symbols.astype(_F)
    return {"region": {"t": t, "region": r}, "path": {"t": t, "region": r}}


def symbols_plot(frame) -> hv.Overlay:
    """The subregion (symbol) of each state of the free run; 0 is the most visited region."""
    cols = symbols_columns(frame)
    vd = hv.Dimension("region", label="subregion (0 = most visited)")
    path = hv.Curve(cols["path"], "t", vd, label="path").opts(color="#ced4da", line_width=0.8)
    pts = hv.Scatter(cols["region"], "t", vd, label="region").opts(color="#5f3dc4", size=3)
    return (path * pts).opts(show_legend=False, title="Subregion sequence of the free run")


def transition_plot(data) -> hv.HeatMap:
    """Transition counts between the most visited subregions (row: from, column: to).
    ``data``: a Frame or a ModelAnalysis (anything with ``graph``, ``codes``)."""
    rows = []
    R = 1
    if data is not None and len(data.codes):
        R = min(len(data.codes), MAX_GRAPH_REGIONS)
        G = np.asarray(data.graph)[:R, :R]
        for i in range(R):
            for j in range(R):
                if G[i, j] > 0:
                    rows.append((str(j), str(i), float(G[i, j]), short_code(data.codes[i]),
                                 short_code(data.codes[j])))
    if not rows:                                  # nothing yet: one empty cell
        rows = [("0", "0", 0.0, "", "")]
    # region indices as categorical axes in numeric order (0, 1, ..., 10, not 0, 1, 10, 2)
    order = [str(i) for i in range(R)]
    kdims = [hv.Dimension("to", label="to region (index)", values=order),
             hv.Dimension("from", label="from region (index)", values=order)]
    hm = hv.HeatMap(rows, kdims, ["count", "from code", "to code"])
    # a linear colour scale: HoloViews fixes log/linear with the first frame, which is empty
    return hm.opts(cmap="Blues", colorbar=True, tools=["hover"],
                   title="Subregion transitions (counts; 0 = most visited)", invert_yaxis=True)


# ------------------------------------------------------------------ Lyapunov
def lyapunov_bars(data) -> hv.Bars:
    """Exponents of the model per time unit of the data (largest first), and the data's
    published largest exponent when known. ``data``: a ModelLyapunov or None."""
    rows = []
    if data is not None:
        ex = np.asarray(data.per_time, dtype=float).reshape(-1)
        rows = [(f"λ{i + 1}", "model", float(v)) for i, v in enumerate(ex)]
        if data.data_lyapunov is not None:
            rows.append(("λ1", "data (published)", float(data.data_lyapunov)))
    if not rows:
        rows = [("λ1", "model", np.nan)]
    return hv.Bars(rows, ["exponent", "source"], "λ (per time unit)").opts(
        color=hv.dim("source").categorize({"model": MODEL_COLOR, "data (published)": DATA_COLOR}),
        show_legend=True)


def short_code(code: str, width: int = 16) -> str:
    """A bitcode shortened for display (``0101…1100`` beyond ``width`` bits; ``-`` if empty)."""
    if not code:
        return "-"
    return code if len(code) <= width else f"{code[:8]}…{code[-4:]}"


def fixed_point_rows(analysis) -> list[dict]:
    """Table rows of the model's fixed points: observed coordinates (data units), largest
    eigenvalue modulus, type, stability."""
    rows = []
    if analysis is None:
        return rows
    for fp, obs in zip(analysis.fixed, analysis.fixed_observed):
        row = {v: float(c) for v, c in zip(analysis.variables, obs)}
        ev = fp.eigenvalues
        row["max |eigenvalue|"] = float(ev.abs().max()) if ev.numel() else float("nan")
        row["type"] = fp.type
        row["stable"] = "yes" if fp.stable else "no"
        rows.append(row)
    return rows
