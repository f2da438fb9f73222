"""Teaching presets of the Attractors page: a state (as URL query values) and a few sentences.

A preset is data: ``query`` uses the same keys as the page's URL (see
:meth:`AttractorController.to_query`), so a preset is exactly a link a teacher could share.
``compute`` lists the on-request panels the preset fills in at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    text: str
    query: dict[str, str]
    compute: tuple[str, ...] = field(default=())


PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset(
        "lorenz-butterfly", "Lorenz butterfly",
        "Lorenz's convection model at σ = 10, ρ = 28, β = 8/3. A single trajectory winds around "
        "two unstable fixed points, switching wings at irregular times: the butterfly. The "
        "largest Lyapunov exponent, about 0.91 per time unit, says that nearby states separate "
        "by a factor e in about one time unit. Press play to watch an ensemble of nearby "
        "states spread over both wings.",
        {"sys": "lorenz63", "p.sigma": "10", "p.rho": "28", "p.beta": "2.6666666666666665",
         "n": "1", "T": "100", "proj": "x,z", "view": "2D", "color": "time"},
        ("lyapunov",)),
    Preset(
        "logistic-route", "Route to chaos in the logistic map",
        "The logistic map x → r x (1 − x). As r grows the stable fixed point gives way to a "
        "2-cycle at r = 3, then 4, 8, ... cycles at values that crowd together at the rate of "
        "Feigenbaum's constant δ ≈ 4.669, until chaos at r ≈ 3.5699. Drag a box on the orbit "
        "diagram to zoom into the self-similar cascade and the periodic windows (period 3 "
        "near r = 3.83).",
        {"sys": "logistic", "p.r": "3.7", "n": "1", "T": "2000", "op": "r", "olo": "2.8",
         "ohi": "4", "color": "time"},
        ("orbit", "lyapunov")),
    Preset(
        "rossler-funnel", "Rössler funnel",
        "Rössler's flow at a = 0.2, b = 0.2, c = 5.7: a trajectory spirals out in the x-y plane "
        "and is reinjected by a fold in z, a single-band 'funnel' attractor. Its largest "
        "exponent, about 0.07, is small: chaos here is slow. The Poincaré section on x = 0 "
        "shows the fold as an almost one-dimensional curve.",
        {"sys": "rossler", "p.a": "0.2", "p.b": "0.2", "p.c": "5.7", "n": "1", "T": "500",
         "proj": "x,y", "view": "3D", "az": "40", "el": "25", "sec": "x", "color": "speed"},
        ("section",)),
    Preset(
        "henon-fractal", "Hénon fractal",
        "Hénon's map at a = 1.4, b = 0.3. Each iteration stretches, folds and contracts the "
        "plane by the factor b; the attractor is a fractal whose cross-sections are Cantor "
        "sets. Zoom into one band with the box-zoom tool to see it split into ever finer "
        "bands. Its Kaplan–Yorke dimension is about 1.26.",
        {"sys": "henon", "p.a": "1.4", "p.b": "0.3", "n": "100", "T": "2000", "proj": "x,y",
         "color": "expansion"},
        ("lyapunov",)),
    Preset(
        "lorenz96-dimension", "Lorenz-96 and dimension",
        "Lorenz-96: n sites on a ring with advection, damping and forcing F = 8. Change n and "
        "compute the Lyapunov spectrum: the number of positive exponents and the Kaplan–Yorke "
        "dimension grow with n, the hallmark of spatiotemporal chaos (about 0.4 n for large "
        "n at F = 8).",
        {"sys": "lorenz96", "p.n": "10", "p.F": "8", "n": "1", "T": "50", "proj": "x0,x1",
         "color": "time"},
        ("lyapunov",)),
)}
