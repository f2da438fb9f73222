r"""Invariant-based distances between an observed and a generated trajectory.

Dynamical-systems reconstruction is judged by long-term, invariant properties of the
generated dynamics rather than by pointwise errors (which chaos makes meaningless after a
few Lyapunov times):

* :func:`state_space_divergence` (:math:`D_{stsp}`): the Kullback-Leibler divergence between
  the occupation measures (where the trajectories spend their time) in state space;
* :func:`power_spectrum_distance` (:math:`D_H`): the Hellinger distance between the smoothed,
  normalised power spectra of each coordinate (the temporal structure).

Both take time-major arrays ``(T, D)`` or ``(T, B, D)`` (members are pooled) and return a
float. They are computed in float64 (invariants need accuracy) whatever the input dtype.

References:
    G. Koppe, H. Toutounji, P. Kirsch, S. Lis, D. Durstewitz, PLoS Comput. Biol. 15,
    e1007263 (2019) (state-space divergence).
    M. Brenner, F. Hess, J. M. Mikhaeil, L. Bereska, Z. Monfared, P.-C. Kuo, D. Durstewitz,
    ICML (2022) (binned :math:`D_{stsp}`, power-spectrum distance).
    F. Hess, Z. Monfared, M. Brenner, D. Durstewitz, ICML (2023) (Hellinger :math:`D_H`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from ..errors import ParameterError, ShapeError

#: observed dimensions up to which :func:`state_space_divergence` uses the histogram
MAX_HISTOGRAM_DIM = 3


def _as_points(x, what: str) -> torch.Tensor:
    """(T, D) or (T, B, D) array -> (N, D) float64 tensor of pooled points."""
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ShapeError(f"{what} must be a numeric array, got {type(x).__name__}") from e
    if t.ndim == 1:
        t = t.unsqueeze(-1)                                           # (T,) -> (T, 1)
    if t.ndim not in (2, 3):
        raise ShapeError(f"{what} must be (T, D) or (T, B, D), got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ShapeError(f"{what} needs at least 2 time samples, got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float64)
    return t.reshape(-1, t.shape[-1])                                 # (N, D)


def _histogram(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bins: int,
               outliers: str) -> torch.Tensor:
    """Counts of the points ``x`` (N, D) on a regular grid of ``bins**D`` cells over [lo, hi]."""
    D = x.shape[-1]
    idx = torch.floor(bins * (x - lo) / (hi - lo)).long()            # (N, D)
    if outliers == "clip":
        idx = idx.clamp(0, bins - 1)
    else:                                                             # "drop": the reference
        inside = ((idx >= 0) & (idx < bins)).all(-1)
        idx = idx[inside]
    strides = bins ** torch.arange(D - 1, -1, -1)                     # row-major cell index
    flat = (idx * strides).sum(-1)
    return torch.bincount(flat, minlength=bins**D).to(torch.float64)  # (bins**D,)


def _binned_kl(xt: torch.Tensor, xg: torch.Tensor, bins: int, smoothing: float,
               outliers: str) -> float:
    std = xt.std(0)
    lo = xt.min(0).values - 0.1 * std
    hi = xt.max(0).values + 0.1 * std
    hi = torch.where(hi > lo, hi, lo + 1.0)                          # a constant coordinate
    ht = _histogram(xt, lo, hi, bins, outliers)
    hg = _histogram(xg, lo, hi, bins, outliers)
    if float(hg.sum()) == 0.0:
        return math.inf                     # nothing generated inside the data's range
    n_cells = ht.numel()
    p = (ht + smoothing) / (ht.sum() + smoothing * n_cells)
    q = (hg + smoothing) / (hg.sum() + smoothing * n_cells)
    return float((p * (p / q).log()).sum())


def _gmm_log_density(z: torch.Tensor, mu: torch.Tensor, var: float) -> torch.Tensor:
    """Log density at ``z`` (S, D) of the equal-weight mixture of N(mu_t, var I), mu (T, D)."""
    D = z.shape[-1]
    out = []
    for chunk in z.split(256):                                        # bounded memory
        d2 = torch.cdist(chunk, mu).square()                          # (s, T)
        out.append(torch.logsumexp(-0.5 * d2 / var, -1))
    log_norm = math.log(mu.shape[0]) + 0.5 * D * math.log(2 * math.pi * var)
    return torch.cat(out) - log_norm                                  # (S,)


def _gmm_kl(xt: torch.Tensor, xg: torch.Tensor, n_centres: int, n_mc: int, var: float,
            generator: torch.Generator | None) -> float:
    # data-based standardisation, so one isotropic variance suits every coordinate
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-12)
    xt, xg = (xt - mean) / std, (xg - mean) / std

    def centres(x):                                   # evenly strided subsample (T', D)
        if x.shape[0] <= n_centres:
            return x
        return x[torch.linspace(0, x.shape[0] - 1, n_centres).round().long()]

    mt, mg = centres(xt), centres(xg)

    def kl(m1, m2):                                   # Monte-Carlo KL(p1 || p2)
        i = torch.randint(0, m1.shape[0], (n_mc,), generator=generator)
        z = m1[i] + math.sqrt(var) * torch.randn(n_mc, m1.shape[1], generator=generator,
                                                 dtype=m1.dtype)
        return float((_gmm_log_density(z, m1, var) - _gmm_log_density(z, m2, var)).mean())

    return 0.5 * (kl(mt, mg) + kl(mg, mt))


def state_space_divergence(x_true, x_gen, bins: int = 30, *, smoothing: float = 1e-5,
                           outliers: str = "drop", max_histogram_dim: int = MAX_HISTOGRAM_DIM,
                           n_centres: int = 10_000, n_mc: int = 1000, variance: float = 1.0,
                           generator: torch.Generator | None = None) -> float:
    r"""State-space divergence :math:`D_{stsp}`: KL divergence of the occupation measures.

    .. math::
        D_{stsp} = D_{KL}(p_{true} \,\|\, p_{gen})
                 = \sum_k p_{true}(k) \log \frac{p_{true}(k)}{p_{gen}(k)}

    Up to ``max_histogram_dim`` (3) observed dimensions, :math:`p` are histograms with
    ``bins`` cells per dimension over the data's range enlarged by 0.1 standard deviations on
    each side, with Laplace smoothing :math:`p = (n + \epsilon) / (N + \epsilon K)`
    (:math:`\epsilon` = ``smoothing``, :math:`K` cells). Generated points outside that range
    are dropped as in the reference code (``outliers="clip"`` counts them in the edge cells
    instead, which penalises mass outside the data).

    Above that, each trajectory becomes a Gaussian mixture with one isotropic component
    :math:`\mathcal N(x_t, \sigma^2 I)` per time point of an evenly strided subsample of
    ``n_centres`` points (coordinates standardised by the data's mean and standard
    deviation, :math:`\sigma^2` = ``variance``), and the symmetrised KL divergence
    :math:`\tfrac12 (D_{KL}(p\|q) + D_{KL}(q\|p))` is estimated by Monte Carlo from ``n_mc``
    samples of each mixture (log-sum-exp densities; ``generator`` draws the samples).

    Args:
        x_true: observed trajectory, (T, D) or (T, B, D); must be finite.
        x_gen: generated trajectory with the same D (any length).
        bins: histogram cells per dimension.

    Returns:
        :math:`D_{stsp} \ge 0` (0 for identical histograms); ``inf`` when ``x_gen`` holds NaN
        or inf (a diverged model) or no generated point falls inside the data's range.

    References:
        Koppe et al., PLoS Comput. Biol. 15, e1007263 (2019); Brenner et al., ICML (2022).
    """
    xt = _as_points(x_true, "x_true")
    xg = _as_points(x_gen, "x_gen")
    if xt.shape[-1] != xg.shape[-1]:
        raise ShapeError(f"x_true has {xt.shape[-1]} dimensions, x_gen has {xg.shape[-1]}")
    if not torch.isfinite(xt).all():
        raise ParameterError("x_true contains NaN or inf")
    if int(bins) != bins or bins < 2:
        raise ParameterError(f"bins must be an integer >= 2, got {bins!r}")
    if not smoothing > 0:
        raise ParameterError(f"smoothing must be positive, got {smoothing!r}")
    if outliers not in ("drop", "clip"):
        raise ParameterError(f"outliers must be 'drop' or 'clip', got {outliers!r}")
    if not torch.isfinite(xg).all():
        return math.inf
    D = xt.shape[-1]
    if D <= max_histogram_dim:
        return _binned_kl(xt, xg, int(bins), float(smoothing), outliers)
    return _gmm_kl(xt, xg, int(n_centres), int(n_mc), float(variance), generator)


def hellinger_distance(p, q) -> float:
    r"""Hellinger distance of two discrete distributions (normalised here):
    :math:`H(p, q) = \sqrt{1 - \sum_k \sqrt{p_k q_k}}`, between 0 (equal) and 1 (disjoint)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ShapeError(f"distributions differ in shape: {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ParameterError("distributions must be non-negative with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    bc = float(np.sqrt(p * q).sum())
    return math.sqrt(max(0.0, 1.0 - bc))


def _smoothed_spectra(x: np.ndarray, smoothing: float) -> np.ndarray:
    """(T, B, D) -> (F, D) member-averaged power spectra, z-scored, smoothed, normalised.

    A coordinate without variance gives a NaN column (it has no spectrum to compare)."""
    mean = x.mean(0, keepdims=True)
    std = x.std(0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (x - mean) / std                                          # (T, B, D)
    ps = np.abs(np.fft.rfft(z, axis=0)) ** 2 * (2.0 / x.shape[0])     # (F, B, D)
    ps = ps.mean(1)                                                   # (F, D)
    if smoothing > 0:
        ps = gaussian_filter1d(ps, smoothing, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ps / ps.sum(0, keepdims=True)


def power_spectrum_distance(x_true, x_gen, smoothing: float = 20.0, *,
                            per_dimension: bool = False):
    r"""Power-spectrum distance :math:`D_H`: mean Hellinger distance of smoothed spectra.

    For each coordinate: z-score it, take :math:`|\mathrm{rfft}|^2`, smooth with a Gaussian
    kernel of standard deviation ``smoothing`` frequency bins, normalise to unit sum, then

    .. math::
        D_H = \frac1D \sum_{d=1}^{D} \sqrt{1 - \sum_f \sqrt{P_d(f)\, \hat P_d(f)}}.

    Batched inputs (T, B, D) average the spectra over members first. The two trajectories
    are cut to their common length (the spectra must share frequency bins). A generated
    coordinate with no variance (a fixed point) or non-finite values counts as distance 1.

    Args:
        x_true, x_gen: (T, D) or (T, B, D) trajectories with the same D.
        smoothing: Gaussian kernel width in bins (0: no smoothing).
        per_dimension: also return the (D,) per-coordinate distances.

    Returns:
        :math:`D_H \in [0, 1]`, or ``(D_H, per_dim)`` with ``per_dimension=True``.

    References:
        Hess et al., ICML (2023); Brenner et al., ICML (2022).
    """
    def prep(x, what):
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if t.ndim == 1:
            t = t.unsqueeze(-1)
        if t.ndim == 2:
            t = t.unsqueeze(1)                                        # (T, D) -> (T, 1, D)
        if t.ndim != 3:
            raise ShapeError(f"{what} must be (T, D) or (T, B, D), got shape {tuple(t.shape)}")
        return t.detach().to("cpu", torch.float64).numpy()

    xt, xg = prep(x_true, "x_true"), prep(x_gen, "x_gen")
    if xt.shape[-1] != xg.shape[-1]:
        raise ShapeError(f"x_true has {xt.shape[-1]} dimensions, x_gen has {xg.shape[-1]}")
    if not np.isfinite(xt).all():
        raise ParameterError("x_true contains NaN or inf")
    if smoothing < 0:
        raise ParameterError(f"smoothing must be >= 0, got {smoothing!r}")
    T = min(xt.shape[0], xg.shape[0])
    if T < 4:
        raise ShapeError(f"need at least 4 common time samples, got {T}")
    xt, xg = xt[:T], xg[:T]
    if (xt.std(0) == 0).any():
        raise ParameterError("x_true has a constant coordinate: its spectrum is undefined")
    pt = _smoothed_spectra(xt, float(smoothing))
    D = xt.shape[-1]
    if np.isfinite(xg).all():
        pg = _smoothed_spectra(xg, float(smoothing))
    else:
        pg = np.full_like(pt, np.nan)
    dist = np.ones(D)
    for d in range(D):
        if np.isfinite(pg[:, d]).all():
            bc = float(np.sqrt(pt[:, d] * pg[:, d]).sum())
            dist[d] = math.sqrt(max(0.0, 1.0 - bc))
    mean = float(dist.mean())
    return (mean, dist) if per_dimension else mean
