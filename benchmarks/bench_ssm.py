"""Linear SSM throughput: Vandermonde kernel + FFT convolution vs the recurrent scan.

    python benchmarks/bench_ssm.py [--quick] [--device cpu|cuda] [--reps N] [--threads N]
                                   [--out FILE | --no-write]

For S4D-Lin channels (H = 8, batch 8, float32/complex64, ZOH, Δ log-uniform in [1e-3, 1e-1])
at state sizes N = 64, 256, 1024 (N/2 conjugate-pair modes) and lengths L = 1k, 4k, 16k:

* ``kernel``: :func:`explorer.models.ssm.discretize` + :func:`ssm_kernel` (the Vandermonde
  product, chunked over l), the (H, L) kernel alone;
* ``conv``: kernel + :func:`fft_conv` of a (L, 8, 8) input (the model's ``mode="conv"``);
* ``scan``: :func:`ssm_scan`, the step-by-step recurrence (``mode="scan"``), Python loop;
* ``train``: one forward + backward of :class:`SSMModel` (``mode="conv"``, 1 layer, d_input 1)
  on a (L, 8, 1) batch: what a training step of the Spectra page costs.

Figures: milliseconds per call (min / median / max over the repetitions) and throughput in
million samples per second, a sample being one time step of one sequence of the batch
(8·L per call). ``check`` is the largest difference between the conv and scan outputs relative
to the output scale (float32). Results go to ``benchmarks/results/ssm_<device>.json`` unless
``--no-write``; ``--quick`` (N = 64, 256; L = 1k; fewer repetitions; < 60 s) writes nothing
unless ``--out`` is given. On a shared CPU (another job running) ``--threads 1`` gives steadier
figures: with all threads the OpenMP workers wait for a descheduled core (measured here: the
N = 64, L = 1k kernel took 40 ms with 2 threads under load against 4.3 ms with one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.core.device import parse_device
from explorer.models.ssm import (
    SSMModel,
    discretize,
    fft_conv,
    ssm_kernel,
    ssm_scan,
    state_init,
)

H = 8
BATCH = 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, reps: int, device: torch.device) -> dict:
    fn()                                                              # warm-up
    _sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(1e3 * (time.perf_counter() - t))
    return {"ms_min": min(ts), "ms_median": statistics.median(ts), "ms_max": max(ts), "n": len(ts)}


def bench_case(N: int, L: int, reps: int, device: torch.device, scan: bool) -> dict:
    g = torch.Generator().manual_seed(N * 7 + L)
    M = N // 2
    lam = state_init("s4d-lin", N).modes.expand(H, M).to(device, torch.complex64)    # (H, M)
    log_dt = math.log(1e-3) + torch.rand(H, 1, generator=g) * math.log(100.0)
    dt = torch.exp(log_dt).to(device)                                                 # (H, 1)
    C = torch.randn(H, M, 2, generator=g).mul_(math.sqrt(0.5))
    C = torch.view_as_complex(C).to(device)                                           # (H, M)
    u = torch.randn(L, BATCH, H, generator=g).to(device)                              # (L, B, H)
    res: dict = {"N": N, "modes": M, "L": L}
    samples = BATCH * L

    with torch.no_grad():
        def kernel():
            lam_bar, bf = discretize(lam, dt, "zoh")
            return ssm_kernel(lam_bar, C * bf, L)                     # (H, L)

        def conv():
            return fft_conv(u, kernel())                              # (L, B, H)

        res["kernel"] = _time(kernel, reps, device)
        res["conv"] = _time(conv, reps, device)
        if scan:
            lam_bar, bf = discretize(lam, dt, "zoh")
            res["scan"] = _time(lambda: ssm_scan(lam_bar, bf, C, u), max(1, reps // 2), device)
            y_scan = ssm_scan(lam_bar, bf, C, u)
            y_conv = conv()
            res["check_conv_vs_scan"] = float((y_conv - y_scan).abs().max()
                                              / y_scan.abs().max().clamp(min=1e-30))
    model = SSMModel(channels=H, state_size=N, init="s4d-lin", seq_len=L).to(device)
    x = torch.randn(L, BATCH, 1, generator=g).to(device)

    def train():
        model.zero_grad(set_to_none=True)
        (model(x) ** 2).mean().backward()

    res["train"] = _time(train, reps, device)
    for key in ("kernel", "conv", "scan", "train"):
        if key in res:
            res[key]["M_samples_per_s"] = samples / res[key]["ms_min"] / 1e3
    return res


def _row(r: dict) -> str:
    def cell(key):
        if key not in r:
            return f"{'-':>18s}"
        s = r[key]
        return f"{s['ms_median']:9.2f} ({s['M_samples_per_s']:6.2f})"
    chk = f"{r['check_conv_vs_scan']:.1e}" if "check_conv_vs_scan" in r else "-"
    return (f"{r['N']:5d} {r['L']:6d} " + " ".join(cell(k) for k in ("kernel", "conv", "scan", "train"))
            + f"  {chk}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 64, 256; L = 1k; < 60 s; no JSON")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    ap.add_argument("--max-scan-len", type=int, default=None,
                    help="skip the scan above this length (default: all in a full run, 1024 quick)")
    ap.add_argument("--out", default=None, help="output JSON (default "
                    "benchmarks/results/ssm_<device>.json; --quick writes only with --out)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    device = parse_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (2 if args.quick else 5)
    sizes = (64, 256) if args.quick else (64, 256, 1024)
    lengths = (1024,) if args.quick else (1024, 4096, 16384)
    max_scan = args.max_scan_len or (1024 if args.quick else max(lengths))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    print(f"device {device}, threads {torch.get_num_threads()}, H = {H}, batch = {BATCH}, "
          f"float32; ms per call, median (M samples/s, best)")
    print(f"{'N':>5s} {'L':>6s} {'kernel':>18s} {'kernel+fft conv':>18s} {'scan':>18s} "
          f"{'train fwd+bwd':>18s}  conv-scan")
    cases = []
    for N in sizes:
        for L in lengths:
            r = bench_case(N, L, reps, device, scan=L <= max_scan)
            cases.append(r)
            print(_row(r), flush=True)
    load1 = os.getloadavg()
    res = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "python": platform.python_version(),
                    "loadavg_start": list(load0), "loadavg_end": list(load1)},
        "config": {"channels": H, "batch": BATCH, "init": "s4d-lin", "discretization": "zoh",
                   "dtype": "float32 / complex64", "reps": reps, "quick": args.quick,
                   "units": "ms per call; M_samples_per_s = batch x L / best time / 1e6"},
        "cases": cases,
        "wall_s": time.perf_counter() - t0,
    }
    print(f"wall {res['wall_s']:.1f} s (load average {load0[0]:.2f} -> {load1[0]:.2f})")
    out = args.out or (None if args.quick else
                       str(ROOT / "benchmarks" / "results" / f"ssm_{device.type}.json"))
    if out and not args.no_write:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=1))
        print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
