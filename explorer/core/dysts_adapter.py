"""Adapter for the dysts catalogue of chaotic flows (optional extra: ``pip install dysts``).

:func:`register_dysts` turns every continuous-time, non-delay dysts system into a :class:`Flow`
subclass whose :meth:`~Flow.rhs` runs dysts's own equations on batched torch tensors, so the
catalogue works with every solver and analysis (autograd Jacobians, parameter sweeps, GPU).

How a dysts system is converted
-------------------------------
dysts writes each vector field in plain Python against ``numpy`` (``np.sin``, ``np.heaviside``,
...), either as a static ``_rhs(x, y, z, t, *params)`` (numba-jitted when numba is installed;
its ``py_func`` is the Python original) or as an overridden method ``rhs(self, X, t)``. We
reuse the compiled code object of that Python function with new globals in which ``np`` is a
small torch-backed namespace (:class:`_TorchNumpy`) and ``max``/``min`` are torch-aware; no
source is parsed or executed. The function is then called on torch tensors:

* *direct* mode: the state's components (``x.unbind(-1)``) with any batch shape, or
* *vmap* mode (fallback for equations written for a single state, e.g. ``np.matmul(W, X)``):
  ``torch.func.vmap`` over the flattened batch, each call seeing one ``(D,)`` state.

Every system is checked once at registration on a random ``(7, D)`` batch near its initial
condition: rows must match dysts's numpy equations to 1e-8, the field must not depend on
``t`` (delay systems and explicitly time-dependent ones are skipped; dysts's forced systems
already carry their phase as a state variable), float32 must stay float32, the autograd
Jacobian must match central finite differences, and every parameter must accept a ``(B,)``
sweep tensor. A system failing any check is skipped with a one-line reason.

Jacobians are the exact partials of the traced field (:mod:`explorer.core.traced`: elementwise
ops, so a Lyapunov spectrum steps the state and its tangent vectors in generated C); a field that
does not trace keeps :mod:`explorer.core.autodiff` (one forward and one backward pass over ``D``
copies of the batch), the method the registration check compares with finite differences.

Metadata (from dysts's ``chaotic_attractors.json``)
---------------------------------------------------
* ``name``: ``"dysts_" + snake_case(dysts name)`` (``Lorenz`` -> ``dysts_lorenz``,
  ``SprottA`` -> ``dysts_sprott_a``); registry key ``dystslorenz``; ``title`` ``"Lorenz (dysts)"``.
* ``variables``: the argument names of ``_rhs`` (or of the unpacking ``x, y, z = X``),
  else ``x0 .. x{D-1}``.
* ``parameters``: dysts's scalar ``parameters`` at their dysts values. dysts gives no ranges,
  so bounds follow one sign-preserving rule (:func:`param_bounds`): ``v > 0 -> [0, 10 v]``,
  ``v < 0 -> [10 v, 0]``, ``v == 0 -> [-1, 1]``. Array-valued parameters (weight matrices,
  coefficient lists) are held fixed at dysts's values and named in the description.
* ``default_x0`` = ``initial_conditions``; ``period``, ``citation``, ``description`` as given;
  ``latex`` points to dysts (it has none).
* ``default_dt``: NOT dysts's ``dt`` (a ``period / 5000`` sampling step, kept as ``dysts_dt``)
  but an RK4 step of about ``period / 100``, smaller for stiff systems (:func:`recommended_dt`).
* ``bound`` is 1e12 for systems with variables that grow by design (phases, positions).
* ``lyapunov_reference``: ``lyapunov_spectrum_estimated`` sorted descending, when it has one
  exponent per dimension, with source ``"dysts estimate (rough)"``.
"""

from __future__ import annotations

import dis
import math
import re
import threading
import types
import warnings
from typing import Any, Callable, Mapping

import torch

from .autodiff import jacobian as autodiff_jacobian
from .autodiff import jacobian_fn
from .system import Flow, LyapunovReference, Param
from .traced import traced_jacobian

