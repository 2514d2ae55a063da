"""Automations aiship keeps on the Prefect server, registered by `aiship deploy` with the deployments.

Failures are told: a delivery, promotion or rollback that fails (a rolled-back rollout fails its
run too) or crashes sends a notification through the Prefect notification block named by
`AISHIP_NOTIFY_BLOCK` (a Slack- or Teams-shaped webhook, e.g. CustomWebhookNotificationBlock);
without that block nothing is sent and `aiship deploy` says so.

Silent runs are ended: a flow run whose process died (its machine, its worker or the process itself went
away) would stay *Running* in the UI forever. Every flow run of Prefect 3.9 sends the event
`prefect.flow-run.heartbeat` while its process lives (every 180 s by default, also while it is
paused for an approval), so a run that sent none and reached no final state for
`flow_run_silence_seconds` is marked *Crashed* (Prefect's documented zombie-run automation).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
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


FAILURES = "aiship-notify-failures"
DELIVERY_FLOWS = ("deliver", "deliver-commit", "promote", "rollback")
FAILED = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")


def failure_notification_automation(block_document_id, flows: tuple[str, ...] = DELIVERY_FLOWS,
                                    name: str = FAILURES) -> Automation:
    """The automation that sends a notification through block `block_document_id` when a run of one of `flows` fails or crashes."""
    return Automation(
        name=name,
        description="Tells the team when a delivery, promotion or rollback failed or crashed (a rolled-back "
                    "rollout fails its run). Registered by `aiship deploy`.",
        trigger=EventTrigger(
            expect=set(FAILED),
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow", "prefect.resource.name": list(flows)}),
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(
            block_document_id=block_document_id,
            subject="aiship: {{ flow.name }} run {{ flow_run.name }} {{ flow_run.state.name }}",
            body="{{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
                 "parameters: {{ flow_run.parameters }}\n{{ flow_run|ui_url }}",
        )],
    )


def _upsert(wanted: Automation) -> str:
    try:
        existing = Automation.read(name=wanted.name)
    except ValueError:  # Prefect's "not found"
        wanted.create()
    else:
        wanted.id = existing.id
        wanted.update()
    return wanted.name


def notify_block_id(block_name: str):
    """The id of the notification block `block_name` (any notification block type), or None when there is none."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        offset = 0
        while page := client.read_block_documents(offset=offset, limit=200, include_secrets=False):
            for doc in page:
                capabilities = doc.block_schema.capabilities if doc.block_schema else []
                if doc.name == block_name and "notify" in (capabilities or []):
                    return doc.id
            offset += len(page)
    return None


def ensure_automations(settings: Settings) -> list[str]:
    """Creates aiship's automations on the configured server, or updates them to the current
    definition (found by name); returns their names, and why one is missing."""
    names = [_upsert(silent_runs_automation(settings.flow_run_silence_seconds))]
    block_id = notify_block_id(settings.notify_block)
    if block_id is None:
        names.append(f"(no {FAILURES}: no notification block {settings.notify_block!r}; create one, e.g. a "
                     "CustomWebhookNotificationBlock for a Slack or Teams webhook, and run `aiship deploy` again)")
    else:
        names.append(_upsert(failure_notification_automation(block_id)))
    return names
