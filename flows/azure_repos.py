"""Azure Repos, beside GitHub, as a source of commits: an Azure DevOps service hook's `git.push` event.

The subscription (Project settings > Service hooks > Web Hooks, event "Code pushed") posts to
`/azure-repos` with basic authentication: any user name, the service hook's own secret (the
Prefect Secret block of `AISHIP_AZURE_REPOS_SECRET_BLOCK`, apart from GitHub's) as the password;
or that secret in an `X-Aiship-Secret` header. The push becomes the same `aiship.git.pushed` event as a GitHub push,
with the repository named `<project>/<repository>`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from flows import webhooks

azure_repos = Blueprint("azure_repos", __name__)
SECRET_HEADER = "X-Aiship-Secret"
NAME = re.compile(r"^[A-Za-z0-9_. -]{1,64}$")  # Azure DevOps allows spaces in project and repository names


def answer(code: int, /, **body: Any) -> tuple[Response, int]:
    return jsonify(body), code


def authorized(secret: str, authorization: str | None, header: str | None) -> bool:
    """True for the shared secret as the basic-auth password (any user) or in the secret header."""
    if header is not None:
        return webhooks.key_ok(secret, header)
    if not authorization or not authorization.startswith("Basic "):
        return False
    try:
        _, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return webhooks.key_ok(secret, password)


def push_fields(payload: dict[str, Any], not_delivered: Callable[[str, str], str | None]) -> dict[str, str] | str:
    """The pushed repository, ref, SHA, pusher and delivery id of the first ref update that delivers an
    app, or why none does (`not_delivered(repo, ref)` says why one ref delivers nothing)."""
    resource = payload["resource"]
    repository = resource["repository"]
    project, name = repository["project"]["name"], repository["name"]
    if not (isinstance(project, str) and NAME.match(project) and isinstance(name, str) and NAME.match(name)):
        raise ValueError(f"project {project!r} or repository {name!r} is malformed")
    repo, reasons = f"{project}/{name}", []
    for update in resource["refUpdates"]:
        ref, sha = update["name"], update["newObjectId"]
        if not (isinstance(ref, str) and isinstance(sha, str) and webhooks.GIT_SHA.match(sha)):
            raise ValueError(f"refUpdate {ref!r} -> {sha!r} is malformed")
        if set(sha) == {"0"}:
            reasons.append(f"{ref} was deleted")
        elif why := not_delivered(repo, ref):
            reasons.append(why)
        else:
            pusher = resource.get("pushedBy") or {}
            return {"repo": repo, "ref": ref, "sha": sha,
                    "pusher": str(pusher.get("uniqueName") or pusher.get("displayName") or ""),
                    "delivery_id": str(payload["id"])}
    return "; ".join(reasons) or "the push updated no ref"


@azure_repos.post("/azure-repos")
def receive() -> tuple[Response, int]:
    """POST /azure-repos: a service hook's `git.push` becomes `aiship.git.pushed`."""
    body = request.get_data(cache=True)
    hooks = current_app.extensions["aiship_webhooks"]
    if hooks["azure_repos_secret"] is None:  # the block's name goes to the log, not to an unauthenticated caller
        webhooks.logger.error(webhooks.missing_secret(hooks["azure_repos_block"], "AISHIP_AZURE_REPOS_SECRET_BLOCK"))
        return answer(503, status="unavailable", reason="Azure Repos pushes are not configured on this receiver; "
                                                        "its log says which Secret block to create")
    if not authorized(hooks["azure_repos_secret"], request.headers.get("Authorization"), request.headers.get(SECRET_HEADER)):
        return answer(401, status="refused", reason="wrong or missing credentials: the service hook's basic "
                                f"password (or {SECRET_HEADER}) must be the secret of its Prefect block")
    try:
        payload = json.loads(body)
        event = payload["eventType"]
        if event != "git.push":
            return answer(202, status="ignored", reason=f"event {event!r} is not handled; only git.push")
        fields = push_fields(payload, webhooks.not_delivered)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return answer(400, status="invalid", reason=f"not an Azure DevOps git.push payload: {type(exc).__name__}: {exc}")
    if isinstance(fields, str):
        return answer(202, status="ignored", reason=fields)
    return webhooks.deliver_push("azure-repos", **fields)
