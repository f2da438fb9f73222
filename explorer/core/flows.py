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
    description = ("Lorenz's truncation of Rayleigh–Bénard convection: the butterfly attractor, "
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


SPROTT_TABLE = "J. C. Sprott, Chaos and Time-Series Analysis (Oxford UP, 2003), Table A.1"
SPROTT_1994 = "J. C. Sprott, Some simple chaotic flows, Phys. Rev. E 50, R647 (1994)"
SPROTT_1994_TABLE = SPROTT_1994 + ", Table I; the last exponent follows from the constant divergence"


def _phase_rate(theta, omega):
    """``d theta/dt = omega`` with the batch shape of ``theta`` (omega may be a float)."""
    return torch.zeros_like(theta) + omega


@register
class Rossler(Flow):
    name = "rossler"
    title = "Rössler"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 0.2, -1.0, 1.0, "growth rate of the x-y spiral"),
        Param("b", 0.2, 0.0, 5.0, "constant injection into z"),
        Param("c", 5.7, 0.0, 50.0, "threshold of x that switches on the z spike"),
    )
    default_x0 = (-1.4301, 5.9229, 0.0349)
    default_dt = 0.05
    period = 6.0
    latex = r"\dot x = -y - z \\ \dot y = x + a y \\ \dot z = b + z (x - c)"
    description = ("Rössler's minimal chaotic flow, with a single quadratic term: orbits spiral "
                   "outwards in the x-y plane and are folded back by a spike in z. At c = 5.7 it "
                   "is a folded band, reached through a period-doubling cascade in c.")
    citation = "O. E. Rössler, An equation for continuous chaos, Phys. Lett. A 57, 397 (1976)"
    lyapunov_reference = LyapunovReference((0.0714, 0.0, -5.3943), SPROTT_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([-y - z, x_ + p["a"] * y, p["b"] + z * (x_ - p["c"])], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, -1.0, -1.0], [1.0, p["a"], 0.0], [z, 0.0, x_ - p["c"]]], x)


