r"""Training of latent dynamics from image frames (issue 13): tasks, runs and analyses.

:class:`LatentTask` (name ``"latent"``) trains a
:class:`~explorer.models.latent.LatentDynamicsModel` on one image sequence (a
:class:`~explorer.core.render.FrameSet` or any object with its fields). The losses, with
:math:`w_t` the window of ``frames_in`` frames ending at frame :math:`x_t`,
:math:`z_t = E(w_t)`, and random clips of ``horizon + 1 = K + 1`` consecutive windows:

.. math::

    \mathcal L_{\rm rec} = \mathrm{BCE}\big(D(z_t), x_t\big), \qquad
    \mathcal L_{\rm dyn} = \frac1K\sum_{k=1}^{K}\Big[
        \frac{\lVert \Phi^k(z_t) - z_{t+k}\rVert^2}{L\,\sigma_z^2}
        + \mathrm{BCE}\big(D(\Phi^k(z_t)), x_{t+k}\big)\Big],

    \mathcal L = \mathcal L_{\rm rec} + \beta\,\mathcal L_{\rm dyn} + \lambda_c R(W),

with :math:`R` the CpAE filter regulariser (:func:`~explorer.models.latent.continuity_penalty`,
:math:`\lambda_c` = ``config.continuity``), :math:`\beta` = ``dyn_weight`` and
:math:`\sigma_z^2` the clip's mean latent variance (not detached: the ratio is scale-free, so
shrinking or offsetting the latent cannot lower it). The reconstruction is a binary
cross-entropy of the pixel intensities (with a sigmoid output and mean squared error the
decoder sat on the empty background for hundreds of steps); ``recon`` and ``recon_mse``
report the mean squared error.

Two regimes:

* **two-step** (the paper's: CpAE first, then a latent ODE; Zhu, Pan & Li, arXiv
  2502.00754, code ``Aiqing-Zhu/CpAE``). Steps ``[0, ae_steps)`` train the autoencoder with
  :math:`\mathcal L` where :math:`\Phi` is an *auxiliary* map, the affine least-squares map of
  the batch's latent pairs :math:`z_{t+1} \approx A z_t + c` (refit, differentiably, on every
  batch; Takeishi et al. 2017). The authors' step one likewise trains the autoencoder with an
  auxiliary latent map (a volume-preserving net, weight 1) for their pendulum data (recon
  only for their circular motion: ``dyn_weight=0`` here); it makes the velocity, invisible to
  a reconstruction of one frame, part of the latent. Then the encoder is frozen, the data's
  latent trajectory computed once, and steps ``[ae_steps, planned_steps)`` fit the model's
  dynamics alone on it (every window, a deterministic full batch),

  .. math::

      \mathcal L_{\rm fit} = \frac{1}{K'}\sum_{k=1}^{K'}
      \mathrm{mean}\Big(\frac{\Phi^k(z_t) - z_{t+k}}{s}\Big)^2 ,

  :math:`\Phi` the ODE's RK4 step or the Koopman map (started from the least-squares fit of
  the whole trajectory, DMD), :math:`s` the latent scale, :math:`K'` growing from 2 to
  ``fit_horizon`` over the first half of the phase (the authors fit one-step pairs; long
  horizons pin the frequency down). The paper has no latent-smoothness term; nor has this.
* **joint** (LRAN-style): every step trains everything with :math:`\Phi` the model's own
  dynamics (its K or its ODE), after a warm-up of plain reconstruction. A Koopman K learned
  by gradient this way needed about 1500 steps for the spring's frequency, too slow on a CPU,
  which is why ``"koopman"`` trains two-step by default.

:data:`MODEL_NAMES`: ``"cae"`` (plain CAE, ODE, two-step), ``"cpae"`` (CpAE, ODE, two-step),
``"koopman"`` (plain CAE, Koopman map, two-step) and ``"latent-ode"`` (CpAE, ODE, joint).

:func:`make_latent_run` builds a :class:`~explorer.training.loop.TrainingLoop`,
:func:`load_latent_run` rebuilds one from its checkpoint (a rendered sequence is rendered
again from its settings, an uploaded one is stored in the checkpoint),
:func:`latent_summary` reports it as plain data, :func:`generate` decodes a free run.
:func:`latent_picture` (fast: the page's live view) and :func:`latent_analysis` (fixed points
of the learned dynamics through the core, attractors of the encode–decode map) analyse a run.
Importing this module registers the model kind ``"latent-dynamics"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ParameterError, ShapeError
from ..core.geometry import vector_geometry
from ..core.render import FrameSet, plain_data
from ..models.latent import (MODEL_KIND, LatentAttractors, LatentConfig, LatentDynamicsModel,
                             continuity_penalty, encode_decode_attractors, latent_jump_ratio,
                             latent_state_correlation)
from .loop import LoopConfig, Task, TrainingLoop
from .registry import build_model_from_spec, register_model

__all__ = ["MODEL_NAMES", "TRAINING", "LatentAnalysis", "LatentPicture",
           "LatentTask", "dominant_frequency", "free_run_period", "frame_data", "generate",
           "latent_analysis", "latent_picture", "latent_summary", "latent_trajectory",
           "learned_frequency",
           "load_latent_run", "make_latent_run", "true_frequency"]

#: model name -> (autoencoder, dynamics, training regime)
MODEL_NAMES: dict[str, tuple[str, str, str]] = {
    "cae": ("cae", "ode", "two-step"),
    "cpae": ("cpae", "ode", "two-step"),
    "koopman": ("cae", "koopman", "two-step"),
    "latent-ode": ("cpae", "ode", "joint"),
}
#: training regimes
TRAINING = ("two-step", "joint")
#: the dynamics fit of a two-step run uses every latent window, or this many random ones
FIT_BATCH = 512


def _build_latent(config: Mapping[str, Any]) -> torch.nn.Module:
    return LatentDynamicsModel(LatentConfig.from_dict(config))


register_model(MODEL_KIND, _build_latent)


# ---------------------------------------------------------------------- data
def frame_data(frames) -> FrameSet:
    """The :class:`~explorer.core.render.FrameSet` a task trains on (CPU tensors), from a
    FrameSet or a (T, H, W) tensor/array.

    Raises:
        ShapeError: frames not (T, H, W) square with T >= 3.
        ParameterError: non-finite frames or a bad ``dt``.
    """
    if isinstance(frames, FrameSet) and frames.frames.device.type == "cpu" and \
            frames.frames.dtype == torch.float32:
        f = frames.frames
        if f.shape[1] != f.shape[2] or f.shape[0] < 3:
            raise ShapeError(f"frames must be (T, H, W) with H = W and T >= 3, got {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ParameterError("the frames contain NaN or infinite values")
        return frames
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        src: Any = None
        f = frames
    else:
        src = frames
        f = getattr(frames, "frames", None)
        if f is None:
            raise ShapeError("expected a FrameSet (with .frames) or a (T, H, W) tensor")
    f = torch.as_tensor(f).detach().to("cpu", torch.float32)
    if f.ndim != 3 or f.shape[1] != f.shape[2] or f.shape[0] < 3:
        raise ShapeError(f"frames must be (T, H, W) with H = W and T >= 3, got {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ParameterError("the frames contain NaN or infinite values")

    def opt(name, dtype):
        v = getattr(src, name, None) if src is not None else None
        return None if v is None else torch.as_tensor(v).detach().to("cpu", dtype)

    states = opt("states", torch.float64)
    if states is not None and (states.ndim != 2 or len(states) != len(f)):
        raise ShapeError(f"states {tuple(states.shape)} do not match {len(f)} frames")
    positions = opt("positions", torch.float64)
    dt = float(getattr(src, "dt", 1.0)) if src is not None else 1.0
    if not (dt > 0 and math.isfinite(dt)):
        raise ParameterError(f"dt must be positive, got {dt!r}")
    variables = tuple(str(v) for v in (getattr(src, "variables", ()) or ()))
    if states is not None and len(variables) != states.shape[1]:
        variables = tuple(f"x{i + 1}" for i in range(states.shape[1]))
    settings = getattr(src, "settings", None) if src is not None else None
    return FrameSet(frames=f.contiguous(), states=states, dt=dt, variables=variables,
                    scene=str(getattr(src, "scene", "upload") or "upload"),
                    settings={} if not settings else plain_data(dict(settings)),
                    positions=positions)


def _count(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _positive(name: str, v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number, got {v!r}") from None
    if not (f > 0 and math.isfinite(f)):
        raise ParameterError(f"{name} must be a positive number, got {v!r}")
    return f


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of pixel intensities in [0, 1] from logits (mean)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def _affine_fit(X: torch.Tensor, Y: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    r"""The affine least-squares map :math:`Y \approx X A + c` (ridge-regularised, relative
    to the mean diagonal), differentiable: returns ``M`` (L+1, L) with ``A = M[:-1]``,
    ``c = M[-1]``."""
    X1 = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], 1)
    G = X1.T @ X1                                                        # (L+1, L+1)
    lam = ridge * G.diagonal().mean().detach() + 1e-12
    G = G + lam * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return torch.linalg.solve(G, X1.T @ Y)


def _cosine(step: int, n: int, a: float, b: float) -> float:
    if n <= 0 or step >= n:
        return b
    return b + 0.5 * (a - b) * (1.0 + math.cos(math.pi * step / n))


# ---------------------------------------------------------------------- task
class LatentTask(Task):
    """Train a :class:`~explorer.models.latent.LatentDynamicsModel` on one image sequence
    (see the module docstring for the losses).

    Args:
        model: the model (its ``config.size`` must match the frames).
        data: a :class:`~explorer.core.render.FrameSet` (or anything :func:`frame_data` accepts).
        name: the model name of :data:`MODEL_NAMES` the run was made as (recorded only).
        training: ``"two-step"`` or ``"joint"``.
        planned_steps: steps of the whole run.
        ae_steps: two-step: steps of the autoencoder phase (default 60 % of the run).
        batch: clips of ``horizon + 1`` windows per autoencoder/joint step.
        horizon: K, frames predicted ahead by the autoencoder/joint dynamics term.
        fit_horizon: the largest K' of the dynamics fit (two-step).
        lr: learning rate of the autoencoder phase and of joint training (cosine decay to
            lr/10); lr_dyn: of the dynamics fit (cosine decay to lr_dyn/10; default 10 × lr
            for an ODE, lr/10 for a Koopman map, whose K moves 10 × faster, see
            :class:`~explorer.models.latent.KoopmanMap`).
        dyn_weight: β (0: a plain autoencoder phase).
        warmup: fraction of the autoencoder/joint phase before β reaches its value (0 for the
            first half of it, then a linear ramp); default 0 (two-step), 0.3 (joint).
        seed: seeds the batch sampler.
        eval_frames: frames predicted by the free run of :meth:`evaluate` (default up to 100).
    """

    name = "latent"

    def __init__(self, model: LatentDynamicsModel, data, *, name: str | None = None,
                 training: str = "two-step", planned_steps: int = 1000,
                 ae_steps: int | None = None, batch: int = 8, horizon: int = 4,
                 lr: float = 2e-3, lr_dyn: float | None = None, dyn_weight: float = 1.0,
                 seed: int = 0, eval_frames: int | None = None, warmup: float | None = None,
                 fit_horizon: int = 12):
        if not isinstance(model, LatentDynamicsModel):
            raise ParameterError("a latent task needs a LatentDynamicsModel")
        self.model = model
        self.data = frame_data(data)
        cfg = model.config
        if self.data.size[1] != cfg.size:
            raise ShapeError(f"the frames are {self.data.size[1]} pixels wide, the model expects "
                             f"{cfg.size}")
        if training not in TRAINING:
            raise ParameterError(f"unknown training {training!r}; choose one of {', '.join(TRAINING)}")
        self.model_name = name
        self.training = training
        self.planned_steps = _count("planned_steps", planned_steps)
        if training == "two-step":
            a = int(round(0.6 * self.planned_steps)) if ae_steps is None else ae_steps
            self.ae_steps = _count("ae_steps", a, 0)
            if self.ae_steps >= self.planned_steps:
                raise ParameterError(f"ae_steps ({self.ae_steps}) must be below the planned "
                                     f"steps ({self.planned_steps}) to leave steps for the ODE")
        else:
            self.ae_steps = 0
        self.batch = _count("batch", batch)
        self.horizon = _count("horizon", horizon)
        self.fit_horizon = _count("fit_horizon", fit_horizon)
        self.lr = _positive("lr", lr)
        default_dyn = 10.0 * self.lr if cfg.dynamics == "ode" else self.lr / 10.0
        self.lr_dyn = default_dyn if lr_dyn is None else _positive("lr_dyn", lr_dyn)
        self.dyn_weight = float(dyn_weight)
        if not (self.dyn_weight >= 0 and math.isfinite(self.dyn_weight)):
            raise ParameterError(f"dyn_weight must be >= 0, got {dyn_weight!r}")
        self.seed = int(seed)
        self.warmup = (0.0 if training == "two-step" else 0.3) if warmup is None else float(warmup)
        if not 0 <= self.warmup <= 1:
            raise ParameterError(f"warmup must be a fraction in [0, 1], got {warmup!r}")
        self.n_windows = self.data.length - cfg.frames_in + 1
        if self.n_windows < self.horizon + 2:
            raise ParameterError(f"{self.data.length} frames are too few for frames_in = "
                                 f"{cfg.frames_in} and horizon = {self.horizon}")
        self.eval_frames = min(self.n_windows, 100) if eval_frames is None else \
            min(self.n_windows, _count("eval_frames", eval_frames, 2))
        self.sampler = torch.Generator().manual_seed(self.seed + 7919)
        self._latents: torch.Tensor | None = None                       # frozen (N, L), two-step
        self._scale = 1.0

    # ---------------------------------------------------------------- plumbing
    def _p(self) -> torch.Tensor:
        return next(self.model.parameters())

    def _windows(self, idx: torch.Tensor) -> torch.Tensor:
        """Windows (len(idx), F, H, W) starting at frames ``idx`` (on the model's device)."""
        F = self.model.config.frames_in
        ar = idx[:, None] + torch.arange(F)                              # (B, F)
        p = self._p()
        return self.data.frames[ar].to(device=p.device, dtype=p.dtype)

    def _targets(self, idx: torch.Tensor) -> torch.Tensor:
        """The last frame of each window (len(idx), H, W)."""
        p = self._p()
        return self.data.frames[idx + self.model.config.frames_in - 1].to(p.device, p.dtype)

    def dyn_weight_at(self, step: int) -> float:
        """β of step ``step``: 0 for the first ``warmup / 2`` of the autoencoder (or joint)
        phase, then a linear ramp to ``dyn_weight`` over the next ``warmup / 2`` (a plain
        autoencoder first: with K near the identity the dynamics terms alone are smallest
        for a collapsed latent)."""
        n = self.ae_steps if self.training == "two-step" else self.planned_steps
        w = self.warmup * n
        if w <= 0:
            return self.dyn_weight
        return self.dyn_weight * min(1.0, max(0.0, (step - w / 2) / (w / 2)))

    def fit_horizon_at(self, step: int) -> int:
        """Frames predicted ahead in the ODE/Koopman fit of step ``step`` (two-step): a
        curriculum from 2 to ``fit_horizon`` over the first half of that phase (long
        rollouts of a barely trained field are hard to fit; long ones pin the frequency)."""
        n = max(1, self.planned_steps - self.ae_steps)
        frac = min(1.0, max(0.0, (step - self.ae_steps) / (0.5 * n)))
        return int(round(2 + (max(2, self.fit_horizon) - 2) * frac))

    def phase(self, step: int) -> str:
        """``"autoencoder"`` or ``"dynamics"`` (two-step), ``"joint"``."""
        if self.training == "joint":
            return "joint"
        return "autoencoder" if step < self.ae_steps else "dynamics"

    def lr_at(self, step: int) -> float:
        if self.training == "joint":
            return _cosine(step, self.planned_steps, self.lr, self.lr / 10)
        if step < self.ae_steps:
            return _cosine(step, self.ae_steps, self.lr, self.lr / 10)
        return _cosine(step - self.ae_steps, self.planned_steps - self.ae_steps,
                       self.lr_dyn, self.lr_dyn / 10)

    @torch.no_grad()
    def latents(self, model: LatentDynamicsModel | None = None) -> torch.Tensor:
        """The data's latent trajectory (N, L) = E(all windows), on the model's device."""
        return latent_trajectory(model or self.model, self.data.frames)

    def frozen_latents(self, start: bool = False) -> torch.Tensor:
        """The latent trajectory the dynamics fit uses (computed once when that phase starts,
        or after a restore), with the ODE field's latent scale set from it; ``start`` (the
        phase's first step) also starts a Koopman map from the least-squares fit."""
        if self._latents is None:
            z = self.latents()
            self.model.set_latent_scale(z)
            self._scale = float(z.std(0).pow(2).mean().sqrt().clamp_min(1e-8))
            self._latents = z
            if self.model.config.dynamics == "koopman" and start:
                # DMD start: K and c from the affine least-squares fit of z_{t+1} on z_t
                with torch.no_grad():
                    M = _affine_fit(z[:-1].double(), z[1:].double())
                    self.model.koopman.set_map(M[:-1].T, M[-1])
        return self._latents

    # ---------------------------------------------------------------- losses
    def _clip_loss(self, model: LatentDynamicsModel, aux: str):
        """Reconstruction and dynamics terms on ``batch`` random clips of ``horizon + 1``
        consecutive windows: (bce, mse, dyn), dyn = linearity + decoded prediction through
        the model's own dynamics (``aux="model"``) or through the affine least-squares map
        of the batch's latent pairs (``aux="least-squares"``)."""
        K = self.horizon
        B = self.batch
        idx = torch.randint(0, self.n_windows - K, (B,), generator=self.sampler)
        ar = (idx[:, None] + torch.arange(K + 1)).reshape(-1)            # (B (K+1),)
        win = self._windows(ar)                                          # (B(K+1), F, H, W)
        tgt = self._targets(ar).reshape(B, K + 1, *win.shape[-2:])       # (B, K+1, H, W)
        z = model.encode(win).reshape(B, K + 1, -1)                      # (B, K+1, L)
        if self.dyn_weight == 0:
            logits = model.decode_logits(z)                              # (B, K+1, H, W)
            mse = torch.mean((torch.sigmoid(logits.detach()) - tgt) ** 2)
            return _bce(logits, tgt), mse, None
        var = z.reshape(-1, z.shape[-1]).var(0).mean().clamp_min(1e-12)
        if aux == "model":
            step = model.step
        else:
            M = _affine_fit(z[:, :-1].reshape(-1, z.shape[-1]), z[:, 1:].reshape(-1, z.shape[-1]))

            def step(x, M=M):
                return x @ M[:-1] + M[-1]
        zk = [z[:, 0]]
        for _ in range(K):
            zk.append(step(zk[-1]))                                      # (B, L)
        run = torch.stack(zk[1:], 1)                                     # (B, K, L)
        logits = model.decode_logits(torch.cat([z, run], 1))            # (B, 2K+1, H, W), one call
        rec_logits, pred_logits = logits[:, :K + 1], logits[:, K + 1:]
        bce = _bce(rec_logits, tgt)
        mse = torch.mean((torch.sigmoid(rec_logits.detach()) - tgt) ** 2)
        lin = torch.mean((run - z[:, 1:]) ** 2) / var
        pred = _bce(pred_logits, tgt[:, 1:])
        return bce, mse, lin + pred

    def loss(self, model, step):
        ph = self.phase(step)
        c = model.config.continuity
        if ph == "dynamics":
            z = self.frozen_latents(start=step == self.ae_steps)         # (N, L)
            K = min(self.fit_horizon_at(step), self.n_windows - 2)
            n = self.n_windows - K
            idx = torch.arange(n) if n <= FIT_BATCH else \
                torch.randint(0, n, (FIT_BATCH,), generator=self.sampler)
            ar = idx[:, None] + torch.arange(K + 1)                      # (B, K+1)
            target = z[ar.to(z.device)]                                  # (B, K+1, L)
            s = self._scale
            zk = target[:, 0]
            err = 0.0
            for k in range(1, K + 1):
                zk = model.step(zk)
                err = err + torch.mean(((zk - target[:, k]) / s) ** 2)
            dyn = err / K
            return dyn, {"recon": math.nan, "dyn": float(dyn.detach()), "continuity": math.nan}
        self._latents = None
        bce, mse, dyn = self._clip_loss(model, "model" if ph == "joint" else "least-squares")
        cont = continuity_penalty(model)
        loss = bce
        if dyn is not None:
            loss = loss + self.dyn_weight_at(step) * dyn
        if c > 0:
            loss = loss + c * cont
        return loss, {"recon": float(mse), "dyn": math.nan if dyn is None else float(dyn.detach()),
                      "continuity": float(cont.detach())}

    def after_step(self, model, step, applied):
        if self.training == "two-step" and step + 1 == self.ae_steps:
            self._latents = None                    # the ODE phase encodes the final encoder

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """``recon_mse`` (all windows), ``jump`` = ``max_jump`` (:func:`latent_jump_ratio` of
        the data's latent trajectory), ``state_r`` = ``correlation`` (the smallest, over the
        true variables that vary, multiple correlation of a linear fit from the latents; with
        states)
        and ``state_r_<name>`` per variable, ``pred_mse`` (decoded free run of
        ``eval_frames`` frames from the first window vs the frames), ``frequency`` (learned
        angular frequency: the Koopman eigenvalue angle / dt, or 2π / the free-run period of
        the ODE) and ``period`` (2π / frequency), ``true_frequency`` (from the states by FFT,
        with states)."""
        F = model.config.frames_in
        z = latent_trajectory(model, self.data.frames)                   # (N, L)
        p = self._p()
        frames = self.data.frames.to(p.device, p.dtype)
        rec = torch.mean((model.decode(z) - frames[F - 1:]) ** 2)
        jump = latent_jump_ratio(z.cpu())
        out = {"recon_mse": float(rec), "jump": jump, "max_jump": jump}
        if self.data.states is not None:
            corr = latent_state_correlation(z.cpu(), self.data.states[F - 1:],
                                            variables=self.data.variables)
            varying = [r for r in corr.linear if math.isfinite(r)]       # constant ones: NaN
            out["state_r"] = out["correlation"] = min(varying) if varying else math.nan
            for name, r in zip(corr.variables, corr.linear):
                out[f"state_r_{name}"] = r
        n = self.eval_frames
        run = model.free_run(z[0], len(z) - 1)                           # (N, L) float64 CPU
        pred = model.decode(run[:n].to(p))
        out["pred_mse"] = float(torch.mean((pred - frames[F - 1:F - 1 + n]) ** 2))
        f = learned_frequency(model, run=run)
        out["frequency"] = f
        out["period"] = 2 * math.pi / f if f > 0 and math.isfinite(f) else math.nan
        if self.data.states is not None:
            out["true_frequency"] = true_frequency(self.data)
        return out

    # ---------------------------------------------------------------- state
    def config(self) -> dict[str, Any]:
        d = self.data
        return {"model_name": self.model_name, "training": self.training,
                "planned_steps": self.planned_steps, "ae_steps": self.ae_steps,
                "batch": self.batch, "horizon": self.horizon, "fit_horizon": self.fit_horizon,
                "lr": self.lr,
                "lr_dyn": self.lr_dyn, "dyn_weight": self.dyn_weight, "seed": self.seed,
                "warmup": self.warmup,
                "eval_frames": self.eval_frames,
                "data": {"scene": d.scene, "dt": d.dt, "variables": list(d.variables),
                         "frames": d.length, "size": d.size[1],
                         "settings": d.settings if d.rendered else None}}

    def state_dict(self) -> dict[str, Any]:
        st: dict[str, Any] = {"sampler": self.sampler.get_state()}
        if not self.data.rendered:                  # uploaded frames travel with the checkpoint
            st["frames"] = self.data.frames
            st["states"] = self.data.states
            st["positions"] = self.data.positions
        return st

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.set_state(state["sampler"])
        self._latents = None


# ---------------------------------------------------------------------- analysis helpers
@torch.no_grad()
def latent_trajectory(model: LatentDynamicsModel, frames: torch.Tensor, *,
                      chunk: int = 512) -> torch.Tensor:
    """E of every window of ``frames`` (T, H, W): (T - frames_in + 1, L) on the model's
    device (chunked)."""
    p = next(model.parameters())
    f = torch.as_tensor(frames).to(p.device, p.dtype)
    w = model.windows(f)
    return torch.cat([model.encode(w[i:i + chunk]) for i in range(0, len(w), chunk)])


def dominant_frequency(x, dt: float) -> float:
    r"""The dominant angular frequency (rad per time unit) of a series ``x`` (T,) or (T, D)
    sampled every ``dt``: the peak of the summed power spectra of the mean-free columns
    (Hann window, zero-padded ×8), refined by a parabola through the log power at the peak.
    NaN for a constant or too-short series."""
    a = torch.as_tensor(x, dtype=torch.float64).detach().cpu()
    if a.ndim == 1:
        a = a[:, None]
    T = a.shape[0]
    if T < 8:
        return math.nan
    a = a - a.mean(0)
    if not float(a.abs().max()) > 0:
        return math.nan
    win = torch.hann_window(T, periodic=False, dtype=torch.float64)[:, None]
    n = 8 * T
    P = torch.fft.rfft(a * win, n=n, dim=0).abs().pow(2).sum(1)          # (n/2+1,)
    P[0] = 0.0
    k = int(torch.argmax(P))
    shift = 0.0
    if 0 < k < len(P) - 1:
        la, lb, lc = (float(torch.log(P[i].clamp_min(1e-300))) for i in (k - 1, k, k + 1))
        den = la - 2 * lb + lc
        shift = 0.5 * (la - lc) / den if den != 0 else 0.0
    return 2 * math.pi * (k + shift) / (n * dt)


def true_frequency(data) -> float:
    """The dominant angular frequency of the true states (:func:`dominant_frequency`) of a
    FrameSet; NaN without states."""
    d = frame_data(data)
    if d.states is None:
        return math.nan
    s = d.states
    s = s / s.std(0).clamp_min(1e-12)
    return dominant_frequency(s, d.dt)


@torch.no_grad()
def free_run_period(model: LatentDynamicsModel, z0: torch.Tensor, *, steps: int = 400) -> float:
    r"""The period (time units) of a free run of the latent dynamics from ``z0`` (L,):
    the run is projected on its first principal component and the mean spacing of its
    upward zero crossings (linearly interpolated) is the period. NaN with fewer than two
    crossings (no oscillation in the run)."""
    return _run_period(model.free_run(z0, int(steps)), model.config.dt)


def _run_period(run: torch.Tensor, dt: float) -> float:
    """The zero-crossing period of a run (n, L) (see :func:`free_run_period`)."""
    run = run.double().cpu()
    if len(run) < 3 or not torch.isfinite(run).all():
        return math.nan
    c = run - run.mean(0)
    _, _, V = torch.linalg.svd(c, full_matrices=False)
    y = (c @ V[0]).numpy()
    up = np.nonzero((y[:-1] < 0) & (y[1:] >= 0))[0]
    if len(up) < 2:
        return math.nan
    t = up + (-y[up]) / (y[up + 1] - y[up])                              # fractional index
    return float(np.mean(np.diff(t))) * dt


def learned_frequency(model: LatentDynamicsModel, z: torch.Tensor | None = None, *,
                      steps: int = 400, run: torch.Tensor | None = None) -> float:
    r"""The learned angular frequency: Koopman, the largest |angle| of K's eigenvalues over
    Δt; ODE, 2π / :func:`free_run_period` of ``steps`` frames from the first latent state of
    ``z``, or of the given free ``run`` (n, L) (NaN without either)."""
    ev = model.koopman_eigenvalues()
    if ev is not None:
        return float(ev.angle().abs().max()) / model.config.dt
    if run is not None:
        T = _run_period(run, model.config.dt)
    elif z is None or len(z) == 0:
        return math.nan
    else:
        T = free_run_period(model, z[0], steps=steps)
    return 2 * math.pi / T if T > 0 and math.isfinite(T) else math.nan


# ---------------------------------------------------------------------- runs
_TASK_KEYS = ("ae_steps", "horizon", "fit_horizon", "lr_dyn", "dyn_weight", "training",
              "eval_frames", "warmup")


def make_latent_run(frames, *, model: str = "cpae", latent: int = 2,
                    continuity: float | None = None, steps: int = 1000, batch: int = 8,
                    lr: float = 2e-3, seed: int = 0, device: str | torch.device | None = None,
                    eval_every: int | None = None, **config) -> TrainingLoop:
    """A :class:`~explorer.training.loop.TrainingLoop` that learns latent dynamics from frames.

    Args:
        frames: a :class:`~explorer.core.render.FrameSet` (or a (T, H, W) tensor).
        model: a name of :data:`MODEL_NAMES` (``"cae"``, ``"cpae"``, ``"koopman"``,
            ``"latent-ode"``).
        latent: latent dimension.
        continuity: weight of the CpAE regulariser (default: 1 for a CpAE, 0 for a CAE).
        steps: planned optimisation steps (two-step: 70 % autoencoder, then the ODE).
        batch, lr, seed: see :class:`LatentTask`; ``seed`` seeds the weights and the sampler.
        device: where the model trains (default the CPU).
        eval_every: evaluation period (default ``steps // 10``).
        **config: :class:`~explorer.models.latent.LatentConfig` fields (``frames_in``,
            ``channels``, ``hidden``, ``substeps``, ``kernel``, and ``autoencoder`` /
            ``dynamics`` to override the name's), and task options ``ae_steps``,
            ``horizon``, ``lr_dyn``, ``dyn_weight``, ``training``, ``eval_frames``.

    Raises:
        ParameterError: unknown model name or option, bad values.
    """
    if model not in MODEL_NAMES:
        raise ParameterError(f"unknown latent model {model!r}; choose one of "
                             f"{', '.join(MODEL_NAMES)}")
    data = frame_data(frames)
    ae, dyn, regime = MODEL_NAMES[model]
    task_kw = {k: config.pop(k) for k in _TASK_KEYS if k in config}
    regime = task_kw.pop("training", regime)
    cfg_fields = {"autoencoder": ae, "dynamics": dyn, **config}
    try:
        cfg = LatentConfig(size=data.size[1], latent=latent, dt=data.dt, continuity=continuity,
                           seed=int(seed), **cfg_fields)
    except TypeError as e:
        raise ParameterError(f"unknown option for a latent run: {e}") from None
    net = LatentDynamicsModel(cfg)
    if device is not None:
        net = net.to(device)
    steps = _count("steps", steps)
    task = LatentTask(net, data, name=model, training=regime, planned_steps=steps,
                      batch=batch, lr=lr, seed=seed, **task_kw)
    every = max(1, steps // 10) if eval_every is None else _count("eval_every", eval_every, 0)
    return TrainingLoop(task, LoopConfig(lr=float(lr), planned_steps=steps, eval_every=every,
                                         grad_clip=10.0, explode_norm=1e12))


def load_latent_run(path, *, device: str | torch.device | None = None) -> TrainingLoop:
    """Rebuild the latent run saved at ``path``: the frames (rendered again from their
    settings, or read from the checkpoint for uploads), the model (from its kind and config)
    and the task; then restore weights, optimiser, counters and sampler.

    Raises:
        CheckpointError, CheckpointMismatchError: unreadable file, another task or model.
    """
    from .checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint

    ck = load_checkpoint(path)
    if ck.task_name != LatentTask.name:
        raise CheckpointMismatchError(f"{Path(path).name} holds a "
                                      f"{ck.task_name or 'bare model'!r} checkpoint, not a "
                                      f"{LatentTask.name!r} run")
    cfg = dict(ck.task_config or {})
    info = dict(cfg.pop("data", {}) or {})
    st = ck.task_state or {}
    if info.get("settings"):
        from ..core.render import render_scene

        fs = render_scene(**{**info["settings"], "device": "cpu"})
        data = frame_data(fs)
    elif st.get("frames") is not None:
        data = FrameSet(frames=st["frames"].float(), states=st.get("states"),
                         dt=float(info.get("dt", 1.0)),
                         variables=tuple(info.get("variables") or ()),
                         scene=str(info.get("scene") or "upload"), settings={},
                         positions=st.get("positions"))
    else:
        raise CheckpointError(f"{Path(path).name} holds neither the frames nor their settings")
    try:
        model = build_model_from_spec(ck.model_spec)
    except (LookupError, TypeError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot rebuild the checkpoint's model: {msg}") from e
    if device is not None:
        model = model.to(device)
    name = cfg.pop("model_name", None)
    task = LatentTask(model, data, name=name, **cfg)
    loop_cfg = LoopConfig.from_dict(ck.loop_config) if ck.loop_config else \
        LoopConfig(lr=task.lr, planned_steps=task.planned_steps)
    return TrainingLoop(task, loop_cfg).restore(path)


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def latent_summary(loop: TrainingLoop) -> dict[str, Any]:
    """Plain-data summary of a latent run (the CLI's ``--json``): model name, autoencoder,
    dynamics, training, latent size, steps, seconds, the last losses, the evaluation
    (:meth:`LatentTask.evaluate`), the Koopman eigenvalues ([re, im] pairs) and the scene."""
    task: LatentTask = loop.task
    m: LatentDynamicsModel = loop.model
    metrics = loop.evaluate()
    last = {k: (loop.history.get(k) or [None])[-1] for k in ("loss", "recon", "dyn", "continuity")}
    ev = m.koopman_eigenvalues()
    out: dict[str, Any] = {
        "task": loop.task_name, "model": task.model_name, "autoencoder": m.config.autoencoder,
        "dynamics": m.config.dynamics, "training": task.training, "latent": m.config.latent,
        "frames_in": m.config.frames_in, "size": m.config.size, "continuity": m.config.continuity,
        "params": int(sum(p.numel() for p in m.parameters() if p.requires_grad)),
        "steps": loop.step_count, "planned_steps": task.planned_steps, "ae_steps": task.ae_steps,
        "phase": task.phase(loop.step_count), "seconds": round(loop.seconds, 3),
        "scene": task.data.scene, "frames": task.data.length, "dt": task.data.dt,
        "skipped": loop.skipped, "rollbacks": loop.rollbacks,
        **{f"final_{k}": _finite(v) for k, v in last.items()},
        **{k: _finite(v) for k, v in metrics.items()},
        "koopman_eigenvalues": None if ev is None else
        [[float(e.real), float(e.imag)] for e in ev]}
    return {k: _finite(v) for k, v in out.items()}


@torch.no_grad()
def generate(loop: TrainingLoop, steps: int, *, start: int = 0) -> dict[str, Any]:
    """A decoded free run of the learned dynamics from the window at frame ``start``.

    Returns a dict of numpy arrays: ``"frames"`` (steps+1, H, W) float32, the decoded run
    (the first is the reconstruction of frame ``start + frames_in - 1``); ``"latents"``
    (steps+1, L); ``"t"`` (steps+1,) times of those frames; ``"true_frames"`` (n, H, W) the
    data's frames at those times where they exist (n <= steps+1) and ``"true_states"``
    (n, D) or ``None``.
    """
    task: LatentTask = loop.task
    m: LatentDynamicsModel = loop.model
    steps = _count("steps", steps, 0)
    start = _count("start", start, 0)
    if start >= task.n_windows:
        raise ParameterError(f"start must be below {task.n_windows} (windows in the data)")
    F = m.config.frames_in
    p = next(m.parameters())
    was = m.training
    m.eval()
    try:
        w = m.windows(task.data.frames[start:start + F].to(p.device, p.dtype))
        run = m.free_run(m.encode(w)[0], steps)                           # (steps+1, L)
        imgs = m.decode(run.to(p))
    finally:
        m.train(was)
    first = start + F - 1
    true = task.data.frames[first:first + steps + 1]
    states = None if task.data.states is None else task.data.states[first:first + steps + 1]
    return {"frames": imgs.float().cpu().numpy(), "latents": run.double().cpu().numpy(),
            "t": (first + np.arange(steps + 1)) * task.data.dt,
            "true_frames": true.numpy(), "true_states": None if states is None else states.numpy()}


@dataclass(frozen=True)
class LatentPicture:
    """What the latent-dynamics page draws while a model trains (numpy, float64 unless said).

    Attributes:
        step: optimisation steps so far; phase: ``"autoencoder"``, ``"dynamics"``, ``"joint"``.
        strip_index: (k,) frame indices of the strip; strip_true, strip_recon: (k, H, W)
            float32 true and reconstructed frames.
        t: (N,) times of the latent states; latents: (N, L) the data's latent trajectory.
        states: (N, D) the true states at those times, or ``None``; variables: their names.
        grid_x, grid_y: (G,) grid over the visited region of the first two latents (others
            at their mean); field: (G, G, 2) the learned field there (ODE f(z); Koopman
            (K - I) z / dt), indexed [iy, ix]; encode_decode: (G, G, 2) the field
            E(D(z)) - z (NaN when not computed).
        eigenvalues: (L,) complex Koopman eigenvalues or ``None``; frequency: the learned
            angular frequency (Koopman angle / dt; ODE 2π / free-run period), true_frequency
            (from the states, NaN without).
        pred_t: (n,) times; prediction: (n, H, W) float32 decoded free run from the first
            window; reconstruction: (n, H, W) float32 D(E(window)) of those frames; truth:
            (n, H, W) float32 frames; pred_error: (n,) MSE per frame of the prediction;
            pred_latents: (n, L) the free run's latents.
        jump: :func:`~explorer.models.latent.latent_jump_ratio` of ``latents``.
        details: False for a quick live picture (``latent_picture(..., details=False)``):
            the strip, the free run and its decoded frames (``strip_*``, ``pred_*``,
            ``prediction``, ``reconstruction``, ``truth``) are ``None`` and ``frequency`` of a
            latent ODE is NaN; the latents, the learned field and the eigenvalues are there.
    """

    step: int
    phase: str
    strip_index: np.ndarray | None
    strip_true: np.ndarray | None
    strip_recon: np.ndarray | None
    t: np.ndarray
    latents: np.ndarray
    states: np.ndarray | None
    variables: tuple[str, ...]
    grid_x: np.ndarray
    grid_y: np.ndarray
    field: np.ndarray
    encode_decode: np.ndarray
    eigenvalues: np.ndarray | None
    frequency: float
    true_frequency: float
    pred_t: np.ndarray | None
    prediction: np.ndarray | None
    reconstruction: np.ndarray | None
    truth: np.ndarray | None
    pred_error: np.ndarray | None
    pred_latents: np.ndarray | None
    jump: float
    details: bool = True
    #: arrows and streamlines of ``field`` and ``encode_decode`` (None when that is NaN)
    #: (:func:`explorer.core.geometry.vector_geometry`), computed with the picture
    field_geometry: dict | None = None
    ed_geometry: dict | None = None


def _grid_box(z: torch.Tensor, margin: float = 0.25):
    lo, hi = z.min(0).values, z.max(0).values
    w = (hi - lo).clamp_min(1e-6)
    return lo - margin * w, hi + margin * w


@torch.no_grad()
def latent_picture(loop: TrainingLoop, *, grid: int = 20, strip: int = 6,
                   horizon: int | None = None, encode_decode: bool = True, details: bool = True,
                   max_frames: int | None = 300) -> LatentPicture:
    """The live picture of a latent run (see :class:`LatentPicture`).

    Measured with two CPU threads, 300 windows of 32 px, a CpAE (16 channels), grid 20, a
    100-frame free run: 73 ms in all, of which the encode-decode field (20² decodes and
    encodes through the CpAE's large filters) is 40 ms, the details (the free run, 200 decoded
    frames, the strip) 18 ms and encoding the data 12 ms. ``encode_decode=False`` skips that
    field (NaN) and ``details=False`` the details (None), for frequent updates (about 15 ms).
    ``max_frames``: the latent trajectory, strip and states cover the first ``max_frames``
    windows of the data (None: all of them; encoding them is the other large cost)."""
    task: LatentTask = loop.task
    m: LatentDynamicsModel = loop.model
    grid = _count("grid", grid, 2)
    was = m.training
    m.eval()
    try:
        d = task.data
        F = m.config.frames_in
        p = next(m.parameters())
        frames = d.frames.to(p.device, p.dtype)
        if max_frames is not None:
            frames = frames[:_count("max_frames", max_frames, 3) + F - 1]
        z = latent_trajectory(m, frames)                                  # (N, L)
        N = len(z)
        lo, hi = _grid_box(z)
        gx = torch.linspace(float(lo[0]), float(hi[0]), grid, dtype=z.dtype, device=z.device)
        gy = torch.linspace(float(lo[1]), float(hi[1]), grid, dtype=z.dtype, device=z.device)
        Y, X = torch.meshgrid(gy, gx, indexing="ij")                      # (G, G)
        pts = z.mean(0).repeat(grid * grid, 1)
        pts[:, 0], pts[:, 1] = X.reshape(-1), Y.reshape(-1)
        fld = m.field(pts)[:, :2].reshape(grid, grid, 2)
        ed = m.encode_decode_field(pts)[:, :2].reshape(grid, grid, 2) if encode_decode else \
            torch.full((grid, grid, 2), math.nan)
        ev = m.koopman_eigenvalues()
        states = None if d.states is None else d.states[F - 1:F - 1 + N].numpy()
        gxs, gys = gx.double().cpu().numpy(), gy.double().cpu().numpy()
        fld, ed = fld.double().cpu().numpy(), ed.double().cpu().numpy()
        out = dict(step=loop.step_count, phase=task.phase(loop.step_count),
                   t=(F - 1 + np.arange(N)) * d.dt, latents=z.double().cpu().numpy(),
                   states=states, variables=d.variables,
                   grid_x=gxs, grid_y=gys, field=fld, encode_decode=ed,
                   field_geometry=vector_geometry(gxs, gys, fld[..., 0], fld[..., 1]),
                   ed_geometry=(vector_geometry(gxs, gys, ed[..., 0], ed[..., 1])
                                if encode_decode else None),
                   eigenvalues=None if ev is None else ev.numpy(),
                   true_frequency=true_frequency(d), jump=latent_jump_ratio(z.cpu()),
                   details=bool(details))
        if not details:
            return LatentPicture(**out, **dict.fromkeys(_DETAILS), frequency=(
                learned_frequency(m) if ev is not None else math.nan))
        k = min(int(strip), N)
        sidx = torch.linspace(0, N - 1, k).round().long()
        n = min(N, task.eval_frames if horizon is None else max(2, int(horizon)))
        run = m.free_run(z[0], n - 1)                                     # (n, L) float64
        imgs = m.decode(torch.cat([run.to(p), z[:n], z[sidx]]))           # one decoder call
        pred, rec, recon = imgs[:n], imgs[n:2 * n], imgs[2 * n:]
        truth = frames[F - 1:F - 1 + n]
        err = ((pred - truth) ** 2).mean((-2, -1))
        return LatentPicture(
            **out, frequency=learned_frequency(m, run=run),
            strip_index=(sidx + F - 1).numpy(), strip_true=frames[sidx + F - 1].float().cpu().numpy(),
            strip_recon=recon.float().cpu().numpy(),
            pred_t=(F - 1 + np.arange(n)) * d.dt, prediction=pred.float().cpu().numpy(),
            reconstruction=rec.float().cpu().numpy(),
            truth=truth.float().cpu().numpy(), pred_error=err.double().cpu().numpy(),
            pred_latents=run.double().cpu().numpy())
    finally:
        m.train(was)


#: the :class:`LatentPicture` fields a quick picture leaves out (``details=False``)
_DETAILS = ("strip_index", "strip_true", "strip_recon", "pred_t", "prediction", "reconstruction",
            "truth", "pred_error", "pred_latents")


@dataclass(frozen=True)
class LatentAnalysis:
    """The slower analyses of a latent run: about 0.6 s (Koopman) to 1.7 s (CpAE, 28 px, 8
    channels) on one CPU thread, mostly the 8 x 8 x 40 encode-decode iterations.

    Attributes:
        step: optimisation steps so far.
        fixed: fixed points of the learned dynamics (core
            :func:`~explorer.core.analysis.fixed_points.fixed_points` on
            ``model.as_system()``, searched in the visited latent box enlarged by half),
            with eigenvalues (flow: of the Jacobian of f; Koopman map: of K), type and
            stability.
        periods: for each fixed point, 2π/|Im λ| of its most oscillatory eigenvalue pair
            (flow: λ of the Jacobian; map: log λ / dt), NaN when all eigenvalues are real.
        free_run_period: the period of a free run from the first latent state (time units).
        attractors: attractors of z -> E(D(z)) from a grid over the visited box.
        true_period: 2π / the dominant frequency of the true states (NaN without states).
    """

    step: int
    fixed: list
    periods: tuple[float, ...]
    free_run_period: float
    attractors: LatentAttractors
    true_period: float


def _fixed_point_period(fp, dt: float, is_map: bool) -> float:
    ev = fp.eigenvalues.to(torch.complex128)
    if is_map:
        ev = torch.log(ev) / dt
    im = float(ev.imag.abs().max()) if len(ev) else 0.0
    return 2 * math.pi / im if im > 1e-9 else math.nan


@torch.no_grad()
def latent_analysis(loop: TrainingLoop, *, n_starts: int = 128, attractor_grid: int = 8,
                    iters: int = 40, seed: int = 0) -> LatentAnalysis:
    """Fixed points of the learned latent dynamics, their periods, the free-run period and
    the encode–decode attractors of a latent run (see :class:`LatentAnalysis`)."""
    from ..core.analysis.fixed_points import fixed_points

    task: LatentTask = loop.task
    m: LatentDynamicsModel = loop.model
    was = m.training
    m.eval()
    try:
        z = latent_trajectory(m, task.data.frames)
        zc = z.double().cpu()
        lo, hi = _grid_box(zc, 0.5)
        system = m.as_system(data=zc)
        gen = torch.Generator().manual_seed(int(seed))
        try:
            fixed = fixed_points(system, n_starts=n_starts, box=(lo, hi), generator=gen)
        except (ParameterError, RuntimeError):
            fixed = []
        periods = tuple(_fixed_point_period(fp, m.config.dt, system.is_map) for fp in fixed)
        T = free_run_period(m, z[0], steps=len(z))
        att = encode_decode_attractors(m, (lo, hi), n=attractor_grid, iters=iters)
        f_true = true_frequency(task.data)
        return LatentAnalysis(step=loop.step_count, fixed=fixed, periods=periods,
                              free_run_period=T, attractors=att,
                              true_period=2 * math.pi / f_true if f_true and
                              math.isfinite(f_true) else math.nan)
    finally:
        m.train(was)
