"""aiship's Prefect events: their names, and pure builders of (event, resource, payload).

The resource ids and payloads are exactly DESIGN.md's Events table. Trigger templates read the
payload, never split the resource id.
"""

from __future__ import annotations

from typing import Any

MODEL_REGISTERED = "aiship.model.registered"
GIT_PUSHED = "aiship.git.pushed"

Built = tuple[str, dict[str, str], dict[str, Any]]


def model_registered(name: str, version: int, sha256: str, uri: str, publisher: str) -> Built:
    """The `aiship.model.registered` event for one published model version."""
    resource = {"prefect.resource.id": f"aiship.model.{name}.{int(version)}", "prefect.resource.name": f"{name}:{int(version)}"}
    payload = {"name": name, "version": int(version), "sha256": sha256, "uri": uri, "publisher": publisher}
    return MODEL_REGISTERED, resource, payload


def git_pushed(repo: str, ref: str, sha: str, pusher: str, delivery_id: str) -> Built:
    """The `aiship.git.pushed` event for one push to `repo` (owner/repo)."""
    resource = {"prefect.resource.id": f"aiship.repo.{repo}", "prefect.resource.name": repo}
    payload = {"repo": repo, "ref": ref, "sha": sha, "pusher": pusher, "delivery_id": delivery_id}
    return GIT_PUSHED, resource, payload


def emit(built: Built, flush_timeout: float | None = 10.0):
    """Emits a built event to the configured Prefect API; returns the Event, or None when nothing was sent.

    Waits up to `flush_timeout` seconds for the background sender, so a short-lived command
    does not exit before the event left (None: leave it to Prefect's exit hook).
    """
    from prefect.events import emit_event

    event_name, resource, payload = built
    sent = emit_event(event=event_name, resource=resource, payload=payload)
    if sent is not None and flush_timeout is not None:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=flush_timeout)
    return sent


def emit_model_registered(ref) -> Any:
    """Emits `aiship.model.registered` for a published `flows.model_store.ModelRef`."""
    return emit(model_registered(ref.name, ref.version, ref.sha256, ref.uri, ref.manifest.publisher))


def emit_git_pushed(repo: str, ref: str, sha: str, pusher: str, delivery_id: str) -> Any:
    """Emits `aiship.git.pushed` (the webhook receiver calls this)."""
    return emit(git_pushed(repo, ref, sha, pusher, delivery_id))


def prefect_api_status(timeout: float = 3.0) -> tuple[bool, str]:
    """(True, url) when a Prefect API is configured and /health answers; else (False, why not)."""
    import httpx
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return False, "no Prefect API is configured (PREFECT_API_URL is not set)"
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        return False, f"the Prefect API at {url} does not answer ({type(exc).__name__}); start it with `aiship local up prefect`"
    if response.status_code != 200:
        return False, f"the Prefect API at {url} answered /health with HTTP {response.status_code}"
    return True, url
