"""The Spectra page while a linear SSM trains, timed in Debian's chromium.

Serves the app, opens ``?page=spectra&family=ssm&init=s4d-lin&N=STATE`` (default state size
256, 4 channels), starts training and measures in the browser how often the continuous
eigenvalue plot changes on screen (its Bokeh source, polled every 20 ms) over ``--seconds``
of training: **spectrum updates per second** (target ≥ 5 on this CPU at N = 256). Also the
time from a new tab to the first spectrum, and Pause -> "paused".

Results go to ``benchmarks/results/spectra_page_cpu.json``.

    python benchmarks/bench_spectra_page.py [--state-size 256] [--seconds 20]
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

from served import CHROMIUM, FLAGS, served_app, status, wait_status  # noqa: E402

#: a fingerprint of the first eigenvalue scatter (x, y, color columns)
SPECTRUM = """() => {
  let m = window.__spectrum;
  if (!m) {
    for (const d of Bokeh.documents)
      for (const s of d._all_models.values())
        if (!m && s.data && s.data.g !== undefined && s.data.x !== undefined && s.data.x.length > 0)
          m = s;
    if (!m) return null;
    window.__spectrum = m;                  // found once: polling must not load the browser
  }
  let s = 0; const x = m.data.x, y = m.data.y;
  for (let i = 0; i < x.length; i++) s += (x[i] + 0.5) * (i + 1) + y[i] * 1e-3;
  return s;
}"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--state-size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spectra_page_cpu.json"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    load = os.getloadavg()[0]
    query = (f"?page=spectra&family=ssm&init=s4d-lin&N={args.state_size}&H={args.channels}"
             "&task=memory&memory=exp&strength=20&L=256&steps=100000")
    with served_app() as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        t0 = time.perf_counter()
        page.goto(url + query)
        page.wait_for_function(f"() => ({SPECTRUM})() !== null", timeout=120_000)
        first_spectrum = time.perf_counter() - t0
        page.get_by_role("button", name="▶ Start").click()
        wait_status(page, "training: step")
        seen, last, t_end = 0, page.evaluate(SPECTRUM), time.perf_counter() + args.seconds
        while time.perf_counter() < t_end:
            v = page.evaluate(SPECTRUM)
            if v != last:
                seen, last = seen + 1, v
            page.wait_for_timeout(20)
        rate = seen / args.seconds
        pause = []
        for _ in range(args.clicks):
            t = time.perf_counter()
            page.get_by_role("button", name="❚❚ Pause").click()
            wait_status(page, "paused")
            pause.append(time.perf_counter() - t)
            page.get_by_role("button", name="▶ Resume").click()
            wait_status(page, "training: step")
            page.wait_for_timeout(1000)
        last_status = status(page)
        browser.close()
    out = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": round(load, 2)},
        "page": f"spectra, linear SSM s4d-lin N={args.state_size} H={args.channels}, exp memory, L=256, batch 32",
        "new_tab_to_first_spectrum_s": round(first_spectrum, 2),
        "spectrum_updates_per_s": round(rate, 2),
        "pause_to_paused_s": {"median": round(statistics.median(pause), 3), "max": round(max(pause), 3)},
        "last_status": last_status,
        "console_errors": len(errors),
        "targets": {"spectrum_updates_per_s": ">= 5 (state size 256)"},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
