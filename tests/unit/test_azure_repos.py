"""Azure Repos pushes (Azure DevOps service hooks) into the receiver, without services."""

from __future__ import annotations

import base64
import json

import pytest

from flows import webhooks
from tests.fixtures.azure_devops import git_push
from tests.unit.test_webhooks import SECRET as GITHUB_SECRET
from tests.unit.test_webhooks import FakeEmitter, FakeResolver, registration

SECRET = "azure-repos-own-secret"

SHA = "33b55f7cb7e7e245323987634f960cf4a6e6bc74"
FABRIKAM = registration("fabrikam", ["Fabrikam-Fiber-Git/Fabrikam-Fiber-Git"])


@pytest.fixture
def emitter() -> FakeEmitter:
    return FakeEmitter()


@pytest.fixture
def client(tmp_path, emitter):
    app = webhooks.create_app({"WEBHOOK_SECRET": GITHUB_SECRET, "AZURE_REPOS_SECRET": SECRET, "EVENTGRID_KEY": "unit-test-eventgrid-key", "EMITTER": emitter, "MANIFEST_RESOLVER": FakeResolver(),
                               "DELIVERY_DB": tmp_path / "deliveries.sqlite", "APPS": [FABRIKAM]})
    return app.test_client()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(client, body: bytes, headers: dict[str, str] | None = None):
    return client.post("/azure-repos", data=body, headers={"Content-Type": "application/json", **(headers or {})})


def test_a_push_with_the_service_hooks_basic_credentials_becomes_aiship_git_pushed(client, emitter):
    body = git_push(event_id="ev-1")
    response = post(client, body, basic("azure-devops", SECRET))
    assert response.status_code == 200, response.json
    (event,) = emitter.events
    assert event.event == "aiship.git.pushed"
    assert event.resource.id == "aiship.repo.Fabrikam-Fiber-Git/Fabrikam-Fiber-Git"
    assert event.payload == {"repo": "Fabrikam-Fiber-Git/Fabrikam-Fiber-Git", "ref": "refs/heads/main", "sha": SHA,
                             "pusher": "Windows Live ID\\fabrikamfiber4@hotmail.com", "delivery_id": "ev-1"}


def test_the_secret_header_authenticates_too(client, emitter):
    assert post(client, git_push(), {"X-Aiship-Secret": SECRET}).status_code == 200 and len(emitter.events) == 1


@pytest.mark.parametrize("headers", [{}, basic("azure-devops", "wrong"), {"Authorization": "Basic !!!"},
                                     {"Authorization": "Bearer " + SECRET}, {"X-Aiship-Secret": "wrong"},
                                     basic("azure-devops", GITHUB_SECRET), {"X-Aiship-Secret": GITHUB_SECRET}])
def test_wrong_or_missing_credentials_are_401_and_emit_nothing(client, emitter, headers):
    # GitHub's secret among them: each sender has a secret of its own
    response = post(client, git_push(), headers)
    assert response.status_code == 401 and "the secret of its Prefect block" in response.json["reason"]
    assert emitter.events == []


def test_without_its_secret_block_only_azure_repos_is_closed(tmp_path, emitter, monkeypatch):
    from prefect.blocks.system import Secret

    def missing(name):
        raise ValueError(f"Unable to find block document named {name} for block type secret")

    monkeypatch.setattr(Secret, "load", staticmethod(missing))
    app = webhooks.create_app({"WEBHOOK_SECRET": GITHUB_SECRET, "EMITTER": emitter, "MANIFEST_RESOLVER": FakeResolver(),
                               "DELIVERY_DB": tmp_path / "deliveries.sqlite", "APPS": [FABRIKAM]})
    response = post(app.test_client(), git_push(), basic("u", SECRET))
    assert response.status_code == 503 and emitter.events == []
    assert "not configured on this receiver" in response.json["reason"]
    assert "aiship-azure-repos-secret" not in response.json["reason"]  # block names are for the log, not the caller


def test_a_redelivered_event_id_is_emitted_once(client, emitter):
    body = git_push(event_id="ev-same")
    assert post(client, body, basic("u", SECRET)).json["status"] == "emitted"
    again = post(client, body, basic("u", SECRET))
    assert again.status_code == 200 and again.json["status"] == "duplicate" and len(emitter.events) == 1


@pytest.mark.parametrize("body, reason", [
    (git_push(ref="refs/heads/feature"), "refs/heads/feature is not the branch of app fabrikam (refs/heads/main)"),
    (git_push(project="Other"), "no app claims the repository 'Other/Fabrikam-Fiber-Git'"),
    (git_push(event_type="git.pullrequest.created"), "only git.push"),
])
def test_other_events_and_branches_are_ignored(client, emitter, body, reason):
    response = post(client, body, basic("u", SECRET))
    assert response.status_code == 202 and reason in response.json["reason"] and emitter.events == []


@pytest.mark.parametrize("body", [b"not json", json.dumps({"eventType": "git.push"}).encode(),
                                  git_push(sha="not-a-sha"), git_push(project="a/b"),
                                  json.dumps({"eventType": "git.push", "id": 1, "resource": {"refUpdates": 3}}).encode()])
def test_a_malformed_push_is_400_never_500(client, emitter, body):
    response = post(client, body, basic("u", SECRET))
    assert response.status_code == 400 and response.json["status"] == "invalid" and emitter.events == []
