"""Where a rollout stands, judged from the Deployment, its new pods and its Service's endpoints.

Pure functions over the API's objects as dicts (camelCase, as in YAML): `flows.kube.wait` polls
and asks `judge`; `flows.rollout` acts on the verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

# Waiting reasons of a new pod's container that no amount of waiting fixes, mapped to the reason token.
FAILING_WAITING = {
    "CrashLoopBackOff": "CrashLoopBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "ErrImagePull": "ImagePullBackOff",  # the kubelet alternates the two for one cause
    "InvalidImageName": "InvalidImageName",
    "CreateContainerConfigError": "CreateContainerConfigError",
    "CreateContainerError": "CreateContainerError",
    "RunContainerError": "RunContainerError",
}

# A pull that failed on the way (the registry restarting) may succeed on the kubelet's next try:
# such a pod is left to the progress deadline instead of failing the rollout at once.
_PULL_MAY_RECOVER = re.compile(r"connection refused|connection reset|i/o timeout|timeout exceeded|TLS handshake timeout"
                               r"|no route to host|\b50[234]\b|Service Unavailable|Bad Gateway", re.IGNORECASE)

# A pod's first pull in a namespace can go out without credentials although its pull secret exists:
# the kubelet's secret cache lists the Secret before the API server's node authorizer has linked the
# new pod to it ("no relationship found between node ... and this object"), gives up, and pulls
# unauthenticated; its next try, ~10 s later, has the Secret. So that answer fails the rollout only
# once it has lasted past the kubelet's first retries: then the credential itself is wrong.
_PULL_WITHOUT_CREDENTIALS = re.compile(r"no basic auth credentials", re.IGNORECASE)
PULL_SECRET_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Verdict:
    """Where a rollout stands: still progressing, complete, or failed with a reason token."""

    state: Literal["progressing", "complete", "failed"]
    reason: str = ""
    message: str = ""
    failing_pods: tuple[str, ...] = ()


def is_complete(deployment: dict[str, Any]) -> bool:
    """True when the controller saw the latest spec and every pod runs it and is available (`kubectl rollout status`)."""
    want = deployment["spec"].get("replicas", 1)
    status = deployment.get("status") or {}
    return (status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
            and status.get("updatedReplicas", 0) == want and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want)


def routes_only_to(endpoints: dict[str, Any] | None, new_pods: list[dict[str, Any]]) -> bool:
    """True when the Service sends traffic to new pods only: every ready address of its Endpoints
    belongs to one of `new_pods`, and there is at least one. A Deployment counts as complete as soon
    as its new pods are available, a moment before the endpoints controller drops the old ones."""
    names = {p["metadata"]["name"] for p in new_pods}
    ready = [address for subset in (endpoints or {}).get("subsets") or [] for address in subset.get("addresses") or []]
    return bool(ready) and all((a.get("targetRef") or {}).get("name") in names for a in ready)


def judge(deployment: dict[str, Any], new_pods: list[dict[str, Any]], elapsed: float, limit: float,
          since: str = "") -> Verdict:
    """Decides from the Deployment and its new pods whether a rollout is complete, still going, or failed.

    Pods count only once the controller has seen the latest spec (before that, the "newest"
    ReplicaSet is still the old one); a restart or a timeout counts only when it happened at or
    after `since` ("YYYY-MM-DDTHH:MM:SS" in UTC, as the API's times start).
    """
    status = deployment.get("status") or {}
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return Verdict("progressing") if elapsed <= limit else Verdict(
            "failed", "ProgressDeadlineExceeded", f"the Deployment controller did not act on the change in {limit:.0f} s")
    for pod in new_pods:
        name = pod["metadata"]["name"]
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            message = waiting.get("message", "")
            may_recover = _PULL_MAY_RECOVER.search(message) or (
                elapsed <= PULL_SECRET_GRACE_SECONDS and _PULL_WITHOUT_CREDENTIALS.search(message))
            if waiting.get("reason") in FAILING_WAITING and not may_recover:
                text = f"pod {name}: {waiting['reason']}: {message.strip()}".rstrip(": ")
                if last:
                    text += f" (restarts: {cs.get('restartCount', 0)}, last exit code {last.get('exitCode')})"
                return Verdict("failed", FAILING_WAITING[waiting["reason"]], text, (name,))
            if cs.get("restartCount", 0) > 0 and last and str(last.get("finishedAt") or "") >= since:  # exited once: the kubelet's back-off is only seconds away
                return Verdict("failed", "CrashLoopBackOff", f"pod {name}: container {cs.get('name')} exited with "
                               f"code {last.get('exitCode')} ({last.get('reason', '')}) and was restarted", (name,))
    if is_complete(deployment):
        return Verdict("complete")
    for cond in status.get("conditions") or []:
        fresh = str(cond.get("lastUpdateTime") or "") >= since  # an old timeout is kept as is after an undo
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded" and fresh:
            return Verdict("failed", "ProgressDeadlineExceeded", _no_progress(deployment, new_pods),
                           tuple(p["metadata"]["name"] for p in new_pods))
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return Verdict("failed", cond.get("reason") or "ReplicaFailure", cond.get("message", ""))
    if elapsed > limit:  # the controller should have said so; this guards against a stalled controller
        return Verdict("failed", "ProgressDeadlineExceeded", _no_progress(deployment, new_pods),
                       tuple(p["metadata"]["name"] for p in new_pods))
    return Verdict("progressing")


def _no_progress(deployment: dict[str, Any], new_pods: list[dict[str, Any]]) -> str:
    seconds = deployment["spec"].get("progressDeadlineSeconds", 600)
    ready = sum(1 for p in new_pods for c in (p.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready" and c.get("status") == "True")
    return f"made no progress in {seconds} s ({ready} of {len(new_pods)} new pods ready)"
