"""`watch-models`: notices versions published by other means (a blob uploaded with the Azure CLI)
and emits `aiship.model.registered` once for each, remembering the highest seen in a Variable."""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.variables import Variable

from flows.errors import MalformedManifestError
from flows.events import emit_model_registered
from flows.manifest import NAME_PATTERN
from flows.model_store import get_store
from flows.model_store.base import ModelRef, ModelStore
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


@task(name="list-published")  # each store request retries itself (model_store.base)
def list_published(settings: Settings) -> dict[str, list[int]]:
    """Every model in the store with its published versions."""
    store = get_store(settings)
    published = {}
    for name in store.names():
        if NAME_PATTERN.fullmatch(name):
            published[name] = store.versions(name)
        else:
            get_run_logger().warning("skipping models/%s/ in the store: %r is not a valid model name", name, name)
    return published


def announce_versions(store: ModelStore, announce: dict[str, list[int]], memory: dict[str, int],
                      emit: Callable[[ModelRef], object], remember: Callable[[dict[str, int]], object]
                      ) -> tuple[dict[str, list[int]], list[str]]:
    """Emits each version of `announce`, remembering after each; a malformed manifest is skipped
    (and remembered, so it is reported once), never stopping the other models.

    Returns:
        The versions announced by model name, and one line per version skipped, saying why.
    """
    announced: dict[str, list[int]] = {}
    skipped: list[str] = []
    for name, versions in announce.items():
        for version in versions:
            try:
                emit(store.resolve(name, version))
                announced.setdefault(name, []).append(version)
            except MalformedManifestError as exc:
                skipped.append(f"{name} v{version}: {exc}")
            memory[name] = max(memory.get(name, 0), version)
            remember(memory)  # after each version: a crash re-announces nothing
    return announced, skipped


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
    memory = dict(seen or {})
    announced, skipped = announce_versions(get_store(settings), announce, memory, emit_model_registered,
                                           lambda m: Variable.set(key, m, overwrite=True))
    for name, versions in announced.items():
        log.info("announced %s v%s", name, ", v".join(map(str, versions)))
    if skipped:
        from prefect.artifacts import create_markdown_artifact

        for line in skipped:
            log.error("skipped %s", line)
        create_markdown_artifact(key="watch-models-skipped", description="Versions watch-models could not announce",
                                 markdown="**Skipped** (reported once; re-publish them):\n\n" +
                                          "\n".join(f"- {line}" for line in skipped))
    if seen is None and not announce:
        Variable.set(key, memory, overwrite=True)
    return announced
