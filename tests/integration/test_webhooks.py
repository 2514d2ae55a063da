"""The real receiver (gunicorn on 127.0.0.1:8700, `bash local/webhooks.sh up`) against the real Prefect server.

Events these tests emit name the repository `aiship-tests/<uuid>`, so that no deployment trigger
watching the project's own repository (`aiship.repo.local/aiship`) starts a delivery for them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid

import httpx
import pytest

from flows.settings import REPO_ROOT
from tests.prefect_events import answers, read_events, running_receiver, wait_for_event
from flows.webhooks import github_signature

pytestmark = pytest.mark.usefixtures("pushes_app")  # the repositories these tests push from deliver an app



@pytest.fixture(scope="module")
def receiver(settings) -> str:
    """The receiver's base URL; fails (never skips) when it or the Prefect server is not running."""
    return running_receiver(settings)


@pytest.fixture(scope="module")
def secret(settings) -> str:
    """The shared secret, read from the Prefect Secret block the receiver reads."""
    from prefect.blocks.system import Secret

    return str(Secret.load(settings.webhook_secret_block).get())


@pytest.fixture(scope="module")
def eventgrid_key(settings) -> dict[str, str]:
    """Event Grid's key, from its own Secret block, as the header Event Grid sends it in."""
    from prefect.blocks.system import Secret

    return {"aeg-sas-key": str(Secret.load(settings.eventgrid_key_block).get())}


def push(receiver: str, secret: str | None, repo: str, sha: str, delivery: str | None = None, signature: str | None = None) -> httpx.Response:
    body = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": sha, "repository": {"full_name": repo},
                       "pusher": {"name": "integration"}}).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery or str(uuid.uuid4()), "Content-Type": "application/json",
               "X-Hub-Signature-256": signature or github_signature(secret, body)}
    return httpx.post(f"{receiver}/github", content=body, headers=headers, timeout=30)


def new_repo() -> str:
    return f"aiship-tests/{uuid.uuid4().hex[:12]}"


def new_sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def test_secret_file_for_the_git_hook_matches_the_block(settings, secret):
    path = settings.state_dir / "webhooks" / "secret"
    assert path.read_text() == secret
    assert path.stat().st_mode & 0o777 == 0o600


def test_signed_push_becomes_an_event_on_the_server(receiver, secret):
    repo, sha, delivery = new_repo(), new_sha(), str(uuid.uuid4())
    response = push(receiver, secret, repo, sha, delivery)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "emitted"
    event = wait_for_event("aiship.git.pushed", f"aiship.repo.{repo}", sha=sha)
    assert event["payload"] == {"repo": repo, "ref": "refs/heads/main", "sha": sha, "pusher": "integration", "delivery_id": delivery}
    assert event["id"] == response.json()["event_id"]


def test_wrong_signature_is_401_and_no_event(receiver, secret):
    repo, bad_sha, good_sha = new_repo(), new_sha(), new_sha()
    refused = push(receiver, secret, repo, bad_sha, signature="sha256=" + "0" * 64)
    assert refused.status_code == 401 and refused.json()["status"] == "refused"
    unsigned = push(receiver, "some other secret", repo, bad_sha)
    assert unsigned.status_code == 401
    # A good push sent after the bad ones is stored; by then a bad one would be stored too.
    assert push(receiver, secret, repo, good_sha).status_code == 200
    wait_for_event("aiship.git.pushed", f"aiship.repo.{repo}", sha=good_sha)
    assert [e["payload"]["sha"] for e in read_events("aiship.git.pushed", f"aiship.repo.{repo}")] == [good_sha]


