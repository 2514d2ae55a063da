"""Fixtures of the integration tests (real services at 127.0.0.1)."""

from __future__ import annotations

import os

import httpx
import pytest


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """The API URL the tests use (tests/conftest.py sets it); fails (never skips) when the server does not answer."""
    url = os.environ["PREFECT_API_URL"]
    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"the Prefect server does not answer at {url} ({exc}); start it with `aiship local up prefect`")
    return url


@pytest.fixture(scope="module")  # module: some test modules have a settings fixture of their own
def registry_credentials(settings):
    """The registry's `local-registry` DockerRegistryCredentials block, loaded the way the flows
    load it (`flows.registry.load_credentials`); fails, naming the next step, when it is missing."""
    from flows.errors import ConfigurationError
    from flows.registry import load_credentials

    try:
        return load_credentials(settings.registry_credentials_block)
    except ConfigurationError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def pushes_app(settings):
    """An app registered for the repositories `aiship-tests/*` that these tests push from, so that the
    receiver delivers their pushes (no deployment trigger starts a run for an `aiship-tests` repository)."""
    from flows.apps import AppRegistration, register, unregister
    from flows.settings import Environment

    app = AppRegistration(name="aiship-tests-pushes", repository="/nonexistent/aiship-tests-pushes",
                          sources=["aiship-tests/*"], models=["aiship-tests-pushes-*"],
                          environments={"staging": Environment(name="staging", namespace="aiship-tests-pushes", node_port=16198)})
    register(app, settings)
    yield app
    unregister(app.name)
