"""A classroom on one server: what a session costs the server, a burst of students arriving,
real browser pages opening at once, whether closed sessions give their memory back, and how
fast a closed page frees its training slot.

Everything runs against a freshly started ``python -m explorer serve --admin`` subprocess on a
free port (``--port`` to choose one); the server's own figures come from its ``/stats`` JSON
(``?gc=1``: after a garbage collection). A plain HTTP GET of ``/explorer`` makes the server
build a whole session (no browser needed); the benchmark's server discards such a session
about 20 s later (``EXPLORER_CONNECT_WAIT_S=20``; a served app waits a minute by default).

1. **Session cost**: after 2 warm-up GETs, ``--gets`` sequential GETs of ``/explorer`` on the
   idle server: the wall time of each GET (median, p90) is the server's time to build one
   session; the server's CPU seconds per session (``cpu_s`` delta / GETs) are taken twice: right
   after the last GET (``cpu_s_per_session_build``: building the page) and once those sessions
   have expired (``cpu_s_per_session_total``: with the computations a new session starts by
   itself, e.g. the first attractor, and its clean-up).
2. **Burst**: ``--burst`` GETs fired at once (one thread each, released together): seconds from
   the release until each completes (median, max), as when a class opens the link together.
3. **Real pages**: ``--pages`` chromium pages (one browser, one context each) sent to the app at
   once: seconds until each page's first plot is rendered (a ``canvas`` element visible, what
   the browser tests wait for) and until its status line first reports a finished computation
   (``computed in`` / ``done``), median and max.
   **Browser cost** (``browser``): the same page opened alone, three times: the CPU seconds of
   all chromium processes to its first plot and until idle, an empty context's, and the floor
   they put on the burst's first plot when the class's browsers share the machine's cores.
4. **Leak check**: ``/stats?gc=1`` before (once the sessions of steps 1-3 are gone; the reading
   after the 2 warm-up GETs is reported too), then ``--leak-sessions`` sessions opened and closed
   (80 % plain GETs in batches of 10; 20 % chromium pages, 5 at a time, each waited until its
   plot rendered, then closed), 15 s of quiet, ``/stats?gc=1`` again: RSS, threads, controllers,
   views, job threads before and after, the RSS change in percent, and whether controllers and
   views came back to the starting count (if not, ``/stats`` is polled up to 30 s longer to
   tell slow clean-up from a leak).
5. **Run slot freed on close**: the Reconstruction page in chromium, ``▶ Start`` pressed, the
   server's ``runs_active`` seen at 1 or more and the page training; then the page is closed:
   seconds until ``runs_active`` is back to its value before Start (and until the session is
   gone).

6. **Latency with a class open**: ``--class-size`` chromium pages opened 5 at a time,
   ``--live`` of them running the live animation; one more page then changes rho ``--changes``
   times: seconds from Enter until its attractor picture is redrawn in the browser (median,
   p90). The class's browsers share the machine's cores with the server: they run at the
   lowest CPU priority (``nice -n 19``, as if on the students' own computers) unless
   ``--no-nice``; the measuring page runs at normal priority.
7. **Soak**: ``--soak-students`` students (a thread, Playwright and chromium each) give the
   scripted lesson of the browser tests (``tests/browser/lesson.py``: preset link, live mode
   with a parameter change, Lyapunov spectrum, orbit-diagram zoom and Back, 3D rotation, a
   ``--soak-train`` s Reconstruction training) again and again for ``--soak-minutes``:
   lessons completed and failed, console errors, server tracebacks, percentiles of each step.
   The students' browsers run at the lowest CPU priority as in step 6 (unless ``--no-nice``).

The machine may be shared (the load average before and after is recorded); timings are
reported as measured, never asserted. ``--quick``: 5 GETs, a burst of 6, 3 pages, 20 sessions
in the leak check, a class of 6 (2 live), 2 students for 2 minutes. Results go to
``benchmarks/results/classroom_cpu.json``.

    python benchmarks/bench_classroom.py [--gets 20] [--burst 30] [--pages 10]
        [--leak-sessions 100] [--settle 15] [--class-size 30] [--live 5] [--changes 20]
        [--soak-students 10] [--soak-minutes 10] [--soak-train 5] [--skip STEPS] [--quick]
        [--port P] [--num-procs N] [--out FILE] [--no-write]

``--num-procs 2`` serves with two processes (one per core of this machine); ``/stats`` then
sums both processes' figures, each at most a second old.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "classroom_cpu.json"
CHROMIUM = os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
#: the figures of /stats the leak check compares
LEAK_KEYS = ("sessions", "rss_mb", "threads", "controllers", "views", "job_threads", "runs_active")
DONE_WORDS = ("computed in", "done")


class BenchError(RuntimeError):
    """A step could not be measured (its message says why)."""


def r(x, nd=4):
    """Rounded, or None for a missing or non-finite number."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return round(float(x), nd)


def pct(xs, q: float):
    """The q-th percentile (0..100) by linear interpolation; None for no data."""
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(secs) -> dict:
    secs = [s for s in secs if s is not None]
    if not secs:
        return {"n": 0}
    return {"n": len(secs), "median_s": r(statistics.median(secs)), "p90_s": r(pct(secs, 90)),
            "mean_s": r(statistics.mean(secs)), "min_s": r(min(secs)), "max_s": r(max(secs))}


def one_line(e: BaseException) -> str:
    return (f"{type(e).__name__}: {e}".splitlines() or [type(e).__name__])[0][:400]


