"""The Kubernetes calls of a rollout: apply objects, watch a Deployment, restore, scale, collect evidence.

Every call retries what is transient (connection errors, timeouts, 5xx, 429) and fails fast on
the rest; a refusal by the API server becomes a RolloutError naming the object.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flows import environments as envs
from flows.errors import RolloutError
from flows.progress import Verdict, judge, routes_only_to
from flows.release import ANNOTATION_PREFIX, DIGEST
from flows.retry import call_with_retries

PULL_SECRET = "aiship-registry"
FIELD_MANAGER = "aiship"  # the owner of the fields aiship server-side applies


def _apis(api_client):
    from kubernetes import client

    return client.CoreV1Api(api_client), client.AppsV1Api(api_client)


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _refused(kind: str, ns: str, name: str, exc: Exception) -> RolloutError:
    body = getattr(exc, "body", "") or ""
    try:
        body = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        pass
    return RolloutError("ApplyRejected", f"the Kubernetes API refused {kind} {ns}/{name}: {_status(exc)} {body}; "
                        "fix the manifest or settings and deliver again")


def _read_or_none(api_client, read, what: str) -> dict[str, Any] | None:
    """`read()` with transient retries, as a dict (camelCase, as in YAML), or None on 404."""
    from kubernetes.client.exceptions import ApiException

    try:
        found = call_with_retries(read, what=what)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return api_client.sanitize_for_serialization(found)


def read_deployment(api_client, ns: str, name: str) -> dict[str, Any] | None:
    """The Deployment as a dict (camelCase, as in YAML), or None when it does not exist."""
    _, apps = _apis(api_client)
    return _read_or_none(api_client, lambda: apps.read_namespaced_deployment(name, ns), f"read Deployment {ns}/{name}")


def _read_and_replace(once, what: str, attempts: int = 5) -> None:
    """`once()` (a read followed by a replace) with transient retries, read again when the object changed meanwhile.

    A replace carries the resourceVersion it read; the Deployment controller writes status and
    annotations between our read and our write often enough that a 409 is an ordinary answer.
    """
    for attempt in range(1, attempts + 1):
        try:
            call_with_retries(once, what=what)
            return
        except Exception as exc:
            if _status(exc) != 409 or attempt == attempts:
                raise


def _upsert(kind: str, ns: str, name: str, read, create, replace, body: dict[str, Any]) -> None:
    """Creates `body`, or replaces the existing object (keeping fields the server owns via `replace(existing, body)`)."""
    from kubernetes.client.exceptions import ApiException

    def once() -> None:
        try:
            existing = read()
        except ApiException as exc:
            if exc.status != 404:
                raise
            create(body)
            return
        replace(existing, body)

    try:
        _read_and_replace(once, what=f"apply {kind} {ns}/{name}")
    except ApiException as exc:
        if _status(exc) is not None and _status(exc) < 500 and _status(exc) != 429:
            raise _refused(kind, ns, name, exc) from exc
        raise


def apply(api_client, manifests, registry_block: str) -> None:
    """Applies namespace, pull secret, Service, Deployment and PodDisruptionBudget of one environment."""
    core, apps = _apis(api_client)
    ns = manifests.namespace["metadata"]["name"]
    _wait_while_terminating(core, ns)
    # An existing namespace keeps what others put on it; aiship's labels (the pod security profile) are merged in.
    _upsert("Namespace", "", ns, lambda: core.read_namespace(ns), lambda b: core.create_namespace(b),
            lambda old, b: core.patch_namespace(ns, {"metadata": {"labels": b["metadata"]["labels"]}}), manifests.namespace)
    _wait_for_default_service_account(core, ns)
    ensure_pull_secret(api_client, ns, registry_block)
    # The budget before the Deployment: a refusal here stops the rollout before anything runs unsupervised.
    apply_disruption_budget(api_client, manifests.disruption_budget)
    svc = manifests.service["metadata"]["name"]

    def replace_service(old, body):
        body = json.loads(json.dumps(body))
        body["metadata"]["resourceVersion"] = old.metadata.resource_version
        body["spec"]["clusterIP"] = old.spec.cluster_ip  # immutable once allocated
        core.replace_namespaced_service(svc, ns, body)

    _upsert("Service", ns, svc, lambda: core.read_namespaced_service(svc, ns),
            lambda b: core.create_namespaced_service(ns, b), replace_service, manifests.service)
    dep = manifests.deployment["metadata"]["name"]

    def replace_deployment(old, body):
        body = json.loads(json.dumps(body))
        old_ann = old.metadata.annotations or {}
        kept = {k: v for k, v in old_ann.items() if not k.startswith(ANNOTATION_PREFIX)}
        if old_ann.get(DIGEST) == body["metadata"]["annotations"].get(DIGEST) and old_ann.get(envs.DEPLOYED_AT):
            kept[envs.DEPLOYED_AT] = old_ann[envs.DEPLOYED_AT]  # the same image again: it has served since then
        body["metadata"]["annotations"] = {**body["metadata"]["annotations"], **kept}
        body["metadata"]["resourceVersion"] = old.metadata.resource_version
        apps.replace_namespaced_deployment(dep, ns, body)

    _upsert("Deployment", ns, dep, lambda: apps.read_namespaced_deployment(dep, ns),
            lambda b: apps.create_namespaced_deployment(ns, b), replace_deployment, manifests.deployment)


def apply_disruption_budget(api_client, body: dict[str, Any]) -> None:
    """Server-side applies the PodDisruptionBudget, as policy/v1 or, where the cluster lacks it (before 1.21), v1beta1."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]

    def once() -> None:
        dynamic = DynamicClient(api_client)
        for version in ("policy/v1", "policy/v1beta1"):
            try:
                resource = dynamic.resources.get(api_version=version, kind="PodDisruptionBudget")
            except ResourceNotFoundError:
                continue
            dynamic.server_side_apply(resource, {**body, "apiVersion": version}, namespace=ns,
                                      field_manager=FIELD_MANAGER, force_conflicts=True)
            return
        raise RolloutError("ApplyRejected", f"the cluster serves no PodDisruptionBudget API (policy/v1 or v1beta1) "
                           f"for {ns}/{name}; check `kubectl api-resources | grep -i disruption`")

    try:
        call_with_retries(once, what=f"apply PodDisruptionBudget {ns}/{name}")
    except ApiException as exc:
        if _status(exc) is not None and _status(exc) < 500 and _status(exc) != 429:
            raise _refused("PodDisruptionBudget", ns, name, exc) from exc
        raise


