"""Rollouts on the real local cluster: an image by digest answers on its NodePort; a failure is undone by itself.

Each module run gets its own uuid-named namespaces and a free NodePort in 16100-16179 (never
staging's or production's), builds two tiny images from the local base image, pushes them to the
local registry by digest, and deletes its namespaces at the end.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

import httpx
import pytest

from flows import environments as envs
from flows.errors import RolloutError
from flows.rollout import roll_out_release
from flows.settings import Environment
from tests.kube_support import build_and_push, environment, module_cluster, release, short_deadlines, version_at, wait_until_settled

settings = pytest.fixture(scope="module", name="settings")(short_deadlines)
api_client = pytest.fixture(scope="module", name="api_client")(module_cluster)


@pytest.fixture(scope="module")
def registry(registry_credentials) -> dict:
    """The `local-registry` block's values, which the rollout also writes its imagePullSecret from."""
    return {"registry_url": registry_credentials.registry_url, "username": registry_credentials.username,
            "password": registry_credentials.password.get_secret_value()}


@pytest.fixture(scope="module")
def images(docker_client, registry) -> dict[str, str]:
    return {mark: build_and_push(docker_client, registry, mark) for mark in ("v1", "v2")}


@pytest.fixture(scope="module")
def serving_env(api_client, namespaces, images, settings):
    """An environment where v1 then v2 were rolled out; returns (environment, [result v1, result v2])."""
    env = environment(api_client, namespaces, "a")
    results = [roll_out_release(api_client, release(images[m], n), env, settings) for n, m in ((1, "v1"), (2, "v2"))]
    wait_until_settled(api_client, env.namespace)  # v1's pods answer for their preStop seconds
    return env, results


def test_a_digest_rolls_out_and_answers_on_its_node_port(api_client, serving_env, images, settings):
    env, (first, second) = serving_env
    assert (first.ref, first.previous_digest) == (images["v1"], None)
    assert (second.ref, second.previous_digest, second.pods_ready) == (images["v2"], first.digest, 2)
    assert version_at(env) == {"mark": "v2", "env": env.name}
    now = envs.serving_version(api_client, env, settings.app_name)
    assert (now.digest, now.release.ref, now.replicas_ready) == (second.digest, images["v2"], 2)
    assert envs.previous_digests(api_client, env, settings.app_name) == [first.digest]


def test_the_environment_has_a_disruption_budget_that_lets_one_pod_go(api_client, serving_env, settings):
    from kubernetes.dynamic import DynamicClient

    env, _ = serving_env
    dynamic = DynamicClient(api_client)
    kinds = dynamic.resources.search(group="policy", kind="PodDisruptionBudget")
    assert kinds, "the cluster serves no PodDisruptionBudget"
    deadline = time.monotonic() + 30
    while True:  # the disruption controller fills the status a moment after the pods are ready
        status = dynamic.get(kinds[0], name=settings.app_name, namespace=env.namespace).to_dict().get("status") or {}
        if status.get("expectedPods") == 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (status.get("expectedPods"), status.get("disruptionsAllowed")) == (2, 1)


