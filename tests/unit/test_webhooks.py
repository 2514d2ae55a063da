"""The webhook receiver without services: a fake emitter and a fake manifest resolver stand in for Prefect and the store."""

from __future__ import annotations

import json
import multiprocessing
import time
import urllib.parse
import uuid

import pytest

from flows import eventgrid, webhooks
from flows.delivery_log import DeliveryLog
from flows.apps import AppRegistration
from flows.errors import ModelNotFoundError, ModelStoreError, PlatformError
from flows.settings import Environment

SECRET = "unit-test-secret"
AZURE_REPOS_SECRET = "unit-test-azure-repos-secret"  # given, so that no test reads a Secret block from Prefect
EVENTGRID_KEY = "unit-test-eventgrid-key"
KEY = {"aeg-sas-key": EVENTGRID_KEY}
SHA = "3f2a" + "0" * 36
MODEL_SHA = "ab" * 32


class FakeEmitter:
    """Records emitted events; fails while `down` is set, like an unreachable Prefect server."""

    def __init__(self) -> None:
        self.events: list = []
        self.down = False

    def __call__(self, events: list) -> None:
        if self.down:
            raise webhooks.EmitError("the Prefect server did not take the events (ConnectError)")
        self.events.extend(events)


class FakeResolver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.error: Exception | None = None

    def __call__(self, name: str, version: int) -> dict:
        self.calls.append((name, version))
        if self.error:
            raise self.error
        return {"sha256": MODEL_SHA, "uri": f"http://127.0.0.1:10000/devstoreaccount1/models/models/{name}/{version}/model.skops", "publisher": "ds@lab"}


@pytest.fixture
def emitter() -> FakeEmitter:
    return FakeEmitter()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


def registration(name: str, sources: list[str], branch: str = "main", node_port: int = 16180) -> AppRegistration:
    env = Environment(name="staging", namespace=f"{name}-staging", node_port=node_port)
    return AppRegistration(name=name, repository=f"/srv/git/{name}.git", sources=sources, branch=branch,
                           models=[f"{name}-*"], environments={"staging": env})


SHOP = registration("shop", ["acme/shop"])


@pytest.fixture
def client(tmp_path, emitter, resolver):
    app = webhooks.create_app({
        "WEBHOOK_SECRET": SECRET, "AZURE_REPOS_SECRET": AZURE_REPOS_SECRET, "EVENTGRID_KEY": EVENTGRID_KEY, "EMITTER": emitter, "MANIFEST_RESOLVER": resolver,
        "DELIVERY_DB": tmp_path / "deliveries.sqlite", "MAX_CONTENT_LENGTH": 64 * 1024,
        "AZURE_CONTAINER": "models", "APPS": [SHOP],
    })
    return app.test_client()


def push_body(ref: str = "refs/heads/main", sha: str = SHA, **extra) -> bytes:
    payload = {"ref": ref, "before": "0" * 40, "after": sha, "repository": {"full_name": "acme/shop"},
               "pusher": {"name": "dev", "email": "dev@acme"}, "head_commit": {"id": sha, "message": "fix"}}
    payload.update(extra)
    return json.dumps(payload).encode()


def post_github(client, body: bytes, event: str = "push", delivery: str | None = None, signature: str | None = "valid", **headers):
    h = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "Content-Type": "application/json", **headers}
    if signature == "valid":
        h[webhooks.SIGNATURE_HEADER] = webhooks.github_signature(SECRET, body)
    elif signature is not None:
        h[webhooks.SIGNATURE_HEADER] = signature
    return client.post("/github", data=body, headers=h)


# --- GitHub ---

def test_valid_push_emits_git_pushed(client, emitter):
    response = post_github(client, push_body(), delivery="d-1")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "emitted"
    (event,) = emitter.events
    assert event.event == "aiship.git.pushed"
    assert event.resource.id == "aiship.repo.acme/shop"
    assert event.payload == {"repo": "acme/shop", "ref": "refs/heads/main", "sha": SHA, "pusher": "dev", "delivery_id": "d-1"}
    assert response.json["event_id"] == str(event.id)


