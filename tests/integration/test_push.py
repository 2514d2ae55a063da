"""Integration: push to the local TLS + htpasswd registry by digest; a model-only change uploads one layer."""

from __future__ import annotations

import pytest

from flows.registry import PushedImage, find_existing, push
from tests.integration.test_image_build import FIGURES, build, client, layer_diff_ids


def split(tag: str) -> tuple[str, str]:
    repo, _, name = tag.rpartition(":")
    return repo, name


def test_push_then_model_only_repush_uploads_exactly_the_model_layer(registry_credentials):
    first, second = build("v1"), build("v2")
    pushed = push(client(), *split(first.tag), registry_credentials)
    FIGURES["push v1 s"], FIGURES["push v1 bytes"] = pushed.seconds, pushed.bytes_pushed
    assert isinstance(pushed, PushedImage) and pushed.ref == f"{split(first.tag)[0]}@{pushed.digest}"
    again = push(client(), *split(second.tag), registry_credentials)
    FIGURES["push v2 (model only) s"], FIGURES["push v2 bytes"] = again.seconds, again.bytes_pushed
    model_layer = layer_diff_ids(client(), second.image_id)[-1]
    assert again.layers_pushed == (model_layer[len("sha256:"):][:12],)
    assert len(again.layers_existing) == len(layer_diff_ids(client(), second.image_id)) - 1
    assert again.digest != pushed.digest


def test_find_existing_returns_the_pushed_digest_only_for_the_same_inputs(registry_credentials):
    built = build("v1")
    pushed = push(client(), *split(built.tag), registry_credentials)
    found = find_existing(*split(built.tag), built.labels, registry_credentials)
    assert found is not None and found.ref == pushed.ref
    other_model = {**built.labels, "io.aiship.model.sha256": "0" * 64}
    assert find_existing(*split(built.tag), other_model, registry_credentials) is None
    assert find_existing(split(built.tag)[0], "no-such-tag", built.labels, registry_credentials) is None


def test_wrong_password_is_refused_and_not_transient(registry_credentials):
    from prefect_docker.credentials import DockerRegistryCredentials

    from flows.errors import ImagePushError
    from flows.retry import is_transient

    wrong = DockerRegistryCredentials(username=registry_credentials.username, password="not-the-password",
                                      registry_url=registry_credentials.registry_url)
    with pytest.raises(ImagePushError) as info:
        push(client(), *split(build("v1").tag), wrong)
    assert not is_transient(info.value), str(info.value)
    assert "not-the-password" not in str(info.value)
