"""Benchmark the app under gunicorn on loopback: /predict latency (p50/p99), req/s, memory.

Usage: .venv/bin/python bench/app.py [--seconds 10] [--generator wrk|python] [--connections 4] [--workers 2]

The load comes from Debian's `wrk` (compiled, one thread, keep-alive connections; installed when
missing) so that the generator is not the bottleneck: its own CPU time is printed next to the
figures. `--generator python` is the earlier generator (threads + http.client, a connection per
request), kept to compare with. Writes bench/results/app.json.
"""

from __future__ import annotations

import sys

# bench/ holds other benchmarks (bench/platform.py) that would shadow stdlib modules.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/bench")]

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.models import published_model  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _load(port: int, body: bytes, seconds: float, threads: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run() -> None:
        mine, bad = [], 0
        while time.monotonic() < end:
            started = time.perf_counter()
            status = _post(port, body)
            mine.append(time.perf_counter() - started)
            bad += status != 200
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    started = time.monotonic()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)  # noqa: E731
    return {"requests": len(latencies), "errors": errors[0], "seconds": round(elapsed, 2),
            "req_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def _wrk(port: int, body: object, seconds: float, connections: int, work: Path) -> dict:
    from tests.load import Wrk, post_script

    load = Wrk(f"http://127.0.0.1:{port}/predict", seconds, threads=1, connections=connections,
               script=post_script(work / "post.lua", body)).result(timeout=seconds + 60)
    return {"requests": load.requests, "errors": load.failed, "req_per_s": round(load.rate, 1),
            "p50_ms": round(load.p50_ms, 2), "p99_ms": round(load.p99_ms, 2),
            "generator_cpu_s": round(load.cpu_seconds, 2), "seconds": seconds}


def _rss_mb(master: int) -> dict:
    def rss(pid: int) -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0
    workers = [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    figures = {"master_mb": round(rss(master), 1), "workers_mb": [round(rss(p), 1) for p in workers]}
    figures["total_mb"] = round(figures["master_mb"] + sum(figures["workers_mb"]), 1)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--generator", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--connections", type=int, default=4, help="wrk's connections")
    parser.add_argument("--threads", type=int, default=8, help="the Python generator's threads")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aiship-bench-"))
    model = published_model(tmp / "model")
    golden = json.loads((model / "manifest.json").read_text())["golden_set"]["inputs"]
    port = _free_port()
    env = dict(os.environ, AISHIP_APP_MODEL_DIR=str(model), AISHIP_APP_BIND=f"127.0.0.1:{port}",
               AISHIP_APP_WORKERS=str(args.workers), PROMETHEUS_MULTIPROC_DIR=str(tmp / "metrics"))
    (tmp / "metrics").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "app/gunicorn.conf.py"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if _post(port, json.dumps({"instances": golden[:1]}).encode()) == 200:
                    break
            except OSError:
                time.sleep(0.1)
        results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "load_avg_1m": os.getloadavg()[0]},
                   "gunicorn_workers": args.workers, "generator": args.generator,
                   **({"wrk_connections": args.connections} if args.generator == "wrk" else {"client_threads": args.threads})}
        for name, rows in (("single_row", golden[:1]), ("batch_100", (golden * 4)[:100])):
            if args.generator == "wrk":
                results[name] = _wrk(port, {"instances": rows}, args.seconds, args.connections, tmp)
            else:
                results[name] = _load(port, json.dumps({"instances": rows}).encode(), args.seconds, args.threads)
            print(name, results[name])
        results["memory"] = _rss_mb(proc.pid)
        print("memory", results["memory"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = REPO / "bench" / "results" / "app.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