def test_signature_is_hmac_sha256_of_the_raw_body():
    # GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
    assert webhooks.github_signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.mark.parametrize("signature", [None, "", "sha256=" + "0" * 64, "sha256=nothex", "garbage"])
def test_bad_or_missing_signature_is_401_and_emits_nothing(client, emitter, signature):
    response = post_github(client, push_body(), signature=signature)
    assert response.status_code == 401
    assert response.json["status"] == "refused"
    assert emitter.events == []


def test_signature_of_another_secret_is_refused(client, emitter):
    body = push_body()
    response = post_github(client, body, signature=webhooks.github_signature("other", body))
    assert response.status_code == 401 and emitter.events == []


def test_signature_over_a_different_body_is_refused(client, emitter):
    signed = push_body()
    tampered = push_body(sha="f" * 40)
    response = post_github(client, tampered, signature=webhooks.github_signature(SECRET, signed))
    assert response.status_code == 401 and emitter.events == []


def test_legacy_sha1_signature_alone_is_refused(client, emitter):
    import hashlib
    import hmac

    body = push_body()
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    response = post_github(client, body, signature=None, **{"X-Hub-Signature": sha1})
    assert response.status_code == 401
    assert "SHA-1" in response.json["reason"]
    assert emitter.events == []


def test_ping_is_answered_and_emits_nothing(client, emitter):
    response = post_github(client, json.dumps({"zen": "Keep it simple.", "hook_id": 1}).encode(), event="ping")
    assert response.status_code == 200 and response.json == {"status": "pong"}
    assert emitter.events == []


def test_ping_needs_a_signature_too(client):
    assert post_github(client, b'{"zen": "x"}', event="ping", signature=None).status_code == 401


def test_other_events_are_ignored_with_a_reason(client, emitter):
    response = post_github(client, b'{"action": "opened"}', event="pull_request")
    assert response.status_code == 202
    assert response.json["status"] == "ignored" and "pull_request" in response.json["reason"]
    assert emitter.events == []


@pytest.mark.parametrize("ref", ["refs/heads/feature", "refs/tags/v1.0", "refs/heads/main2"])
def test_other_branches_are_ignored(client, emitter, ref):
    response = post_github(client, push_body(ref=ref))
    assert response.status_code == 202 and ref in response.json["reason"]
    assert emitter.events == []


def test_a_push_delivers_only_the_app_that_claims_its_repository_and_only_on_that_apps_branch(tmp_path, emitter):
    apps = [SHOP, registration("regressor", ["acme/regressor", "acme/ml-*"], branch="release/2", node_port=16181)]
    app = webhooks.create_app({"WEBHOOK_SECRET": SECRET, "AZURE_REPOS_SECRET": AZURE_REPOS_SECRET, "EVENTGRID_KEY": EVENTGRID_KEY, "EMITTER": emitter, "MANIFEST_RESOLVER": FakeResolver(),
                               "DELIVERY_DB": tmp_path / "d.sqlite", "APPS": apps})
    client = app.test_client()
    sent = {(repo, ref): post_github(client, push_body(ref=ref, repository={"full_name": repo}))
            for repo, ref in [("acme/regressor", "refs/heads/release/2"), ("acme/ml-forecast", "refs/heads/release/2"),
                              ("acme/regressor", "refs/heads/main"), ("acme/shop", "refs/heads/release/2"),
                              ("acme/unknown", "refs/heads/main")]}
    assert [(e.payload["repo"], e.payload["ref"]) for e in emitter.events] == [
        ("acme/regressor", "refs/heads/release/2"), ("acme/ml-forecast", "refs/heads/release/2")]
    assert "refs/heads/main is not the branch of app regressor (refs/heads/release/2)" in sent["acme/regressor", "refs/heads/main"].json["reason"]
    assert "not the branch of app shop (refs/heads/main)" in sent["acme/shop", "refs/heads/release/2"].json["reason"]
    unknown = sent["acme/unknown", "refs/heads/main"]
    assert unknown.status_code == 202 and "no app claims the repository 'acme/unknown'" in unknown.json["reason"]


