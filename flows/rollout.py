"""Stage 5: roll an image, pinned by digest, out to one environment, and undo it by itself on failure.

The Deployment and Service come from the templates shipped in the package (`flows/deployments/`,
the repository's `deployments/`), filled with the app's [serve] facts that travel with the release. Before applying, the pod
template that serves now is remembered; when the new one fails (progress deadline exceeded, crash
loop, image pull error, readiness never true) that template is re-applied (the Python client has
no `rollout undo`) and the rollout ends in a RolloutError saying what failed and what was
restored. With nothing to go back to, the failed Deployment is scaled to zero.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Literal

from importlib.resources import files

import jinja2
import yaml
from prefect import get_run_logger, task
from prefect.runtime import flow_run as runtime_flow_run

from flows import environments as envs
from flows import kube
from flows.app_config import ServeSection
from flows.apps import all_apps, find_app
from flows.environments import app_image
from flows.errors import RolloutError
from flows.progress import Verdict, is_complete
from flows.release import ANNOTATION_PREFIX, APP, DIGEST, SERVE, PinnedRelease, parse_serve, require_pinned
from flows.settings import Environment, Settings

TEMPLATES = files("flows") / "deployments"


@dataclass(frozen=True)
class Manifests:
    """The rendered objects of one environment, as dicts the Kubernetes client accepts."""

    namespace: dict[str, Any]
    service: dict[str, Any]
    deployment: dict[str, Any]
    disruption_budget: dict[str, Any]


@dataclass(frozen=True)
class RolloutResult:
    """A rollout that completed: what serves now in which environment, and what served before."""

    environment: str
    namespace: str
    ref: str
    digest: str
    previous_digest: str | None
    seconds: float
    pods_ready: int
    address: str


@dataclass(frozen=True)
class Previous:
    """The pod template that served before a rollout, with the `io.aiship/*` annotations it served under."""

    template: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)

    @cached_property
    def release(self) -> PinnedRelease | None:
        """The release that served before (None when its image was not pinned: changed outside aiship)."""
        return envs.release_of(self.annotations, app_image(self.template), self.annotations.get(APP, "the app"))

    @property
    def digest(self) -> str:
        """The digest of the image that served before."""
        return self.release.digest if self.release else app_image(self.template)


def render_manifests(release: PinnedRelease, environment: Environment, settings: Settings, deployed_at: str) -> Manifests:
    """Renders namespace, Service and Deployment for `release` in `environment` from the packaged templates."""
    require_pinned(release.ref)
    serve = release.serve
    if refused := environment.refusals(serve):
        raise RolloutError("OverEnvironmentLimits", f"{release.app} {release.version} asks for {', '.join(refused)} in "
                           f"{environment.name}; nothing was applied: deliver a commit whose aiship.toml [serve] asks for "
                           "less, or have the operator raise the environment's max_* in the app's registration")
    labels = {"app.kubernetes.io/name": release.app, "app.kubernetes.io/managed-by": "aiship",
              "io.aiship/environment": environment.name}
    env = [{"name": "AISHIP_APP_ENVIRONMENT", "value": environment.name}]
    env += [{"name": k, "value": v} for k, v in sorted(environment.app_env.items()) if k != "AISHIP_APP_ENVIRONMENT"]
    values = {
        "app_name": release.app, "namespace": environment.namespace, "labels": labels,
        "namespace_labels": {"app.kubernetes.io/managed-by": "aiship", "io.aiship/environment": environment.name,
                             **{f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}},
        "selector": {"app.kubernetes.io/name": release.app}, "node_port": environment.node_port,
        "replicas": replicas(environment, serve), "image": release.ref, "env": env, "pull_secret": kube.PULL_SECRET,
        "pod_annotations": release.annotations(),
        "deployment_annotations": {**release.annotations(), envs.DEPLOYED_AT: deployed_at,
                                   envs.FLOW_RUN: str(runtime_flow_run.id or ""), envs.ROLLOUT_STATE: envs.IN_PROGRESS},
        "progress_deadline_seconds": settings.rollout_progress_deadline_seconds,
        "min_ready_seconds": settings.rollout_min_ready_seconds, "max_surge": settings.rollout_max_surge, "revision_history_limit": 10,
        "termination_grace_seconds": 30, "pre_stop_seconds": 5, "container_port": serve.port, "tmp_size_limit": "64Mi",
        "ready_path": serve.ready_path, "health_path": serve.health_path, **serve.resources.model_dump(),
    }
    loader = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    docs = {name.replace("-", "_"): yaml.safe_load(loader.from_string((TEMPLATES / f"{name}.yaml").read_text()).render(values))
            for name in ("namespace", "service", "deployment", "disruption-budget")}
    return Manifests(**docs)


def replicas(environment: Environment, serve: ServeSection) -> int:
    """Pods in `environment`: the operator's count when it sets one, else what the app asks for (`[serve] replicas`)."""
    return environment.replicas or serve.replicas


