r"""A model-agnostic training loop: :class:`TrainingLoop` runs any :class:`Task`.

A *task* owns the model and the objective: it supplies ``model``, ``loss(model, step)`` (a
scalar tensor, optionally with extra numbers to record), ``evaluate(model)`` (metrics as
floats), a ``name`` and a plain-data ``config()``; it may supply ``make_optimizer``, a
learning-rate schedule ``lr_at(step)``, an ``after_step`` hook and its own resumable
``state_dict``. The loop owns everything else:

* :meth:`TrainingLoop.step`: one optimisation step (zero grads, loss, backward, gradient
  clipping, optimiser step) with its numbers recorded in :attr:`TrainingLoop.history`;
* evaluation every ``eval_every`` steps (rows in :attr:`TrainingLoop.metric_history`) and the
  best model by one metric;
* :meth:`TrainingLoop.run`: ``n`` steps, a :class:`TrainEvent` to the callbacks after each,
  an ETA, and a ``stop`` event that pauses (calling ``run`` again resumes);
* robustness: a batch whose loss or gradient is NaN/inf, or whose gradient norm exceeds
  ``explode_norm``, is *skipped* (no update) and counted; the run ends only after
  ``max_bad_steps`` bad batches in a row. Non-finite weights after an update roll the model
  and the optimiser back to the last good snapshot. Snapshots are taken every
  ``snapshot_every`` steps (or ``snapshot_seconds``) by ``copy_`` into preallocated tensors,
  so rollback costs nothing per step beyond one fused finiteness check of the weights;
* checkpoints (:meth:`TrainingLoop.save`, :meth:`TrainingLoop.restore`): atomic,
  weights-only files (:mod:`.checkpoint`) that record the task's name and config and the
  model's class, kind, config and parameter shapes; restoring a checkpoint of another task or
  model raises :class:`~explorer.training.checkpoint.CheckpointMismatchError` (one line).

A task in a few lines::

    class Regression(Task):
        name = "mlp-regression"

        def __init__(self, x, y):
            self.x, self.y = x, y
            self.model = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(),
                                             torch.nn.Linear(32, 1))

        def loss(self, model, step):
            return torch.mean((model(self.x) - self.y) ** 2)

        @torch.no_grad()
        def evaluate(self, model):
            return {"mse": float(torch.mean((model(self.x) - self.y) ** 2))}

    loop = TrainingLoop(Regression(x, y), LoopConfig(lr=1e-2, eval_every=100))
    loop.run(500, callbacks=[print])
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ExplorerError, ParameterError
from .checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    model_identity,
    save_checkpoint,
)


class TrainingDivergedError(ExplorerError, FloatingPointError):
    """Training cannot go on: ``max_bad_steps`` batches in a row gave a NaN/inf loss, a
    non-finite or exploding gradient, or non-finite weights.

    The loop has already restored the last good snapshot. ``step`` is the number of the
    optimisation step that failed (1-based: the step that would have been ``step``);
    ``reason`` says what went wrong on the last bad batch."""

    def __init__(self, message: str, step: int, reason: str):
        self.step = step
        self.reason = reason
        super().__init__(message)


class Task:
    """What a page or a script trains: a model and its objective (subclass and override).

    Required: ``model`` (a :class:`torch.nn.Module`, on its device), :meth:`loss`. Everything
    else has a default. Any object with these attributes works too (the loop only reads
    them); subclassing just supplies the defaults.

    Attributes:
        name: the kind of task (e.g. ``"gtf"``, ``"mlp-regression"``); stored in checkpoints,
            and a checkpoint of another name is refused.
        model: the module being trained.
    """

    name: str = "task"
    model: torch.nn.Module

    def loss(self, model: torch.nn.Module, step: int):
        """The scalar loss of optimisation step ``step`` (0-based), with gradients.

        Returns a tensor, or ``(tensor, {name: float})`` with extra numbers for the step's
        record (they become columns of :attr:`TrainingLoop.history`)."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Metrics of the current model (called without gradients, in eval mode)."""
        return {}

    def config(self) -> dict[str, Any]:
        """Plain data that defines the task (stored in checkpoints)."""
        return {}

    def make_optimizer(self, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The optimiser (default: Adam at the loop's ``lr``)."""
        return torch.optim.Adam(params, lr=lr)

    def lr_at(self, step: int) -> float | None:
        """Learning rate of step ``step`` (0-based); ``None``: the loop's constant ``lr``."""
        return None

    def after_step(self, model: torch.nn.Module, step: int, applied: bool) -> None:
        """Called after each step; ``applied`` is False when the batch was skipped."""

    def state_dict(self) -> dict[str, Any]:
        """Mutable task state to resume exactly (RNG states, schedules): plain data."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass(frozen=True)
class LoopConfig:
    """How :class:`TrainingLoop` optimises (the task defines *what*). Validated on construction."""

    lr: float = 1e-3                 # learning rate when the task has no lr_at schedule
    planned_steps: int = 1_000       # steps the ETA counts towards
    eval_every: int = 0              # evaluate the task every this many steps (0: never)
    best_metric: str | None = None   # keep a copy of the model with the lowest value of this metric
    grad_clip: float = 0.0           # max gradient norm (0: no clipping)
    explode_norm: float = 1e6        # a gradient norm above this counts as a bad batch (skipped)
    max_bad_steps: int = 10          # bad batches in a row that end the run (1: the first one)
    snapshot_every: int = 25         # steps between good-state snapshots (0: no rollback, no weight check)
    snapshot_seconds: float = 0.0    # also snapshot when this many seconds passed (0: by steps only)
    event_snapshots: bool = False    # each TrainEvent carries a CPU copy of the state_dict

    def __post_init__(self):
        def bad(msg):
            raise ParameterError(f"loop config: {msg}")

        for name in ("planned_steps", "max_bad_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{name} must be a positive integer, got {v!r}")
        for name in ("eval_every", "snapshot_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(f"{name} must be an integer >= 0, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            bad(f"lr must be in (0, 10), got {self.lr!r}")
        if not (self.grad_clip >= 0 and self.explode_norm > 0 and self.snapshot_seconds >= 0):
            bad("grad_clip and snapshot_seconds must be >= 0, explode_norm > 0")
        if self.best_metric is not None and not isinstance(self.best_metric, str):
            bad(f"best_metric must be a metric name or None, got {self.best_metric!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoopConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParameterError(f"loop config: unknown field(s) {', '.join(unknown)}")
        return cls(**dict(d))

    def replace(self, **changes) -> LoopConfig:
        return type(self)(**{**self.as_dict(), **changes})


@dataclass(frozen=True)
class TrainEvent:
    """What :meth:`TrainingLoop.run` reports after each step (and when it stops).

    Attributes:
        step: optimisation steps applied so far (skipped batches do not count).
        losses: the step's numbers: ``loss``, ``grad_norm`` (before clipping), ``lr`` and the
            task's extras (the GTF trainer: ``alpha``); empty when no step was applied (a
            skipped batch, a pause).
        metrics: the task's evaluation on the steps where it ran, else ``None``.
        snapshot: detached CPU copy of the model's ``state_dict`` after the step, or ``None``
            (generic loops: only with ``event_snapshots``; the GTF trainer: always).
        seconds: training wall time so far (all runs).
        eta: estimated seconds to reach the planned steps (0 when reached).
        status: ``"running"``, ``"done"`` (the run's last step), ``"stopped"`` (the stop
            event was set) or ``"diverged"`` (rolled back and ended; see ``message``).
        message: a sentence for the UI.
        skipped: batches skipped so far because of a non-finite or exploding loss/gradient.
        rollbacks: times the model was rolled back to a snapshot so far.
    """

    step: int
    losses: dict[str, float]
    metrics: dict[str, float] | None
    snapshot: dict[str, torch.Tensor] | None
    seconds: float
    eta: float | None
    status: str = "running"
    message: str = ""
    skipped: int = 0
    rollbacks: int = 0


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one fused norm per dtype/device)."""
    if not tensors:
        return True
    norms = torch._foreach_norm(tensors) if hasattr(torch, "_foreach_norm") else \
        [torch.linalg.vector_norm(t) for t in tensors]
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def _copy_into(buf, value):
    """``value`` into ``buf`` in place when shapes match (no allocation), else a clone."""
    if isinstance(value, torch.Tensor):
        if isinstance(buf, torch.Tensor) and buf.shape == value.shape and buf.dtype == value.dtype \
                and buf.device == value.device:
            buf.copy_(value)
            return buf
        return value.detach().clone()
    return copy.deepcopy(value)


class TrainingLoop:
    """Optimise a :class:`Task`'s model: steps, evaluation, history, ETA, pause/resume,
    skipping of bad batches, rollback and checkpoints (see the module docstring).

    Args:
        task: the task (its ``model`` is trained in place).
        config: the :class:`LoopConfig`.
        optimizer: an existing optimiser over the model's parameters (default: the task's
            ``make_optimizer``, else Adam).

    Attributes:
        task, model, optimizer; ``loop_config`` (``config`` is the same object, except on the
        GTF :class:`~explorer.training.trainer.Trainer`, where it is the TrainerConfig);
        ``step_count`` (applied steps); ``seconds`` (wall
        time in :meth:`run`); ``history`` (columns ``step``, ``loss``, ``grad_norm``, ``lr``
        and the task's extras, one entry per applied step); ``metric_history`` (one dict per
        evaluation, with ``step``); ``best`` (``step`` and the best metric's value);
        ``skipped`` (bad batches skipped in all), ``rollbacks``, ``last_problem`` (what the
        last bad batch had), ``good_step`` (the step of the snapshot a rollback returns to).
    """

    def __init__(self, task: Task, config: LoopConfig | None = None, *,
                 optimizer: torch.optim.Optimizer | None = None):
        self.loop_config = config or LoopConfig()
        self.config = self.loop_config          # the GTF Trainer rebinds it to its TrainerConfig
        if not isinstance(getattr(task, "model", None), torch.nn.Module):
            raise ParameterError("a training task needs a torch.nn.Module as its .model")
        if not callable(getattr(task, "loss", None)):
            raise ParameterError("a training task needs a loss(model, step) method")
        self.task = task
        self.model: torch.nn.Module = task.model
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ParameterError("the task's model has no trainable parameters")
        if optimizer is None:
            make = getattr(task, "make_optimizer", None)
            optimizer = make(params, self.loop_config.lr) if make is not None else \
                torch.optim.Adam(params, lr=self.loop_config.lr)
        self.optimizer = optimizer
        self.step_count = 0
        self.seconds = 0.0
        self.history: dict[str, list[float]] = {k: [] for k in ("step", "loss", "grad_norm", "lr")}
        self.metric_history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.skipped = 0
        self.consecutive_bad = 0
        self.rollbacks = 0
        self.last_problem = ""
        self.good_step: int | None = None
        self._good_model: list[torch.Tensor] | None = None
        self._good_opt: dict[int, dict[str, Any]] = {}
        self._good_time = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def task_name(self) -> str:
        return str(getattr(self.task, "name", type(self.task).__name__))

    def task_config(self) -> dict[str, Any]:
        cfg = getattr(self.task, "config", None)
        return dict(cfg()) if callable(cfg) else {}

    def lr_at(self, step: int) -> float:
        """Learning rate of optimisation step ``step`` (0-based)."""
        f = getattr(self.task, "lr_at", None)
        lr = f(step) if f is not None else None
        return self.loop_config.lr if lr is None else float(lr)

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    # ------------------------------------------------------------------ rollback
    @torch.no_grad()
    def save_good_state(self) -> None:
        """Snapshot the model and optimiser as the state a rollback returns to (in place into
        tensors kept from the previous snapshot: no allocation once shapes are known)."""
        tensors = list(self.model.state_dict().values())
        if self._good_model is None or len(self._good_model) != len(tensors):
            self._good_model = [t.detach().clone() for t in tensors]
        else:
            self._good_model = [_copy_into(b, t) for b, t in zip(self._good_model, tensors)]
        good: dict[int, dict[str, Any]] = {}
        for i, p in enumerate(self._params()):
            st = self.optimizer.state.get(p)
            if st:
                old = self._good_opt.get(i, {})
                good[i] = {k: _copy_into(old.get(k), v) for k, v in st.items()}
        self._good_opt = good
        self.good_step = self.step_count
        self._good_time = time.perf_counter()

    @torch.no_grad()
    def rollback(self) -> int | None:
        """Restore the last snapshot of the model and optimiser; returns its step (``None``
        and nothing changed when there is none). The step count and history stay: the
        steps since the snapshot were taken, their update is undone."""
        self.optimizer.zero_grad(set_to_none=True)
        if self._good_model is None:
            return None
        for t, b in zip(self.model.state_dict().values(), self._good_model):
            t.copy_(b)
        for i, p in enumerate(self._params()):
            saved = self._good_opt.get(i)
            if saved is None:
                self.optimizer.state.pop(p, None)
                continue
            st = self.optimizer.state[p]
            for k in [k for k in st if k not in saved]:
                del st[k]
            for k, v in saved.items():
                cur = st.get(k)
                if isinstance(v, torch.Tensor) and isinstance(cur, torch.Tensor) and cur.shape == v.shape:
                    cur.copy_(v)
                else:
                    st[k] = v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        self.rollbacks += 1
        return self.good_step

    def _maybe_snapshot(self) -> None:
        cfg = self.loop_config
        if cfg.snapshot_every <= 0:
            return
        due = self.step_count - (self.good_step or 0) >= cfg.snapshot_every
        if not due and cfg.snapshot_seconds > 0:
            due = time.perf_counter() - self._good_time >= cfg.snapshot_seconds
        if due:
            self.save_good_state()

    # ------------------------------------------------------------------ one step
    def _bad(self, problem: str, out: dict[str, float]) -> dict[str, float]:
        """Count a bad batch; end the run (rollback, raise) after ``max_bad_steps`` in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        self.consecutive_bad += 1
        self.last_problem = problem
        after = getattr(self.task, "after_step", None)
        if after is not None:
            after(self.model, self.step_count, False)
        if self.consecutive_bad >= self.loop_config.max_bad_steps:
            n_bad = self.consecutive_bad
            self.consecutive_bad = 0
            restored = self.rollback()
            step = self.step_count + 1
            what = (f"{problem}" if n_bad == 1 else
                    f"{n_bad} batches in a row were skipped (last: {problem})")
            back = ("; no good state to restore" if restored is None else
                    f"; the last good state (step {restored}) was restored")
            raise TrainingDivergedError(f"training diverged at step {step}: {what}{back} "
                                        f"({self.skipped} skipped in all)", step, problem)
        return {**out, "skipped": 1.0}

    def step(self) -> dict[str, float]:
        """One optimisation step. Returns ``loss``, ``grad_norm``, ``lr`` and the task's extras.

        A NaN/inf loss or gradient, or a gradient norm above ``explode_norm``, skips the batch
        (no update; the returned dict then has ``"skipped": 1.0`` and the step count stays);
        non-finite weights after the update roll back to the last snapshot and count as a
        skipped batch too.

        Raises:
            TrainingDivergedError: the ``max_bad_steps``-th bad batch in a row; the last good
                snapshot is restored first.
        """
        cfg = self.loop_config
        if cfg.snapshot_every > 0 and self._good_model is None:
            self.save_good_state()                                    # the initial state
        lr = self.lr_at(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        res = self.task.loss(self.model, self.step_count)
        loss, extras = res if isinstance(res, tuple) else (res, {})
        extras = {k: float(v) for k, v in dict(extras).items()}
        self.optimizer.zero_grad(set_to_none=True)
        lv = float(loss.detach())
        out = {"loss": lv, "grad_norm": math.nan, **extras, "lr": lr}
        if not math.isfinite(lv):
            return self._bad(f"the loss is {lv}", out)
        loss.backward()
        params = [p for p in self._params() if p.grad is not None]
        gn = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
        out["grad_norm"] = gn
        if not math.isfinite(gn):
            return self._bad(f"the gradient norm is {gn}", out)
        if gn > cfg.explode_norm:
            return self._bad(f"the gradient norm {gn:.3g} exceeds {cfg.explode_norm:.3g} "
                             "(exploding gradient)", out)
        self.optimizer.step()
        if cfg.snapshot_every > 0 and not _all_finite(params):
            self.rollback()
            return self._bad("the weights became non-finite", out)
        self.consecutive_bad = 0
        after = getattr(self.task, "after_step", None)
        if after is not None:
            after(self.model, self.step_count, True)
        self.step_count += 1
        self._record(out)
        self._maybe_snapshot()
        return out

    def _record(self, out: Mapping[str, float]) -> None:
        h = self.history
        n = len(h["step"])
        h["step"].append(self.step_count)
        for k, v in out.items():
            col = h.get(k)
            if col is None:
                col = h[k] = [math.nan] * n
            col.append(v)
        for k, col in h.items():
            if len(col) == n:                                         # a column this step lacked
                col.append(math.nan)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The task's metrics for the current model (eval mode, no gradients)."""
        f = getattr(self.task, "evaluate", None)
        if f is None:
            return {}
        self.model.eval()
        try:
            return {k: float(v) for k, v in dict(f(self.model)).items()}
        finally:
            self.model.train()

    def _record_metrics(self, metrics: Mapping[str, float]) -> None:
        self.metric_history.append({"step": self.step_count, **metrics})
        key = self.loop_config.best_metric
        if key is None or key not in metrics:
            return
        d = float(metrics[key])
        if math.isfinite(d) and (self.best is None or d < self.best[key]):
            self.best = {"step": self.step_count, key: d}
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def best_state(self) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of the best model so far (the current one if none yet)."""
        if self._best_state is not None:
            return self._best_state
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A detached CPU copy of the model's ``state_dict``."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ loop
    def run(self, n: int, callbacks: Iterable[Callable[[TrainEvent], Any]] = (),
            stop: threading.Event | None = None) -> TrainEvent:
        """Apply up to ``n`` steps, emitting a :class:`TrainEvent` to ``callbacks`` after each.

        Skipped batches emit an event too (empty ``losses``, the reason in ``message``) and
        do not count towards ``n``. The task is evaluated every ``config.eval_every`` steps
        (counted over the whole training). Setting ``stop`` ends the run before the next step
        (status ``"stopped"``); calling :meth:`run` again resumes. ``max_bad_steps`` bad
        batches in a row restore the last good snapshot and end the run with a
        ``"diverged"`` event.

        Returns:
            The last event.
        """
        cfg = self.loop_config
        callbacks = tuple(callbacks)
        n = int(n)
        t_start = time.perf_counter()
        t_last = t_start
        done = 0

        def emit(ev):
            for cb in callbacks:
                cb(ev)
            return ev

        def snap():
            return self.snapshot() if cfg.event_snapshots else None

        def eta():
            if done == 0:
                return None
            rate = (time.perf_counter() - t_start) / done
            return rate * max(0, self._planned_steps() - self.step_count)

        def tick():
            nonlocal t_last
            now = time.perf_counter()
            self.seconds += now - t_last
            t_last = now

        def event(losses, metrics, status, message):
            return TrainEvent(self.step_count, losses, metrics, snap(), self.seconds, eta(),
                              status, message, self.skipped, self.rollbacks)

        while done < n:
            if stop is not None and stop.is_set():
                tick()
                return emit(event({}, None, "stopped", f"paused at step {self.step_count}"))
            try:
                losses = self.step()
            except TrainingDivergedError as e:
                tick()
                ev = event({}, None, "diverged", str(e))
                return emit(TrainEvent(**{**ev.__dict__, "eta": None}))
            if "skipped" in losses:
                tick()
                emit(event({}, None, "running",
                           f"batch skipped at step {self.step_count + 1}: {self.last_problem} "
                           f"({self.skipped} skipped in all)"))
                continue
            metrics = None
            if cfg.eval_every and self.step_count % cfg.eval_every == 0:
                metrics = self.evaluate()
                self._record_metrics(metrics)
            done += 1
            tick()
            last = done == n
            emit(ev := event(losses, metrics, "done" if last else "running",
                             f"step {self.step_count}, loss {losses['loss']:.4g}"))
            if last:
                return ev
        tick()
        return event({}, None, "done", "no steps requested")

    def _planned_steps(self) -> int:
        return self.loop_config.planned_steps

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """The loop's counters (plain data and tensors) for checkpoints."""
        return {"step_count": self.step_count, "seconds": self.seconds,
                "skipped": self.skipped, "rollbacks": self.rollbacks,
                "best": None if self.best is None else dict(self.best),
                "best_state": self._best_state}

    def load_state(self, st: Mapping[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.step_count = int(st["step_count"])
        self.seconds = float(st["seconds"])
        self.skipped = int(st.get("skipped", 0))
        self.rollbacks = int(st.get("rollbacks", 0))
        self.best = None if st.get("best") is None else dict(st["best"])
        self._best_state = st.get("best_state")
        self.consecutive_bad = 0
        self._good_model = None                       # the next step snapshots the loaded state
        self._good_opt = {}
        self.good_step = None

    def save(self, path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Save model, optimiser, loop and task state atomically to ``path`` (weights only;
        see :mod:`.checkpoint`). ``extra``: more plain data to store."""
        task_state = getattr(self.task, "state_dict", None)
        return save_checkpoint(
            path, self.model, optimizer=self.optimizer,
            task={"name": self.task_name, "config": self.task_config()},
            loop_config=self.loop_config.as_dict(),
            history={"losses": self.history, "metrics": self.metric_history},
            trainer_state=self.state(),
            task_state=task_state() if callable(task_state) else None,
            extra=extra)

    def restore(self, path) -> TrainingLoop:
        """Load a checkpoint written by :meth:`save` into this loop (same task and model).

        Raises:
            CheckpointError: unreadable, truncated or foreign file.
            CheckpointMismatchError: the file holds another task or another model.
        """
        ck = load_checkpoint(path)
        name = Path(path).name
        if ck.task_name != self.task_name:
            raise CheckpointMismatchError(
                f"{name} holds a {ck.task_name or 'bare model'!r} checkpoint, not {self.task_name!r}")
        ck.check_model(model_identity(self.model), name)
        if ck.trainer_state is None:
            raise CheckpointMismatchError(f"{name} holds a model but no training state")
        self.model.load_state_dict(ck.model_state)
        if ck.optimizer_state is not None:
            self.optimizer.load_state_dict(ck.optimizer_state)
        if ck.loop_config:                            # the run's plan and settings come back too
            cfg = LoopConfig.from_dict(ck.loop_config)
            if self.config is self.loop_config:
                self.config = cfg
            self.loop_config = cfg
        self.load_state(ck.trainer_state)
        hist = ck.history or {}
        if "losses" in hist:
            self.history = {k: list(v) for k, v in hist["losses"].items()}
        self.metric_history = [dict(m) for m in hist.get("metrics", [])]
        load_task = getattr(self.task, "load_state_dict", None)
        if ck.task_state is not None and load_task is not None:
            load_task(ck.task_state)
        return self
