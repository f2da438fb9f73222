"""The scripted classroom lesson (tests/browser/lesson.py) timed in Debian's chromium.

Serves the app, runs the lesson ``--runs`` times (a fresh browser context each time) and
writes the timings to ``benchmarks/results/lesson_cpu.json``: first plot of a new tab,
preset switch, a parameter change reaching the server while live mode runs, the Lyapunov
spectrum in the page, the first training step of the lecture preset.

    python benchmarks/bench_lesson.py [--runs 3] [--train-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT / "benchmarks"))
from browser.lesson import page_opener, run_lesson  # noqa: E402
from served import FLAGS, served_app  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--train-seconds", type=float, default=60.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lesson_cpu.json"))
    args = ap.parse_args()
    with served_app() as (url, server_start):
        from playwright.sync_api import sync_playwright
        runs = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            for k in range(args.runs):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                new_page = page_opener(ctx, errors, timeout_s=60.0, failed_requests=False)
                out = run_lesson(new_page, url, train_seconds=args.train_seconds)
                out["console_errors"] = len(errors)
                runs.append(out)
                print(f"run {k + 1}: " + ", ".join(f"{key} {v:.2f} s" for key, v in out.items()
                                                   if key.endswith("_s")), file=sys.stderr)
                ctx.close()
            browser.close()
    keys = [k for k in runs[0] if k.endswith("_s")]
    summary = {k: {"median": statistics.median(r[k] for r in runs), "max": max(r[k] for r in runs)}
               for k in keys}
    result = {"machine": platform.processor() or platform.machine(), "server_start_s": server_start,
              "runs": runs, "summary": summary,
              "note": "first_plot_s: a new tab (new session) until the preset's attractor is drawn, "
                      "measured from page.goto; preset_switch_s: choosing a preset until its "
                      "attractor is drawn; lyapunov_s: button to result in the page"}
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
