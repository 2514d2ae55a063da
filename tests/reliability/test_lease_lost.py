"""The environment's lock lost in the middle of a rollout: the rollout is undone, not left half-done.

The lock is a Prefect concurrency slot held by a lease that the holder renews in the background.
The holder here is a process of its own, rolling out an image that never becomes ready while it
holds the lock, and it reaches the real Prefect server through a forwarder that the test cuts
once the rollout is applied: its renewals then fail, as on a worker cut off from the server,
and Prefect interrupts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from flows import environments as envs
from flows import kube
from flows.locks import lock_name
from flows.release import DIGEST
from flows.rollout import roll_out_release
from tests.kube_support import environment, release, version_at, wait_until_settled
from tests.reliability.faults import REPO, Cuttable, wait_for

LEASE_SECONDS = 60  # the least Prefect accepts; renewed every 45 s, so the cut is felt within a minute

HOLDER = """
import sys
from flows.environments import kubernetes_client
from flows.locks import environment_lock
from flows.release import PinnedRelease
from flows.rollout import roll_out_release
from flows.settings import Environment, Settings

settings = Settings.model_validate_json(sys.argv[1])
release, env = PinnedRelease.model_validate_json(sys.argv[2]), Environment.model_validate_json(sys.argv[3])
api = kubernetes_client(settings, sys.argv[4])
with environment_lock(release.app, env.name, settings.lock_lease_seconds):
    print("holding the lock", flush=True)
    roll_out_release(api, release, env, settings)
print("rolled out", flush=True)
"""


def delete_lock(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass


def test_a_rollout_whose_lock_is_lost_is_undone_and_fails_naming_the_lock(settings, api_client, namespaces, images,
                                                                          tmp_path):
    env = environment(api_client, namespaces, "lease")
    v1 = roll_out_release(api_client, release(images["v1"], 1), env, settings)
    broken = release(images["never-ready"], 3)
    # A deadline far beyond the test: nothing but the lost lock can end this rollout early.
    holder_settings = settings.model_copy(update={"lock_lease_seconds": LEASE_SECONDS,
                                                  "rollout_progress_deadline_seconds": 600})
    forwarder = Cuttable(settings.prefect_port)
    log = tmp_path / "holder.log"
    child_env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{forwarder.port}/api",
                 "PREFECT_CLIENT_MAX_RETRIES": "1"}
    args = [holder_settings.model_dump_json(), broken.model_dump_json(), env.model_dump_json(),
            str(settings.state_dir / "kubernetes" / "kubeconfig")]
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *args], cwd=REPO, env=child_env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for(f"the holder's apply of {broken.digest}", lambda: proc.poll() is not None or (
            kube.read_deployment(api_client, env.namespace, broken.app) or {}).get("metadata", {}).get(
            "annotations", {}).get(DIGEST) == broken.digest, timeout=90)
        assert proc.poll() is None, f"the holder ended before the cut: {log.read_text()[-2000:]}"
        forwarder.cut()
        cut_at = time.monotonic()
        proc.wait(timeout=180)
        ended_after = time.monotonic() - cut_at
    finally:
        if proc.poll() is None:
            proc.kill()
        forwarder.cut()
        delete_lock(lock_name(broken.app, env.name))
    output = log.read_text()
    print(f"\nlease lost: the holder ended {ended_after:.0f} s after the cut (lease {LEASE_SECONDS} s)")

    # Interrupted by the lost lease while it waited, not ended by the rollout's own deadline (600 s).
    assert proc.returncode == 1 and "rolled out" not in output, output[-3000:]
    assert "Concurrency lease renewal failed" in output, output[-3000:]
    assert f"the rollout of {broken.digest} to {env.namespace} was interrupted" in output, output[-3000:]
    assert f"restored {v1.digest}" in output, output[-3000:]
    assert "PlatformError" in output and f"lock of {broken.app} in {env.name}" in output, output[-3000:]
    assert ended_after < 150, f"the holder took {ended_after:.0f} s after the cut"

    now = envs.serving_version(api_client, env, broken.app)
    assert (now.digest, now.complete) == (v1.digest, True)
    failed = [rs for rs in envs.replica_sets(api_client, env.namespace, broken.app)
              if (rs["metadata"].get("annotations") or {}).get(envs.FAILED_REASON) == "RolloutInterrupted"]
    assert len(failed) == 1, "the interrupted revision is marked failed, so rollback never picks it"
    wait_until_settled(api_client, env.namespace)
    assert version_at(env)["mark"] == "v1"