def _wait_while_terminating(core, ns: str, seconds: float = 180) -> None:
    """Waits for a namespace being deleted to be gone: the API server takes nothing new into it, and
    its ServiceAccounts are gone already, so applying into it fails in ways that name something else."""
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + seconds
    while True:
        try:
            found = call_with_retries(lambda: core.read_namespace(ns), what=f"read Namespace {ns}")
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if (found.status and found.status.phase) != "Terminating":
            return
        if time.monotonic() > deadline:
            raise RolloutError("NamespaceTerminating", f"namespace {ns} is being deleted and still was after {seconds:.0f} s; "
                               f"`kubectl get namespace {ns} -o yaml` shows what holds it (its finalizers and "
                               "conditions); deliver again once it is gone")
        time.sleep(1)


def _wait_for_default_service_account(core, ns: str, seconds: float = 30) -> None:
    """Waits for the namespace's `default` ServiceAccount: pods created before it exists are refused."""
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + seconds
    while True:
        try:
            call_with_retries(lambda: core.read_namespaced_service_account("default", ns), what=f"read ServiceAccount {ns}/default")
            return
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise RolloutError("NamespaceNotReady", f"namespace {ns} has no default ServiceAccount after {seconds:.0f} s; "
                                   "is kube-controller-manager running? `aiship local status kubernetes`") from exc
        time.sleep(0.5)


