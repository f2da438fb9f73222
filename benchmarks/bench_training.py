"""Benchmarks of dynamical-systems reconstruction training. Results go to
``benchmarks/results/training_<device>.json``.

    python benchmarks/bench_training.py [--budget 300] [--device cpu|cuda] [--out FILE]

1. Throughput: shallow PLRNN (latent 3, hidden 50) with adaptive generalized teacher forcing,
   batch 16 x sequence length 200 (the GTF reference defaults), on Lorenz-63 with 5 %
   observation noise: optimisation steps and training sequences per second (metrics off).
2. Time to target: the same defaults with metrics every 500 steps, until the state-space
   divergence against the noise-free trajectory falls below ``--target`` (0.3; the GTF
   paper's model reaches about 0.26) or ``--budget`` seconds pass. The curve is recorded,
   against the noisy data too (5 % noise alone puts a floor of about 0.8 under that one).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.registry import get_system  # noqa: E402
from explorer.training import Trainer, TrainerConfig, from_system  # noqa: E402


def lorenz_data():
    return from_system(get_system("lorenz63"), steps=100_000, noise=0.05,
                       generator=torch.Generator().manual_seed(0))


def throughput(data, device: str, steps: int = 200) -> dict:
    cfg = TrainerConfig(model="shplrnn", metrics_every=0, steps=20_000, device=device)
    tr = Trainer(data, cfg)
    tr.run(20)                                                        # warm-up
    t0 = time.perf_counter()
    tr.run(steps)
    sec = time.perf_counter() - t0
    return {"steps": steps, "seconds": sec, "steps_per_second": steps / sec,
            "sequences_per_second": steps * cfg.batch_size / sec,
            "batch": cfg.batch_size, "seq_len": cfg.seq_len}


def time_to_target(data, device: str, target: float, budget: float) -> dict:
    cfg = TrainerConfig(model="shplrnn", metrics_every=500, steps=20_000, device=device)
    tr = Trainer(data, cfg)
    curve, stop = [], threading.Event()
    reached: dict = {}
    t0 = time.perf_counter()

    def watch(ev):
        if ev.metrics:
            m = ev.metrics
            curve.append({"step": ev.step, "seconds": round(time.perf_counter() - t0, 2),
                          **{k: m.get(k) for k in ("d_stsp", "d_stsp_clean", "d_h", "d_h_clean", "pe")}})
            print(curve[-1], flush=True)
            if not reached and (m.get("d_stsp_clean", m["d_stsp"]) < target):
                reached.update(step=ev.step, seconds=time.perf_counter() - t0)
                stop.set()
        if time.perf_counter() - t0 > budget:
            stop.set()

    tr.run(cfg.steps, callbacks=[watch], stop=stop)
    return {"target_d_stsp_clean": target, "budget_seconds": budget,
            "reached": bool(reached), **({"reached_at": reached} if reached else {}),
            "steps_done": tr.step_count, "seconds": time.perf_counter() - t0,
            "best": tr.best, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--out")
    args = ap.parse_args()
    data = lorenz_data()
    res = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "device": args.device},
           "throughput": throughput(data, args.device)}
    print("throughput", res["throughput"], flush=True)
    res["time_to_target"] = time_to_target(data, args.device, args.target, args.budget)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"training_{args.device.split(':')[0]}.json")
    out.write_text(json.dumps(res, indent=1, default=float))
    print("wrote", out)


if __name__ == "__main__":
    main()
