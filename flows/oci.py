"""The pieces of an OCI image that aiship writes itself: the model layer, the image config, the manifest.

dockerd builds the app up to the Dockerfile's `code` stage (base, dependencies, code). The model
layer is written here instead, as a tar whose bytes depend only on the model's files: no times,
owners or paths of this machine. So a model-only change costs one pass over the model's bytes
(hashed while they are written), a code-only change leaves the model layer's digest alone, and the
same (code image, model, labels, commit time) always give the same config and manifest digests.

The layer is stored uncompressed: models hardly compress, and a single-threaded gzip is the slowest
step of `docker push` (see ../shared/PERF-FACTS.md). Uncompressed, its digest is its diff ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from flows import disk
from flows.errors import ImageBuildError

MODEL_MOUNT = "/opt/model"  # the default of aiship.toml's [model] dir
LAYER_MTIME = 0  # every entry's time: the model layer must not say when or where it was written
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
GZIP_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
# The image config fields (OCI config plus Docker's Healthcheck) copied from the code image.
CONFIG_FIELDS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "StopSignal",
                 "Healthcheck", "ArgsEscaped")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelLayer:
    """An uncompressed layer tar on disk; `digest` (sha256 of the file) is also its diff ID."""

    path: Path
    digest: str
    size: int

    @property
    def short_id(self) -> str:
        """The 12 hex digits `docker push` shows for a layer."""
        return self.digest.removeprefix("sha256:")[:12]


class _HashingWriter(io.RawIOBase):
    """Passes writes to `out` while hashing and counting them, so the layer is hashed as it is written."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha256, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.out.write(view)
        self.sha256.update(view)
        self.size += len(view)
        return len(view)


def _file_entry(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, LAYER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_header(out: BinaryIO, name: str, size: int) -> None:
    out.write(_file_entry(name, size).tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))


def _write_padding(out: BinaryIO, size: int) -> None:
    out.write(tarfile.NUL * (-size % tarfile.BLOCKSIZE))


def _write_entry(out: BinaryIO, name: str, path: Path) -> None:
    """One tar entry: the header, the file's bytes in 1 MiB reads, the padding to a 512-byte block."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        _write_header(out, name, size)
        copied = 0
        while chunk := f.read(_CHUNK):
            out.write(chunk)
            copied += len(chunk)
    if copied != size:
        raise OSError(f"{path} changed size while it was read ({size} then {copied} bytes)")
    _write_padding(out, size)


def _write_data_entry(out: BinaryIO, name: str, data: bytes) -> None:
    _write_header(out, name, len(data))
    out.write(data)
    _write_padding(out, len(data))


def write_model_layer_to(files: Sequence[tuple[str, Path]], out: BinaryIO) -> tuple[str, int]:
    """Writes the layer tar of `files` ((name in the image, file)) to `out`; returns (digest, size).

    Entries are sorted by name, owned by root, mode 0644, dated `LAYER_MTIME`: the bytes depend on
    the files' names and contents alone. The tar is written by hand (the same bytes `tarfile`
    writes) because `tarfile`'s stream mode copies its buffer on every 16 KiB write: 4.3 s against
    1.3 s for a 1 GiB model on a 2-core machine.
    """
    hashing = _HashingWriter(out)
    for name, path in sorted(files):
        _write_entry(hashing, name, path)
    hashing.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
    hashing.write(tarfile.NUL * (-hashing.size % tarfile.RECORDSIZE))
    return "sha256:" + hashing.sha256.hexdigest(), hashing.size


def model_layer_files(model_file: Path, manifest_file: Path, model_dir: str = MODEL_MOUNT) -> list[tuple[str, Path]]:
    """The model layer's files: the model under its own name and its manifest, in `model_dir` of the image."""
    folder = model_dir.strip("/")
    return [(f"{folder}/{model_file.name}", model_file), (f"{folder}/manifest.json", manifest_file)]


