"""Load from Debian's `wrk`, a compiled HTTP load generator that is not the bottleneck: its own CPU
time is measured, and the figures are read from its `--latency` report."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def wrk_binary() -> str:
    """Debian's `wrk`, installed with apt-get when missing."""
    import os

    found = shutil.which("wrk")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        proc = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], env=env,
                              capture_output=True, text=True, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise AssertionError(f"could not install wrk with apt-get: {proc.stderr.strip()[-300:]}; install it by hand")
    return found


def post_script(path: Path, body: object) -> Path:
    """A wrk Lua script that POSTs `body` as JSON."""
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [=[{json.dumps(body)}]=]\n")
    return path


@dataclass(frozen=True)
class Load:
    requests: int
    rate: float
    p99_ms: float
    failed: int
    cpu_seconds: float  # wrk's own user + system time
    p50_ms: float = 0.0

    def __str__(self) -> str:
        return f"{self.requests} requests, {self.rate:.0f}/s, p99 {self.p99_ms:.1f} ms, {self.failed} failed, wrk CPU {self.cpu_seconds:.1f} s"


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse(out: str, cpu: float) -> Load:
    requests = int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(map(int, sockets.groups())) if sockets else 0) + (int(non_2xx.group(1)) if non_2xx else 0)
    return Load(requests, float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
                _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)), failed, cpu,
                _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)))


class Wrk:
    """`wrk` against `url` for `seconds`, in the background (`script`: a Lua script, e.g. from `post_script`)."""

    def __init__(self, url: str, seconds: float, threads: int = 1, connections: int = 4, script: Path | None = None) -> None:
        self.before = resource.getrusage(resource.RUSAGE_CHILDREN)
        command = [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s", "--latency"]
        self.proc = subprocess.Popen([*command, *(["-s", str(script)] if script else []), url],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float = 120) -> Load:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return parse(out, (after.ru_utime - self.before.ru_utime) + (after.ru_stime - self.before.ru_stime))
