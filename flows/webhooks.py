"""The way in from outside: signed HTTP calls (GitHub pushes, Azure Event Grid blob events) become Prefect events.

Prefect's open-source server has no webhooks, so this small Flask app of its own (served by
gunicorn on 127.0.0.1:$AISHIP_WEBHOOK_PORT, see local/webhooks.sh) checks each call and emits
`aiship.git.pushed` or `aiship.model.registered` (flows/events.py) to the Prefect server.

- POST /github: `push` verified by X-Hub-Signature-256 (HMAC SHA-256 of the raw body), `ping`
  answered, other events ignored (202), and so is a push no app delivers: a repository no app's
  `sources` claim, or a branch other than that app's (`flows.apps.push_target`). A replayed
  X-GitHub-Delivery, or the same signed body under a new id, is 200 `duplicate` (409
  `in-progress` while another worker is still emitting it). Emission is synchronous: if the
  Prefect server does not take the event, 503 and the delivery is not remembered, so a
  redelivery works.
- POST /azure-repos: an Azure DevOps service hook's `git.push` (`flows/azure_repos.py`).
- POST|OPTIONS /eventgrid (`flows/eventgrid.py`): Event Grid schema (with the subscription-validation handshake) and
  CloudEvents (with the OPTIONS abuse-protection handshake), authenticated by a key of its own
  in the `aeg-sas-key` header. Only BlobCreated of `models/<name>/<version>/manifest.json`
  in the model container counts; sha256, uri and publisher are read from the model store, never
  from the event (an event's URL is not fetched).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from flows import events as aiship_events
from flows.delivery_log import DeliveryLog
from flows.errors import AishipError, ConfigurationError

logger = logging.getLogger("aiship.webhooks")

SIGNATURE_HEADER = "X-Hub-Signature-256"

GIT_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1 or SHA-256 object names
REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")  # owner/repo, as in the resource id

Emitter = Callable[[list[Any]], None]  # takes prefect Event objects; raises when they were not taken
ManifestResolver = Callable[[str, int], dict[str, Any]]  # (name, version) -> sha256, uri, publisher


class EmitError(Exception):
    """Raised when the Prefect server did not take the events (down, or answered an error)."""


# --- checks (plain functions, what the unit tests call) ---

def github_signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is the SHA-256 signature of `body`, compared in constant time."""
    return bool(header) and hmac.compare_digest(github_signature(secret, body).encode(), header.encode())


def key_ok(secret: str, provided: str | None) -> bool:
    """True when the Event Grid key matches, compared in constant time."""
    return bool(provided) and hmac.compare_digest(secret.encode(), provided.encode())


class Registrations:
    """The registered apps, read from Prefect at most every `ttl` seconds (a push must not wait on it)."""

    def __init__(self, read: Callable[[], list[Any]], ttl: float = 10.0) -> None:
        self.read, self.ttl = read, ttl
        self._apps: list[Any] = []
        self._at = float("-inf")

    def __call__(self, fresh: bool = False) -> list[Any]:
        if fresh or time.monotonic() - self._at > self.ttl:
            self._apps, self._at = self.read(), time.monotonic()
        return self._apps


def not_delivered(repo: str, ref: str) -> str | None:
    """Why a push of `ref` to `repo` delivers no app, or None when it delivers one."""
    from flows.apps import push_target

    apps = current_app.extensions["aiship_webhooks"]["apps"]  # unreadable: the error handler answers 503
    try:
        push_target(apps(), repo, ref)
    except ConfigurationError:
        try:  # the cached registrations may predate an app registered seconds ago: ask once more
            push_target(apps(fresh=True), repo, ref)
        except ConfigurationError as exc:
            return str(exc)
    return None


def _event(built: aiship_events.Built) -> Any:
    """A Prefect Event from flows/events.py's (name, resource, payload), with its own id."""
    from prefect.events import Event

    name, resource, payload = built
    return Event(event=name, resource=resource, payload=payload, occurred=datetime.now(timezone.utc), id=uuid.uuid4())


# --- the default emitter and resolver (tests inject fakes through the app config) ---

def prefect_emitter(api_url: str, timeout: float = 3.0) -> Emitter:
    """Posts events to the Prefect server's `POST /events` and raises EmitError unless it took them.

    Not `flows.events.emit` (Prefect's `emit_event`): that one sends in the background and never says whether the server got the
    event, and a webhook must answer 503 when it did not, so the sender retries.
    """
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    headers = {"Authorization": f"Bearer {api.key.get_secret_value()}"} if api.key else {}
    if api.auth_string:
        import base64

        headers = {"Authorization": "Basic " + base64.b64encode(api.auth_string.get_secret_value().encode()).decode()}

    def emit(events: list[Any]) -> None:
        body = [e.model_dump(mode="json") for e in events]
        for attempt in (1, 2):  # one quick retry for a blip; GitHub gives up after 10 s
            try:
                response = httpx.post(f"{api_url.rstrip('/')}/events", json=body, headers=headers, timeout=timeout)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            if attempt == 1:
                time.sleep(0.3)
        raise EmitError(f"the Prefect server at {api_url} did not take the events ({error}); is it running? (aiship local up prefect)")

    return emit


