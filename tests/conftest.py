"""Fixtures shared by every test group. Services are never skipped: a missing one fails the test."""

from __future__ import annotations

from flows.settings import Settings, use_local_prefect

# Point every Prefect client in the test process at the local server, with its API credential,
# before anything imports Prefect.
use_local_prefect()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    """aiship's settings as the tests' environment defines them."""
    return Settings()


@pytest.fixture(scope="session")
def docker_client():
    """A Docker SDK client for the local dockerd; fails (never skips) when dockerd is not running."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK raises several types for "no daemon"
        pytest.fail(f"dockerd is not reachable ({exc}); start it with `aiship local up docker`")
    yield client
    client.close()

# The fixture apps' own tests run inside their images (tests/integration/test_sandbox.py and the
# e2e tests); collected here, reach's probes would reach this host on purpose.
collect_ignore_glob = ["fixtures/apps/*"]


@pytest.fixture(scope="module")
def namespaces(api_client):
    """Namespaces a module's cluster tests create (tests.kube_support.environment); deleted at the end, whatever happened."""
    from kubernetes import client

    made: list[str] = []
    yield made
    for ns in made:
        try:
            client.CoreV1Api(api_client).delete_namespace(ns)
        except Exception:
            pass
