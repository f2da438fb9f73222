"""Built-in continuous-time systems (flows), each with its literature name.

Every class documents its equations (``latex``), parameters with bounds, a default initial
condition near the attractor, a recommended time step and an analytic Jacobian. Published
Lyapunov exponents are attached where a source exists. States are ``(..., D)`` tensors,
parameters floats or tensors broadcasting against ``x[..., 0]``.
"""

from __future__ import annotations

import torch

from .registry import register
from .system import Flow, LyapunovReference, Param, matrix


@register
class Lorenz63(Flow):
    name = "lorenz63"
    aliases = ("lorenz",)
    title = "Lorenz-63"
    variables = ("x", "y", "z")
    parameters = (
        Param("sigma", 10.0, 0.0, 100.0, "Prandtl number"),
        Param("rho", 28.0, 0.0, 500.0, "Rayleigh number (scaled)"),
        Param("beta", 8.0 / 3.0, 0.0, 20.0, "geometric factor of the convection cell"),
    )
    default_x0 = (-8.0, 7.0, 27.0)
    default_dt = 0.01
    period = 0.75
    latex = (r"\dot x = \sigma (y - x) \\ \dot y = x (\rho - z) - y \\ "
             r"\dot z = x y - \beta z")
    description = ("Lorenz's truncation of Rayleigh-Benard convection: the butterfly attractor, "
                   "the first strange attractor found in a flow. Chaotic for rho above about 24.74.")
    citation = "E. N. Lorenz, Deterministic nonperiodic flow, J. Atmos. Sci. 20, 130 (1963)"
    lyapunov_reference = LyapunovReference(
        (0.9056, 0.0, -14.5723),
        "J. C. Sprott, Chaos and Time-Series Analysis (Oxford UP, 2003), Table A.1")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([p["sigma"] * (y - x_), x_ * (p["rho"] - z) - y,
                            x_ * y - p["beta"] * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        s, r, b = p["sigma"], p["rho"], p["beta"]
        return matrix([[-s, s, 0.0], [r - z, -1.0, -x_], [y, x_, -b]], x)