# ============================================================================ the server
class Server:
    """``python -m explorer serve --admin`` in a subprocess, its output in a temporary file."""

    def __init__(self, port: int | None, timeout: float = 180.0, num_procs: int = 1):
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.base = f"http://localhost:{port}"
        self.url = f"{self.base}/explorer"
        self.timeout = timeout
        self.num_procs = num_procs
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - open while the server runs
            "w+", prefix="bench-classroom-server-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def start(self) -> None:
        with socket.socket() as s:          # a port in use would be another server's /stats
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise BenchError(f"port {self.port} is already in use")
        t0 = time.perf_counter()
        # plain GETs never connect: their sessions get 20 s instead of the minute a student's
        # browser has to connect (closed browser tabs are discarded at once either way); a
        # page whose browser connects later than that gets a second session built for it
        env = {**os.environ, "EXPLORER_CONNECT_WAIT_S": os.environ.get("EXPLORER_CONNECT_WAIT_S", "20")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "explorer", "serve", "--port", str(self.port), "--admin",
             "--num-procs", str(self.num_procs)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        while True:                         # /stats answers: the app is warmed up and served
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited with code {self.proc.returncode} while "
                                 "starting")
            if time.perf_counter() - t0 > self.timeout:
                raise BenchError(f"the server did not answer /stats within {self.timeout:.0f} s")
            try:
                self.stats()
                break
            except Exception:               # noqa: BLE001 - not up yet
                time.sleep(0.3)
        self.startup_s = time.perf_counter() - t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            raise BenchError(f"the server is not running (exit code {code})")

    def stats(self, gc: bool = False, timeout: float = 30.0) -> dict:
        with urllib.request.urlopen(self.base + ("/stats?gc=1" if gc else "/stats"),
                                    timeout=timeout) as resp:
            return json.loads(resp.read())

    def read(self, gc: bool = False, timeout: float = 180.0) -> dict:
        """/stats once it answers (a busy server's event loop may not for a while): the figures,
        with ``answered_after_s``; ``{"error": ...}`` when it never did within ``timeout``."""
        t0 = time.perf_counter()
        last = None
        while time.perf_counter() - t0 < timeout:
            self.check()
            try:
                out = self.stats(gc=gc, timeout=max(1.0, min(60.0, timeout - (time.perf_counter() - t0))))
                out["answered_after_s"] = r(time.perf_counter() - t0, 3)
                return out
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
                time.sleep(0.5)
        return {"error": f"/stats did not answer within {timeout:.0f} s ({one_line(last)})"}

    def get_page(self, query: str = "", timeout: float = 120.0) -> tuple[float, int]:
        """One plain GET of the app (the server builds a session): (seconds, bytes)."""
        t0 = time.perf_counter()
        with urllib.request.urlopen(self.url + query, timeout=timeout) as resp:
            if resp.status != 200:
                raise BenchError(f"GET {self.url + query}: HTTP {resp.status}")
            n = len(resp.read())
        return time.perf_counter() - t0, n

    def wait_until(self, pred, timeout: float, poll: float = 0.1, gc: bool = False):
        """Poll /stats until ``pred(stats)``: (seconds waited or None on time-out, last stats)."""
        t0 = time.perf_counter()
        last: dict = {}
        while True:
            self.check()
            try:
                last = self.stats(gc=gc)
                if pred(last):
                    return time.perf_counter() - t0, last
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.perf_counter() - t0 > timeout:
                return None, last
            time.sleep(poll)

    def tail(self, lines: int = 40) -> str:
        try:
            self.log.flush()
            text = Path(self.log.name).read_text(errors="replace")
        except OSError as e:
            return f"(the server log could not be read: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def remove_log(self) -> None:
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


def drain(server: Server, timeout: float = 45.0) -> float | None:
    """Wait until the server holds no session (GET sessions expire ~20-22 s after their GET)."""
    waited, _ = server.wait_until(lambda s: s.get("sessions") == 0, timeout, poll=0.25)
    return waited


def delta(a: dict, b: dict, key: str, per: float = 1.0, nd: int = 3):
    """(b[key] - a[key]) / per, or None where a reading is missing."""
    if not isinstance(a.get(key), (int, float)) or not isinstance(b.get(key), (int, float)):
        return None
    return r((b[key] - a[key]) / per, nd)


def fire_gets(server: Server, n: int, timeout: float = 180.0) -> tuple[list, list[str], float]:
    """``n`` GETs released together (one thread each): seconds from the release until each one
    completed (None for a failure), the failures, and the wall of the whole batch."""
    done: list = [None] * n
    errors: list[str] = []
    gate = threading.Barrier(n + 1)
    t0 = [0.0]

    def one(i: int) -> None:
        try:
            gate.wait(timeout=60)
        except threading.BrokenBarrierError:
            errors.append(f"GET {i}: never released")
            return
        try:
            server.get_page(timeout=timeout)
            done[i] = time.perf_counter() - t0[0]
        except Exception as e:              # noqa: BLE001 - a failure is a result
            errors.append(f"GET {i}: {one_line(e)}")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    gate.wait(timeout=60)
    for t in threads:
        t.join(timeout + 10)
    return done, errors, time.perf_counter() - t0[0]


# ============================================================================ the browser
async def browser_launch(pw):
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)


async def page_status(page) -> str:
    """The page's status line ('' before it exists); its text lives in the pane's shadow root,
    which Playwright's locators pierce (as the browser tests read it)."""
    try:
        return await page.locator(".status-line").first.locator("div").first.inner_text(
            timeout=2000)
    except Exception:                       # noqa: BLE001 - not there yet, navigating or closed
        return ""