def find_previous(deployment: dict[str, Any] | None, replica_sets: list[dict[str, Any]], new_ref: str) -> Previous | None:
    """The pod template that served before rolling out `new_ref`, or None when nothing served.

    A complete Deployment serves its own template. One caught mid-rollout (a retried task, an
    interrupted run) is served by the newest ReplicaSet of another image that still has
    available pods; `replica_sets` come newest revision first.
    """
    if deployment is None or deployment["spec"].get("replicas", 0) == 0:
        return None
    if is_complete(deployment):
        ann = deployment["metadata"].get("annotations") or {}
        return Previous(_clean(deployment["spec"]["template"]), {k: v for k, v in ann.items() if k.startswith(ANNOTATION_PREFIX)})
    for rs in replica_sets:
        template = rs["spec"]["template"]
        if app_image(template) != new_ref and (rs.get("status") or {}).get("availableReplicas", 0) > 0:
            ann = dict(template["metadata"].get("annotations") or {})
            ann.setdefault(envs.DEPLOYED_AT, rs["metadata"].get("creationTimestamp", ""))
            return Previous(_clean(template), {k: v for k, v in ann.items() if k.startswith(ANNOTATION_PREFIX)})
    return None


def _clean(template: dict[str, Any]) -> dict[str, Any]:
    """A copy of a pod template without the ReplicaSet's hash label, ready to re-apply."""
    copy = json.loads(json.dumps(template))
    copy.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    copy.get("metadata", {}).pop("creationTimestamp", None)
    return copy


def recovery(previous: Previous | None) -> Literal["rollback", "scale-to-zero"]:
    """What undoes a failed rollout: re-apply what served before, or scale to zero when nothing did."""
    return "rollback" if previous is not None else "scale-to-zero"


def roll_out_release(api_client, release: PinnedRelease, environment: Environment, settings: Settings,
                     poll_seconds: float = 1.0) -> RolloutResult:
    """Applies `release` to `environment`, waits until it serves; on failure restores what served before and raises."""
    require_pinned(release.ref)
    started = time.monotonic()
    name, ns = release.app, environment.namespace
    deployed_at = _utc_now()
    manifests = render_manifests(release, environment, settings, deployed_at)
    current = settle_unfinished(api_client, ns, name, kube.read_deployment(api_client, ns, name), release.ref)
    previous = find_previous(current, envs.replica_sets(api_client, ns, name) if current else [], release.ref)
    _log().info("applying %s to %s/%s (serving before: %s)", release.ref, ns, name, previous.digest if previous else "nothing")
    # The controller's progress deadline restarts with each pod that becomes available; this outer
    # limit only guards against a controller that stopped answering.
    limit = settings.rollout_progress_deadline_seconds * (replicas(environment, release.serve) + 1) + 30
    try:
        kube.apply(api_client, manifests, settings.registry_credentials_block)
        verdict, deployment = kube.wait(api_client, ns, name, limit, poll_seconds, deployed_at[:19])
        if verdict.state != "complete":
            _log().warning("rollout of %s to %s failed: %s: %s; undoing it", release.digest, ns, verdict.reason,
                           verdict.message)
            details = kube.failure_details(api_client, ns, verdict.failing_pods)
            undo = undo_rollout(api_client, ns, name, previous, environment, verdict.reason, limit, poll_seconds)
    except BaseException as exc:
        # Interrupted from outside (the environment's lock lost, the run cancelled or terminated):
        # undone here rather than left in progress for the next run. An Exception is an answer of
        # the API server itself, which would not take an undo either.
        if isinstance(exc, Exception):
            raise
        undo_interrupted(api_client, release, environment, previous, limit, poll_seconds, type(exc).__name__)
        raise
    if verdict.state == "complete":
        kube.set_rollout_state(api_client, ns, name, envs.COMPLETE)
        ready = (deployment.get("status") or {}).get("readyReplicas", 0)
        return RolloutResult(environment.name, ns, release.ref, release.digest, previous.digest if previous else None,
                             round(time.monotonic() - started, 1), ready, envs.address(environment))
    if undo is None:
        raise RolloutError(verdict.reason, f"{verdict.message}; nothing served in {ns} before, so Deployment {name} "
                           f"was scaled to zero; fix the image and deliver again", details)
    if undo.state != "complete":  # left "in-progress": nothing reads it as serving, the next rollout settles it
        raise RolloutError(verdict.reason, f"{verdict.message}; restoring {previous.digest} did not complete either "
                           f"({undo.reason}: {undo.message}); check `kubectl -n {ns} describe deployment {name}`", details)
    return _raise_restored(verdict, previous, details)


