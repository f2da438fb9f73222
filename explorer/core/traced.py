"""Exact Jacobians of traced vector fields: the lane program of :mod:`.native`, differentiated.

Systems without a hand-written Jacobian (custom equations, the dysts catalogue) used to get
theirs from autograd, a forward and a backward pass per call. A Lyapunov spectrum asks for one
four times per RK4 step, and autograd's backward graph is nothing :mod:`.native` can turn into
C, so such a spectrum ran the eager torch loop: a minute for a typical dysts flow instead of
the built-ins' second.

Here the field is traced once per class (:func:`explorer.core.native._trace`: the aten ops of
one call on a small batch, unrolled into a straight-line program on one trajectory's scalars),
and that program is differentiated symbolically, instruction by instruction, in forward mode
(each temporary carries its D partial derivatives, an exact zero kept as "none" so sparse fields
stay sparse). The result, the field's instructions followed by those of the D x D partials, is
evaluated with elementwise torch ops on the state's components. Because those are elementwise
ops again, the Jacobian traces into generated C as well: the state and its tangent vectors of
a dysts flow or a custom system are stepped natively like a built-in's.

Precision: the same arithmetic as autograd's formulas (float64 where the state is float64), so
the two agree to rounding; each class's traced Jacobian is checked against autograd on random
states at build time, and a field that does not trace (matrix products over the state,
reductions, data-dependent Python branches, ``vmap``) or fails the check keeps autograd.

Public API: :func:`traced_jacobian` (a ``jacobian(x, p)`` for a system, or ``None``),
:func:`field_and_jacobian` (both from one pass where the system opts in), :func:`reason`.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from typing import Any, Callable, Mapping

import torch

from .autodiff import batch_shape
from .autodiff import jacobian as autograd_jacobian

log = logging.getLogger(__name__)

__all__ = ["traced_jacobian", "field_and_jacobian", "TracedJacobian", "reason"]

_LN2, _LN10 = math.log(2.0), math.log(10.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


# ---------------------------------------------------------------------------- differentiation
# ops whose derivative selects one operand's tangent (and may make it an exact zero)
_BRANCHES = {"where", "relu", "min", "max", "fn2:fmin", "fn2:fmax", "clamplo", "clamphi"}

class _Deriv:
    """Forward-mode differentiation of a lane program ``ir`` (:class:`native._IR`) with respect
    to its D state lanes; new instructions are appended to ``ir``."""

    def __init__(self, ir: Any):
        from .native import _Ref
        self.ir, self.Ref = ir, _Ref
        self.D = ir.dim
        self.grads: dict[int, list] = {}
        self.masked: set[int] = set()     # temporaries whose tangents went through a branch
        self.safe = False                 # building the rule of such a temporary now

    # -- constants and folding helpers (None is an exact zero)
    def c(self, v: float):
        return self.Ref("c", float(v))

    def is_c(self, r, v: float) -> bool:
        return r is not None and r.kind == "c" and r.typ == "r" and r.val == v

    def add(self, a, b):
        if a is None:
            return b
        if b is None:
            return a
        return self.ir.add("+", (a, b))

    def sub(self, a, b):
        if b is None:
            return a
        if a is None:
            return self.ir.add("neg", (b,))
        return self.ir.add("-", (a, b))

    def mul(self, a, b):
        if a is None or b is None or self.is_c(a, 0.0) or self.is_c(b, 0.0):
            return None
        if self.is_c(a, 1.0):
            return b
        if self.is_c(b, 1.0):
            return a
        if self.is_c(a, -1.0):
            return self.ir.add("neg", (b,))
        prod = self.ir.add("*", (a, b))
        if self.safe and a.kind != "c" and b.kind != "c":
            # a tangent that a branch (where, max, clamp, relu) set to exactly 0 stays 0 under
            # an infinite factor, as in autograd, whose backward masks after multiplying:
            # sqrt(max(0, x)) at x < 0 has derivative 0, not 0 * inf = nan
            zero = self.ir.add("==", (b, self.c(0.0)), "b")
            prod = self.ir.add("where", (zero, self.c(0.0), prod))
        return prod

    def op(self, name: str, *args):
        return self.ir.add(name, args)

    def grad(self, r) -> list:
        if r.kind == "x":
            return [self.c(1.0) if j == r.val else None for j in range(self.D)]
        if r.kind == "t":
            return self.grads.get(r.val) or [None] * self.D
        return [None] * self.D                                   # parameters and constants

    def scale(self, g: list, factor: Callable[[], Any]) -> list:
        """``g`` times a factor built (once) only when some component is non-zero."""
        if all(v is None for v in g):
            return g
        k = factor()
        return [self.mul(k, v) for v in g]

    def where(self, cond, ga: list, gb: list) -> list:
        out = []
        for u, v in zip(ga, gb):
            if u is None and v is None:
                out.append(None)
            else:
                out.append(self.op("where", cond, u if u is not None else self.c(0.0),
                                   v if v is not None else self.c(0.0)))
        return out

    # -- one instruction
    def rule(self, i: int, ins) -> list | None:
        op, args, t = ins.op, ins.args, self.Ref("t", i)
        if ins.typ != "r":
            return None
        a = args[0] if args else None
        b = args[1] if len(args) > 1 else None
        ga = self.grad(a) if a is not None and a.typ == "r" else [None] * self.D
        gb = self.grad(b) if b is not None and b.typ == "r" else [None] * self.D
        zero = all(v is None for v in ga) and all(v is None for v in gb)
        if op in ("b2r", "sign", "heaviside", "fn:floor", "fn:ceil", "fn:trunc", "fn:rint"):
            return None
        if op == "where":
            gx, gy = self.grad(args[1]), self.grad(args[2])
            if all(v is None for v in gx) and all(v is None for v in gy):
                return None
            return self.where(a, gx, gy)
        if zero:
            return None
        if op == "+":
            return [self.add(u, v) for u, v in zip(ga, gb)]
        if op == "-":
            return [self.sub(u, v) for u, v in zip(ga, gb)]
        if op == "*":
            return [self.add(self.mul(b, u), self.mul(a, v)) for u, v in zip(ga, gb)]
        if op == "/":                                   # (da - t db) / b
            return [None if (u is None and v is None) else
                    self.op("/", self.sub(u, self.mul(t, v)), b) for u, v in zip(ga, gb)]
        if op in ("id", "frac"):
            return ga
        if op == "neg":
            return [None if u is None else self.op("neg", u) for u in ga]
        unary: dict[str, Callable[[], Any]] = {
            "fn:sin": lambda: self.op("fn:cos", a),
            "fn:cos": lambda: self.op("neg", self.op("fn:sin", a)),
            "fn:tan": lambda: self.op("+", self.c(1.0), self.op("*", t, t)),
            "fn:sinh": lambda: self.op("fn:cosh", a),
            "fn:cosh": lambda: self.op("fn:sinh", a),
            "fn:tanh": lambda: self.op("-", self.c(1.0), self.op("*", t, t)),
            "fn:asin": lambda: self.op("rsqrt", self.op("-", self.c(1.0), self.op("*", a, a))),
            "fn:acos": lambda: self.op("neg", self.op("rsqrt", self.op("-", self.c(1.0),
                                                                       self.op("*", a, a)))),
            "fn:atan": lambda: self.op("recip", self.op("+", self.c(1.0), self.op("*", a, a))),
            "fn:asinh": lambda: self.op("rsqrt", self.op("+", self.op("*", a, a), self.c(1.0))),
            "fn:acosh": lambda: self.op("rsqrt", self.op("-", self.op("*", a, a), self.c(1.0))),
            "fn:atanh": lambda: self.op("recip", self.op("-", self.c(1.0), self.op("*", a, a))),
            "fn:exp": lambda: t,
            "fn:exp2": lambda: self.op("*", t, self.c(_LN2)),
            "fn:expm1": lambda: self.op("+", t, self.c(1.0)),
            "fn:log": lambda: self.op("recip", a),
            "fn:log2": lambda: self.op("recip", self.op("*", a, self.c(_LN2))),
            "fn:log10": lambda: self.op("recip", self.op("*", a, self.c(_LN10))),
            "fn:log1p": lambda: self.op("recip", self.op("+", a, self.c(1.0))),
            "fn:sqrt": lambda: self.op("/", self.c(0.5), t),
            "fn:fabs": lambda: self.op("sign", a),
            "fn:erf": lambda: self.op("*", self.c(_TWO_OVER_SQRT_PI),
                                      self.op("fn:exp", self.op("neg", self.op("*", a, a)))),
            "fn:erfc": lambda: self.op("*", self.c(-_TWO_OVER_SQRT_PI),
                                       self.op("fn:exp", self.op("neg", self.op("*", a, a)))),
            "recip": lambda: self.op("neg", self.op("*", t, t)),
            "rsqrt": lambda: self.op("*", self.c(-0.5), self.op("*", t, self.op("*", t, t))),
            "sigmoid": lambda: self.op("*", t, self.op("-", self.c(1.0), t)),
            "sq": lambda: self.op("*", self.c(2.0), a),
        }
        if op in unary:
            return self.scale(ga, unary[op])
        if op == "relu":
            return self.where(self.op(">", a, self.c(0.0)), ga, [None] * self.D)
        if op in ("min", "fn2:fmin", "max", "fn2:fmax"):
            first = "<" if op in ("min", "fn2:fmin") else ">"
            half = [None if (u is None and v is None) else
                    self.mul(self.c(0.5), self.add(u, v)) for u, v in zip(ga, gb)]
            tie = self.where(self.op(first, b, a), gb, half)
            return self.where(self.op(first, a, b), ga, tie)
        if op == "clamplo":                       # torch: d/dv where v >= lo, d/dlo where v < lo
            return self.where(self.op(">=", a, b), ga, gb)
        if op == "clamphi":
            return self.where(self.op("<=", a, b), ga, gb)
        if op in ("rem", "fn2:fmod"):             # a - b * floor(a / b) (trunc for fmod)
            if all(v is None for v in gb):
                return ga
            rnd = "fn:floor" if op == "rem" else "fn:trunc"
            k = self.op(rnd, self.op("/", a, b))
            return [self.sub(u, self.mul(k, v)) for u, v in zip(ga, gb)]
        if op == "fn2:atan2":                     # atan2(y, x): (x dy - y dx) / (x^2 + y^2)
            den = self.op("+", self.op("*", a, a), self.op("*", b, b))
            return [None if (u is None and v is None) else
                    self.op("/", self.sub(self.mul(b, u), self.mul(a, v)), den)
                    for u, v in zip(ga, gb)]
        if op == "fn2:hypot":
            return [None if (u is None and v is None) else
                    self.op("/", self.add(self.mul(a, u), self.mul(b, v)), t)
                    for u, v in zip(ga, gb)]
        if op == "fn2:copysign":                  # +-1 times da, 0 at a == 0 (as torch)
            if all(u is None for u in ga):
                return None
            s = self.op("where", self.op("!=", a, self.c(0.0)), self.op("/", t, a), self.c(0.0))
            return [self.mul(s, u) for u in ga]
        if op == "fn2:pow":                       # e a^(e-1) da + a^e log(a) de
            out = [None] * self.D
            if any(u is not None for u in ga):
                if b.kind == "c":
                    base = self.op("fn2:pow", a, self.c(b.val - 1.0))
                else:
                    base = self.op("fn2:pow", a, self.op("-", b, self.c(1.0)))
                k = self.op("*", b, base)
                out = [self.mul(k, u) for u in ga]
            if any(v is not None for v in gb):
                k2 = self.op("*", t, self.op("fn:log", a))
                out = [self.add(o, self.mul(k2, v)) for o, v in zip(out, gb)]
            return out
        from .native import Unsupported
        raise Unsupported(f"no derivative rule for {op}")

    def run(self) -> list[list]:
        """Differentiate every instruction present now; the Jacobian of the outputs (D x D)."""
        n = len(self.ir.instrs)
        for i in range(n):
            ins = self.ir.instrs[i]
            masked = ins.op in _BRANCHES or any(
                a.kind == "t" and a.val in self.masked for a in ins.args)
            self.safe = masked
            g = self.rule(i, ins)
            self.safe = False
            if g is not None and any(v is not None for v in g):
                self.grads[i] = g
                if masked:
                    self.masked.add(i)
        outs = self.ir.outputs
        return [[v if v is not None else self.c(0.0) for v in self.grad(r)] for r in outs]


# ---------------------------------------------------------------------------- evaluation
def _where(c, a, b):
    if isinstance(c, bool):
        return a if c else b
    return torch.where(c, a, b)


_TORCH_FN = {"fabs": torch.abs, "rint": torch.round}
_BINOPS: dict[str, Callable] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
    "/": lambda a, b: a / b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "&": lambda a, b: a & b, "|": lambda a, b: a | b,
    "^": lambda a, b: a ^ b,
}


class TracedJacobian:
    """The Jacobian program of one system class: :meth:`__call__` ``(x, p) -> (..., D, D)``.

    Holds the lane program (field and partials, dead code removed), the float parameter names
    its parameter lanes stand for, and the integer parameters it was traced with.
    """

    def __init__(self, ir: Any, names: list[str], D: int, values: list):
        self.D = D
        self.names = list(names)
        self.outputs = list(ir.outputs)          # the D x D partials, row-major
        self.values = list(values)               # the field's D components
        self._jac = self._live(ir, self.outputs)
        self._both = self._live(ir, self.values + self.outputs)

    @staticmethod
    def _live(ir: Any, outs: list) -> list[tuple]:
        live = ir.live(outs)
        return [(i, ins.op, ins.args) for i, ins in enumerate(ir.instrs) if i in live]

    @property
    def n_ops(self) -> int:
        return len(self._jac)

    def __call__(self, x: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
        """The Jacobian (..., D, D) at ``x`` (..., D), batched over states and parameters."""
        return self._run(self._jac, x, p, False)[1]

    def value_and_jacobian(self, x: torch.Tensor, p: Mapping[str, Any]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """The field (..., D) and its Jacobian (..., D, D) from one pass of the program."""
        return self._run(self._both, x, p, True)

    def _run(self, program: list, x: torch.Tensor, p: Mapping[str, Any], with_value: bool
             ) -> tuple[torch.Tensor | None, torch.Tensor]:
        dtype, device = x.dtype, x.device
        batch = batch_shape(x, {k: p[k] for k in self.names})
        xs = x.unbind(-1)
        ps = [p[n] for n in self.names]
        tmp: dict[int, Any] = {}

        def val(r):
            k = r.kind
            if k == "t":
                return tmp[r.val]
            if k == "x":
                return xs[r.val]
            if k == "p":
                return ps[r.val]
            return bool(r.val) if r.typ == "b" else r.val

        def T(v):
            return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=dtype, device=device)

        for i, op, args in program:
            a = [val(r) for r in args]
            f = _BINOPS.get(op)
            if f is not None:
                out = f(*a)
            elif op.startswith("fn:"):
                name = op[3:]
                out = _TORCH_FN.get(name, getattr(torch, name, None))(T(a[0]))
            elif op.startswith("fn2:"):
                out = getattr(torch, op[4:])(T(a[0]), T(a[1]))
            elif op == "where":         # two Python numbers would give torch's default dtype
                out = _where(a[0], T(a[1]) if not isinstance(a[2], torch.Tensor) else a[1], a[2])
            elif op == "neg":
                out = -a[0]
            elif op == "id":
                out = a[0]
            elif op == "recip":
                out = 1.0 / a[0]
            elif op == "sq":
                out = a[0] * a[0]
            elif op in ("rsqrt", "sign", "sigmoid", "relu", "frac", "isnan", "isinf", "isfinite"):
                out = getattr(torch, op)(T(a[0]))
            elif op == "not":
                out = (not a[0]) if isinstance(a[0], bool) else ~a[0]
            elif op == "b2r":
                out = a[0].to(dtype) if isinstance(a[0], torch.Tensor) else float(a[0])
            elif op == "r2b":
                out = a[0] != 0
            elif op == "rem":
                out = torch.remainder(T(a[0]), a[1])
            elif op in ("min", "max"):
                out = (torch.minimum if op == "min" else torch.maximum)(T(a[0]), T(a[1]))
            elif op == "clamplo":
                out = _where(T(a[0]) < a[1], a[1], a[0])
            elif op == "clamphi":
                out = _where(T(a[0]) > a[1], a[1], a[0])
            elif op == "heaviside":
                v = T(a[0])
                out = torch.where(v == 0, a[1], (v > 0).to(dtype))
            else:                                     # pragma: no cover - checked at build
                raise ValueError(f"unknown lane op {op}")
            tmp[i] = out
        def stacked(refs: list) -> torch.Tensor:
            lanes = [val(r) for r in refs]
            return torch.stack([v.to(dtype).expand(batch) if isinstance(v, torch.Tensor)
                                else torch.full(batch, float(v), dtype=dtype, device=device)
                                for v in lanes], -1)

        J = stacked(self.outputs).unflatten(-1, (self.D, self.D))
        return (stacked(self.values) if with_value else None), J


# ---------------------------------------------------------------------------- per class
# per class (weakly: custom systems make a class per parse), per integer parameter values:
# the traced program, or None with a reason
_cache: weakref.WeakKeyDictionary[type, dict[tuple, TracedJacobian | None]] = \
    weakref.WeakKeyDictionary()
_reasons: weakref.WeakKeyDictionary[type, dict[tuple, str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _ints(system: Any) -> tuple:
    return tuple((q.name, int(system.params[q.name])) for q in system.parameters if q.integer)


def _build(system: Any) -> TracedJacobian:
    from torch.utils._python_dispatch import _disable_current_modes

    from .native import Unsupported, _trace

    cls = type(system)
    template = cls(**{q.name: system.params[q.name] for q in system.parameters if q.integer})
    D = template.dim
    with _disable_current_modes():        # a build inside another trace records nothing there
        try:
            ir, field, names = _trace(template, torch.float64, fn=template.rhs)
        except Unsupported:               # e.g. X = x.movedim(-1, 0): one state at a time
            ir, field, names = _trace(template, torch.float64, fn=template.rhs, single=True)
        values = list(ir.outputs)
        jac_rows = _Deriv(ir).run()
        ir.outputs = [r for row in jac_rows for r in row]     # row-major D x D
        tj = TracedJacobian(ir, names, D, values)
        # check against autograd on random states around the default, default parameters
        gen = torch.Generator().manual_seed(4321)
        x0 = template.initial_state(torch.float64)
        x = x0 + 0.2 * (1.0 + x0.abs()) * torch.randn(29, D, generator=gen, dtype=torch.float64)
        p = template.bind(x)
        with torch.inference_mode(False):
            want = autograd_jacobian(lambda z: template.rhs(z, p), x)
        got = tj(x, p)
    fin = torch.isfinite(want)
    scale = torch.where(fin, want.abs(), torch.zeros_like(want)).amax() + 1.0
    ok = ((got - want).abs() <= 1e-9 * (want.abs() + scale)) | (torch.isnan(got) & torch.isnan(want))
    if got.shape != want.shape or not bool(ok.all()):
        raise Unsupported("the traced Jacobian disagrees with autograd")
    return tj


def traced_jacobian(system: Any) -> TracedJacobian | None:
    """The traced Jacobian of ``system``'s class (with its integer parameters), built on the
    first call and cached; ``None`` where the field does not trace or the check fails (the
    reason is logged at debug level and kept in :func:`reason`)."""
    cls, key = type(system), _ints(system)
    known = _cache.get(cls)
    if known is not None and key in known:
        return known[key]
    with _lock:
        known = _cache.setdefault(cls, {})
        if key in known:
            return known[key]
        try:
            tj: TracedJacobian | None = _build(system)
        except Exception as e:  # noqa: BLE001 - any failure: autograd instead
            tj = None
            _reasons.setdefault(cls, {})[key] = f"{type(e).__name__}: {e}"
            log.debug("no traced Jacobian for %s: %s", cls.__name__, e)
        known[key] = tj
        return tj


def reason(system: Any) -> str | None:
    """Why ``system`` has no traced Jacobian (after :func:`traced_jacobian` said ``None``)."""
    return _reasons.get(type(system), {}).get(_ints(system))


def field_and_jacobian(system: Any, x: torch.Tensor, p: Mapping[str, Any]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(system.rhs(x, p), system.jacobian(x, p))``; for systems whose Jacobian is the traced
    one (class attribute ``traced_field``: custom equations, dysts) both come from one pass
    of the traced program, which also traces where ``rhs`` itself does not (a field written
    for ``X = x.movedim(-1, 0)`` traces one state at a time)."""
    if getattr(system, "traced_field", False):
        tj = traced_jacobian(system)
        if tj is not None:
            return tj.value_and_jacobian(x, p)
    return system.rhs(x, p), system.jacobian(x, p)
