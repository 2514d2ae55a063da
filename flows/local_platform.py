"""The local platform's front door: runs the scripts in `local/`, reads their status, writes blocks.

Each part is one script `local/<part>.sh up|down|status` (the contract is in `local/lib.sh`).
This module knows their order and turns their status lines into a table.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from flows.errors import PlatformError
from flows.settings import REPO_ROOT, Settings

LOCAL_DIR = REPO_ROOT / "local"

# Start order: later parts use earlier ones (the registry's CA goes into dockerd's trust store,
# the kubelet runs pods on dockerd and pulls from the registry, blocks are written to Prefect).
PARTS: tuple[str, ...] = (
    "docker", "base-image", "registry", "azurite", "s3", "prefect", "webhooks", "git", "kubernetes",
)


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


def up(parts: list[str], settings: Settings) -> list[PartStatus]:
    """Starts the parts in order; stops at the first that fails (what it started, it stopped).

    Then writes the Prefect blocks (credentials) of whatever runs, when the Prefect server runs.
    Returns the status of every part, as read once after the start.
    """
    for part in check_parts(parts):
        run_script(part, "up", settings)
    rows = status(settings)
    if any(row.part == "prefect" and row.state == "running" for row in rows):
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