def test_registrations_that_cannot_be_read_are_503_and_the_push_is_not_remembered(tmp_path, emitter):
    down = {"now": True}

    def read_apps() -> list[AppRegistration]:
        if down["now"]:
            raise PlatformError("cannot read the registered apps: the Prefect API does not answer (ConnectError)")
        return [SHOP]

    client = webhooks.create_app({"WEBHOOK_SECRET": SECRET, "AZURE_REPOS_SECRET": AZURE_REPOS_SECRET, "EVENTGRID_KEY": EVENTGRID_KEY, "EMITTER": emitter, "MANIFEST_RESOLVER": FakeResolver(),
                                  "DELIVERY_DB": tmp_path / "d.sqlite", "APPS": read_apps}).test_client()
    failed = post_github(client, push_body(), delivery="later")
    assert failed.status_code == 503 and "Prefect API does not answer" in failed.json["reason"] and emitter.events == []
    down["now"] = False
    assert post_github(client, push_body(), delivery="later").json["status"] == "emitted"


def test_an_app_registered_seconds_ago_is_found_on_a_second_look(tmp_path, emitter):
    registered = [SHOP]
    reads = []
    apps = webhooks.Registrations(lambda: reads.append(1) or list(registered), ttl=3600)
    client = webhooks.create_app({"WEBHOOK_SECRET": SECRET, "AZURE_REPOS_SECRET": AZURE_REPOS_SECRET, "EVENTGRID_KEY": EVENTGRID_KEY, "EMITTER": emitter, "MANIFEST_RESOLVER": FakeResolver(),
                                  "DELIVERY_DB": tmp_path / "d.sqlite", "APPS": apps}).test_client()
    assert post_github(client, push_body()).status_code == 200
    registered.append(registration("regressor", ["acme/regressor"], node_port=16181))
    new = post_github(client, push_body(repository={"full_name": "acme/regressor"}))
    assert new.status_code == 200 and new.json["status"] == "emitted" and len(reads) == 2


def test_the_registrations_are_read_again_after_their_time_to_live():
    reads = []
    apps = webhooks.Registrations(lambda: reads.append(1) or [SHOP], ttl=0.2)
    assert apps() == [SHOP] and apps() == [SHOP] and len(reads) == 1
    time.sleep(0.25)
    apps()
    assert len(reads) == 2


def test_branch_deletion_is_ignored(client, emitter):
    response = post_github(client, push_body(sha="0" * 40, deleted=True))
    assert response.status_code == 202 and emitter.events == []


def test_replayed_delivery_is_a_duplicate(client, emitter):
    body = push_body()
    first = post_github(client, body, delivery="same-id")
    second = post_github(client, body, delivery="same-id")
    assert first.status_code == 200 and first.json["status"] == "emitted"
    assert second.status_code == 200 and second.json == {"status": "duplicate"}
    assert len(emitter.events) == 1


def test_a_signed_body_sent_again_under_a_new_delivery_id_is_not_delivered_again(client, emitter):
    body = push_body()
    assert post_github(client, body, delivery="original").json["status"] == "emitted"
    replay = post_github(client, body, delivery="captured-and-renamed")
    assert replay.status_code == 200 and replay.json["status"] == "duplicate"
    assert "the same signed body came before under another delivery id" in replay.json["reason"]
    assert post_github(client, body, delivery="captured-and-renamed").json == {"status": "duplicate"}  # and stays so
    assert len(emitter.events) == 1
    # a new push (another commit) under a new id is delivered as ever
    assert post_github(client, push_body(sha="c" * 40), delivery="next").json["status"] == "emitted"


