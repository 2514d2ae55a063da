"""The local one-node cluster runs an image from the local registry: pinned by digest, pulled with an
imagePullSecret, ready behind a readiness probe, and answering through a NodePort on 127.0.0.1."""

from __future__ import annotations

import io
import time
import uuid

import pytest
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from flows.blocks import PULL_SECRET, ensure_image_pull_secret

REPOSITORY = "aiship-tests/k8s-http"
START_CMD = "`aiship local up kubernetes`"


@pytest.fixture(scope="module")
def kube_api(settings) -> k8s.ApiClient:
    """An API client from the admin kubeconfig; fails when the cluster or its node is not up."""
    kubeconfig = settings.state_dir / "kubernetes" / "kubeconfig"
    if not kubeconfig.is_file():
        pytest.fail(f"no kubeconfig at {kubeconfig}; start the cluster with {START_CMD}")
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        nodes = k8s.CoreV1Api(api).list_node(_request_timeout=5).items
    except Exception as exc:  # urllib3 raises several types for "nothing listens"
        pytest.fail(f"kube-apiserver at 127.0.0.1:{settings.kube_api_port} does not answer ({exc}); start it with {START_CMD}")
    ready = [n.metadata.name for n in nodes for c in n.status.conditions or [] if c.type == "Ready" and c.status == "True"]
    if not ready:
        pytest.fail(f"no Ready node among {[n.metadata.name for n in nodes]}; see .aiship/kubernetes/kubelet.log")
    yield api
    api.close()


@pytest.fixture(scope="module")
def registry_login(settings, registry_credentials) -> dict[str, str]:
    """Registry address and credentials from the `local-registry` block `aiship local up` writes."""
    return {"registry": settings.registry_host, "username": registry_credentials.username,
            "password": registry_credentials.password.get_secret_value()}


@pytest.fixture()
def pushed_image(docker_client, settings, registry_login) -> tuple[str, str]:
    """Builds a tiny HTTP server image on the base image, pushes it, returns (ref@digest, marker).

    Each test gets its own image (a uuid marker in a layer), absent from dockerd after the push:
    dockerd answers a pull by digest from its own store without asking the registry, so only an
    image no pod pulled yet proves what the registry allows.
    """
    marker = uuid.uuid4().hex
    dockerfile = (
        f"FROM {settings.base_image}\n"
        f"RUN mkdir /srv/www && echo {marker} > /srv/www/marker.txt\n"
        "WORKDIR /srv/www\nEXPOSE 8080\n"
        'CMD ["python3", "-m", "http.server", "8080"]\n'
    )
    repo = f"{registry_login['registry']}/{REPOSITORY}"
    tag = marker[:12]
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:{tag}", rm=True)
    auth = {"username": registry_login["username"], "password": registry_login["password"]}
    digest = None
    for line in docker_client.images.push(repo, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            pytest.fail(f"push of {repo}:{tag} failed: {line['error']}")
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest and digest.startswith("sha256:"), f"the push stream of {repo}:{tag} carried no aux.Digest"
    # Gone from dockerd, so the kubelet really pulls it from the registry with the pull secret.
    docker_client.images.remove(f"{repo}:{tag}", force=True)
    return f"{repo}@{digest}", marker


@pytest.fixture()
def namespace(kube_api) -> str:
    """A uuid-named namespace, deleted with everything in it at the end."""
    core = k8s.CoreV1Api(kube_api)
    name = f"aiship-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"aiship.io/test": "true"})))
    yield name
    core.delete_namespace(name)


def deployment(name: str, image: str) -> k8s.V1Deployment:
    labels = {"app": name}
    container = k8s.V1Container(
        name="http", image=image, image_pull_policy="Always",
        ports=[k8s.V1ContainerPort(container_port=8080)],
        readiness_probe=k8s.V1Probe(
            http_get=k8s.V1HTTPGetAction(path="/marker.txt", port=8080), period_seconds=1, failure_threshold=3,
        ),
    )
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=1, selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(containers=[container], image_pull_secrets=[k8s.V1LocalObjectReference(name=PULL_SECRET)]),
            ),
        ),
    )


