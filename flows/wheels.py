"""The app's dependency wheels, prepared on the host so that `docker build` needs no network.

The wheels of an app's requirement files (`[build] requirements` of its aiship.toml) are
downloaded once into `$AISHIP_CACHE_DIR/wheels/<sha256 of the files, 16 hex>/`, beside a copy of
each file under its own name, and reused by every build with the same requirements. The folder
is written under a temporary name and renamed when complete, so
a half-finished download is never mistaken for a cache hit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flows.errors import ImageBuildError

logger = logging.getLogger("aiship.wheels")

# The image's interpreter (Debian bookworm's CPython 3.11.2, glibc 2.36), not the host's.
PYTHON_VERSION = "3.11"
ABI = "cp311"
# manylinux tags a glibc-2.36 interpreter accepts; pip takes each --platform literally.
PLATFORMS = (
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
)
COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels for some requirement files, with each file copied in under its own name."""

    path: Path
    requirements_sha256: str
    cache_hit: bool
    seconds: float


def requirements_key(requirements: Sequence[Path]) -> str:
    """The cache key of requirement files: 16 hex of the sha256 of their names, bytes and the target."""
    digest = hashlib.sha256()
    for path in requirements:
        data = path.read_bytes()
        digest.update(f"{path.name}|{len(data)}|".encode() + data)
    digest.update(f"|{PYTHON_VERSION}|{ABI}|{','.join(PLATFORMS)}".encode())
    return digest.hexdigest()[:16]


def download_command(requirements: Sequence[Path], dest: Path, python: str = sys.executable) -> list[str]:
    """The `pip download` command that fetches binary wheels for the image's Python and platform."""
    cmd = [python, "-m", "pip", "download", "--isolated", "--quiet", "--no-cache-dir", "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", ABI]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["--dest", str(dest)]
    for path in requirements:
        cmd += ["--requirement", str(path)]
    return cmd


def check_requirements(path: Path) -> None:
    """Refuses a requirement file pip would treat as more than pins: an option line (`-r /etc/…`,
    `--index-url …`) would make the host's pip read a file or a server the app names."""
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line.startswith("-") and not line.startswith("--hash"):
            raise ImageBuildError(f"{path.name} line {number}: {line.split()[0]!r} is not allowed; aiship downloads the "
                                  "wheels of plain pins (name==version, optionally --hash): list every requirement in "
                                  "the files of aiship.toml's [build] requirements")


def prepare_wheels(requirements: Sequence[Path], cache_dir: Path, timeout: float = 900) -> Wheelhouse:
    """Returns the wheelhouse for `requirements`, downloading it into `cache_dir/wheels/` if missing.

    Raises ImageBuildError naming pip's last lines when a requirement has no wheel for the image.
    """
    import time

    started = time.monotonic()
    requirements = list(requirements)
    for path in requirements:
        if path.is_symlink() or not path.is_file():
            raise ImageBuildError(f"{path} not found (or a link); commit it or fix [build] requirements in aiship.toml")
        check_requirements(path)
    names = [path.name for path in requirements]
    if len(set(names)) != len(names):
        raise ImageBuildError(f"requirement files {', '.join(map(str, requirements))} share a file name; each is "
                              "copied into wheels/ under its own name: rename one (e.g. requirements-test.txt)")
    key = requirements_key(requirements)
    target = cache_dir / "wheels" / key
    if (target / COMPLETE_MARKER).is_file():
        return Wheelhouse(target, key, True, time.monotonic() - started)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".tmp", dir=target.parent))
    try:
        # A constraint file in the host's pip config would cap versions meant for the image.
        env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
        env["PIP_CONFIG_FILE"] = os.devnull
        env.setdefault("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
        proc = subprocess.run(download_command(requirements, tmp), capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise ImageBuildError(
                f"pip download of {', '.join(map(str, requirements))} for CPython {PYTHON_VERSION} manylinux failed "
                f"(exit {proc.returncode}):\n{tail}\nPin versions that publish cp311 manylinux wheels"
            )
        for path in requirements:
            shutil.copyfile(path, tmp / path.name)
        (tmp / COMPLETE_MARKER).write_text(key + "\n")
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wheels for %s prepared in %s", ", ".join(names), target)
    return Wheelhouse(target, key, False, time.monotonic() - started)


def _publish(tmp: Path, target: Path) -> None:
    """Renames the finished folder into place; a concurrent writer that won the race is kept."""
    try:
        tmp.rename(target)
    except OSError:
        if not (target / COMPLETE_MARKER).is_file():
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
