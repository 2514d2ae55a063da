"""Stage 4: push the smoke-tested image and take the digest the registry reports.

The push has two halves. `docker push` sends the code image (base, dependencies, code: mostly
"Layer already exists"); then the registry's HTTP API (`flows.distribution`) receives the model
layer unless it has it, the config the smoke-tested image was loaded from, and last the manifest
under the image's tag. A push that fails halfway leaves no manifest, so no half image is ever
visible, and the retry sends only what is missing.

Everything after the push uses `repo@sha256:…`: `PushedImage` refuses any other reference.
Before building, `find_existing` asks the registry whether an image for the same git SHA and
model sha256 is already there, so the same inputs are never built twice.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from prefect import task

from flows import oci
from flows.distribution import RegistryAPI, RegistryHTTPError
from flows.errors import ConfigurationError, ImagePushError
from flows.image import BuiltImage, summary_table
from flows.release import Release
from flows.retry import retry_condition
from flows.settings import Settings

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The domain of an image reference, as the distribution project's reference grammar has it:
# dot-separated components of letters, digits and inner hyphens, then an optional :port.
_COMPONENT = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
REGISTRY_ADDRESS = re.compile(rf"^{_COMPONENT}(?:\.{_COMPONENT})*(?::[0-9]{{1,5}})?$")
EXISTING_STATUSES = frozenset({"Layer already exists"})
# Daemon messages that mean "try again later": the network or the registry hiccupped.
_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|timeout|timed out|no route to host"
    r"|TLS handshake|service unavailable|bad gateway|gateway timeout|too many requests"
    r"|\b(429|500|502|503|504)\b|received unexpected HTTP status: 5\d\d",
    re.IGNORECASE,
)
_NOT_TRANSIENT = re.compile(r"unauthorized|denied|authentication required|name unknown|manifest invalid", re.IGNORECASE)


@dataclass(frozen=True)
class PushedImage:
    """An image in the registry, addressed by digest: `ref` is always `<repo>@sha256:<64 hex>`."""

    ref: str
    digest: str
    tag: str
    layers_pushed: tuple[str, ...] = ()
    layers_existing: tuple[str, ...] = ()
    bytes_pushed: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        repo, sep, digest = self.ref.partition("@")
        if not sep or not repo or not DIGEST.match(digest):
            raise ImagePushError(f"image reference {self.ref!r} is not pinned by digest; expected <repo>@sha256:<64 hex>")
        if digest != self.digest:
            raise ImagePushError(f"image reference {self.ref!r} does not carry its digest {self.digest!r}")

    @property
    def repository(self) -> str:
        """The repository part of the reference (`127.0.0.1:5000/aiship-app`)."""
        return self.ref.partition("@")[0]


@dataclass
class PushProgress:
    """What the daemon's push stream said: per-layer final statuses, bytes, digest, error."""

    layers: dict[str, str] = field(default_factory=dict)
    layer_bytes: dict[str, int] = field(default_factory=dict)
    digest: str = ""
    error: str = ""

    def feed(self, chunk: dict[str, Any]) -> str | None:
        """Takes one decoded chunk; returns a line worth logging (final layer statuses, errors)."""
        if "error" in chunk or "errorDetail" in chunk:
            self.error = (chunk.get("errorDetail") or {}).get("message") or str(chunk.get("error", ""))
            return f"ERROR: {self.error}"
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            self.digest = aux["Digest"]
            return None
        status, layer = str(chunk.get("status", "")), chunk.get("id")
        if layer and status == "Pushing":
            total = (chunk.get("progressDetail") or {}).get("total") or 0
            self.layer_bytes[layer] = max(self.layer_bytes.get(layer, 0), int(total))
            return None
        if layer and (status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")):
            self.layers[layer] = "existing" if status != "Pushed" else "pushed"
            return f"{layer}: {status}"
        if not layer and status:
            return status
        return None

    @property
    def pushed(self) -> tuple[str, ...]:
        return tuple(layer for layer, s in self.layers.items() if s == "pushed")

    @property
    def existing(self) -> tuple[str, ...]:
        return tuple(layer for layer, s in self.layers.items() if s == "existing")


def is_transient_message(message: str) -> bool:
    """True when a daemon/registry error message means the same push may succeed later."""
    return bool(_TRANSIENT.search(message)) and not _NOT_TRANSIENT.search(message)


def push_error(repo: str, tag: str, message: str) -> ImagePushError:
    """An ImagePushError, transient when `message` says the registry was down or busy."""
    transient = is_transient_message(message)
    hint = ("the registry may be down or busy; the push is retried" if transient
            else "check the registry credentials block and the repository name")
    return ImagePushError(f"push of {repo}:{tag} failed: {message}; {hint}", transient=transient)


# ---------------------------------------------------------------- push


def auth_config(credentials: Any) -> dict[str, str]:
    """The SDK's auth_config from a DockerRegistryCredentials block; the secret is unwrapped only here."""
    return {"username": credentials.username, "password": credentials.password.get_secret_value(),
            "serveraddress": credentials.registry_url}


def push(client: Any, repo: str, tag: str, credentials: Any, log: Any = None) -> PushedImage:
    """Pushes `repo:tag`; returns the registry's digest and which layers were uploaded vs already there."""
    import docker.errors
    import requests.exceptions

    started = time.monotonic()
    progress = PushProgress()
    try:
        for chunk in client.api.push(repo, tag=tag, stream=True, decode=True, auth_config=auth_config(credentials)):
            line = progress.feed(chunk)
            if line and log is not None:
                log.info("docker push: %s", line)
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise push_error(repo, tag, f"{type(exc).__name__}: {exc}") from exc
    if progress.error:
        raise push_error(repo, tag, progress.error)
    if not DIGEST.match(progress.digest):
        raise push_error(repo, tag, "the push stream reported no digest")
    sizes = progress.layer_bytes
    return PushedImage(
        ref=f"{repo}@{progress.digest}", digest=progress.digest, tag=tag,
        layers_pushed=progress.pushed, layers_existing=progress.existing,
        bytes_pushed=sum(sizes.get(layer, 0) for layer in progress.pushed),
        seconds=round(time.monotonic() - started, 3),
    )


def push_built(client: Any, built: BuiltImage, credentials: Any, log: Any = None) -> PushedImage:
    """Pushes a built image: the code image with dockerd, then the model
    layer, the config and the manifest over the registry's API. Returns it pinned by digest.

    The manifest's config is `built.config`, so the pushed image's id is the one smoke-tested.
    """
    started = time.monotonic()
    repo, _, tag = built.tag.rpartition(":")
    code = push(client, *built.code_tag.rpartition(":")[::2], credentials, log=log)
    layer = built.model_layer
    try:
        with RegistryAPI(repo, credentials) as registry:
            found = registry.manifest(code.digest)
            if found is None:
                raise ImagePushError(f"the registry lost {code.ref} right after it was pushed; push again")
            code_manifest = json.loads(found[0])
            if code_manifest["config"]["digest"] != built.code_image_id:
                raise ImagePushError(f"{built.code_tag} now names {code_manifest['config']['digest']}, not the code "
                                     f"image {built.code_image_id} that {built.tag} was built on; build again")
            code_layers = code_manifest["layers"]
            with layer.path.open("rb") as f:
                uploaded = registry.upload_blob(layer.digest, layer.size, f)
            if log is not None:
                log.info("model layer %s: %s", layer.short_id, "Pushed" if uploaded else "Layer already exists")
            registry.upload_blob(oci.digest_of(built.config), len(built.config), built.config)
            manifest = oci.image_manifest(built.config, code_layers, layer)
            digest = registry.put_manifest(tag, manifest, oci.MANIFEST_TYPE)
    except (RegistryHTTPError, httpx.HTTPError, ValueError) as exc:
        raise push_error(repo, tag, f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise ImagePushError(f"reading the model layer {layer.path} failed: {exc}; build the image again") from exc
    pushed, existing = ((layer.short_id,), ()) if uploaded else ((), (layer.short_id,))
    return PushedImage(
        ref=f"{repo}@{digest}", digest=digest, tag=tag,
        layers_pushed=code.layers_pushed + pushed, layers_existing=code.layers_existing + existing,
        bytes_pushed=code.bytes_pushed + (layer.size if uploaded else 0),
        seconds=round(time.monotonic() - started, 3),
    )


# ---------------------------------------------------------------- what is already there


def find_existing(repo: str, tag: str, release: Release, credentials: Any, timeout: float = 30.0) -> PushedImage | None:
    """The image already pushed as `repo:tag` when its config labels name the release's git SHA and model sha256.

    None when the tag is absent, or names other inputs (then the build goes ahead and re-tags).
    """
    try:
        with RegistryAPI(repo, credentials, timeout=timeout) as registry:
            found = registry.manifest(tag)
            if found is None:
                return None
            manifest, digest = found
            config = json.loads(registry.blob(json.loads(manifest)["config"]["digest"]))
    except RegistryHTTPError as exc:
        raise push_error(repo, tag, str(exc)) from exc
    if not release.built_by((config.get("config") or {}).get("Labels") or {}):
        return None
    return PushedImage(ref=f"{repo}@{digest}", digest=digest, tag=tag)


def load_credentials(block_name: str) -> Any:
    """The DockerRegistryCredentials block `block_name`, or ConfigurationError saying how to create it."""
    from prefect_docker.credentials import DockerRegistryCredentials

    from flows.blocks import load_block

    return load_block(DockerRegistryCredentials, block_name, "registry")


# ---------------------------------------------------------------- the task


def check_address(host: str) -> str:
    """`host` when it is a registry's host[:port]; a ConfigurationError naming the setting otherwise."""
    if not REGISTRY_ADDRESS.match(host):
        raise ConfigurationError(f"AISHIP_REGISTRY {host!r} is not a registry address; give host[:port] without a "
                                 "scheme or path, e.g. myacr.azurecr.io or 127.0.0.1:5000")
    return host


@task(name="push-image", retries=4, retry_delay_seconds=[2, 5, 10, 20], retry_condition_fn=retry_condition)
def push_image(built: BuiltImage, settings: Settings) -> PushedImage:
    """Pushes the smoke-tested image and returns it pinned by the digest the registry reports.

    Retries (2, 5, 10, 20 s) only transient failures: connection refused/reset, EOF, timeouts,
    5xx, 429. A refused login or an unknown repository fails at once.

    Args:
        built: the image built and smoke-tested.
        settings: aiship's settings (the credentials block's name).

    Returns:
        `PushedImage` with `ref="<registry>/<app>@sha256:…"` and the layers uploaded vs already present.
    """
    from prefect import get_run_logger

    from flows.image import docker_client

    from prefect.artifacts import create_markdown_artifact

    credentials = load_credentials(settings.registry_credentials_block)
    client = docker_client()
    try:
        pushed = push_built(client, built, credentials, log=get_run_logger())
    finally:
        client.close()
    create_markdown_artifact(key=f"image-push-{built.release.app}", markdown="\n".join(iter_push_summary(pushed)),
                             description=f"Pushed {pushed.ref}")
    return pushed


def iter_push_summary(pushed: PushedImage) -> Iterator[str]:
    """Lines of the markdown push summary: where the image now lives, by digest, and what moved."""
    yield from summary_table(f"Image push `{pushed.tag}`", [
        ("reference", f"`{pushed.ref}`"),
        ("digest", f"`{pushed.digest}`"),
        ("layers uploaded / already there", f"{len(pushed.layers_pushed)} / {len(pushed.layers_existing)}"),
        ("bytes uploaded (layer sizes, uncompressed)", f"{pushed.bytes_pushed:,}"),
        ("seconds", f"{pushed.seconds:.1f}"),
    ])
