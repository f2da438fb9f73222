"""Latent dynamics from frames: rendering, training speed, time to the tests' accuracy, and the
served page while a CpAE trains.

* **frames rendered per second** for each scene at 28, 32 and 64 px (batched torch renderer;
  CPU, and CUDA when present);
* **training steps per second** of the default CpAE (32×32 frames, two-frame windows, batch 32,
  latent 2) and of the Koopman autoencoder;
* **time to accuracy**: a Koopman autoencoder on a rendered mass on a spring (ω = 2) until its
  eigenvalue angle gives ω within 5 % (the test's tolerance), checked every 25 steps;
* **the page** (``--page``): Debian's chromium on ``?page=latent``, Start, then how often the
  learned vector field changes on screen per second (its Bokeh image source, polled every
  20 ms; target ≥ 5/s), how long Pause takes to show "pausing ..." (the widget's answer,
  timed inside the page; target 150 ms) and "paused", and Resume to show "training".

Results go to ``benchmarks/results/latent_cpu.json``.

    python benchmarks/bench_latent.py [--page] [--seconds 20] [--clicks 5] [--page-only]
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from explorer.core.render import render_scene  # noqa: E402
from explorer.training.latent import make_latent_run  # noqa: E402

SCENES = ("pendulum", "spring", "two-bodies", "blob", "moving-square")


def render_rates(device: str, frames: int = 2000) -> dict:
    out = {}
    for scene in SCENES:
        for size in (28, 32, 64):
            render_scene(scene, size=size, steps=50, device=device)            # warm up
            t = time.perf_counter()
            render_scene(scene, size=size, steps=frames, device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            out[f"{scene}@{size}"] = round(frames / (time.perf_counter() - t))
    return out


def step_rate(model: str, *, size: int = 32, batch: int = 32, steps: int = 30) -> float:
    fs = render_scene("pendulum", size=size, steps=600)
    loop = make_latent_run(fs, model=model, steps=10_000, batch=batch, eval_every=10**6)
    loop.run(3)
    t = time.perf_counter()
    loop.run(steps)
    return round(steps / (time.perf_counter() - t), 2)


def koopman_time_to_accuracy(max_steps: int = 3000, every: int = 25) -> dict:
    fs = render_scene("spring", size=28, steps=400, dt=0.05, seed=0)
    loop = make_latent_run(fs, model="koopman", latent=2, steps=max_steps, batch=16, seed=0,
                           eval_every=10**6)
    t0 = time.perf_counter()
    err = math.inf
    while loop.step_count < max_steps:
        loop.run(every)
        ev = loop.model.koopman_eigenvalues()
        omega = float(ev.angle().abs().max()) / fs.dt
        err = abs(omega / 2.0 - 1.0)
        if err <= 0.05:
            break
    return {"steps": loop.step_count, "seconds": round(time.perf_counter() - t0, 2),
            "relative_error": round(err, 4), "reached": err <= 0.05}


#: a fingerprint of the learned vector field's image (the FieldMap with arrows)
FIELD = """() => {
  let m = window.__field;
  if (!m) {
    const imgs = [];
    for (const d of Bokeh.documents)
      for (const s of d._all_models.values())
        if (s.data && s.data.image !== undefined && s.data.dw !== undefined) imgs.push(s);
    if (imgs.length < 3) return null;
    m = imgs[2];                          // strip, animation, then the vector field
    window.__field = m;
  }
  const img = m.data.image[0];
  const flat = typeof img[0] === "number" ? img : [].concat(...img);
  let s = 0;
  for (let i = 0; i < flat.length; i++) if (Number.isFinite(flat[i])) s += flat[i] * (i % 7 + 1);
  return s;
}"""


def page_rates(seconds: float, clicks: int = 5) -> dict:
    from playwright.sync_api import sync_playwright

    from served import CHROMIUM, FLAGS, answer_time, served_app, status, wait_status

    query = "?page=latent&scene=pendulum&size=32&frames=600&model=cpae&steps=100000"
    with served_app() as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(url + query)
        wait_status(page, "frames: Pendulum")
        first_frames = time.perf_counter() - t0
        page.get_by_role("button", name="▶ Start").click()
        wait_status(page, "training: step")
        page.wait_for_function(f"() => ({FIELD})() !== null", timeout=120_000)
        seen, last, t_end = 0, page.evaluate(FIELD), time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            v = page.evaluate(FIELD)
            if v != last:
                seen, last = seen + 1, v
            page.wait_for_timeout(20)
        pause, ack, resume = [], [], []
        for _ in range(clicks):
            t = time.perf_counter()
            ack.append(answer_time(page, "❚❚ Pause", "paus"))      # "pausing ..." (or "paused")
            wait_status(page, "paused")
            pause.append(time.perf_counter() - t)
            resume.append(answer_time(page, "▶ Resume", "training"))
            page.wait_for_timeout(1000)
        last_status = status(page)
        browser.close()
    return {"query": query, "new_tab_to_frames_s": round(first_frames, 2),
            "field_updates_per_s": round(seen / seconds, 2),
            "pause_to_pausing_s": {"median": round(statistics.median(ack), 3),
                                   "max": round(max(ack), 3),
                                   "what": "click -> 'pausing ...' shown (the widget's answer), "
                                           "timed inside the page"},
            "pause_to_paused_s": {"median": round(statistics.median(pause), 3),
                                  "max": round(max(pause), 3),
                                  "what": "click -> the run halted between two steps, 'paused' shown"},
            "resume_to_training_s": {"median": round(statistics.median(resume), 3),
                                     "max": round(max(resume), 3),
                                     "what": "click -> 'training' shown, timed inside the page"},
            "last_status": last_status, "console_errors": len(errors)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--page", action="store_true", help="also time the served page in chromium")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--page-only", action="store_true", help="only the page (no rendering or "
                    "training rates): its figures replace the page's in --out")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latent_cpu.json"))
    args = ap.parse_args()
    if args.page_only:                     # the page alone, into the existing results
        path = Path(args.out)
        out = json.loads(path.read_text()) if path.exists() else {}
        load = os.getloadavg()[0]
        out["page"] = {**page_rates(args.seconds, args.clicks),
                       "measured": time.strftime("%Y-%m-%d"),
                       "load_average_at_start": round(load, 2)}
        out["targets"] = {"field_updates_per_s": ">= 5", "widget_answer_s": "<= 0.15"}
        path.write_text(json.dumps(out, indent=1))
        print(json.dumps(out["page"], indent=1))
        return
    load = os.getloadavg()[0]
    out: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "torch_threads": torch.get_num_threads(),
                             "load_average_at_start": round(load, 2)}}
    out["frames_per_s_cpu"] = render_rates("cpu")
    if torch.cuda.is_available():
        out["frames_per_s_cuda"] = render_rates("cuda")
    out["train_steps_per_s"] = {"cpae 32x32 batch 32": step_rate("cpae"),
                                "koopman 32x32 batch 32": step_rate("koopman")}
    out["koopman_spring_to_5pct"] = koopman_time_to_accuracy()
    if args.page:
        out["page"] = page_rates(args.seconds, args.clicks)
        out["targets"] = {"field_updates_per_s": ">= 5", "widget_answer_s": "<= 0.15"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
