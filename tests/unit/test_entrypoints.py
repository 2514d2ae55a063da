"""Cheap "it loads" checks: every prefect.yaml entrypoint imports as a flow, and its triggers'
templates survive a missing payload field (or the server silently creates no run)."""

from __future__ import annotations

import importlib

import pytest
import yaml
from prefect import Flow

from flows.settings import REPO_ROOT

DEPLOYMENTS = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_entrypoint_is_a_flow(deployment):
    path, _, name = deployment["entrypoint"].partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert isinstance(getattr(module, name), Flow)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_trigger_templates_default_missing_payload_fields(deployment):
    for trigger in deployment.get("triggers", []):
        for param, template in trigger.get("parameters", {}).items():
            if "event.payload" in template:
                assert "default(none)" in template, f"{deployment['name']}.{param}: {template}"


def test_trigger_parameters_are_parameters_of_the_flow():
    for deployment in DEPLOYMENTS:
        path, _, name = deployment["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        accepted = set(flow.parameters.properties)
        for trigger in deployment.get("triggers", []):
            assert set(trigger.get("parameters", {})) <= accepted, deployment["name"]
        assert set(deployment.get("parameters", {})) <= accepted, deployment["name"]


def test_the_app_factory_builds_and_answers_health(tmp_path):
    from tests.fixtures.models import published_model

    from app import create_app

    model_dir = published_model(tmp_path / "m", name="smoke", version=1)
    app = create_app({"MODEL_DIR": str(model_dir), "TESTING": True})
    assert app.test_client().get("/healthz").status_code == 200