async def open_and_render(browser, url: str, *, t0: float | None = None, ctx=None, page=None,
                          timeout: float = 120.0, want_done: bool = True) -> dict:
    """Open ``url`` in its own context: seconds (from ``t0``, default now) until a plot's canvas
    is visible and until the status line reports a finished computation; console errors."""
    if ctx is None:
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda q: errors.append(f"request failed: {q.url[:120]}"))
    t0 = time.perf_counter() if t0 is None else t0
    rec: dict = {"ctx": ctx, "page": page}
    try:
        await page.goto(url, timeout=timeout * 1000)
        rec["loaded_s"] = time.perf_counter() - t0
        await page.wait_for_selector("canvas", state="visible", timeout=timeout * 1000)
        rec["canvas_s"] = time.perf_counter() - t0
        if want_done:
            end = time.perf_counter() + timeout
            while time.perf_counter() < end:
                s = await page_status(page)
                if any(w in s for w in DONE_WORDS):
                    rec["done_s"] = time.perf_counter() - t0
                    rec["status"] = s[:200]
                    break
                await asyncio.sleep(0.05)
            else:
                rec["status"] = (await page_status(page))[:200]
                rec["error"] = f"the status never reported a finished computation: {rec['status']!r}"
    except Exception as e:                  # noqa: BLE001 - a failure is a result
        rec["error"] = one_line(e)
    rec["console_errors"] = errors[:5]
    return rec


async def close_rec(rec: dict) -> None:
    with contextlib.suppress(Exception):
        await rec["ctx"].close()


# ============================================================================ the steps
def step_session_cost(server: Server, n: int) -> dict:
    drain(server)
    before = server.stats()
    secs, sizes = [], []
    for _ in range(n):
        s, b = server.get_page()
        secs.append(s)
        sizes.append(b)
    right_after = server.read()
    drained = drain(server, 90)
    after = server.read()
    out = {"gets": n, "get_s": summary(secs),
           "page_bytes": sizes[-1] if sizes else None,
           "cpu_s_per_session_build": delta(before, right_after, "cpu_s", n),
           "cpu_s_per_session_total": delta(before, after, "cpu_s", n),
           "cleanup_wait_s": r(drained, 2),
           "sessions_after_last_get": right_after.get("sessions"),
           "rss_mb_before": before.get("rss_mb"), "rss_mb_after_last_get": right_after.get("rss_mb"),
           "rss_mb_after_cleanup": after.get("rss_mb")}
    if drained is None:
        out["warning"] = f"sessions did not expire within 90 s (still {after.get('sessions')})"
    return out


def step_burst(server: Server, n: int) -> dict:
    drain(server)
    before = server.stats()
    done, errors, wall = fire_gets(server, n)
    after = server.read()
    ok = [d for d in done if d is not None]
    out = {"gets": n, "completed": len(ok), "failed": len(errors), "errors": errors[:5],
           "completion_s": summary(ok), "wall_s": r(wall, 3),
           "cpu_s_during": delta(before, after, "cpu_s"),
           "stats_answered_after_s": after.get("answered_after_s"),
           "rss_mb_before": before.get("rss_mb"), "rss_mb_after": after.get("rss_mb"),
           "sessions_after": after.get("sessions")}
    out["cleanup_wait_s"] = r(drain(server, 90), 2)
    return out


async def step_pages(server: Server, browser, n: int, timeout: float) -> dict:
    drain(server)
    before = await asyncio.to_thread(server.stats)
    ctxs = []
    for _ in range(n):                      # contexts and tabs first: the timing is the server's
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        ctxs.append((ctx, await ctx.new_page()))
    t0 = time.perf_counter()
    recs = await asyncio.gather(*(open_and_render(browser, server.url, t0=t0, ctx=c, page=p,
                                                  timeout=timeout) for c, p in ctxs))
    wall = time.perf_counter() - t0
    after = await asyncio.to_thread(server.read)
    for rec in recs:
        await close_rec(rec)
    errors = [rec["error"] for rec in recs if "error" in rec]
    console = sorted({e for rec in recs for e in rec["console_errors"]})
    out = {"pages": n, "rendered": sum("canvas_s" in rec for rec in recs),
           "first_plot_s": summary(rec.get("canvas_s") for rec in recs),
           "status_done_s": summary(rec.get("done_s") for rec in recs),
           "html_loaded_s": summary(rec.get("loaded_s") for rec in recs),
           "wall_s": r(wall, 3), "cpu_s_during": delta(before, after, "cpu_s"),
           "stats_answered_after_s": after.get("answered_after_s"),
           "stats_error": after.get("error"),
           "rss_mb_before": before.get("rss_mb"), "rss_mb_with_pages_open": after.get("rss_mb"),
           "threads_with_pages_open": after.get("threads"),
           "errors": errors[:5], "console_errors": console[:5],
           "example_status": next((rec["status"] for rec in recs if rec.get("status")), None)}
    out["cleanup_wait_s"] = r(await asyncio.to_thread(drain, server, 60), 2)
    return out


