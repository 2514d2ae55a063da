"""Azurite's blob service, started by `local/azurite.sh`: write, list by prefix, read back, delete."""

from __future__ import annotations

import uuid

import pytest

from flows.blocks import azurite_connection_string


@pytest.fixture(scope="module")
def container(settings):
    """A uuid-named container on the local Azurite, removed afterwards; fails when Azurite is down."""
    from azure.core.exceptions import AzureError
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite_connection_string(settings.azurite_port))
    name = f"aiship-test-{uuid.uuid4().hex[:12]}"
    try:
        client = service.create_container(name, timeout=10)
    except AzureError as exc:
        pytest.fail(f"Azurite does not answer on 127.0.0.1:{settings.azurite_port} ({exc}); "
                    "start it with `aiship local up azurite`")
    yield client
    client.delete_container()


def test_write_list_read_delete(container):
    prefix = f"models/{uuid.uuid4().hex[:8]}/"
    bodies = {f"{prefix}1/model.bin": b"\x00model-one", f"{prefix}2/model.bin": b"model-two\xff"}
    for name, body in bodies.items():
        container.upload_blob(name, body)
    container.upload_blob("elsewhere/x.bin", b"not listed")

    listed = sorted(b.name for b in container.list_blobs(name_starts_with=prefix))
    assert listed == sorted(bodies)
    for name, body in bodies.items():
        assert container.download_blob(name).readall() == body

    container.delete_blob(f"{prefix}1/model.bin")
    assert [b.name for b in container.list_blobs(name_starts_with=prefix)] == [f"{prefix}2/model.bin"]
