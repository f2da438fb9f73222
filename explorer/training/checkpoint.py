"""Checkpoints: atomic saves, and loads that never execute pickled code.

A checkpoint is one ``torch.save`` file holding only plain data (dicts, lists, strings,
numbers, tensors): which task it belongs to (``task``: name and config), which model it holds
(``model``: class path, kind, config and parameter shapes; ``model_config`` too, for version 1
readers), the model's ``state_dict``, the optimiser's ``state_dict``, the training loop's
counters (``trainer_state``), the task's own state (RNG, schedules), the loss and metric
history, and whatever else the caller adds (the GTF trainer: its config, the data
normalisation and optionally the standardised training data). It is read back with
``torch.load(..., weights_only=True)`` only, so a checkpoint from elsewhere cannot run code.
Saving writes a temporary file in the same folder and renames it over the target
(``os.replace``, atomic on POSIX and Windows): an interrupted save leaves the previous
checkpoint intact.

This module imports no model code: :meth:`Checkpoint.model` rebuilds the module through
:mod:`.registry`. Version 1 files (reconstruction models only, before the generic loop) are
still read: they count as the ``"gtf"`` task.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import ExplorerError
from .data import Normalisation, TimeSeries
from .registry import build_model_from_spec

FORMAT = "dynamics-explorer/checkpoint"
VERSION = 2
#: payload keys a caller's ``extra`` may not use
RESERVED = ("format", "version", "task", "model", "model_config", "model_state",
            "optimizer_state", "trainer_state", "task_state", "history", "loop_config")
#: the task name of version 1 checkpoints (written by the GTF trainer)
V1_TASK = "gtf"


class CheckpointError(ExplorerError, ValueError):
    """A checkpoint file is missing, truncated, not a checkpoint, or from a newer version."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of another task or another model than the one loading it."""


def model_identity(model: torch.nn.Module) -> dict[str, Any]:
    """What a checkpoint records about its model: ``class`` (``"module.QualName"``), ``kind``
    (the class's short name, when it has one), ``config`` (its ``config.as_dict()`` or a
    dataclass config as a dict, else ``None``) and ``shapes`` (parameter and buffer shapes)."""
    cls = type(model)
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "as_dict"):
        cfg = dict(cfg.as_dict())
    elif cfg is not None and is_dataclass(cfg):
        cfg = asdict(cfg)
    elif not isinstance(cfg, Mapping):
        cfg = None
    kind = getattr(model, "kind", None)
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "kind": kind if isinstance(kind, str) and kind else None,
            "config": None if cfg is None else dict(cfg),
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()}}


def _short(cls_path: str | None) -> str:
    return (cls_path or "?").rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Checkpoint:
    """The contents of a checkpoint (plain data; :meth:`model` rebuilds the module).

    Attributes:
        model_config: the model's config as a dict (``{}`` when it has none).
        model_state: the model's ``state_dict`` (CPU tensors).
        optimizer_state: the optimiser's ``state_dict``, or ``None``.
        trainer_config: the GTF trainer's config as a dict, or ``None``.
        normalisation: the data standardisation, or ``None``.
        history: loss and metric history (plain data).
        trainer_state: the training loop's counters (and, in version 1 files, the GTF
            trainer's RNG and forcing state), or ``None``.
        data: the standardised training series, or ``None``.
        task_name: the task's name (``None``: a bare model); version 1 files: ``"gtf"`` when
            they hold a trainer state.
        task_config: the task's config (plain data), or ``None``.
        task_state: the task's own resumable state, or ``None``.
        model_spec: ``class``, ``kind``, ``config``, ``shapes`` of the model.
        loop_config: the loop's config as a dict, or ``None``.
        extra: other top-level entries the saver added.
        version: the file's format version.
    """

    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    trainer_config: dict[str, Any] | None = None
    normalisation: Normalisation | None = None
    history: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    data: TimeSeries | None = None
    task_name: str | None = None
    task_config: dict[str, Any] | None = None
    task_state: dict[str, Any] | None = None
    model_spec: dict[str, Any] = field(default_factory=dict)
    loop_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = VERSION

    def model(self) -> torch.nn.Module:
        """The model rebuilt from its recorded kind/class and config, with the saved weights
        (CPU, float32). Raises :class:`CheckpointError` when no builder is registered."""
        try:
            m = build_model_from_spec(self.model_spec)
        except (LookupError, ExplorerError, TypeError) as e:
            raise CheckpointError(f"cannot rebuild the checkpoint's model: {_one_line(e)}") from e
        m.load_state_dict(self.model_state)
        return m

    def check_model(self, expected: Mapping[str, Any], name: str = "the checkpoint") -> None:
        """Refuse (:class:`CheckpointMismatchError`, one line) unless this checkpoint holds the
        same model class, kind, config and parameter shapes as ``expected``
        (:func:`model_identity` of the model that would load it)."""
        mine = self.model_spec
        if mine.get("class") and expected.get("class") and mine["class"] != expected["class"]:
            raise CheckpointMismatchError(f"{name} holds a {_short(mine['class'])} model, "
                                          f"not a {_short(expected['class'])}")
        if mine.get("kind") != expected.get("kind") and mine.get("kind") and expected.get("kind"):
            raise CheckpointMismatchError(f"{name} holds a {mine['kind']!r} model, "
                                          f"not a {expected['kind']!r}")
        a, b = mine.get("config") or {}, expected.get("config") or {}
        if a != b:
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            diff = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])
            raise CheckpointMismatchError(f"{name} holds a {_short(expected.get('class'))} "
                                          f"with another configuration ({diff})")
        sa, sb = mine.get("shapes"), expected.get("shapes")
        if sa is not None and sb is not None and dict(sa) != dict(sb):
            keys = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
            k = keys[0]
            raise CheckpointMismatchError(f"{name} holds a {_short(mine.get('class'))} of other "
                                          f"shapes ({k}: {sa.get(k)} vs {sb.get(k)})")


