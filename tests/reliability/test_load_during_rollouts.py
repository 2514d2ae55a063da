"""Requests through the NodePort while a good rollout and while an automatic rollback run: none fails.

The load comes from `wrk` (compiled, one thread, its own CPU time printed), for a bounded time
that covers the whole rollout; every request opens its own connection (the test server answers
HTTP/1.0), so each one goes through kube-proxy's rules as they change. p99 during each rollout is
printed next to the steady p99 measured just before.
"""

from __future__ import annotations

import time

import pytest

from flows.errors import RolloutError
from flows.rollout import roll_out_release
from flows.settings import Settings
from tests.kube_support import environment, release, version_at, wait_until_settled
from tests.load import Load, Wrk
from tests.reliability.faults import Background

MIN_RATE = 100  # requests per second


@pytest.fixture(scope="module")
def settings() -> Settings:
    # A failing rollout gives up after 15 s here (the logic is the one staging uses, with 600 s).
    return Settings(rollout_progress_deadline_seconds=15, rollout_min_ready_seconds=1)


def under_load(env, seconds: int, operation) -> tuple[Load, object, BaseException | None]:
    """Runs `operation` while wrk loads the NodePort; the load starts before and ends after it."""
    load = Wrk(f"http://127.0.0.1:{env.node_port}/version", seconds)
    time.sleep(1)
    work = Background(operation)
    work.start()
    work.join(seconds)
    assert not work.is_alive() and load.running(), "the load window did not cover the whole rollout; lengthen it"
    return load.result(), work.result, work.error


def test_no_request_fails_during_a_good_rollout_or_an_automatic_rollback(settings, api_client, namespaces, images):
    env = environment(api_client, namespaces, "load")
    v1 = roll_out_release(api_client, release(images["v1"], 1), env, settings)
    wait_until_settled(api_client, env.namespace)
    steady = Wrk(f"http://127.0.0.1:{env.node_port}/version", 5).result()

    good, result, error = under_load(env, 40, lambda: roll_out_release(api_client, release(images["v2"], 2), env, settings))
    assert error is None and result.digest != v1.digest
    wait_until_settled(api_client, env.namespace)
    assert version_at(env)["mark"] == "v2"

    bad, _, error = under_load(env, 50, lambda: roll_out_release(api_client, release(images["never-ready"], 3), env, settings))
    assert isinstance(error, RolloutError) and "restored" in str(error), error
    assert version_at(env)["mark"] == "v2"

    print(f"\nsteady:         {steady}\ngood rollout:   {good}\nrolled back:    {bad}")
    for name, load in (("steady", steady), ("good rollout", good), ("rollback", bad)):
        assert load.failed == 0, f"{name}: {load}"
        assert load.rate >= MIN_RATE, f"{name}: {load}"
