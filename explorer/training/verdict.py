r"""Is a trained model a reconstruction? A plain verdict from the data and a free run.

A model *reconstructs* a system when its free run, started on the data, reproduces the
data's long-term behaviour: the same occupation of state space (a small state-space
divergence :math:`D_{stsp}`), a free run that keeps moving when the data keep moving (not
collapsed onto a fixed point), and one that stays bounded. A low training loss says none
of this: a model trained with teacher forcing can predict one step well and still settle on
a fixed point when it runs on its own.

:func:`reconstruction_verdict` measures a free run against the data and returns a
:class:`Verdict` (``ok`` and a one-line ``reason``); :func:`judge` decides from numbers
already measured (the trainer's metrics: ``d_stsp``, ``d_h``, ``spread``). Both are pure:
torch and numpy only, no UI.

Thresholds (for :math:`D_{stsp}` on 30 bins per axis, Laplace smoothing :math:`10^{-5}`, as
:func:`~explorer.core.analysis.invariants.state_space_divergence`): an independent trajectory
of the true system scores about 0.05 against 100,000 noise-free samples, about 0.4 against
4 x 2,000 samples (the page's evaluation) and about 2 against 4 x 1,000 (the estimator is
biased upwards for few samples). Trained models that look right (both wings of the
Lorenz butterfly, the right spectrum) score 0.6 to 1.5 on the page's evaluation; untrained or
collapsed models score 5 to 15. :data:`D_STSP_GOOD` = 2 separates the two with room for the
estimator's bias and its scatter from one evaluation to the next. Observation noise raises :math:`D_{stsp}`
against the noisy data even for the true system (about 1.4 for Lorenz-63 and 4.6 for Rössler
at 5 % noise), so pass the noise-free reference when there is one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..core.analysis.invariants import power_spectrum_distance, state_space_divergence

#: D_stsp at or below this: the generated attractor occupies state space like the data
D_STSP_GOOD = 2.0
#: D_H at or below this: the power spectra match well (informational; not required)
D_H_GOOD = 0.15
#: a free run whose late part varies less than this fraction of the data's standard deviation
#: (in every coordinate) has settled on a fixed point
SPREAD_MIN = 0.05
#: a free run farther out than this many data standard deviations from the data's mean diverges
ESCAPE_STD = 20.0

KINDS = ("reconstruction", "diverged", "fixed point", "poor match")


@dataclass(frozen=True)
class Verdict:
    """Whether a model reconstructs the data, and why (one line).

    Attributes:
        ok: True when the model counts as a reconstruction.
        kind: ``"reconstruction"``, ``"diverged"`` (non-finite or escaping free run),
            ``"fixed point"`` (the free run stops moving while the data vary) or
            ``"poor match"`` (:math:`D_{stsp}` above the threshold).
        reason: one sentence for the UI and the CLI.
        d_stsp, d_h: the distances judged (``nan`` when not measured).
        spread: variation of the free run's late part relative to the data's (min over
            members of the max over coordinates; ``nan`` when not measured).
        threshold: the :math:`D_{stsp}` threshold used.
        reference: what the free run was compared with (``"noise-free reference"``,
            ``"data"``).
    """

    ok: bool
    kind: str
    reason: str
    d_stsp: float
    d_h: float
    spread: float
    threshold: float
    reference: str = "data"

    @property
    def headline(self) -> str:
        """``"reconstruction"`` or ``"not a reconstruction"``."""
        return "reconstruction" if self.ok else "not a reconstruction"

    def line(self) -> str:
        """One line: ``reconstruction: <reason>`` or ``not a reconstruction: <reason>``."""
        return f"{self.headline}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reconstructs"] = d.pop("ok")
        for k in ("d_stsp", "d_h", "spread"):
            d[k] = None if not math.isfinite(d[k]) else round(float(d[k]), 4)
        return d


def _fmt(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else "∞" if v == math.inf else "n/a"


def judge(d_stsp: float, d_h: float = math.nan, spread: float = math.nan, *,
          finite: bool = True, escaped: bool = False, threshold: float = D_STSP_GOOD,
          reference: str = "data") -> Verdict:
    """The verdict from measured numbers (see :func:`reconstruction_verdict`).

    Args:
        d_stsp: state-space divergence of the free run against ``reference``.
        d_h: power-spectrum distance (reported, not required).
        spread: late free-run variation relative to the data's (``nan``: not measured).
        finite: the free run stayed finite. escaped: it left the data's region far behind.
        threshold: the largest :math:`D_{stsp}` that counts as a reconstruction.
    """
    d_stsp, d_h, spread = float(d_stsp), float(d_h), float(spread)
    nums = f"D_stsp {_fmt(d_stsp)}, D_H {_fmt(d_h)}"
    against = "" if reference == "data" else f" against the {reference}"

    def v(ok, kind, reason):
        return Verdict(ok, kind, reason, d_stsp, d_h, spread, float(threshold), reference)

    if not finite:
        return v(False, "diverged", f"the free run diverges (NaN/inf) ({nums})")
    if escaped:
        return v(False, "diverged", f"the free run runs away from the data's region ({nums})")
    if math.isfinite(spread) and spread < SPREAD_MIN:
        return v(False, "fixed point",
                 f"the free run settles on a fixed point while the data keep varying "
                 f"(late variation {spread:.1%} of the data's; {nums})")
    if not math.isfinite(d_stsp):
        return v(False, "poor match", f"no generated state falls inside the data's region ({nums})")
    if d_stsp > threshold:
        return v(False, "poor match",
                 f"D_stsp {_fmt(d_stsp)}{against} is above {threshold:g}: the generated attractor "
                 f"does not occupy state space like the data (D_H {_fmt(d_h)})")
    return v(True, "reconstruction",
             f"D_stsp {_fmt(d_stsp)}{against} is at most {threshold:g} and the free run keeps "
             f"moving like the data (D_H {_fmt(d_h)})")


def metrics_verdict(metrics, *, threshold: float = D_STSP_GOOD) -> Verdict:
    """The verdict from one evaluation of :meth:`explorer.training.Trainer.evaluate`
    (``d_stsp``, ``d_h``, and ``d_stsp_clean``, ``d_h_clean``, ``spread``, ``escaped`` where
    present): the noise-free numbers are judged when the data carry a reference."""
    m = dict(metrics)
    clean = m.get("d_stsp_clean") is not None
    d = m["d_stsp_clean"] if clean else m.get("d_stsp", math.nan)
    h = m.get("d_h_clean") if clean and m.get("d_h_clean") is not None else m.get("d_h", math.nan)
    spread = m.get("spread", math.nan)
    spread = math.nan if spread is None else float(spread)
    finite = not ("spread" in m and not math.isfinite(spread)) and d != -math.inf
    return judge(d, math.nan if h is None else h, spread, finite=finite,
                 escaped=bool(m.get("escaped") or 0.0), threshold=threshold,
                 reference="noise-free reference" if clean else "data")


def _as_tbd(x, what: str) -> torch.Tensor:
    """(T,), (T, D) or (T, B, D) -> (T, B, D) float64 CPU tensor."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if t.ndim == 1:
        t = t[:, None, None]
    elif t.ndim == 2:
        t = t[:, None, :]                                              # (T, D) -> (T, 1, D)
    if t.ndim != 3 or t.shape[0] < 4:
        raise ValueError(f"{what} must be (T, D) or (T, B, D) with T >= 4, got {tuple(t.shape)}")
    return t


