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


# ---------------------------------------------------------------------------------------------
# Non-equilibrium examples. Convention: the generator's diffusion matrix is D = g g^T / 2, so a
# diagonal noise g_i = sqrt(2 D_i) has diffusion coefficient D_i, and entropy production rates
# quoted below are e_p = < v^T D^{-1} v > with v = f - D grad ln rho (k_B = 1).

_J = r"J = \begin{pmatrix} 0 & -1 \\ 1 & 0 \end{pmatrix}"


@register
class LinearOU(SDE):
    r"""The 2D linear OU process of the entropy-production tests.

    .. math:: dX = -k (I - \gamma J) X\, dt + \sqrt{2 D}\, dW, \quad D = \mathrm{diag}(D_x, D_y)

    With :math:`D_x = D_y = D` the stationary law is :math:`N(0, (D/k) I)` whatever
    :math:`\gamma`; the probability velocity is :math:`v = k\gamma J x` and the entropy
    production rate :math:`e_p = \langle v^T D^{-1} v \rangle = 2 k \gamma^2` (exactly).
    """

    name = "linear_ou"
    title = "Linear OU with rotation"
    variables = ("x", "y")
    parameters = (
        Param("k", 1.0, 0.01, 20.0, "relaxation rate (1/time)"),
        Param("rotation", 1.0, -20.0, 20.0,
              "rotation strength gamma of the non-gradient drift k gamma J x"),
        Param("D_x", 1.0, 0.0, 10.0, "diffusion coefficient of x (noise amplitude sqrt(2 D_x))"),
        Param("D_y", 1.0, 0.0, 10.0, "diffusion coefficient of y (noise amplitude sqrt(2 D_y))"),
    )
    default_x0 = (1.0, 0.0)
    default_dt = 0.01
    period = 2.0
    additive = True
    latex = (r"dX = -k (I - \gamma J) X\, dt + \sqrt{2 D}\, dW, \quad " + _J
             + r", \quad D = \mathrm{diag}(D_x, D_y)")
    description = ("Relaxation plus rotation: the simplest irreversible diffusion. With "
                   "D_x = D_y = D the stationary law is N(0, (D/k) I) for every rotation gamma, "
                   "yet the process carries a circulating current: entropy production "
                   "2 k gamma^2 (exact). At the defaults (k = 1, D_x = D_y = 1): covariance I "
                   "and entropy production 2 gamma^2. Unequal D_x, D_y tilt the covariance "
                   "(Lyapunov equation A C + C A^T = 2 D).")
    citation = GARDINER

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        k, g = p["k"], p["rotation"]
        return torch.stack([-k * (x_ + g * y), -k * (y - g * x_)], -1)

    def jacobian(self, x, p):
        k, g = _full(p["k"], x), p["rotation"]
        return matrix([[-k, -k * g], [k * g, -k]], x)

    def diffusion(self, x, p):
        return torch.stack([torch.sqrt(2.0 * _full(p["D_x"], x)),
                            torch.sqrt(2.0 * _full(p["D_y"], x))], -1)


