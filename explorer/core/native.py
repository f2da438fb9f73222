"""Native backend: a system's vector field compiled to C, the whole fixed-step loop in C.

Eager torch pays ~140 us of operator overhead per step of a single trajectory, and the
``torch.compile`` path a 40-60 s cold compile per system. Here the field is run once on a
small batch under a recording dispatch mode (the aten ops ``make_fx`` would trace, without
its import cost), translated op by op into C, and gcc builds (in ~0.1-0.5 s) a
shared library that runs ``n_steps`` steps of RK4, Euler or map iteration with the
divergence masking of :func:`explorer.core.simulate._make_chunk`. It is called through
:mod:`ctypes`, which releases the GIL, so a UI stays responsive while it runs.

Layout of the generated code: the batch is cut into blocks of ``W`` trajectories; OpenMP
spreads the blocks over ``torch.get_num_threads()`` threads (divided among runs that
overlap); each block keeps its states in structure-of-arrays form (``S[d][j]``) on the stack
for the whole call, and the innermost loop over the ``W`` lanes of a block is an ``omp simd`` loop that gcc vectorises (glibc's libmvec
supplies vector ``sin``/``cos``/``exp``...). Flags: ``-O3 -march=native -fno-math-errno
-ffp-contract=off``; not ``-ffast-math``, whose finite-math assumption would break the NaN/inf
checks. Without contraction every ``+ - * /`` rounds as in torch, so fields made of
arithmetic agree with eager torch to the last bit; transcendental functions differ from
torch's by a few ulp. ``native_stepper(..., fma=True)`` allows fused multiply-adds
(about 1.35x faster on polynomial fields, no longer bit-identical to torch).

Safety: the C source is built only from generated identifiers, fixed op templates and
``repr(float)`` literals; no text of a system (names, user-typed equations) reaches it.
Every traced tensor is unrolled into lane values, one per element of its non-batch shape,
so the state itself, (B, 1) columns, stacks, slices and (B, D, M) matrices translate; ops
outside the whitelist (``roll`` over the state as in Lorenz-96, matmul, reductions, anything
mixing the members of the batch) make :func:`native_stepper` return ``None``; callers then
keep torch.
Every translation is checked against the torch field on random states and parameters
before use.

SDEs (:class:`~explorer.core.system.SDE`): the drift and the diffusion (and, for Milstein
with state-dependent diagonal noise, an analytic ``diffusion_derivative``) are traced the
same way; the step is Euler-Maruyama (diagonal or general noise) or Milstein (diagonal), in
the formulas and order of operations of :mod:`.solvers`. The Wiener increments come from a
counter-based generator, Philox4x32-10 keyed by (seed, step, trajectory, component), with
Box-Muller normals computed by correctly rounded operations only, so that
:func:`philox_normals` (torch) is a bit-exact reference: a seeded run does not depend on
threads, blocks, chunking or batch size, and matches an eager run with the same seed (to
the last bit when the drift and diffusion are arithmetic).

Environment: ``EXPLORER_NATIVE=0`` disables the backend; compiled libraries are cached by
source hash in ``$EXPLORER_CACHE/native`` (default ``~/.cache/dynamics-explorer/native``),
written atomically, so concurrent processes may share the directory.

Public API: :func:`available`, :func:`native_stepper`, :class:`NativeStepper`,
:class:`Unsupported`, :func:`refusal`; the noise: :func:`philox4x32`, :func:`philox_normals`,
:func:`counter_normals`.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .system import SDE, DynamicalSystem

log = logging.getLogger(__name__)
aten = torch.ops.aten

__all__ = ["available", "native_stepper", "native_function", "NativeStepper", "Unsupported", "cache_dir",
           "SOLVERS", "SDE_SOLVERS", "refusal", "philox4x32", "philox_normals",
           "counter_normals", "normals_per_block"]

SOLVERS = ("rk4", "euler", "map", "euler_maruyama", "milstein")
"""The fixed-step schemes the native backend implements (formulas of :mod:`.solvers`)."""
SDE_SOLVERS = ("euler_maruyama", "milstein")

_ABI = 3                      # bump when the generated C interface changes
_STREAM_BYTES = 4 << 20       # records larger than this bypass the cache (streaming stores)
_COMPILER = "gcc"
_BASE_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off",
               "-fopenmp", "-shared", "-fPIC", "-std=gnu11", "-w"]
_COMPILE_TIMEOUT_S = 120
_TRACE_BATCH = 13             # batch size of the trace (distinct from any dimension)
_BLOCK = {torch.float32: 64, torch.float64: 32}   # lanes per block (4 AVX-512 vectors)
_DTYPES = {torch.float32: ("float", "f"), torch.float64: ("double", "")}
_MAX_STEPPERS = 128


class Unsupported(Exception):
    """The field uses something the C translation does not handle; use torch."""


# ============================================================================ environment
_env_lock = threading.Lock()
_env: dict[str, Any] = {}


def _private(d: Path) -> bool:
    """``d`` is ours and nobody else can write to it (libraries are loaded from there)."""
    try:
        st = d.stat()
    except OSError:
        return False
    uid = os.getuid() if hasattr(os, "getuid") else None
    return (uid is None or st.st_uid == uid) and not (st.st_mode & 0o022) and os.access(d, os.W_OK)


def cache_dir() -> Path:
    """Directory of the compiled libraries: ``$EXPLORER_CACHE/native``, else
    ``~/.cache/dynamics-explorer/native``. It must belong to this user and not be group- or
    world-writable (shared libraries are loaded from it); otherwise a private temporary
    directory is used for this process."""
    root = os.environ.get("EXPLORER_CACHE")
    d = Path(root) / "native" if root else Path.home() / ".cache" / "dynamics-explorer" / "native"
    try:
        if not d.exists():
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _private(d):
            return d
        log.debug("native cache %s is not private to this user; using a temporary one", d)
    except OSError:
        pass
    with _env_lock:
        if "tmp_cache" not in _env:
            _env["tmp_cache"] = Path(tempfile.mkdtemp(prefix="explorer-native-"))
    return _env["tmp_cache"]


def _machine_id() -> str:
    """What ``-march=native`` depends on: the CPU model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        keep = [ln for ln in text.splitlines()
                if ln.split(":")[0].strip() in ("model name", "flags", "vendor_id")]
        return "\n".join(sorted(set(keep)))
    except OSError:
        import platform
        return platform.machine() + platform.processor()


_PROBE = r"""
#include <math.h>
#include <stdint.h>
%(decl)s
int64_t explorer_probe(double *x, int64_t n) {
  #pragma omp parallel for if(n > 1000000)
  for (int64_t i = 0; i < n; i++) x[i] = sin(x[i]) + exp(x[i]);
  return n;
}
"""
_MVEC_DECL = ("__attribute__((simd(\"notinbranch\"), const, nothrow)) extern double sin(double);\n"
              "__attribute__((simd(\"notinbranch\"), const, nothrow)) extern double exp(double);")


def _probe(extra_decl: str, libs: list[str]) -> bool:
    src = _PROBE % {"decl": extra_decl}
    with tempfile.TemporaryDirectory(prefix="explorer-probe-") as tmp:
        so = os.path.join(tmp, "probe.so")
        try:
            r = subprocess.run([_COMPILER, *_BASE_FLAGS, "-x", "c", "-", "-o", so, "-lm", *libs],
                               input=src, capture_output=True, text=True,
                               timeout=_COMPILE_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as e:
            log.debug("native probe: %s", e)
            return False
        if r.returncode != 0:
            log.debug("native probe failed: %s", r.stderr.strip()[-500:])
            return False
        try:
            lib = ctypes.CDLL(so)
            fn = lib.explorer_probe
            fn.restype = ctypes.c_int64
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int64]
            buf = (ctypes.c_double * 4)(0.0, 0.5, 1.0, 2.0)
            if fn(buf, 4) != 4 or abs(buf[2] - (math.sin(1.0) + math.exp(1.0))) > 1e-12:
                return False
        except OSError as e:
            log.debug("native probe load failed: %s", e)
            return False
    return True