def _unsafe_reason(e: BaseException) -> str:
    """One line for a file the weights-only reader refused (PyTorch's own text is several
    paragraphs and advises loading it unsafely)."""
    m = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)", str(e))
    what = f" (it names {m.group(1)})" if m else ""
    return (f"it holds Python objects besides tensors and plain data{what}, and reading "
            "those could run code; only checkpoints saved by Dynamics Explorer are read")


def _one_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def _cpu(obj):
    """Recursively move tensors to the CPU (and copy them): a device-independent file."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, Mapping):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_checkpoint(path, model: torch.nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    config: Mapping[str, Any] | None = None,
                    normalisation: Normalisation | None = None,
                    history: Mapping[str, Any] | None = None,
                    trainer_state: Mapping[str, Any] | None = None,
                    data: TimeSeries | None = None,
                    task: Mapping[str, Any] | None = None,
                    task_state: Mapping[str, Any] | None = None,
                    loop_config: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Save a model (and optionally its training state) atomically to ``path``.

    Args:
        model: the model; its identity (:func:`model_identity`) and ``state_dict`` are stored.
        optimizer: its ``state_dict`` is stored (to resume training exactly).
        config: the GTF trainer config as a plain dict.
        normalisation: the data standardisation (to map outputs back to data units).
        history: loss/metric history (plain data: dicts, lists, numbers, strings).
        trainer_state: the training loop's counters and RNG state (plain data and tensors).
        data: the training series (makes the checkpoint self-contained).
        task: ``{"name": ..., "config": {...}}`` of the task trained.
        task_state: the task's own resumable state.
        loop_config: the loop's config as a dict.
        extra: further plain data, stored at the top level (names in :data:`RESERVED` and the
            ones above are refused).

    Returns:
        The path written.
    """
    path = Path(path)
    ident = model_identity(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "task": None if task is None else {"name": str(task["name"]),
                                           "config": _cpu(dict(task.get("config") or {}))},
        "model": ident,
        "model_config": ident["config"] or {},
        "model_state": _cpu(model.state_dict()),
        "optimizer_state": None if optimizer is None else _cpu(optimizer.state_dict()),
        "trainer_config": None if config is None else dict(config),
        "normalisation": None if normalisation is None else normalisation.as_dict(),
        "history": None if history is None else _cpu(dict(history)),
        "trainer_state": None if trainer_state is None else _cpu(dict(trainer_state)),
        "task_state": None if task_state is None else _cpu(dict(task_state)),
        "loop_config": None if loop_config is None else dict(loop_config),
        "data": None if data is None else data.as_dict(),
    }
    for k, v in (extra or {}).items():
        if k in payload:
            raise ValueError(f"checkpoint extra: {k!r} is a reserved name")
        payload[k] = _cpu(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


_KNOWN = {"format", "version", "task", "model", "model_config", "model_state", "optimizer_state",
          "trainer_config", "normalisation", "history", "trainer_state", "task_state",
          "loop_config", "data"}


def load_checkpoint(path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable or truncated file, not a checkpoint, unknown
            version; always with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path.name} is refused: {_unsafe_reason(e)}") from e
    except (RuntimeError, EOFError, ValueError, OSError, TypeError,
            AttributeError, ImportError, KeyError, IndexError, zipfile.BadZipFile,
            UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise CheckpointError(f"{path.name} is not a readable checkpoint "
                              f"({type(e).__name__}: {_one_line(e)})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a Dynamics Explorer checkpoint")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
        raise CheckpointError(f"{path.name} has checkpoint version {version!r}; "
                              f"this version reads 1 to {VERSION}")
    try:
        norm = payload.get("normalisation")
        data = payload.get("data")
        model_config = dict(payload.get("model_config") or {})
        state = payload["model_state"]
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise TypeError("model_state is not a dict of tensors")
        spec = payload.get("model")
        if spec is None:                                               # version 1
            spec = {"class": None, "kind": model_config.get("kind"), "config": model_config,
                    "shapes": None}
        task = payload.get("task")
        if task is None and version == 1 and payload.get("trainer_state") is not None:
            task = {"name": V1_TASK, "config": payload.get("trainer_config") or {}}
        return Checkpoint(model_config=model_config,
                          model_state=dict(state),
                          optimizer_state=payload.get("optimizer_state"),
                          trainer_config=payload.get("trainer_config"),
                          normalisation=None if norm is None else Normalisation.from_dict(norm),
                          history=payload.get("history"),
                          trainer_state=payload.get("trainer_state"),
                          data=None if data is None else TimeSeries.from_dict(data),
                          task_name=None if task is None else str(task["name"]),
                          task_config=None if task is None else dict(task.get("config") or {}),
                          task_state=payload.get("task_state"),
                          model_spec=dict(spec),
                          loop_config=payload.get("loop_config"),
                          extra={k: v for k, v in payload.items() if k not in _KNOWN},
                          version=version)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path.name} is incomplete ({type(e).__name__}: {_one_line(e)})") from e
