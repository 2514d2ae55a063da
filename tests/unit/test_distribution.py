"""Unit tests of flows.distribution against a scripted registry (httpx.MockTransport).

The local registry (integration tests) speaks Basic authentication only; ACR's Bearer token
exchange cannot run here, so its path is checked against recorded request/answer shapes.
"""

from __future__ import annotations

import base64
import hashlib
import io

import httpx
import pytest
from pydantic import SecretStr

from flows.distribution import RegistryAPI, RegistryHTTPError
from flows.retry import is_transient


class Credentials:
    username, password = "ci", SecretStr("s3cret")


BASIC = "Basic " + base64.b64encode(b"ci:s3cret").decode()
BLOB = b"layer bytes" * 100
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
CHALLENGE = 'Bearer realm="https://auth.example/oauth2/token",service="acr.example",scope="repository:app:pull,push"'


def api(handler) -> RegistryAPI:
    return RegistryAPI("acr.example/app", Credentials(), transport=httpx.MockTransport(handler))


def test_bearer_challenge_is_answered_with_a_token_for_its_scope_and_the_token_is_reused():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("authorization")))
        if request.url.host == "auth.example":
            assert request.url.params["scope"] == "repository:app:pull,push" and request.url.params["service"] == "acr.example"
            assert request.headers["authorization"] == BASIC
            return httpx.Response(200, json={"access_token": "tok"})
        if request.headers.get("authorization") != "Bearer tok":
            return httpx.Response(401, headers={"www-authenticate": CHALLENGE})
        return httpx.Response(200, content=b"{}", headers={"docker-content-digest": "sha256:" + "a" * 64})

    with api(handler) as registry:
        assert registry.manifest("v1") == (b"{}", "sha256:" + "a" * 64)
        registry.manifest("v2")
    assert [s for s in seen if s[1] == "/oauth2/token"] == [("GET", "/oauth2/token", BASIC)]
    assert seen[-1] == ("GET", "/v2/app/manifests/v2", "Bearer tok")


def test_upload_streams_the_file_once_with_its_length_to_the_location_given():
    puts = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "tok"})
        if request.headers["authorization"] != "Bearer tok":
            return httpx.Response(401, headers={"www-authenticate": CHALLENGE})
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers={"location": "/v2/app/blobs/uploads/u1?_state=abc"})
        if request.method == "PUT":
            body = request.read()
            puts.append((request.url.params.get("_state"), request.url.params.get("digest"),
                         request.headers["content-length"], body))
            return httpx.Response(201, headers={"docker-content-digest": BLOB_DIGEST})
        raise AssertionError(request)

    with api(handler) as registry:
        assert registry.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB)) is True
    # The HEAD's challenge gave a token, so the one PUT carries it: the bytes go once.
    assert puts == [("abc", BLOB_DIGEST, str(len(BLOB)), BLOB)]


def test_a_challenged_upload_is_sent_again_from_the_start():
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": f"tok-{request.url.params['scope']}"})
        if request.method == "PUT":
            bodies.append(request.read())
            if request.headers["authorization"] != "Bearer tok-repository:app:push":  # the token in hand is for pull
                return httpx.Response(401, headers={"www-authenticate": CHALLENGE.replace("pull,push", "push")})
            return httpx.Response(201, headers={"docker-content-digest": BLOB_DIGEST})
        if request.headers.get("authorization", "").startswith("Bearer"):
            return httpx.Response(404 if request.method == "HEAD" else 202, headers={"location": "/v2/app/blobs/uploads/u1"})
        return httpx.Response(401, headers={"www-authenticate": CHALLENGE.replace("pull,push", "pull")})

    with api(handler) as registry:
        assert registry.upload_blob(BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB)) is True
    assert bodies == [BLOB, BLOB]  # rewound after the challenge, not sent from where the first PUT stopped


def test_a_blob_the_registry_has_is_not_sent():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "HEAD", f"{request.method} sent for a blob the registry has"
        return httpx.Response(200)

    with api(handler) as registry:
        assert registry.upload_blob("sha256:" + "b" * 64, 3, b"abc") is False


def test_manifest_stored_under_another_digest_is_an_error_and_a_5xx_carries_its_status():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/manifests/v1"):
            return httpx.Response(201, headers={"docker-content-digest": "sha256:" + "0" * 64})
        return httpx.Response(503, text="busy")

    with api(handler) as registry:
        with pytest.raises(ValueError, match="not as the digest of the bytes sent"):
            registry.put_manifest("v1", b"{}", "application/vnd.oci.image.manifest.v1+json")
        with pytest.raises(RegistryHTTPError) as info:
            registry.blob("sha256:" + "c" * 64)
    assert info.value.status_code == 503 and "busy" in str(info.value)
    assert is_transient(info.value)  # so the push task retries it