def test_replayed_delivery_makes_one_event(receiver, secret):
    repo, sha, delivery = new_repo(), new_sha(), str(uuid.uuid4())
    assert push(receiver, secret, repo, sha, delivery).json()["status"] == "emitted"
    # Several times, so that both gunicorn workers (separate processes) see the replay.
    for _ in range(4):
        again = push(receiver, secret, repo, sha, delivery)
        assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    marker = new_sha()
    push(receiver, secret, repo, marker)
    wait_for_event("aiship.git.pushed", f"aiship.repo.{repo}", sha=marker)
    assert [e["payload"]["sha"] for e in read_events("aiship.git.pushed", f"aiship.repo.{repo}")].count(sha) == 1


def test_body_over_the_limit_is_413(receiver, secret, settings):
    body = b'{"padding": "' + b"x" * settings.webhook_max_bytes + b'"}'
    response = httpx.post(f"{receiver}/github", content=body, timeout=30, headers={
        "X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
        "X-Hub-Signature-256": github_signature(secret, body)})
    assert response.status_code == 413 and response.json()["status"] == "error"


def test_ping(receiver, secret):
    body = b'{"zen": "Design for failure.", "hook_id": 1}'
    response = httpx.post(f"{receiver}/github", content=body, timeout=30, headers={
        "X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
        "X-Hub-Signature-256": github_signature(secret, body)})
    assert response.status_code == 200 and response.json() == {"status": "pong"}


def test_eventgrid_handshakes(receiver, secret, eventgrid_key):
    validation = [{"id": str(uuid.uuid4()), "topic": "t", "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                   "eventTime": "2024-01-01T00:00:00Z", "data": {"validationCode": "code-123"}, "dataVersion": "1", "metadataVersion": "1"}]
    response = httpx.post(f"{receiver}/eventgrid", json=validation, timeout=30,
                          headers={**eventgrid_key, "aeg-event-type": "SubscriptionValidation"})
    assert response.status_code == 200 and response.json() == {"validationResponse": "code-123"}
    assert httpx.post(f"{receiver}/eventgrid", headers={"aeg-sas-key": secret}, json=validation, timeout=30).status_code == 401
    options = httpx.options(f"{receiver}/eventgrid", headers={**eventgrid_key, "WebHook-Request-Origin": "eventgrid.azure.net"}, timeout=30)
    assert options.status_code == 200 and options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


def test_receiver_log_holds_json_lines_without_the_secret(receiver, secret, settings):
    log = (settings.state_dir / "webhooks" / "gunicorn.log").read_text()
    ours = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line["message"] == "emitted" for line in ours)
    assert secret not in log


# --- the script's contract, on a second instance with its own port and state folder ---

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script(action: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO_ROOT / "local" / "webhooks.sh"), action], env=env, capture_output=True, text=True, timeout=180)


def test_script_up_is_idempotent_and_down_stops_only_its_pid(receiver, tmp_path):
    env = dict(os.environ, AISHIP_STATE_DIR=str(tmp_path), AISHIP_WEBHOOK_PORT=str(_free_port()))
    try:
        first = _script("up", env)
        assert first.returncode == 0, first.stderr
        state, address, pid, version = _script("status", env).stdout.strip().split("\t")
        assert state == "running" and address.endswith(env["AISHIP_WEBHOOK_PORT"]) and version.startswith("gunicorn")
        assert _script("up", env).returncode == 0
        assert _script("status", env).stdout.split("\t")[2] == pid  # reused, not restarted
        assert answers(f"{address}/healthz")
    finally:
        assert _script("down", env).returncode == 0
    assert _script("status", env).stdout.startswith("stopped\t")
    assert not answers(f"http://127.0.0.1:{env['AISHIP_WEBHOOK_PORT']}/healthz")
    assert answers(f"{receiver}/healthz")  # the shared receiver still runs


def test_script_refuses_a_taken_port_in_one_line(tmp_path, receiver, settings):
    env = dict(os.environ, AISHIP_STATE_DIR=str(tmp_path), AISHIP_WEBHOOK_PORT=str(settings.webhook_port))
    result = _script("up", env)
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("aiship local webhooks: ")]
    assert len(errors) == 1 and "AISHIP_WEBHOOK_PORT" in errors[0]