def _environment() -> dict[str, Any]:
    """Probe the compiler once: ``{"ok", "mvec", "version", "machine", "reason"}``."""
    with _env_lock:
        if "ok" in _env:
            return _env
        ok, reason, version, mvec = False, "", "", False
        if os.environ.get("EXPLORER_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            reason = "disabled by EXPLORER_NATIVE=0"
        elif shutil.which(_COMPILER) is None:
            reason = f"{_COMPILER} not found"
        else:
            try:
                version = subprocess.run([_COMPILER, "--version"], capture_output=True, text=True,
                                         timeout=30).stdout.splitlines()[0]
            except (OSError, subprocess.SubprocessError, IndexError) as e:
                reason = f"{_COMPILER} --version failed: {e}"
            else:
                mvec = _probe(_MVEC_DECL, ["-fno-builtin-sin", "-fno-builtin-exp", "-lmvec"])
                ok = mvec or _probe("", [])
                reason = "" if ok else "test compile failed"
        _env.update(ok=ok, reason=reason, version=version, mvec=mvec, machine=_machine_id())
        if not ok:
            log.debug("native backend unavailable: %s", reason)
        return _env


def available() -> bool:
    """True when gcc is present and a test compile (with OpenMP) works here.

    ``EXPLORER_NATIVE=0`` disables the backend. The probe runs once per process."""
    if os.environ.get("EXPLORER_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return bool(_environment()["ok"])


# ============================================================================ the trace -> IR
@dataclass(frozen=True)
class _Ref:
    """An operand: ``kind`` is ``"x"`` (state component), ``"p"`` (float parameter), ``"t"``
    (temporary), ``"c"`` (constant); ``typ`` is ``"r"`` (real) or ``"b"`` (bool)."""

    kind: str
    val: Any
    typ: str = "r"


class _Arr:
    """A traced tensor as lane values: ``v`` is an object array of :class:`_Ref` of the
    tensor's shape without the batch axis (C order); ``batched``: the tensor has the leading
    batch axis (else it is the same for every member of the batch)."""

    __slots__ = ("batched", "v")

    def __init__(self, v: np.ndarray, batched: bool):
        self.v, self.batched = v, bool(batched)


def _objs(items, shape=None) -> np.ndarray:
    """An object array of lane values (never letting numpy look inside them)."""
    items = list(items)
    a = np.empty(len(items), dtype=object)
    for i, r in enumerate(items):
        a[i] = r
    return a if shape is None else a.reshape(shape)


def _take(v: np.ndarray, i, ax: int) -> np.ndarray:
    """``np.take`` that keeps a 0-d result an array."""
    return np.array(np.take(v, i, axis=ax), dtype=object) if v.ndim == 1 else np.take(v, i, axis=ax)


_MAX_ITEMS = 4096             # elements of one traced tensor (unrolled into lane values)


@dataclass
class _Instr:
    op: str
    args: tuple
    typ: str


class _IR:
    """Straight-line program on one lane: ``instrs`` (temporaries ``t0, t1, ...``) and the
    ``D`` output operands."""

    def __init__(self, dim: int, n_params: int):
        self.dim = dim
        self.n_params = n_params
        self.instrs: list[_Instr] = []
        self.outputs: list[_Ref] = []

    def add(self, op: str, args, typ: str = "r") -> _Ref:
        self.instrs.append(_Instr(op, tuple(args), typ))
        return _Ref("t", len(self.instrs) - 1, typ)

    def live(self, outputs: list[_Ref] | None = None) -> set[int]:
        """The temporaries that ``outputs`` (default :attr:`outputs`) depend on."""
        seen: set[int] = set()
        todo = [r.val for r in (self.outputs if outputs is None else outputs) if r.kind == "t"]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(a.val for a in self.instrs[i].args if a.kind == "t")
        return seen


def _const(v) -> _Ref:
    if isinstance(v, bool):
        return _Ref("c", 1.0 if v else 0.0, "b")
    if isinstance(v, (int, float)):
        return _Ref("c", float(v), "r")
    raise Unsupported(f"constant of type {type(v).__name__}")


# libm functions of one argument, by aten op; all have vector variants in glibc >= 2.35
_UNARY_FN = {
    aten.sin.default: "sin", aten.cos.default: "cos", aten.tan.default: "tan",
    aten.sinh.default: "sinh", aten.cosh.default: "cosh", aten.tanh.default: "tanh",
    aten.asin.default: "asin", aten.acos.default: "acos", aten.atan.default: "atan",
    aten.asinh.default: "asinh", aten.acosh.default: "acosh", aten.atanh.default: "atanh",
    aten.exp.default: "exp", aten.exp2.default: "exp2", aten.expm1.default: "expm1",
    aten.log.default: "log", aten.log2.default: "log2", aten.log10.default: "log10",
    aten.log1p.default: "log1p", aten.sqrt.default: "sqrt", aten.abs.default: "fabs",
    aten.floor.default: "floor", aten.ceil.default: "ceil", aten.trunc.default: "trunc",
    aten.round.default: "rint", aten.erf.default: "erf", aten.erfc.default: "erfc",
}
_MVEC_FUNCS = {"sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "asinh",
               "acosh", "atanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
               "erf", "erfc", "pow", "atan2", "hypot"}
# other one-argument ops, rendered by template
_UNARY_OP = {
    aten.neg.default: "neg", aten.reciprocal.default: "recip", aten.rsqrt.default: "rsqrt",
    aten.sign.default: "sign", aten.sgn.default: "sign", aten.sigmoid.default: "sigmoid",
    aten.relu.default: "relu", aten.square.default: "sq", aten.frac.default: "frac",
    aten.positive.default: "id",
}
_BOOL_UNARY = {aten.isnan.default: "isnan", aten.isinf.default: "isinf",
               aten.isfinite.default: "isfinite", aten.logical_not.default: "not",
               aten.bitwise_not.default: "not"}
_ARITH = {}
for _name, _sym in (("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/")):
    for _ov in ("Tensor", "Scalar"):
        _ARITH[getattr(getattr(aten, _name), _ov)] = _sym
_CMP = {}
for _name, _sym in (("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"),
                    ("ge", ">=")):
    for _ov in ("Tensor", "Scalar"):
        _CMP[getattr(getattr(aten, _name), _ov)] = _sym
_LOGIC = {aten.logical_and.default: "&", aten.logical_or.default: "|",
          aten.logical_xor.default: "^", aten.bitwise_and.Tensor: "&",
          aten.bitwise_or.Tensor: "|", aten.bitwise_xor.Tensor: "^"}
_BINARY = {
    aten.atan2.default: "fn2:atan2", aten.hypot.default: "fn2:hypot",
    aten.fmin.default: "fn2:fmin", aten.fmax.default: "fn2:fmax",
    aten.copysign.Tensor: "fn2:copysign", aten.copysign.Scalar: "fn2:copysign",
    aten.fmod.Tensor: "fn2:fmod", aten.fmod.Scalar: "fn2:fmod",
    aten.remainder.Tensor: "rem", aten.remainder.Scalar: "rem",
    aten.minimum.default: "min", aten.maximum.default: "max",
}
# shape plumbing: the same values, another shape (the batch axis must stay leading)
_IDENT = {aten.clone.default, aten.alias.default, aten.detach.default,
          aten.lift_fresh_copy.default, aten.lift_fresh.default, aten.contiguous.default,
          aten.resolve_conj.default, aten.resolve_neg.default}
_RESHAPE = {aten.unsqueeze.default, aten.view.default, aten._unsafe_view.default,
            aten.reshape.default, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims,
            aten.view_as.default, aten.reshape_as.default, aten.flatten.using_ints,
            aten.unflatten.int}
_EXPAND = {aten.expand.default, aten.expand_as.default, aten.broadcast_to.default}
_SPLIT = {aten.split.Tensor, aten.split_with_sizes.default, aten.unsafe_split.Tensor,
          aten.unsafe_split_with_sizes.default, aten.chunk.default}
_CONVERT = {aten._to_copy.default, aten.to.dtype, aten.to.dtype_layout, aten.type_as.default,
            aten.to.device, aten.to.other}
_LIKE = {aten.zeros_like.default: 0.0, aten.ones_like.default: 1.0, aten.new_zeros.default: 0.0,
         aten.new_ones.default: 1.0, aten.zeros.default: 0.0, aten.ones.default: 1.0}
_FULL = {aten.full_like.default: 1, aten.new_full.default: 2, aten.full.default: 1,
         aten.fill.Scalar: 1}


class _Recorder(TorchDispatchMode):
    """Records every aten op (with its real inputs and outputs) run under it."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's handler in dynamo.disable, whose first use imports
        # torch._dynamo (~1.5 s); this handler never runs under dynamo
        return False

    def __init__(self):
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))
        return out


def _typ_of(func, out) -> str:
    if not isinstance(out, torch.Tensor) or out.dtype.is_floating_point:
        return "r"
    if out.dtype == torch.bool:
        return "b"
    raise Unsupported(f"{func} yields {out.dtype}")


def _tensors_in(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors_in(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors_in(o)]
    return []


def _lane_op(ir: _IR, f, args, kw, typ: str) -> _Ref:
    """One element of an elementwise op: ``args``/``kw`` hold :class:`_Ref` lane values where
    the op had tensors, and its other arguments (numbers, None, options) as they were."""

    def lane(a) -> _Ref:
        if isinstance(a, _Ref):
            return a
        if isinstance(a, (bool, int, float)):
            return _const(a)
        raise Unsupported(f"operand of type {type(a).__name__}")

    def real(r: _Ref) -> _Ref:
        return r if r.typ == "r" else (ir.add("b2r", (r,)) if r.kind != "c" else _Ref("c", r.val))

    def boolean(r: _Ref) -> _Ref:
        return r if r.typ == "b" else ir.add("r2b", (r,), "b")

    if f in _CONVERT:
        src = lane(args[0])
        return real(src) if typ == "r" else boolean(src)
    if f in _ARITH:
        a, b = real(lane(args[0])), real(lane(args[1]))
        alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
        if kw.get("rounding_mode") is not None:
            raise Unsupported("div with a rounding mode")
        if alpha != 1:
            b = ir.add("*", (_const(alpha), b))
        return ir.add(_ARITH[f], (a, b))
    if f in (aten.div.Tensor_mode, aten.div.Scalar_mode):
        if kw.get("rounding_mode") != "trunc":
            raise Unsupported("div with floor rounding")
        return ir.add("fn:trunc", (ir.add("/", (real(lane(args[0])), real(lane(args[1])))),))
    if f in (aten.rsub.Scalar, aten.rsub.Tensor):
        a, b = real(lane(args[0])), real(lane(args[1]))
        alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
        if alpha != 1:
            a = ir.add("*", (_const(alpha), a))
        return ir.add("-", (b, a))
    if f in _UNARY_FN:
        return ir.add("fn:" + _UNARY_FN[f], (real(lane(args[0])),))
    if f in _UNARY_OP:
        return ir.add(_UNARY_OP[f], (real(lane(args[0])),))
    if f in _BOOL_UNARY:
        op = _BOOL_UNARY[f]
        a = lane(args[0])
        return ir.add(op, (boolean(a) if op == "not" else real(a),), "b")
    if f in _CMP:
        return ir.add(_CMP[f], (real(lane(args[0])), real(lane(args[1]))), "b")
    if f in _LOGIC:
        a, b = lane(args[0]), lane(args[1])
        if "bitwise" in str(f) and not (a.typ == "b" and b.typ == "b"):
            raise Unsupported("bitwise op on non-bool values")
        return ir.add(_LOGIC[f], (boolean(a), boolean(b)), "b")
    if f in _BINARY:
        return ir.add(_BINARY[f], (real(lane(args[0])), real(lane(args[1]))))
    if f in (aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar):
        return _pow(ir, real(lane(args[0])), real(lane(args[1])))
    if f in (aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar):
        c = boolean(lane(args[0]))
        a, b = lane(args[1]), lane(args[2])
        a, b = (real(a), real(b)) if typ == "r" else (boolean(a), boolean(b))
        return ir.add("where", (c, a, b), typ)
    if f in (aten.masked_fill.Scalar, aten.masked_fill.Tensor):
        xv, m, fill = real(lane(args[0])), boolean(lane(args[1])), real(lane(args[2]))
        return ir.add("where", (m, fill, xv))
    if f in (aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default,
             aten.clamp_max.default, aten.clamp_min.Tensor, aten.clamp_max.Tensor):
        v = real(lane(args[0]))
        if f in (aten.clamp.default, aten.clamp.Tensor):
            lo = args[1] if len(args) > 1 else kw.get("min")
            hi = args[2] if len(args) > 2 else kw.get("max")
        elif f in (aten.clamp_min.default, aten.clamp_min.Tensor):
            lo, hi = args[1], None
        else:
            lo, hi = None, args[1]
        if lo is not None:
            v = ir.add("clamplo", (v, real(lane(lo))))
        if hi is not None:
            v = ir.add("clamphi", (v, real(lane(hi))))
        return v
    if f is aten.heaviside.default:
        return ir.add("heaviside", (real(lane(args[0])), real(lane(args[1]))))
    if f in (aten.lerp.Scalar, aten.lerp.Tensor):
        a, b, w = (real(lane(t)) for t in args[:3])
        return ir.add("+", (a, ir.add("*", (w, ir.add("-", (b, a))))))
    raise Unsupported(f"op {f} is not in the native whitelist")


def _dim_arg(args, kw, pos: int, default=0):
    return args[pos] if len(args) > pos else kw.get("dim", default)


def _translate(ops: list[tuple], x: torch.Tensor, params: list[torch.Tensor], result,
               batch: int, out_shape: tuple[int, ...]) -> _IR:
    """Turn the recorded ops of ``fn(x (batch, D), *params)`` into a lane program whose
    outputs are the result broadcast to ``(batch, *out_shape)``, in C order.

    Every traced tensor is held as lane values, one per element of its shape without the
    batch axis (:class:`_Arr`): the state is the D values ``x0 .. x{D-1}``, a parameter one
    value, a (B, D, M) diffusion matrix D*M values. Elementwise ops broadcast as torch does
    and are applied element by element; shape ops (unbind, select, slice, stack, cat,
    reshape, expand, transpose...) only move values. Tensors are identified by ``id`` (all of
    them are kept alive by ``ops``). A tensor not derived from ``x`` or the parameters is a
    constant when its elements are equal over the batch (factories, ``torch.tensor(c)``,
    folded constant expressions); every op that touches a derived tensor must be in the
    whitelist, and no op may mix the members of the batch (reductions, ``roll``, matmul
    over the batch axis...).
    """
    D = x.shape[-1]
    ir = _IR(D, len(params))
    # a (batch, D) state; or one (D,) state (``batch`` then matches no tensor's shape)
    env: dict[int, _Arr] = {id(x): _Arr(_objs(_Ref("x", d) for d in range(D)), x.ndim == 2)}
    for k, t in enumerate(params):
        env[id(t)] = _Arr(_objs([_Ref("p", k)], ()), False)

    def tracked(obj) -> bool:
        return any(id(t) in env for t in _tensors_in(obj))

    def layout(t: torch.Tensor) -> tuple[bool, tuple]:
        if not isinstance(t, torch.Tensor):
            raise Unsupported(f"a result of type {type(t).__name__}")
        if t.is_complex():
            raise Unsupported("complex tensors")
        batched = t.ndim >= 1 and t.shape[0] == batch
        shape = tuple(t.shape[1:]) if batched else tuple(t.shape)
        if math.prod(shape) > _MAX_ITEMS:
            raise Unsupported(f"a tensor of shape {tuple(t.shape)} (too large to unroll)")
        return batched, shape

    def const_arr(t: torch.Tensor) -> _Arr:
        batched, shape = layout(t)
        if t.numel() == 0:
            raise Unsupported("an empty constant tensor")
        flat = t.detach().reshape(batch if batched else 1, -1)
        if batched and flat.shape[0] > 1:
            same = flat == flat[:1]
            if flat.dtype.is_floating_point:
                same |= flat.isnan() & flat[:1].isnan()
            if not bool(same.all()):
                raise Unsupported("a constant tensor that varies over the batch")
        row = flat[0].tolist()
        if t.dtype == torch.bool:
            items = [_Ref("c", 1.0 if v else 0.0, "b") for v in row]
        else:
            items = [_const(float(v)) for v in row]
        return _Arr(_objs(items, shape), batched)

    def arr(a) -> _Arr:
        if isinstance(a, torch.Tensor):
            v = env.get(id(a))
            return v if v is not None else const_arr(a)
        if isinstance(a, (bool, int, float)):
            return _Arr(_objs([_const(a)], ()), False)
        raise Unsupported(f"operand of type {type(a).__name__}")

    def expand(a: _Arr, batched: bool, shape: tuple) -> np.ndarray:
        """``a``'s lane values for every element of a (batched?, shape) tensor (torch's
        broadcasting, the batch axis leading in both)."""
        rank_a, rank_o = a.v.ndim + a.batched, len(shape) + batched
        v = a.v
        if a.batched:
            if not batched or rank_a != rank_o:
                raise Unsupported("an op that moves or drops the batch axis")
        elif batched and rank_a == rank_o:           # a's first axis meets the batch axis
            if v.shape[0] != 1:
                raise Unsupported("an op that mixes the members of the batch")
            v = v[0]
        try:
            return np.broadcast_to(v, shape)
        except ValueError as e:
            raise Unsupported(f"shapes that do not broadcast ({v.shape} to {shape})") from e

    def axis(a: _Arr, d: int) -> int:
        """The axis of ``a.v`` that tensor dimension ``d`` is (never the batch axis)."""
        rank = a.v.ndim + a.batched
        if not -rank <= d < rank:
            raise Unsupported("a dimension out of range")
        d %= rank
        if a.batched:
            if d == 0:
                raise Unsupported("an op along the batch axis")
            d -= 1
        return d

    for f, args, kw, out in ops:
        if not tracked((args, kw)):
            continue                 # a constant computation: its results are read as values
        if f in (aten.copy_.default, aten.fill_.Scalar, aten.fill_.Tensor):
            _assign(env, arr, layout, expand, args, batch)      # X[i] = ..., X[2:] = ...
            continue
        if f in _INPLACE:            # h += ...: the functional op, then h holds its result
            target = args[0]
            if id(target) not in env or target._base is not None or id(target) == id(x) \
                    or any(id(target) == id(t) for t in params):
                raise Unsupported(f"{f} on a view, an input or a constant")
            f = _INPLACE[f]
        # ------------------------------------------------ ops that only move values
        if f is aten.unbind.int:
            a = arr(args[0])
            ax = axis(a, _dim_arg(args, kw, 1))
            for i, t in enumerate(out):
                env[id(t)] = _Arr(_take(a.v, i, ax), a.batched)
            continue
        if f in _SPLIT:
            a = arr(args[0])
            ax = axis(a, _dim_arg(args, kw, 2))
            i0 = 0
            for t in out:
                n = t.shape[ax + a.batched]
                env[id(t)] = _Arr(np.take(a.v, range(i0, i0 + n), axis=ax), a.batched)
                i0 += n
            continue
        if f is aten.select.int:
            a = arr(args[0])
            ax = axis(a, args[1])
            env[id(out)] = _Arr(_take(a.v, args[2], ax), a.batched)
            continue
        if f is aten.slice.Tensor:
            a = arr(args[0])
            ax = axis(a, _dim_arg(args, kw, 1))
            start = args[2] if len(args) > 2 else kw.get("start")
            end = args[3] if len(args) > 3 else kw.get("end")
            step = args[4] if len(args) > 4 else kw.get("step", 1)
            idx = (slice(None),) * ax + (slice(start, end, step),)
            env[id(out)] = _Arr(a.v[idx], a.batched)
            continue
        batched, shape = layout(out)
        if f in _SUM:                     # along axes within a trajectory's values only
            a = arr(args[0])
            dims = args[1] if len(args) > 1 else kw.get("dim")
            if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
                if a.batched:
                    raise Unsupported(f"{f} over the batch axis")
                dims = list(range(a.v.ndim))
            dims = [dims] if isinstance(dims, int) else list(dims)
            axes = sorted({axis(a, d) for d in dims})
            v = np.moveaxis(a.v, axes, list(range(a.v.ndim - len(axes), a.v.ndim)))
            n = math.prod(v.shape[a.v.ndim - len(axes):])
            v = v.reshape(v.shape[:a.v.ndim - len(axes)] + (n,))
            res = np.empty(v.shape[:-1], dtype=object)
            for idx in np.ndindex(*res.shape):
                acc = _lane_sum(ir, list(v[idx]), _REDUCE_OP.get(f, "+"))
                res[idx] = ir.add("/", (acc, _const(float(n)))) if f in _MEAN else acc
            env[id(out)] = _Arr(res.reshape(shape), batched)
            continue
        if f in (aten.dot.default, aten.mv.default, aten.mm.default):
            a, b = arr(args[0]), arr(args[1])
            if a.batched or b.batched:
                raise Unsupported(f"{f} with a batched operand")
            av = a.v.reshape(1, -1) if a.v.ndim == 1 else a.v          # (m, k)
            bv = b.v.reshape(-1, 1) if b.v.ndim == 1 else b.v          # (k, n)
            res = np.empty((av.shape[0], bv.shape[1]), dtype=object)
            for i in range(av.shape[0]):
                for j in range(bv.shape[1]):
                    res[i, j] = _lane_sum(ir, [ir.add("*", (av[i, m], bv[m, j]))
                                               for m in range(av.shape[1])])
            env[id(out)] = _Arr(res.reshape(shape), False)
            continue
        if f in (aten.stack.default, aten.cat.default):
            rank = len(shape) + batched
            d = _dim_arg(args, kw, 1)
            if not -rank <= d < rank:
                raise Unsupported("a dimension out of range")
            d %= rank
            if batched and d == 0:
                raise Unsupported(f"{f} along the batch axis")
            ax = d - batched
            if f is aten.stack.default:
                part = shape[:ax] + shape[ax + 1:]
                parts = [expand(arr(t), batched, part) for t in args[0]]
                v = np.stack(parts, axis=ax)
            else:
                parts = []
                for t in args[0]:
                    if not isinstance(t, torch.Tensor) or (t.ndim == 1 and t.shape[0] == 0):
                        continue
                    parts.append(expand(arr(t), batched,
                                        shape[:ax] + (t.shape[d],) + shape[ax + 1:]))
                v = np.concatenate(parts, axis=ax)
            env[id(out)] = _Arr(v, batched)
            continue
        if f in _IDENT or f in _RESHAPE:
            a = arr(args[0])
            if a.batched != batched or a.v.size != math.prod(shape):
                raise Unsupported(f"{f} across the batch axis")
            env[id(out)] = _Arr(a.v.reshape(shape), batched)
            continue
        if f in _EXPAND:
            env[id(out)] = _Arr(expand(arr(args[0]), batched, shape), batched)
            continue
        if f in (aten.transpose.int, aten.permute.default, aten.t.default):
            a = arr(args[0])
            rank = a.v.ndim + a.batched
            if f is aten.permute.default:
                dims = [int(d) % rank for d in args[1]]
            else:
                d0, d1 = (args[1], args[2]) if f is aten.transpose.int else (0, 1)
                dims = list(range(rank))
                if rank >= 2:
                    d0, d1 = d0 % rank, d1 % rank
                    dims[d0], dims[d1] = dims[d1], dims[d0]
            if a.batched:
                if dims[0] != 0:
                    raise Unsupported("a transpose that moves the batch axis")
                dims = [d - 1 for d in dims[1:]]
            env[id(out)] = _Arr(np.transpose(a.v, dims), a.batched)
            continue
        # ------------------------------------------------ elementwise ops
        typ = _typ_of(f, out)
        if f in _LIKE:
            env[id(out)] = _Arr(np.broadcast_to(_objs([_Ref("c", _LIKE[f], typ)], ()), shape),
                                batched)
            continue
        if f in _FULL:
            fill = args[_FULL[f]]
            r = _const(fill) if typ == "r" else _Ref("c", float(bool(fill)), "b")
            env[id(out)] = _Arr(np.broadcast_to(_objs([r], ()), shape), batched)
            continue
        pos = [0] if f in _CONVERT else [i for i, a in enumerate(args)
                                         if isinstance(a, torch.Tensor)]
        keys = [] if f in _CONVERT else [k for k, a in kw.items() if isinstance(a, torch.Tensor)]
        if any(isinstance(a, (list, tuple)) and _tensors_in(a) for a in args):
            raise Unsupported(f"op {f} is not in the native whitelist")
        vals = {i: expand(arr(args[i]), batched, shape) for i in pos}
        kvals = {k: expand(arr(kw[k]), batched, shape) for k in keys}
        res = np.empty(shape, dtype=object)
        a_i, kw_i = list(args), dict(kw)
        for idx in np.ndindex(*shape):
            for i in pos:
                a_i[i] = vals[i][idx]
            for k in keys:
                kw_i[k] = kvals[k][idx]
            res[idx] = _lane_op(ir, f, a_i, kw_i, typ)
        env[id(out)] = _Arr(res, batched)
    if not isinstance(result, torch.Tensor):
        raise Unsupported(f"the function returns {type(result).__name__}, not a tensor")
    res = env.get(id(result))
    res = res if res is not None else const_arr(result)
    items = expand(res, True, tuple(out_shape))
    outs = []
    for r in items.reshape(-1):
        if r.typ == "b":
            r = ir.add("b2r", (r,)) if r.kind != "c" else _Ref("c", r.val)
        outs.append(r)
    ir.outputs = outs
    return ir


# in-place arithmetic on a temporary (``h2 += ...`` in a field): translated as the functional op
_INPLACE = {aten.add_.Tensor: aten.add.Tensor, aten.add_.Scalar: aten.add.Scalar,
            aten.sub_.Tensor: aten.sub.Tensor, aten.sub_.Scalar: aten.sub.Scalar,
            aten.mul_.Tensor: aten.mul.Tensor, aten.mul_.Scalar: aten.mul.Scalar,
            aten.div_.Tensor: aten.div.Tensor, aten.div_.Scalar: aten.div.Scalar}
_SUM = {aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.mean.default,
        aten.amin.default, aten.amax.default}
_MEAN = {aten.mean.dim, aten.mean.default}
_REDUCE_OP = {aten.amin.default: "min", aten.amax.default: "max"}


def _assign(env: dict, arr: Callable, layout: Callable, expand: Callable, args, batch: int) -> None:
    """``dst.copy_(src)`` / ``dst.fill_(v)`` where ``dst`` is a traced tensor or a view of one
    (``out[0] = ...``, ``out[2:-1] = ...``): the written elements of the base tensor get the
    source's lane values; a view's position in its base comes from strides and offsets."""
    dst, src = args[0], args[1]
    if not isinstance(dst, torch.Tensor):
        raise Unsupported("an assignment to a non-tensor")
    base = dst if dst._base is None else dst._base
    if id(base) not in env or not base.is_contiguous():
        raise Unsupported("an assignment into a tensor that is not traced or not contiguous")
    b = env[id(base)]
    d_batched, d_shape = layout(dst)
    vals = expand(arr(src), d_batched, d_shape)
    if base is dst:
        env[id(dst)] = _Arr(np.array(vals, dtype=object).reshape(d_shape), d_batched)
        return
    flat = torch.arange(base.numel()).view(base.shape)
    pos = flat.as_strided(dst.shape, dst.stride(), dst.storage_offset() - base.storage_offset())
    if b.batched:
        inner = math.prod(base.shape[1:])
        rows = torch.arange(batch).view(-1, *([1] * (dst.ndim - 1)))
        if not d_batched or not bool((pos // inner == rows).all()):
            raise Unsupported("an assignment that mixes the members of the batch")
        pos = pos[0] % inner
    new = b.v.copy().reshape(-1)
    for idx in np.ndindex(*d_shape):
        new[int(pos[idx])] = vals[idx]
    env[id(base)] = _Arr(new.reshape(b.v.shape), b.batched)
    env[id(dst)] = _Arr(np.array(vals, dtype=object).reshape(d_shape), d_batched)


def _lane_sum(ir: _IR, items: list, op: str = "+") -> _Ref:
    """``items[0] + items[1] + ...`` left to right (torch's order for a short contiguous sum);
    ``op`` "min"/"max" for the NaN-propagating minimum/maximum."""
    if not items:
        if op != "+":
            raise Unsupported("a minimum or maximum of nothing")
        return _Ref("c", 0.0)
    if any(r.typ != "r" for r in items):
        raise Unsupported("a reduction of booleans")
    acc = items[0]
    for r in items[1:]:
        acc = ir.add(op, (acc, r))
    return acc


def _pow(ir: _IR, a: _Ref, e: _Ref) -> _Ref:
    """``a ** e`` with torch's special cases for constant exponents (same rounding)."""
    if e.kind == "c":
        v = e.val
        if v == 0.0:
            return _Ref("c", 1.0)
        if v == 1.0:
            return a
        if v == 2.0:
            return ir.add("*", (a, a))
        if v == 3.0:
            return ir.add("*", (ir.add("*", (a, a)), a))
        if v == 0.5:
            return ir.add("fn:sqrt", (a,))
        if v == -0.5:
            return ir.add("rsqrt", (a,))
        if v == -1.0:
            return ir.add("recip", (a,))
        if v == -2.0:
            return ir.add("recip", (ir.add("*", (a, a)),))
    if a.kind == "c" and a.val == 1.0:
        return _Ref("c", 1.0)
    return ir.add("fn2:pow", (a, e))


def _trace(template: DynamicalSystem, dtype: torch.dtype, fn: Callable | None = None,
           out_shape: tuple[int, ...] | None = None, single: bool = False
           ) -> tuple[_IR, Callable, list[str]]:
    """Run ``fn(x, p)`` (default ``template.rhs``) once at a small batch under a recorder and
    translate the ops; the result is broadcast to ``(B, *out_shape)`` (default ``(B, D)``).
    ``single``: trace one ``(D,)`` state instead of a batch, for fields that move the batch
    axis (``X = x.movedim(-1, 0)``); valid because each trajectory's field depends on its own
    state only (the system contract).

    Returns the IR, the torch function ``field(x, *pvals)`` and the float parameter names.
    The ops seen are those ``make_fx`` would record (aten level, after autograd)."""
    D = template.dim
    fn = template.rhs if fn is None else fn
    out_shape = (D,) if out_shape is None else tuple(out_shape)
    names = [p.name for p in template.parameters if not p.integer]
    fixed = {p.name: template.params[p.name] for p in template.parameters if p.integer}

    def field(x, *pv):
        return fn(x, {**fixed, **dict(zip(names, pv))})

    avoid = {D, *out_shape}
    B = next(b for b in (_TRACE_BATCH, 17, 19, 23, 29, 31, 37) if b not in avoid)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.no_grad():
        x_ex = (template.initial_state(dtype).expand(B, D)
                + 0.01 * torch.randn(B, D, generator=gen, dtype=dtype)).contiguous()
        if single:
            x_ex, B = x_ex[0].clone(), -1
        p_ex = [torch.tensor(float(template.params[n]), dtype=dtype) for n in names]
        rec = _Recorder()
        try:
            with rec:
                result = field(x_ex, *p_ex)
        except Unsupported:
            raise
        except Exception as e:  # a field that cannot run on this batch
            raise Unsupported(f"the field failed on a test batch: {type(e).__name__}: {e}") from e
        ir = _translate(rec.ops, x_ex, p_ex, result, B, out_shape)
    return ir, field, names


# ============================================================================ C code
def _lit(v: float, real: str) -> str:
    """A C literal for a float (inf and nan included) of type ``real``."""
    v = float(v)
    if math.isnan(v):
        return f"(({real})NAN)"
    if math.isinf(v):
        return f"(({real})INFINITY)" if v > 0 else f"(-({real})INFINITY)"
    return f"(({real})({repr(v)}))"


class _CGen:
    """Renders the lane program in C for one floating type."""

    def __init__(self, ir: _IR, real: str, suffix: str):
        self.ir, self.real, self.sfx = ir, real, suffix

    def fn(self, name: str) -> str:
        return name + self.sfx

    def render(self, op: str, a: list[str]) -> str:
        R = self.real
        one = f"(({R})1)"
        zero = f"(({R})0)"
        if op in ("+", "-", "*", "/"):
            return f"({a[0]} {op} {a[1]})"
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return f"({a[0]} {op} {a[1]})"
        if op in ("&", "|", "^"):
            return f"({a[0]} {op} {a[1]})"
        if op.startswith("fn:"):
            return f"{self.fn(op[3:])}({a[0]})"
        if op.startswith("fn2:"):
            return f"{self.fn(op[4:])}({a[0]}, {a[1]})"
        fmod = f"{self.fn('fmod')}({{0}}, {{1}})"
        templates = {
            "neg": "(-{0})", "id": "({0})", "recip": f"({one} / {{0}})",
            "rsqrt": f"({one} / {self.fn('sqrt')}({{0}}))",
            "sign": f"(({R})(({{0}} > {zero}) - ({{0}} < {zero})))",
            "sigmoid": f"({one} / ({one} + {self.fn('exp')}(-{{0}})))",
            "relu": f"(({{0}} < {zero}) ? {zero} : {{0}})",
            "sq": "({0} * {0})", "frac": f"({{0}} - {self.fn('trunc')}({{0}}))",
            "isnan": "({0} != {0})", "isinf": f"({self.fn('fabs')}({{0}}) == ({R})INFINITY)",
            "isfinite": f"({self.fn('fabs')}({{0}}) <= ({R})FLT_MAX_{R})",
            "not": "(!{0})", "b2r": f"(({R}){{0}})", "r2b": f"({{0}} != {zero})",
            # torch.remainder: fmod, moved to the sign of the divisor
            "rem": (f"({fmod} + ((({fmod} != {zero}) & (({{1}} < {zero}) != ({fmod} < {zero})))"
                    f" ? {{1}} : {zero}))"),
            # NaN-propagating minimum/maximum (both comparisons fail on NaN -> a + b = NaN)
            "min": "(({0} < {1}) ? {0} : (({1} <= {0}) ? {1} : ({0} + {1})))",
            "max": "(({0} > {1}) ? {0} : (({1} >= {0}) ? {1} : ({0} + {1})))",
            "clamplo": "(({0} < {1}) ? {1} : {0})", "clamphi": "(({0} > {1}) ? {1} : {0})",
            "heaviside": f"(({{0}} == {zero}) ? {{1}} : (({R})({{0}} > {zero})))",
            "where": "({0} ? {1} : {2})",
        }
        if op not in templates:
            raise Unsupported(f"no C template for {op}")
        return templates[op].format(*a)

    def operand(self, r: _Ref, xs: list[str], ps: list[str], pre: str) -> str:
        if r.kind == "x":
            return xs[r.val]
        if r.kind == "p":
            return ps[r.val]
        if r.kind == "t":
            return f"{pre}{r.val}"
        if r.typ == "b":
            return "1" if r.val else "0"
        return _lit(r.val, self.real)

    def stage(self, xs: list[str], ps: list[str], outs: list[str], pre: str, ind: str) -> list[str]:
        """C lines computing the field at ``xs`` into the (declared) variables ``outs``."""
        ir = self.ir
        live = ir.live()
        lines = [ind + "{"]
        for i, ins in enumerate(ir.instrs):
            if i not in live:
                continue
            ctype = self.real if ins.typ == "r" else "int"
            expr = self.render(ins.op, [self.operand(a, xs, ps, pre) for a in ins.args])
            lines.append(f"{ind}  const {ctype} {pre}{i} = {expr};")
        for o, r in zip(outs, ir.outputs):
            lines.append(f"{ind}  {o} = {self.operand(r, xs, ps, pre)};")
        lines.append(ind + "}")
        return lines


def _c_prelude(real: str, sfx: str, D: int, P: int, irs: list[_IR], mvec: bool,
               dtype: torch.dtype) -> list[str]:
    W = _BLOCK[dtype]
    L = ["#include <math.h>", "#include <float.h>", "#include <stdint.h>",
         "#if defined(__AVX512F__) || defined(__AVX__)", "#include <immintrin.h>", "#endif", "",
         f"typedef {real} real;", "#define FLT_MAX_float FLT_MAX", "#define FLT_MAX_double DBL_MAX",
         f"#define W {W}", f"#define VEC {64 // (4 if real == 'float' else 8)}",
         f"#define D {D}", f"#define NP {max(P, 1)}", ""]
    if mvec:
        for name in _mvec_names(irs):
            sig = ", ".join([real] * (2 if name in ("pow", "atan2", "hypot") else 1))
            L.append(f'__attribute__((simd("notinbranch"), const, nothrow)) '
                     f'extern {real} {name}{sfx}({sig});')
        L.append("")
    return L


def _c_aos_function(name: str, g: _CGen, D: int, P: int, n_out: int) -> list[str]:
    """``name(xin (B, D), B, pp, pstride, fout (B, n_out))``: the program on an AoS batch
    (verification)."""
    xs = [f"x{d}" for d in range(D)]
    ps = [f"p{k}" for k in range(P)]
    L = [f"void {name}(const real *restrict xin, int64_t B, const real *const *pp,",
         "                    const int64_t *pstride, real *restrict fout) {",
         "  for (int64_t i = 0; i < B; i++) {"]
    L += [f"    const real x{d} = xin[i * D + {d}];" for d in range(D)]
    L += [f"    const real p{k} = pp[{k}][i * pstride[{k}]];" for k in range(P)]
    L += [f"    real f{d};" for d in range(n_out)]
    L += g.stage(xs, ps, [f"f{d}" for d in range(n_out)], "a", "    ")
    L += [f"    fout[i * {n_out} + {d}] = f{d};" for d in range(n_out)]
    L += ["  }", "}", ""]
    return L


def _c_mask(g: _CGen, D: int, bound: float) -> list[str]:
    """The divergence mask of simulate._make_chunk: ``n0..`` is the new state of lane j."""
    blit = _lit(bound, g.real)
    L = ["    int32_t good = OK[j];"]
    L += [f"    good = good & ({g.fn('fabs')}(n{d}) <= {blit});" for d in range(D)]
    L += [f"    S[{d}][j] = good ? n{d} : x{d};" for d in range(D)]
    L += ["    NK[j] += good;", "    OK[j] = good;", "  }", "}", ""]
    return L


def _c_store_row(real: str) -> list[str]:
    """Recording a row of a block: streaming stores for large outputs (no read for
    ownership, no cache pollution), plain stores otherwise."""
    sx = "ps" if real == "float" else "pd"
    return ["static inline void store_row(real *restrict o, const real *restrict s, int nb,",
            "                             int stream) {",
            "#if defined(__AVX512F__)",
            "  if (stream && nb == W && ((uintptr_t)o & 63) == 0) {",
            f"    for (int j = 0; j < W; j += VEC) _mm512_stream_{sx}(o + j, _mm512_load_{sx}(s + j));",
            "    return;",
            "  }",
            "#elif defined(__AVX__)",
            "  if (stream && nb == W && ((uintptr_t)o & 31) == 0) {",
            f"    for (int j = 0; j < W; j += VEC / 2) _mm256_stream_{sx}(o + j, _mm256_load_{sx}(s + j));",
            "    return;",
            "  }",
            "#endif",
            "  for (int j = 0; j < nb; j++) o[j] = s[j];",
            "}", ""]


def _c_driver(name: str, extra_args: str, setup: list[str], block_setup: list[str],
              step: str, P: int) -> list[str]:
    """The entry point: blocks of W lanes spread over OpenMP threads, each advanced through
    all its steps with its states on the stack; ``step`` is the C statement of one step."""
    return [
        f"int64_t explorer_abi(void) {{ return {_ABI}; }}", "",
        f"int {name}(real *restrict xio, int64_t B, const real *const *pp,",
        "                 const int64_t *pstride, double dt, int64_t n_steps, int64_t every,",
        "                 real *restrict out, uint8_t *restrict ok, int32_t *restrict n_ok,",
        f"                 int nthreads, int stream{extra_args}) {{",
        "  if (B <= 0 || n_steps < 0 || every < 1) return B < 0 || n_steps < 0 || every < 1;",
        "  const int64_t nblk = (B + W - 1) / W;",
        "  const int64_t n_rec = n_steps / every, tail = n_steps - n_rec * every;",
        "  const real h = (real)dt, h2 = (real)(0.5 * dt), h6 = (real)(dt / 6.0);",
        *setup,
        "  if (nthreads < 1) nthreads = 1;",
        "  if (nthreads > nblk) nthreads = (int)nblk;",
        "  #pragma omp parallel for num_threads(nthreads) schedule(dynamic) if(nthreads > 1)",
        "  for (int64_t b = 0; b < nblk; b++) {",
        "    const int64_t i0 = b * W;",
        "    const int nb = (int)((B - i0) < W ? (B - i0) : W);",
        "    const int nw = (nb + VEC - 1) / VEC * VEC;   /* lanes computed: whole vectors */",
        *block_setup,
        "    real S[D][W] __attribute__((aligned(64)));",
        "    real PV[NP][W] __attribute__((aligned(64)));",
        "    int32_t OK[W] __attribute__((aligned(64))), NK[W] __attribute__((aligned(64)));",
        "    for (int j = 0; j < W; j++) {",
        "      const int64_t src = i0 + (j < nb ? j : 0);   /* padding lanes copy lane 0, masked */",
        "      for (int d = 0; d < D; d++) S[d][j] = xio[src * D + d];",
        f"      for (int k = 0; k < {P}; k++) PV[k][j] = pp[k][src * pstride[k]];",
        "      OK[j] = j < nb ? (ok[src] != 0) : 0;",
        "      NK[j] = j < nb ? n_ok[src] : 0;",
        "    }",
        "    for (int64_t r = 0; r < n_rec; r++) {",
        f"      for (int64_t s = 0; s < every; s++) {step}",
        "      real *o = out + (r * D) * B + i0;",
        "      for (int d = 0; d < D; d++) store_row(o + d * B, S[d], nb, stream);",
        "    }",
        "#if defined(__AVX__)",
        "    if (stream) _mm_sfence();                     /* order the streamed records */",
        "#endif",
        f"    for (int64_t s = 0; s < tail; s++) {step}",
        "    for (int j = 0; j < nb; j++) {",
        "      for (int d = 0; d < D; d++) xio[(i0 + j) * D + d] = S[d][j];",
        "      ok[i0 + j] = (uint8_t)OK[j];",
        "      n_ok[i0 + j] = NK[j];",
        "    }",
        "  }",
        "  return 0;",
        "}", ""]


#: live instructions above which an RK4 step calls one outlined stage function four times
#: instead of inlining the field four times: gcc's time grows with the source, and a
#: 6-dimensional variational field (the state, a 6 x 6 Jacobian and 36 tangent components)
#: took 12 s to compile inlined; the extra loads and stores cost little next to such a field
_INLINE_STAGES_MAX = 200


_BLOCK_STEP_HEAD = [
    "static inline __attribute__((always_inline)) void",
    "block_step(real (*restrict S)[W], real (*restrict PV)[W], int32_t *restrict OK,",
    "           int32_t *restrict NK, const real h, const real h2, const real h6,",
    "           const int nw) {"]


def _c_rk4_outlined(g: "_CGen", D: int, P: int) -> list[str]:
    """The start of ``block_step`` for RK4 with the field in one (not inlined) function over
    a block, ``K = f(Y)`` for the W lanes, called for the four stages, up to the lane loop
    that combines the stages (the same operations in the same order as the inlined step, so
    the results are the same bits)."""
    L = ["static __attribute__((noinline)) void",
         "field_block(const real (*restrict Y)[W], const real (*restrict PV)[W],",
         "            real (*restrict K)[W], const int nw) {",
         "  #pragma omp simd",
         "  for (int j = 0; j < nw; j++) {"]
    L += [f"    const real y{d} = Y[{d}][j];" for d in range(D)]
    L += [f"    const real p{k} = PV[{k}][j];" for k in range(P)]
    L += [f"    real k{d};" for d in range(D)]
    L += g.stage([f"y{d}" for d in range(D)], [f"p{k}" for k in range(P)],
                 [f"k{d}" for d in range(D)], "a", "    ")
    L += [f"    K[{d}][j] = k{d};" for d in range(D)]
    L += ["  }", "}", ""] + _BLOCK_STEP_HEAD + [
          "  real K1[D][W] __attribute__((aligned(64))), K2[D][W] __attribute__((aligned(64)));",
          "  real K3[D][W] __attribute__((aligned(64))), K4[D][W] __attribute__((aligned(64)));",
          "  real Y[D][W] __attribute__((aligned(64)));",
          "  field_block((const real (*)[W])S, (const real (*)[W])PV, K1, nw);",
          "  for (int d = 0; d < D; d++) for (int j = 0; j < nw; j++) Y[d][j] = S[d][j] + h2 * K1[d][j];",
          "  field_block((const real (*)[W])Y, (const real (*)[W])PV, K2, nw);",
          "  for (int d = 0; d < D; d++) for (int j = 0; j < nw; j++) Y[d][j] = S[d][j] + h2 * K2[d][j];",
          "  field_block((const real (*)[W])Y, (const real (*)[W])PV, K3, nw);",
          "  for (int d = 0; d < D; d++) for (int j = 0; j < nw; j++) Y[d][j] = S[d][j] + h * K3[d][j];",
          "  field_block((const real (*)[W])Y, (const real (*)[W])PV, K4, nw);",
          "  #pragma omp simd",
          "  for (int j = 0; j < nw; j++) {"]
    return L


def _c_source(ir: _IR, solver: str, dtype: torch.dtype, bound: float, mvec: bool) -> str:
    real, sfx = _DTYPES[dtype]
    g = _CGen(ir, real, sfx)
    D, P = ir.dim, ir.n_params
    xs = [f"x{d}" for d in range(D)]
    ps = [f"p{k}" for k in range(P)]
    L = _c_prelude(real, sfx, D, P, [ir], mvec, dtype)
    L += _c_aos_function("explorer_field", g, D, P, D)
    # --- one step of a block of W lanes, with the divergence mask of simulate._make_chunk
    outlined = solver == "rk4" and len(ir.live()) > _INLINE_STAGES_MAX
    L += _c_rk4_outlined(g, D, P) if outlined else _BLOCK_STEP_HEAD + [
        "  #pragma omp simd",
        "  for (int j = 0; j < nw; j++) {"]
    L += [f"    const real x{d} = S[{d}][j];" for d in range(D)]
    if not outlined:
        L += [f"    const real p{k} = PV[{k}][j];" for k in range(P)]
    ind = "    "
    if outlined:
        L += [f"    const real n{d} = x{d} + h6 * ((K1[{d}][j] + ((real)2.0) * (K2[{d}][j] + "
              f"K3[{d}][j])) + K4[{d}][j]);" for d in range(D)]
    elif solver == "map":
        L += [f"    real n{d};" for d in range(D)]
        L += g.stage(xs, ps, [f"n{d}" for d in range(D)], "a", ind)
    elif solver == "euler":
        L += [f"    real k1_{d};" for d in range(D)]
        L += g.stage(xs, ps, [f"k1_{d}" for d in range(D)], "a", ind)
        L += [f"    const real n{d} = x{d} + h * k1_{d};" for d in range(D)]
    elif solver == "rk4":
        for s in range(1, 5):
            L += [f"    real k{s}_{d};" for d in range(D)]
        L += g.stage(xs, ps, [f"k1_{d}" for d in range(D)], "a", ind)
        L += [f"    const real y2_{d} = x{d} + h2 * k1_{d};" for d in range(D)]
        L += g.stage([f"y2_{d}" for d in range(D)], ps, [f"k2_{d}" for d in range(D)], "b", ind)
        L += [f"    const real y3_{d} = x{d} + h2 * k2_{d};" for d in range(D)]
        L += g.stage([f"y3_{d}" for d in range(D)], ps, [f"k3_{d}" for d in range(D)], "c", ind)
        L += [f"    const real y4_{d} = x{d} + h * k3_{d};" for d in range(D)]
        L += g.stage([f"y4_{d}" for d in range(D)], ps, [f"k4_{d}" for d in range(D)], "e", ind)
        L += [f"    const real n{d} = x{d} + h6 * ((k1_{d} + ((real)2.0) * (k2_{d} + k3_{d})) + k4_{d});"
              for d in range(D)]
    else:
        raise Unsupported(f"solver {solver!r}")
    L += _c_mask(g, D, bound)
    L += _c_store_row(real)
    L += _c_driver("explorer_run", "", [], [], "block_step(S, PV, OK, NK, h, h2, h6, nw);", P)
    return "\n".join(L)


# ============================================================================ the noise
# Wiener increments of the native SDE steppers, and of eager runs given a seed: standard
# normals from the counter-based generator Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC'11),
# turned into normals by Box-Muller, two per pair of uniforms: a 128-bit block gives P = 2
# normals in float64 (52-bit uniforms from 64 bits each), 4 in float32 (23-bit uniforms;
# |z| < 5.7). With M noises per step, S = max(1, P // M) consecutive steps share a block
# (none is wasted for M = 1 or, in float32, M = 2), and component m of step k of trajectory
# i is entry (k mod S) * M + (m mod P) of the block with
#     key = (seed mod 2^32, seed >> 32),
#     counter = (b mod 2^32, b >> 32, i, m // P),   b = k // S.
# A draw depends on nothing else -- not on threads, blocks, chunking, the batch size or
# divergence -- so a seeded run is the same in every configuration. The logarithm, sine and cosine of
# Box-Muller are evaluated with + - * / sqrt floor and bit manipulations only (range
# reduction, then polynomials with fixed coefficients), all correctly rounded IEEE
# operations, so C (without FMA contraction) and torch give the same bits:
# :func:`philox_normals` is the reference the C code is tested against.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10
_U32 = 0xFFFFFFFF
_LN2, _SQRT2, _PIO2 = 0.6931471805599453, 1.4142135623730951, 1.5707963267948966
_POLY_TERMS = {torch.float64: (10, 9, 9), torch.float32: (5, 5, 6)}   # log, sin, cos


def _poly(dtype: torch.dtype) -> tuple[list[float], list[float], list[float]]:
    """Coefficients: log m = s (c0 + c1 s^2 + ...), s = (m-1)/(m+1) (atanh series);
    sin(phi) = phi (1 - phi^2/3! + ...), cos(phi) = 1 - phi^2/2! + ... (|phi| <= pi/4).
    Enough terms for a relative error below half an ulp of ``dtype``."""
    nl, ns, nc = _POLY_TERMS[dtype]
    return ([2.0 / (2 * k + 1) for k in range(nl)],
            [(-1) ** k / math.factorial(2 * k + 1) for k in range(ns)],
            [(-1) ** k / math.factorial(2 * k) for k in range(nc)])


def normals_per_block(dtype: torch.dtype) -> int:
    """Normals drawn from one Philox block: 2 in float64, 4 in float32."""
    return 2 if dtype == torch.float64 else 4


def steps_per_block(dtype: torch.dtype, m: int) -> int:
    """Consecutive steps that share one Philox block when a step needs ``m`` normals."""
    return max(1, normals_per_block(dtype) // max(1, int(m)))


def philox4x32(counter, key: tuple[int, int], rounds: int = PHILOX_ROUNDS) -> tuple:
    """Philox4x32 (Random123) on int64 tensors (or ints) holding 32-bit words.

    ``counter``: four words (tensors broadcasting together, or ints); ``key``: two ints.
    Returns the four output words. Products of two 32-bit words wrap in int64 with their
    bits intact, so the high and low halves are exact."""
    c0, c1, c2, c3 = counter
    k0, k1 = int(key[0]) & _U32, int(key[1]) & _U32
    for _ in range(rounds):
        pa, pb = c0 * PHILOX_M[0], c2 * PHILOX_M[1]
        c0, c1, c2, c3 = (((pb >> 32) & _U32) ^ c1 ^ k0, pb & _U32,
                          ((pa >> 32) & _U32) ^ c3 ^ k1, pa & _U32)
        k0, k1 = (k0 + PHILOX_W[0]) & _U32, (k1 + PHILOX_W[1]) & _U32
    return c0, c1, c2, c3


def _estrin(coefs: list, t, mul: Callable, add: Callable, square: Callable):
    """``sum_k coefs[k] t^k`` by Estrin's scheme (short dependency chains: the pairs
    ``c_2i + c_2i+1 t`` in parallel, then the same in ``t^2``...). ``mul``/``add``/``square``
    build the operations, so that torch and the generated C do exactly the same ones."""
    while len(coefs) > 1:
        coefs = [add(coefs[i], mul(coefs[i + 1], t)) if i + 1 < len(coefs) else coefs[i]
                 for i in range(0, len(coefs), 2)]
        if len(coefs) > 1:
            t = square(t)
    return coefs[0]


def _horner(coefs: list[float], t):
    return _estrin(coefs, t, lambda a, b: a * b, lambda a, b: a + b, lambda a: a * a)


def _ieee_sqrt(y: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root: torch's CPU kernel (MKL/Sleef) may be 1 ulp off, so
    on the CPU numpy's (the hardware instruction) is used; CUDA's is IEEE."""
    if y.device.type == "cpu":
        return torch.from_numpy(np.sqrt(y.numpy()))
    return torch.sqrt(y)


def _box_muller(u1: torch.Tensor, v2: torch.Tensor, dtype: torch.dtype):
    """Two normals from u1 in (0, 1] and v2 in [0, 1): sqrt(-2 log u1) (cos, sin)(2 pi v2),
    with the operations of the generated C code (same bits)."""
    logc, sinc, cosc = _poly(dtype)
    if dtype == torch.float64:
        bits = u1.view(torch.int64)
        e = (bits >> 52).to(dtype) - 1023.0
        m = ((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000).view(torch.float64)
    else:
        bits = u1.view(torch.int32)
        e = (bits >> 23).to(dtype) - 127.0
        m = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)
    big = m > _SQRT2
    m = torch.where(big, m * 0.5, m)
    e = torch.where(big, e + 1.0, e)
    s = (m - 1.0) / (m + 1.0)
    L = e * _LN2 + s * _horner(logc, s * s)
    r = _ieee_sqrt(-2.0 * L)
    a = v2 * 4.0
    q = torch.floor(a + 0.5)
    ph = (a - q) * _PIO2
    p2 = ph * ph
    sn = ph * _horner(sinc, p2)
    cs = _horner(cosc, p2)
    ct = torch.where(q == 1.0, -sn, torch.where(q == 2.0, -cs, torch.where(q == 3.0, sn, cs)))
    st = torch.where(q == 1.0, cs, torch.where(q == 2.0, -sn, torch.where(q == 3.0, -cs, sn)))
    return r * ct, r * st


def philox_normals(seed: int, step: int, n: int, m: int, dtype: torch.dtype = torch.float64,
                   device=None, traj0: int = 0, steps: int | None = None) -> torch.Tensor:
    """The (n, m) standard normals of trajectories ``traj0 .. traj0+n-1`` at ``step`` of
    the stream ``seed``: the noise of the native SDE steppers, in torch (any device). With
    ``steps``: those of steps ``step .. step+steps-1``, (steps, n, m), in one pass.

    Entry (i, k) comes from the Philox block with counter (step mod 2^32, step >> 32,
    traj0 + i, k // normals_per_block(dtype)) and key (seed mod 2^32, seed >> 32).
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype {dtype}")
    seed, step = int(seed), int(step)
    K = 1 if steps is None else int(steps)
    per = normals_per_block(dtype)
    nq = -(-m // per)
    spb = steps_per_block(dtype, m)
    dev = torch.device("cpu") if device is None else torch.device(device)
    ks = [(step + k) % 2 ** 64 for k in range(K)]
    bs = [k // spb for k in ks]
    c0 = torch.tensor([b & _U32 for b in bs], dtype=torch.int64, device=dev).view(K, 1, 1)
    c1 = torch.tensor([b >> 32 for b in bs], dtype=torch.int64, device=dev).view(K, 1, 1)
    c2 = (torch.arange(n, dtype=torch.int64, device=dev) + int(traj0)).bitwise_and_(_U32)
    c3 = torch.arange(nq, dtype=torch.int64, device=dev)
    words = philox4x32((c0, c1, c2.view(1, n, 1), c3.view(1, 1, nq)),
                       (seed & _U32, (seed >> 32) & _U32))
    w = [torch.broadcast_to(t, (K, n, nq)) for t in words]
    if dtype == torch.float64:
        one = 0x3FF0000000000000
        u1 = 2.0 - ((((w[0] >> 12) << 32) | w[1]) | one).view(torch.float64)
        v2 = ((((w[2] >> 12) << 32) | w[3]) | one).view(torch.float64) - 1.0
        zs = _box_muller(u1, v2, dtype)
    else:
        def unit(t):
            return ((t >> 9) | 0x3F800000).to(torch.int32).view(torch.float32)

        za = _box_muller(2.0 - unit(w[0]), unit(w[1]) - 1.0, dtype)
        zb = _box_muller(2.0 - unit(w[2]), unit(w[3]) - 1.0, dtype)
        zs = (*za, *zb)
    z = torch.stack(zs, -1).reshape(K, n, nq * per)
    if spb == 1:
        z = z[..., :m].contiguous()
    else:                                     # this step's share of the block
        off = torch.tensor([(k % spb) * m for k in ks], dtype=torch.int64, device=dev)
        idx = (off.view(K, 1, 1) + torch.arange(m, device=dev).view(1, 1, m)).expand(K, n, m)
        z = torch.gather(z, 2, idx).contiguous()
    return z[0] if steps is None else z


_noise_libs: dict[tuple, Any] = {}
_noise_lock = threading.Lock()


def _normals_fn(dtype: torch.dtype, m: int):
    """The compiled ``explorer_normals`` for (dtype, m) (cached), or None without gcc."""
    key = (dtype, int(m))
    with _noise_lock:
        if key in _noise_libs:
            return _noise_libs[key]
    fn = None
    if available():
        L = _c_prelude(*_DTYPES[dtype], 1, 0, [], False, dtype) + _BITS + _c_normals_fn(dtype, m)
        L += [f"int64_t explorer_abi(void) {{ return {_ABI}; }}", ""]
        try:
            fn = _compile("\n".join(L), ["-fno-trapping-math"]).explorer_normals
        except Unsupported as e:
            log.debug("native normals (%s, %d) unavailable: %s", dtype, m, e)
    with _noise_lock:
        _noise_libs[key] = fn
    return fn


def counter_normals(seed: int, step: int, n: int, m: int, dtype: torch.dtype = torch.float64,
                    device=None, traj0: int = 0, steps: int | None = None) -> torch.Tensor:
    """:func:`philox_normals` (same arguments, same bits) computed by compiled C where it
    can (a CPU tensor and a working gcc: about a hundred times faster than torch's many
    small integer ops), else by torch. Other floating dtypes get the float32 normals,
    converted."""
    if dtype not in (torch.float32, torch.float64):
        return counter_normals(seed, step, n, m, torch.float32, device, traj0, steps).to(dtype)
    dev = torch.device("cpu") if device is None else torch.device(device)
    fn = _normals_fn(dtype, m) if dev.type == "cpu" else None
    if fn is None:
        return philox_normals(seed, step, n, m, dtype, dev, traj0, steps)
    K = 1 if steps is None else int(steps)
    out = torch.empty((K, int(n), int(m)), dtype=dtype)
    if n:
        for k in range(K):
            fn(int(n), int(seed) % 2 ** 64, (int(step) + k) % 2 ** 64, int(traj0),
               out[k].data_ptr())
    return out[0] if steps is None else out


def _c_normals_fn(dtype: torch.dtype, M: int) -> list[str]:
    """``explorer_normals(n, seed, step, traj0, out (n, M))``: the noise alone."""
    spb = steps_per_block(dtype, M)
    L = ["void explorer_normals(int64_t n, uint64_t seed, uint64_t step, int64_t traj0,",
         "                      real *restrict out) {",
         "  const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);",
         f"  const uint64_t blk = step / {spb}u;",
         f"  const int part = (int)(step % {spb}u);",
         "  const uint32_t c0 = (uint32_t)blk, c1 = (uint32_t)(blk >> 32);",
         *_c_keys("  ")]
    for part in range(spb):
        L += [f"  if (part == {part}) {{",
              "    #pragma omp simd",
              "    for (int64_t i = 0; i < n; i++) {",
              "      const uint32_t c2 = (uint32_t)(traj0 + i);",
              *_c_noise(dtype, M, "      "),
              *[f"      out[i * {M} + {m}] = z{part * M + m};" for m in range(M)],
              "    }", "  }"]
    return L + ["}", ""]


def _c_noise(dtype: torch.dtype, M: int, ind: str) -> list[str]:
    """C lines defining ``z0 .. z{M-1}``, the normals of trajectory ``c2`` at step (c0, c1),
    from the round keys ``K0_r, K1_r`` (exactly :func:`philox_normals`)."""
    real, sfx = _DTYPES[dtype]
    per = normals_per_block(dtype)
    logc, sinc, cosc = _poly(dtype)

    def lit(v):
        return _lit(v, real)

    def horner(name, coefs, t):
        """Lines defining ``name`` = the polynomial at ``t`` (as :func:`_horner`)."""
        out = []

        def square(v):
            w = f"{name}_t{len(out)}"
            out.append(f"const real {w} = {v} * {v};")
            return w

        expr = _estrin([lit(c) for c in coefs], t, lambda a, b: f"({a} * {b})",
                       lambda a, b: f"({a} + {b})", square)
        return out + [f"const real {name} = {expr};"]

    def box_muller(u1: str, v2: str, za: str, zb: str) -> list[str]:
        if dtype == torch.float64:
            L = [f"const uint64_t ub = d2bits({u1});",
                 # (2^52 + e) - (2^52 + 1023): the exponent as a double, exactly
                 ("const double ed = bits2d((ub >> 52) | 0x4330000000000000ull)"
                  " - 4503599627371519.0;"),
                 "const double m0 = bits2d((ub & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);"]
        else:
            L = [f"const uint32_t ub = f2bits({u1});",
                 "const float ed = (float)(int32_t)(ub >> 23) - 127.0f;",
                 "const float m0 = bits2f((ub & 0x7FFFFFu) | 0x3F800000u);"]
        L += [f"const int big = m0 > {lit(_SQRT2)};",
              f"const real mm = big ? m0 * {lit(0.5)} : m0;",
              f"const real e2 = big ? ed + {lit(1.0)} : ed;",
              f"const real s = (mm - {lit(1.0)}) / (mm + {lit(1.0)});",
              "const real t = s * s;"]
        L += horner("P", logc, "t")
        L += [f"const real lg = e2 * {lit(_LN2)} + s * P;",
              f"const real rr = {'sqrt' + sfx}({lit(-2.0)} * lg);",
              f"const real a4 = {v2} * {lit(4.0)};",
              f"const real qq = {'floor' + sfx}(a4 + {lit(0.5)});",
              f"const real ph = (a4 - qq) * {lit(_PIO2)};",
              "const real ph2 = ph * ph;"]
        L += horner("Sn", sinc, "ph2")
        L += horner("Cs", cosc, "ph2")
        L += ["const real sn = ph * Sn;",
              (f"const real ct = qq == {lit(1.0)} ? -sn : (qq == {lit(2.0)} ? -Cs : "
               f"(qq == {lit(3.0)} ? sn : Cs));"),
              (f"const real st = qq == {lit(1.0)} ? Cs : (qq == {lit(2.0)} ? -sn : "
               f"(qq == {lit(3.0)} ? -Cs : sn));"),
              f"{za} = rr * ct;", f"{zb} = rr * st;"]
        return ["{", *["  " + ln for ln in L], "}"]

    nq = -(-M // per)
    zn = nq * per
    L = [f"real z{m};" for m in range(zn)]
    for q in range(nq):
        v = ["c0", "c1", "c2", f"{q}u"]
        L.append("{")
        for r in range(PHILOX_ROUNDS):
            L += [f"  const uint64_t pa{r} = (uint64_t){PHILOX_M[0]:#x}u * {v[0]};",
                  f"  const uint64_t pb{r} = (uint64_t){PHILOX_M[1]:#x}u * {v[2]};"]
            nv = [f"w{r}_{i}" for i in range(4)]
            L += [f"  const uint32_t {nv[0]} = (uint32_t)(pb{r} >> 32) ^ {v[1]} ^ K0_{r};",
                  f"  const uint32_t {nv[1]} = (uint32_t)pb{r};",
                  f"  const uint32_t {nv[2]} = (uint32_t)(pa{r} >> 32) ^ {v[3]} ^ K1_{r};",
                  f"  const uint32_t {nv[3]} = (uint32_t)pa{r};"]
            v = nv
        if dtype == torch.float64:
            one = "0x3FF0000000000000ull"
            hi0, hi2 = f"(uint64_t)({v[0]} >> 12) << 32", f"(uint64_t)({v[2]} >> 12) << 32"
            L += [f"  const double u1 = 2.0 - bits2d(({hi0} | {v[1]}) | {one});",
                  f"  const double v2 = bits2d(({hi2} | {v[3]}) | {one}) - 1.0;"]
            L += ["  " + ln for ln in box_muller("u1", "v2", f"z{per * q}", f"z{per * q + 1}")]
        else:
            for h in range(2):
                a, b = v[2 * h], v[2 * h + 1]
                L += [f"  const float u1_{h} = 2.0f - bits2f(0x3F800000u | ({a} >> 9));",
                      f"  const float v2_{h} = bits2f(0x3F800000u | ({b} >> 9)) - 1.0f;"]
                L += ["  " + ln for ln in box_muller(f"u1_{h}", f"v2_{h}", f"z{per * q + 2 * h}",
                                                     f"z{per * q + 2 * h + 1}")]
        L.append("}")
    return [ind + ln for ln in L]


def _c_keys(ind: str) -> list[str]:
    """The Philox round keys from ``k0, k1``."""
    L = []
    for r in range(PHILOX_ROUNDS):
        a, b = (r * PHILOX_W[0]) & _U32, (r * PHILOX_W[1]) & _U32
        L.append(f"{ind}const uint32_t K0_{r} = k0 + {a:#x}u, K1_{r} = k1 + {b:#x}u;")
    return L


_BITS = ["typedef union { uint64_t u; double d; } bits64;",
         "typedef union { uint32_t u; float f; } bits32;",
         "static inline double bits2d(uint64_t b) { bits64 c; c.u = b; return c.d; }",
         "static inline uint64_t d2bits(double d) { bits64 c; c.d = d; return c.u; }",
         "static inline float bits2f(uint32_t b) { bits32 c; c.u = b; return c.f; }",
         "static inline uint32_t f2bits(float f) { bits32 c; c.f = f; return c.u; }",
         ""]


def _c_source_sde(drift: _IR, diff: _IR, dg: _IR | None, solver: str, dtype: torch.dtype,
                  bound: float, mvec: bool, noise: str, M: int) -> str:
    """The SDE library: ``explorer_run_sde`` (Euler-Maruyama, or Milstein for diagonal
    noise), ``explorer_field`` (drift), ``explorer_diffusion`` (g, (B, D) or (B, D*M)),
    ``explorer_dg`` (dg_i/dx_i, Milstein) and ``explorer_normals`` (the noise)."""
    real, sfx = _DTYPES[dtype]
    gf, gg = _CGen(drift, real, sfx), _CGen(diff, real, sfx)
    D, P = drift.dim, drift.n_params
    G = len(diff.outputs)
    xs = [f"x{d}" for d in range(D)]
    ps = [f"p{k}" for k in range(P)]
    irs = [drift, diff] + ([dg] if dg is not None else [])
    L = _c_prelude(real, sfx, D, P, irs, mvec, dtype) + _BITS
    L += _c_aos_function("explorer_field", gf, D, P, D)
    L += _c_aos_function("explorer_diffusion", gg, D, P, G)
    if dg is not None:
        L += _c_aos_function("explorer_dg", _CGen(dg, real, sfx), D, P, D)
    L += _c_normals_fn(dtype, M)                             # the noise alone (tests)
    # --- one step of a block of W lanes. The normals are drawn in a loop of their own into
    # ZC (a smaller loop body vectorises better: 1.8x faster with 3 noises in float64); with
    # several steps per Philox block (spb > 1), at the block's first step (or the first of
    # a call) only, and read from there by the following steps.
    spb = steps_per_block(dtype, M)
    per = normals_per_block(dtype)
    nz = -(-M // per) * per
    L += ["static inline __attribute__((always_inline)) void",
          "block_step(real (*restrict S)[W], real (*restrict PV)[W], int32_t *restrict OK,",
          "           int32_t *restrict NK, real (*restrict ZC)[W], const real h,",
          "           const real sqh, const uint32_t c0, const uint32_t c1, const uint32_t tb,",
          "           const uint32_t k0, const uint32_t k1, const int fresh, const int part,",
          "           const int nw) {",
          *_c_keys("  ")]
    L += ["  if (fresh) {",
          "    #pragma omp simd",
          "    for (int j = 0; j < nw; j++) {",
          "      const uint32_t c2 = tb + (uint32_t)j;",
          *_c_noise(dtype, M, "      "),
          *[f"      ZC[{i}][j] = z{i};" for i in range(nz)],
          "    }",
          "  }",
          f"  const real (*restrict ZP)[W] = ZC + part * {M};"]
    L += ["  #pragma omp simd",
          "  for (int j = 0; j < nw; j++) {"]
    L += [f"    const real x{d} = S[{d}][j];" for d in range(D)]
    L += [f"    const real p{k} = PV[{k}][j];" for k in range(P)]
    L += [f"    real f{d};" for d in range(D)]
    L += gf.stage(xs, ps, [f"f{d}" for d in range(D)], "a", "    ")
    L += [f"    real g{i};" for i in range(G)]
    L += gg.stage(xs, ps, [f"g{i}" for i in range(G)], "b", "    ")
    if dg is not None:
        L += [f"    real dg{d};" for d in range(D)]
        L += _CGen(dg, real, sfx).stage(xs, ps, [f"dg{d}" for d in range(D)], "e", "    ")
    L += [f"    const real dW{m} = ZP[{m}][j] * sqh;" for m in range(M)]
    # the formulas of solvers.euler_maruyama_step / milstein_step, in their order
    for d in range(D):
        if noise == "diagonal":
            gdw = f"g{d} * dW{d}"
        else:
            gdw = " + ".join(f"g{d * M + m} * dW{m}" for m in range(M))
            gdw = f"({gdw})" if M > 1 else gdw
        em = f"(x{d} + h * f{d}) + {gdw}"
        if dg is not None:
            L.append(f"    const real n{d} = ({em}) + ((((real)0.5) * g{d}) * dg{d}) * "
                     f"((dW{d} * dW{d}) - h);")
        else:
            L.append(f"    const real n{d} = {em};")
    L += _c_mask(gf, D, bound)
    L += _c_store_row(real)
    L += _c_driver("explorer_run_sde",
                   ", double sqrt_dt, uint64_t seed, uint64_t step0, int64_t traj0",
                   ["  const real sqh = (real)sqrt_dt;",
                    "  const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);"],
                   ["    const uint32_t tb = (uint32_t)(traj0 + i0);",
                    "    uint64_t st = step0;",
                    "    int first = 1;",
                    f"    real ZC[{nz}][W] __attribute__((aligned(64)));"],
                   f"{{ const uint64_t blk = st / {spb}u; const int part = (int)(st % {spb}u); "
                   "block_step(S, PV, OK, NK, ZC, h, sqh, (uint32_t)blk, (uint32_t)(blk >> 32), "
                   "tb, k0, k1, first || part == 0, part, nw); st++; first = 0; }", P)
    return "\n".join(L)


def _mvec_names(irs) -> list[str]:
    """The libm functions of the programs that have libmvec vector variants."""
    irs = [irs] if isinstance(irs, _IR) else list(irs)
    ops = {i.op for ir in irs for i in ir.instrs}
    used = {op.split(":", 1)[1] for op in ops if op.startswith(("fn:", "fn2:"))}
    if "sigmoid" in ops:
        used.add("exp")
    return sorted(used & _MVEC_FUNCS)


def _flags(irs, dtype: torch.dtype, mvec: bool) -> list[str]:
    """Extra gcc flags: with libmvec, the vectorised functions must not be builtins (else gcc
    merges sin/cos into sincos, which has no usable vector variant, and the loop stays
    scalar); their declarations in the source carry ``simd`` and ``const`` instead."""
    if not mvec:
        return []
    sfx = _DTYPES[dtype][1]
    return [f"-fno-builtin-{n}{sfx}" for n in _mvec_names(irs)] + ["-lmvec"]


# ============================================================================ build + load
_libs_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}
_lib_locks: dict[str, threading.Lock] = {}


_vp, _i64, _u64, _dbl, _int = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64,
                                ctypes.c_double, ctypes.c_int)
_SIGNATURES = {
    "explorer_run": (_int, [_vp, _i64, _vp, _vp, _dbl, _i64, _i64, _vp, _vp, _vp, _int, _int]),
    "explorer_run_sde": (_int, [_vp, _i64, _vp, _vp, _dbl, _i64, _i64, _vp, _vp, _vp, _int, _int,
                                _dbl, _u64, _u64, _i64]),
    "explorer_field": (None, [_vp, _i64, _vp, _vp, _vp]),
    "explorer_diffusion": (None, [_vp, _i64, _vp, _vp, _vp]),
    "explorer_dg": (None, [_vp, _i64, _vp, _vp, _vp]),
    "explorer_normals": (None, [_i64, _u64, _u64, _i64, _vp]),
}


def _compile(source: str, extra: list[str]) -> ctypes.CDLL:
    """Compile (or fetch from the on-disk cache) and load ``source``. Raises Unsupported."""
    env = _environment()
    libs = extra + ["-lm"]
    key = hashlib.sha256("\0".join([source, " ".join(_BASE_FLAGS + libs), env["version"],
                                    env["machine"], str(_ABI)]).encode()).hexdigest()[:32]
    with _libs_lock:
        if key in _libs:
            return _libs[key]
        lock = _lib_locks.setdefault(key, threading.Lock())
    with lock:
        with _libs_lock:
            if key in _libs:
                return _libs[key]
        d = cache_dir()
        so = d / f"explorer_{key}.so"
        if not so.exists():
            fd, tmp = tempfile.mkstemp(prefix=f".explorer_{key}.", suffix=".so.tmp", dir=d)
            os.close(fd)
            try:
                try:
                    r = subprocess.run([_COMPILER, *_BASE_FLAGS, "-x", "c", "-", "-o", tmp, *libs],
                                       input=source, capture_output=True, text=True,
                                       timeout=_COMPILE_TIMEOUT_S)
                except subprocess.TimeoutExpired as e:
                    raise Unsupported(f"gcc timed out after {_COMPILE_TIMEOUT_S} s") from e
                except OSError as e:
                    raise Unsupported(f"gcc could not run: {e}") from e
                if r.returncode != 0:
                    raise Unsupported(f"gcc failed: {r.stderr.strip()[-800:]}")
                os.replace(tmp, so)                   # atomic: readers see all or nothing
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            try:                                       # the source, for inspection
                fd, tmpc = tempfile.mkstemp(prefix=f".explorer_{key}.", suffix=".c.tmp", dir=d)
                with os.fdopen(fd, "w") as fh:
                    fh.write(source)
                os.replace(tmpc, d / f"explorer_{key}.c")
            except OSError:
                pass
        try:
            lib = ctypes.CDLL(str(so))
            if lib.explorer_abi() != _ABI:
                raise Unsupported("stale library in the cache")
        except OSError as e:
            raise Unsupported(f"could not load {so.name}: {e}") from e
        for name, (restype, argtypes) in _SIGNATURES.items():
            if hasattr(lib, name):
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
        with _libs_lock:
            _libs[key] = lib
        return lib


# ============================================================================ the stepper
class NativeStepper:
    """Compiled fixed-step integrator of one system class, solver, dtype and bound.

    Float parameters are run-time arguments (a number, or a (B,) tensor for a parameter
    sweep); structural integer parameters are fixed (they are part of the cache key).
    Calls are thread-safe and release the GIL.

    Attributes:
        solver: ``"rk4"``, ``"euler"``, ``"map"``, ``"euler_maruyama"`` or ``"milstein"``;
        ``dtype``: float32 or float64; dim: D; ``bound``: the divergence bound;
        ``param_names``: the float parameters in the order of ``system.parameters``;
        ``structural``: the fixed integer parameters; ``source``: the generated C code;
        ``fma``: whether contraction was allowed. SDE steppers (``stochastic``) also have
        ``noise`` (``"diagonal"`` or ``"general"``) and ``n_noises`` (M); their
        :meth:`run` needs a ``seed`` (see :func:`philox_normals` for the stream).
    """

    def __init__(self, lib: ctypes.CDLL, *, solver: str, dtype: torch.dtype, dim: int,
                 bound: float, param_names: list[str], structural: dict[str, int], source: str,
                 fma: bool = False, noise: str | None = None, n_noises: int = 0):
        self._lib = lib
        self.solver, self.dtype, self.dim, self.bound = solver, dtype, dim, bound
        self.param_names = list(param_names)
        self.structural = dict(structural)
        self.source = source
        self.fma = fma
        self.stochastic = noise is not None
        self.noise, self.n_noises = noise, int(n_noises)

    def __repr__(self) -> str:
        return (f"NativeStepper(solver={self.solver!r}, dtype={self.dtype}, dim={self.dim}, "
                f"params={self.param_names})")

    # ------------------------------------------------------------------ helpers
    def _param_ptrs(self, params, B: int):
        """(keep-alive list, void* array, stride array) for the float parameters."""
        if isinstance(params, DynamicalSystem):
            params = params.params
        params = params or {}
        for k, v in self.structural.items():
            if k in params and int(params[k]) != v:
                raise ValueError(f"structural parameter {k}={params[k]} differs from the "
                                 f"compiled value {v}; ask native_stepper() for that system")
        P = len(self.param_names)
        keep: list[torch.Tensor] = []
        vectors: dict[int, torch.Tensor] = {}
        scalars = [0.0] * P
        for k, name in enumerate(self.param_names):
            if name not in params:
                raise ValueError(f"missing parameter {name!r}")
            v = params[name]
            if isinstance(v, torch.Tensor) and v.numel() != 1:
                if v.ndim != 1 or v.shape[0] != B:
                    raise ValueError(f"parameter {name!r} has shape {tuple(v.shape)}; "
                                     f"expected a number or ({B},)")
                vectors[k] = v.detach().to(device="cpu", dtype=self.dtype).contiguous()
            else:
                scalars[k] = float(v.item() if isinstance(v, torch.Tensor) else v)
        packed = torch.tensor(scalars or [0.0], dtype=self.dtype)       # all scalars at once
        keep = [packed, *vectors.values()]
        base, size = packed.data_ptr(), packed.element_size()
        ptrs = [vectors[k].data_ptr() if k in vectors else base + k * size for k in range(P)]
        strides = [1 if k in vectors else 0 for k in range(P)]
        arr = (ctypes.c_void_p * max(P, 1))(*ptrs)
        st = (ctypes.c_int64 * max(P, 1))(*strides)
        return keep, arr, st

    def _check_x(self, x: torch.Tensor) -> int:
        if not isinstance(x, torch.Tensor) or x.device.type != "cpu" or x.dtype != self.dtype:
            raise ValueError(f"x must be a CPU {self.dtype} tensor")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be (B, {self.dim}), got {tuple(x.shape)}")
        return x.shape[0]

    # ------------------------------------------------------------------ public
    def _aos(self, name: str, x: torch.Tensor, params, width: int) -> torch.Tensor:
        B = self._check_x(x)
        xc = x.detach().contiguous()
        out = torch.empty((B, width), dtype=self.dtype)
        keep, arr, st = self._param_ptrs(params, B)
        if B:
            getattr(self._lib, name)(xc.data_ptr(), B, arr, st, out.data_ptr())
        del keep
        return out

    def field(self, x: torch.Tensor, params) -> torch.Tensor:
        """The compiled vector field (or map, or an SDE's drift) at ``x`` (B, D): a new (B, D)
        tensor."""
        return self._aos("explorer_field", x, params, self.dim)

    def diffusion(self, x: torch.Tensor, params) -> torch.Tensor:
        """An SDE stepper's compiled diffusion ``g`` at ``x`` (B, D): (B, D) for diagonal
        noise, (B, D, M) for general noise, broadcast to full shape."""
        if not self.stochastic:
            raise ValueError("not an SDE stepper")
        if self.noise == "diagonal":
            return self._aos("explorer_diffusion", x, params, self.dim)
        g = self._aos("explorer_diffusion", x, params, self.dim * self.n_noises)
        return g.reshape(-1, self.dim, self.n_noises)

    def normals(self, seed: int, step: int, n: int, traj0: int = 0) -> torch.Tensor:
        """The (n, M) standard normals that :meth:`run` draws at ``step`` for trajectories
        ``traj0 ..`` (the compiled :func:`philox_normals`)."""
        if not self.stochastic:
            raise ValueError("not an SDE stepper")
        out = torch.empty((int(n), self.n_noises), dtype=self.dtype)
        if n:
            self._lib.explorer_normals(int(n), _u64(seed), _u64(step), int(traj0), out.data_ptr())
        return out

    def run(self, x: torch.Tensor, params, dt: float, *, n_steps: int, record_every: int,
            ok: torch.Tensor | None = None, n_ok: torch.Tensor | None = None,
            out: torch.Tensor | None = None, threads: int | None = None,
            seed: int | None = None, step0: int = 0, traj0: int = 0):
        """Advance ``x`` (B, D) by ``n_steps`` steps in place.

        Args:
            x: CPU tensor of this stepper's dtype; updated in place.
            params: mapping name -> number or (B,) tensor (e.g. ``system.params``), or the
                system itself. Structural integers must equal the compiled ones.
            dt: time step (ignored by maps).
            n_steps: steps to take (>= 0); ``record_every`` (>= 1): the state after steps
                ``record_every, 2 record_every, ...`` is recorded; steps after the last
                multiple are taken but not recorded (``record_every > n_steps``: none).
            ok, n_ok: (B,) bool / int32 divergence state, updated in place (fresh all-True
                / zero tensors when omitted). After each step a member whose new state has
                a non-finite component or one with ``|x_i| > bound`` keeps its last good
                state and is not ok from then on; ``n_ok`` counts its good steps (exactly
                :func:`explorer.core.simulate._make_chunk`).
            out: optional contiguous (n_steps // record_every, D, B) tensor to record into
                (e.g. a slice of a larger buffer).
            threads: OpenMP threads (default ``torch.get_num_threads()`` shared among the
                native runs in flight: :class:`_CoreShare`).
            seed, step0, traj0: SDE steppers only (``seed`` required): the noise of the
                k-th step of this call for row i of ``x`` is that of step ``step0 + k`` and
                trajectory ``traj0 + i`` of the stream ``seed`` (:func:`philox_normals`),
                whatever the threads, blocks or chunking. Pass the number of steps already
                taken as ``step0`` to continue a run.

        Returns:
            ``(records, ok, n_ok)``; records is (n_steps // record_every, D, B).
        """
        B = self._check_x(x)
        n_steps, record_every = int(n_steps), int(record_every)
        if n_steps < 0 or record_every < 1:
            raise ValueError("n_steps must be >= 0 and record_every >= 1")
        if self.stochastic:
            if seed is None:
                raise ValueError("an SDE stepper needs a seed")
            if not 0 <= int(seed) < 2 ** 64 or not 0 <= int(step0) < 2 ** 64 - n_steps:
                raise ValueError("seed and step0 must be in [0, 2**64)")
            if not 0 <= int(traj0) or int(traj0) + B > 2 ** 32:
                raise ValueError("trajectory indices must be in [0, 2**32)")
        D = self.dim
        S = n_steps // record_every
        if ok is None:
            ok = torch.ones(B, dtype=torch.bool)
        if n_ok is None:
            n_ok = torch.zeros(B, dtype=torch.int32)
        if ok.dtype != torch.bool or ok.shape != (B,) or not ok.is_contiguous() or ok.device.type != "cpu":
            raise ValueError("ok must be a contiguous CPU (B,) bool tensor")
        if (n_ok.dtype != torch.int32 or n_ok.shape != (B,) or not n_ok.is_contiguous()
                or n_ok.device.type != "cpu"):
            raise ValueError("n_ok must be a contiguous CPU (B,) int32 tensor")
        if out is None:
            out = torch.empty((S, D, B), dtype=self.dtype)
        elif (out.shape != (S, D, B) or out.dtype != self.dtype or not out.is_contiguous()
              or out.device.type != "cpu"):
            raise ValueError(f"out must be a contiguous CPU {self.dtype} tensor of shape {(S, D, B)}")
        if B == 0 or n_steps == 0:
            return out, ok, n_ok
        xc = x if x.is_contiguous() else x.contiguous()
        keep, arr, st = self._param_ptrs(params, B)
        stream = int(out.numel() * out.element_size() >= _STREAM_BYTES)
        nt = CORES.acquire(threads)
        try:
            if self.stochastic:
                rc = self._lib.explorer_run_sde(xc.data_ptr(), B, arr, st, float(dt), n_steps,
                                                record_every, out.data_ptr(), ok.data_ptr(),
                                                n_ok.data_ptr(), nt, stream, math.sqrt(float(dt)),
                                                int(seed), int(step0), int(traj0))
            else:
                rc = self._lib.explorer_run(xc.data_ptr(), B, arr, st, float(dt), n_steps,
                                            record_every, out.data_ptr(), ok.data_ptr(),
                                            n_ok.data_ptr(), nt, stream)
        finally:
            CORES.release()
        del keep
        if rc != 0:
            raise RuntimeError(f"native run failed (code {rc})")
        if xc is not x:
            x.copy_(xc)
        return out, ok, n_ok


# ============================================================================ threads
class _CoreShare:
    """OpenMP threads for native runs that may overlap (a server's sessions, a sweep's tasks).

    A run asked for no thread count gets ``torch.get_num_threads()`` divided by the native
    runs in flight in this process when it starts (itself included; at least one). Alone it
    uses every core; two at once take half each instead of each spreading over all cores,
    where threads of one run wait at every block for peers the scheduler took away (under
    load a 2-thread run fell from 46x to 8x NumPy). Parallelism then comes from the runs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def acquire(self, requested: int | None) -> int:
        with self._lock:
            self.active += 1
            sharing = self.active
        if requested is not None:
            return max(1, int(requested))
        return max(1, torch.get_num_threads() // sharing)

    def release(self) -> None:
        with self._lock:
            self.active -= 1


#: the process's native runs in flight (see :class:`_CoreShare`)
CORES = _CoreShare()


# ============================================================================ factory
_steppers: OrderedDict = OrderedDict()
_steppers_lock = threading.RLock()
_key_locks: dict[Any, threading.Lock] = {}
_refusals: dict[Any, str] = {}                   # key -> why native_stepper gave None


def _lock_for(key) -> threading.Lock:
    with _steppers_lock:
        return _key_locks.setdefault(key, threading.Lock())


def _verify(stepper: NativeStepper, template: DynamicalSystem, field: Callable, names: list[str],
            dtype: torch.dtype, compiled: Callable | None = None, what: str = "field") -> None:
    """The compiled field (or ``compiled(x, params)``, e.g. an SDE's diffusion) against the
    torch ``field`` on random states and swept random parameters."""
    B, D = 61, template.dim
    gen = torch.Generator().manual_seed(1234)
    x0 = template.initial_state(torch.float64)
    x = (x0 + 0.2 * (1.0 + x0.abs()) * torch.randn(B, D, generator=gen, dtype=torch.float64))
    x[0] = x0
    x = x.to(dtype)
    pv, pdict = [], {}
    for p in template.parameters:
        if p.integer:
            continue
        v0 = float(template.params[p.name])
        u = torch.rand(B, generator=gen, dtype=torch.float64) * 2 - 1
        v = (v0 + 0.05 * (abs(v0) + 0.1) * u).clamp(p.low, p.high)
        v[: B // 2] = v0                         # half at the template's own value
        pv.append(v.to(dtype))
        pdict[p.name] = pv[-1]
    with torch.inference_mode(False), torch.no_grad():
        try:
            want = field(x, *pv)
        except Exception as e:  # noqa: BLE001  (a field that cannot take swept parameters)
            log.debug("native verify: torch field with swept parameters failed (%s)", e)
            pv = [t[:1].clone().squeeze(0) for t in pv]
            pdict = {n: float(t) for n, t in zip(names, pv)}
            want = field(x, *pv)
    got = (stepper.field if compiled is None else compiled)(x, pdict)
    if want.shape != got.shape:
        want = want.expand_as(got)
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    fin = torch.isfinite(want)
    scale = torch.where(fin, want.abs(), torch.zeros_like(want)).amax(0, keepdim=True) + 1.0
    bad = ~((got - want).abs() <= tol * (want.abs() + scale)) & ~(torch.isnan(got) & torch.isnan(want))
    bad &= ~(torch.isinf(want) & (got == want))
    if bool(bad.any()):
        i = int(bad.reshape(B, -1).any(1).nonzero()[0])
        raise Unsupported(f"compiled {what} disagrees with torch (e.g. at {x[i].tolist()}: "
                          f"{got[i].tolist()} vs {want[i].tolist()})")


def native_stepper(system: DynamicalSystem, solver: str, dtype: torch.dtype = torch.float64,
                   *, fma: bool = False) -> NativeStepper | None:
    """The native stepper for ``system``'s class, or ``None`` when it cannot be had.

    Cached per (system class, structural integer parameters, solver, dtype, bound); the
    compiled library is also cached on disk by source hash. ``None`` (reason logged at
    debug level, and given by :func:`refusal`) when the backend is unavailable, the solver
    is not one of :data:`SOLVERS` or does not fit the system's kind (``euler_maruyama`` and
    ``milstein`` are for SDEs), the dtype is not float32/float64, or the field (an SDE's
    drift or diffusion) uses an op outside the whitelist. ``fma=True`` lets gcc contract
    ``a * b + c`` into fused multiply-adds (faster; results then differ from torch by
    rounding; in an SDE stepper the normals' rounding changes too, so they no longer
    equal :func:`philox_normals`).
    """
    if not available():
        log.debug("native backend unavailable: %s", _environment().get("reason"))
        return None
    key = _key(system, solver, dtype, fma)
    with _steppers_lock:
        if key in _steppers:
            _steppers.move_to_end(key)
            return _steppers[key]
    with _lock_for(key):                         # one build per key; others in parallel
        with _steppers_lock:
            if key in _steppers:
                return _steppers[key]
        tag = f"{system.name}/{solver}/{str(dtype).replace('torch.', '')}"
        try:
            st = _build(system, solver, dtype, key[1], bool(fma))
        except Unsupported as e:
            log.debug("native %s unsupported: %s", tag, e)
            st = None
            _refusals[key] = str(e).splitlines()[0] if str(e) else "unsupported"
        except Exception as e:  # noqa: BLE001  (never let the optional backend break a run)
            log.debug("native %s failed: %s: %s", tag, type(e).__name__, e)
            st = None
            _refusals[key] = f"build failed ({type(e).__name__})"
        with _steppers_lock:
            _steppers[key] = st
            while len(_steppers) > _MAX_STEPPERS:
                _steppers.popitem(last=False)
            _key_locks.pop(key, None)
    return st


_functions: dict[tuple, Callable | None] = {}


def native_function(system: DynamicalSystem, name: str, fn: Callable, n_out: int,
                    dtype: torch.dtype = torch.float64) -> Callable | None:
    """``fn(x, p) -> (B, n_out)``, a per-trajectory function of ``system``'s state and
    parameters, compiled to C: returns ``compiled(x (B, D), params) -> (B, n_out)`` (one C
    loop over the batch, the GIL released), or ``None`` where it does not trace or build.
    Cached per (system class, integer parameters, ``name``, ``n_out``, dtype); checked
    against ``fn`` on random states and parameters like a stepper's field. For example the
    Lyapunov spectrum's field and Jacobian of a system too large for a native tangent
    stepper, whose tangent vectors torch then multiplies."""
    if not available() or dtype not in _DTYPES:
        return None
    structural = tuple((p.name, int(system.params[p.name])) for p in system.parameters if p.integer)
    key = (type(system), structural, name, int(n_out), dtype)
    if key in _functions:
        return _functions[key]
    with _lock_for(key):
        if key in _functions:
            return _functions[key]
        try:
            ir, field, names = _trace(system, dtype, fn, (int(n_out),))
            real, sfx = _DTYPES[dtype]
            mvec = bool(_environment()["mvec"]) and bool(_mvec_names([ir]))
            D, P = ir.dim, ir.n_params

            def source(vec: bool) -> str:
                g = _CGen(ir, real, sfx)
                return "\n".join(_c_prelude(real, sfx, D, P, [ir], vec, dtype)
                                 + _c_aos_function("explorer_field", g, D, P, int(n_out))
                                 + [f"int64_t explorer_abi(void) {{ return {_ABI}; }}", ""])
            try:
                src = source(mvec)
                lib = _compile(src, _flags([ir], dtype, mvec))
            except Unsupported:
                if not mvec:
                    raise
                src = source(False)
                lib = _compile(src, [])
            st = NativeStepper(lib, solver="function", dtype=dtype, dim=D, bound=math.inf,
                               param_names=names, structural=dict(structural), source=src)

            def compiled(x: torch.Tensor, params) -> torch.Tensor:
                return st._aos("explorer_field", x, params, int(n_out))

            _verify(st, system, field, names, dtype, compiled=compiled, what=name)
        except Exception as e:  # noqa: BLE001 - optional: the caller keeps torch
            log.debug("native function %s of %s unavailable: %s", name, type(system).__name__, e)
            compiled = None
        _functions[key] = compiled
        while len(_functions) > _MAX_STEPPERS:          # custom systems: a class per parse
            _functions.pop(next(iter(_functions)))
        _key_locks.pop(key, None)
        return compiled


def _key(system: DynamicalSystem, solver: str, dtype: torch.dtype, fma: bool = False) -> tuple:
    structural = tuple((p.name, int(system.params[p.name])) for p in system.parameters if p.integer)
    return (type(system), structural, solver, dtype, float(system.bound), bool(fma))


def refusal(system: DynamicalSystem, solver: str, dtype: torch.dtype = torch.float64, *,
            fma: bool = False) -> str | None:
    """Why :func:`native_stepper` gave (or would give) ``None`` for these arguments, in a
    few words; ``None`` when it gave a stepper or was not asked yet."""
    if not available():
        return str(_environment().get("reason") or "disabled (EXPLORER_NATIVE=0)")
    return _refusals.get(_key(system, solver, dtype, fma))


def _build(system: DynamicalSystem, solver: str, dtype: torch.dtype, structural,
           fma: bool) -> NativeStepper:
    if solver not in SOLVERS:
        raise Unsupported(f"solver {solver!r} (native: {', '.join(SOLVERS)})")
    if (solver in SDE_SOLVERS) != bool(system.stochastic) or (
            not system.stochastic and (solver == "map") != system.is_map):
        raise Unsupported(f"solver {solver!r} does not fit a {system.kind}")
    if dtype not in _DTYPES:
        raise Unsupported(f"dtype {dtype}")
    bound = float(system.bound)
    if not bound > 0:
        raise Unsupported("bound must be positive")
    template = type(system)(**dict(structural))
    if system.stochastic:
        return _build_sde(template, solver, dtype, structural, fma, bound)
    ir, field, names = _trace(template, dtype)
    mvec = bool(_environment()["mvec"]) and bool(_mvec_names(ir))
    contract = ["-ffp-contract=fast"] if fma else []
    src = _c_source(ir, solver, dtype, bound, mvec)
    try:
        lib = _compile(src, _flags(ir, dtype, mvec) + contract)
    except Unsupported as e:
        if not mvec:
            raise
        # an older glibc lacks some vector variants (they came in 2.35): scalar libm calls
        log.debug("native build with libmvec failed (%s); retrying without", e)
        src = _c_source(ir, solver, dtype, bound, False)
        lib = _compile(src, contract)
    st = NativeStepper(lib, solver=solver, dtype=dtype, dim=template.dim, bound=bound,
                       param_names=names, structural=dict(structural), source=src, fma=fma)
    _verify(st, template, field, names, dtype)
    return st


def _build_sde(template: SDE, solver: str, dtype: torch.dtype, structural, fma: bool,
               bound: float) -> NativeStepper:
    """An SDE stepper: drift, diffusion (and, for Milstein with state-dependent noise, the
    diffusion derivative) traced like a flow's field; Euler-Maruyama or Milstein in C with
    the counter-based noise of :func:`philox_normals`."""
    D, noise, M = template.dim, template.noise, template.n_noises
    drift, field, names = _trace(template, dtype)
    gshape = (D,) if noise == "diagonal" else (D, M)
    diff, gfield, _ = _trace(template, dtype, template.diffusion, gshape)
    dg = dgfield = None
    if solver == "milstein" and not template.additive:
        if noise != "diagonal":
            raise Unsupported("milstein needs diagonal or additive noise")
        if type(template).diffusion_derivative is SDE.diffusion_derivative:
            raise Unsupported("milstein with state-dependent noise needs an analytic "
                              "diffusion_derivative (the default uses autograd)")
        dg, dgfield, _ = _trace(template, dtype, template.diffusion_derivative, (D,))
    irs = [drift, diff] + ([dg] if dg is not None else [])
    mvec = bool(_environment()["mvec"]) and bool(_mvec_names(irs))
    # no FP traps: lets gcc if-convert the selects of Box-Muller and vectorise the step
    # (values are unchanged: no reassociation, no contraction, NaN/inf kept)
    contract = ["-fno-trapping-math"] + (["-ffp-contract=fast"] if fma else [])
    src = _c_source_sde(drift, diff, dg, solver, dtype, bound, mvec, noise, M)
    try:
        lib = _compile(src, _flags(irs, dtype, mvec) + contract)
    except Unsupported as e:
        if not mvec:
            raise
        log.debug("native build with libmvec failed (%s); retrying without", e)
        src = _c_source_sde(drift, diff, dg, solver, dtype, bound, False, noise, M)
        lib = _compile(src, contract)
    st = NativeStepper(lib, solver=solver, dtype=dtype, dim=D, bound=bound, param_names=names,
                       structural=dict(structural), source=src, fma=fma, noise=noise, n_noises=M)
    _verify(st, template, field, names, dtype, what="drift")
    _verify(st, template, gfield, names, dtype, compiled=st.diffusion, what="diffusion")
    if dg is not None:
        _verify(st, template, dgfield, names, dtype,
                compiled=lambda x, p: st._aos("explorer_dg", x, p, D), what="diffusion derivative")
    return st
