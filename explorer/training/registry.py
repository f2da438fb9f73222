"""Which model class a checkpoint names: a registry from model kind or class path to a builder.

A checkpoint records its model's class (``"module.QualName"``), ``kind`` (a short name, when the
class has one) and config (plain data). :func:`build_model_from_spec` turns that back into a
module: first a builder registered with :func:`register_model` under the kind or the class
path, then the reconstruction models of :mod:`explorer.models` (looked up by kind, imported
only when needed, so this module and :mod:`.checkpoint` import no model code).

A page that trains its own model registers it once::

    register_model("conv-ae", lambda config: ConvAutoencoder(**config))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..core.errors import ParameterError

#: model kind or "module.QualName" -> builder(config dict) -> module
_BUILDERS: dict[str, Callable[[Mapping[str, Any]], torch.nn.Module]] = {}


def register_model(name: str, builder: Callable[[Mapping[str, Any]], torch.nn.Module]) -> None:
    """Register ``builder(config_dict) -> module`` under a model kind or class path."""
    if not isinstance(name, str) or not name:
        raise ParameterError(f"a model registry name must be a non-empty string, got {name!r}")
    _BUILDERS[name] = builder


def registered_models() -> tuple[str, ...]:
    """The names registered so far (the built-in reconstruction kinds are always found)."""
    return tuple(sorted(_BUILDERS))


def _builtin(kind: str | None):
    """The builder of a built-in reconstruction model kind (PLRNN family), or None."""
    from ..models import plrnn  # lazily: no model import at load

    if kind == "ionsagernet":                                 # the I-OnsagerNet SDE model
        from ..models.onsager import build_onsager

        return build_onsager
    if kind not in plrnn.MODELS:
        return None
    return lambda config: plrnn.build_model(plrnn.config_from_dict({"kind": kind, **dict(config)}))


def build_model_from_spec(spec: Mapping[str, Any]) -> torch.nn.Module:
    """A fresh module for a checkpoint's model record ``{"class", "kind", "config"}``.

    Raises:
        LookupError: no builder is known for that kind or class.
    """
    kind, cls = spec.get("kind"), spec.get("class")
    config = dict(spec.get("config") or {})
    config.pop("kind", None)
    for name in (kind, cls):
        if name and name in _BUILDERS:
            return _BUILDERS[name](config)
    builder = _builtin(kind)
    if builder is None:
        raise LookupError(f"no model registered for {kind or cls!r} "
                          "(explorer.training.registry.register_model)")
    return builder(config)
