"""The local registry (local/registry.sh): TLS + htpasswd, push, pull by digest, layer reuse.

Credentials come from the Prefect block `local-registry`, the way the flows read them.
"""

from __future__ import annotations

import io
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

PUSHED = "Pushed"
ALREADY_EXISTS = "Layer already exists"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class RegistryLogin:
    """Credentials of the local registry and where they were read from."""

    username: str
    password: str
    registry_url: str
    source: str

    @property
    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password, "serveraddress": self.registry_url}


def _tls(ca_cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_cert))


@pytest.fixture(scope="module")
def login(settings, registry_credentials) -> RegistryLogin:
    block = registry_credentials
    return RegistryLogin(block.username, block.password.get_secret_value(), block.registry_url,
                         f"block {settings.registry_credentials_block}")


@pytest.fixture(scope="module")
def ca_cert(settings) -> Path:
    path = settings.state_dir / "registry" / "ca.crt"
    if not path.is_file():
        pytest.fail(f"{path} is missing; start the registry with `aiship local up registry`")
    return path


@pytest.fixture(scope="module")
def registry_api(login, ca_cert):
    """An authenticated HTTPS client of the registry API that verifies the server against our CA."""
    with httpx.Client(
        base_url=f"https://{login.registry_url}", verify=_tls(ca_cert), auth=(login.username, login.password)
    ) as client:
        try:
            client.get("/v2/", timeout=5)
        except httpx.HTTPError as exc:
            pytest.fail(f"registry at {login.registry_url} does not answer ({exc}); run `aiship local up registry`")
        yield client


@pytest.fixture
def test_image(docker_client, settings, login, registry_api):
    """A two-layer image (base + one unique layer) tagged into a fresh uuid-named repository."""
    repo = f"{login.registry_url}/aiship-test-{uuid.uuid4().hex[:12]}"
    marker = uuid.uuid4().hex
    dockerfile = f"FROM {settings.base_image}\nRUN echo {marker} > /marker\n".encode()
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=f"{repo}:v1", pull=False, rm=True)
    yield repo, marker, image
    pushed = [f"{repo}@{_pushed_digest[repo]}"] if repo in _pushed_digest else []
    for ref in (f"{repo}:v1", *pushed, image.id):
        _remove(docker_client, ref)
    _delete_repository_manifests(registry_api, repo.split("/", 1)[1])


_pushed_digest: dict[str, str] = {}  # repo -> digest of its last push, for the cleanup


def _delete_repository_manifests(api: httpx.Client, name: str) -> None:
    """Deletes the manifests of a test repository (delete is enabled in the registry's config)."""
    for tag in api.get(f"/v2/{name}/tags/list").json().get("tags") or []:
        head = api.head(f"/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST_V2})
        if "Docker-Content-Digest" in head.headers:
            api.delete(f"/v2/{name}/manifests/{head.headers['Docker-Content-Digest']}")


def _exists(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _remove(client, ref: str) -> None:
    try:
        client.images.remove(ref, force=True)
    except (docker.errors.ImageNotFound, docker.errors.NullResource):
        pass


def _push(client, repo: str, tag: str, auth_config: dict | None) -> list[dict]:
    return list(client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth_config))


def _layer_statuses(stream: list[dict]) -> dict[str, str]:
    """The last status of each layer in a push stream (layer id -> status)."""
    final = {}
    for item in stream:
        status = item.get("status", "")
        if item.get("id") and (status in (PUSHED, ALREADY_EXISTS) or status.startswith("Mounted from")):
            final[item["id"]] = status
    return final


def _errors(stream: list[dict]) -> list[str]:
    return [item["error"] for item in stream if "error" in item]


def test_tls_and_auth_required(login, ca_cert):
    url = f"https://{login.registry_url}/v2/"
    assert httpx.get(url, verify=_tls(ca_cert)).status_code == 401
    assert httpx.get(url, verify=_tls(ca_cert), auth=(login.username, "wrong")).status_code == 401
    assert httpx.get(url, verify=_tls(ca_cert), auth=(login.username, login.password)).status_code == 200
    with pytest.raises(httpx.ConnectError):  # the certificate is ours, not a public CA's
        httpx.get(url, auth=(login.username, login.password))


def test_anonymous_push_is_refused(test_image, registry_api, tmp_path, monkeypatch):
    repo, _, _ = test_image
    # An empty Docker config dir: no stored login can turn this into an authenticated push.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    anonymous = docker.from_env()
    try:
        errors = _errors(_push(anonymous, repo, "v1", auth_config=None))
    finally:
        anonymous.close()
    assert errors, "an anonymous push was accepted"
    assert any("auth" in e.lower() for e in errors), errors
    name = repo.split("/", 1)[1]
    assert registry_api.get(f"/v2/{name}/tags/list").status_code == 404


def test_push_pull_by_digest_and_repush_uploads_nothing(docker_client, test_image, login):
    repo, marker, image = test_image
    first = _push(docker_client, repo, "v1", login.auth_config)
    assert not _errors(first), f"push with credentials from {login.source} failed: {_errors(first)}"
    digests = [item["aux"]["Digest"] for item in first if "Digest" in item.get("aux", {})]
    assert len(digests) == 1 and digests[0].startswith("sha256:"), first[-3:]
    _pushed_digest[repo] = digests[0]
    statuses = _layer_statuses(first)
    assert len(statuses) == 2, statuses
    assert PUSHED in statuses.values(), f"the unique layer was not uploaded: {statuses}"

    # Pull back by digest after removing every local copy of the image.
    _remove(docker_client, f"{repo}:v1")
    assert not _exists(docker_client, image.id)
    pulled = docker_client.images.pull(f"{repo}@{digests[0]}", auth_config=login.auth_config)
    assert pulled.id == image.id
    assert f"{repo}@{digests[0]}" in pulled.attrs["RepoDigests"]
    out = docker_client.containers.run(pulled.id, ["cat", "/marker"], remove=True, network_mode="none")
    assert out.decode().strip() == marker

    # A second push of the unchanged image uploads no layer.
    pulled.tag(repo, "v1")
    second = _push(docker_client, repo, "v1", login.auth_config)
    assert not _errors(second), _errors(second)
    statuses = _layer_statuses(second)
    assert len(statuses) == 2 and set(statuses.values()) == {ALREADY_EXISTS}, statuses
    assert [item["aux"]["Digest"] for item in second if "Digest" in item.get("aux", {})] == digests
