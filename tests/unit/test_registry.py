"""Unit tests of flows.registry: PushedImage validation, push-stream parsing, transient errors."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from flows.errors import ConfigurationError, ImagePushError
from flows.registry import PushedImage, PushProgress, auth_config, check_address, is_transient_message, iter_push_summary, push_error
from flows.retry import is_transient

DIGEST = "sha256:" + "d" * 64

# Recorded from dockerd 20.10 pushing to the local registry 2.8 (trimmed: one "Pushing" line per
# layer kept); the base layer was mounted from another repository of the same registry.
FIRST_PUSH = [
    {"status": "The push refers to repository [127.0.0.1:5000/aiship-app]"},
    {"status": "Preparing", "progressDetail": {}, "id": "7c62fdf30760"},
    {"status": "Preparing", "progressDetail": {}, "id": "8fe6d38c41d5"},
    {"status": "Preparing", "progressDetail": {}, "id": "d39ad5e9b5af"},
    {"status": "Preparing", "progressDetail": {}, "id": "7f8710e9d201"},
    {"status": "Preparing", "progressDetail": {}, "id": "31870023f951"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 36216}, "progress": "[>   ]     512B/36.22kB", "id": "8fe6d38c41d5"},
    {"status": "Pushing", "progressDetail": {"current": 42301, "total": 42301}, "progress": "[====]", "id": "7c62fdf30760"},
    {"status": "Pushing", "progressDetail": {"current": 3072, "total": 1340}, "progress": "[====]", "id": "d39ad5e9b5af"},
    {"status": "Pushing", "progressDetail": {"current": 512, "total": 307716096}, "progress": "[>   ]", "id": "7f8710e9d201"},
    {"status": "Mounted from aiship-test-bcf5a4dbb1f6", "progressDetail": {}, "id": "31870023f951"},
    {"status": "Pushed", "progressDetail": {}, "id": "7c62fdf30760"},
    {"status": "Pushed", "progressDetail": {}, "id": "8fe6d38c41d5"},
    {"status": "Pushed", "progressDetail": {}, "id": "7f8710e9d201"},
    {"status": "Pushed", "progressDetail": {}, "id": "d39ad5e9b5af"},
    {"status": "76a971bf1fd7-iris-v1: digest: " + DIGEST + " size: 1365"},
    {"progressDetail": {}, "aux": {"Tag": "76a971bf1fd7-iris-v1", "Digest": DIGEST, "Size": 1365}},
]
MODEL_ONLY_PUSH = [
    {"status": "The push refers to repository [127.0.0.1:5000/aiship-app]"},
    {"status": "Preparing", "progressDetail": {}, "id": "9c1e0f0b1d2e"},
    {"status": "Preparing", "progressDetail": {}, "id": "a3ed95caeb02"},
    {"status": "Layer already exists", "progressDetail": {}, "id": "a3ed95caeb02"},
    {"status": "Pushing", "progressDetail": {"current": 1000, "total": 1000}, "id": "9c1e0f0b1d2e"},
    {"status": "Pushed", "progressDetail": {}, "id": "9c1e0f0b1d2e"},
    {"progressDetail": {}, "aux": {"Tag": "0123456789ab-iris-v2", "Digest": DIGEST, "Size": 739}},
]
REGISTRY_DOWN = [
    {"status": "The push refers to repository [127.0.0.1:5000/aiship-app]"},
    {"errorDetail": {"message": "Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused"},
     "error": "Get \"https://127.0.0.1:5000/v2/\": dial tcp 127.0.0.1:5000: connect: connection refused"},
]


def feed(stream):
    progress = PushProgress()
    for chunk in stream:
        progress.feed(chunk)
    return progress


def test_pushed_image_needs_a_digest_reference():
    image = PushedImage(ref=f"127.0.0.1:5000/aiship-app@{DIGEST}", digest=DIGEST, tag="t")
    assert image.repository == "127.0.0.1:5000/aiship-app"
    for ref in ("127.0.0.1:5000/aiship-app:t", "127.0.0.1:5000/aiship-app@sha256:abc", f"@{DIGEST}"):
        with pytest.raises(ImagePushError, match="not pinned by digest"):
            PushedImage(ref=ref, digest=DIGEST, tag="t")


def test_pushed_image_digest_must_be_the_references():
    with pytest.raises(ImagePushError, match="does not carry"):
        PushedImage(ref=f"r/a@{DIGEST}", digest="sha256:" + "e" * 64, tag="t")


def test_first_push_uploads_every_new_layer_and_counts_bytes():
    progress = feed(FIRST_PUSH)
    assert progress.pushed == ("7c62fdf30760", "8fe6d38c41d5", "7f8710e9d201", "d39ad5e9b5af")
    assert progress.existing == ("31870023f951",) and progress.digest == DIGEST
    assert sum(progress.layer_bytes[layer] for layer in progress.pushed) == 36216 + 42301 + 1340 + 307716096


def test_model_only_push_uploads_one_layer():
    progress = feed(MODEL_ONLY_PUSH)
    assert progress.pushed == ("9c1e0f0b1d2e",) and progress.existing == ("a3ed95caeb02",)



def test_error_line_is_kept_and_classified_transient():
    progress = feed(REGISTRY_DOWN)
    assert "connection refused" in progress.error and not progress.digest
    error = push_error("127.0.0.1:5000/aiship-app", "t", progress.error)
    assert isinstance(error, ImagePushError) and is_transient(error)
    assert "127.0.0.1:5000/aiship-app:t" in str(error)


@pytest.mark.parametrize("message", [
    "Put https://r/v2/a/blobs/uploads/x: EOF",
    "read tcp 127.0.0.1:1->127.0.0.1:5000: read: connection reset by peer",
    "net/http: TLS handshake timeout",
    "received unexpected HTTP status: 503 Service Unavailable",
    "toomanyrequests: too many requests (HTTP 429)",
    "dial tcp: i/o timeout",
])
def test_transient_messages(message):
    assert is_transient_message(message) and is_transient(push_error("r/a", "t", message))


@pytest.mark.parametrize("message", [
    "unauthorized: authentication required",
    "denied: requested access to the resource is denied",
    "name unknown: repository name not known to registry",
    "tag does not exist: r/a:t",
])
def test_answers_are_not_transient(message):
    assert not is_transient_message(message) and not is_transient(push_error("r/a", "t", message))


def test_auth_config_unwraps_the_secret_only_there():
    class Creds:
        username, password, registry_url = "u", SecretStr("s3cret"), "127.0.0.1:5000"

    assert auth_config(Creds()) == {"username": "u", "password": "s3cret", "serveraddress": "127.0.0.1:5000"}
    assert "s3cret" not in repr(Creds().password)


def test_push_summary_names_the_digest_and_what_was_uploaded():
    digest = "sha256:" + "ab" * 32
    pushed = PushedImage(ref=f"127.0.0.1:5000/aiship-app@{digest}", digest=digest, tag="abc-m-v2",
                         layers_pushed=("sha256:1",), layers_existing=("sha256:2", "sha256:3"),
                         bytes_pushed=42_348, seconds=0.6)
    lines = list(iter_push_summary(pushed))
    assert f"| digest | `{digest}` |" in lines
    assert "| layers uploaded / already there | 1 / 2 |" in lines
    assert "| bytes uploaded (layer sizes, uncompressed) | 42,348 |" in lines


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "myacr.azurecr.io", "registry", "my-registry.example.com:443"])
def test_registry_addresses_are_host_and_port(host):
    assert check_address(host) == host


@pytest.mark.parametrize("host", ["https://myacr.azurecr.io", "myacr.azurecr.io/v2", "", "-bad.io", "host:port", "a b"])
def test_a_malformed_registry_address_names_the_setting(host):
    with pytest.raises(ConfigurationError, match="AISHIP_REGISTRY .* is not a registry address"):
        check_address(host)


def test_garbage_is_what_nothing_uses_beyond_the_newest():
    from flows.registry_gc import Manifest, to_delete

    old, served, middle, newest = (Manifest(f"sha256:{c * 64}", (f"t{c}",), f"2026-01-0{i}T00:00:00Z", 1)
                                   for i, c in enumerate("abcd", start=1))
    same_commit_newer_model = Manifest("sha256:" + "e" * 64, ("te",), newest.created, 2)
    picked = to_delete([old, served, middle, newest, same_commit_newer_model], in_use={served.digest}, keep=2)
    assert picked == [old, middle]