def write_model_layer(model_file: Path, manifest_file: Path, dest: Path, model_dir: str = MODEL_MOUNT) -> ModelLayer:
    """Writes the model layer tar to `dest` (through a temporary name, so a half-written file never counts)."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            digest, size = write_model_layer_to(model_layer_files(model_file, manifest_file, model_dir), out)
        partial.replace(dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if disk.is_full(exc):
            raise disk.full_disk_error(dest.parent, f"writing the model layer of {model_file.name}") from exc
        raise ImageBuildError(f"writing the model layer of {model_file} to {dest} failed: {exc}; "
                              "check that the fetched model is still there and the work folder has space") from exc
    return ModelLayer(dest, digest, size)


# ---------------------------------------------------------------- config and manifest


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: equal values give equal bytes, hence equal digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_config(code_image: dict[str, Any], labels: dict[str, str], created: str, layer: ModelLayer) -> bytes:
    """The config of code image + model layer: the code image's runtime settings, `labels` over its
    own, `created` (the commit's time) and its diff IDs followed by the model layer's.

    Args:
        code_image: `docker inspect` of the image built up to the `code` stage.
        labels: the image's labels (`flows.image.image_labels`).
        created: RFC 3339 time, the commit's; never the build's.
        layer: the model layer.
    """
    runtime = code_image.get("Config") or {}
    config = {key: runtime[key] for key in CONFIG_FIELDS if runtime.get(key) not in (None, [], {}, "")}
    config["Labels"] = {**(runtime.get("Labels") or {}), **labels}
    return canonical_json({
        "architecture": code_image["Architecture"],
        "os": code_image["Os"],
        "created": created,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [*code_image["RootFS"]["Layers"], layer.digest]},
    })


# Docker's layer media types and their OCI names; OCI's own pass through unchanged.
_OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": GZIP_LAYER_TYPE,
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_TYPE,
}


def oci_layer_type(media_type: str) -> str:
    """The OCI media type of a layer the registry lists; ValueError for one aiship cannot restate."""
    if media_type.startswith("application/vnd.oci.image.layer.v1.tar"):
        return media_type
    if media_type in _OCI_LAYER_TYPES:
        return _OCI_LAYER_TYPES[media_type]
    raise ValueError(f"layer media type {media_type!r} of the code image has no OCI equivalent here; "
                     "build the code image from a Linux base with ordinary layers")


def image_manifest(config: bytes, code_layers: Sequence[dict[str, Any]], layer: ModelLayer) -> bytes:
    """The OCI manifest: the code image's layers as the registry holds them, then the model layer."""
    layers = [{"mediaType": oci_layer_type(d["mediaType"]), "digest": d["digest"], "size": int(d["size"])}
              for d in code_layers]
    layers.append({"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size})
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": digest_of(config), "size": len(config)},
        "layers": layers,
    })


def config_diff_ids(config: bytes) -> list[str]:
    return list(json.loads(config)["rootfs"]["diff_ids"])


# ---------------------------------------------------------------- docker load


def write_docker_archive(config: bytes, tag: str, layer: ModelLayer, out: BinaryIO) -> None:
    """A `docker load` archive holding the config and the model layer only.

    dockerd skips the layers it already has (the code image's), so their files need not be there:
    loading costs one pass over the model layer, and the loaded image's id is the config digest.
    """
    hex_of = [d.removeprefix("sha256:") for d in config_diff_ids(config)]
    config_name = digest_of(config).removeprefix("sha256:") + ".json"
    layer_names = [f"{h}/layer.tar" for h in hex_of]
    index = canonical_json([{"Config": config_name, "RepoTags": [tag], "Layers": layer_names}])
    _write_data_entry(out, config_name, config)
    _write_data_entry(out, "manifest.json", index)
    _write_entry(out, layer_names[-1], layer.path)  # written by hand, as the layer is: tarfile's stream is slow
    out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
