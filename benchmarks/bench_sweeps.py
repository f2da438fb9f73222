"""Parameter maps on Dask: throughput of two large Lyapunov maps, Dask's overhead per chunk,
scaling from 1 to 2 workers, and a projection to 10 and 100 workers.

* **the maps**: the largest Lyapunov exponent of the Hénon map over (a, b) in
  [1.0, 1.4] x [0.0, 0.3] (``--henon`` per side, default 1000 x 1000; mostly bounded orbits)
  and of the Rössler flow over (a, c) in [0.05, 0.25] x [2, 12] (``--rossler``, default
  400 x 400), each computed by :func:`~explorer.sweeps.run_map` on a LocalCluster of
  ``--workers`` worker processes (one thread each) into memory (``--zarr``: into a Zarr store
  in a temporary folder, as the CLI does). Reported: seconds and parameter points per second,
  without and with the cluster's start-up (timed apart), and the per-tile compute times.
* **Dask overhead per chunk**: the first ``--subset`` tiles of each map (a smaller map of the
  same columns and the first rows, so its tiles are exactly those tiles) computed by plain
  ``spec.evaluate(tile)`` calls in a loop, then by ``run_map`` on an in-process LocalCluster of
  1 worker (threads, ``processes=False``): overhead per chunk = (Dask wall - plain wall) /
  chunks, and as a percent of the plain time per chunk (target: under 10 %). Also the
  overhead outside the tasks' own compute time (wall - sum of the tiles' seconds measured
  inside the tasks), which the machine's other load disturbs less.
* **Scaling**: the same tiles on 1 and then 2 worker processes (``processes=True``): speedup
  and efficiency (speedup / 2) from the walls without start-up; the clusters' start-up and
  the workers' warm-up (the first import and tile in a fresh process) are reported apart.
* **Projection** to 10 and 100 workers for the full maps:
  ``T(W) = startup + ceil(chunks / W) * (t_chunk + overhead_chunk)`` with ``t_chunk`` the
  median tile time on one single-threaded worker process, ``overhead_chunk`` the per-chunk
  overhead on that worker (wall - compute, per chunk) and ``startup`` the 2-worker cluster's
  start-up plus warm-up; it is checked against the measured full map where one was run.

The machine may be shared (the load average before and after is recorded); timings are
reported as measured, never asserted. ``--quick`` shrinks everything to run in about a minute.
Results go to ``benchmarks/results/sweeps_cpu.json``.

    python benchmarks/bench_sweeps.py [--henon 1000] [--rossler 400] [--chunk 16384]
        [--subset 4] [--workers N] [--no-full] [--zarr] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.analysis.parameter_maps import Axis, MapSpec, Quantity
from explorer.core.registry import system_class
from explorer.sweeps import dask_client, run_map

OUT = ROOT / "benchmarks" / "results" / "sweeps_cpu.json"
#: the boxes: (system, x axis, x range, y axis, y range)
BOXES = {"henon": ("a", (1.0, 1.4), "b", (0.0, 0.3)),
         "rossler": ("a", (0.05, 0.25), "c", (2.0, 12.0))}
FORMULA = "T(W) = startup + ceil(chunks / W) * (t_chunk + overhead_chunk)"
PROJECT_WORKERS = (1, 2, 10, 100)


def r(x, nd=4):
    """Rounded, or None for a missing or non-finite number."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return round(float(x), nd)


def make_spec(name: str, n: int, steps: int, transient: int) -> MapSpec:
    xn, (x0, x1), yn, (y0, y1) = BOXES[name]
    return MapSpec(system_class(name)(), Axis(xn, x0, x1, n), Quantity.parse("lyapunov"),
                   y=Axis(yn, y0, y1, n), steps=steps, transient=transient)


def first_tiles(spec: MapSpec, chunk: int, k: int) -> MapSpec:
    """The map of ``spec``'s first ``k`` tiles: the same columns and the first rows (or, when a
    tile is a piece of a row, the first columns of the first row), so that its tiles are those
    very tiles (the same grid values, the same shape)."""
    tw, th = spec.tile_shape(chunk)
    ny, nx = spec.shape2d
    if tw == nx:
        rows, cols = min(ny, k * th), nx
    else:
        rows, cols = 1, min(nx, k * tw)

    def cut(ax: Axis, n: int) -> Axis:
        v = ax.values()
        return Axis(ax.name, ax.lo, ax.hi, 1, ax.log) if n == 1 else \
            Axis(ax.name, float(v[0]), float(v[n - 1]), n, ax.log)

    return dataclasses.replace(spec, x=cut(spec.x, cols), y=cut(spec.y, rows))


