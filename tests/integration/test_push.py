"""Integration: push to the local TLS + htpasswd registry by digest; a model-only change uploads one layer."""

from __future__ import annotations

import json

import pytest

from flows.registry import PushedImage, find_existing, load_credentials, push
from flows.settings import Settings
from tests.integration.test_image_build import FIGURES, build, client, layer_diff_ids


@pytest.fixture(scope="module")
def credentials():
    """The `local-registry` block; until it exists, the same values from the registry's state folder."""
    settings = Settings()
    try:
        return load_credentials(settings.registry_credentials_block)
    except Exception as block_error:
        from prefect_docker.credentials import DockerRegistryCredentials

        path = settings.state_dir / "registry" / "credentials.json"
        if not path.is_file():
            pytest.fail(f"no registry credentials ({block_error}) and no {path}; run `aiship local up registry`")
        data = json.loads(path.read_text())
        return DockerRegistryCredentials(username=data["username"], password=data["password"],
                                         registry_url=data["registry_url"])


def split(tag: str) -> tuple[str, str]:
    repo, _, name = tag.rpartition(":")
    return repo, name


def test_push_then_model_only_repush_uploads_exactly_the_model_layer(credentials):
    first, second = build("v1"), build("v2")
    pushed = push(client(), *split(first.tag), credentials)
    FIGURES["push v1 s"], FIGURES["push v1 bytes"] = pushed.seconds, pushed.bytes_pushed
    assert isinstance(pushed, PushedImage) and pushed.ref == f"{split(first.tag)[0]}@{pushed.digest}"
    again = push(client(), *split(second.tag), credentials)
    FIGURES["push v2 (model only) s"], FIGURES["push v2 bytes"] = again.seconds, again.bytes_pushed
    model_layer = layer_diff_ids(client(), second.image_id)[-1]
    assert again.layers_pushed == (model_layer[len("sha256:"):][:12],)
    assert len(again.layers_existing) == len(layer_diff_ids(client(), second.image_id)) - 1
    assert again.digest != pushed.digest


def test_find_existing_returns_the_pushed_digest_only_for_the_same_inputs(credentials):
    built = build("v1")
    pushed = push(client(), *split(built.tag), credentials)
    found = find_existing(*split(built.tag), built.labels, credentials)
    assert found is not None and found.ref == pushed.ref
    other_model = {**built.labels, "io.aiship.model.sha256": "0" * 64}
    assert find_existing(*split(built.tag), other_model, credentials) is None
    assert find_existing(split(built.tag)[0], "no-such-tag", built.labels, credentials) is None


def test_wrong_password_is_refused_and_not_transient(credentials):
    from prefect_docker.credentials import DockerRegistryCredentials

    from flows.errors import ImagePushError
    from flows.retry import is_transient

    wrong = DockerRegistryCredentials(username=credentials.username, password="not-the-password",
                                      registry_url=credentials.registry_url)
    with pytest.raises(ImagePushError) as info:
        push(client(), *split(build("v1").tag), wrong)
    assert not is_transient(info.value), str(info.value)
    assert "not-the-password" not in str(info.value)
