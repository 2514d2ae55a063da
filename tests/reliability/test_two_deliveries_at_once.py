"""Two deliveries to one environment at once: one waits for the other's rollout, and an older model
that gets its turn second never replaces the newer one that serves by then.

Each delivery is a process of its own running `roll_out_in_turn`, the part of `deliver` that holds
the environment's lock (a Prefect global concurrency limit, on the real server), as two workers
would. The older one starts once the newer one's rollout is applied, so it arrives while the newer
one holds the lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

from flows import environments as envs
from flows import kube
from flows.apps import AppRegistration
from flows.release import DIGEST
from flows.rollout import roll_out_release
from tests.kube_support import environment, release, version_at, wait_until_settled
from tests.reliability.faults import REPO, wait_for

TURN = """
import json, sys
from flows.apps import AppRegistration
from flows.deliver import roll_out_in_turn
from flows.release import PinnedRelease
from flows.settings import Environment, Settings

app, release, env = (AppRegistration.model_validate_json(sys.argv[1]), PinnedRelease.model_validate_json(sys.argv[2]),
                     Environment.model_validate_json(sys.argv[3]))
print("waiting", flush=True)
turn = roll_out_in_turn(app, release, env, Settings(), True, lambda older, newer: False)
print(json.dumps({"reason": turn.reason, "rolled_out": turn.result is not None,
                  "taken": turn.held[0].isoformat(), "given_back": turn.held[1].isoformat()}), flush=True)
"""


def start_turn(settings, app: AppRegistration, pinned, env) -> subprocess.Popen:
    # The children read their Settings from the environment: the same short deadlines as this module's.
    child_env = {**os.environ, "AISHIP_ROLLOUT_PROGRESS_DEADLINE_SECONDS": str(settings.rollout_progress_deadline_seconds),
                 "AISHIP_ROLLOUT_MIN_READY_SECONDS": str(settings.rollout_min_ready_seconds)}
    return subprocess.Popen([sys.executable, "-c", TURN, app.model_dump_json(), pinned.model_dump_json(), env.model_dump_json()],
                            cwd=REPO, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_the_older_model_waits_its_turn_and_then_does_not_replace_the_newer(settings, api_client, namespaces, images):
    env = environment(api_client, namespaces, "twice")
    roll_out_release(api_client, release(images["v1"], 1), env, settings)  # v1 serves
    newer, older = release(images["v2"], 2), release(images["v1"], 1)  # v2 of the model, and v1 again
    app = AppRegistration(name=newer.app, repository="unused", sources=["aiship-tests/unused"], models=["iris"],
                          environments={env.name: env})

    first = start_turn(settings, app, newer, env)
    wait_for(f"the rollout of {newer.digest} applied", lambda: (kube.read_deployment(api_client, env.namespace, app.name)
             or {}).get("metadata", {}).get("annotations", {}).get(DIGEST) == newer.digest, timeout=60)
    second = start_turn(settings, app, older, env)
    assert first.poll() is None, "the newer delivery finished before the older one arrived: nothing overlapped"
    done_first, done_second = outcome(first), outcome(second)

    assert done_first["rolled_out"] and not done_first["reason"]
    assert not done_second["rolled_out"] and "(newer than v1) already serves" in done_second["reason"], done_second
    # One at a time: the older one got the environment only after the newer one gave it back.
    assert datetime.fromisoformat(done_second["taken"]) >= datetime.fromisoformat(done_first["given_back"])
    now = envs.serving_version(api_client, env, app.name)
    assert (now.digest, now.complete, now.release.model.version) == (newer.digest, True, 2)
    wait_until_settled(api_client, env.namespace)
    assert version_at(env)["mark"] == "v2"
