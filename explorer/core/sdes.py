r"""Built-in stochastic systems (Itô SDEs :math:`dX = f(X)\,dt + g(X)\,dW`), literature names.

Each class gives its drift (``rhs``) with an analytic Jacobian, its diffusion ``g``
(diagonal noise: one Wiener process per variable) and, where ``g`` depends on the state,
the derivative Milstein's scheme needs. Metadata as for flows: parameters with bounds and
docs, a default initial condition and time step, LaTeX, a citation. The stationary
statistics quoted in the descriptions are what ``tests/test_sde.py`` checks against.

States are ``(..., D)`` tensors; parameters floats or tensors broadcasting against
``x[..., 0]``. Simulate with :func:`explorer.core.simulate.simulate` and a ``seed``.
"""

from __future__ import annotations

import torch

from .registry import register
from .system import SDE, Param, matrix

GARDINER = ("C. W. Gardiner, Stochastic Methods: A Handbook for the Natural and Social "
            "Sciences, 4th ed. (Springer, 2009), Sec. 3.8.4 and 4.5.6")


def _full(value, like: torch.Tensor) -> torch.Tensor:
    """A parameter (float or (B,) tensor) as a tensor broadcast to ``like[..., 0]``'s shape."""
    return torch.zeros_like(like[..., 0]) + value


def _col(value, like: torch.Tensor) -> torch.Tensor:
    """A parameter as a (..., 1) column, to scale a one-variable state ``like`` (..., 1)."""
    return _full(value, like).unsqueeze(-1)


@register
class OrnsteinUhlenbeck(SDE):
    name = "ornstein_uhlenbeck"
    aliases = ("ou",)
    title = "Ornstein–Uhlenbeck"
    variables = ("x",)
    parameters = (
        Param("theta", 1.0, 0.01, 20.0, "relaxation rate towards the mean (1/time)"),
        Param("mu", 0.0, -10.0, 10.0, "long-run mean"),
        Param("sigma", 1.0, 0.0, 10.0, "noise amplitude"),
    )
    default_x0 = (0.0,)
    default_dt = 0.01
    period = 1.0
    additive = True
    latex = r"dX = \theta (\mu - X)\, dt + \sigma\, dW"
    description = ("The velocity of a Brownian particle under friction: mean-reverting Gaussian "
                   "noise. Stationary law N(mu, sigma^2 / (2 theta)); the autocorrelation decays "
                   "as exp(-theta t).")
    citation = ("G. E. Uhlenbeck, L. S. Ornstein, On the theory of the Brownian motion, "
                "Phys. Rev. 36, 823 (1930)")

    def rhs(self, x, p):
        return _col(p["theta"], x) * (_col(p["mu"], x) - x)

    def jacobian(self, x, p):
        return matrix([[-_full(p["theta"], x)]], x)

    def diffusion(self, x, p):
        return _col(p["sigma"], x)


@register
class RotatingOU(SDE):
    name = "rotating_ou"
    aliases = ("ou2d", "linear_ou_2d")
    title = "Rotating 2D Ornstein–Uhlenbeck"
    variables = ("x", "y")
    parameters = (
        Param("kx", 1.0, 0.01, 20.0, "relaxation rate of x"),
        Param("ky", 1.0, 0.01, 20.0, "relaxation rate of y"),
        Param("omega", 2.0, -20.0, 20.0, "rotation rate of the drift (non-gradient part)"),
        Param("sigma_x", 1.0, 0.0, 10.0, "noise amplitude on x"),
        Param("sigma_y", 0.3, 0.0, 10.0, "noise amplitude on y"),
    )
    default_x0 = (0.0, 0.0)
    default_dt = 0.01
    period = 1.0
    additive = True
    latex = (r"dX = -A X\, dt + \Sigma\, dW, \quad A = \begin{pmatrix} k_x & -\omega \\ "
             r"\omega & k_y \end{pmatrix}, \quad \Sigma = \mathrm{diag}(\sigma_x, \sigma_y)")
    description = ("A linear Gaussian process driven out of equilibrium: rotation plus unequal "
                   "noise on the two axes give a stationary state with a probability current. "
                   "Its covariance C solves A C + C A^T = Sigma Sigma^T (a Lyapunov equation).")
    citation = GARDINER

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([-p["kx"] * x_ + p["omega"] * y, -p["omega"] * x_ - p["ky"] * y], -1)

    def jacobian(self, x, p):
        w = p["omega"]
        return matrix([[-_full(p["kx"], x), w], [-_full(w, x), -_full(p["ky"], x)]], x)

    def diffusion(self, x, p):
        return torch.stack([_full(p["sigma_x"], x), _full(p["sigma_y"], x)], -1)


