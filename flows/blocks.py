"""The Prefect blocks aiship reads its secrets from, and the ones the local platform writes.

Secrets live only in blocks (SecretStr fields, encrypted by the server's key). `write_local_blocks`
points the blocks named in `Settings` at the local platform's parts that are running;
production writes the same names with real connection strings, registries and kubeconfigs.
"""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from prefect.blocks.core import Block
from prefect.types import SecretDict

from flows.errors import ConfigurationError, PlatformError
from flows.settings import Settings


def load_block(block_cls, name: str, part: str):
    """Loads Prefect block `name`, or raises ConfigurationError saying how to create it or reach the API."""
    from flows.events import prefect_api_status

    available, why = prefect_api_status()
    if not available:  # without this Prefect would start a throwaway server, wait 25 s and fail
        raise ConfigurationError(
            f"cannot load Prefect block {name!r}: {why}; set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        return block_cls.load(name, _sync=True)
    except ValueError as exc:  # Prefect's "Unable to find block document named …"
        raise ConfigurationError(
            f"Prefect block {name!r} ({block_cls.__name__}) not found ({exc}); "
            f"create it with `aiship local up {part}` or name another block in the settings"
        ) from exc

PULL_SECRET = "aiship-registry"
# Azurite's development account; its name and key are published in Azure's documentation.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# moto accepts any key pair; these only have to be non-empty.
LOCAL_S3_KEY_ID = "aiship"
LOCAL_S3_SECRET = "aiship-local-secret"


class S3Credentials(Block):
    """Credentials and endpoint of an S3-compatible store (AWS S3, moto, MinIO)."""

    _block_type_name = "aiship S3 Credentials"
    _description = "Endpoint and key pair of an S3-compatible object store, for aiship's S3 model store."

    endpoint_url: str | None = Field(default=None, description="Endpoint URL; None means AWS S3 itself.")
    access_key_id: str = Field(description="Access key id.")
    secret_access_key: SecretStr = Field(description="Secret access key.")
    region_name: str = Field(default="us-east-1", description="Region the bucket lives in.")

    def get_client(self) -> Any:
        """A boto3 S3 client; the secret is unwrapped only here."""
        import boto3
        from botocore.config import Config

        # Retries are off because aiship retries transient errors itself, with its own log lines;
        # two layers of retries would multiply the wait on a dead endpoint.
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 1, "mode": "standard"})
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key.get_secret_value(),
            region_name=self.region_name,
            config=config,
        )


