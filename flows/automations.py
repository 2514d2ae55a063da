"""Automations aiship keeps on the Prefect server, registered by `aiship deploy` with the deployments.

One for now: a flow run whose process died (its machine, its worker or the process itself went
away) would stay *Running* in the UI forever. Every flow run of Prefect 3.9 sends the event
`prefect.flow-run.heartbeat` while its process lives (every 180 s by default, also while it is
paused for an approval), so a run that sent none and reached no final state for
`flow_run_silence_seconds` is marked *Crashed* (Prefect's documented zombie-run automation).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from flows.settings import Settings

SILENT_RUNS = "aiship-crash-silent-flow-runs"
HEARTBEAT = "prefect.flow-run.heartbeat"
# A run's final states: after one of them no heartbeat is due any more.
ENDS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
        "prefect.flow-run.Crashed")


def silent_runs_automation(silence_seconds: int, name: str = SILENT_RUNS, runs: tuple[str, ...] = ("*",)) -> Automation:
    """The automation that marks a flow run Crashed after `silence_seconds` without a heartbeat
    (`runs`: flow run ids it watches, `*` for all)."""
    return Automation(
        name=name,
        description=(f"Marks a flow run Crashed when it sent no heartbeat and ended in no final state for "
                     f"{silence_seconds} s: its process died. Registered by `aiship deploy`."),
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *ENDS},
            match=ResourceSpecification({"prefect.resource.id": [f"prefect.flow-run.{run}" for run in runs]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence_seconds),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {silence_seconds} s: the flow run's process died (machine, worker or process); "
                    "deliver again if its change is still wanted",
        )],
    )


def ensure_automations(settings: Settings) -> list[str]:
    """Creates aiship's automations on the configured server, or updates them to the current
    definition (found by name); returns their names."""
    wanted = silent_runs_automation(settings.flow_run_silence_seconds)
    try:
        existing = Automation.read(name=wanted.name)
    except ValueError:  # Prefect's "not found"
        wanted.create()
    else:
        wanted.id = existing.id
        wanted.update()
    return [wanted.name]
