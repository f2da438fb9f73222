r"""Lyapunov spectra by the Benettin/QR method, batched; Kaplan-Yorke dimension.

The state evolves together with ``k`` tangent vectors ``Q`` (D, k) under the variational
equation, :math:`\dot Q = J(x) Q` for flows (integrated by RK4 alongside the state) or
:math:`Q \leftarrow J(x) Q` for maps. Every few steps ``Q`` is re-orthonormalised by a QR
decomposition and :math:`\log |R_{ii}|` is accumulated; the exponents are these sums over
the elapsed time, after a transient in which ``Q`` aligns with the dominant directions.

Stochastic systems (SDEs) are refused with :class:`~explorer.core.system.UnsupportedKindError`
(tangent dynamics of a noisy step are not what this estimates); use ``sde.drift_system()``
for the exponents of the deterministic skeleton.

Batching: many initial conditions on the attractor are averaged (the exponents are
ergodic averages, so B members of length T estimate like one of length B*T but cost about
as much as one: the work is vectorised), or, when the system carries tensor parameters, one
spectrum is returned per parameter value. Computed in float64 (invariants need accuracy).

References:
    G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, Meccanica 15, 9 (1980).
    J. L. Kaplan, J. A. Yorke, Lecture Notes in Mathematics 730, 204 (1979).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import ParameterError
from ..limits import check_size
from ..simulate import divergence_status, prepare_initial_states, simulate
from ..system import DynamicalSystem
from ..traced import field_and_jacobian


@dataclass(frozen=True)
class LyapunovResult:
    """Lyapunov exponents, largest first (per time unit for flows, per iteration for maps).

    Attributes:
        exponents: (k,) mean over the batch members; for a parameter sweep (P, k), one
            spectrum per parameter value.
        stderr: standard error of the mean across members (k,), NaN for a sweep or B = 1.
        per_member: (B, k) the estimate of each member; NaN rows for diverged members.
        kaplan_yorke_dimension: of ``exponents`` (a float, or a (P,) tensor for a sweep).
        averaging_time: time (flows) or iterations (maps) each member was averaged over.
        time_unit: ``"time unit"`` or ``"iteration"``: the exponents are per this.
        diverged: (B,) members that left the bound (excluded from the mean).
        history_time: (C,) averaging time at up to ~100 points of the run; ``history``:
            (C, k) the running estimate then (mean over the bounded members): how the
            spectrum converged. None for a sweep.
    """

    exponents: torch.Tensor
    stderr: torch.Tensor
    per_member: torch.Tensor
    kaplan_yorke_dimension: Any
    averaging_time: float
    diverged: torch.Tensor
    system: str
    params: dict[str, Any]
    kind: str
    sweep: bool = False
    history_time: torch.Tensor | None = None
    history: torch.Tensor | None = None
    time_unit: str = "time unit"

    @property
    def status(self) -> str:
        return divergence_status(self.diverged)

    def as_dict(self) -> dict[str, Any]:
        """The JSON record of ``dynamics-explorer lyapunov --json``."""
        def clean(v):
            if isinstance(v, torch.Tensor):
                v = v.tolist()
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, list):
                return [clean(e) for e in v]
            return v
        params = {k: clean(v) for k, v in self.params.items()}
        return {"system": self.system, "params": params, "exponents": clean(self.exponents),
                "kaplan_yorke_dimension": clean(self.kaplan_yorke_dimension),
                "stderr": clean(self.stderr), "averaging_time": self.averaging_time,
                "per": self.time_unit,
                "status": self.status}


def kaplan_yorke_dimension(exponents) -> float:
    r"""Kaplan-Yorke dimension :math:`D_{KY} = j + \sum_{i\le j}\lambda_i / |\lambda_{j+1}|`,
    with ``j`` the largest index whose partial sum is non-negative (0 if
    :math:`\lambda_1 < 0`; the full dimension if every partial sum is non-negative)."""
    lam = sorted((float(v) for v in torch.as_tensor(exponents).flatten()), reverse=True)
    if not lam or any(math.isnan(v) for v in lam):
        return math.nan
    total, j = 0.0, 0
    for i, v in enumerate(lam):
        if total + v < 0:
            break
        total += v
        j = i + 1
    if j == len(lam):
        return float(len(lam))
    if j == 0:
        return 0.0
    return j + total / abs(lam[j])


def _orthonormalise(Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """QR of a batch of tall matrices (B, D, k): the orthonormal factor and ``|diag R|`` (B, k).

    For few vectors, modified Gram-Schmidt applied twice ("twice is enough") in batched
    vector ops is far cheaper than one LAPACK call per small matrix, and as accurate here.
    """
    k = Q.shape[-1]
    if k > 6:
        Qf, R = torch.linalg.qr(Q)
        return Qf, torch.diagonal(R, dim1=-2, dim2=-1).abs()
    cols, norms = [], []
    for j in range(k):
        v = Q[..., j]                                                 # (B, D)
        for _ in range(2):
            for c in cols:
                v = v - (c * v).sum(-1, keepdim=True) * c
        n = v.norm(dim=-1, keepdim=True)                              # (B, 1)
        # after projecting out the earlier columns, the norm is |R_jj|
        cols.append(v / n)
        norms.append(n)
    return torch.stack(cols, -1), torch.cat(norms, -1)


def _flow_step(fj, x, Q, dt):
    """One RK4 step of the state (B, D) and its tangent vectors (B, D, k); ``fj(x)`` gives
    the field and its Jacobian."""
    def g(x_, Q_):
        f, J = fj(x_)
        return f, J @ Q_

    k1x, k1Q = g(x, Q)
    k2x, k2Q = g(x + 0.5 * dt * k1x, Q + 0.5 * dt * k1Q)
    k3x, k3Q = g(x + 0.5 * dt * k2x, Q + 0.5 * dt * k2Q)
    k4x, k4Q = g(x + dt * k3x, Q + dt * k3Q)
    return (x + dt / 6.0 * (k1x + 2.0 * (k2x + k3x) + k4x),
            Q + dt / 6.0 * (k1Q + 2.0 * (k2Q + k3Q) + k4Q))


def _map_step(fj, x, Q, dt):
    """One iteration of the state and its tangent vectors: Q <- J(x) Q, x <- F(x)."""
    f, J = fj(x)
    return f, J @ Q


def _field_and_jacobian_fn(system: DynamicalSystem, p, x: torch.Tensor):
    """``fj(x) -> (f (B, D), J (B, D, D))`` for the torch loop: the field and Jacobian
    compiled together into one C function where they trace (systems too large for a native
    tangent stepper: torch then multiplies the tangent vectors), else torch's."""
    D = system.dim
    if _native_applies(system, x):
        from ..native import native_function

        def both(z, q):
            f, J = field_and_jacobian(system, z, q)
            return torch.cat([f, J.flatten(-2)], -1)

        compiled = native_function(system, "field_and_jacobian", both, D + D * D, x.dtype)
        if compiled is not None:
            def fj(z):
                out = compiled(z, p)
                return out[:, :D], out[:, D:].view(-1, D, D)
            return fj
    return lambda z: field_and_jacobian(system, z, p)


