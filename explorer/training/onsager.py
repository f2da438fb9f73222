r"""Training an :class:`~explorer.models.onsager.IOnsagerNet` on SDE trajectories.

:class:`OnsagerTask` is a :class:`~explorer.training.loop.Task` (name ``"onsager"``): its data
are trajectories ``x`` (T, B, d) sampled every ``dt``; its loss is the Euler–Maruyama
one-step Gaussian negative log-likelihood of the pairs :math:`(x_n, x_{n+1})`,

.. math::

    \mathcal L = \frac1N\sum_n \Big[\tfrac12 r_n^\top\Sigma_n^{-1} r_n
    + \tfrac12\log\det(2\pi\Sigma_n)\Big],\qquad
    r_n = x_{n+1} - x_n - b(x_n)\,\Delta t,\quad \Sigma_n = 2\varepsilon M(x_n)\,\Delta t

(Cholesky solves; the ``MLELoss`` of onsagernet-jax, see ``docs/notes/ionsagernet.md`` §4).
For data simulated by Euler–Maruyama with the same ``dt`` this is the exact likelihood.
Minibatches come from a seeded ``torch.Generator`` kept in :meth:`OnsagerTask.state_dict`
(exact resume). The model works in physical units; the data only set its conditioning
buffers (:meth:`IOnsagerNet.set_data_scales`: mean, standard deviation and the
quadratic-variation estimate :math:`\widehat D = \overline{\Delta x\,\Delta x^\top}/(2\Delta t)`)
and its starting point (:func:`linear_initialisation`: the best-fitting OU process). The
minibatch gradients are dominated by the Brownian increments, so the task keeps an
exponential moving average of the weights (:meth:`OnsagerTask.trained_model`), which is what
:meth:`OnsagerTask.evaluate` and the results use.

:meth:`OnsagerTask.evaluate` reports the validation NLL on held-out trajectories, the
entropy production rate (the mean of :math:`b_{\rm irr}^\top D^{-1} b_{\rm irr}` over the last
part of the trajectories, taken as stationary) and, with a ``reference`` (known potential
``U``, temperature ``T`` and/or exact :math:`e_p`; :func:`known_reference` has them for the
built-in linear and double-well SDEs), the relative L2 error of the learned :math:`V/\varepsilon`
against :math:`U/T` (both centred over the visited samples) and the :math:`e_p` relative error.

:func:`make_onsager_run` simulates a system and returns a :class:`TrainingLoop`; the CLI
(``dynamics-explorer train onsager``), notebooks and the page share it.
:func:`load_onsager_run` rebuilds a run from its checkpoint (re-simulating the data).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ParameterError, ShapeError
from ..models.onsager import IOnsagerNet, OnsagerConfig
from .loop import LoopConfig, Task, TrainingLoop

__all__ = ["OnsagerTask", "default_eps", "em_nll", "estimate_diffusion", "known_reference",
           "linear_initialisation", "load_onsager_run", "make_onsager_run", "run_summary"]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------- the loss
def em_nll(model: IOnsagerNet, x0: torch.Tensor, x1: torch.Tensor, dt: float,
           reduce: bool = True) -> torch.Tensor:
    """Euler–Maruyama one-step Gaussian NLL of the pairs ``(x0, x1)`` (N, d): mean (or the
    (N,) values) of ``½ rᵀΣ⁻¹r + ½ log det(2πΣ)``, ``Σ = 2 D(x0) dt``."""
    f = model.fields(x0)
    r = x1 - x0 - f.drift * dt
    if model.mob is None or model.noise_L is not None:      # a constant D: one Cholesky factor
        C = torch.linalg.cholesky(2.0 * dt * model._noise_D_const(r.dtype))
        y = torch.linalg.solve_triangular(C, r.T, upper=False).T
        logdet = torch.log(torch.diagonal(C)).sum()                      # ½ log det Σ
    else:
        C = torch.linalg.cholesky(2.0 * dt * f.D)
        y = torch.linalg.solve_triangular(C, r.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = torch.log(torch.diagonal(C, dim1=-2, dim2=-1)).sum(-1)
    nll = 0.5 * (y * y).sum(-1) + logdet + 0.5 * x0.shape[-1] * _LOG_2PI
    return nll.mean() if reduce else nll


def estimate_diffusion(x: torch.Tensor, dt: float) -> torch.Tensor:
    """Quadratic-variation estimate of the diffusion matrix, ``mean(Δx Δxᵀ) / (2 dt)`` over
    the increments of trajectories ``x`` (T, B, d); (d, d) float64."""
    dx = (x[1:] - x[:-1]).reshape(-1, x.shape[-1]).double()
    dx = dx[torch.isfinite(dx).all(-1)]
    return dx.T @ dx / (2.0 * dt * max(1, dx.shape[0]))


# ---------------------------------------------------------------------- known answers
def default_eps(system) -> float:
    """The temperature ε where the system's diffusion matrix is isotropic and constant
    (``D = g gᵀ/2 = ε I``), else 1."""
    try:
        if not getattr(system, "additive", False):
            return 1.0
        x = system.initial_state(torch.float64).reshape(1, -1)
        g = system.g(x)[0]
        D = (torch.diag(g * g) if system.noise == "diagonal" else g @ g.T) / 2.0
        e = float(D[0, 0])
        if e > 0 and math.isfinite(e) and torch.allclose(D, e * torch.eye(D.shape[0], dtype=D.dtype),
                                                         rtol=1e-9, atol=1e-12):
            return e
    except Exception:                                   # noqa: BLE001 - a heuristic only
        return 1.0
    return 1.0


def _param(system, name: str) -> float:
    v = system.params[name]
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ParameterError(f"{name} is swept; a reference needs one value")
        v = v.item()
    return float(v)


def known_reference(system) -> dict[str, Any] | None:
    """The exact answer where it is known, else ``None``: ``potential`` (a callable
    ``U(x)``, (N, d) -> (N,)), ``temperature`` ``T`` (so that the stationary density is
    :math:`\\propto e^{-U/T}`) and ``entropy_production``.

    * ``rotating_ou`` (:math:`dX = -AX\\,dt + \\Sigma dW`): :math:`AC + CA^\\top = 2D`,
      :math:`U = \\tfrac12 x^\\top C^{-1}x`, :math:`T = 1`,
      :math:`e_p = \\mathrm{tr}(D^{-1}ACA^\\top) - \\mathrm{tr}A` (note §6);
    * ``rotating_double_well``: :math:`U = \\tfrac14(x^2-1)^2 + \\tfrac k2 y^2`,
      :math:`T = \\sigma^2/2`, :math:`e_p = \\omega^2\\,\\mathbb E[\\Delta U]
      = \\omega^2(3\\,\\mathbb E x^2 - 1 + k)` (:math:`\\mathbb E x^2` by quadrature);
    * ``ornstein_uhlenbeck`` (1D): :math:`U = \\theta(x-\\mu)^2/2`, :math:`T = \\sigma^2/2`,
      :math:`e_p = 0`.
    """
    import numpy as np

    name = getattr(system, "name", "")
    try:
        if name == "rotating_ou":
            kx, ky, w = (_param(system, k) for k in ("kx", "ky", "omega"))
            sx, sy = _param(system, "sigma_x"), _param(system, "sigma_y")
            A = np.array([[kx, -w], [w, ky]])
            D = np.diag([sx * sx / 2.0, sy * sy / 2.0])
            I2 = np.eye(2)
            C = np.linalg.solve(np.kron(I2, A) + np.kron(A, I2), (2.0 * D).reshape(-1)).reshape(2, 2)
            C = 0.5 * (C + C.T)
            Ci = torch.tensor(np.linalg.inv(C))
            ep = float(np.trace(np.linalg.solve(D, A @ C @ A.T)) - np.trace(A)) \
                if min(sx, sy) > 0 else math.inf

            def U(x, Ci=Ci):
                return 0.5 * torch.einsum("ni,ij,nj->n", x, Ci.to(x), x)

            return {"potential": U, "temperature": 1.0, "entropy_production": ep,
                    "covariance": C.tolist()}
        if name == "rotating_double_well":
            k, w, s = (_param(system, n) for n in ("k", "omega", "sigma"))
            T = s * s / 2.0
            if T <= 0:
                return None
            xs = np.linspace(-4.0, 4.0, 40_001)
            p = np.exp(-0.25 * (xs * xs - 1.0) ** 2 / T)
            ex2 = float((xs * xs * p).sum() / p.sum())

            def U(x, k=k):
                return 0.25 * (x[..., 0] ** 2 - 1.0) ** 2 + 0.5 * k * x[..., 1] ** 2

            return {"potential": U, "temperature": T,
                    "entropy_production": w * w * (3.0 * ex2 - 1.0 + k)}
        if name == "ornstein_uhlenbeck":
            th, mu, s = (_param(system, n) for n in ("theta", "mu", "sigma"))
            if s <= 0:
                return None

            def U(x, th=th, mu=mu):
                return 0.5 * th * (x[..., 0] - mu) ** 2

            return {"potential": U, "temperature": s * s / 2.0, "entropy_production": 0.0}
    except (KeyError, ParameterError):
        return None
    return _linear_reference(system)


def _linear_reference(system) -> dict[str, Any] | None:
    """Any other SDE with an affine drift and constant diffusion: its exact entropy
    production (the Lyapunov equation), without a potential to compare."""
    from ..core.analysis.entropy import exact_entropy_production
    from ..core.errors import ExplorerError

    try:
        ep = exact_entropy_production(system)
    except (ExplorerError, ValueError, RuntimeError):
        return None
    return None if ep is None else {"potential": None, "temperature": 1.0, "entropy_production": ep}


@torch.no_grad()
def linear_initialisation(model: IOnsagerNet, x: torch.Tensor, dt: float,
                          max_pairs: int = 200_000) -> bool:
    r"""Start ``model`` at the Ornstein–Uhlenbeck process that best fits the data.

    In the model's standardised coordinates :math:`\tilde x`: the drift's least-squares
    linear fit :math:`\Delta\tilde x/\Delta t \approx c - B\tilde x`, the empirical
    covariance :math:`\tilde C` and the diffusion :math:`\tilde D` (quadratic variation) give
    the OU split :math:`K = B - \tilde D\tilde C^{-1}` and the antisymmetric part
    :math:`\tilde A = \tfrac12(K\tilde C - (K\tilde C)^\top)` (exactly antisymmetric for an OU
    process: :math:`B\tilde C + \tilde C B^\top = 2\tilde D`); the constant part of W (the
    antisymmetric network's output bias, or the constant) starts there, and a ResMLP potential
    starts at :math:`\tfrac12\tilde x^\top\tilde C^{-1}\tilde x` (``Γ``). The mobility already
    starts at the data's diffusion (:meth:`IOnsagerNet.set_data_scales`). Only a start: the
    NLL training moves every parameter; Adam would otherwise spend hundreds of steps growing
    the rotation from 0 (its steps are at most the learning rate). Returns whether it applied
    (False when the fit is singular).
    """
    d = model.dim
    x0 = x[:-1].reshape(-1, d).double()
    x1 = x[1:].reshape(-1, d).double()
    if x0.shape[0] > max_pairs:
        idx = torch.linspace(0, x0.shape[0] - 1, max_pairs).long()
        x0, x1 = x0[idx], x1[idx]
    shift, scale = model.shift.double(), model.scale.double()
    y0, y1 = (x0 - shift) / scale, (x1 - shift) / scale
    try:
        X = torch.cat([y0, torch.ones_like(y0[:, :1])], 1)
        coef = torch.linalg.lstsq(X, (y1 - y0) / dt).solution               # (d + 1, d)
        B = -coef[:d].T                                                      # drift ~ c - B y
        flat = ((x.reshape(-1, d).double() - shift) / scale)
        C = torch.cov(flat.T).reshape(d, d)
        Dt = estimate_diffusion(x, dt) / torch.outer(scale, scale)
        Ci = torch.linalg.inv(C)
        if not bool(torch.isfinite(B).all() and torch.isfinite(Ci).all()):
            return False
        K = B - Dt @ Ci
        KC = K @ C
        At = 0.5 * (KC - KC.T)                                                # in y coordinates
        # the model's A = R Ã_model R^T in x; A_x = S A_y S  =>  Ã_model = R^-1 S A_y S R^-T
        R = model.noise_factor.double()
        S = torch.diag(scale)
        Rinv = torch.linalg.inv(R)
        Am = Rinv @ S @ At @ S @ Rinv.T
        E = model.antisym_basis.double()
        a = torch.stack([Am[E[k] > 0][0] for k in range(E.shape[0])]) if E.shape[0] else None
        if a is not None:
            if model.a0 is not None:
                model.a0.copy_(a.to(model.a0))
            elif model.anti is not None:
                model.anti.linears[-1].bias.copy_(a.to(model.anti.linears[-1].bias))
        if model.config.potential == "resmlp":
            Q = Ci - 2.0 * model.config.alpha * torch.eye(d, dtype=Ci.dtype)
            Q = 0.5 * (Q + Q.T)
            w, V = torch.linalg.eigh(Q)
            G = (V * w.clamp_min(1e-3).sqrt()) @ V.T                          # G^T G = Q
            n = min(d, model.gamma.shape[0])
            model.gamma.zero_()
            model.gamma[:n].copy_(G[:n].to(model.gamma))
    except (RuntimeError, torch.linalg.LinAlgError):                          # singular data
        return False
    return True


# ---------------------------------------------------------------------- the task
class OnsagerTask(Task):
    """Fit an :class:`IOnsagerNet` to trajectories by the Euler–Maruyama NLL.

    Args:
        x: trajectories (T, B, d) (or (T, d): one trajectory), sampled every ``dt``.
        dt: the sampling step.
        model_config: an :class:`OnsagerConfig` or a dict of its fields (``dim`` is taken
            from the data; ``eps`` from ``eps``).
        eps: the fixed temperature ε (only V/ε is identifiable).
        batch: pairs per minibatch (all pairs when there are fewer).
        lr, lr_end: Adam's learning rate, cosine-decayed to ``lr_end`` (default ``lr / 20``)
            over ``planned_steps``.
        seed: initialises the model and the minibatch sampler.
        val_fraction: trajectories held out for the validation NLL (with fewer than 5
            trajectories: the last part of each in time instead).
        stationary_fraction: the last part of the trajectories (in time) taken as samples
            of the stationary density for the entropy production.
        reference: optional known answer (:func:`known_reference`): ``potential`` U(x) and
            ``temperature``, and/or ``entropy_production``.
        source: plain data saying how the data were made (stored in checkpoints;
            :func:`load_onsager_run` re-simulates from it).
        model: an existing model to train instead of a new one.
        ema: decay of the exponential moving average of the weights (0: off). The NLL's
            minibatch gradients are noise-dominated (the Brownian increments), so the
            iterates wander; the average (:attr:`averaged`, :meth:`trained_model`) is what
            :meth:`evaluate` reports and what a run's results should use. Its warm-up
            decay is ``min(ema, (1 + n) / (10 + n))`` after ``n`` updates.
        init: ``"linear"`` (default): start a new model at the data's best linear (OU) fit
            (:func:`linear_initialisation`); ``"none"``: the networks' random initialisation
            (the mobility still starts at the quadratic-variation estimate).
    """

    name = "onsager"

    def __init__(self, x, dt: float, *, model_config: OnsagerConfig | Mapping[str, Any] | None = None,
                 eps: float = 1.0, batch: int = 8192, lr: float = 1e-2, lr_end: float | None = None,
                 planned_steps: int = 1000, seed: int = 0, val_fraction: float = 0.1,
                 stationary_fraction: float = 0.5, reference: Mapping[str, Any] | None = None,
                 source: Mapping[str, Any] | None = None, model: IOnsagerNet | None = None,
                 max_eval: int = 50_000, ema: float = 0.99, init: str = "linear"):
        x = torch.as_tensor(x)
        if x.ndim == 2:
            x = x.unsqueeze(1)
        if x.ndim != 3 or x.shape[0] < 3 or x.shape[-1] < 1:
            raise ShapeError(f"trajectories must be (T, B, d) with T >= 3, got {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ParameterError("the trajectories contain NaN or inf (a diverged simulation?)")
        if not (dt > 0 and math.isfinite(dt)):
            raise ParameterError(f"dt must be a positive number, got {dt!r}")
        if not (isinstance(batch, int) and batch >= 1):
            raise ParameterError(f"batch must be a positive integer, got {batch!r}")
        if init not in ("linear", "none"):
            raise ParameterError(f"init must be 'linear' or 'none', got {init!r}")
        if not (0.0 <= ema < 1.0):
            raise ParameterError(f"ema must be in [0, 1), got {ema!r}")
        if not (0.0 <= val_fraction < 1.0 and 0.0 < stationary_fraction <= 1.0):
            raise ParameterError("val_fraction must be in [0, 1), stationary_fraction in (0, 1]")
        T, B, d = x.shape
        self.x, self.dt, self.eps = x, float(dt), float(eps)
        self.batch, self.lr = int(batch), float(lr)
        self.lr_end = float(lr_end) if lr_end is not None else self.lr / 20.0
        self.planned_steps = int(planned_steps)
        self.seed = int(seed)
        self.val_fraction, self.stationary_fraction = float(val_fraction), float(stationary_fraction)
        self.reference = dict(reference) if reference else None
        self.source = dict(source) if source else None
        self.max_eval = int(max_eval)

        # pairs: training and validation
        n_val_traj = round(val_fraction * B) if B >= 5 else 0
        if n_val_traj > 0:
            tr, va = x[:, : B - n_val_traj], x[:, B - n_val_traj:]
        elif val_fraction > 0:
            cut = max(2, round((1.0 - val_fraction) * T))
            tr, va = x[:cut], x[cut - 1:] if T - cut >= 1 else x[:0]
        else:
            tr, va = x, x[:0]
        self.x0, self.x1 = tr[:-1].reshape(-1, d), tr[1:].reshape(-1, d)
        pick = torch.Generator().manual_seed(self.seed + 104_729)     # seeded subsamples

        def subsample(n: int) -> torch.Tensor:
            if n <= self.max_eval:
                return torch.arange(n)
            return torch.randperm(n, generator=pick)[: self.max_eval].sort().values

        if va.shape[0] >= 2:
            v0, v1 = va[:-1].reshape(-1, d), va[1:].reshape(-1, d)
            idx = subsample(v0.shape[0])
            self.v0, self.v1 = v0[idx].contiguous(), v1[idx].contiguous()
        else:
            self.v0 = self.v1 = None
        st = x[int(T * (1.0 - stationary_fraction)):].reshape(-1, d)
        self.stationary = st[subsample(st.shape[0])].contiguous()

        # the model
        if model is None:
            cfg = model_config if isinstance(model_config, OnsagerConfig) else \
                OnsagerConfig.from_dict({**dict(model_config or {}), "dim": d, "eps": self.eps})
            cfg = cfg.replace(dim=d, eps=self.eps)
            with torch.random.fork_rng(devices=[]):                 # seeded, never globally
                torch.manual_seed(self.seed)
                model = IOnsagerNet(cfg)
            flat = x.reshape(-1, d).double()
            model.set_data_scales(flat.mean(0), flat.std(0).clamp_min(1e-6),
                                  estimate_diffusion(x, self.dt))
            if init == "linear":
                linear_initialisation(model, x, self.dt)
        elif model.dim != d:
            raise ShapeError(f"the model has dimension {model.dim}, the data {d}")
        self.model = model
        self.sampler = torch.Generator().manual_seed(self.seed + 7_919)
        self.ema = float(ema)
        self.init = init
        self.ema_updates = 0
        self.averaged: IOnsagerNet | None = None
        if self.ema > 0:
            self.averaged = copy.deepcopy(model)
            for p in self.averaged.parameters():
                p.requires_grad_(False)

    def trained_model(self) -> IOnsagerNet:
        """The model whose results to report: the weight average (``ema > 0``), else the
        trained model itself."""
        return self.averaged if self.averaged is not None else self.model

    # ------------------------------------------------------------------ Task protocol
    def config(self) -> dict[str, Any]:
        return {"dt": self.dt, "eps": self.eps, "dim": int(self.x.shape[-1]),
                "model": self.model.config.as_dict(), "batch": self.batch, "lr": self.lr,
                "lr_end": self.lr_end, "planned_steps": self.planned_steps, "seed": self.seed,
                "val_fraction": self.val_fraction,
                "stationary_fraction": self.stationary_fraction, "ema": self.ema,
                "init": self.init,
                "data_shape": list(self.x.shape), "source": self.source}

    def lr_at(self, step: int) -> float:
        frac = min(1.0, step / max(1, self.planned_steps))
        return self.lr_end + 0.5 * (self.lr - self.lr_end) * (1.0 + math.cos(math.pi * frac))

    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.x0.shape[0]
        if self.batch >= n:
            return self.x0, self.x1
        idx = torch.randint(n, (self.batch,), generator=self.sampler)
        return self.x0[idx], self.x1[idx]

    def loss(self, model, step):
        x0, x1 = self.minibatch()
        p = next(model.parameters())
        return em_nll(model, x0.to(p), x1.to(p), self.dt)

    @torch.no_grad()
    def after_step(self, model, step: int, applied: bool) -> None:
        if not applied or self.averaged is None:
            return
        n = self.ema_updates
        w = 1.0 - min(self.ema, (1.0 + n) / (10.0 + n))
        for pa, p in zip(self.averaged.parameters(), model.parameters()):
            pa.lerp_(p.detach().to(pa), w)
        for ba, b in zip(self.averaged.buffers(), model.buffers()):
            ba.copy_(b)
        self.ema_updates = n + 1

    def state_dict(self) -> dict[str, Any]:
        st: dict[str, Any] = {"sampler": self.sampler.get_state(), "ema_updates": self.ema_updates}
        if self.averaged is not None:
            st["averaged"] = {k: v.detach().clone() for k, v in self.averaged.state_dict().items()}
        return st

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.set_state(state["sampler"])
        self.ema_updates = int(state.get("ema_updates", 0))
        if self.averaged is not None and state.get("averaged") is not None:
            self.averaged.load_state_dict(state["averaged"])

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def validation_nll(self, model) -> float:
        if self.v0 is None:
            return math.nan
        p = next(model.parameters())
        tot = 0.0
        for i in range(0, self.v0.shape[0], 16_384):
            a, b = self.v0[i:i + 16_384].to(p), self.v1[i:i + 16_384].to(p)
            tot += float(em_nll(model, a, b, self.dt, reduce=False).double().sum())
        return tot / self.v0.shape[0]

    @torch.no_grad()
    def potential_error(self, model, reference: Mapping[str, Any] | None = None) -> float:
        """Relative L2 error of V/ε against U/T over the stationary samples, both centred."""
        ref = reference or self.reference
        if not ref or ref.get("potential") is None:
            return math.nan
        x = self.stationary.double()
        phi = model.evaluation_copy(torch.float64).reduced_potential(x)
        u = torch.as_tensor(ref["potential"](x), dtype=torch.float64) / float(ref.get("temperature", 1.0))
        phi, u = phi - phi.mean(), u - u.mean()
        return float(torch.linalg.vector_norm(phi - u) / torch.linalg.vector_norm(u).clamp_min(1e-300))

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        """``val_nll``, ``entropy_production``; with a reference also ``potential_error``,
        ``ep_exact`` and ``ep_rel_error`` (of the weight average when ``ema > 0``)."""
        if self.averaged is not None and model is self.model:
            model = self.averaged
        out = {"val_nll": self.validation_nll(model),
               "entropy_production": model.entropy_production(self.stationary)}
        ref = self.reference
        if ref:
            if ref.get("potential") is not None:
                out["potential_error"] = self.potential_error(model)
            ep = ref.get("entropy_production")
            if ep is not None and math.isfinite(float(ep)):
                out["ep_exact"] = float(ep)
                e = out["entropy_production"]
                out["ep_rel_error"] = abs(e - ep) / ep if ep > 0 else abs(e - ep)
        return out


# ---------------------------------------------------------------------- one path for all
def make_onsager_run(system, *, batch: int = 2_000, steps: int = 1_000, dt: float | None = None,
                     seed: int = 0, transient: int | None = None, spread: float = 1.0,
                     eps: float | None = None, hidden: int = 16, layers: int = 2,
                     lr: float = 1e-2, lr_end: float | None = None, planned_steps: int = 600,
                     minibatch: int = 8192,
                     potential: str = "resmlp", mobility: str | None = None,
                     antisymmetric: str = "field", diffusion: str = "tied",
                     activation: str = "tanh", alpha: float = 0.05, band: int = 0,
                     ema: float = 0.99, stationary_fraction: float = 0.5, init: str = "linear",
                     eval_every: int | None = None, reference: Any = "auto",
                     source: Mapping[str, Any] | None = None,
                     data: torch.Tensor | None = None) -> TrainingLoop:
    """Simulate ``system`` (an SDE) and return a :class:`TrainingLoop` of an
    :class:`OnsagerTask` on its trajectories.

    Args:
        system: an :class:`explorer.core.system.SDE` instance.
        batch: trajectories simulated; steps: recorded steps each (after ``transient``,
            default ``max(500, steps // 4)``); dt: the step (default the system's);
            seed: of the simulation, the model initialisation and the minibatches;
            spread: initial states are the system's ``x0`` plus ``spread (1 + |x0|)``
            Gaussian noise.
        eps: the fixed temperature (default :func:`default_eps`: ε where ``D = ε I``, else 1).
        hidden, layers, potential, mobility (default ``"constant"`` for additive noise,
            else ``"field"``), antisymmetric, diffusion, activation, alpha, band: the
            :class:`OnsagerConfig`.
        lr, lr_end, planned_steps, minibatch: optimisation (Adam; cosine decay from ``lr`` to
            ``lr_end``, default ``lr / 20``, over ``planned_steps``; pairs per minibatch).
        ema: weight-average decay (see :class:`OnsagerTask`; 0: off).
        init: ``"linear"`` (start at the data's best OU fit) or ``"none"``.
        stationary_fraction: the last part of each trajectory taken as stationary samples
            (1: all of it, when ``transient`` is long enough).
        eval_every: evaluation period (default ``planned_steps // 10``).
        reference: ``"auto"`` (:func:`known_reference`), ``None`` or a dict.
        source: how to rebuild ``system`` (stored in checkpoints); default: the registered
            name and parameters when the system is a registered one.
        data: precomputed trajectories (T, B, d) instead of simulating.
    """
    from ..core.simulate import simulate

    if getattr(system, "kind", None) != "sde":
        raise ParameterError(f"I-OnsagerNet learns SDEs; {getattr(system, 'name', system)!r} "
                             f"is a {getattr(system, 'kind', type(system).__name__)}")
    dt = float(dt if dt is not None else system.default_dt)
    if transient is None:
        transient = max(500, steps // 4)
    if source is None:
        source = _registered_source(system)
    sim = {"batch": int(batch), "steps": int(steps), "dt": dt, "seed": int(seed),
           "transient": int(transient), "spread": float(spread)}
    if data is None:
        tr = simulate(system, steps=int(steps), dt=dt, batch=int(batch), seed=int(seed),
                      transient=int(transient), spread=float(spread))
        data = tr.x
        if not bool(torch.isfinite(data).all()):
            raise ParameterError(f"the simulation of {system.name} diverged; use a smaller dt "
                                 "or other parameters")
    if eps is None:
        eps = default_eps(system)
    if mobility is None:
        mobility = "constant" if getattr(system, "additive", False) else "field"
    if isinstance(reference, str) and reference == "auto":
        reference = known_reference(system)
    cfg = OnsagerConfig(dim=int(data.shape[-1]), eps=float(eps), hidden=int(hidden),
                        layers=int(layers), activation=activation, potential=potential,
                        alpha=float(alpha), mobility=mobility, antisymmetric=antisymmetric,
                        band=int(band), diffusion=diffusion)
    task = OnsagerTask(data, dt, model_config=cfg, eps=float(eps), batch=int(minibatch), lr=lr,
                       lr_end=lr_end, planned_steps=int(planned_steps), seed=int(seed),
                       reference=reference, ema=float(ema), init=init,
                       stationary_fraction=float(stationary_fraction),
                       source=None if source is None else {**dict(source), "simulation": sim})
    every = int(eval_every) if eval_every is not None else max(1, int(planned_steps) // 10)
    return TrainingLoop(task, LoopConfig(lr=lr, planned_steps=int(planned_steps),
                                         eval_every=every))


def _registered_source(system) -> dict[str, Any] | None:
    from ..core.registry import system_class

    try:
        cls = system_class(system.name)
    except Exception:                                   # noqa: BLE001 - not registered
        return None
    if cls is not type(system):
        return None
    params = {}
    for k, v in system.params.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                return None
            v = v.item()
        params[k] = v
    return {"system": system.name, "params": params}


def _system_from_source(source: Mapping[str, Any]):
    if source.get("system"):
        from ..core.registry import system_class

        return system_class(source["system"])(**dict(source.get("params") or {}))
    if source.get("sde"):
        from ..core.custom import parse_sde

        return parse_sde(source["sde"], source.get("diffusion") or "", dict(source.get("params") or {}))
    raise ParameterError("the checkpoint does not say how its data were made; pass system=")


def load_onsager_run(path, *, system=None, data: torch.Tensor | None = None) -> TrainingLoop:
    """Rebuild the run saved at ``path`` (data re-simulated from the recorded system and
    settings, or ``system`` / ``data`` given) and restore its weights, optimiser and counters.

    Raises:
        CheckpointError, CheckpointMismatchError: see :meth:`TrainingLoop.restore`.
    """
    from .checkpoint import CheckpointMismatchError, load_checkpoint

    ck = load_checkpoint(path)
    if ck.task_name != OnsagerTask.name:
        raise CheckpointMismatchError(f"{Path(path).name} holds a "
                                      f"{ck.task_name or 'bare model'!r} checkpoint, not 'onsager'")
    cfg = dict(ck.task_config or {})
    source = dict(cfg.get("source") or {})
    sim = dict(source.get("simulation") or {})
    if system is None and data is None:
        system = _system_from_source(source)
    mc = OnsagerConfig.from_dict(cfg["model"])
    if data is None:
        loop = make_onsager_run(
            system, batch=sim.get("batch", 2000), steps=sim.get("steps", 1000), dt=cfg["dt"],
            seed=cfg["seed"], transient=sim.get("transient"), spread=sim.get("spread", 1.0),
            eps=mc.eps, hidden=mc.hidden, layers=mc.layers, lr=cfg["lr"],
            lr_end=cfg.get("lr_end"), planned_steps=cfg["planned_steps"], minibatch=cfg["batch"], potential=mc.potential,
            mobility=mc.mobility, antisymmetric=mc.antisymmetric, diffusion=mc.diffusion,
            activation=mc.activation, alpha=mc.alpha, band=mc.band, ema=cfg.get("ema", 0.99),
            stationary_fraction=cfg.get("stationary_fraction", 0.5), init=cfg.get("init", "linear"),
            source={k: v for k, v in source.items() if k != "simulation"} or None)
    else:
        task = OnsagerTask(data, cfg["dt"], model_config=mc, eps=mc.eps, batch=cfg["batch"],
                           lr=cfg["lr"], lr_end=cfg.get("lr_end"),
                           planned_steps=cfg["planned_steps"], seed=cfg["seed"],
                           val_fraction=cfg.get("val_fraction", 0.1),
                           stationary_fraction=cfg.get("stationary_fraction", 0.5),
                           ema=cfg.get("ema", 0.99), init=cfg.get("init", "linear"),
                           reference=None if system is None else known_reference(system),
                           source=source or None)
        loop = TrainingLoop(task, LoopConfig(lr=cfg["lr"], planned_steps=cfg["planned_steps"]))
    return loop.restore(path)


def run_summary(loop: TrainingLoop) -> dict[str, Any]:
    """Plain-data summary of an Onsager run (the CLI's ``--json``): steps, seconds, final
    training NLL, the last evaluation, the learned and (when known) exact e_p."""
    task: OnsagerTask = loop.task
    metrics = loop.evaluate()
    ref = task.reference or {}
    ep_exact = ref.get("entropy_production")
    losses = loop.history.get("loss", [])
    return {"task": task.name, "steps": loop.step_count, "seconds": round(loop.seconds, 3),
            "final_nll": losses[-1] if losses else None,
            "val_nll": metrics.get("val_nll"),
            "entropy_production": metrics.get("entropy_production"),
            "entropy_production_exact": None if ep_exact is None else float(ep_exact),
            "ep_rel_error": metrics.get("ep_rel_error"),
            "potential_error": metrics.get("potential_error"),
            "eps": task.eps, "dt": task.dt, "pairs": int(task.x0.shape[0]),
            "skipped": loop.skipped, "rollbacks": loop.rollbacks}
