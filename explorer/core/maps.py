"""Built-in discrete-time systems (maps), each with its literature name.

``rhs`` returns the next state. Same conventions as :mod:`explorer.core.flows`.
"""

from __future__ import annotations

import math

import torch

from .registry import register
from .system import LyapunovReference, Map, Param, matrix


@register
class Henon(Map):
    name = "henon"
    title = "Hénon map"
    variables = ("x", "y")
    parameters = (
        Param("a", 1.4, -2.0, 2.0, "nonlinearity (quadratic term)"),
        Param("b", 0.3, -1.5, 1.5, "area contraction (the Jacobian determinant is -b)"),
    )
    default_x0 = (0.1, 0.1)
    bound = 1e3
    latex = r"x_{n+1} = 1 - a x_n^2 + y_n \\ y_{n+1} = b x_n"
    description = ("Henon's two-dimensional quadratic map, a Poincare section caricature of the "
                   "Lorenz flow; its attractor has a Cantor-set cross-section.")
    citation = "M. Henon, A two-dimensional mapping with a strange attractor, Commun. Math. Phys. 50, 69 (1976)"
    lyapunov_reference = LyapunovReference(
        (0.4192, -1.6232),
        "J. C. Sprott, Chaos and Time-Series Analysis (Oxford UP, 2003), Table A.1; "
        "sum = ln 0.3 exactly")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([1.0 - p["a"] * x_ * x_ + y, p["b"] * x_ + 0.0 * y], -1)

    def jacobian(self, x, p):
        x_, _ = x.unbind(-1)
        return matrix([[-2.0 * p["a"] * x_, 1.0], [p["b"], 0.0]], x)
