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
