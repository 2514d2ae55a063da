"""Run untrusted code (an app's own tests) in a container that can reach nothing of aiship's.

The container gets no network (only its own loopback), no credentials and no environment from the
worker, no Docker socket or host folder but one empty report folder, a read-only root file system
with a private /tmp, no capabilities, no privilege escalation, a non-root uid, and limits on CPU,
memory, processes and time. It is always removed.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.ownership import container_labels, work_folder

SANDBOX_LABEL = "io.aiship.sandbox"
REPORT_DIR = "/aiship-report"  # the only host folder the container sees, empty and its own
NOBODY = 65534  # the uid (and gid) used when the image's user is root or unnamed


@dataclass(frozen=True)
class SandboxLimits:
    """What the sandboxed container may use."""

    cpus: float = 1.0
    memory: str = "1g"  # Docker's size notation
    timeout_seconds: float = 600
    pids: int = 512
    tmp_size: str = "512m"


@dataclass(frozen=True)
class SandboxRun:
    """How a sandboxed command ended: exit code (None when it was stopped at its time limit), output, report folder."""

    exit_code: int | None
    timed_out: bool
    output: str
    report_dir: Path
    seconds: float
    user: str


def sandbox_user(image_user: str) -> tuple[int, int]:
    """The numeric uid:gid to run as: the image's own user when it is a non-root number, else nobody."""
    uid, _, gid = (image_user or "").partition(":")
    if uid.isdigit() and int(uid) != 0:
        return int(uid), int(gid) if gid.isdigit() and int(gid) != 0 else int(uid)
    return NOBODY, NOBODY


def container_options(image: str, command: list[str], limits: SandboxLimits, uid: int, gid: int,
                      report_dir: Path, volumes: list[str] = ()) -> dict[str, Any]:
    """The `containers.create` arguments that make the sandbox (a plain function, so a test reads them).

    `volumes` are the image's own VOLUMEs: docker would mount them writable and keep them, so each
    is covered by a small tmpfs that goes with the container.
    """
    tmpfs = {path: "rw,nosuid,nodev,size=64m,mode=1777" for path in volumes}
    tmpfs["/tmp"] = f"rw,nosuid,nodev,size={limits.tmp_size},mode=1777"
    return {
        "image": image,
        "command": command,
        "user": f"{uid}:{gid}",
        "environment": {"HOME": "/tmp", "TMPDIR": "/tmp"},
        "network_mode": "none",
        "read_only": True,
        "tmpfs": tmpfs,
        "volumes": {str(report_dir): {"bind": REPORT_DIR, "mode": "rw"}},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids,
        "labels": {SANDBOX_LABEL: "1", **container_labels()},
        "log_config": {"type": "json-file", "config": {"max-size": "10m", "max-file": "1"}},
        "name": f"aiship-sandbox-{uuid.uuid4().hex[:10]}",
        "detach": True,
    }


def run_sandboxed(client: Any, image: str, command: list[str], limits: SandboxLimits) -> SandboxRun:
    """Runs `command` in a sandboxed container of `image` and waits for it within the time limit.

    The caller owns `SandboxRun.report_dir` (what the command wrote to REPORT_DIR) and removes it.
    """
    import requests.exceptions

    config = client.api.inspect_image(image)["Config"]
    uid, gid = sandbox_user(config.get("User", ""))
    report_dir = work_folder("report")
    report_dir.chmod(0o777)  # whatever uid the container runs as may write its report here, and only here
    started = time.monotonic()
    try:
        container = client.containers.create(**container_options(image, command, limits, uid, gid, report_dir,
                                                                 sorted(config.get("Volumes") or {})))
    except BaseException:
        shutil.rmtree(report_dir, ignore_errors=True)
        raise
    try:
        container.start()
        try:
            exit_code: int | None = int(container.wait(timeout=limits.timeout_seconds)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.kill()
            exit_code = None
        output = container.logs(stdout=True, stderr=True, tail=200).decode("utf-8", "replace")
    except BaseException:
        shutil.rmtree(report_dir, ignore_errors=True)
        raise
    finally:
        container.remove(force=True, v=True)
    return SandboxRun(exit_code, exit_code is None, output, report_dir, round(time.monotonic() - started, 2), f"{uid}:{gid}")
