"""Native backend: a system's vector field compiled to C, the whole fixed-step loop in C.

Eager torch pays ~140 us of operator overhead per step of a single trajectory, and the
``torch.compile`` path a 40-60 s cold compile per system. Here the field is run once on a
small batch under a recording dispatch mode (the aten ops ``make_fx`` would trace, without
its import cost), translated op by op into C, and gcc builds (in ~0.1-0.5 s) a
shared library that runs ``n_steps`` steps of RK4, Euler or map iteration with the
divergence masking of :func:`explorer.core.simulate._make_chunk`. It is called through
:mod:`ctypes`, which releases the GIL, so a UI stays responsive while it runs.

Layout of the generated code: the batch is cut into blocks of ``W`` trajectories; OpenMP
spreads the blocks over ``torch.get_num_threads()`` threads; each block keeps its states in
structure-of-arrays form (``S[d][j]``) on the stack for the whole call, and the innermost loop
over the ``W`` lanes of a block is an ``omp simd`` loop that gcc vectorises (glibc's libmvec
supplies vector ``sin``/``cos``/``exp``...). Flags: ``-O3 -march=native -fno-math-errno
-ffp-contract=off``; not ``-ffast-math``, whose finite-math assumption would break the NaN/inf
checks. Without contraction every ``+ - * /`` rounds as in torch, so fields made of
arithmetic agree with eager torch to the last bit; transcendental functions differ from
torch's by a few ulp. ``native_stepper(..., fma=True)`` allows fused multiply-adds
(about 1.35x faster on polynomial fields, no longer bit-identical to torch).

Safety: the C source is built only from generated identifiers, fixed op templates and
``repr(float)`` literals; no text of a system (names, user-typed equations) reaches it.
Ops outside the whitelist (``roll``/``cat`` over the state as in Lorenz-96, matmul,
reductions, ...) make :func:`native_stepper` return ``None``; callers then keep torch.
Every translation is checked against the torch field on random states and parameters
before use.

Environment: ``EXPLORER_NATIVE=0`` disables the backend; compiled libraries are cached by
source hash in ``$EXPLORER_CACHE/native`` (default ``~/.cache/dynamics-explorer/native``),
written atomically, so concurrent processes may share the directory.

Public API: :func:`available`, :func:`native_stepper`, :class:`NativeStepper`,
:class:`Unsupported`.
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

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .system import DynamicalSystem

log = logging.getLogger(__name__)
aten = torch.ops.aten

__all__ = ["available", "native_stepper", "NativeStepper", "Unsupported", "cache_dir",
           "SOLVERS", "refusal"]

SOLVERS = ("rk4", "euler", "map")
"""The fixed-step schemes the native backend implements (formulas of :mod:`.solvers`)."""

_ABI = 2                      # bump when the generated C interface changes
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


@dataclass(frozen=True)
class _Stacked:
    """The (B, k) result of stacking lane values along the last axis (only for the output)."""

    items: tuple


_STATE = object()


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
# shape/dtype plumbing that is the identity on one lane's scalar
_PASS = {aten.unsqueeze.default, aten.clone.default, aten.alias.default, aten.detach.default,
         aten.lift_fresh_copy.default, aten.lift_fresh.default, aten.contiguous.default,
         aten.expand.default, aten.view.default,
         aten._unsafe_view.default, aten.reshape.default, aten.squeeze.default,
         aten.squeeze.dim, aten.squeeze.dims, aten.expand_as.default, aten.broadcast_to.default,
         aten.view_as.default, aten.reshape_as.default, aten.resolve_conj.default,
         aten.resolve_neg.default}
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


def _lane_shape_ok(t: torch.Tensor, batch: int) -> bool:
    return tuple(t.shape) in ((), (1,), (batch,))


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


def _translate(ops: list[tuple], x: torch.Tensor, params: list[torch.Tensor], result,
               dim: int, batch: int) -> _IR:
    """Turn the recorded ops of ``field(x (batch, D), *params)`` into a lane program.

    Tensors are identified by ``id`` (all of them are kept alive by ``ops``). A tensor not
    derived from ``x`` or the parameters is a constant when all its elements are equal
    (factories, ``torch.tensor(c)``, folded constant expressions); every op that touches a
    derived tensor must be in the whitelist.
    """
    ir = _IR(dim, len(params))
    env: dict[int, Any] = {id(x): _STATE}
    for k, t in enumerate(params):
        env[id(t)] = _Ref("p", k)

    def tracked(obj) -> bool:
        return any(id(t) in env for t in _tensors_in(obj))

    def lane(a) -> _Ref:
        """An operand as a lane value (tensor, Python number or bool)."""
        if isinstance(a, torch.Tensor):
            v = env.get(id(a))
            if isinstance(v, _Ref):
                return v
            if v is not None:
                raise Unsupported("the state or a stacked result used as a value")
            if a.numel() == 0 or not _lane_shape_ok(a, batch) or a.is_complex():
                raise Unsupported("a constant tensor that is not a scalar")
            flat = a.reshape(-1)
            if not bool((flat == flat[0]).all()) and not bool(flat.isnan().all()):
                raise Unsupported("a constant tensor that varies over the batch")
            v0 = flat[0].item()
            if a.dtype == torch.bool:
                return _Ref("c", 1.0 if v0 else 0.0, "b")
            return _const(float(v0))
        if isinstance(a, (bool, int, float)):
            return _const(a)
        raise Unsupported(f"operand of type {type(a).__name__}")

    def real(r: _Ref) -> _Ref:
        return r if r.typ == "r" else (ir.add("b2r", (r,)) if r.kind != "c" else _Ref("c", r.val))

    def boolean(r: _Ref) -> _Ref:
        return r if r.typ == "b" else ir.add("r2b", (r,), "b")

    for f, args, kw, out in ops:
        if not tracked((args, kw)):
            continue                 # a constant computation: its results are read as values
        # ------------------------------------------------ the state and the output stack
        if f is aten.unbind.int:
            d = args[1] if len(args) > 1 else kw.get("dim", 0)
            if env.get(id(args[0])) is not _STATE or d not in (-1, 1):
                raise Unsupported("unbind of something other than the state's last axis")
            for i, t in enumerate(out):
                env[id(t)] = _Ref("x", i % dim)
            continue
        if f is aten.select.int:
            if env.get(id(args[0])) is not _STATE or args[1] not in (-1, 1):
                raise Unsupported("select of something other than the state's last axis")
            env[id(out)] = _Ref("x", args[2] % dim)
            continue
        if f is aten.stack.default:
            d = args[1] if len(args) > 1 else kw.get("dim", 0)
            if d not in (-1, 1):
                raise Unsupported("stack along another axis than the last")
            env[id(out)] = _Stacked(tuple(lane(a) for a in args[0]))
            continue
        if f is aten.unsqueeze.default and args[1] in (-1, 1) and isinstance(args[0], torch.Tensor) \
                and args[0].ndim == 1:
            env[id(out)] = _Stacked((lane(args[0]),))
            continue
        if f is aten.cat.default:
            d = args[1] if len(args) > 1 else kw.get("dim", 0)
            parts = [env.get(id(a)) for a in args[0]]
            if d not in (-1, 1) or not all(isinstance(p, _Stacked) for p in parts):
                raise Unsupported("cat of something other than stacked components")
            env[id(out)] = _Stacked(tuple(r for p in parts for r in p.items))
            continue
        # ------------------------------------------------ everything else is per lane
        if not isinstance(out, torch.Tensor) or not _lane_shape_ok(out, batch):
            raise Unsupported(f"{f} does not work lane by lane")
        typ = _typ_of(f, out)
        if f in _PASS:
            v = lane(args[0])
        elif f in _CONVERT:
            src = lane(args[0])
            v = real(src) if typ == "r" else boolean(src)
        elif f in _LIKE:
            v = _Ref("c", _LIKE[f], typ)
        elif f in _FULL:
            v = _const(args[_FULL[f]]) if typ == "r" else _Ref("c", float(bool(args[_FULL[f]])), "b")
        elif f in _ARITH:
            a, b = real(lane(args[0])), real(lane(args[1]))
            alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
            if kw.get("rounding_mode") is not None:
                raise Unsupported("div with a rounding mode")
            if alpha != 1:
                b = ir.add("*", (_const(alpha), b))
            v = ir.add(_ARITH[f], (a, b))
        elif f in (aten.div.Tensor_mode, aten.div.Scalar_mode):
            if kw.get("rounding_mode") != "trunc":
                raise Unsupported("div with floor rounding")
            v = ir.add("fn:trunc", (ir.add("/", (real(lane(args[0])), real(lane(args[1])))),))
        elif f in (aten.rsub.Scalar, aten.rsub.Tensor):
            a, b = real(lane(args[0])), real(lane(args[1]))
            alpha = kw.get("alpha", args[2] if len(args) > 2 else 1)
            if alpha != 1:
                a = ir.add("*", (_const(alpha), a))
            v = ir.add("-", (b, a))
        elif f in _UNARY_FN:
            v = ir.add("fn:" + _UNARY_FN[f], (real(lane(args[0])),))
        elif f in _UNARY_OP:
            v = ir.add(_UNARY_OP[f], (real(lane(args[0])),))
        elif f in _BOOL_UNARY:
            op = _BOOL_UNARY[f]
            a = lane(args[0])
            v = ir.add(op, (boolean(a) if op == "not" else real(a),), "b")
        elif f in _CMP:
            v = ir.add(_CMP[f], (real(lane(args[0])), real(lane(args[1]))), "b")
        elif f in _LOGIC:
            a, b = lane(args[0]), lane(args[1])
            if "bitwise" in str(f) and not (a.typ == "b" and b.typ == "b"):
                raise Unsupported("bitwise op on non-bool values")
            v = ir.add(_LOGIC[f], (boolean(a), boolean(b)), "b")
        elif f in _BINARY:
            v = ir.add(_BINARY[f], (real(lane(args[0])), real(lane(args[1]))))
        elif f in (aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar):
            v = _pow(ir, real(lane(args[0])), real(lane(args[1])))
        elif f in (aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar):
            c = boolean(lane(args[0]))
            a, b = lane(args[1]), lane(args[2])
            a, b = (real(a), real(b)) if typ == "r" else (boolean(a), boolean(b))
            v = ir.add("where", (c, a, b), typ)
        elif f in (aten.masked_fill.Scalar, aten.masked_fill.Tensor):
            xv, m, fill = real(lane(args[0])), boolean(lane(args[1])), real(lane(args[2]))
            v = ir.add("where", (m, fill, xv))
        elif f in (aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default,
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
        elif f is aten.heaviside.default:
            v = ir.add("heaviside", (real(lane(args[0])), real(lane(args[1]))))
        elif f in (aten.lerp.Scalar, aten.lerp.Tensor):
            a, b, w = (real(lane(t)) for t in args[:3])
            v = ir.add("+", (a, ir.add("*", (w, ir.add("-", (b, a))))))
        else:
            raise Unsupported(f"op {f} is not in the native whitelist")
        env[id(out)] = v
    res = env.get(id(result)) if isinstance(result, torch.Tensor) else None
    if not isinstance(res, _Stacked) or len(res.items) != dim:
        raise Unsupported("the field does not end in a stack of its D components")
    ir.outputs = [real(r) for r in res.items]
    return ir


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


def _trace(template: DynamicalSystem, dtype: torch.dtype) -> tuple[_IR, Callable, list[str]]:
    """Run ``template.rhs`` once at a small batch under a recorder and translate the ops.

    Returns the IR, the torch field ``field(x, *pvals)`` and the float parameter names.
    The ops seen are those ``make_fx`` would record (aten level, after autograd)."""
    D = template.dim
    names = [p.name for p in template.parameters if not p.integer]
    fixed = {p.name: template.params[p.name] for p in template.parameters if p.integer}

    def field(x, *pv):
        return template.rhs(x, {**fixed, **dict(zip(names, pv))})

    B = _TRACE_BATCH if D != _TRACE_BATCH else _TRACE_BATCH + 4
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode(False), torch.no_grad():
        x_ex = (template.initial_state(dtype).expand(B, D)
                + 0.01 * torch.randn(B, D, generator=gen, dtype=dtype)).contiguous()
        p_ex = [torch.tensor(float(template.params[n]), dtype=dtype) for n in names]
        rec = _Recorder()
        try:
            with rec:
                result = field(x_ex, *p_ex)
        except Unsupported:
            raise
        except Exception as e:  # a field that cannot run on this batch
            raise Unsupported(f"the field failed on a test batch: {type(e).__name__}: {e}") from e
        ir = _translate(rec.ops, x_ex, p_ex, result, D, B)
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
        live = set()
        todo = [r.val for r in ir.outputs if r.kind == "t"]
        while todo:
            i = todo.pop()
            if i in live:
                continue
            live.add(i)
            todo.extend(a.val for a in ir.instrs[i].args if a.kind == "t")
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


def _c_source(ir: _IR, solver: str, dtype: torch.dtype, bound: float, mvec: bool) -> str:
    real, sfx = _DTYPES[dtype]
    g = _CGen(ir, real, sfx)
    D, P, W = ir.dim, ir.n_params, _BLOCK[dtype]
    PA = max(P, 1)
    xs = [f"x{d}" for d in range(D)]
    ps = [f"p{k}" for k in range(P)]
    L: list[str] = []
    L += ["#include <math.h>", "#include <float.h>", "#include <stdint.h>",
          "#if defined(__AVX512F__) || defined(__AVX__)", "#include <immintrin.h>", "#endif", "",
          f"typedef {real} real;", "#define FLT_MAX_float FLT_MAX", "#define FLT_MAX_double DBL_MAX",
          f"#define W {W}", f"#define VEC {64 // (4 if real == 'float' else 8)}",
          f"#define D {D}", f"#define NP {PA}", ""]
    if mvec:
        for name in _mvec_names(ir):
            sig = ", ".join([real] * (2 if name in ("pow", "atan2", "hypot") else 1))
            L.append(f'__attribute__((simd("notinbranch"), const, nothrow)) '
                     f'extern {real} {name}{sfx}({sig});')
        L.append("")
    # --- the field on one AoS batch (verification, Jacobian-free uses)
    L += ["void explorer_field(const real *restrict xin, int64_t B, const real *const *pp,",
          "                    const int64_t *pstride, real *restrict fout) {",
          "  for (int64_t i = 0; i < B; i++) {"]
    L += [f"    const real x{d} = xin[i * D + {d}];" for d in range(D)]
    L += [f"    const real p{k} = pp[{k}][i * pstride[{k}]];" for k in range(P)]
    L += [f"    real f{d};" for d in range(D)]
    L += g.stage(xs, ps, [f"f{d}" for d in range(D)], "a", "    ")
    L += [f"    fout[i * D + {d}] = f{d};" for d in range(D)]
    L += ["  }", "}", ""]
    # --- one step of a block of W lanes, with the divergence mask of simulate._make_chunk
    L += ["static inline __attribute__((always_inline)) void",
          "block_step(real (*restrict S)[W], real (*restrict PV)[W], int32_t *restrict OK,",
          "           int32_t *restrict NK, const real h, const real h2, const real h6,",
          "           const int nw) {",
          "  #pragma omp simd",
          "  for (int j = 0; j < nw; j++) {"]
    L += [f"    const real x{d} = S[{d}][j];" for d in range(D)]
    L += [f"    const real p{k} = PV[{k}][j];" for k in range(P)]
    ind = "    "
    if solver == "map":
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
    blit = _lit(bound, real)
    L.append("    int32_t good = OK[j];")
    L += [f"    good = good & ({g.fn('fabs')}(n{d}) <= {blit});" for d in range(D)]
    L += [f"    S[{d}][j] = good ? n{d} : x{d};" for d in range(D)]
    L += ["    NK[j] += good;", "    OK[j] = good;", "  }", "}", ""]
    # --- recording a row of a block: streaming stores for large outputs (no read for
    # ownership, no cache pollution), plain stores otherwise
    sx = "ps" if real == "float" else "pd"
    L += ["static inline void store_row(real *restrict o, const real *restrict s, int nb,",
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
    # --- the driver
    L += [f"int64_t explorer_abi(void) {{ return {_ABI}; }}", "",
          "int explorer_run(real *restrict xio, int64_t B, const real *const *pp,",
          "                 const int64_t *pstride, double dt, int64_t n_steps, int64_t every,",
          "                 real *restrict out, uint8_t *restrict ok, int32_t *restrict n_ok,",
          "                 int nthreads, int stream) {",
          "  if (B <= 0 || n_steps < 0 || every < 1) return B < 0 || n_steps < 0 || every < 1;",
          "  const int64_t nblk = (B + W - 1) / W;",
          "  const int64_t n_rec = n_steps / every, tail = n_steps - n_rec * every;",
          "  const real h = (real)dt, h2 = (real)(0.5 * dt), h6 = (real)(dt / 6.0);",
          "  if (nthreads < 1) nthreads = 1;",
          "  if (nthreads > nblk) nthreads = (int)nblk;",
          "  #pragma omp parallel for num_threads(nthreads) schedule(dynamic) if(nthreads > 1)",
          "  for (int64_t b = 0; b < nblk; b++) {",
          "    const int64_t i0 = b * W;",
          "    const int nb = (int)((B - i0) < W ? (B - i0) : W);",
          "    const int nw = (nb + VEC - 1) / VEC * VEC;   /* lanes computed: whole vectors */",
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
          "      for (int64_t s = 0; s < every; s++) block_step(S, PV, OK, NK, h, h2, h6, nw);",
          "      real *o = out + (r * D) * B + i0;",
          "      for (int d = 0; d < D; d++) store_row(o + d * B, S[d], nb, stream);",
          "    }",
          "#if defined(__AVX__)",
          "    if (stream) _mm_sfence();                     /* order the streamed records */",
          "#endif",
          "    for (int64_t s = 0; s < tail; s++) block_step(S, PV, OK, NK, h, h2, h6, nw);",
          "    for (int j = 0; j < nb; j++) {",
          "      for (int d = 0; d < D; d++) xio[(i0 + j) * D + d] = S[d][j];",
          "      ok[i0 + j] = (uint8_t)OK[j];",
          "      n_ok[i0 + j] = NK[j];",
          "    }",
          "  }",
          "  return 0;",
          "}", ""]
    return "\n".join(L)


def _mvec_names(ir: _IR) -> list[str]:
    """The libm functions of the program that have libmvec vector variants."""
    ops = {i.op for i in ir.instrs}
    used = {op.split(":", 1)[1] for op in ops if op.startswith(("fn:", "fn2:"))}
    if "sigmoid" in ops:
        used.add("exp")
    return sorted(used & _MVEC_FUNCS)


def _flags(ir: _IR, dtype: torch.dtype, mvec: bool) -> list[str]:
    """Extra gcc flags: with libmvec, the vectorised functions must not be builtins (else gcc
    merges sin/cos into sincos, which has no usable vector variant, and the loop stays
    scalar); their declarations in the source carry ``simd`` and ``const`` instead."""
    if not mvec:
        return []
    sfx = _DTYPES[dtype][1]
    return [f"-fno-builtin-{n}{sfx}" for n in _mvec_names(ir)] + ["-lmvec"]


# ============================================================================ build + load
_libs_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL] = {}
_lib_locks: dict[str, threading.Lock] = {}


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
        p = ctypes.c_void_p
        lib.explorer_run.restype = ctypes.c_int
        lib.explorer_run.argtypes = [p, ctypes.c_int64, p, p, ctypes.c_double, ctypes.c_int64,
                                     ctypes.c_int64, p, p, p, ctypes.c_int, ctypes.c_int]
        lib.explorer_field.restype = None
        lib.explorer_field.argtypes = [p, ctypes.c_int64, p, p, p]
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
        solver: ``"rk4"``, ``"euler"`` or ``"map"``; ``dtype``: float32 or float64;
        dim: D; ``bound``: the divergence bound; ``param_names``: the float parameters in
        the order of ``system.parameters``; ``structural``: the fixed integer parameters;
        ``source``: the generated C code; ``fma``: whether contraction was allowed.
    """

    def __init__(self, lib: ctypes.CDLL, *, solver: str, dtype: torch.dtype, dim: int,
                 bound: float, param_names: list[str], structural: dict[str, int], source: str,
                 fma: bool = False):
        self._lib = lib
        self.solver, self.dtype, self.dim, self.bound = solver, dtype, dim, bound
        self.param_names = list(param_names)
        self.structural = dict(structural)
        self.source = source
        self.fma = fma

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
    def field(self, x: torch.Tensor, params) -> torch.Tensor:
        """The compiled vector field (or map) at ``x`` (B, D): a new (B, D) tensor."""
        B = self._check_x(x)
        xc = x.detach().contiguous()
        out = torch.empty_like(xc)
        keep, arr, st = self._param_ptrs(params, B)
        if B:
            self._lib.explorer_field(xc.data_ptr(), B, arr, st, out.data_ptr())
        del keep
        return out

    def run(self, x: torch.Tensor, params, dt: float, *, n_steps: int, record_every: int,
            ok: torch.Tensor | None = None, n_ok: torch.Tensor | None = None,
            out: torch.Tensor | None = None, threads: int | None = None):
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
            threads: OpenMP threads (default ``torch.get_num_threads()``).

        Returns:
            ``(records, ok, n_ok)``; records is (n_steps // record_every, D, B).
        """
        B = self._check_x(x)
        n_steps, record_every = int(n_steps), int(record_every)
        if n_steps < 0 or record_every < 1:
            raise ValueError("n_steps must be >= 0 and record_every >= 1")
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
        nt = int(threads if threads is not None else torch.get_num_threads())
        stream = int(out.numel() * out.element_size() >= _STREAM_BYTES)
        rc = self._lib.explorer_run(xc.data_ptr(), B, arr, st, float(dt), n_steps, record_every,
                                    out.data_ptr(), ok.data_ptr(), n_ok.data_ptr(), nt, stream)
        del keep
        if rc != 0:
            raise RuntimeError(f"native run failed (code {rc})")
        if xc is not x:
            x.copy_(xc)
        return out, ok, n_ok


# ============================================================================ factory
_steppers: OrderedDict = OrderedDict()
_steppers_lock = threading.RLock()
_key_locks: dict[Any, threading.Lock] = {}
_refusals: dict[Any, str] = {}                   # key -> why native_stepper gave None


def _lock_for(key) -> threading.Lock:
    with _steppers_lock:
        return _key_locks.setdefault(key, threading.Lock())


def _verify(stepper: NativeStepper, template: DynamicalSystem, field: Callable, names: list[str],
            dtype: torch.dtype) -> None:
    """The compiled field against torch on random states and swept random parameters."""
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
    got = stepper.field(x, pdict)
    if want.shape != got.shape:
        want = want.expand_as(got)
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    fin = torch.isfinite(want)
    scale = torch.where(fin, want.abs(), torch.zeros_like(want)).amax(0, keepdim=True) + 1.0
    bad = ~((got - want).abs() <= tol * (want.abs() + scale)) & ~(torch.isnan(got) & torch.isnan(want))
    bad &= ~(torch.isinf(want) & (got == want))
    if bool(bad.any()):
        i = int(bad.any(1).nonzero()[0])
        raise Unsupported(f"compiled field disagrees with torch (e.g. at {x[i].tolist()}: "
                          f"{got[i].tolist()} vs {want[i].tolist()})")


def native_stepper(system: DynamicalSystem, solver: str, dtype: torch.dtype = torch.float64,
                   *, fma: bool = False) -> NativeStepper | None:
    """The native stepper for ``system``'s class, or ``None`` when it cannot be had.

    Cached per (system class, structural integer parameters, solver, dtype, bound); the
    compiled library is also cached on disk by source hash. ``None`` (reason logged at
    debug level) when the backend is unavailable, the solver is not ``rk4``/``euler``/``map``
    or does not fit the system's kind, the dtype is not float32/float64, or the field uses
    an op outside the whitelist. ``fma=True`` lets gcc contract ``a * b + c`` into fused
    multiply-adds (faster; results then differ from torch by rounding).
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


def _key(system: DynamicalSystem, solver: str, dtype: torch.dtype, fma: bool = False) -> tuple:
    structural = tuple((p.name, int(system.params[p.name])) for p in system.parameters if p.integer)
    return (type(system), structural, solver, dtype, float(system.bound), bool(fma))


def refusal(system: DynamicalSystem, solver: str, dtype: torch.dtype = torch.float64, *,
            fma: bool = False) -> str | None:
    """Why :func:`native_stepper` gave (or would give) ``None`` for these arguments, in a
    few words; ``None`` when it gave a stepper or was not asked yet."""
    if not available():
        return str(_environment().get("reason") or "disabled (EXPLORER_NATIVE=0)")
    if system.stochastic:
        return "stochastic systems (SDEs) are not supported"
    return _refusals.get(_key(system, solver, dtype, fma))


def _build(system: DynamicalSystem, solver: str, dtype: torch.dtype, structural,
           fma: bool) -> NativeStepper:
    if system.stochastic:
        raise Unsupported("stochastic systems (SDEs) are not supported")
    if solver not in SOLVERS:
        raise Unsupported(f"solver {solver!r} (native: {', '.join(SOLVERS)})")
    if (solver == "map") != system.is_map:
        raise Unsupported(f"solver {solver!r} does not fit a {system.kind}")
    if dtype not in _DTYPES:
        raise Unsupported(f"dtype {dtype}")
    bound = float(system.bound)
    if not bound > 0:
        raise Unsupported("bound must be positive")
    template = type(system)(**dict(structural))
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
