"""Pictures and analyses of a reconstruction model (pure compute: torch and numpy only).

* :class:`Frame`, :func:`data_frame`, :func:`model_frame_of`: a free run of the model against
  the data, with its subregion (symbolic) sequence and transition counts: what the
  Reconstruction page draws live while a model trains (about 25 ms).
* :class:`ModelAnalysis`, :func:`analyse_model`: the trained model analysed as a map through
  ``model.as_system()`` with the core analysis (fixed points by Newton's method, exact fixed
  points of the visited linear subregions, a long free run's symbolic dynamics).
* :class:`ModelLyapunov`: its Lyapunov spectrum per iteration and per time unit of the data.

The page, the notebooks and the CLI share these functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.analysis.fixed_points import FixedPoint, fixed_points
from ..core.analysis.lyapunov import LyapunovResult
from ..core.errors import ExplorerError
from ..core.simulate import simulate
from ..models import (PWLFixedPoint, ReconstructionModel, pwl_fixed_points, symbolic_sequence,
                      transition_graph)
from .data import TimeSeries
from .gtf import force
from .trainer import Trainer

#: samples of the live free run compared with the data
FRAME_LENGTH = 2000


@dataclass(frozen=True)
class Frame:
    """A live picture of the model: a free run against the data (data units, float32).

    ``x_true`` and ``x_gen`` are (L, N) from the same data-inferred start, ``t`` (L,) in the
    data's time unit; ``symbols`` (L',) the subregion index of each generated state up to the
    first non-finite one, regions numbered by visit frequency with bitcodes ``codes`` and
    visit ``counts``; ``graph`` (R, R) transition counts. ``x_gen`` is None for a data preview.
    """

    step: int
    variables: tuple[str, ...]
    t: np.ndarray
    x_true: np.ndarray
    x_gen: np.ndarray | None
    symbols: np.ndarray
    codes: tuple[str, ...]
    counts: np.ndarray
    graph: np.ndarray
    diverged: bool = False



@dataclass(frozen=True)
class ModelAnalysis:
    """The trained model analysed as a map (``model.as_system()``) after training.

    ``fixed`` come from :func:`explorer.core.analysis.fixed_points.fixed_points` (latent
    coordinates, map eigenvalues), ``fixed_observed`` (F, N) are their observed coordinates in
    data units, ``pwl_fixed`` the exact fixed points in the visited subregions; ``symbols``,
    ``codes``, ``counts`` the symbolic sequence of ``steps`` iterations of the snapshot from its
    reference state (after a transient), ``graph`` its transition counts and ``observed`` (T, N)
    that run's observations in data units.
    """

    step: int
    title: str
    latex: str
    latent_dim: int
    obs_dim: int
    n_switches: int
    variables: tuple[str, ...]
    fixed: list[FixedPoint]
    pwl_fixed: list[PWLFixedPoint]
    symbols: np.ndarray
    codes: tuple[str, ...]
    counts: np.ndarray
    graph: np.ndarray
    steps: int
    bounded: bool
    observed: np.ndarray
    fixed_observed: np.ndarray
    seconds: float


@dataclass(frozen=True)
class ModelLyapunov:
    """Lyapunov spectrum of the trained model: per iteration and per time unit of the data."""

    step: int
    result: LyapunovResult
    dt: float
    data_lyapunov: float | None

    @property
    def per_time(self) -> np.ndarray:
        return self.result.exponents.cpu().numpy() / self.dt


def empty_symbols() -> dict[str, Any]:
    return {"symbols": np.zeros(0, np.int64), "codes": (), "counts": np.zeros(0, np.int64),
            "graph": np.zeros((0, 0), np.int64)}


def symbols_of(model: ReconstructionModel, z: torch.Tensor) -> dict[str, Any]:
    """Subregion sequence and transition counts of latent states ``z`` (T, M), cut at the
    first non-finite state."""
    ok = torch.isfinite(z).all(-1)
    n = int(ok.long().cumprod(0).sum())
    if n < 1:
        return empty_symbols()
    if model.n_switches == 0:                       # a linear model: one region
        return {"symbols": np.zeros(n, np.int64), "codes": ("",), "counts": np.array([n]),
                "graph": np.array([[max(n - 1, 0)]])}
    seq = symbolic_sequence(model, z[:n])
    graph = transition_graph(seq.symbols, seq.n_regions)
    return {"symbols": seq.symbols.numpy(), "codes": seq.codes, "counts": seq.counts.numpy(),
            "graph": graph.numpy()}


def data_frame(ts: TimeSeries, length: int = FRAME_LENGTH) -> Frame:
    """A preview :class:`Frame` of the data alone (its first ``length`` samples)."""
    L = min(length, ts.length)
    x = ts.raw()[:L].to(torch.float32).numpy()                          # (L, N)
    return Frame(step=0, variables=tuple(ts.variables), t=(np.arange(L) * ts.dt).astype(np.float32),
                 x_true=x, x_gen=None, **empty_symbols())


@torch.no_grad()
def model_frame_of(model: ReconstructionModel, ts: TimeSeries, *, step: int = 0,
                   length: int = FRAME_LENGTH) -> Frame:
    r"""A free run of ``model`` against the data ``ts``: the latent state is inferred from the
    data by full teacher forcing over the first samples (none when every unit is observed),
    then the model runs freely for ``length`` samples; its subregion sequence comes with it."""
    dev = next(model.parameters()).device
    x = ts.x.to(dev)                                                    # (T, N) standardised
    M, N = model.latent_dim, model.obs_dim
    w = min(25 if (model.B is not None or M > N) else 0, max(ts.length - 2, 0))
    L = max(2, min(length, ts.length - w))
    was_training = model.training
    model.eval()
    try:
        z = model.init_state(x[0])                                      # (M,)
        for s in range(1, w + 1):
            z = force(model, model.step(z), x[s], 1.0)
        zs = torch.cat([z.unsqueeze(0), model.forward(z, L - 1)])      # (L, M)
        x_gen = model.observe(zs)                                       # (L, N)
    finally:
        model.train(was_training)
    norm = ts.normalisation
    gen = norm.invert(x_gen.detach().to("cpu", torch.float64)).to(torch.float32).numpy()
    true = ts.raw()[w: w + L].to(torch.float32).numpy()
    sym = symbols_of(model, zs.detach().cpu())
    diverged = not bool(np.isfinite(gen).all())
    return Frame(step=step, variables=tuple(ts.variables),
                 t=(np.arange(L) * ts.dt).astype(np.float32), x_true=true, x_gen=gen,
                 diverged=diverged, **sym)


def model_frame(trainer: Trainer, length: int = FRAME_LENGTH) -> Frame:
    """:func:`model_frame_of` for a trainer's current model (call from its thread)."""
    return model_frame_of(trainer.model, trainer.data, step=trainer.step_count, length=length)