def undo_rollout(api_client, ns: str, name: str, previous: Previous | None, environment: Environment, reason: str,
                 limit: float, poll_seconds: float, if_generation: int | None = None) -> Verdict | None:
    """Marks the new revision failed and brings back what served before (None: scaled to zero, nothing did).

    Returns the undo's own verdict; when it did not complete, the Deployment stays "in-progress"
    so that nothing reads it as serving and the next rollout settles it.
    """
    kube.mark_failed(api_client, ns, name, reason, if_generation)
    if recovery(previous) == "scale-to-zero":
        kube.scale(api_client, ns, name, 0)
        kube.set_rollout_state(api_client, ns, name, envs.COMPLETE)  # undone: nothing serves, nothing is unfinished
        return None
    restored_at = _utc_now()[:19]
    restored_serve = parse_serve(previous.annotations.get(SERVE))
    kube.restore(api_client, ns, name, previous, replicas(environment, restored_serve), if_generation)
    undo, _ = kube.wait(api_client, ns, name, limit, poll_seconds, restored_at)
    if undo.state == "complete":
        kube.set_rollout_state(api_client, ns, name, envs.COMPLETE)
    return undo


def undo_interrupted(api_client, release: PinnedRelease, environment: Environment, previous: Previous | None,
                     limit: float, poll_seconds: float, why: str) -> None:
    """Undoes a rollout stopped from outside, unless there is nothing of it to undo or another run changed it since.

    Never raises: the interruption is what the run ends with, and whatever is left "in-progress"
    is settled by the next rollout (`settle_unfinished`).
    """
    ns, name = environment.namespace, release.app
    try:
        # Once the controller has seen the apply, its revision annotation names the new ReplicaSet,
        # which `mark_failed` marks; before, it would name the one that serves.
        deployment = kube.read_observed(api_client, ns, name)
        applied = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(DIGEST)
        if deployment is None or applied != release.digest or (previous is not None and previous.digest == release.digest):
            _log().warning("the rollout of %s to %s was interrupted (%s); nothing of it to undo (the Deployment "
                           "carries %s)", release.digest, ns, why, applied or "nothing")
            return
        _log().warning("the rollout of %s to %s was interrupted (%s); undoing it", release.digest, ns, why)
        undo = undo_rollout(api_client, ns, name, previous, environment, "RolloutInterrupted", limit, poll_seconds,
                            if_generation=deployment["metadata"].get("generation"))
        what = "scaled to zero (nothing served before)" if undo is None else (
            f"restored {previous.digest}" if undo.state == "complete" else
            f"restoring {previous.digest} did not complete ({undo.reason}); the next rollout settles it")
        _log().warning("the interrupted rollout of %s to %s: %s", release.digest, ns, what)
    except Exception as exc:
        _log().warning("the interrupted rollout of %s to %s could not be undone: %s: %s; the next rollout settles it",
                       release.digest, ns, type(exc).__name__, exc)


