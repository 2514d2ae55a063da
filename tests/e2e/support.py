"""What the end-to-end tests watch with: a bounded load generator and a ReplicaSet watcher."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


class BackgroundLoop:
    """Runs `_run` on a daemon thread inside a `with` block; `_stop` tells it to end."""

    join_timeout = 30.0

    def _start_thread(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.join_timeout)


@dataclass
class LoadGenerator(BackgroundLoop):
    """Sends POST /predict to one address until stopped (at most `max_seconds`), counting failures."""

    url: str
    body: bytes
    max_seconds: float = 600.0
    interval: float = 0.05
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set = field(default_factory=set)

    def __post_init__(self) -> None:
        self._start_thread("load-generator")

    def _one(self) -> None:
        request = urllib.request.Request(self.url, data=self.body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
                self.versions.add(answer["model"]["version"])
                self.ok += 1
        except urllib.error.HTTPError as exc:
            self.failures.append(f"HTTP {exc.code}")
        except OSError as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._one()
            time.sleep(self.interval)


@dataclass
class ReplicaSetWatcher(BackgroundLoop):
    """Records which pod-template hashes had pods in a namespace while it ran."""

    api_client: object
    namespace: str
    app_name: str
    hashes: set = field(default_factory=set)

    join_timeout = 10.0

    def __post_init__(self) -> None:
        self._start_thread("rs-watcher")

    def _run(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        while not self._stop.is_set():
            try:
                pods = core.list_namespaced_pod(self.namespace, label_selector=f"app.kubernetes.io/name={self.app_name}")
                for pod in pods.items:
                    template_hash = (pod.metadata.labels or {}).get("pod-template-hash")
                    if template_hash:
                        self.hashes.add(template_hash)
            except Exception:  # the watcher must not die on one failed list; the assertion says enough
                pass
            self._stop.wait(0.5)



def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    """Polls `predicate` until it returns something truthy; fails naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