def store_resolver(settings: Any) -> ManifestResolver:
    """Reads a version's manifest through the Azure model store (Event Grid events are Azure blobs)."""
    from flows.model_store import get_store

    def resolve(name: str, version: int) -> dict[str, Any]:
        ref = get_store(settings, kind="azure").resolve(name, version)
        return {"sha256": ref.sha256, "uri": ref.uri, "publisher": ref.manifest.publisher}

    return resolve


def load_secret(block_name: str, setting: str = "AISHIP_WEBHOOK_SECRET_BLOCK", required: bool = True) -> str | None:
    """The secret in the Prefect `Secret` block `block_name`; None when it does not exist and is not `required`."""
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(block_name).get())
    except (ValueError, LookupError) as exc:  # Prefect raises ValueError for an unknown block
        if not required:
            return None
        raise ConfigurationError(missing_secret(block_name, setting) + f" ({exc})") from exc
    except httpx.HTTPError as exc:
        raise ConfigurationError(
            f"could not read the Prefect Secret block {block_name!r}: {type(exc).__name__}: {exc}; "
            "is the Prefect server running? (aiship local up prefect)"
        ) from exc


def missing_secret(block_name: str, setting: str) -> str:
    return (f"Prefect Secret block {block_name!r} not found; create it with `bash local/webhooks.sh up` or "
            f"`prefect block create secret` ({setting} names it), then restart the receiver")


# --- JSON logs and answers ---

class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": record.levelname, "message": record.getMessage()}
        line.update(getattr(record, "fields", {}))
        return json.dumps(line)


def _log(level: int, message: str, **fields: Any) -> None:
    # Only the path, never the query string: a sender may put a secret in it (Event Grid's key is refused there).
    fields.setdefault("path", request.path)
    logger.log(level, message, extra={"fields": fields})


def _answer(code: int, /, **body: Any) -> tuple[Response, int]:
    return jsonify(body), code


def _secret() -> str:
    """GitHub's shared secret (read once per process from its Prefect Secret block)."""
    return current_app.extensions["aiship_webhooks"]["secret"]


def _emit(keys: list[str], events: list[Any]) -> tuple[Response, int] | None:
    """Emits `events` whose delivery keys are claimed; on failure releases them and answers 503."""
    hooks = current_app.extensions["aiship_webhooks"]
    try:
        hooks["emit"](events)
    except Exception as exc:
        for key in keys:
            hooks["deliveries"].release(key)
        _log(logging.ERROR, "emit failed", error=str(exc))
        return _answer(503, status="error", reason=f"events not emitted: {exc}")
    for key in keys:
        hooks["deliveries"].confirm(key)
    return None


# --- GitHub ---

def _github_payload(body: bytes) -> dict[str, Any]:
    # GitHub sends either application/json or a form with the JSON in `payload`.
    if request.mimetype == "application/x-www-form-urlencoded":
        return json.loads(parse_qs(body.decode())["payload"][0])
    return json.loads(body)


def github() -> tuple[Response, int]:
    body = request.get_data(cache=True)  # raises 413 over MAX_CONTENT_LENGTH before anything else
    event, delivery = request.headers.get("X-GitHub-Event", ""), request.headers.get("X-GitHub-Delivery", "")
    if not signature_ok(_secret(), body, request.headers.get(SIGNATURE_HEADER)):
        why = "only the SHA-1 X-Hub-Signature was sent; configure a secret so GitHub sends X-Hub-Signature-256" if request.headers.get("X-Hub-Signature") and not request.headers.get(SIGNATURE_HEADER) else f"missing or wrong {SIGNATURE_HEADER}"
        _log(logging.WARNING, "refused", event=event, delivery_id=delivery, reason=why)
        return _answer(401, status="refused", reason=why)
    if event == "ping":
        return _answer(200, status="pong")
    if event != "push":
        return _answer(202, status="ignored", reason=f"event {event!r} is not handled; only push")
    try:
        payload = _github_payload(body)
        ref, sha = payload["ref"], payload["after"]
        repo, pusher = payload["repository"]["full_name"], str((payload.get("pusher") or {}).get("name", ""))
        if not (isinstance(ref, str) and isinstance(sha, str) and GIT_SHA.match(sha) and isinstance(repo, str) and REPO_NAME.match(repo)):
            raise ValueError(f"ref {ref!r}, after {sha!r} or repository.full_name {repo!r} is malformed")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return _answer(400, status="invalid", reason=f"not a GitHub push payload: {type(exc).__name__}: {exc}")
    if not delivery:
        return _answer(400, status="invalid", reason="missing X-GitHub-Delivery")
    if payload.get("deleted") or set(sha) == {"0"}:
        return _answer(202, status="ignored", reason=f"{ref} was deleted")
    if why := not_delivered(repo, ref):
        return _answer(202, status="ignored", reason=why)
    return deliver_push("github", body, repo=repo, ref=ref, sha=sha, pusher=pusher, delivery_id=delivery)


