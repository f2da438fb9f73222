"""Analysis, one module per question: Lyapunov spectra, sections and orbit diagrams,
fixed points, power spectra, stationary densities and entropy production (SDEs)."""

from .entropy import (Density, EntropyDensity, EntropyEstimate, EntropySweep,
                      ProbabilityCurrent, effective_potential, entropy_density_map,
                      entropy_production, entropy_sweep, estimate_entropy,
                      exact_entropy_production, linear_reference, probability_current,
                      stationary_density)
from .fixed_points import FixedPoint, classify, fixed_points
from .lyapunov import LyapunovResult, kaplan_yorke_dimension, lyapunov_spectrum
from .sections import OrbitDiagram, Section, orbit_diagram, poincare_section
from .spectra import PowerSpectrum, power_spectrum

__all__ = ["FixedPoint", "classify", "fixed_points", "LyapunovResult", "kaplan_yorke_dimension",
           "lyapunov_spectrum", "OrbitDiagram", "Section", "orbit_diagram", "poincare_section",
           "PowerSpectrum", "power_spectrum", "Density", "EntropyDensity", "EntropyEstimate",
           "EntropySweep", "ProbabilityCurrent", "effective_potential", "entropy_density_map",
           "entropy_production", "entropy_sweep", "estimate_entropy", "exact_entropy_production",
           "linear_reference", "probability_current", "stationary_density"]