PREFIX = "dysts_"
LYAPUNOV_SOURCE = "dysts estimate (rough)"
_T_PROBE = 1.2345  # a second time at which a field must equal its value at t = 0


def flow_name(dysts_name: str) -> str:
    """Registry name of a dysts system: ``"Lorenz"`` -> ``"dysts_lorenz"``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", dysts_name)
    return PREFIX + snake.lower()


def param_bounds(v: float) -> tuple[float, float]:
    """Allowed range of a dysts parameter with default ``v`` (dysts documents none).

    Sign-preserving, one decade up: ``[0, 10 v]`` for ``v > 0``, ``[10 v, 0]`` for ``v < 0``
    and ``[-1, 1]`` for ``v == 0``.
    """
    ten = float(f"{10.0 * v:.12g}")  # 26.67, not 26.669999999999998
    if v > 0:
        return 0.0, ten
    if v < 0:
        return ten, 0.0
    return -1.0, 1.0


# Systems whose stiffness the rule below misses (found by integrating every converted system
# with RK4 for 30 periods from 4 starts near its initial condition, dysts 0.96): steps/period.
_STEPS_PER_PERIOD = {"JerkCircuit": 500}


def recommended_dt(dysts_dt: float, period: float | None, rate: float | None,
                   steps_per_period: float = 100.0) -> float:
    """The default RK4 step of a converted system.

    dysts's own ``dt`` is a sampling step of ``period / 5000`` (for its adaptive Radau solves),
    50-100x finer than the built-ins' steps, so we take ``period / 100`` (about the built-ins'
    resolution), reduced to ``0.25 / rate`` where the Jacobian's spectral radius ``rate`` near
    the initial condition is large (stiff systems), and never below dysts's ``dt``.
    """
    ok_period = period and math.isfinite(period) and period > 0
    dt = period / steps_per_period if ok_period else dysts_dt
    if rate and math.isfinite(rate) and rate > 0:
        dt = min(dt, 0.25 / rate)
    return float(f"{max(dt, dysts_dt):.4g}")


# ---------------------------------------------------------------------------- torch "numpy"
_ctx = threading.local()  # dtype/device of the state being evaluated (for constants)


def _cur() -> tuple[torch.dtype, torch.device | None]:
    return getattr(_ctx, "like", None) or (torch.float64, None)


def _t(v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)):
        return _array(v)
    dtype, device = _cur()
    return torch.as_tensor(v, dtype=dtype, device=device)


def _bshape(*shapes: tuple[int, ...]) -> torch.Size:
    """``torch.broadcast_shapes`` without its (slow, per call) dispatch overhead."""
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for i, d in enumerate(s, n - len(s)):
            if d != 1:
                if out[i] not in (1, d):
                    raise ValueError(f"shapes {[tuple(z) for z in shapes]} do not broadcast")
                out[i] = d
    return torch.Size(out)


def _array(seq: Any, dtype: Any = None) -> torch.Tensor:
    if isinstance(seq, torch.Tensor):
        return seq
    if isinstance(seq, (list, tuple)):
        items = [_array(s) for s in seq]
        shape = _bshape(*(i.shape for i in items))
        return torch.stack([i.expand(shape) for i in items], 0)
    return _t(seq)


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Any], torch.Tensor]:
    return lambda x: fn(_t(x))


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[Any, Any], torch.Tensor]:
    return lambda a, b: fn(_t(a), _t(b))


def _reduce(fn: Callable[..., Any]) -> Callable[..., torch.Tensor]:
    def red(a: Any, axis: int | None = None) -> torch.Tensor:
        a = _t(a)
        return fn(a) if axis is None else fn(a, dim=axis)
    return red


def _heaviside(x: Any, h0: Any) -> torch.Tensor:
    # torch.heaviside has no derivative; this has the (zero) derivative numpy implies
    x = _t(x)
    h0 = h0 if isinstance(h0, torch.Tensor) else float(h0)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    return torch.where(x > 0, one, torch.where(x == 0, zero + h0, zero))


def _arange(*args: Any, **kw: Any) -> torch.Tensor:
    dtype = None if all(isinstance(a, int) for a in args) else _cur()[0]
    return torch.arange(*args, dtype=dtype, device=_cur()[1])


def _linspace(a: Any, b: Any, n: int = 50) -> torch.Tensor:
    dtype, device = _cur()
    return torch.linspace(float(a), float(b), int(n), dtype=dtype, device=device)


def _hstack(seq: Any) -> torch.Tensor:
    return torch.cat([torch.atleast_1d(_t(s)) for s in seq], 0)


def _mm(a: Any, b: Any) -> torch.Tensor:
    # matrix @ state: contract over the leading (component) axis of b, whatever its batch dims.
    # Never one plain gemm: for these tiny matrices MKL's threaded gemm costs 10-40 ms a call on
    # a busy 2-core machine (its OpenMP threads wait on each other), a batched (bmm-style)
    # product or a multiply-and-sum (also what vmap turns a per-state product into) ~20 us.
    a, b = _t(a), _t(b)
    if a.ndim == 2 and b.ndim >= 1 and a.shape[1] == b.shape[0] and a.numel() <= 4096:
        return (a.reshape(*a.shape, *([1] * (b.ndim - 1))) * b).sum(1)
    if a.ndim == 2 and b.ndim > 2:
        return torch.tensordot(a, b, dims=([1], [0]))
    return torch.matmul(a, b)


def _zeros_like(a: Any) -> torch.Tensor:
    return torch.zeros_like(_t(a))


def _pymax(*args: Any, **kw: Any) -> Any:
    if len(args) == 2 and not kw and any(isinstance(a, torch.Tensor) for a in args):
        return torch.maximum(_t(args[0]), _t(args[1]))
    return max(*args, **kw)


def _pymin(*args: Any, **kw: Any) -> Any:
    if len(args) == 2 and not kw and any(isinstance(a, torch.Tensor) for a in args):
        return torch.minimum(_t(args[0]), _t(args[1]))
    return min(*args, **kw)


class _TorchNumpy(types.SimpleNamespace):
    """The part of numpy that dysts's vector fields use, on torch tensors (autograd-safe).

    Anything else raises :class:`AttributeError`, so the system is skipped with that reason.
    """

    def __getattr__(self, item: str) -> Any:
        raise AttributeError(f"numpy.{item} has no torch counterpart in the dysts adapter")


_NP = _TorchNumpy(
    pi=math.pi, e=math.e, inf=math.inf, nan=math.nan,
    sin=_unary(torch.sin), cos=_unary(torch.cos), tan=_unary(torch.tan),
    arcsin=_unary(torch.asin), arccos=_unary(torch.acos), arctan=_unary(torch.atan),
    sinh=_unary(torch.sinh), cosh=_unary(torch.cosh), tanh=_unary(torch.tanh),
    arcsinh=_unary(torch.asinh), arccosh=_unary(torch.acosh), arctanh=_unary(torch.atanh),
    exp=_unary(torch.exp), log=_unary(torch.log), log10=_unary(torch.log10),
    sqrt=_unary(torch.sqrt), abs=_unary(torch.abs), absolute=_unary(torch.abs),
    fabs=_unary(torch.abs), sign=_unary(torch.sign), square=_unary(torch.square),
    floor=_unary(torch.floor), ceil=_unary(torch.ceil), round=_unary(torch.round),
    arctan2=_binary(torch.atan2), power=_binary(torch.pow), maximum=_binary(torch.maximum),
    minimum=_binary(torch.minimum), mod=_binary(torch.remainder), heaviside=_heaviside,
    sum=_reduce(torch.sum), mean=_reduce(torch.mean), prod=_reduce(torch.prod),
    min=_reduce(torch.amin), max=_reduce(torch.amax), copy=_unary(torch.clone),
    array=_array, asarray=_array, zeros_like=_zeros_like, hstack=_hstack,
    matmul=_mm, dot=_mm, arange=_arange, linspace=_linspace,
)

_globals_cache: dict[int, dict[str, Any]] = {}


def _torchified(fn: Any) -> types.FunctionType:
    """The Python function behind ``fn`` (numba ``py_func`` if jitted) rebound to torch ``np``."""
    fn = getattr(fn, "py_func", fn)
    key = id(fn.__globals__)
    g = _globals_cache.get(key)
    if g is None:
        g = dict(fn.__globals__)
        g.update(np=_NP, numpy=_NP, max=_pymax, min=_pymin)
        _globals_cache[key] = g
    new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


def _python(fn: Any) -> Any:
    return getattr(fn, "py_func", fn)


# ---------------------------------------------------------------------------- one system
class _DystsField:
    """dysts's vector field of one system, callable on torch states (or numpy, as reference)."""

    def __init__(self, dcls: type, meta: Mapping[str, Any], dim: int):
        import numpy as np

        self.dim = dim
        self.name = dcls.__name__
        raw = {k: v for k, v in meta["parameters"].items()}
        self.order = sorted(raw)  # dysts passes parameters positionally in sorted-name order
        self.scalars = [k for k in self.order if np.isscalar(raw[k])]
        self.arrays = {k: np.asarray(raw[k], dtype=float) for k in self.order if k not in self.scalars}
        self.defaults = {k: float(raw[k]) for k in self.scalars}
        self._array_cache: dict[tuple[torch.dtype, Any], dict[str, torch.Tensor]] = {}
        self.vmap = False

        own_rhs = any("rhs" in c.__dict__ for c in dcls.__mro__ if c.__module__ == dcls.__module__)
        self.method = own_rhs
        if own_rhs:  # rhs(self, X, t): needs a stand-in for `self` with parameters and helpers
            members_t: dict[str, Any] = {}
            members_np: dict[str, Any] = {}
            for c in reversed(dcls.__mro__):
                if c.__module__ != dcls.__module__:
                    continue
                for key, val in c.__dict__.items():
                    if key.startswith("__") or key == "_postprocessing":
                        continue
                    if isinstance(val, staticmethod):
                        members_t[key] = staticmethod(_torchified(val.__func__))
                        members_np[key] = staticmethod(_python(val.__func__))
                    elif isinstance(val, types.FunctionType) or hasattr(val, "py_func"):
                        members_t[key] = _torchified(val)
                        members_np[key] = _python(val)
            self._proxy_t = type(f"_{self.name}Proxy", (), members_t)
            self._proxy_np = type(f"_{self.name}ProxyNp", (), members_np)
            self._fn_t = members_t["rhs"]
            self._fn_np = members_np["rhs"]
            self.variables = _unpacked_names(_python(dcls.rhs), dim)
        else:
            self._fn_t = _torchified(dcls._rhs)
            self._fn_np = _python(dcls._rhs)
            code = self._fn_np.__code__
            names = code.co_varnames[:code.co_argcount]
            self.variables = tuple(names[:dim]) if len(names) > dim and names[dim] == "t" else ()
        if len(set(self.variables)) != dim:
            self.variables = tuple(f"x{i}" for i in range(dim))

    # ------------------------------------------------------------------ numpy reference
    def reference(self, x_row: Any, t: float = 0.0) -> Any:
        """dysts's own numpy evaluation at one state (what ``DynSys.rhs`` computes)."""
        import numpy as np

        args = [self.defaults[k] if k in self.defaults else self.arrays[k] for k in self.order]
        x_row = np.asarray(x_row, dtype=float)
        if self.method:
            obj = self._proxy_np()
            obj.__dict__.update(zip(self.order, args, strict=True), dimension=self.dim)
            out = self._fn_np(obj, x_row, t)
        else:
            out = self._fn_np(*x_row, t, *args)
        return np.asarray(out, dtype=float).reshape(self.dim)

    # ------------------------------------------------------------------ torch
    def _args(self, p: Mapping[str, Any], like: torch.Tensor) -> list[Any]:
        key = (like.dtype, like.device)
        arrs = self._array_cache.get(key)
        if arrs is None:
            arrs = {k: torch.as_tensor(v, dtype=like.dtype, device=like.device)
                    for k, v in self.arrays.items()}
            self._array_cache[key] = arrs
        return [arrs[k] if k in arrs else p[k] for k in self.order]

    def _eval(self, x: torch.Tensor, p: Mapping[str, Any], t: float = 0.0) -> torch.Tensor:
        batch = x.shape[:-1]
        args = self._args(p, x)
        if self.method:
            obj = self._proxy_t()
            obj.__dict__.update(zip(self.order, args, strict=True), dimension=self.dim)
            out = self._fn_t(obj, x.movedim(-1, 0), t)
        else:
            out = self._fn_t(*x.unbind(-1), t, *args)
        if isinstance(out, torch.Tensor) and out.ndim >= 1 and out.shape[0] == self.dim:
            out = out.unbind(0)
        if len(out) != self.dim:
            raise ValueError(f"field has {len(out)} components, expected {self.dim}")
        comps = [_t(c) for c in out]
        if any(c.shape != batch for c in comps) and _bshape(batch, *(c.shape for c in comps)) != batch:
            raise ValueError(f"component shapes {[tuple(c.shape) for c in comps]} do not match "
                             f"the batch {tuple(batch)}")
        # skip no-op casts and expands: each is a dispatched op, and this runs per RK4 stage
        return torch.stack([c if c.shape == batch and c.dtype == x.dtype
                            else c.to(x.dtype).expand(batch) for c in comps], -1)

    def __call__(self, x: torch.Tensor, p: Mapping[str, Any], t: float = 0.0) -> torch.Tensor:
        tensors = {k: v for k, v in p.items() if isinstance(v, torch.Tensor)}
        batch = _bshape(x.shape[:-1], *(v.shape for v in tensors.values())) if tensors else x.shape[:-1]
        if batch != x.shape[:-1]:
            x = x.expand(*batch, x.shape[-1])
        saved = getattr(_ctx, "like", None)
        _ctx.like = (x.dtype, x.device)
        try:
            if not self.vmap or len(batch) == 0:
                return self._eval(x, p, t)
            n = math.prod(batch)
            if n == 0:
                return torch.empty_like(x)
            flat_x = x.reshape(n, self.dim)
            names = list(tensors)
            flat_p = [tensors[k].expand(batch).reshape(n) for k in names]
            fixed = {k: v for k, v in p.items() if k not in tensors}

            def one(xr: torch.Tensor, *pr: torch.Tensor) -> torch.Tensor:
                return self._eval(xr, {**fixed, **dict(zip(names, pr, strict=True))}, t)

            return torch.func.vmap(one)(flat_x, *flat_p).reshape(*batch, self.dim)
        finally:
            _ctx.like = saved


