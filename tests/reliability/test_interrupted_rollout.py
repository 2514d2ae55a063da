"""A worker killed in the middle of a rollout: nothing reads as serving that did not complete, and the next run settles it."""

from __future__ import annotations

import signal

import pytest

from flows import environments as envs
from flows import kube
from flows.errors import RolloutError
from flows.promote import promotable
from flows.release import DIGEST
from flows.rollout import roll_out_release
from tests.kube_support import environment, release, version_at, wait_until_settled
from tests.reliability.faults import rollout_process, wait_for


def applied(api_client, env, app: str, digest: str):
    """The Deployment once a rollout of `digest` has been applied to it (the child is now waiting on it)."""
    deployment = kube.read_deployment(api_client, env.namespace, app)
    return deployment if deployment and (deployment["metadata"].get("annotations") or {}).get(DIGEST) == digest else None


def kill_after_apply(settings, api_client, env, pinned, tmp_path) -> None:
    """Runs the rollout of `pinned` in a child process and SIGKILLs it once the apply landed, before it finished."""
    proc = rollout_process(settings, pinned, env, settings.state_dir / "kubernetes" / "kubeconfig", tmp_path / "rollout.log")
    try:
        wait_for(f"the child's apply of {pinned.digest}", lambda: applied(api_client, env, pinned.app, pinned.digest)
                 or proc.poll() is not None)
        assert proc.poll() is None, f"the rollout ended before the kill: {(tmp_path / 'rollout.log').read_text()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # killed while it ran, not finished


def test_a_rollout_killed_while_it_waits_is_not_serving_and_the_next_run_goes_back_to_what_serves(
        settings, api_client, namespaces, images, tmp_path):
    env = environment(api_client, namespaces, "killed")
    v1 = roll_out_release(api_client, release(images["v1"], 1), env, settings)
    broken = release(images["never-ready"], 3)

    kill_after_apply(settings, api_client, env, broken, tmp_path)

    now = envs.serving_version(api_client, env, broken.app)
    assert (now.digest, now.complete) == (broken.digest, False)
    assert "(rollout unfinished)" in "\n".join(envs.status_lines({broken.app: {env.name: now}}))
    with pytest.raises(RolloutError, match="has not completed"):
        promotable(now, broken.app, env.name)
    assert version_at(env)["mark"] == "v1"  # maxUnavailable 0: the old pods still answer

    # The next run of the same broken release finds it unfinished, fails it, and restores v1, not the broken one.
    with pytest.raises(RolloutError, match=f"restored {v1.digest}"):
        roll_out_release(api_client, broken, env, settings)
    now = envs.serving_version(api_client, env, broken.app)
    assert (now.digest, now.complete) == (v1.digest, True)
    wait_until_settled(api_client, env.namespace)
    assert version_at(env)["mark"] == "v1"


def test_a_rollout_killed_after_its_apply_that_completes_by_itself_is_marked_complete_by_the_next_run(
        settings, api_client, namespaces, images, tmp_path):
    env = environment(api_client, namespaces, "finished")
    roll_out_release(api_client, release(images["v1"], 1), env, settings)
    good = release(images["v2"], 2)

    kill_after_apply(settings, api_client, env, good, tmp_path)
    from flows.progress import is_complete

    wait_for("the controller finishing the rollout the dead run started",
             lambda: is_complete(kube.read_deployment(api_client, env.namespace, good.app)), timeout=90)
    assert envs.serving_version(api_client, env, good.app).complete is False  # complete in the cluster, not recorded

    result = roll_out_release(api_client, good, env, settings)  # delivering it again finishes the record
    assert (result.digest, result.previous_digest) == (good.digest, good.digest)
    now = envs.serving_version(api_client, env, good.app)
    assert (now.digest, now.complete) == (good.digest, True)
    wait_until_settled(api_client, env.namespace)
    assert version_at(env)["mark"] == "v2"
