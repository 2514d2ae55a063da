"""The model store in Azure Blob Storage (Azurite locally); credentials from a prefect-azure block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from flows.errors import ModelNotFoundError, ModelStoreError
from flows.model_store.base import BaseModelStore, load_block
from flows.settings import Settings

TIMEOUTS = {"connection_timeout": 10, "read_timeout": 60}


def client_from_block(block) -> BlobServiceClient:
    """A sync BlobServiceClient from an AzureBlobStorageCredentials block; the SDK's own retries are off (ours log)."""
    opts = {**TIMEOUTS, "retry_total": 0}
    if block.connection_string is not None:
        return BlobServiceClient.from_connection_string(block.connection_string.get_secret_value(), **opts)
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if block.client_id is not None:
        credential = ClientSecretCredential(
            tenant_id=block.tenant_id, client_id=block.client_id, client_secret=block.client_secret.get_secret_value()
        )
    else:
        credential = DefaultAzureCredential()
    return BlobServiceClient(account_url=block.account_url, credential=credential, **opts)


class AzureBlobModelStore(BaseModelStore):
    """Versions under `<container>/models/<name>/<version>/`; claims by `If-None-Match: *` (overwrite=False)."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self.container: ContainerClient = service.get_container_client(container)

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureBlobModelStore:
        """The store for `settings.azure_container`, credentials from block `settings.azure_credentials_block`."""
        from prefect_azure import AzureBlobStorageCredentials

        block = load_block(AzureBlobStorageCredentials, settings.azure_credentials_block, "azurite")
        return cls(client_from_block(block), settings.azure_container)

    def __repr__(self) -> str:
        return f"AzureBlobModelStore({self._uri('')!r})"

    def _not_found(self, key: str, exc: Exception) -> ModelNotFoundError:
        return ModelNotFoundError(f"{self._uri(key)} does not exist ({getattr(exc, 'error_code', None) or 'NotFound'})")

    def _denied(self, key: str, exc: Exception) -> ModelStoreError:
        return ModelStoreError(
            f"access to {self._uri(key)} denied ({type(exc).__name__}); check the credentials block's connection string or role"
        )

    def _guard(self, key: str, fn):
        try:
            return fn()
        except ResourceNotFoundError as exc:
            raise self._not_found(key, exc) from exc
        except ClientAuthenticationError as exc:
            raise self._denied(key, exc) from exc
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise self._denied(key, exc) from exc
            raise

    def _prepare_for_write(self) -> None:
        try:
            self._guard("", self.container.create_container)
        except ResourceExistsError:
            pass

    def _create_exclusive(self, key: str, data: bytes) -> bool:
        try:
            self._guard(key, lambda: self.container.upload_blob(key, data, overwrite=False))
        except ResourceExistsError:
            return False
        return True

    def _put_file(self, key: str, path: Path) -> None:
        def upload() -> None:
            with Path(path).open("rb") as f:
                self.container.upload_blob(key, f, overwrite=True)

        self._guard(key, upload)

    def _get_bytes(self, key: str) -> bytes:
        return self._guard(key, lambda: self.container.download_blob(key).readall())

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        downloader = self._guard(key, lambda: self.container.download_blob(key))
        yield from downloader.chunks()

    def _list_keys(self, prefix: str) -> list[str]:
        try:
            return self._guard(prefix, lambda: [b.name for b in self.container.list_blobs(name_starts_with=prefix)])
        except ModelNotFoundError:  # no container yet: nothing published
            return []

    def _uri(self, key: str) -> str:
        # container.url may carry a SAS token in its query: never let it into a URI we print or emit
        scheme, netloc, path, _, _ = urlsplit(self.container.url)
        return urlunsplit((scheme, netloc, f"{path.rstrip('/')}/{key}", "", ""))
