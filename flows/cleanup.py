"""Nothing piles up on the machine that delivers: old images, leaked smoke containers and work folders.

- After a delivery, each app keeps its newest `AISHIP_KEEP_IMAGES` images in dockerd (in its
  registry repository and its local `aiship-tests/<app>` test repository); older ones are
  removed, with the layers nothing else uses. The registry keeps every pushed digest: that is what
  a rollback pulls.
- At the end of each delivery, and when the worker starts (`aiship sweep`, from
  local/prefect.sh), smoke-test and sandbox containers and work folders (check-outs, build
  folders, test reports) left by a run that died are removed. Each carries the id of the flow run
  that made it (`flows/ownership.py`): it goes once Prefect has that run in a final state. One
  without an owner (made outside a flow run) goes only when older than any run still in progress
  can be (`SWEEP_AFTER_SECONDS`), so two deliveries at once never sweep each other's.

Cleaning is best effort: it logs what it could not remove and never fails a delivery.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect import task

from flows.ownership import OWNER_LABEL, folder_owner
from flows.sandbox import SANDBOX_LABEL
from flows.smoke_test import SMOKE_LABEL

# A run's final state must be this old before its leftovers go: a run marked Crashed because the
# server missed its heartbeats may still be working for a while.
FINAL_FOR_SECONDS = 600
SWEEP_AFTER_SECONDS = 3 * 3600  # longer than any delivery runs, so only a dead run's leftovers are this old
SMOKE_AFTER_SECONDS = 1800  # a smoke test ends within minutes; older containers belong to a dead run



@dataclass
class Cleaned:
    """What one clean-up removed, and what it could not."""

    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _tagged_at(image: Any) -> str:
    """When dockerd last tagged the image (its zero time, 0001-01-01, when never), else its creation time."""
    tagged = (image.attrs.get("Metadata") or {}).get("LastTagTime") or ""
    return tagged if not tagged.startswith("0001-") else image.attrs.get("Created", "")


def prune_images(client: Any, repositories: list[str], keep: int) -> Cleaned:
    """Removes the images of `repositories` beyond the `keep` most recently tagged of each.

    By tag time, not creation time: aiship's images are reproducible, so their creation time is
    the commit's, and an image built today of an older commit must count as new.
    """
    import docker

    cleaned = Cleaned()
    for repository in repositories:
        images = sorted(client.images.list(name=repository), key=_tagged_at, reverse=True)
        for image in images[keep:]:
            for tag in [t for t in image.tags if t.rpartition(":")[0] == repository]:
                try:
                    client.images.remove(tag)
                    cleaned.images.append(tag)
                except docker.errors.APIError as exc:  # in use by a container, or removed meanwhile
                    cleaned.failed.append(f"{tag}: {exc.explanation or exc}")
    return cleaned


def sweep_leftovers(client: Any, now: float | None = None, tmp: Path | None = None,
                    finished: Callable[[set[str]], set[str]] = lambda runs: set()) -> Cleaned:
    """Removes the containers and aiship work folders of runs that are over, and ownerless ones old enough.

    `finished(ids)` answers which of those flow runs have ended (see `finished_runs`); by default
    none, and then only age tells.
    """
    import docker
    from datetime import datetime

    now = time.time() if now is None else now
    containers = [(c, ttl) for label, ttl in ((SMOKE_LABEL, SMOKE_AFTER_SECONDS), (SANDBOX_LABEL, SWEEP_AFTER_SECONDS))
                  for c in client.containers.list(all=True, filters={"label": label}, ignore_removed=True)]
    folders = [p for p in sorted(Path(tmp or tempfile.gettempdir()).iterdir()) if p.is_dir() and folder_owner(p) is not None]
    owners = {c.labels.get(OWNER_LABEL, "") for c, _ in containers} | {folder_owner(p) for p in folders}
    cleaned = Cleaned()
    try:
        over = finished(owners - {""}) if owners - {""} else set()
    except Exception as exc:  # the server is down: what is old enough still goes
        over = set()
        cleaned.failed.append(f"containers and folders by their runs' state (Prefect did not say which runs are "
                              f"over: {type(exc).__name__}: {exc}); removed by age only")

    for container, ttl in containers:
        created = datetime.fromisoformat(container.attrs["Created"][:26].rstrip("Z") + "+00:00").timestamp()
        if not is_leftover(container.labels.get(OWNER_LABEL, ""), now - created, ttl, over):
            continue
        try:
            container.remove(force=True)
            cleaned.containers.append(container.name)
        except docker.errors.APIError as exc:
            cleaned.failed.append(f"container {container.name}: {exc.explanation or exc}")
    for path in folders:
        try:
            if not is_leftover(folder_owner(path), now - path.stat().st_mtime, SWEEP_AFTER_SECONDS, over):
                continue
            shutil.rmtree(path)
            cleaned.folders.append(str(path))
        except OSError as exc:
            cleaned.failed.append(f"{path}: {exc}")
    return cleaned


def is_leftover(owner: str, age_seconds: float, ttl_seconds: float, finished: Iterable[str]) -> bool:
    """A run's container or folder is left over once the run is over; one without a known owner, once it is old."""
    return (bool(owner) and owner in finished) or age_seconds >= ttl_seconds


def finished_runs(ids: set[str], final_for: float = FINAL_FOR_SECONDS, now: float | None = None) -> set[str]:
    """Which of these flow runs Prefect has had in a final state (completed, failed, crashed,
    cancelled) for `final_for` seconds at least.

    A run Prefect does not know (another server's, deleted, or an id that is none) is not counted:
    its leftovers go by age.
    """
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def uuid_or_none(value: str) -> UUID | None:
        try:
            return UUID(value)
        except ValueError:
            return None

    now = time.time() if now is None else now
    wanted = sorted(u for u in map(uuid_or_none, ids) if u is not None)
    over: set[str] = set()
    with get_client(sync_client=True) as client:
        for start in range(0, len(wanted), 200):  # the API's page size
            batch = wanted[start:start + 200]
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)), limit=len(batch))
            over |= {str(run.id) for run in runs if run.state is not None and run.state.is_final()
                     and now - run.state.timestamp.timestamp() >= final_for}
    return over


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
            cleaned = sweep_leftovers(client, finished=finished_runs)
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
