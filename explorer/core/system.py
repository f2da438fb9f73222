"""The one interface for everything that evolves: flows (ODEs), maps and SDEs.

A :class:`DynamicalSystem` says *what* evolves; solvers (:mod:`explorer.core.solvers`) say
*how*; :func:`explorer.core.simulate.simulate` says *what is recorded*. Lyapunov spectra,
fixed points, orbit diagrams and plots are written once against this interface, so they work
on built-in systems, custom equations, the dysts catalogue and trained models alike.

Conventions
-----------
* States are tensors shaped ``(..., D)``; trajectories are time-major ``(T, B, D)``.
* A flow's :meth:`DynamicalSystem.rhs` returns ``dx/dt``; a map's returns the next state;
  an SDE's returns its drift ``f`` and :meth:`SDE.diffusion` its noise amplitude ``g``.
* The kind is behaviour, not a string to compare: ask :attr:`~DynamicalSystem.continuous_time`,
  :attr:`~DynamicalSystem.is_map`, :attr:`~DynamicalSystem.stochastic`,
  :attr:`~DynamicalSystem.default_solver`, :meth:`~DynamicalSystem.time_step`,
  :meth:`~DynamicalSystem.velocity`, :attr:`~DynamicalSystem.time_unit` (``kind`` stays as a
  label for JSON and URLs).
* Parameters are floats or tensors that broadcast against ``x[..., 0]``: a system built with
  ``rho=torch.linspace(20, 30, 64)`` evolves a batch of 64 states, each at its own ``rho``.
* Non-autonomous systems (forced oscillators) carry their forcing phase as an extra state
  variable with constant derivative, so every flow is autonomous.
* Dtype and device follow the state tensor.

Writing a system (see :mod:`explorer.core.flows` for many examples)::

    @register
    class Lorenz63(Flow):
        name = "lorenz63"
        title = "Lorenz-63"
        variables = ("x", "y", "z")
        parameters = (Param("sigma", 10.0, 0.0, 50.0, "Prandtl number"), ...)
        default_x0 = (1.0, 1.0, 1.0)
        default_dt = 0.01
        latex = r"\\dot x = \\sigma (y - x) \\ ..."

        def rhs(self, x, p):
            x_, y, z = x.unbind(-1)
            return torch.stack([p["sigma"] * (y - x_), ...], -1)

        def jacobian(self, x, p):
            ...  # analytic, shape (..., 3, 3); use ``matrix`` below
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch

from .errors import ExplorerError, ParameterError, ShapeError

Number = float | int
ParamValue = float | int | torch.Tensor


class UnsupportedKindError(ExplorerError, ValueError):
    """An analysis was asked of a kind of system it does not apply to (e.g. Lyapunov
    exponents or a Poincaré section of a stochastic system)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a system.

    Attributes:
        name: identifier used in equations, URLs and ``--param name=value``.
        default: the literature value (usually the chaotic regime).
        low, high: inclusive bounds; values outside are refused.
        doc: one sentence for tooltips and ``systems --json``.
        integer: structural integer parameter (e.g. Lorenz-96's dimension); never a tensor.
    """

    name: str
    default: float
    low: float
    high: float
    doc: str = ""
    integer: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "default": self.default, "low": self.low,
                "high": self.high, "doc": self.doc, "integer": self.integer}


@dataclass(frozen=True)
class LyapunovReference:
    """Published Lyapunov exponents (largest first), where they apply, and where from.

    ``exponents`` are per time unit for flows, per iteration for maps. ``params`` names the
    parameter values they were computed at; ``None`` means the system's defaults.
    """

    exponents: tuple[float, ...]
    source: str
    params: Mapping[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"exponents": list(self.exponents), "source": self.source,
                "params": dict(self.params) if self.params else None}


def matrix(rows: Sequence[Sequence[ParamValue]], like: torch.Tensor) -> torch.Tensor:
    """Build a batched ``(..., R, C)`` matrix from nested entries (tensors or numbers).

    Every entry is broadcast to the batch shape ``like.shape[:-1]`` (and against the other
    entries) with ``like``'s dtype and device, so constant entries (``0.0``, ``-1.0``) may be
    written as plain numbers. One op per entry plus one stack: Jacobians are built often.
    """
    R, C = len(rows), len(rows[0])
    flat = [e for row in rows for e in row]
    shape = torch.broadcast_shapes(like.shape[:-1], *(e.shape for e in flat if isinstance(e, torch.Tensor)))
    ents = [e.to(like.dtype).expand(shape) if isinstance(e, torch.Tensor)
            else like.new_full(shape, float(e)) for e in flat]
    return torch.stack(ents, -1).unflatten(-1, (R, C))


class DynamicalSystem(abc.ABC):
    """Abstract base of flows, maps and SDEs. Subclasses are final: one class per system.

    Class attributes (metadata, kept as data):
        name: registry key, lower case (``"lorenz63"``); ``aliases`` are extra keys.
        title: the literature name (``"Lorenz-63"``).
        kind: ``"flow"``, ``"map"`` or ``"sde"``: a label (JSON, URLs); code asks the
            behaviour below instead of comparing it.
        continuous_time: True for flows and SDEs (time steps ``dt``), False for maps;
            ``is_map`` is its negation (discrete time: one step is one iteration, ``dt = 1``).
        stochastic: True for SDEs (noise drawn from an explicit generator or a seed);
            ``deterministic`` is its negation.
        (These are class attributes: ask the class or an instance alike.)
        default_solver: the :data:`~explorer.core.solvers.SOLVERS` key used when none is given.
        time_unit: ``"time unit"`` or ``"iteration"`` (rates are "per" this).
        variables: names of the state variables; ``len(variables)`` is the dimension.
        parameters: the :class:`Param` list.
        default_x0: an initial condition on or near the attractor.
        default_dt: recommended time step (flows, SDEs); 1 for maps.
        latex: the equations in LaTeX (KaTeX-compatible), one ``\\\\``-separated line each.
        description: a few sentences for the page and ``systems --json``.
        citation: the paper that introduced the system.
        lyapunov_reference: published exponents, or ``None``.
        origin: ``"builtin"``, ``"dysts"`` or ``"custom"``.
        bound: a state with any ``|x_i|`` above this counts as diverged.
        period: a typical time scale (flows), for default durations; ``None`` if unknown.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    continuous_time: ClassVar[bool] = True
    is_map: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    deterministic: ClassVar[bool] = True
    default_solver: ClassVar[str] = "rk4"
    time_unit: ClassVar[str] = "time unit"
    variables: tuple[str, ...] = ()
    parameters: ClassVar[tuple[Param, ...]] = ()
    default_x0: tuple[float, ...] = ()
    default_dt: ClassVar[float] = 0.01
    latex: str = ""
    description: str = ""
    citation: ClassVar[str] = ""
    lyapunov_reference: ClassVar[LyapunovReference | None] = None
    origin: ClassVar[str] = "builtin"
    bound: ClassVar[float] = 1e6
    period: ClassVar[float | None] = None

    def __init__(self, **params: ParamValue):
        self.params: dict[str, ParamValue] = self._validate(params)

    # ------------------------------------------------------------------ parameters
    @classmethod
    def param_spec(cls, name: str) -> Param:
        for p in cls.parameters:
            if p.name == name:
                return p
        names = ", ".join(p.name for p in cls.parameters) or "none"
        raise ParameterError(f"{cls.title or cls.name} has no parameter {name!r} (parameters: {names})")

    @classmethod
    def defaults(cls) -> dict[str, float]:
        return {p.name: p.default for p in cls.parameters}

    def _validate(self, params: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
        out: dict[str, ParamValue] = dict(self.defaults())
        for key, value in params.items():
            spec = self.param_spec(key)
            out[key] = check_param_value(spec, value, self.title or self.name)
        return out

    def with_params(self, **changes: ParamValue) -> "DynamicalSystem":
        """A copy of this system with some parameters changed (validated)."""
        merged = {**self.params, **changes}
        return type(self)(**merged)

    def batch_shape(self) -> torch.Size:
        """The broadcast shape of the tensor-valued parameters (``()`` when all are scalars)."""
        shapes = [v.shape for v in self.params.values() if isinstance(v, torch.Tensor)]
        return torch.broadcast_shapes(*shapes) if shapes else torch.Size()

    def bind(self, like: torch.Tensor) -> dict[str, ParamValue]:
        """Parameters ready for :meth:`rhs`: tensors moved to ``like``'s device and dtype."""
        return {k: (v.to(device=like.device, dtype=like.dtype) if isinstance(v, torch.Tensor) else v)
                for k, v in self.params.items()}

    # ------------------------------------------------------------------ state
    @property
    def dim(self) -> int:
        return len(self.variables)

    def initial_state(self, dtype: torch.dtype = torch.float64,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """The default initial condition as a ``(D,)`` tensor."""
        return torch.tensor(self.default_x0, dtype=dtype, device=device)

    def check_state(self, x: torch.Tensor) -> torch.Tensor:
        """Raise :class:`ShapeError` unless ``x`` is ``(..., D)`` with this system's ``D``."""
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ShapeError(
                f"{self.title or self.name} has dimension {self.dim} "
                f"({', '.join(self.variables)}), got a state of shape {tuple(x.shape)}")
        return x

    # ------------------------------------------------------------------ kind (behaviour)
    @classmethod
    def time_step(cls, dt: float | None = None) -> float:
        """The step actually used for a requested ``dt``: always 1 for maps; for flows and
        SDEs ``dt`` (default :attr:`default_dt`), validated positive and finite."""
        if not cls.continuous_time:
            return 1.0
        dt = float(cls.default_dt if dt is None else dt)
        if not math.isfinite(dt) or dt <= 0:
            raise ParameterError(f"time step dt must be a positive number, got {dt!r}")
        return dt

    @classmethod
    def solver_names(cls) -> list[str]:
        """The solvers that can advance this kind of system (for a dropdown), default first."""
        from .solvers import SOLVERS
        names = [n for n, s in SOLVERS.items() if s.kind == cls.kind]
        return sorted(names, key=lambda n: n != cls.default_solver)

    def velocity(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """The deterministic displacement per unit of time, (..., D): ``f(x)`` for a flow (and
        an SDE's drift), ``F(x) - x`` for a map. Its zeros are the fixed points."""
        v = self.rhs(x, p)
        return v - x if self.is_map else v

    def velocity_jacobian(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """Jacobian of :meth:`velocity`, (..., D, D)."""
        J = self.jacobian(x, p)
        return J - torch.eye(self.dim, dtype=J.dtype, device=J.device) if self.is_map else J

    def require_deterministic(self, what: str) -> None:
        """Raise :class:`UnsupportedKindError` for a stochastic system: ``what`` (e.g.
        ``"Lyapunov spectra"``) is defined here for deterministic systems only."""
        if self.stochastic:
            raise UnsupportedKindError(
                f"{what} need a deterministic system; {self.title or self.name} is stochastic "
                f"(an SDE): use its drift, {type(self).__name__}.drift_system()")

    # ------------------------------------------------------------------ dynamics
    @abc.abstractmethod
    def rhs(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """Vector field ``dx/dt`` (flows), next state (maps) or drift ``f`` (SDEs).
        ``x``: (..., D) -> (..., D)."""

    def jacobian(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """Jacobian ``∂rhs/∂x``, shape (..., D, D). Built-ins override this analytically;
        the default differentiates :meth:`rhs` with autograd (custom and dysts systems)."""
        return autograd_jacobian(lambda z: self.rhs(z, p), x)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`rhs` at this system's own parameters."""
        return self.rhs(x, self.bind(x))

    def jac(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`jacobian` at this system's own parameters."""
        return self.jacobian(x, self.bind(x))

    # ------------------------------------------------------------------ metadata
    def info(self) -> dict[str, Any]:
        """Metadata as plain data (the ``systems --json`` record)."""
        ref = self.lyapunov_reference
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "continuous_time": self.continuous_time,
            "stochastic": self.stochastic,
            "dimension": self.dim,
            "origin": self.origin,
            "variables": list(self.variables),
            "parameters": [p.as_dict() for p in self.parameters],
            "initial_condition": list(self.default_x0),
            "dt": self.default_dt,
            "latex": self.latex,
            "description": self.description,
            "citation": self.citation,
            "lyapunov_reference": ref.as_dict() if ref else None,
        }

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        return f"{type(self).__name__}({ps})"


class Flow(DynamicalSystem):
    """A continuous-time system ``dx/dt = f(x; p)``."""

    kind: ClassVar[str] = "flow"


class Map(DynamicalSystem):
    """A discrete-time system ``x_{n+1} = F(x_n; p)``."""

    kind: ClassVar[str] = "map"
    continuous_time: ClassVar[bool] = False
    is_map: ClassVar[bool] = True
    default_solver: ClassVar[str] = "map"
    time_unit: ClassVar[str] = "iteration"
    default_dt: ClassVar[float] = 1.0


class SDE(DynamicalSystem):
    r"""An Itô stochastic differential equation :math:`dX = f(X)\,dt + g(X)\,dW`.

    :meth:`rhs` is the drift ``f`` (also :meth:`drift`), batched like a flow's field, and
    :meth:`jacobian` its Jacobian. :meth:`diffusion` gives ``g`` in one of two layouts,
    declared by :attr:`noise`:

    * ``"diagonal"`` (default): ``g`` is (..., D) and component ``i`` is driven by its own
      Wiener process, :math:`dX_i = f_i\,dt + g_i(X)\,dW_i` (``M = D`` noises);
    * ``"general"``: ``g`` is a (..., D, M) matrix with ``M =`` :attr:`noise_dim`, and
      :math:`dX = f\,dt + g\,dW` with ``dW`` of dimension ``M``.

    :attr:`additive` declares that ``g`` does not depend on the state (the Milstein
    correction then vanishes and Milstein is Euler-Maruyama). Parameters broadcast against
    the batch as for flows; dtype and device follow the state. Solvers:
    ``euler_maruyama`` (default; strong order 0.5, weak 1) and ``milstein`` (diagonal noise;
    strong order 1, weak 1), see :mod:`explorer.core.solvers`. Simulations draw the noise
    from an explicit ``torch.Generator`` (``simulate(..., seed=...)``).

    Analyses defined by the deterministic dynamics (Lyapunov spectra, Poincaré sections,
    orbit diagrams) refuse SDEs with :class:`UnsupportedKindError`; :meth:`drift_system`
    gives the deterministic skeleton (a :class:`Flow`) for them. Fixed points are those of
    the drift.
    """

    kind: ClassVar[str] = "sde"
    stochastic: ClassVar[bool] = True
    deterministic: ClassVar[bool] = False
    default_solver: ClassVar[str] = "euler_maruyama"
    noise: ClassVar[str] = "diagonal"
    noise_dim: ClassVar[int | None] = None
    additive: ClassVar[bool] = False

    @property
    def n_noises(self) -> int:
        """``M``, the number of independent Wiener processes (``D`` for diagonal noise)."""
        if self.noise == "diagonal":
            return self.dim
        if not self.noise_dim:
            raise TypeError(f"{type(self).__name__}: general noise needs `noise_dim`")
        return int(self.noise_dim)

    def drift(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """The drift ``f(x)``, (..., D) (the same as :meth:`rhs`)."""
        return self.rhs(x, p)

    @abc.abstractmethod
    def diffusion(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """The noise amplitude ``g(x)``: (..., D) for diagonal noise, (..., D, M) for general."""

    def diffusion_derivative(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        r"""For diagonal noise, :math:`\partial g_i / \partial x_i`, shape (..., D) (Milstein's
        correction). Zero for additive noise; otherwise autograd unless overridden."""
        if self.noise != "diagonal":
            raise UnsupportedKindError(
                f"{self.title or self.name}: the diagonal diffusion derivative needs diagonal noise")
        if self.additive:
            return torch.zeros_like(x)
        J = autograd_jacobian(lambda z: self.diffusion(z, p).expand_as(z), x)
        return torch.diagonal(J, dim1=-2, dim2=-1)

    def g(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`diffusion` at this system's own parameters, broadcast to full shape."""
        gx = self.diffusion(x, self.bind(x))
        shape = x.shape if self.noise == "diagonal" else (*x.shape, self.n_noises)
        return gx.expand(torch.broadcast_shapes(gx.shape, shape))

    def drift_system(self) -> Flow:
        """The deterministic skeleton ``dx/dt = f(x)`` as a :class:`Flow` with the same
        parameters, variables and metadata (for Lyapunov spectra, sections, orbit diagrams)."""
        return drift_flow_class(type(self))(**self.params)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "noise": self.noise, "noise_dim": self.n_noises,
                "additive": self.additive}


_drift_classes: dict[type, type] = {}


def drift_flow_class(cls: type[SDE]) -> type[Flow]:
    """The :class:`Flow` class of an SDE class's drift (cached; not registered)."""
    if cls not in _drift_classes:
        attrs = {k: getattr(cls, k) for k in (
            "variables", "parameters", "default_x0", "default_dt", "latex", "citation",
            "bound", "period", "origin")}
        attrs.update(
            name=f"{cls.name}_drift", title=f"{cls.title or cls.name} (drift)",
            description=f"The deterministic part (drift) of {cls.title or cls.name}.",
            rhs=lambda self, x, p: cls.rhs(self, x, p),
            jacobian=lambda self, x, p: cls.jacobian(self, x, p),
            __doc__=f"Drift of {cls.__name__}: dx/dt = f(x).")
        _drift_classes[cls] = type(f"{cls.__name__}Drift", (Flow,), attrs)
    return _drift_classes[cls]


#: the system base classes by their ``kind`` label
KINDS: dict[str, type[DynamicalSystem]] = {"flow": Flow, "map": Map, "sde": SDE}


def check_param_value(spec: Param, value: ParamValue, owner: str = "") -> ParamValue:
    """Validate one parameter value (number or tensor) against its :class:`Param` bounds."""
    where = f"{owner} parameter {spec.name!r}" if owner else f"parameter {spec.name!r}"
    rng = f"[{_short(spec.low)}, {_short(spec.high)}]"
    if spec.integer:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ParameterError(f"{where} is structural and cannot be swept; give one integer")
            value = value.item()
        try:
            fv = float(value)
        except (TypeError, ValueError) as e:
            raise ParameterError(f"{where} must be an integer in {rng}, got {value!r}") from e
        if not math.isfinite(fv) or fv != int(fv):
            raise ParameterError(f"{where} must be an integer in {rng}, got {value!r}")
        if not spec.low <= fv <= spec.high:
            raise ParameterError(f"{where} = {int(fv)} is outside its allowed range {rng}")
        return int(fv)
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            value = value.to(torch.float64)
        if value.numel() == 0:
            raise ParameterError(f"{where} got an empty tensor")
        if not torch.isfinite(value).all():
            raise ParameterError(f"{where} must be finite, got NaN or inf")
        lo, hi = value.min().item(), value.max().item()
        if lo < spec.low or hi > spec.high:
            bad = lo if lo < spec.low else hi
            raise ParameterError(f"{where} = {_short(bad)} is outside its allowed range {rng}")
        if value.numel() == 1:
            return float(value.item())
        return value
    try:
        fv = float(value)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"{where} must be a number in {rng}, got {value!r}") from e
    if not math.isfinite(fv):
        raise ParameterError(f"{where} must be finite, got {value!r}")
    if not spec.low <= fv <= spec.high:
        raise ParameterError(f"{where} = {_short(fv)} is outside its allowed range {rng}")
    return fv


def autograd_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    """Jacobian of a batched function ``fn: (..., D) -> (..., D)`` by reverse-mode autograd.

    Works for any leading batch shape because each output row depends only on its own state
    (the sum over the batch of ``fn`` has the per-row Jacobians as its gradients).
    """
    # works inside torch.inference_mode() too: the clone below is a normal tensor
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        y = fn(xg)
        rows = []
        for i in range(y.shape[-1]):
            (g,) = torch.autograd.grad(y[..., i].sum(), xg, retain_graph=i < y.shape[-1] - 1,
                                       allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(rows, -2).detach()


def _short(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        if v.numel() == 1:
            return _short(v.item())
        return f"tensor[{v.numel()}]({_short(v.min().item())}..{_short(v.max().item())})"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
