"""Lyapunov spectra of the dysts catalogue: time per system with the app's default settings.

    python benchmarks/bench_dysts_lyapunov.py [--limit 30] [--sample K | --systems A,B,..]
                                              [--threads N] [--out FILE | --no-write]

Every converted dysts flow (``pip install dysts``) gets the spectrum the Attractors page and
``dynamics-explorer lyapunov`` compute by default: ``lyapunov_spectrum(system,
generator=torch.Generator().manual_seed(0))``, i.e. float64, 128 members, 1,000 transient +
2,500 averaging RK4 steps at the system's ``default_dt``, QR every 10 steps, all ``D``
exponents. dysts flows have no hand-written Jacobian: it is differentiated from the traced
field (:mod:`explorer.core.traced`), so the state and its tangent vectors run in generated C
(:mod:`explorer.core.native`); a field that does not trace falls back to autograd and the
eager torch loop. Each record says which (``jacobian``, ``path``).

The time includes building the native stepper: the compiler cache starts empty (a temporary
``EXPLORER_CACHE``) unless ``--warm-cache``, so the figures are those of a first spectrum.

A run longer than ``--limit`` seconds is stopped through the ``stop`` event and reported as
``"timeout"`` with ``estimated_s`` (elapsed / fraction done). ``--sample K`` takes every K-th
system (in name order) to keep a run short on a small machine; the default is all of them.
The machine may be shared and noisy: the load average before and after is recorded.

Results go to ``benchmarks/results/dysts_lyapunov_cpu.json`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.analysis.lyapunov import (  # noqa: E402
    _field_and_jacobian_fn, _variational_stepper, lyapunov_spectrum)
from explorer.core.traced import traced_jacobian  # noqa: E402
from explorer.core.registry import get_system, load_dysts, system_names  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "dysts_lyapunov_cpu.json"


def run_one(name: str, limit: float) -> dict:
    """Time the default spectrum of one system; stopped after ``limit`` seconds."""
    system = get_system(name)
    stop = threading.Event()
    done = [0.0]
    timer = threading.Timer(limit, stop.set)
    rec: dict = {"dim": system.dim, "dt": system.default_dt}
    t0 = time.perf_counter()
    timer.start()
    try:
        res = lyapunov_spectrum(system, generator=torch.Generator().manual_seed(0),
                                progress=lambda f: done.__setitem__(0, f), stop=stop)
        ok = True
    except Exception as e:  # noqa: BLE001 - a failure is a result here
        res, ok = None, False
        rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    rec["seconds"] = round(elapsed, 3)
    rec["jacobian"] = "traced" if traced_jacobian(system) is not None else "autograd"
    x = torch.zeros(1, system.dim, dtype=torch.float64)
    if _variational_stepper(system, system.dim, x) is not None:
        rec["path"] = "native"
    elif _field_and_jacobian_fn(system, system.bind(x), x).__qualname__.endswith("fj"):
        rec["path"] = "torch loop, field and Jacobian in C"
    else:
        rec["path"] = "torch"
    rec["fraction_done"] = round(done[0], 4)
    if stop.is_set() and done[0] < 1.0:
        rec["status"] = "timeout"
        rec["estimated_s"] = round(elapsed / done[0], 1) if done[0] > 0 else None
    elif not ok:
        rec["status"] = "failed"
    else:
        rec["status"] = res.status if res.status != "ok" else "ok"
        rec["exponents"] = [round(float(v), 5) if math.isfinite(float(v)) else None
                            for v in res.exponents]
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=float, default=30.0, help="seconds per system (30)")
    ap.add_argument("--sample", type=int, default=1, help="every K-th system (1: all)")
    ap.add_argument("--systems", help="comma-separated registry names instead")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads first (default: as is)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the compiled-stepper cache (default: a fresh temporary one)")
    args = ap.parse_args(argv)
    if not args.warm_cache:
        os.environ["EXPLORER_CACHE"] = tempfile.mkdtemp(prefix="bench-dysts-cache-")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    try:
        skipped = load_dysts()
    except ImportError:
        print("dysts is not installed: pip install dysts")
        return 2
    names = sorted(system_names(origin="dysts"))
    total = len(names)
    if args.systems:
        names = [n.strip() for n in args.systems.split(",") if n.strip()]
    else:
        names = names[::max(1, args.sample)]
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    per: dict[str, dict] = {}
    for i, n in enumerate(names, 1):
        per[n] = rec = run_one(n, args.limit)
        extra = f" est {rec['estimated_s']}s" if rec.get("estimated_s") else ""
        print(f"[{i}/{len(names)}] {n:32s} D={rec['dim']:<3d} {rec['seconds']:8.2f} s "
              f"{rec['status']}{extra}", flush=True)
    wall = time.perf_counter() - t_all
    finished = {n: r["seconds"] for n, r in per.items() if r["status"] not in ("failed", "timeout")}
    # a stopped run's full time is at least its limit; use the extrapolation where there is one
    full = {n: (r.get("estimated_s") or r["seconds"]) if r["status"] == "timeout" else r["seconds"]
            for n, r in per.items() if r["status"] != "failed"}
    worst = max(full.items(), key=lambda kv: kv[1]) if full else (None, math.nan)
    summary = {
        "systems_run": len(names),
        "systems_converted": total,
        "systems_skipped_by_the_adapter": len(skipped),
        "completed": len(finished),
        "timeouts": sorted(n for n, r in per.items() if r["status"] == "timeout"),
        "failures": {n: r.get("error", r["status"]) for n, r in per.items() if r["status"] == "failed"},
        "median_s": round(statistics.median(full.values()), 3) if full else None,
        "worst_s": round(worst[1], 3) if full else None,
        "worst_system": worst[0],
        "at_most_5_s": sum(1 for v in full.values() if v <= 5.0),
        "over_5_s": sorted((n for n, v in full.items() if v > 5.0), key=lambda n: -full[n]),
        "traced_jacobian": sum(1 for r in per.values() if r.get("jacobian") == "traced"),
        "native_path": sum(1 for r in per.values() if r.get("path") == "native"),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(summary, indent=1))
    result = {
        "settings": {"what": "lyapunov_spectrum(system, generator=seed 0): app/CLI defaults",
                     "batch": 128, "transient_steps": 1000, "steps": 2500, "renorm_every": 10,
                     "dtype": "float64", "solver": "rk4 with tangent vectors",
                     "jacobian": "explorer.core.traced (exact partials of the traced field; "
                                 "autograd where it does not trace)",
                     "compiler_cache": "warm" if args.warm_cache else "cold (empty at start)",
                     "limit_s": args.limit, "sample_every": args.sample,
                     "systems": args.systems or "all (sampled)" if args.sample > 1 else
                     (args.systems or "all")},
        "summary": summary,
        "per_system": per,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "loadavg_before": [round(v, 2) for v in load0],
                    "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                    "date": time.strftime("%Y-%m-%d")},
    }
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
