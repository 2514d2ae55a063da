"""The store's contract and the one algorithm every backend shares.

A backend implements six small primitives on keys like `models/<name>/<version>/manifest.json`
(exclusive create, put, get, stream, list, uri); `BaseModelStore` builds publish, versions,
resolve and fetch on them, so the three stores cannot drift apart in behaviour.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import tempfile
import uuid
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from flows import disk
from flows.errors import MalformedManifestError, ModelIntegrityError, ModelNotFoundError, ModelStoreError
from flows.release import ModelId
from flows.manifest import (
    CARD_FILE, MANIFEST_FILE, MODEL_FILE, ModelManifest, parse_manifest, read_card, sha256_file,
    validate_model_name,
)
from flows.blocks import load_block  # noqa: F401  (the stores load their credentials with it)
from flows.retry import call_with_retries, is_transient

T = TypeVar("T")
CLAIM_FILE = "claim"
MAX_CLAIM_TRIES = 100
PICKLE_MAGIC = (b"\x80", b"(", b"c")  # protocol 2+ opcode, protocol 0 MARK / GLOBAL


class ModelRef(ModelId):
    """One published model version, pinned by sha256, and where its store keeps it."""

    size: int
    uri: str
    manifest: ModelManifest


class FetchedModel(BaseModel):
    """A model version fetched to local disk and verified against its manifest."""

    model_config = ConfigDict(frozen=True)

    ref: ModelRef
    path: Path
    manifest_path: Path


@runtime_checkable
class ModelStore(Protocol):
    """What every model store offers."""

    def publish(self, model_dir: Path, name: str) -> ModelRef: ...
    def names(self) -> list[str]: ...
    def versions(self, name: str) -> list[int]: ...
    def resolve(self, name: str, version: int | None = None) -> ModelRef: ...
    def fetch(self, ref: ModelRef, dest: Path) -> FetchedModel: ...


def key_of(name: str, version: int, file: str) -> str:
    """The key of one file of a version: `models/<name>/<version>/<file>`."""
    return f"models/{name}/{version}/{file}"


def default_publisher() -> str:
    """user@host of whoever runs the publish (AISHIP_PUBLISHER overrides, e.g. in CI)."""
    return os.environ.get("AISHIP_PUBLISHER") or f"{getpass.getuser()}@{socket.gethostname()}"


def schema_types(path: Path) -> set[str]:
    """Fully qualified names of every type a skops file's schema names, read without loading it."""
    import skops.io as sio  # slow to import (scikit-learn); only publish and the build's check need it

    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelIntegrityError(f"{path} has no readable skops schema.json ({exc}); save it with skops.io.dump") from exc
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    try:
        return found | set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # skops raises several types for a damaged archive
        raise ModelIntegrityError(f"{path} is not a readable skops file ({exc}); save it with skops.io.dump") from exc