@register
class Chen(Flow):
    name = "chen"
    title = "Chen"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 35.0, 0.0, 100.0, "coupling of x to y (as sigma in Lorenz)"),
        Param("b", 3.0, 0.0, 20.0, "damping of z"),
        Param("c", 28.0, 0.0, 100.0, "self-excitation of y"),
    )
    default_x0 = (0.5732, 5.5394, 28.0568)
    default_dt = 0.002
    period = 0.5
    latex = (r"\dot x = a (y - x) \\ \dot y = (c - a) x - x z + c y \\ "
             r"\dot z = x y - b z")
    description = ("Chen and Ueta's chaotic anticontrol of the Lorenz system: a Lorenz-like flow "
                   "that is not topologically equivalent to it (the 'dual' of Lorenz in the sense "
                   "of Vanecek and Celikovsky). Two-scroll attractor at a = 35, b = 3, c = 28.")
    citation = ("G. Chen and T. Ueta, Yet another chaotic attractor, Int. J. Bifurcation Chaos 9, "
                "1465 (1999)")
    lyapunov_reference = LyapunovReference((2.0272, 0.0, -12.0272), SPROTT_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b, c = p["a"], p["b"], p["c"]
        return torch.stack([a * (y - x_), (c - a) * x_ - x_ * z + c * y, x_ * y - b * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b, c = p["a"], p["b"], p["c"]
        return matrix([[-a, a, 0.0], [c - a - z, c, -x_], [y, x_, -b]], x)


@register
class Lu(Flow):
    name = "lu"
    title = "Lü"
    aliases = ("lu_chen",)
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 36.0, 0.0, 100.0, "coupling of x to y"),
        Param("b", 3.0, 0.0, 20.0, "damping of z"),
        Param("c", 20.0, 0.0, 100.0, "self-excitation of y"),
    )
    default_x0 = (10.1304, 9.1921, 23.6503)
    default_dt = 0.005
    period = 0.6
    latex = r"\dot x = a (y - x) \\ \dot y = -x z + c y \\ \dot z = x y - b z"
    description = ("Lü and Chen's system, the bridge between the Lorenz and Chen attractors in the "
                   "unified Lorenz-Chen family. Two-scroll attractor at a = 36, b = 3, c = 20; "
                   "varying c moves it between Lorenz-like and Chen-like shapes.")
    citation = ("J. Lü and G. Chen, A new chaotic attractor coined, Int. J. Bifurcation Chaos 12, "
                "659 (2002)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([p["a"] * (y - x_), -x_ * z + p["c"] * y, x_ * y - p["b"] * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b, c = p["a"], p["b"], p["c"]
        return matrix([[-a, a, 0.0], [-z, c, -x_], [y, x_, -b]], x)


@register
class Thomas(Flow):
    name = "thomas"
    title = "Thomas' cyclically symmetric attractor"
    variables = ("x", "y", "z")
    parameters = (
        Param("b", 0.18, 0.0, 1.0, "friction; chaotic below b = 0.208186, conservative at 0"),
    )
    default_x0 = (1.3984, 1.0765, -2.0099)
    default_dt = 0.05
    period = 25.0
    latex = (r"\dot x = \sin y - b x \\ \dot y = \sin z - b y \\ "
             r"\dot z = \sin x - b z")
    description = ("Thomas' feedback-circuit model with cyclic symmetry x -> y -> z -> x. As the "
                   "friction b decreases a limit cycle period-doubles into chaos at b = 0.208186; "
                   "at b = 0 it turns into 'labyrinth chaos', a deterministic random walk on a "
                   "3D lattice.")
    citation = ("R. Thomas, Deterministic chaos seen in terms of feedback circuits: analysis, "
                "synthesis, 'labyrinth chaos', Int. J. Bifurcation Chaos 9, 1889 (1999)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        b = p["b"]
        return torch.stack([torch.sin(y) - b * x_, torch.sin(z) - b * y, torch.sin(x_) - b * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        b = p["b"]
        return matrix([[-b, torch.cos(y), 0.0], [0.0, -b, torch.cos(z)],
                       [torch.cos(x_), 0.0, -b]], x)


@register
class Halvorsen(Flow):
    name = "halvorsen"
    title = "Halvorsen's cyclically symmetric attractor"
    variables = ("x", "y", "z")
    parameters = (Param("a", 1.27, 0.0, 5.0, "linear damping; chaotic around 1.2-1.5"),)
    default_x0 = (-6.1352, -1.7711, -0.3569)
    default_dt = 0.005
    period = 1.4
    latex = (r"\dot x = -a x - 4 y - 4 z - y^2 \\ \dot y = -a y - 4 z - 4 x - z^2 \\ "
             r"\dot z = -a z - 4 x - 4 y - x^2")
    description = ("A quadratic flow with the cyclic symmetry x -> y -> z -> x, attributed to "
                   "Arne Dehli Halvorsen. Its attractor has three interlocking lobes, one per "
                   "variable; the divergence is the constant -3a.")
    citation = ("J. C. Sprott, Elegant Chaos: Algebraically Simple Chaotic Flows (World Scientific, "
                "2010), after A. D. Halvorsen")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        a = p["a"]
        return torch.stack([-a * x_ - 4.0 * y - 4.0 * z - y * y,
                            -a * y - 4.0 * z - 4.0 * x_ - z * z,
                            -a * z - 4.0 * x_ - 4.0 * y - x_ * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        a = p["a"]
        return matrix([[-a, -4.0 - 2.0 * y, -4.0], [-4.0, -a, -4.0 - 2.0 * z],
                       [-4.0 - 2.0 * x_, -4.0, -a]], x)


@register
class Aizawa(Flow):
    name = "aizawa"
    title = "Aizawa (Langford)"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 0.95, 0.0, 2.0, "linear growth of z"),
        Param("b", 0.7, 0.0, 2.0, "z offset of the rotation's damping"),
        Param("c", 0.6, 0.0, 2.0, "constant drive of z"),
        Param("d", 3.5, 0.0, 10.0, "rotation frequency in the x-y plane"),
        Param("e", 0.25, 0.0, 1.0, "coupling of the radius to z"),
        Param("f", 0.1, 0.0, 1.0, "symmetry-breaking cubic term"),
    )
    default_x0 = (-0.4043, -1.367, 0.3968)
    default_dt = 0.01
    period = 1.8
    latex = (r"\dot x = (z - b) x - d y \\ \dot y = d x + (z - b) y \\ "
             r"\dot z = c + a z - \tfrac{z^3}{3} - (x^2 + y^2)(1 + e z) + f z x^3")
    description = ("A rotating torus-like flow (a variant of Langford's torus-bifurcation model, "
                   "popularised with Aizawa's parameter set): orbits wind round a sphere-like "
                   "shell and escape up a tube along the z axis.")
    citation = ("W. F. Langford, Numerical studies of torus bifurcations, Int. Ser. Numer. Math. "
                "70, 285 (1984); parameter set after Y. Aizawa")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b, c, d, e, f = (p[k] for k in "abcdef")
        zb = z - b
        return torch.stack([
            zb * x_ - d * y,
            d * x_ + zb * y,
            c + a * z - z * z * z / 3.0 - (x_ * x_ + y * y) * (1.0 + e * z) + f * z * x_ * x_ * x_,
        ], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b, c, d, e, f = (p[k] for k in "abcdef")
        zb = z - b
        return matrix([
            [zb, -d, x_],
            [d, zb, y],
            [-2.0 * x_ * (1.0 + e * z) + 3.0 * f * z * x_ * x_, -2.0 * y * (1.0 + e * z),
             a - z * z - e * (x_ * x_ + y * y) + f * x_ * x_ * x_],
        ], x)


@register
class Dadras(Flow):
    name = "dadras"
    title = "Dadras"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 3.0, 0.0, 10.0, "damping of x"),
        Param("b", 2.7, 0.0, 10.0, "coupling y z -> x"),
        Param("c", 1.7, 0.0, 10.0, "self-excitation of y"),
        Param("d", 2.0, 0.0, 10.0, "coupling x y -> z"),
        Param("h", 9.0, 0.0, 20.0, "damping of z"),
    )
    default_x0 = (6.9544, 3.932, 4.3039)
    default_dt = 0.01
    period = 3.0
    latex = (r"\dot x = y - a x + b y z \\ \dot y = c y - x z + z \\ "
             r"\dot z = d x y - h z")
    description = ("Dadras and Momeni's three-dimensional quadratic system that, depending on "
                   "its parameters, generates two-, three- and four-scroll attractors.")
    citation = ("S. Dadras and H. R. Momeni, A novel three-dimensional autonomous chaotic system "
                "generating two, three and four-scroll attractors, Phys. Lett. A 373, 3637 (2009)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y - p["a"] * x_ + p["b"] * y * z, p["c"] * y - x_ * z + z,
                            p["d"] * x_ * y - p["h"] * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[-p["a"], 1.0 + p["b"] * z, p["b"] * y],
                       [-z, p["c"], 1.0 - x_],
                       [p["d"] * y, p["d"] * x_, -p["h"]]], x)


@register
class SprottA(Flow):
    name = "sprott_a"
    title = "Sprott A (Nosé-Hoover oscillator)"
    aliases = ("nose_hoover",)
    variables = ("x", "y", "z")
    parameters = (Param("a", 1.0, 0.0, 10.0, "thermostat temperature (z relaxes towards <y^2> = a)"),)
    default_x0 = (0.0, 5.0, 0.0)
    default_dt = 0.04
    period = 6.0
    latex = r"\dot x = y \\ \dot y = -x + y z \\ \dot z = a - y^2"
    description = ("Case A of Sprott's simple chaotic flows, identical to the Nosé-Hoover "
                   "thermostatted harmonic oscillator. Conservative on average (volume-preserving "
                   "in time mean): a chaotic sea coexists with nested invariant tori, so the "
                   "behaviour depends on the initial condition.")
    citation = (SPROTT_1994 + "; W. G. Hoover, Canonical dynamics: equilibrium phase-space "
                "distributions, Phys. Rev. A 31, 1695 (1985)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y, -x_ + y * z, p["a"] - y * y], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, 1.0, 0.0], [-1.0, z, y], [0.0, -2.0 * y, 0.0]], x)


@register
class SprottB(Flow):
    name = "sprott_b"
    title = "Sprott B"
    variables = ("x", "y", "z")
    parameters = (Param("a", 1.0, 0.0, 5.0, "damping of y"),)
    default_x0 = (2.8066, 1.8985, -0.5174)
    default_dt = 0.04
    period = 6.0
    latex = r"\dot x = y z \\ \dot y = x - a y \\ \dot z = 1 - x y"
    description = ("Case B of Sprott's 19 algebraically simple chaotic flows found by computer "
                   "search: five terms, two quadratic nonlinearities, a two-lobed attractor "
                   "resembling Lorenz's.")
    citation = SPROTT_1994
    lyapunov_reference = LyapunovReference((0.210, 0.0, -1.210), SPROTT_1994_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y * z, x_ - p["a"] * y, 1.0 - x_ * y], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, z, y], [1.0, -p["a"], 0.0], [-y, -x_, 0.0]], x)


@register
class SprottC(Flow):
    name = "sprott_c"
    title = "Sprott C"
    variables = ("x", "y", "z")
    parameters = (Param("a", 1.0, 0.0, 5.0, "damping of y"),)
    default_x0 = (0.2882, 0.606, -3.6265)
    default_dt = 0.04
    period = 6.0
    latex = r"\dot x = y z \\ \dot y = x - a y \\ \dot z = 1 - x^2"
    description = ("Case C of Sprott's simple chaotic flows: like case B but with the "
                   "nonlinearity x^2 in the last equation.")
    citation = SPROTT_1994

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y * z, x_ - p["a"] * y, 1.0 - x_ * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, z, y], [1.0, -p["a"], 0.0], [-2.0 * x_, 0.0, 0.0]], x)