def chromium_cpu_s() -> float:
    """CPU seconds (user + system) of every chromium process on this machine, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if name.startswith("chrom"):
            total += int(rest[11]) + int(rest[12])             # utime, stime (fields 14, 15)
    return total / tick


async def step_browser_cost(server: Server, browser, n: int, timeout: float) -> dict:
    """What one chromium page costs the machine's cores, pages opened one at a time: the CPU
    seconds of all chromium processes from a new context until the first plot, and until
    the page is idle (3 s after the plot); the same for an empty page (a context alone). On
    a machine that also runs the class's browsers, ``pages x plot_cpu_s / cores`` is a floor
    on the burst's first plot whatever the server does."""
    async def one(url, want_canvas):
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await ctx.new_page()
        s0 = (await asyncio.to_thread(server.stats)).get("cpu_s") or 0.0
        c0, t0 = chromium_cpu_s(), time.perf_counter()
        await page.goto(url, timeout=timeout * 1000)
        if want_canvas:
            await page.wait_for_selector("canvas", state="visible", timeout=timeout * 1000)
        t, c = time.perf_counter() - t0, chromium_cpu_s() - c0
        await asyncio.sleep(3.0)
        idle = chromium_cpu_s() - c0
        s1 = (await asyncio.to_thread(server.stats)).get("cpu_s") or 0.0
        await ctx.close()
        return t, c, idle, s1 - s0

    drain(server)
    await one(server.url, True)                                  # warm: caches, lazy imports
    blank = [await one("about:blank", False) for _ in range(2)]
    pages = [await one(server.url, True) for _ in range(n)]
    # one page running the live animation: what it costs per second, in chromium and the server
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    await page.goto(server.url, timeout=timeout * 1000)
    await page.wait_for_selector("canvas", state="visible", timeout=timeout * 1000)
    await page.get_by_role("button", name="▶ Run").click(timeout=30_000)
    await page.get_by_text("running:", exact=False).first.wait_for(timeout=60_000)
    await asyncio.sleep(2.0)
    s0 = (await asyncio.to_thread(server.stats)).get("cpu_s") or 0.0
    c0, t0 = chromium_cpu_s(), time.perf_counter()
    await asyncio.sleep(5.0)
    live_chromium = (chromium_cpu_s() - c0) / (time.perf_counter() - t0)
    s1 = (await asyncio.to_thread(server.stats)).get("cpu_s") or 0.0
    live_server = (s1 - s0) / (time.perf_counter() - t0)
    await ctx.close()
    cores = os.cpu_count() or 1
    plot_cpu = statistics.median(c for _, c, _, _ in pages)
    server_cpu = statistics.median(v for _, _, _, v in pages)
    return {"pages": n, "empty_context_cpu_s": r(statistics.median(i for _, _, i, _ in blank), 2),
            "first_plot_s": summary(t for t, _, _, _ in pages),
            "plot_cpu_s": r(plot_cpu, 2),
            "idle_cpu_s": r(statistics.median(i for _, _, i, _ in pages), 2),
            "server_cpu_s": r(server_cpu, 2),
            "cores": cores,
            "floor_10_pages_first_plot_s": r(10 * plot_cpu / cores, 1),
            "floor_10_pages_with_server_s": r(10 * (plot_cpu + server_cpu) / cores, 1),
            "live_page_chromium_cores": r(live_chromium, 2), "live_page_server_cores": r(live_server, 2),
            "what": "CPU seconds per page opened alone (median): of all chromium processes to its "
                    "first plot and until idle, of the server (its session, first computations); "
                    "floors: 10 such pages at once on these cores, chromium alone and with the "
                    "server; a page running the live animation: cores it keeps busy in chromium "
                    "and in the server"}