def settle_unfinished(api_client, ns: str, name: str, deployment: dict[str, Any] | None,
                      new_ref: str) -> dict[str, Any] | None:
    """Settles a rollout that a run left "in-progress" (killed worker, lost lease); returns the Deployment as it is now.

    Called under the environment's lock, so no other run is rolling out there: when the
    Deployment completed meanwhile it is marked complete; when it did not, `find_previous` goes
    back to the newest ReplicaSet with available pods, which is what serves, and the unfinished
    one is marked failed (it never served, so `rollback` never picks it), unless `new_ref` is
    that same image, delivered again to finish it.
    """
    ann = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    if deployment is None or ann.get(envs.ROLLOUT_STATE) != envs.IN_PROGRESS:
        return deployment
    finished = is_complete(deployment)
    _log().warning("the rollout of %s to %s (flow run %s) was left unfinished; %s", ann.get(DIGEST, "?"), ns,
                   ann.get(envs.FLOW_RUN) or "?", "it completed since: marked complete" if finished
                   else "what serves is the newest earlier version with available pods")
    if finished:
        kube.set_rollout_state(api_client, ns, name, envs.COMPLETE)
        ann[envs.ROLLOUT_STATE] = envs.COMPLETE
    elif app_image(deployment["spec"]["template"]) != new_ref:
        kube.mark_failed(api_client, ns, name, "RolloutUnfinished")
    return deployment


def _log():
    """The Prefect run logger inside a flow or task run (so the UI shows it), else a plain logger."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("aiship.rollout")


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _raise_restored(verdict: Verdict, previous: Previous, details: str) -> RolloutResult:
    release = previous.release
    what = f"git {release.short_sha or '?'}, model {release.model}" if release else "not delivered by aiship"
    raise RolloutError(verdict.reason, f"{verdict.message}; restored {previous.digest} ({what})", details)


def _publish(markdown: str, key: str, description: str) -> None:
    """Publishes a Markdown artifact when running inside a Prefect flow or task run; otherwise does nothing."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    create_markdown_artifact(markdown=markdown, key=key, description=description)


def result_markdown(result: RolloutResult) -> str:
    """The rollout result as Markdown."""
    return (f"### Rolled out to {result.environment}\n\n| field | value |\n|---|---|\n"
            f"| image | `{result.ref}` |\n| previous digest | `{result.previous_digest or '—'}` |\n"
            f"| pods ready | {result.pods_ready} |\n| seconds | {result.seconds} |\n| address | {result.address} |\n")


@task(name="roll-out")  # each Kubernetes call retries itself (flows/kube.py); a failed rollout is an answer
def roll_out(release: PinnedRelease, environment: Environment, kubeconfig: str | None = None) -> RolloutResult:
    """Rolls a digest-pinned image out to an environment and rolls back by itself when it fails.

    Retried only for transient API errors (connection, timeout, 5xx, 429); a failed rollout is an
    answer and raises RolloutError at once, after what served before is restored.

    Args:
        release: the image by digest, the app, and the git SHA and model it carries.
        environment: one of the app's environments.
        kubeconfig: a kubeconfig file to use instead of the KubernetesAccess block.

    Returns:
        RolloutResult: what serves now, where, and what served before.
    """
    settings = Settings()
    api_client = envs.kubernetes_client(settings, kubeconfig)
    try:
        return _roll_out_and_publish(api_client, release, environment, settings)
    finally:
        api_client.close()


def _roll_out_and_publish(api_client, release: PinnedRelease, env: Environment, settings: Settings) -> RolloutResult:
    key = f"rollout-{release.app}-{env.name}".lower().replace("_", "-")
    try:
        result = roll_out_release(api_client, release, env, settings)
    except RolloutError as exc:
        _publish(f"### Rollout to {env.name} failed\n\n**{exc.reason}**: {exc.message}\n\n```\n{exc.details[-3000:]}\n```\n",
                 key, f"rollout of {release.digest} to {env.name} failed")
        raise
    _publish(result_markdown(result), key, f"rollout of {result.digest} to {env.name}")
    try:
        table = envs.serving(find_app(all_apps(settings), release.app), api_client)
    except Exception as exc:  # the rollout succeeded; a table we cannot read now must not fail it
        _log().warning("could not read what serves where after the rollout: %s", exc)
    else:
        _publish(envs.serving_markdown(table), f"what-serves-where-{release.app}", f"what serves of {release.app} in each environment")
    _log().info("%s serves in %s at %s (%s s)", result.digest, env.name, result.address, result.seconds)
    return result