def test_replay_is_remembered_across_app_instances(tmp_path, emitter):
    # Two gunicorn workers are two create_app() calls sharing the state folder's database.
    config = {"WEBHOOK_SECRET": SECRET, "AZURE_REPOS_SECRET": AZURE_REPOS_SECRET, "EVENTGRID_KEY": EVENTGRID_KEY, "EMITTER": emitter, "MANIFEST_RESOLVER": FakeResolver(), "DELIVERY_DB": tmp_path / "d.sqlite",
              "APPS": [SHOP]}
    body = push_body()
    assert post_github(webhooks.create_app(dict(config)).test_client(), body, delivery="x").json["status"] == "emitted"
    assert post_github(webhooks.create_app(dict(config)).test_client(), body, delivery="x").json["status"] == "duplicate"
    assert len(emitter.events) == 1


def test_emit_failure_is_503_and_the_delivery_is_not_remembered(client, emitter):
    body = push_body()
    emitter.down = True
    failed = post_github(client, body, delivery="retry-me")
    assert failed.status_code == 503 and "not emitted" in failed.json["reason"]
    emitter.down = False
    retried = post_github(client, body, delivery="retry-me")
    assert retried.status_code == 200 and retried.json["status"] == "emitted"
    assert len(emitter.events) == 1


