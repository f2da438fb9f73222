"""Simulation: *what is recorded* when a system is advanced by a solver.

:func:`simulate` is the one entry point for trajectories (UI, notebooks and CLI all call it).
Essential arguments are positional; every policy is keyword-only with a default. Failures
come back inside the result: a batch member that reaches NaN/inf or leaves the system's
bound is frozen, its later samples are NaN, and ``Trajectory.diverged_at`` says when. The
other members go on; nothing raises from inside a long run.

Dtypes: float64 by default (accuracy); pass ``dtype=torch.float32`` for speed (rendering,
large ensembles).

Stochastic systems (:class:`~explorer.core.system.SDE`) are simulated the same way, batched;
nothing is seeded globally. Given a ``seed`` (or neither a seed nor a generator: a fresh seed
is drawn and recorded in ``Trajectory.seed``), the Wiener increments come from a
counter-based generator (Philox4x32-10, :func:`explorer.core.native.philox_normals`) keyed by
(seed, step, trajectory, component): the same numbers on the native backend (generated C,
any number of threads) and on eager torch, whatever the chunking, transient or batch size.
Given an explicit ``generator=``, they are drawn step by step from that ``torch.Generator``
on eager torch, as before. ``Trajectory.backend`` records the backend every run actually
used (``"native"``, ``"inductor"`` or ``"eager"``) and ``Trajectory.backend_note`` why a
faster one was refused.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .device import _compile_failed, compile_or_eager, default_device
from .errors import ExplorerError, ParameterError, ShapeError
from .fastpath import COMPILE_OPTIONS as SOA_COMPILE_OPTIONS, Unsupported, make_soa_chunk
from .native import counter_normals, native_stepper, refusal as native_refusal
from .limits import check_size
from .solvers import SOLVERS, dopri5_advance
from .system import DynamicalSystem

log = logging.getLogger(__name__)

# Steps fused into one compiled call: enough to amortise the Python call overhead, few
# enough to keep the unrolled graph (and its compile time) small.
COMPILED_STEPS_PER_CALL = 32
# Auto-compile when a call does at least this many trajectory-steps.
AUTO_COMPILE_WORK = 200_000_000


def divergence_status(diverged: torch.Tensor) -> str:
    """``"ok"``, ``"partly diverged"`` or ``"diverged"`` from a (B,) flag tensor."""
    n = int(diverged.sum())
    if n == 0:
        return "ok"
    return "diverged" if n == diverged.numel() else "partly diverged"


@dataclass(frozen=True)
class Trajectory:
    """A recorded simulation, time-major.

    Attributes:
        t: sample times, shape (T,).
        x: states, shape (T, B, D); NaN after a member diverged.
        diverged_at: (B,) time at which each member diverged, NaN where it stayed bounded.
        system: registry name; ``params``: the parameter values used (floats or tensors).
        solver, dt: how it was computed; ``batched`` is False for a single trajectory
            started from a (D,) state, so :attr:`states` gives (T, D).
        backend: where the steps ran: ``"native"`` (generated C), ``"inductor"``
            (``torch.compile``) or ``"eager"`` (plain torch).
        backend_note: why a faster backend was refused or failed (``""`` when none was).
        seed: the seed of the run's noise when ``simulate`` made it (``seed=`` given, or,
            for an SDE given neither, drawn fresh and recorded so the run can be repeated):
            it keys the counter-based Wiener increments of an SDE (and seeds the
            ``torch.Generator`` of perturbed initial copies); ``None`` when a generator was
            passed or none was needed.
    """

    t: torch.Tensor
    x: torch.Tensor
    diverged_at: torch.Tensor
    system: str
    params: dict[str, Any]
    solver: str
    dt: float
    batched: bool = True
    variables: tuple[str, ...] = ()
    backend: str = "eager"
    backend_note: str = ""
    seed: int | None = None

    @property
    def diverged(self) -> torch.Tensor:
        """(B,) True for members that diverged."""
        return ~torch.isnan(self.diverged_at)

    @property
    def status(self) -> str:
        """``"ok"``, ``"partly diverged"`` or ``"diverged"``."""
        return divergence_status(self.diverged)

    @property
    def message(self) -> str:
        """One human sentence about the status (shown in the UI and by the CLI)."""
        n, B = int(self.diverged.sum()), self.diverged.numel()
        if n == 0:
            which = "1 trajectory" if B == 1 else f"{B:,} trajectories"
            return f"{which} × {len(self.t):,} samples, all bounded"
        first = float(self.diverged_at[self.diverged].min())
        return (f"{n:,} of {B:,} {'trajectory' if B == 1 else 'trajectories'} diverged (first at "
                f"t = {first:.4g}); values after divergence are NaN")

    @property
    def states(self) -> torch.Tensor:
        """(T, D) for a single unbatched trajectory, else (T, B, D)."""
        return self.x if self.batched else self.x[:, 0]


def planned_batch(system: DynamicalSystem, x0=None, batch: int | None = None) -> int:
    """The number of trajectories a call will run, from the arguments' shapes alone (no
    allocation): the largest of the rows of ``x0``, ``batch`` and the parameter sweep."""
    rows = 1
    if x0 is not None:
        try:
            shape = tuple(x0.shape) if hasattr(x0, "shape") else np.shape(x0)
        except (TypeError, ValueError):         # ragged: prepare_initial_states says what is wrong
            shape = ()
        rows = shape[0] if len(shape) == 2 else 1
    pshape = system.batch_shape()
    return max(int(rows), int(batch or 1), int(pshape[0]) if len(pshape) == 1 else 1)


def prepare_initial_states(system: DynamicalSystem, x0=None, *, batch: int | None = None,
                           generator: torch.Generator | None = None, spread: float = 1e-3,
                           dtype: torch.dtype = torch.float64,
                           device: torch.device | str | None = None) -> tuple[torch.Tensor, bool]:
    """Initial states as a (B, D) tensor, and whether the caller asked for a batch.

    ``x0`` may be ``None`` (the system's default state), a (D,) or a (B, D) array. When a
    batch larger than the given states is asked for, states are replicated and perturbed by
    ``spread * (1 + |x|)`` times standard normal noise drawn from ``generator`` (explicit
    RNG; the first member stays exact). For a parameter sweep without ``batch``, every
    parameter value starts from the same state.
    """
    dev = torch.device(device) if device is not None else (
        x0.device if isinstance(x0, torch.Tensor) else default_device())
    if x0 is None:
        x = system.initial_state(dtype, dev)
    else:
        try:
            x = torch.as_tensor(x0, dtype=dtype, device=dev)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ShapeError(f"initial state must be numeric, got {type(x0).__name__}") from e
    system.check_state(x)
    if x.ndim > 2:
        raise ShapeError(f"initial states must be (D,) or (B, D), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ShapeError("initial state contains NaN or inf")
    batched = x.ndim == 2 or (batch is not None) or len(system.batch_shape()) > 0
    x = x.reshape(-1, system.dim)                                   # (B0, D)
    pshape = system.batch_shape()
    if len(pshape) > 1:
        raise ShapeError(f"parameter tensors must be 1-D sweeps, got shape {tuple(pshape)}")
    sizes = {n for n in (x.shape[0], batch, pshape[0] if pshape else None) if n not in (None, 1)}
    if len(sizes) > 1:
        raise ShapeError(f"batch sizes disagree: initial states {x.shape[0]}, batch={batch}, "
                         f"parameter sweep {tuple(pshape)}")
    B = sizes.pop() if sizes else 1
    check_size(batch=B, steps=0, saved=1, dim=system.dim, itemsize=x.element_size(),
               what="initial states")
    if x.shape[0] == 1 and B > 1 and batch is None:
        x = x.expand(B, -1)                      # a parameter sweep: every value from x0
    elif x.shape[0] == 1 and B > 1:
        noise = torch.randn(B - 1, system.dim, generator=generator, dtype=dtype,
                            device="cpu" if generator is None else generator.device).to(dev)
        x = torch.cat([x, x + spread * (1.0 + x.abs()) * noise], 0)
    return x.contiguous(), batched


def _tensor_params(system: DynamicalSystem, like: torch.Tensor) -> dict[str, Any]:
    """Parameters as tensors on ``like``'s device/dtype (compiled code then never recompiles
    for new values); structural integers stay Python ints."""
    out = {}
    for p in system.parameters:
        v = system.params[p.name]
        if p.integer:
            out[p.name] = v
        else:
            out[p.name] = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return out


def _make_chunk(template: DynamicalSystem, step: Callable, n_saves: int, every: int,
                bound: float) -> Callable:
    """A function doing ``n_saves * every`` fixed steps, recording every ``every``-th state.

    Divergence masking is fused into the step: a member whose next state is non-finite or
    beyond ``bound`` keeps its last good state, and ``n_ok`` counts its good steps.
    """

    def chunk(x, ok, n_ok, dt, params):
        def f(z):
            return template.rhs(z, params)

        return _masked_steps(lambda x_: step(f, x_, dt), x, ok, n_ok, n_saves, every, bound)

    return chunk


def _masked_steps(advance: Callable, x, ok, n_ok, n_saves: int, every: int, bound: float):
    """``n_saves * every`` steps ``x <- advance(x)``, recording every ``every``-th state; a
    member whose next state is non-finite or beyond ``bound`` keeps its last good state and
    ``n_ok`` counts its good steps. Returns (S, B, D) samples, x, ok, n_ok."""
    outs = []
    for _ in range(n_saves):
        for _ in range(every):
            xn = advance(x)
            good = ok & (xn.abs() <= bound).all(-1)              # False for NaN and inf too
            x = torch.where(good.unsqueeze(-1), xn, x)
            n_ok = n_ok + good.to(n_ok.dtype)
            ok = good
        outs.append(x)
    return torch.stack(outs), x, ok, n_ok


def _make_sde_chunk(template: DynamicalSystem, step: Callable, n_saves: int, every: int,
                    bound: float, noise: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """As :func:`_make_chunk` for an SDE: ``step(system, p, x, dt, dW)`` with the increments
    ``dW = noise(x)`` (B, M) drawn once per step for every member (diverged ones too, so
    the stream of draws never depends on divergence or on how the run is chunked)."""

    def chunk(x, ok, n_ok, dt, params):
        return _masked_steps(lambda x_: step(template, params, x_, dt, noise(x_)), x, ok, n_ok,
                             n_saves, every, bound)

    return chunk


def _wiener_increments(system: DynamicalSystem, generator: torch.Generator,
                       dt: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``noise(x) -> dW`` (B, M): independent N(0, dt) increments from ``generator``, drawn
    on the generator's device in ``x``'s dtype."""
    scale = math.sqrt(dt)
    M = system.n_noises

    def noise(x):
        z = torch.randn(x.shape[0], M, generator=generator, dtype=x.dtype, device=generator.device)
        return (z if z.device == x.device else z.to(x.device)) * scale

    return noise


