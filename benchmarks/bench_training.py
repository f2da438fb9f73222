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
   ``--no-target`` skips it (and keeps the previous file's figures for it).
3. The generic loop (:class:`explorer.training.TrainingLoop`): a toy MLP regression (1-64-64-1,
   256 points, full batch) in steps/s, and a convolutional autoencoder of about 1.1 M
   parameters on 64x64 grayscale frames (batch 16) with rollback snapshots every 25 steps
   (the default), every step, and off (``snapshot_every=0``: no snapshots, no weight check).

Training runs on one torch thread (as the app's training threads do), unless ``--threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.registry import get_system
from explorer.training import (
    LoopConfig,
    Task,
    Trainer,
    TrainerConfig,
    TrainingLoop,
    from_system,
)


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


class _Regression(Task):
    name = "bench-mlp"

    def __init__(self):
        torch.manual_seed(0)
        self.x = torch.linspace(-3, 3, 256).unsqueeze(1)
        self.y = torch.sin(self.x)
        self.model = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.Tanh(),
                                         torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                         torch.nn.Linear(64, 1))

    def loss(self, model, step):
        return torch.mean((model(self.x) - self.y) ** 2)


def generic_mlp(steps: int = 1000) -> dict:
    loop = TrainingLoop(_Regression(), LoopConfig(lr=1e-2))
    loop.run(50)                                                      # warm-up
    t0 = time.perf_counter()
    loop.run(steps)
    sec = time.perf_counter() - t0
    return {"steps": steps, "seconds": sec, "steps_per_second": steps / sec,
            "final_loss": loop.history["loss"][-1]}


class ConvAutoencoder(torch.nn.Module):
    """64x64x1 -> 128x8x8 -> ``latent`` -> 64x64x1 (about 1.1 M parameters for latent 48)."""

    def __init__(self, latent: int = 48):
        super().__init__()
        nn = torch.nn
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(128 * 8 * 8, latent))
        self.decoder = nn.Sequential(
            nn.Linear(latent, 128 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (128, 8, 8)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class _Frames(Task):
    """Reconstruct 64x64 frames of moving Gaussian blobs (a batch of 16 per step)."""

    name = "bench-conv-ae"

    def __init__(self, n: int = 256, batch: int = 16):
        g = torch.Generator().manual_seed(0)
        yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        c = torch.rand(n, 2, 1, 1, generator=g) * 48 + 8
        self.frames = torch.exp(-((xx - c[:, :1]) ** 2 + (yy - c[:, 1:]) ** 2) / 40.0)   # (n, 1, 64, 64)
        self.batch = batch
        self.gen = torch.Generator().manual_seed(1)
        torch.manual_seed(0)
        self.model = ConvAutoencoder()

    def loss(self, model, step):
        x = self.frames[torch.randint(0, len(self.frames), (self.batch,), generator=self.gen)]
        return torch.mean((model(x) - x) ** 2)


def conv_autoencoder(steps: int = 25, repeats: int = 3) -> dict:
    """steps/s with rollback snapshots every 25 steps, every step, and off, interleaved
    ``repeats`` times (median) so that machine load affects the variants alike."""
    variants = {"rollback_every_25_steps": 25, "rollback_every_step": 1, "rollback_off": 0}
    loops = {k: TrainingLoop(_Frames(), LoopConfig(lr=1e-3, snapshot_every=v))
             for k, v in variants.items()}
    n_params = sum(p.numel() for p in next(iter(loops.values())).model.parameters())
    for loop in loops.values():
        loop.run(10)                                                  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, loop in loops.items():
            t0 = time.perf_counter()
            loop.run(steps)
            rates[k].append(steps / (time.perf_counter() - t0))
    out = {"parameters": n_params, "batch": 16, "frame": [1, 64, 64], "steps": steps,
           "repeats": repeats}
    for k, r in rates.items():
        out[k] = {"steps_per_second": sorted(r)[len(r) // 2], "all": r}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--target", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    ap.add_argument("--no-target", action="store_true", help="skip the time-to-target run")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"training_{args.device.split(':')[0]}.json")
    data = lorenz_data()
    res = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "device": args.device,
                       "load_average": os.getloadavg()[0]},   # other work on the machine
           "throughput": throughput(data, args.device)}
    print("throughput", res["throughput"], flush=True)
    res["generic_mlp"] = generic_mlp()
    print("generic_mlp", res["generic_mlp"], flush=True)
    res["conv_autoencoder"] = conv_autoencoder()
    print("conv_autoencoder", res["conv_autoencoder"], flush=True)
    if args.no_target:
        old = json.loads(out.read_text()) if out.exists() else {}
        if "time_to_target" in old:
            res["time_to_target"] = {**old["time_to_target"], "note": "kept from an earlier run"}
    else:
        res["time_to_target"] = time_to_target(data, args.device, args.target, args.budget)
    out.write_text(json.dumps(res, indent=1, default=float))
    print("wrote", out)


if __name__ == "__main__":
    main()
