"""The app under real gunicorn on a loopback port: metrics summed across workers, bad model stops it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.tests.gunicorn_server import free_port, request, start, wait_ready


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _series(metrics: str, series: str) -> float:
    found = re.search(re.escape(series) + r" (\S+)", metrics)
    return float(found.group(1)) if found else 0.0


PREDICT_200 = 'aiship_app_requests_total{endpoint="/predict",method="POST",status="200"}'
PREDICTIONS = 'aiship_app_predictions_total{model_version="1"}'


def _counts(port: int) -> tuple[float, float]:
    status, metrics = request(port, "GET", "/metrics")
    assert status == 200
    return _series(metrics.decode(), PREDICT_200), _series(metrics.decode(), PREDICTIONS)


@pytest.fixture
def served(gunicorn_started):
    """The shared gunicorn (conftest.py), ready: (process, port)."""
    proc, port = gunicorn_started
    wait_ready(proc, port)
    return proc, port


def test_metrics_sum_across_workers_and_survive_a_dead_worker(served, manifest):
    proc, port = served
    body = json.dumps({"instances": manifest["golden_set"]["inputs"][:2]}).encode()
    requests_before, predictions_before = _counts(port)
    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(lambda _: request(port, "POST", "/predict", body)[0], range(60)))
    workers = _workers(proc.pid)
    os.kill(workers[0], signal.SIGKILL)  # its counts must still be reported
    wait_ready(proc, port)
    end = time.monotonic() + 30
    while len(set(_workers(proc.pid)) - set(workers)) < 1 and time.monotonic() < end:
        time.sleep(0.1)
    assert set(_workers(proc.pid)) - set(workers), "gunicorn did not start a worker in place of the killed one"
    with ThreadPoolExecutor(4) as pool:
        second = list(pool.map(lambda _: request(port, "POST", "/predict", body)[0], range(60)))
    assert first + second == [200] * 120
    requests_after, predictions_after = _counts(port)
    assert requests_after - requests_before == 120
    assert predictions_after - predictions_before == 240
    # The workers forked from the master that loaded the model, the replacement too, say which it is.
    metrics = request(port, "GET", "/metrics")[1].decode()
    assert _series(metrics, f'aiship_app_model_info{{name="test-model",sha256="{manifest["sha256"]}",version="1"}}') == 1


def test_tampered_model_stops_gunicorn(model_dir, tmp_path):
    path = model_dir / "model.skops"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    proc = start(model_dir, tmp_path, free_port())  # the master loads the model before it forks a worker
    try:
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "sha256 mismatch for" in (tmp_path / "gunicorn.err").read_text()


def test_slow_clients_do_not_stall_predict(served, manifest):
    """Clients that connect and send nothing, half their headers or half their body leave /predict answering.

    A sync worker is held by one such client; gthread parks a silent connection in its poller, and
    a client that stops in the middle of its headers holds one thread of the worker that accepted
    it (16 each; gunicorn has no header timeout, so more than that is for a buffering proxy).
    """
    proc, port = served
    body = json.dumps({"instances": manifest["golden_set"]["inputs"][:1]}).encode()
    halves = [b"", b"POST /predict HTTP/1.1\r\nHost: slow\r\n",
              b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Length: 1000\r\n\r\n{"]
    slow: list[socket.socket] = []
    try:
        for i in range(12):  # six times the two sync workers this replaced
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(halves[i % 3])
            slow.append(sock)
        time.sleep(0.5)  # every slow connection has been accepted by now
        started = time.monotonic()
        answers = [request(port, "POST", "/predict", body)[0] for _ in range(20)]
        took = time.monotonic() - started
        assert answers == [200] * 20
        assert took < 10, f"20 predictions took {took:.1f} s beside 12 slow clients"
        assert proc.poll() is None
    finally:
        for sock in slow:
            sock.close()
