"""The Prefect server and worker started by `local/prefect.sh`: runs are recorded and readable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
from prefect import flow

from tests.prefect_events import prefect_auth


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
    workers = httpx.post(f"{prefect_api}/work_pools/aiship-local/workers/filter", json={}, timeout=5, auth=prefect_auth())
    assert workers.status_code == 200, workers.text
    assert any(w["name"] == "aiship-local-worker" and w["status"] == "ONLINE" for w in workers.json()), workers.json()


def test_the_server_deletes_flow_runs_past_the_retention_period(prefect_api):
    """The running server's own settings: flow runs are vacuumed, not only events (the hourly
    deletion itself is Prefect's; bench/disk.py measures what a delivery adds until then)."""
    settings = httpx.get(f"{prefect_api}/admin/settings", timeout=5, auth=prefect_auth())
    assert settings.status_code == 200, settings.text
    vacuum = settings.json()["server"]["services"]["db_vacuum"]
    assert set(vacuum["enabled"]) >= {"events", "flow_runs"}, vacuum
    days = int(os.environ.get("AISHIP_PREFECT_RETENTION_DAYS", "30"))
    assert vacuum["retention_period"] in (f"P{days}D", days * 86400), vacuum


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
        httpx.post(f"{prefect_api}/events", json=events, timeout=10, auth=prefect_auth()).raise_for_status()
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


