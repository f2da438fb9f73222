r"""Power spectra of trajectories.

The one-sided power spectral density of each coordinate, from a Hann-windowed, mean-removed
FFT: :math:`P(f_k) = \frac{2 h}{\sum w^2} |\mathrm{FFT}(w\,(x - \bar x))_k|^2`, so that
integrating ``P`` over frequency returns the coordinate's variance (Parseval). Frequencies are
in cycles per time unit (per iteration for maps). Float64 by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError, ShapeError


@dataclass(frozen=True)
class PowerSpectrum:
    """``freqs`` (F,) in cycles per time unit, ``power`` (F, ...) one column per series."""

    freqs: torch.Tensor
    power: torch.Tensor

    def dominant_frequency(self) -> torch.Tensor:
        """The frequency of the largest peak of each series (the zero bin excluded)."""
        idx = self.power[1:].argmax(0) + 1
        return self.freqs[idx]


def power_spectrum(x: torch.Tensor, dt: float = 1.0, *, window: str = "hann") -> PowerSpectrum:
    """Power spectral density along time of ``x`` shaped (T, ...), e.g. (T, D) or (T, B, D).

    Args:
        x: time-major samples; NaN samples (after a divergence) are not allowed.
        dt: sampling interval (``traj.t[1] - traj.t[0]``).
        window: ``"hann"`` (default) or ``"boxcar"``.
    """
    x = torch.as_tensor(x)
    if x.ndim < 1 or x.shape[0] < 4:
        raise ShapeError(f"need at least 4 time samples along the first axis, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ParameterError("the series contains NaN or inf (a diverged trajectory?)")
    if not dt > 0:
        raise ParameterError(f"dt must be positive, got {dt}")
    x = x.to(torch.float64) if not x.is_floating_point() else x
    T = x.shape[0]
    if window == "hann":
        w = torch.hann_window(T, periodic=False, dtype=x.dtype, device=x.device)
    elif window == "boxcar":
        w = torch.ones(T, dtype=x.dtype, device=x.device)
    else:
        raise ParameterError(f"unknown window {window!r}: use 'hann' or 'boxcar'")
    w = w.reshape((T,) + (1,) * (x.ndim - 1))
    xc = (x - x.mean(0, keepdim=True)) * w
    F = torch.fft.rfft(xc, dim=0)
    p = (F.real**2 + F.imag**2) * (2.0 * dt / float((w**2).sum()))
    p[0] = p[0] / 2
    if T % 2 == 0:
        p[-1] = p[-1] / 2
    freqs = torch.fft.rfftfreq(T, d=dt, dtype=x.dtype, device=x.device)
    return PowerSpectrum(freqs, p)
