"""What serves where: read from the annotations of each environment's Deployment, never from memory.

A rollout writes a release's `io.aiship/*` annotations (`flows.release`) on the Deployment and on
its pod template; the ReplicaSets Kubernetes keeps for a Deployment carry the
older pod templates, so they also answer "what served before" (newest first) for a rollback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flows.errors import ConfigurationError, PlatformError, RolloutError
from flows.release import PinnedRelease
from flows.settings import Environment, Settings

if TYPE_CHECKING:
    from flows.apps import AppRegistration

DEPLOYED_AT = "io.aiship/deployed-at"  # on the Deployment only: the pod template stays identical across re-deliveries
FLOW_RUN = "io.aiship/flow-run"  # on the Deployment only (and so on its ReplicaSets): the Prefect run that rolled it out
REVISION = "deployment.kubernetes.io/revision"
# On a ReplicaSet whose rollout failed: the revision that failed (the controller bumps the
# revision when it reuses the ReplicaSet, so a later success of the same template counts again).
FAILED_REVISION = "io.aiship/rollout-failed-revision"
FAILED_REASON = "io.aiship/rollout-failed-reason"
# On the Deployment only: "in-progress" from the apply until the rollout completed or was undone,
# then "complete". One left "in-progress" by a run that died (a killed worker, a lost lease) is
# not what serves: promote refuses it, and the next rollout to the environment settles it.
ROLLOUT_STATE = "io.aiship/rollout"
IN_PROGRESS, COMPLETE = "in-progress", "complete"


@dataclass(frozen=True)
class ServingVersion:
    """What one Deployment serves (or served, for an older ReplicaSet), and where it answers."""

    environment: str
    namespace: str
    release: PinnedRelease
    deployed_at: str
    replicas_ready: int
    replicas_desired: int
    address: str
    complete: bool = True  # False while its rollout is running, or after a run that applied it died

    @property
    def digest(self) -> str:
        return self.release.digest


def release_of(annotations: dict[str, str] | None, image: str, app_name: str) -> PinnedRelease | None:
    """The release `annotations` and `image` describe, or None when the image is not pinned by digest
    (changed outside aiship)."""
    try:
        return PinnedRelease.from_annotations(annotations, image, app_name)
    except RolloutError as exc:
        if exc.reason != "ImageNotPinned":
            raise  # a bad annotation says so ("deliver the app again"); it is not "nothing serves"
        logging.getLogger("aiship.environments").warning(
            "the %s pod template runs %s, not pinned by digest: it was changed outside aiship, and aiship "
            "reads it as nothing it delivered", app_name, image)
        return None


def template_release(template: dict[str, Any], app_name: str) -> PinnedRelease | None:
    """The release a pod template (of a ReplicaSet) runs; see `release_of`."""
    return release_of((template.get("metadata") or {}).get("annotations"), app_image(template), app_name)


def app_image(template: dict[str, Any]) -> str:
    """The image of the `app` container (else the first container) of a pod template dict."""
    containers = template.get("spec", {}).get("containers") or [{}]
    app = next((c for c in containers if c.get("name") == "app"), containers[0])
    return app.get("image", "")


def address(environment: Environment) -> str:
    """Where an environment's app answers on this machine."""
    return f"http://127.0.0.1:{environment.node_port}"


def kubernetes_client(settings: Settings, kubeconfig: str | Path | None = None):
    """A synchronous `kubernetes.client.ApiClient` from a kubeconfig file, or else the KubernetesAccess block."""
    from kubernetes import config as kube_config

    if kubeconfig is not None:
        try:
            return api_client_from(lambda cfg: kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg))
        except (OSError, kube_config.ConfigException) as exc:
            raise ConfigurationError(f"cannot use kubeconfig {kubeconfig}: {exc}; is the cluster up? `aiship local up kubernetes`") from exc
    from flows.blocks import KubernetesAccess, load_block

    block = load_block(KubernetesAccess, settings.kubernetes_credentials_block, "kubernetes")
    try:
        return block.api_client()
    except (kube_config.ConfigException, ValueError, TypeError) as exc:
        raise ConfigurationError(f"the KubernetesAccess block {settings.kubernetes_credentials_block!r} holds no usable "
                                 f"kubeconfig ({exc}); save it again from a kubeconfig file") from exc


