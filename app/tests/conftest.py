"""Fixtures for the app's own tests: a model trained once per session, and apps built from it."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from app import create_app
from app.train import train


# Every delivery of a commit runs these tests, so its profile keeps the generated cases to what
# finds a 5xx in the app's own code (about 2 s); the thorough profile is for CI's app group, and
# aiship's reliability tests send 10,000 cases to the app as it serves.
_PROPERTIES = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
settings.register_profile("delivery", max_examples=300, **_PROPERTIES)
settings.register_profile("thorough", max_examples=3000, **_PROPERTIES)
settings.load_profile("delivery")


def write_manifest(model_dir: Path, *, name: str = "test-model", version: int = 1) -> dict:
    """Do what publishing does: model.json + the store's fields -> manifest.json."""
    manifest = json.loads((model_dir / "model.json").read_text())
    data = (model_dir / "model.skops").read_bytes()
    manifest.update(name=name, version=version, file="model.skops",
                    sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                    publisher="app-tests", published_at="2025-01-01T00:00:00Z")
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory) -> Path:
    """model.skops + model.json + manifest.json, trained once."""
    out = train(tmp_path_factory.mktemp("model"), seed=0)
    write_manifest(out)
    return out


@pytest.fixture
def model_dir(trained_dir, tmp_path) -> Path:
    """A private copy a test may damage."""
    dest = tmp_path / "model"
    shutil.copytree(trained_dir, dest)
    return dest


@pytest.fixture(scope="session")
def manifest(trained_dir) -> dict:
    return json.loads((trained_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def app(trained_dir):
    return create_app({"MODEL_DIR": str(trained_dir), "GIT_SHA": "abc123", "MAX_ROWS": 50,
                       "MAX_CONTENT_LENGTH": 64 * 1024, "TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def gunicorn_started(trained_dir, tmp_path_factory):
    """One gunicorn (two workers) serving the trained model, started and not waited for: the tests
    that only talk to it share it (test_gunicorn's `served` waits). Yields (process, port); its log
    is checked at the end."""
    from app.tests.gunicorn_server import free_port, start

    folder = tmp_path_factory.mktemp("gunicorn")
    proc = start(trained_dir, folder, port := free_port())
    try:
        yield proc, port
    finally:
        proc.send_signal(signal.SIGINT)  # quick shutdown: what a graceful one adds is not what these tests check
        proc.wait(timeout=30)
    log = (folder / "gunicorn.err").read_text().splitlines()
    assert all(json.loads(line)["logger"] for line in log if line.startswith("{"))


@pytest.fixture(scope="session", autouse=True)
def _gunicorn_boots_first(request):
    """When tests that use the shared gunicorn are selected, it starts before the first test: its
    boot (scikit-learn's import, the model's load) then runs on the other core beside the in-process
    tests instead of after them."""
    if any("gunicorn_started" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("gunicorn_started")