def test_form_encoded_push_is_accepted(client, emitter):
    body = urllib.parse.urlencode({"payload": push_body().decode()}).encode()
    response = post_github(client, body, **{"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200 and emitter.events[0].payload["sha"] == SHA


def test_signed_but_malformed_payload_is_400(client, emitter):
    response = post_github(client, b'{"ref": "refs/heads/main"}')
    assert response.status_code == 400 and emitter.events == []


def test_body_over_the_limit_is_413_and_json(client, emitter):
    body = push_body(padding="x" * (64 * 1024))
    response = post_github(client, body)
    assert response.status_code == 413
    assert response.is_json and response.json["status"] == "error"
    assert emitter.events == []


def test_unknown_path_answers_json(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.is_json


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_logs_are_json_lines_without_the_secret(client):
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(webhooks.JsonLines())
    webhooks.logger.addHandler(handler)
    try:
        post_github(client, push_body(), delivery="log-1")
        post_github(client, push_body(), signature="sha256=" + "1" * 64)
        client.post("/eventgrid", headers=KEY, json=[blob_created("models/x/1/manifest.json")])
    finally:
        webhooks.logger.removeHandler(handler)
    err = stream.getvalue()
    assert [json.loads(line)["message"] for line in err.splitlines()] == ["emitted", "refused", "emitted"]
    assert '"delivery_id": "log-1"' in err  # the JSON lines are there...
    assert SECRET not in err and EVENTGRID_KEY not in err  # ...and the secrets are not


# --- Azure Event Grid ---

def blob_created(path: str, container: str = "models", event_id: str | None = None) -> dict:
    return {
        "id": event_id or str(uuid.uuid4()), "topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}", "eventType": eventgrid.BLOB_CREATED,
        "eventTime": "2024-01-01T00:00:00Z", "dataVersion": "", "metadataVersion": "1",
        "data": {"api": "PutBlob", "contentType": "application/json", "contentLength": 512, "blobType": "BlockBlob",
                 "url": f"https://acct.blob.core.windows.net/{container}/{path}"},
    }


def as_cloudevent(eg: dict) -> dict:
    return {"specversion": "1.0", "type": eg["eventType"], "source": eg["topic"], "id": eg["id"],
            "time": eg["eventTime"], "subject": eg["subject"], "data": eg["data"]}


def test_eventgrid_validation_handshake(client, emitter):
    body = [{"id": "v1", "topic": "t", "subject": "", "eventType": eventgrid.VALIDATION_EVENT, "eventTime": "2024-01-01T00:00:00Z",
             "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://example/validate"},
             "dataVersion": "1", "metadataVersion": "1"}]
    response = client.post("/eventgrid", json=body, headers={**KEY, "aeg-event-type": "SubscriptionValidation"})
    assert response.status_code == 200
    assert response.json == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert emitter.events == []


def test_eventgrid_validation_needs_the_key(client):
    body = [{"id": "v1", "eventType": eventgrid.VALIDATION_EVENT, "data": {"validationCode": "c"}}]
    assert client.post("/eventgrid", json=body).status_code == 401
    assert client.post("/eventgrid", json=body, headers={"aeg-sas-key": "wrong"}).status_code == 401


def test_cloudevents_options_handshake(client):
    response = client.options("/eventgrid", headers={**KEY, "WebHook-Request-Origin": "eventgrid.azure.net"})
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    assert response.is_json


def test_cloudevents_options_handshake_needs_no_key_but_every_post_does(client, emitter):
    response = client.options("/eventgrid", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert response.status_code == 200 and response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert client.post("/eventgrid", json=[blob_created("models/x/3/manifest.json")]).status_code == 401
    assert emitter.events == []


def test_blob_created_manifest_emits_model_registered(client, emitter, resolver):
    response = client.post("/eventgrid", headers=KEY, json=[blob_created("models/x/3/manifest.json")])
    assert response.status_code == 200, response.json
    (event,) = emitter.events
    assert event.event == "aiship.model.registered"
    assert event.resource.id == "aiship.model.x.3"
    assert event.payload == {"name": "x", "version": 3, "sha256": MODEL_SHA,
                             "uri": "http://127.0.0.1:10000/devstoreaccount1/models/models/x/3/model.skops", "publisher": "ds@lab"}
    assert resolver.calls == [("x", 3)]


def test_key_in_a_header_works(client, emitter):
    response = client.post("/eventgrid", json=[blob_created("models/x/3/manifest.json")], headers=KEY)
    assert response.status_code == 200 and len(emitter.events) == 1


def test_blob_created_as_cloudevent_emits(client, emitter):
    single = as_cloudevent(blob_created("models/iris/12/manifest.json"))
    response = client.post("/eventgrid", headers=KEY, data=json.dumps(single), content_type="application/cloudevents+json")
    assert response.status_code == 200
    batch = [as_cloudevent(blob_created("models/iris/13/manifest.json"))]
    response = client.post("/eventgrid", headers=KEY, data=json.dumps(batch), content_type="application/cloudevents-batch+json")
    assert response.status_code == 200
    assert [e.resource.id for e in emitter.events] == ["aiship.model.iris.12", "aiship.model.iris.13"]


@pytest.mark.parametrize("path,container", [
    ("models/x/3/model.skops", "models"),       # the model file, not the manifest
    ("models/x/3/claim", "models"),
    ("models/x/latest/manifest.json", "models"),  # not a version number
    ("other/x/3/manifest.json", "models"),      # not under models/
    ("models/x/3/manifest.json", "elsewhere"),  # another container
    ("models/X_Y/3/manifest.json", "models"),   # not a valid model name
])
def test_other_blobs_emit_nothing(client, emitter, resolver, path, container):
    response = client.post("/eventgrid", headers=KEY, json=[blob_created(path, container)])
    assert response.status_code == 202 and response.json["status"] == "ignored"
    assert emitter.events == [] and resolver.calls == []


def test_other_event_types_emit_nothing(client, emitter):
    event = blob_created("models/x/3/manifest.json") | {"eventType": "Microsoft.Storage.BlobDeleted"}
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 202
    assert emitter.events == []


def test_bad_key_emits_nothing(client, emitter):
    response = client.post("/eventgrid", headers={"aeg-sas-key": SECRET}, json=[blob_created("models/x/3/manifest.json")])
    assert response.status_code == 401 and emitter.events == []


def test_eventgrid_has_a_key_of_its_own_and_only_in_its_header(client, emitter):
    event = [blob_created("models/x/3/manifest.json")]
    github_secret = client.post("/eventgrid", headers={"aeg-sas-key": SECRET}, json=event)
    in_the_url = client.post(f"/eventgrid?key={EVENTGRID_KEY}", json=event)
    assert (github_secret.status_code, in_the_url.status_code) == (401, 401) and emitter.events == []
    assert "aeg-sas-key header" in in_the_url.json["reason"]
    assert client.post("/eventgrid", headers=KEY, json=event).status_code == 200 and len(emitter.events) == 1


def test_without_its_key_block_only_eventgrid_is_closed(tmp_path, emitter, monkeypatch):
    from prefect.blocks.system import Secret

    def missing(name):
        raise ValueError(f"Unable to find block document named {name} for block type secret")

    monkeypatch.setattr(Secret, "load", staticmethod(missing))
    client = webhooks.create_app({"WEBHOOK_SECRET": SECRET, "AZURE_REPOS_SECRET": AZURE_REPOS_SECRET, "EMITTER": emitter,
                                  "MANIFEST_RESOLVER": FakeResolver(), "DELIVERY_DB": tmp_path / "d.sqlite",
                                  "APPS": [SHOP]}).test_client()
    response = client.post("/eventgrid", headers={"aeg-sas-key": "anything"}, json=[blob_created("models/x/3/manifest.json")])
    assert response.status_code == 503 and "aiship-eventgrid-key" not in response.json["reason"]
    assert post_github(client, push_body(), delivery="still-open").status_code == 200


def test_redelivered_blob_event_emits_once(client, emitter):
    event = blob_created("models/x/3/manifest.json", event_id="eg-1")
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 200
    again = client.post("/eventgrid", headers=KEY, json=[event])
    assert again.status_code == 202 and again.json["ignored"][0]["reason"] == "duplicate"
    assert len(emitter.events) == 1


def test_unknown_version_is_ignored_not_retried(client, emitter, resolver):
    resolver.error = ModelNotFoundError("model 'x' has no version 3")
    response = client.post("/eventgrid", headers=KEY, json=[blob_created("models/x/3/manifest.json")])
    assert response.status_code == 202 and "no version 3" in response.json["ignored"][0]["reason"]
    assert emitter.events == []


def test_unreachable_store_is_503_so_event_grid_retries(client, emitter, resolver):
    event = blob_created("models/x/3/manifest.json", event_id="eg-2")
    resolver.error = ModelStoreError("read failed: ConnectionError: refused", transient=True)
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 503
    resolver.error = None
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 200
    assert len(emitter.events) == 1


def test_eventgrid_emit_failure_is_503(client, emitter):
    emitter.down = True
    event = blob_created("models/x/3/manifest.json", event_id="eg-3")
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 503
    emitter.down = False
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 200


def test_eventgrid_body_over_the_limit_is_413(client, emitter):
    event = blob_created("models/x/3/manifest.json") | {"padding": "x" * (64 * 1024)}
    response = client.post("/eventgrid", headers=KEY, json=[event])
    assert response.status_code == 413 and response.is_json and emitter.events == []


def test_malformed_eventgrid_body_is_400(client):
    response = client.post("/eventgrid", headers=KEY, data=b"{not json", content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("field, value", [("subject", 5), ("id", ["a"]), ("eventType", {"x": 1}), ("data", "text"), ("subject", True)])
def test_an_eventgrid_field_of_the_wrong_type_is_400_never_500(client, emitter, field, value):
    event = blob_created("models/iris/1/manifest.json") | {field: value}
    response = client.post("/eventgrid", headers=KEY, json=[event])
    assert response.status_code == 400 and response.json["status"] == "invalid", response.json
    assert emitter.events == []


def test_the_same_event_twice_in_one_batch_registers_once(client, emitter, resolver):
    event = blob_created("models/iris/4/manifest.json", event_id="eg-twice")
    response = client.post("/eventgrid", headers=KEY, json=[event, event])
    assert response.status_code == 200, response.json
    assert len(emitter.events) == 1 and response.json["ignored"] == [{"id": "eg-twice", "reason": "duplicate in this batch"}]


# --- the delivery log ---

def _claim_in_process(path: str, key: str, out) -> None:
    out.put(DeliveryLog(path).claim(key))


def test_delivery_log_claims_once_across_processes(tmp_path):
    path = str(tmp_path / "d.sqlite")
    DeliveryLog(path)
    queue = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_claim_in_process, args=(path, "k", queue)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = sorted(queue.get(timeout=5) for _ in procs)
    assert results.count("new") == 1 and results.count("pending") == 5


def test_delivery_log_is_bounded(tmp_path):
    log = DeliveryLog(tmp_path / "d.sqlite", keep=5)
    for i in range(20):
        assert log.claim(f"k{i}") == "new"
        log.confirm(f"k{i}")
    import sqlite3

    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] <= 6
    assert log.claim("k19") == "done"


def test_stale_pending_claim_can_be_taken_again(tmp_path):
    log = DeliveryLog(tmp_path / "d.sqlite", stale=0.0)
    assert log.claim("k") == "new"
    assert log.claim("k") == "new"  # the first claimer died before confirming


def test_missing_secret_block_says_how_to_create_it(monkeypatch):
    from prefect.blocks.system import Secret

    from flows.errors import ConfigurationError

    def unknown(cls, name, *args, **kwargs):
        raise ValueError(f"Unable to find block document named {name} for block type secret")

    monkeypatch.setattr(Secret, "load", classmethod(unknown))
    with pytest.raises(ConfigurationError, match="aiship-webhook-secret.*local/webhooks.sh up"):
        webhooks.load_secret("aiship-webhook-secret")


def test_prefect_emitter_raises_when_the_server_does_not_answer():
    # Port 9 (discard) has no listener here: a refused connection, like a stopped Prefect server.
    emit = webhooks.prefect_emitter("http://127.0.0.1:9/api", timeout=2.0)
    event = webhooks._event(("aiship.git.pushed", {"prefect.resource.id": "aiship.repo.a/b"}, {"sha": SHA}))
    with pytest.raises(webhooks.EmitError, match="did not take the events.*aiship local up prefect"):
        emit([event])


@pytest.mark.parametrize("sha,repo", [("HEAD", "acme/shop"), ("main; rm -rf /", "acme/shop"), (SHA, "acme shop"), (SHA, "../../etc"), (12, "acme/shop")])
def test_malformed_sha_or_repository_is_400(client, emitter, sha, repo):
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "repository": {"full_name": repo}, "pusher": {"name": "x"}}).encode()
    response = post_github(client, body)
    assert response.status_code == 400 and emitter.events == []


def test_unexpected_resolver_error_is_503_and_retry_counts(client, emitter, resolver):
    from flows.errors import ConfigurationError

    event = blob_created("models/x/3/manifest.json", event_id="eg-4")
    resolver.error = ConfigurationError("block 'azurite' not found")
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 503
    resolver.error = None
    assert client.post("/eventgrid", headers=KEY, json=[event]).status_code == 200
    assert len(emitter.events) == 1


def test_eventgrid_event_in_progress_elsewhere_is_503(client, emitter, tmp_path):
    DeliveryLog(tmp_path / "deliveries.sqlite").claim("eventgrid:eg-5")  # another worker holds it
    response = client.post("/eventgrid", headers=KEY, json=[blob_created("models/x/3/manifest.json", event_id="eg-5")])
    assert response.status_code == 503 and emitter.events == []


def test_one_bad_event_in_a_batch_does_not_emit_half_the_batch(client, emitter, resolver):
    first, second = blob_created("models/x/3/manifest.json", event_id="eg-6"), blob_created("models/y/1/manifest.json", event_id="eg-7")

    def flaky(name, version):
        if name == "y":
            raise ModelStoreError("read failed: TimeoutError: slow", transient=True)
        return FakeResolver()(name, version)

    client.application.extensions["aiship_webhooks"]["resolve"] = flaky
    assert client.post("/eventgrid", headers=KEY, json=[first, second]).status_code == 503
    assert emitter.events == []
    client.application.extensions["aiship_webhooks"]["resolve"] = FakeResolver()
    assert client.post("/eventgrid", headers=KEY, json=[first, second]).status_code == 200
    assert sorted(e.resource.id for e in emitter.events) == ["aiship.model.x.3", "aiship.model.y.1"]