def api_client_from(load: Callable[[Any], None]):
    """An ApiClient configured by `load(configuration)`, without urllib3's own retries.

    aiship retries each call itself (`flows.retry.call_with_retries`); urllib3's three silent
    retries under it would be a second layer.
    """
    from kubernetes import client

    configuration = client.Configuration()
    load(configuration)
    configuration.retries = False
    return client.ApiClient(configuration)


def _api_call(what: str, fn):
    """Runs one API read with transient retries; a refused connection becomes a PlatformError naming the next step."""
    from flows.retry import call_with_retries, is_transient

    try:
        return call_with_retries(fn, what=what)
    except Exception as exc:
        if is_transient(exc):
            raise PlatformError(f"{what}: the Kubernetes API does not answer ({type(exc).__name__}); "
                                "is the cluster running? `aiship local status kubernetes`", transient=True) from exc
        raise


def serving_version(api_client, environment: Environment, app_name: str) -> ServingVersion | None:
    """What serves in `environment` now, or None when nothing does (no Deployment, or scaled to zero)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    apps = client.AppsV1Api(api_client)
    try:
        found = _api_call(f"read Deployment {environment.namespace}/{app_name}",
                          lambda: apps.read_namespaced_deployment(app_name, environment.namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise PlatformError(f"reading Deployment {environment.namespace}/{app_name} failed: {exc.status} {exc.reason}; "
                            "check the KubernetesAccess block's rights") from exc
    deployment = api_client.sanitize_for_serialization(found)
    desired = deployment["spec"].get("replicas", 0)
    if desired == 0:
        return None
    # The Deployment carries the pod template's annotations too, and its deployed-at besides.
    meta = deployment["metadata"].get("annotations") or {}
    release = release_of(meta, app_image(deployment["spec"]["template"]), app_name)
    if release is None:
        return None
    ready = (deployment.get("status") or {}).get("readyReplicas", 0)
    return ServingVersion(environment.name, environment.namespace, release, meta.get(DEPLOYED_AT, ""), ready, desired,
                          address(environment), complete=meta.get(ROLLOUT_STATE) != IN_PROGRESS)


def serving(app: AppRegistration, api_client, names: list[str] | None = None) -> dict[str, ServingVersion | None]:
    """What serves of `app` in each of its environments (all of them, or `names`), by environment name."""
    envs = [app.environment(n) for n in names] if names else list(app.environments.values())
    return {env.name: serving_version(api_client, env, app.name) for env in envs}


def previous_releases(api_client, environment: Environment, app_name: str) -> list[ServingVersion]:
    """Releases that served before in `environment`, newest first, one per digest, serving and failed ones excluded.

    Read from the Deployment's ReplicaSets (their pod templates keep the annotations); the
    `rollback` flow picks a digest here and re-applies that ReplicaSet's template.
    """
    now = serving_version(api_client, environment, app_name)
    seen = {now.digest} if now else set()
    releases = []
    for rs in replica_sets(api_client, environment.namespace, app_name):
        meta = rs["metadata"].get("annotations") or {}
        if meta.get(FAILED_REVISION) and meta.get(FAILED_REVISION) == meta.get(REVISION):
            continue  # a rollout that failed and was undone: it never served
        release = template_release(rs["spec"]["template"], app_name)
        if release is None or release.digest in seen:
            continue
        seen.add(release.digest)
        releases.append(ServingVersion(environment.name, environment.namespace, release,
                                       rs["metadata"].get("creationTimestamp", ""), 0, 0, address(environment)))
    return releases


def previous_digests(api_client, environment: Environment, app_name: str) -> list[str]:
    """Digests that served before in `environment`, newest first (for a rollback)."""
    return [r.digest for r in previous_releases(api_client, environment, app_name)]


def previous_release(api_client, environment: Environment, app_name: str, digest: str | None = None) -> PinnedRelease:
    """The release to roll back to: the one that served just before, or the one with `digest`; for `rollback`."""
    releases = previous_releases(api_client, environment, app_name)
    chosen = [r for r in releases if digest in (None, "", r.digest)]
    if not chosen:
        known = ", ".join(r.digest for r in releases) or "none"
        raise RolloutError("NothingToRollBackTo", f"no earlier release {digest or ''} in {environment.namespace}; "
                           f"digests that served there before: {known}")
    return chosen[0].release


def replica_sets(api_client, namespace: str, app_name: str) -> list[dict[str, Any]]:
    """The ReplicaSets owned by the app's Deployment, as dicts, newest revision first."""
    from kubernetes import client

    found = _api_call(f"list ReplicaSets in {namespace}", lambda: client.AppsV1Api(api_client).list_namespaced_replica_set(
        namespace, label_selector=f"app.kubernetes.io/name={app_name}"))
    owned = []
    for rs in api_client.sanitize_for_serialization(found)["items"]:
        owners = rs["metadata"].get("ownerReferences") or []
        if any(o.get("kind") == "Deployment" and o.get("name") == app_name for o in owners):
            owned.append(rs)
    return sorted(owned, key=lambda rs: int((rs["metadata"].get("annotations") or {}).get(REVISION, "0")), reverse=True)


