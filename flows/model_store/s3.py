"""The model store in S3 (moto's server locally); credentials from our S3Credentials block (flows/blocks.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from botocore.exceptions import ClientError

from flows.errors import ConfigurationError, ModelNotFoundError, ModelStoreError
from flows.model_store.base import BaseModelStore, load_block
from flows.settings import Settings

NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
TAKEN = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ModelStore(BaseModelStore):
    """Versions under `s3://<bucket>/models/<name>/<version>/`; claims by `put_object(IfNoneMatch='*')`."""

    def __init__(self, client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ModelStore:
        """The store for `settings.s3_bucket`, the client from block `settings.s3_credentials_block`."""
        try:
            from flows.blocks import S3Credentials
        except ImportError as exc:
            raise ConfigurationError(f"the S3Credentials block type (flows/blocks.py) cannot be imported ({exc}); it comes with `aiship local up s3`") from exc

        block = load_block(S3Credentials, settings.s3_credentials_block, "s3")
        return cls(block.get_client(), settings.s3_bucket)

    def __repr__(self) -> str:
        return f"S3ModelStore({self._uri('')!r})"

    def _guard(self, key: str, fn):
        try:
            return fn()
        except ClientError as exc:
            code = _code(exc)
            if code in NOT_FOUND:
                raise ModelNotFoundError(f"{self._uri(key)} does not exist ({code})") from exc
            if code in DENIED:
                raise ModelStoreError(
                    f"access to {self._uri(key)} denied ({code}); check the S3 credentials block's keys and policy"
                ) from exc
            raise

    def _prepare_for_write(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in NOT_FOUND:
                raise
        region = self.client.meta.region_name
        kwargs = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            self.client.create_bucket(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou"}:
                raise

    def _create_exclusive(self, key: str, data: bytes) -> bool:
        try:
            self._guard(key, lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*"))
        except ClientError as exc:
            if _code(exc) in TAKEN:
                return False
            raise
        return True

    def _put_file(self, key: str, path: Path) -> None:
        # put_object, not upload_file: upload_file hides the ClientError (and its status) in S3UploadFailedError
        def upload() -> None:
            with Path(path).open("rb") as f:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=f)

        self._guard(key, upload)

    def _get_bytes(self, key: str) -> bytes:
        return self._guard(key, lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        body = self._guard(key, lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"])
        with body:
            yield from body.iter_chunks(1 << 20)

    def _list_keys(self, prefix: str) -> list[str]:
        def list_all() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

        try:
            return self._guard(prefix, list_all)
        except ModelNotFoundError:  # no bucket yet: nothing published
            return []

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
