r"""Dynamical-systems reconstruction on the generic loop: ``Trainer`` = :class:`TrainingLoop` +
:class:`GTFTask`.

One optimisation step draws ``batch_size`` random windows of ``seq_len + 1`` samples from the
standardised series, runs the model along them with generalized (or sparse) teacher forcing
(:mod:`explorer.training.gtf`), and takes one RAdam/Adam step on the mean squared one-step
error, with gradient clipping and an exponentially decaying learning rate

.. math:: \eta_s = \eta_0 \, (\eta_{end} / \eta_0)^{\min(1, s / S)} .

Every ``metrics_every`` steps the model runs freely (``metric_length`` steps, float32, no
gradients) and is compared with the data by the state-space divergence :math:`D_{stsp}`, the
power-spectrum distance :math:`D_H`, the n-step prediction error and, optionally, the largest
Lyapunov exponent (float64, on the :meth:`as_system` snapshot). The model with the lowest
:math:`D_{stsp}` so far is kept.

The optimisation itself is :class:`~explorer.training.loop.TrainingLoop`'s (the trainer is one):
:meth:`Trainer.run` emits a :class:`TrainEvent` per step to callbacks and stops when the
``stop`` event is set; calling it again resumes (all state lives in the trainer). A batch
with a NaN/inf loss or a non-finite or exploding gradient is skipped and counted
(``skipped``); non-finite weights after an update roll back to the last snapshot; only
``max_bad_steps`` bad batches in a row end the run (:class:`TrainingDivergedError` from
:meth:`step`; an event with ``status="diverged"`` from :meth:`run`), with the last good state
restored. :class:`GTFTask` is the GTF objective as a :class:`~explorer.training.loop.Task`.

Training is float32; invariants are computed in float64.

References:
    F. Hess, Z. Monfared, M. Brenner, D. Durstewitz, ICML (2023) (GTF, shallow PLRNN,
    reference hyper-parameters).
    L. Liu et al., ICLR (2020) (RAdam).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..core.analysis.invariants import power_spectrum_distance, state_space_divergence
from ..core.analysis.lyapunov import lyapunov_spectrum
from ..core.device import parse_device
from ..core.errors import ExplorerError, ParameterError
from ..models.plrnn import (
    ALRNNConfig,
    PLRNNConfig,
    ReconstructionModel,
    ShallowPLRNNConfig,
    build_model,
)
from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .data import TimeSeries, from_array, sample_windows
from .gtf import AdaptiveAlpha, force, gtf_rollout, prediction_error
from .loop import LoopConfig, Task, TrainingLoop
from .verdict import (
    D_STSP_GOOD,
    Verdict,
    escaped,
    free_run_spread,
    reconstruction_verdict,
)

#: default latent dimension per model kind
DEFAULT_LATENT = {"plrnn": 20, "shplrnn": 3, "alrnn": 20}
ALPHA_MODES = ("adaptive", "fixed", "sparse")
OPTIMIZERS = ("radam", "adam")


@dataclass(frozen=True)
class TrainerConfig:
    """Everything that defines a training run.

    Defaults: the GTF reference for Lorenz-63 (latent 3, batch 16, sequence 200, RAdam 1e-3,
    adaptive alpha) with two changes measured on this project's CPU benchmark
    (``benchmarks/bench_training.py``): 100 hidden units instead of 50 and a learning rate
    decaying to 1e-5 instead of 1e-6 over the planned steps, which took D_stsp against the
    noise-free Lorenz-63 trajectory below 0.3 in about 90 s (the reference values plateaued
    near 0.4)."""

    model: str = "shplrnn"            # "plrnn", "shplrnn" or "alrnn"
    latent_dim: int | None = None     # M; None: 3 for shplrnn, 20 for plrnn and alrnn
    hidden_dim: int = 100             # shPLRNN: width H of the ReLU layer (the GTF code: 50)
    n_relu: int = 2                   # AL-RNN: P units through the ReLU
    clipped: bool = False             # shPLRNN: the bounded "clipped" variant
    observation: str = "identity"     # "identity" (first N units observed) or "linear"
    seq_len: int = 200                # T, steps per training window
    batch_size: int = 16              # windows per step
    optimizer: str = "radam"          # "radam" or "adam"
    lr: float = 1e-3                  # initial learning rate
    lr_end: float = 1e-5              # learning rate reached after `steps` steps (GTF: 1e-6)
    steps: int = 20_000               # planned steps: lr schedule horizon and ETA
    grad_clip: float = 10.0           # max gradient norm (0: no clipping)
    explode_norm: float = 1e6         # a gradient norm above this counts as exploding
    alpha_mode: str = "adaptive"      # "adaptive" (GTF, estimated), "fixed" or "sparse"
    alpha: float = 0.1                # fixed alpha, or the adaptive one's starting value
    alpha_every: int = 5              # adaptive: re-estimate alpha every this many steps
    alpha_decay: float = 0.999        # adaptive: decay factor towards a lower estimate
    tau: int = 16                     # sparse teacher forcing interval
    seed: int = 0                     # initialisation and window sampling
    device: str = "cpu"               # "cpu", "cuda", "cuda:N" or "auto"
    metrics_every: int = 500          # evaluate invariants every this many steps (0: never)
    metric_length: int = 10_000       # steps of each free run for D_stsp and D_H
    metric_runs: int = 10             # free runs from evenly spaced data states (pooled)
    pe_steps: int = 20                # horizon n of the prediction error
    lyapunov: bool = False            # also estimate the model's largest Lyapunov exponent
    max_bad_steps: int = 10           # NaN/inf or exploding batches in a row that end a run
                                      # (each one alone is skipped; 1: the first ends the run)

    def __post_init__(self):
        def bad(msg):
            raise ParameterError(f"trainer config: {msg}")

        if self.model not in DEFAULT_LATENT:
            bad(f"model must be one of {', '.join(DEFAULT_LATENT)}, got {self.model!r}")
        if self.alpha_mode not in ALPHA_MODES:
            bad(f"alpha_mode must be one of {', '.join(ALPHA_MODES)}, got {self.alpha_mode!r}")
        if self.optimizer not in OPTIMIZERS:
            bad(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("seq_len", "batch_size", "steps", "alpha_every", "tau", "metric_length",
                     "metric_runs", "pe_steps", "hidden_dim", "max_bad_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{name} must be a positive integer, got {v!r}")
        if self.metrics_every < 0 or self.n_relu < 0:
            bad("metrics_every and n_relu must be >= 0")
        if not (0 < self.lr_end <= self.lr < 1):
            bad(f"need 0 < lr_end <= lr < 1, got lr={self.lr}, lr_end={self.lr_end}")
        if not 0.0 <= self.alpha <= 1.0:
            bad(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.alpha_decay <= 1.0:
            bad(f"alpha_decay must be in [0, 1], got {self.alpha_decay}")
        if self.grad_clip < 0 or not self.explode_norm > 0:
            bad("grad_clip must be >= 0 and explode_norm > 0")

    def model_config(self, obs_dim: int):
        """The model config for data with ``obs_dim`` observed coordinates."""
        M = self.latent_dim if self.latent_dim is not None else max(DEFAULT_LATENT[self.model], obs_dim)
        if self.model == "plrnn":
            return PLRNNConfig(obs_dim=obs_dim, latent_dim=M, observation=self.observation)
        if self.model == "shplrnn":
            return ShallowPLRNNConfig(obs_dim=obs_dim, latent_dim=M, hidden_dim=self.hidden_dim,
                                      clipped=self.clipped, observation=self.observation)
        return ALRNNConfig(obs_dim=obs_dim, latent_dim=M, n_relu=self.n_relu,
                           observation=self.observation)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainerConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"trainer config: unknown field(s) {', '.join(unknown)}")
        return cls(**dict(d))

    def replace(self, **changes) -> TrainerConfig:
        return type(self)(**{**self.as_dict(), **changes})


class GTFTask(Task):
    """Generalized teacher forcing on one standardised series, as a :class:`Task`.

    ``loss`` draws ``batch_size`` windows of ``seq_len + 1`` samples and returns the mean
    squared one-step error of a (generalized or sparse) teacher-forced rollout with the
    forcing strength ``alpha`` as an extra; ``after_step`` updates the adaptive alpha from the
    rollout's latent states (also after a skipped batch whose states are finite: a larger
    Jacobian bound raises alpha, which is what brings the next batch's gradient back);
    ``evaluate`` runs the model freely against the data (see :meth:`Trainer.evaluate`).

    Args:
        data: the standardised series; config: the :class:`TrainerConfig`;
        model: the reconstruction model (on ``device``); device: where training runs.
    """

    name = "gtf"

    def __init__(self, data: TimeSeries, config: TrainerConfig, model: ReconstructionModel,
                 device: torch.device):
        self.data = data
        self.cfg = config
        self.model = model
        self.device = device
        self.x = data.x.to(device)                                    # (T, N) float32
        self.sampler = torch.Generator().manual_seed(config.seed + 1_000_003)
        self.adaptive = AdaptiveAlpha(config.alpha, every=config.alpha_every,
                                      decay=config.alpha_decay)
        self._states: torch.Tensor | None = None

    # ------------------------------------------------------------------ the Task protocol
    def config(self) -> dict[str, Any]:
        return self.cfg.as_dict()

    def make_optimizer(self, params, lr):
        opt = torch.optim.RAdam if self.cfg.optimizer == "radam" else torch.optim.Adam
        return opt(params, lr=self.cfg.lr)

    def lr_at(self, step: int) -> float:
        """Exponential decay from ``lr`` to ``lr_end`` over the planned ``steps``."""
        cfg = self.cfg
        frac = min(1.0, step / cfg.steps)
        return cfg.lr * (cfg.lr_end / cfg.lr) ** frac

    @property
    def alpha(self) -> float:
        """The forcing strength the next step uses (1 in sparse mode, on forced steps)."""
        if self.cfg.alpha_mode == "fixed":
            return self.cfg.alpha
        if self.cfg.alpha_mode == "sparse":
            return 1.0
        return self.adaptive.alpha

    def loss(self, model, step):
        cfg = self.cfg
        alpha = self.alpha
        x = sample_windows(self.x, cfg.seq_len + 1, cfg.batch_size,
                           generator=self.sampler)                    # (T+1, B, N)
        roll = gtf_rollout(model, x, alpha, tau=cfg.tau if cfg.alpha_mode == "sparse" else None)
        self._states = roll.states
        return roll.loss(x), {"alpha": alpha}

    def after_step(self, model, step, applied):
        states, self._states = self._states, None
        if self.cfg.alpha_mode != "adaptive" or states is None:
            return
        if applied:
            self.adaptive.update(model, states)
        elif bool(torch.isfinite(states).all()):
            # a skipped batch: re-estimate now (a steep model needs more forcing at once)
            self.adaptive.calls -= self.adaptive.calls % self.adaptive.every
            self.adaptive.update(model, states)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.get_state(), "adaptive": self.adaptive.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.set_state(state["sampler"])
        self.adaptive.load_state_dict(state["adaptive"])

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        return self.metrics()

    # ------------------------------------------------------------------ free runs
    def warmup(self) -> int:
        """Forcing steps that settle unobserved latent units (0 when all are observed)."""
        m = self.model
        return 25 if (m.B is not None or m.latent_dim > m.obs_dim) else 0

    @torch.no_grad()
    def inferred_states(self, starts: torch.Tensor) -> torch.Tensor:
        """Latent states (B, M) at samples ``starts`` (B,) inferred from the data: full
        teacher forcing over up to 25 earlier samples settles the unobserved units."""
        m = self.model
        w = min(self.warmup(), int(starts.min()))
        idx = (starts - w).unsqueeze(0) + torch.arange(w + 1).unsqueeze(1)   # (w+1, B)
        win = self.x[idx.to(self.x.device)]                                   # (w+1, B, N)
        z = m.init_state(win[0])
        wts, f, pinv = m.weights(), type(m)._f, m.observation_pinv()
        for s in range(1, w + 1):
            z = force(m, f(wts, z), win[s], 1.0, pinv)
        return z

    def starts(self, length: int, runs: int) -> torch.Tensor:
        """``runs`` evenly spaced start samples leaving room for ``length`` samples."""
        hi = self.data.length - length
        lo = min(self.warmup(), hi)
        return torch.linspace(lo, hi, max(1, runs)).round().long().unique()

    @torch.no_grad()
    def free_runs(self, length: int, runs: int):
        """Data windows and free runs from the same data-inferred starts: ``x_true`` (L, B, N),
        ``x_ref`` (the noise-free windows or None), ``x_gen`` (L, B, N) on the CPU and the
        latent states ``zs`` (L, B, M)."""
        self.model.eval()
        L = min(int(length), self.data.length)
        starts = self.starts(L, runs)                                         # (B,)
        idx = starts.unsqueeze(0) + torch.arange(L).unsqueeze(1)              # (L, B)
        x_true = self.data.x[idx]                                             # (L, B, N)
        x_ref = None if self.data.reference is None else self.data.reference[idx]
        z0 = self.inferred_states(starts)
        zs = torch.cat([z0.unsqueeze(0), self.model.forward(z0, L - 1)])      # (L, B, M)
        x_gen = self.model.observe(zs).cpu()                                  # (L, B, N)
        return x_true, x_ref, x_gen, zs

    @torch.no_grad()
    def metrics(self) -> dict[str, float]:
        """See :meth:`Trainer.evaluate`."""
        cfg = self.cfg
        x_true, x_ref, x_gen, zs = self.free_runs(cfg.metric_length, cfg.metric_runs)
        gen = torch.Generator().manual_seed(cfg.seed)
        out = {"d_stsp": state_space_divergence(x_true, x_gen, generator=gen),
               "d_h": power_spectrum_distance(x_true, x_gen),
               "pe": prediction_error(self.model, self.x, cfg.pe_steps),
               "spread": free_run_spread(x_true, x_gen),
               "escaped": float(bool(torch.isfinite(x_gen).all()) and escaped(x_true, x_gen))}
        if x_ref is not None:                                         # noise-free ground truth
            out["d_stsp_clean"] = state_space_divergence(x_ref, x_gen, generator=gen)
            out["d_h_clean"] = power_spectrum_distance(x_ref, x_gen)
        if torch.isfinite(zs[-1, 0]).all():
            self.model.z_ref.copy_(zs[-1, 0])                                # a state on the attractor
        if cfg.lyapunov:
            out["lyapunov"] = math.nan
            if math.isfinite(out["d_stsp"]):
                try:
                    res = lyapunov_spectrum(self.model.as_system(), k=1, steps=2000, transient=500,
                                            batch=8, generator=torch.Generator().manual_seed(cfg.seed))
                    out["lyapunov"] = float(res.exponents[0]) / self.data.dt
                except ExplorerError:
                    pass
            if self.data.lyapunov is not None:
                out["lyapunov_data"] = float(self.data.lyapunov)
        return out


def loop_config(cfg: TrainerConfig) -> LoopConfig:
    """The :class:`LoopConfig` a :class:`TrainerConfig` implies."""
    return LoopConfig(lr=cfg.lr, planned_steps=cfg.steps, eval_every=cfg.metrics_every,
                      best_metric="d_stsp", grad_clip=cfg.grad_clip, explode_norm=cfg.explode_norm,
                      max_bad_steps=cfg.max_bad_steps, event_snapshots=True)


class Trainer(TrainingLoop):
    """Train a PLRNN / shallow PLRNN / AL-RNN on one time series: the generic
    :class:`TrainingLoop` with a :class:`GTFTask`.

    Args:
        data: a :class:`TimeSeries` (see :mod:`explorer.training.data`) or a (T, N) array.
        config: the :class:`TrainerConfig`.
        model: an existing model to continue training (default: a fresh one from the config,
            initialised from ``config.seed``).

    Attributes:
        model, optimizer, data, config (the :class:`TrainerConfig`; the loop's own is
        ``loop_config``), task (the :class:`GTFTask`); ``step_count``; ``history`` (per-step
        columns ``step``, ``loss``, ``grad_norm``, ``alpha``, ``lr``); ``metric_history``
        (one dict per evaluation); ``best`` (``step`` and ``d_stsp`` of the best model so
        far); ``skipped`` and ``rollbacks`` (see :class:`TrainingLoop`).
    """

    def __init__(self, data: TimeSeries | Any, config: TrainerConfig | None = None, *,
                 model: ReconstructionModel | None = None):
        cfg = config or TrainerConfig()
        data = data if isinstance(data, TimeSeries) else from_array(data)
        if data.length < cfg.seq_len + 1:
            raise ParameterError(f"the series has {data.length} samples; a training window "
                                 f"needs seq_len + 1 = {cfg.seq_len + 1}")
        self.data = data
        self.device = parse_device(cfg.device)
        init_gen = torch.Generator().manual_seed(cfg.seed)
        if model is None:
            model = build_model(cfg.model_config(data.dim), generator=init_gen)
        elif model.obs_dim != data.dim:
            raise ParameterError(f"the model observes {model.obs_dim} coordinates, the data has "
                                 f"{data.dim}")
        model = model.to(self.device)
        task = GTFTask(data, cfg, model, self.device)
        with torch.no_grad():
            model.z_ref.copy_(task.inferred_states(task.starts(1, 1))[0])
        super().__init__(task, loop_config(cfg))
        self.config = cfg
        self.x = task.x
        self.history = {k: [] for k in ("step", "loss", "grad_norm", "alpha", "lr")}

    # ------------------------------------------------------------------ GTF state
    @property
    def adaptive(self) -> AdaptiveAlpha:
        return self.task.adaptive

    @property
    def _sampler(self) -> torch.Generator:
        return self.task.sampler

    @property
    def alpha(self) -> float:
        """The forcing strength the next step uses (1 in sparse mode, on forced steps)."""
        return self.task.alpha

    def lr_at(self, step: int) -> float:
        """Learning rate of optimisation step ``step`` (0-based): exponential decay."""
        return self.task.lr_at(step)

    # ------------------------------------------------------------------ evaluation
    def _warmup(self) -> int:
        return self.task.warmup()

    def _inferred_states(self, starts: torch.Tensor) -> torch.Tensor:
        return self.task.inferred_states(starts)

    def _starts(self, length: int, runs: int) -> torch.Tensor:
        return self.task.starts(length, runs)

    def _free_runs(self, length: int, runs: int):
        return self.task.free_runs(length, runs)

    @torch.no_grad()
    def free_run(self, steps: int, *, runs: int = 1) -> torch.Tensor:
        """Observations of ``runs`` free runs from data-inferred states at evenly spaced
        samples: (steps + 1, runs, N), float32, standardised units."""
        self.model.eval()
        L = min(int(steps) + 1, self.data.length)
        z0 = self.task.inferred_states(self.task.starts(L, runs))             # (B, M)
        zs = torch.cat([z0.unsqueeze(0), self.model.forward(z0, steps)])       # (T+1, B, M)
        return self.model.observe(zs)

    @torch.no_grad()
    def verdict(self, *, length: int | None = None, runs: int | None = None,
                threshold: float = D_STSP_GOOD) -> Verdict:
        """Is the current model a reconstruction? Free runs (``length`` x ``runs``, default
        the config's metric sizes) judged by :func:`explorer.training.verdict.reconstruction_verdict`
        against the noise-free reference when the data carry one, else against the data."""
        cfg = self.config
        x_true, x_ref, x_gen, _ = self.task.free_runs(length or cfg.metric_length,
                                                      runs or cfg.metric_runs)
        ref = x_ref if x_ref is not None else x_true
        return reconstruction_verdict(ref, x_gen, threshold=threshold,
                                      reference="data" if x_ref is None else "noise-free reference",
                                      generator=torch.Generator().manual_seed(cfg.seed))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Invariant metrics of free runs against the data (float64 distances).

        ``metric_runs`` free runs of ``metric_length`` steps start from data-inferred states
        at evenly spaced samples; ``d_stsp`` and ``d_h`` compare them, pooled, with the data
        windows from the same starts (several runs cover the attractor as well as one long
        run at a fraction of the sequential cost); ``pe`` is the n-step prediction error.
        When the data carry a noise-free ``reference`` (simulated with observation noise),
        ``d_stsp_clean`` and ``d_h_clean`` compare with it too (observation noise alone keeps
        ``d_stsp`` against noisy data above a floor: about 0.8 for Lorenz-63 at 5 %).
        ``spread`` is the late free run's variation relative to the data's (near 0: the model
        settled on a fixed point) and ``escaped`` 1.0 when the free run runs away (see
        :mod:`explorer.training.verdict`; :func:`metrics_verdict` judges these numbers). With
        ``config.lyapunov`` also ``lyapunov`` (model, per time unit of the data) and
        ``lyapunov_data`` (the source's published value, when known). The best model is
        chosen by ``d_stsp`` (against the data, as in practice).
        """
        return self.task.metrics()

    def best_model(self) -> ReconstructionModel:
        """A copy of the model with the lowest D_stsp so far (the current one if none yet)."""
        m = build_model(self.model.config)
        m.load_state_dict(self.best_state())
        return m

    def _planned_steps(self) -> int:
        return self.config.steps

    # ------------------------------------------------------------------ checkpoints
    def save(self, path, *, include_data: bool = True) -> Path:
        """Save everything needed to resume exactly (atomically; see :mod:`.checkpoint`)."""
        return save_checkpoint(path, self.model, optimizer=self.optimizer,
                               config=self.config.as_dict(),
                               normalisation=self.data.normalisation,
                               history={"losses": self.history, "metrics": self.metric_history},
                               trainer_state=self.state(),
                               task={"name": self.task.name, "config": self.config.as_dict()},
                               task_state=self.task.state_dict(),
                               loop_config=self.loop_config.as_dict(),
                               data=self.data if include_data else None)

    @classmethod
    def load(cls, path, data: TimeSeries | Any | None = None, *,
             device: str | None = None) -> Trainer:
        """A trainer restored from :meth:`save`; it continues the same loss curve. Reads
        version 1 checkpoints too.

        Args:
            data: the training series when the checkpoint was saved without it.
            device: override the saved device.

        Raises:
            CheckpointError: unreadable or truncated file; CheckpointMismatchError: a
            checkpoint of another task; ParameterError: a bare model, or no data.
        """
        ck = load_checkpoint(path)
        name = Path(path).name
        if ck.task_name is not None and ck.task_name != GTFTask.name:
            raise CheckpointMismatchError(f"{name} holds a {ck.task_name!r} checkpoint, not a "
                                          f"reconstruction ({GTFTask.name!r}) run")
        if ck.trainer_config is None or ck.trainer_state is None:
            raise ParameterError(f"{name} holds a model but no trainer state")
        config = TrainerConfig.from_dict(ck.trainer_config)
        if device is not None:
            config = config.replace(device=device)
        if data is None:
            if ck.data is None:
                raise ParameterError(f"{name} was saved without its data; pass data=")
            data = ck.data
        model = ck.model()
        if not isinstance(model, ReconstructionModel):
            raise CheckpointMismatchError(f"{name} holds a {type(model).__name__}, "
                                          "not a reconstruction model")
        tr = cls(data, config, model=model)
        tr.model.load_state_dict(ck.model_state)
        tr.optimizer.load_state_dict(ck.optimizer_state)
        st = ck.trainer_state
        tr.load_state(st)
        tr.task.load_state_dict(ck.task_state if ck.task_state is not None else st)   # v1: in st
        hist = ck.history or {}
        tr.history = {k: list(v) for k, v in hist.get("losses", tr.history).items()}
        tr.metric_history = [dict(m) for m in hist.get("metrics", [])]
        return tr