def deliver_push(source: str, body: bytes | None = None, **fields: str) -> tuple[Response, int]:
    """Emits `aiship.git.pushed` once per delivery id of `source` (a redelivery answers `duplicate`),
    and, when the sender signs the `body`, once per body: GitHub signs the body but not the delivery
    id, so a captured push sent again under a new id is a replay, not a new push."""
    deliveries = current_app.extensions["aiship_webhooks"]["deliveries"]
    keys = [f"{source}:{fields['delivery_id']}"]
    if body is not None:
        keys.append(f"{source}-body:{hashlib.sha256(body).hexdigest()}")
    for claimed, key in enumerate(keys):
        state = deliveries.claim(key)
        if state == "new":
            continue
        for earlier in keys[:claimed]:
            # this id delivered the same signed body as an earlier one: it is done too; else let it retry
            (deliveries.confirm if state == "done" else deliveries.release)(earlier)
        same_body = "the same signed body came before under another delivery id; " if claimed else ""
        _log(logging.INFO, "duplicate", delivery_id=fields["delivery_id"], state=state, replay=bool(claimed))
        return _answer(200 if state == "done" else 409, status="duplicate" if state == "done" else "in-progress",
                       **({"reason": same_body + "nothing is delivered again"} if claimed else {}))
    event = _event(aiship_events.git_pushed(**fields))
    if failed := _emit(keys, [event]):
        return failed
    _log(logging.INFO, "emitted", event=event.event, event_id=str(event.id), **fields)
    return _answer(200, status="emitted", event=event.event, event_id=str(event.id), sha=fields["sha"])


# --- the app ---

def _configure_logging() -> None:
    if not any(getattr(h, "aiship", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        handler.aiship = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The receiver. `config` (tests) may set WEBHOOK_SECRET, AZURE_REPOS_SECRET, EVENTGRID_KEY, EMITTER, MANIFEST_RESOLVER, DELIVERY_DB,
    APPS (the registered apps), AZURE_CONTAINER, MAX_CONTENT_LENGTH; everything else comes from Settings()."""
    from flows.settings import Settings

    settings = Settings()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.webhook_max_bytes,
        AZURE_CONTAINER=settings.azure_container,
        DELIVERY_DB=settings.state_dir / "webhooks" / "deliveries.sqlite",
    )
    app.config.update(config or {})
    _configure_logging()
    if "AISHIP_WEBHOOK_BRANCH" in os.environ:
        logger.warning("AISHIP_WEBHOOK_BRANCH is no longer read: each app's registration names its `branch` "
                       "(AISHIP_APP_BRANCH for the first app); unset it")
    # The secret is read once per process, here, and kept out of app.config (which debug pages show).
    secret = app.config.pop("WEBHOOK_SECRET", None) or load_secret(settings.webhook_secret_block)
    # Optional: without its block only /azure-repos is closed (503), the other senders still work.
    azure_repos_secret = app.config.pop("AZURE_REPOS_SECRET", None) or load_secret(
        settings.azure_repos_secret_block, "AISHIP_AZURE_REPOS_SECRET_BLOCK", required=False)
    eventgrid_key = app.config.pop("EVENTGRID_KEY", None) or load_secret(
        settings.eventgrid_key_block, "AISHIP_EVENTGRID_KEY_BLOCK", required=False)
    app.extensions["aiship_webhooks"] = {
        "secret": secret,
        "eventgrid_key": eventgrid_key,
        "eventgrid_block": settings.eventgrid_key_block,
        "azure_repos_secret": azure_repos_secret,
        "azure_repos_block": settings.azure_repos_secret_block,
        "apps": _apps_source(app.config.get("APPS"), settings),
        "container": app.config["AZURE_CONTAINER"],
        "deliveries": DeliveryLog(Path(app.config["DELIVERY_DB"])),  # replay protection, shared by the workers
        "emit": app.config.get("EMITTER") or prefect_emitter(_prefect_api_url(settings)),
        "resolve": app.config.get("MANIFEST_RESOLVER") or store_resolver(settings),
    }
    app.add_url_rule("/healthz", "healthz", lambda: _answer(200, status="ok"), methods=["GET"])
    app.add_url_rule("/github", "github", github, methods=["POST"])
    from flows.azure_repos import azure_repos  # here: the blueprint uses this module's helpers

    app.register_blueprint(azure_repos)
    from flows.eventgrid import eventgrid_blueprint

    app.register_blueprint(eventgrid_blueprint)
    app.register_error_handler(HTTPException, lambda e: _answer(e.code or 500, status="error", reason=e.description))
    # Our side cannot answer (the registrations unreadable): 503, nothing remembered, so the sender may try again.
    app.register_error_handler(AishipError, lambda e: _answer(503, status="unavailable", reason=str(e)))
    return app


def _apps_source(apps: Any, settings: Any) -> Callable[[], list[Any]]:
    """Where the receiver reads the registered apps: the Prefect Variables, or (tests) a list or callable."""
    from flows.apps import all_apps

    if apps is None:
        return Registrations(lambda: all_apps(settings))
    return apps if callable(apps) else lambda fresh=False: list(apps)


def _prefect_api_url(settings: Any) -> str:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or settings.prefect_api_url