def serving_markdown(table: dict[str, ServingVersion | None]) -> str:
    """The "what serves where" table as Markdown, for a Prefect artifact."""
    lines = ["| environment | git SHA | model | version | model sha256 | digest | deployed at | ready | address |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, v in table.items():
        if v is None:
            lines.append(f"| {name} | — | — | — | — | nothing serves | — | 0 | — |")
            continue
        r = v.release
        lines.append(f"| {name} | `{r.short_sha}` | {r.model.name} | {r.model.version} | `{r.model.sha256[:12]}` | "
                     f"`{r.digest}`{'' if v.complete else ' (rollout unfinished)'} | {v.deployed_at} | "
                     f"{v.replicas_ready}/{v.replicas_desired} | {v.address} |")
    return "\n".join(lines)


def status_lines(tables: dict[str, dict[str, ServingVersion | None]]) -> list[str]:
    """What serves of each app in each environment, as aligned text lines, for `aiship status`."""
    rows = [("APP", "ENVIRONMENT", "DIGEST", "GIT SHA", "MODEL", "READY", "DEPLOYED AT", "ADDRESS")]
    for app, table in tables.items():
        for name, v in table.items():
            if v is None:
                rows.append((app, name, "(nothing serves)", "-", "-", "0/0", "-", "-"))
            else:
                rows.append((app, name, v.digest + ("" if v.complete else " (rollout unfinished)"), v.release.short_sha or "-", str(v.release.model),
                             f"{v.replicas_ready}/{v.replicas_desired}", v.deployed_at or "-", v.address))
    return aligned(rows)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as text lines with aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


@dataclass(frozen=True)
class HistoryEntry:
    """One revision of an app's Deployment in an environment: what it ran, when, by which run, how it ended."""

    revision: int
    digest: str
    git_sha: str
    model: str
    deployed_at: str
    flow_run: str
    state: str  # "serving" | "served" | "failed"


def history(api_client, environment: Environment, app_name: str) -> list[HistoryEntry]:
    """Every revision Kubernetes keeps of the app's Deployment in `environment`, newest first."""
    now = serving_version(api_client, environment, app_name)
    entries = []
    for rs in replica_sets(api_client, environment.namespace, app_name):
        meta = rs["metadata"].get("annotations") or {}
        release = template_release(rs["spec"]["template"], app_name)
        if release is None:
            continue
        failed = bool(meta.get(FAILED_REVISION)) and meta.get(FAILED_REVISION) == meta.get(REVISION)
        serving_now = now is not None and release.digest == now.digest and not failed
        state = "failed" if failed else "serving" if serving_now else "served"
        entries.append(HistoryEntry(int(meta.get(REVISION, "0")), release.digest, release.git_sha, str(release.model),
                                    meta.get(DEPLOYED_AT) or rs["metadata"].get("creationTimestamp", ""),
                                    meta.get(FLOW_RUN, ""), state))
    return entries


def history_lines(entries: list[HistoryEntry]) -> list[str]:
    """The history as aligned text lines, for `aiship history`."""
    rows = [("REVISION", "STATE", "DIGEST", "GIT SHA", "MODEL", "DEPLOYED AT", "FLOW RUN")]
    rows += [(str(e.revision), e.state, e.digest, e.git_sha[:12] or "-", e.model, e.deployed_at or "-", e.flow_run or "-")
             for e in entries]
    return aligned(rows)
