"""Pure numerics: systems, solvers, simulation and analysis (torch, numpy, scipy; no UI)."""
