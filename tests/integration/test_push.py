"""Integration: push to the local TLS + htpasswd registry by digest; a model-only change uploads one layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.errors import SmokeTestError

from flows.distribution import RegistryAPI
from flows.registry import PushedImage, find_existing, push_built
from tests.integration.test_image_build import FIGURES, build, client, layer_diff_ids


def split(tag: str) -> tuple[str, str]:
    repo, _, name = tag.rpartition(":")
    return repo, name


def test_push_then_model_only_repush_uploads_exactly_the_model_layer(registry_credentials):
    first, second = build("v1"), build("v2")
    pushed = push_built(client(), first, registry_credentials)
    FIGURES["push v1 s"], FIGURES["push v1 bytes"] = pushed.seconds, pushed.bytes_pushed
    assert isinstance(pushed, PushedImage) and pushed.ref == f"{split(first.tag)[0]}@{pushed.digest}"
    again = push_built(client(), second, registry_credentials)
    FIGURES["push v2 (model only) s"], FIGURES["push v2 bytes"] = again.seconds, again.bytes_pushed
    model_layer = layer_diff_ids(client(), second.image_id)[-1]
    assert again.layers_pushed == (model_layer[len("sha256:"):][:12],)
    assert again.bytes_pushed == second.model_layer.size
    assert len(again.layers_existing) == len(layer_diff_ids(client(), second.image_id)) - 1
    assert again.digest != pushed.digest


def test_pushed_image_is_the_smoke_tested_image(registry_credentials):
    built = build("v1")
    pushed = push_built(client(), built, registry_credentials)
    with RegistryAPI(pushed.repository, registry_credentials) as registry:
        manifest, digest = registry.manifest(pushed.digest)
        config_digest = json.loads(manifest)["config"]["digest"]
        assert digest == pushed.digest and config_digest == built.image_id
        assert registry.blob(config_digest) == built.config
    client().api.pull(pushed.ref.partition("@")[0], tag=pushed.digest,
                      auth_config={"username": registry_credentials.username,
                                   "password": registry_credentials.password.get_secret_value()})
    assert client().api.inspect_image(pushed.ref)["Id"] == built.image_id  # dockerd pulled the same image


def test_code_only_change_pushes_the_code_layer_but_not_the_model_layer(registry_credentials):
    push_built(client(), build("v1"), registry_credentials)
    changed = build("v1", source="code")
    pushed = push_built(client(), changed, registry_credentials)
    code_layer, model_layer = layer_diff_ids(client(), changed.image_id)[-2:]
    assert pushed.layers_pushed == (code_layer[len("sha256:"):][:12],)
    assert model_layer[len("sha256:"):][:12] in pushed.layers_existing


def test_same_push_twice_sends_nothing_and_gives_the_same_digest(registry_credentials):
    built = build("v2")
    first, second = push_built(client(), built, registry_credentials), push_built(client(), built, registry_credentials)
    assert second.digest == first.digest and second.layers_pushed == () and second.bytes_pushed == 0


def test_find_existing_returns_the_pushed_digest_only_for_the_same_inputs(registry_credentials):
    built = build("v1")
    pushed = push_built(client(), built, registry_credentials)
    found = find_existing(*split(built.tag), built.release, registry_credentials)
    assert found is not None and found.ref == pushed.ref
    other_model = built.release.model_copy(update={"model": built.release.model.model_copy(update={"sha256": "0" * 64})})
    assert find_existing(*split(built.tag), other_model, registry_credentials) is None
    assert find_existing(split(built.tag)[0], "no-such-tag", built.release, registry_credentials) is None


def test_wrong_password_is_refused_and_not_transient(registry_credentials):
    from prefect_docker.credentials import DockerRegistryCredentials

    from flows.errors import ImagePushError
    from flows.retry import is_transient

    wrong = DockerRegistryCredentials(username=registry_credentials.username, password="not-the-password",
                                      registry_url=registry_credentials.registry_url)
    with pytest.raises(ImagePushError) as info:
        push_built(client(), build("v1"), wrong)
    assert not is_transient(info.value), str(info.value)
    assert "not-the-password" not in str(info.value)


def test_without_docker_load_the_code_image_and_mounted_model_are_tested_and_the_same_image_is_pushed(
        registry_credentials, tmp_path):
    """`AISHIP_SMOKE_TEST_MODEL=mount`: dockerd never holds the whole image, and what is pushed is
    the image a `docker load` build gives for the same inputs, byte for byte."""
    import docker.errors

    from app.train import train
    from flows.image import build_app_image
    from flows.model_store import LocalModelStore
    from flows.release import Release
    from flows.settings import Settings
    from flows.smoke_test import check_unchanged, run_smoke_test
    from tests.integration.test_image_build import MODEL_NAME, TEST_REPO, main_source, models, wheelhouse

    store, tree, settings = LocalModelStore(tmp_path / "store"), main_source(), Settings()
    fetched = store.fetch(store.publish(train(tmp_path / "train", seed=2), MODEL_NAME), tmp_path / "fetched")
    release = Release(app=TEST_REPO, git_sha=tree.sha, model=fetched.ref)

    def build_it(load: bool):
        return build_app_image(client(), tree.path, release, fetched.path, fetched.manifest_path, tree.committed_at,
                               tree.repo_url, wheelhouse(), release.image_tag(settings.registry_host),
                               settings.base_image, load=load)

    built = build_it(load=False)
    assert not built.loaded and "docker load" not in dict(built.timings)
    with pytest.raises(docker.errors.ImageNotFound):
        client().api.inspect_image(built.image_id)  # dockerd has the code image only
    assert sorted(name for name, _ in built.model_files) == ["opt/model/manifest.json", "opt/model/model.skops"]

    result = run_smoke_test(client(), built.code_image_id, built.labels, fetched.ref.manifest.golden_set,
                            mounts=built.model_files)
    assert result.checks_passed == ("readyz", "version", "golden_set") and result.mismatches == ()
    check_unchanged(built)
    # The mounted files are what the app serves: another model's there is what /version names.
    bad = models()["bad"]
    for path in (bad.manifest_path, bad.path):
        Path(path).chmod(0o644)  # as build_app_image leaves the files it layers (the store writes them 0600)
    with pytest.raises(SmokeTestError, match=f"does not match the image's labels: .*/version says '{bad.ref.sha256}'"):
        run_smoke_test(client(), built.code_image_id, built.labels, bad.ref.manifest.golden_set,
                       mounts=(("opt/model/manifest.json", bad.manifest_path), ("opt/model/model.skops", bad.path)))

    # The image `docker load` gives for the same inputs (dockerd did not hold it: this one is loaded) ...
    loaded = build_it(load=True)
    assert loaded.loaded and "docker load" in dict(loaded.timings) and loaded.image_id == built.image_id
    assert client().api.inspect_image(built.image_id)["RootFS"]["Layers"][-1] == built.model_layer.digest
    # ... is the image pushed.
    pushed = push_built(client(), built, registry_credentials)
    with RegistryAPI(pushed.repository, registry_credentials) as registry:
        manifest, _ = registry.manifest(pushed.digest)
        assert json.loads(manifest)["config"]["digest"] == built.image_id

    # A mounted file that changed after the layer was written is caught.
    with fetched.path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(SmokeTestError, match="changed after the layer was written"):
        check_unchanged(built)
