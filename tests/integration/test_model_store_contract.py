"""The model store contract: the SAME tests against LocalModelStore, AzureBlobModelStore (Azurite) and S3ModelStore (moto).

Each session uses its own uuid-named container and bucket (deleted at the end); each test its own
uuid-named model. Stores are built from the Prefect blocks `aiship local up` writes; until those
blocks exist, from the same local credentials directly (`make_store`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import pickle
import shutil
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.errors import ModelIntegrityError, ModelNotFoundError, ModelStoreError
from flows.manifest import sha256_file
from flows.settings import Settings

# Azurite's well-known development key (published in Azure's docs; not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def require_port(port: int, part: str) -> None:
    """Fails (never skips) the test when nothing listens on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"{part} is not reachable on 127.0.0.1:{port} ({exc}); start it with `aiship local up {part}`")


def azurite_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


def block_exists(loader) -> bool:
    try:
        loader()
    except ValueError:  # Prefect: "Unable to find block document named ..."
        return False
    return True


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory) -> Path:
    """A real model folder (model.skops + model.json) from app.train, trained once per session."""
    from app.train import train

    out = tmp_path_factory.mktemp("trained")
    train(out)
    return out


@pytest.fixture
def model_dir(trained_model_dir, tmp_path) -> Path:
    """A private copy of the trained model folder, safe to modify."""
    return Path(shutil.copytree(trained_model_dir, tmp_path / "model"))


@pytest.fixture
def model_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def azure_container(settings: Settings):
    """(how the store is built, container name): a uuid container in Azurite, deleted after the session."""
    from azure.storage.blob import BlobServiceClient

    require_port(settings.azurite_port, "azurite")
    container = f"aiship-test-{uuid.uuid4().hex[:12]}"
    service = BlobServiceClient.from_connection_string(azurite_connection_string(settings.azurite_port))
    service.create_container(container)
    yield container
    service.delete_container(container)


@pytest.fixture(scope="session")
def s3_bucket(settings: Settings):
    """A uuid bucket in the local S3 server, emptied and deleted after the session."""

    require_port(settings.s3_port, "s3")
    bucket = f"aiship-test-{uuid.uuid4().hex[:12]}"
    client = s3_client_direct(settings)
    client.create_bucket(Bucket=bucket)
    yield bucket
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


def s3_client_direct(settings: Settings):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{settings.s3_port}", region_name="us-east-1",
                        aws_access_key_id="aiship", aws_secret_access_key="aiship-local",
                        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 1}))


def make_store(kind: str, settings: Settings, tmp_path: Path, request):
    """One store of `kind`: from its Prefect block when the block exists, else from direct credentials."""
    from flows.model_store import LocalModelStore
    from flows.model_store.azure import AzureBlobModelStore, client_from_block
    from flows.model_store.s3 import S3ModelStore

    if kind == "local":
        return LocalModelStore(tmp_path / "store")
    if kind == "azure":
        container = request.getfixturevalue("azure_container")
        from prefect_azure import AzureBlobStorageCredentials

        name = settings.azure_credentials_block
        if block_exists(lambda: AzureBlobStorageCredentials.load(name)):
            return AzureBlobModelStore.from_settings(settings.model_copy(update={"azure_container": container}))
        block = AzureBlobStorageCredentials(connection_string=azurite_connection_string(settings.azurite_port))
        return AzureBlobModelStore(client_from_block(block), container)
    bucket = request.getfixturevalue("s3_bucket")
    try:
        from flows.blocks import S3Credentials
    except ImportError:
        S3Credentials = None
    if S3Credentials is not None and block_exists(lambda: S3Credentials.load(settings.s3_credentials_block)):
        return S3ModelStore.from_settings(settings.model_copy(update={"s3_bucket": bucket}))
    return S3ModelStore(s3_client_direct(settings), bucket)


