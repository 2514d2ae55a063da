"""Parts of the platform stopped while an operation uses them: the Kubernetes API server, the registry, Azurite,
the Prefect server.

A part "back after a few seconds" is killed (or stopped) and started again by the project's own
script while the operation runs in a thread; each test checks the part really refused a call
meanwhile, and that the operation's retries carried it to the right outcome.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flows import kube
from flows.errors import ImagePushError, ModelStoreError
from flows.release import DIGEST
from flows.rollout import roll_out_release
from tests.fixtures.models import good_model
from tests.kube_support import environment, release, version_at, wait_until_settled
from tests.reliability.faults import REPO, Background, wait_for


def part(action: str, name: str) -> None:
    """`bash local/<name>.sh <action>`: the project's own script, as CI runs it."""
    subprocess.run(["bash", str(REPO / "local" / f"{name}.sh"), action], cwd=REPO, check=True, capture_output=True, timeout=180)


def refused(call) -> bool:
    try:
        call()
    except Exception:
        return True
    return False


def test_the_api_server_killed_during_a_rollout_wait_is_waited_out(settings, api_client, namespaces, images, caplog):
    from kubernetes import client

    env = environment(api_client, namespaces, "apiserver")
    roll_out_release(api_client, release(images["v1"], 1), env, settings)
    new = release(images["v2"], 2)
    caplog.set_level(logging.WARNING, logger="aiship.retry")
    rollout = Background(lambda: roll_out_release(api_client, new, env, settings))
    rollout.start()
    wait_for("the apply of v2", lambda: ((kube.read_deployment(api_client, env.namespace, new.app) or {})
                                          .get("metadata", {}).get("annotations") or {}).get(DIGEST) == new.digest)
    pid = int((settings.state_dir / "kubernetes" / "kube-apiserver.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # a crash: no graceful drain
    try:
        wait_for("the API server refusing calls", lambda: refused(lambda: client.VersionApi(api_client).get_code()), timeout=10)
        assert rollout.is_alive()  # the fault hit while the rollout waited
        time.sleep(3)
    finally:
        part("up", "kubernetes")  # starts the API server again; the other components kept running
    result = rollout.outcome(180)
    assert (result.digest, result.previous_digest) == (new.digest, release(images["v1"], 1).digest)
    assert [r for r in caplog.records if "attempt" in r.getMessage()], "no call was retried: the fault missed"
    # kube-proxy re-syncs its rules once it reaches the new API server; until then the NodePort may
    # refuse, or still reach a v1 pod in its preStop pause
    wait_until_settled(api_client, env.namespace)
    wait_for("v2 answering on the NodePort", lambda: answered(env) == "v2", timeout=60)


def answered(env) -> str | None:
    import httpx

    try:
        return version_at(env)["mark"]
    except httpx.HTTPError:
        return None


@pytest.fixture(scope="module")
def built():
    from tests.integration.test_image_build import build

    return build("v1")


def push_run_count(state) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        return prefect.read_task_run(state.state_details.task_run_id).run_count


def test_the_registry_stopped_during_a_push_is_retried_to_the_same_digest(settings, built):
    from flows.registry import push_image

    part("down", "registry")
    try:
        push = Background(lambda: push_image(built, settings, return_state=True))
        push.start()
        time.sleep(4)  # the first try meets a stopped registry
        assert push.is_alive()
    finally:
        part("up", "registry")
    state = push.outcome(120)
    assert state.is_completed(), state.message
    assert push_run_count(state) >= 2  # the fault hit: one try failed, a retry pushed
    again = push_image(built, settings)
    assert state.result().digest == again.digest and again.layers_pushed == ()


def test_the_registry_down_past_the_retry_budget_fails_naming_it(settings, built):
    from flows.registry import push_image

    part("down", "registry")
    try:
        state = push_image(built, settings, return_state=True)  # 2 + 5 + 10 + 20 s of retries
    finally:
        part("up", "registry")
    assert state.is_failed() and push_run_count(state) == 5
    with pytest.raises(ImagePushError, match="the registry may be down or busy"):
        state.result()


@pytest.fixture(scope="module")
def azure_version(settings, tmp_path_factory):
    from flows.model_store import get_store

    store = get_store(settings, kind="azure")
    return store.publish(good_model(tmp_path_factory.mktemp("model")), f"aiship-tests-{uuid.uuid4().hex[:10]}",
                         publisher="reliability")


def test_azurite_stopped_during_a_fetch_is_retried(settings, azure_version, tmp_path, caplog):
    from flows.model_store import get_store

    store = get_store(settings, kind="azure")
    caplog.set_level(logging.WARNING, logger="aiship.retry")
    part("down", "azurite")
    try:
        fetch = Background(lambda: store.fetch(azure_version, tmp_path / "model"))
        fetch.start()
        time.sleep(3)
        assert fetch.is_alive()
    finally:
        part("up", "azurite")
    fetched = fetch.outcome(60)
    assert fetched.ref.sha256 == azure_version.sha256 and Path(fetched.path).is_file()
    assert [r for r in caplog.records if "attempt" in r.getMessage()], "no call was retried: the fault missed"


def test_azurite_that_stays_down_fails_the_fetch_clearly_and_writes_nothing(settings, azure_version, tmp_path):
    from flows.model_store import get_store

    store = get_store(settings, kind="azure")
    store.attempts = 3  # the budget, shortened: what matters is what happens once it is spent
    part("down", "azurite")
    try:
        with pytest.raises(ModelStoreError, match="gave up after 3 attempts; is the store at .* running") as caught:
            store.fetch(azure_version, tmp_path / "model")
    finally:
        part("up", "azurite")
    assert caught.value.transient
    assert [p.name for p in (tmp_path / "model").iterdir()] == []  # nothing to build from


# A delivery's flow in a process of its own, as the worker starts one: a rollout inside a flow run.
RESTART_CHILD = """
import sys
from prefect import flow
from flows.release import PinnedRelease
from flows.rollout import roll_out
from flows.settings import Environment

@flow(name="aiship-tests-prefect-restart")
def deliver_release(release: str, env: str) -> str:
    return roll_out(PinnedRelease.model_validate_json(release), Environment.model_validate_json(env)).digest

print(deliver_release(sys.argv[1], sys.argv[2]))
"""


def worker_setting(name: str) -> str:
    """A setting local/prefect.sh exports for the worker (and so for every flow run it starts)."""
    import re

    found = re.search(rf"^export {name}=(\S+)$", (REPO / "local" / "prefect.sh").read_text(), re.M)
    assert found, f"local/prefect.sh exports no {name}"
    return found.group(1)


def test_the_prefect_server_restarted_during_a_delivery_leaves_no_run_running(settings, api_client, namespaces, images, tmp_path):
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    env = environment(api_client, namespaces, "prefect")
    roll_out_release(api_client, release(images["v1"], 1), env, settings)
    new = release(images["v2"], 2)
    # minReadySeconds 20: the rollout waits long enough for the server to be down and back meanwhile.
    child_env = {**os.environ, "AISHIP_ROLLOUT_MIN_READY_SECONDS": "20",
                 "AISHIP_ROLLOUT_PROGRESS_DEADLINE_SECONDS": str(settings.rollout_progress_deadline_seconds),
                 "PREFECT_CLIENT_MAX_RETRIES": worker_setting("PREFECT_CLIENT_MAX_RETRIES")}
    log = tmp_path / "delivery.log"
    proc = subprocess.Popen([sys.executable, "-c", RESTART_CHILD, new.model_dump_json(), env.model_dump_json()],
                            cwd=REPO, env=child_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    health = f"{os.environ['PREFECT_API_URL']}/health"
    try:
        wait_for("the apply of v2", lambda: ((kube.read_deployment(api_client, env.namespace, new.app) or {})
                                              .get("metadata", {}).get("annotations") or {}).get(DIGEST) == new.digest)
        pid = int((settings.state_dir / "prefect" / "server.pid").read_text())
        os.kill(pid, signal.SIGKILL)  # a crash; a graceful stop could take a minute to let go
        wait_for("the Prefect server gone", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
        assert refused(lambda: httpx.get(health, timeout=2).raise_for_status())
        assert proc.poll() is None, log.read_text()  # the fault hit while the delivery ran
    finally:
        part("up", "prefect")  # the server again (the worker kept running)
    assert proc.wait(timeout=240) == 0, log.read_text()
    assert new.digest in log.read_text().splitlines()[-1]

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["aiship-tests-prefect-restart"])),
                                      sort="START_TIME_DESC", limit=1)
    assert runs and runs[0].state.is_completed(), runs and runs[0].state
    wait_until_settled(api_client, env.namespace)
    assert version_at(env)["mark"] == "v2"