def _unpacked_names(fn: Any, dim: int) -> tuple[str, ...]:
    """Names in ``a, b, c = X`` at the top of ``rhs(self, X, t)``, if it starts that way."""
    try:
        code = fn.__code__
        xname = code.co_varnames[1]
        ins = list(dis.get_instructions(code))
        for i, op in enumerate(ins):
            if op.opname.startswith("LOAD_FAST") and op.argval == xname and i + 1 < len(ins) \
                    and ins[i + 1].opname == "UNPACK_SEQUENCE" and ins[i + 1].arg == dim:
                stores = ins[i + 2:i + 2 + dim]
                if all(s.opname == "STORE_FAST" for s in stores):
                    return tuple(s.argval for s in stores)
                break
    except Exception:  # pragma: no cover - best effort only
        pass
    return ()


# ---------------------------------------------------------------------------- checks
def _one_line(e: BaseException) -> str:
    msg = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
    return msg if len(msg) <= 160 else msg[:157] + "..."


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    scale = 1.0 + float(b.abs().max()) if b.numel() else 1.0
    return bool(((a - b).abs() <= rtol * (b.abs() + scale)).all())


def _check_torch(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 ref: torch.Tensor, rates: list[float]) -> str | None:
    """Values against dysts, dtype, batch shapes and the autograd Jacobian; a reason or None.

    Appends the largest Jacobian eigenvalue modulus over the test states to ``rates``.
    """
    D = x.shape[-1]
    try:
        out = f(x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return "cannot evaluate on torch batches: wrong output shape"
        if not _close(out, ref, 1e-8):
            return "torch evaluation differs from dysts's numpy rhs"
        if f(x.float()).dtype != torch.float32:
            return "float32 input does not give float32 output"
        for b in (0, 3):
            if not _close(f(x[b]), ref[b], 1e-8):
                return "single-state evaluation differs from dysts's numpy rhs"
        if f(x.reshape(1, 7, D).expand(2, 7, D)).shape != (2, 7, D):
            return "time-major (T, B, D) batch gives the wrong shape"
        J = autodiff_jacobian(f, x)  # the method the converted system will use
        h = 1e-6 * (1.0 + x.abs())                                    # (7, D)
        E = torch.eye(D, dtype=x.dtype)
        xp = x.unsqueeze(-2) + E * h.unsqueeze(-1)                    # (7, D, D): row j moves x_j
        xm = x.unsqueeze(-2) - E * h.unsqueeze(-1)
        fd = ((f(xp) - f(xm)) / (2 * h.unsqueeze(-1))).transpose(-1, -2)
        if not torch.isfinite(J).all() or not _close(fd, J, 1e-5):
            return "autograd Jacobian differs from finite differences"
        rates.append(float(torch.linalg.eigvals(J).abs().max()))
    except Exception as e:
        return f"cannot evaluate on torch batches: {_one_line(e)}"
    return None


def _check(field: _DystsField, x0: torch.Tensor, params: dict[str, float],
           integer: set[str], rates: list[float]) -> str | None:
    """Run the conversion checks; ``None`` when all pass, else a one-line reason.

    May switch ``field.vmap`` on, add names to ``integer`` (parameters that cannot be swept)
    and append the Jacobian's spectral radius near ``x0`` to ``rates``.
    """
    import numpy as np

    gen = torch.Generator().manual_seed(0)
    D = field.dim
    x = x0 + 0.05 * (1.0 + x0.abs()) * torch.randn(7, D, generator=gen, dtype=torch.float64)
    xn = x.numpy()
    try:
        with np.errstate(all="ignore"):
            ref = np.stack([field.reference(r) for r in xn])
            ref_t = np.stack([field.reference(r, _T_PROBE) for r in xn])
    except Exception as e:
        return f"dysts's own rhs fails on a single state: {_one_line(e)}"
    if not np.isfinite(ref).all():
        return "dysts's rhs is not finite near the initial condition"
    if not np.allclose(ref, ref_t, rtol=1e-12, atol=1e-12):
        return "explicitly time-dependent (the field depends on t)"
    ref = torch.from_numpy(ref)

    def f(z: torch.Tensor, p: Mapping[str, Any] = params) -> torch.Tensor:
        return field(z, p)

    err = _check_torch(f, x, ref, rates)
    if err is not None:  # equations written for one state (np.matmul(W, X), ...): vmap them
        field.vmap = True
        if _check_torch(f, x, ref, rates) is not None:
            field.vmap = False
            return err
    # every scalar parameter must accept a (B,) sweep tensor
    xb = x0.expand(4, D)
    for k, v in params.items():
        lo, hi = param_bounds(v)
        vals = torch.linspace(max(v - 0.01 * (hi - lo), lo), v, 4, dtype=torch.float64)
        try:
            fb = f(xb, {**params, k: vals})
            ok = fb.shape == (4, D) and all(
                _close(fb[i], f(xb[i], {**params, k: float(vals[i])}), 1e-10) for i in range(4))
            fv = f(x0, {**params, k: vals})
            ok = ok and fv.shape == (4, D)
        except Exception:
            ok = False
        if ok and not torch.isfinite(fb).all():
            return f"not finite when parameter {k!r} is lowered by 1% of its range"
        if not ok:
            if float(v).is_integer():
                integer.add(k)  # structural (array sizes, loop counts): never a tensor
            else:
                return f"parameter {k!r} cannot be swept with a tensor"
    return None


# ---------------------------------------------------------------------------- registration
def _describe(dname: str, meta: Mapping[str, Any], field: _DystsField, variables: tuple[str, ...]) -> str:
    text = (meta.get("description") or "").strip()
    if text and not text.endswith("."):
        text += "."
    parts = [text, f"From the dysts catalogue (class {dname}); parameter ranges are not from the "
                   "literature but a generic rule (between 0 and 10x the default)."]
    if field.arrays:
        parts.append("Array-valued parameters held fixed at dysts's values: "
                     + ", ".join(sorted(field.arrays)) + ".")
    unb = [variables[i] for i in meta.get("unbounded_indices") or [] if 0 <= i < len(variables)]
    if unb:
        parts.append("Unbounded by design (phases/angles, which dysts post-processes): "
                     + ", ".join(unb) + ".")
    if meta.get("nonautonomous"):
        parts.append("Forced system: the forcing phase is a state variable.")
    return " ".join(p for p in parts if p)


def _build(dname: str, dcls: type, meta: Mapping[str, Any]) -> type[Flow]:
    """The :class:`Flow` subclass for one dysts system; raises ``ValueError`` with a reason."""
    import numpy as np

    if meta.get("delay"):
        raise ValueError("delay differential equation (needs a history, not a state)")
    dim = int(meta.get("embedding_dimension") or meta.get("dimension") or 0)
    ic = np.asarray(meta.get("initial_conditions", []), dtype=float).ravel()
    if dim < 1 or ic.shape != (dim,) or not np.isfinite(ic).all():
        raise ValueError(f"initial condition does not match dimension {dim}")
    dt = float(meta.get("dt") or 0.0)
    if not dt > 0:
        raise ValueError("no positive time step in the metadata")
    field = _DystsField(dcls, meta, dim)
    params = dict(field.defaults)
    integer: set[str] = set()
    rates: list[float] = []
    reason = _check(field, torch.tensor(ic, dtype=torch.float64), params, integer, rates)
    if reason:
        raise ValueError(reason)

    plist = []
    for k, v in params.items():
        lo, hi = param_bounds(v)
        if k in integer:
            plist.append(Param(k, int(v), math.floor(lo), math.ceil(hi),
                               f"dysts parameter {k} (structural integer)", integer=True))
        else:
            plist.append(Param(k, v, lo, hi, f"dysts parameter {k} (dysts default {v:g})"))
    spectrum = meta.get("lyapunov_spectrum_estimated")
    ref = None
    if spectrum is not None and len(spectrum) == dim and all(math.isfinite(float(s)) for s in spectrum):
        ref = LyapunovReference(tuple(sorted((float(s) for s in spectrum), reverse=True)),
                                LYAPUNOV_SOURCE)
    period = meta.get("period")
    variables = field.variables

    def rhs(self: Flow, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        return field(x, p)

    jac = jacobian_fn(field)

    def jacobian(self: Flow, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        tj = traced_jacobian(self)  # exact partials of the traced field (explorer.core.traced)
        if tj is not None:
            return tj(x, p)
        # one forward and one backward pass over D copies of the batch (explorer.core.autodiff)
        return jac(x, p)

    attrs = {
        "__module__": __name__,
        "__doc__": f"dysts system {dname}, converted to torch by explorer.core.dysts_adapter.",
        "name": flow_name(dname),
        "title": f"{dname} (dysts)",
        "variables": variables,
        "parameters": tuple(plist),
        "default_x0": tuple(float(v) for v in ic),
        "default_dt": recommended_dt(dt, meta.get("period"), rates[-1] if rates else None,
                                     _STEPS_PER_PERIOD.get(dname, 100.0)),
        # phases/positions that grow without bound (dysts's "unbounded_indices") must not
        # count as divergence on long runs (BickleyJet's phase passes 1e6 in ~10 periods)
        "bound": 1e12 if meta.get("unbounded_indices") else Flow.bound,
        "dysts_dt": dt,
        "period": float(period) if period and math.isfinite(float(period)) and period > 0 else None,
        "latex": r"\text{equations: see dysts, }\texttt{" + dname + "}",
        "description": _describe(dname, meta, field, variables),
        "citation": str(meta.get("citation") or ""),
        "lyapunov_reference": ref,
        "origin": "dysts",
        "traced_field": True,   # field and Jacobian from one traced program (core.traced)
        "dysts_name": dname,
        "fixed_parameters": {k: v.tolist() for k, v in field.arrays.items()},
        "rhs": rhs,
        "jacobian": jacobian,
        "_field": field,
    }
    attrs["__qualname__"] = "Dysts" + dname
    return type("Dysts" + dname, (Flow,), attrs)


_CLASSES: dict[str, type[Flow]] = {}


def __getattr__(name: str) -> type[Flow]:
    """``dysts_adapter.DystsLorenz`` etc., so instances pickle by reference (worker processes)."""
    if name.startswith("Dysts") and name not in _CLASSES:
        from .registry import load_dysts
        load_dysts()
    if name in _CLASSES:
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_dysts() -> tuple[Any, dict[str, Any], list[str]]:
    """(dysts.flows module, metadata by name, continuous system names); ImportError if absent."""
    import importlib.resources
    import inspect
    import json

    with warnings.catch_warnings():  # "Numba not installed. Falling back to no JIT" and friends
        warnings.simplefilter("ignore")
        import dysts.base as dbase
        import dysts.flows as dflows
    path = importlib.resources.files("dysts").joinpath("data/chaotic_attractors.json")
    meta = json.loads(path.read_text())
    names = sorted(n for n, c in vars(dflows).items()
                   if inspect.isclass(c) and issubclass(c, dbase.DynSys)
                   and c.__module__ == dflows.__name__)
    delay = getattr(dbase, "DynSysDelay", None)
    if delay is not None:
        names = sorted(set(names) | {n for n, c in vars(dflows).items() if inspect.isclass(c)
                                     and issubclass(c, delay) and c.__module__ == dflows.__name__})
    return dflows, meta, names


def register_dysts(register: Callable[[type], Any]) -> dict[str, str]:
    """Register every convertible dysts flow with ``register``; ``{dysts name: reason}`` of the rest.

    Raises :class:`ImportError` when dysts is not installed.
    """
    dflows, meta, names = _load_dysts()
    skipped: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dname in names:
            dcls = getattr(dflows, dname)
            m = meta.get(dname)
            if m is None:
                skipped[dname] = "no metadata in dysts's chaotic_attractors.json"
                continue
            try:
                cls = _build(dname, dcls, m)
            except ValueError as e:
                skipped[dname] = str(e)
                continue
            except Exception as e:  # anything unexpected in dysts's code: skip, never crash
                skipped[dname] = f"conversion failed: {_one_line(e)}"
                continue
            try:
                register(cls)
            except ValueError as e:
                skipped[dname] = f"name clash: {e}"
                continue
            _CLASSES.setdefault(cls.__qualname__, cls)  # the first registered one pickles
    return skipped