@register
class SprottE(Flow):
    name = "sprott_e"
    title = "Sprott E"
    variables = ("x", "y", "z")
    parameters = (Param("a", 4.0, 0.0, 10.0, "feedback of x into z"),)
    default_x0 = (0.1053, 0.0893, 3.0729)
    default_dt = 0.02
    period = 6.5
    latex = r"\dot x = y z \\ \dot y = x^2 - y \\ \dot z = 1 - a x"
    description = ("Case E of Sprott's simple chaotic flows: five terms, two quadratic "
                   "nonlinearities and a single equilibrium.")
    citation = SPROTT_1994
    lyapunov_reference = LyapunovReference((0.078, 0.0, -1.078), SPROTT_1994_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y * z, x_ * x_ - y, 1.0 - p["a"] * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, z, y], [2.0 * x_, -1.0, 0.0], [-p["a"], 0.0, 0.0]], x)


@register
class SprottF(Flow):
    name = "sprott_f"
    title = "Sprott F"
    variables = ("x", "y", "z")
    parameters = (Param("a", 0.5, 0.0, 2.0, "growth rate of y"),)
    default_x0 = (0.9703, 0.0371, 0.4515)
    default_dt = 0.04
    period = 6.0
    latex = r"\dot x = y + z \\ \dot y = -x + a y \\ \dot z = x^2 - z"
    description = ("Case F of Sprott's simple chaotic flows: six terms with a single quadratic "
                   "nonlinearity, a Rössler-like folded band.")
    citation = SPROTT_1994
    lyapunov_reference = LyapunovReference((0.117, 0.0, -0.617), SPROTT_1994_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y + z, -x_ + p["a"] * y, x_ * x_ - z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, 1.0, 1.0], [-1.0, p["a"], 0.0], [2.0 * x_, 0.0, -1.0]], x)


@register
class SprottJ(Flow):
    name = "sprott_j"
    title = "Sprott J"
    variables = ("x", "y", "z")
    parameters = (Param("a", 2.0, 0.0, 5.0, "damping of y"),)
    default_x0 = (7.9048, 0.6511, -0.7868)
    default_dt = 0.04
    period = 5.0
    latex = r"\dot x = 2 z \\ \dot y = -a y + z \\ \dot z = -x + y + y^2"
    description = ("Case J of Sprott's simple chaotic flows: six terms with a single quadratic "
                   "nonlinearity y^2.")
    citation = SPROTT_1994

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([2.0 * z, -p["a"] * y + z, -x_ + y + y * y], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, 0.0, 2.0], [0.0, -p["a"], 1.0], [-1.0, 1.0 + 2.0 * y, 0.0]], x)


@register
class SprottN(Flow):
    name = "sprott_n"
    title = "Sprott N"
    variables = ("x", "y", "z")
    parameters = (Param("a", 2.0, 0.0, 5.0, "damping of z"),)
    default_x0 = (4.6852, -0.0963, -0.4312)
    default_dt = 0.04
    period = 5.0
    latex = r"\dot x = -2 y \\ \dot y = x + z^2 \\ \dot z = 1 + y - a z"
    description = ("Case N of Sprott's simple chaotic flows: six terms with a single quadratic "
                   "nonlinearity z^2.")
    citation = SPROTT_1994
    lyapunov_reference = LyapunovReference((0.076, 0.0, -2.076), SPROTT_1994_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([-2.0 * y, x_ + z * z, 1.0 + y - p["a"] * z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, -2.0, 0.0], [1.0, 0.0, 2.0 * z], [0.0, 1.0, -p["a"]]], x)


