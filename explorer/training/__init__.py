"""Training (torch only; no UI).

:class:`TrainingLoop` (:mod:`.loop`) trains any model on any :class:`Task` (``step()``,
``run(n, callbacks, stop)``, evaluation, history, skipping of NaN batches, rollback,
``save``/``restore``). :class:`Trainer` is that loop with :class:`GTFTask`: the models of
:mod:`explorer.models` trained with generalized teacher forcing (:mod:`.gtf`) on a
standardised :class:`TimeSeries` (:mod:`.data`). Checkpoints are atomic, load with
``weights_only=True`` and record which task and model they hold (:mod:`.checkpoint`,
:mod:`.registry`).
"""

from .checkpoint import (
                         Checkpoint,
                         CheckpointError,
                         CheckpointMismatchError,
                         load_checkpoint,
                         model_identity,
                         save_checkpoint,
)
from .data import (
                         DataError,
                         Normalisation,
                         TimeSeries,
                         from_array,
                         from_file,
                         from_system,
                         load_timeseries,
                         sample_windows,
                         validate_array,
)
from .gtf import (
                         AdaptiveAlpha,
                         Rollout,
                         force,
                         gtf_rollout,
                         jacobian_norm_bound,
                         optimal_alpha,
                         prediction_error,
)
from .loop import LoopConfig, Task, TrainEvent, TrainingDivergedError, TrainingLoop
from .registry import build_model_from_spec, register_model
from .trainer import GTFTask, Trainer, TrainerConfig
from .verdict import (
                         D_H_GOOD,
                         D_STSP_GOOD,
                         Verdict,
                         metrics_verdict,
                         reconstruction_verdict,
)

__all__ = [
                         "D_H_GOOD",
                         "D_STSP_GOOD",
                         "AdaptiveAlpha",
                         "Checkpoint",
                         "CheckpointError",
                         "CheckpointMismatchError",
                         "DataError",
                         "GTFTask",
                         "LoopConfig",
                         "Normalisation",
                         "Rollout",
                         "Task",
                         "TimeSeries",
                         "TrainEvent",
                         "Trainer",
                         "TrainerConfig",
                         "TrainingDivergedError",
                         "TrainingLoop",
                         "Verdict",
                         "build_model_from_spec",
                         "force",
                         "from_array",
                         "from_file",
                         "from_system",
                         "gtf_rollout",
                         "jacobian_norm_bound",
                         "load_checkpoint",
                         "load_timeseries",
                         "metrics_verdict",
                         "model_identity",
                         "optimal_alpha",
                         "prediction_error",
                         "reconstruction_verdict",
                         "register_model",
                         "sample_windows",
                         "save_checkpoint",
                         "validate_array",
]