def test_a_failed_delivery_run_is_told_through_the_notification_block(prefect_api):
    """The automation `aiship deploy` registers, watching a flow of this test only, sends a
    Slack-shaped webhook through a CustomWebhookNotificationBlock to a receiver on 127.0.0.1."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prefect import flow
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.automations import failure_notification_automation

    got: list[dict] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append({"path": self.path, "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tag = uuid.uuid4().hex[:8]
    block = CustomWebhookNotificationBlock(name="aiship-tests", url=f"http://127.0.0.1:{server.server_port}/hook/{{{{token}}}}",
                                           json_data={"text": "{{subject}}\n{{body}}"}, secrets={"token": "t0ken"})
    block_id = block.save(f"aiship-tests-notify-{tag}", overwrite=True)
    name = f"aiship-tests-doomed-{tag}"
    automation = failure_notification_automation(block_id, flows=(name,), name=f"aiship-tests-notify-{tag}").create()

    @flow(name=name)
    def doomed(fail: bool) -> None:
        if fail:
            raise RuntimeError("rollout of sha256:feed failed: CrashLoopBackOff; restored sha256:beef")

    try:
        time.sleep(2)  # the automation reaches the server's triggers
        assert doomed(fail=False, return_state=True).is_completed()
        assert doomed(fail=True, return_state=True).is_failed()
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)  # a notification for the completed run would have come by now too
    finally:
        automation.delete()
        server.shutdown()
        CustomWebhookNotificationBlock.delete(f"aiship-tests-notify-{tag}")
    assert len(got) == 1, got
    text = got[0]["body"]["text"]
    assert got[0]["path"] == "/hook/t0ken"  # the URL's secret part came from the block's secrets
    assert name in text and "Failed" in text and "CrashLoopBackOff" in text, text


def test_the_api_refuses_anonymous_and_wrong_credentials(prefect_api):
    """The server runs with API authentication: only /health answers anyone; an approval (a resume) needs the credential."""
    assert prefect_auth() is not None, "tests/conftest.py found no credential in .aiship/prefect/api-auth-string"
    user = os.environ["PREFECT_API_AUTH_STRING"].split(":", 1)[0]
    for auth in (None, httpx.BasicAuth(user, "wrong")):
        assert httpx.post(f"{prefect_api}/flow_runs/filter", json={"limit": 1}, auth=auth, timeout=5).status_code == 401
        assert httpx.get(f"{prefect_api}/block_documents/filter", auth=auth, timeout=5).status_code == 401
        resume = httpx.post(f"{prefect_api}/flow_runs/{uuid.uuid4()}/resume", auth=auth, timeout=5,
                            json={"run_input": {"approve": True, "reviewer": "mallory"}})
        assert resume.status_code == 401, resume.text
    assert httpx.post(f"{prefect_api}/flow_runs/filter", json={"limit": 1}, auth=prefect_auth(), timeout=5).status_code == 200
    assert httpx.get(f"{prefect_api}/health", timeout=5).status_code == 200
    # The CLI says which credential was refused, not that the server is down.
    cli = subprocess.run([str(Path(sys.executable).with_name("aiship")), "status"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PREFECT_API_AUTH_STRING": f"{user}:wrong"})
    assert cli.returncode == 1 and "refused the credential; set PREFECT_API_AUTH_STRING" in cli.stderr, cli.stderr


def test_a_promotion_whose_approvers_sign_waits_past_unsigned_and_forged_answers(prefect_api):
    """Paused on the real server: answers resumed through the API that are unsigned, or signed by
    another holder of the credential under the approver's name, are logged and waited past; the
    approver's own signature decides."""
    import threading

    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId

    from flows.approvals import sign
    from flows.apps import AppRegistration
    from flows.promote import wait_for_approval
    from flows.settings import Environment
    from tests.unit.test_approvals import keypair

    ana, ana_public = keypair()
    mallory, _ = keypair()
    registration = AppRegistration(name="aiship-tests-signed", repository="/git/x", sources=["acme/x"], models=["x"],
                                   approver_keys={"ana": ana_public},
                                   environments={"staging": Environment(name="staging", namespace="x", node_port=16150)})

    @flow(name=f"aiship-tests-approval-{uuid.uuid4().hex[:8]}")
    def waits():
        return wait_for_approval(registration, 180, "ship it?")

    ended = {}
    runner = threading.Thread(target=lambda: ended.setdefault("state", waits(return_state=True)), daemon=True)
    runner.start()
    with get_client(sync_client=True) as client:
        def next_pause(after: uuid.UUID | None):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[waits.name])))
                run = next((r for r in runs if r.state and r.state.is_paused() and r.state.id != after), None)
                if run:
                    return run
                time.sleep(0.5)
            raise AssertionError(f"no run of {waits.name} paused (again) within 60 s")

        run = next_pause(None)
        answers = [{"approve": True, "reviewer": "ana", "comment": "", "signature": ""},
                   {"approve": True, "reviewer": "ana", "comment": "", "signature": sign(mallory, run.id, True, "ana", "")},
                   {"approve": True, "reviewer": "ana", "comment": "", "signature": sign(ana, uuid.uuid4(), True, "ana", "")}]
        for answer in answers:
            assert client.resume_flow_run(run.id, run_input=answer).status.value == "ACCEPT"
            run = next_pause(run.state.id)  # waited past: paused again, for another answer
        good = {"approve": True, "reviewer": "ana", "comment": "signed", "signature": sign(ana, run.id, True, "ana", "signed")}
        assert client.resume_flow_run(run.id, run_input=good).status.value == "ACCEPT"
        runner.join(timeout=60)
        assert ended["state"].is_completed(), ended["state"]
        assert ended["state"].result().comment == "signed"
        deadline, ignored = time.monotonic() + 15, []
        while len(ignored) < 3 and time.monotonic() < deadline:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            ignored = [log.message for log in logs if "ignored" in log.message]
            time.sleep(1)
    assert len(ignored) == 3, ignored
    assert "is not signed" in ignored[0] and all("signature is not ana's key" in m for m in ignored[1:]), ignored


def test_the_server_keeps_its_runs_in_postgresql(prefect_api, settings):
    """A run recorded through the API is a row of the local PostgreSQL's `prefect` database, read
    there with the credential local/postgres.sh wrote (mode 600, for no one but its owner)."""
    import asyncio

    import asyncpg

    pgpass = settings.state_dir / "postgres" / "pgpass"
    assert pgpass.stat().st_mode & 0o077 == 0, oct(pgpass.stat().st_mode)
    host, port, _, user, password = pgpass.read_text().strip().split(":", 4)
    state = echo(uuid.uuid4().hex, return_state=True)
    run_id = state.state_details.flow_run_id

    async def stored_state() -> str | None:
        connection = await asyncpg.connect(host=host, port=int(port), user=user, password=password, database="prefect")
        try:
            return await connection.fetchval("select state_type from flow_run where id = $1", run_id)
        finally:
            await connection.close()

    assert asyncio.run(stored_state()) == "COMPLETED"
