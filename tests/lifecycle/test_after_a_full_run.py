"""After the end-to-end group's full run (deliver, promote, rollback), no secret sits anywhere it
must never be: image layers and configs, Prefect's records, Kubernetes objects other than
Secrets, the app's and the receiver's logs.

Every secret comes from the blocks themselves (the API's answer with secrets included) plus the
Prefect API's own credential. A canary value is planted first in every kind of place, so each
scanner is shown to find what is there; the same pass then finds no secret at all.
"""

from __future__ import annotations

import base64
import json
import re
import tarfile
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import itertools
import os
import time

import httpx

from flows.release import LABEL_REVISION
from tests.kube_support import cluster_client
from tests.prefect_events import PREFECT_API, prefect_auth

CHUNK = 4 * 2**20
# What the e2e group runs before this, through Prefect deployments as the UI would.
FULL_RUN = {"deliver": "COMPLETED", "promote": "COMPLETED", "rollback": "COMPLETED"}


def api(method: str, path: str, body: dict | None = None):
    response = httpx.request(method, f"{PREFECT_API}{path}", json=body, auth=prefect_auth(), timeout=60)
    assert response.status_code < 300, f"{method} {path}: HTTP {response.status_code} {response.text[:300]}"
    return response.json() if response.content else None


def paged(path: str, body: dict | None = None, page: int = 200) -> Iterator[dict]:
    offset = 0
    while True:
        items = api("POST", path, {**(body or {}), "limit": page, "offset": offset})
        yield from items
        if len(items) < page:
            return
        offset += page


# --- the secrets ---

def secret_values(settings) -> dict[str, set[str]]:
    """Each block's secret fields (named by its schema), the cluster's credentials inside the
    kubeconfig, a storage account's key inside its connection string; the API credential and the
    password of Prefect's database."""
    found: dict[str, set[str]] = defaultdict(set)
    for doc in paged("/block_documents/filter", {"include_secrets": True}):
        secret_fields = doc["block_schema"]["fields"].get("secret_fields", [])
        for field in {name.split(".")[0] for name in secret_fields}:
            value = doc["data"].get(field)
            for leaf in _secret_leaves(value):
                if len(leaf) >= 12:
                    found[f"block {doc['name']}.{field}"].add(leaf)
                    if isinstance(doc["data"].get("username"), str):  # as a docker config.json's auth carries it
                        found[f"block {doc['name']}.{field}"].add(f"{doc['data']['username']}:{leaf}")
    credential = os.environ["PREFECT_API_AUTH_STRING"]
    found["Prefect API credential"] |= {credential, credential.split(":", 1)[1]}
    found["Prefect database password"].add((settings.state_dir / "postgres" / "pgpass").read_text().strip().split(":", 4)[4])
    return found


def _secret_leaves(value) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, (dict, list)):
                yield from _secret_leaves(inner)
            elif isinstance(inner, str) and key in ("token", "client-key-data", "password", "client-secret", "value"):
                yield inner
    elif isinstance(value, list):
        for inner in value:
            yield from _secret_leaves(inner)
    elif isinstance(value, str):
        key = re.search(r"AccountKey=([^;]+)", value)
        yield key.group(1) if key else value


def needles(secrets: dict[str, set[str]]) -> dict[bytes, str]:
    """Byte strings to look for, each with what it reveals: the value, and base64 of it (how a
    docker config.json or an Authorization header would carry it). The base64 form drops its last
    group, which depends on what follows the value."""
    out: dict[bytes, str] = {}
    for what, values in secrets.items():
        for value in values:
            out[value.encode()] = what
            out[base64.b64encode(value.encode())[:-4]] = f"{what} (base64)"
    return out


# --- the places ---

def image_streams(docker_client) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Every member of one `docker save` of every image aiship built (labelled with a git revision),
    gzip layers decompressed; and each image's inspect JSON (config, labels, history)."""
    images = docker_client.images.list(filters={"label": LABEL_REVISION})
    assert images, "dockerd holds no image aiship built"
    for image in images:
        yield f"image config {image.short_id}", iter([json.dumps(image.attrs).encode()])
        yield f"image history {image.short_id}", iter([json.dumps(image.history()).encode()])
    api_client = docker_client.api
    response = api_client._get(api_client._url("/images/get"), params={"names": [i.id for i in images]}, stream=True)
    api_client._raise_for_status(response)
    with tarfile.open(fileobj=response.raw, mode="r|") as archive:
        for member in archive:
            if member.isfile():
                yield f"image archive {member.name}", _decompressed(archive.extractfile(member))


def _decompressed(stream) -> Iterator[bytes]:
    head = stream.read(2)
    if head == b"\x1f\x8b":
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        yield inflate.decompress(head)
        while chunk := stream.read(CHUNK):
            yield inflate.decompress(chunk)
        yield inflate.flush()
        return
    yield head
    while chunk := stream.read(CHUNK):
        yield chunk


