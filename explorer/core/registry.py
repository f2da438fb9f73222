"""Name -> class maps for systems: what the CLI lists and the dropdowns show.

Built-in systems register themselves with the :func:`register` decorator when
:mod:`explorer.core.flows`, :mod:`explorer.core.maps` and :mod:`explorer.core.sdes` are
imported. Listings leave stochastic systems (SDEs) out unless asked (``stochastic=``): the
pages' pickers list deterministic systems until they handle noise; :func:`system_class`
finds every system. The dysts catalogue
(optional extra) is added lazily by :func:`load_dysts` the first time a listing asks for it.
"""

from __future__ import annotations

import re
import threading
from typing import Iterable

from .errors import UnknownSystemError
from .system import DynamicalSystem

_SYSTEMS: dict[str, type[DynamicalSystem]] = {}
_ALIASES: dict[str, str] = {}
_lock = threading.Lock()
_builtins_loaded = False
_dysts_state: dict[str, object] = {"loaded": False, "skipped": {}, "error": None}


def normalize(name: str) -> str:
    """Registry key of a name: lower case, letters and digits only (``"Lorenz-63"`` -> ``"lorenz63"``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register(cls: type[DynamicalSystem]) -> type[DynamicalSystem]:
    """Class decorator: add a system to the registry under its ``name`` and ``aliases``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name` to be registered")
    key = normalize(cls.name)
    with _lock:
        if key in _SYSTEMS and _SYSTEMS[key] is not cls:
            raise ValueError(f"a system named {cls.name!r} is already registered")
        _SYSTEMS[key] = cls
        for alias in (cls.title, *cls.aliases):
            if alias and normalize(alias) not in _SYSTEMS:
                _ALIASES.setdefault(normalize(alias), key)
    return cls


def _ensure_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        from . import flows, maps, sdes  # noqa: F401  (registration by import)
        _builtins_loaded = True


def load_dysts() -> dict[str, str]:
    """Register every convertible dysts flow (once). Returns ``{name: reason}`` of those skipped.

    When dysts is not installed this returns ``{}`` and :func:`dysts_status` says so.
    """
    if not _dysts_state["loaded"]:
        _dysts_state["loaded"] = True
        try:
            from . import dysts_adapter
        except ImportError as e:  # pragma: no cover - adapter module always present
            _dysts_state["error"] = str(e)
            return {}
        try:
            skipped = dysts_adapter.register_dysts(register)
        except ImportError:
            _dysts_state["error"] = "dysts is not installed (pip install 'dynamics-explorer[dysts]')"
            return {}
        _dysts_state["skipped"] = skipped
    return dict(_dysts_state["skipped"])  # type: ignore[arg-type]


def dysts_status() -> dict[str, object]:
    """Whether the dysts catalogue is available, and which of its systems were skipped and why."""
    load_dysts()
    return {"available": _dysts_state["error"] is None,
            "error": _dysts_state["error"],
            "skipped": dict(_dysts_state["skipped"])}  # type: ignore[arg-type]


def system_names(origin: str | Iterable[str] | None = None, *, dysts: bool = True,
                 stochastic: bool | None = False) -> list[str]:
    """Registered system names, built-ins first, each group in registration order.

    ``stochastic``: ``False`` (default) lists deterministic systems (flows and maps) only,
    ``True`` stochastic ones (SDEs) only, ``None`` all of them.
    """
    _ensure_builtins()
    if dysts:
        load_dysts()
    origins = {origin} if isinstance(origin, str) else (set(origin) if origin else None)
    order = {"builtin": 0, "dysts": 1, "custom": 2}
    items = [(order.get(c.origin, 3), i, c.name) for i, c in enumerate(_SYSTEMS.values())
             if (origins is None or c.origin in origins)
             and (stochastic is None or bool(c.stochastic) == stochastic)]
    return [n for *_, n in sorted(items)]


def system_class(name: str) -> type[DynamicalSystem]:
    """The class registered under ``name`` (case and punctuation ignored)."""
    _ensure_builtins()
    key = normalize(name)
    key = _ALIASES.get(key, key)
    if key not in _SYSTEMS:
        load_dysts()
        key = _ALIASES.get(normalize(name), normalize(name))
    if key not in _SYSTEMS:
        close = [n for n in (c.name for c in _SYSTEMS.values()) if key[:4] and key[:4] in normalize(n)]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else "; `dynamics-explorer systems` lists them"
        raise UnknownSystemError(f"unknown system {name!r}{hint}")
    return _SYSTEMS[key]


def get_system(name: str, **params) -> DynamicalSystem:
    """An instance of the named system with validated parameters."""
    return system_class(name)(**params)