def ensure_pull_secret(api_client, namespace: str, registry_block: str) -> None:
    """Creates or updates Secret `aiship-registry` (dockerconfigjson) from the DockerRegistryCredentials block."""
    from flows.blocks import ensure_image_pull_secret

    ensure_image_pull_secret(api_client, namespace, registry_block)


def observe(api_client, ns: str, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Deployment and the pods of its newest ReplicaSet (the one its revision names), as dicts."""
    core, _ = _apis(api_client)
    deployment = read_deployment(api_client, ns, name)
    if deployment is None:
        raise RolloutError("DeploymentMissing", f"Deployment {ns}/{name} disappeared during the rollout; deliver again")
    revision = (deployment["metadata"].get("annotations") or {}).get(envs.REVISION)
    current = [rs for rs in envs.replica_sets(api_client, ns, name)
               if (rs["metadata"].get("annotations") or {}).get(envs.REVISION) == revision]
    if not current:
        return deployment, []
    hash_ = current[0]["metadata"]["labels"].get("pod-template-hash", "")
    pods = call_with_retries(lambda: core.list_namespaced_pod(
        ns, label_selector=f"app.kubernetes.io/name={name},pod-template-hash={hash_}"), what=f"list pods in {ns}")
    return deployment, api_client.sanitize_for_serialization(pods)["items"]


def read_endpoints(api_client, ns: str, name: str) -> dict[str, Any] | None:
    """The Endpoints of Service `name` as a dict, or None when there are none yet."""
    core, _ = _apis(api_client)
    return _read_or_none(api_client, lambda: core.read_namespaced_endpoints(name, ns), f"read Endpoints {ns}/{name}")


def wait(api_client, ns: str, name: str, limit: float, poll_seconds: float, since: str):
    """Polls the Deployment until `judge` says complete or failed; returns (Verdict, Deployment dict).

    Complete also means the Service `name` routes to the new pods only (see `routes_only_to`), so
    that whoever reads the result next and calls the app meets the new version.
    """
    started = time.monotonic()
    while True:
        deployment, pods = observe(api_client, ns, name)
        verdict = judge(deployment, pods, time.monotonic() - started, limit, since)
        if (verdict.state == "complete" and deployment["spec"].get("replicas", 1) > 0
                and not routes_only_to(read_endpoints(api_client, ns, name), pods)):
            if time.monotonic() - started > limit:
                return Verdict("failed", "EndpointsNotUpdated", f"Service {ns}/{name} still routes to pods "
                                     f"other than the new ones after {limit:.0f} s; check `kubectl -n {ns} get endpoints {name}`"), deployment
            time.sleep(min(poll_seconds, 0.25))
            continue
        if verdict.state != "progressing":
            return verdict, deployment
        time.sleep(poll_seconds)


def restore(api_client, ns: str, name: str, previous, replicas: int, if_generation: int | None = None) -> None:
    """Re-applies the pod template and `io.aiship/*` annotations that served before (a `rollout undo`).

    With `if_generation`, only while the Deployment's spec is still that generation: a RolloutError
    when another writer changed it since (its status may change meanwhile; that is the controller).
    """
    _, apps = _apis(api_client)

    def once() -> None:
        body = read_deployment(api_client, ns, name)
        _check_generation(body, ns, name, if_generation)
        kept = {k: v for k, v in (body["metadata"].get("annotations") or {}).items() if not k.startswith(ANNOTATION_PREFIX)}
        # in progress until the undo is waited on: a run that dies meanwhile leaves nothing that reads as serving
        body["metadata"]["annotations"] = {**kept, **previous.annotations, envs.ROLLOUT_STATE: envs.IN_PROGRESS}
        body["spec"]["template"] = previous.template
        body["spec"]["replicas"] = replicas
        body.pop("status", None)
        apps.replace_namespaced_deployment(name, ns, body)

    _read_and_replace(once, what=f"restore Deployment {ns}/{name}")


def _check_generation(deployment: dict[str, Any] | None, ns: str, name: str, if_generation: int | None) -> None:
    if if_generation is not None and (deployment or {}).get("metadata", {}).get("generation") != if_generation:
        raise RolloutError("RolloutInterrupted", f"Deployment {ns}/{name} was changed by another writer since "
                           f"generation {if_generation}; it is left to that writer")


def mark_failed(api_client, ns: str, name: str, reason: str, if_generation: int | None = None) -> None:
    """Annotates the ReplicaSet of the failed revision, so that it never counts as "served before".

    With `if_generation`, only while the Deployment's spec is still that generation (see `restore`):
    after another writer's apply, the newest revision would be that writer's.
    """
    deployment = read_deployment(api_client, ns, name)
    _check_generation(deployment, ns, name, if_generation)
    revision = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(envs.REVISION)
    _, apps = _apis(api_client)
    for rs in envs.replica_sets(api_client, ns, name):
        if (rs["metadata"].get("annotations") or {}).get(envs.REVISION) == revision:
            patch = {"metadata": {"annotations": {envs.FAILED_REVISION: revision, envs.FAILED_REASON: reason}}}
            call_with_retries(lambda: apps.patch_namespaced_replica_set(rs["metadata"]["name"], ns, patch),
                              what=f"annotate ReplicaSet {ns}/{rs['metadata']['name']}")


def set_rollout_state(api_client, ns: str, name: str, state: str) -> None:
    """Records on the Deployment whether its rollout is in progress or settled (see `environments.ROLLOUT_STATE`)."""
    _, apps = _apis(api_client)
    patch = {"metadata": {"annotations": {envs.ROLLOUT_STATE: state}}}
    patched = call_with_retries(lambda: apps.patch_namespaced_deployment(name, ns, patch), what=f"annotate Deployment {ns}/{name}")
    # A Deployment's generation counts its annotations too: until the controller has observed the
    # new one, the Deployment would not read as complete (`progress.is_complete`) to the next reader.
    read_observed(api_client, ns, name, patched.metadata.generation)


def read_observed(api_client, ns: str, name: str, generation: int | None = None,
                  timeout: float = 10.0) -> dict[str, Any] | None:
    """The Deployment once its controller has observed `generation` (default: its current one), or as it is after `timeout`.

    Until then its status, and the revision annotation that names its newest ReplicaSet, describe
    the spec before.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = read_deployment(api_client, ns, name)
        want = generation if generation is not None else ((seen or {}).get("metadata") or {}).get("generation", 0)
        if seen is None or (seen.get("status") or {}).get("observedGeneration", 0) >= want or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def scale(api_client, ns: str, name: str, replicas: int) -> None:
    """Sets the Deployment's replicas (zero after a first rollout that failed)."""
    _, apps = _apis(api_client)
    call_with_retries(lambda: apps.patch_namespaced_deployment(name, ns, {"spec": {"replicas": replicas}}),
                      what=f"scale Deployment {ns}/{name}")


def failure_details(api_client, ns: str, pod_names: tuple[str, ...], max_pods: int = 2) -> str:
    """The last events and log lines of the failing pods, as text for RolloutError.details."""
    core, _ = _apis(api_client)
    parts = []
    for pod in pod_names[:max_pods]:
        try:
            events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={pod}").items
        except Exception as exc:  # evidence is best effort: the error itself must still be raised
            events, parts = [], parts + [f"(events of {pod} unreadable: {exc})"]
        events = sorted(events, key=lambda e: str(e.last_timestamp or e.event_time or ""))[-8:]
        lines = [f"  {e.last_timestamp} {e.type} {e.reason}: {(e.message or '').strip()}" for e in events]
        parts.append(f"events of pod {pod}:\n" + ("\n".join(lines) or "  (none)"))
        parts.append(f"last log lines of pod {pod}:\n" + _logs(core, ns, pod))
    return "\n".join(parts)


def _logs(core, ns: str, pod: str) -> str:
    for previous in (True, False):  # a crashed container's own words are in the previous instance
        try:
            text = core.read_namespaced_pod_log(pod, ns, container="app", tail_lines=20, previous=previous)
        except Exception:  # no previous instance, or the image never started
            continue
        if text:
            return "\n".join("  " + line for line in text.splitlines())
    return "  (no log: the container never started)"