def free_run_spread(x_true, x_gen, *, tail: float = 0.25) -> float:
    """How much the late part of a free run varies, relative to the data.

    For each member of ``x_gen`` (T, B, D), the standard deviation over its last ``tail``
    fraction of samples, per coordinate, divided by the data's standard deviation; the
    largest over coordinates is that member's spread, and the smallest over members is
    returned (so one member stuck on a fixed point is enough to show it). ``nan`` for a
    non-finite run."""
    xt, xg = _as_tbd(x_true, "x_true"), _as_tbd(x_gen, "x_gen")
    if not torch.isfinite(xg).all():
        return math.nan
    sd = xt.reshape(-1, xt.shape[-1]).std(0).clamp_min(1e-12)              # (D,)
    n = max(2, round(xg.shape[0] * tail))
    late = xg[-n:]                                                          # (n, B, D)
    per = (late.std(0) / sd).amax(-1)                                       # (B,)
    return float(per.min())


def escaped(x_true, x_gen, *, limit: float = ESCAPE_STD) -> bool:
    """The free run ends farther than ``limit`` data standard deviations from the data's mean
    (in any coordinate, for most members): a run-away model."""
    xt, xg = _as_tbd(x_true, "x_true"), _as_tbd(x_gen, "x_gen")
    flat = xt.reshape(-1, xt.shape[-1])
    mean, sd = flat.mean(0), flat.std(0).clamp_min(1e-12)
    n = max(2, xg.shape[0] // 4)
    far = ((xg[-n:] - mean).abs() / sd).amax(-1).median(0).values > limit   # (B,)
    return bool(far.float().mean() > 0.5)


def reconstruction_verdict(x_true, x_gen, *, threshold: float = D_STSP_GOOD,
                           reference: str = "data",
                           generator: torch.Generator | None = None) -> Verdict:
    r"""Does the free run ``x_gen`` reconstruct the data ``x_true``?

    Not a reconstruction when the free run is non-finite or runs away (``"diverged"``), when
    its late part stops varying while the data vary (``"fixed point"``, see
    :func:`free_run_spread`), or when :math:`D_{stsp}` exceeds ``threshold``
    (``"poor match"``). :math:`D_H` is reported.

    Args:
        x_true: the data (T, D) or (T, B, D), preferably noise-free (see the module notes).
        x_gen: the model's free run(s) (T', D) or (T', B', D), same units as ``x_true``.
        threshold: the largest :math:`D_{stsp}` that counts (:data:`D_STSP_GOOD`).
        reference: a name for ``x_true`` in the reason (``"data"``, ``"noise-free
            reference"``).
        generator: RNG of the Monte-Carlo :math:`D_{stsp}` (more than 3 dimensions).

    Returns:
        A :class:`Verdict`.
    """
    xt, xg = _as_tbd(x_true, "x_true"), _as_tbd(x_gen, "x_gen")
    if xt.shape[-1] != xg.shape[-1]:
        raise ValueError(f"x_true has {xt.shape[-1]} coordinates, x_gen has {xg.shape[-1]}")
    finite = bool(torch.isfinite(xg).all())
    if not finite:
        return judge(math.inf, 1.0, math.nan, finite=False, threshold=threshold,
                     reference=reference)
    d = state_space_divergence(xt, xg, generator=generator)
    try:
        h = power_spectrum_distance(xt, xg)
    except Exception:  # noqa: BLE001 -- too short or constant data: no spectrum
        h = math.nan
    return judge(d, h, free_run_spread(xt, xg), escaped=escaped(xt, xg), threshold=threshold,
                 reference=reference)


__all__ = [
    "D_H_GOOD",
    "D_STSP_GOOD",
    "KINDS",
    "SPREAD_MIN",
    "Verdict",
    "escaped",
    "free_run_spread",
    "judge",
    "metrics_verdict",
    "reconstruction_verdict",
]
