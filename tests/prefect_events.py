"""Reading aiship's events back from the Prefect server (tests of the ways in use it)."""

from __future__ import annotations

import os
import time

import httpx
import pytest

PREFECT_API = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api")


def prefect_auth() -> httpx.BasicAuth | None:
    """The local server's API credential (tests/conftest.py puts it in the environment), for raw HTTP calls."""
    value = os.environ.get("PREFECT_API_AUTH_STRING")
    return httpx.BasicAuth(*value.split(":", 1)) if value else None


def read_events(name: str, resource_id: str) -> list[dict]:
    body = {"filter": {"event": {"name": [name]}, "any_resource": {"id": [resource_id]}}, "limit": 50}
    response = httpx.post(f"{PREFECT_API}/events/filter", json=body, timeout=10, auth=prefect_auth())
    response.raise_for_status()
    return response.json()["events"]


def wait_for_event(name: str, resource_id: str, timeout: float = 30.0, **payload) -> dict:
    """The event whose payload has these values, once the server has stored it (it stores in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in read_events(name, resource_id) if all(e["payload"].get(k) == v for k, v in payload.items())]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not found:
        pytest.fail(f"no {name} event for {resource_id} with {payload} on {PREFECT_API} within {timeout}s")
    return found[0]


def answers(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def running_receiver(settings) -> str:
    """The webhook receiver's URL; fails (never skips) when it or the Prefect server is not running."""
    if not answers(f"{PREFECT_API}/health"):
        pytest.fail(f"the Prefect server at {PREFECT_API} does not answer; start it with `aiship local up prefect`")
    url = f"http://127.0.0.1:{settings.webhook_port}"
    if not answers(f"{url}/healthz"):
        pytest.fail(f"the webhook receiver at {url} does not answer; start it with `bash local/webhooks.sh up`")
    return url