@pytest.fixture(params=["local", "azure", "s3"])
def store(request, settings, tmp_path):
    """Each contract test runs once per store; retries are made fast so fault tests stay quick."""
    built = make_store(request.param, settings, tmp_path, request)
    built.first_delay = 0.01
    return built


def keys_under(store, prefix: str) -> list[str]:
    return sorted(store._list_keys(prefix))


# --- the contract ---


def test_publish_then_list_and_resolve_newest(store, model_dir, model_name):
    first = store.publish(model_dir, model_name)
    second = store.publish(model_dir, model_name, publisher="ci@example")

    sha, size = sha256_file(model_dir / "model.skops")
    assert (first.version, second.version) == (1, 2)
    assert store.versions(model_name) == [1, 2]
    newest = store.resolve(model_name)
    assert newest == second
    assert (newest.sha256, newest.size, newest.manifest.publisher) == (sha, size, "ci@example")
    card = json.loads((model_dir / "model.json").read_text())
    assert newest.manifest.golden_set.model_dump() == card["golden_set"]
    assert newest.manifest.name == model_name and newest.manifest.version == 2
    assert newest.uri.endswith(f"models/{model_name}/2/model.skops")
    assert keys_under(store, f"models/{model_name}/2/") == [
        f"models/{model_name}/2/{f}" for f in ("claim", "manifest.json", "model.skops")
    ]


def test_resolve_pinned_version(store, model_dir, model_name):
    store.publish(model_dir, model_name)
    store.publish(model_dir, model_name)

    pinned = store.resolve(model_name, 1)

    assert pinned.version == 1 and pinned.manifest.version == 1
    assert pinned.uri.endswith(f"models/{model_name}/1/model.skops")


def test_fetch_verifies_and_leaves_only_the_model(store, model_dir, model_name, tmp_path):
    ref = store.publish(model_dir, model_name)
    dest = tmp_path / "fetched"

    fetched = store.fetch(store.resolve(model_name), dest)

    assert fetched.path == dest / "model.skops"
    assert fetched.path.read_bytes() == (model_dir / "model.skops").read_bytes()
    assert json.loads(fetched.manifest_path.read_text())["sha256"] == ref.sha256
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model.skops"]


@pytest.mark.parametrize("tamper", ["same-size", "longer", "shorter"])
def test_tampered_object_is_refused_and_nothing_is_left(store, model_dir, model_name, tmp_path, tamper):
    ref = store.publish(model_dir, model_name)
    original = (model_dir / "model.skops").read_bytes()
    changed = {
        "same-size": original[:-1] + bytes([original[-1] ^ 0xFF]),
        "longer": original + b"\0",
        "shorter": original[:-10],
    }[tamper]
    bad = tmp_path / "bad.skops"
    bad.write_bytes(changed)
    store._put_file(f"models/{model_name}/1/model.skops", bad)  # someone overwrote the stored object
    dest = tmp_path / "fetched"

    with pytest.raises(ModelIntegrityError) as caught:
        store.fetch(ref, dest)

    message = str(caught.value)
    assert ref.uri in message and f"expected {ref.sha256}" in message and "re-publish" in message
    if tamper != "longer":  # a longer object is cut off early, so its full hash is never computed
        assert hashlib.sha256(changed).hexdigest() in message
    assert list(dest.iterdir()) == []


def test_missing_version_and_missing_model(store, model_dir, model_name):
    store.publish(model_dir, model_name)

    with pytest.raises(ModelNotFoundError, match=rf"{model_name}.*no version 7.*published versions: 1"):
        store.resolve(model_name, 7)
    assert store.versions("never-published") == []
    with pytest.raises(ModelNotFoundError, match="never-published.*no published version.*aiship model publish"):
        store.resolve("never-published")


