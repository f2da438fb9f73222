"""``dynamics-explorer``: the compute API from a shell.

Sub-commands: ``systems``, ``simulate``, ``lyapunov``, ``serve``. The JSON shapes printed with
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
    gen = torch.Generator().manual_seed(args.seed)
    traj = simulate(system, x0, steps=args.steps, dt=args.dt, solver=args.solver,
                    transient=args.transient, save_every=args.save_every, batch=args.batch,
                    generator=gen, dtype=dtype, compile=args.compile)
    t = traj.t.cpu().numpy()
    x = traj.states.cpu().numpy()                                   # (T, D) or (T, B, D)
    if out.suffix.lower() == ".npz":
        tmp = out.with_name(out.name + ".tmp.npz")
        np.savez(tmp, t=t, x=x, variables=np.array(traj.variables),
                 diverged_at=traj.diverged_at.cpu().numpy())
        os.replace(tmp, out)
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


def cmd_serve(args) -> int:
    _setup_device(args)
    from .app import serve

    serve(port=args.port, address=args.address, show=args.show)
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

    s = sub.add_parser("serve", help="start the web app")
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="localhost")
    s.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    s.add_argument("--show", action="store_true", help="open a browser tab")
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
