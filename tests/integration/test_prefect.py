"""The Prefect server and worker started by `local/prefect.sh`: runs are recorded and readable."""

from __future__ import annotations

import uuid

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