# --- Event Grid with the real model store (Azurite) ---

@pytest.fixture(scope="module")
def azure_store(settings):
    """The Azure model store the receiver reads (Azurite, block `settings.azure_credentials_block`)."""
    from flows.model_store import get_store

    try:
        store = get_store(settings, kind="azure")
        store.versions("aiship-tests-probe")
    except Exception as exc:
        pytest.fail(f"the Azure model store is not usable ({type(exc).__name__}: {exc}); start Azurite and write the blocks with `aiship local up`")
    return store


def test_blob_created_of_a_published_manifest_becomes_model_registered(receiver, eventgrid_key, azure_store, tmp_path, settings):
    from app.train import train

    name = f"aiship-tests-{uuid.uuid4().hex[:10]}"
    train(tmp_path / "model")
    ref = azure_store.publish(tmp_path / "model", name, publisher="integration@test")
    blob = f"models/{name}/{ref.version}/manifest.json"
    event = {"id": str(uuid.uuid4()), "topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
             "subject": f"/blobServices/default/containers/{settings.azure_container}/blobs/{blob}",
             "eventType": "Microsoft.Storage.BlobCreated", "eventTime": "2024-01-01T00:00:00Z", "dataVersion": "", "metadataVersion": "1",
             "data": {"api": "PutBlob", "blobType": "BlockBlob", "url": f"http://127.0.0.1:{settings.azurite_port}/devstoreaccount1/{settings.azure_container}/{blob}"}}
    response = httpx.post(f"{receiver}/eventgrid", headers=eventgrid_key, json=[event], timeout=30)
    assert response.status_code == 200, response.text
    (emitted,) = response.json()["emitted"]
    stored = wait_for_event("aiship.model.registered", f"aiship.model.{name}.{ref.version}", sha256=ref.sha256)
    assert stored["id"] == emitted["event_id"]
    assert stored["payload"] == {"name": name, "version": ref.version, "sha256": ref.sha256, "uri": ref.uri, "publisher": "integration@test"}
    # The model file's own BlobCreated is not a registration.
    other = dict(event, id=str(uuid.uuid4()), subject=event["subject"].replace("manifest.json", "model.skops"))
    assert httpx.post(f"{receiver}/eventgrid", headers=eventgrid_key, json=[other], timeout=30).status_code == 202


def test_an_azure_repos_push_becomes_the_same_event_on_the_server(receiver, secret, settings):
    import base64

    from prefect.blocks.system import Secret

    from tests.fixtures.azure_devops import git_push

    own = str(Secret.load(settings.azure_repos_secret_block).get())  # the service hook's, written by local/webhooks.sh
    assert own != secret
    project, repository, sha, event_id = "aiship-tests", uuid.uuid4().hex[:12], new_sha()[:40], str(uuid.uuid4())
    basic = lambda password: {"Authorization": "Basic " + base64.b64encode(f"azure-devops:{password}".encode()).decode()}  # noqa: E731
    auth = basic(own)
    body = git_push(project=project, repository=repository, sha=sha, event_id=event_id)
    for wrong in ({}, basic(secret)):  # nothing, or GitHub's secret
        refused = httpx.post(f"{receiver}/azure-repos", content=body, headers={"Content-Type": "application/json", **wrong}, timeout=30)
        assert refused.status_code == 401, refused.text
    response = httpx.post(f"{receiver}/azure-repos", content=body, headers={"Content-Type": "application/json", **auth}, timeout=30)
    assert response.status_code == 200, response.text
    repo = f"{project}/{repository}"
    event = wait_for_event("aiship.git.pushed", f"aiship.repo.{repo}", sha=sha)
    assert event["payload"] == {"repo": repo, "ref": "refs/heads/main", "sha": sha,
                                "pusher": "Windows Live ID\\fabrikamfiber4@hotmail.com", "delivery_id": event_id}
