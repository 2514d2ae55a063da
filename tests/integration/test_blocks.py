"""The blocks `write_local_blocks` writes load back from the server and hold working credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest

from flows.blocks import PULL_SECRET, S3Credentials, write_local_blocks
from tests.prefect_events import prefect_auth


@pytest.fixture(scope="module")
def written(settings) -> list[str]:
    """Writes the local blocks once for this module; fails when the Prefect server is down."""
    from flows.errors import PlatformError

    try:
        return write_local_blocks(settings)
    except PlatformError as exc:
        pytest.fail(str(exc))


def require(written: list[str], name: str, part: str) -> None:
    if name not in written:
        pytest.fail(f"block {name!r} was not written because the {part} part is not running; "
                    f"start it with `aiship local up {part}`")


def test_azurite_block_round_trip(settings, written):
    from prefect_azure.credentials import AzureBlobStorageCredentials

    require(written, settings.azure_credentials_block, "azurite")
    block = AzureBlobStorageCredentials.load(settings.azure_credentials_block, _sync=True)
    assert "**" not in block.connection_string.get_secret_value()  # the server kept the real secret
    from azure.storage.blob import BlobServiceClient

    name = f"aiship-test-{uuid.uuid4().hex[:12]}"
    service = BlobServiceClient.from_connection_string(block.connection_string.get_secret_value())
    container = service.create_container(name)
    try:
        container.upload_blob("round/trip.bin", b"via the block")
        assert [b.name for b in container.list_blobs(name_starts_with="round/")] == ["round/trip.bin"]
        assert container.download_blob("round/trip.bin").readall() == b"via the block"
    finally:
        container.delete_container()


def test_s3_block_round_trip(settings, written):
    require(written, settings.s3_credentials_block, "s3")
    block = S3Credentials.load(settings.s3_credentials_block, _sync=True)
    assert block.endpoint_url == f"http://127.0.0.1:{settings.s3_port}"
    s3 = block.get_client()
    bucket = f"aiship-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="round/trip.bin", Body=b"via the block")
        assert s3.get_object(Bucket=bucket, Key="round/trip.bin")["Body"].read() == b"via the block"
        s3.delete_object(Bucket=bucket, Key="round/trip.bin")
    finally:
        s3.delete_bucket(Bucket=bucket)


def test_s3_block_secret_is_masked_in_the_api(settings, written):
    import httpx

    require(written, settings.s3_credentials_block, "s3")
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    doc = httpx.get(f"{api}/block_types/slug/{S3Credentials.get_block_type_slug()}/block_documents/name/"
                    f"{settings.s3_credentials_block}", timeout=5, auth=prefect_auth())
    assert doc.status_code == 200, doc.text
    assert doc.json()["data"]["secret_access_key"] != "aiship-local-secret"


def test_no_block_secret_is_readable_through_the_api(settings, written):
    """The blocks API's default answer masks every secret, the cluster's token or key included.

    The same scan over the answer with secrets included finds each value, so the scan can find them.
    """
    import httpx
    import yaml
    from prefect.settings import PREFECT_API_URL

    for block, part in ((settings.kubernetes_credentials_block, "kubernetes"), (settings.registry_credentials_block, "registry"),
                        (settings.s3_credentials_block, "s3"), (settings.azure_credentials_block, "azurite")):
        require(written, block, part)
    kubeconfig = yaml.safe_load((settings.state_dir / "kubernetes" / "kubeconfig").read_text())
    cluster_secrets = [v for user in kubeconfig["users"] for k, v in user["user"].items() if k in ("token", "client-key-data", "password")]
    registry = json.loads((settings.state_dir / "registry" / "credentials.json").read_text())
    secrets = {"cluster": cluster_secrets, "registry": [registry["password"]], "s3": ["aiship-local-secret"],
               "azurite": ["Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="]}
    assert cluster_secrets, "the local kubeconfig names no token or client key"

    def answer(include_secrets: bool) -> str:
        response = httpx.post(f"{PREFECT_API_URL.value()}/block_documents/filter", timeout=10, auth=prefect_auth(),
                              json={"include_secrets": include_secrets, "limit": 200})
        assert response.status_code == 200, response.text
        return response.text.replace("\\/", "/")

    def hits(text: str) -> list[str]:
        return [what for what, values in secrets.items() for value in values if value in text]

    assert sorted(set(hits(answer(True)))) == sorted(secrets)  # the scan finds what is there
    assert hits(answer(False)) == []


def test_registry_block_logs_in(settings, written, docker_client):
    from prefect_docker.credentials import DockerRegistryCredentials

    require(written, settings.registry_credentials_block, "registry")
    block = DockerRegistryCredentials.load(settings.registry_credentials_block, _sync=True)
    assert block.registry_url == settings.registry_host
    asyncio.run(block.login(docker_client))  # raises docker.errors.APIError when refused


def test_kubernetes_block_reaches_the_cluster_and_pull_secret_exists(settings, written):
    from kubernetes import client

    from flows.blocks import KubernetesAccess

    require(written, settings.kubernetes_credentials_block, "kubernetes")
    block = KubernetesAccess.load(settings.kubernetes_credentials_block, _sync=True)
    with block.api_client() as api:
        core = client.CoreV1Api(api)
        assert "default" in [ns.metadata.name for ns in core.list_namespace().items]
        secret = core.read_namespaced_secret(PULL_SECRET, "default")
    assert secret.type == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))["auths"]
    assert list(auths) == [settings.registry_host]
