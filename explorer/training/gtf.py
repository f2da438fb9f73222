r"""Generalized teacher forcing (GTF), its adaptive forcing strength, and the n-step error.

Training a recurrent model on chaotic data by back-propagation through long free runs fails:
gradients grow like the product of Jacobians, i.e. exponentially with the sequence length.
GTF pulls the latent state towards the state inferred from the data at every step,

.. math:: z_t \leftarrow (1 - \alpha)\, z_t + \alpha\, \hat z_t ,

so the Jacobian product picks up a factor :math:`(1 - \alpha)^T`. With :math:`\mathcal N` an
upper bound of the Jacobians' spectral norms along the trajectory, the choice
:math:`\alpha^* = \max(0, 1 - 1/\mathcal N)` keeps gradients bounded while forcing as little as
possible (:func:`optimal_alpha`). :class:`AdaptiveAlpha` re-estimates it every few steps and
lets it decay otherwise.

Identity observation (the first N latent units are observed): :math:`\hat z` replaces only
those units and the rest evolve freely. Linear observation :math:`x = B z`: the forcing acts in
the row space of ``B``, :math:`z \leftarrow z + \alpha B^+ (x - B z)` (which reduces to the
identity case when :math:`B = [I\;0]`). ``alpha = 1`` is classic teacher forcing, ``alpha = 0``
free running. Sparse teacher forcing replaces the observed units every ``tau`` steps instead.

Training runs in float32.

References:
    F. Hess, Z. Monfared, M. Brenner, D. Durstewitz, "Generalized teacher forcing for
    learning chaotic dynamics", ICML (2023).
    J. M. Mikhaeil, Z. Monfared, D. Durstewitz, "On the difficulty of learning chaotic
    dynamics with RNNs", NeurIPS (2022) (sparse teacher forcing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from ..models.plrnn import ReconstructionModel


def force(model: ReconstructionModel, z: torch.Tensor, x: torch.Tensor, alpha: float,
          pinv: torch.Tensor | None = None) -> torch.Tensor:
    r"""One forcing step :math:`z + \alpha B^+ (x - B z)`; identity observation:
    :math:`z_{1:N} \leftarrow (1 - \alpha) z_{1:N} + \alpha x`.

    Args:
        z: latent states (..., M); x: observations (..., N); alpha in [0, 1].
        pinv: :math:`B^+` (M, N) for a linear observation (computed when not given).
    """
    return _forcer(model, alpha, pinv)(z, x)


def _forcer(model: ReconstructionModel, alpha: float, pinv: torch.Tensor | None = None):
    """The forcing step ``(z, x) -> z`` for this model and alpha, its branches resolved
    once (it runs at every time step of every training window)."""
    if alpha == 0:
        return lambda z, x: z
    if model.B is None:
        N, M = model.obs_dim, model.latent_dim
        if N == M:
            if alpha == 1:
                return lambda z, x: x
            return lambda z, x: torch.lerp(z, x, alpha)
        if alpha == 1:
            return lambda z, x: torch.cat([x, z[..., N:]], -1)
        return lambda z, x: torch.cat([torch.lerp(z[..., :N], x, alpha), z[..., N:]], -1)
    if pinv is None:
        pinv = model.observation_pinv()
    gain = alpha * pinv.T                                             # (N, M)
    B = model.B
    return lambda z, x: z + (x - z @ B.T) @ gain


@dataclass(frozen=True)
class Rollout:
    """A teacher-forced pass over data windows.

    Attributes:
        predictions: (T, B, N) observations of the model's one-step predictions (before
            forcing), to compare with ``x[1:]``.
        states: (T, B, M) the latent predictions (before forcing).
    """

    predictions: torch.Tensor
    states: torch.Tensor

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error against the data windows ``x`` (T + 1, B, N)."""
        return torch.mean((self.predictions - x[1:]) ** 2)


def gtf_rollout(model: ReconstructionModel, x: torch.Tensor, alpha: float = 0.0, *,
                tau: int | None = None) -> Rollout:
    r"""Run the model along data windows with generalized (or sparse) teacher forcing.

    The initial state is inferred from ``x[0]`` (:meth:`init_state`); then for
    :math:`t = 1..T`: :math:`z_t = F(z_{t-1})` is recorded as the prediction, and the state is
    forced towards the data, :math:`z_t \leftarrow z_t + \alpha B^+(x_t - B z_t)`; with
    ``tau`` given, forcing is full (:math:`\alpha = 1`) every ``tau``-th step and absent
    otherwise.

    Args:
        x: (T + 1, B, N) data windows (time-major).
        alpha: forcing strength in [0, 1] (ignored when ``tau`` is given).
        tau: sparse teacher-forcing interval.

    Returns:
        :class:`Rollout` with predictions (T, B, N) and latent states (T, B, M).
    """
    if x.ndim != 3 or x.shape[-1] != model.obs_dim:
        raise ShapeError(f"data windows must be (T + 1, B, {model.obs_dim}), got {tuple(x.shape)}")
    if tau is None and not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must be in [0, 1], got {alpha!r}")
    if tau is not None and (int(tau) != tau or tau < 1):
        raise ParameterError(f"tau must be a positive integer, got {tau!r}")
    w = model.weights()
    f = type(model)._f
    pinv = model.observation_pinv()
    push = _forcer(model, 1.0 if tau is not None else alpha, pinv)
    z = model.init_state(x[0])                                        # (B, M)
    states = []
    for t in range(1, x.shape[0]):
        z = f(w, z)
        states.append(z)
        if tau is None or t % tau == 0:
            z = push(z, x[t])
    zs = torch.stack(states)                                          # (T, B, M)
    return Rollout(model.observe(zs), zs)


