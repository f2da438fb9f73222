"""Checkpoints: atomic saves, and loads that never execute pickled code.

A checkpoint is one ``torch.save`` file holding only plain data (dicts, lists, strings,
numbers, tensors): the model's config as a dict and its ``state_dict``, the optimiser's
``state_dict``, the trainer config as a dict, the data normalisation, the metric history, the
trainer's counters and RNG state, and optionally the (standardised) training data. It is
read back with ``torch.load(..., weights_only=True)`` only, so a checkpoint from elsewhere
cannot run code. Saving writes a temporary file in the same folder and renames it over the
target (``os.replace``, atomic on POSIX and Windows): an interrupted save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.errors import ExplorerError
from ..models.plrnn import ReconstructionModel, build_model, config_from_dict
from .data import Normalisation, TimeSeries

FORMAT = "dynamics-explorer/checkpoint"
VERSION = 1


class CheckpointError(ExplorerError, ValueError):
    """A checkpoint file is missing, truncated, not a checkpoint, or from a newer version."""


@dataclass(frozen=True)
class Checkpoint:
    """The contents of a checkpoint (plain data; :meth:`model` rebuilds the module).

    Attributes:
        model_config: the model's ``config.as_dict()``.
        model_state: the model's ``state_dict`` (CPU tensors).
        optimizer_state: the optimiser's ``state_dict``, or ``None``.
        trainer_config: the trainer's config as a dict, or ``None``.
        normalisation: the data standardisation, or ``None``.
        history: metric and loss history (plain data).
        trainer_state: counters, RNG and forcing state of a trainer, or ``None``.
        data: the standardised training series, or ``None``.
    """

    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None = None
    trainer_config: dict[str, Any] | None = None
    normalisation: Normalisation | None = None
    history: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    data: TimeSeries | None = None

    def model(self) -> ReconstructionModel:
        """The model rebuilt from its config with the saved weights (CPU, float32)."""
        m = build_model(config_from_dict(self.model_config))
        m.load_state_dict(self.model_state)
        return m


def _cpu(obj):
    """Recursively move tensors to the CPU (and copy them): a device-independent file."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, Mapping):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_checkpoint(path, model: ReconstructionModel, *, optimizer: torch.optim.Optimizer | None = None,
                    config: Mapping[str, Any] | None = None,
                    normalisation: Normalisation | None = None,
                    history: Mapping[str, Any] | None = None,
                    trainer_state: Mapping[str, Any] | None = None,
                    data: TimeSeries | None = None) -> Path:
    """Save a model (and optionally its training state) atomically to ``path``.

    Args:
        model: the model; its config and ``state_dict`` are stored.
        optimizer: its ``state_dict`` is stored (to resume training exactly).
        config: the trainer config as a plain dict.
        normalisation: the data standardisation (to map outputs back to data units).
        history: metric/loss history (plain data: dicts, lists, numbers, strings).
        trainer_state: trainer counters and RNG state (plain data and tensors).
        data: the training series (makes the checkpoint self-contained).

    Returns:
        The path written.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.as_dict(),
        "model_state": _cpu(model.state_dict()),
        "optimizer_state": None if optimizer is None else _cpu(optimizer.state_dict()),
        "trainer_config": None if config is None else dict(config),
        "normalisation": None if normalisation is None else normalisation.as_dict(),
        "history": None if history is None else _cpu(dict(history)),
        "trainer_state": None if trainer_state is None else _cpu(dict(trainer_state)),
        "data": None if data is None else data.as_dict(),
    }
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


def load_checkpoint(path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: missing or unreadable file, not a checkpoint, unknown version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            AttributeError, ImportError, KeyError) as e:
        raise CheckpointError(f"{path.name} is not a readable checkpoint "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a Dynamics Explorer checkpoint")
    if not isinstance(payload.get("version"), int) or payload["version"] > VERSION:
        raise CheckpointError(f"{path.name} has checkpoint version {payload.get('version')!r}; "
                              f"this version reads up to {VERSION}")
    try:
        norm = payload.get("normalisation")
        data = payload.get("data")
        return Checkpoint(model_config=dict(payload["model_config"]),
                          model_state=dict(payload["model_state"]),
                          optimizer_state=payload.get("optimizer_state"),
                          trainer_config=payload.get("trainer_config"),
                          normalisation=None if norm is None else Normalisation.from_dict(norm),
                          history=payload.get("history"),
                          trainer_state=payload.get("trainer_state"),
                          data=None if data is None else TimeSeries.from_dict(data))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name} is incomplete: {type(e).__name__}: {e}") from e
