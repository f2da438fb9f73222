"""Device and dtype policy, and compilation with an eager fallback.

The device is chosen once: ``EXPLORER_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ...) when
set, else CUDA when present, else CPU. The CLI flag ``--device`` and, later, the UI call
:func:`set_default_device`. Compute functions otherwise follow the device and dtype of their
inputs.

Dtypes: float64 for invariants (Lyapunov exponents, fixed points), float32 where speed
matters (rendering, bulk simulation, training).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Callable

import torch

from .errors import ExplorerError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_default: torch.device | None = None


class DeviceError(ExplorerError):
    """The requested compute device does not exist or is not usable."""


def parse_device(spec: str | torch.device | None) -> torch.device:
    """Turn ``"cpu"``, ``"cuda"``, ``"cuda:0"``, ``"auto"`` or ``None`` into a usable device.

    Raises:
        DeviceError: unknown name, or CUDA asked for where none is present.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec.strip().lower() if isinstance(spec, str) else spec)
    except (RuntimeError, ValueError) as e:
        raise DeviceError(f"unknown device {spec!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} asked for, but no CUDA device is available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type not in ("cpu", "mps"):
        raise DeviceError(f"unsupported device type {dev.type!r}: use 'cpu' or 'cuda'")
    return dev


def default_device() -> torch.device:
    """The session-wide compute device (``EXPLORER_DEVICE``, else CUDA if present, else CPU)."""
    global _default
    with _lock:
        if _default is None:
            _default = parse_device(os.environ.get("EXPLORER_DEVICE"))
        return _default


def set_default_device(spec: str | torch.device | None) -> torch.device:
    """Override the default device (CLI flag, UI selector). Returns the device now in use."""
    global _default
    dev = parse_device(spec)
    with _lock:
        _default = dev
    return dev


def available_devices() -> list[str]:
    """Names of the devices a user can pick: ``cpu`` and every CUDA device."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return names


def describe_device(dev: torch.device | None = None, threads: int | None = None) -> str:
    """A short human-readable name, e.g. ``"cpu (2 threads)"`` or ``"cuda:0 (NVIDIA H100)"``;
    ``threads``: the CPU thread count to state (default: the calling thread's)."""
    dev = dev or default_device()
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    n = torch.get_num_threads() if threads is None else int(threads)
    return f"{dev.type} ({n} thread{'' if n == 1 else 's'})"


_compile_failed: set[str] = set()


def compile_or_eager(fn: Callable, key: str, **compile_kwargs) -> Callable:
    """Return ``torch.compile(fn)`` with a fallback to ``fn`` on any compile-time failure.

    The first call of the compiled function triggers compilation; if that raises (no C
    compiler, an unsupported op, ...), the failure is logged once per ``key`` and the eager
    function is used from then on. Results agree with eager mode to floating-point tolerance.
    """
    if os.environ.get("EXPLORER_NO_COMPILE") or key in _compile_failed:
        return fn
    # every system compiles the same chunk code with its own field: allow many variants
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < 256:
            setattr(cfg, name, 256)
    try:
        compiled = torch.compile(fn, dynamic=False, **compile_kwargs)
    except Exception as e:  # pragma: no cover - torch.compile unavailable
        log.warning("torch.compile unavailable (%s); using eager mode", e)
        _compile_failed.add(key)
        return fn

    state = {"ok": None}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if state["ok"] is False:
            return fn(*args, **kwargs)
        if state["ok"] is True:
            return compiled(*args, **kwargs)
        try:
            out = compiled(*args, **kwargs)
        except Exception as e:
            log.warning("compilation of %s failed (%s: %s); falling back to eager mode",
                        key, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            _compile_failed.add(key)
            state["ok"] = False
            return fn(*args, **kwargs)
        state["ok"] = True
        return out

    return wrapper
