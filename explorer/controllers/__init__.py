"""Page state (param.Parameterized controllers) and background work; no Panel imports.

Tested without a browser. Views in :mod:`explorer.views` build widgets from these.
"""

from .attractors import AttractorController, AttractorData
from .jobs import Done, JobRunner
from .live import Frame, LiveEnsemble
from .presets import PRESETS, Preset
from .reconstruction import ReconstructionController

__all__ = ["AttractorController", "AttractorData", "Done", "JobRunner", "Frame", "LiveEnsemble",
           "PRESETS", "Preset", "ReconstructionController"]
