"""A release from fetch to rollout: one value, its OCI labels and Kubernetes annotations made and read in one place."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.app_config import ServeSection
from flows.errors import ImageBuildError, RolloutError
from flows.model_store.base import ModelRef
from flows.release import (DIGEST, GIT_SHA, LABEL_MODEL_SHA256, LABEL_REVISION, LABEL_VERSION, MODEL_VERSION, SERVE,
                           ModelId, PinnedRelease, Release, require_pinned)

SHA = "0123456789abcdef" * 2 + "01234567"
DIGEST_1 = "sha256:" + "1" * 64
REF = f"127.0.0.1:5000/aiship-app@{DIGEST_1}"
MODEL = ModelId(name="iris", version=7, sha256="e" * 64)


def release(**changes) -> Release:
    return Release(**{"app": "aiship-app", "git_sha": SHA, "model": MODEL, **changes})


def test_the_tag_the_labels_and_the_annotations_name_the_same_release():
    rel = release(serve=ServeSection(port=9000))
    assert rel.version == "0123456789ab-iris-v7"
    assert rel.image_tag("127.0.0.1:5000/") == "127.0.0.1:5000/aiship-app:0123456789ab-iris-v7"
    labels = rel.labels("2024-05-01T12:00:00Z", "https://example.com/app.git")
    assert (labels[LABEL_REVISION], labels[LABEL_MODEL_SHA256], labels[LABEL_VERSION]) == (SHA, "e" * 64, rel.version)
    assert rel.built_by(labels) and not release(git_sha="f" * 40).built_by(labels)
    ann = rel.pinned(REF).annotations()
    assert (ann[GIT_SHA], ann[MODEL_VERSION], ann[DIGEST]) == (SHA, "7", DIGEST_1)
    assert ServeSection.model_validate_json(ann[SERVE]).port == 9000


def test_annotations_read_back_as_the_release_that_wrote_them():
    pinned = release(serve=ServeSection(predict_path="/score")).pinned(REF)
    back = PinnedRelease.from_annotations(pinned.annotations(), REF, "ignored")
    assert back == pinned and back.digest == DIGEST_1


def test_a_pinned_release_pinned_again_takes_the_new_reference():
    other = "127.0.0.1:5000/aiship-app@sha256:" + "2" * 64
    assert release().pinned(REF).pinned(other).ref == other


def test_a_bad_serve_annotation_is_an_error_that_says_what_to_do_not_nothing_serving():
    from flows.environments import template_release

    ann = release().pinned(REF).annotations() | {SERVE: '{"port": "eighty"}'}
    template = {"metadata": {"annotations": ann}, "spec": {"containers": [{"name": "app", "image": REF}]}}
    with pytest.raises(RolloutError, match=r"(?s)annotation io.aiship/serve is not valid.*deliver the app again"):
        template_release(template, "aiship-app")


def test_a_template_without_annotations_reads_as_its_image_and_the_deployment_name():
    back = PinnedRelease.from_annotations(None, REF, "aiship-app")
    assert (back.app, back.digest, back.git_sha, back.model.name, back.model.version) == ("aiship-app", DIGEST_1, "", "", 0)


def test_a_model_ref_carries_only_its_identity_into_a_release(tmp_path):
    from flows.model_store import LocalModelStore
    from tests.fixtures.models import good_model

    ref = LocalModelStore(tmp_path / "store").publish(good_model(tmp_path / "model"), "iris")
    assert isinstance(ref, ModelRef) and isinstance(ref, ModelId)
    rel = release(model=ref)
    assert type(rel.model) is ModelId and rel.model == ModelId(name="iris", version=1, sha256=ref.sha256)
    assert "uri" not in rel.model_dump_json()


@pytest.mark.parametrize(("changes", "message"), [
    ({"git_sha": "main"}, "a full git commit SHA must be"),
    ({"git_sha": SHA.upper()}, "lower-case hex"),
    ({"app": "Aiship_App"}, "lower-case letters, digits and '-'"),
    ({"model": {"name": "iris", "version": 1, "sha256": "abc"}}, "a sha256 must be"),
    ({"model": {"name": "iris", "version": -1, "sha256": "e" * 64}}, "greater than or equal to 0"),
])
def test_a_release_with_a_malformed_field_is_refused_naming_it(changes, message):
    with pytest.raises(ValidationError, match=message):
        release(**changes)


def test_a_model_name_that_makes_no_docker_tag_is_refused():
    with pytest.raises(ImageBuildError, match="not a valid Docker tag; rename the model"):
        release(model=ModelId(name="iris/../x", version=1, sha256="e" * 64)).image_tag("r")


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/aiship-app:latest", "repo@sha256:abc", f"repo@sha256:{'G' * 64}"])
def test_only_a_reference_by_digest_pins_a_release(ref):
    with pytest.raises(RolloutError, match="not pinned by digest"):
        require_pinned(ref)
    with pytest.raises(ValidationError, match="not pinned by digest"):
        release().pinned(ref)