@register
class MaierStein(SDE):
    r"""The Maier–Stein model: the standard non-gradient escape problem.

    .. math:: dx = (x - x^3 - \beta x y^2)\, dt + \sqrt{2\varepsilon}\, dW_1, \quad
              dy = -(1 + x^2)\, y\, dt + \sqrt{2\varepsilon}\, dW_2

    For :math:`\beta = 1` the drift is :math:`-\nabla U`,
    :math:`U = -x^2/2 + x^4/4 + y^2/2 + x^2 y^2/2`, and the stationary density is
    :math:`\propto e^{-U/\varepsilon}`; otherwise the drift has no potential.
    """

    name = "maier_stein"
    title = "Maier–Stein"
    variables = ("x", "y")
    parameters = (
        Param("beta", 10.0, 0.0, 20.0, "non-gradient coupling (beta = 1: gradient system)"),
        Param("eps", 0.05, 0.001, 1.0, "noise intensity: diffusion coefficient (noise sqrt(2 eps))"),
    )
    default_x0 = (-1.0, 0.0)
    default_dt = 0.01
    period = 5.0
    additive = True
    latex = (r"dx = (x - x^3 - \beta x y^2)\, dt + \sqrt{2\varepsilon}\, dW_1 \\ "
             r"dy = -(1 + x^2)\, y\, dt + \sqrt{2\varepsilon}\, dW_2")
    description = ("Noise-driven escape between the stable points (+-1, 0) over the saddle at "
                   "the origin. For beta = 1 the drift is -grad U, U = -x^2/2 + x^4/4 + y^2/2 + "
                   "x^2 y^2/2 (detailed balance, density exp(-U/eps)); for beta != 1 there is no "
                   "potential, and for beta > 4 the most probable escape path leaves the x axis "
                   "(it bifurcates), so exit statistics differ from Kramers' theory.")
    citation = ("R. S. Maier, D. L. Stein, Escape problem for irreversible systems, Phys. Rev. "
                "E 48, 931 (1993); Limiting exit location distributions in the stochastic exit "
                "problem, SIAM J. Appl. Math. 57, 752 (1997)")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        b = p["beta"]
        return torch.stack([x_ - x_ ** 3 - b * x_ * y ** 2, -(1.0 + x_ ** 2) * y], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        b = p["beta"]
        return matrix([[1.0 - 3.0 * x_ ** 2 - b * y ** 2, -2.0 * b * x_ * y],
                       [-2.0 * x_ * y, -(1.0 + x_ ** 2)]], x)

    def diffusion(self, x, p):
        return torch.zeros_like(x) + torch.sqrt(2.0 * _col(p["eps"], x))


@register
class TiltedRing(SDE):
    r"""A Brownian particle driven around a ring over a periodic potential.

    .. math:: d\theta = (F - V_0 \sin\theta)\, dt + \sqrt{2T}\, dW

    :math:`\theta` is *not* wrapped: the unwrapped angle counts the turns, so the current
    :math:`\langle\dot\theta\rangle` is the mean slope of :math:`\theta(t)`. The steady-state
    entropy production rate is the dissipated power over temperature,
    :math:`e_p = F \langle\dot\theta\rangle / T`; for :math:`V_0 = 0`, :math:`\langle\dot\theta
    \rangle = F` and :math:`e_p = F^2/T`. For :math:`V_0 > 0` the current is Stratonovich's
    closed form (Reimann 2002, Sec. 2; Risken, Ch. 11), with
    :math:`V = -V_0 \cos\theta`:

    .. math:: \langle\dot\theta\rangle = \frac{2\pi T (1 - e^{-2\pi F/T})}
              {\int_0^{2\pi}\!\int_0^{2\pi} e^{[V(x+z) - V(x) - F z]/T}\, dz\, dx}
    """

    name = "tilted_ring"
    aliases = ("tilted_washboard", "driven_ring")
    title = "Driven particle on a ring"
    variables = ("theta",)
    parameters = (
        Param("F", 0.8, -10.0, 10.0, "tilt: constant driving force around the ring"),
        Param("V0", 1.0, 0.0, 10.0, "amplitude of the periodic potential -V0 cos(theta)"),
        Param("T", 0.3, 0.001, 10.0, "temperature: diffusion coefficient (noise sqrt(2 T))"),
    )
    default_x0 = (0.0,)
    default_dt = 0.01
    period = 6.283185307179586
    additive = True
    latex = r"d\theta = (F - V_0 \sin\theta)\, dt + \sqrt{2T}\, dW"
    description = ("Overdamped motion in a tilted washboard potential -V0 cos(theta) - F theta. "
                   "theta is not wrapped, so turns, the mean velocity <dtheta/dt> and the "
                   "entropy production F <dtheta/dt> / T (dissipated power over temperature) can "
                   "be read off a trajectory. For V0 = 0: <dtheta/dt> = F and e_p = F^2/T. "
                   "Below F = V0 the particle is locked and advances by thermally activated "
                   "slips; near F = V0 diffusion is giant.")
    citation = ("P. Reimann, Brownian motors: noisy transport far from equilibrium, Phys. Rep. "
                "361, 57 (2002); U. Seifert, Stochastic thermodynamics, fluctuation theorems "
                "and molecular machines, Rep. Prog. Phys. 75, 126001 (2012)")

    def rhs(self, x, p):
        return _col(p["F"], x) - _col(p["V0"], x) * torch.sin(x)

    def jacobian(self, x, p):
        return matrix([[-p["V0"] * torch.cos(x[..., 0])]], x)

    def diffusion(self, x, p):
        return torch.sqrt(2.0 * _col(p["T"], x))


@register
class StochasticLorenz(SDE):
    r"""Lorenz-63 with additive isotropic noise (a stochastic, "random" attractor).

    .. math:: dx = \sigma (y - x)\, dt + \sqrt{2D}\, dW_1, \quad
              dy = (x (\rho - z) - y)\, dt + \sqrt{2D}\, dW_2, \quad
              dz = (x y - \beta z)\, dt + \sqrt{2D}\, dW_3

    Since the noise is additive, taking expectations of :math:`dz` gives the exact stationary
    identity :math:`\langle x y \rangle = \beta \langle z \rangle` for every :math:`D` (and for
    the Euler–Maruyama chain at any step), which ``tests/test_sde_library.py`` checks.
    """

    name = "stochastic_lorenz"
    aliases = ("lorenz63_sde", "noisy_lorenz")
    title = "Stochastic Lorenz-63"
    variables = ("x", "y", "z")
    parameters = (
        Param("sigma", 10.0, 0.0, 50.0, "Prandtl number"),
        Param("rho", 28.0, 0.0, 100.0, "Rayleigh number (relative to onset)"),
        Param("beta", 8.0 / 3.0, 0.0, 10.0, "aspect-ratio factor"),
        Param("D", 1.0, 0.0, 100.0, "diffusion coefficient of each variable (noise sqrt(2 D))"),
    )
    default_x0 = (1.0, 1.0, 20.0)
    default_dt = 0.005
    period = 1.0
    additive = True
    latex = (r"dx = \sigma (y - x)\, dt + \sqrt{2D}\, dW_1 \\ "
             r"dy = (x (\rho - z) - y)\, dt + \sqrt{2D}\, dW_2 \\ "
             r"dz = (x y - \beta z)\, dt + \sqrt{2D}\, dW_3")
    description = ("The Lorenz-63 flow kicked by independent white noise on each variable: a "
                   "chaotic drift whose strange attractor is smeared into a stationary density. "
                   "The noise blurs the two lobes and randomises the switching between them. "
                   "D = 0 gives back the deterministic Lorenz system; with additive noise "
                   "<x y> = beta <z> still holds exactly in the stationary state.")
    citation = "E. N. Lorenz, Deterministic nonperiodic flow, J. Atmos. Sci. 20, 130 (1963)"

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([p["sigma"] * (y - x_), x_ * (p["rho"] - z) - y,
                            x_ * y - p["beta"] * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        s, b = _full(p["sigma"], x), p["beta"]
        return matrix([[-s, s, 0.0], [p["rho"] - z, -1.0, -x_], [y, x_, -_full(b, x)]], x)

    def diffusion(self, x, p):
        return torch.zeros_like(x) + torch.sqrt(2.0 * _col(p["D"], x))


@register
class FeneDumbbell(SDE):
    r"""A FENE dumbbell (a polymer's end-to-end vector) in planar elongational flow.

    Dimensionless: time in units of the Hookean relaxation time :math:`\lambda_H = \zeta_0/4H`,
    length in units of :math:`\sqrt{kT/H}`. The connector :math:`Q = (q_x, q_y)` obeys (Itô)

    .. math:: dQ = \Big[\kappa Q - \frac{Q}{2 \zeta(Q) (1 - |Q|^2/b)}\Big] dt
              + \zeta(Q)^{-1/2}\, dW, \quad \kappa = \mathrm{diag}(\dot\varepsilon,
              -\dot\varepsilon), \quad \zeta(Q) = 1 + (\zeta_r - 1) \frac{|Q|}{\sqrt b}

    so the diffusion coefficient is :math:`D(Q) = 1/(2\zeta)` and the spring force derives
    from :math:`U = -\tfrac b2 \ln(1 - |Q|^2/b)`. With constant drag (:math:`\zeta_r = 1`)
    the drift is :math:`-D \nabla (U - Q^T\kappa Q)`: a gradient, so the process is reversible
    (zero entropy production) with density :math:`\propto (1 - |Q|^2/b)^{b/2}
    e^{\dot\varepsilon (q_x^2 - q_y^2)}`; the Hookean coil–stretch transition is at
    :math:`\dot\varepsilon = 1/2`. With a conformation-dependent drag (:math:`\zeta_r > 1`,
    de Gennes) :math:`D^{-1} f = 2\zeta \kappa Q - \nabla U` has a curl
    (:math:`\propto \zeta'(|Q|)\, q_x q_y / |Q|`), so for :math:`\dot\varepsilon \ne 0` the
    stationary state carries a current and :math:`e_p > 0`, growing with the strain rate;
    large :math:`\zeta_r` makes coil and stretched states coexist (hysteresis). At
    :math:`\dot\varepsilon = 0` any drag gives zero current (density :math:`\propto \zeta
    e^{-U}` in Itô's convention).

    The drift diverges at :math:`|Q|^2 = b`: keep ``dt`` small (the default ``1e-3`` keeps
    Euler–Maruyama inside the ball at the default parameters). A member that jumps out is
    repelled and leaves :attr:`bound`, so :func:`~explorer.core.simulate.simulate` marks it
    diverged.
    """

    name = "fene_dumbbell"
    aliases = ("fene", "coil_stretch")
    title = "FENE dumbbell in elongational flow"
    variables = ("qx", "qy")
    parameters = (
        Param("strain_rate", 0.5, 0.0, 4.0,
              "elongation rate times the relaxation time (Weissenberg number; coil-stretch at 0.5)"),
        Param("b", 50.0, 5.0, 1000.0, "FENE extensibility: maximal squared length |Q|^2 < b"),
        Param("drag_ratio", 1.0, 1.0, 10.0,
              "drag of the fully stretched chain over the coil's (1: constant drag)"),
    )
    default_x0 = (1.0, 0.5)
    default_dt = 1e-3
    period = 2.0
    bound = 100.0                # > sqrt(b_max): only a member that left the ball gets here
    latex = (r"dQ = \Big[\kappa Q - \frac{Q}{2 \zeta(Q) (1 - |Q|^2/b)}\Big] dt + "
             r"\zeta(Q)^{-1/2}\, dW, \quad \kappa = \mathrm{diag}(\dot\varepsilon, "
             r"-\dot\varepsilon), \quad \zeta = 1 + (\zeta_r - 1) |Q| / \sqrt{b}")
    description = ("A polymer as two beads joined by a finitely extensible spring, stretched by "
                   "a planar elongational flow (time in relaxation times). Above strain rate 1/2 "
                   "the coil unravels. With constant drag the drift is a gradient: reversible, "
                   "zero entropy production. A drag that grows with the extension (drag_ratio "
                   "> 1, de Gennes) makes the flow non-gradient relative to the noise: e_p > 0, "
                   "growing with the strain rate, and coil-stretch hysteresis. |Q|^2 < b: keep "
                   "dt small.")
    citation = ("P. G. de Gennes, Coil-stretch transition of dilute flexible polymers under "
                "ultrahigh velocity gradients, J. Chem. Phys. 60, 5030 (1974); C. M. Schroeder, "
                "H. P. Babcock, E. S. G. Shaqfeh, S. Chu, Observation of polymer conformation "
                "hysteresis in extensional flow, Science 301, 1515 (2003)")

    @staticmethod
    def _terms(x, p):
        """|Q|^2, |Q| (clamped away from 0 where it divides), spring factor s = 1/(1 - |Q|^2/b),
        drag zeta and c = drag_ratio - 1, each (...)."""
        qx, qy = x.unbind(-1)
        r2 = qx * qx + qy * qy
        b = p["b"]
        c = p["drag_ratio"] - 1.0
        r = torch.sqrt(r2)
        s = 1.0 / (1.0 - r2 / b)
        zeta = 1.0 + c * r / b ** 0.5
        return r2, r, s, zeta, c

    def rhs(self, x, p):
        qx, qy = x.unbind(-1)
        _, _, s, zeta, _ = FeneDumbbell._terms(x, p)
        h = 0.5 * s / zeta
        e = p["strain_rate"]
        return torch.stack([e * qx - h * qx, -e * qy - h * qy], -1)

    def jacobian(self, x, p):
        qx, qy = x.unbind(-1)
        _, r, s, zeta, c = FeneDumbbell._terms(x, p)
        b = p["b"]
        h = s / zeta
        # grad h = h Q (2 s / b - c / (zeta |Q| sqrt b)); Q_i Q_j / |Q| -> 0 at Q = 0
        m = h * (2.0 * s / b - c / (zeta * r.clamp_min(torch.finfo(r.dtype).tiny) * b ** 0.5))
        e = p["strain_rate"]
        return matrix([[e - 0.5 * (h + qx * qx * m), -0.5 * qx * qy * m],
                       [-0.5 * qx * qy * m, -e - 0.5 * (h + qy * qy * m)]], x)

    def diffusion(self, x, p):
        _, _, _, zeta, _ = FeneDumbbell._terms(x, p)
        g = zeta.rsqrt()
        return torch.stack([g, g], -1)

    def diffusion_derivative(self, x, p):
        _, r, _, zeta, c = FeneDumbbell._terms(x, p)
        # d zeta^{-1/2} / d q_i = -zeta^{-3/2} c q_i / (2 |Q| sqrt b)
        k = -0.5 * c * zeta.pow(-1.5) / (r.clamp_min(torch.finfo(r.dtype).tiny) * p["b"] ** 0.5)
        return x * k.unsqueeze(-1)


# the SGLD example's data set: N = 16 inputs evenly spaced in [-2, 2] and targets
# y_i = 1.5 tanh(1.2 x_i) + 0.3 n_i, with n_i standard normal from numpy's
# default_rng(11), rounded to 3 decimals (kept here as data, so it never changes)
SGLD_N = 16
SGLD_X = tuple(-2.0 + 4.0 * i / (SGLD_N - 1) for i in range(SGLD_N))
SGLD_Y = (-1.465, -1.046, -1.046, -1.494, -1.301, -1.154, -0.498, -0.255,
          0.462, 0.115, 1.466, 1.182, 1.545, 1.373, 1.340, 1.614)


@register
class SGLD(SDE):
    r"""Stochastic-gradient descent (and Langevin dynamics) of a two-parameter model as an SDE.

    The model :math:`\hat y = a \tanh(w x)`, parameters :math:`\theta = (w, a)`, is fitted to
    the fixed data set :data:`SGLD_X`, :data:`SGLD_Y` (N = 16) by the squared loss
    :math:`L(\theta) = \frac1N \sum_i \ell_i`, :math:`\ell_i = \tfrac12 (a \tanh(w x_i) -
    y_i)^2`. SGD with learning rate :math:`\eta` and minibatch size :math:`B` (drawn with
    replacement) is, to first order in :math:`\eta` (the stochastic modified equation of
    Li, Tai & E), with time :math:`t = (\text{steps}) \times \eta`,

    .. math:: d\theta = -\nabla L\, dt + \sqrt{\eta/B}\; \Sigma(\theta)^{1/2} dW
              + \sqrt{2T}\, dW', \quad \Sigma = \frac1N \sum_i (\nabla \ell_i - \nabla L)
              (\nabla \ell_i - \nabla L)^T,

    where the optional temperature :math:`T` adds SGLD's isotropic Langevin noise (Welling &
    Teh). The noise is "general": :math:`g = [\sqrt{\eta/(BN)}\,(\nabla\ell_i - \nabla L)
    ]_{i=1..N} \,|\, \sqrt{2T} I`, shape (2, N + 2), so :math:`g g^T = (\eta/B) \Sigma + 2T I`
    exactly. Gradients and the Hessian (the drift's Jacobian) are analytic.

    The loss has two mirror-image minima, :math:`(w, a)` and :math:`(-w, -a)`. With
    :math:`T > 0` only and :math:`\eta \to 0` the stationary law is :math:`e^{-L/T}`
    (equilibrium); SGD's anisotropic, state-dependent noise breaks detailed balance, so the
    stationary state carries currents (entropy production > 0).
    """

    name = "sgld"
    aliases = ("sgd_sde", "stochastic_gradient_descent")
    title = "SGD / SGLD as an SDE"
    variables = ("w", "a")
    parameters = (
        Param("lr", 0.1, 0.0, 1.0, "learning rate eta (SGD noise covariance eta/B times Sigma)"),
        Param("batch_size", 4.0, 1.0, float(SGLD_N),
              "minibatch size B (with replacement; non-integer values interpolate 1/B)"),
        Param("temperature", 0.0, 0.0, 1.0, "Langevin temperature T: extra noise sqrt(2 T)"),
    )
    default_x0 = (0.3, 0.2)
    default_dt = 0.01
    period = 5.0
    noise = "general"
    noise_dim = SGLD_N + 2
    latex = (r"d\theta = -\nabla L(\theta)\, dt + \sqrt{\eta/B}\, \Sigma(\theta)^{1/2} dW + "
             r"\sqrt{2T}\, dW', \quad L = \frac{1}{2N} \sum_{i=1}^{N} (a \tanh(w x_i) - y_i)^2")
    description = ("Minibatch SGD fitting y = a tanh(w x) to 16 fixed noisy points (x evenly "
                   "spaced in [-2, 2], y = 1.5 tanh(1.2 x) + noise), as its diffusion "
                   "approximation: drift -grad L, noise covariance (lr/B) x the per-sample "
                   "gradient covariance, time in units of lr steps; temperature adds Langevin "
                   "noise (SGLD). Two mirror minima (w, a), (-w, -a). The anisotropic, "
                   "state-dependent SGD noise breaks detailed balance.")
    citation = ("Q. Li, C. Tai, W. E, Stochastic modified equations and adaptive stochastic "
                "gradient algorithms, ICML 2017 (PMLR 70, 2101); M. Welling, Y. W. Teh, "
                "Bayesian learning via stochastic gradient Langevin dynamics, ICML 2011")

    data_x = SGLD_X
    data_y = SGLD_Y

    @staticmethod
    def _per_sample(x):
        """Per-sample gradients (d l_i/dw, d l_i/da), tanh(w x_i), residuals and the inputs;
        each (..., N) (the data broadcast against the batch)."""
        xs = torch.tensor(SGLD_X, dtype=x.dtype, device=x.device)         # (N,)
        ys = torch.tensor(SGLD_Y, dtype=x.dtype, device=x.device)
        w, a = x[..., 0:1], x[..., 1:2]                                  # (..., 1)
        t = torch.tanh(w * xs)                                           # (..., N)
        r = a * t - ys
        return r * a * xs * (1.0 - t * t), r * t, t, r, xs

    def rhs(self, x, p):
        gw, ga, *_ = SGLD._per_sample(x)
        return -torch.stack([gw.mean(-1), ga.mean(-1)], -1)

    def jacobian(self, x, p):
        _, _, t, r, xs = SGLD._per_sample(x)
        a = x[..., 1:2]
        s = 1.0 - t * t
        hww = (a * a * xs * xs * s * s - 2.0 * a * r * xs * xs * t * s).mean(-1)
        hwa = (xs * s * (a * t + r)).mean(-1)
        haa = (t * t).mean(-1)
        return -matrix([[hww, hwa], [hwa, haa]], x)

    def diffusion(self, x, p):
        gw, ga, *_ = SGLD._per_sample(x)
        dev = torch.stack([gw - gw.mean(-1, keepdim=True),
                           ga - ga.mean(-1, keepdim=True)], -2)          # (..., 2, N)
        scale = torch.sqrt(_full(p["lr"], x) / (_full(p["batch_size"], x) * SGLD_N))
        sgd = dev * scale[..., None, None]
        lang = (torch.sqrt(2.0 * _full(p["temperature"], x))[..., None, None]
                * torch.eye(2, dtype=x.dtype, device=x.device))        # (..., 2, 2)
        batch = torch.broadcast_shapes(sgd.shape[:-2], lang.shape[:-2])
        return torch.cat([sgd.expand(*batch, 2, SGLD_N), lang.expand(*batch, 2, 2)], -1)
