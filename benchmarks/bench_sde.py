"""Euler-Maruyama throughput of SDE ensembles: native (generated C) vs eager torch vs NumPy.

    python benchmarks/bench_sde.py [--quick] [--reps N] [--out FILE | --no-write]

For a 2D SDE (``rotating_double_well``) and a 1D one (``ornstein_uhlenbeck``), in float64
and float32, 4096 trajectories, dt = 0.01, recording every 100th step; figures in million
trajectory-steps per second (M traj-steps/s):

* native: :class:`explorer.core.native.NativeStepper` (Philox4x32-10 + Box-Muller noise in
  C, OpenMP over blocks of trajectories), 10,000 steps in one call, with all threads and with
  one; and end to end through ``simulate(..., seed=...)`` (chunked calls, recording,
  divergence bookkeeping);
* eager torch: ``simulate(..., compile=False)`` with a ``torch.Generator`` (torch.randn
  noise) and with a seed (the counter-based noise, computed by the compiled generator),
  fewer steps;
* torch.compile (Inductor): not supported for SDEs by ``simulate`` (``compile="inductor"``
  runs eagerly and says so in ``backend_note``); reported as such;
* NumPy: a reference written here, vectorised over trajectories, ``np.random.default_rng``
  normals, the same formulas without divergence masking (a generous baseline), fewer steps.

The machine may be shared and noisy: every figure is repeated and reported as
min / median / max over the repetitions (max is the least disturbed run); the load average
before and after is recorded. Results go to ``benchmarks/results/sde_cpu.json`` unless
``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core import native  # noqa: E402
from explorer.core.registry import get_system  # noqa: E402
from explorer.core.simulate import simulate  # noqa: E402

DT = 0.01
EVERY = 100
SYSTEMS = ("rotating_double_well", "ornstein_uhlenbeck")


def _stats(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def _fmt(st: dict[str, float]) -> str:
    return (f"{st['min']:8.2f} / {st['median']:8.2f} / {st['max']:8.2f} M traj-steps/s "
            f"(min/median/max of {st['n']})")


# ------------------------------------------------------------------ NumPy reference
def numpy_em(name: str, params: dict, x0: np.ndarray, steps: int, dt: float, every: int,
             seed: int) -> np.ndarray:
    """Euler-Maruyama for ``name`` vectorised over the trajectories of ``x0`` (B, D); returns
    the (steps // every, B, D) records."""
    rng = np.random.default_rng(seed)
    dtype = x0.dtype
    B, D = x0.shape
    sq = np.sqrt(dt)
    out = np.empty((steps // every, B, D), dtype=dtype)
    if name == "rotating_double_well":
        k, w, s = params["k"], params["omega"], params["sigma"]
        x, y = x0[:, 0].copy(), x0[:, 1].copy()
        for i in range(steps):
            z = rng.standard_normal((2, B), dtype=dtype)
            ux = x * x * x - x
            uy = k * y
            x, y = (x + dt * (-ux - w * uy) + (s * sq) * z[0],
                    y + dt * (-uy + w * ux) + (s * sq) * z[1])
            if (i + 1) % every == 0:
                out[(i + 1) // every - 1, :, 0] = x
                out[(i + 1) // every - 1, :, 1] = y
    elif name == "ornstein_uhlenbeck":
        th, mu, s = params["theta"], params["mu"], params["sigma"]
        x = x0[:, 0].copy()
        for i in range(steps):
            z = rng.standard_normal(B, dtype=dtype)
            x = x + dt * (th * (mu - x)) + (s * sq) * z
            if (i + 1) % every == 0:
                out[(i + 1) // every - 1, :, 0] = x
    else:
        raise ValueError(name)
    return out


# ------------------------------------------------------------------ one system
def bench_system(name: str, dtype: torch.dtype, reps: int, B: int, steps: dict) -> dict:
    s = get_system(name)
    D = s.dim
    gen = torch.Generator().manual_seed(0)
    x0 = (s.initial_state(dtype) + 0.1 * torch.randn(B, D, generator=gen, dtype=dtype)).contiguous()
    st = native.native_stepper(s, "euler_maruyama", dtype)
    assert st is not None, native.refusal(s, "euler_maruyama", dtype)
    tag = f"{name} {str(dtype).replace('torch.', '')}"
    res: dict = {"dim": D, "noises": s.n_noises,
                 "params": {k: float(v) for k, v in s.params.items()}}
    all_threads = torch.get_num_threads()

    n = steps["native"]
    buf = torch.empty((n // EVERY, D, B), dtype=dtype)
    buf.fill_(0.0)
    for key, threads in (("native_all_threads", all_threads), ("native_1_thread", 1)):
        rates = []
        for r in range(reps):
            x = x0.clone()
            t = time.perf_counter()
            st.run(x, s.params, DT, n_steps=n, record_every=EVERY, out=buf, seed=r, threads=threads)
            rates.append(B * n / (time.perf_counter() - t) / 1e6)
        res[key] = _stats(rates)
        res[key]["threads"] = threads
        res[key]["steps"] = n
        print(f"{tag:32s} {key:22s} {_fmt(res[key])}")
    rates = []
    for r in range(max(1, reps // 2)):
        t = time.perf_counter()
        tr = simulate(s, x0, steps=n, save_every=EVERY, dt=DT, seed=r, dtype=dtype)
        rates.append(B * n / (time.perf_counter() - t) / 1e6)
        assert tr.backend == "native", tr.backend_note
    res["native_simulate"] = {**_stats(rates), "steps": n, "threads": all_threads}
    print(f"{tag:32s} {'native_simulate':22s} {_fmt(res['native_simulate'])}")

    n = steps["eager"]
    assert n % EVERY == 0 and steps["native"] % EVERY == 0 and steps["numpy"] % EVERY == 0
    for key, kw in (("eager_torch_generator", {"generator": None}),
                    ("eager_torch_seed", {"seed": 1})):
        rates = []
        for r in range(max(1, reps // 2)):
            if "generator" in kw:
                kw = {"generator": torch.Generator().manual_seed(r)}
            t = time.perf_counter()
            tr = simulate(s, x0, steps=n, save_every=EVERY, dt=DT, dtype=dtype, compile=False, **kw)
            rates.append(B * n / (time.perf_counter() - t) / 1e6)
            assert tr.backend == "eager"
        res[key] = {**_stats(rates), "steps": n}
        print(f"{tag:32s} {key:22s} {_fmt(res[key])}")
    tr = simulate(s, x0[:8], steps=EVERY, save_every=EVERY, dt=DT, dtype=dtype, seed=0,
                  compile="inductor")
    res["inductor"] = {"supported": False,
                       "note": (f"simulate(compile='inductor') ran on {tr.backend}: "
                                f"{tr.backend_note}")}

    n = steps["numpy"]
    npx = x0.numpy()
    rates = []
    for r in range(reps):
        t = time.perf_counter()
        rec = numpy_em(name, {k: float(v) for k, v in s.params.items()}, npx, n, DT, EVERY, r)
        rates.append(B * n / (time.perf_counter() - t) / 1e6)
    res["numpy"] = {**_stats(rates), "steps": n}
    print(f"{tag:32s} {'numpy':22s} {_fmt(res['numpy'])}")

    # sanity: the same law (second moments of the last records agree within sampling error)
    x = x0.clone()
    nat, _, _ = st.run(x, s.params, DT, n_steps=steps["numpy"], record_every=EVERY, seed=99)
    m_nat = float((nat[-1].double() ** 2).mean())
    m_np = float((rec[-1].astype(np.float64) ** 2).mean())
    res["check_mean_square_last_record"] = {"native": m_nat, "numpy": m_np}
    print(f"{tag:32s} check <x^2> at the end: native {m_nat:.4f}, numpy {m_np:.4f}")

    best_np = res["numpy"]["max"]
    res["ratio_native_all_threads_over_numpy"] = res["native_all_threads"]["max"] / best_np
    res["ratio_native_1_thread_over_numpy"] = res["native_1_thread"]["max"] / best_np
    res["ratio_native_all_threads_over_eager_torch"] = (res["native_all_threads"]["max"]
                                                       / res["eager_torch_generator"]["max"])
    print(f"{tag:32s} native/numpy: {res['ratio_native_all_threads_over_numpy']:.1f}x all threads, "
          f"{res['ratio_native_1_thread_over_numpy']:.1f}x one thread; native/eager torch "
          f"{res['ratio_native_all_threads_over_eager_torch']:.0f}x")
    return res


def bench_normals(reps: int) -> dict:
    """The noise alone: compiled counter-based normals (millions per second, one thread)."""
    out = {}
    for dtype in (torch.float64, torch.float32):
        n = 1_000_000
        rates = []
        native.counter_normals(0, 0, 1000, 2, dtype)
        for r in range(reps):
            t = time.perf_counter()
            native.counter_normals(r, 1, n, 2, dtype)
            rates.append(2 * n / (time.perf_counter() - t) / 1e6)
        key = str(dtype).replace("torch.", "")
        out[key] = {"M_normals_per_s": _stats(rates)}
        print(f"counter-based normals {key}: {rates and max(rates):.1f} M/s (best of {reps})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sde_cpu.json"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not native.available():
        print("native backend unavailable:", native._environment().get("reason"))
        return 1
    reps = args.reps or (2 if args.quick else 4)
    B = 4096
    steps = ({"native": 2000, "eager": 100, "numpy": 200} if args.quick else
             {"native": 10_000, "eager": 300, "numpy": 2000})
    load0 = os.getloadavg()
    env = native._environment()
    t0 = time.perf_counter()
    res: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "cpu": _cpu_model(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "numpy": np.__version__,
                    "compiler": env["version"], "libmvec": env["mvec"],
                    "python": platform.python_version(), "loadavg_start": list(load0)},
        "config": {"trajectories": B, "dt": DT, "record_every": EVERY, "steps": steps,
                   "solver": "euler_maruyama", "units": "million trajectory-steps per second",
                   "noise": "native and seeded eager: Philox4x32-10 keyed by (seed, step, "
                            "trajectory, component) + Box-Muller; eager with a generator: "
                            "torch.randn; numpy: default_rng().standard_normal (ziggurat)"},
        "normals": bench_normals(reps),
        "systems": {},
    }
    for name in SYSTEMS:
        res["systems"][name] = {}
        for dtype in (torch.float64, torch.float32):
            res["systems"][name][str(dtype).replace("torch.", "")] = bench_system(
                name, dtype, reps, B, steps)
    load1 = os.getloadavg()
    res["machine"]["loadavg_end"] = list(load1)
    ratios = {f"{n} {d}": r["ratio_native_all_threads_over_numpy"]
              for n, v in res["systems"].items() for d, r in v.items()}
    res["summary"] = {"target_native_over_numpy": 20.0,
                      "native_all_threads_over_numpy": ratios,
                      "native_1_thread_over_numpy": {
                          f"{n} {d}": r["ratio_native_1_thread_over_numpy"]
                          for n, v in res["systems"].items() for d, r in v.items()},
                      "target_met": all(x >= 20.0 for x in ratios.values())}
    print("native (all threads) / numpy:", ", ".join(f"{k}: {x:.1f}x" for k, x in ratios.items()),
          f"(target 20x: {'met' if res['summary']['target_met'] else 'not met'})")
    res["wall_s"] = time.perf_counter() - t0
    res["note"] = (f"Measured on a shared {os.cpu_count()}-core machine with other jobs running "
                   f"(load average {load0[0]:.2f} before, {load1[0]:.2f} after): absolute "
                   "rates are noisy and 'all threads' gains little over one thread when the "
                   "other core is busy; compare the max columns (least disturbed runs). "
                   "Noise generation dominates the native step (Philox's 10 rounds of 32x32-bit "
                   "multiplies and Box-Muller's log/sin/cos by polynomials, bit-identical to the "
                   "torch reference; about 15 ns per pair of float64 normals on one core here), "
                   "while NumPy's ziggurat normals cost about as much per core, so the "
                   "native/NumPy ratio is set by the per-core cost of a normal and by the "
                   "number of cores: the 20x target would need about 10 free cores on this "
                   "CPU; it is not reached on this 2-core machine. 'native_simulate' (end to "
                   "end) runs the stepper in calls of about 1M trajectory-steps (stop/progress "
                   "checks between them): with one thread it matches a single call, but with "
                   "two threads and the other core busy every call waits for a descheduled "
                   "OpenMP thread, so it can fall well below the one-call figures.")
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
        print("wrote", args.out)
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
