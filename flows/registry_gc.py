"""The registry's garbage collection: image manifests that no environment serves or could roll back
to, and that are not among an app's newest, are deleted; the registry then frees their blobs.

Runs as the scheduled `collect-garbage` deployment. It waits for a quiet moment: while a delivery,
promotion or rollback runs, it deletes nothing (the image that run found or pushed may not serve
yet), and it looks again before each repository and before the registry's sweep. A promotion
paused for its approval does not count: the digest it waits to promote serves in its source
environment, or served there before, so it is in use anyway.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import environments as envs
from flows.apps import AppRegistration, all_apps
from flows.distribution import RegistryAPI
from flows.locks import registry_exclusive
from flows.registry import check_address, load_credentials
from flows.release import LABEL_CREATED, LABEL_MODEL_VERSION
from flows.settings import Settings

CHANGE_FLOWS = ("deliver", "deliver-commit", "promote", "rollback")


@dataclass(frozen=True)
class Manifest:
    """One image in the registry: its digest, its tags, and what orders it among the app's images."""

    digest: str
    tags: tuple[str, ...]
    created: str  # the image's created label (its commit's time)
    model_version: int


@dataclass(frozen=True)
class Collection:
    """What one repository kept and deleted."""

    repository: str
    kept: tuple[str, ...]
    deleted: tuple[str, ...]


def to_delete(manifests: list[Manifest], in_use: set[str], keep: int) -> list[Manifest]:
    """The manifests to delete: not in use, and not among the `keep` newest (commit time, then model version)."""
    newest = sorted(manifests, key=lambda m: (m.created, m.model_version, m.tags), reverse=True)[:keep]
    kept = {m.digest for m in newest} | in_use
    return [m for m in manifests if m.digest not in kept]


def digests_in_use(apps: list[AppRegistration], settings: Settings) -> set[str]:
    """Every digest that serves, or that `rollback` could go back to, in any environment of any app."""
    api_client = envs.kubernetes_client(settings)
    try:
        found = set()
        for app in apps:
            for env in app.environments.values():
                serving = envs.serving_version(api_client, env, app.name)
                found |= {serving.digest} if serving else set()
                found |= {v.digest for v in envs.previous_releases(api_client, env, app.name)}
        return found
    finally:
        api_client.close()


def read_manifests(api: RegistryAPI) -> list[Manifest]:
    """The repository's images, one per digest, with every tag that names it."""
    import json

    by_digest: dict[str, tuple[bytes, list[str]]] = {}
    for tag in api.tags():
        found = api.manifest(tag)
        if found:
            by_digest.setdefault(found[1], (found[0], []))[1].append(tag)
    manifests = []
    for digest, (body, tags) in by_digest.items():  # the manifest read by its first tag: one GET per tag
        config = json.loads(api.blob(json.loads(body)["config"]["digest"]))
        labels = (config.get("config") or {}).get("Labels") or {}
        version = labels.get(LABEL_MODEL_VERSION, "0")
        manifests.append(Manifest(digest, tuple(sorted(tags)), labels.get(LABEL_CREATED, ""),
                                  int(version) if version.isdigit() else 0))
    return manifests


def changes_running() -> int:
    """How many runs that may roll an image out are pending or running on the Prefect server now."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(CHANGE_FLOWS))),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING]))),
            limit=50))


def collect(repository: str, credentials, in_use: set[str], keep: int) -> Collection:
    """Deletes what `to_delete` picks in one repository."""
    with RegistryAPI(repository, credentials) as api:
        manifests = read_manifests(api)
        doomed = to_delete(manifests, in_use, keep)
        for manifest in doomed:
            api.delete_manifest(manifest.digest)
    gone = {m.digest for m in doomed}
    return Collection(repository, tuple(m.digest for m in manifests if m.digest not in gone), tuple(sorted(gone)))


@flow(name="collect-garbage")
def collect_garbage(keep: int = 10, apps: list[str] | None = None, wait_seconds: int = 60) -> list[Collection]:
    """Deletes each app's images that no environment uses and that are older than its `keep` newest.

    Args:
        keep: how many of each app's newest images stay whatever serves (recent deliveries).
        apps: only these apps (default: every app aiship delivers).
        wait_seconds: how long to wait for an app's running deliveries before leaving it to the next run.

    Returns:
        What each repository kept and deleted; an app whose deliveries kept running is not among them.
    """
    if keep < 1:
        from flows.errors import ConfigurationError

        raise ConfigurationError(f"keep is {keep}; keep at least 1 image per app (10 by default)")
    settings = Settings()
    registrations = [a for a in all_apps(settings) if not apps or a.name in apps]
    logger = get_run_logger()

    def quiet() -> bool:
        if running := changes_running():
            logger.info("%d deliveries, promotions or rollbacks are running; the rest waits for the next scheduled run", running)
        return not running

    if not quiet():
        return []
    credentials = load_credentials(settings.registry_credentials_block)
    host = check_address(settings.registry_host)
    collections = []
    for app in registrations:
        if not quiet():
            break
        # What is in use is read while no delivery of the app holds an image it found or pushed.
        with registry_exclusive(app.name, wait_seconds) as held:
            if not held:
                logger.info("deliveries of %s still run after %d s; its images wait for the next scheduled run",
                            app.name, wait_seconds)
                continue
            collections.append(collect(f"{host}/{app.name}", credentials, digests_in_use([app], settings), keep))
    lines = ["| repository | kept | deleted |", "|---|---|---|"]
    lines += [f"| `{c.repository}` | {len(c.kept)} | {len(c.deleted)} |" for c in collections]
    create_markdown_artifact(key="registry-garbage", markdown="\n".join(lines),
                             description="Images deleted from the registry (their blobs are freed by the registry)")
    for c in collections:
        logger.info("%s: kept %d images, deleted %d", c.repository, len(c.kept), len(c.deleted))
    if settings.registry is None and quiet():  # the local platform's registry frees blobs only when told to
        sweep_blobs(registrations, settings, wait_seconds)
    return collections


def sweep_blobs(registrations: list[AppRegistration], settings: Settings, wait_seconds: int) -> None:
    """Runs the local registry's blob sweep while no delivery of any app could be uploading blobs it has not referenced yet."""
    from flows.local_platform import run_script

    with ExitStack() as stack:
        if all(stack.enter_context(registry_exclusive(app.name, wait_seconds)) for app in registrations):
            run_script("registry", "gc", settings)
        else:
            get_run_logger().info("deliveries still run after %d s; the registry's blob sweep waits for the next "
                                  "scheduled run", wait_seconds)
