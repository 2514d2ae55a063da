"""Start the app under real gunicorn on a loopback port, and talk to it (app/tests' own helpers)."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "app" / "gunicorn.conf.py")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start(model_dir: Path, tmp_path: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, AISHIP_APP_MODEL_DIR=str(model_dir), AISHIP_APP_BIND=f"127.0.0.1:{port}",
               AISHIP_APP_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    env.pop("AISHIP_APP_METRICS_DIR", None)
    (tmp_path / "metrics").mkdir()
    return subprocess.Popen(GUNICORN, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "gunicorn.err", "w"))


def wait_ready(proc: subprocess.Popen, port: int, deadline: float = 40.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode} before becoming ready")
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"gunicorn on 127.0.0.1:{port} not ready within {deadline} s")
