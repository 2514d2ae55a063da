"""Nothing piles up on the machine that delivers: old images, leaked smoke containers and work folders.

- After a delivery, each app keeps its newest `AISHIP_KEEP_IMAGES` images in dockerd (in its
  registry repository and its local `aiship-tests/<app>` test repository); older ones are
  removed, with the layers nothing else uses. The registry keeps every pushed digest: that is what
  a rollback pulls.
- At the end of each delivery, smoke-test containers and work folders (check-outs, build
  folders, test reports) left by a run that crashed are removed. Only ones older than any run
  still in progress can be (`SWEEP_AFTER_SECONDS`), so two deliveries at once never sweep each
  other's.

Cleaning is best effort: it logs what it could not remove and never fails a delivery.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task

from flows.smoke_test import SMOKE_LABEL

# Folders aiship makes under the temporary directory, by prefix (flows/source.py, deliver.py, sandbox.py).
WORK_PREFIXES = ("aiship-src-", "aiship-deliver-", "aiship-report-")
SWEEP_AFTER_SECONDS = 3 * 3600  # longer than any delivery runs, so only a dead run's leftovers are this old
SMOKE_AFTER_SECONDS = 1800  # a smoke test ends within minutes; older containers belong to a dead run



@dataclass
class Cleaned:
    """What one clean-up removed, and what it could not."""

    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def prune_images(client: Any, repositories: list[str], keep: int) -> Cleaned:
    """Removes the images of `repositories` beyond the `keep` most recently tagged of each.

    By tag time, not creation time: aiship's images are reproducible, so their creation time is
    the commit's, and an image built today of an older commit must count as new.
    """
    import docker

    cleaned = Cleaned()
    for repository in repositories:
        images = sorted(client.images.list(name=repository),
                        key=lambda i: (i.attrs.get("Metadata") or {}).get("LastTagTime") or i.attrs.get("Created", ""),
                        reverse=True)
        for image in images[keep:]:
            for tag in [t for t in image.tags if t.rpartition(":")[0] == repository]:
                try:
                    client.images.remove(tag)
                    cleaned.images.append(tag)
                except docker.errors.APIError as exc:  # in use by a container, or removed meanwhile
                    cleaned.failed.append(f"{tag}: {exc.explanation or exc}")
    return cleaned


def sweep_leftovers(client: Any, now: float | None = None, tmp: Path | None = None) -> Cleaned:
    """Removes smoke-test containers and aiship work folders old enough to belong to a run that died."""
    import docker
    from datetime import datetime

    now = time.time() if now is None else now
    cleaned = Cleaned()
    for container in client.containers.list(all=True, filters={"label": SMOKE_LABEL}, ignore_removed=True):
        created = datetime.fromisoformat(container.attrs["Created"][:26].rstrip("Z") + "+00:00").timestamp()
        if now - created < SMOKE_AFTER_SECONDS:
            continue
        try:
            container.remove(force=True)
            cleaned.containers.append(container.name)
        except docker.errors.APIError as exc:
            cleaned.failed.append(f"container {container.name}: {exc.explanation or exc}")
    for path in sorted(Path(tmp or tempfile.gettempdir()).iterdir()):
        if not path.name.startswith(WORK_PREFIXES) or not path.is_dir():
            continue
        try:
            if now - path.stat().st_mtime < SWEEP_AFTER_SECONDS:
                continue
            shutil.rmtree(path)
            cleaned.folders.append(str(path))
        except OSError as exc:
            cleaned.failed.append(f"{path}: {exc}")
    return cleaned


def _report(what: str, cleaned: Cleaned, log: Any) -> None:
    removed = len(cleaned.images) + len(cleaned.containers) + len(cleaned.folders)
    if removed:
        log.info("%s: removed %d images, %d containers, %d folders", what, len(cleaned.images),
                 len(cleaned.containers), len(cleaned.folders))
    for failure in cleaned.failed:
        log.warning("%s could not remove %s", what, failure)


@task(name="clean-up")
def clean_up(app: str, registry: str, keep: int, sweep: bool) -> Cleaned:
    """Prunes the app's old images (and, with `sweep`, a dead run's leftovers); never fails the delivery."""
    from prefect import get_run_logger

    from flows.app_tests import image_tag_for_tests
    from flows.image import docker_client

    log = get_run_logger()
    try:
        client = docker_client()
    except Exception as exc:  # no daemon now: the build would have failed already, or will say so
        log.warning("clean-up skipped: %s", exc)
        return Cleaned()
    try:
        cleaned = Cleaned()
        if sweep:
            cleaned = sweep_leftovers(client)
            _report("sweep of dead runs' leftovers", cleaned, log)
        repositories = [f"{registry.rstrip('/')}/{app}", image_tag_for_tests(app, "0" * 12).rpartition(":")[0]]
        pruned = prune_images(client, repositories, keep)
        _report(f"images of {app} beyond the newest {keep}", pruned, log)
        cleaned.images += pruned.images
        cleaned.failed += pruned.failed
        return cleaned
    except Exception as exc:  # best effort: a clean-up never fails a delivery
        log.warning("clean-up of %s stopped: %s: %s", app, type(exc).__name__, exc)
        return Cleaned()
    finally:
        client.close()
