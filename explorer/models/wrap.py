"""Any trained ``torch.nn.Module`` as a dynamical system of the core interface.

:func:`module_system` wraps a module ``F: (..., D) -> (..., D)`` either as a map (one step,
``x_{t+1} = F(x_t)``; :func:`module_map`) or as a vector field (a flow, ``dx/dt = F(x)``;
:func:`module_flow`), so Lyapunov spectra, fixed points, orbit diagrams and simulations of
:mod:`explorer.core` run on it. As for the PLRNN snapshots of :meth:`ReconstructionModel.as_system`
the wrapped system is a frozen float64 snapshot: the module is deep-copied, cast to float64,
put in eval mode and detached from its optimiser, so training of the original can go on.
Its Jacobian comes from autograd through :mod:`explorer.core.autodiff` (batched over states
and parameter values). Each snapshot is its own class (``type(system)(**params)`` rebuilds
it, as :meth:`DynamicalSystem.with_params` and the compiled paths expect) and pickles with
its module.

One parameter is added for orbit diagrams and parameter sweeps:

* maps: ``coupling`` ``c`` in [0, 2], ``x -> x + c (F(x) - x)`` (1: the trained step, 0: the
  identity; a relaxation homotopy);
* flows: ``damping`` ``d`` in [-2, 2], ``dx/dt = F(x) - d x`` (0: the trained field; shifts
  every eigenvalue of the linearisation by ``-d``).

Both may be tensors broadcasting against ``x[..., 0]``, as for every system.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.autodiff import batch_shape, jacobian
from ..core.errors import ShapeError
from ..core.system import DynamicalSystem, Flow, Map, Param

__all__ = ["ModuleFlow", "ModuleMap", "module_flow", "module_map", "module_system"]


def _snapshot(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module).to(torch.float64).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _infer_dim(module: nn.Module) -> int | None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            return int(sub.in_features)
    return None


class _ModuleSystem:
    """Shared behaviour of :class:`ModuleMap` and :class:`ModuleFlow` (mixed in first)."""

    origin: ClassVar[str] = "trained"
    module: ClassVar[nn.Module]
    _cast: ClassVar[dict]
    _meta: ClassVar[dict]

    def _module(self, like: torch.Tensor) -> nn.Module:
        key = (like.dtype, like.device)
        m = self._cast.get(key)
        if m is None:
            m = self.module if key == (torch.float64, torch.device("cpu")) else \
                copy.deepcopy(self.module).to(device=like.device, dtype=like.dtype)
            self._cast[key] = m
        return m

    def module_output(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped module's output ``F(x)``, (..., D)."""
        out = self._module(x)(x)
        if not isinstance(out, torch.Tensor) or out.shape[-1] != x.shape[-1]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(f"the wrapped module maps a (..., {x.shape[-1]}) state to {shape}; "
                             f"it must return (..., {x.shape[-1]})")
        return out

    def jacobian(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        """``∂rhs/∂x`` (..., D, D) by autograd, batched over states and parameter values."""
        return jacobian(lambda z: self.rhs(z, p), x, method=self._meta["jacobian_method"],
                        batch=batch_shape(x, p))

    def __reduce__(self):
        return (_rebuild, (type(self).kind, self.module, dict(self._meta), dict(self.params)))


class ModuleMap(_ModuleSystem, Map):
    """Base of the map classes built by :func:`module_map`: ``x -> x + c (F(x) - x)``."""

    parameters: ClassVar[tuple[Param, ...]] = (
        Param("coupling", 1.0, 0.0, 2.0,
              "step size towards the module's output: 1 is the trained map, 0 the identity"),)

    def rhs(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        out = self.module_output(x)
        c = p["coupling"]
        if isinstance(c, torch.Tensor):
            return x + c.unsqueeze(-1) * (out - x)
        return out if c == 1.0 else x + c * (out - x)


class ModuleFlow(_ModuleSystem, Flow):
    """Base of the flow classes built by :func:`module_flow`: ``dx/dt = F(x) - d x``."""

    parameters: ClassVar[tuple[Param, ...]] = (
        Param("damping", 0.0, -2.0, 2.0,
              "linear damping added to the module's field: 0 is the trained field"),)

    def rhs(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        out = self.module_output(x)
        d = p["damping"]
        if isinstance(d, torch.Tensor):
            return out - d.unsqueeze(-1) * x
        return out if d == 0.0 else out - d * x


def module_system(module: nn.Module, kind: str = "map", *, dim: int | None = None,
                  x0: Any = None, data: Any = None, variables: tuple[str, ...] | None = None,
                  dt: float | None = None, title: str | None = None,
                  description: str | None = None, name: str | None = None,
                  noise: float = 1e-2, seed: int = 0,
                  jacobian_method: str = "auto") -> DynamicalSystem:
    """A float64 snapshot of ``module`` as a :class:`Map` (``kind="map"``: ``module`` is one
    step) or a :class:`Flow` (``kind="flow"``: ``module`` is the vector field).

    Args:
        module: maps ``(..., D)`` states to ``(..., D)``; deep-copied (training may go on).
        dim: state dimension ``D``; default from ``variables``, ``x0``, ``data`` or the first
            :class:`torch.nn.Linear`'s ``in_features``.
        x0: default initial state (D,); default ``data``'s first state, else zeros plus
            Gaussian noise of size ``noise`` (seeded with ``seed``, off any fixed point at 0).
        data: observed states (T, D) or (T, B, D), for ``x0`` and ``dim``.
        variables: names of the D coordinates (default ``x1 .. xD``).
        dt: the flow's default time step (default 0.01; maps: 1).
        title, description, name: metadata shown in the UI (``name`` is not registered).
        jacobian_method: see :mod:`explorer.core.autodiff` (default ``"auto"``).
    """
    if kind not in ("map", "flow"):
        raise ValueError(f"kind must be 'map' or 'flow', got {kind!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
    snap = _snapshot(module)
    data_t = None
    if data is not None:
        data_t = torch.as_tensor(data).detach().to("cpu", torch.float64)
        if data_t.ndim < 2:
            raise ShapeError(f"data must be (T, D) or (T, B, D), got shape {tuple(data_t.shape)}")
    x0_t = None if x0 is None else torch.as_tensor(x0).detach().to("cpu", torch.float64).reshape(-1)
    D = dim
    for source in (len(variables) if variables else None,
                   None if x0_t is None else x0_t.numel(),
                   None if data_t is None else data_t.shape[-1], _infer_dim(snap)):
        if D is None:
            D = source
    if D is None:
        raise ShapeError("cannot tell the state dimension: give dim, variables, x0 or data")
    D = int(D)
    if variables is None:
        variables = tuple(f"x{i + 1}" for i in range(D))
    variables = tuple(str(v) for v in variables)
    if len(variables) != D:
        raise ShapeError(f"{len(variables)} variable names for dimension {D}")
    if x0_t is None:
        if data_t is not None:
            x0_t = data_t.reshape(-1, data_t.shape[-1])[0].clone()
        else:
            gen = torch.Generator().manual_seed(seed)
            x0_t = noise * torch.randn(D, generator=gen, dtype=torch.float64)
    if x0_t.shape != (D,) or not torch.isfinite(x0_t).all():
        raise ShapeError(f"x0 must be a finite ({D},) state, got shape {tuple(x0_t.shape)}")
    with torch.no_grad():
        probe = snap(x0_t.unsqueeze(0))
    if not isinstance(probe, torch.Tensor) or probe.shape != (1, D):
        shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ShapeError(f"the module maps a (1, {D}) state to {shape}; it must return (1, {D})")

    base = ModuleMap if kind == "map" else ModuleFlow
    label = type(module).__name__
    title = title or f"{label} ({'map' if kind == 'map' else 'vector field'})"
    description = description or (
        f"A torch module ({label}) wrapped as a {'map: one call is one step' if kind == 'map' else 'flow: its output is dx/dt'}"
        f" on a {D}-dimensional state. A frozen float64 snapshot of its weights; Jacobians by "
        "automatic differentiation.")
    meta = {"dim": D, "x0": tuple(x0_t.tolist()), "variables": variables, "dt": dt,
            "title": title, "description": description, "name": name,
            "jacobian_method": jacobian_method}
    attrs: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": f"Snapshot of a {label} wrapped as a {kind}.",
        "name": name or f"module-{kind}",
        "title": title,
        "variables": variables,
        "default_x0": tuple(x0_t.tolist()),
        "latex": (r"x_{n+1} = x_n + c\,(F_\theta(x_n) - x_n)" if kind == "map"
                  else r"\dot x = F_\theta(x) - d\,x"),
        "description": description,
        "module": snap,
        "_cast": {},
        "_meta": meta,
    }
    if kind == "flow":
        attrs["default_dt"] = float(dt) if dt is not None else 0.01
    cls = type(f"Wrapped{label}{'Map' if kind == 'map' else 'Flow'}", (base,), attrs)
    return cls()


def module_map(module: nn.Module, **kw: Any) -> DynamicalSystem:
    """:func:`module_system` with ``kind="map"``: ``module`` is one step ``x_{t+1} = F(x_t)``."""
    return module_system(module, "map", **kw)


def module_flow(module: nn.Module, **kw: Any) -> DynamicalSystem:
    """:func:`module_system` with ``kind="flow"``: ``module`` is the field ``dx/dt = F(x)``."""
    return module_system(module, "flow", **kw)


def _rebuild(kind: str, module: nn.Module, meta: dict, params: dict) -> DynamicalSystem:
    s = module_system(module, kind, dim=meta["dim"], x0=meta["x0"], variables=meta["variables"],
                      dt=meta["dt"], title=meta["title"], description=meta["description"],
                      name=meta["name"], jacobian_method=meta["jacobian_method"])
    return type(s)(**params)