def test_concurrent_publishes_get_distinct_versions(store, model_dir, model_name, tmp_path):
    n = 4
    barrier = threading.Barrier(n)

    def publish(i: int):
        barrier.wait()  # all threads start their claim at once
        return store.publish(model_dir, model_name, publisher=f"thread-{i}")

    with ThreadPoolExecutor(n) as pool:
        refs = list(pool.map(publish, range(n)))

    assert sorted(r.version for r in refs) == list(range(1, n + 1))
    assert store.versions(model_name) == list(range(1, n + 1))
    publishers = {store.resolve(model_name, r.version).manifest.publisher for r in refs}
    assert publishers == {f"thread-{i}" for i in range(n)}  # nobody's manifest was overwritten
    for r in refs:
        store.fetch(r, tmp_path / f"v{r.version}")


def test_unfinished_publish_is_invisible(store, model_dir, model_name):
    store.publish(model_dir, model_name)
    # a publisher that died after claiming version 2 and uploading the model, before the manifest
    assert store._create_exclusive(f"models/{model_name}/2/claim", b"{}")
    store._put_file(f"models/{model_name}/2/model.skops", model_dir / "model.skops")

    assert store.versions(model_name) == [1]
    assert store.resolve(model_name).version == 1
    with pytest.raises(ModelNotFoundError):
        store.resolve(model_name, 2)
    assert store.publish(model_dir, model_name).version == 3  # the abandoned number is not reused


def test_pickle_is_refused_before_anything_is_written(store, model_dir, model_name):
    (model_dir / "model.skops").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))

    with pytest.raises(ModelIntegrityError, match="is a pickle, not a skops file"):
        store.publish(model_dir, model_name)
    assert keys_under(store, f"models/{model_name}/") == []


def test_a_type_the_app_refuses_is_refused_before_anything_is_written(store, model_dir, model_name):
    import skops.io as sio
    from sklearn.tree import DecisionTreeClassifier

    from flows.app_config import read_app_config
    from flows.settings import REPO_ROOT

    sample = read_app_config(REPO_ROOT)  # the serving app's [model] types
    sio.dump(DecisionTreeClassifier().fit([[0.0] * 30, [1.0] * 30], [0, 1]), model_dir / "model.skops")
    with pytest.raises(ModelIntegrityError, match="types app aiship-app refuses to load: .*DecisionTreeClassifier"):
        store.publish(model_dir, model_name, allowed_types=sample.model.types, app="app aiship-app")
    assert keys_under(store, f"models/{model_name}/") == []


def test_transient_error_is_retried_and_logged(store, model_dir, model_name, caplog):
    ref = store.publish(model_dir, model_name)
    real = store._get_bytes
    calls = []

    def flaky(key):
        calls.append(key)
        if len(calls) == 1:
            raise TimeoutError("read timed out (injected)")
        return real(key)

    store._get_bytes = flaky
    with caplog.at_level(logging.WARNING, logger="aiship.retry"):
        assert store.resolve(model_name) == ref

    assert len(calls) == 2
    assert any(f"attempt 1 of {store.attempts}" in r.getMessage() and "TimeoutError" in r.getMessage() for r in caplog.records)


def test_not_found_is_not_retried(store, model_name, caplog):
    with caplog.at_level(logging.WARNING, logger="aiship.retry"), pytest.raises(ModelNotFoundError):
        store._call("read", lambda: store._get_bytes(f"models/{model_name}/1/manifest.json"))
    assert not [r for r in caplog.records if r.name == "aiship.retry"]


def test_azure_wrong_key_is_403_and_not_retried(settings, azure_container, caplog):
    from azure.storage.blob import BlobServiceClient

    from flows.model_store.azure import AzureBlobModelStore

    wrong = base64.b64encode(b"not the key" * 6).decode()
    service = BlobServiceClient.from_connection_string(azurite_connection_string(settings.azurite_port, wrong))
    store = AzureBlobModelStore(service, azure_container)

    with caplog.at_level(logging.WARNING, logger="aiship.retry"), pytest.raises(ModelStoreError, match="denied"):
        store.versions("any-model")
    assert not [r for r in caplog.records if r.name == "aiship.retry"]
