"""Ways to hurt the real local parts while an operation runs, and to see that the hurt landed."""

from __future__ import annotations

import subprocess
import sys
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