@register
class RotatingDoubleWell(SDE):
    name = "rotating_double_well"
    aliases = ("double_well",)
    title = "Double well with rotation"
    variables = ("x", "y")
    parameters = (
        Param("k", 1.0, 0.1, 20.0, "stiffness of the confinement in y"),
        Param("omega", 1.0, -10.0, 10.0, "strength of the rotational (non-gradient) drift"),
        Param("sigma", 0.7, 0.0, 5.0, "noise amplitude (temperature = sigma^2 / 2)"),
    )
    default_x0 = (1.0, 0.0)
    default_dt = 0.01
    period = 5.0
    additive = True
    latex = (r"U = \tfrac14 (x^2 - 1)^2 + \tfrac{k}{2} y^2, \quad "
             r"dX = -(I - \omega J) \nabla U\, dt + \sigma\, dW, \quad "
             r"J = \begin{pmatrix} 0 & -1 \\ 1 & 0 \end{pmatrix}")
    description = ("Noise-activated hopping between two wells (Kramers' problem) with a "
                   "rotational drift along the level lines of U. The rotation makes the process "
                   "irreversible but leaves the stationary density exp(-2U / sigma^2) unchanged.")
    citation = ("H. A. Kramers, Brownian motion in a field of force and the diffusion model of "
                "chemical reactions, Physica 7, 284 (1940)")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        ux, uy = x_ ** 3 - x_, p["k"] * y                   # grad U
        w = p["omega"]
        return torch.stack([-ux - w * uy, -uy + w * ux], -1)

    def jacobian(self, x, p):
        x_, _ = x.unbind(-1)
        k, w = p["k"], p["omega"]
        uxx = 3.0 * x_ ** 2 - 1.0
        return matrix([[-uxx, -_full(w * k, x)], [w * uxx, -_full(k, x)]], x)

    def diffusion(self, x, p):
        return torch.zeros_like(x) + _col(p["sigma"], x)


@register
class GeometricBrownianMotion(SDE):
    name = "geometric_brownian_motion"
    aliases = ("gbm",)
    title = "Geometric Brownian motion"
    variables = ("x",)
    parameters = (
        Param("mu", 0.5, -5.0, 5.0, "drift rate (growth per unit time)"),
        Param("sigma", 0.5, 0.0, 3.0, "volatility (multiplicative noise amplitude)"),
    )
    default_x0 = (1.0,)
    default_dt = 0.001
    period = 1.0
    latex = r"dX = \mu X\, dt + \sigma X\, dW"
    description = ("Multiplicative noise with a closed-form solution, X_t = X_0 exp((mu - "
                   "sigma^2/2) t + sigma W_t): the Black-Scholes model of a stock price and the "
                   "standard test of SDE solvers' orders of convergence.")
    citation = ("F. Black, M. Scholes, The pricing of options and corporate liabilities, "
                "J. Polit. Econ. 81, 637 (1973); D. J. Higham, SIAM Rev. 43, 525 (2001)")

    def rhs(self, x, p):
        return _col(p["mu"], x) * x

    def jacobian(self, x, p):
        return matrix([[_full(p["mu"], x)]], x)

    def diffusion(self, x, p):
        return _col(p["sigma"], x) * x

    def diffusion_derivative(self, x, p):
        return _col(p["sigma"], x)