async def step_leak(server: Server, browser, total: int, settle: float, timeout: float,
                    start: dict | None = None) -> dict:
    n_pages = round(total * 0.2)
    n_gets = total - n_pages
    await asyncio.to_thread(drain, server, 60)
    before = await asyncio.to_thread(server.stats, True)
    t0 = time.perf_counter()
    get_errors: list[str] = []
    for k in range(0, n_gets, 10):
        _, errs, _ = await asyncio.to_thread(fire_gets, server, min(10, n_gets - k))
        get_errors += errs
        print(f"  {k + min(10, n_gets - k)}/{n_gets} GETs done ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    page_errors: list[str] = []
    rendered = 0
    for k in range(0, n_pages, 5):
        recs = await asyncio.gather(*(open_and_render(browser, server.url, timeout=timeout,
                                                      want_done=False)
                                      for _ in range(min(5, n_pages - k))))
        for rec in recs:
            rendered += "canvas_s" in rec
            if "error" in rec:
                page_errors.append(rec["error"])
            await close_rec(rec)
        print(f"  {k + len(recs)}/{n_pages} pages opened and closed "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    opened_s = time.perf_counter() - t0
    peak = await asyncio.to_thread(server.read)
    await asyncio.sleep(settle)
    after = await asyncio.to_thread(server.read, True)
    if "error" in after:
        raise BenchError(f"the reading after the quiet failed: {after['error']}")

    def back(s: dict) -> bool:
        return all(s.get(k) is not None and s[k] <= before[k] for k in ("controllers", "views"))

    out = {"sessions_opened": total, "plain_gets": n_gets, "browser_pages": n_pages,
           "pages_rendered": rendered, "get_errors": get_errors[:5], "page_errors": page_errors[:5],
           "open_close_s": r(opened_s, 2), "settle_s": settle,
           "before": {k: before.get(k) for k in LEAK_KEYS},
           "peak_after_last_close": {k: peak.get(k) for k in LEAK_KEYS},
           "after": {k: after.get(k) for k in LEAK_KEYS},
           "rss_change_mb": delta(before, after, "rss_mb", nd=1),
           "rss_change_percent": r(100 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"], 2),
           "threads_change": after["threads"] - before["threads"],
           "controllers_views_back_to_start": back(after)}
    if start:                               # the first reading, after the warm-up GETs
        out["after_warmup"] = {k: start.get(k) for k in LEAK_KEYS}
        out["rss_change_since_warmup_percent"] = r(
            100 * (after["rss_mb"] - start["rss_mb"]) / start["rss_mb"], 2)
    if not back(after):                     # slow clean-up or a leak? look again for 30 s
        waited, later = await asyncio.to_thread(server.wait_until, back, 30.0, 1.0, True)
        out["later"] = {k: later.get(k) for k in LEAK_KEYS}
        out["back_to_start_after_extra_s"] = r(waited, 1)
        out["controllers_leaked"] = (later.get("controllers") or 0) - before["controllers"]
        out["views_leaked"] = (later.get("views") or 0) - before["views"]
    return out


async def step_run_slot(server: Server, browser, timeout: float) -> dict:
    await asyncio.to_thread(drain, server, 60)
    base = await asyncio.to_thread(server.stats)
    runs0 = base.get("runs_active", 0)
    out: dict = {"runs_active_before": runs0, "runs_limit": base.get("runs_limit")}
    if runs0 >= (base.get("runs_limit") or 1):
        raise BenchError(f"all run slots are taken before the test ({base})")
    rec = await open_and_render(browser, server.url + "?page=reconstruction", timeout=timeout,
                                want_done=False)
    page = rec["page"]
    try:
        if "error" in rec:
            raise BenchError(f"the Reconstruction page did not render: {rec['error']}")
        end = time.perf_counter() + timeout
        while "data:" not in (s := await page_status(page)):
            if time.perf_counter() > end:
                raise BenchError(f"the data set never showed in the status: {s!r}")
            await asyncio.sleep(0.1)
        t_click = time.perf_counter()
        await page.get_by_role("button", name="▶ Start").click(timeout=30_000)
        waited, st = await asyncio.to_thread(
            server.wait_until, lambda s: s.get("runs_active", 0) >= runs0 + 1, 60.0, 0.1)
        if waited is None:
            raise BenchError(f"runs_active never rose after Start (status "
                             f"{await page_status(page)!r}, stats {st})")
        out["runs_active_after_start"] = st.get("runs_active")
        out["slot_taken_after_click_s"] = r(time.perf_counter() - t_click, 3)
        end = time.perf_counter() + 60
        while not (s := await page_status(page)).startswith("training: step"):
            if time.perf_counter() > end:
                raise BenchError(f"training never started: status {s!r}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)            # a few steps in
        s = await page_status(page)
        out["status_at_close"] = s[:200]
        if not s.startswith("training: step"):
            raise BenchError(f"training was no longer running at the close: {s!r}")
    except BaseException:
        await close_rec(rec)
        raise
    t_close = time.perf_counter()
    await close_rec(rec)
    freed = None
    session_gone = None
    deadline = t_close + 120
    while time.perf_counter() < deadline:
        server.check()
        try:
            s = await asyncio.to_thread(server.stats)
        except (urllib.error.URLError, OSError, ValueError):
            await asyncio.sleep(0.1)
            continue
        now = time.perf_counter() - t_close
        if session_gone is None and s.get("sessions", 1) <= base.get("sessions", 0):
            session_gone = now
        if freed is None and s.get("runs_active", 1) <= runs0:
            freed = now
        if freed is not None and session_gone is not None:
            break
        await asyncio.sleep(0.1)
    out["slot_freed_after_close_s"] = r(freed, 3)
    out["session_gone_after_close_s"] = r(session_gone, 3)
    final = await asyncio.to_thread(server.read)
    out["runs_active_at_end"] = final.get("runs_active")
    if freed is None:
        out["error"] = f"runs_active still {final.get('runs_active')} 120 s after the close"
    return out


#: a signature of the attractor picture in the browser (its points or its datashaded image):
#: changes when the plot is redrawn
PICTURE_SIGNATURE = """() => {
  let s = 0;
  for (const d of Bokeh.documents)
    for (const m of d.all_models) {
      if (!m.data || m.data.u === undefined && m.data.image === undefined) continue;
      for (const key of ["u", "v", "image"]) {
        let a = m.data[key];
        if (key === "image" && a && a.length) a = a[0];
        if (!a || !a.length) continue;
        s += a.length;
        for (let i = 0; i < a.length; i += 61) s += (+a[i] || 0) * ((i % 13) + 1);
      }
    }
  return s;
}"""


async def _slider_box(page, value: str):
    """The text box of the parameter slider showing ``value`` (as tests/browser/lesson.py)."""
    inputs = page.locator(".bk-input-group input")
    for i in range(await inputs.count()):
        if await inputs.nth(i).input_value() == value:
            return inputs.nth(i)
    raise BenchError(f"no slider box shows {value!r}")


def niced_chromium() -> str:
    """A launcher of chromium at the lowest CPU priority (``nice -n 19``): a class's browsers
    on the server's own machine then take only the CPU the server leaves, as if they ran on
    the students' own computers."""
    path = Path(tempfile.gettempdir()) / "bench-classroom-niced-chromium"
    path.write_text(f'#!/bin/sh\nexec nice -n 19 "{CHROMIUM}" "$@"\n')
    path.chmod(0o755)
    return str(path)


async def step_latency(server: Server, browser, n_open: int, n_live: int, n_changes: int,
                       timeout: float, nice: bool = True) -> dict:
    """With ``n_open`` sessions open (chromium pages; ``n_live`` of them running the live
    animation), one more page changes rho ``n_changes`` times: seconds from Enter until its
    attractor picture is redrawn (a browser-side poll of the picture's pixels, every 10 ms).
    ``nice``: the class's pages run in a second chromium at the lowest CPU priority (the
    measuring page does not)."""
    await asyncio.to_thread(drain, server, 60)
    recs: list[dict] = []
    klass = browser
    if nice:
        klass = await browser.browser_type.launch(executable_path=niced_chromium(), headless=True,
                                                  args=FLAGS)
    try:
        for start in range(0, n_open, 5):          # the class, 5 pages at a time
            batch = await asyncio.gather(*(open_and_render(klass, server.url, timeout=timeout)
                                           for _ in range(min(5, n_open - start))))
            recs += batch
        failed = [rec.get("error") for rec in recs if "error" in rec]
        if failed:
            raise BenchError(f"{len(failed)} of the class's pages did not render: {failed[0]}")
        for rec in recs[:n_live]:
            await rec["page"].get_by_role("button", name="▶ Run").click(timeout=30_000)
        for rec in recs[:n_live]:
            await rec["page"].get_by_text("running:", exact=False).first.wait_for(timeout=60_000)
        open_stats = await asyncio.to_thread(server.read)
        probe = await open_and_render(browser, server.url, timeout=timeout)
        recs.append(probe)
        if "error" in probe:
            raise BenchError(f"the measuring page did not render: {probe['error']}")
        page, value, secs, missed = probe["page"], "28", [], 0
        await page.wait_for_function(f"() => ({PICTURE_SIGNATURE})() !== 0", timeout=timeout * 1000)
        open_stats = await asyncio.to_thread(server.read)
        t_changes = time.perf_counter()
        for k in range(n_changes):
            new = ("20", "24", "18", "26", "22")[k % 5]    # from 28: each differs from the last
            box = await _slider_box(page, value)
            sig = await page.evaluate(PICTURE_SIGNATURE)
            await box.fill(new)
            t0 = time.perf_counter()
            await box.press("Enter")
            try:
                await page.wait_for_function(f"(old) => ({PICTURE_SIGNATURE})() !== old", arg=sig,
                                             polling=10, timeout=30_000)
                secs.append(time.perf_counter() - t0)
            except Exception:                   # noqa: BLE001 - counted, the next one goes on
                missed += 1
            value = new
            await asyncio.sleep(0.3)
        wall = time.perf_counter() - t_changes
        end_stats = await asyncio.to_thread(server.read)
        cpu = delta(open_stats, end_stats, "cpu_s")
        console = sorted({e for rec in recs for e in rec["console_errors"]})
        return {"sessions_open": n_open + 1, "live_animations": n_live, "changes": n_changes,
                "redraw_s": summary(secs), "redraws_missed": missed,
                "sessions_seen_by_server": open_stats.get("sessions"),
                "cpu_s_during_changes": cpu, "changes_wall_s": r(wall, 2),
                "server_cores_busy": r(cpu / wall, 2) if cpu is not None and wall > 0 else None,
                "rss_mb_with_class_open": end_stats.get("rss_mb"),
                "console_errors": console[:5], "class_browsers_niced": nice,
                "note": "the class's chromium pages run on the server's own 2 cores"
                        + (" at nice 19" if nice else "")}
    finally:
        for rec in recs:
            await close_rec(rec)
        if klass is not browser:
            with contextlib.suppress(Exception):
                await klass.close()


def _soak_student(base_url: str, deadline: float, train_seconds: float, timeout: float,
                  executable: str = CHROMIUM) -> dict:
    """One student (a thread with its own Playwright and chromium) giving the scripted lesson
    (tests/browser/lesson.py) again and again until ``deadline``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser.lesson import page_opener, run_lesson
    from playwright.sync_api import sync_playwright

    lessons: list[dict] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        try:
            while time.perf_counter() < deadline:
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                new_page = page_opener(ctx, errors, timeout_s=timeout)
                t0 = time.perf_counter()
                try:
                    out = run_lesson(new_page, base_url, train_seconds=train_seconds)
                    rec = {k: v for k, v in out.items() if k.endswith("_s")}
                except Exception as e:          # noqa: BLE001 - a failed lesson is a result
                    rec = {"error": one_line(e)[:300]}
                rec["lesson_s"] = time.perf_counter() - t0
                rec["console_errors"] = errors[:5]
                lessons.append(rec)
                with contextlib.suppress(Exception):
                    ctx.close()
        finally:
            browser.close()
    return {"lessons": lessons}


async def step_soak(server: Server, browser, students: int, minutes: float, train_seconds: float,
                    timeout: float, nice: bool = True) -> dict:
    """``students`` simulated students, each repeating the scripted lesson (preset link, live
    mode with a parameter change, Lyapunov, orbit diagram zoom and Back, 3D rotation, a short
    Reconstruction training) for ``minutes``: lessons completed, failed steps, console errors,
    server tracebacks, and the percentiles of every timed step."""
    await asyncio.to_thread(drain, server, 60)
    before = await asyncio.to_thread(server.read)
    log_start = len(server.tail(10**6).splitlines())
    deadline = time.perf_counter() + 60 * minutes
    executable = niced_chromium() if nice else CHROMIUM
    runs = await asyncio.gather(*(asyncio.to_thread(_soak_student, server.url, deadline,
                                                    train_seconds, timeout, executable)
                                  for _ in range(students)))
    after = await asyncio.to_thread(server.read)
    lessons = [rec for run in runs for rec in run["lessons"]]
    keys = sorted({k for rec in lessons for k in rec if k.endswith("_s")})
    log = server.tail(10**6).splitlines()[log_start:]
    tracebacks = [line for line in log if line.startswith("Traceback")]
    return {"students": students, "minutes": minutes, "train_seconds": train_seconds,
            "browsers_niced": nice,
            "lessons": len(lessons), "lessons_failed": sum("error" in rec for rec in lessons),
            "failures": sorted({rec["error"] for rec in lessons if "error" in rec})[:5],
            "console_errors": sum(len(rec["console_errors"]) for rec in lessons),
            "console_examples": sorted({e for rec in lessons for e in rec["console_errors"]})[:5],
            "server_tracebacks": len(tracebacks),
            "server_error_lines": [line for line in log if "ERROR" in line][:5],
            "step_s": {k: {**summary(rec[k] for rec in lessons if k in rec),
                           "p99_s": r(pct([rec[k] for rec in lessons if k in rec], 99))}
                       for k in keys},
            "cpu_s": delta(before, after, "cpu_s"), "rss_mb_before": before.get("rss_mb"),
            "rss_mb_after": after.get("rss_mb"), "threads_after": after.get("threads")}


# ============================================================================ main
def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gets", type=int, default=None,
                    help="sequential GETs of the session-cost step (default 20; quick 5)")
    ap.add_argument("--burst", type=int, default=None, help="GETs fired at once (default 30; quick 6)")
    ap.add_argument("--pages", type=int, default=None,
                    help="chromium pages opened at once (default 10; quick 3)")
    ap.add_argument("--leak-sessions", type=int, default=None,
                    help="sessions opened and closed in the leak check (default 100; quick 20)")
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds of quiet before the leak check's second reading (default 15)")
    ap.add_argument("--page-timeout", type=float, default=180.0,
                    help="seconds a page may take to render (default 180)")
    ap.add_argument("--class-size", type=int, default=None,
                    help="sessions open in the latency step (default 30; quick 6)")
    ap.add_argument("--live", type=int, default=5,
                    help="of which run the live animation (default 5; quick 2)")
    ap.add_argument("--changes", type=int, default=20,
                    help="parameter changes timed in the latency step (default 20; quick 5)")
    ap.add_argument("--no-nice", action="store_true",
                    help="latency and soak steps: run the class's browsers at normal priority")
    ap.add_argument("--soak-students", type=int, default=None,
                    help="students of the soak (default 10; quick 2)")
    ap.add_argument("--soak-minutes", type=float, default=None,
                    help="minutes of the soak (default 10; quick 2)")
    ap.add_argument("--soak-train", type=float, default=5.0,
                    help="seconds each lesson trains the Reconstruction model (default 5)")
    ap.add_argument("--skip", default="",
                    help="steps to skip, comma-separated: cost,burst,pages,browser,leak,run,"
                         "latency,soak")
    ap.add_argument("--quick", action="store_true", help="small counts: a check that it all works")
    ap.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    ap.add_argument("--num-procs", type=int, default=1,
                    help="server processes (serve --num-procs; /stats sums them, each process "
                         "publishing its figures once a second)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    q = args.quick
    # a SIGTERM (timeout, CI) unwinds like Ctrl-C: the finally block still stops the server
    signal.signal(signal.SIGTERM, _interrupt)

    def pick(v, full, quick):
        return max(1, v if v is not None else (quick if q else full))

    n_gets, n_burst = pick(args.gets, 20, 5), pick(args.burst, 30, 6)
    n_pages, n_leak = pick(args.pages, 10, 3), pick(args.leak_sessions, 100, 20)
    n_class, n_changes = pick(args.class_size, 30, 6), pick(args.changes if not q else None, 20, 5)
    n_live = min(n_class - 1, args.live if not q else 2)
    n_students, soak_min = pick(args.soak_students, 10, 2), args.soak_minutes or (2.0 if q else 10.0)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    browser_missing = ("playwright is not installed" if async_playwright is None else
                       None if Path(CHROMIUM).exists() else f"chromium not found at {CHROMIUM}")

    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "python": platform.python_version(),
                             "load_average_at_start": r(os.getloadavg()[0], 2)},
                 "settings": {"quick": q, "gets": n_gets, "burst": n_burst, "pages": n_pages,
                              "leak_sessions": n_leak, "settle_s": args.settle,
                              "class_size": n_class, "live": n_live, "changes": n_changes,
                              "soak_students": n_students, "soak_minutes": soak_min,
                              "soak_train_s": args.soak_train,
                              "max_runs": os.environ.get("EXPLORER_MAX_RUNS"),
                              "skipped": sorted(skip), "chromium": CHROMIUM,
                              "num_procs": args.num_procs},
                 "errors": {}}
    failed = False
    server = Server(args.port, num_procs=args.num_procs)

    def step(name: str, fn, *a):
        """Run a step; a failure is recorded (with the server log's tail) and the next goes on."""
        nonlocal failed
        t = time.perf_counter()
        print(f"\n[{name}] ...", flush=True)
        try:
            out = fn(*a)
            out = asyncio.run(out) if asyncio.iscoroutine(out) else out
            out["step_wall_s"] = r(time.perf_counter() - t, 2)
            res[name] = out
            return out
        except Exception as e:              # noqa: BLE001 - report it and go on
            failed = True
            msg = one_line(e)
            res["errors"][name] = msg
            print(f"  FAILED: {msg}")
            if not isinstance(e, BenchError):
                traceback.print_exc()
            print(f"  --- server log (last lines, {server.log.name}) ---\n{server.tail()}\n  ---")
            server.check()                  # a dead server stops the benchmark
            return None

    async def with_browser(coro_fn, *a):
        if browser_missing:
            raise BenchError(f"browser steps need chromium and playwright: {browser_missing}")
        async with async_playwright() as pw:
            browser = await browser_launch(pw)
            try:
                return await coro_fn(server, browser, *a)
            finally:
                await browser.close()

    try:
        print(f"starting the server on port {server.port} (log: {server.log.name}) ...", flush=True)
        try:
            server.start()
        except BaseException as e:
            print(f"the server did not start: {one_line(e)}\n--- server log ---\n{server.tail(60)}")
            raise
        res["server"] = {"startup_s": r(server.startup_s, 2), "stats_at_start": server.stats()}
        print(f"  up in {server.startup_s:.1f} s: {res['server']['stats_at_start']}")

        warm = [server.get_page()[0] for _ in range(2)]     # first sessions: lazy imports
        res["server"]["warmup_gets_s"] = [r(w, 3) for w in warm]
        res["server"]["warmup_drained_after_s"] = r(drain(server, 90), 2)
        res["server"]["stats_after_warmup_gc"] = server.stats(gc=True)
        print(f"  2 warm-up GETs: {res['server']['warmup_gets_s']} s; then "
              f"{res['server']['stats_after_warmup_gc']}")

        if "cost" not in skip:
            c = step("session_cost", step_session_cost, server, n_gets)
            if c:
                g = c["get_s"]
                print(f"  {n_gets} sequential GETs: median {g['median_s']} s, p90 {g['p90_s']} s "
                      f"per session; server CPU {c['cpu_s_per_session_build']} s per session "
                      f"({c['cpu_s_per_session_total']} s with its own computations and clean-up)")

        if "burst" not in skip:
            b = step("burst", step_burst, server, n_burst)
            if b:
                print(f"  {n_burst} GETs at once: {b['completed']} completed, {b['failed']} failed; "
                      f"median {b['completion_s'].get('median_s')} s, max "
                      f"{b['completion_s'].get('max_s')} s; server CPU {b['cpu_s_during']} s")

        if "pages" not in skip:
            p = step("pages", with_browser, step_pages, n_pages, args.page_timeout)
            if p:
                print(f"  {n_pages} chromium pages at once: {p['rendered']} rendered; first plot "
                      f"median {p['first_plot_s'].get('median_s')} s, max "
                      f"{p['first_plot_s'].get('max_s')} s; computation done median "
                      f"{p['status_done_s'].get('median_s')} s, max {p['status_done_s'].get('max_s')} s"
                      + (f"; errors {p['errors']}" if p["errors"] else ""))

        if "browser" not in skip:
            bc = step("browser_cost", with_browser, step_browser_cost, 3, args.page_timeout)
            if bc:
                print(f"  one chromium page (alone): {bc['plot_cpu_s']} CPU-s of chromium to its "
                      f"first plot, {bc['idle_cpu_s']} until idle (an empty context: "
                      f"{bc['empty_context_cpu_s']}), the server {bc['server_cpu_s']} CPU-s; 10 pages "
                      f"on {bc['cores']} cores: at least {bc['floor_10_pages_first_plot_s']} s of "
                      f"chromium alone, {bc['floor_10_pages_with_server_s']} s with the server; a "
                      f"live page keeps {bc['live_page_chromium_cores']} of a core busy in chromium, "
                      f"{bc['live_page_server_cores']} in the server")

        if "leak" not in skip:
            lk = step("leak", with_browser, step_leak, n_leak, args.settle, args.page_timeout,
                      res["server"].get("stats_after_warmup_gc"))
            if lk:
                bf, af = lk["before"], lk["after"]
                print(f"  {n_leak} sessions opened and closed ({lk['plain_gets']} GETs, "
                      f"{lk['browser_pages']} pages, {lk['pages_rendered']} rendered) in "
                      f"{lk['open_close_s']} s; after {args.settle:g} s:")
                for k in LEAK_KEYS:
                    print(f"    {k:12s} {bf.get(k)!s:>8} -> {af.get(k)!s:>8}")
                if "after_warmup" in lk:
                    print(f"  (after the warm-up GETs: {lk['after_warmup']}; RSS since then "
                          f"{lk['rss_change_since_warmup_percent']} %)")
                print(f"  RSS change {lk['rss_change_mb']} MiB ({lk['rss_change_percent']} %); "
                      f"controllers/views back to start: {lk['controllers_views_back_to_start']}")
                if "later" in lk:
                    print(f"  30 s later: {lk['later']} (back after "
                          f"{lk['back_to_start_after_extra_s']} s more; leaked controllers "
                          f"{lk['controllers_leaked']}, views {lk['views_leaked']})")

        if "run" not in skip:
            rs = step("run_slot", with_browser, step_run_slot, args.page_timeout)
            if rs:
                print(f"  training ({rs['status_at_close']!r}); page closed -> run slot freed "
                      f"after {rs['slot_freed_after_close_s']} s, session gone after "
                      f"{rs['session_gone_after_close_s']} s")
                if "error" in rs:
                    failed = True
                    res["errors"]["run_slot"] = rs["error"]
                    print(f"  FAILED: {rs['error']}")

        if "latency" not in skip:
            lt = step("latency", with_browser, step_latency, n_class, n_live, n_changes,
                      args.page_timeout, not args.no_nice)
            if lt:
                d = lt["redraw_s"]
                print(f"  {lt['sessions_open']} pages open ({n_live} live): a parameter change "
                      f"redrawn after median {d.get('median_s')} s, p90 {d.get('p90_s')} s, max "
                      f"{d.get('max_s')} s ({lt['redraws_missed']} missed)")

        if "soak" not in skip:
            sk = step("soak", with_browser, step_soak, n_students, soak_min, args.soak_train,
                      args.page_timeout, not args.no_nice)
            if sk:
                print(f"  soak: {sk['students']} students x {sk['minutes']:g} min: {sk['lessons']} "
                      f"lessons, {sk['lessons_failed']} failed, {sk['console_errors']} console "
                      f"errors, {sk['server_tracebacks']} server tracebacks")
                for k, v in sk["step_s"].items():
                    print(f"    {k:22s} median {v.get('median_s')} p90 {v.get('p90_s')} "
                          f"p99 {v.get('p99_s')} max {v.get('max_s')}")
                if sk["lessons_failed"] or sk["console_errors"] or sk["server_tracebacks"]:
                    failed = True
                    res["errors"]["soak"] = (sk["failures"] or sk["console_examples"]
                                             or sk["server_error_lines"] or ["server tracebacks"])[0]

        with contextlib.suppress(Exception):
            res["server"]["stats_at_end_gc"] = server.stats(gc=True)
    except KeyboardInterrupt as e:
        failed = True
        res["errors"]["benchmark"] = f"interrupted ({e or 'Ctrl-C'})"
        print(f"\ninterrupted ({e or 'Ctrl-C'}): the server is stopped, the figures so far "
              "are written")
        traceback.print_exc(limit=6)
    except Exception as e:                  # noqa: BLE001 - written below, then exit 1
        failed = True
        res["errors"]["benchmark"] = one_line(e)
        print(f"\nFAILED: {one_line(e)}")
        if server.proc is not None:
            print(f"--- server log (last lines, {server.log.name}) ---\n{server.tail(60)}")
    finally:
        server.stop()
        if server.proc is not None:
            res.setdefault("server", {})["exit_code"] = server.proc.returncode

    res["machine"]["load_average_at_end"] = r(os.getloadavg()[0], 2)
    if not res["errors"]:
        del res["errors"]
    if not args.no_write:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if skip and out.exists():               # the skipped steps keep their earlier figures
            try:
                old = json.loads(out.read_text())
            except ValueError:
                old = {}
            kept = {k: v for k, v in old.items() if k not in res}
            res = {**res, **kept, "kept_from_earlier_runs": sorted(kept)}
        res["measured"] = time.strftime("%Y-%m-%d")
        out.write_text(json.dumps(res, indent=1))
        print("\nwrote", args.out)
    if failed:
        print(f"some steps failed; the server log is kept at {server.log.name}")
    else:
        server.remove_log()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
