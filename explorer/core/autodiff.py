"""Batched Jacobians by automatic differentiation, for systems without analytic ones.

Custom equations (:mod:`.custom`), the dysts catalogue (:mod:`.dysts_adapter`) and wrapped
torch modules (:mod:`explorer.models.wrap`) have no hand-written Jacobian; the Lyapunov
spectrum asks for one four times per RK4 step, so its cost matters.

The default method, ``"expand"``, takes one forward and one backward pass: the batch of
states ``(..., D)`` is copied ``D`` times along a new leading axis, ``(D, ..., D)``, the field
is evaluated once on it, and one backward pass with cotangent ``e_i`` on copy ``i`` gives row
``i`` of every Jacobian at once. It relies on the system contract that each output row depends
only on its own state (parameters broadcast against ``x[..., 0]``, so they also broadcast
against the extra axis). Per-op overhead, not arithmetic, dominates the small batches of a
Lyapunov run, so one pass over a ``D``-times larger batch beats ``D`` passes (the old
row-by-row loop, kept as ``"loop"``) by 3-5x and ``torch.func.vmap`` over ``jacrev``/``jacfwd``
(``"jacrev"``, ``"jacfwd"``), whose batching rules add their own overhead per op, by 2-10x
(CPU, batch 128, dysts flows). Forward-mode dual tensors were slower still (constants get
zero tangents that go through Python decompositions).

``"jacrev"``/``"jacfwd"`` vmap over the states only: a field with tensor (sweep) parameters
fails there (``"auto"`` then moves on). ``"auto"`` tries ``"expand"`` and falls back to ``"jacrev"`` and then ``"loop"`` for a field
the first cannot handle (remembered per field object in :func:`jacobian_fn`).

Public API: :func:`jacobian`, :func:`value_and_jacobian`, :func:`jacobian_fn`, :data:`METHODS`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["METHODS", "batch_shape", "jacobian", "jacobian_fn", "value_and_jacobian"]

Field = Callable[[torch.Tensor], torch.Tensor]
METHODS = ("auto", "expand", "jacrev", "jacfwd", "loop")


def batch_shape(x: torch.Tensor, params: Mapping[str, Any] | None = None) -> torch.Size:
    """Broadcast shape of ``x[..., 0]`` and the tensor-valued ``params`` (the output batch)."""
    shapes = [v.shape for v in (params or {}).values() if isinstance(v, torch.Tensor)]
    return torch.broadcast_shapes(x.shape[:-1], *shapes) if shapes else x.shape[:-1]


def _prepare(x: torch.Tensor, batch: torch.Size | None) -> torch.Tensor:
    x = x.detach()
    if batch is not None and batch != x.shape[:-1]:
        x = x.expand(*batch, x.shape[-1])
    return x


def _expand(fn: Field, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    D = x.shape[-1]
    xe = x.unsqueeze(0).expand(D, *x.shape).clone().requires_grad_(True)   # (D, ..., D)
    y = fn(xe)
    if y.shape != xe.shape:
        raise RuntimeError(f"field output {tuple(y.shape)} does not match its input "
                           f"{tuple(xe.shape)} (the expand method needs a batched square field)")
    value = y[0].detach()
    if not y.requires_grad:                                               # constant field
        return value, x.new_zeros(*x.shape, D)
    eye = torch.eye(D, dtype=y.dtype, device=y.device)
    cot = eye.view(D, *([1] * (x.ndim - 1)), D).expand(y.shape)
    (g,) = torch.autograd.grad(y, xe, cot, allow_unused=True)
    if g is None:
        return value, x.new_zeros(*x.shape, D)
    return value, g.movedim(0, -2)                                        # (..., D_out, D_in)


def _vmapped(fn: Field, x: torch.Tensor, forward: bool) -> tuple[torch.Tensor, torch.Tensor]:
    D = x.shape[-1]
    flat = x.reshape(-1, D)

    def one(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = fn(z)
        return out, out

    jac = torch.func.jacfwd if forward else torch.func.jacrev
    J, value = torch.func.vmap(jac(one, has_aux=True))(flat)
    return value.reshape(x.shape), J.reshape(*x.shape, D)


def _loop(fn: Field, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xg = x.clone().requires_grad_(True)
    y = fn(xg)
    rows = []
    for i in range(y.shape[-1]):
        g = None
        if y.requires_grad:
            (g,) = torch.autograd.grad(y[..., i].sum(), xg, retain_graph=i < y.shape[-1] - 1,
                                       allow_unused=True)
        rows.append(torch.zeros_like(x) if g is None else g)
    return y.detach(), torch.stack(rows, -2)


_IMPL = {"expand": _expand, "loop": _loop,
         "jacrev": lambda fn, x: _vmapped(fn, x, False),
         "jacfwd": lambda fn, x: _vmapped(fn, x, True)}
_AUTO_ORDER = ("expand", "jacrev", "loop")


def value_and_jacobian(fn: Field, x: torch.Tensor, *, method: str = "auto",
                       batch: torch.Size | tuple[int, ...] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fn(x), ∂fn/∂x)`` for a batched field ``fn: (..., D) -> (..., D)``.

    Args:
        fn: the field; each output row must depend only on its own input row.
        x: states ``(..., D)``; works inside ``torch.inference_mode()`` (a normal copy is
            differentiated) and never builds a graph reaching the caller's tensors.
        method: one of :data:`METHODS` (see the module docstring).
        batch: expand ``x`` to this batch shape first (the broadcast with tensor parameters,
            :func:`batch_shape`), so a single state with a parameter sweep gives one Jacobian
            per parameter value.

    Returns:
        the value ``(..., D)`` and the Jacobian ``(..., D, D)`` (``[..., i, j] = ∂f_i/∂x_j``),
        both detached.
    """
    if method not in METHODS:
        raise ValueError(f"unknown Jacobian method {method!r}; one of {', '.join(METHODS)}")
    xb = _prepare(x, torch.Size(batch) if batch is not None else None)
    order = _AUTO_ORDER if method == "auto" else (method,)
    err: Exception | None = None
    with torch.inference_mode(False), torch.enable_grad():
        xb = xb.clone()                           # a normal tensor, even from inference mode
        for m in order:
            try:
                v, J = _IMPL[m](fn, xb)
                return v.detach(), J.detach()
            except Exception as e:  # noqa: BLE001 - try the next method
                err = e
    assert err is not None
    raise err


