"""Integration: smoke-test real containers of the app image; the container never outlives the test."""

from __future__ import annotations

import pytest

from flows.errors import SmokeTestError
from flows.smoke_test import SMOKE_LABEL, GoldenSetMismatch, run_smoke_test
from tests.integration.test_image_build import FIGURES, build, client, models


def smoke_containers() -> list:
    return client().containers.list(all=True, filters={"label": SMOKE_LABEL})


def test_good_model_passes_every_check_and_the_container_is_removed():
    built, model = build("v1"), models()["v1"]
    result = run_smoke_test(client(), built.image_id, built.labels, model.ref.manifest.golden_set)
    FIGURES["smoke test s"] = result.seconds
    assert result.checks_passed == ("readyz", "version", "golden_set")
    assert result.golden_rows == len(model.ref.manifest.golden_set.inputs) and result.mismatches == ()
    assert smoke_containers() == []


def test_model_failing_its_golden_set_raises_with_rows_and_logs_and_leaves_no_container():
    built, model = build("bad"), models()["bad"]
    with pytest.raises(GoldenSetMismatch) as info:
        run_smoke_test(client(), built.image_id, built.labels, model.ref.manifest.golden_set)
    message = str(info.value)
    assert "golden set failed (exact)" in message and "--- container log (last lines) ---" in message
    assert "/predict" in message.split("--- container log")[1]  # the app's access log lines are there
    assert any(not row.ok for row in info.value.rows)
    assert smoke_containers() == []


def test_version_that_contradicts_the_labels_fails():
    built, model = build("v1"), models()["v1"]
    with pytest.raises(SmokeTestError, match="org.opencontainers.image.revision"):
        run_smoke_test(client(), built.image_id, built.labels, model.ref.manifest.golden_set,
                       env={"AISHIP_APP_GIT_SHA": "f" * 40})
    assert smoke_containers() == []


def test_container_that_never_gets_ready_fails_at_the_deadline_with_its_logs():
    built, model = build("v1"), models()["v1"]
    with pytest.raises(SmokeTestError, match="before /readyz answered 200|did not answer 200 within") as info:
        run_smoke_test(client(), built.image_id, built.labels, model.ref.manifest.golden_set,
                       ready_within=30, env={"AISHIP_APP_MODEL_DIR": "/nonexistent"})
    assert "container log" in str(info.value)
    assert smoke_containers() == []
