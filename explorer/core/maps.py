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


SPROTT_TABLE = "J. C. Sprott, Chaos and Time-Series Analysis (Oxford UP, 2003), Table A.1"
TWO_PI = 2.0 * math.pi


@register
class Logistic(Map):
    name = "logistic"
    title = "Logistic map"
    variables = ("x",)
    parameters = (Param("r", 4.0, 0.0, 4.0, "growth rate; period doubling to chaos at r = 3.5699..."),)
    default_x0 = (0.3,)
    bound = 1e3
    latex = r"x_{n+1} = r\, x_n (1 - x_n)"
    description = ("The discrete logistic population model popularised by May, the standard "
                   "example of the period-doubling route to chaos. At r = 4 it is conjugate to "
                   "the tent map and its Lyapunov exponent is exactly ln 2.")
    citation = ("R. M. May, Simple mathematical models with very complicated dynamics, Nature "
                "261, 459 (1976)")
    lyapunov_reference = LyapunovReference(
        (math.log(2.0),), "S. M. Ulam and J. von Neumann, Bull. Am. Math. Soc. 53, 1120 (1947); "
        "exact at r = 4")

    def rhs(self, x, p):
        x_ = x[..., 0]
        return (p["r"] * x_ * (1.0 - x_)).unsqueeze(-1)

    def jacobian(self, x, p):
        x_ = x[..., 0]
        return matrix([[p["r"] * (1.0 - 2.0 * x_)]], x)


