"""Trainable models for dynamical-systems reconstruction (torch only; no UI).

Each model has a frozen ``*Config``, ``step``/``jacobian``/``forward`` and ``as_system()``,
which returns a float64 snapshot as an :class:`explorer.core.system.Map`, so every analysis
in :mod:`explorer.core.analysis` works on a trained model. :mod:`explorer.models.pwl` analyses
the piecewise-linear structure exactly (subregions, symbolic codes, fixed points, cycles).
:mod:`explorer.models.wrap` turns any ``torch.nn.Module`` step or vector field into a system
(:func:`module_map`, :func:`module_flow`) with autograd Jacobians. :mod:`explorer.models.onsager`
is the I-OnsagerNet SDE model (potential, mobility, antisymmetric part; entropy production).
"""

from .plrnn import (ALRNN, CONFIGS, MODELS, PLRNN, ALRNNConfig, ModelMap, PLRNNConfig,
                    ReconstructionModel, ShallowPLRNN, ShallowPLRNNConfig, build_model,
                    config_from_dict, normalized_positive_definite)
from .pwl import (PWLCycle, PWLFixedPoint, SymbolicSequence, all_patterns, bitcode,
                  pwl_cycles, pwl_fixed_points, subregions, symbolic_sequence, transition_graph)
from .onsager import IOnsagerNet, OnsagerConfig
from .wrap import ModuleFlow, ModuleMap, module_flow, module_map, module_system

__all__ = ["ALRNN", "CONFIGS", "MODELS", "PLRNN", "ALRNNConfig", "ModelMap", "PLRNNConfig",
           "ReconstructionModel", "ShallowPLRNN", "ShallowPLRNNConfig", "build_model",
           "config_from_dict", "normalized_positive_definite", "PWLCycle", "PWLFixedPoint",
           "SymbolicSequence", "all_patterns", "bitcode", "pwl_cycles", "pwl_fixed_points",
           "subregions", "symbolic_sequence", "transition_graph",
           "ModuleFlow", "ModuleMap", "module_flow", "module_map", "module_system",
           "IOnsagerNet", "OnsagerConfig"]