def test_aiship_status_shows_the_digest(api_client, serving_env, settings, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    env, (_, second) = serving_env
    monkeypatch.setenv("AISHIP_ENVIRONMENTS", json.dumps({env.name: env.model_dump()}))
    args = ["status", env.name]
    kubeconfig = settings.state_dir / "kubernetes" / "kubeconfig"
    try:
        envs.kubernetes_client(settings)
    except Exception:
        args += ["--kubeconfig", str(kubeconfig)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert second.digest in out.output and f"http://127.0.0.1:{env.node_port}" in out.output and "2/2" in out.output


class Load:
    """Asks /version through the NodePort every 50 ms while a rollout runs; records every answer and failure."""

    def __init__(self, env: Environment):
        self.url, self.marks, self.failures, self._stop = f"http://127.0.0.1:{env.node_port}/version", [], [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._stop.is_set():
                try:
                    self.marks.append(http.get(self.url).json()["mark"])
                except Exception as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def test_a_digest_that_does_not_exist_is_undone_and_the_previous_one_keeps_serving(api_client, serving_env, images, settings):
    env, (_, second) = serving_env
    missing = images["v2"].rsplit("@", 1)[0] + "@sha256:" + secrets.token_hex(32)
    started = time.monotonic()
    with Load(env) as load, pytest.raises(RolloutError) as caught:
        roll_out_release(api_client, release(missing, 3), env, settings)
    seconds = time.monotonic() - started
    err = caught.value
    assert err.reason == "ImagePullBackOff", str(err)
    assert f"restored {second.digest}" in err.message
    assert "Failed" in err.details or "pull" in err.details.lower(), err.details  # the kubelet's events came along
    assert load.failures == [] and set(load.marks) == {"v2"} and len(load.marks) > 10, (load.failures[:5], set(load.marks))
    assert version_at(env)["mark"] == "v2"
    now = envs.serving_version(api_client, env, settings.app_name)
    assert now.digest == second.digest and now.replicas_ready == 2
    # the failed release really ran (a ReplicaSet of it exists), and never counts as "served before"
    rs_images = [envs.app_image(rs["spec"]["template"]) for rs in envs.replica_sets(api_client, env.namespace, settings.app_name)]
    assert missing in rs_images
    assert missing.rsplit("@", 1)[1] not in envs.previous_digests(api_client, env, settings.app_name)
    print(f"\nImagePullBackOff detected and undone in {seconds:.1f} s")


def test_an_image_that_runs_as_root_never_starts_and_is_undone(api_client, serving_env, settings, docker_client, registry):
    env, (_, second) = serving_env
    root = build_and_push(docker_client, registry, "root", user="0")  # as a commit that drops USER would build
    with pytest.raises(RolloutError) as caught:
        roll_out_release(api_client, release(root, 4), env, settings)
    assert caught.value.reason == "CreateContainerConfigError", str(caught.value)
    assert "runAsNonRoot" in caught.value.details + caught.value.message, caught.value.details
    assert f"restored {second.digest}" in caught.value.message and version_at(env)["mark"] == "v2"


def test_the_same_digest_again_changes_nothing(api_client, serving_env, images, settings):
    from kubernetes import client

    env, (_, second) = serving_env
    apps = client.AppsV1Api(api_client)
    before = apps.read_namespaced_deployment(settings.app_name, env.namespace).metadata
    result = roll_out_release(api_client, release(images["v2"], 2), env, settings)
    after = apps.read_namespaced_deployment(settings.app_name, env.namespace).metadata
    assert result.digest == second.digest and result.previous_digest == second.digest
    # the pod template did not change: no new ReplicaSet, no pod replaced (the generation counts annotations too)
    assert after.annotations[envs.REVISION] == before.annotations[envs.REVISION]
    assert after.annotations[envs.DEPLOYED_AT] == before.annotations[envs.DEPLOYED_AT]  # serving since then


def test_a_failed_first_rollout_is_scaled_to_zero(api_client, namespaces, settings, images):
    from kubernetes import client

    env = environment(api_client, namespaces, "b")
    missing = images["v1"].rsplit("@", 1)[0] + "@sha256:" + secrets.token_hex(32)
    with pytest.raises(RolloutError, match="scaled to zero") as caught:
        roll_out_release(api_client, release(missing, 1), env, settings)
    assert caught.value.reason == "ImagePullBackOff"
    dep = client.AppsV1Api(api_client).read_namespaced_deployment(settings.app_name, env.namespace)
    assert dep.spec.replicas == 0
    assert envs.serving_version(api_client, env, settings.app_name) is None


@pytest.mark.parametrize("app_env,reason,extra", [
    ({"NOT_READY": "1"}, "ProgressDeadlineExceeded", {}),
    ({"CRASH_AFTER": "6"}, "CrashLoopBackOff", {"rollout_min_ready_seconds": 15}),
], ids=["readiness-never-true", "crash-after-start"])
def test_a_template_that_fails_in_the_cluster_is_undone(api_client, serving_env, settings, app_env, reason, extra):
    env, (_, second) = serving_env
    broken = env.model_copy(update={"app_env": app_env})  # same image, a manifest setting breaks it
    strict = settings.model_copy(update={"rollout_progress_deadline_seconds": 20, **extra})
    started = time.monotonic()
    with Load(env) as load, pytest.raises(RolloutError) as caught:
        roll_out_release(api_client, release(second.ref, 2), broken, strict)
    seconds = time.monotonic() - started
    assert caught.value.reason == reason, str(caught.value)
    assert f"restored {second.digest}" in caught.value.message
    assert set(load.marks) == {"v2"}
    # the restored pods run the template without the breaking setting
    pods = envs.serving_version(api_client, env, settings.app_name)
    assert pods.digest == second.digest and pods.replicas_ready == 2
    from kubernetes import client
    dep = client.AppsV1Api(api_client).read_namespaced_deployment(settings.app_name, env.namespace)
    assert [e.name for e in dep.spec.template.spec.containers[0].env] == ["AISHIP_APP_ENVIRONMENT"]
    print(f"\n{reason} detected and undone in {seconds:.1f} s; {len(load.failures)} failed of {len(load.marks) + len(load.failures)} requests")
