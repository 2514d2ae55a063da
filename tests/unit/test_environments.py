"""What serves where, read from Deployment and ReplicaSet annotations (the API calls replaced, the parsing real)."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows import environments as envs
from flows.environments import serving, serving_markdown, status_lines, template_release
from flows.errors import ConfigurationError, RolloutError
from flows.release import ModelId, Release
from flows.settings import Environment, Settings

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
REPO = "127.0.0.1:5000/aiship-app"


def annotations(digest: str, version: int, deployed_at: str | None = None) -> dict[str, str]:
    release = Release(app="aiship-app", git_sha="f" * 40, model=ModelId(name="iris", version=version, sha256="e" * 64))
    ann = release.pinned(f"{REPO}@{digest}").annotations()
    return ann | ({envs.DEPLOYED_AT: deployed_at} if deployed_at else {})


def template(digest: str, version: int) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(annotations=annotations(digest, version)),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=f"{REPO}@{digest}")]))


def deployment(digest: str, version: int, replicas: int = 2, ready: int = 2) -> client.V1Deployment:
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="aiship-app", annotations=annotations(digest, version, "2024-05-01T10:00:00Z")),
        spec=client.V1DeploymentSpec(replicas=replicas, selector=client.V1LabelSelector(), template=template(digest, version)),
        status=client.V1DeploymentStatus(ready_replicas=ready))


def replica_set(digest: str, version: int, revision: int, owner: str = "aiship-app", failed: str | None = None) -> client.V1ReplicaSet:
    failed_ann = {envs.FAILED_REVISION: failed} if failed else {}
    return client.V1ReplicaSet(
        metadata=client.V1ObjectMeta(annotations={envs.REVISION: str(revision)} | failed_ann, creation_timestamp=f"2024-05-{revision + 1:02d}T00:00:00Z",
                                     owner_references=[client.V1OwnerReference(api_version="apps/v1", kind="Deployment", name=owner, uid="u")]),
        spec=client.V1ReplicaSetSpec(selector=client.V1LabelSelector(), template=template(digest, version)))


@pytest.fixture()
def cluster(monkeypatch):
    """A fake API: Deployments by namespace, ReplicaSets by namespace."""
    state = {"deployments": {}, "replica_sets": {}}

    def read(self, name, namespace):
        if namespace not in state["deployments"]:
            raise ApiException(status=404, reason="Not Found")
        return state["deployments"][namespace]

    monkeypatch.setattr(client.AppsV1Api, "read_namespaced_deployment", read)
    monkeypatch.setattr(client.AppsV1Api, "list_namespaced_replica_set",
                        lambda self, ns, label_selector: client.V1ReplicaSetList(items=state["replica_sets"].get(ns, [])))
    return state


SETTINGS = Settings()
APP = SETTINGS.default_app()  # the first app, registered by the settings
API = client.ApiClient()


def test_a_pod_template_not_pinned_by_digest_is_no_release_of_aiship(caplog):
    changed = {"metadata": {"annotations": annotations(D1, 1)},
               "spec": {"containers": [{"name": "app", "image": f"{REPO}:latest"}]}}
    assert template_release(changed, "aiship-app") is None
    assert f"runs {REPO}:latest, not pinned by digest" in caplog.text


def test_serving_reads_each_environment(cluster):
    cluster["deployments"]["aiship-staging"] = deployment(D2, 2, ready=1)
    table = serving(APP, API)
    assert set(table) == {"staging", "production"} and table["production"] is None
    staging = table["staging"]
    release = staging.release
    assert (release.digest, release.model.version, release.git_sha, release.model.sha256) == (D2, 2, "f" * 40, "e" * 64)
    assert (staging.replicas_ready, staging.replicas_desired) == (1, 2)
    assert staging.address == "http://127.0.0.1:16180" and staging.deployed_at == "2024-05-01T10:00:00Z"
    assert release.ref == f"{REPO}@{D2}" and staging.namespace == "aiship-staging" and release.app == "aiship-app"


def test_a_deployment_scaled_to_zero_serves_nothing(cluster):
    cluster["deployments"]["aiship-production"] = deployment(D1, 1, replicas=0, ready=0)
    assert serving(APP, API, ["production"]) == {"production": None}


def test_an_unknown_environment_is_named(cluster):
    with pytest.raises(ConfigurationError, match="app aiship-app has no environment 'qa'; its environments: production, staging"):
        serving(APP, API, ["qa"])


def test_previous_releases_newest_first_without_the_serving_one(cluster):
    env = Environment(name="t", namespace="ns", node_port=16150)
    cluster["deployments"]["ns"] = deployment(D3, 3)
    cluster["replica_sets"]["ns"] = [replica_set(D1, 1, 1), replica_set(D3, 3, 4), replica_set(D2, 2, 3),
                                     replica_set(D1, 1, 2), replica_set("sha256:" + "9" * 64, 9, 5, owner="other"),
                                     replica_set("sha256:" + "8" * 64, 8, 6, failed="6"),  # failed and undone
                                     replica_set("sha256:" + "7" * 64, 7, 0, failed="-1")]  # failed once, served later
    releases = envs.previous_releases(API, env, "aiship-app")
    assert [r.digest for r in releases] == [D2, D1, "sha256:" + "7" * 64]
    assert releases[0].release.model.version == 2 and releases[0].deployed_at.startswith("2024-05-04")
    assert envs.previous_digests(API, env, "aiship-app")[:2] == [D2, D1]


def test_what_serves_where_as_markdown_and_text(cluster):
    cluster["deployments"]["aiship-staging"] = deployment(D2, 2)
    table = serving(APP, API)
    md = serving_markdown(table)
    assert md.splitlines()[0].startswith("| environment | git SHA | model |")
    assert f"`{D2}`" in md and "| production | — |" in md
    lines = status_lines({"aiship-app": table, "regressor": {"staging": None}})
    assert lines[0].split()[0:3] == ["APP", "ENVIRONMENT", "DIGEST"]
    assert D2 in lines[1] and "iris v2" in lines[1] and "2/2" in lines[1] and "http://127.0.0.1:16180" in lines[1]
    assert "(nothing serves)" in lines[2] and lines[3].split()[:3] == ["regressor", "staging", "(nothing"]


def test_a_kubeconfig_that_does_not_exist_says_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError, match="aiship local up kubernetes"):
        envs.kubernetes_client(SETTINGS, tmp_path / "missing")


def test_a_rollback_target_is_a_release_by_digest(cluster):
    env = Environment(name="t", namespace="ns", node_port=16150)
    cluster["deployments"]["ns"] = deployment(D3, 3)
    cluster["replica_sets"]["ns"] = [replica_set(D3, 3, 3), replica_set(D2, 2, 2), replica_set(D1, 1, 1)]
    assert envs.previous_release(API, env, "aiship-app").ref == f"{REPO}@{D2}"
    older = envs.previous_release(API, env, "aiship-app", D1)
    assert (older.ref, older.model.version, older.git_sha) == (f"{REPO}@{D1}", 1, "f" * 40)
    with pytest.raises(RolloutError, match="NothingToRollBackTo") as caught:
        envs.previous_release(API, env, "aiship-app", "sha256:" + "0" * 64)
    assert D2 in str(caught.value)
