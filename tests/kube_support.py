"""Waiting for a namespace to settle after a rollout (tests that read which version answers use it)."""

from __future__ import annotations

import time


def wait_until_settled(api_client, namespace: str, timeout: float = 90.0) -> None:
    """Returns once no pod in `namespace` is terminating.

    A rollout is complete when the Service routes to the new pods only, but an old pod keeps
    answering for its preStop seconds while kube-proxy catches up (that is what the preStop is
    for). A test that asserts every answer comes from the new version starts after this.
    """
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + timeout
    while True:
        terminating = [p.metadata.name for p in core.list_namespaced_pod(namespace).items if p.metadata.deletion_timestamp]
        if not terminating:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pods still terminating in {namespace} after {timeout:.0f} s: {terminating}")
        time.sleep(0.5)
