"""The local platform's front door: runs the scripts in `local/`, reads their status, writes blocks.

Each part is one script `local/<part>.sh up|down|status` (the contract is in `local/lib.sh`).
This module knows their order and turns their status lines into a table.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from flows.errors import PlatformError
from flows.settings import REPO_ROOT, Settings, use_local_prefect

LOCAL_DIR = REPO_ROOT / "local"

# Start order, for listing and for `down` (reversed): later parts use earlier ones.
PARTS: tuple[str, ...] = (
    "docker", "base-image", "registry", "azurite", "s3", "postgres", "prefect", "webhooks", "git", "kubernetes",
)

# What each part needs running before it starts; `up` starts every other part at the same time.
# Blocks are written after all parts, so no part needs Prefect for its credentials.
NEEDS: dict[str, tuple[str, ...]] = {
    "base-image": ("docker",),  # imported into dockerd
    "registry": ("docker",),  # its CA goes into dockerd's trust store
    "kubernetes": ("docker",),  # the kubelet runs pods on dockerd (and pulls through it)
    "prefect": ("postgres",),  # its database
    "webhooks": ("prefect",),  # its shared secret is a Prefect Secret block
    "git": ("webhooks",),  # the push hook signs with the receiver's copy of that secret
}


@dataclass(frozen=True)
class PartStatus:
    """One row of `aiship local status`."""

    part: str
    state: str
    address: str
    pid: str
    version: str


def check_parts(parts: list[str] | tuple[str, ...]) -> list[str]:
    """The parts named, in start order; all parts when none are named."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise PlatformError(
            f"unknown part {unknown[0]!r}; the parts are: {', '.join(PARTS)}"
        )
    return [p for p in PARTS if p in parts] if parts else list(PARTS)


def script_env(settings: Settings) -> dict[str, str]:
    """The environment the scripts run in: settings as the AISHIP_* variables they read."""
    env = dict(os.environ)
    env.update(
        AISHIP_ROOT=str(REPO_ROOT),
        AISHIP_STATE_DIR=str(settings.state_dir),
        AISHIP_CACHE_DIR=str(settings.cache_dir),
        AISHIP_REGISTRY_PORT=str(settings.registry_port),
        AISHIP_AZURITE_PORT=str(settings.azurite_port),
        AISHIP_S3_PORT=str(settings.s3_port),
        AISHIP_POSTGRES_PORT=str(settings.postgres_port),
        AISHIP_PREFECT_PORT=str(settings.prefect_port),
        AISHIP_KUBE_API_PORT=str(settings.kube_api_port),
        AISHIP_WEBHOOK_PORT=str(settings.webhook_port),
    )
    return env


def run_script(part: str, action: str, settings: Settings, *, capture: bool = False) -> str:
    """Runs `local/<part>.sh ACTION`; raises PlatformError with the script's own one-line error."""
    script = LOCAL_DIR / f"{part}.sh"
    proc = subprocess.run(
        ["bash", str(script), action],
        env=script_env(settings),
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("aiship local")]
        raise PlatformError((errors or lines or [f"local/{part}.sh {action} failed"])[-1])
    return proc.stdout or ""


def start_parts(parts: list[str], start: Callable[[str], None],
                on_ready: Callable[[str, float], None] | None = None) -> dict[str, float]:
    """Calls `start(part)` for each part as soon as the parts it NEEDS (among those asked for) are
    up, in threads, and returns the seconds each took.

    After a failure nothing new starts; the parts already starting are waited for, then the first
    failure is raised (a failing script stops what it started itself).
    """
    def timed(part: str) -> float:
        began = time.monotonic()
        start(part)
        return time.monotonic() - began

    pending = list(parts)
    running: dict[Future[float], str] = {}
    seconds: dict[str, float] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=max(1, len(parts)), thread_name_prefix="aiship-up") as pool:
        while True:
            if error is None:
                for part in [p for p in pending if all(n in seconds or n not in parts for n in NEEDS.get(p, ()))]:
                    pending.remove(part)
                    running[pool.submit(timed, part)] = part
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                part = running.pop(future)
                try:
                    seconds[part] = future.result()
                except BaseException as exc:  # noqa: BLE001 - re-raised below, once the others end
                    error = error or exc
                    continue
                if on_ready:
                    on_ready(part, seconds[part])
    if error is not None:
        raise error
    return seconds


def up(parts: list[str], settings: Settings,
       on_ready: Callable[[str, float], None] | None = None) -> list[PartStatus]:
    """Starts the parts, each once what it NEEDS is up; stops starting at the first that fails.

    Then writes the Prefect blocks (credentials) of whatever runs, when the Prefect server runs.
    Returns the status of every part, as read once after the start. `on_ready(part, seconds)` is
    called as each part becomes ready.
    """
    start_parts(check_parts(parts), lambda part: run_script(part, "up", settings), on_ready)
    rows = status(settings)
    if any(row.part == "prefect" and row.state == "running" for row in rows):
        # The server's credential exists from its first start on; Prefect is first imported below.
        use_local_prefect(settings)
        from flows.blocks import write_local_blocks

        write_local_blocks(settings)
    return rows


def down(parts: list[str], settings: Settings) -> None:
    """Stops the parts in reverse order; only what the scripts started."""
    for part in reversed(check_parts(parts)):
        run_script(part, "down", settings)


def status(settings: Settings, parts: list[str] | None = None) -> list[PartStatus]:
    """The state of each part, read from its script."""
    rows = []
    for part in check_parts(parts or []):
        line = run_script(part, "status", settings, capture=True).strip().splitlines()
        fields = (line[-1].split("\t") if line else []) + ["-"] * 4
        rows.append(PartStatus(part, *fields[:4]))
    return rows