@register
class Ikeda(Map):
    name = "ikeda"
    title = "Ikeda map"
    variables = ("x", "y")
    parameters = (
        Param("a", 1.0, 0.0, 10.0, "input field (offset of x)"),
        Param("u", 0.9, 0.0, 1.0, "dissipation per round trip (the Jacobian determinant is u^2)"),
        Param("kappa", 0.4, -10.0, 10.0, "empty-cavity phase shift"),
        Param("alpha", 6.0, 0.0, 50.0, "nonlinear (Kerr) phase shift"),
    )
    default_x0 = (0.5, -0.5)
    bound = 1e3
    latex = (r"x_{n+1} = a + u (x_n \cos t_n - y_n \sin t_n) \\ "
             r"y_{n+1} = u (x_n \sin t_n + y_n \cos t_n) \\ "
             r"t_n = \kappa - \frac{\alpha}{1 + x_n^2 + y_n^2}")
    description = ("Ikeda's model of light circulating in a nonlinear optical ring cavity, "
                   "z -> a + u z exp(i t(|z|)): a rotation by an intensity-dependent angle, a "
                   "contraction and a shift, giving a spiral-armed strange attractor.")
    citation = ("K. Ikeda, Multiple-valued stationary state and its instability of the "
                "transmitted light by a ring cavity system, Opt. Commun. 30, 257 (1979)")
    lyapunov_reference = LyapunovReference((0.5076, -0.7183), SPROTT_TABLE)

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        u = p["u"]
        t = p["kappa"] - p["alpha"] / (1.0 + x_ * x_ + y * y)
        c, s = torch.cos(t), torch.sin(t)
        return torch.stack([p["a"] + u * (x_ * c - y * s), u * (x_ * s + y * c)], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        u, al = p["u"], p["alpha"]
        q = 1.0 + x_ * x_ + y * y
        t = p["kappa"] - al / q
        c, s = torch.cos(t), torch.sin(t)
        g = 2.0 * al / (q * q)           # dt/dx = g x, dt/dy = g y
        rx = -x_ * s - y * c             # d(x cos t - y sin t)/dt
        ry = x_ * c - y * s              # d(x sin t + y cos t)/dt
        return matrix([[u * (c + rx * g * x_), u * (-s + rx * g * y)],
                       [u * (s + ry * g * x_), u * (c + ry * g * y)]], x)


@register
class Tinkerbell(Map):
    name = "tinkerbell"
    title = "Tinkerbell map"
    variables = ("x", "y")
    parameters = (
        Param("a", 0.9, -2.0, 2.0, "linear coefficient of x in x"),
        Param("b", -0.6013, -2.0, 2.0, "linear coefficient of y in x"),
        Param("c", 2.0, -4.0, 4.0, "linear coefficient of x in y"),
        Param("d", 0.5, -2.0, 2.0, "linear coefficient of y in y"),
    )
    default_x0 = (-0.72, -0.64)
    bound = 1e3
    latex = r"x_{n+1} = x_n^2 - y_n^2 + a x_n + b y_n \\ y_{n+1} = 2 x_n y_n + c x_n + d y_n"
    description = ("A quadratic map (z -> z^2 plus a linear term, in complex notation) whose "
                   "attractor resembles Tinker Bell's flight path. Many initial conditions "
                   "escape to infinity.")
    citation = "H. E. Nusse and J. A. Yorke, Dynamics: Numerical Explorations (Springer, 1994)"

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([x_ * x_ - y * y + p["a"] * x_ + p["b"] * y,
                            2.0 * x_ * y + p["c"] * x_ + p["d"] * y], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        return matrix([[2.0 * x_ + p["a"], -2.0 * y + p["b"]],
                       [2.0 * y + p["c"], 2.0 * x_ + p["d"]]], x)


@register
class Lozi(Map):
    name = "lozi"
    title = "Lozi map"
    variables = ("x", "y")
    parameters = (
        Param("a", 1.7, -2.0, 2.5, "slope of the tent-shaped nonlinearity"),
        Param("b", 0.5, -1.5, 1.5, "area contraction (the Jacobian determinant is -b)"),
    )
    default_x0 = (-0.1, 0.1)
    bound = 1e3
    latex = r"x_{n+1} = 1 - a |x_n| + y_n \\ y_{n+1} = b x_n"
    description = ("Lozi's piecewise-linear version of the Hénon map (|x| instead of x^2), for "
                   "which the strange attractor can be proved to exist (Misiurewicz 1980). The "
                   "Jacobian is piecewise constant.")
    citation = ("R. Lozi, Un attracteur étrange (?) du type attracteur de Hénon, J. Phys. "
                "Colloques 39, C5-9 (1978)")
    lyapunov_reference = LyapunovReference(
        (0.4703, -1.1634), SPROTT_TABLE + "; sum = ln 0.5 exactly")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([1.0 - p["a"] * torch.abs(x_) + y, p["b"] * x_ + 0.0 * y], -1)

    def jacobian(self, x, p):
        x_, _ = x.unbind(-1)
        return matrix([[-p["a"] * torch.sign(x_), 1.0], [p["b"], 0.0]], x)


@register
class StandardMap(Map):
    name = "standard_map"
    title = "Chirikov standard map"
    aliases = ("chirikov",)
    variables = ("theta", "p")
    parameters = (Param("K", 1.0, 0.0, 10.0, "kick strength; global chaos above K = 0.9716..."),)
    default_x0 = (0.5, 0.1)
    latex = (r"p_{n+1} = p_n + K \sin\theta_n \pmod{2\pi} \\ "
             r"\theta_{n+1} = \theta_n + p_n + K \sin\theta_n \pmod{2\pi}")
    description = ("The kicked rotor, an area-preserving map of the torus: invariant circles "
                   "(KAM tori) break up as K grows and the last one disappears at K = 0.9716. "
                   "Both variables are taken mod 2 pi; the Jacobian ignores the wrap, which has "
                   "derivative one almost everywhere.")
    citation = ("B. V. Chirikov, A universal instability of many-dimensional oscillator systems, "
                "Phys. Rep. 52, 263 (1979)")

    def rhs(self, x, p):
        th, mom = x.unbind(-1)
        p_new = mom + p["K"] * torch.sin(th)
        return torch.stack([torch.remainder(th + p_new, TWO_PI), torch.remainder(p_new, TWO_PI)], -1)

    def jacobian(self, x, p):
        th, _ = x.unbind(-1)
        kc = p["K"] * torch.cos(th)
        return matrix([[1.0 + kc, 1.0], [kc, 1.0]], x)


@register
class Clifford(Map):
    name = "clifford"
    title = "Clifford attractor"
    variables = ("x", "y")
    parameters = (
        Param("a", -1.4, -3.0, 3.0, "frequency of the sine in x"),
        Param("b", 1.6, -3.0, 3.0, "frequency of the sine in y"),
        Param("c", 1.0, -3.0, 3.0, "amplitude of the cosine in x"),
        Param("d", 0.7, -3.0, 3.0, "amplitude of the cosine in y"),
    )
    default_x0 = (0.1, 0.1)
    latex = (r"x_{n+1} = \sin(a y_n) + c \cos(a x_n) \\ "
             r"y_{n+1} = \sin(b x_n) + d \cos(b y_n)")
    description = ("A trigonometric map attributed to Clifford Pickover, famous for the "
                   "filigree density plots of its attractors; always bounded by 1 + |c| and "
                   "1 + |d|.")
    citation = "C. A. Pickover, Chaos in Wonderland (St. Martin's Press, New York, 1994)"

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        a, b = p["a"], p["b"]
        return torch.stack([torch.sin(a * y) + p["c"] * torch.cos(a * x_),
                            torch.sin(b * x_) + p["d"] * torch.cos(b * y)], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        a, b, c, d = p["a"], p["b"], p["c"], p["d"]
        return matrix([[-a * c * torch.sin(a * x_), a * torch.cos(a * y)],
                       [b * torch.cos(b * x_), -b * d * torch.sin(b * y)]], x)


@register
class DeJong(Map):
    name = "de_jong"
    title = "Peter de Jong attractor"
    variables = ("x", "y")
    parameters = (
        Param("a", 1.4, -4.0, 4.0, "frequency of the sine in x"),
        Param("b", -2.3, -4.0, 4.0, "frequency of the cosine in x"),
        Param("c", 2.4, -4.0, 4.0, "frequency of the sine in y"),
        Param("d", -2.1, -4.0, 4.0, "frequency of the cosine in y"),
    )
    default_x0 = (0.1, 0.1)
    latex = (r"x_{n+1} = \sin(a y_n) - \cos(b x_n) \\ "
             r"y_{n+1} = \sin(c x_n) - \cos(d y_n)")
    description = ("Peter de Jong's trigonometric map, a favourite of density-plot art; the "
                   "state always stays in the square [-2, 2]^2.")
    citation = ("P. de Jong, via A. K. Dewdney, Computer Recreations, Scientific American "
                "(1987); popularised by P. Bourke")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([torch.sin(p["a"] * y) - torch.cos(p["b"] * x_),
                            torch.sin(p["c"] * x_) - torch.cos(p["d"] * y)], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        a, b, c, d = p["a"], p["b"], p["c"], p["d"]
        return matrix([[b * torch.sin(b * x_), a * torch.cos(a * y)],
                       [c * torch.cos(c * x_), d * torch.sin(d * y)]], x)


@register
class Gingerbreadman(Map):
    name = "gingerbreadman"
    title = "Gingerbreadman map"
    variables = ("x", "y")
    parameters = ()
    default_x0 = (-0.1, 0.0)
    bound = 1e3
    latex = r"x_{n+1} = 1 - y_n + |x_n| \\ y_{n+1} = x_n"
    description = ("Devaney's piecewise-linear area-preserving map: a chaotic 'gingerbread man' "
                   "region surrounds hexagonal islands of stable periodic orbits. The Jacobian "
                   "is piecewise constant.")
    citation = ("R. L. Devaney, A piecewise linear model for the zones of instability of an "
                "area-preserving map, Physica D 10, 387 (1984)")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([1.0 - y + torch.abs(x_), x_ + 0.0 * y], -1)

    def jacobian(self, x, p):
        x_, _ = x.unbind(-1)
        return matrix([[torch.sign(x_), -1.0], [1.0, 0.0]], x)


@register
class DuffingMap(Map):
    name = "duffing_map"
    title = "Duffing map (Holmes)"
    aliases = ("holmes",)
    variables = ("x", "y")
    parameters = (
        Param("a", 2.75, -5.0, 5.0, "linear coefficient of y"),
        Param("b", 0.2, -2.0, 2.0, "area contraction (the Jacobian determinant is b)"),
    )
    default_x0 = (0.1, 0.1)
    bound = 1e3
    latex = r"x_{n+1} = y_n \\ y_{n+1} = -b x_n + a y_n - y_n^3"
    description = ("Holmes' discrete analogue of the forced Duffing oscillator, a cubic "
                   "Hénon-like map with a two-lobed strange attractor.")
    citation = ("P. J. Holmes, A nonlinear oscillator with a strange attractor, Phil. Trans. R. "
                "Soc. Lond. A 292, 419 (1979)")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([y + 0.0 * x_, -p["b"] * x_ + p["a"] * y - y * y * y], -1)

    def jacobian(self, x, p):
        _, y = x.unbind(-1)
        return matrix([[0.0, 1.0], [-p["b"], p["a"] - 3.0 * y * y]], x)


@register
class Bogdanov(Map):
    name = "bogdanov"
    title = "Bogdanov map"
    variables = ("x", "y")
    parameters = (
        Param("eps", 0.0, -1.0, 1.0, "linear damping of y (area-preserving at eps = mu = 0)"),
        Param("k", 1.2, -5.0, 5.0, "strength of the quadratic force"),
        Param("mu", 0.0, -2.0, 2.0, "coefficient of the x y term"),
    )
    default_x0 = (0.5, 0.0)
    bound = 1e3
    latex = (r"y_{n+1} = (1 + \epsilon + \mu x_n)\, y_n + k x_n (x_n - 1) \\ "
             r"x_{n+1} = x_n + y_{n+1}")
    description = ("Euler discretisation of the Bogdanov-Takens normal form, showing mode "
                   "locking, Arnold tongues and chaos. Orbits outside a bounded region escape "
                   "to infinity.")
    citation = ("D. K. Arrowsmith, J. H. E. Cartwright, A. N. Lansbury and C. M. Place, The "
                "Bogdanov map: bifurcations, mode locking, and chaos in a dissipative system, "
                "Int. J. Bifurcation Chaos 3, 803 (1993)")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        y_new = (1.0 + p["eps"] + p["mu"] * x_) * y + p["k"] * x_ * (x_ - 1.0)
        return torch.stack([x_ + y_new, y_new], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        dyx = p["k"] * (2.0 * x_ - 1.0) + p["mu"] * y
        dyy = 1.0 + p["eps"] + p["mu"] * x_
        return matrix([[1.0 + dyx, dyy], [dyx, dyy]], x)


@register
class Zaslavsky(Map):
    name = "zaslavsky"
    title = "Zaslavsky map"
    aliases = ("zaslavskii",)
    variables = ("x", "y")
    parameters = (
        Param("eps", 0.3, 0.0, 10.0, "kick strength"),
        Param("nu", 400.0 / 3.0, 0.0, 500.0, "frequency ratio"),
        Param("gamma", 3.0, 0.01, 20.0, "damping (the Jacobian determinant is exp(-gamma))"),
    )
    default_x0 = (0.1, 0.0)
    latex = (r"x_{n+1} = x_n + \nu (1 + \mu y_n) + \epsilon \nu \mu \cos(2\pi x_n) \pmod 1 \\ "
             r"y_{n+1} = e^{-\Gamma} (y_n + \epsilon \cos 2\pi x_n) \\ "
             r"\mu = (1 - e^{-\Gamma}) / \Gamma")
    description = ("Zaslavsky's kicked damped rotator, obtained by integrating a periodically "
                   "kicked oscillator over one period. x is an angle mod 1; the Jacobian ignores "
                   "the wrap.")
    citation = "G. M. Zaslavsky, The simplest case of a strange attractor, Phys. Lett. A 69, 145 (1978)"

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        eps, nu = p["eps"], p["nu"]
        g = torch.as_tensor(p["gamma"], dtype=x.dtype, device=x.device)
        e = torch.exp(-g)
        mu = (1.0 - e) / g
        c = torch.cos(TWO_PI * x_)
        return torch.stack([torch.remainder(x_ + nu * (1.0 + mu * y) + eps * nu * mu * c, 1.0),
                            e * (y + eps * c)], -1)

    def jacobian(self, x, p):
        x_, _ = x.unbind(-1)
        eps, nu = p["eps"], p["nu"]
        g = torch.as_tensor(p["gamma"], dtype=x.dtype, device=x.device)
        e = torch.exp(-g)
        mu = (1.0 - e) / g
        s = -TWO_PI * torch.sin(TWO_PI * x_)
        return matrix([[1.0 + eps * nu * mu * s, nu * mu], [e * eps * s, e]], x)


@register
class GaussMap(Map):
    name = "gauss_map"
    title = "Gauss map (mouse map)"
    aliases = ("mouse_map",)
    variables = ("x",)
    parameters = (
        Param("alpha", 6.2, 0.0, 20.0, "sharpness of the Gaussian (inverse squared width)"),
        Param("beta", -0.5, -1.0, 1.0, "offset"),
    )
    default_x0 = (0.1,)
    latex = r"x_{n+1} = e^{-\alpha x_n^2} + \beta"
    description = ("A one-dimensional map with a Gaussian hump. Its bifurcation diagram in beta "
                   "(the 'mouse') shows period doubling followed by period-halving and "
                   "coexisting attractors.")
    citation = "R. C. Hilborn, Chaos and Nonlinear Dynamics, 2nd ed. (Oxford UP, 2000)"

    def rhs(self, x, p):
        x_ = x[..., 0]
        return (torch.exp(-p["alpha"] * x_ * x_) + p["beta"]).unsqueeze(-1)

    def jacobian(self, x, p):
        x_ = x[..., 0]
        return matrix([[-2.0 * p["alpha"] * x_ * torch.exp(-p["alpha"] * x_ * x_)]], x)


@register
class KaplanYorke(Map):
    name = "kaplan_yorke"
    title = "Kaplan-Yorke map"
    variables = ("x", "y")
    parameters = (
        Param("a", 3.0, 1.0, 10.0, "expansion factor of the circle map x -> a x mod 1"),
        Param("b", 0.2, -1.0, 1.0, "contraction of y"),
    )
    default_x0 = (0.1, 0.1)
    latex = r"x_{n+1} = a x_n \pmod 1 \\ y_{n+1} = b y_n + \cos(4 \pi x_n)"
    description = ("Kaplan and Yorke's example for the Lyapunov (Kaplan-Yorke) dimension: an "
                   "expanding circle map driving a contracting variable. The exponents are "
                   "exactly ln a and ln |b|. The original a = 2 collapses to 0 in binary "
                   "floating point after ~50 steps, hence the default a = 3.")
    citation = ("J. L. Kaplan and J. A. Yorke, Chaotic behavior of multidimensional difference "
                "equations, Lecture Notes in Mathematics 730, 204 (Springer, 1979)")
    lyapunov_reference = LyapunovReference(
        (math.log(3.0), math.log(0.2)), "exact: ln a and ln |b| (triangular Jacobian)")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([torch.remainder(p["a"] * x_, 1.0),
                            p["b"] * y + torch.cos(2.0 * TWO_PI * x_)], -1)

    def jacobian(self, x, p):
        x_, _ = x.unbind(-1)
        return matrix([[p["a"], 0.0], [-2.0 * TWO_PI * torch.sin(2.0 * TWO_PI * x_), p["b"]]], x)


@register
class SineMap(Map):
    name = "sine_map"
    title = "Sine map"
    variables = ("x",)
    parameters = (Param("r", 1.0, 0.0, 1.0, "amplitude; period doubling to chaos as r grows"),)
    default_x0 = (0.3,)
    latex = r"x_{n+1} = r \sin(\pi x_n)"
    description = ("A unimodal map of the interval like the logistic map, used by Feigenbaum to "
                   "show that the period-doubling constants are universal.")
    citation = ("M. J. Feigenbaum, Quantitative universality for a class of nonlinear "
                "transformations, J. Stat. Phys. 19, 25 (1978)")

    def rhs(self, x, p):
        x_ = x[..., 0]
        return (p["r"] * torch.sin(math.pi * x_)).unsqueeze(-1)

    def jacobian(self, x, p):
        x_ = x[..., 0]
        return matrix([[p["r"] * math.pi * torch.cos(math.pi * x_)]], x)


@register
class CircleMap(Map):
    name = "circle_map"
    title = "Arnold circle map"
    aliases = ("sine_circle_map",)
    variables = ("theta",)
    parameters = (
        Param("Omega", 0.5, 0.0, 1.0, "bare rotation number (frequency ratio)"),
        Param("K", 3.0, 0.0, 10.0, "coupling; invertible below K = 1, chaotic windows above"),
    )
    default_x0 = (0.1,)
    latex = r"\theta_{n+1} = \theta_n + \Omega - \frac{K}{2\pi} \sin(2\pi\theta_n) \pmod 1"
    description = ("Arnold's sine circle map, the model of mode locking of a driven oscillator: "
                   "Arnold tongues and the devil's staircase for K <= 1, chaos above. theta is "
                   "taken mod 1; the Jacobian ignores the wrap.")
    citation = ("V. I. Arnold, Small denominators. I. Mappings of the circumference onto itself, "
                "Izv. Akad. Nauk SSSR Ser. Mat. 25, 21 (1961)")

    def rhs(self, x, p):
        th = x[..., 0]
        return torch.remainder(th + p["Omega"] - p["K"] / TWO_PI * torch.sin(TWO_PI * th),
                               1.0).unsqueeze(-1)

    def jacobian(self, x, p):
        th = x[..., 0]
        return matrix([[1.0 - p["K"] * torch.cos(TWO_PI * th)]], x)


@register
class CatMap(Map):
    name = "cat_map"
    title = "Arnold's cat map"
    variables = ("x", "y")
    parameters = ()
    default_x0 = (0.1, 0.3)
    latex = r"x_{n+1} = 2 x_n + y_n \pmod 1 \\ y_{n+1} = x_n + y_n \pmod 1"
    description = ("The hyperbolic toral automorphism with matrix [[2, 1], [1, 1]]: uniformly "
                   "chaotic and area-preserving, with exponents +/- ln((3 + sqrt 5)/2) everywhere.")
    citation = ("V. I. Arnold and A. Avez, Problèmes ergodiques de la mécanique classique "
                "(Gauthier-Villars, Paris, 1967)")
    lyapunov_reference = LyapunovReference(
        (math.log((3.0 + math.sqrt(5.0)) / 2.0), -math.log((3.0 + math.sqrt(5.0)) / 2.0)),
        "exact: logarithms of the eigenvalues of [[2, 1], [1, 1]]")

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([torch.remainder(2.0 * x_ + y, 1.0), torch.remainder(x_ + y, 1.0)], -1)

    def jacobian(self, x, p):
        return matrix([[2.0, 1.0], [1.0, 1.0]], x)


@register
class Ricker(Map):
    name = "ricker"
    title = "Ricker model"
    variables = ("x",)
    parameters = (Param("r", 3.0, 0.0, 5.0, "intrinsic growth rate; chaotic above about 2.69"),)
    default_x0 = (0.5,)
    latex = r"x_{n+1} = x_n\, e^{r (1 - x_n)}"
    description = ("Ricker's stock-recruitment model of a fish population with overcompensating "
                   "density dependence; like the logistic map it period-doubles into chaos but "
                   "the population never becomes negative.")
    citation = "W. E. Ricker, Stock and recruitment, J. Fish. Res. Board Can. 11, 559 (1954)"

    def rhs(self, x, p):
        x_ = x[..., 0]
        return (x_ * torch.exp(p["r"] * (1.0 - x_))).unsqueeze(-1)

    def jacobian(self, x, p):
        x_ = x[..., 0]
        return matrix([[(1.0 - p["r"] * x_) * torch.exp(p["r"] * (1.0 - x_))]], x)


@register
class DelayedLogistic(Map):
    name = "delayed_logistic"
    title = "Delayed logistic map"
    variables = ("x", "y")
    parameters = (Param("a", 2.27, 0.0, 2.5, "growth rate"),)
    default_x0 = (0.5, 0.6)
    bound = 1e3
    latex = r"x_{n+1} = a x_n (1 - y_n) \\ y_{n+1} = x_n"
    description = ("Maynard Smith's logistic population model with delayed density dependence; "
                   "after a Neimark-Sacker bifurcation at a = 2 the invariant circle wrinkles "
                   "and breaks into a strange attractor.")
    citation = "J. Maynard Smith, Mathematical Ideas in Biology (Cambridge UP, 1968)"
    lyapunov_reference = LyapunovReference((0.18312, -1.24199), SPROTT_TABLE)

    def rhs(self, x, p):
        x_, y = x.unbind(-1)
        return torch.stack([p["a"] * x_ * (1.0 - y), x_ + 0.0 * y], -1)

    def jacobian(self, x, p):
        x_, y = x.unbind(-1)
        return matrix([[p["a"] * (1.0 - y), -p["a"] * x_], [1.0, 0.0]], x)
