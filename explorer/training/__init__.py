"""Training for dynamical-systems reconstruction (torch only; no UI).

:class:`Trainer` (``step()``, ``run(n, callbacks, stop)``, ``save``/``load``) trains the models of
:mod:`explorer.models` with generalized teacher forcing (:mod:`.gtf`) on a standardised
:class:`TimeSeries` (:mod:`.data`); checkpoints are atomic and load with ``weights_only=True``
(:mod:`.checkpoint`).
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import (DataError, Normalisation, TimeSeries, from_array, from_file, from_system,
                   load_timeseries, sample_windows, validate_array)
from .gtf import (AdaptiveAlpha, Rollout, force, gtf_rollout, jacobian_norm_bound,
                  optimal_alpha, prediction_error)
from .trainer import TrainEvent, Trainer, TrainerConfig, TrainingDivergedError
from .verdict import (D_H_GOOD, D_STSP_GOOD, Verdict, metrics_verdict,
                      reconstruction_verdict)

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint", "DataError",
           "Normalisation", "TimeSeries", "from_array", "from_file", "from_system",
           "load_timeseries", "sample_windows", "validate_array", "AdaptiveAlpha", "Rollout",
           "force", "gtf_rollout", "jacobian_norm_bound", "optimal_alpha", "prediction_error",
           "TrainEvent", "Trainer", "TrainerConfig", "TrainingDivergedError", "Verdict",
           "reconstruction_verdict", "metrics_verdict", "D_STSP_GOOD", "D_H_GOOD"]
