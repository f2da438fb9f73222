"""What the browser benchmarks share: the app served in a subprocess on a free port,
Debian's chromium with its headless flags, and the page's status line."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def served_app(timeout: float = 120.0):
    """``dynamics-explorer serve`` on a free port; yields ``(url, seconds to accept)``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "explorer", "serve", "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - t0 > timeout:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        yield f"http://localhost:{port}/explorer", time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(10)


def status(page) -> str:
    """The page's status line (its text lives in the pane's shadow root)."""
    return page.locator(".status-line").first.locator("div").first.inner_text()


def wait_status(page, text: str, timeout: float = 180.0) -> float:
    """Seconds until the status line contains ``text``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if text in status(page):
            return time.perf_counter() - t0
        page.wait_for_timeout(10)
    raise RuntimeError(f"status never showed {text!r}: {status(page)!r}")


_ANSWER = """async ([button, host, text, timeout]) => {
  const shown = () => {
    const root = host.shadowRoot || host;
    const el = root.querySelector("div") || root;
    return (el.innerText || el.textContent || "").includes(text);
  };
  const t0 = performance.now();
  button.click();
  return await new Promise(resolve => {
    const check = () => {
      const t = performance.now() - t0;
      if (shown()) resolve(t / 1000);
      else if (t > timeout * 1000) resolve(null);
      else setTimeout(check, 2);
    };
    check();
  });
}"""


def answer_time(page, button: str, text: str, timeout: float = 30.0) -> float:
    """Seconds from a click on the button named ``button`` to the status line containing
    ``text``, both measured inside the page (the app's answer as the user sees it, without
    Playwright's actionability checks and round trips)."""
    btn = page.get_by_role("button", name=button).element_handle()
    host = page.locator(".status-line").first.element_handle()
    t = page.evaluate(_ANSWER, [btn, host, text, timeout])
    if t is None:
        raise RuntimeError(f"status never showed {text!r} after {button!r}: {status(page)!r}")
    return t
