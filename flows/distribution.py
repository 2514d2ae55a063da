"""A small client of the registry's HTTP API (the OCI distribution API): manifests and blobs.

`docker push` pushes the code image; this client reads what the registry holds and writes what
aiship builds outside dockerd: the model layer blob, the image config blob, and the manifest.
It speaks Basic authentication (registry:2 with htpasswd) and answers Bearer challenges (ACR).
Errors come back as `RegistryHTTPError` with the status, so `flows.retry` retries 5xx and 429.

Hand-written rather than oras-py's because it measured better on the same upload
(`bench/registry_client.py`, 1 GiB blob to the local registry: 5.5 s and 97 MiB peak memory here,
8.0 s and 1.1 GiB with oras-py 0.2.43, which reads a blob into memory for its PUT and needs its
credentials forced onto the session to upload a large blob to a Basic-auth registry at all).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import httpx

from flows.oci import digest_of

MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


class RegistryHTTPError(Exception):
    """The registry answered an unexpected HTTP status; `status_code` says which."""

    def __init__(self, what: str, response: httpx.Response) -> None:
        self.status_code = response.status_code
        super().__init__(f"{what} answered HTTP {response.status_code}: {response.text[:300]}")


def ca_bundle(registry_host: str) -> ssl.SSLContext:
    """Trusts dockerd's CA for this registry (`/etc/docker/certs.d/<host>/ca.crt`), else the system's CAs."""
    path = Path("/etc/docker/certs.d") / registry_host / "ca.crt"
    return ssl.create_default_context(cafile=str(path) if path.is_file() else None)


class RegistryAPI:
    """One repository of one registry: `RegistryAPI("127.0.0.1:5000/aiship-app", credentials)`.

    Use it as a context manager; the password is unwrapped from the block only in here.
    """

    def __init__(self, repository: str, credentials: Any, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        host, _, self.name = repository.partition("/")
        self.repository = repository
        self.base = f"https://{host}/v2/{self.name}"
        self._user, self._secret = credentials.username, credentials.password.get_secret_value()
        self._tokens: dict[str, str] = {}
        self._last_token = ""
        verify = ca_bundle(host) if transport is None else True
        self._http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=True, transport=transport)

    def __enter__(self) -> RegistryAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    # ------------------------------------------------------------ requests with authentication

    def _token(self, challenge: str) -> str:
        """A token for a `Bearer realm=…,service=…,scope=…` challenge, cached per scope."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        key = params.get("scope", "")
        if key not in self._tokens:
            realm = params.pop("realm")
            response = self._http.get(realm, params=params, auth=(self._user, self._secret))
            if response.status_code != 200:
                raise RegistryHTTPError(f"token request to {realm}", response)
            body = response.json()
            self._tokens[key] = body.get("token") or body["access_token"]
        return self._tokens[key]

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """`method url`, authenticated; once more with a new token if the registry challenges it.

        After a first Bearer challenge the last token goes with every request, so that a large
        upload is not first sent with Basic credentials only to be refused.
        """
        headers = kwargs.pop("headers", {})
        auth = {"headers": {**headers, "Authorization": f"Bearer {self._last_token}"}} if self._last_token \
            else {"headers": headers, "auth": (self._user, self._secret)}
        response = self._http.request(method, url, **auth, **kwargs)
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer"):
            self._last_token = self._token(challenge)
            if hasattr(kwargs.get("content"), "seek"):
                kwargs["content"].seek(0)
            response = self._http.request(method, url, headers={**headers, "Authorization": f"Bearer {self._last_token}"},
                                          **kwargs)
        return response

    # ------------------------------------------------------------ manifests and blobs

    def manifest(self, reference: str) -> tuple[bytes, str] | None:
        """(manifest bytes, digest) for a tag or digest, or None when the registry has no such manifest."""
        response = self.request("GET", f"{self.base}/manifests/{reference}", headers={"Accept": MANIFEST_TYPES})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryHTTPError(f"GET manifest {self.repository}:{reference}", response)
        return response.content, response.headers.get("docker-content-digest") or digest_of(response.content)

    def blob(self, digest: str) -> bytes:
        """A (small) blob's bytes, such as an image config."""
        response = self.request("GET", f"{self.base}/blobs/{digest}")
        if response.status_code != 200:
            raise RegistryHTTPError(f"GET blob {self.repository}@{digest}", response)
        return response.content

    def has_blob(self, digest: str) -> bool:
        response = self.request("HEAD", f"{self.base}/blobs/{digest}")
        if response.status_code not in (200, 404):
            raise RegistryHTTPError(f"HEAD blob {self.repository}@{digest}", response)
        return response.status_code == 200

    def upload_blob(self, digest: str, size: int, content: Any) -> bool:
        """Uploads a blob in one PUT unless the registry has it; True when bytes were sent.

        `content` is bytes or a file opened for reading (streamed, not read into memory).
        """
        if self.has_blob(digest):
            return False
        started = self.request("POST", f"{self.base}/blobs/uploads/")
        if started.status_code != 202 or "location" not in started.headers:
            raise RegistryHTTPError(f"starting the upload of {self.repository}@{digest}", started)
        location = str(httpx.URL(self.base).join(started.headers["location"]))
        location += ("&" if "?" in location else "?") + f"digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        response = self.request("PUT", location, content=content, headers=headers)
        if response.status_code != 201:
            raise RegistryHTTPError(f"upload of {self.repository}@{digest}", response)
        reported = response.headers.get("docker-content-digest", digest)
        if reported != digest:
            raise ValueError(f"the registry stored the blob {digest} of {self.repository} as {reported}")
        return True

    def tags(self) -> list[str]:
        """Every tag of the repository (following the registry's `Link` pages); [] when it has none."""
        found, url = [], f"{self.base}/tags/list?n=1000"
        while url:
            response = self.request("GET", url)
            if response.status_code == 404:
                return found
            if response.status_code != 200:
                raise RegistryHTTPError(f"GET tags of {self.repository}", response)
            found += response.json().get("tags") or []
            link = re.search(r'<([^>]+)>;\s*rel="next"', response.headers.get("link", ""))
            url = str(httpx.URL(self.base).join(link.group(1))) if link else ""
        return found

    def delete_manifest(self, digest: str) -> bool:
        """Deletes the manifest `digest` and the tags that point at it; False when it was gone already."""
        response = self.request("DELETE", f"{self.base}/manifests/{digest}")
        if response.status_code == 404:
            return False
        if response.status_code != 202:
            raise RegistryHTTPError(f"DELETE manifest {self.repository}@{digest}", response)
        return True

    def put_manifest(self, reference: str, manifest: bytes, media_type: str) -> str:
        """Writes a manifest under a tag; returns its digest, checked against the bytes sent."""
        response = self.request("PUT", f"{self.base}/manifests/{reference}", content=manifest,
                                headers={"Content-Type": media_type})
        if response.status_code != 201:
            raise RegistryHTTPError(f"PUT manifest {self.repository}:{reference}", response)
        digest = digest_of(manifest)
        reported = response.headers.get("docker-content-digest", digest)
        if reported != digest:
            raise ValueError(f"the registry stored the manifest {self.repository}:{reference} as {reported}, "
                             f"not as the digest of the bytes sent ({digest})")
        return digest
