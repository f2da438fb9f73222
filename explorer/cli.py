"""``dynamics-explorer``: the compute API from a shell.

Sub-commands: ``systems``, ``simulate``, ``lyapunov``, ``sweep``, ``sweep-train``, ``train dsr``, ``train onsager``,
``train ssm``, ``train latent``, ``spectra``, ``generate``, ``entropy``, ``serve``. The JSON shapes printed with
``--json`` are a stable contract, documented in ``docs/cli.md``. A user mistake (unknown
system, bad parameter, malformed equation, unwritable file) prints one line on stderr and
exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user mistake detected by the CLI itself."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise CliError(message)


def _parse_params(items: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--param expects name=value, got {item!r}")
        try:
            v = float(value)
        except ValueError:
            raise CliError(f"--param {name.strip()}: {value!r} is not a number") from None
        if not math.isfinite(v):
            raise CliError(f"--param {name.strip()}: must be finite, got {value!r}")
        out[name.strip()] = v
    return out


def _parse_x0(text: str | None):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise CliError(f"--x0 expects numbers separated by commas, got {text!r}") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise CliError(f"--x0 expects finite numbers, got {text!r}")
    return vals


def _build_system(args):
    """The system named on the command line, or a custom one from --flow/--map equations."""
    from .core.registry import system_class

    params = _parse_params(args.param)
    sources = [s for s in (args.system, args.flow, args.map) if s]
    if len(sources) != 1:
        raise CliError("give exactly one of SYSTEM, --flow \"EQUATIONS\" or --map \"EQUATIONS\"")
    if args.system:
        cls = system_class(args.system)
        structural = {p.name for p in cls.parameters if p.integer}
        for k in structural & params.keys():
            if params[k] != int(params[k]):
                raise CliError(f"--param {k} must be an integer")
            params[k] = int(params[k])
        return cls(**params)
    from .core.custom import parse_system

    text = args.flow or args.map
    system = parse_system(text, params, x0=_parse_x0(args.x0))
    want = "flow" if args.flow else "map"
    if system.kind != want:
        raise CliError(f"--{want} was given {system.kind} equations "
                       f"(use dx/dt = ... for flows, x' = ... for maps)")
    return system


def _setup_device(args) -> None:
    from .core.device import set_default_device

    if getattr(args, "device", None):
        set_default_device(args.device)


def cmd_systems(args) -> int:
    from .core.registry import dysts_status, system_class, system_names

    records = []
    for name in system_names():
        cls = system_class(name)
        info = cls().info()
        records.append({k: info[k] for k in ("name", "title", "kind", "dimension", "origin",
                                             "variables", "parameters", "initial_condition",
                                             "dt", "lyapunov_reference", "citation")})
    if args.json:
        st = dysts_status()
        json.dump({"systems": records, "dysts": {"available": st["available"],
                                                 "skipped": st["skipped"]}},
                  sys.stdout, indent=None if args.compact else 1)
        sys.stdout.write("\n")
        return 0
    w = max(len(r["name"]) for r in records)
    for r in records:
        ps = ", ".join(f"{p['name']}={p['default']:g}" for p in r["parameters"])
        ref = r["lyapunov_reference"]
        refs = f"  λ={[round(v, 4) for v in ref['exponents']]}" if ref else ""
        print(f"{r['name']:<{w}}  {r['kind']:<4} D={r['dimension']:<3} {r['origin']:<7} {ps}{refs}")
    return 0


def cmd_simulate(args) -> int:
    import numpy as np
    import torch

    from .core.simulate import simulate

    _setup_device(args)
    system = _build_system(args)
    out = Path(args.out)
    if out.suffix.lower() not in (".npz", ".csv"):
        raise CliError(f"--out must end in .npz or .csv, got {args.out!r}")
    if not out.parent.exists():
        raise CliError(f"directory {str(out.parent)!r} does not exist")
    x0 = _parse_x0(args.x0) if args.system else None
    dtype = torch.float32 if args.float32 else torch.float64
    traj = simulate(system, x0, steps=args.steps, dt=args.dt, solver=args.solver,
                    transient=args.transient, save_every=args.save_every, batch=args.batch,
                    seed=args.seed, dtype=dtype, compile=args.compile)   # SDEs: the native stream
    t = traj.t.cpu().numpy()
    x = traj.states.cpu().numpy()                                   # (T, D) or (T, B, D)
    if out.suffix.lower() == ".npz":
        _write_npz(out, t=t, x=x, variables=np.array(traj.variables),
                   diverged_at=traj.diverged_at.cpu().numpy())
    else:
        _write_csv(out, t, x, traj.variables)
    summary = {"system": system.name, "out": str(out), "shape": list(x.shape),
               "status": traj.status, "message": traj.message}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {out} x{list(x.shape)}: {traj.message}")
    return 0


def _write_csv(path: Path, t, x, variables) -> None:
    import numpy as np

    if x.ndim == 2:
        header = ["t", *variables]
        table = np.column_stack([t, x])
    else:
        T, B, D = x.shape
        header = ["t", "trajectory", *variables]
        table = np.column_stack([np.repeat(t, B), np.tile(np.arange(B), T), x.reshape(T * B, D)])
    tmp = path.with_name(path.name + ".tmp")
    np.savetxt(tmp, table, delimiter=",", header=",".join(header), comments="", fmt="%.10g")
    os.replace(tmp, path)


def cmd_lyapunov(args) -> int:
    import torch

    from .core.analysis.lyapunov import lyapunov_spectrum

    _setup_device(args)
    system = _build_system(args)
    x0 = _parse_x0(args.x0) if args.system else None
    res = lyapunov_spectrum(system, x0, steps=args.steps, transient=args.transient, dt=args.dt,
                            batch=args.batch, generator=torch.Generator().manual_seed(args.seed))
    rec = res.as_dict()
    if res.status == "diverged":
        # no exponent to report: say why, and fail (a JSON of nulls with exit 0 hid it)
        rec["message"] = (f"every trajectory of {system.title or system.name} left the bound "
                          f"|x| <= {system.bound:g} (diverged): no Lyapunov exponents; try "
                          "another initial condition or parameter values")
        if args.json:
            print(json.dumps(rec))
        print(f"dynamics-explorer: error: {rec['message']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rec))
    else:
        unit = "per time unit" if system.kind == "flow" else "per iteration"
        print(f"{system.title or system.name}: Lyapunov exponents ({unit})")
        for i, (v, e) in enumerate(zip(rec["exponents"], rec["stderr"])):
            err = f" ± {e:.4f}" if e is not None else ""
            print(f"  λ{i + 1} = {v:+.4f}{err}")
        print(f"  Kaplan-Yorke dimension = {rec['kaplan_yorke_dimension']:.4f}")
        if res.status != "ok":
            print(f"  status: {res.status}")
    return 0


def _write_npz(out: Path, **arrays) -> None:
    """Write ``arrays`` to ``out`` atomically (a temporary file, then a rename)."""
    import numpy as np

    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)


def _out_path(text: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(text)
    if out.suffix.lower() not in suffixes:
        raise CliError(f"--out must end in {' or '.join(suffixes)}, got {text!r}")
    if not out.parent.exists():
        raise CliError(f"directory {str(out.parent)!r} does not exist")
    return out


#: `train dsr`: default step cap and state-space-divergence target (README, "Training")
TRAIN_STEPS = 20_000
TARGET_DSTSP = 0.3


def dsr_setup(args):
    """The data and :class:`TrainerConfig` that ``train dsr`` trains with (checked)."""
    import torch

    from .training import TrainerConfig, from_file, from_system

    if bool(args.system) == bool(args.data):
        raise CliError("give exactly one of --system NAME or --data FILE")
    if args.steps < 1:
        raise CliError(f"--steps must be at least 1, got {args.steps}")
    if not (args.target_dstsp >= 0 and math.isfinite(args.target_dstsp)):
        raise CliError(f"--target-dstsp must be >= 0 (0: off), got {args.target_dstsp}")
    if args.system:
        args.flow = args.map = None
        system = _build_system(args)
        data = from_system(system, steps=args.length, noise=args.noise,
                           save_every=args.subsample,
                           generator=torch.Generator().manual_seed(args.seed))
    else:
        data = from_file(args.data)
    cfg = {"model": args.model, "latent_dim": args.latent, "steps": args.steps,
           "seed": args.seed, "device": args.device or "auto",
           "metrics_every": (args.metrics_every if args.metrics_every is not None
                             else max(1, min(500, args.steps)))}
    for name in ("hidden_dim", "n_relu", "seq_len", "batch_size", "lr", "alpha_mode", "alpha"):
        v = getattr(args, name)
        if v is not None:
            cfg[name] = v
    return data, TrainerConfig(**cfg)


def _progress(total: int, metrics: tuple[tuple[str, str, str], ...], *, loss_label: str = "loss",
              loss_format: str = ".4g", max_skips: int | None = None):
    """A training callback that prints progress lines on stderr: every evaluation, every 5 s
    and at the end, with the metrics ``(key, label, format)`` that the evaluation holds;
    skipped batches print their message (the first ``max_skips`` of them)."""
    import time

    last_print = [time.monotonic()]
    skips = [0]

    def report(ev) -> None:
        now = time.monotonic()
        if not ev.losses and ev.status == "running":             # a skipped batch
            if max_skips is None or skips[0] < max_skips:
                skips[0] += 1
                print(ev.message, file=sys.stderr)
            return
        if ev.metrics is not None or now - last_print[0] > 5 or ev.status != "running":
            last_print[0] = now
            m = ev.metrics or {}
            loss = f", {loss_label} {ev.losses['loss']:{loss_format}}" if "loss" in ev.losses \
                else f": {ev.message}"
            extra = "".join(f", {lab} {m[k]:{fmt}}" for k, lab, fmt in metrics
                            if k in m and m[k] == m[k])
            eta = f", ~{ev.eta:.0f} s left" if ev.eta else ""
            print(f"step {ev.step}/{total}{loss}{extra}{eta}", file=sys.stderr)
    return report


def cmd_train(args) -> int:
    """Train a reconstruction model (PLRNN, shallow PLRNN, AL-RNN) with GTF; save a checkpoint.

    Stops at ``--steps`` or as soon as an evaluation's D_stsp (against the noise-free
    reference when the data carry one, else against the data) is at most ``--target-dstsp``
    and that evaluation's free run is a reconstruction (it neither settles on a fixed point
    nor runs away: :func:`explorer.training.verdict.metrics_verdict`)."""
    summary, out, verdict = train_dsr(args)
    if args.json:
        print(json.dumps(summary, default=_json_number))
    else:
        print(f"wrote {out}: {summary['message']}; {verdict.line()}")
    return 0 if summary["status"] != "diverged" else 1


def train_dsr(args):
    """What ``train dsr`` does, without printing the result: (summary, checkpoint path,
    verdict). The same function runs each task of ``sweep-train``."""
    import threading

    from .training import Trainer
    from .training.verdict import metrics_verdict

    _setup_device(args)
    out = _out_path(args.out, (".pt",))
    data, config = dsr_setup(args)
    trainer = Trainer(data, config)
    target = args.target_dstsp
    stop = threading.Event()
    reached: dict = {}
    def watch(ev) -> None:
        m = ev.metrics
        if target > 0 and m and not reached:
            d = m.get("d_stsp_clean", m.get("d_stsp", math.nan))
            # the target counts only for a reconstruction: a free run that settles on a fixed
            # point (or runs away) can score a low D_stsp, and training goes on past it
            if d <= target and metrics_verdict(m, threshold=target).ok:
                reached.update(step=ev.step, d_stsp=d)
                stop.set()

    report = _progress(args.steps, (("d_stsp", "d_stsp", ".3g"),
                                    ("d_stsp_clean", "noise-free d_stsp", ".3g"),
                                    ("d_h", "d_h", ".3g"), ("pe", "pe", ".3g")), max_skips=3)

    def progress(ev) -> None:
        if not (reached and ev.status != "running"):    # not "paused" when the target stopped it
            report(ev)

    event = trainer.run(args.steps, callbacks=[watch] + ([] if args.quiet else [progress]),
                        stop=stop)
    trainer.save(out)
    status, message = event.status, event.message
    if reached:
        status = "done"
        message = (f"reached D_stsp {reached['d_stsp']:.3g} <= {target:g} at step {reached['step']}")
    if trainer.skipped:
        message += f"; {trainer.skipped} batch(es) with a non-finite or exploding gradient skipped"
    # is the saved model a reconstruction? (free runs against the noise-free reference when the
    # data were simulated with noise, else against the data; see explorer/training/verdict.py)
    verdict = trainer.verdict()
    if not verdict.ok:
        print(f"dynamics-explorer: warning: {out} is {verdict.line()}", file=sys.stderr)
    summary = {"out": str(out), "model": trainer.config.model, "steps": trainer.step_count,
               "seconds": round(trainer.seconds, 3), "status": status,
               "message": message,
               "final_loss": trainer.history["loss"][-1] if trainer.history["loss"] else None,
               "metrics": trainer.metric_history[-1] if trainer.metric_history else None,
               "best": trainer.best, "target_dstsp": target or None,
               "target_reached": bool(reached), "skipped": trainer.skipped,
               "rollbacks": trainer.rollbacks, "verdict": verdict.as_dict()}
    return summary, out, verdict


def _builtin_sde(name: str, params: dict, need: str):
    """The registered SDE ``name`` at ``--param`` values (integer parameters checked);
    ``need`` starts the error message when ``name`` is not stochastic."""
    from .core.registry import system_class
    from .core.system import SDE, UnsupportedKindError

    cls = system_class(name)
    if not issubclass(cls, SDE):
        raise UnsupportedKindError(f"{need}; {cls.title or cls.name} is a {cls.kind}")
    for k in {p.name for p in cls.parameters if p.integer} & params.keys():
        if params[k] != int(params[k]):
            raise CliError(f"--param {k} must be an integer")
        params[k] = int(params[k])
    return cls(**params)


def cmd_train_onsager(args) -> int:
    """Fit an I-OnsagerNet (potential, mobility, antisymmetric part) to simulated trajectories
    of an SDE by the Euler-Maruyama likelihood; report its entropy production; save a
    checkpoint (``explorer.training.onsager``)."""

    from .training.onsager import make_onsager_run, run_summary

    _setup_device(args)
    out = _out_path(args.out, (".pt",))
    if bool(args.system) == bool(args.sde):
        raise CliError('give exactly one of --system NAME or --sde "EQUATIONS" --diffusion "D1, D2"')
    if args.sde and not args.diffusion:
        raise CliError('--sde needs --diffusion "D1, D2" (the diagonal of D, noise sqrt(2 D))')
    if args.diffusion and not args.sde:
        raise CliError("--diffusion goes with --sde (a built-in system has its own noise)")
    for name in ("steps", "batch", "trajectories", "length", "hidden"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.transient is not None and args.transient < 0:
        raise CliError(f"--transient must be >= 0, got {args.transient}")
    for name in ("dt", "eps", "lr"):
        v = getattr(args, name)
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise CliError(f"--{name} must be a positive number, got {v}")
    params = _parse_params(args.param)
    if args.system:
        system, source = _builtin_sde(args.system, params, "I-OnsagerNet learns stochastic "
                                                           "systems (SDEs)"), None
    else:
        from .core.custom import parse_sde

        system = parse_sde(args.sde, args.diffusion, params)
        source = {"sde": args.sde, "diffusion": args.diffusion, "params": params}
    loop = make_onsager_run(system, batch=args.trajectories, steps=args.length, dt=args.dt,
                            seed=args.seed, transient=args.transient, eps=args.eps,
                            hidden=args.hidden, lr=args.lr if args.lr is not None else 1e-2,
                            planned_steps=args.steps, minibatch=args.batch, source=source,
                            eval_every=max(1, args.steps // 5))
    report = _progress(args.steps, (("val_nll", "val NLL", ".4g"), ("entropy_production", "e_p", ".4g"),
                                    ("ep_rel_error", "e_p error", ".4g"),
                                    ("potential_error", "V error", ".4g")),
                       loss_label="NLL", loss_format=".4f")

    event = loop.run(args.steps, callbacks=[] if args.quiet else [report])
    loop.save(out)
    summary = {"out": str(out), "system": system.name, "status": event.status,
               "message": event.message, **run_summary(loop)}
    if args.json:
        print(json.dumps(summary, default=_json_number))
    else:
        ep, exact = summary["entropy_production"], summary["entropy_production_exact"]
        known = f" (exact {exact:.4g})" if exact is not None else ""
        print(f"wrote {out}: {summary['steps']} steps in {summary['seconds']:.1f} s, "
              f"validation NLL {summary['val_nll']:.4f}, entropy production {ep:.4g}{known}")
    return 0 if event.status != "diverged" else 1


TRAIN_SSM_TASKS = ("exp-memory", "power-memory", "delay-memory", "oscillatory-memory", "retrieval")


def cmd_spectra(args) -> int:
    """Continuous and discrete eigenvalues of a state-space initialisation
    (``explorer.models.ssm``)."""
    from .models.ssm import DISCRETIZATIONS, INITS, continuous_eigenvalues, discretize

    if args.init not in INITS:
        raise CliError(f"unknown --init {args.init!r}; choose from {', '.join(INITS)}")
    if args.discretization not in DISCRETIZATIONS:
        raise CliError(f"unknown --discretization {args.discretization!r}; choose from "
                       f"{', '.join(DISCRETIZATIONS)}")
    if args.state_size < 1:
        raise CliError(f"--state-size must be at least 1, got {args.state_size}")
    if not (args.dt > 0 and math.isfinite(args.dt)):
        raise CliError(f"--dt must be a positive number, got {args.dt}")
    lam = continuous_eigenvalues(args.init, args.state_size, seq_len=args.length)
    lam_bar, _ = discretize(lam, args.dt, args.discretization)
    pairs = lambda z: [[float(v.real), float(v.imag)] for v in z.tolist()]   # noqa: E731
    out = {"init": args.init, "state_size": args.state_size, "dt": args.dt,
           "discretization": args.discretization, "continuous": pairs(lam),
           "discrete": pairs(lam_bar)}
    if args.json:
        print(json.dumps(out, default=_json_number))
        return 0
    print(f"{args.init}, N = {args.state_size}, {args.discretization} with dt = {args.dt:g}")
    print(f"{'continuous λ':>32}  {'discrete λ̄':>32}  |λ̄|")
    for (a, b), (c, d) in zip(out["continuous"], out["discrete"]):
        print(f"{a:>15.6g} {b:+15.6g}i  {c:>15.6g} {d:+15.6g}i  {math.hypot(c, d):.6f}")
    return 0


def cmd_train_ssm(args) -> int:
    """Train a sequence model (linear SSM, selective SSM or transformer) on a synthetic
    memory-function or retrieval task; save a checkpoint (``explorer.training.sequence``)."""

    from .training.sequence import make_sequence_run, run_summary

    _setup_device(args)
    out = _out_path(args.out, (".pt",))
    if args.seq_task not in TRAIN_SSM_TASKS:
        raise CliError(f"unknown --task {args.seq_task!r}; choose from {', '.join(TRAIN_SSM_TASKS)}")
    for name in ("steps", "batch", "length", "state_size", "channels", "heads", "head_dim", "D"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("lr", "strength"):
        v = getattr(args, name)
        if not (v > 0 and math.isfinite(v)):
            raise CliError(f"--{name} must be a positive number, got {v}")
    task, memory = ("retrieval", "exp") if args.seq_task == "retrieval" else \
        ("memory", args.seq_task.removesuffix("-memory"))
    if args.model == "ssm":
        cfg = dict(init=args.init, state_size=args.state_size, channels=args.channels,
                   discretization=args.discretization, layers=args.layers, seq_len=args.length,
                   seed=args.seed)
    elif args.model == "selective":
        cfg = dict(d_state=args.state_size, d_model=args.channels, layers=args.layers, seed=args.seed)
    else:
        cfg = dict(n_heads=args.heads, d_head=args.head_dim, layers=args.layers, seed=args.seed,
                   max_len=max(4096, args.length), readout="last" if task == "retrieval" else "all")
    loop = make_sequence_run(model=args.model, task=task, model_config=cfg, memory=memory,
                             strength=args.strength, seq_len=args.length, batch=args.batch,
                             input_kind=args.input, lr=args.lr, planned_steps=args.steps,
                             D=args.D, seed=args.seed, eval_every=max(1, args.steps // 5))
    report = _progress(args.steps, (("nmse", "test NMSE", ".4g"), ("decay_rate", "decay rate", ".4g"),
                                    ("memory_error", "memory error", ".4g")), loss_label="NMSE")

    event = loop.run(args.steps, callbacks=[] if args.quiet else [report])
    loop.save(out)
    summary = {"out": str(out), "status": event.status, "message": event.message,
               **run_summary(loop)}
    if args.json:
        print(json.dumps(summary, default=_json_number))
    else:
        extra = ""
        if summary.get("decay_rate") is not None:
            extra = f", learned decay rate {summary['decay_rate']:.4g} (target {1 / args.strength:.4g})"
        print(f"wrote {out}: {summary.get('steps')} steps in {summary.get('seconds', 0):.1f} s, "
              f"test NMSE {summary.get('nmse', float('nan')):.4g}{extra}")
    return 0 if event.status != "diverged" else 1


def _json_number(v):
    """JSON for numpy/torch scalars; NaN and inf become null (strict JSON has neither)."""
    f = float(v)
    return f if math.isfinite(f) else None


LATENT_MODELS = ("cpae", "cae", "koopman", "latent-ode")


def latent_frames(args):
    """The frames of ``train latent``: a rendered scene (``--system``: a scene name or a library
    system drawn as a blob) or a file (``--data``: NPY/NPZ/ZIP of PNGs, checked before decoding)."""
    from .core.render import SCENES, render_scene
    from .training.images import frames_from_upload

    if (args.system is None) == (args.data is None):
        raise CliError("give one of --system (a scene or a library system) and --data (frames)")
    if args.data is not None:
        path = Path(args.data)
        if not path.is_file():
            raise CliError(f"no such file: {args.data}")
        return frames_from_upload(path.read_bytes(), path.name, dt=args.dt)
    scene, system = (args.system, None) if args.system in SCENES else ("blob", args.system)
    kw = dict(scene=scene, size=args.size, steps=args.frames, dt=args.dt, noise=args.noise,
              seed=args.seed)
    if system is not None:
        kw["system"] = system
    if args.amplitude is not None and scene in ("pendulum", "damped-pendulum", "spring"):
        kw["x0"] = [args.amplitude, 0.0]
    return render_scene(**kw)


def cmd_train_latent(args) -> int:
    """Learn latent dynamics from image frames (CAE/CpAE + latent ODE, Koopman autoencoder,
    end-to-end latent ODE); save a checkpoint (``explorer.training.latent``)."""
    from .training.latent import latent_summary, make_latent_run

    _setup_device(args)
    out = _out_path(args.out, (".pt",))
    for name in ("steps", "batch", "frames"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise CliError(f"--lr must be a positive number, got {args.lr}")
    frames = latent_frames(args)
    loop = make_latent_run(frames, model=args.model, latent=args.latent, continuity=args.continuity,
                           steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                           )
    report = _progress(args.steps, (("recon_mse", "reconstruction MSE", ".3g"),
                                    ("max_jump", "largest latent jump", ".3g"),
                                    ("correlation", "|r| with the true state", ".3f")))
    event = loop.run(args.steps, callbacks=[] if args.quiet else [report])
    loop.save(out)
    summary = {"out": str(out), "status": event.status, "message": event.message,
               **latent_summary(loop)}
    if args.json:
        print(json.dumps(summary, default=_json_number))
    else:
        parts = [f"{k.replace('_', ' ')} {v:.4g}" for k, v in summary.items()
                 if k in ("recon_mse", "max_jump", "correlation", "period", "frequency")
                 and isinstance(v, float)]
        print(f"wrote {out}: {summary.get('steps')} steps in {summary.get('seconds', 0):.1f} s"
              + ("; " + ", ".join(parts) if parts else ""))
    return 0 if event.status != "diverged" else 1


def _generate_latent(args, out) -> int:
    """``generate`` on a latent-dynamics checkpoint: decoded frames and latent states."""
    from .training.latent import generate, load_latent_run

    loop = load_latent_run(args.checkpoint, device="cpu")
    g = generate(loop, args.steps)
    _write_npz(out, **{k: v for k, v in g.items() if v is not None})
    shape = list(g["frames"].shape)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "out": str(out), "shape": shape,
                          "latent_shape": list(g["latents"].shape)}, default=_json_number))
    else:
        print(f"wrote {out}: frames {shape}, latents {list(g['latents'].shape)}")
    return 0


def cmd_generate(args) -> int:
    """A free run of a trained model in observation space (data units) -> .npz."""
    import numpy as np
    import torch

    from .training import Trainer

    out = _out_path(args.out, (".npz",))
    if args.steps < 1:
        raise CliError(f"--steps must be at least 1, got {args.steps}")
    from .training.checkpoint import load_checkpoint
    from .training.verdict import reconstruction_verdict

    if load_checkpoint(args.checkpoint).task_name == "latent":
        return _generate_latent(args, out)

    trainer = Trainer.load(args.checkpoint, device="cpu")
    with torch.no_grad():
        z = trainer.free_run(args.steps, runs=1)[:, 0]                # (T, N) standardised
    x = trainer.data.normalisation.invert(z.to(torch.float64)).numpy()
    t = np.arange(x.shape[0]) * trainer.data.dt
    _write_npz(out, t=t, x=x, variables=np.array(trainer.data.variables))
    ref = trainer.data.reference
    verdict = None
    if x.shape[0] >= 4:                       # this free run against the data: plain words
        verdict = reconstruction_verdict(trainer.data.x if ref is None else ref, z,
                                         reference="data" if ref is None else "noise-free reference")
        if not verdict.ok:
            print(f"dynamics-explorer: warning: this free run is {verdict.line()}", file=sys.stderr)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "out": str(out), "shape": list(x.shape),
                          "verdict": None if verdict is None else verdict.as_dict()},
                         default=_json_number))
    else:
        print(f"wrote {out} x{list(x.shape)}" + (f"; {verdict.line()}" if verdict else ""))
    return 0


def cmd_entropy(args) -> int:
    """Stationary entropy-production rate of an SDE (built-in or --sde/--diffusion), with its
    error bar and the exact value where the SDE is linear with constant noise."""
    from .core.analysis.entropy import estimate_entropy

    _setup_device(args)
    if bool(args.system) == bool(args.sde):
        raise CliError('give exactly one of --system NAME or --sde "EQUATIONS" --diffusion "D1, D2"')
    if args.sde and not args.diffusion:
        raise CliError('--sde needs --diffusion "D1, D2" (the diagonal of D, noise sqrt(2 D))')
    if args.diffusion and not args.sde:
        raise CliError("--diffusion goes with --sde (a built-in system has its own noise)")
    params = _parse_params(args.param)
    if args.system:
        system = _builtin_sde(args.system, params,
                              "entropy production needs a stochastic system (an SDE)")
    else:
        from .core.custom import parse_sde

        system = parse_sde(args.sde, args.diffusion, params)
    rec = estimate_entropy(system, steps=args.steps, dt=args.dt, batch=args.batch, seed=args.seed,
                           transient=args.transient)
    rec = {k: (_json_number(v) if isinstance(v, float) else v) for k, v in rec.items()}
    if args.json:
        print(json.dumps(rec))
    else:
        exact = f" (exact {rec['exact']:.6g})" if rec["exact"] is not None else ""
        rate, err = rec["entropy_production_rate"], rec["stderr"]
        print(f"{system.title or system.name}: entropy production rate "
              f"{rate if rate is None else format(rate, '.6g')} ± "
              f"{err if err is None else format(err, '.2g')} per time unit{exact} "
              f"[{rec['method']}, {rec['batch']} x {rec['steps']} steps of dt = {rec['dt']:g}]")
    return 0


def cmd_sweep(args) -> int:
    """A parameter map on Dask into a Zarr store; rerunning the same command resumes it."""
    import time

    from .core.analysis.parameter_maps import Axis, MapSpec, Quantity
    from .sweeps import run_map

    _setup_device(args)
    out = _out_path(args.out, (".zarr",))
    system = _build_system(args)
    logs = set(args.log or ())
    if not logs <= {"x", "y"}:
        raise CliError(f"--log takes x or y, got {', '.join(sorted(logs - {'x', 'y'}))}")
    if "y" in logs and not args.y:
        raise CliError("--log y needs a --y axis")
    spec = MapSpec(system, Axis.parse(args.x, "x" in logs), Quantity.parse(args.quantity),
                   y=Axis.parse(args.y, "y" in logs) if args.y else None,
                   steps=args.steps, transient=args.transient, dt=args.dt,
                   x0=tuple(_parse_x0(args.x0)) if args.x0 else None, tol=args.tol,
                   max_period=args.max_period)
    t0 = time.monotonic()
    last = [0.0]

    def report(run, tile, values) -> None:
        now = time.monotonic()
        done = run.computed + run.skipped
        if tile is None:
            print(f"{spec.n_points:,} points in {run.tiles} chunks"
                  + (f", {run.skipped} already done" if run.skipped else ""), file=sys.stderr)
            return
        if now - last[0] > 2 or done == run.tiles:
            last[0] = now
            el = now - t0
            left = el / run.computed * (run.tiles - done)
            print(f"chunk {done}/{run.tiles} ({100 * done / run.tiles:.0f} %), {el:.0f} s, "
                  f"~{left:.0f} s left", file=sys.stderr)

    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be at least 1, got {args.workers}")
    run = run_map(spec, out, chunk=args.chunk, scheduler=args.scheduler, workers=args.workers,
                  processes=args.processes, overwrite=args.overwrite,
                  progress=None if args.quiet else report)
    summary = run.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {out}: {spec.quantity.label} on a {' x '.join(map(str, spec.shape))} grid, "
              f"{summary['chunks_computed']} chunks computed, {summary['chunks_resumed']} resumed, "
              f"{summary['chunks_retried']} retried, {summary['seconds']:.1f} s")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"{flag} expects integers separated by commas, got {text!r}") from None


def cmd_sweep_train(args) -> int:
    """``train dsr`` over models x latent sizes x seeds, one Dask task each; a table at the end."""
    from .sweeps.training import combinations, run_training_sweep

    train_args = list(args.train_args or [])
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    if not train_args:
        raise CliError("give the train dsr arguments after --, e.g. -- --system lorenz63 --steps 2000")
    runs = combinations(args.models.split(","), _int_list(args.latent, "--latent"),
                        _int_list(args.seeds, "--seeds"))

    def report(run, summary, done, total) -> None:
        if not args.quiet:
            v = summary.get("verdict") or {}
            print(f"{done}/{total} {run.name}: {summary.get('status')}, D_stsp {v.get('d_stsp')}, "
                  f"{summary.get('seconds')} s", file=sys.stderr)

    rows = run_training_sweep(runs, train_args, args.out, scheduler=args.scheduler,
                              workers=args.workers, processes=args.processes, progress=report)
    if args.json:
        print(json.dumps({"out": args.out, "table": str(Path(args.out) / "results.csv"), "runs": rows}))
    else:
        cols = ("run", "steps", "seconds", "d_stsp", "d_h", "reconstructs")
        print("  ".join(f"{c:>14}" for c in cols))
        for r in rows:
            print("  ".join(f"{str(r[c]):>14}" for c in cols))
    return 0


def cmd_serve(args) -> int:
    _setup_device(args)
    from .app import serve

    serve(port=args.port, address=args.address, show=args.show, num_procs=args.num_procs,
          num_threads=args.num_threads, admin=args.admin, allow_origin=args.allow_origin)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dynamics-explorer",
                description="Dynamics Explorer: simulate, analyse and explore dynamical systems.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    s = sub.add_parser("systems", help="list the built-in (and dysts) systems")
    s.add_argument("--json", action="store_true", help="machine-readable output (see docs/cli.md)")
    s.add_argument("--compact", action="store_true", help="with --json: one line")
    s.set_defaults(func=cmd_systems)

    def system_args(sp):
        sp.add_argument("system", nargs="?", help="registered system name (see `systems`)")
        sp.add_argument("--flow", help='custom flow, e.g. "dx/dt = -x + y; dy/dt = -y"')
        sp.add_argument("--map", help="custom map, e.g. \"x' = 1 - a*x**2 + y; y' = b*x\"")
        sp.add_argument("--param", action="append", metavar="NAME=VALUE",
                        help="parameter value (repeatable)")
        sp.add_argument("--x0", help="initial state, comma separated")
        sp.add_argument("--dt", type=float, help="time step (flows)")
        sp.add_argument("--seed", type=int, default=0, help="seed of the explicit RNG")
        sp.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: EXPLORER_DEVICE or auto)")
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("simulate", help="simulate a system and write the trajectory")
    system_args(s)
    s.add_argument("--steps", type=int, default=10_000, help="recorded steps (default 10000)")
    s.add_argument("--transient", type=int, default=0, help="steps discarded first")
    s.add_argument("--save-every", type=int, default=1, help="record every k-th step")
    s.add_argument("--batch", type=int, help="number of trajectories (x is then (T, B, D))")
    s.add_argument("--solver", choices=["rk4", "dopri5", "euler", "map"], help="default: rk4 / map")
    s.add_argument("--float32", action="store_true", help="compute in float32 (faster)")
    s.add_argument("--compile", action="store_true", default=None,
                   help="fuse steps with torch.compile (default: only for very large runs)")
    s.add_argument("--out", required=True, help="output file, .npz (arrays t, x) or .csv")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("lyapunov", help="Lyapunov spectrum and Kaplan-Yorke dimension")
    system_args(s)
    s.add_argument("--steps", type=int, help="averaging steps per trajectory")
    s.add_argument("--transient", type=int, help="steps discarded first")
    s.add_argument("--batch", type=int, help="initial conditions averaged (default 128)")
    s.set_defaults(func=cmd_lyapunov)

    s = sub.add_parser("train", help="train a model (train dsr: dynamical-systems reconstruction; "
                                         "train onsager: I-OnsagerNet on SDE trajectories; "
                                         "train ssm: sequence models on memory tasks)")
    tsub = s.add_subparsers(dest="task", required=True, parser_class=_Parser)
    s = tsub.add_parser("dsr", help="PLRNN / shallow PLRNN / AL-RNN with generalized teacher forcing")
    s.add_argument("--system", help="train on a simulated trajectory of this system")
    s.add_argument("--data", help="train on a time series file (.csv, .npy, .npz; columns are variables)")
    s.add_argument("--param", action="append", metavar="NAME=VALUE", help="system parameter")
    s.add_argument("--x0", help=argparse.SUPPRESS)
    s.add_argument("--length", type=int, default=100_000, help="simulated steps (default 100000)")
    s.add_argument("--subsample", type=int, default=1, help="keep every k-th simulated state")
    s.add_argument("--noise", type=float, default=0.05, help="observation noise fraction (0.05)")
    s.add_argument("--model", choices=["plrnn", "shplrnn", "alrnn"], default="shplrnn")
    s.add_argument("--latent", type=int, help="latent units M (default: 3 shplrnn, 20 others)")
    s.add_argument("--hidden", dest="hidden_dim", type=int, help="shPLRNN hidden units (100)")
    s.add_argument("--relu", dest="n_relu", type=int, help="AL-RNN: units through the ReLU (2)")
    s.add_argument("--seq-len", dest="seq_len", type=int, help="training window length (200)")
    s.add_argument("--batch", dest="batch_size", type=int, help="windows per step (16)")
    s.add_argument("--lr", type=float, help="initial learning rate (1e-3)")
    s.add_argument("--alpha-mode", choices=["adaptive", "fixed", "sparse"], help="teacher forcing")
    s.add_argument("--alpha", type=float, help="forcing strength (fixed) or its starting value")
    s.add_argument("--steps", type=int, default=TRAIN_STEPS,
                   help=f"most optimisation steps, and the learning-rate schedule's length ({TRAIN_STEPS})")
    s.add_argument("--target-dstsp", dest="target_dstsp", type=float, default=TARGET_DSTSP,
                   help="stop once D_stsp (against the noise-free reference when there is one) "
                        f"is at most this ({TARGET_DSTSP}; 0: run all --steps)")
    s.add_argument("--metrics-every", type=int, help="evaluate D_stsp, D_H, PE every k steps (500)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.add_argument("--json", action="store_true", help="machine-readable summary")
    s.add_argument("--out", required=True, help="checkpoint file (.pt)")
    s.set_defaults(func=cmd_train)
    s = tsub.add_parser("onsager", help="I-OnsagerNet: potential, mobility and entropy "
                                        "production learned from SDE trajectories")
    s.add_argument("--system", help="a registered SDE (see `systems`)")
    s.add_argument("--sde", help="custom SDE drift, e.g. \"x' = -x + g*y; y' = -y - g*x\"")
    s.add_argument("--diffusion", help='with --sde: the diagonal of D, e.g. "1, 1" (noise sqrt(2 D))')
    s.add_argument("--param", action="append", metavar="NAME=VALUE", help="system parameter")
    s.add_argument("--steps", type=int, default=600, help="optimisation steps (600)")
    s.add_argument("--batch", type=int, default=8192, help="transition pairs per step (8192)")
    s.add_argument("--trajectories", type=int, default=2000, help="simulated trajectories (2000)")
    s.add_argument("--length", type=int, default=1000, help="recorded steps per trajectory (1000)")
    s.add_argument("--transient", type=int, help="steps discarded first (max(500, length/4))")
    s.add_argument("--dt", type=float, help="sampling step (default: the system's)")
    s.add_argument("--eps", type=float, help="the fixed temperature (default: D/I when D is "
                                             "isotropic and constant, else 1)")
    s.add_argument("--hidden", type=int, default=16, help="hidden units of each network (16)")
    s.add_argument("--lr", type=float, help="initial learning rate (1e-2, cosine decay)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.add_argument("--json", action="store_true", help="machine-readable summary")
    s.add_argument("--out", required=True, help="checkpoint file (.pt)")
    s.set_defaults(func=cmd_train_onsager)

    s = tsub.add_parser("ssm", help="a sequence model (linear SSM, selective SSM, transformer) "
                                    "on a memory-function or retrieval task")
    s.add_argument("--model", choices=("ssm", "selective", "transformer"), default="ssm",
                   help="model family (ssm)")
    s.add_argument("--init", default="s4d-lin", help="SSM initialisation (s4d-lin; see `spectra --help`)")
    s.add_argument("--state-size", type=int, default=64, help="state size N (64)")
    s.add_argument("--channels", type=int, default=4, help="SSM channels H, or the selective width (4)")
    s.add_argument("--discretization", default="zoh", help="zoh, bilinear or euler (zoh)")
    s.add_argument("--layers", type=int, default=1, help="stacked layers (1)")
    s.add_argument("--heads", type=int, default=2, help="transformer: attention heads (2)")
    s.add_argument("--head-dim", type=int, default=8, help="transformer: head dimension (8)")
    s.add_argument("--task", dest="seq_task", default="exp-memory", help=f"one of {', '.join(TRAIN_SSM_TASKS)} (exp-memory)")
    s.add_argument("--strength", type=float, default=20.0,
                   help="memory length in steps: the decay time, or the lag of delay-memory (20)")
    s.add_argument("--input", choices=("white", "ar1"), default="white", help="input process (white)")
    s.add_argument("--D", type=int, default=4, help="retrieval: tokens to retrieve (4)")
    s.add_argument("--length", type=int, default=256, help="sequence length L (256)")
    s.add_argument("--batch", type=int, default=32, help="sequences per step (32)")
    s.add_argument("--steps", type=int, default=1000, help="optimisation steps (1000)")
    s.add_argument("--lr", type=float, default=3e-3, help="learning rate (3e-3, cosine decay)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.add_argument("--json", action="store_true", help="machine-readable summary")
    s.add_argument("--out", required=True, help="checkpoint file (.pt)")
    s.set_defaults(func=cmd_train_ssm)

    s = tsub.add_parser("latent", help="latent dynamics from image frames (CAE/CpAE + latent ODE, "
                                       "Koopman autoencoder, end-to-end latent ODE)")
    s.add_argument("--system", help="a scene (pendulum, damped-pendulum, spring, two-bodies, "
                                    "moving-square) or a library system drawn as a blob")
    s.add_argument("--data", help="frames: .npy/.npz of shape (T, H, W) or (T, H, W, 1), or a .zip of PNGs")
    s.add_argument("--model", choices=LATENT_MODELS, default="cpae", help="model (cpae)")
    s.add_argument("--latent", type=int, default=2, help="latent size, 2-8 (2)")
    s.add_argument("--continuity", type=float, default=None,
                   help="weight of the CpAE filter-continuity regulariser (model default)")
    s.add_argument("--size", type=int, default=32, help="rendered frame side in pixels, 16-64 (32)")
    s.add_argument("--frames", type=int, default=600, help="rendered frames (600)")
    s.add_argument("--dt", type=float, default=0.05, help="time between frames (0.05)")
    s.add_argument("--amplitude", type=float, default=None,
                   help="initial angle (pendulum, rad) or extension (spring)")
    s.add_argument("--noise", type=float, default=0.0, help="pixel noise standard deviation (0)")
    s.add_argument("--batch", type=int, default=32, help="frame windows per step (32)")
    s.add_argument("--steps", type=int, default=1500, help="optimisation steps (1500)")
    s.add_argument("--lr", type=float, default=2e-3, help="learning rate (2e-3)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.add_argument("--json", action="store_true", help="machine-readable summary")
    s.add_argument("--out", required=True, help="checkpoint file (.pt)")
    s.set_defaults(func=cmd_train_latent)

    s = sub.add_parser("spectra", help="continuous and discrete eigenvalues of an SSM initialisation")
    s.add_argument("--init", required=True, help="legs, legs-diag, legt, s4d-lin, s4d-inv, s4d-real, "
                                                 "lru, random or zero-real")
    s.add_argument("--state-size", type=int, required=True, help="state size N")
    s.add_argument("--dt", type=float, default=0.01, help="step Δ of the discretisation (0.01)")
    s.add_argument("--discretization", default="zoh", help="zoh, bilinear or euler (zoh)")
    s.add_argument("--length", type=int, default=1024,
                   help="sequence length L (sets the zero-real timescale) (1024)")
    s.add_argument("--json", action="store_true", help='{"continuous": [[re, im], ...], "discrete": ...}')
    s.set_defaults(func=cmd_spectra)

    s = sub.add_parser("generate", help="free-running trajectory of a trained model")
    s.add_argument("checkpoint", help="a checkpoint written by `train dsr` or `train latent`")
    s.add_argument("--steps", type=int, default=10_000)
    s.add_argument("--json", action="store_true")
    s.add_argument("--out", required=True, help="output .npz (dsr: arrays t, x; latent: frames, "
                                                "latents, t, and the true frames)")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("entropy", help="entropy-production rate of an SDE (with error bar)")
    s.add_argument("--system", help="a registered SDE (see `systems`)")
    s.add_argument("--sde", help="custom SDE drift, e.g. \"x' = -x + g*y; y' = -y - g*x\"")
    s.add_argument("--diffusion", help='with --sde: the diagonal of D, e.g. "1, 1" (noise sqrt(2 D))')
    s.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="parameter value (repeatable)")
    s.add_argument("--steps", type=int, default=4000, help="recorded steps per trajectory (4000)")
    s.add_argument("--transient", type=int, default=1000, help="steps discarded first (1000)")
    s.add_argument("--dt", type=float, help="time step (default: the system's)")
    s.add_argument("--batch", type=int, default=256, help="independent trajectories (256)")
    s.add_argument("--seed", type=int, default=0, help="seed of the explicit RNG")
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: EXPLORER_DEVICE or auto)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_entropy)

    s = sub.add_parser("sweep", help="a parameter map (Lyapunov, period, basins, ...) on Dask, "
                                         "into a Zarr store; rerun to resume")
    system_args(s)
    s.add_argument("--x", required=True, metavar="NAME=LO:HI:N",
                   help="first axis: a parameter or a variable's initial value")
    s.add_argument("--y", metavar="NAME=LO:HI:N", help="second axis (a 2-D map)")
    s.add_argument("--log", action="append", choices=["x", "y"], help="log-spaced axis (repeatable)")
    s.add_argument("--quantity", required=True,
                   help="lyapunov, spectrum, ky, period, mean:VAR, max:VAR, divergence or basin")
    s.add_argument("--steps", type=int, help="steps per point after the transient")
    s.add_argument("--transient", type=int, help="steps discarded first")
    s.add_argument("--tol", type=float, help="period: relative tolerance (1e-6 maps, 1e-3 flows)")
    s.add_argument("--max-period", type=int, default=64, help="period: the largest looked for")
    s.add_argument("--chunk", type=int, default=16_384, help="points per Dask task (default 16384)")
    s.add_argument("--scheduler", help="tcp://HOST:PORT of a running Dask scheduler "
                                       "(default: EXPLORER_DASK_SCHEDULER, else a local cluster)")
    s.add_argument("--workers", type=int, help="local cluster: workers (default: the cores)")
    s.add_argument("--processes", action="store_true",
                   help="local cluster: workers in processes of their own (default: threads here)")
    s.add_argument("--out", required=True, help="the Zarr store (a .zarr directory)")
    s.add_argument("--overwrite", action="store_true", help="replace a store holding another map")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("sweep-train", help="train dsr over models x latent sizes x seeds as Dask "
                                               "tasks (arguments for train dsr after --)")
    s.add_argument("--models", default="shplrnn", help="comma separated: plrnn, shplrnn, alrnn")
    s.add_argument("--latent", default="3", help="latent sizes, comma separated")
    s.add_argument("--seeds", default="0", help="seeds, comma separated")
    s.add_argument("--out", required=True, help="directory for the checkpoints, summaries and results.csv")
    s.add_argument("--scheduler", help="tcp://HOST:PORT of a running Dask scheduler")
    s.add_argument("--workers", type=int, help="local cluster: workers (default: the cores)")
    s.add_argument("--processes", action="store_true", help="local cluster: worker processes")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.add_argument("--json", action="store_true", help="machine-readable table")
    s.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the train dsr arguments")
    s.set_defaults(func=cmd_sweep_train)

    s = sub.add_parser("serve", help="start the web app",
                       description="Serve the web app at http://ADDRESS:PORT/explorer.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--port", type=int, default=5006, help="TCP port")
    s.add_argument("--address", default="localhost", help="network address to listen on")
    s.add_argument("--device", default=argparse.SUPPRESS,
                   help="compute device: cpu, cuda, cuda:N or auto (default: EXPLORER_DEVICE, else auto)")
    s.add_argument("--show", action="store_true", help="open a browser tab")
    s.add_argument("--num-procs", type=int, default=1,
                   help="server processes sharing the port (0: one per core); see docs/deploy.md")
    s.add_argument("--num-threads", type=int, default=None,
                   help="threads for widget callbacks (default: the event loop's own thread)")
    s.add_argument("--admin", action="store_true",
                   help="serve the admin view at /admin (sessions, memory, CPU; off by default)")
    s.add_argument("--allow-origin", action="append", metavar="HOST:PORT",
                   help="another origin allowed to open the websocket (repeatable; behind a proxy)")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .core.errors import ExplorerError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.version:
            from . import __version__
            print(__version__)
            return 0
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except (CliError, ExplorerError) as e:
        print(f"dynamics-explorer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"dynamics-explorer: error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dynamics-explorer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user mistake: still one line unless debugging
        if os.environ.get("EXPLORER_DEBUG"):
            raise
        print(f"dynamics-explorer: internal error: {type(e).__name__}: {e} "
              "(set EXPLORER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
