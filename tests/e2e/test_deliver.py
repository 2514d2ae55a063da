"""The delivery flow end to end on the local platform (issue 5's scenarios, in order).

Each test builds on the one before: v1 serves, then v2, then every failure leaves v2 serving.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from flows.errors import AppTestError, ModelIntegrityError, RolloutError, SmokeTestError
from flows.settings import REPO_ROOT, Settings
from tests.e2e.support import LoadGenerator, ReplicaSetWatcher, get_json, wait_for
from tests.fixtures.models import golden_set_failing_model, good_model, tamper
from tests.kube_support import wait_until_settled

pytestmark = pytest.mark.slow
STATE: dict = {}


def publish(tmp_path, model_dir, name: str) -> int:
    from flows.model_store import get_store
    from flows.settings import Settings

    return get_store(Settings()).publish(model_dir, name).version


def version_served(kube, env) -> dict:
    """What the environment's NodePort answers once the old pods are gone."""
    wait_until_settled(kube, env.namespace)
    return get_json(f"http://127.0.0.1:{env.node_port}/version")


def predict_body(model_dir) -> bytes:
    card = json.loads((model_dir / "model.json").read_text())
    return json.dumps({"instances": card["golden_set"]["inputs"][:1]}).encode()


def docker_tags(docker_client, fragment: str) -> list[str]:
    return [t for image in docker_client.images.list() for t in image.tags if fragment in t]


def test_1_first_delivery_serves_v1(e2e_environment, worktree, model_name, tmp_path, kube):
    from flows.deliver import deliver

    model_dir = good_model(tmp_path / "v1", seed=0)
    STATE["model_dir"] = model_dir
    assert publish(tmp_path, model_dir, model_name) == 1
    result = deliver(model_name, None, "main", e2e_environment.name)
    assert result.outcome == "delivered" and result.release.model.version == 1 and result.built
    assert "@sha256:" in result.ref
    served = version_served(kube, e2e_environment)
    assert served["model"] == {"name": model_name, "version": 1, "sha256": result.release.model.sha256}
    assert served["git_sha"] == worktree.git("rev-parse", "main")
    status = subprocess.run([sys.executable, "-m", "flows.cli", "status", "e2e"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout
    assert result.ref.split("@")[1] in status, status
    STATE["v1"] = result


def test_2_model_only_change_pushes_one_layer_and_same_inputs_build_nothing(e2e_environment, model_name, tmp_path, kube):
    from flows.deliver import deliver

    assert publish(tmp_path, good_model(tmp_path / "v2", seed=1), model_name) == 2
    result = deliver(model_name, None, "main", e2e_environment.name)
    assert result.outcome == "delivered" and result.release.model.version == 2 and result.built
    assert result.layers_pushed == 1, f"a model-only change pushed {result.layers_pushed} layers"
    assert result.layers_existing >= 3
    assert version_served(kube, e2e_environment)["model"]["version"] == 2
    again = deliver(model_name, None, "main", e2e_environment.name)
    assert not again.built and again.layers_pushed == 0
    assert again.ref == result.ref
    STATE["v2"] = result


def test_3_golden_set_failure_is_not_pushed_and_v2_serves(e2e_environment, model_name, tmp_path, docker_client, settings, kube):
    from flows.deliver import deliver
    from flows.model_store import get_store
    from flows.registry import find_existing, load_credentials
    from flows.release import Release

    version = publish(tmp_path, golden_set_failing_model(tmp_path / "bad"), model_name)
    with pytest.raises(SmokeTestError):
        deliver(model_name, version, "main", e2e_environment.name)
    ref = get_store(settings).resolve(model_name, version)
    release = Release(app=settings.app_name, git_sha=STATE["v2"].release.git_sha, model=ref)
    pushed = find_existing(release.repository(settings.registry_host), release.version, release,
                           load_credentials(settings.registry_credentials_block))
    assert pushed is None, "an image that failed its smoke test was pushed"
    assert version_served(kube, e2e_environment)["model"]["version"] == 2


def deliver_during_load(e2e_environment, kube, run):
    """Runs `run()` while a load generator hits /predict; returns (error, load, watcher)."""
    url = f"http://127.0.0.1:{e2e_environment.node_port}/predict"
    with ReplicaSetWatcher(kube, e2e_environment.namespace, "aiship-app") as watcher, \
            LoadGenerator(url, predict_body(STATE["model_dir"])) as load:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - returned for the caller's assertions
            return exc, load, watcher
    return None, load, watcher


@pytest.mark.parametrize("overlay", ["crash_after_30s", "ready_needs_setting"])
def test_4_cluster_only_failures_roll_back_with_zero_failed_requests(overlay, e2e_environment, worktree, model_name, kube):
    from flows.deliver import deliver

    sha = worktree.commit_overlay(overlay, f"known-bad app: {overlay}")
    error, load, watcher = deliver_during_load(
        e2e_environment, kube, lambda: deliver(model_name, 2, sha, e2e_environment.name))
    assert isinstance(error, RolloutError), f"expected RolloutError, got {error!r}"
    assert "restored" in str(error), str(error)
    assert load.ok > 20 and load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:5]}"
    assert len(watcher.hashes) >= 2, f"only ReplicaSets {watcher.hashes} had pods: no rollout happened"
    served = version_served(kube, e2e_environment)
    assert served["model"]["version"] == 2 and served["git_sha"] == STATE["v2"].release.git_sha