def optimal_alpha(norm_bound: float) -> float:
    r""":math:`\alpha^* = \max(0, 1 - 1/\mathcal N)`: the least forcing that keeps the forced
    Jacobian product :math:`\prod (1-\alpha) J_t` from growing (Hess et al. 2023)."""
    if not math.isfinite(norm_bound):
        return 1.0
    if norm_bound <= 1.0:
        return 0.0
    return 1.0 - 1.0 / norm_bound


@torch.no_grad()
def jacobian_norm_bound(model: ReconstructionModel, z: torch.Tensor) -> float:
    r"""Upper bound :math:`\mathcal N` of the per-step Jacobian growth along trajectories.

    .. math:: \mathcal N = \max_b \Big(\prod_{t=1}^{T} \| J(z_{t,b}) \|_2\Big)^{1/T},

    the geometric mean over time of the spectral norms (which bounds the growth of the
    Jacobian product :math:`\|\prod_t J_t\| \le \prod_t \|J_t\|`), worst member of the batch.

    Args:
        z: latent states (T, B, M) (e.g. :attr:`Rollout.states`).
    """
    z = z.detach()
    if z.ndim == 2:
        z = z.unsqueeze(1)
    J = type(model)._J({k: v.detach() for k, v in model.weights().items()}, z)   # (T, B, M, M)
    s = torch.linalg.matrix_norm(J.to(torch.float64), ord=2)                    # (T, B)
    log_mean = torch.log(s.clamp_min(1e-300)).mean(0)                           # (B,)
    return float(torch.exp(log_mean.max()))


class AdaptiveAlpha:
    r"""Adaptive forcing strength: re-estimate :math:`\alpha^*` every ``every`` steps; jump
    up to a larger estimate at once, otherwise decay towards it,
    :math:`\alpha \leftarrow \gamma \alpha + (1 - \gamma) \alpha^*` (:math:`\gamma` = ``decay``,
    0.999 in the reference).

    Mutable training state: :meth:`state_dict` / :meth:`load_state_dict` for checkpoints.
    """

    def __init__(self, alpha: float = 0.1, *, every: int = 5, decay: float = 0.999):
        if not 0.0 <= alpha <= 1.0:
            raise ParameterError(f"alpha must be in [0, 1], got {alpha!r}")
        if int(every) != every or every < 1:
            raise ParameterError(f"every must be a positive integer, got {every!r}")
        if not 0.0 <= decay <= 1.0:
            raise ParameterError(f"decay must be in [0, 1], got {decay!r}")
        self.alpha = float(alpha)
        self.every = int(every)
        self.decay = float(decay)
        self.norm_bound = math.nan
        self.calls = 0

    def due(self) -> bool:
        """Whether the next :meth:`update` re-estimates (every ``every``-th call)."""
        return self.calls % self.every == 0

    def update(self, model: ReconstructionModel, states: torch.Tensor) -> float:
        """Count one training step; on due steps re-estimate from ``states`` (T, B, M).
        Returns the (possibly new) alpha."""
        if self.due():
            self.norm_bound = jacobian_norm_bound(model, states)
            est = optimal_alpha(self.norm_bound)
            if est > self.alpha:
                self.alpha = est
            else:
                self.alpha = self.decay * self.alpha + (1.0 - self.decay) * est
        self.calls += 1
        return self.alpha

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "every": self.every, "decay": self.decay,
                "norm_bound": self.norm_bound, "calls": self.calls}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.alpha = float(d["alpha"])
        self.every = int(d["every"])
        self.decay = float(d["decay"])
        self.norm_bound = float(d["norm_bound"])
        self.calls = int(d["calls"])


@torch.no_grad()
def prediction_error(model: ReconstructionModel, x: torch.Tensor, n: int = 20, *,
                     warmup: int | None = None, max_starts: int = 1000) -> float:
    r"""n-step prediction error from data-inferred states.

    At ``S`` evenly spaced times :math:`t`, the latent state is inferred from the data (full
    teacher forcing over ``warmup`` steps before :math:`t`, which settles the unobserved
    units; none are needed when every unit is observed), the model runs freely for ``n``
    steps, and

    .. math:: \mathrm{PE}(n) = \frac{1}{S N} \sum_t \| B z_{t+n} - x_{t+n} \|^2 .

    Args:
        x: (T, N) series in the model's (standardised) units.
        n: prediction horizon (20 in the reference).
        warmup: forcing steps before each start (default 0 when the latent state is fully
            observed through the identity, else 25).
        max_starts: S, at most this many start times.

    Returns:
        The mean squared n-step error (``inf`` if a prediction diverged).
    """
    if x.ndim != 2 or x.shape[-1] != model.obs_dim:
        raise ShapeError(f"x must be (T, {model.obs_dim}), got shape {tuple(x.shape)}")
    if warmup is None:
        warmup = 0 if (model.B is None and model.latent_dim == model.obs_dim) else 25
    L = warmup + n + 1
    T = x.shape[0]
    if T < L:
        raise ParameterError(f"a series of {T} samples is too short for warmup {warmup} + n {n}")
    S = min(max_starts, T - L + 1)
    starts = torch.linspace(0, T - L, S).round().long()                          # (S,)
    idx = starts.unsqueeze(0) + torch.arange(L).unsqueeze(1)                     # (L, S)
    win = x[idx.to(x.device)]                                                    # (L, S, N)
    w = model.weights()
    f = type(model)._f
    pinv = model.observation_pinv()
    push = _forcer(model, 1.0, pinv)
    z = model.init_state(win[0])
    for t in range(1, warmup + 1):
        z = push(f(w, z), win[t])
    for _ in range(n):
        z = f(w, z)
    err = ((model.observe(z) - win[-1]) ** 2).mean()
    v = float(err)
    return v if math.isfinite(v) else math.inf
