"""The registry's garbage collection on the real local registry: what is unused and old is deleted,
what serves and the newest stay, and the registry's own sweep then frees the deleted images' blobs."""

from __future__ import annotations

import io
import time
import subprocess
import tarfile
import uuid

from flows.distribution import RegistryAPI
from flows.registry import load_credentials
from flows.registry_gc import collect
from flows.release import LABEL_CREATED, LABEL_MODEL_VERSION
from flows.settings import REPO_ROOT


def push_image(docker_client, repository: str, n: int, auth: dict) -> str:
    """A one-layer image (a file unique to it) as model version `n`; returns its manifest digest."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f'FROM scratch\nCOPY data /data\nLABEL {LABEL_CREATED}="2026-01-0{n}T00:00:00Z" '
                                          f"{LABEL_MODEL_VERSION}={n}\n"), ("data", uuid.uuid4().hex * 100)):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=f"{repository}:v{n}", rm=True)
    digest = None
    for line in docker_client.api.push(repository, tag=f"v{n}", auth_config=auth, stream=True, decode=True):
        assert "error" not in line, line
        digest = (line.get("aux") or {}).get("Digest") or digest
    docker_client.images.remove(f"{repository}:v{n}")
    return digest


def test_unused_old_images_are_deleted_and_their_blobs_freed(settings, docker_client):
    import json

    credentials = load_credentials(settings.registry_credentials_block)
    auth = {"username": credentials.username, "password": credentials.password.get_secret_value()}
    repository = f"{settings.registry_host}/aiship-tests-gc-{uuid.uuid4().hex[:8]}"
    digests = [push_image(docker_client, repository, n, auth) for n in (1, 2, 3)]
    with RegistryAPI(repository, credentials) as api:
        layers = {d: json.loads(api.manifest(d)[0])["layers"][0]["digest"] for d in digests}

    # v1 serves somewhere; v3 is the newest; v2 is neither
    result = collect(repository, credentials, in_use={digests[0]}, keep=1)

    assert set(result.deleted) == {digests[1]} and set(result.kept) == {digests[0], digests[2]}
    with RegistryAPI(repository, credentials) as api:
        assert api.manifest(digests[1]) is None and api.manifest("v2") is None
        assert api.manifest(digests[0]) and api.manifest("v3")
        assert api.has_blob(layers[digests[1]])  # deleting a manifest frees nothing yet
    sweep = subprocess.run(["bash", str(REPO_ROOT / "local" / "registry.sh"), "gc"], capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    with RegistryAPI(repository, credentials) as api:
        assert not api.has_blob(layers[digests[1]])
        assert api.has_blob(layers[digests[0]]) and api.has_blob(layers[digests[2]])
        assert sorted(api.tags()) == ["v1", "v3"]


def test_a_running_delivery_on_the_server_holds_the_collection_back():
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.registry_gc import changes_running

    @flow(name="deliver")
    def deliver() -> None:  # only its name matters: the server's flow of that name
        pass

    before = changes_running()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(deliver, state=Running())
        try:
            assert changes_running() == before + 1
        finally:
            client.delete_flow_run(run.id)
    assert changes_running() == before


def test_a_delivery_holding_the_apps_registry_slot_keeps_the_collection_out_until_it_gives_it_back():
    import threading

    from flows.locks import registry_exclusive, registry_shared

    app = f"aiship-tests-gc-{uuid.uuid4().hex[:8]}"
    with registry_shared(app):
        started = time.monotonic()
        with registry_exclusive(app, timeout_seconds=3) as held:
            assert not held and time.monotonic() - started >= 3
    with registry_exclusive(app, timeout_seconds=10) as held:
        assert held
        # while the collection holds the repository, a delivery waits for it
        entered = threading.Event()

        def deliver() -> None:
            with registry_shared(app, timeout_seconds=30):
                entered.set()

        delivery = threading.Thread(target=deliver)
        delivery.start()
        assert not entered.wait(3)
    assert entered.wait(30)
    delivery.join(30)
