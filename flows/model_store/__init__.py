"""The model store: published model versions under `models/<name>/<version>/`, in a folder, Azure Blob or S3.

`get_store(settings)` picks the implementation named by `settings.model_store`. Every
implementation passes the same contract tests (tests/integration/test_model_store_contract.py).
"""

from __future__ import annotations

from flows.model_store.base import BaseModelStore, FetchedModel, ModelRef, ModelStore, check_model_file
from flows.model_store.local import LocalModelStore
from flows.settings import Settings

STORE_KINDS = ("local", "azure", "s3")


def get_store(settings: Settings, kind: str | None = None) -> BaseModelStore:
    """The model store named by `kind` (default `settings.model_store`), credentials loaded from its block."""
    from flows.errors import ConfigurationError

    kind = kind or settings.model_store
    if kind == "local":
        return LocalModelStore(settings.model_store_path)
    if kind == "azure":
        from flows.model_store.azure import AzureBlobModelStore

        return AzureBlobModelStore.from_settings(settings)
    if kind == "s3":
        from flows.model_store.s3 import S3ModelStore

        return S3ModelStore.from_settings(settings)
    raise ConfigurationError(f"unknown model store {kind!r}; expected one of {', '.join(STORE_KINDS)} (AISHIP_MODEL_STORE)")


__all__ = [
    "BaseModelStore", "FetchedModel", "LocalModelStore", "ModelRef", "ModelStore", "STORE_KINDS",
    "check_model_file", "get_store",
]
