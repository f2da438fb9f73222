"""Benchmarks of I-OnsagerNet training (:mod:`explorer.training.onsager`). Results go to
``benchmarks/results/onsager_<device>.json``.

    python benchmarks/bench_onsager.py [--threads 1] [--device cpu|cuda] [--out FILE]

1. Time to target, rotating double well (``rotating_double_well``, k = 1, omega = 1,
   sigma = 0.7, T = 0.245): 2000 trajectories x 1000 steps of dt = 0.02 (after 1000
   transient steps), resmlp potential (hidden 16), batch 8192, Adam 1e-2 with cosine decay
   over 600 steps, weight average 0.99. Evaluated every 50 steps; the clock stops when the
   relative L2 error of the learned V/eps against U/T over the visited states is below 0.10
   (the test's accuracy) and the run goes on to the planned 600 steps for the final figures
   (the test trains exactly these 600 steps). Simulation time is reported separately.
2. Rotating OU (omega = 1, D = I, eps = 1): the same settings; entropy production by the
   sample average and by grid quadrature against the exact 2 (``tests/test_onsager.py``
   asserts 5 %).
3. Throughput: optimisation steps per second at batch 8192 for constant and field mobility.

Training runs on one torch thread (as the app's training threads do), unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.registry import get_system
from explorer.models.onsager import IOnsagerNet
from explorer.training.onsager import em_nll, make_onsager_run

SETTINGS = {"batch": 2000, "steps": 1000, "dt": 0.02, "seed": 0, "hidden": 16, "planned_steps": 600,
                "minibatch": 8192, "lr": 1e-2, "stationary_fraction": 1.0}


NOTE_OU = ("entropy_production (final) averages over the data, an Euler-Maruyama chain at "
           "dt = 0.02 whose stationary E|x|^2 is 2 / (1 - dt), 2 % above the continuous "
           "process's; the grid value integrates under the model's own exp(-V/eps). Seeds 0-3 "
           "(tests/test_onsager.py settings): grid within 2.7 %, data average within 4.2 %.")


def train(system, transient: int, target_key: str | None = None, target: float = 0.0,
          every: int = 50, device: str = "cpu") -> dict:
    t0 = time.perf_counter()
    loop = make_onsager_run(system, transient=transient, eval_every=every, **SETTINGS)
    if device != "cpu":
        loop.model.to(device)
        loop.task.averaged.to(device)
    sim = time.perf_counter() - t0
    reached = None
    curve = []

    def watch(ev):
        nonlocal reached
        if ev.metrics:
            curve.append({"step": ev.step, "seconds": round(ev.seconds, 2),
                          **{k: round(v, 5) for k, v in ev.metrics.items()}})
            if target_key and reached is None and ev.metrics.get(target_key, 1e9) < target:
                reached = {"step": ev.step, "seconds": ev.seconds}

    loop.run(SETTINGS["planned_steps"], callbacks=[watch])
    m = loop.task.trained_model()
    final = loop.evaluate()
    grid = m.grid_fields(((-2.5, 2.5), (-2.0, 2.0)) if target_key else ((-5, 5), (-5, 5)), 121)["ep"]
    return {"simulation_seconds": sim, "training_seconds": loop.seconds,
            "time_to_target_seconds": None if reached is None else sim + reached["seconds"],
            "total_seconds": sim + loop.seconds,
            "steps": loop.step_count, "pairs": int(loop.task.x0.shape[0]),
            "reached": reached, "final": final, "grid_entropy_production": grid,
            "curve": curve}


def throughput(device: str, steps: int = 30) -> dict:
    out = {}
    for mob in ("constant", "field"):
        m = IOnsagerNet(dim=2, hidden=16, mobility=mob).to(device)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        x0 = torch.randn(8192, 2, device=device)
        x1 = x0 + 0.1 * torch.randn(8192, 2, device=device)
        for _ in range(3):
            opt.zero_grad()
            em_nll(m, x0, x1, 0.01).backward()
            opt.step()
        t = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            em_nll(m, x0, x1, 0.01).backward()
            opt.step()
        out[f"{mob}_mobility_steps_per_second"] = steps / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    ap.add_argument("--out", help="output JSON (default benchmarks/results/onsager_<device>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "device": args.device,
                       "load_average": round(os.getloadavg()[0], 2)},
           "settings": {**SETTINGS, "potential": "resmlp", "ema": 0.99, "mobility": "constant"}}
    dw = get_system("rotating_double_well", k=1.0, omega=1.0, sigma=0.7)
    r = train(dw, transient=1000, target_key="potential_error", target=0.10, device=args.device)
    res["double_well"] = {"system": "rotating_double_well k=1 omega=1 sigma=0.7 (T=0.245)",
                          "target_potential_error": 0.10, **r}
    print("double well:", {k: v for k, v in r.items() if k != "curve"}, flush=True)
    ou = get_system("rotating_ou", kx=1.0, ky=1.0, omega=1.0, sigma_x=2 ** 0.5, sigma_y=2 ** 0.5)
    r = train(ou, transient=150, device=args.device)
    ep, exact = r["final"]["entropy_production"], r["final"]["ep_exact"]
    r["ep_rel_error_samples"] = abs(ep - exact) / exact
    r["ep_rel_error_grid"] = abs(r["grid_entropy_production"] - exact) / exact
    res["rotating_ou"] = {"system": "rotating_ou kx=ky=1 omega=1 D=I (eps=1)",
                          "note": NOTE_OU, **r}
    print("OU:", {k: v for k, v in r.items() if k != "curve"}, flush=True)
    res["throughput_batch_8192"] = throughput(args.device)
    print("throughput:", res["throughput_batch_8192"], flush=True)
    res["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"onsager_{args.device}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
