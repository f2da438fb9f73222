r"""Pointwise quantities along a trajectory, used to colour attractors.

* speed: :math:`\lVert f(x) \rVert` for a flow, the step length
  :math:`\lVert F(x) - x \rVert` for a map;
* local expansion rate: for a flow the largest eigenvalue of the symmetric part of the
  Jacobian, :math:`\lambda_{\max}\big(\tfrac12 (J + J^\top)\big)`, the instantaneous rate at
  which the most stretched direction grows; for a map :math:`\ln \sigma_{\max}(J)`, the log of
  the largest one-step stretching factor. Its time average bounds the largest Lyapunov
  exponent from above.

For an SDE both are those of the drift (the deterministic part of the motion).

Computed in the dtype of the input (float32 for display), in chunks so that a million
points need no more than a few tens of MB.
"""

from __future__ import annotations

import torch

from ..system import DynamicalSystem

CHUNK = 262_144


@torch.inference_mode()
def speed(system: DynamicalSystem, x: torch.Tensor) -> torch.Tensor:
    """Speed at each state ``x`` (..., D) -> (...)."""
    p = system.bind(x)
    out = torch.empty(x.shape[:-1], dtype=x.dtype, device=x.device)
    flat, res = x.reshape(-1, x.shape[-1]), out.reshape(-1)
    for i in range(0, flat.shape[0], CHUNK):
        z = flat[i: i + CHUNK]
        res[i: i + CHUNK] = torch.linalg.vector_norm(system.velocity(z, p), dim=-1)
    return out


def local_expansion(system: DynamicalSystem, x: torch.Tensor) -> torch.Tensor:
    """Local expansion rate at each state ``x`` (..., D) -> (...) (see the module docstring)."""
    p = system.bind(x)
    out = torch.empty(x.shape[:-1], dtype=x.dtype, device=x.device)
    flat, res = x.reshape(-1, x.shape[-1]), out.reshape(-1)
    for i in range(0, flat.shape[0], CHUNK):
        z = flat[i: i + CHUNK]
        ok = torch.isfinite(z).all(-1)
        J = system.jacobian(torch.where(ok.unsqueeze(-1), z, torch.zeros_like(z)), p)  # (n, D, D)
        with torch.inference_mode():
            if system.continuous_time:
                val = torch.linalg.eigvalsh(0.5 * (J + J.transpose(-1, -2)))[..., -1]
            else:
                val = torch.log(torch.linalg.matrix_norm(J, ord=2).clamp_min(1e-30))
            res[i: i + CHUNK] = torch.where(ok, val.to(out.dtype), torch.nan)
    return out