def check_model_file(path: Path, allowed_types: Iterable[str] | None = None, app: str = "the app") -> None:
    """Refuses, without loading it, a model file that is not a skops archive (a pickle above all),
    or that names a type off `allowed_types` (the app's aiship.toml [model] types), when given."""
    if not path.is_file():
        raise ModelStoreError(f"{path} not found; the model folder must hold {MODEL_FILE} (run app/train.py)")
    with path.open("rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):
        kind = "a pickle" if head[:1] in PICKLE_MAGIC else "not a zip archive"
        raise ModelIntegrityError(
            f"{path} is {kind}, not a skops file; refusing it because loading a pickle runs code from the file. "
            "Save the model with skops.io.dump(model, 'model.skops')"
        )
    with zipfile.ZipFile(path) as zf:
        if "schema.json" not in zf.namelist():
            raise ModelIntegrityError(
                f"{path} is a zip archive without schema.json, not a skops file; save it with skops.io.dump"
            )
    if allowed_types is None:
        return
    refused = sorted(schema_types(path) - set(allowed_types))
    if refused:
        raise ModelIntegrityError(
            f"{path} holds types {app} refuses to load: {', '.join(refused)}; retrain with allowed types, "
            f"or add them to [model] types in {app}'s aiship.toml (and its loader) after review"
        )


class BaseModelStore(ABC):
    """publish / versions / resolve / fetch, written once over a backend's primitives."""

    attempts: int = 6  # tries per network call, with growing delays: about 30 s in all (flows.retry)
    first_delay: float = 1.0

    # --- primitives each backend implements ---
    @abstractmethod
    def _create_exclusive(self, key: str, data: bytes) -> bool:
        """Creates `key` only if absent; False when it already exists."""

    @abstractmethod
    def _put_file(self, key: str, path: Path) -> None:
        """Writes the file at `path` to `key`, replacing it."""

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes:
        """The object's bytes; ModelNotFoundError when absent."""

    @abstractmethod
    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; ModelNotFoundError when absent."""

    @abstractmethod
    def _list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (empty when none, or when the container/bucket is absent)."""

    @abstractmethod
    def _uri(self, key: str) -> str:
        """Where `key` lives, for humans and events (never with credentials)."""

    def _prepare_for_write(self) -> None:
        """Creates the container/bucket/folder if needed (before the first publish)."""

    # --- the shared algorithm ---
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Runs one network call with transient retries; wraps what is left in ModelStoreError."""
        try:
            return call_with_retries(fn, what=what, attempts=self.attempts, first_delay=self.first_delay)
        except (ModelStoreError, ModelIntegrityError):
            raise
        except Exception as exc:
            hint = f"gave up after {self.attempts} attempts; is the store at {self._uri('')} running?" if is_transient(exc) else "check the store's settings and credentials block"
            raise ModelStoreError(f"{what} failed: {type(exc).__name__}: {exc}; {hint}", transient=is_transient(exc)) from exc

    def _claimed_and_visible(self, name: str) -> tuple[set[int], set[int]]:
        prefix = f"models/{name}/"
        claimed, visible = set(), set()
        for key in self._call(f"list {self._uri(prefix)}", lambda: self._list_keys(prefix)):
            parts = key[len(prefix):].split("/")
            if len(parts) == 2 and parts[0].isdigit():
                claimed.add(int(parts[0]))
                if parts[1] == MANIFEST_FILE:
                    visible.add(int(parts[0]))
        return claimed, visible

    def names(self) -> list[str]:
        """Names of the models that have at least one key in the store, sorted."""
        keys = self._call(f"list {self._uri('models/')}", lambda: self._list_keys("models/"))
        return sorted({key.split("/")[1] for key in keys if key.count("/") >= 3})

    def versions(self, name: str) -> list[int]:
        """Published versions of `name`, ascending; a version without manifest.json is not published yet."""
        validate_model_name(name)
        return sorted(self._claimed_and_visible(name)[1])

    def resolve(self, name: str, version: int | None = None) -> ModelRef:
        """The newest published version of `name`, or the pinned `version`; ModelNotFoundError if absent."""
        available = self.versions(name)
        if not available:
            raise ModelNotFoundError(
                f"model {name!r} has no published version in {self._uri(f'models/{name}/')}; "
                f"publish one with `aiship model publish DIR --name {name}`"
            )
        chosen = available[-1] if version is None else version
        if chosen not in available:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} in {self._uri(f'models/{name}/')}; "
                f"published versions: {', '.join(map(str, available))}"
            )
        key = key_of(name, chosen, MANIFEST_FILE)
        data = self._call(f"read {self._uri(key)}", lambda: self._get_bytes(key))
        manifest = parse_manifest(data, self._uri(key))
        if (manifest.name, manifest.version) != (name, chosen):
            raise MalformedManifestError(f"{self._uri(key)} claims to be {manifest.name} v{manifest.version}, not {name} "
                                  f"v{chosen} whose key it is stored under; refusing it: re-publish {name}")
        return self._ref(manifest)

    def _ref(self, manifest: ModelManifest) -> ModelRef:
        uri = self._uri(key_of(manifest.name, manifest.version, manifest.file))
        return ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.sha256,
                        size=manifest.size, uri=uri, manifest=manifest)

    def _claim(self, name: str, token: bytes) -> int:
        """Claims the next free version by conditional create; a taken number moves on to the next."""
        claimed, _ = self._claimed_and_visible(name)
        version = max(claimed, default=0) + 1
        for _ in range(MAX_CLAIM_TRIES):
            key = key_of(name, version, CLAIM_FILE)
            if self._call(f"claim {self._uri(key)}", lambda: self._create_exclusive(key, token)):
                return version
            version += 1
        raise ModelStoreError(f"could not claim a version of {name!r} after {MAX_CLAIM_TRIES} tries; retry the publish")

    def publish(self, model_dir: Path, name: str, publisher: str | None = None,
                allowed_types: Iterable[str] | None = None, app: str = "the app") -> ModelRef:
        """Publishes `model_dir` (model.skops + model.json) as the next version of `name`.

        `allowed_types` is the serving app's [model] types: a model it would refuse is never published.
        Order: claim, model file, manifest last, so readers never see a half-published version.
        """
        validate_model_name(name)
        model_dir = Path(model_dir)
        card = read_card(model_dir / CARD_FILE)
        model_path = model_dir / MODEL_FILE
        check_model_file(model_path, allowed_types, app)
        sha256, size = sha256_file(model_path)
        publisher = publisher or default_publisher()
        self._call(f"prepare {self._uri('')}", self._prepare_for_write)
        token = json.dumps({"token": uuid.uuid4().hex, "publisher": publisher}).encode()
        version = self._claim(name, token)
        model_key = key_of(name, version, MODEL_FILE)
        self._call(f"upload {self._uri(model_key)}", lambda: self._put_file(model_key, model_path))
        self._check_claim_still_ours(name, version, token)
        manifest = ModelManifest(
            **card.model_dump(), name=name, version=version, file=MODEL_FILE, sha256=sha256, size=size,
            publisher=publisher, published_at=datetime.now(timezone.utc),
        )
        manifest_key = key_of(name, version, MANIFEST_FILE)
        body = manifest.to_json().encode()
        if not self._call(f"write {self._uri(manifest_key)}", lambda: self._create_exclusive(manifest_key, body)):
            raise ModelStoreError(
                f"{self._uri(manifest_key)} was written by another publisher while this publish ran "
                "(the store did not honour the exclusive claim); re-run the publish"
            )
        return self._ref(manifest)

    def _check_claim_still_ours(self, name: str, version: int, token: bytes) -> None:
        """Catches a store that let a second claim overwrite ours (a non-atomic If-None-Match)."""
        key = key_of(name, version, CLAIM_FILE)
        if self._call(f"read {self._uri(key)}", lambda: self._get_bytes(key)) != token:
            raise ModelStoreError(
                f"claim {self._uri(key)} was overwritten by another publisher (the store did not honour "
                "If-None-Match: *); re-run the publish, it will take the next version"
            )

    def fetch(self, ref: ModelRef, dest: Path) -> FetchedModel:
        """Downloads the model file into `dest`, verifying size and sha256 while streaming.

        The bytes go to a temporary file in `dest`, renamed to model.skops only when they match;
        on a mismatch nothing is left behind and ModelIntegrityError names object, expected, actual.
        """
        dest = Path(dest)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            key = key_of(ref.name, ref.version, ref.manifest.file)
            target = dest / ref.manifest.file
            tmp = self._call(f"download {ref.uri}", lambda: self._download_verified(key, ref, dest))
            os.replace(tmp, target)
            manifest_path = dest / MANIFEST_FILE
            _write_atomic(manifest_path, ref.manifest.to_json().encode())
        except (OSError, ModelStoreError) as exc:  # the download's own OSError arrives wrapped by _call
            if disk.is_full(exc):
                raise disk.full_disk_error(dest, f"downloading {ref.uri}") from exc
            raise
        return FetchedModel(ref=ref, path=target, manifest_path=manifest_path)

    def _download_verified(self, key: str, ref: ModelRef, dest: Path) -> Path:
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{ref.manifest.file}.", suffix=".part")
        tmp = Path(tmp_name)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._iter_chunks(key):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > ref.size:  # stop early: a longer object can never match
                        break
                    out.write(chunk)
            actual = digest.hexdigest()
            if size != ref.size or actual != ref.sha256:
                raise ModelIntegrityError(
                    f"sha256 mismatch for {ref.uri}: expected {ref.sha256} ({ref.size} bytes), "
                    f"got {actual} ({size}{'+' if size > ref.size else ''} bytes); the stored model was changed "
                    f"or corrupted: re-publish it (aiship model publish DIR --name {ref.name}) or pin another version"
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