def lyapunov_spectrum(system: DynamicalSystem, x0=None, *, k: int | None = None,
                      steps: int | None = None, transient: int | None = None,
                      dt: float | None = None, renorm_every: int | None = None,
                      batch: int | None = None, generator: torch.Generator | None = None,
                      spread: float | None = None, dtype: torch.dtype = torch.float64, device=None,
                      progress: Callable[[float], None] | None = None,
                      stop: threading.Event | None = None) -> LyapunovResult:
    """Lyapunov spectrum of a flow or a map (largest first), batched.

    Args:
        system: any :class:`DynamicalSystem`; tensor parameters give one spectrum each.
        x0: initial state(s) (D,) or (B, D); default: the system's, perturbed per member.
        k: number of exponents (default: all D).
        steps: averaging steps per member (default: 2,500 for flows, 4,000 for maps).
        transient: steps discarded first, while ``Q`` aligns (default: 1,000).
        dt: time step for flows (default: the system's recommended step).
        renorm_every: steps between QR re-orthonormalisations (default 10 for flows; 1 for
            maps, whose per-step contraction can exceed float64's range within a few steps).
        batch: members averaged (default 128 when not a parameter sweep).
        generator: RNG for the member perturbations; ``spread``: their relative size
            (default 0.1 for flows, large enough that members decorrelate during the
            transient; 0.01 for maps, which decorrelate within a few iterations).
        progress, stop: progress callback with the fraction done; an event that ends the
            run early (the exponents are then averaged over the time done).

    Returns:
        :class:`LyapunovResult`.

    Raises:
        UnsupportedKindError: for a stochastic system (an SDE).
    """
    system.require_deterministic("Lyapunov spectra")
    is_map = system.is_map
    D = system.dim
    k = D if k is None else int(k)
    if not 1 <= k <= D:
        raise ParameterError(f"k must be between 1 and the dimension {D}, got {k}")
    steps = int(steps if steps is not None else (4000 if is_map else 2500))
    transient = int(transient if transient is not None else 1000)
    renorm_every = int(renorm_every or (1 if is_map else 10))
    if steps < renorm_every or transient < 0 or renorm_every < 1:
        raise ParameterError("need steps >= renorm_every >= 1 and transient >= 0")
    dt = system.time_step(dt)
    sweep = len(system.batch_shape()) > 0
    if batch is None and not sweep and (x0 is None or torch.as_tensor(x0).ndim == 1):
        batch = 128
    if spread is None:
        spread = 0.01 if is_map else 0.1
    x, _ = prepare_initial_states(system, x0, batch=batch, generator=generator, spread=spread,
                                  dtype=dtype, device=device)
    B = x.shape[0]
    check_size(batch=B, steps=(steps + transient) * D * (k + 1), saved=1, dim=D * (k + 1),
               itemsize=x.element_size(), what="lyapunov")
    p = system.bind(x)
    step = _map_step if is_map else _flow_step
    native = _variational_stepper(system, k, x)
    native_ok = torch.ones(B, dtype=torch.bool) if native is not None else None
    fj = _field_and_jacobian_fn(system, p, x) if native is None else None
    Q = torch.eye(D, k, dtype=dtype, device=x.device).expand(B, D, k).contiguous()
    log_sum = torch.zeros(B, k, dtype=dtype, device=x.device)
    ok = torch.ones(B, dtype=torch.bool, device=x.device)
    bound = float(system.bound)
    total = transient + steps
    eye = torch.eye(D, k, dtype=dtype, device=x.device).expand(B, D, k)
    done = averaged = 0
    chunks = -(-steps // renorm_every)
    record_every = max(1, chunks // 100)          # chunks between points of the running estimate
    hist_t: list[float] = []
    hist: list[torch.Tensor] = []
    with torch.inference_mode():                      # no autograd bookkeeping per op
        while done < total:
            if stop is not None and stop.is_set():
                break
            n = min(renorm_every, total - done)
            if native is not None:       # the n steps in one call of generated C
                state = torch.cat([x, Q.reshape(B, D * k)], -1)
                native.run(state, system.params, dt, n_steps=n, record_every=n + 1,
                           ok=native_ok, threads=1)
                x, Q = state[:, :D], state[:, D:].reshape(B, D, k)
            else:
                for _ in range(n):
                    x, Q = step(fj, x, Q, dt)
            fine = (torch.isfinite(x).all(-1) & (x.abs() <= bound).all(-1)
                    & torch.isfinite(Q).flatten(1).all(-1))
            if native_ok is not None:
                fine = fine & native_ok
            if not bool(fine.all()):
                ok = ok & fine
                # frozen, harmless values for diverged members keep the QR well defined
                x = torch.where(ok.unsqueeze(-1), x, torch.zeros_like(x))
                Q = torch.where(ok.view(B, 1, 1), Q, eye)
            Q, diag = _orthonormalise(Q)                                # (B, D, k), (B, k)
            if done + n > transient:        # a chunk reaching past the transient counts whole
                log_sum = log_sum + torch.log(diag.clamp_min(1e-300))
                averaged += n
                if not sweep and ((averaged // renorm_every) % record_every == 0 or done + n >= total):
                    run = torch.sort(log_sum[ok] / (averaged * dt), dim=-1, descending=True)[0]
                    if run.shape[0]:
                        hist_t.append(averaged * dt)
                        hist.append(run.mean(0))
            done += n
            if progress is not None:
                progress(done / total)
    if averaged == 0:
        raise ParameterError("stopped before any averaging step; nothing to report")
    elapsed = averaged * dt
    per = log_sum / elapsed                                          # (B, k)
    per = torch.where(ok.unsqueeze(-1), per, torch.full_like(per, float("nan")))
    per, _ = torch.sort(per, dim=-1, descending=True)
    if sweep:
        exps = per
        stderr = torch.full_like(per, float("nan"))
        ky = torch.tensor([kaplan_yorke_dimension(r) for r in per], dtype=dtype)
    else:
        good = per[ok]
        if good.shape[0] == 0:
            exps = torch.full((k,), float("nan"), dtype=dtype)
            stderr = exps.clone()
        else:
            exps = good.mean(0)
            stderr = (good.std(0, unbiased=True) / math.sqrt(good.shape[0])
                      if good.shape[0] > 1 else torch.full_like(exps, float("nan")))
        ky = kaplan_yorke_dimension(exps) if k == D else math.nan
    return LyapunovResult(exponents=exps.cpu(), stderr=stderr.cpu(), per_member=per.cpu(),
                          kaplan_yorke_dimension=ky, averaging_time=float(elapsed),
                          diverged=(~ok).cpu(), system=system.name, params=dict(system.params),
                          kind=system.kind, sweep=sweep, time_unit=system.time_unit,
                          history_time=torch.tensor(hist_t, dtype=dtype) if hist else None,
                          history=torch.stack(hist).cpu() if hist else None)


#: largest D * D * k (multiply-adds of J Q per field evaluation) for which the state and its
#: tangent vectors are stepped in generated C; larger systems keep torch's batched matmul
NATIVE_TANGENT_WORK = 256


def _variational_stepper(system: DynamicalSystem, k: int, x: torch.Tensor):
    """The native stepper (:mod:`explorer.core.native`) of :func:`variational_class` for
    this system and ``k`` vectors, or None where it does not apply (no compiler, not on the
    CPU, a system whose dimension varies with a parameter, too many tangent terms, a field
    that does not trace). Steps the same RK4 (or map) as the torch loop, in one call per
    chunk between re-orthonormalisations: about 13 times faster for Lorenz-63, whose torch
    loop spends its time on the overhead of ~130 small tensor operations per step."""
    from ..native import native_stepper

    base = type(system)
    D = system.dim
    if not _native_applies(system, x) or D * D * k > NATIVE_TANGENT_WORK:
        return None
    aug = variational_class(base, k)(**system.params)
    try:
        return native_stepper(aug, "map" if system.is_map else "rk4", x.dtype)
    except Exception:                       # any failure to build: the torch loop instead
        return None


def _native_applies(system: DynamicalSystem, x: torch.Tensor) -> bool:
    """Generated C can step this system's tangent dynamics: CPU states of float32/float64
    and a dimension that no parameter changes."""
    variables = type(system).variables
    fixed = isinstance(variables, (tuple, list)) and len(variables) == system.dim
    return x.device.type == "cpu" and fixed and x.dtype in (torch.float32, torch.float64)


def prepare_native(names) -> None:
    """Build (or load from the disk cache) the native tangent steppers of these systems'
    full spectra, so that a first Lyapunov spectrum does not wait for the compiler (about
    1.5 s per system on a cold cache). Systems where the native path does not apply are
    skipped."""
    from ..registry import get_system

    for name in names:
        try:
            system = get_system(name)
        except Exception:                   # an optional system that is not installed
            continue
        _variational_stepper(system, system.dim, torch.zeros(1, system.dim, dtype=torch.float64))


@functools.lru_cache(maxsize=None)
def variational_class(base: type, k: int) -> type:
    r"""The system of a state and ``k`` tangent vectors for ``base`` (a flow or map class of
    fixed dimension D): state :math:`(x, Q)` with Q (D, k) stored row-major after x, field
    :math:`(f(x), J(x) Q)` (flows) or map :math:`(F(x), J(x) Q)`: the variational equation,
    written elementwise so that it traces into generated C. RK4 on it is exactly the torch
    loop's step (:func:`_flow_step`)."""
    D = len(base.variables)

    def rhs(self, x, p):
        s = x[..., :D]
        f, J = field_and_jacobian(self._base, s, p)
        Q = [[x[..., D + i * k + j] for j in range(k)] for i in range(D)]
        JQ = [sum(J[..., i, m] * Q[m][j] for m in range(D)) for i in range(D) for j in range(k)]
        return torch.cat([f, torch.stack(JQ, -1)], -1)

    return _augmented_class(base, f"Variational{k}", f"variational{k}", rhs,
                            extra_variables=tuple(f"q{i}_{j}" for i in range(D) for j in range(k)),
                            extra_x0=(0.0,) * (D * k))


def _augmented_class(base: type, prefix: str, suffix: str, rhs, *, extra_variables: tuple,
                     extra_x0: tuple, extra_parameters: tuple = ()) -> type:
    """A flow or map class (as ``base``) whose state is ``base``'s followed by
    ``extra_variables``, with field ``rhs(self, x, p)``; ``self._base`` is a ``base`` with the
    same parameters (less ``extra_parameters``). Metadata (time step, bound, period) are
    ``base``'s."""
    from ..system import Flow, Map

    own = {q.name for q in extra_parameters}

    def init(self, **params):
        self._base = base(**{k: v for k, v in params.items() if k not in own})
        super(cls, self).__init__(**params)

    attrs = {"name": f"{base.name}+{suffix}", "title": base.title,
             "variables": tuple(base.variables) + tuple(extra_variables),
             "parameters": tuple(base.parameters) + tuple(extra_parameters),
             "default_x0": tuple(base.default_x0) + tuple(extra_x0),
             "default_dt": base.default_dt, "bound": base.bound, "period": base.period,
             "__init__": init, "rhs": rhs, "__module__": __name__}
    cls = type(f"{prefix}{base.__name__}", (Map if base.is_map else Flow,), attrs)
    return cls


# ----------------------------------------------------------------- largest exponent, fast
#: the parameter of a tangent system that scales the exponent's accumulator (1/steps or
#: 1/(steps dt)), so the accumulator ends as the average and stays within the system's bound
TANGENT_WEIGHT = "tangent_weight"


@functools.lru_cache(maxsize=None)
def tangent_class(base: type) -> type:
    r"""The system of a state, one unit tangent vector and the exponent's accumulator, for
    ``base`` (a flow or map class): the largest Lyapunov exponent of many points becomes one
    :func:`~explorer.core.simulate.simulate` call, on its fastest path (generated C where the
    field and Jacobian trace, Inductor for large runs, CUDA on a GPU).

    State :math:`(x, u, \ell)` with :math:`|u| = 1`. Maps (Benettin with one vector):
    :math:`x' = F(x)`, :math:`u' = Ju/|Ju|`, :math:`\ell' = \ell + w \log|Ju|`.
    Flows (the continuous QR method with one vector): :math:`\dot x = f(x)`,
    :math:`\dot u = Ju - (u\cdot Ju)\,u`, :math:`\dot\ell = w\,u\cdot Ju`; the projection keeps
    :math:`|u| = 1` and :math:`u \cdot Ju` is the instantaneous growth rate of the leading
    direction. With :math:`w` = 1/steps (maps) or 1/(steps dt) (flows) and :math:`\ell = 0`
    after the transient, :math:`\ell` ends as :math:`\lambda_1`.
    """
    from ..system import Param

    D = len(base.variables)

    def rhs(self, x, p):
        s = x[..., :D]
        u = [x[..., D + j] for j in range(D)]
        f, J = field_and_jacobian(self._base, s, p)
        Ju = [sum(J[..., i, j] * u[j] for j in range(D)) for i in range(D)]   # elementwise: traceable
        if base.is_map:
            n = torch.sqrt(sum(v * v for v in Ju))
            growth = x[..., 2 * D] + p[TANGENT_WEIGHT] * torch.log(n + 1e-300)
            return torch.cat([f, torch.stack([v / n for v in Ju], -1), growth.unsqueeze(-1)], -1)
        r = sum(a * b for a, b in zip(u, Ju))
        return torch.cat([f, torch.stack([v - r * a for v, a in zip(Ju, u)], -1),
                          (p[TANGENT_WEIGHT] * r).unsqueeze(-1)], -1)

    return _augmented_class(base, "Tangent", "tangent", rhs,
                            extra_variables=tuple(f"u{i}" for i in range(D)) + ("lambda1",),
                            extra_x0=(1.0,) + (0.0,) * D,
                            extra_parameters=(Param(TANGENT_WEIGHT, 1.0, 0.0, 1e12),))


def largest_exponent(system: DynamicalSystem, x0: torch.Tensor, *, steps: int, transient: int,
                     dt: float | None = None, device=None) -> torch.Tensor:
    """The largest Lyapunov exponent from each of the (B, D) starts ``x0`` (with the system's
    tensor parameters, one value per start), by :func:`tangent_class` in two ``simulate``
    calls (the transient, then the averaging); float64. NaN where the orbit diverged.

    Per member it is the exponent of one orbit (no average over members), so the same start
    and parameters give the same number in any batch."""
    system.require_deterministic("Lyapunov exponents")
    if steps < 1 or transient < 0:
        raise ParameterError(f"need steps >= 1 and transient >= 0, got {steps} and {transient}")
    dt = system.time_step(dt)
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    system.check_state(x0)
    B, D = x0.reshape(-1, system.dim).shape
    tan = tangent_class(type(system))
    weight = 1.0 / (steps * dt)
    swept = tan(**{**system.params, TANGENT_WEIGHT: weight})
    start = torch.cat([x0.reshape(B, D), torch.full((B, D), 1.0 / math.sqrt(D), dtype=torch.float64),
                       torch.zeros(B, 1, dtype=torch.float64)], -1)
    if transient:
        start = simulate(swept, start, steps=0, transient=transient, dt=dt, device=device).x[-1]
        start = start.clone()
        start[:, 2 * D] = 0.0
        lost = ~torch.isfinite(start).all(-1)
        start[lost] = torch.nan
        start = torch.nan_to_num(start, nan=0.0)
    else:
        lost = torch.zeros(B, dtype=torch.bool)
    tr = simulate(swept, start, steps=steps, save_every=steps, dt=dt, device=device)
    lam = tr.x[-1][:, 2 * D].cpu()
    return torch.where(lost.cpu() | tr.diverged.cpu(), torch.nan, lam)
