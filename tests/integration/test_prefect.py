"""The Prefect server and worker started by `local/prefect.sh`: runs are recorded and readable."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import httpx
from prefect import flow


@flow(name="aiship-integration-echo")
def echo(token: str) -> str:
    return f"echo {token}"


def test_flow_run_is_recorded_and_readable(prefect_api):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    token = uuid.uuid4().hex
    state = echo(token, return_state=True)
    assert state.is_completed()
    run_id = state.state_details.flow_run_id

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        found = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    assert run.state.is_completed()
    assert run.parameters == {"token": token}
    assert [r.id for r in found] == [run_id]


def test_worker_is_online_in_the_local_pool(prefect_api):
    workers = httpx.post(f"{prefect_api}/work_pools/aiship-local/workers/filter", json={}, timeout=5)
    assert workers.status_code == 200, workers.text
    assert any(w["name"] == "aiship-local-worker" and w["status"] == "ONLINE" for w in workers.json()), workers.json()


def test_a_run_that_stops_sending_heartbeats_is_marked_crashed_and_a_finished_one_is_not(prefect_api):
    """The automation `aiship deploy` registers, with a 10 s window and watching two runs of this
    test only: both send one heartbeat; one then completes, the other goes silent (its process died)."""
    from prefect import get_client
    from prefect.states import Completed, Running

    from flows.automations import HEARTBEAT, silent_runs_automation

    with get_client(sync_client=True) as client:
        silent, finished = (str(client.create_flow_run(echo, parameters={"token": t}, state=Running()).id)
                            for t in ("silent", "finished"))
    automation = silent_runs_automation(10, name=f"aiship-tests-silent-{uuid.uuid4().hex[:8]}", runs=(silent, finished)).create()
    try:
        events = [{"event": HEARTBEAT, "resource": {"prefect.resource.id": f"prefect.flow-run.{run}"},
                   "id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat()} for run in (silent, finished)]
        httpx.post(f"{prefect_api}/events", json=events, timeout=10).raise_for_status()
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(finished, Completed(), force=True)
            deadline = time.monotonic() + 90
            while client.read_flow_run(silent).state.type.value != "CRASHED" and time.monotonic() < deadline:
                time.sleep(2)
            silent_run, finished_run = client.read_flow_run(silent), client.read_flow_run(finished)
    finally:
        automation.delete()
    assert silent_run.state.type.value == "CRASHED", silent_run.state
    assert "no heartbeat for 10 s" in (silent_run.state.message or "")
    assert finished_run.state.type.value == "COMPLETED", finished_run.state
