"""The app under real gunicorn on a loopback port: metrics summed across workers, bad model stops it."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(REPO / "app" / "gunicorn.conf.py")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(port: int, method: str, path: str, body: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _start(model_dir: Path, tmp_path: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, AISHIP_APP_MODEL_DIR=str(model_dir), AISHIP_APP_BIND=f"127.0.0.1:{port}",
               AISHIP_APP_WORKERS="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    env.pop("AISHIP_APP_METRICS_DIR", None)
    (tmp_path / "metrics").mkdir()
    return subprocess.Popen(GUNICORN, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "gunicorn.err", "w"))


def _wait_ready(proc: subprocess.Popen, port: int, deadline: float = 40.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {proc.returncode} before becoming ready")
        try:
            if _request(port, "GET", "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"gunicorn on 127.0.0.1:{port} not ready within {deadline} s")


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _predict_count(metrics: str) -> float:
    series = 'aiship_app_requests_total{endpoint="/predict",method="POST",status="200"}'
    found = re.search(re.escape(series) + r" (\S+)", metrics)
    return float(found.group(1)) if found else 0.0


def test_metrics_sum_across_workers_and_survive_a_dead_worker(trained_dir, manifest, tmp_path):
    port = _free_port()
    proc = _start(trained_dir, tmp_path, port)
    body = json.dumps({"instances": manifest["golden_set"]["inputs"][:2]}).encode()
    try:
        _wait_ready(proc, port)
        with ThreadPoolExecutor(4) as pool:
            first = list(pool.map(lambda _: _request(port, "POST", "/predict", body)[0], range(60)))
        os.kill(_workers(proc.pid)[0], signal.SIGKILL)  # its counts must still be reported
        _wait_ready(proc, port)
        with ThreadPoolExecutor(4) as pool:
            second = list(pool.map(lambda _: _request(port, "POST", "/predict", body)[0], range(60)))
        assert first + second == [200] * 120
        status, metrics = _request(port, "GET", "/metrics")
        assert status == 200
        assert _predict_count(metrics.decode()) == 120
        assert 'aiship_app_predictions_total{model_version="1"} 240.0' in metrics.decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = (tmp_path / "gunicorn.err").read_text().splitlines()
    assert all(json.loads(line)["logger"] for line in log if line.startswith("{"))


def test_tampered_model_stops_gunicorn(model_dir, tmp_path):
    path = model_dir / "model.skops"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = _start(model_dir, tmp_path, _free_port())
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "sha256 mismatch for" in (tmp_path / "gunicorn.err").read_text()


def test_slow_clients_do_not_stall_predict(trained_dir, manifest, tmp_path):
    """Clients that connect and send nothing, half their headers or half their body leave /predict answering.

    A sync worker is held by one such client; gthread parks a silent connection in its poller, and
    a client that stops in the middle of its headers holds one thread of the worker that accepted
    it (16 each; gunicorn has no header timeout, so more than that is for a buffering proxy).
    """
    port = _free_port()
    proc = _start(trained_dir, tmp_path, port)
    body = json.dumps({"instances": manifest["golden_set"]["inputs"][:1]}).encode()
    halves = [b"", b"POST /predict HTTP/1.1\r\nHost: slow\r\n",
              b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Length: 1000\r\n\r\n{"]
    slow: list[socket.socket] = []
    try:
        _wait_ready(proc, port)
        for i in range(12):  # six times the two sync workers this replaced
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(halves[i % 3])
            slow.append(sock)
        time.sleep(1.0)  # every slow connection has been accepted by now
        started = time.monotonic()
        answers = [_request(port, "POST", "/predict", body)[0] for _ in range(20)]
        took = time.monotonic() - started
        assert answers == [200] * 20
        assert took < 10, f"20 predictions took {took:.1f} s beside 12 slow clients"
        assert proc.poll() is None
    finally:
        for sock in slow:
            sock.close()
        proc.terminate()
        proc.wait(timeout=30)