def test_4_digest_that_does_not_exist_rolls_back(e2e_environment, model_name, kube, settings):
    from flows.rollout import roll_out

    missing = f"{settings.registry_host}/{settings.app_name}@sha256:{'0' * 64}"
    release = STATE["v2"].release.pinned(missing)
    error, load, watcher = deliver_during_load(e2e_environment, kube, lambda: roll_out(release, e2e_environment))
    assert isinstance(error, RolloutError) and error.reason in ("ImagePullBackOff", "ErrImagePull"), repr(error)
    assert load.ok > 20 and load.failures == [], f"{len(load.failures)} failed requests: {load.failures[:5]}"
    assert len(watcher.hashes) >= 2, f"only ReplicaSets {watcher.hashes} had pods: no rollout happened"
    assert version_served(kube, e2e_environment)["model"]["version"] == 2


def test_5_tampered_model_is_refused_before_any_build(e2e_environment, model_name, tmp_path, settings, docker_client, kube):
    from flows.deliver import deliver

    version = publish(tmp_path, good_model(tmp_path / "v-tampered", seed=2), model_name)
    tamper(settings.model_store_path / "models" / model_name / str(version) / "model.skops")
    with pytest.raises(ModelIntegrityError):
        deliver(model_name, version, "main", e2e_environment.name)
    assert not docker_tags(docker_client, f"-{model_name}-v{version}"), "an image was built from a tampered model"
    assert version_served(kube, e2e_environment)["model"]["version"] == 2


def test_6_registry_down_during_push_is_retried(e2e_environment, model_name, tmp_path, settings, docker_client, kube):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from flows.deliver import deliver
    from flows.model_store import get_store

    version = publish(tmp_path, good_model(tmp_path / "v-retry", seed=3), model_name)
    model = get_store(settings).resolve(model_name, version)
    tag = STATE["v2"].release.model_copy(update={"model": model.identity()}).image_tag(settings.registry_host)
    events: list[str] = []

    def registry_outage() -> None:
        # The smoke test's container runs from the built tag: stop the registry while it runs,
        # start it again a few seconds after it ends, so the push meets a registry that is down.
        wait_for(lambda: docker_client.containers.list(filters={"ancestor": tag}), 600, "the smoke test container", 0.2)
        subprocess.run(["bash", "local/registry.sh", "down"], cwd=REPO_ROOT, check=True)
        events.append("stopped")
        wait_for(lambda: not docker_client.containers.list(filters={"ancestor": tag}), 300, "the smoke test to end", 0.2)
        time.sleep(4)
        subprocess.run(["bash", "local/registry.sh", "up"], cwd=REPO_ROOT, check=True)
        events.append("started")

    outage = threading.Thread(target=registry_outage, daemon=True)
    outage.start()
    state = deliver(model_name, version, "main", e2e_environment.name, return_state=True)
    outage.join(timeout=120)
    assert events == ["stopped", "started"]
    result = state.result()
    assert result.outcome == "delivered" and result.release.model.version == version
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        push = [run for run in runs if run.name.startswith("push-image")]
        assert len(push) == 1, [run.name for run in runs]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    push_logs = [log.message for log in logs if log.task_run_id == push[0].id]
    assert any("Retry" in message for message in push_logs), f"no retry in the push task's log: {push_logs[-5:]}"
    assert push[0].run_count > 1
    assert version_served(kube, e2e_environment)["model"]["version"] == version
    STATE["v_retry"] = version


def test_7_failing_app_tests_stop_before_anything_is_built(e2e_environment, worktree, model_name, docker_client):
    from flows.deliver import deliver

    sha = worktree.commit_overlay("failing_app_test", "known-bad app: its own tests fail")
    with pytest.raises(AppTestError) as failure:
        deliver(model_name, 2, sha, e2e_environment.name)
    assert "test_the_fixture_breaks_the_build" in str(failure.value)
    # Only the test image (never pushed) exists for this commit: nothing was built to deliver.
    built = [t for t in docker_tags(docker_client, sha[:12]) if not t.startswith("aiship-tests/")]
    assert not built, f"an image was built from a commit whose tests fail: {built}"
    assert f"aiship-tests/{Settings().app_name}:{sha[:12]}" in docker_tags(docker_client, sha[:12])
