"""The one interface for everything that evolves: flows (ODEs) and maps.

A :class:`DynamicalSystem` says *what* evolves; solvers (:mod:`explorer.core.solvers`) say
*how*; :func:`explorer.core.simulate.simulate` says *what is recorded*. Lyapunov spectra,
fixed points, orbit diagrams and plots are written once against this interface, so they work
on built-in systems, custom equations, the dysts catalogue and trained models alike.

Conventions
-----------
* States are tensors shaped ``(..., D)``; trajectories are time-major ``(T, B, D)``.
* A flow's :meth:`DynamicalSystem.rhs` returns ``dx/dt``; a map's returns the next state.
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

from .errors import ParameterError, ShapeError

Number = float | int
ParamValue = float | int | torch.Tensor


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
    """Abstract base of flows and maps. Subclasses are final: one class per system.

    Class attributes (metadata, kept as data):
        name: registry key, lower case (``"lorenz63"``); ``aliases`` are extra keys.
        title: the literature name (``"Lorenz-63"``).
        kind: ``"flow"`` or ``"map"``.
        variables: names of the state variables; ``len(variables)`` is the dimension.
        parameters: the :class:`Param` list.
        default_x0: an initial condition on or near the attractor.
        default_dt: recommended time step (flows); 1 for maps.
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

    # ------------------------------------------------------------------ dynamics
    @abc.abstractmethod
    def rhs(self, x: torch.Tensor, p: Mapping[str, ParamValue]) -> torch.Tensor:
        """Vector field ``dx/dt`` (flows) or next state (maps). ``x``: (..., D) -> (..., D)."""

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
    default_dt: ClassVar[float] = 1.0


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
