"""flows.events: names, resource ids and payloads exactly as DESIGN.md's Events table."""

from __future__ import annotations

from flows import events


def test_model_registered():
    name, resource, payload = events.model_registered("breast-cancer", 7, "ab" * 32, "s3://b/models/breast-cancer/7/model.skops", "ana@host")

    assert name == events.MODEL_REGISTERED == "aiship.model.registered"
    assert resource["prefect.resource.id"] == "aiship.model.breast-cancer.7"
    assert payload == {
        "name": "breast-cancer", "version": 7, "sha256": "ab" * 32,
        "uri": "s3://b/models/breast-cancer/7/model.skops", "publisher": "ana@host",
    }
    assert type(payload["version"]) is int


def test_model_registered_version_is_an_int_even_from_text():
    _, resource, payload = events.model_registered("m", "3", "0" * 64, "u", "p")
    assert payload["version"] == 3 and resource["prefect.resource.id"] == "aiship.model.m.3"


def test_git_pushed():
    name, resource, payload = events.git_pushed("acme/shop", "refs/heads/main", "c0ffee" * 6 + "abcd", "bob", "d-123")

    assert name == events.GIT_PUSHED == "aiship.git.pushed"
    assert resource["prefect.resource.id"] == "aiship.repo.acme/shop"
    assert payload == {"repo": "acme/shop", "ref": "refs/heads/main", "sha": "c0ffee" * 6 + "abcd", "pusher": "bob", "delivery_id": "d-123"}


def test_builders_are_valid_prefect_events():
    from prefect.events import Event

    for event_name, resource, payload in (
        events.model_registered("m", 1, "0" * 64, "u", "p"),
        events.git_pushed("o/r", "refs/heads/main", "abc", "p", "d"),
    ):
        event = Event(event=event_name, resource=resource, payload=payload)
        assert event.resource.id == resource["prefect.resource.id"]
