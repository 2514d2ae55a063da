"""`aiship model publish|list|show`, run as the data scientist runs them, and the event reaching Prefect."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.prefect_events import prefect_auth

# the console script installed next to the interpreter running the tests (the venv's)
AISHIP = [str(Path(sys.executable).parent / "aiship")]


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A real model folder from app.train, trained once per session."""
    from app.train import train

    out = tmp_path_factory.mktemp("cli-trained")
    train(out)
    return out


def run(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([*AISHIP, "model", *args], capture_output=True, text=True, env=env, timeout=120)


def read_events(api: str, resource_id: str, deadline_s: float = 20.0) -> list[dict]:
    """aiship.model.registered events for `resource_id`, polled from POST /api/events/filter."""
    body = {"filter": {"event": {"name": ["aiship.model.registered"]}, "resource": {"id": [resource_id]}}, "limit": 10}
    end = time.monotonic() + deadline_s
    while True:
        found = httpx.post(f"{api}/events/filter", json=body, timeout=10, auth=prefect_auth()).json()["events"]
        if found or time.monotonic() > end:
            return found
        time.sleep(0.5)


@pytest.fixture
def local_env(tmp_path) -> dict[str, str]:
    return {"AISHIP_MODEL_STORE": "local", "AISHIP_MODEL_STORE_PATH": str(tmp_path / "store")}


def test_publish_emits_model_registered_to_prefect(trained, prefect_api, local_env):
    name = f"aiship-tests-cli-{uuid.uuid4().hex[:10]}"

    result = run("publish", str(trained), "--name", name, env_extra=local_env)

    assert result.returncode == 0, result.stderr
    assert f"published {name}:1 sha256:" in result.stdout
    assert f"event aiship.model.registered emitted to {prefect_api}" in result.stdout
    events = read_events(prefect_api, f"aiship.model.{name}.1")
    assert len(events) == 1, f"event for {name}:1 not found on the server"
    payload = events[0]["payload"]
    manifest = json.loads((Path(local_env["AISHIP_MODEL_STORE_PATH"]) / "models" / name / "1" / "manifest.json").read_text())
    assert payload == {"name": name, "version": 1, "sha256": manifest["sha256"],
                       "uri": (Path(local_env["AISHIP_MODEL_STORE_PATH"]) / "models" / name / "1" / "model.skops").resolve().as_uri(),
                       "publisher": manifest["publisher"]}


def test_publish_without_prefect_api_says_so(trained, local_env):
    name = f"aiship-tests-cli-{uuid.uuid4().hex[:10]}"

    result = run("publish", str(trained), "--name", name, env_extra={**local_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"})

    assert result.returncode == 0, result.stderr
    assert f"published {name}:1" in result.stdout
    assert "event aiship.model.registered not emitted: the Prefect API at http://127.0.0.1:9/api does not answer" in result.stdout


def test_list_and_show(trained, local_env):
    name = f"aiship-tests-cli-{uuid.uuid4().hex[:10]}"
    offline = {**local_env, "PREFECT_API_URL": ""}
    for _ in range(2):
        assert run("publish", str(trained), "--name", name, env_extra=offline).returncode == 0

    listed = run("list", name, env_extra=offline)
    newest = run("show", name, env_extra=offline)
    pinned = run("show", f"{name}:1", env_extra=offline)

    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["1", "2"]
    assert json.loads(newest.stdout)["version"] == 2
    assert json.loads(pinned.stdout)["version"] == 1
    assert json.loads(pinned.stdout)["golden_set"] == json.loads((trained / "model.json").read_text())["golden_set"]


def test_list_shows_a_broken_version_as_broken_and_the_others_as_ever(trained, local_env, tmp_path):
    name = f"aiship-tests-cli-{uuid.uuid4().hex[:10]}"
    offline = {**local_env, "PREFECT_API_URL": ""}
    assert run("publish", str(trained), "--name", name, env_extra=offline).returncode == 0
    broken = tmp_path / "store" / "models" / name / "2"  # written by hand, not by publish
    broken.mkdir()
    (broken / "manifest.json").write_text('{"name": "%s", "version": 2, "file": "../../../etc/passwd"}' % name)
    listed = run("list", name, env_extra=offline)
    assert listed.returncode == 1
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["1"]
    assert listed.stderr.startswith("2\tbroken: ") and "is not a valid manifest" in listed.stderr


@pytest.mark.parametrize("args, message", [
    (["show", "nope-model:9"], "error: model 'nope-model' has no published version"),
    (["show", "x:abc"], "error: version in 'x:abc' must be a positive integer"),
    (["list", "Bad.Name"], "error: invalid model name 'Bad.Name'"),
    (["publish", "/nonexistent", "--name", "m"], "error: /nonexistent/model.json not found"),
    (["publish", ".", "--name", "m", "--store", "gcs"], "error: unknown model store 'gcs'"),
])
def test_errors_are_one_line_and_exit_1(args, message, local_env):
    result = run(*args, env_extra={**local_env, "PREFECT_API_URL": ""})
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr


def test_publish_refuses_a_pickle(trained, tmp_path, local_env):
    bad = Path(shutil.copytree(trained, tmp_path / "bad"))
    (bad / "model.skops").write_bytes(pickle.dumps({"w": 1}))

    result = run("publish", str(bad), "--name", "pickled", env_extra={**local_env, "PREFECT_API_URL": ""})

    assert result.returncode == 1 and "is a pickle, not a skops file" in result.stderr
    assert not (Path(local_env["AISHIP_MODEL_STORE_PATH"]) / "models" / "pickled").exists()


@pytest.mark.parametrize("store", ["azure", "s3"])
def test_publish_to_remote_stores_through_their_blocks(store, trained, settings):
    """Uses the blocks `aiship local up` writes (azurite, local-s3); a uuid container/bucket, removed after."""
    _require_block(store, settings)
    name = f"aiship-tests-cli-{uuid.uuid4().hex[:10]}"
    where = f"aiship-cli-{uuid.uuid4().hex[:10]}"
    env = {"AISHIP_AZURE_CONTAINER": where, "AISHIP_S3_BUCKET": where, "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}
    try:
        published = run("publish", str(trained), "--name", name, "--store", store, env_extra=env)
        assert published.returncode == 0, published.stderr
        shown = run("show", f"{name}:1", "--store", store, env_extra=env)
        assert json.loads(shown.stdout)["name"] == name
    finally:
        _remove_container(store, where, settings)


def _require_block(store: str, settings) -> None:
    """Fails (never skips) when the block `aiship local up` writes for this store is missing."""
    from flows.errors import ConfigurationError
    from flows.model_store import get_store

    try:
        get_store(settings, store)
    except ConfigurationError as exc:
        pytest.fail(f"{exc}")


def _remove_container(store: str, where: str, settings) -> None:
    from flows.model_store import get_store

    try:
        built = get_store(settings.model_copy(update={"azure_container": where, "s3_bucket": where}), store)
    except Exception:  # the block is missing: the test has already failed saying so
        return
    if store == "azure":
        if built.container.exists():
            built.container.delete_container()
        return
    keys = built._list_keys("")
    for key in keys:
        built.client.delete_object(Bucket=where, Key=key)
    if keys or built.client.list_objects_v2(Bucket=where).get("KeyCount", 0) == 0:
        built.client.delete_bucket(Bucket=where)
