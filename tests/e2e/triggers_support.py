"""What the trigger tests (and bench/triggers.py) read the Prefect server, the receiver and git with.

Everything goes to 127.0.0.1: the Prefect REST API (:4200), the webhook receiver (:8700), the
apps' NodePorts. Flow runs are found by deployment and parameters, events by name and resource.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.settings import REPO_ROOT, Settings
from tests.prefect_events import prefect_auth

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
POOL = "aiship-local"
WORKER = "aiship-local-worker"
# deployment -> the flow it runs (the REST API addresses deployments as <flow>/<deployment>)
FLOW_OF = {"deliver-model": "deliver", "deliver": "deliver", "deliver-commit": "deliver-commit",
           "watch-models": "watch-models", "promote": "promote", "rollback": "rollback"}


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class PrefectApi:
    """A thin client of the Prefect server's REST API (what the UI itself calls)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = (url or Settings().prefect_api_url).rstrip("/")
        self.http = httpx.Client(timeout=30, auth=prefect_auth())
        self._deployments: dict[str, str] = {}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        # No retry: on PostgreSQL the server does not turn concurrent writers away, so any
        # error answer is a finding.
        response = self.http.request(method, f"{self.url}{path}", json=body)
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path} answered HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def deployment_id(self, name: str) -> str:
        if name not in self._deployments:
            self._deployments[name] = self.call("GET", f"/deployments/name/{FLOW_OF[name]}/{name}")["id"]
        return self._deployments[name]

    def worker_online(self) -> bool:
        workers = self.call("POST", f"/work_pools/{POOL}/workers/filter", {"workers": {"status": {"any_": ["ONLINE"]}}})
        return any(w["name"] == WORKER for w in workers)

    def flow_run(self, run_id: str) -> dict:
        return self.call("GET", f"/flow_runs/{run_id}")

    def runs(self, deployment: str, since: datetime, **params: Any) -> list[dict]:
        """Runs of `deployment` created at or after `since` whose parameters include `params`, oldest first."""
        body = {"deployments": {"id": {"any_": [self.deployment_id(deployment)]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 200}
        found = [r for r in self.call("POST", "/flow_runs/filter", body)
                 if parse_time(r["created"]) >= since and all(r["parameters"].get(k) == v for k, v in params.items())]
        return sorted(found, key=lambda r: r["created"])

    def wait_state(self, run_id: str, states: set[str], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run["state_type"] in states or run["state_type"] in FINAL:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run['name']} ({run_id}) still {run['state_name']} after {timeout:.0f}s; "
                                     f"waiting for {sorted(states)}; see {self.ui_url(run_id)}")
            time.sleep(1.0)

    def wait_final(self, run_id: str, timeout: float) -> dict:
        return self.wait_state(run_id, FINAL, timeout)

    def task_runs(self, flow_run_id: str) -> list[dict]:
        return self.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})

    def events(self, name: str, resource_id: str, since: datetime) -> list[dict]:
        """Events called `name` about `resource_id` that occurred since `since`."""
        body = {"filter": {"occurred": {"since": since.isoformat(), "until": (now() + timedelta(hours=1)).isoformat()},
                           "event": {"name": [name]}, "resource": {"id": [resource_id]}}, "limit": 50}
        return self.call("POST", "/events/filter", body)["events"]

    def resume(self, run_id: str, run_input: dict) -> dict:
        return self.call("POST", f"/flow_runs/{run_id}/resume", {"run_input": run_input})

    def logs(self, run_id: str) -> list[str]:
        rows = self.call("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        return [r["message"] for r in rows]

    def ui_url(self, run_id: str) -> str:
        return f"{self.url.removesuffix('/api')}/runs/flow-run/{run_id}"

    def describe(self, run: dict) -> str:
        """One run's name, state and last log lines, for an assertion message."""
        tail = " | ".join(self.logs(run["id"])[-4:])
        return f"{run['name']} {run['state_name']}: {run['state'].get('message') or ''} [{tail}] {self.ui_url(run['id'])}"


def webhook_secret(settings: Settings, name: str = "secret") -> str:
    """One of the receiver's secrets (`secret`, GitHub's; `eventgrid-key`): the copies local/webhooks.sh leaves."""
    path = settings.state_dir / "webhooks" / name
    if not path.is_file():
        raise AssertionError(f"{path} is missing; start the receiver with `aiship local up webhooks`")
    return path.read_text().strip()


def github_push_body(repo: str, sha: str, ref: str = "refs/heads/main", pusher: str = "e2e") -> bytes:
    """A GitHub `push` payload, as much of it as aiship reads and a little more."""
    owner, _, name = repo.partition("/")
    return json.dumps({"ref": ref, "before": "0" * 40, "after": sha, "created": False, "deleted": False,
                       "repository": {"name": name, "full_name": repo, "owner": {"name": owner}},
                       "pusher": {"name": pusher, "email": f"{pusher}@aiship.invalid"},
                       "head_commit": {"id": sha, "message": "e2e"}}).encode()


def send_github(settings: Settings, body: bytes, secret: str, event: str = "push", delivery: str | None = None) -> httpx.Response:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-Hub-Signature-256": signature, "User-Agent": "GitHub-Hookshot/e2e"}
    return httpx.post(f"http://127.0.0.1:{settings.webhook_port}/github", content=body, headers=headers, timeout=30)


def send_eventgrid(settings: Settings, events: list[dict], key: str) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{settings.webhook_port}/eventgrid", json=events,
                      headers={"aeg-sas-key": key, "aeg-event-type": "Notification"}, timeout=30)


