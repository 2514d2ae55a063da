"""Which flow run made a work folder or a smoke container, so that a sweep can tell a dead run's
leftovers from a live run's work.

The run's id is in the folder's name and in the container's labels, both set by aiship and out
of reach of the app's code (which may write inside its report folder, never rename it).
Outside a flow run (tests, benches, the CLI) nothing is recorded, and only age tells.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

OWNER_LABEL = "io.aiship.flow-run"
# Folders aiship makes under the temporary directory: check-outs, deliveries, test reports.
KINDS = ("src", "deliver", "report")
_NAME = re.compile(r"^aiship-(?:%s)-(?:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.)?" % "|".join(KINDS))


def current_run() -> str:
    """The id of the flow run this code runs in, or "" outside one."""
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


def work_folder(kind: str, dir: Path | None = None) -> Path:
    """A new private folder `aiship-<kind>-[<flow run id>.]<random>` under `dir` (default: the temporary directory)."""
    if kind not in KINDS:
        raise ValueError(f"unknown work folder kind {kind!r}; one of {KINDS}")
    run = current_run()
    return Path(tempfile.mkdtemp(prefix=f"aiship-{kind}-{run + '.' if run else ''}", dir=dir))


def folder_owner(path: Path) -> str | None:
    """The flow run id in an aiship work folder's name ("" when it has none), or None for a folder aiship did not make."""
    found = _NAME.match(path.name)
    return None if found is None else (found.group(1) or "")


def container_labels() -> dict[str, str]:
    """Labels that tie a container to the current flow run (none outside one)."""
    run = current_run()
    return {OWNER_LABEL: run} if run else {}
