"""Fixtures of the reliability tests: faults injected into the real local parts while an operation runs.

Every test here proves that its fault hit during the operation (a process killed before it
finished, a part that refused connections while the call was retried) and then asserts what
serves afterwards.
"""

from __future__ import annotations

import pytest

from tests.kube_support import build_and_push, module_cluster, short_deadlines

settings = pytest.fixture(scope="module", name="settings")(short_deadlines)
api_client = pytest.fixture(scope="module", name="api_client")(module_cluster)


@pytest.fixture(scope="module")
def registry(settings) -> dict:
    from flows.errors import ConfigurationError
    from flows.registry import load_credentials

    try:
        creds = load_credentials(settings.registry_credentials_block)
    except ConfigurationError as exc:
        pytest.fail(str(exc))
    return {"registry_url": creds.registry_url, "username": creds.username, "password": creds.password.get_secret_value()}


@pytest.fixture(scope="module")
def images(docker_client, registry) -> dict[str, str]:
    """Two good tiny servers and one that never becomes ready, pushed by digest."""
    built = {mark: build_and_push(docker_client, registry, mark) for mark in ("v1", "v2")}
    built["never-ready"] = build_and_push(docker_client, registry, "never-ready", env={"NOT_READY": "1"})
    return built