@register
class SprottS(Flow):
    name = "sprott_s"
    title = "Sprott S"
    variables = ("x", "y", "z")
    parameters = (Param("a", 4.0, 0.0, 10.0, "coupling of y into x"),)
    default_x0 = (-1.5208, 1.4197, 1.5167)
    default_dt = 0.04
    period = 3.4
    latex = r"\dot x = -x - a y \\ \dot y = x + z^2 \\ \dot z = 1 + x"
    description = ("Case S of Sprott's simple chaotic flows: six terms with a single quadratic "
                   "nonlinearity z^2.")
    citation = SPROTT_1994
    lyapunov_reference = LyapunovReference((0.188, 0.0, -1.188), SPROTT_1994_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([-x_ - p["a"] * y, x_ + z * z, 1.0 + x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[-1.0, -p["a"], 0.0], [1.0, 0.0, 2.0 * z], [1.0, 0.0, 0.0]], x)


@register
class Chua(Flow):
    name = "chua"
    title = "Chua's circuit"
    variables = ("x", "y", "z")
    parameters = (
        Param("alpha", 9.0, 0.0, 50.0, "ratio C2/C1 of the capacitances"),
        Param("beta", 100.0 / 7.0, 0.0, 50.0, "ratio C2 R^2 / L"),
        Param("m0", -8.0 / 7.0, -5.0, 5.0, "slope of the diode characteristic for |x| < 1"),
        Param("m1", -5.0 / 7.0, -5.0, 5.0, "slope of the diode characteristic for |x| > 1"),
    )
    default_x0 = (0.3203, -0.1096, -0.3173)
    default_dt = 0.01
    period = 2.5
    latex = (r"\dot x = \alpha\,(y - x - f(x)) \\ \dot y = x - y + z \\ \dot z = -\beta y \\ "
             r"f(x) = m_1 x + \tfrac12 (m_0 - m_1)(|x + 1| - |x - 1|)")
    description = ("The dimensionless equations of Chua's electronic circuit, the first "
                   "physical system proven chaotic. The piecewise-linear Chua diode f gives the "
                   "double-scroll attractor; the Jacobian is piecewise constant.")
    citation = ("T. Matsumoto, A chaotic attractor from Chua's circuit, IEEE Trans. Circuits "
                "Syst. 31, 1055 (1984)")
    lyapunov_reference = LyapunovReference((0.3271, 0.0, -2.5197), SPROTT_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        m0, m1 = p["m0"], p["m1"]
        f = m1 * x_ + 0.5 * (m0 - m1) * (torch.abs(x_ + 1.0) - torch.abs(x_ - 1.0))
        return torch.stack([p["alpha"] * (y - x_ - f), x_ - y + z, -p["beta"] * y], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        m0, m1, al = p["m0"], p["m1"], p["alpha"]
        df = m1 + 0.5 * (m0 - m1) * (torch.sign(x_ + 1.0) - torch.sign(x_ - 1.0))
        return matrix([[-al * (1.0 + df), al, 0.0], [1.0, -1.0, 1.0], [0.0, -p["beta"], 0.0]], x)


@register
class Duffing(Flow):
    name = "duffing"
    title = "Forced Duffing oscillator"
    variables = ("x", "v", "theta")
    parameters = (
        Param("delta", 0.3, 0.0, 5.0, "damping"),
        Param("alpha", -1.0, -10.0, 10.0, "linear stiffness (negative: double well)"),
        Param("beta", 1.0, -10.0, 10.0, "cubic stiffness"),
        Param("gamma", 0.5, 0.0, 50.0, "forcing amplitude"),
        Param("omega", 1.2, 0.01, 10.0, "forcing angular frequency"),
    )
    default_x0 = (-0.5211, 0.4648, 0.2407)
    default_dt = 0.01
    period = 5.24
    latex = (r"\dot x = v \\ \dot v = -\delta v - \alpha x - \beta x^3 + \gamma \cos\theta \\ "
             r"\dot\theta = \omega")
    description = ("Duffing's periodically forced oscillator with a cubic restoring force; with "
                   "alpha < 0 it is a particle in a double well shaken hard enough to hop "
                   "chaotically between the wells. The forcing phase theta is carried as a state "
                   "variable so the flow is autonomous.")
    citation = ("G. Duffing, Erzwungene Schwingungen bei veränderlicher Eigenfrequenz und ihre "
                "technische Bedeutung (Vieweg, Braunschweig, 1918)")

    def rhs(self, x, p):
        x_, v, th = x.unbind(-1)
        return torch.stack([
            v,
            -p["delta"] * v - p["alpha"] * x_ - p["beta"] * x_ * x_ * x_ + p["gamma"] * torch.cos(th),
            _phase_rate(th, p["omega"]),
        ], -1)

    def jacobian(self, x, p):
        x_, v, th = x.unbind(-1)
        return matrix([[0.0, 1.0, 0.0],
                       [-p["alpha"] - 3.0 * p["beta"] * x_ * x_, -p["delta"],
                        -p["gamma"] * torch.sin(th)],
                       [0.0, 0.0, 0.0]], x)


@register
class VanDerPol(Flow):
    name = "van_der_pol"
    title = "Forced van der Pol oscillator"
    variables = ("x", "v", "theta")
    parameters = (
        Param("mu", 3.0, 0.0, 50.0, "nonlinear damping (relaxation strength)"),
        Param("A", 5.0, 0.0, 50.0, "forcing amplitude"),
        Param("omega", 1.788, 0.01, 10.0, "forcing angular frequency"),
    )
    default_x0 = (-1.4857, -3.6759, 5.0239)
    default_dt = 0.01
    period = 3.5
    latex = (r"\dot x = v \\ \dot v = \mu (1 - x^2) v - x + A \cos\theta \\ "
             r"\dot\theta = \omega")
    description = ("The van der Pol relaxation oscillator driven by a periodic force; between "
                   "mode-locked windows the response is chaotic (mu = 3, A = 5, omega = 1.788). "
                   "The forcing phase theta is a state variable.")
    citation = ("B. van der Pol and J. van der Mark, Frequency demultiplication, Nature 120, 363 "
                "(1927)")

    def rhs(self, x, p):
        x_, v, th = x.unbind(-1)
        mu = p["mu"]
        return torch.stack([v, mu * (1.0 - x_ * x_) * v - x_ + p["A"] * torch.cos(th),
                            _phase_rate(th, p["omega"])], -1)

    def jacobian(self, x, p):
        x_, v, th = x.unbind(-1)
        mu = p["mu"]
        return matrix([[0.0, 1.0, 0.0],
                       [-2.0 * mu * x_ * v - 1.0, mu * (1.0 - x_ * x_), -p["A"] * torch.sin(th)],
                       [0.0, 0.0, 0.0]], x)


@register
class Lorenz96(Flow):
    name = "lorenz96"
    title = "Lorenz-96"
    parameters = (
        Param("n", 5, 4, 1000, "number of sites on the ring (the dimension)", integer=True),
        Param("F", 8.0, -50.0, 50.0, "constant forcing; chaotic for F above about 5"),
    )
    default_dt = 0.01
    period = 1.0
    latex = (r"\dot x_i = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F \\ "
             r"i = 1 \dots n, \quad x_{i+n} = x_i")
    description = ("Lorenz's ring of n sites with advection, damping and forcing, a standard "
                   "test bed for data assimilation and spatiotemporal chaos. The dimension is the "
                   "structural parameter n; at F = 8 it is chaotic for n >= 5.")
    citation = ("E. N. Lorenz, Predictability: a problem partly solved, Proc. ECMWF Seminar on "
                "Predictability, vol. 1, 1 (1996)")

    @property
    def variables(self):
        return tuple(f"x{i}" for i in range(int(self.params["n"])))

    @property
    def default_x0(self):
        F = self.params["F"]
        f = float(F) if not isinstance(F, torch.Tensor) else float(F.mean())
        return tuple(f + (0.01 if i == 0 else 0.0) for i in range(int(self.params["n"])))

    def rhs(self, x, p):
        F = p["F"]
        if isinstance(F, torch.Tensor):
            F = F.unsqueeze(-1)
        xp1 = torch.roll(x, -1, -1)
        xm1 = torch.roll(x, 1, -1)
        xm2 = torch.roll(x, 2, -1)
        return (xp1 - xm2) * xm1 - x + F

    def jacobian(self, x, p):
        n = x.shape[-1]
        eye = torch.eye(n, dtype=x.dtype, device=x.device)

        def shift(k):  # row i has its one in column i + k (mod n)
            return torch.roll(eye, k, 1)

        xp1 = torch.roll(x, -1, -1)[..., :, None]
        xm1 = torch.roll(x, 1, -1)[..., :, None]
        xm2 = torch.roll(x, 2, -1)[..., :, None]
        return -eye + (xp1 - xm2) * shift(-1) + xm1 * (shift(1) - shift(-2))


@register
class DoublePendulum(Flow):
    name = "double_pendulum"
    title = "Double pendulum"
    variables = ("theta1", "theta2", "omega1", "omega2")
    parameters = (
        Param("m1", 1.0, 0.01, 100.0, "mass of the upper bob"),
        Param("m2", 1.0, 0.01, 100.0, "mass of the lower bob"),
        Param("l1", 1.0, 0.01, 100.0, "length of the upper rod"),
        Param("l2", 1.0, 0.01, 100.0, "length of the lower rod"),
        Param("g", 9.81, 0.0, 100.0, "gravitational acceleration"),
    )
    default_x0 = (2.0, 2.5, 0.0, 0.0)
    default_dt = 0.005
    period = 2.0
    latex = (r"\dot\theta_1 = \omega_1 \\ \dot\theta_2 = \omega_2 \\ "
             r"\dot\omega_1 = \frac{-g (2 m_1 + m_2) \sin\theta_1 - m_2 g \sin(\theta_1 - 2\theta_2)"
             r" - 2 m_2 \sin\Delta\,(\omega_2^2 l_2 + \omega_1^2 l_1 \cos\Delta)}{l_1 D} \\ "
             r"\dot\omega_2 = \frac{2 \sin\Delta\,((m_1 + m_2)(\omega_1^2 l_1 + g \cos\theta_1)"
             r" + \omega_2^2 l_2 m_2 \cos\Delta)}{l_2 D} \\ "
             r"\Delta = \theta_1 - \theta_2, \quad D = 2 m_1 + m_2 - m_2 \cos 2\Delta")
    description = ("Two point masses on massless rigid rods, the lower hanging from the upper, "
                   "without friction. A Hamiltonian system: energy is conserved and the exponents "
                   "come in +/- pairs, but at high energy most of phase space is chaotic. Angles "
                   "are not wrapped.")
    citation = ("T. Shinbrot, C. Grebogi, J. Wisdom and J. A. Yorke, Chaos in a double pendulum, "
                "Am. J. Phys. 60, 491 (1992)")

    def rhs(self, x, p):
        t1, t2, w1, w2 = x.unbind(-1)
        m1, m2, l1, l2, g = p["m1"], p["m2"], p["l1"], p["l2"], p["g"]
        d = t1 - t2
        sd, cd = torch.sin(d), torch.cos(d)
        den = 2.0 * m1 + m2 - m2 * torch.cos(2.0 * d)
        n1 = (-g * (2.0 * m1 + m2) * torch.sin(t1) - m2 * g * torch.sin(t1 - 2.0 * t2)
              - 2.0 * m2 * sd * (w2 * w2 * l2 + w1 * w1 * l1 * cd))
        n2 = 2.0 * sd * ((m1 + m2) * (w1 * w1 * l1 + g * torch.cos(t1)) + w2 * w2 * l2 * m2 * cd)
        return torch.stack([w1, w2, n1 / (l1 * den), n2 / (l2 * den)], -1)

    def jacobian(self, x, p):
        t1, t2, w1, w2 = x.unbind(-1)
        m1, m2, l1, l2, g = p["m1"], p["m2"], p["l1"], p["l2"], p["g"]
        M = m1 + m2
        d = t1 - t2
        sd, cd = torch.sin(d), torch.cos(d)
        c2d, s2d = torch.cos(2.0 * d), torch.sin(2.0 * d)
        den = 2.0 * m1 + m2 - m2 * c2d
        c12 = torch.cos(t1 - 2.0 * t2)
        n1 = (-g * (2.0 * m1 + m2) * torch.sin(t1) - m2 * g * torch.sin(t1 - 2.0 * t2)
              - 2.0 * m2 * sd * (w2 * w2 * l2 + w1 * w1 * l1 * cd))
        k = M * (w1 * w1 * l1 + g * torch.cos(t1)) + w2 * w2 * l2 * m2 * cd
        n2 = 2.0 * sd * k
        # partial derivatives of the numerators and of the denominator
        inner = w2 * w2 * l2 * cd + w1 * w1 * l1 * c2d
        dn1_t1 = -g * (2.0 * m1 + m2) * torch.cos(t1) - m2 * g * c12 - 2.0 * m2 * inner
        dn1_t2 = 2.0 * m2 * g * c12 + 2.0 * m2 * inner
        dn1_w1 = -4.0 * m2 * l1 * w1 * sd * cd
        dn1_w2 = -4.0 * m2 * l2 * w2 * sd
        dn2_t1 = 2.0 * cd * k + 2.0 * sd * (-g * M * torch.sin(t1) - w2 * w2 * l2 * m2 * sd)
        dn2_t2 = -2.0 * cd * k + 2.0 * sd * (w2 * w2 * l2 * m2 * sd)
        dn2_w1 = 4.0 * sd * w1 * l1 * M
        dn2_w2 = 4.0 * sd * w2 * l2 * m2 * cd
        dden_t1 = 2.0 * m2 * s2d
        dden_t2 = -dden_t1
        r1 = n1 / den
        r2 = n2 / den
        a1 = l1 * den
        a2 = l2 * den
        return matrix([
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [(dn1_t1 - r1 * dden_t1) / a1, (dn1_t2 - r1 * dden_t2) / a1, dn1_w1 / a1, dn1_w2 / a1],
            [(dn2_t1 - r2 * dden_t1) / a2, (dn2_t2 - r2 * dden_t2) / a2, dn2_w1 / a2, dn2_w2 / a2],
        ], x)


@register
class HenonHeiles(Flow):
    name = "henon_heiles"
    title = "Hénon-Heiles"
    variables = ("x", "y", "px", "py")
    parameters = (Param("lam", 1.0, 0.0, 2.0, "strength of the cubic coupling"),)
    default_x0 = (0.0, -0.2, 0.4524, 0.0)
    default_dt = 0.02
    period = 6.3
    latex = (r"\dot x = p_x \\ \dot y = p_y \\ \dot p_x = -x - 2 \lambda x y \\ "
             r"\dot p_y = -y - \lambda (x^2 - y^2)")
    description = ("Motion of a star in a galactic potential with cubic terms, "
                   "H = (p_x^2 + p_y^2)/2 + (x^2 + y^2)/2 + lambda (x^2 y - y^3/3). Regular at low "
                   "energy, mostly chaotic near the escape energy 1/(6 lambda^2); the default "
                   "initial condition has energy close to 1/8.")
    citation = ("M. Hénon and C. Heiles, The applicability of the third integral of motion: some "
                "numerical experiments, Astron. J. 69, 73 (1964)")

    def rhs(self, x, p):
        x_, y, px, py = x.unbind(-1)
        lam = p["lam"]
        return torch.stack([px, py, -x_ - 2.0 * lam * x_ * y, -y - lam * (x_ * x_ - y * y)], -1)

    def jacobian(self, x, p):
        x_, y, px, py = x.unbind(-1)
        lam = p["lam"]
        return matrix([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0],
                       [-1.0 - 2.0 * lam * y, -2.0 * lam * x_, 0.0, 0.0],
                       [-2.0 * lam * x_, -1.0 + 2.0 * lam * y, 0.0, 0.0]], x)


@register
class RabinovichFabrikant(Flow):
    name = "rabinovich_fabrikant"
    title = "Rabinovich-Fabrikant"
    variables = ("x", "y", "z")
    parameters = (
        Param("alpha", 1.1, 0.0, 2.0, "damping of z"),
        Param("gamma", 0.87, 0.0, 2.0, "growth rate of the wave amplitude"),
    )
    default_x0 = (-1.2024, -0.1187, 0.4248)
    default_dt = 0.005
    period = 3.0
    bound = 1e3
    latex = (r"\dot x = y (z - 1 + x^2) + \gamma x \\ \dot y = x (3 z + 1 - x^2) + \gamma y \\ "
             r"\dot z = -2 z (\alpha + x y)")
    description = ("Rabinovich and Fabrikant's model of stochastic self-modulation of waves in "
                   "nonequilibrium media. Its attractors are sensitive to parameters and initial "
                   "conditions; many orbits escape to infinity.")
    citation = ("M. I. Rabinovich and A. L. Fabrikant, Stochastic self-modulation of waves in "
                "nonequilibrium media, Sov. Phys. JETP 50, 311 (1979)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        g = p["gamma"]
        return torch.stack([y * (z - 1.0 + x_ * x_) + g * x_,
                            x_ * (3.0 * z + 1.0 - x_ * x_) + g * y,
                            -2.0 * z * (p["alpha"] + x_ * y)], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        g = p["gamma"]
        return matrix([[2.0 * x_ * y + g, z - 1.0 + x_ * x_, y],
                       [3.0 * z + 1.0 - 3.0 * x_ * x_, g, 3.0 * x_],
                       [-2.0 * z * y, -2.0 * z * x_, -2.0 * (p["alpha"] + x_ * y)]], x)


@register
class GenesioTesi(Flow):
    name = "genesio_tesi"
    title = "Genesio-Tesi"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 0.44, 0.0, 5.0, "damping of the jerk (coefficient of the acceleration)"),
        Param("b", 1.1, 0.0, 5.0, "coefficient of the velocity"),
        Param("c", 1.0, 0.0, 5.0, "coefficient of the position"),
    )
    default_x0 = (0.011, 0.2112, 0.0624)
    default_dt = 0.02
    period = 7.0
    bound = 1e3
    latex = r"\dot x = y \\ \dot y = z \\ \dot z = -c x - b y - a z + x^2"
    description = ("A quadratic jerk equation studied by Genesio and Tesi with harmonic balance: "
                   "the third-order ODE x''' + a x'' + b x' + c x = x^2, with a Rössler-like "
                   "folded band attractor; orbits beyond it escape to infinity.")
    citation = ("R. Genesio and A. Tesi, Harmonic balance methods for the analysis of chaotic "
                "dynamics in nonlinear systems, Automatica 28, 531 (1992)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y, z, -p["c"] * x_ - p["b"] * y - p["a"] * z + x_ * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                       [-p["c"] + 2.0 * x_, -p["b"], -p["a"]]], x)


@register
class Rucklidge(Flow):
    name = "rucklidge"
    title = "Rucklidge"
    variables = ("x", "y", "z")
    parameters = (
        Param("kappa", 2.0, 0.0, 10.0, "damping of x"),
        Param("lam", 6.7, 0.0, 20.0, "linear forcing of x by y"),
    )
    default_x0 = (-0.7617, -0.2761, 3.7439)
    default_dt = 0.01
    period = 4.5
    latex = r"\dot x = -\kappa x + \lambda y - y z \\ \dot y = x \\ \dot z = -z + y^2"
    description = ("Rucklidge's model of two-dimensional convection in a horizontal magnetic "
                   "field (or with rotation): a Lorenz-like two-lobed attractor with a different "
                   "symmetry-breaking route to chaos.")
    citation = "A. M. Rucklidge, Chaos in models of double convection, J. Fluid Mech. 237, 209 (1992)"

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([-p["kappa"] * x_ + p["lam"] * y - y * z, x_, -z + y * y], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[-p["kappa"], p["lam"] - z, -y], [1.0, 0.0, 0.0], [0.0, 2.0 * y, -1.0]], x)


@register
class ShimizuMorioka(Flow):
    name = "shimizu_morioka"
    title = "Shimizu-Morioka"
    variables = ("x", "y", "z")
    parameters = (
        Param("lam", 0.75, 0.0, 5.0, "damping of y"),
        Param("alpha", 0.45, 0.0, 5.0, "damping of z"),
    )
    default_x0 = (0.7399, 0.0741, 1.0187)
    default_dt = 0.02
    period = 6.0
    latex = r"\dot x = y \\ \dot y = x - \lambda y - x z \\ \dot z = -\alpha z + x^2"
    description = ("Shimizu and Morioka's model, a normal form for the Lorenz attractor near a "
                   "codimension-three point: Lorenz-like two-lobed chaos with Shilnikov "
                   "homoclinic bifurcations.")
    citation = ("T. Shimizu and N. Morioka, On the bifurcation of a symmetric limit cycle to an "
                "asymmetric one in a simple model, Phys. Lett. A 76, 201 (1980)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y, x_ - p["lam"] * y - x_ * z, -p["alpha"] * z + x_ * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, 1.0, 0.0], [1.0 - z, -p["lam"], -x_], [2.0 * x_, 0.0, -p["alpha"]]], x)


@register
class Arneodo(Flow):
    name = "arneodo"
    title = "Arneodo-Coullet-Tresser"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", -5.5, -20.0, 20.0, "coefficient of x"),
        Param("b", 3.5, -20.0, 20.0, "coefficient of y"),
        Param("c", 1.0, 0.0, 10.0, "damping of z"),
        Param("d", -1.0, -10.0, 10.0, "cubic coefficient"),
    )
    default_x0 = (-0.6551, 0.6785, 0.6837)
    default_dt = 0.01
    period = 4.0
    bound = 1e3
    latex = r"\dot x = y \\ \dot y = z \\ \dot z = -a x - b y - c z + d x^3"
    description = ("A cubic jerk system of Arneodo, Coullet and Tresser, derived from a normal "
                   "form near a triple-zero eigenvalue; it shows Shilnikov-type spiral chaos.")
    citation = ("A. Arneodo, P. Coullet and C. Tresser, Possible new strange attractors with "
                "spiral structure, Commun. Math. Phys. 79, 573 (1981)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([y, z, -p["a"] * x_ - p["b"] * y - p["c"] * z + p["d"] * x_ * x_ * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                       [-p["a"] + 3.0 * p["d"] * x_ * x_, -p["b"], -p["c"]]], x)


@register
class BurkeShaw(Flow):
    name = "burke_shaw"
    title = "Burke-Shaw"
    variables = ("x", "y", "z")
    parameters = (
        Param("s", 10.0, 0.0, 50.0, "time scale of the coupling"),
        Param("v", 4.272, 0.0, 20.0, "constant drive of z"),
    )
    default_x0 = (-0.1571, 0.2148, 0.5004)
    default_dt = 0.005
    period = 1.0
    latex = r"\dot x = -s (x + y) \\ \dot y = -y - s x z \\ \dot z = s x y + v"
    description = ("Bill Burke's variant of the Lorenz system, described by Robert Shaw: a "
                   "symmetric two-lobed attractor with constant divergence -(s + 1).")
    citation = ("R. Shaw, Strange attractors, chaotic behavior, and information flow, "
                "Z. Naturforsch. A 36, 80 (1981)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        s = p["s"]
        return torch.stack([-s * (x_ + y), -y - s * x_ * z, s * x_ * y + p["v"]], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        s = p["s"]
        return matrix([[-s, -s, 0.0], [-s * z, -1.0, -s * x_], [s * y, s * x_, 0.0]], x)


@register
class Lorenz84(Flow):
    name = "lorenz84"
    title = "Lorenz-84"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 0.25, 0.0, 2.0, "damping of the westerly wind x"),
        Param("b", 4.0, 0.0, 20.0, "displacement of the eddies by the westerly wind"),
        Param("F", 8.0, -20.0, 50.0, "symmetric thermal forcing"),
        Param("G", 1.0, -20.0, 20.0, "asymmetric thermal forcing"),
    )
    default_x0 = (1.4802, 0.5232, -0.6445)
    default_dt = 0.02
    period = 3.0
    latex = (r"\dot x = -y^2 - z^2 - a x + a F \\ \dot y = x y - b x z - y + G \\ "
             r"\dot z = b x y + x z - z")
    description = ("Lorenz's low-order model of the general atmospheric circulation (Hadley "
                   "circulation): a westerly wind x interacting with a travelling wave (y, z), "
                   "chaotic at F = 8, G = 1.")
    citation = ("E. N. Lorenz, Irregularity: a fundamental property of the atmosphere, Tellus A "
                "36, 98 (1984)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b = p["a"], p["b"]
        return torch.stack([-y * y - z * z - a * x_ + a * p["F"],
                            x_ * y - b * x_ * z - y + p["G"],
                            b * x_ * y + x_ * z - z], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        a, b = p["a"], p["b"]
        return matrix([[-a, -2.0 * y, -2.0 * z],
                       [y - b * z, x_ - 1.0, -b * x_],
                       [b * y + z, b * x_, x_ - 1.0]], x)


@register
class HindmarshRose(Flow):
    name = "hindmarsh_rose"
    title = "Hindmarsh-Rose neuron"
    variables = ("x", "y", "z")
    parameters = (
        Param("a", 1.0, 0.0, 10.0, "cubic coefficient of the membrane potential"),
        Param("b", 3.0, 0.0, 10.0, "quadratic coefficient of the membrane potential"),
        Param("c", 1.0, -10.0, 10.0, "constant of the recovery variable"),
        Param("d", 5.0, 0.0, 20.0, "quadratic coefficient of the recovery variable"),
        Param("r", 0.006, 0.0, 0.1, "time-scale ratio of the slow adaptation current"),
        Param("s", 4.0, 0.0, 10.0, "adaptation gain"),
        Param("x_r", -1.6, -5.0, 5.0, "resting potential of the adaptation"),
        Param("I", 3.25, -10.0, 10.0, "applied current"),
    )
    default_x0 = (0.2786, 0.5909, 3.1975)
    default_dt = 0.02
    period = 100.0
    latex = (r"\dot x = y - a x^3 + b x^2 - z + I \\ \dot y = c - d x^2 - y \\ "
             r"\dot z = r\,(s (x - x_r) - z)")
    description = ("Hindmarsh and Rose's three-variable model of a bursting neuron: fast spiking "
                   "(x, y) modulated by a slow adaptation current z. At I = 3.25, r = 0.006 the "
                   "bursts are irregular (chaotic bursting).")
    citation = ("J. L. Hindmarsh and R. M. Rose, A model of neuronal bursting using three coupled "
                "first order differential equations, Proc. R. Soc. Lond. B 221, 87 (1984)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([
            y - p["a"] * x_ * x_ * x_ + p["b"] * x_ * x_ - z + p["I"],
            p["c"] - p["d"] * x_ * x_ - y,
            p["r"] * (p["s"] * (x_ - p["x_r"]) - z),
        ], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[-3.0 * p["a"] * x_ * x_ + 2.0 * p["b"] * x_, 1.0, -1.0],
                       [-2.0 * p["d"] * x_, -1.0, 0.0],
                       [p["r"] * p["s"], 0.0, -p["r"]]], x)


@register
class DiffusionlessLorenz(Flow):
    name = "diffusionless_lorenz"
    title = "Diffusionless Lorenz"
    variables = ("x", "y", "z")
    parameters = (Param("R", 1.0, 0.0, 10.0, "the single parameter (Rayleigh-like forcing)"),)
    default_x0 = (1.9307, -1.3688, -2.0192)
    default_dt = 0.04
    period = 5.0
    latex = r"\dot x = -y - x \\ \dot y = -x z \\ \dot z = x y + R"
    description = ("The Lorenz equations in the limit of vanishing diffusion (high Rayleigh "
                   "number), rescaled to a single parameter R; a two-lobed attractor with "
                   "constant divergence -1.")
    citation = ("G. van der Schrier and L. R. M. Maas, The diffusionless Lorenz equations; "
                "Shil'nikov bifurcations and reduction to an explicit map, Physica D 141, 19 (2000)")
    lyapunov_reference = LyapunovReference((0.2101, 0.0, -1.2101), SPROTT_TABLE)

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        return torch.stack([-y - x_, -x_ * z, x_ * y + p["R"]], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        return matrix([[-1.0, -1.0, 0.0], [-z, 0.0, -x_], [y, x_, 0.0]], x)


@register
class MooreSpiegel(Flow):
    name = "moore_spiegel"
    title = "Moore-Spiegel oscillator"
    variables = ("x", "y", "z")
    parameters = (
        Param("T", 6.0, 0.0, 50.0, "thermal relaxation parameter"),
        Param("R", 20.0, 0.0, 200.0, "buoyancy (Rayleigh-like) parameter"),
    )
    default_x0 = (0.1032, -0.0147, 0.5089)
    default_dt = 0.005
    period = 5.0
    latex = r"\dot x = y \\ \dot y = z \\ \dot z = -z - (T - R + R x^2)\, y - T x"
    description = ("Moore and Spiegel's model of a thermally excited, magnetically restrained "
                   "fluid element in a stellar atmosphere, an early example of aperiodic "
                   "oscillation written as a jerk equation.")
    citation = ("D. W. Moore and E. A. Spiegel, A thermally excited non-linear oscillator, "
                "Astrophys. J. 143, 871 (1966)")

    def rhs(self, x, p):
        x_, y, z = x.unbind(-1)
        T, R = p["T"], p["R"]
        return torch.stack([y, z, -z - (T - R + R * x_ * x_) * y - T * x_], -1)

    def jacobian(self, x, p):
        x_, y, z = x.unbind(-1)
        T, R = p["T"], p["R"]
        return matrix([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                       [-2.0 * R * x_ * y - T, -(T - R + R * x_ * x_), -1.0]], x)


@register
class RosslerHyperchaos(Flow):
    name = "rossler_hyperchaos"
    title = "Rössler hyperchaos"
    variables = ("x", "y", "z", "w")
    parameters = (
        Param("a", 0.25, 0.0, 1.0, "growth rate of the x-y spiral"),
        Param("b", 3.0, 0.0, 10.0, "constant injection into z"),
        Param("c", 0.5, 0.0, 5.0, "feedback of z into w"),
        Param("d", 0.05, 0.0, 1.0, "growth rate of w"),
    )
    default_x0 = (-107.6142, -32.8144, 0.0278, 52.0382)
    default_dt = 0.01
    period = 7.0
    latex = (r"\dot x = -y - z \\ \dot y = x + a y + w \\ \dot z = b + x z \\ "
             r"\dot w = -c z + d w")
    description = ("Rössler's four-dimensional extension of his flow, the first example of "
                   "hyperchaos: two positive Lyapunov exponents, so the attractor stretches in "
                   "two directions at once.")
    citation = "O. E. Rössler, An equation for hyperchaos, Phys. Lett. A 71, 155 (1979)"

    def rhs(self, x, p):
        x_, y, z, w = x.unbind(-1)
        return torch.stack([-y - z, x_ + p["a"] * y + w, p["b"] + x_ * z,
                            -p["c"] * z + p["d"] * w], -1)

    def jacobian(self, x, p):
        x_, y, z, w = x.unbind(-1)
        return matrix([[0.0, -1.0, -1.0, 0.0], [1.0, p["a"], 0.0, 1.0],
                       [z, 0.0, x_, 0.0], [0.0, 0.0, -p["c"], p["d"]]], x)


# ----------------------------------------------------------------------------- mechanical toys
# Regular (non-chaotic) mechanical systems: the ground truth behind the rendered image
# sequences of :mod:`explorer.core.render` (the latent-dynamics-from-frames page). They carry
# no Lyapunov reference: they are integrable (every exponent is zero when undamped).
NEWTON = "I. Newton, Philosophiae Naturalis Principia Mathematica (London, 1687)"


@register
class Pendulum(Flow):
    name = "pendulum"
    title = "Pendulum"
    aliases = ("simple_pendulum",)
    variables = ("theta", "omega")
    parameters = (
        Param("g", 9.81, 0.0, 100.0, "gravitational acceleration"),
        Param("L", 1.0, 0.01, 100.0, "length of the (massless) rod"),
        Param("gamma", 0.0, 0.0, 10.0, "linear damping rate (friction at the pivot)"),
    )
    default_x0 = (1.0, 0.0)
    default_dt = 0.01
    period = 2.0                   # 2 pi sqrt(L / g) = 2.006 at small amplitude
    latex = (r"\dot\theta = \omega \\ "
             r"\dot\omega = -\frac{g}{L} \sin\theta - \gamma\,\omega")
    description = ("A point mass on a rigid massless rod swinging under gravity, theta measured "
                   "from the downward vertical. Integrable when undamped (the energy "
                   "omega^2/2 - (g/L) cos theta is conserved); small swings have the period "
                   "2 pi sqrt(L/g), longer for larger amplitudes. Damping gamma makes it spiral "
                   "to rest. Angles are not wrapped.")
    citation = ("C. Huygens, Horologium Oscillatorium (Paris, 1673); see S. H. Strogatz, "
                "Nonlinear Dynamics and Chaos (Westview, 1994), Sec. 6.7")

    def rhs(self, x, p):
        th, w = x.unbind(-1)
        return torch.stack([w, -(p["g"] / p["L"]) * torch.sin(th) - p["gamma"] * w], -1)

    def jacobian(self, x, p):
        th = x[..., 0]
        return matrix([[0.0, 1.0], [-(p["g"] / p["L"]) * torch.cos(th), -p["gamma"]]], x)


@register
class MassSpring(Flow):
    name = "mass_spring"
    title = "Mass on a spring"
    aliases = ("harmonic_oscillator",)
    variables = ("x", "v")
    parameters = (
        Param("k", 4.0, 0.0, 100.0, "spring constant (Hooke's law)"),
        Param("m", 1.0, 0.01, 100.0, "mass of the block"),
        Param("c", 0.0, 0.0, 10.0, "linear (viscous) damping coefficient"),
    )
    default_x0 = (0.5, 0.0)
    default_dt = 0.01
    period = 3.14                  # 2 pi sqrt(m / k)
    latex = r"\dot x = v \\ \dot v = -\frac{k}{m} x - \frac{c}{m} v"
    description = ("A block of mass m on a frictionless track, tied to a wall by a linear spring "
                   "(Hooke's law): the harmonic oscillator, with angular frequency sqrt(k/m) "
                   "whatever the amplitude. Viscous damping c makes it a damped oscillator "
                   "(underdamped for c < 2 sqrt(k m)).")
    citation = ("R. Hooke, Lectures de Potentia Restitutiva, or of Spring (London, 1678); "
                + NEWTON)

    def rhs(self, x, p):
        x_, v = x.unbind(-1)
        m = p["m"]
        return torch.stack([v, -(p["k"] / m) * x_ - (p["c"] / m) * v], -1)

    def jacobian(self, x, p):
        m = p["m"]
        return matrix([[0.0, 1.0], [-(p["k"] / m), -(p["c"] / m)]], x)


@register
class RingBodies(Flow):
    name = "two_bodies_ring"
    title = "Two bodies on a ring"
    aliases = ("ring_bodies", "two_bodies")
    variables = ("phi1", "phi2", "w1", "w2")
    parameters = (
        Param("k", 2.0, 0.0, 100.0, "stiffness of the spring joining the bodies (per unit mass)"),
        Param("gamma", 0.0, 0.0, 10.0, "linear damping of each body's angular velocity"),
    )
    default_x0 = (0.0, 1.5, 0.5, 0.0)
    default_dt = 0.01
    period = 3.14                  # small relative oscillations: 2 pi / sqrt(2 k)
    latex = (r"\dot\varphi_1 = w_1 \\ \dot\varphi_2 = w_2 \\ "
             r"\dot w_1 = -k \sin(\varphi_1 - \varphi_2) - \gamma w_1 \\ "
             r"\dot w_2 = k \sin(\varphi_1 - \varphi_2) - \gamma w_2")
    description = ("Two equal beads sliding without friction on a circular wire (unit radius), "
                   "joined by a zero-rest-length spring along the chord between them: potential "
                   "k (1 - cos(phi1 - phi2)). The total angular momentum w1 + w2 is conserved "
                   "when undamped, so the pair drifts round the ring at a constant mean rate "
                   "while the angle between them oscillates like a pendulum. Angles are not "
                   "wrapped.")
    citation = ("H. Goldstein, C. Poole and J. Safko, Classical Mechanics, 3rd ed. "
                "(Addison-Wesley, 2002), Ch. 2 (Lagrange's equations with constraints)")

    def rhs(self, x, p):
        p1, p2, w1, w2 = x.unbind(-1)
        k, gam = p["k"], p["gamma"]
        s = k * torch.sin(p1 - p2)
        return torch.stack([w1, w2, -s - gam * w1, s - gam * w2], -1)

    def jacobian(self, x, p):
        kc = p["k"] * torch.cos(x[..., 0] - x[..., 1])
        gam = p["gamma"]
        return matrix([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0],
                       [-kc, kc, -gam, 0.0], [kc, -kc, 0.0, -gam]], x)