def _counter_increments(system: DynamicalSystem, seed: int, dt: float,
                        start: list[int] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``noise(x) -> dW`` (B, M) for eager steps: the counter-based increments of ``seed``
    (those of the native backend), one step per call; ``start`` (a one-element list) holds
    the index of the next step and is advanced (default: from step 0)."""
    scale = math.sqrt(dt)
    M = system.n_noises
    k = [0] if start is None else start
    block: dict[str, Any] = {"k0": -1, "z": None}     # the normals of a few steps ahead

    def noise(x):
        B = x.shape[0]
        z = block["z"]
        i = k[0] - block["k0"]
        if z is None or not 0 <= i < z.shape[0] or z.shape[1] != B or z.dtype != x.dtype:
            n_steps = max(1, min(64, (1 << 18) // max(1, B * M)))
            z = block["z"] = counter_normals(seed, k[0], B, M, x.dtype, x.device,
                                             steps=n_steps)
            block["k0"], i = k[0], 0
        k[0] += 1
        zi = z[i]
        return (zi if zi.device == x.device else zi.to(x.device)) * scale

    return noise


def _noise_generator(system: DynamicalSystem, x0, generator: torch.Generator | None,
                     seed: int | None, device) -> tuple[torch.Generator | None, int | None]:
    """The explicit generator of a run, and the seed to record (see :func:`simulate`)."""
    if seed is not None and generator is not None:
        raise ParameterError("give either generator= or seed=, not both")
    if seed is None and (generator is not None or not system.stochastic):
        return generator, None
    if seed is None:
        seed = secrets.randbits(63)                   # fresh noise, recorded for a rerun
    try:
        seed = int(seed)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"seed must be an integer, got {seed!r}") from e
    if not 0 <= seed < 2 ** 64:
        raise ParameterError(f"seed must be in [0, 2**64), got {seed}")
    dev = torch.device(device) if device is not None else (
        x0.device if isinstance(x0, torch.Tensor) else default_device())
    return torch.Generator(device=dev).manual_seed(seed), seed


_cache_lock = threading.Lock()
_compiled: dict[tuple, tuple[str, Callable, str]] = {}


def _compiled_chunk(system: DynamicalSystem, solver: str, n_steps: int, record_every: int,
                    dtype: torch.dtype) -> tuple[str, Callable, str]:
    """The compiled ``n_steps`` chunk for this system class, solver and dtype (cached).

    Returns ``(layout, fn)``: ``"soa"`` when the field could be split into components
    (vectorised code, see :mod:`explorer.core.fastpath`), else ``"aos"`` (the tensor form).
    Both return the state after every ``record_every``-th step; the caller keeps the
    recorded ones. The third element is the compilation key (in ``device._compile_failed``
    once Inductor failed and the chunk runs eagerly).
    """
    structural = tuple((p.name, system.params[p.name]) for p in system.parameters if p.integer)
    key = (type(system), structural, solver, n_steps, record_every, float(system.bound), dtype)
    with _cache_lock:
        hit = _compiled.get(key)
        if hit is None:
            template = type(system)(**dict(structural))
            tag = f"{system.name}/{solver}/{n_steps}"
            try:
                chunk = make_soa_chunk(template, solver, n_steps, record_every,
                                       float(system.bound), dtype)
                hit = ("soa", compile_or_eager(chunk, key=tag + "/soa",
                                               options=SOA_COMPILE_OPTIONS), tag + "/soa")
            except Unsupported as e:
                log.info("%s: no component form (%s); compiling the tensor form", tag, e)
                chunk = _make_chunk(template, SOLVERS[solver].step, n_steps // record_every,
                                    record_every, float(system.bound))
                hit = ("aos", compile_or_eager(chunk, key=tag), tag)
            _compiled[key] = hit
    return hit


def _resolve_solver(system: DynamicalSystem, solver: str | None) -> str:
    if solver is None:
        return system.default_solver
    if solver not in SOLVERS:
        raise ParameterError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if SOLVERS[solver].kind != system.kind:
        raise ParameterError(f"solver {solver!r} is for {SOLVERS[solver].kind}s; "
                             f"{system.title or system.name} is a {system.kind} "
                             f"(use {', '.join(system.solver_names())})")
    if solver == "milstein" and system.noise != "diagonal" and not system.additive:
        raise ParameterError(f"milstein needs diagonal or additive noise; "
                             f"{system.title or system.name} has general noise (use euler_maruyama)")
    return solver


def _check_count(name: str, value, minimum: int = 0) -> int:
    try:
        iv = int(value)
    except (TypeError, ValueError) as e:
        raise ParameterError(f"{name} must be an integer, got {value!r}") from e
    if iv != value or iv < minimum:
        raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return iv


def simulate(system: DynamicalSystem, x0=None, *, steps: int = 10_000, dt: float | None = None,
             solver: str | None = None, transient: int = 0, save_every: int = 1,
             batch: int | None = None, generator: torch.Generator | None = None,
             seed: int | None = None,
             spread: float = 1e-3, dtype: torch.dtype = torch.float64,
             device: torch.device | str | None = None, compile: bool | str | None = None,
             rtol: float = 1e-6, atol: float = 1e-9,
             progress: Callable[[float], None] | None = None,
             stop: threading.Event | None = None) -> Trajectory:
    """Simulate a flow or an SDE or iterate a map, batched over initial states and parameter
    values.

    Args:
        system: any :class:`DynamicalSystem` (tensor parameters sweep over the batch).
        x0: initial state(s), (D,) or (B, D); ``None`` uses the system's default.
        steps: number of steps recorded after the transient (``T = steps // save_every + 1``).
        dt: time step (flows; default ``system.default_dt``); for ``dopri5`` the output
            spacing is ``dt * save_every`` and the internal steps are adaptive.
        solver: ``"rk4"`` (default for flows), ``"dopri5"``, ``"euler"``; ``"map"`` for maps;
            ``"euler_maruyama"`` (default for SDEs) or ``"milstein"``
            (``system.solver_names()`` lists those that fit).
        transient: steps discarded before recording starts.
        save_every: record every k-th step.
        batch: number of trajectories when ``x0`` is a single state (perturbed copies).
        generator: RNG for the perturbed copies and, for SDEs, the Wiener increments
            (explicit; nothing is seeded globally). An SDE run given a generator runs on
            eager torch and draws torch's normals from it step by step.
        seed: instead of ``generator``: the perturbed copies come from a
            ``torch.Generator`` seeded with it and an SDE's Wiener increments from the
            counter-based stream of this seed (:func:`explorer.core.native.philox_normals`:
            the same on every backend, thread count and chunking). An SDE run given neither
            draws a fresh seed and records it in ``Trajectory.seed``, so every run can be
            repeated exactly.
        dtype, device: of the computation (default float64, the session's device).
        compile: how fixed steps run. ``None`` (default) and ``True``: the native backend
            (generated C, :mod:`explorer.core.native`) on the CPU where it supports the
            field, else ``torch.compile`` (``None``: only for large runs), else eager;
            ``False``: eager torch (the reference); ``"native"`` or ``"inductor"``: only
            that backend (``"native"`` raises :class:`ParameterError` where it cannot run);
            ``"no-inductor"``: native where it applies, else eager (never waits for a build).
            Every path agrees with eager torch to rounding. SDEs given a seed run natively
            (Euler-Maruyama, and Milstein for diagonal noise) where the drift and diffusion
            trace, else eagerly; Inductor does not compile SDE steps; an SDE given a
            ``generator`` runs eagerly (``backend_note`` says why in each case).
        progress: called with the fraction done; ``stop``: set it to end the run early
            (the result then holds the samples computed so far).

    Returns:
        A :class:`Trajectory` with ``t`` (T,), ``x`` (T, B, D), the divergence status and
        the backend used.
    """
    solver = _resolve_solver(system, solver)
    steps = _check_count("steps", steps)
    transient = _check_count("transient", transient)
    save_every = _check_count("save_every", save_every, 1)
    if batch is not None:
        batch = _check_count("batch", batch, 1)
    dt = system.time_step(dt)
    n_saved = steps // save_every + 1
    # refuse an absurd size before any memory is taken (the states alone can be gigabytes)
    check_size(batch=planned_batch(system, x0, batch), steps=steps + transient, saved=n_saved,
               dim=system.dim, itemsize=torch.finfo(dtype).bits // 8, what=f"simulate {system.name}")
    generator, seed = _noise_generator(system, x0, generator, seed, device)
    x, batched = prepare_initial_states(system, x0, batch=batch, generator=generator,
                                        spread=spread, dtype=dtype, device=device)
    B, D = x.shape
    check_size(batch=B, steps=steps + transient, saved=n_saved, dim=D,
               itemsize=x.element_size(), what=f"simulate {system.name}")

    if solver == "dopri5":
        xs, n_ok_time, done = _run_adaptive(system, x, dt, transient, steps, save_every,
                                            rtol, atol, progress, stop)
        backend = "eager"
        note = "" if compile is False else "the adaptive dopri5 solver runs on eager torch"
    elif system.stochastic:
        xs, n_ok_time, done, backend, note = _run_sde(
            system, solver, x, dt, transient, steps, save_every, generator, seed, compile,
            progress, stop)
    else:
        xs, n_ok_time, done, backend, note = _run_fixed(
            system, solver, x, dt, transient, steps, save_every, compile, progress, stop)
    T = xs.shape[0]
    t = (transient + save_every * torch.arange(T, dtype=torch.float64, device=x.device)) * dt
    return Trajectory(t=t.to(dtype), x=xs, diverged_at=n_ok_time.to(dtype), system=system.name,
                      params=dict(system.params), solver=solver, dt=dt, batched=batched,
                      variables=tuple(system.variables), backend=backend, backend_note=note,
                      seed=seed)


def _run_sde(system, solver, x, dt, transient, steps, every, generator, seed, compile,
             progress, stop):
    """Fixed-step SDE integration. With a ``seed``: natively where the system traces (see
    :func:`_run_fixed` for ``compile``), else on eager torch, the increments of the
    counter-based stream of ``seed`` either way. Without (an explicit ``generator``): eager
    torch, drawing from the generator one step at a time. Returns ``(xs, diverged_at, ok,
    backend, note)``."""
    if seed is None:
        if compile == "native":
            raise ParameterError("the native backend draws counter-based noise from a seed: "
                                 "pass seed= instead of generator=")
        note = ("" if compile is False else
                "an explicit generator= draws torch's noise on eager torch (seed= runs natively)")
        noise = _wiener_increments(system, generator, dt)
        return (*_run_fixed(system, solver, x, dt, transient, steps, every, False, progress,
                            stop, noise=noise)[:3], "eager", note)
    note = ""
    if compile not in (False, "inductor"):
        if x.device.type == "cpu":
            stepper = native_stepper(system, solver, x.dtype)
            if stepper is not None:
                return (*_run_native(stepper, system, x, dt, transient, steps, every, progress,
                                     stop, seed=seed), "native", "")
            note = f"native backend: {native_refusal(system, solver, x.dtype) or 'unavailable'}"
        else:
            note = f"native backend: runs on the CPU only (this run is on {x.device.type})"
    if compile == "native":
        raise ParameterError(f"the native backend cannot run {system.title or system.name} with "
                             f"{solver} in {x.dtype} on {x.device} (needs gcc, a CPU tensor "
                             "and a drift and diffusion of elementwise operations)")
    if compile in (True, "inductor"):
        note = "; ".join(filter(None, (note, "Inductor does not compile SDE steps (ran eagerly)")))
    noise = _counter_increments(system, seed, dt)
    return (*_run_fixed(system, solver, x, dt, transient, steps, every, False, progress, stop,
                        noise=noise)[:3], "eager", note)


def _run_fixed(system, solver, x, dt, transient, steps, every, compile, progress, stop, *,
               noise=None):
    """Fixed-step integration: compiled chunks where asked, eager steps for the rest.

    Recorded samples go straight into one preallocated (T, D, B) buffer (the compiled
    component layout), returned as a (T, B, D) view; that single write is the only pass
    over the output memory. Returns ``(xs, diverged_at, ok, backend, note)``.
    ``noise`` (SDEs, eager only): the Wiener increment source of :func:`_make_sde_chunk`.
    """
    B, D = x.shape
    dev = x.device
    note = ""
    if compile not in (False, "inductor") and noise is None:
        if dev.type == "cpu":
            stepper = native_stepper(system, solver, x.dtype)
            if stepper is not None:
                return (*_run_native(stepper, system, x, dt, transient, steps, every, progress,
                                     stop), "native", "")
            note = f"native backend: {native_refusal(system, solver, x.dtype) or 'unavailable'}"
        else:
            note = f"native backend: runs on the CPU only (this run is on {dev.type})"
    if compile == "native":
        raise ParameterError(f"the native backend cannot run {system.title or system.name} with "
                             f"{solver} in {x.dtype} on {dev} (needs gcc, a CPU tensor and "
                             "elementwise operations only)")
    ok = torch.ones(B, dtype=torch.bool, device=dev)
    n_ok = torch.zeros(B, dtype=torch.int32, device=dev)
    step = SOLVERS[solver].step
    if compile is None:
        compile = (steps + transient) * B >= AUTO_COMPILE_WORK
    compile = compile is True or compile == "inductor"      # "no-inductor": native or eager
    params_eager = system.bind(x)
    eager_cache: dict[tuple[int, int], Callable] = {}

    def eager(n_saves, k):
        if (n_saves, k) not in eager_cache:
            eager_cache[(n_saves, k)] = (
                _make_chunk(system, step, n_saves, k, float(system.bound)) if noise is None else
                _make_sde_chunk(system, step, n_saves, k, float(system.bound), noise))
        return eager_cache[(n_saves, k)]

    n_fast = COMPILED_STEPS_PER_CALL
    # the compiled chunk returns the state after every R-th step (R | every, R | transient)
    R = next(r for r in (4, 2, 1) if every % r == 0 and transient % r == 0)
    used_fast = False
    if compile:
        layout, fast, compile_key = _compiled_chunk(system, solver, n_fast, R, x.dtype)
        params_fast = _tensor_params(system, x)
        dt_fast = torch.tensor(dt, dtype=x.dtype, device=dev)
        pv = [params_fast[p.name] for p in system.parameters if not p.integer]

    def run_fast(x, ok, n_ok):
        """One compiled call: n_fast steps; returns every R-th state as (n_fast / R, D, B).

        In the component layout the state stays a list of (B,) vectors between consecutive
        compiled calls (``x`` is then a list); :func:`as_tensor` turns it back."""
        if layout == "soa":
            cs = x if isinstance(x, list) else list(x.T.contiguous().unbind(0))
            xs, cs, ok, n_ok = fast(cs, ok, n_ok, dt_fast, pv)
            return xs, list(cs), ok, n_ok
        xs, x, ok, n_ok = fast(x, ok, n_ok, dt_fast, params_fast)
        return xs.transpose(1, 2), x.clone(), ok, n_ok

    def as_tensor(x):
        return torch.stack(x, -1) if isinstance(x, list) else x

    T = steps // every + 1
    out = torch.empty((T, D, B), dtype=x.dtype, device=dev)          # (T, D, B)
    total = transient + steps
    pos = 0                                     # steps done
    rec = 0                                     # samples recorded
    if transient == 0:
        out[0] = x.T
        rec = 1
    while pos < total and rec < T:
        if stop is not None and stop.is_set():
            break
        if compile and total - pos >= n_fast:
            xs, x, ok, n_ok = run_fast(x, ok, n_ok)
            used_fast = True
            # xs[j] is the state after step pos + R (j + 1); recorded: step >= transient and
            # (step - transient) % every == 0 (an arithmetic progression in j)
            idx = [j for j in range(n_fast // R)
                   if pos + R * (j + 1) >= transient and (pos + R * (j + 1) - transient) % every == 0]
            idx = idx[: T - rec]
            if idx:
                sel = xs[idx[0]: idx[-1] + 1: every // R]
                out[rec: rec + len(sel)] = sel
                rec += len(sel)
            pos += n_fast
        elif pos < transient:
            k = min(transient - pos, 1024)
            _, x, ok, n_ok = eager(1, k)(as_tensor(x), ok, n_ok, dt, params_eager)
            pos += k
            if pos == transient:
                out[0] = x.T
                rec = 1
        else:
            r = (pos - transient) % every
            if r:                               # realign on the recording grid
                xs, x, ok, n_ok = eager(1, every - r)(as_tensor(x), ok, n_ok, dt, params_eager)
                pos += every - r
                out[rec] = xs[-1].T
                rec += 1
                continue
            s = min(T - rec, max(1, 256 // every))
            xs, x, ok, n_ok = eager(s, every)(as_tensor(x), ok, n_ok, dt, params_eager)  # (s, B, D)
            out[rec: rec + s] = xs.transpose(1, 2)
            rec += s
            pos += s * every
        if progress is not None and total:
            progress(min(1.0, pos / total))
    backend = "eager"
    if used_fast:
        if compile_key in _compile_failed:
            note = "; ".join(filter(None, (note, "Inductor compilation failed (ran eagerly)")))
        else:
            backend = "inductor"
    return (*_finish(out, rec, ok, n_ok, transient, every, dt), backend, note)


#: trajectory-steps per native call (the stop event and progress are checked between calls)
NATIVE_WORK_PER_CALL = 1_000_000


def _run_native(stepper, system, x, dt, transient, steps, every, progress, stop, seed=None):
    """Fixed-step integration in generated C (:mod:`explorer.core.native`), same results
    and divergence semantics as the torch path; the GIL is released during each call. SDE
    steppers draw the counter-based increments of ``seed`` for each absolute step number."""
    B, D = x.shape
    x = x.clone()                                # advanced in place by the stepper
    ok = torch.ones(B, dtype=torch.bool)
    n_ok = torch.zeros(B, dtype=torch.int32)
    params = system.params
    per_call = max(1, NATIVE_WORK_PER_CALL // B)
    threads = 1 if B < 512 else None             # small batches: no thread hand-offs
    total = transient + steps
    T = steps // every + 1
    out = torch.empty((T, D, B), dtype=x.dtype)  # (T, D, B)
    pos, rec = 0, 0

    def report():
        if progress is not None and total:
            progress(min(1.0, pos / total))

    while pos < transient:
        if stop is not None and stop.is_set():
            return _finish(out, rec, ok, n_ok, transient, every, dt)
        k = min(transient - pos, per_call)
        stepper.run(x, params, dt, n_steps=k, record_every=k + 1, ok=ok, n_ok=n_ok,
                    threads=threads, seed=seed, step0=pos)
        pos += k
        report()
    out[0] = x.T
    rec = 1
    while rec < T:
        if stop is not None and stop.is_set():
            break
        s = min(T - rec, max(1, per_call // every))
        stepper.run(x, params, dt, n_steps=s * every, record_every=every, ok=ok, n_ok=n_ok,
                    out=out[rec: rec + s], threads=threads, seed=seed, step0=pos)
        rec += s
        pos += s * every
        report()
    return _finish(out, rec, ok, n_ok, transient, every, dt)


def _finish(out, rec, ok, n_ok, transient, every, dt):
    """(T, D, B) buffer -> (T, B, D) view with NaN after each member's divergence, the
    divergence times and the final ok flags."""
    B = out.shape[2]
    dev = out.device
    xs = out[:rec].transpose(1, 2)              # (T, D, B) storage viewed as (T, B, D)
    diverged_at = torch.full((B,), float("nan"), dtype=torch.float64, device=dev)
    if not bool(ok.all()):
        # samples after a member's divergence are NaN; diverged_at = time of the first bad step
        step_idx = transient + every * torch.arange(rec, device=dev)            # (T,)
        bad = (~ok).unsqueeze(0) & (step_idx.unsqueeze(1) > n_ok.unsqueeze(0))   # (T, B)
        xs.masked_fill_(bad.unsqueeze(-1), float("nan"))
        diverged_at = torch.where(ok, diverged_at, (n_ok + 1).to(torch.float64) * dt)
    return xs, diverged_at, ok


def _run_adaptive(system, x, dt, transient, steps, every, rtol, atol, progress, stop):
    B, D = x.shape
    f = system.f
    h = torch.full((B,), dt, dtype=x.dtype, device=x.device)
    ok = torch.ones(B, dtype=torch.bool, device=x.device)
    div_at = torch.full((B,), float("nan"), dtype=torch.float64, device=x.device)
    bound = float(system.bound)
    t_now = 0.0
    n_out = steps // every
    total = (transient > 0) + n_out
    out = []

    def advance(span):
        nonlocal x, h, ok, t_now
        xn, h, good = dopri5_advance(f, x, span, h, rtol=rtol, atol=atol, active=ok)
        good = good & (xn.abs() <= bound).all(-1)
        newly = ok & ~good
        div_at[newly] = t_now + span
        x = torch.where(good.unsqueeze(-1), xn, x)
        ok = ok & good
        t_now += span

    if transient > 0:
        advance(transient * dt)
        if progress:
            progress(1 / max(total, 1))
    out.append(torch.where(ok.unsqueeze(-1), x, torch.full_like(x, float("nan"))))
    for i in range(n_out):
        if stop is not None and stop.is_set():
            break
        advance(every * dt)
        out.append(torch.where(ok.unsqueeze(-1), x, torch.full_like(x, float("nan"))))
        if progress and (i % 16 == 0 or i == n_out - 1):
            progress(((transient > 0) + i + 1) / max(total, 1))
    return torch.stack(out, 0), div_at, ok


def iterate(system: DynamicalSystem, x0=None, *, dt: float | None = None,
            solver: str | None = None, steps_per_frame: int = 1, batch: int | None = None,
            generator: torch.Generator | None = None, seed: int | None = None,
            dtype: torch.dtype = torch.float32, device=None) -> Iterator[tuple[float, torch.Tensor]]:
    """Endless generator of ``(t, x)`` frames for live animation, ``x`` shaped (B, D).

    Send a new system (same class, new parameters) with ``gen.send(system)`` to change
    parameters without restarting; diverged members are frozen as in :func:`simulate`.
    Float32 by default (rendering speed). SDEs given a ``generator`` draw their noise from
    it on eager torch; otherwise from the counter-based stream of ``seed`` (a fresh seed when
    neither is given), the increments :func:`simulate` draws for that seed, stepped by the
    native backend on the CPU where the system traces (else eagerly).
    """
    solver = _resolve_solver(system, solver)
    if solver == "dopri5":
        raise ParameterError("live iteration uses fixed steps: choose rk4 or euler")
    dt = system.time_step(dt)
    generator, seed = _noise_generator(system, x0, generator, seed, device)
    x, _ = prepare_initial_states(system, x0, batch=batch, generator=generator, dtype=dtype,
                                  device=device)
    ok = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    n_ok = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
    t = 0.0
    counter = [0]                      # steps taken: the step number of the noise stream
    if not system.stochastic:
        noise = None
    elif seed is None:
        noise = _wiener_increments(system, generator, dt)
    else:
        noise = _counter_increments(system, seed, dt, counter)

    def make(system):
        if noise is None:
            return _make_chunk(system, SOLVERS[solver].step, 1, steps_per_frame, float(system.bound))
        stepper = (native_stepper(system, solver, x.dtype)
                   if seed is not None and x.device.type == "cpu" else None)
        if stepper is None:
            return _make_sde_chunk(system, SOLVERS[solver].step, 1, steps_per_frame,
                                   float(system.bound), noise)
        sys_params = system.params
        threads = 1 if x.shape[0] < 512 else None

        def native_chunk(x, ok, n_ok, dt, params):
            x = x.clone()                     # the frame handed out stays as it was
            stepper.run(x, sys_params, dt, n_steps=steps_per_frame,
                        record_every=steps_per_frame + 1, ok=ok, n_ok=n_ok, threads=threads,
                        seed=seed, step0=counter[0])
            counter[0] += steps_per_frame
            return None, x, ok, n_ok

        return native_chunk

    chunk = make(system)
    params = system.bind(x)
    while True:
        new = yield t, x
        if new is not None:
            if type(new) is not type(system):
                raise ExplorerError("iterate(): send a system of the same class")
            system, params = new, new.bind(x)
            chunk = make(system)
        _, x, ok, n_ok = chunk(x, ok, n_ok, dt, params)
        t += steps_per_frame * dt