def jacobian(fn: Field, x: torch.Tensor, *, method: str = "auto",
             batch: torch.Size | tuple[int, ...] | None = None) -> torch.Tensor:
    """The Jacobian ``(..., D, D)`` of a batched field at ``x`` (see :func:`value_and_jacobian`)."""
    return value_and_jacobian(fn, x, method=method, batch=batch)[1]


# methods that worked for a field, per field object (so "auto" does not retry failing ones)
_chosen: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def jacobian_fn(field: Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor], *,
                method: str = "auto", owner: Any = None
                ) -> Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]:
    """A ``jacobian(x, p)`` for a field ``field(x, p)`` with tensor parameters broadcasting
    against ``x[..., 0]``: batched over states and parameter values.

    With ``method="auto"`` the first method that succeeds is remembered for ``owner`` (any
    weak-referenceable object, default the field) and used first next time.
    """
    key = field if owner is None else owner

    def jac(x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        batch = batch_shape(x, p)

        def f(z: torch.Tensor) -> torch.Tensor:
            return field(z, p)

        if method != "auto":
            return jacobian(f, x, method=method, batch=batch)
        try:
            known = _chosen.get(key)
        except TypeError:
            known = None
        err: Exception | None = None
        order = _AUTO_ORDER if known is None else (known, *(m for m in _AUTO_ORDER if m != known))
        for m in order:
            try:
                J = jacobian(f, x, method=m, batch=batch)
            except Exception as e:  # noqa: BLE001
                err = e
                continue
            try:
                _chosen[key] = m
            except TypeError:
                pass
            return J
        assert err is not None
        raise err

    return jac