def blob_created(settings: Settings, name: str, version: int) -> dict:
    """An Event Grid (EventGrid schema) BlobCreated event for a version's manifest in Azurite."""
    container = settings.azure_container
    return {"id": str(uuid.uuid4()), "eventType": "Microsoft.Storage.BlobCreated",
            "topic": "/subscriptions/0/resourceGroups/aiship/providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
            "subject": f"/blobServices/default/containers/{container}/blobs/models/{name}/{version}/manifest.json",
            "eventTime": now().isoformat(), "dataVersion": "", "metadataVersion": "1",
            "data": {"api": "PutBlob", "contentType": "application/json", "blobType": "BlockBlob",
                     "url": f"http://127.0.0.1:{settings.azurite_port}/devstoreaccount1/{container}/models/{name}/{version}/manifest.json"}}


class BareRepoClone:
    """A clone of the local bare repository (local/git.sh) that commits and pushes like a developer."""

    def __init__(self, settings: Settings, path: Path) -> None:
        self.remote = settings.state_dir / "git" / "aiship.git"
        if not (self.remote / "HEAD").is_file():
            raise AssertionError(f"no bare repository at {self.remote}; create it with `aiship local up git`")
        self.path = path
        subprocess.run(["git", "clone", "--quiet", "--branch", "main", str(self.remote), str(path)], check=True)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-c", "user.name=aiship-e2e", "-c", "user.email=e2e@aiship.invalid", *args],
                              cwd=self.path, capture_output=True, text=True, check=check)

    def commit_doc(self, tag: str) -> str:
        """Commits a harmless change under docs/ on top of the remote's main; returns the SHA."""
        return self.commit_line("docs/e2e-pushes.md", tag, f"docs: e2e push {tag}")

    def commit_line(self, relpath: str, tag: str, message: str) -> str:
        """Appends a line to `relpath` on top of the remote's main and commits it; returns the SHA."""
        self.git("fetch", "--quiet", "origin", "main")
        self.git("checkout", "--quiet", "-B", "main", "origin/main")
        note = self.path / relpath
        note.parent.mkdir(exist_ok=True)
        with note.open("a") as f:
            f.write(f"- {tag} at {now().isoformat(timespec='seconds')}\n")
        self.git("add", relpath)
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self) -> str:
        """Pushes main; returns what the hook printed (its delivery's outcome)."""
        proc = self.git("push", "origin", "main", check=False)
        if proc.returncode != 0:
            raise AssertionError(f"git push to {self.remote} failed: {proc.stderr.strip()}")
        return proc.stderr


def worker_environment(settings: Settings) -> dict[str, str]:
    """The environment of the running Prefect worker (its flow runs inherit it)."""
    pid = (settings.state_dir / "prefect" / "worker.pid").read_text().strip()
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def aiship(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs the `aiship` console script of the venv against the local Prefect server.

    Not `python -m flows.cli`: flows/cli.py has no `__main__` guard, so that form does nothing
    and exits 0."""
    env = {**os.environ, "PREFECT_API_URL": os.environ.get("PREFECT_API_URL") or Settings().prefect_api_url}
    return subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "aiship"), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def deploy(timeout: float = 300) -> str:
    """`aiship deploy` (prefect deploy --all); returns its output."""
    proc = aiship("deploy", timeout=timeout)
    if proc.returncode != 0 or "registered" not in proc.stdout:
        raise AssertionError(f"aiship deploy failed (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-800:]}")
    return proc.stdout


_DEPLOYED: list[str] = []


@pytest.fixture(scope="session")
def prefect_api(platform) -> PrefectApi:
    """The Prefect REST API, after `aiship deploy` registered the deployments (once per test
    session) and with the worker online."""
    if not _DEPLOYED:
        _DEPLOYED.append(deploy())
    client = PrefectApi(platform.prefect_api_url)
    for name in FLOW_OF:
        client.deployment_id(name)  # fails naming the deployment that is missing
    if not client.worker_online():
        pytest.fail(f"the worker {WORKER} of pool {POOL} is not ONLINE; start it with `aiship local up prefect`")
    return client
