"""Benchmarks of the native (generated C) backend, :mod:`explorer.core.native`.

    python benchmarks/bench_native.py [--quick] [--reps N] [--out FILE | --no-write]

1. Lorenz-63 RK4, 4096 trajectories x 10,000 steps, float32, recording every 100th step
   and every step: million trajectory-steps per second (one call, and in chunks of
   1,000 steps as a caller checking a stop event would run it).
2. A single trajectory of 10,000 and 1,000,000 steps (float64 and float32), in seconds,
   against eager torch for 10,000 steps.
3. Build time of a stepper: cold (gcc runs; empty cache directory), warm (the library is
   in the on-disk cache: trace + load + verification only) and cached (in memory).
4. Several simulations at once (1, 2, 4 runs of item 1's size, one Python thread each): the
   rate in all with every run on all cores and with the cores shared among the runs in flight
   (the default); and one run while another process keeps a core busy, with 1 thread, all
   threads and the default.

The machine may be shared and noisy: every figure is repeated and reported as
min / median / max over the repetitions (throughput: max is the least disturbed run).
Results go to ``benchmarks/results/native_cpu.json`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core import native  # noqa: E402
from explorer.core.registry import get_system  # noqa: E402
from explorer.core.simulate import simulate  # noqa: E402


def _stats(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def _fmt(st: dict[str, float], unit: str, digits: int = 0) -> str:
    f = f"{{:.{digits}f}}"
    return (f"{f.format(st['min'])} / {f.format(st['median'])} / {f.format(st['max'])} {unit} "
            f"(min/median/max of {st['n']})")


def bench_batch(reps: int, B: int, steps: int) -> dict:
    s = get_system("lorenz63")
    dtype = torch.float32
    st = native.native_stepper(s, "rk4", dtype)
    gen = torch.Generator().manual_seed(0)
    x0 = (s.initial_state(dtype) + torch.randn(B, 3, generator=gen, dtype=dtype)).contiguous()
    out: dict = {"trajectories": B, "steps": steps, "dtype": "float32", "solver": "rk4",
                 "threads": torch.get_num_threads()}
    for every in (100, 1):
        rates, rates_reuse, rates_chunked, rates_cpu = [], [], [], []
        buf = torch.empty((steps // every, 3, B), dtype=dtype)
        buf.fill_(0.0)                                    # pages touched once
        for _ in range(reps):
            x = x0.clone()
            t = time.perf_counter()
            st.run(x, s.params, 0.01, n_steps=steps, record_every=every)    # fresh buffer
            rates.append(B * steps / (time.perf_counter() - t) / 1e6)
            x = x0.clone()
            t, c0 = time.perf_counter(), time.process_time()
            st.run(x, s.params, 0.01, n_steps=steps, record_every=every, out=buf)
            rates_reuse.append(B * steps / (time.perf_counter() - t) / 1e6)
            rates_cpu.append(B * steps / (time.process_time() - c0) / 1e6)
            x = x0.clone()
            ok = torch.ones(B, dtype=torch.bool)
            n_ok = torch.zeros(B, dtype=torch.int32)
            chunk = 1000
            t = time.perf_counter()
            for c in range(0, steps, chunk):
                st.run(x, s.params, 0.01, n_steps=chunk, record_every=every, ok=ok, n_ok=n_ok,
                       out=buf[c // every:(c + chunk) // every])
            rates_chunked.append(B * steps / (time.perf_counter() - t) / 1e6)
        key = f"record_every_{every}"
        out[key] = {"M_steps_per_s": _stats(rates), "M_steps_per_s_reused_buffer": _stats(rates_reuse),
                    "M_steps_per_s_chunked_1000": _stats(rates_chunked),
                    "M_steps_per_cpu_s": _stats(rates_cpu),
                    "output_MB": buf.numel() * buf.element_size() / 1e6}
        r = out[key]
        unit = "M traj-steps/s"
        print(f"Lorenz-63 RK4 {B} x {steps} float32, every {every}:")
        print(f"   one call, new output buffer:  {_fmt(r['M_steps_per_s'], unit)}")
        print(f"   one call, reused buffer:      {_fmt(r['M_steps_per_s_reused_buffer'], unit)}")
        print(f"   10 calls of 1,000 steps:      {_fmt(r['M_steps_per_s_chunked_1000'], unit)}")
        print(f"   per CPU-second (reused buf.): {_fmt(r['M_steps_per_cpu_s'], 'M traj-steps/CPU-s')}")
        del buf
    return out


def bench_single(reps: int, long_steps: int) -> dict:
    s = get_system("lorenz63")
    out: dict = {}
    for dtype in (torch.float64, torch.float32):
        st = native.native_stepper(s, "rk4", dtype)
        name = str(dtype).replace("torch.", "")
        res = {}
        for n in (10_000, long_steps):
            ts = []
            for _ in range(reps):
                x = s.initial_state(dtype).reshape(1, 3).clone()
                t = time.perf_counter()
                st.run(x, s.params, 0.01, n_steps=n, record_every=1)
                ts.append(time.perf_counter() - t)
            res[f"{n}_steps_s"] = _stats(ts)
            print(f"single trajectory {n:>9,} steps {name}: {_fmt(res[f'{n}_steps_s'], 's', 4)}")
        out[name] = res
    ts = []
    for _ in range(max(1, reps // 3)):
        t = time.perf_counter()
        simulate(s, steps=10_000, compile=False)
        ts.append(time.perf_counter() - t)
    out["eager_torch_10000_steps_float64_s"] = _stats(ts)
    print("   eager torch simulate, 10,000 steps float64: "
          f"{_fmt(out['eager_torch_10000_steps_float64_s'], 's', 3)}")
    return out


def _run_jobs(st, params, x0, steps: int, k: int, threads) -> float:
    """``k`` runs of ``x0`` (each B trajectories x ``steps``) at once, one Python thread each
    (the native call releases the GIL): million trajectory-steps per second in all."""
    import threading

    xs = [x0.clone() for _ in range(k)]
    go = threading.Barrier(k + 1)

    errors: list[BaseException] = []

    def work(x):
        go.wait()
        try:
            st.run(x, params, 0.01, n_steps=steps, record_every=100, threads=threads)
        except BaseException as e:          # noqa: BLE001 - re-raised below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in ts:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return k * x0.shape[0] * steps / (time.perf_counter() - t0) / 1e6


def bench_concurrent(reps: int, B: int, steps: int) -> dict:
    """Several simulations at once, as on a server with many sessions: the aggregate rate of
    k = 1, 2, 4 simultaneous runs (Lorenz-63 RK4 float32, B trajectories x ``steps`` each)
    with every run on all cores (``threads=torch.get_num_threads()``, the old default) and
    with the cores shared among the runs in flight (the default now); then one run while
    another process keeps one core busy, with 1 thread, all threads and the default."""
    import subprocess

    s = get_system("lorenz63")
    st = native.native_stepper(s, "rk4", torch.float32)
    gen = torch.Generator().manual_seed(0)
    x0 = (s.initial_state(torch.float32) + torch.randn(B, 3, generator=gen)).contiguous()
    cores = torch.get_num_threads()
    out: dict = {"trajectories": B, "steps": steps, "torch_threads": cores, "concurrent": {}}
    for k in (1, 2, 4):
        row = {}
        for name, threads in (("all_threads_each", cores), ("shared", None)):
            row[name] = _stats([_run_jobs(st, s.params, x0, steps, k, threads) for _ in range(reps)])
        out["concurrent"][str(k)] = row
        print(f"{k} run(s) at once, M steps/s in all: every run on {cores} threads "
              f"{_fmt(row['all_threads_each'], '')}; shared {_fmt(row['shared'], '')}")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = {}
        for name, threads in (("1_thread", 1), (f"{cores}_threads", cores), ("default", None)):
            loaded[name] = _stats([_run_jobs(st, s.params, x0, steps, 1, threads) for _ in range(reps)])
            print(f"one run, one core busy elsewhere, {name}: {_fmt(loaded[name], 'M steps/s')}")
    finally:
        busy.kill()
        busy.wait()
    out["one_core_busy_elsewhere"] = loaded
    out["note"] = ("M trajectory-steps/s summed over the runs; the default divides the torch "
                   "threads among native runs in flight in this process; another process's "
                   "load is not seen by it")
    return out


def bench_build(reps: int) -> dict:
    """Cold: an empty cache directory and no in-memory cache (gcc runs). Warm: the library
    is on disk (trace, load, verify). Cached: in memory."""
    names = ["lorenz63", "thomas", "double_pendulum", "henon"]
    cold, warm, cached = [], [], []
    old = os.environ.get("EXPLORER_CACHE")
    try:
        for i in range(reps):
            with tempfile.TemporaryDirectory(prefix="explorer-bench-") as tmp:
                os.environ["EXPLORER_CACHE"] = tmp
                for n in names:
                    s = get_system(n)
                    solver = "map" if s.kind == "map" else "rk4"
                    native._steppers.clear()
                    native._libs.clear()
                    t = time.perf_counter()
                    assert native.native_stepper(s, solver, torch.float32) is not None
                    cold.append(time.perf_counter() - t)
                    native._steppers.clear()
                    native._libs.clear()
                    t = time.perf_counter()
                    native.native_stepper(s, solver, torch.float32)
                    warm.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    native.native_stepper(s, solver, torch.float32)
                    cached.append(time.perf_counter() - t)
    finally:
        if old is None:
            os.environ.pop("EXPLORER_CACHE", None)
        else:
            os.environ["EXPLORER_CACHE"] = old
        native._steppers.clear()
    out = {"systems": names, "cold_s": _stats(cold), "warm_s": _stats(warm), "cached_s": _stats(cached)}
    print(f"build, cold (gcc):             {_fmt(out['cold_s'], 's', 3)}")
    print(f"build, warm (on-disk cache):   {_fmt(out['warm_s'], 's', 4)}")
    print(f"build, cached (in memory):     {_fmt(out['cached_s'], 's', 6)}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 1,000 trajectories")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "native_cpu.json"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not native.available():
        print("native backend unavailable:", native._environment().get("reason"))
        return 1
    reps = args.reps or (2 if args.quick else 5)
    env = native._environment()
    t = time.perf_counter()
    native.native_stepper(get_system("lorenz63"), "rk4", torch.float32)   # first use
    print(f"first stepper of the process: {time.perf_counter() - t:.3f} s")
    res = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "compiler": env["version"], "libmvec": env["mvec"],
                    "python": platform.python_version()},
        "build": bench_build(max(1, reps // 2)),
        "single": bench_single(reps, 100_000 if args.quick else 1_000_000),
        "lorenz_rk4_batch": bench_batch(reps, 1024 if args.quick else 4096, 10_000),
        "concurrent": bench_concurrent(max(2, reps // 2), 1024 if args.quick else 4096,
                                       2_000 if args.quick else 10_000),
    }
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
