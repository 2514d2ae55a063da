"""The model store's Prefect tasks: resolve a version and fetch it, verified, for the build."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flows.model_store import get_store
from flows.model_store.base import FetchedModel, ModelRef
from flows.settings import Settings


@task(name="resolve-model")  # each store request retries itself (model_store.base)
def resolve_model(name: str, version: int | None, settings: Settings) -> ModelRef:
    """Resolves a model version in the configured store (None means the newest).

    Args:
        name: the model's name.
        version: a pinned version, or None for the newest published one.
        settings: aiship's settings (which store).

    Returns:
        The version pinned by its sha256, with its manifest.
    """
    return get_store(settings).resolve(name, version)


@task(name="fetch-model")  # each store request retries itself (model_store.base)
def fetch_model(ref: ModelRef, dest: Path, settings: Settings) -> FetchedModel:
    """Downloads a model version into `dest` and verifies its size and sha256 before returning.

    A mismatch raises ModelIntegrityError and is never retried: nothing is built from it.
    """
    return get_store(settings).fetch(ref, dest)
