"""Azure Event Grid into the receiver: a model version's manifest written to Blob Storage becomes
`aiship.model.registered`.

POST|OPTIONS /eventgrid takes the Event Grid schema (with the subscription-validation handshake)
and CloudEvents (with the OPTIONS abuse-protection handshake), authenticated by the shared key
in an `aeg-sas-key` header (an Event Grid delivery property marked secret), its own
Secret block. A key in the URL (`?key=`) is refused: URLs end up in access logs. Only BlobCreated of `models/<name>/<version>/manifest.json`
in the model container counts; sha256, uri and publisher are read from the model store, never
from the event (an event's URL is not fetched).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, request

from flows import events as aiship_events
from flows.errors import ModelStoreError
from flows.retry import is_transient
from flows.webhooks import _answer, _emit, _event, _log, key_ok, missing_secret

eventgrid_blueprint = Blueprint("eventgrid", __name__)
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
# /blobServices/default/containers/<container>/blobs/models/<name>/<version>/manifest.json
MANIFEST_SUBJECT = re.compile(r"^/blobServices/default/containers/(?P<container>[^/]+)/blobs/models/(?P<name>[a-z0-9][a-z0-9-]{0,61}[a-z0-9]?)/(?P<version>[1-9][0-9]{0,8})/manifest\.json$")


def manifest_blob(subject: str, container: str) -> tuple[str, int] | None:
    """(name, version) when `subject` is a manifest under models/ in `container`, else None."""
    m = MANIFEST_SUBJECT.match(subject or "")
    if not m or m["container"] != container:
        return None
    return m["name"], int(m["version"])


def _refusal() -> tuple[Response, int] | None:
    """None when the call carries Event Grid's key in its header; else the answer to give."""
    hooks = current_app.extensions["aiship_webhooks"]
    if hooks["eventgrid_key"] is None:  # the block's name goes to the log, not to an unauthenticated caller
        _log(logging.ERROR, "unavailable", reason=missing_secret(hooks["eventgrid_block"], "AISHIP_EVENTGRID_KEY_BLOCK"))
        return _answer(503, status="unavailable", reason="Event Grid is not configured on this receiver; "
                                                         "its log says which Secret block to create")
    if "key" in request.args:
        _log(logging.WARNING, "refused", reason="key in the URL")
        return _answer(401, status="refused", reason="send the key in the aeg-sas-key header (a secret delivery "
                                                     "property of the subscription), never in the URL")
    if not key_ok(hooks["eventgrid_key"], request.headers.get("aeg-sas-key")):
        _log(logging.WARNING, "refused", reason="missing or wrong key")
        return _answer(401, status="refused", reason="missing or wrong aeg-sas-key")
    return None


@eventgrid_blueprint.route("/eventgrid", methods=["OPTIONS"], provide_automatic_options=False)
def eventgrid_options() -> tuple[Response, int]:
    """CloudEvents abuse protection: echo the origin to allow deliveries from it.

    Answered without the key: the handshake only says this endpoint accepts deliveries (it
    authorises nothing; every POST still needs the key), and Event Grid's validation request is
    not documented to carry the subscription's delivery properties.
    """
    if current_app.extensions["aiship_webhooks"]["eventgrid_key"] is None:
        return _answer(503, status="unavailable", reason="Event Grid is not configured on this receiver")
    origin = request.headers.get("WebHook-Request-Origin")
    if not origin:
        return _answer(400, status="invalid", reason="missing WebHook-Request-Origin")
    response, code = _answer(200, status="allowed", origin=origin)
    response.headers["WebHook-Allowed-Origin"] = origin
    response.headers["WebHook-Allowed-Rate"] = "*"
    response.headers["Allow"] = "POST, OPTIONS"
    return response, code