def tiny(spec: MapSpec) -> MapSpec:
    """A 2 x 2 map of the same system and quantity with a few steps: warms up a process."""
    return dataclasses.replace(spec, x=Axis(spec.x.name, spec.x.lo, spec.x.hi, 2),
                               y=Axis(spec.y.name, spec.y.lo, spec.y.hi, 2), steps=20, transient=5)


def warm(specs) -> float:
    """Evaluate each tiny spec once (imports, first calls, compiled kernels): its seconds."""
    t = time.perf_counter()
    for s in specs:
        s.evaluate(s.tiles(4)[0])
    return time.perf_counter() - t


def stats(secs) -> dict:
    secs = list(secs)
    if not secs:
        return {}
    return {"n": len(secs), "median_s": r(statistics.median(secs)), "mean_s": r(statistics.mean(secs)),
            "min_s": r(min(secs)), "max_s": r(max(secs)), "sum_s": r(sum(secs), 3)}


def values_of(run) -> np.ndarray:
    store = run.store
    if hasattr(store, "values"):
        return np.asarray(store.values)
    return np.asarray(run.dataset()[run.spec.quantity.output].values)


@contextlib.contextmanager
def cluster(workers: int, processes: bool, warm_specs):
    """A LocalCluster client, with its start-up and the workers' warm-up timed."""
    t = time.perf_counter()
    with dask_client(workers=workers, processes=processes) as c:
        try:
            c.wait_for_workers(workers, timeout=120)
        except Exception as e:                              # noqa: BLE001 - time what came up
            print(f"  not all {workers} workers came up: {type(e).__name__}: {e}")
        startup = time.perf_counter() - t
        t = time.perf_counter()
        warmup = None
        if processes:
            try:
                c.run(warm, warm_specs)
                warmup = time.perf_counter() - t
            except Exception as e:                          # noqa: BLE001 - a result, not a stop
                print(f"  warm-up failed: {type(e).__name__}: {e}")
        info = {"workers": len(c.scheduler_info().get("workers", {})), "processes": processes,
                "startup_s": r(startup, 3), "warmup_s": r(warmup, 3)}
        yield c, info


def timed_run(spec: MapSpec, chunk: int, client, zarr: bool) -> tuple[dict, np.ndarray | None]:
    """``run_map`` on an open client (start-up not included): its summary, tile times, values."""
    try:
        with (tempfile.TemporaryDirectory() if zarr else contextlib.nullcontext()) as d:
            out = os.path.join(d, "map.zarr") if d else None
            t = time.perf_counter()
            run = run_map(spec, out, chunk=chunk, client=client)
            wall = time.perf_counter() - t
            vals = values_of(run)
    except Exception as e:                                  # noqa: BLE001 - a failure is a result
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}, None
    s = run.summary()
    compute = sum(run.tile_seconds)
    rec = {"seconds": r(run.seconds, 3), "wall_s": r(wall, 3), "points": spec.n_points,
           "points_per_second": r(spec.n_points / run.seconds, 1) if run.seconds > 0 else None,
           "chunks": s["chunks"], "chunks_computed": s["chunks_computed"],
           "chunks_retried": s["chunks_retried"], "complete": s["complete"], "workers": s["workers"],
           "tile_seconds": stats(run.tile_seconds),
           "overhead_outside_compute_per_chunk_s":
               r((run.seconds - compute) / max(1, s["chunks_computed"])) if s["workers"] == 1 else None,
           "nan_fraction": r(float(np.isnan(vals).mean())) if vals is not None else None,
           "store": "zarr" if zarr else "memory"}
    return rec, vals