def analyse_model(model: ReconstructionModel, data: TimeSeries | None, *, step: int = 0,
                  steps: int = 5000) -> ModelAnalysis:
    """Fixed points (Newton, as on the Attractors page, and exact per visited subregion),
    subregion sequence and transition graph of ``model.as_system()``."""
    t0 = time.perf_counter()
    sys_ = model.as_system()
    tr = simulate(sys_, steps=steps, transient=500, dtype=torch.float64, device="cpu")
    z = tr.x[:, 0]                                                      # (T, M)
    sym = symbols_of(model, z)
    bounded = bool(torch.isfinite(z).all())
    try:
        fixed = fixed_points(sys_, n_starts=256, generator=torch.Generator().manual_seed(0))
    except (ExplorerError, RuntimeError):             # e.g. a snapshot that diverges at once
        fixed = []
    pwl: list[PWLFixedPoint] = []
    if model.n_switches and sym["codes"]:
        patterns = torch.tensor([[c == "1" for c in code] for code in sym["codes"]], dtype=torch.bool)
        pwl = pwl_fixed_points(model, patterns)
    n_ok = int(torch.isfinite(z).all(-1).long().cumprod(0).sum())
    with torch.no_grad():
        obs = model.observe(z[:n_ok].to(torch.float32))
        fixed_obs = (model.observe(torch.stack([f.x for f in fixed]).to(torch.float32))
                     if fixed else torch.zeros(0, model.obs_dim))
    if data is not None:
        obs = data.normalisation.invert(obs.to(torch.float64))
        fixed_obs = data.normalisation.invert(fixed_obs.to(torch.float64))
    return ModelAnalysis(
        step=step, title=sys_.title, latex=model.latex(), latent_dim=model.latent_dim,
        obs_dim=model.obs_dim, n_switches=model.n_switches,
        variables=tuple(data.variables) if data is not None else tuple(f"x{i + 1}" for i in range(model.obs_dim)),
        fixed=fixed, pwl_fixed=pwl, steps=steps, bounded=bounded,
        observed=obs.to(torch.float32).numpy(),
        fixed_observed=fixed_obs.to(torch.float32).numpy(), seconds=time.perf_counter() - t0, **sym)