def _normalized(item: dict[str, Any]) -> dict[str, Any]:
    """One event as {id, type, subject, data}, from the Event Grid or the CloudEvents schema; a field
    of the wrong type raises TypeError (the caller answers 400)."""
    type_key = "type" if "specversion" in item else "eventType"
    event = {"id": item.get("id"), "type": item.get(type_key), "subject": item.get("subject") or "", "data": item.get("data") or {}}
    for key in ("id", "type", "subject"):
        if event[key] is not None and not isinstance(event[key], str):
            raise TypeError(f"{type_key if key == 'type' else key} must be a string, got {type(event[key]).__name__}")
    if not isinstance(event["data"], dict):
        raise TypeError(f"data must be an object, got {type(event['data']).__name__}")
    return event


@eventgrid_blueprint.route("/eventgrid", methods=["POST"], provide_automatic_options=False)
def eventgrid() -> tuple[Response, int]:
    request.get_data(cache=True)  # 413 before anything else
    if refused := _refusal():
        return refused
    try:
        parsed = json.loads(request.get_data(cache=True))
        items = [_normalized(i) for i in (parsed if isinstance(parsed, list) else [parsed])]
    except (ValueError, AttributeError, TypeError) as exc:
        return _answer(400, status="invalid", reason=f"not an Event Grid or CloudEvents body: {exc}")
    for item in items:
        if item["type"] == VALIDATION_EVENT:
            _log(logging.INFO, "subscription validation", event_id=item["id"])
            return _answer(200, validationResponse=(item["data"] or {}).get("validationCode"))
    return _register_models(items)


class _Retry(Exception):
    """Raised inside `_register_models` when Event Grid should send the batch again (503)."""


def _model_event(item: dict[str, Any], hooks: dict[str, Any], keys: list[str]) -> tuple[Any, str]:
    """(event, '') for a manifest's BlobCreated, or (None, why it is ignored); claims its key into `keys`."""
    found = manifest_blob(item["subject"], hooks["container"]) if item["type"] == BLOB_CREATED else None
    if not found or not item["id"]:
        return None, f"not a BlobCreated of models/<name>/<version>/manifest.json in container {hooks['container']}"
    key = f"eventgrid:{item['id']}"
    state = hooks["deliveries"].claim(key)
    if state == "done":
        return None, "duplicate"
    if state == "pending":  # another worker has it right now; if it fails, this retry must still count
        raise _Retry(f"event {item['id']} is being processed")
    name, version = found
    try:
        model = hooks["resolve"](name, version)
    except Exception as exc:
        hooks["deliveries"].release(key)
        if isinstance(exc, ModelStoreError) and not is_transient(exc):  # no such version, a broken manifest: an answer
            return None, str(exc)
        raise _Retry(f"could not read the manifest of {name} v{version}: {type(exc).__name__}: {exc}") from exc
    keys.append(key)
    return _event(aiship_events.model_registered(name=name, version=version, **model)), ""


def _register_models(items: list[dict[str, Any]]) -> tuple[Response, int]:
    hooks = current_app.extensions["aiship_webhooks"]
    keys: list[str] = []
    events, ignored = [], []
    seen: set[str] = set()
    try:
        for item in items:
            if item["id"] and item["id"] in seen:  # the same event twice in one batch counts once
                ignored.append({"id": item["id"], "reason": "duplicate in this batch"})
                continue
            seen.add(item["id"] or "")
            event, why = _model_event(item, hooks, keys)
            if event is None:
                ignored.append({"id": item["id"], "reason": why})
            else:
                events.append(event)
    except _Retry as exc:  # nothing of this batch is emitted; Event Grid sends it again
        for key in keys:
            hooks["deliveries"].release(key)
        _log(logging.ERROR, "retry later", error=str(exc))
        return _answer(503, status="error", reason=str(exc))
    if events and (failed := _emit(keys, events)):
        return failed
    for event in events:
        _log(logging.INFO, "emitted", event=event.event, event_id=str(event.id), resource=event.resource.id)
    return _answer(200 if events else 202, status="emitted" if events else "ignored",
                   emitted=[{"event": e.event, "resource": e.resource.id, "event_id": str(e.id)} for e in events], ignored=ignored)
