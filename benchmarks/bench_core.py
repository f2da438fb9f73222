"""Benchmarks of the compute layer. Results go to ``benchmarks/results/<machine>.json``.

    python benchmarks/bench_core.py [--quick] [--device cpu|cuda] [--out FILE]

1. Lorenz-63 RK4, 4096 trajectories x 10,000 steps, float32, recording every step and every
   100th step: trajectory-steps per second for the compiled paths (the native backend,
   generated C, which ``simulate`` uses on the CPU; and ``torch.compile``), eager torch, NumPy
   vectorised and SciPy ``solve_ivp`` (RK45, per trajectory; timed on a subset and scaled).
2. Lyapunov spectrum of Lorenz-63 (float64) at the accuracy of the test suite: wall time,
   the exponents and their errors against the published values.

Compilation time is reported separately from the steady-state timings: it is paid once per
process (and shortened by Inductor's on-disk cache afterwards).
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

from explorer.core.analysis.lyapunov import lyapunov_spectrum  # noqa: E402
from explorer.core.registry import get_system  # noqa: E402
from explorer.core.simulate import simulate  # noqa: E402

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0


def _x0(B: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (np.array([-8.0, 7.0, 27.0]) + rng.normal(0, 1.0, (B, 3))).astype(dtype)


def bench_torch(B, N, dt, device, compile_, repeats, every=1):
    system = get_system("lorenz63")
    x0 = torch.as_tensor(_x0(B), device=device)
    t0 = time.perf_counter()
    tr = simulate(system, x0, steps=min(N, 256), dt=dt, dtype=torch.float32, device=device,
                  compile=compile_, save_every=every)
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tr = simulate(system, x0, steps=N, dt=dt, dtype=torch.float32, device=device,
                      compile=compile_, save_every=every)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    best = min(times)
    assert tr.x.shape == (N // every + 1, B, 3) and tr.status == "ok", tr.message
    return {"seconds": best, "median_seconds": statistics.median(times),
            "steps_per_second": B * N / best, "first_call_seconds": warm}


def lorenz_np(x):
    return np.stack([SIGMA * (x[:, 1] - x[:, 0]), x[:, 0] * (RHO - x[:, 2]) - x[:, 1],
                     x[:, 0] * x[:, 1] - BETA * x[:, 2]], -1)


def bench_numpy(B, N, dt, repeats, every=1):
    times = []
    for _ in range(repeats):
        x = _x0(B)
        out = np.empty((N // every + 1, B, 3), np.float32)
        out[0] = x
        t0 = time.perf_counter()
        h = np.float32(dt)
        for i in range(N):
            k1 = lorenz_np(x)
            k2 = lorenz_np(x + 0.5 * h * k1)
            k3 = lorenz_np(x + 0.5 * h * k2)
            k4 = lorenz_np(x + h * k3)
            x = x + h / 6 * (k1 + 2 * (k2 + k3) + k4)
            if (i + 1) % every == 0:
                out[(i + 1) // every] = x
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"seconds": best, "steps_per_second": B * N / best}


def bench_scipy(B, N, dt, n_traj):
    from scipy.integrate import solve_ivp

    def f(t, x):
        return [SIGMA * (x[1] - x[0]), x[0] * (RHO - x[2]) - x[1], x[0] * x[1] - BETA * x[2]]

    x0 = _x0(n_traj, np.float64)
    t_eval = np.arange(N + 1) * dt
    t0 = time.perf_counter()
    for j in range(n_traj):
        solve_ivp(f, (0, N * dt), x0[j], method="RK45", t_eval=t_eval, rtol=1e-6, atol=1e-9)
    el = time.perf_counter() - t0
    per_traj = el / n_traj
    return {"seconds_for_subset": el, "trajectories_timed": n_traj,
            "estimated_seconds": per_traj * B, "steps_per_second": N / per_traj}


def bench_lyapunov(device, repeats):
    system = get_system("lorenz63")
    runs = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        res = lyapunov_spectrum(system, generator=torch.Generator().manual_seed(seed), device=device)
        runs.append((time.perf_counter() - t0, res))
    el = [r[0] for r in runs]
    lam = [r[1].exponents.tolist() for r in runs]
    ref1, ref_sum = 0.9056, -(SIGMA + 1 + BETA)
    return {
        "seconds_median": statistics.median(el), "seconds_all": el,
        "exponents": lam,
        "lambda1_rel_error_max": max(abs(l[0] - ref1) / ref1 for l in lam),
        "sum_rel_error_max": max(abs(sum(l) - ref_sum) / abs(ref_sum) for l in lam),
        "kaplan_yorke": [r[1].kaplan_yorke_dimension for r in runs],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="JSON output (default benchmarks/results/<device>.json)")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="parts to skip: native compiled eager numpy scipy lyapunov")
    args = ap.parse_args()
    device = torch.device(args.device)
    B, N, dt = (512, 1000, 0.01) if args.quick else (4096, 10_000, 0.01)
    rep = 1 if args.quick else 3
    res: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
    }
    for every in (1, 100):
        parts = res[f"lorenz_rk4_record_every_{every}"] = {
            "trajectories": B, "steps": N, "dtype": "float32", "recorded": f"every {every} step(s)"}
        if "native" not in args.skip and device.type == "cpu":
            # the compiled path simulate() takes on the CPU: generated C (explorer.core.native)
            parts["native"] = bench_torch(B, N, dt, device, "native", rep, every)
            print(every, "native", parts["native"], flush=True)
        if "compiled" not in args.skip:
            parts["compiled"] = bench_torch(B, N, dt, device, "inductor", rep, every)
            print(every, "compiled (torch.compile)", parts["compiled"], flush=True)
        if "eager" not in args.skip:
            parts["eager"] = bench_torch(B, N, dt, device, False, rep, every)
            print(every, "eager", parts["eager"], flush=True)
        if "numpy" not in args.skip:
            parts["numpy"] = bench_numpy(B, N, dt, 1, every)
            print(every, "numpy", parts["numpy"], flush=True)
        for key in ("native", "compiled"):
            if key in parts and "numpy" in parts:
                parts[f"{key}_over_numpy"] = (parts[key]["steps_per_second"]
                                              / parts["numpy"]["steps_per_second"])
    if "scipy" not in args.skip:
        res["scipy_solve_ivp_per_trajectory"] = bench_scipy(B, N, dt, 4 if args.quick else 16)
        print("scipy", res["scipy_solve_ivp_per_trajectory"], flush=True)
    if "lyapunov" not in args.skip:
        res["lyapunov_lorenz63"] = bench_lyapunov(device, 1 if args.quick else 3)
        print("lyapunov", res["lyapunov_lorenz63"], flush=True)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
