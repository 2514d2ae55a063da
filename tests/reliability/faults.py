"""Ways to hurt the real local parts while an operation runs, and to see that the hurt landed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A rollout in a process of its own, so that a test can kill it like a worker dies (SIGKILL: no
# finally, no except). Arguments: the Settings, release and environment as JSON, and a kubeconfig.
ROLLOUT = """
import sys
from flows.environments import kubernetes_client
from flows.release import PinnedRelease
from flows.rollout import roll_out_release
from flows.settings import Environment, Settings

settings = Settings.model_validate_json(sys.argv[1])
api = kubernetes_client(settings, sys.argv[4])
roll_out_release(api, PinnedRelease.model_validate_json(sys.argv[2]), Environment.model_validate_json(sys.argv[3]), settings)
"""


def rollout_process(settings, release, environment, kubeconfig: Path, log: Path) -> subprocess.Popen:
    """Starts `roll_out_release` in a child process (stdout and stderr to `log`)."""
    args = [settings.model_dump_json(), release.model_dump_json(), environment.model_dump_json(), str(kubeconfig)]
    return subprocess.Popen([sys.executable, "-c", ROLLOUT, *args], cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0, every: float = 0.2):
    """Polls `check` until it returns something truthy, and returns that; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


class Background(threading.Thread):
    """Runs `fn` in a thread and keeps its result or exception."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the test, which asserts on it
            self.error = exc

    def outcome(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), f"still running after {timeout:.0f} s"
        if self.error is not None:
            raise self.error
        return self.result


class Cuttable:
    """A TCP forwarder on 127.0.0.1 in front of a real part, which a test can cut as a network would.

    `cut()` closes the listening socket and every connection through it: the client then meets
    refused and reset connections, while the part itself keeps running for everyone else.
    """

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set = set()
        self._lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)  # an idle keep-alive connection stays open, as without the forwarder
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update({client, upstream})
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not, on Linux)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