def plain_loop(spec: MapSpec, chunk: int) -> tuple[float, list[float], np.ndarray]:
    """Every tile by ``spec.evaluate`` in this process, in order: wall, per-tile seconds, values."""
    vals = np.full(spec.shape, np.nan)
    per = []
    t0 = time.perf_counter()
    for tile in spec.tiles(chunk):
        t = time.perf_counter()
        vals[tile.y0:tile.y1, tile.x0:tile.x1] = spec.evaluate(tile)
        per.append(time.perf_counter() - t)
    return time.perf_counter() - t0, per, vals


def project(chunks: int, t_chunk, overhead, startup) -> dict:
    if t_chunk is None:
        return {}
    ov = max(0.0, overhead or 0.0)
    st = startup or 0.0
    out = {}
    for w in PROJECT_WORKERS:
        rounds = math.ceil(chunks / w)
        out[str(w)] = {"seconds": r(st + rounds * (t_chunk + ov), 2), "rounds": rounds,
                       "idle_workers_last_round": w * rounds - chunks}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--henon", type=int, default=None, help="Hénon grid side (default 1000)")
    ap.add_argument("--rossler", type=int, default=None, help="Rössler grid side (default 400)")
    ap.add_argument("--henon-steps", type=int, default=None, help="default 1000")
    ap.add_argument("--henon-transient", type=int, default=None, help="default 200")
    ap.add_argument("--rossler-steps", type=int, default=None, help="default 2000")
    ap.add_argument("--rossler-transient", type=int, default=None, help="default 1000")
    ap.add_argument("--chunk", type=int, default=None, help="points per tile (default 16384)")
    ap.add_argument("--subset", type=int, default=None,
                    help="tiles in the overhead and scaling runs (default 4)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="plain and in-process Dask runs alternate this many times; the minimum counts")
    ap.add_argument("--workers", type=int, default=None,
                    help="worker processes for the full maps (default: the machine's cores)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads of the plain loop (default: the cores, what a task on an "
                         "in-process worker of one thread takes; worker processes use 1)")
    ap.add_argument("--no-full", action="store_true", help="skip the full maps (project only)")
    ap.add_argument("--zarr", action="store_true", help="store the full maps in Zarr (temporary)")
    ap.add_argument("--quick", action="store_true",
                    help="60x60 Hénon, 20x20 Rössler, few steps, small chunks: about a minute")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    q = args.quick

    def pick(v, full, quick):
        return v if v is not None else (quick if q else full)

    sides = {"henon": pick(args.henon, 1000, 60), "rossler": pick(args.rossler, 400, 20)}
    runs = {"henon": (pick(args.henon_steps, 1000, 200), pick(args.henon_transient, 200, 50)),
            "rossler": (pick(args.rossler_steps, 2000, 200), pick(args.rossler_transient, 1000, 100))}
    chunk = pick(args.chunk, 16_384, 100)
    k = max(1, pick(args.subset, 4, 4))
    workers = max(1, args.workers or os.cpu_count() or 1)
    torch.set_num_threads(max(1, args.threads))

    import dask
    import distributed

    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "python": platform.python_version(), "torch": torch.__version__,
                             "dask": dask.__version__, "distributed": distributed.__version__,
                             "torch_threads_main": torch.get_num_threads(),
                             "load_average_at_start": r(os.getloadavg()[0], 2)},
                 "settings": {"quick": q, "chunk": chunk, "subset_tiles": k, "repeats": args.repeats,
                              "full_map_workers": None if args.no_full else workers,
                              "store": "zarr" if args.zarr else "memory"}}
    specs = {n: make_spec(n, sides[n], *runs[n]) for n in sides}
    subs = {n: first_tiles(s, chunk, k) for n, s in specs.items()}
    warm_specs = [tiny(s) for s in specs.values()]
    maps: dict = {}
    for n, s in specs.items():
        xn, xr, yn, yr = BOXES[n]
        tw, th = s.tile_shape(chunk)
        st = s.settings()
        maps[n] = {"quantity": "lyapunov", "box": {xn: list(xr), yn: list(yr)},
                   "grid": [s.y.n, s.x.n], "points": s.n_points, "steps": st["steps"],
                   "transient": st["transient"], "dt": st["dt"], "chunks": len(s.tiles(chunk)),
                   "tile_shape_rows_cols": [th, tw],
                   "subset": {"grid": [subs[n].y.n, subs[n].x.n], "chunks": len(subs[n].tiles(chunk)),
                              f"{yn}_range": [subs[n].y.lo, subs[n].y.hi]}}
        print(f"{n}: {s.y.n}x{s.x.n} = {s.n_points:,} points, {maps[n]['chunks']} chunks of "
              f"{th}x{tw}, steps {st['steps']} transient {st['transient']}; subset "
              f"{maps[n]['subset']['chunks']} chunks")
    res["maps"] = maps
    res["main_warmup_s"] = r(warm(warm_specs), 3)

    # ---- 2. Dask overhead per chunk: plain loop vs an in-process 1-worker cluster
    print("\n[overhead] plain spec.evaluate loop vs run_map on 1 in-process worker")
    overhead: dict = {}
    with cluster(1, False, warm_specs) as (c, info):
        res["cluster_inprocess_1"] = info
        for n, sub in subs.items():
            plains, dasks, recs, same = [], [], [], None
            for _ in range(max(1, args.repeats)):
                pw, per, pv = plain_loop(sub, chunk)
                plains.append((pw, per))
                rec, dv = timed_run(sub, chunk, c, False)
                recs.append(rec)
                if dv is not None:
                    dasks.append(rec["seconds"])
                    same = bool(np.array_equal(pv, dv, equal_nan=True))
            pw, per = min(plains, key=lambda p: p[0])
            chunks = len(per)
            o = {"chunks": chunks, "plain_s": r(pw, 3), "plain_per_chunk_s": r(pw / chunks),
                 "plain_tile_seconds": stats(per), "same_values": same}
            if dasks:
                dw = min(dasks)
                rec = recs[[x.get("seconds") for x in recs].index(dw)]
                ov = (dw - pw) / chunks
                o.update({"dask_s": r(dw, 3), "dask_per_chunk_s": r(dw / chunks),
                          "dask_tile_seconds": rec["tile_seconds"],
                          "overhead_per_chunk_s": r(ov),
                          "overhead_percent": r(100 * ov / (pw / chunks), 2),
                          "overhead_outside_compute_per_chunk_s":
                              rec["overhead_outside_compute_per_chunk_s"],
                          "overhead_outside_compute_percent":
                              r(100 * rec["overhead_outside_compute_per_chunk_s"] / (pw / chunks), 2)
                              if rec["overhead_outside_compute_per_chunk_s"] is not None else None})
            else:
                o["error"] = recs[-1].get("error")
            overhead[n] = o
            print(f"  {n}: {chunks} chunks, plain {o['plain_s']} s, dask {o.get('dask_s')} s -> "
                  f"overhead {o.get('overhead_per_chunk_s')} s/chunk ({o.get('overhead_percent')} %); "
                  f"outside compute {o.get('overhead_outside_compute_per_chunk_s')} s/chunk "
                  f"({o.get('overhead_outside_compute_percent')} %); same values: {same}")
    res["dask_overhead"] = overhead
    res["dask_overhead_target_percent"] = "< 10"

    # ---- 3. scaling: 1 and 2 worker processes on the same tiles
    print("\n[scaling] the same tiles on 1 and 2 worker processes")
    scaling: dict = {n: {} for n in subs}
    clusters: dict = {}
    full: dict = {}
    for w in (1, 2):
        with cluster(w, True, warm_specs) as (c, info):
            clusters[f"process_{w}"] = info
            print(f"  {w} worker(s): start-up {info['startup_s']} s, warm-up {info['warmup_s']} s")
            for n, sub in subs.items():
                rec, _ = timed_run(sub, chunk, c, False)
                scaling[n][f"workers_{w}"] = rec
                print(f"    {n}: {rec.get('seconds')} s, {rec.get('points_per_second')} points/s, "
                      f"median tile {rec.get('tile_seconds', {}).get('median_s')} s"
                      + (f"  ERROR {rec['error']}" if "error" in rec else ""))
            if w == 2 and workers == 2 and not args.no_full:
                full = {n: timed_run(s, chunk, c, args.zarr)[0] for n, s in specs.items()}
                full["cluster"] = info
    for n, sc in scaling.items():
        t1, t2 = sc["workers_1"].get("seconds"), sc["workers_2"].get("seconds")
        if t1 and t2:
            sc["speedup"] = r(t1 / t2, 3)
            sc["efficiency"] = r(t1 / t2 / 2, 3)
        print(f"  {n}: speedup 1->2 workers {sc.get('speedup')}, efficiency {sc.get('efficiency')}")
    res["clusters"] = clusters
    res["scaling"] = scaling

    # ---- 1. the full maps
    if not args.no_full and not full:
        with cluster(workers, True, warm_specs) as (c, info):
            full = {n: timed_run(s, chunk, c, args.zarr)[0] for n, s in specs.items()}
            full["cluster"] = info
    if full:
        print(f"\n[full maps] {workers} worker process(es); cluster start-up "
              f"{full['cluster']['startup_s']} s + warm-up {full['cluster']['warmup_s']} s")
        st = (full["cluster"]["startup_s"] or 0) + (full["cluster"]["warmup_s"] or 0)
        for n in specs:
            rec = full[n]
            if rec.get("seconds"):
                rec["seconds_with_startup"] = r(rec["seconds"] + st, 3)
                rec["points_per_second_with_startup"] = r(rec["points"] / (rec["seconds"] + st), 1)
            maps[n]["full"] = rec
            print(f"  {n}: {rec.get('seconds')} s ({rec.get('seconds_with_startup')} s with start-up), "
                  f"{rec.get('points_per_second')} points/s, {rec.get('chunks')} chunks, "
                  f"median tile {rec.get('tile_seconds', {}).get('median_s')} s, "
                  f"NaN fraction {rec.get('nan_fraction')}"
                  + (f"  ERROR {rec['error']}" if "error" in rec else ""))
        res["cluster_full"] = full["cluster"]

    # ---- 4. projection to 10 and 100 workers
    p2 = clusters.get("process_2", {})
    startup = (p2.get("startup_s") or 0) + (p2.get("warmup_s") or 0)
    proj: dict = {"formula": FORMULA,
                  "terms": {"t_chunk": "median tile seconds on 1 single-threaded worker process "
                                       "(the scaling run's subset)",
                            "overhead_chunk": "(wall - sum of tile seconds) / chunks on that "
                                              "worker (scheduling, transfer, store)",
                            "startup": "start-up + warm-up of the 2-process LocalCluster "
                                       "(a real cluster's grows with W and its queue)"},
                  "assumes": "one core per worker, no contention, tiles of equal cost"}
    print(f"\n[projection] {FORMULA}")
    for n, s in specs.items():
        w1 = scaling[n].get("workers_1", {})
        t_chunk = w1.get("tile_seconds", {}).get("median_s")
        ov = w1.get("overhead_outside_compute_per_chunk_s")
        chunks = maps[n]["chunks"]
        pr = {"chunks": chunks, "t_chunk_s": t_chunk, "overhead_chunk_s": ov,
              "startup_s": r(startup, 3), "seconds_by_workers": project(chunks, t_chunk, ov, startup)}
        if full and full.get(n, {}).get("seconds"):
            wf = full["cluster"]["workers"] or workers
            stf = (full["cluster"]["startup_s"] or 0) + (full["cluster"]["warmup_s"] or 0)
            if t_chunk is not None:
                pw = stf + math.ceil(chunks / wf) * (t_chunk + max(0.0, ov or 0.0))
                pr["check_against_full_map"] = {"workers": wf, "predicted_s": r(pw, 2),
                                                "measured_with_startup_s":
                                                    full[n].get("seconds_with_startup")}
        proj[n] = pr
        line = ", ".join(f"{w} workers {v['seconds']} s" for w, v in pr["seconds_by_workers"].items())
        print(f"  {n} ({chunks} chunks, t_chunk {t_chunk} s, overhead {ov} s, startup "
              f"{r(startup, 2)} s): {line}")
        if "check_against_full_map" in pr:
            ch = pr["check_against_full_map"]
            print(f"    check: {ch['workers']} workers predicted {ch['predicted_s']} s, "
                  f"measured {ch['measured_with_startup_s']} s")
    res["projection"] = proj
    res["machine"]["load_average_at_end"] = r(os.getloadavg()[0], 2)

    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        print("\nwrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