def azurite_connection_string(port: int) -> str:
    """The connection string of Azurite's blob service on 127.0.0.1:`port`."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def _listening(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class KubernetesAccess(Block):
    """A cluster's kubeconfig, kept whole as a secret.

    prefect-kubernetes' KubernetesClusterConfig keeps the kubeconfig in a plain dict, so its token
    or client key is readable by anyone who can read the blocks API. Here every value is masked
    in the API's answers and decrypted only when a client is made.
    """

    _block_type_name = "aiship Kubernetes Access"
    _description = "A kubeconfig (every value secret) and the context aiship uses to reach one cluster."

    kubeconfig: SecretDict = Field(description="The whole kubeconfig, as loaded from its YAML file.")
    context_name: str | None = Field(default=None, description="The context to use; None means the kubeconfig's current one.")

    @classmethod
    def from_file(cls, path: Path, context_name: str | None = None) -> "KubernetesAccess":
        import yaml

        try:
            config = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read the kubeconfig {path}: {type(exc).__name__}: {exc}; "
                                     "write it with `az aks get-credentials --file` (or `aiship local up kubernetes`)") from exc
        if not isinstance(config, dict) or not config.get("clusters"):
            raise ConfigurationError(f"{path} is not a kubeconfig (no clusters); write it with `az aks get-credentials --file`")
        return cls(kubeconfig=config, context_name=context_name)

    def api_client(self) -> Any:
        """A synchronous `kubernetes.client.ApiClient` for the cluster."""
        from kubernetes import config as kube_config

        from flows.environments import api_client_from

        return api_client_from(lambda cfg: kube_config.load_kube_config_from_dict(
            self.kubeconfig.get_secret_value(), context=self.context_name, client_configuration=cfg))


def _registry_block(settings: Settings):
    from prefect_docker.credentials import DockerRegistryCredentials

    path = settings.state_dir / "registry" / "credentials.json"
    try:
        creds = json.loads(path.read_text())
        return DockerRegistryCredentials(
            username=creds["username"], password=creds["password"], registry_url=creds["registry_url"], reauth=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise PlatformError(
            f"cannot read the registry credentials {path}: {type(exc).__name__}: {exc}; run `aiship local up registry`"
        ) from exc


def write_local_blocks(settings: Settings) -> list[str]:
    """Creates or overwrites the blocks of the local parts that are running; returns their names."""
    from prefect_azure.credentials import AzureBlobStorageCredentials

    written: list[str] = []

    def save(block: Block, name: str) -> None:
        try:
            block.save(name, overwrite=True, _sync=True)
        except Exception as exc:
            raise PlatformError(
                f"cannot save block {name!r} to Prefect ({type(exc).__name__}: {exc}); "
                "is the Prefect server running? `aiship local up prefect`"
            ) from exc
        written.append(name)

    if _listening(settings.azurite_port):
        conn = azurite_connection_string(settings.azurite_port)
        save(AzureBlobStorageCredentials(connection_string=conn), settings.azure_credentials_block)
    if _listening(settings.s3_port):
        block = S3Credentials(endpoint_url=f"http://127.0.0.1:{settings.s3_port}",
                              access_key_id=LOCAL_S3_KEY_ID, secret_access_key=LOCAL_S3_SECRET)
        save(block, settings.s3_credentials_block)
    if _listening(settings.registry_port) and (settings.state_dir / "registry" / "credentials.json").exists():
        save(_registry_block(settings), settings.registry_credentials_block)
    kubeconfig = settings.state_dir / "kubernetes" / "kubeconfig"
    if _listening(settings.kube_api_port) and kubeconfig.exists():
        block = KubernetesAccess.from_file(kubeconfig)
        save(block, settings.kubernetes_credentials_block)
        _remove_unmasked_kubernetes_block(settings.kubernetes_credentials_block)
        if settings.registry_credentials_block in written:
            with block.api_client() as api_client:
                ensure_image_pull_secret(api_client, "default", settings.registry_credentials_block)
    return written


def _remove_unmasked_kubernetes_block(name: str) -> None:
    """Deletes a prefect-kubernetes KubernetesCredentials block of that name (an older platform wrote
    one), whose cluster config the blocks API answers with the token in plain text."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            old = client.read_block_document_by_name(name, "kubernetes-credentials", include_secrets=False)
        except ObjectNotFound:
            return
        for ref in (old.block_document_references or {}).values():
            client.delete_block_document(ref["block_document"]["id"])
        client.delete_block_document(old.id)


def dockerconfigjson(registry_url: str, username: str, password: str) -> bytes:
    """The body of a kubernetes.io/dockerconfigjson Secret for one registry."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {registry_url: {"username": username, "password": password, "auth": auth}}}
    return json.dumps(config).encode()


def ensure_image_pull_secret(api_client: Any, namespace: str, registry_block_name: str) -> None:
    """Creates or updates Secret `aiship-registry` in `namespace` from a DockerRegistryCredentials block."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from prefect_docker.credentials import DockerRegistryCredentials

    creds = load_block(DockerRegistryCredentials, registry_block_name, "registry")
    # The password is unwrapped only into the Secret's body, which is never logged.
    data = dockerconfigjson(creds.registry_url, creds.username, creds.password.get_secret_value())
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=PULL_SECRET, namespace=namespace,
                                     labels={"app.kubernetes.io/managed-by": "aiship"}),
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": base64.b64encode(data).decode()},
    )
    core = client.CoreV1Api(api_client)
    try:
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            core.replace_namespaced_secret(PULL_SECRET, namespace, body)
    except ApiException as exc:
        raise PlatformError(
            f"the Kubernetes API refused Secret {namespace}/{PULL_SECRET}: {exc.status} {exc.reason}; "
            f"check that namespace {namespace!r} exists and the kubeconfig may write Secrets"
        ) from exc
