"""Browser benchmarks of the Attractors page (served app, Debian's chromium via Playwright).

    python benchmarks/bench_app.py [--changes 20] [--seconds 10] [--out FILE]

1. Interaction latency: from a parameter change (typed into the rho slider's box) to the
   redrawn attractor of 1,000,000 points (1,000 trajectories x 1,001 samples, datashaded),
   measured in the page: a listener on the Bokeh document times the arrival of the new
   image and two animation frames (the paint). Median and spread over ``--changes`` changes.
2. Animation frame rate of live mode with 1,000 trajectories: frames that reach the page
   per second (document updates of the ensemble's head positions), over ``--seconds``.

Results go to ``benchmarks/results/app_cpu.json`` (or ``--out``).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from served import served_app, status, wait_status  # noqa: E402

CHROMIUM = os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

#: a state with 1,000 trajectories x 1,001 recorded samples of Lorenz-63
QUERY = "?sys=lorenz63&n=1000&T=10&tr=5&proj=x,z"

LISTEN_IMAGE = """
() => { window.__latency = new Promise(resolve => {
  const doc = window.Bokeh.documents[0];
  const t0 = performance.now();
  const cb = (ev) => {
    const m = ev.model;
    if (m && m.type === 'ColumnDataSource' && m.data && ('image' in m.data)) {
      doc.remove_on_change(cb);
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
    }
  };
  doc.on_change(cb);
}); }
"""

COUNT_FRAMES = """
([n, seconds]) => new Promise(resolve => {
  const doc = window.Bokeh.documents[0];
  let frames = 0;
  const cb = (ev) => {
    const m = ev.model;
    if (m && m.type === 'ColumnDataSource' && m.data) {
      const cols = Object.values(m.data);
      if (cols.length && cols[0] && cols[0].length === n) frames += 1;
    }
  };
  doc.on_change(cb);
  setTimeout(() => { doc.remove_on_change(cb); resolve(frames / seconds); }, seconds * 1000);
})
"""


def wait_status_text(page, text: str, timeout: float = 180.0) -> str:
    wait_status(page, text, timeout)
    return status(page)


def _rho_input(page, value: str):
    inputs = page.locator(".bk-input-group input")
    for i in range(inputs.count()):
        try:
            if abs(float(inputs.nth(i).input_value()) - float(value)) < 1e-9:
                return inputs.nth(i)
        except ValueError:
            continue
    raise RuntimeError("rho input not found")


def run(changes: int, seconds: float) -> dict:
    from playwright.sync_api import sync_playwright

    with served_app(timeout=90.0) as (base, _):
        url = f"{base}{QUERY}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("canvas", timeout=60_000)
            status = wait_status_text(page, "computed in")
            assert "1,000 trajectories × 1,001 samples" in status, status
            page.wait_for_timeout(1000)
            # --- latency: rho alternates over values near 28 (each a new computation)
            lat, server_ms = [], []
            current = "28"
            for i in range(changes + 2):                  # two warm-up changes
                value = f"{26.0 + 0.1 * i:.1f}"           # a new value every time
                box = _rho_input(page, current)
                page.evaluate(LISTEN_IMAGE)
                box.fill(value)
                box.press("Enter")
                ms = page.evaluate("() => window.__latency")
                current = value
                s = wait_status_text(page, "computed in")
                if i >= 2:
                    lat.append(ms)
                    server_ms.append(float(s.split(" computed in ")[1].split(" ms")[0]))
                page.wait_for_timeout(300)
            # --- frame rate of live mode with 1,000 trajectories
            page.get_by_role("button", name="▶ Run").click()
            page.wait_for_timeout(2000)
            fps = page.evaluate(COUNT_FRAMES, [1000, seconds])
            page.get_by_role("button", name="❚❚ Pause").click()
            browser.close()
    return {
        "latency_ms": {"median": statistics.median(lat), "min": min(lat), "max": max(lat),
                       "p90": sorted(lat)[int(0.9 * (len(lat) - 1))], "n": len(lat),
                       "all": [round(v, 1) for v in lat]},
        "compute_ms_median": statistics.median(server_ms),
        "points": 1_001_000,
        "live_fps_1000_trajectories": fps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "app_cpu.json"))
    args = ap.parse_args()
    res = run(args.changes, args.seconds)
    res["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    lat = res["latency_ms"]
    print(f"latency (parameter change -> redrawn 1,001,000-point attractor): median "
          f"{lat['median']:.0f} ms (min {lat['min']:.0f}, p90 {lat['p90']:.0f}, max {lat['max']:.0f}; "
          f"{lat['n']} changes); compute {res['compute_ms_median']:.0f} ms")
    print(f"live mode, 1,000 trajectories: {res['live_fps_1000_trajectories']:.1f} frames/s")


if __name__ == "__main__":
    main()
