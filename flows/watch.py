"""`watch-models`: notices versions published by other means (a blob uploaded with the Azure CLI)
and emits `aiship.model.registered` once for each, remembering the highest seen in a Variable."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.variables import Variable

from flows.events import emit_model_registered
from flows.model_store import get_store
from flows.retry import backoff_delays, retry_condition
from flows.settings import Settings


def variable_name(store_kind: str) -> str:
    """The Prefect Variable holding {model name: highest version seen} for one store."""
    return f"aiship-watch-{store_kind}"


def to_announce(published: dict[str, list[int]], seen: dict[str, int] | None) -> dict[str, list[int]]:
    """Versions to emit an event for: above the highest seen; on the very first watch (no memory
    yet) only the newest of each model, so that old versions do not queue deliveries."""
    out: dict[str, list[int]] = {}
    for name, versions in published.items():
        if not versions:
            continue
        if seen is None:
            out[name] = [max(versions)]
        else:
            newer = sorted(v for v in versions if v > seen.get(name, 0))
            if newer:
                out[name] = newer
    return out


@task(name="list-published", retries=3, retry_delay_seconds=backoff_delays(4, first=1.0), retry_condition_fn=retry_condition)
def list_published(settings: Settings) -> dict[str, list[int]]:
    """Every model in the store with its published versions."""
    store = get_store(settings)
    return {name: store.versions(name) for name in store.names()}


@flow(name="watch-models")
def watch_models() -> dict[str, list[int]]:
    """Emits `aiship.model.registered` for each version published since the last watch.

    Returns:
        The versions announced, by model name.
    """
    settings = Settings()
    log = get_run_logger()
    key = variable_name(settings.model_store)
    seen = Variable.get(key, default=None)
    announce = to_announce(list_published(settings), seen)
    store = get_store(settings)
    memory = dict(seen or {})
    for name, versions in announce.items():
        for version in versions:
            emit_model_registered(store.resolve(name, version))
            log.info("announced %s v%s", name, version)
            memory[name] = max(memory.get(name, 0), version)
            Variable.set(key, memory, overwrite=True)  # after each event: a crash re-announces nothing
    if seen is None and not announce:
        Variable.set(key, memory, overwrite=True)
    return announce
