"""One way for tests to run the app as a class meets it: ``python -m explorer serve`` in a
subprocess on a free port, its output in a log file, stopped at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(log_path: Path, *args: str, env: dict | None = None, timeout: float = 120.0):
    """Yield ``http://localhost:PORT`` once the server (warmed up) accepts connections;
    ``args`` are extra ``serve`` options, ``env`` extra environment variables."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "serve", "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:                       # the port accepts connections (a page load would build a session)
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {Path(log_path).read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"the server did not start within {timeout:.0f} s")
    try:
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
