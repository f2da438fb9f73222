"""The Stochastic page while an I-OnsagerNet trains, timed in Debian's chromium.

Serves the app, opens ``?page=stochastic&preset=double-well``, waits for the ensemble, starts
training and measures, in the browser:

* **live updates per second**: how often the learned potential map changes on screen (its
  Bokeh image source, polled every 20 ms) over ``--seconds`` of training;
* **widget response**: Pause clicked -> the page says "pausing ..." (the widget's answer, timed
  inside the page: a click and a 2 ms poll of the status line, no Playwright round trips), and
  -> "paused" (the run stopped between two steps, its last frame made, the status came back),
  then Resume -> "training" again, ``--clicks`` times.

Results go to ``benchmarks/results/stochastic_page_cpu.json``.

    python benchmarks/bench_stochastic_page.py [--seconds 20] [--clicks 5]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from served import CHROMIUM, FLAGS, answer_time, served_app, status, wait_status  # noqa: E402

#: a fingerprint of the learned-potential image (the second image source of the page)
MODEL_IMAGE = """() => {
  const out = [];
  for (const d of Bokeh.documents)
    for (const m of d._all_models.values())
      if (m.data && m.data.image !== undefined && m.data.dw !== undefined) {
        const im = m.data.image[0];
        let s = 0; if (im) for (let i = 0; i < im.length; i += 7) if (Number.isFinite(im[i])) s += im[i] * (i + 1);
        out.push(s);
      }
  return out.length > 1 ? out[1] : null;
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stochastic_page_cpu.json"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()[0]
    with served_app() as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        t0 = time.perf_counter()
        page.goto(f"{url}?page=stochastic&preset=double-well")
        page.wait_for_selector("canvas", timeout=120_000)
        wait_status(page, "entropy production")
        first_total = time.perf_counter() - t0
        page.get_by_role("button", name="▶ Start").click()
        wait_status(page, "training: step")
        # live updates: distinct fingerprints of the learned potential per second
        seen, last, t_end = 0, page.evaluate(MODEL_IMAGE), time.perf_counter() + args.seconds
        while time.perf_counter() < t_end:
            v = page.evaluate(MODEL_IMAGE)
            if v != last:
                seen, last = seen + 1, v
            page.wait_for_timeout(20)
        rate = seen / args.seconds
        pause, ack, resume = [], [], []
        for _ in range(args.clicks):
            t = time.perf_counter()
            ack.append(answer_time(page, "❚❚ Pause", "paus"))      # "pausing ..." (or "paused")
            wait_status(page, "paused")
            pause.append(time.perf_counter() - t)
            resume.append(answer_time(page, "▶ Resume", "training"))
            page.wait_for_timeout(1000)
        last_status = status(page)
        browser.close()
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": round(load, 2)},
        "page": "stochastic, preset double-well (I-OnsagerNet, hidden 16, 8192 pairs/step)",
        "new_tab_to_ensemble_s": round(first_total, 2),
        "live_updates_per_s": round(rate, 2),
        "pause_to_pausing_s": {"median": round(statistics.median(ack), 3),
                               "max": round(max(ack), 3),
                               "what": "click -> the status says 'pausing ...' (the widget's answer), "
                                       "timed inside the page"},
        "pause_to_paused_s": {"median": round(statistics.median(pause), 3),
                              "max": round(max(pause), 3),
                              "what": "click -> the run halted between two steps, 'paused' shown"},
        "resume_to_training_s": {"median": round(statistics.median(resume), 3),
                                 "max": round(max(resume), 3),
                                 "what": "click -> 'training' shown, timed inside the page"},
        "last_status": last_status,
        "console_errors": len(errors),
        "targets": {"live_updates_per_s": ">= 5", "widget_response_s": "<= 0.15"},
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