def wait_available(apps: k8s.AppsV1Api, core: k8s.CoreV1Api, ns: str, name: str, timeout: float = 120) -> None:
    """Waits for the Deployment to be available; fails with the pods' events when it is not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = apps.read_namespaced_deployment_status(name, ns).status
        if (status.available_replicas or 0) >= 1:
            return
        time.sleep(1)
    events = [f"{e.involved_object.name}: {e.reason}: {e.message}" for e in core.list_namespaced_event(ns).items]
    pytest.fail(f"Deployment {ns}/{name} not available after {timeout:.0f}s; events: {events}")


def get_through_node_port(port: int, path: str, timeout: float = 30) -> requests.Response:
    """GETs 127.0.0.1:<port><path>, retrying while kube-proxy is still writing its rules."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            return requests.get(f"http://127.0.0.1:{port}{path}", timeout=2)
        except requests.ConnectionError as exc:
            last = exc
            time.sleep(0.5)
    pytest.fail(f"nothing answered on NodePort 127.0.0.1:{port} within {timeout:.0f}s ({last}); see .aiship/kubernetes/kube-proxy.log")


def test_deployment_from_registry_by_digest_answers_on_node_port(kube_api, namespace, pushed_image, settings):
    image, marker = pushed_image
    core, apps = k8s.CoreV1Api(kube_api), k8s.AppsV1Api(kube_api)
    # The imagePullSecret the platform and the rollout write, from the `local-registry` block.
    ensure_image_pull_secret(kube_api, namespace, settings.registry_credentials_block)
    apps.create_namespaced_deployment(namespace, deployment("http", image))
    service = core.create_namespaced_service(namespace, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="http"),
        spec=k8s.V1ServiceSpec(type="NodePort", selector={"app": "http"},
                               ports=[k8s.V1ServicePort(port=8080, target_port=8080)]),
    ))
    node_port = service.spec.ports[0].node_port
    assert 16100 <= node_port <= 16199, f"NodePort {node_port} outside the platform's range 16100-16199"

    wait_available(apps, core, namespace, "http")

    pod = core.list_namespaced_pod(namespace, label_selector="app=http").items[0]
    digest = image.split("@", 1)[1]
    assert pod.status.container_statuses[0].image_id.endswith(digest), (
        f"pod runs {pod.status.container_statuses[0].image_id}, expected the pushed {digest}")
    response = get_through_node_port(node_port, "/marker.txt")
    assert response.status_code == 200 and response.text.strip() == marker


def test_pull_without_secret_is_refused(kube_api, namespace, pushed_image):
    """Proves the registry really demands the secret: the same pod without it cannot pull."""
    image, _ = pushed_image
    core = k8s.CoreV1Api(kube_api)
    spec = deployment("nosecret", image).spec.template.spec
    spec.image_pull_secrets = None
    core.create_namespaced_pod(namespace, k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="nosecret"), spec=spec))
    deadline, reason = time.monotonic() + 60, None
    while time.monotonic() < deadline and reason not in ("ErrImagePull", "ImagePullBackOff"):
        statuses = core.read_namespaced_pod_status("nosecret", namespace).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        reason = waiting.reason if waiting else None
        assert not (statuses and statuses[0].state.running), "the pod pulled the image without credentials"
        time.sleep(1)
    assert reason in ("ErrImagePull", "ImagePullBackOff"), f"expected a refused pull, last state {reason}"
    failures = [e.message for e in core.list_namespaced_event(namespace).items if e.reason == "Failed"]
    assert any("auth" in m.lower() for m in failures), f"the pull failed, but not for lack of credentials: {failures}"


def test_applying_into_a_namespace_being_deleted_waits_until_it_is_gone(kube_api):
    """A namespace held in Terminating by a finalizer: the wait names it when it outlasts the
    deadline, and returns once the namespace is gone, so the apply creates it afresh."""
    import threading

    from flows import kube
    from flows.errors import RolloutError

    core = k8s.CoreV1Api(kube_api)
    name = f"aiship-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"aiship.io/test": "true"})))
    core.create_namespaced_config_map(name, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="held", finalizers=["aiship.io/test-hold"])))
    release = lambda: core.patch_namespaced_config_map("held", name, {"metadata": {"finalizers": None}})  # noqa: E731
    try:
        core.delete_namespace(name)
        assert core.read_namespace(name).status.phase == "Terminating"
        with pytest.raises(RolloutError, match=f"namespace {name} is being deleted and still was after 3 s") as caught:
            kube._wait_while_terminating(core, name, seconds=3)
        assert caught.value.reason == "NamespaceTerminating"
        released_at = []
        threading.Timer(3, lambda: (released_at.append(time.monotonic()), release())).start()
        kube._wait_while_terminating(core, name, seconds=120)
        assert released_at and time.monotonic() >= released_at[0], "the wait returned while the namespace was held"
        with pytest.raises(k8s.exceptions.ApiException) as gone:
            core.read_namespace(name)
        assert gone.value.status == 404
    finally:
        try:
            release()
        except k8s.exceptions.ApiException:
            pass  # released and gone already