def prefect_records() -> Iterator[tuple[str, Iterator[bytes]]]:
    """Flow runs (parameters included), logs, artifacts, deployments, variables, events, automations,
    work pools and the blocks API's default answer: as the API gives them to anyone with the credential."""
    for place, path, body in (
            ("flow runs", "/flow_runs/filter", {}), ("task runs", "/task_runs/filter", {}),
            ("logs", "/logs/filter", {}), ("artifacts", "/artifacts/filter", {}),
            ("deployments", "/deployments/filter", {}), ("variables", "/variables/filter", {}),
            ("blocks (default answer)", "/block_documents/filter", {}), ("work pools", "/work_pools/filter", {})):
        yield f"Prefect {place}", (json.dumps(item).encode() for item in paged(path, body))
    yield "Prefect automations", iter([json.dumps(api("POST", "/automations/filter", {})).encode()])
    yield "Prefect events", _events()


def _events() -> Iterator[bytes]:
    answer = api("POST", "/events/filter", {"filter": {"occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50})
    while True:
        yield json.dumps(answer["events"]).encode()
        if not answer.get("next_page"):
            return
        response = httpx.get(answer["next_page"], auth=prefect_auth(), timeout=60)
        assert response.status_code == 200, response.text[:300]
        answer = response.json()


KINDS = [  # every kind of object a delivery creates or touches, Secrets excepted
    ("v1", kind) for kind in ("Pod", "ConfigMap", "Service", "Event", "ServiceAccount", "Namespace", "Endpoints")
] + [("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet")]


def kubernetes_objects(api_client) -> Iterator[tuple[str, Iterator[bytes]]]:
    """Every object of those kinds in every namespace, and every container log of aiship's namespaces."""
    from kubernetes import client
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dynamic = DynamicClient(api_client)
    for api_version, kind in [*KINDS, ("policy/v1", "PodDisruptionBudget"), ("policy/v1beta1", "PodDisruptionBudget")]:
        try:
            resource = dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            continue  # policy/v1 is 1.21 on
        yield f"Kubernetes {kind}s", iter([json.dumps(resource.get().to_dict(), default=str).encode()])
    core = client.CoreV1Api(api_client)
    for pod in core.list_pod_for_all_namespaces().items:
        if pod.metadata.namespace.startswith("aiship-") and pod.status.phase in ("Running", "Succeeded", "Failed"):
            for container in pod.spec.containers:
                try:
                    log = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=container.name)
                except client.ApiException:
                    continue  # gone meanwhile
                yield f"app log {pod.metadata.namespace}/{pod.metadata.name}", iter([log.encode()])


def platform_logs(settings) -> Iterator[tuple[str, Iterator[bytes]]]:
    """The receiver's log, the Prefect server's, the worker's (which holds every flow run's output)
    and PostgreSQL's: every file of each log's ring (local/lib.sh start_bg)."""
    for part, name in (("webhooks", "gunicorn"), ("prefect", "server"), ("prefect", "worker"), ("postgres", "server")):
        ring = sorted((settings.state_dir / part).glob(f"{name}.log.r*"))
        assert ring, f"no log files of {part}/{name} under {settings.state_dir}"
        for path in ring:
            yield f"log {path.relative_to(settings.state_dir)}", _file(path)


def _file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def scan(places: Iterator[tuple[str, Iterator[bytes]]], wanted: dict[bytes, str]) -> tuple[dict[str, set[str]], int, int]:
    """{what was found: places}, how many places and bytes were read. Chunks overlap by the longest
    needle. One `in` per needle (a fast substring search in C) beats one regex alternation of them
    all several times over on gigabytes of layers."""
    overlap = max(map(len, wanted)) - 1
    hits: dict[str, set[str]] = defaultdict(set)
    count = read = 0
    for place, chunks in places:
        count += 1
        tail = b""
        for chunk in chunks:
            read += len(chunk)
            window = tail + chunk
            for needle, what in wanted.items():
                if needle in window:
                    hits[what].add(place)
            tail = window[-overlap:]
    return hits, count, read


# --- the canaries ---

def plant(canary: str, docker_client, api_client, settings) -> list[str]:
    """The canary in one place of every kind the scan reads; returns the names of those kinds."""
    import io

    from kubernetes import client
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    @flow(name="aiship-scan-canary")
    def canary_flow(note: str) -> None: ...

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM scratch\nCOPY canary.txt /\nLABEL {LABEL_REVISION}=scan-canary note={canary}\n"),
                           ("canary.txt", canary)):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag="aiship-scan-canary:latest", rm=True)

    with get_client(sync_client=True) as prefect:
        run = prefect.create_flow_run(canary_flow, parameters={"note": canary})
        prefect.set_flow_run_state(run.id, Cancelled(), force=True)
    now = datetime.now(timezone.utc).isoformat()
    api("POST", "/logs/", [{"name": "aiship-scan", "level": 20, "message": canary, "timestamp": now, "flow_run_id": str(run.id)}])
    api("POST", "/artifacts/", {"key": "aiship-scan-canary", "type": "markdown", "data": canary})
    api("POST", "/variables/", {"name": "aiship_scan_canary", "value": canary})
    api("POST", "/events", [{"event": "aiship.scan.canary", "resource": {"prefect.resource.id": f"aiship.scan.{canary}"},
                             "id": str(uuid.uuid4()), "occurred": now}])
    deadline = time.monotonic() + 30  # the server stores events in batches
    while not api("POST", "/events/filter", {"filter": {"any_resource": {"id": [f"aiship.scan.{canary}"]}}})["events"]:
        assert time.monotonic() < deadline, "the planted event was not stored within 30 s"
        time.sleep(0.5)

    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="aiship-scan-canary"), data={"note": canary}))
    serving = next((p for p in core.list_pod_for_all_namespaces().items
                    if p.metadata.namespace.startswith("aiship-") and p.status.phase == "Running" and p.spec.node_name), None)
    assert serving, "no app pod runs in an aiship-* namespace: the e2e group's deliveries should have left some"
    service = next(s for s in core.list_namespaced_service(serving.metadata.namespace).items if s.spec.type == "NodePort")
    httpx.get(f"http://127.0.0.1:{service.spec.ports[0].node_port}/healthz", headers={"User-Agent": canary}, timeout=10)
    httpx.post(f"http://127.0.0.1:{settings.webhook_port}/github", content=b"{}", timeout=10,
               headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": canary, "Content-Type": "application/json"})
    return ["image", "Prefect flow runs", "Prefect logs", "Prefect artifacts", "Prefect variables", "Prefect events",
            "Kubernetes ConfigMaps", "app log", "log webhooks"]


def remove_canaries(docker_client, api_client) -> None:
    """Removes what `plant` made, whatever part of it got made (a failure there must stay the test's error)."""
    import contextlib

    import docker.errors
    from kubernetes import client

    with contextlib.suppress(docker.errors.NotFound):
        docker_client.images.remove("aiship-scan-canary:latest", force=True)
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(api_client).delete_namespaced_config_map("aiship-scan-canary", "default")
    httpx.delete(f"{PREFECT_API}/variables/name/aiship_scan_canary", auth=prefect_auth(), timeout=30)
    for run in api("POST", "/flow_runs/filter", {"flows": {"name": {"any_": ["aiship-scan-canary"]}}}):
        httpx.delete(f"{PREFECT_API}/flow_runs/{run['id']}", auth=prefect_auth(), timeout=30)
    for artifact in api("POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["aiship-scan-canary"]}}}):
        httpx.delete(f"{PREFECT_API}/artifacts/{artifact['id']}", auth=prefect_auth(), timeout=30)


def test_no_secret_anywhere_after_a_full_run(settings, docker_client):
    # What this scan comes after: each of these deployments has a run that ended so.
    for deployment, state in FULL_RUN.items():
        runs = api("POST", "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": [state]}}},
                                                 "flows": {"name": {"any_": [deployment]}}, "limit": 1})
        assert runs, f"no {state} `{deployment}` run on the server: run the e2e group (tests/e2e) before this one"

    secrets = secret_values(settings)
    kinds = {what.split(".")[0].split(" ")[1] if what.startswith("block") else what for what in secrets}
    assert {"local-registry", "local-kubernetes", "local-s3", "azurite", "aiship-webhook-secret",
            "aiship-eventgrid-key", "aiship-azure-repos-secret", "Prefect API credential"} <= kinds, sorted(secrets)
    canary = f"aiship-canary-{uuid.uuid4().hex}"
    wanted = {**needles(secrets), canary.encode(): "canary"}
    api_client = cluster_client(settings)
    try:
        planted = plant(canary, docker_client, api_client, settings)
        # Lazily chained: the images' archive is one stream, read member by member.
        places = itertools.chain(image_streams(docker_client), prefect_records(), kubernetes_objects(api_client),
                                 platform_logs(settings))
        started = time.monotonic()
        hits, count, read = scan(places, wanted)
    finally:
        remove_canaries(docker_client, api_client)
        api_client.close()
    print(f"secret scan: {count} places, {read / 2**20:.0f} MiB read in {time.monotonic() - started:.0f} s, {len(wanted) - 1} forms of {len(secrets)} secrets looked for, "
          f"{sum(len(p) for w, p in hits.items() if w != 'canary')} hits; canary found in {len(hits.get('canary', ()))} places")
    missed = [kind for kind in planted if not any(place.startswith(kind) for place in hits.get("canary", ()))]
    assert not missed, f"the scan did not find the planted canary in: {missed} (found it in {sorted(hits.get('canary', ()))})"
    leaked = {what: sorted(places)[:5] for what, places in hits.items() if what != "canary"}
    assert not leaked, f"secrets found where they must never be: {leaked}"

